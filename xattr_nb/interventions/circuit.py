"""Circuits: scored graphs of model components, to and from networkx, and from component scores.

A node is a transformer component (attention head, MLP, the token embeddings, the logits) or a
unit of any network (a CNN channel, a neuron of a dense layer), placed by its layer. This is the
one graph type every circuit-finding method returns (activation patching, attribution patching,
RelP, causal mediation, causal paths over CNN channels) and :class:`~xattr_nb.widgets.CircuitView`
draws.

Component scores travel as :class:`~xattr_nb.attribution.Attribution` with ``kind="components"``
(one column per component, ``labels`` their names, see :func:`node_name`); :func:`to_circuit` is
the one way from such scores, or from any result with a ``to_attribution()`` method, to a circuit.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_float, check_int

__all__ = ["COMPONENT_KINDS", "NODE_KINDS", "Circuit", "CircuitEdge", "CircuitNode", "node_name", "to_circuit"]

NODE_KINDS: tuple[str, ...] = ("embed", "head", "mlp", "channel", "unit", "logits")
#: The kinds that are components (scored, pruned by :meth:`Circuit.top`); ``embed`` and ``logits`` are the ends.
COMPONENT_KINDS: tuple[str, ...] = ("head", "mlp", "channel", "unit")
_INDEXED = ("head", "channel", "unit")  # kinds with an index inside their layer
_LETTER = {"head": "H", "channel": "C", "unit": "U"}
_KIND_OF = {v: k for k, v in _LETTER.items()}
_NAME_RE = re.compile(r"^(?:(embed|logits)|L(\d+)\.(?:([HCU])(\d+)|(MLP)))$")
_NAME_FORMS = "'embed', 'logits', 'L<layer>.H<head>', 'L<layer>.MLP', 'L<layer>.C<channel>', 'L<layer>.U<unit>'"


def node_name(kind: str, layer: int = 0, index: int | None = None) -> str:
    """The canonical name of a node: ``"embed"``, ``"L3.H5"`` (layer 3, head 5), ``"L3.MLP"``,
    ``"L2.C17"`` (layer 2, channel 17 of a CNN), ``"L1.U4"`` (layer 1, unit 4 of a dense layer),
    ``"logits"``. ``index`` is the head, channel or unit index."""
    check_choice(kind, NODE_KINDS, "kind")
    if kind in _INDEXED:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise InputError(f"`index` must be an int for a {kind} name; got {index!r}")
        return f"L{layer}.{_LETTER[kind]}{index}"
    if kind == "mlp":
        return f"L{layer}.MLP"
    return kind


def _parse_name(name: Any) -> tuple[str, int, int | None] | None:
    """``(kind, layer, index)`` of a canonical name (``layer`` -1 for embed/logits), or ``None``."""
    m = _NAME_RE.match(name) if isinstance(name, str) else None
    if m is None:
        return None
    if m.group(1) is not None:
        return (m.group(1), -1, None)
    if m.group(5) is not None:
        return ("mlp", int(m.group(2)), None)
    return (_KIND_OF[m.group(3)], int(m.group(2)), int(m.group(4)))


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        else:
            raise InputError(f"`{name}` must be a number; got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"`{name}` must be finite; got {v}")
    return v


@dataclass(frozen=True)
class CircuitNode:
    """One node of a circuit: a component of a transformer (the token embeddings, an attention head,
    an MLP, the logits) or a unit of any network (a CNN ``channel``, a ``unit`` of a dense layer).

    ``layer`` is the block (or layer) index, counted from 0 in forward order; the embeddings sit
    before layer 0 (their ``layer`` is -1 by convention) and the logits after the last layer
    (``layer`` = number of layers). ``head`` is set for heads only, ``index`` for channels and units
    only (the channel or unit number inside its layer). ``score`` is how much the node matters (its
    attribution, patching or causal effect, ...), signed.
    """

    name: str
    kind: str
    layer: int
    head: int | None = None
    score: float = 0.0
    index: int | None = None

    @property
    def order(self) -> tuple[int, int]:
        """Position in the forward pass: a head reads the residual stream before the MLP of its block;
        the channels (or units) of one layer run side by side."""
        if self.kind == "embed":
            return (-1, 0)
        if self.kind == "logits":
            return (10**9, 0)
        return (self.layer, 2 if self.kind == "mlp" else 1)

    @property
    def position(self) -> int | None:
        """The node's index inside its layer: the head for a head, the index for a channel or unit."""
        return self.head if self.kind == "head" else self.index


@dataclass(frozen=True)
class CircuitEdge:
    """A directed, weighted connection ``src -> dst`` (names of nodes); ``weight`` is signed."""

    src: str
    dst: str
    weight: float = 1.0


@dataclass
class Circuit:
    """A circuit: scored components (:class:`CircuitNode`) joined by weighted edges (:class:`CircuitEdge`).

    Edges follow the forward pass (embeddings -> heads -> MLPs -> later blocks -> logits; channels
    of one layer -> channels of a later layer), so the graph is acyclic and draws as layers. Build
    one from lists of nodes and edges, from name -> score dicts (:meth:`from_scores`), from component
    scores (:func:`to_circuit`) or from a networkx graph (:meth:`from_networkx`); prune it with
    :meth:`top` and :meth:`threshold`. Nodes and edges are validated on creation: unique names, a
    ``head`` exactly for heads and an ``index`` exactly for channels and units, finite scores and
    weights, edges between known nodes that point forward, no duplicates. ``meta`` may hold
    ``"layer_names"`` (one name per layer, e.g. module names), which views use as column labels.
    The graph type is ours (written by hand: a small dataclass); networkx does the graph
    algorithms once converted.
    """

    nodes: list[CircuitNode]
    edges: list[CircuitEdge] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, (list, tuple)) or len(self.nodes) == 0:
            raise InputError("`nodes` must be a non-empty list of CircuitNode")
        if not isinstance(self.edges, (list, tuple)):
            raise InputError(f"`edges` must be a list of CircuitEdge; got {type(self.edges).__name__}")
        nodes: list[CircuitNode] = []
        for i, n in enumerate(self.nodes):
            if not isinstance(n, CircuitNode):
                raise InputError(f"`nodes[{i}]` must be a CircuitNode; got {type(n).__name__}")
            if not isinstance(n.name, str) or not n.name:
                raise InputError(f"`nodes[{i}].name` must be a non-empty str")
            check_choice(n.kind, NODE_KINDS, f"nodes[{i}].kind")
            if isinstance(n.layer, bool) or not isinstance(n.layer, (int, np.integer)):
                raise InputError(f"`nodes[{i}].layer` must be an int; got {type(n.layer).__name__}")
            if n.kind in COMPONENT_KINDS and n.layer < 0:
                raise InputError(f"`nodes[{i}].layer` must be >= 0 for a {n.kind}; got {n.layer}")
            for attr, kinds in (("head", ("head",)), ("index", ("channel", "unit"))):
                v = getattr(n, attr)
                if n.kind in kinds:
                    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                        raise InputError(f"`nodes[{i}].{attr}` must be an int >= 0 for a {n.kind}; got {v!r}")
                elif v is not None:
                    raise InputError(f"`nodes[{i}].{attr}` must be None for a {n.kind} node; got {v!r}")
            score = _finite(n.score, f"nodes[{i}].score")
            head = None if n.head is None else int(n.head)
            index = None if n.index is None else int(n.index)
            nodes.append(CircuitNode(n.name, n.kind, int(n.layer), head, score, index))
        names = [n.name for n in nodes]
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            raise InputError(f"`nodes` must have unique names; repeated: {dup}")
        by_name = {n.name: n for n in nodes}
        edges: list[CircuitEdge] = []
        seen: set[tuple[str, str]] = set()
        for i, e in enumerate(self.edges):
            if not isinstance(e, CircuitEdge):
                raise InputError(f"`edges[{i}]` must be a CircuitEdge; got {type(e).__name__}")
            for end in ("src", "dst"):
                if getattr(e, end) not in by_name:
                    raise InputError(f"`edges[{i}].{end}` is {getattr(e, end)!r}, which is not a node of the circuit")
            if by_name[e.src].order >= by_name[e.dst].order:
                raise InputError(
                    f"`edges[{i}]` goes {e.src} -> {e.dst}, against the forward pass (edges point to later components)"
                )
            if (e.src, e.dst) in seen:
                raise InputError(f"`edges[{i}]` repeats the edge {e.src} -> {e.dst}")
            seen.add((e.src, e.dst))
            edges.append(CircuitEdge(e.src, e.dst, _finite(e.weight, f"edges[{i}].weight")))
        if not isinstance(self.meta, dict):
            raise InputError(f"`meta` must be a dict; got {type(self.meta).__name__}")
        self.nodes, self.edges = nodes, edges

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_scores(
        cls,
        scores: Mapping[str, float],
        edges: Mapping[tuple[str, str], float] | None = None,
        *,
        n_layers: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Circuit:
        """A circuit from canonical names (see :func:`node_name`): ``{"L0.H1": 0.3, "L2.C5": 0.1, ...}``
        and ``{("embed", "L0.H1"): 0.5, ...}``. Nodes named only by an edge get score 0. The logits'
        ``layer`` is ``n_layers`` (default: one past the last layer that appears)."""
        if not isinstance(scores, Mapping) or len(scores) == 0:
            raise InputError("`scores` must be a non-empty dict: node name -> score")
        edges = {} if edges is None else edges
        if not isinstance(edges, Mapping):
            raise InputError("`edges` must be a dict: (src, dst) -> weight")
        parsed: dict[str, tuple[str, int, int | None]] = {}
        names = list(scores)
        seen = set(names)
        for key in edges:
            if not (isinstance(key, tuple) and len(key) == 2):
                raise InputError(f"`edges` keys must be (src, dst) name pairs; got {key!r}")
            for k in key:
                if k not in seen:
                    names.append(k)
                    seen.add(k)
        for name in names:
            p = _parse_name(name)
            if p is None:
                raise InputError(f"node name {name!r} is not one of {_NAME_FORMS}")
            parsed[name] = p
        last = max([v[1] for v in parsed.values()] + [-1])
        top = last + 1 if n_layers is None else check_int(n_layers, "n_layers", low=last + 1)
        nodes = [_node(name, kind, top if kind == "logits" else layer, pos, scores.get(name, 0.0))
                 for name, (kind, layer, pos) in parsed.items()]  # fmt: skip
        return cls(nodes, [CircuitEdge(s, d, w) for (s, d), w in edges.items()], dict(meta or {}))

    @classmethod
    def random(
        cls, n_layers: int = 12, n_heads: int = 12, *, seed: int = 0, edges_per_node: int = 3, p_node: float = 1.0
    ) -> Circuit:
        """A synthetic circuit for demos and tests: every head and MLP of ``n_layers`` blocks (each kept
        with probability ``p_node``), random signed scores, and ``edges_per_node`` random incoming edges
        per component (from earlier components or the embeddings), plus edges from the last components to
        the logits. Seeded: the same arguments give the same circuit."""
        n_layers = check_int(n_layers, "n_layers", low=1)
        n_heads = check_int(n_heads, "n_heads", low=1)
        edges_per_node = check_int(edges_per_node, "edges_per_node", low=1)
        p = check_float(p_node, "p_node", low=0.0, high=1.0)
        rng = np.random.default_rng(check_int(seed, "seed"))
        comps = [("head", layer, h) for layer in range(n_layers) for h in range(n_heads)]
        comps = sorted(comps + [("mlp", layer, None) for layer in range(n_layers)], key=lambda c: (c[1], c[0] == "mlp"))
        kept = [c for c in comps if rng.random() < p] or comps[:1]
        nodes = [CircuitNode("embed", "embed", -1)]
        nodes += [CircuitNode(node_name(k, layer, h), k, layer, h, float(rng.normal())) for k, layer, h in kept]
        nodes.append(CircuitNode("logits", "logits", n_layers, None, 1.0))
        edges: dict[tuple[str, str], float] = {}
        for j in range(1, len(nodes) - 1):
            earlier = [n.name for n in nodes[:j] if n.order < nodes[j].order]
            for src in rng.choice(earlier, size=min(edges_per_node, len(earlier)), replace=False):
                edges[(str(src), nodes[j].name)] = float(rng.normal())
        for n in nodes[-1 - min(edges_per_node * 2, len(nodes) - 2) : -1]:
            edges[(n.name, "logits")] = float(rng.normal())
        meta = {"synthetic": True, "seed": seed, "n_layers": n_layers, "n_heads": n_heads}
        return cls(nodes, [CircuitEdge(s, d, w) for (s, d), w in edges.items()], meta)

    # ---------------------------------------------------------------- access

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> CircuitNode:
        """The node called ``name``."""
        for n in self.nodes:
            if n.name == name:
                return n
        close = difflib.get_close_matches(str(name), [n.name for n in self.nodes], n=3, cutoff=0.5)
        raise InputError(f"the circuit has no node {name!r}" + (f"; did you mean {close}?" if close else ""))

    @property
    def n_layers(self) -> int:
        """Number of layers spanned by the components: one past the highest layer of a head, MLP,
        channel or unit."""
        return max([n.layer + 1 for n in self.nodes if n.kind in COMPONENT_KINDS] + [0])

    @property
    def n_heads(self) -> int:
        """Heads per layer as far as the nodes show: one past the highest head index."""
        return max([n.head + 1 for n in self.nodes if n.head is not None] + [0])

    def neighbours(self, name: str) -> dict[str, list[CircuitEdge]]:
        """The edges into and out of node ``name``: ``{"in": [...], "out": [...]}``."""
        self.node(name)
        return {"in": [e for e in self.edges if e.dst == name], "out": [e for e in self.edges if e.src == name]}

    # ---------------------------------------------------------------- pruning

    def _sub(self, keep: set[str], edges: list[CircuitEdge], **meta: Any) -> Circuit:
        return Circuit([n for n in self.nodes if n.name in keep], edges, {**self.meta, **meta})

    def top(self, k: int, *, keep_io: bool = True, by: str = "abs") -> Circuit:
        """The ``k`` components (heads, MLPs, channels, units) that rank first, the embeddings and
        logits when ``keep_io``, and the edges among them. ``by="abs"`` ranks by ``|score|``,
        ``by="score"`` by the signed score (largest first); ties: earlier in the forward pass first."""
        k = check_int(k, "k", low=1)
        check_choice(by, ("abs", "score"), "by")
        comps = [n for n in self.nodes if n.kind in COMPONENT_KINDS]
        key = abs if by == "abs" else float
        ranked = sorted(comps, key=lambda n: (-key(n.score), n.order, n.position or 0))[:k]
        keep = {n.name for n in ranked}
        if keep_io:
            keep |= {n.name for n in self.nodes if n.kind in ("embed", "logits")}
        if not keep:
            raise InputError("`k`: the circuit has no components (heads, MLPs, channels, units) to keep")
        return self._sub(keep, [e for e in self.edges if e.src in keep and e.dst in keep], top_k=k)

    def threshold(self, min_weight: float, *, drop_isolated: bool = True) -> Circuit:
        """The edges with ``|weight| >= min_weight``; with ``drop_isolated`` the components left
        without any edge are dropped too (the embeddings and logits always stay)."""
        t = check_float(min_weight, "min_weight", low=0.0)
        edges = [e for e in self.edges if abs(e.weight) >= t]
        touched = {e.src for e in edges} | {e.dst for e in edges}
        keep = {n.name for n in self.nodes if not drop_isolated or n.name in touched or n.kind in ("embed", "logits")}
        return self._sub(keep, edges, threshold=t)

    # ---------------------------------------------------------------- conversion

    def to_networkx(self):
        """A ``networkx.DiGraph``: node attributes ``kind, layer, head, score`` (and ``index`` for
        channels and units), edge attribute ``weight``, ``graph.graph`` = ``meta``."""
        import networkx as nx

        g = nx.DiGraph(**self.meta)
        for n in self.nodes:
            g.add_node(n.name, **_node_attrs(n))
        for e in self.edges:
            g.add_edge(e.src, e.dst, weight=e.weight)
        return g

    @classmethod
    def from_networkx(cls, graph: Any) -> Circuit:
        """The inverse of :meth:`to_networkx`: every node needs ``kind`` and ``layer`` (``head`` for heads,
        ``index`` for channels and units, ``score`` defaults to 0), every edge may have ``weight``
        (default 1)."""
        import networkx as nx

        if not isinstance(graph, nx.DiGraph):
            raise InputError(f"`graph` must be a networkx.DiGraph; got {type(graph).__name__}")
        nodes = []
        for name, d in graph.nodes(data=True):
            missing = [k for k in ("kind", "layer") if k not in d]
            if missing:
                raise InputError(f"`graph` node {name!r} lacks the attribute(s) {missing}")
            nodes.append(
                CircuitNode(str(name), d["kind"], d["layer"], d.get("head"), d.get("score", 0.0), d.get("index"))
            )
        edges = [CircuitEdge(str(s), str(t), d.get("weight", 1.0)) for s, t, d in graph.edges(data=True)]
        return cls(nodes, edges, dict(graph.graph))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: ``{"nodes": [...], "edges": [...], "meta": {...}}``."""
        return {
            "nodes": [{"name": n.name, **_node_attrs(n)} for n in self.nodes],
            "edges": [{"src": e.src, "dst": e.dst, "weight": e.weight} for e in self.edges],
            "meta": dict(self.meta),
        }

    def __repr__(self) -> str:
        kinds = {k: sum(n.kind == k for n in self.nodes) for k in NODE_KINDS}
        parts = ", ".join(f"{v} {k}" for k, v in kinds.items() if v)
        return f"Circuit({len(self.nodes)} nodes: {parts}; {len(self.edges)} edges)"


def _node(name: str, kind: str, layer: int, position: int | None, score: float) -> CircuitNode:
    """A node whose in-layer ``position`` goes to ``head`` for a head and to ``index`` for a channel or unit."""
    if kind == "head":
        return CircuitNode(name, kind, layer, position, score)
    return CircuitNode(name, kind, layer, None, score, position)


def _node_attrs(n: CircuitNode) -> dict[str, Any]:
    """A node's attributes as plain data; ``index`` only where it is set (channels and units)."""
    d = {"kind": n.kind, "layer": n.layer, "head": n.head, "score": n.score}
    if n.index is not None:
        d["index"] = n.index
    return d


# -------------------------------------------------------------------------------------- from scores

_EDGE_MODES = ("logits", "io", "none")


def to_circuit(
    source: Any,
    *,
    example: int | None = None,
    top: int | None = None,
    by: str = "abs",
    edges: str | Mapping[tuple[str, str], float] = "logits",
    n_layers: int | None = None,
    title: str | None = None,
) -> Circuit:
    """A :class:`Circuit` from component scores: the one conversion every method uses.

    ``source`` is an :class:`~xattr_nb.attribution.Attribution` with ``kind="components"`` whose
    ``labels`` are canonical node names (:func:`node_name`: heads, MLPs, channels, units), or any
    result with a ``to_attribution()`` method (:class:`~xattr_nb.interventions.PatchingResult`,
    ``qa_circuits.CMAResult``, ``causal_paths.CausalPaths``), which is called with its defaults.

    - Node scores: row ``example`` of the scores, or, with ``example=None``, the only row (the mean
      over rows when there are several: the batch mean a patching result reports).
    - ``edges="logits"``: an edge from every component to the logits, weighted by its score (a total
      effect, not a path decomposition); ``"io"``: also one from the embeddings to every component,
      with the same weight; ``"none"``: no edges; or a dict ``{(src, dst): weight}`` of canonical
      names (nodes named only there get score 0). The ``"logits"`` node is added for
      ``"logits"``/``"io"``, and the ``"embed"`` node as well when the components are heads or MLPs
      (the token embeddings of a transformer).
    - ``top`` keeps the ``top`` components that rank first ``by`` ``"abs"`` (``|score|``) or
      ``"score"`` (signed, largest first), with the embeddings, logits and the edges among them
      (:meth:`Circuit.top`).
    - The logits sit at layer ``n_layers``: by default ``meta["n_layers"]`` of the attribution, else one
      past the last layer named in the labels (before pruning).

    ``meta`` of the circuit: the method, the title (default: the method), the attribution's
    ``layer_names`` if any, the row used and ``top_k`` when pruned.
    """
    attr = source
    if not isinstance(attr, Attribution):
        convert = getattr(source, "to_attribution", None)
        if not callable(convert):
            raise InputError(
                "`source` must be an Attribution with kind='components' or a result with a to_attribution() "
                f"method; got {type(source).__name__}"
            )
        attr = convert()
    if attr.kind != "components":
        raise InputError(f"`source` must score components (kind='components'); it scores {attr.kind}")
    if attr.labels is None:
        raise InputError("`source` has no `labels`: a circuit needs the name of every component")
    parsed = [_parse_name(lab) for lab in attr.labels]
    bad = [lab for lab, p in zip(attr.labels, parsed, strict=True) if p is None or p[0] in ("embed", "logits")]
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise InputError(
            f"`source` labels {bad[:5]}{more} name no circuit component; a component is named "
            "'L<layer>.H<head>', 'L<layer>.MLP', 'L<layer>.C<channel>' or 'L<layer>.U<unit>' "
            "(a PatchingResult converts its heads and MLPs with to_attribution(kinds=('head', 'mlp_out')))"
        )
    if len(set(attr.labels)) != len(attr.labels):
        raise InputError("`source` labels repeat a component name")
    b = attr.scores.shape[0]
    if example is None:
        row = attr.scores[0] if b == 1 else attr.scores.mean(0)
    else:
        example = check_int(example, "example", low=-b, high=b - 1)
        row = attr.scores[example]
    if isinstance(edges, str):
        check_choice(edges, _EDGE_MODES, "edges")
    elif not isinstance(edges, Mapping):
        raise InputError(f"`edges` must be one of {list(_EDGE_MODES)} or a dict (src, dst) -> weight")
    if top is not None:
        top = check_int(top, "top", low=1)
    check_choice(by, ("abs", "score"), "by")
    last = max(p[1] for p in parsed) + 1
    if n_layers is None:
        n_layers = attr.meta.get("n_layers", last)
    n_layers = check_int(n_layers, "n_layers", low=last)
    scores = {lab: float(v) for lab, v in zip(attr.labels, row.tolist(), strict=True)}
    if isinstance(edges, Mapping):
        edge_w = dict(edges)
    else:
        edge_w = {}
        if edges == "io":
            edge_w |= {("embed", n): s for n, s in scores.items()}
        if edges in ("logits", "io"):
            edge_w |= {(n, "logits"): s for n, s in scores.items()}
    io: dict[str, float] = {}
    if edges in ("logits", "io"):
        if any(p[0] in ("head", "mlp") for p in parsed):
            io["embed"] = 0.0
        io["logits"] = 0.0
    meta = {"method": attr.method, "title": title or attr.method}
    if "layer_names" in attr.meta:
        meta["layer_names"] = list(attr.meta["layer_names"])
    if "positions" in attr.meta:
        meta["positions"] = attr.meta["positions"]
    if b > 1:
        meta["example"] = "mean" if example is None else example
    ordered = {**({"embed": io.pop("embed")} if "embed" in io else {}), **scores, **io}
    circ = Circuit.from_scores(ordered, edge_w, n_layers=n_layers, meta=meta)
    return circ if top is None else circ.top(top, by=by)

"""Circuits: scored graphs of model components (heads, MLPs, embeddings, logits), to and from networkx.

The one graph type every circuit-finding method returns (activation patching, attribution patching,
RelP, causal mediation) and :class:`~xattr_nb.widgets.CircuitView` draws.
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

from xattr_nb.checks import InputError, check_choice, check_float, check_int

__all__ = ["NODE_KINDS", "Circuit", "CircuitEdge", "CircuitNode", "node_name"]

NODE_KINDS: tuple[str, ...] = ("embed", "head", "mlp", "logits")
_NAME_RE = re.compile(r"^(?:embed|logits|L(\d+)\.H(\d+)|L(\d+)\.MLP)$")


def node_name(kind: str, layer: int = 0, head: int | None = None) -> str:
    """The canonical name of a component: ``"embed"``, ``"L3.H5"`` (layer 3, head 5), ``"L3.MLP"``, ``"logits"``."""
    check_choice(kind, NODE_KINDS, "kind")
    if kind == "head":
        return f"L{layer}.H{head}"
    if kind == "mlp":
        return f"L{layer}.MLP"
    return kind


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
    """One component of a transformer: the token embeddings, an attention head, an MLP, or the logits.

    ``layer`` is the block index for heads and MLPs; the embeddings sit before block 0 (their
    ``layer`` is -1 by convention) and the logits after the last block (``layer`` = number of
    blocks). ``head`` is set for heads only. ``score`` is how much the component matters (its
    attribution, patching effect, ...), signed.
    """

    name: str
    kind: str
    layer: int
    head: int | None = None
    score: float = 0.0

    @property
    def order(self) -> tuple[int, int]:
        """Position in the forward pass: a head reads the residual stream before the MLP of its block."""
        if self.kind == "embed":
            return (-1, 0)
        if self.kind == "logits":
            return (10**9, 0)
        return (self.layer, 1 if self.kind == "head" else 2)


@dataclass(frozen=True)
class CircuitEdge:
    """A directed, weighted connection ``src -> dst`` (names of nodes); ``weight`` is signed."""

    src: str
    dst: str
    weight: float = 1.0


@dataclass
class Circuit:
    """A circuit: scored components (:class:`CircuitNode`) joined by weighted edges (:class:`CircuitEdge`).

    Edges follow the forward pass (embeddings -> heads -> MLPs -> later blocks -> logits), so the
    graph is acyclic and draws as layers. Build one from lists of nodes and edges, from name ->
    score dicts (:meth:`from_scores`) or from a networkx graph (:meth:`from_networkx`); prune
    it with :meth:`top` and :meth:`threshold`. Nodes and edges are validated on creation: unique
    names, a ``head`` exactly for heads, finite scores and weights, edges between known nodes that
    point forward, no duplicates. The graph type is ours (written by hand: a small dataclass);
    networkx does the graph algorithms once converted.
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
            if n.kind in ("head", "mlp") and n.layer < 0:
                raise InputError(f"`nodes[{i}].layer` must be >= 0 for a {n.kind}; got {n.layer}")
            if n.kind == "head":
                if isinstance(n.head, bool) or not isinstance(n.head, (int, np.integer)) or n.head < 0:
                    raise InputError(f"`nodes[{i}].head` must be an int >= 0 for a head; got {n.head!r}")
            elif n.head is not None:
                raise InputError(f"`nodes[{i}].head` must be None for a {n.kind} node; got {n.head!r}")
            score = _finite(n.score, f"nodes[{i}].score")
            head = None if n.head is None else int(n.head)
            nodes.append(CircuitNode(n.name, n.kind, int(n.layer), head, score))
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
        """A circuit from canonical names (see :func:`node_name`): ``{"L0.H1": 0.3, ...}`` and
        ``{("embed", "L0.H1"): 0.5, ...}``. Nodes named only by an edge get score 0. The logits'
        ``layer`` is ``n_layers`` (default: one past the last block that appears)."""
        if not isinstance(scores, Mapping) or len(scores) == 0:
            raise InputError("`scores` must be a non-empty dict: node name -> score")
        edges = {} if edges is None else edges
        if not isinstance(edges, Mapping):
            raise InputError("`edges` must be a dict: (src, dst) -> weight")
        parsed: dict[str, tuple[str, int, int | None]] = {}
        names = list(scores)
        for key in edges:
            if not (isinstance(key, tuple) and len(key) == 2):
                raise InputError(f"`edges` keys must be (src, dst) name pairs; got {key!r}")
            names += [k for k in key if k not in names]
        for name in names:
            m = _NAME_RE.match(name) if isinstance(name, str) else None
            if m is None:
                raise InputError(
                    f"node name {name!r} is not one of 'embed', 'logits', 'L<layer>.H<head>', 'L<layer>.MLP'"
                )
            if m.group(1) is not None:
                parsed[name] = ("head", int(m.group(1)), int(m.group(2)))
            elif m.group(3) is not None:
                parsed[name] = ("mlp", int(m.group(3)), None)
            else:
                parsed[name] = (name, -1, None)
        last = max([v[1] for v in parsed.values()] + [-1])
        top = last + 1 if n_layers is None else check_int(n_layers, "n_layers", low=last + 1)
        nodes = [
            CircuitNode(name, kind, top if kind == "logits" else layer, head, scores.get(name, 0.0))
            for name, (kind, layer, head) in parsed.items()
        ]
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
        """Number of blocks spanned: one past the highest layer of a head, MLP or the logits' layer."""
        return max([n.layer + 1 for n in self.nodes if n.kind in ("head", "mlp")] + [0])

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

    def top(self, k: int, *, keep_io: bool = True) -> Circuit:
        """The ``k`` components (heads and MLPs) with the largest ``|score|`` (ties: earlier in the
        forward pass first), the embeddings and logits when ``keep_io``, and the edges among them."""
        k = check_int(k, "k", low=1)
        comps = [n for n in self.nodes if n.kind in ("head", "mlp")]
        ranked = sorted(comps, key=lambda n: (-abs(n.score), n.order, n.head or 0))[:k]
        keep = {n.name for n in ranked}
        if keep_io:
            keep |= {n.name for n in self.nodes if n.kind in ("embed", "logits")}
        if not keep:
            raise InputError("`k`: the circuit has no heads or MLPs to keep")
        return self._sub(keep, [e for e in self.edges if e.src in keep and e.dst in keep], top_k=k)

    def threshold(self, min_weight: float, *, drop_isolated: bool = True) -> Circuit:
        """The edges with ``|weight| >= min_weight``; with ``drop_isolated`` the heads and MLPs left
        without any edge are dropped too (the embeddings and logits always stay)."""
        t = check_float(min_weight, "min_weight", low=0.0)
        edges = [e for e in self.edges if abs(e.weight) >= t]
        touched = {e.src for e in edges} | {e.dst for e in edges}
        keep = {n.name for n in self.nodes if not drop_isolated or n.name in touched or n.kind in ("embed", "logits")}
        return self._sub(keep, edges, threshold=t)

    # ---------------------------------------------------------------- conversion

    def to_networkx(self):
        """A ``networkx.DiGraph``: node attributes ``kind, layer, head, score``, edge attribute ``weight``,
        ``graph.graph`` = ``meta``."""
        import networkx as nx

        g = nx.DiGraph(**self.meta)
        for n in self.nodes:
            g.add_node(n.name, kind=n.kind, layer=n.layer, head=n.head, score=n.score)
        for e in self.edges:
            g.add_edge(e.src, e.dst, weight=e.weight)
        return g

    @classmethod
    def from_networkx(cls, graph: Any) -> Circuit:
        """The inverse of :meth:`to_networkx`: every node needs ``kind`` and ``layer`` (``head`` for heads,
        ``score`` defaults to 0), every edge may have ``weight`` (default 1)."""
        import networkx as nx

        if not isinstance(graph, nx.DiGraph):
            raise InputError(f"`graph` must be a networkx.DiGraph; got {type(graph).__name__}")
        nodes = []
        for name, d in graph.nodes(data=True):
            missing = [k for k in ("kind", "layer") if k not in d]
            if missing:
                raise InputError(f"`graph` node {name!r} lacks the attribute(s) {missing}")
            nodes.append(CircuitNode(str(name), d["kind"], d["layer"], d.get("head"), d.get("score", 0.0)))
        edges = [CircuitEdge(str(s), str(t), d.get("weight", 1.0)) for s, t, d in graph.edges(data=True)]
        return cls(nodes, edges, dict(graph.graph))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: ``{"nodes": [...], "edges": [...], "meta": {...}}``."""
        return {
            "nodes": [
                {"name": n.name, "kind": n.kind, "layer": n.layer, "head": n.head, "score": n.score} for n in self.nodes
            ],
            "edges": [{"src": e.src, "dst": e.dst, "weight": e.weight} for e in self.edges],
            "meta": dict(self.meta),
        }

    def __repr__(self) -> str:
        kinds = {k: sum(n.kind == k for n in self.nodes) for k in NODE_KINDS}
        parts = ", ".join(f"{v} {k}" for k, v in kinds.items() if v)
        return f"Circuit({len(self.nodes)} nodes: {parts}; {len(self.edges)} edges)"

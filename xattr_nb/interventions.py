"""Hooks by module name that never leak, activation caches and output patching.

Everything here addresses a module by its name in ``model.named_modules()`` (``"transformer.h.0"``,
``"bert.encoder.layer.3.output"``), the vocabulary of Hugging Face checkpoints, so the same code
runs on HF GPT-2/BERT and on our tiny models. Hooks are registered inside context managers
(as zennit does) and removed on exit, also when the body raises: a failed cell in a notebook
never leaves a hook behind to corrupt the next run.

- :func:`hooks`: register forward (or forward-pre) hooks by name for the body of a ``with``.
- :func:`run_with_cache`: one forward that records module outputs into an :class:`ActivationCache`.
- :func:`block_names`: the residual blocks of a transformer (GPT-2, BERT, ``blocks``/``layers``).
- :func:`patch_output`: replace a module's output (activation patching, ablations).

TransformerLens and nnsight offer the same ideas on their own model classes; this is the thin
layer for plain ``nn.Module`` / HF models, written by hand on ``register_forward_hook``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from xattr_nb.checks import InputError, check_choice

__all__ = ["ActivationCache", "block_names", "first_tensor", "get_module", "hooks", "patch_output", "run_with_cache"]


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InputError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    return model


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (``""`` is the model itself); an unknown name suggests close ones."""
    _check_model(model)
    if not isinstance(name, str):
        raise InputError(f"module name must be a str such as 'transformer.h.0'; got {type(name).__name__}")
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
        hint = f"; did you mean {close}?" if close else "; see [n for n, _ in model.named_modules()]"
        raise InputError(f"{type(model).__name__} has no module named {name!r}{hint}")
    return modules[name]


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a module "outputs": the output itself, the first element of a tuple, or the first
    field of a HF ``ModelOutput`` (e.g. ``last_hidden_state``); ``None`` if there is none."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _replace_first(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    if hasattr(output, "to_tuple"):  # HF ModelOutput: a dict whose first field is the tensor
        key = next(iter(output.keys()))
        output[key] = new
        return output
    raise InputError(f"cannot replace the output of type {type(output).__name__}")


@contextmanager
def hooks(
    model: nn.Module, fns: Mapping[str, Callable[..., Any]], *, kind: str = "forward"
) -> Iterator[dict[str, torch.utils.hooks.RemovableHandle]]:
    """Register ``fns`` by module name for the body of the ``with``; every handle is removed on exit.

    ``kind="forward"``: ``fn(module, args, output)``, returning a new output or ``None`` (torch's
    ``register_forward_hook``). ``kind="pre"``: ``fn(module, args)``, returning new args or ``None``
    (``register_forward_pre_hook``). All names are resolved before anything is registered, so a
    typo registers nothing.
    """
    _check_model(model)
    check_choice(kind, ("forward", "pre"), "kind")
    if not isinstance(fns, Mapping) or not fns:
        raise InputError("`fns` must be a non-empty dict {module name: hook function}")
    targets = {}
    for name, fn in fns.items():
        if not callable(fn):
            raise InputError(f"hook for {name!r} must be callable; got {type(fn).__name__}")
        targets[name] = (get_module(model, name), fn)
    handles: dict[str, torch.utils.hooks.RemovableHandle] = {}
    try:
        for name, (mod, fn) in targets.items():
            reg = mod.register_forward_hook if kind == "forward" else mod.register_forward_pre_hook
            handles[name] = reg(fn)
        yield handles
    finally:
        for h in handles.values():
            h.remove()


class ActivationCache(Mapping):
    """Module outputs of one forward, by module name: ``cache["transformer.h.0"]``.

    A read-only mapping (``keys()``, ``items()``, ``in``). ``calls[name]`` says how many times the
    module ran in the forward; when more than once (a weight-shared block), the cache holds the
    last output.
    """

    def __init__(self, data: dict[str, torch.Tensor], calls: dict[str, int] | None = None) -> None:
        self._data = dict(data)
        self.calls = dict(calls or {})

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._data:
            close = difflib.get_close_matches(str(name), list(self._data), n=3, cutoff=0.5)
            hint = f"; did you mean {close}?" if close else ""
            raise KeyError(f"{name!r} is not in this cache{hint} ({len(self._data)} entries)")
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def stack(self, names: list[str]) -> torch.Tensor:
        """The cached tensors of ``names`` stacked on a new first dim (e.g. all blocks: ``[L, B, T, D]``)."""
        return torch.stack([self[n] for n in names])

    def __repr__(self) -> str:
        items = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in list(self._data.items())[:6])
        more = f", ... ({len(self._data)} entries)" if len(self._data) > 6 else ""
        return f"ActivationCache({items}{more})"


def run_with_cache(
    model: nn.Module, *args: Any, names: list[str] | None = None, detach: bool = True, **kwargs: Any
) -> tuple[Any, ActivationCache]:
    """Run ``model(*args, **kwargs)`` once and return ``(output, cache)`` of module outputs by name.

    ``names``: which modules to record (the first tensor of each output, see :func:`first_tensor`);
    ``None`` records every submodule whose output holds a tensor. ``detach=False`` keeps the
    autograd graph, for gradients with respect to activations (attribution patching).
    """
    _check_model(model)
    if names is None:
        chosen = [n for n, _ in model.named_modules() if n]
        strict = False
    else:
        if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
            raise InputError("`names` must be a non-empty list of module names, or None for every module")
        chosen, strict = list(names), True
    data: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}

    def make(name: str) -> Callable[..., None]:
        def save(_m: nn.Module, _args: Any, output: Any) -> None:
            t = first_tensor(output)
            if t is None:
                if strict:
                    raise InputError(f"module {name!r} returned {type(output).__name__}, which holds no tensor")
                return
            data[name] = t.detach() if detach else t
            calls[name] = calls.get(name, 0) + 1

        return save

    with hooks(model, {n: make(n) for n in chosen}):
        output = model(*args, **kwargs)
    return output, ActivationCache(data, calls)


# Where popular architectures keep their residual blocks, most specific first.
_BLOCK_PATHS = (
    "transformer.h",  # GPT2LMHeadModel and friends
    "h",  # GPT2Model
    "bert.encoder.layer",  # BertFor...
    "roberta.encoder.layer",
    "encoder.layer",  # BertModel
    "model.layers",  # Llama, Mistral, Qwen, OLMoE
    "model.decoder.layers",  # OPT
    "gpt_neox.layers",
    "blocks",  # our tiny models, TransformerLens-style
    "layers",
)


def block_names(model: nn.Module) -> list[str]:
    """Names of the residual blocks, in order: ``transformer.h.{i}`` (GPT-2), ``encoder.layer.{i}`` or
    ``bert.encoder.layer.{i}`` (BERT), or ``blocks.{i}`` / ``layers.{i}`` for any model that keeps its
    blocks in an ``nn.ModuleList`` under that name."""
    _check_model(model)
    modules = dict(model.named_modules())
    for path in _BLOCK_PATHS:
        if isinstance(modules.get(path), nn.ModuleList):
            return [f"{path}.{i}" for i in range(len(modules[path]))]
    lists = [n for n, m in modules.items() if isinstance(m, nn.ModuleList)]
    raise InputError(
        f"cannot find the residual blocks of {type(model).__name__} (looked for {list(_BLOCK_PATHS)}); "
        f"its nn.ModuleLists are {lists}: pass module names explicitly"
    )


@contextmanager
def patch_output(
    model: nn.Module, name: str, value: torch.Tensor | float | Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[nn.Module]:
    """Within the ``with``, module ``name`` outputs ``value`` instead of what it computes.

    ``value``: a tensor of exactly the output's shape (e.g. an activation cached on another
    input: activation patching), a number (every entry set to it: zero/constant ablation), or a
    function ``f(output) -> new output`` of the same shape (mean ablation, steering, patching
    some positions only). For tuple outputs (HF blocks in older transformers) only the first
    element is replaced; the rest passes through.
    """
    mod = get_module(model, name)
    if isinstance(value, bool) or not (isinstance(value, (torch.Tensor, int, float)) or callable(value)):
        raise InputError(f"`value` must be a tensor, a number or a function of the output; got {type(value).__name__}")

    def hook(_m: nn.Module, _args: Any, output: Any) -> Any:
        out = first_tensor(output)
        if out is None:
            raise InputError(f"module {name!r} returned {type(output).__name__}, which holds no tensor to patch")
        if isinstance(value, torch.Tensor):
            new = value.to(device=out.device, dtype=out.dtype)
        elif isinstance(value, (int, float)):
            new = torch.full_like(out, float(value))
        else:
            new = value(out)
            if not isinstance(new, torch.Tensor):
                raise InputError(f"the patch function for {name!r} must return a tensor; got {type(new).__name__}")
        if tuple(new.shape) != tuple(out.shape):
            raise InputError(
                f"patch for {name!r} has shape {tuple(new.shape)} but the module outputs {tuple(out.shape)}"
            )
        return _replace_first(output, new)

    with hooks(model, {name: hook}):
        yield mod


# --------------------------------------------------------------------------------------------
# Circuits: scored graphs of model components
# --------------------------------------------------------------------------------------------

import math  # noqa: E402  (this section was appended; keep the imports it needs beside it)
import re  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402

from xattr_nb.checks import check_float, check_int  # noqa: E402

__all__ += ["Circuit", "CircuitEdge", "CircuitNode", "node_name"]

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

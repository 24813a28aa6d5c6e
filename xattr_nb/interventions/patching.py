"""Activation patching, attribution patching (AtP), RelP and IG-patching over transformer components.

A *site* is one component activation of a decoder-only transformer (HF GPT-2 and our tiny models,
also Llama-style names), per layer and token position:

============  ====================================================  ==============================
kind          what                                                  where (GPT-2 names)
============  ====================================================  ==============================
resid_pre     residual stream entering block ``l``                  input of ``transformer.h.{l}``
attn_out      attention output added to the stream                  output of ``transformer.h.{l}.attn``
mlp_out       MLP output added to the stream                        output of ``transformer.h.{l}.mlp``
head          head ``h``'s output ``z_h`` (its contribution is      input of ``transformer.h.{l}.attn.c_proj``,
              ``z_h @ W_O[h*d_head:(h+1)*d_head]``)                  viewed as ``[B, T, H, d_head]``
============  ====================================================  ==============================

All estimators answer one question, in the *denoising* direction: how much does the metric move
when the component's clean activation is patched into the corrupted run?

- :func:`activation_patching` (AP, the ground truth): one patched forward per component, batched by
  repeating the corrupted batch and patching a different component in each copy.
- :func:`attribution_patching` (AtP): ``(a_clean - a_corr) . dm/da`` at the corrupted run, summed
  over the hidden dimension: 2 forwards + 1 backward for every site at once. ``mode="relp"`` takes
  the gradient inside :func:`~xattr_nb.interventions.lrp.lrp_mode` (RelP, Jafari et al. 2025).
- :func:`ig_patching`: the same product with the gradient averaged along the straight path from
  the corrupted to the clean activation of one layer (midpoint rule); the costly gold estimate.

Metrics are functions ``metric(logits [B, T, V]) -> scalar`` (a batch mean); see
:func:`normalized_logit_diff` for IOI's. Every result carries its :class:`~xattr_nb.runtime.Cost`
(passes counted per prompt: one batched forward = 1). :func:`compare` scores an estimate against
AP. :meth:`PatchingResult.to_attribution` turns any result into an
:class:`~xattr_nb.attribution.Attribution` with ``kind="components"`` (one score per component), and
:func:`~xattr_nb.interventions.to_circuit` turns its head and MLP scores into a
:class:`~xattr_nb.interventions.Circuit`.
TransformerLens offers the same on its own model class; this is the version for HF modules,
written by hand on :mod:`~xattr_nb.interventions.hooks`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_int, check_numeric, check_tensor
from xattr_nb.interventions.circuit import node_name
from xattr_nb.interventions.hooks import block_names, first_tensor, hooks
from xattr_nb.interventions.lrp import LRP_RULES, lrp_mode
from xattr_nb.kernels import activation_row_bytes, rows_per_chunk
from xattr_nb.models.io import device_of, logits_of
from xattr_nb.runtime import Cost, progress

__all__ = [
    "SITE_KINDS",
    "PatchingResult",
    "Sites",
    "activation_patching",
    "attribution_patching",
    "compare",
    "component_sites",
    "ig_patching",
    "logit_diff",
    "normalized_logit_diff",
    "site_label",
]

SITE_KINDS: tuple[str, ...] = ("resid_pre", "attn_out", "mlp_out", "head")
_SITE_SUFFIX = {"resid_pre": "RESID", "attn_out": "ATTN"}
Metric = Callable[[torch.Tensor], torch.Tensor]
Key = tuple[str, int]  # (kind, layer)


# ---------------------------------------------------------------------------------------------- sites


@dataclass(frozen=True)
class Sites:
    """Where each site kind lives in a model: module names per layer and the head geometry."""

    blocks: list[str]
    attn: list[str]
    mlp: list[str]
    out_proj: list[str]
    n_heads: int
    d_head: int

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def module(self, kind: str, layer: int) -> tuple[str, str]:
        """``(module name, hook kind)``: pre-hooks read a module's input, forward hooks its output."""
        if kind == "resid_pre":
            return self.blocks[layer], "pre"
        if kind == "attn_out":
            return self.attn[layer], "forward"
        if kind == "mlp_out":
            return self.mlp[layer], "forward"
        return self.out_proj[layer], "pre"


def _child(model: nn.Module, block: str, options: Sequence[str]) -> str:
    modules = dict(model.named_modules())
    for o in options:
        if f"{block}.{o}" in modules:
            return f"{block}.{o}"
    raise InputError(f"block {block!r} has none of the submodules {list(options)}: not a GPT-2/Llama-style block")


def component_sites(model: nn.Module) -> Sites:
    """The component sites of a GPT-2-style (``attn``, ``mlp``, ``attn.c_proj``) or Llama-style
    (``self_attn``, ``mlp``, ``self_attn.o_proj``) decoder."""
    blocks = block_names(model)
    attn = [_child(model, b, ("attn", "self_attn", "attention")) for b in blocks]
    mlp = [_child(model, b, ("mlp", "feed_forward")) for b in blocks]
    out_proj = [_child(model, a, ("c_proj", "o_proj", "out_proj", "dense")) for a in attn]
    cfg = getattr(model, "config", None)
    n_heads = getattr(cfg, "n_head", None) or getattr(cfg, "num_attention_heads", None)
    d_model = getattr(cfg, "n_embd", None) or getattr(cfg, "hidden_size", None)
    if not n_heads or not d_model:
        raise InputError(f"{type(model).__name__} has no config with the number of heads and the model width")
    d_head = getattr(cfg, "head_dim", None) or d_model // n_heads
    return Sites(blocks, attn, mlp, out_proj, int(n_heads), int(d_head))


def _check_kinds(sites: Any) -> tuple[str, ...]:
    if isinstance(sites, str):
        sites = (sites,)
    if not isinstance(sites, (list, tuple)) or not sites:
        raise InputError(f"`sites` must be a non-empty list drawn from {list(SITE_KINDS)}; got {sites!r}")
    for i, s in enumerate(sites):
        check_choice(s, SITE_KINDS, f"sites[{i}]")
    if len(set(sites)) != len(sites):
        raise InputError(f"`sites` repeats a kind: {list(sites)}")
    return tuple(sites)


def _check_positions(positions: Any, t: int) -> list[int]:
    if positions is None:
        return list(range(t))
    if isinstance(positions, (int, np.integer)) and not isinstance(positions, bool):
        positions = [positions]
    if not isinstance(positions, (list, tuple, range)) or len(positions) == 0:
        raise InputError(f"`positions` must be None (all) or a non-empty list of token positions; got {positions!r}")
    out = [check_int(p, f"positions[{i}]", low=-t, high=t - 1) % t for i, p in enumerate(positions)]
    if len(set(out)) != len(out):
        raise InputError(f"`positions` repeats a position: {list(positions)}")
    return out


def _check_pair(clean_ids: Any, corr_ids: Any, attention_mask: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
    clean = check_tensor(clean_ids, "clean_ids", ndim=2, dtype="int", layout="[B, T]")
    corr = check_tensor(corr_ids, "corr_ids", ndim=2, dtype="int", layout="[B, T]")
    if clean.shape != corr.shape:
        raise InputError(
            f"`clean_ids` {tuple(clean.shape)} and `corr_ids` {tuple(corr.shape)} must have the same shape: "
            "patching aligns the two runs position by position"
        )
    if attention_mask is not None:
        attention_mask = check_tensor(attention_mask, "attention_mask", shape=tuple(clean.shape), layout="[B, T]")
    return clean, corr, attention_mask


def _check_metric(metric: Any) -> Metric:
    if not callable(metric):
        raise InputError(f"`metric` must be a function logits [B, T, V] -> scalar; got {type(metric).__name__}")
    return metric


# ---------------------------------------------------------------------------------------------- hooks


def _hook_for(hook_kind: str, transform: Callable[[torch.Tensor], torch.Tensor | None]) -> Callable[..., Any]:
    """A forward or pre hook that passes the site tensor through ``transform`` (``None`` = unchanged)."""
    if hook_kind == "pre":

        def pre(_m: nn.Module, args: tuple[Any, ...]) -> Any:
            new = transform(args[0])
            return None if new is None else (new, *args[1:])

        return pre

    def fwd(_m: nn.Module, _args: Any, output: Any) -> Any:
        t = first_tensor(output)
        if t is None:
            raise InputError(f"{type(_m).__name__} returned {type(output).__name__}, which holds no tensor")
        new = transform(t)
        if new is None:
            return None
        return new if isinstance(output, torch.Tensor) else (new, *output[1:])

    return fwd


@contextmanager
def _site_hooks(
    model: nn.Module, sites: Sites, fns: dict[Key, Callable[[torch.Tensor], torch.Tensor | None]]
) -> Iterator[None]:
    by_kind: dict[str, dict[str, Callable[..., Any]]] = {"pre": {}, "forward": {}}
    for (kind, layer), fn in fns.items():
        name, hk = sites.module(kind, layer)
        if name in by_kind[hk]:
            raise InputError(f"two sites share module {name!r}")  # cannot happen with SITE_KINDS
        by_kind[hk][name] = _hook_for(hk, fn)
    with ExitStack() as stack:
        for hk, d in by_kind.items():
            if d:
                stack.enter_context(hooks(model, d, kind=hk))
        yield


def _as_heads(t: torch.Tensor, sites: Sites) -> torch.Tensor:
    return t.view(*t.shape[:-1], sites.n_heads, sites.d_head)


def _keys(sites: Sites, kinds: Sequence[str]) -> list[Key]:
    return [(k, layer) for k in kinds for layer in range(sites.n_layers)]


def _forward(model: nn.Module, ids: torch.Tensor, attention_mask: Any) -> torch.Tensor:
    return logits_of(model(input_ids=ids, attention_mask=attention_mask), ndim=3)


def _run_cache(
    model: nn.Module, ids: torch.Tensor, sites: Sites, keys: list[Key], attention_mask: Any, *, grad: bool
) -> tuple[torch.Tensor, dict[Key, torch.Tensor]]:
    """One forward recording every site in ``keys``; ``grad=True`` keeps them in the graph (leaves
    are made where the model's own parameters do not require gradients)."""
    acts: dict[Key, torch.Tensor] = {}

    def make(key: Key) -> Callable[[torch.Tensor], torch.Tensor | None]:
        def save(t: torch.Tensor) -> torch.Tensor | None:
            if not grad:
                acts[key] = t.detach()
                return None
            if not t.requires_grad:
                t = t.detach().requires_grad_(True)
                acts[key] = t
                return t
            acts[key] = t
            return None

        return save

    with torch.set_grad_enabled(grad), _site_hooks(model, sites, {k: make(k) for k in keys}):
        logits = _forward(model, ids, attention_mask)
    return logits, acts


# ---------------------------------------------------------------------------------------------- results


@dataclass
class PatchingResult:
    """Scores of one estimator: ``scores[kind]`` is ``[L, P]`` (``[L, P, H]`` for heads), ``P`` =
    ``positions``. Each score is the (estimated) change of the metric when that component's clean
    activation is patched into the corrupted run. ``examples[kind]`` (with ``per_example=True``) holds
    one such score per prompt, ``[B, L, P(, H)]``, whose batch mean is ``scores[kind]``."""

    method: str
    scores: dict[str, torch.Tensor]
    positions: list[int]
    cost: Cost
    meta: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, torch.Tensor] | None = None
    n_examples: int = 1  # prompts in the batch: ``cost`` is their total, as every Cost

    def __getitem__(self, kind: str) -> torch.Tensor:
        if kind not in self.scores:
            raise InputError(f"this result has no {kind!r} scores; it has {list(self.scores)}")
        return self.scores[kind]

    @property
    def kinds(self) -> list[str]:
        return list(self.scores)

    def flat(self, kinds: Sequence[str] | None = None) -> torch.Tensor:
        """The scores of ``kinds`` (default: all) flattened and concatenated, in a fixed order."""
        kinds = self._kinds(kinds)
        return torch.cat([self[k].reshape(-1) for k in kinds])

    def _kinds(self, kinds: Sequence[str] | str | None) -> list[str]:
        kinds = self.kinds if kinds is None else [kinds] if isinstance(kinds, str) else list(kinds)
        if not kinds:
            raise InputError(f"`kinds` must name at least one of {self.kinds}")
        for k in kinds:
            self[k]  # raises, naming the kinds this result has
        return kinds

    def to_attribution(
        self, *, kinds: Sequence[str] | str | None = None, per_example: bool = False, sum_positions: bool = True
    ) -> Attribution:
        """These scores as an :class:`~xattr_nb.attribution.Attribution` with ``kind="components"``.

        One column per component of ``kinds`` (default: every kind of the result), named by
        :func:`site_label`: ``"L1.H3"`` (head), ``"L1.MLP"`` (``mlp_out``), ``"L1.ATTN"``
        (``attn_out``), ``"L1.RESID"`` (``resid_pre``). With ``sum_positions`` (default) each
        component's scores are summed over the result's positions, as a circuit counts them; without,
        there is one column per position too (``"L1.H3@5"``, in the order of :meth:`flat`). One row
        holds the batch-mean scores; ``per_example=True`` gives one row per prompt instead (from
        ``examples``, which needs the estimator run with ``per_example=True``). ``target`` is 0 for
        every row (the metric, not a token, is what is explained); ``meta`` keeps ``positions``,
        ``sites``, ``n_layers`` and the result's own meta. Heads and MLPs go on to a
        :class:`~xattr_nb.interventions.Circuit` with :func:`~xattr_nb.interventions.to_circuit`.
        """
        kinds = self._kinds(kinds)
        if not isinstance(per_example, bool) or not isinstance(sum_positions, bool):
            raise InputError("`per_example` and `sum_positions` must be bools")
        if per_example and self.examples is None:
            raise InputError("`per_example=True` needs per-prompt scores: run the estimator with per_example=True")
        cols, labels = [], []
        n_layers = 0
        for k in kinds:
            t = self.examples[k] if per_example else self[k].unsqueeze(0)  # [B, L, P(, H)]
            n_layers = max(n_layers, t.shape[1])
            if sum_positions:
                t = t.sum(2)  # [B, L(, H)]
                idx = [
                    (layer, None, h)
                    for layer in range(t.shape[1])
                    for h in (range(t.shape[2]) if k == "head" else [None])
                ]
            else:
                idx = [
                    (layer, p, h)
                    for layer in range(t.shape[1])
                    for p in self.positions
                    for h in (range(t.shape[3]) if k == "head" else [None])
                ]
            cols.append(t.reshape(t.shape[0], -1))
            labels += [site_label(k, layer, h) + ("" if p is None else f"@{p}") for layer, p, h in idx]
        scores = torch.cat(cols, 1)
        meta = {**self.meta, "positions": list(self.positions), "sites": kinds, "n_layers": n_layers}
        meta["summed_positions"] = sum_positions
        target = torch.zeros(scores.shape[0], dtype=torch.long)
        return Attribution(
            scores=scores,
            kind="components",
            method=self.method,
            target=target,
            cost=self.cost,
            labels=labels,
            meta=meta,
        )

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self.scores.items())
        return f"PatchingResult({self.method}; {shapes}; {self.cost})"


def site_label(kind: str, layer: int, head: int | None = None) -> str:
    """The component name of a site: ``head`` -> ``"L1.H3"``, ``mlp_out`` -> ``"L1.MLP"`` (the
    :class:`~xattr_nb.interventions.Circuit` names), ``attn_out`` -> ``"L1.ATTN"``, ``resid_pre`` ->
    ``"L1.RESID"`` (not circuit nodes: a whole attention layer and the residual stream)."""
    check_choice(kind, SITE_KINDS, "kind")
    if kind == "head":
        return node_name("head", layer, head)
    if kind == "mlp_out":
        return node_name("mlp", layer)
    return f"L{layer}.{_SITE_SUFFIX[kind]}"


# ---------------------------------------------------------------------------------------------- metrics


def logit_diff(
    logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor, position: int | torch.Tensor = -1
) -> torch.Tensor:
    """``logit[answer] - logit[wrong]`` at ``position`` (an int, or one position per example), ``[B]``."""
    logits = check_tensor(logits, "logits", ndim=3, dtype="float", finite=False, layout="[B, T, V]")
    b = logits.shape[0]
    answer = check_tensor(answer, "answer", shape=(b,), dtype="int", layout="[B]").to(logits.device)
    wrong = check_tensor(wrong, "wrong", shape=(b,), dtype="int", layout="[B]").to(logits.device)
    rows = torch.arange(b, device=logits.device)
    if isinstance(position, torch.Tensor):
        pos = check_tensor(position, "position", shape=(b,), dtype="int", layout="[B]").to(logits.device)
        last = logits[rows, pos]
    else:
        last = logits[:, check_int(position, "position", low=-logits.shape[1], high=logits.shape[1] - 1)]
    return last[rows, answer] - last[rows, wrong]


class NormalizedLogitDiff:
    """``m(logits) = (LD - LD_corr) / (LD_clean - LD_corr)`` with ``LD`` the batch-mean logit
    difference: 0 on the corrupted run, 1 on the clean run (the RelP demo's IOI metric)."""

    def __init__(self, answer: torch.Tensor, wrong: torch.Tensor, position: int | torch.Tensor, ld_clean, ld_corr):
        self.answer, self.wrong, self.position = answer, wrong, position
        self.ld_clean, self.ld_corr = float(ld_clean), float(ld_corr)
        if abs(self.ld_clean - self.ld_corr) < 1e-6:
            raise InputError(
                "clean and corrupted runs give the same logit difference: the normalised metric is undefined"
            )

    def per_example(self, logits: torch.Tensor) -> torch.Tensor:
        """The metric of each prompt ``[B]`` (same constants); its mean is the metric."""
        ld = logit_diff(logits, self.answer, self.wrong, self.position)
        return (ld - self.ld_corr) / (self.ld_clean - self.ld_corr)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.per_example(logits).mean()

    def __repr__(self) -> str:
        return f"NormalizedLogitDiff(LD_clean={self.ld_clean:.4g}, LD_corr={self.ld_corr:.4g})"


@torch.no_grad()
def normalized_logit_diff(
    model: nn.Module,
    clean_ids: torch.Tensor,
    corr_ids: torch.Tensor,
    answer: torch.Tensor,
    wrong: torch.Tensor,
    *,
    position: int | torch.Tensor = -1,
    attention_mask: torch.Tensor | None = None,
) -> NormalizedLogitDiff:
    """The normalised IOI metric for this batch; its constants come from two plain (non-LRP) forwards."""
    clean, corr, attention_mask = _check_pair(clean_ids, corr_ids, attention_mask)
    dev = device_of(model)
    answer, wrong = torch.as_tensor(answer, device=dev), torch.as_tensor(wrong, device=dev)
    pos = position.to(dev) if isinstance(position, torch.Tensor) else position
    mask = None if attention_mask is None else attention_mask.to(dev)
    ld_c = logit_diff(_forward(model, clean.to(dev), mask), answer, wrong, pos).mean()
    ld_r = logit_diff(_forward(model, corr.to(dev), mask), answer, wrong, pos).mean()
    return NormalizedLogitDiff(answer, wrong, pos, ld_c, ld_r)


def _scalar(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise InputError(f"`metric` must return a scalar tensor (a batch mean); got {getattr(value, 'shape', value)}")
    return value.reshape(())


# ---------------------------------------------------------------------------------------------- estimators


def _components(kinds: Sequence[str], sites: Sites, positions: list[int]) -> list[tuple[str, int, int, int]]:
    """Every patchable component: (kind, layer, position, head or -1)."""
    out = []
    for kind in kinds:
        for layer in range(sites.n_layers):
            for p in positions:
                heads = range(sites.n_heads) if kind == "head" else (-1,)
                out.extend((kind, layer, p, h) for h in heads)
    return out


def activation_patching(
    model: nn.Module,
    clean_ids: torch.Tensor,
    corr_ids: torch.Tensor,
    metric: Metric,
    *,
    sites: Sequence[str] = ("resid_pre", "attn_out", "mlp_out"),
    positions: Sequence[int] | None = None,
    attention_mask: torch.Tensor | None = None,
    max_rows: int | None = None,
    per_example: bool = False,
    show_progress: bool = False,
) -> PatchingResult:
    """Activation patching: for every component (site kind x layer x position [x head]) run the
    corrupted prompts with that component's clean activation patched in, and score
    ``metric(patched) - metric(corrupted)``.

    Components are batched: the corrupted batch is repeated ``max_rows // B`` times and each copy
    patches a different component, so one batched forward serves many components (the count in
    ``cost.forward`` is one per component, plus the clean and corrupted runs). ``max_rows=None``
    (default) sizes the chunk from the device: as many rows as keep one row's widest activation
    within :func:`~xattr_nb.kernels.device_budget` (the per-core L2 cache on a CPU; see
    :func:`~xattr_nb.kernels.rows_per_chunk`), at least one component's ``B`` rows. The scores do
    not depend on the chunking; ``meta["rows_per_chunk"]`` records it. ``per_example=True``
    also scores each prompt (needs ``metric.per_example(logits) -> [B]``, as
    :class:`NormalizedLogitDiff` has).
    """
    clean, corr, attention_mask = _check_pair(clean_ids, corr_ids, attention_mask)
    metric = _check_metric(metric)
    kinds, st = _check_kinds(sites), component_sites(model)
    pos = _check_positions(positions, clean.shape[1])
    max_rows = None if max_rows is None else check_int(max_rows, "max_rows", low=1)
    pe = _per_example_fn(metric, per_example)
    dev, b = device_of(model), clean.shape[0]
    clean, corr = clean.to(dev), corr.to(dev)
    t0 = time.perf_counter()
    keys = _keys(st, kinds)
    _, cache = _run_cache(model, clean, st, keys, attention_mask, grad=False)
    with torch.no_grad():
        corr_logits = _forward(model, corr, attention_mask)
        base = float(_scalar(metric(corr_logits)))
        base_pe = pe(corr_logits).cpu() if pe else None
    rows_pe: list[torch.Tensor] = []
    comps = _components(kinds, st, pos)
    per = _components_per_chunk(model, clean, max_rows, len(comps))
    chunks = [comps[i : i + per] for i in range(0, len(comps), per)]
    effects: list[float] = []
    for chunk in progress(chunks, desc="activation patching", disable=not show_progress):
        k = len(chunk)
        ids = corr.repeat(k, 1)
        mask = None if attention_mask is None else attention_mask.to(dev).repeat(k, 1)
        todo: dict[Key, list[tuple[int, int, int]]] = {}
        for i, (kind, layer, p, h) in enumerate(chunk):
            todo.setdefault((kind, layer), []).append((i, p, h))

        def make(key: Key, items: list[tuple[int, int, int]]) -> Callable[[torch.Tensor], torch.Tensor]:
            src = cache[key]

            def patch(t: torch.Tensor) -> torch.Tensor:
                t = t.clone()
                view = _as_heads(t, st) if key[0] == "head" else t
                ref = _as_heads(src, st) if key[0] == "head" else src
                for i, p, h in items:
                    rows = slice(i * b, (i + 1) * b)
                    if h >= 0:
                        view[rows, p, h] = ref[:, p, h]
                    else:
                        view[rows, p] = ref[:, p]
                return t

            return patch

        with torch.no_grad(), _site_hooks(model, st, {key: make(key, it) for key, it in todo.items()}):
            logits = _forward(model, ids, mask)
        effects += [float(_scalar(metric(logits[i * b : (i + 1) * b]))) - base for i in range(k)]
        if pe is not None:
            rows_pe += [pe(logits[i * b : (i + 1) * b]).cpu() - base_pe for i in range(k)]
    scores = _assemble(kinds, st, pos, comps, effects)
    examples = None
    if pe is not None:
        examples = _assemble_cols(kinds, st, pos, comps, torch.stack(rows_pe, 1))  # from [B, n_components]
    # rows through the model, totalled over the batch: clean + corrupted + one patched run per component
    cost = Cost(forward=b * (2 + len(comps)), backward=0, wall_s=time.perf_counter() - t0)
    meta = {"metric_corr": base, "n_components": len(comps), "rows_per_chunk": per * b}
    return PatchingResult("AP", scores, pos, cost, meta, examples, b)


def _components_per_chunk(model: nn.Module, ids: torch.Tensor, max_rows: int | None, n: int, grad: bool = False) -> int:
    """Units of ``B`` rows (one per component or path point) per batched forward: ``max_rows // B``
    if given, else sized by the device's budget (:func:`~xattr_nb.kernels.rows_per_chunk`)."""
    b, t = ids.shape
    if max_rows is not None:
        return max(1, max_rows // b)
    rows = rows_per_chunk(activation_row_bytes(model, t), device=ids.device, grad=grad, multiple=b, total=b * n)
    return rows // b


def _per_example_fn(metric: Any, per_example: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if not isinstance(per_example, bool):
        raise InputError(f"`per_example` must be a bool; got {type(per_example).__name__}")
    if not per_example:
        return None
    fn = getattr(metric, "per_example", None)
    if not callable(fn):
        raise InputError("`per_example=True` needs a metric with a `per_example(logits) -> [B]` method")
    return fn


def _assemble_cols(kinds, st: Sites, pos: list[int], comps, per: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example effects ``per [B, n_components]`` arranged as ``[B, L, P(, H)]`` per kind."""
    b = per.shape[0]
    out = {
        k: torch.zeros((b, st.n_layers, len(pos), st.n_heads) if k == "head" else (b, st.n_layers, len(pos)))
        for k in kinds
    }
    col = {p: j for j, p in enumerate(pos)}
    for c, (kind, layer, p, h) in enumerate(comps):
        if h >= 0:
            out[kind][:, layer, col[p], h] = per[:, c]
        else:
            out[kind][:, layer, col[p]] = per[:, c]
    return out


def _assemble(kinds, st: Sites, pos: list[int], comps, effects: list[float]) -> dict[str, torch.Tensor]:
    scores = {
        k: torch.zeros((st.n_layers, len(pos), st.n_heads) if k == "head" else (st.n_layers, len(pos))) for k in kinds
    }
    col = {p: j for j, p in enumerate(pos)}
    for (kind, layer, p, h), e in zip(comps, effects, strict=True):
        if h >= 0:
            scores[kind][layer, col[p], h] = e
        else:
            scores[kind][layer, col[p]] = e
    return scores


def _reduce(key: Key, diff: torch.Tensor, grad: torch.Tensor, st: Sites, pos: list[int]) -> torch.Tensor:
    """``diff * grad`` summed over the hidden dims at ``pos``, per prompt and scaled by the batch size
    (the metric is a batch mean, so each prompt's own estimate is ``B`` times its share): ``[B, P(, H)]``."""
    prod = diff * grad * diff.shape[0]
    if key[0] == "head":
        return _as_heads(prod, st).sum(-1)[:, pos]
    return prod.sum(-1)[:, pos]


def _finish(
    kinds: Sequence[str], keys: list[Key], parts: list[torch.Tensor], per_example: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    ex = {k: torch.stack([p for key, p in zip(keys, parts, strict=True) if key[0] == k], 1) for k in kinds}
    return {k: v.mean(0) for k, v in ex.items()}, (ex if per_example else None)


def attribution_patching(
    model: nn.Module,
    clean_ids: torch.Tensor,
    corr_ids: torch.Tensor,
    metric: Metric,
    *,
    sites: Sequence[str] = ("resid_pre", "attn_out", "mlp_out"),
    positions: Sequence[int] | None = None,
    mode: str = "grad",
    rules: Sequence[str] = LRP_RULES,
    ah: bool = False,
    eps: float = 1e-6,
    attention_mask: torch.Tensor | None = None,
    per_example: bool = False,
) -> PatchingResult:
    """Attribution patching: ``score = sum_d (a_clean - a_corr) * dm/da`` with the gradient taken on
    the corrupted run, for every site at once (2 forwards + 1 backward).

    ``mode="grad"`` is AtP (Nanda 2023); ``mode="relp"`` takes the gradient inside
    :func:`~xattr_nb.interventions.lrp.lrp_mode` with ``rules``/``ah``/``eps`` (RelP). The metric is a
    batch mean, so per-prompt terms are summed: the score estimates the change of the metric.
    ``per_example=True`` keeps each prompt's estimate too (``result.examples``).
    """
    clean, corr, attention_mask = _check_pair(clean_ids, corr_ids, attention_mask)
    metric = _check_metric(metric)
    kinds, st = _check_kinds(sites), component_sites(model)
    pos = _check_positions(positions, clean.shape[1])
    check_choice(mode, ("grad", "relp"), "mode")
    if not isinstance(per_example, bool):
        raise InputError(f"`per_example` must be a bool; got {type(per_example).__name__}")
    dev = device_of(model)
    t0 = time.perf_counter()
    keys = _keys(st, kinds)
    _, cache_clean = _run_cache(model, clean.to(dev), st, keys, attention_mask, grad=False)
    with ExitStack() as stack:
        if mode == "relp":
            stack.enter_context(lrp_mode(model, rules, ah=ah, eps=eps))
        logits, acts = _run_cache(model, corr.to(dev), st, keys, attention_mask, grad=True)
        m = _scalar(metric(logits))
        grads = torch.autograd.grad(m, [acts[k] for k in keys], allow_unused=True)
    parts = []
    for key, g in zip(keys, grads, strict=True):
        a = acts[key].detach()
        g = torch.zeros_like(a) if g is None else g
        parts.append(_reduce(key, cache_clean[key] - a, g, st, pos).cpu())
    scores, examples = _finish(kinds, keys, parts, per_example)
    name = "AtP" if mode == "grad" else ("RelP+AH" if ah else "RelP")
    meta = {"mode": mode, "rules": list(rules) if mode == "relp" else [], "ah": bool(ah and mode == "relp")}
    cost = Cost(
        2 * clean.shape[0], clean.shape[0], time.perf_counter() - t0
    )  # totals: 2 forwards + 1 backward a prompt
    return PatchingResult(name, scores, pos, cost, meta, examples, clean.shape[0])


def ig_patching(
    model: nn.Module,
    clean_ids: torch.Tensor,
    corr_ids: torch.Tensor,
    metric: Metric,
    *,
    sites: Sequence[str] = ("resid_pre", "attn_out", "mlp_out"),
    positions: Sequence[int] | None = None,
    steps: int = 8,
    attention_mask: torch.Tensor | None = None,
    max_rows: int | None = None,
    per_example: bool = False,
    show_progress: bool = False,
) -> PatchingResult:
    """IG-patching: per site layer, the whole activation moves on the straight path from corrupted to
    clean (``a(alpha) = a_corr + alpha (a_clean - a_corr)``, midpoint rule with ``steps`` points) and
    ``score = sum_d (a_clean - a_corr) * mean_alpha dm/da(alpha)``. The ``steps`` points run as one
    batch (chunked to ``max_rows`` rows, default sized by the device as in
    :func:`activation_patching`); cost: ``steps`` forwards and backwards per site layer.
    """
    clean, corr, attention_mask = _check_pair(clean_ids, corr_ids, attention_mask)
    metric = _check_metric(metric)
    kinds, st = _check_kinds(sites), component_sites(model)
    pos = _check_positions(positions, clean.shape[1])
    steps = check_int(steps, "steps", low=1)
    max_rows = None if max_rows is None else check_int(max_rows, "max_rows", low=1)
    if not isinstance(per_example, bool):
        raise InputError(f"`per_example` must be a bool; got {type(per_example).__name__}")
    dev, b = device_of(model), clean.shape[0]
    clean, corr = clean.to(dev), corr.to(dev)
    t0 = time.perf_counter()
    keys = _keys(st, kinds)
    _, cache_clean = _run_cache(model, clean, st, keys, attention_mask, grad=False)
    _, cache_corr = _run_cache(model, corr, st, keys, attention_mask, grad=False)
    alphas = (torch.arange(steps, dtype=torch.float32, device=dev) + 0.5) / steps
    per = _components_per_chunk(model, corr, max_rows, steps, grad=True)
    parts = []
    for key in progress(keys, desc="IG patching", disable=not show_progress):
        diff = cache_clean[key] - cache_corr[key]
        gsum = torch.zeros_like(diff)
        for start in range(0, steps, per):
            al = alphas[start : start + per]
            k = len(al)
            shape = (k,) + (1,) * diff.ndim
            path = (cache_corr[key].unsqueeze(0) + al.view(shape) * diff.unsqueeze(0)).reshape(k * b, *diff.shape[1:])
            path = path.detach().requires_grad_(True)
            ids = corr.repeat(k, 1)
            mask = None if attention_mask is None else attention_mask.to(dev).repeat(k, 1)
            with torch.enable_grad(), _site_hooks(model, st, {key: lambda _t, path=path: path}):
                logits = _forward(model, ids, mask)
                total = sum(_scalar(metric(logits[i * b : (i + 1) * b])) for i in range(k))
                (g,) = torch.autograd.grad(total, [path])
            gsum += g.view(k, *diff.shape).sum(0)
        parts.append(_reduce(key, diff, gsum / steps, st, pos).cpu())
    scores, examples = _finish(kinds, keys, parts, per_example)
    cost = Cost(b * (2 + steps * len(keys)), b * steps * len(keys), time.perf_counter() - t0)  # totals over the batch
    return PatchingResult(f"IG-{steps}", scores, pos, cost, {"steps": steps, "rows_per_chunk": per * b}, examples, b)


# ---------------------------------------------------------------------------------------------- evaluation


def compare(est: Any, truth: Any, k: int = 10) -> dict[str, float]:
    """Agreement of an estimate with the ground truth, both flattened: Pearson (the RelP paper's
    main number), Spearman, and the Jaccard overlap of the top-``k`` components by ``|score|``.
    Accepts tensors, arrays or :class:`PatchingResult` (all kinds, same order)."""
    from scipy.stats import pearsonr, spearmanr

    a = (est.flat() if isinstance(est, PatchingResult) else check_numeric(est, "est", finite=False)).reshape(-1)
    t = (truth.flat() if isinstance(truth, PatchingResult) else check_numeric(truth, "truth", finite=False)).reshape(-1)
    a = check_tensor(a.double(), "est")
    t = check_tensor(t.double(), "truth")
    if a.shape != t.shape:
        raise InputError(f"`est` has {a.numel()} scores but `truth` has {t.numel()}")
    if a.numel() < 3:
        raise InputError(f"need at least 3 scores to correlate; got {a.numel()}")
    k = check_int(k, "k", low=1, high=a.numel())
    if float(a.std()) == 0.0 or float(t.std()) == 0.0:
        raise InputError("`est` or `truth` is constant: correlations are undefined")
    ta, tt = set(a.abs().topk(k).indices.tolist()), set(t.abs().topk(k).indices.tolist())
    return {
        "pearson": float(pearsonr(a.numpy(), t.numpy())[0]),
        "spearman": float(spearmanr(a.numpy(), t.numpy())[0]),
        "jaccard": len(ta & tt) / len(ta | tt),
    }

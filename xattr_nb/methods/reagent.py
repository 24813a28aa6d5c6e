"""ReAGent: model-agnostic, gradient-free token attribution for generative language models.

Zhao and Shan, "ReAGent: A Model-agnostic Feature Attribution Method for Generative Language
Models" (2024, arXiv:2402.00794; code: github.com/casszhao/ReAGent, ported to inseq as ``reagent``).

ReAGent keeps, per *probe*, a vector of importance logits ``s`` over the context tokens and
updates it recursively from random replacements:

1. replace a random subset (each token with probability ``r``) by sampled tokens;
2. measure the drop ``Δ = p(y | x) - p(y | x~)`` of the target token's probability;
3. evidence ``e = Δ`` for the replaced tokens and ``-Δ`` for the kept ones; ``s += logit((e+1)/2)``
   (``e`` clipped to ``(-1+ε, 1-ε)``); importance ``π = softmax(s)``;
4. stop the probe once keeping only its top-``n`` tokens (all others replaced) still makes ``y``
   one of the model's top-``k`` predictions.

The per-token importance is ``π`` averaged over the probes that stopped (all probes, flagged,
when none did). Only forward passes are needed, so any causal LM works, including black boxes.

Replacement samplers (:class:`UniformSampler`, :class:`CategorySampler`, :class:`MLMSampler`):
the paper uses RoBERTa masked-LM predictions [paper]; its code and inseq default to
part-of-speech-preserving random words [code]; uniform random tokens are the simplest. Here the
category sampler is the POS analogue (the world's word classes) and :class:`MLMSampler` wraps any
HF masked LM (a tiny one trained on the same world, ``roberta-base`` at full scale; a different
tokeniser than the LM's needs a decode/re-encode step that is not done here).

Written from the spec's reading of the official code; nothing is copied from it or from inseq.
Steps, in the order the notebook calls them: :func:`init_logits` → :func:`replace_mask` →
sampler → :func:`target_probs` → :func:`evidence` → :func:`update_logits` → :func:`stopping_test`;
:func:`run_probes` chains them for one example, :func:`aggregate` averages the probes, and
:func:`explain` does it all for a batch; it is also ``attribute(model, ids, y, method="reagent")`` on
token ids (:mod:`xattr_nb.attribution.registry` lists it, so no import of this module is needed). Ground-truth and baseline helpers
(:func:`gold_rank_metrics`, :func:`last_layer_attention`, :func:`random_scores`) are at the end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import nn

from xattr_nb.attribution import Attribution
from xattr_nb.checks import InputError, check_float, check_int, check_tensor
from xattr_nb.models.io import device_of, eval_mode, logits_of
from xattr_nb.runtime import Cost, progress, timer

__all__ = [
    "PAPER_CONFIG",
    "SMALL_CONFIG",
    "CategorySampler",
    "MLMSampler",
    "ProbeRun",
    "UniformSampler",
    "aggregate",
    "evidence",
    "explain",
    "gold_rank_metrics",
    "in_top_k",
    "init_logits",
    "last_layer_attention",
    "load_mlm_sampler",
    "random_other_position",
    "random_scores",
    "replace_mask",
    "run_probes",
    "run_probes_batch",
    "samplers",
    "stopping_inputs",
    "stopping_pass_rate",
    "stopping_test",
    "target_probs",
    "update_logits",
    "word_ids",
]

#: The paper's / repository's setting ``top3_replace0.3_max3000_batch5`` [code].
PAPER_CONFIG: dict[str, Any] = {"ratio": 0.3, "stop_top_k": 3, "max_steps": 3000, "n_probes": 5, "keep_top_n": 8}
#: The small-scale setting: tiny vocabularies make top-3 stopping trivial, so k = 1 (spec §5.5); n = 1 and
#: B = 5 chosen at development seeds 100-104 (n = 2 or 3 stops the probes before the evidence builds up).
SMALL_CONFIG: dict[str, Any] = {"ratio": 0.3, "stop_top_k": 1, "max_steps": 200, "n_probes": 5, "keep_top_n": 1}


# ----------------------------------------------------------------------------------------------
# Replacement samplers: (ids [P, T], replace [P, T] bool, generator) -> ids with replaced positions resampled.


class Sampler(Protocol):
    def __call__(self, ids: torch.Tensor, replace: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


def _check_pool(ids: Any, name: str) -> torch.Tensor:
    if isinstance(ids, torch.Tensor):
        pool = ids
    elif isinstance(ids, Sequence) and not isinstance(ids, str) and len(ids) > 0:
        pool = torch.as_tensor(list(ids))
    else:
        raise InputError(f"`{name}` must be a non-empty list of token ids")
    pool = check_tensor(pool, name, ndim=1, dtype="int", layout="[V]")
    if pool.numel() == 0 or bool((pool < 0).any()):
        raise InputError(f"`{name}` must hold at least one non-negative token id")
    return pool.long()


def _check_replace(ids: Any, replace: Any) -> tuple[torch.Tensor, torch.Tensor]:
    ids = check_tensor(ids, "ids", ndim=2, dtype="int", layout="[P, T]")
    replace = check_tensor(replace, "replace", shape=tuple(ids.shape), dtype="bool", layout="[P, T]")
    return ids, replace


@dataclass
class UniformSampler:
    """Replace a token by one drawn uniformly from ``vocab_ids`` (e.g. every non-special word)."""

    vocab_ids: Any

    def __post_init__(self) -> None:
        self.vocab_ids = _check_pool(self.vocab_ids, "vocab_ids")

    def __call__(self, ids: torch.Tensor, replace: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        ids, replace = _check_replace(ids, replace)
        pick = torch.randint(len(self.vocab_ids), tuple(ids.shape), generator=generator)
        return torch.where(replace, self.vocab_ids[pick].to(ids), ids)


@dataclass
class CategorySampler:
    """Replace a token by a random *other* member of its category (the POS-tag sampler's analogue).

    ``groups``: a list of id lists (e.g. names, places, objects, function words). A token in no
    group, or alone in its group, is kept: there is nothing plausible to put in its place.
    """

    groups: Any
    _table: torch.Tensor = field(init=False, repr=False)
    _size: torch.Tensor = field(init=False, repr=False)
    _gid: torch.Tensor = field(init=False, repr=False)
    _slot: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.groups, (str, Mapping)) or not isinstance(self.groups, Sequence) or not self.groups:
            raise InputError("`groups` must be a non-empty list of token-id lists")
        pools = [_check_pool(g, f"groups[{i}]") for i, g in enumerate(self.groups)]
        top = max(int(g.max()) for g in pools) + 1
        # lookup tables over the ids: group of each id (-1: none) and its slot in the group
        self._gid = torch.full((top,), -1, dtype=torch.long)
        self._slot = torch.zeros(top, dtype=torch.long)
        for gi, g in enumerate(pools):
            if bool((self._gid[g] >= 0).any()) or len(set(g.tolist())) != len(g):
                dup = next(t for t in g.tolist() if self._gid[t] >= 0 or g.tolist().count(t) > 1)
                raise InputError(f"`groups`: token id {dup} is in more than one group")
            self._gid[g] = gi
            self._slot[g] = torch.arange(len(g))
        width = max(len(g) for g in pools)
        self._table = torch.stack([torch.cat([g, g.new_zeros(width - len(g))]) for g in pools])
        self._size = torch.as_tensor([len(g) for g in pools])

    def __call__(self, ids: torch.Tensor, replace: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        ids, replace = _check_replace(ids, replace)
        x = ids.cpu()
        known = x < len(self._gid)
        grp = torch.where(known, self._gid[x.clamp_max(len(self._gid) - 1)], torch.full_like(x, -1))
        size = torch.where(grp >= 0, self._size[grp.clamp_min(0)], torch.zeros_like(grp))
        # draw among the size-1 *other* members: index u in [0, size-1), then skip the original's slot
        u = (torch.rand(tuple(x.shape), generator=generator) * (size - 1).clamp_min(0)).long()
        own = self._slot[x.clamp_max(len(self._gid) - 1)]
        u = u + (u >= own).long()
        new = self._table[grp.clamp_min(0), u.clamp_max(self._table.shape[1] - 1)]
        ok = replace.cpu() & (size > 1)
        return torch.where(ok, new, x).to(ids)


@dataclass
class MLMSampler:
    """Replace tokens by samples from a masked LM that shares the LM's tokenizer (the paper's RoBERTa sampler).

    All positions to replace in a row are set to ``mask_id`` and filled in one MLM forward by
    sampling its predicted distribution, restricted to ``allowed_ids`` (e.g. no special tokens)
    and excluding the original token, so a replacement is plausible in context but never a copy.
    """

    mlm: nn.Module
    mask_id: int
    allowed_ids: Any
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.mlm, nn.Module):
            raise InputError(f"`mlm` must be a masked-LM torch module; got {type(self.mlm).__name__}")
        self.mask_id = check_int(self.mask_id, "mask_id", low=0)
        self.allowed_ids = _check_pool(self.allowed_ids, "allowed_ids")
        self.temperature = check_float(self.temperature, "temperature", low=1e-6)

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, replace: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        ids, replace = _check_replace(ids, replace)
        if not bool(replace.any()):
            return ids
        x = torch.where(replace, torch.full_like(ids, self.mask_id), ids)
        logits = logits_of(self.mlm(input_ids=x.to(device_of(self.mlm))), ndim=3)  # a *ForMaskedLM model
        logits = logits.float().cpu() / self.temperature
        allowed = torch.full((logits.shape[-1],), float("-inf"))
        allowed[self.allowed_ids] = 0.0
        logits = logits + allowed
        logits.scatter_(-1, ids.unsqueeze(-1), float("-inf"))  # never the original token
        probs = logits[replace].softmax(-1)
        draw = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        out = ids.clone()
        out[replace] = draw.to(ids)
        return out


def _check_sampler(sampler: Any) -> Sampler:
    if not callable(sampler):
        raise InputError("`sampler` must be a sampler: UniformSampler, CategorySampler or MLMSampler")
    return sampler


# ----------------------------------------------------------------------------------------------
# The steps.


@torch.no_grad()
def target_probs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Next-token distribution after the last token of each row: ``[P, V]`` (softmax of the logits)."""
    ids = check_tensor(ids, "ids", ndim=2, dtype="int", layout="[P, T]")
    logits = logits_of(model(input_ids=ids.to(device_of(model))), ndim=3)
    return logits[:, -1].float().softmax(-1).cpu()


def init_logits(n_probes: int, n_tokens: int, generator: torch.Generator) -> torch.Tensor:
    """Random initial importance logits ``s ~ U(0, 1)``, ``[n_probes, n_tokens]`` (one row per probe)."""
    n_probes = check_int(n_probes, "n_probes", low=1)
    n_tokens = check_int(n_tokens, "n_tokens", low=1)
    return torch.rand(n_probes, n_tokens, generator=generator, dtype=torch.float64)


def replace_mask(candidates: torch.Tensor, n_probes: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Bernoulli(``ratio``) choice of the candidate tokens to replace, one row per probe: ``[P, T]`` bool."""
    candidates = check_tensor(candidates, "candidates", ndim=1, dtype="bool", layout="[T]")
    ratio = check_float(ratio, "ratio", low=0.0, high=1.0)
    m = torch.rand(check_int(n_probes, "n_probes", low=1), candidates.shape[0], generator=generator) < ratio
    return m & candidates


def evidence(delta: torch.Tensor, replaced: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-token evidence ``e = Δ`` where replaced, ``-Δ`` where kept, clipped to ``(-1+ε, 1-ε)``: ``[P, T]``.

    ``Δ = p0 - p(y | x~)`` ``[P]``: a big drop is evidence that the replaced tokens mattered and the
    kept ones did not.
    """
    delta = check_tensor(delta, "delta", ndim=1, dtype="float", layout="[P]")
    replaced = check_tensor(replaced, "replaced", ndim=2, dtype="bool", layout="[P, T]")
    if replaced.shape[0] != delta.shape[0]:
        raise InputError(f"`replaced` has {replaced.shape[0]} rows but `delta` has {delta.shape[0]} probes")
    eps = check_float(eps, "eps", low=1e-12, high=0.5)
    d = delta.double().unsqueeze(1)
    return torch.where(replaced, d, -d).clamp(-1 + eps, 1 - eps)


def update_logits(s: torch.Tensor, e: torch.Tensor, active: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``s + logit((e+1)/2)`` on the active probes' candidate tokens (``logit(p) = log p - log(1-p)``)."""
    s = check_tensor(s, "s", ndim=2, dtype="float", layout="[P, T]")
    e = check_tensor(e, "e", shape=tuple(s.shape), dtype="float", layout="[P, T]")
    active = check_tensor(active, "active", shape=(s.shape[0],), dtype="bool", layout="[P]")
    candidates = check_tensor(candidates, "candidates", shape=(s.shape[1],), dtype="bool", layout="[T]")
    q = (e.double() + 1) / 2
    step = torch.log(q) - torch.log1p(-q)
    return s + step * (active.unsqueeze(1) & candidates.unsqueeze(0))


def importance(s: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``π = softmax(s)`` over the candidate tokens (non-candidates get 0): ``[P, T]``."""
    return s.masked_fill(~candidates, float("-inf")).softmax(-1).nan_to_num(0.0)


def top_n_keep(pi: torch.Tensor, candidates: torch.Tensor, n: int) -> torch.Tensor:
    """Bool ``[P, T]``: each probe's ``n`` most important candidate tokens (ties: earlier position)."""
    n = min(check_int(n, "keep_top_n", low=1), int(candidates.sum()))
    order = torch.argsort(-pi.masked_fill(~candidates, -1.0), dim=1, stable=True)[:, :n]
    keep = torch.zeros_like(pi, dtype=torch.bool)
    keep.scatter_(1, order, True)
    return keep


def stopping_inputs(
    ids: torch.Tensor,
    pi: torch.Tensor,
    *,
    sampler: Sampler,
    candidates: torch.Tensor,
    keep_top_n: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The stopping test's inputs ``[P, T]``: each probe keeps its top-``n`` tokens of ``ids`` ``[T]``
    by ``pi`` ``[P, T]`` and every other candidate is replaced by the sampler."""
    keep = top_n_keep(pi, candidates, keep_top_n)
    return sampler(ids.unsqueeze(0).expand_as(keep), candidates.unsqueeze(0) & ~keep, generator)


def in_top_k(probs: torch.Tensor, target: Any, k: int) -> torch.Tensor:
    """Whether ``target`` (an id, or ids broadcast against ``probs[..., 0]``) is among the top-``k`` of ``probs`` ``[..., V]``."""
    k = min(check_int(k, "stop_top_k", low=1), probs.shape[-1])
    return (probs.topk(k, dim=-1).indices == torch.as_tensor(target).unsqueeze(-1)).any(-1)


def stopping_test(
    model: nn.Module,
    ids: torch.Tensor,
    pi: torch.Tensor,
    target: int,
    *,
    sampler: Sampler,
    candidates: torch.Tensor,
    keep_top_n: int,
    stop_top_k: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Does keeping only each probe's top-``n`` tokens (the other candidates replaced) keep ``y`` in the top-``k``? ``[P]``."""
    x_hat = stopping_inputs(ids, pi, sampler=sampler, candidates=candidates, keep_top_n=keep_top_n, generator=generator)
    return in_top_k(target_probs(model, x_hat), int(target), stop_top_k)


@torch.no_grad()
def stopping_pass_rate(
    model: nn.Module,
    input_ids: torch.Tensor,
    target: Any,
    keep: torch.Tensor,
    *,
    sampler: Sampler,
    attention_mask: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
    stop_top_k: int = 1,
    draws: int = 10,
    seed: int = 0,
) -> torch.Tensor:
    """How often ReAGent's stopping test passes for a probe that keeps exactly ``keep``: ``[B]`` rates.

    For each context of ``input_ids`` ``[B, T]`` (right-padded, ``attention_mask``), every candidate
    not in ``keep`` ``[B, T]`` is replaced by ``sampler`` (``draws`` independent draws), and the test
    passes when ``target`` (one id per row, ``[B]``) stays in the model's top-``stop_top_k`` after the
    last real token. Keeping the decisive token should pass; a sampler that rebuilds a coherent
    context around it (with its own answer) makes the test fail even for a probe that found it.
    """
    ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[B, T]").cpu()
    b, t = ids.shape
    mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask
    mask = check_tensor(mask, "attention_mask", shape=(b, t), layout="[B, T]").bool().cpu()
    cand = mask.clone() if candidates is None else candidates
    cand = check_tensor(cand, "candidates", shape=(b, t), dtype="bool", layout="[B, T]").cpu() & mask
    keep = check_tensor(keep, "keep", shape=(b, t), dtype="bool", layout="[B, T]").cpu()
    tgt = check_tensor(torch.as_tensor(target), "target", shape=(b,), dtype="int", layout="[B]")
    sampler = _check_sampler(sampler)
    draws = check_int(draws, "draws", low=1)
    g = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    out = torch.zeros(b)
    with eval_mode(model):
        for i in range(b):
            n = int(mask[i].sum())
            rep = (cand[i, :n] & ~keep[i, :n]).unsqueeze(0).expand(draws, -1)
            x = sampler(ids[i, :n].unsqueeze(0).expand(draws, -1), rep, g)
            out[i] = in_top_k(target_probs(model, x), int(tgt[i]), stop_top_k).float().mean()
    return out


def random_other_position(candidates: torch.Tensor, exclude: Any, *, seed: int = 0) -> torch.Tensor:
    """One random candidate position per row other than ``exclude`` ``[B]``, as a one-hot bool ``[B, T]``
    (the control for :func:`stopping_pass_rate`: keep a token that is not the decisive one)."""
    cand = check_tensor(candidates, "candidates", ndim=2, dtype="bool", layout="[B, T]").cpu()
    b, t = cand.shape
    ex = check_tensor(torch.as_tensor(exclude), "exclude", shape=(b,), dtype="int", layout="[B]")
    if bool((ex < 0).any()) or bool((ex >= t).any()):
        raise InputError(f"`exclude` must hold positions in [0, {t})")
    pool = cand.clone()
    pool[torch.arange(b), ex] = False
    if not bool(pool.any(1).all()):
        raise InputError("a row of `candidates` has no position other than `exclude`")
    g = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    pick = torch.multinomial(pool.float(), 1, generator=g).squeeze(1)
    out = torch.zeros_like(cand)
    out[torch.arange(b), pick] = True
    return out


@dataclass
class ProbeRun:
    """One example's ReAGent run: final importances ``pi`` ``[P, T]``, which probes ``stopped``
    ``[P]``, the step each stopped at (``steps``, ``max_steps`` if never), ``p0`` = p(y|x), and
    (with ``history=True``) the mean importance after every step ``[S, T]``."""

    pi: torch.Tensor
    stopped: torch.Tensor
    steps: torch.Tensor
    p0: float
    target: int
    forwards: int
    history: torch.Tensor | None = None


def run_probes(
    model: nn.Module,
    input_ids: torch.Tensor,
    target: int | None = None,
    *,
    sampler: Sampler,
    candidates: torch.Tensor | None = None,
    ratio: float = 0.3,
    keep_top_n: int = 3,
    stop_top_k: int = 1,
    max_steps: int = 200,
    n_probes: int = 8,
    eps: float = 1e-6,
    seed: int = 0,
    history: bool = False,
) -> ProbeRun:
    """ReAGent's recursive update for one context ``input_ids`` ``[T]`` and target token ``target``.

    ``target`` defaults to the model's greedy next token. ``candidates`` ``[T]`` bool: the tokens
    that may be replaced and get importance (default all; pass ``False`` for ``[BOS]``). All
    ``n_probes`` probes advance together (one batched forward for the replacements and one for
    the stopping test per step); a probe stops updating once its stopping test passes.
    :func:`run_probes_batch` runs the same loop for several contexts of one length at once.
    """
    ids = check_tensor(input_ids, "input_ids", ndim=1, dtype="int", layout="[T]").cpu()
    cand = torch.ones_like(ids, dtype=torch.bool) if candidates is None else candidates
    cand = check_tensor(cand, "candidates", shape=tuple(ids.shape), dtype="bool", layout="[T]").cpu()
    return run_probes_batch(
        model, ids.unsqueeze(0), [target], sampler=sampler, candidates=cand.unsqueeze(0), ratio=ratio,
        keep_top_n=keep_top_n, stop_top_k=stop_top_k, max_steps=max_steps, n_probes=n_probes, eps=eps,
        seeds=[seed], history=history,
    )[0]  # fmt: skip


def run_probes_batch(
    model: nn.Module,
    input_ids: torch.Tensor,
    targets: Sequence[int | None] | None = None,
    *,
    sampler: Sampler,
    candidates: torch.Tensor | None = None,
    ratio: float = 0.3,
    keep_top_n: int = 3,
    stop_top_k: int = 1,
    max_steps: int = 200,
    n_probes: int = 8,
    eps: float = 1e-6,
    seeds: Sequence[int] | None = None,
    history: bool = False,
) -> list[ProbeRun]:
    """:func:`run_probes` for ``G`` contexts of the same length at once: ``input_ids`` ``[G, T]``.

    Each context keeps its own generator (``seeds[g]``, default ``0, 1, ...``), its own probes and
    its own stopping; only the model's forwards are shared (one for the replacements and one for
    the stopping tests of every context still running, per step). So context ``g`` gets the same
    result as ``run_probes(input_ids[g], targets[g], seed=seeds[g])`` alone, up to the floating-point
    effects of a larger batch, and a model never sees padding. Returns one :class:`ProbeRun` per context.
    """
    ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[G, T]").cpu()
    g_n, t_n = ids.shape
    cand = torch.ones_like(ids, dtype=torch.bool) if candidates is None else candidates
    cand = check_tensor(cand, "candidates", shape=(g_n, t_n), dtype="bool", layout="[G, T]").cpu()
    if not bool(cand.any(1).all()):
        raise InputError("`candidates` has no True position: nothing to attribute")
    sampler = _check_sampler(sampler)
    max_steps = check_int(max_steps, "max_steps", low=1)
    n_probes = check_int(n_probes, "n_probes", low=1)
    ratio = check_float(ratio, "ratio", low=0.0, high=1.0)
    tg = [None] * g_n if targets is None else list(targets)
    sd = list(range(g_n)) if seeds is None else list(seeds)
    if len(tg) != g_n or len(sd) != g_n:
        raise InputError(f"`targets` and `seeds` need one entry per context ({g_n})")
    gens = [torch.Generator().manual_seed(check_int(v, "seed", low=0)) for v in sd]
    with eval_mode(model):
        p_full = target_probs(model, ids)
        for g in range(g_n):
            if tg[g] is None:
                tg[g] = int(p_full[g].argmax())
            tg[g] = check_int(tg[g], "target", low=0, high=p_full.shape[1] - 1)
        tgt = torch.tensor(tg)
        p0 = p_full[torch.arange(g_n), tgt]
        s = [init_logits(n_probes, t_n, gens[g]) for g in range(g_n)]
        active = torch.ones(g_n, n_probes, dtype=torch.bool)
        steps = torch.full((g_n, n_probes), max_steps)
        forwards = [1] * g_n
        hist: list[list[torch.Tensor]] = [[] for _ in range(g_n)]
        for t in range(max_steps):
            run = [g for g in range(g_n) if bool(active[g].any())]
            if not run:
                break
            masks = [replace_mask(cand[g], n_probes, ratio, gens[g]) for g in run]
            x_tilde = torch.cat(
                [sampler(ids[g].expand(n_probes, -1), m, gens[g]) for g, m in zip(run, masks, strict=True)]
            )
            probs = target_probs(model, x_tilde).view(len(run), n_probes, -1)
            x_hat = []
            for k, g in enumerate(run):
                delta = p0[g] - probs[k, :, tg[g]]
                s[g] = update_logits(s[g], evidence(delta, masks[k], eps), active[g], cand[g])
                pi = importance(s[g], cand[g])
                kw = {"sampler": sampler, "candidates": cand[g], "keep_top_n": keep_top_n, "generator": gens[g]}
                x_hat.append(stopping_inputs(ids[g], pi, **kw))
            probs = target_probs(model, torch.cat(x_hat)).view(len(run), n_probes, -1)
            done = in_top_k(probs, tgt[run].view(-1, 1), stop_top_k)  # [len(run), P]
            for k, g in enumerate(run):
                steps[g, done[k] & active[g]] = t + 1
                active[g] &= ~done[k]
                forwards[g] += 2 * n_probes
                if history:
                    hist[g].append(importance(s[g], cand[g]).mean(0))
    runs = []
    for g in range(g_n):
        runs.append(
            ProbeRun(
                pi=importance(s[g], cand[g]).float(),
                stopped=~active[g],
                steps=steps[g],
                p0=float(p0[g]),
                target=tg[g],
                forwards=forwards[g],
                history=torch.stack(hist[g]).float() if history else None,
            )
        )
    return runs


def aggregate(run: ProbeRun) -> tuple[torch.Tensor, bool]:
    """Mean importance over the stopped probes ``[T]``, and whether it had to fall back to all probes."""
    if not isinstance(run, ProbeRun):
        raise InputError(f"`run` must be a ProbeRun from run_probes; got {type(run).__name__}")
    if bool(run.stopped.any()):
        return run.pi[run.stopped].mean(0), False
    return run.pi.mean(0), True


def explain(
    model: nn.Module,
    input_ids: torch.Tensor,
    target: Any = None,
    *,
    sampler: Sampler,
    attention_mask: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
    ratio: float = 0.3,
    keep_top_n: int = 3,
    stop_top_k: int = 1,
    max_steps: int = 200,
    n_probes: int = 8,
    seed: int = 0,
    batch_size: int = 64,
    show_progress: bool = False,
) -> Attribution:
    """ReAGent token importance for a batch of contexts ``[B, T]`` (right-padded; ``attention_mask`` ``[B, T]``).

    Each row is explained for the token after its last real token: ``target`` (one id, one per
    row, or ``None`` for the model's greedy prediction). ``candidates`` ``[B, T]`` bool restricts
    which tokens may be replaced (default: every real token). Example ``i`` uses seed ``seed + i``.
    Contexts of the same length share their forwards (:func:`run_probes_batch`, up to ``batch_size``
    contexts at a time): the model never sees padding, and each example's result is its own run's.
    Returns ``kind="tokens"`` scores ``[B, T]`` (each row sums to 1 over its candidates);
    ``meta`` holds ``stopped`` (probes stopped per row), ``fallback``, ``steps``, and per row and
    probe ``probe_stopped`` (bool) and ``probe_top`` (the position each probe ranks first).
    """
    ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[B, T]")
    b, t = ids.shape
    mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask
    mask = check_tensor(mask, "attention_mask", shape=(b, t), layout="[B, T]").bool().cpu()
    if not bool(mask.any(1).all()):
        raise InputError("`attention_mask` has a row with no real token")
    cand = mask.clone() if candidates is None else candidates
    cand = check_tensor(cand, "candidates", shape=(b, t), dtype="bool", layout="[B, T]").cpu() & mask
    if target is None:
        tg: list[int | None] = [None] * b
    elif isinstance(target, int) and not isinstance(target, bool):
        tg = [target] * b
    else:
        tt = check_tensor(torch.as_tensor(target), "target", shape=(b,), dtype="int", layout="[B]")
        tg = [int(v) for v in tt]
    seed = check_int(seed, "seed", low=0)
    batch_size = check_int(batch_size, "batch_size", low=1)
    lengths = mask.sum(1).tolist()
    if any(not bool(mask[i, :n].all()) for i, n in enumerate(lengths)):
        raise InputError("`attention_mask` must be right-padded: each row's real tokens first, then padding")
    # contexts of one length run together (no padding reaches the model); chunks of `batch_size` contexts
    groups = [[i for i in range(b) if lengths[i] == n] for n in sorted(set(lengths))]
    chunks = [g[k : k + batch_size] for g in groups for k in range(0, len(g), batch_size)]
    scores = torch.zeros(b, t)
    runs: dict[int, ProbeRun] = {}
    with timer() as tm, eval_mode(model):
        for rows in progress(chunks, desc="ReAGent", disable=not show_progress):
            n = lengths[rows[0]]
            out = run_probes_batch(
                model, ids[rows, :n].cpu(), [tg[i] for i in rows], sampler=sampler, candidates=cand[rows, :n],
                ratio=ratio, keep_top_n=keep_top_n, stop_top_k=stop_top_k, max_steps=max_steps, n_probes=n_probes,
                seeds=[seed + i for i in rows],
            )  # fmt: skip
            runs.update(zip(rows, out, strict=True))
    targets, stopped, fallback, steps, probe_stopped, probe_top = [], [], [], [], [], []
    for i in range(b):
        imp, fb = aggregate(runs[i])
        scores[i, : lengths[i]] = imp
        targets.append(runs[i].target)
        stopped.append(int(runs[i].stopped.sum()))
        fallback.append(fb)
        steps.append(float(runs[i].steps.float().mean()))
        probe_stopped.append(runs[i].stopped.tolist())
        probe_top.append(runs[i].pi.argmax(1).tolist())
    forwards = sum(r.forwards for r in runs.values())
    cost = Cost(forward=forwards, backward=0, wall_s=tm["s"])  # a total over the batch, as every Cost
    return Attribution(
        scores=scores,
        kind="tokens",
        method="reagent",
        target=torch.as_tensor(targets),
        cost=cost,
        mask=mask,
        meta={"stopped": stopped, "fallback": fallback, "steps": steps, "n_probes": n_probes, "ratio": ratio,
              "keep_top_n": keep_top_n, "stop_top_k": stop_top_k, "max_steps": max_steps,
              "probe_stopped": probe_stopped, "probe_top": probe_top},
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Evaluation helpers (to move to xattr_nb.metrics / xattr_nb.attribution).


def gold_rank_metrics(
    scores: torch.Tensor, mask: torch.Tensor, gold_pos: Any, attractor_pos: Any = None
) -> dict[str, torch.Tensor]:
    """Per example: ``hit`` (the top-scored token is the gold one), ``attractor`` (it is one of the
    attractor positions) and ``rr`` (reciprocal rank of the gold token among the real tokens).

    ``gold_pos`` ``[B]``; ``attractor_pos`` ``[B]`` or ``[B, A]`` (optional). Ties rank the earlier position first.
    """
    scores = check_tensor(scores, "scores", ndim=2, dtype="float", layout="[B, T]")
    mask = check_tensor(mask, "mask", shape=tuple(scores.shape), layout="[B, T]").bool()
    gold = check_tensor(torch.as_tensor(gold_pos), "gold_pos", shape=(scores.shape[0],), dtype="int", layout="[B]")
    if bool((gold < 0).any()) or bool((gold >= scores.shape[1]).any()):
        raise InputError(f"`gold_pos` must lie in [0, {scores.shape[1]})")
    if not bool(mask[torch.arange(len(gold)), gold].all()):
        raise InputError("`gold_pos` points at a padding position")
    if bool(torch.isnan(scores[mask]).any()):
        raise InputError("`scores` hold NaN")
    s = scores.masked_fill(~mask, float("-inf"))
    order = torch.argsort(-s, dim=1, stable=True)
    top = order[:, 0]
    rank = (order == gold.unsqueeze(1)).float().argmax(1) + 1
    out = {"hit": (top == gold).float(), "rr": 1.0 / rank.float()}
    if attractor_pos is not None:
        att = torch.as_tensor(attractor_pos)
        att = att.unsqueeze(1) if att.ndim == 1 else att
        att = check_tensor(att, "attractor_pos", ndim=2, dtype="int", layout="[B, A]")
        if att.shape[0] != scores.shape[0]:
            raise InputError(f"`attractor_pos` has {att.shape[0]} rows but `scores` has {scores.shape[0]}")
        out["attractor"] = (top.unsqueeze(1) == att).any(1).float()
    return out


@torch.no_grad()
def last_layer_attention(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Attribution:
    """The "Attention-last" baseline: last layer's attention from the last real token, head-averaged."""
    ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[B, T]")
    am = check_tensor(attention_mask, "attention_mask", shape=tuple(ids.shape), layout="[B, T]").long()
    out = model(input_ids=ids, attention_mask=am, output_attentions=True)
    att = out.attentions[-1].mean(1)  # [B, T, T]
    last = am.sum(1) - 1
    scores = att[torch.arange(ids.shape[0]), last].float() * am
    tgt = out.logits[torch.arange(ids.shape[0]), last].argmax(-1)
    return Attribution(scores=scores, kind="tokens", method="attention_last", target=tgt, mask=am.bool())


def random_scores(mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Uniform random scores on the real tokens ``[B, T]`` (0 on padding): the reference every metric is divided by."""
    mask = check_tensor(mask, "mask", ndim=2, layout="[B, T]").bool()
    g = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    return torch.rand(tuple(mask.shape), generator=g) * mask


def log_ratio(value: float, reference: float) -> float:
    """``log(value / reference)``, the paper's report against random importance (0 = as good as random)."""
    value, reference = float(value), float(reference)
    if not (value > 0 and reference > 0):
        raise InputError(f"log ratio needs positive values; got {value} and {reference}")
    return math.log(value / reference)


# ----------------------------------------------------------------------------------------------
# The small-scale world (IOI), its models, the baselines and the scores the notebook reports.


def ioi_eval_set(n: int, *, seed: int, tokenizer: Any) -> dict[str, Any]:
    """``n`` held-out IOI prompts as ``[BOS] prompt`` ids ``[N, T]`` (right-padded), ``mask``,
    ``gold`` ``[N]`` (the indirect object's first mention, the ground truth), ``attractors``
    ``[N, 2]`` (the subject's two mentions), ``answer`` ``[N]`` ids and the world ``data``."""
    from xattr_nb.worlds.text import encode_words, ioi

    n = check_int(n, "n", low=1)
    data = ioi(n, seed=check_int(seed, "seed", low=0))
    vocab = data.vocab
    if len(tokenizer) != len(vocab) or tokenizer.convert_ids_to_tokens(list(range(len(vocab)))) != list(vocab):
        raise InputError("`tokenizer` does not match the IOI world's vocabulary (use lm_recipes.ioi_tokenizer())")
    ids, mask = encode_words([f"[BOS] {t}" for t in data.texts], vocab)
    index = {w: i for i, w in enumerate(vocab)}
    return {
        "ids": ids,
        "mask": mask,
        "gold": data.io_pos + 1,
        "attractors": torch.stack([data.s1_pos, data.s2_pos], 1) + 1,
        "answer": torch.as_tensor([index[a] for a in data.answers]),
        "data": data,
    }


def ioi_categories(tokenizer: Any) -> dict[str, list[int]]:
    """The IOI vocabulary's word classes (the POS-tag analogue): names, places, objects, other words."""
    from xattr_nb.worlds.text import IOI_NAMES, IOI_OBJECTS, IOI_PLACES, SPECIALS

    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    groups = {"name": set(IOI_NAMES), "place": set(IOI_PLACES), "object": set(IOI_OBJECTS)}
    out: dict[str, list[int]] = {k: [] for k in [*groups, "other"]}
    for i, w in enumerate(vocab):
        if w in SPECIALS:
            continue
        out[next((k for k, g in groups.items() if w in g), "other")].append(i)
    return out


def word_ids(tokenizer: Any) -> list[int]:
    """Every id of ``tokenizer``'s vocabulary that is not a special token (what a sampler may put in)."""
    specials = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in specials]


def samplers(tokenizer: Any, mlm: MLMSampler | None = None) -> dict[str, Sampler]:
    """The replacement samplers over the IOI world's vocabulary: ``"category"`` (POS analogue, the
    code's default), ``"uniform"`` and, given the sampler of :func:`load_mlm_sampler`, ``"mlm"`` (the paper's)."""
    cats = ioi_categories(tokenizer)
    words = sorted(i for g in cats.values() for i in g)
    out: dict[str, Sampler] = {"category": CategorySampler(list(cats.values())), "uniform": UniformSampler(words)}
    if mlm is not None:
        if not isinstance(mlm, MLMSampler):
            raise InputError(f"`mlm` must be an MLMSampler (see load_mlm_sampler); got {type(mlm).__name__}")
        out["mlm"] = mlm
    return out


def load_mlm_sampler(
    scale: str,
    tokenizer: Any,
    *,
    small: str = "ioi_mlm",
    full: str | None = None,
    retrain: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> MLMSampler | None:
    """The paper's replacement sampler: a masked LM that shares ``tokenizer`` (the LM's), as an :class:`MLMSampler`.

    ``scale="cpu"``: the zoo's masked LM ``small`` (``ioi_mlm``, the RoBERTa stand-in trained on the
    IOI world; ``retrain=True`` reruns its recipe at ``seed``). ``scale="full"``: the Hugging Face
    masked LM ``full`` by name or folder, or ``None`` when ``full`` is ``None`` (then use
    :class:`UniformSampler` over :func:`word_ids`). The masked LM is not a causal LM, so it does not
    go through :func:`xattr_nb.models.load_lm`; its vocabulary must equal the LM's (cross-tokenizer
    replacement needs decode/re-encode, which is not done here) and it needs a mask token.
    Replacements are drawn among :func:`word_ids`.
    """
    from xattr_nb.checks import check_choice
    from xattr_nb.models.loaders import SCALES

    check_choice(scale, SCALES, "scale")
    if scale == "full":
        if full is None:
            return None
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        from xattr_nb.models.hub import from_pretrained_offline

        mtok = from_pretrained_offline(AutoTokenizer.from_pretrained, full, "tokenizer", None)
        mlm = from_pretrained_offline(AutoModelForMaskedLM.from_pretrained, full, "masked LM", None)
    else:
        import xattr_nb.models.zoo as zoo

        mlm = zoo.recipes()[small].train(check_int(seed, "seed", low=0))[0] if retrain else zoo.load(small)
        mtok = zoo.tokenizer(small)
    if mtok.get_vocab() != tokenizer.get_vocab() or mtok.mask_token_id is None:
        raise InputError(
            f"the masked LM {full if scale == 'full' else small!r} does not share the LM's tokenizer (or has no mask "
            "token); cross-tokenizer replacement (decode/re-encode) is not implemented"
        )
    return MLMSampler(mlm.to(device).eval(), mtok.mask_token_id, word_ids(tokenizer))


def captum_baselines(
    model: nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    target: torch.Tensor,
    *,
    pad_id: int,
    ablation_baseline: torch.Tensor,
    ig_steps: int = 16,
    seed: int = 0,
) -> dict[str, Attribution]:
    """The spec's baselines on the same model and targets, through :func:`xattr_nb.attribution.attribute`.

    Layer IG (``ig_steps``, ``[PAD]`` baseline), saliency and input × gradient on the embeddings,
    feature ablation with a category-preserving baseline token per position, occlusion (window 1,
    ``[PAD]``), last-layer attention and random scores. The captum methods explain the target
    *logit* at the last real token; ``[BOS]`` (position 0) is kept out of every perturbation.
    """
    from xattr_nb.attribution import attribute

    keep0 = torch.zeros_like(ids, dtype=torch.bool)
    keep0[:, 0] = True
    pad = torch.where(mask.bool() & ~keep0, torch.full_like(ids, pad_id), ids)
    abl = torch.where(mask.bool() & ~keep0, ablation_baseline.to(ids), ids)
    common = {"attention_mask": mask.long(), "position": -1}
    out = {
        "integrated_gradients": attribute(model, ids, target, "layer_integrated_gradients", baseline=pad,
                                          n_steps=check_int(ig_steps, "ig_steps", low=1), **common),
        "saliency": attribute(model, ids, target, "saliency", **common),
        "input_x_gradient": attribute(model, ids, target, "input_x_gradient", **common),
        "feature_ablation": attribute(model, ids, target, "feature_ablation", baseline=abl, **common),
        "occlusion": attribute(model, ids, target, "occlusion", baseline=pad, **common),
    }  # fmt: skip
    with timer() as tm:
        att = last_layer_attention(model, ids, mask)
    out["attention_last"] = Attribution(
        scores=att.scores, kind="tokens", method="attention_last", target=target, mask=mask.bool(),
        cost=Cost(forward=ids.shape[0], wall_s=tm["s"]),  # one batched forward: one row per prompt
    )  # fmt: skip
    out["random"] = Attribution(
        scores=random_scores(mask, seed), kind="tokens", method="random", target=target, mask=mask.bool()
    )
    return out


def soft_scores(
    model: nn.Module, attr: Attribution, ids: torch.Tensor, mask: torch.Tensor, *, draws: int = 20, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Soft-NS and Soft-NC per example (:mod:`xattr_nb.metrics`, the ReAGent repository's
    Hellinger-variant distance), with scores min-max normalised per example over the real tokens
    except ``[BOS]`` (the repository feeds ReAGent's softmax as is). The metrics read each row of
    the padded batch at its own last real token."""
    from xattr_nb.metrics import soft_comprehensiveness, soft_sufficiency

    special = torch.zeros_like(mask, dtype=torch.bool)
    special[:, 0] = True  # [BOS] is never erased
    a = replace(attr, scores=attr.scores.float(), mask=mask.bool(), special=special)
    kw = {"draws": draws, "seed": seed, "distance": "hellinger"}
    return {"soft_ns": soft_sufficiency(model, ids, a, **kw), "soft_nc": soft_comprehensiveness(model, ids, a, **kw)}


def evaluate(
    model: nn.Module, ev: dict[str, Any], attrs: Mapping[str, Attribution], *, draws: int = 20, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Every method's scores on the eval set: ground-truth ``hit`` rate, ``attractor`` rate, ``mrr``
    of the gold token, mean ``soft_ns`` / ``soft_nc``, their log ratios to ``attrs["random"]``
    (``log_soft_ns`` / ``log_soft_nc``, the paper's report), forwards per example and wall time."""
    if "random" not in attrs:
        raise InputError("`attrs` must include a 'random' entry (the reference of the log ratios)")
    cand = ev["mask"].bool().clone()
    cand[:, 0] = False
    out: dict[str, dict[str, float]] = {}
    for name, a in attrs.items():
        g = gold_rank_metrics(a.scores, cand, ev["gold"], ev["attractors"])
        soft = soft_scores(model, a, ev["ids"], ev["mask"], draws=draws, seed=seed)
        out[name] = {
            "hit": float(g["hit"].mean()),
            "attractor": float(g["attractor"].mean()),
            "mrr": float(g["rr"].mean()),
            "soft_ns": float(soft["soft_ns"].mean()),
            "soft_nc": float(soft["soft_nc"].mean()),
            "forwards": a.cost.forward / len(a),  # costs are totals over the batch
            "backwards": a.cost.backward / len(a),
            "wall_s": float(a.cost.wall_s),
        }
    for r in out.values():
        r["log_soft_ns"] = log_ratio(max(r["soft_ns"], 1e-9), max(out["random"]["soft_ns"], 1e-9))
        r["log_soft_nc"] = log_ratio(max(r["soft_nc"], 1e-9), max(out["random"]["soft_nc"], 1e-9))
    return out

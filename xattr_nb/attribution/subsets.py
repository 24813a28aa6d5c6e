"""Attribution as subset selection: greedy searches over image regions (SMDL, LiMA, VPS).

A *set function* ``F`` scores subsets ``S`` of the ``R`` regions of an image. The search builds an
ordering of the regions by growing ``S`` one region at a time, and that ordering *is* the
attribution: the first regions are the ones that, shown alone, make the model most sure of the
target (insertion), and whose removal hurts most (deletion).

**The interface.** A score function takes a batch of subsets as boolean membership rows
``members`` ``[M, R]`` (``members[m, r]``: region ``r`` is in subset ``m``) and returns ``[M]``
floats. Any callable will do. :class:`SetScorer` is the usual one: it composes, for every subset,
the image that keeps only the subset's regions (and, optionally, the complement image that
removes them), pushes both through the model in batches (:func:`xattr_nb.kernels.masked_outputs`)
and combines named *terms* with weights, ``F(S) = sum_k lambda_k * term_k(S)``. Shared terms are
here (:func:`consistency`, :func:`collaboration`, :func:`entropy_confidence`,
:func:`effectiveness`); paper-specific ones live in the method modules.

**The searches.**

- :func:`greedy_search` (naive greedy, SMDL and VPS): at each step evaluate every remaining
  region added to the current set and keep the best. Ranking all ``R`` regions costs exactly
  ``R + (R-1) + ... + 1 = R(R+1)/2`` subset evaluations (:func:`greedy_cost`). For a monotone
  submodular ``F`` the greedy set of size ``k`` is within ``1 - 1/e`` of the best one
  (Nemhauser et al., 1978); the model-based ``F`` of these papers is not provably submodular, so
  the guarantee is only nominal there.
- :func:`bidirectional_greedy_search` (LiMA): a forward greedy grows the most important regions
  from the front while a backward greedy grows the least important ones from the back; the
  backward step only evaluates ``pending`` candidates, pre-screened without new forwards. Cost:
  :func:`bidirectional_cost`, e.g. 100 instead of 136 evaluations for ``R=16, pending=4``.

Both count subset evaluations exactly and, through :func:`xattr_nb.kernels.count_passes` (or the
scorer's own counter), model forward passes; both return a :class:`Ranking`.
:func:`ranking_to_map` turns a ranking into a pixel map with LiMA/VPS's value assignment and
:func:`ranking_to_attribution` wraps it as an :class:`~xattr_nb.attribution.result.Attribution`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.kernels import (
    DEFAULT_MAX_BYTES,
    check_members,
    check_order,
    check_regions,
    count_passes,
    masked_outputs,
    subset_keep,
)
from xattr_nb.models.io import check_model
from xattr_nb.runtime import Cost, progress

__all__ = [
    "Ranking",
    "SetScorer",
    "Step",
    "arccos_distances",
    "bidirectional_cost",
    "bidirectional_greedy_search",
    "collaboration",
    "consistency",
    "effectiveness",
    "entropy_confidence",
    "greedy_cost",
    "greedy_search",
    "greedy_step",
    "ranking_to_attribution",
    "ranking_to_map",
    "region_distances",
]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
#: A term of a :class:`SetScorer`: ``(kept_out [M, ...], complement_out [M, ...] or None, members [M, R]) -> [M]``.
Term = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# Shared terms
# --------------------------------------------------------------------------------------------


def _probs(out: torch.Tensor, name: str) -> torch.Tensor:
    if out.ndim != 2:
        raise InputError(f"{name} needs class probabilities [M, C] from the scorer's `fn`; got {tuple(out.shape)}")
    return out


def consistency(target: int) -> Term:
    """Term ``p(target | x_S)``: the probability on the image that keeps only ``S`` (``fn`` returns probabilities)."""
    target = check_int(target, "target", low=0)

    def term(kept: torch.Tensor, comp: torch.Tensor | None, members: torch.Tensor) -> torch.Tensor:
        p = _probs(kept, "consistency")
        if target >= p.shape[1]:
            raise InputError(f"`target` must lie in [0, {p.shape[1]}); got {target}")
        return p[:, target]

    return term


def collaboration(target: int) -> Term:
    """Term ``1 - p(target | x_{V \\ S})``: how much removing ``S`` (the complement image) loses the target."""
    target = check_int(target, "target", low=0)

    def term(kept: torch.Tensor, comp: torch.Tensor | None, members: torch.Tensor) -> torch.Tensor:
        if comp is None:
            raise InputError("collaboration needs the complement images: build the SetScorer with complement=True")
        p = _probs(comp, "collaboration")
        if target >= p.shape[1]:
            raise InputError(f"`target` must lie in [0, {p.shape[1]}); got {target}")
        return 1.0 - p[:, target]

    return term


def entropy_confidence(probs: torch.Tensor) -> torch.Tensor:
    """``1 - H(p) / log C`` per row of probabilities ``[M, C]``: 1 for a one-hot, 0 for the uniform distribution.

    LiMA's confidence term (SMDL uses an evidential network instead). Used as a term it reads the
    kept image: ``terms={"conf": lambda k, c, m: entropy_confidence(k)}``.
    """
    probs = check_tensor(probs, "probs", ndim=2, dtype="float", layout="[M, C]")
    if probs.shape[1] < 2:
        raise InputError(f"`probs` needs at least 2 classes; got {probs.shape[1]}")
    h = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    return 1.0 - h / math.log(probs.shape[1])


def arccos_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """Angular distances ``d_ij = arccos(cos(e_i, e_j)) / pi`` in [0, 1] of region embeddings ``[R, D]``: ``[R, R]``.

    ``e_i`` is usually the model's embedding of the image that shows region ``i`` alone (one
    forward per region, computed once per image).
    """
    e = check_tensor(embeddings, "embeddings", ndim=2, dtype="float", layout="[R, D]")
    e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.arccos((e @ e.T).clamp(-1.0, 1.0)) / math.pi


def region_distances(
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    regions: torch.Tensor,
    *,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = 64,
) -> torch.Tensor:
    """The effectiveness term's distances ``[R, R]``: :func:`arccos_distances` of the embeddings of the
    images that show one region each.

    ``embed_fn`` maps images ``[B, C, H, W]`` to embeddings ``[B, D]`` (a recognition model's
    penultimate features; ``model.features`` for a TinyCNN). Costs ``R`` forwards, once per image;
    the effectiveness term then needs no forward pass (SMDL and LiMA share it).
    """
    if not callable(embed_fn):
        raise InputError(f"`embed_fn` must be callable images [B, C, H, W] -> [B, D]; got {type(embed_fn).__name__}")
    x = check_tensor(x, "x", ndim=3, dtype="float", layout="[C, H, W]")
    regions = check_regions(regions, hw=tuple(x.shape[1:])).to(x.device)
    emb = masked_outputs(embed_fn, x, regions, baseline=baseline, batch_size=batch_size)
    if emb.ndim != 2:
        raise InputError(f"`embed_fn` must return embeddings [B, D]; got shape {tuple(emb.shape)}")
    return arccos_distances(emb.float())


def effectiveness(distances: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Diversity of each subset: ``sum_{i in S} min_{j in S, j != i} d_ij`` ``[M]``; 0 for ``|S| <= 1``.

    The effectiveness term of SMDL and LiMA: a subset of mutually different regions scores high.
    ``distances`` ``[R, R]`` (e.g. :func:`arccos_distances`), ``members`` ``[M, R]`` bool. It needs
    no forward pass, so the search can re-score memberships for free.
    """
    d = check_tensor(distances, "distances", ndim=2, dtype="float", layout="[R, R]")
    if d.shape[0] != d.shape[1]:
        raise InputError(f"`distances` must be square [R, R]; got {tuple(d.shape)}")
    members = check_members(members, d.shape[0]).to(d.device)
    eye = torch.eye(d.shape[0], dtype=torch.bool, device=d.device)
    # Pairs outside S (or i == j) are pushed to +inf so that the min runs over j in S, j != i.
    allowed = members[:, None, :] & ~eye[None]
    dm = d[None].expand(members.shape[0], -1, -1).masked_fill(~allowed, float("inf"))
    nearest = dm.amin(2)  # [M, R]
    contrib = torch.where(members & torch.isfinite(nearest), nearest, torch.zeros_like(nearest))
    return contrib.sum(1)


# --------------------------------------------------------------------------------------------
# The usual score function: named terms over masked forwards
# --------------------------------------------------------------------------------------------


class SetScorer:
    """``F(S) = sum_k weights[k] * terms[k](S)`` evaluated for batches of subsets through masked forwards.

    - ``fn``: images ``[B, C, H, W]`` -> tensor ``[B, ...]`` (class probabilities for the shared
      terms; a model, ``lambda im: model(im).softmax(-1)``, a detection score...).
    - ``x`` ``[C, H, W]``: the image; ``regions`` ``[R, H, W]``: a partition of it.
    - ``terms``: name -> ``term(kept_out, complement_out, members) -> [M]``; ``kept_out`` is
      ``fn`` on the images that keep only each subset, ``complement_out`` on those that remove it
      (``None`` when ``complement=False``).
    - ``weights``: name -> lambda (default 1 for every term; a term with weight 0 is still computed
      and recorded, so ablations keep their curves).
    - ``baseline``: what removed pixels become (scalar or ``[C, H, W]``), see
      :func:`~xattr_nb.kernels.compose_masked`; ``batch_size`` images per forward.

    ``scorer(members)`` returns ``F`` ``[M]`` (float64). It counts ``n_evaluations`` (subsets)
    and ``n_forward`` (images through ``fn``: 2 per subset with complements, else 1), and keeps
    the last call's outputs so that :meth:`rescore_last` can re-weigh them for other memberships
    without a forward (LiMA's backward pre-screen) and :meth:`complement_terms` can score the
    complement sets ``V \\ S`` from the same outputs.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], Any],
        x: torch.Tensor,
        regions: torch.Tensor,
        terms: Mapping[str, Term],
        weights: Mapping[str, float] | None = None,
        *,
        baseline: float | torch.Tensor = 0.0,
        complement: bool = True,
        batch_size: int | None = 64,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if not callable(fn):
            raise InputError(f"`fn` must be callable images [B, C, H, W] -> tensor [B, ...]; got {type(fn).__name__}")
        x = check_tensor(x, "x", ndim=(3, 4), dtype="float", layout="[C, H, W]")
        if x.ndim == 4:
            if x.shape[0] != 1:
                raise InputError(f"`x` must be one image [C, H, W]; got a batch of {x.shape[0]}")
            x = x[0]
        self.x = x
        self.regions = check_regions(regions, hw=tuple(x.shape[1:])).to(x.device)
        if not isinstance(terms, Mapping) or not terms:
            raise InputError("`terms` must be a non-empty dict name -> term(kept_out, complement_out, members)")
        for k, t in terms.items():
            if not isinstance(k, str) or not callable(t):
                raise InputError(f"`terms` must map names (str) to callables; got {k!r}: {type(t).__name__}")
        self.terms = dict(terms)
        weights = {k: 1.0 for k in self.terms} if weights is None else dict(weights)
        unknown = sorted(set(weights) - set(self.terms))
        if unknown:
            raise InputError(f"`weights` names {unknown} that are not terms; terms are {sorted(self.terms)}")
        self.weights = {k: check_float(weights.get(k, 1.0), f"weights[{k!r}]") for k in self.terms}
        if not isinstance(complement, bool):
            raise InputError(f"`complement` must be a bool; got {type(complement).__name__}")
        self.fn, self.baseline, self.complement = fn, baseline, complement
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size", low=1)
        self.max_bytes = max_bytes
        self.n_evaluations = 0
        self.n_forward = 0
        self.last: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None
        self.last_terms: dict[str, torch.Tensor] = {}

    @property
    def n_regions(self) -> int:
        return int(self.regions.shape[0])

    def outputs(self, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``fn`` on the kept images (and the complement images) of each subset: one batched pass over both."""
        members = check_members(members, self.n_regions).to(self.regions.device)
        keep = subset_keep(self.regions, members)
        masks = torch.cat([keep, ~keep]) if self.complement else keep
        out = masked_outputs(
            self.fn, self.x, masks, baseline=self.baseline, batch_size=self.batch_size, max_bytes=self.max_bytes
        )
        self.n_evaluations += members.shape[0]
        self.n_forward += masks.shape[0]
        m = members.shape[0]
        return (out[:m], out[m:]) if self.complement else (out, None)

    def combine(
        self, kept: torch.Tensor, comp: torch.Tensor | None, members: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(F [M], {name: term [M]})`` from model outputs; no forward pass."""
        vals = {}
        for k, t in self.terms.items():
            v = torch.as_tensor(t(kept, comp, members)).double()
            if v.shape != (members.shape[0],):
                raise InputError(
                    f"term {k!r} must return one value per subset ({members.shape[0]}); got {tuple(v.shape)}"
                )
            if not bool(torch.isfinite(v).all()):
                raise InputError(f"term {k!r} returned NaN or infinite values")
            vals[k] = v.cpu()
        total = sum(self.weights[k] * v for k, v in vals.items())
        return total, vals

    def evaluate(self, members: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(F [M], terms)`` for a batch of subsets; remembers the outputs for :meth:`rescore_last`."""
        members = check_members(members, self.n_regions)
        kept, comp = self.outputs(members)
        total, vals = self.combine(kept, comp, members.to(self.regions.device))
        self.last, self.last_terms = (kept, comp, members), vals
        return total, vals

    def __call__(self, members: torch.Tensor) -> torch.Tensor:
        return self.evaluate(members)[0]

    def rescore_last(self, members: torch.Tensor) -> torch.Tensor:
        """``F`` from the last call's model outputs but new memberships (one row per last subset); no forward.

        LiMA's backward pre-screen: the candidate's forward-step outputs with its effectiveness
        recomputed for the backward set.
        """
        if self.last is None:
            raise InputError("rescore_last() needs a previous call of the scorer")
        kept, comp, prev = self.last
        members = check_members(members, self.n_regions)
        if members.shape[0] != prev.shape[0]:
            raise InputError(f"`members` must have one row per subset of the last call ({prev.shape[0]})")
        return self.combine(kept, comp, members.to(self.regions.device))[0]

    def complement_terms(self, row: int) -> tuple[float, dict[str, float]]:
        """``F`` and terms of ``V \\ S`` for subset ``row`` of the last call, from the same outputs (swap kept and
        complement images). Needs ``complement=True``."""
        if self.last is None or self.last[1] is None:
            raise InputError("complement_terms() needs a previous call of a scorer built with complement=True")
        kept, comp, members = self.last
        row = check_int(row, "row", low=0, high=members.shape[0] - 1)
        total, vals = self.combine(comp[row : row + 1], kept[row : row + 1], ~members[row : row + 1])
        return float(total[0]), {k: float(v[0]) for k, v in vals.items()}


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One step of a search: which subsets it scored (``base`` plus each ``candidates[i]``) and what it chose.

    ``direction`` is ``"forward"`` (grow the important set) or ``"backward"`` (grow the
    unimportant set, LiMA). ``scores[i] = F(base + candidates[i])``; ``chosen`` is a region index.
    """

    direction: str
    candidates: torch.Tensor
    scores: torch.Tensor
    chosen: int


@dataclass
class Ranking:
    """An ordering of regions found by a subset search, with what it cost.

    - ``order`` ``[R]``: region indices, most important first.
    - ``scores`` ``[R]`` (float64): ``F`` of each prefix set ``{order[0..t]}``; NaN where the
      search never evaluated that set (the tail of a bidirectional search with a plain callable).
    - ``gains`` ``[R]``: ``scores[t] - scores[t-1]`` (``gains[0]`` against ``start_score``).
    - ``terms``: name -> ``[R]`` the named terms of each prefix set (a :class:`SetScorer` only).
    - ``start_score`` / ``start_terms``: ``F(empty set)`` when evaluated (``evaluate_empty=True``).
    - ``n_selected``: regions chosen by the search itself (``k``); the rest were appended.
    - ``n_evaluations``: subsets scored; ``n_forward``: model forwards (per image), measured, or
      ``None`` when neither a model nor a counting scorer was given; ``wall_s``: seconds.
    - ``steps``: every search step (for plots of one greedy step); ``method``: the search's name.
    """

    order: torch.Tensor
    scores: torch.Tensor
    gains: torch.Tensor
    n_evaluations: int
    n_forward: int | None
    wall_s: float
    method: str
    n_selected: int
    start_score: float | None = None
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    start_terms: dict[str, float] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    @property
    def cost(self) -> Cost:
        return Cost(forward=self.n_forward or 0, backward=0, wall_s=self.wall_s)

    def __len__(self) -> int:
        return int(self.order.shape[0])

    def __repr__(self) -> str:
        head = self.order[:8].tolist()
        more = "..." if len(self) > 8 else ""
        return (
            f"Ranking(method={self.method!r}, order={head}{more}, n_evaluations={self.n_evaluations}, "
            f"n_forward={self.n_forward}, wall_s={self.wall_s:.3g})"
        )


# --------------------------------------------------------------------------------------------
# Searches
# --------------------------------------------------------------------------------------------


def greedy_cost(n_regions: int, k: int | None = None, *, evaluate_empty: bool = False) -> int:
    """Subset evaluations of :func:`greedy_search`: ``R + (R-1) + ... + (R-k+1)`` (+1 for the empty set).

    ``k = R`` (default) gives ``R(R+1)/2``. With a :class:`SetScorer` that also scores
    complements, model forwards are twice this.
    """
    r = check_int(n_regions, "n_regions", low=1)
    k = r if k is None else check_int(k, "k", low=1, high=r)
    return sum(r - t for t in range(k)) + int(bool(evaluate_empty))


def bidirectional_cost(n_regions: int, pending: int, *, evaluate_empty: bool = False) -> int:
    """Subset evaluations of :func:`bidirectional_greedy_search` (+1 with ``evaluate_empty``).

    While ``c > pending`` regions remain, a step costs ``c`` (forward: every candidate) ``+ pending``
    (backward: the pre-screened candidates) and removes two regions; then the forward greedy
    finishes alone, ``c`` per step down to ``c = 1``. LiMA's spec counts forwards, two per
    evaluation: ``sum_{phase 1} (2c + 2p) + sum_{c <= p} 2c``; for ``R=16, p=4`` that is 200
    forwards (the spec's "~198" leaves out the last, forced, single-candidate step) against
    ``R(R+1) = 272`` for naive greedy; for ``R=50, p=8``, 1668 against 2550.
    """
    c = check_int(n_regions, "n_regions", low=1)
    p = check_int(pending, "pending", low=1)
    total = 0
    while c > 0:
        total += c
        if c > p:
            total += p
            c -= 2
        else:
            c -= 1
    return total + int(bool(evaluate_empty))


def _check_score_fn(score_fn: Any) -> None:
    if not callable(score_fn):
        raise InputError(
            f"`score_fn` must be callable members [M, R] bool -> scores [M]; got {type(score_fn).__name__}"
        )


def _check_batching(score_fn: Any, batch_size: int | None) -> None:
    if batch_size is not None and isinstance(score_fn, SetScorer):
        raise InputError(
            "`batch_size` of the search chunks the calls of a plain score function; a SetScorer batches its "
            "forwards itself: pass batch_size to SetScorer(...) and leave the search's batch_size None"
        )


def _call(score_fn: ScoreFn, members: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    """Score subsets in chunks of ``batch_size`` and check the result."""
    step = members.shape[0] if batch_size is None else batch_size
    outs = []
    for s in range(0, members.shape[0], step):
        chunk = members[s : s + step]
        out = score_fn(chunk)
        if not isinstance(out, torch.Tensor):
            raise InputError(f"`score_fn` must return a tensor [M]; got {type(out).__name__}")
        out = out.detach().double().cpu()
        if out.shape != (chunk.shape[0],):
            raise InputError(f"`score_fn` must return one score per subset ({chunk.shape[0]}); got {tuple(out.shape)}")
        if not bool(torch.isfinite(out).all()):
            raise InputError("`score_fn` returned NaN or infinite scores")
        outs.append(out)
    return torch.cat(outs)


def _candidates_members(base: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    members = base.unsqueeze(0).repeat(candidates.shape[0], 1)
    members[torch.arange(candidates.shape[0]), candidates] = True
    return members


def greedy_step(
    score_fn: ScoreFn, selected: torch.Tensor, *, batch_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One naive-greedy step: ``(candidates [c], F(selected + {r}) [c])`` for every region ``r`` not yet selected.

    ``selected`` is a bool membership vector ``[R]``. The search picks ``candidates[argmax]``.
    """
    _check_score_fn(score_fn)
    selected = check_tensor(selected, "selected", ndim=1, dtype="bool", layout="[R]", nonempty=True).cpu()
    candidates = torch.nonzero(~selected).flatten()
    if candidates.numel() == 0:
        raise InputError("`selected` already holds every region: no candidate left")
    bs = None if batch_size is None else check_int(batch_size, "batch_size", low=1)
    return candidates, _call(score_fn, _candidates_members(selected, candidates), bs)


class _Meter:
    """Measures forwards: through ``count_passes(model)`` if a model is given, else the scorer's own counter."""

    def __init__(self, score_fn: Any, model: nn.Module | None) -> None:
        if model is not None:
            check_model(model)
        self.model, self.score_fn = model, score_fn
        self.start = getattr(score_fn, "n_forward", None)

    def __enter__(self) -> _Meter:
        self.t0 = time.perf_counter()
        self._ctx = count_passes(self.model) if self.model is not None else None
        self.counter = self._ctx.__enter__() if self._ctx is not None else None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        self.wall_s = time.perf_counter() - self.t0

    @property
    def n_forward(self) -> int | None:
        if self.counter is not None:
            return self.counter.forward
        now = getattr(self.score_fn, "n_forward", None)
        return None if self.start is None or now is None else int(now - self.start)


def _record_terms(score_fn: Any, row: int) -> dict[str, float]:
    terms = getattr(score_fn, "last_terms", None)
    if isinstance(score_fn, SetScorer) and terms:
        return {k: float(v[row]) for k, v in terms.items()}
    return {}


def _evaluate_empty(score_fn: Any, n: int) -> tuple[float, dict[str, float], float | None, dict[str, float]]:
    """``F(empty)`` and its terms, plus ``F(V)`` and terms when the scorer can swap complements (else None)."""
    empty = torch.zeros(1, n, dtype=torch.bool)
    s0 = float(_call(score_fn, empty, None)[0])
    t0 = _record_terms(score_fn, 0)
    if isinstance(score_fn, SetScorer) and score_fn.complement:
        full, full_terms = score_fn.complement_terms(0)
        return s0, t0, full, full_terms
    return s0, t0, None, {}


def _finish(
    order: list[int],
    prefix_scores: list[float],
    prefix_terms: list[dict[str, float]],
    start: float | None,
    start_terms: dict[str, float],
    **kw: Any,
) -> Ranking:
    scores = torch.tensor(prefix_scores, dtype=torch.float64)
    prev = torch.cat([torch.tensor([math.nan if start is None else start], dtype=torch.float64), scores[:-1]])
    names = sorted({k for t in prefix_terms for k in t})
    terms = {k: torch.tensor([t.get(k, math.nan) for t in prefix_terms], dtype=torch.float64) for k in names}
    return Ranking(
        order=torch.tensor(order, dtype=torch.long),
        scores=scores,
        gains=scores - prev,
        start_score=start,
        terms=terms,
        start_terms=start_terms,
        **kw,
    )


def greedy_search(
    score_fn: ScoreFn,
    n_regions: int,
    *,
    k: int | None = None,
    batch_size: int | None = None,
    evaluate_empty: bool = False,
    model: nn.Module | None = None,
    show_progress: bool = False,
) -> Ranking:
    """Naive greedy ranking of ``n_regions`` regions under the set function ``score_fn``.

    ``S = {}``; ``k`` times (default all ``R``): score ``F(S + {r})`` for every remaining ``r``
    (``batch_size`` subsets per call of ``score_fn``, default all candidates of a step at once)
    and add the best (ties: the lowest region index). With ``k < R`` the unchosen regions follow in
    the order of their last-step scores. Exactly :func:`greedy_cost` evaluations.

    ``evaluate_empty=True`` scores the empty set first (one more evaluation; VPS's map starts
    from ``F(empty)``). Forwards are counted with :func:`~xattr_nb.kernels.count_passes` on
    ``model`` if given, else by the scorer (``score_fn.n_forward``, as :class:`SetScorer` keeps).
    """
    _check_score_fn(score_fn)
    n = check_int(n_regions, "n_regions", low=1)
    k = n if k is None else check_int(k, "k", low=1, high=n)
    bs = None if batch_size is None else check_int(batch_size, "batch_size", low=1)
    if isinstance(score_fn, SetScorer) and score_fn.n_regions != n:
        raise InputError(f"`n_regions` is {n} but the scorer has {score_fn.n_regions} regions")
    _check_batching(score_fn, bs)
    evaluations = 0
    with _Meter(score_fn, model) as meter:
        start, start_terms = None, {}
        if evaluate_empty:
            start, start_terms, _, _ = _evaluate_empty(score_fn, n)
            evaluations += 1
        selected = torch.zeros(n, dtype=torch.bool)
        order: list[int] = []
        prefix_scores: list[float] = []
        prefix_terms: list[dict[str, float]] = []
        steps: list[Step] = []
        for _ in progress(range(k), disable=not show_progress, desc="greedy"):
            cand, scores = greedy_step(score_fn, selected, batch_size=bs)
            evaluations += cand.numel()
            best = int(torch.argmax(scores))  # first maximum: the lowest index among ties
            r = int(cand[best])
            steps.append(Step("forward", cand, scores, r))
            prefix_terms.append(_record_terms(score_fn, best) if bs is None else {})
            selected[r] = True
            order.append(r)
            prefix_scores.append(float(scores[best]))
        if k < n:
            last = steps[-1]
            rest = [
                (float(s), int(c)) for c, s in zip(last.candidates, last.scores, strict=True) if int(c) != last.chosen
            ]
            rest.sort(key=lambda t: (-t[0], t[1]))
            order += [c for _, c in rest]
            prefix_scores += [math.nan] * len(rest)
            prefix_terms += [{}] * len(rest)
    return _finish(
        order,
        prefix_scores,
        prefix_terms,
        start,
        start_terms,
        n_evaluations=evaluations,
        n_forward=meter.n_forward,
        wall_s=meter.wall_s,
        method="greedy",
        n_selected=k,
        steps=steps,
    )


def bidirectional_greedy_search(
    score_fn: ScoreFn,
    n_regions: int,
    *,
    pending: int = 4,
    prescreen: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int | None = None,
    evaluate_empty: bool = False,
    model: nn.Module | None = None,
    show_progress: bool = False,
) -> Ranking:
    """LiMA's bidirectional greedy: rank the regions from both ends at once.

    With ``Fwd`` (most important, grown from the front) and ``Bwd`` (least important, grown from
    the back) empty, and ``Rem`` the regions in neither, repeat until ``Rem`` is empty:

    1. *forward step*: score ``F(Fwd + {r})`` for every ``r`` in ``Rem`` and move the best, ``r*``, to ``Fwd``;
    2. *backward step*, only while ``|Rem| > pending`` held before step 1: pre-screen the other
       candidates without a forward and keep the ``pending`` with the lowest pre-screen score;
       score ``F(Bwd + {r})`` exactly for those and move the lowest to ``Bwd``.

    The order is ``Fwd`` followed by ``Bwd`` reversed. Evaluations: exactly
    :func:`bidirectional_cost` (each backward step scores exactly ``pending`` candidates, because
    ``r*`` is excluded before, not after, picking them).

    ``prescreen(candidates [c], forward_scores [c], backward_members [R]) -> [c]`` ranks the
    backward candidates (lower = more likely unimportant). Default: for a :class:`SetScorer`, LiMA's
    ``G(r)``: the forward step's model outputs re-weighed with the membership ``Bwd + {r}``
    (:meth:`SetScorer.rescore_last`, so a membership-only term such as effectiveness is computed
    for the backward set); for any other callable, the forward scores ``F(Fwd + {r})``.

    With a :class:`SetScorer` that scores complements, ``F`` and the terms of the prefix sets
    ``V \\ Bwd_{1..j}`` come from the backward evaluations by swapping kept and complement images,
    so ``ranking.scores`` and ``ranking.terms`` are complete except the last prefix (the full
    image), which needs ``evaluate_empty=True`` (one evaluation: the empty set's complement is
    the full image). For other callables those tail entries are NaN.
    """
    _check_score_fn(score_fn)
    n = check_int(n_regions, "n_regions", low=1)
    p = check_int(pending, "pending", low=1)
    bs = None if batch_size is None else check_int(batch_size, "batch_size", low=1)
    if prescreen is not None and not callable(prescreen):
        raise InputError(f"`prescreen` must be callable or None; got {type(prescreen).__name__}")
    scorer = score_fn if isinstance(score_fn, SetScorer) else None
    if scorer is not None and scorer.n_regions != n:
        raise InputError(f"`n_regions` is {n} but the scorer has {scorer.n_regions} regions")
    _check_batching(score_fn, bs)
    evaluations = 0
    fwd: list[int] = []
    bwd: list[int] = []
    fwd_scores: list[float] = []
    fwd_terms: list[dict[str, float]] = []
    # For backward step j: F and terms of the complement set V \ Bwd_{1..j} (when the scorer can swap).
    bwd_comp_scores: list[float] = []
    bwd_comp_terms: list[dict[str, float]] = []
    steps: list[Step] = []
    with _Meter(score_fn, model) as meter:
        start, start_terms, full, full_terms = None, {}, None, {}
        if evaluate_empty:
            start, start_terms, full, full_terms = _evaluate_empty(score_fn, n)
            evaluations += 1
        in_fwd = torch.zeros(n, dtype=torch.bool)
        in_bwd = torch.zeros(n, dtype=torch.bool)
        bar = progress(total=n, disable=not show_progress, desc="bidirectional greedy")
        while True:
            rem = torch.nonzero(~(in_fwd | in_bwd)).flatten()
            c = rem.numel()
            if c == 0:
                break
            members = _candidates_members(in_fwd, rem)
            scores = _call(score_fn, members, bs)
            evaluations += c
            best = int(torch.argmax(scores))
            r_star = int(rem[best])
            steps.append(Step("forward", rem, scores, r_star))
            fwd_terms.append(_record_terms(score_fn, best) if bs is None else {})
            fwd.append(r_star)
            fwd_scores.append(float(scores[best]))
            in_fwd[r_star] = True
            bar.update(1)
            if c <= p:
                continue
            others = torch.tensor([i for i in range(c) if i != best], dtype=torch.long)
            cand = rem[others]
            if prescreen is not None:
                g = torch.as_tensor(prescreen(cand, scores[others], in_bwd.clone())).double().cpu()
                if g.shape != (cand.numel(),) or not bool(torch.isfinite(g).all()):
                    raise InputError(f"`prescreen` must return {cand.numel()} finite values; got {tuple(g.shape)}")
            elif scorer is not None and bs is None:
                g = scorer.rescore_last(_candidates_members(in_bwd, rem))[others].cpu()
            else:
                g = scores[others]
            pick = cand[torch.argsort(g, stable=True)[:p]]
            b_scores = _call(score_fn, _candidates_members(in_bwd, pick), bs)
            evaluations += p
            worst = int(torch.argmin(b_scores))
            r_min = int(pick[worst])
            steps.append(Step("backward", pick, b_scores, r_min))
            if scorer is not None and scorer.complement and bs is None:
                s_c, t_c = scorer.complement_terms(worst)
            else:
                s_c, t_c = math.nan, {}
            bwd.append(r_min)
            bwd_comp_scores.append(s_c)
            bwd_comp_terms.append(t_c)
            in_bwd[r_min] = True
            bar.update(1)
        bar.close()
    # Prefix sets in order Fwd ++ reversed(Bwd): the first len(Fwd) are Fwd_1..t; prefix len(Fwd) + i
    # (i = 1..nb) is V \ Bwd_{1..nb-i}, i.e. the complement of backward step nb - i; i = nb is V itself.
    nb = len(bwd)
    tail_scores = [bwd_comp_scores[nb - i - 1] for i in range(1, nb)] + ([] if nb == 0 else [full])
    tail_terms = [bwd_comp_terms[nb - i - 1] for i in range(1, nb)] + ([] if nb == 0 else [full_terms])
    tail_scores = [math.nan if s is None else s for s in tail_scores]
    return _finish(
        fwd + bwd[::-1],
        fwd_scores + tail_scores,
        fwd_terms + tail_terms,
        start,
        start_terms,
        n_evaluations=evaluations,
        n_forward=meter.n_forward,
        wall_s=meter.wall_s,
        method="bidirectional",
        n_selected=n,
        steps=steps,
    )


# --------------------------------------------------------------------------------------------
# Ranking -> attribution map
# --------------------------------------------------------------------------------------------


def ranking_to_map(
    ranking: Ranking | torch.Tensor,
    regions: torch.Tensor,
    *,
    values: torch.Tensor | None = None,
    start: float | None = None,
    how: str = "cumulative_gain",
) -> torch.Tensor:
    """A pixel map ``[H, W]`` in [0, 1] from a region ranking: every pixel gets its region's value.

    ``how="cumulative_gain"`` (LiMA ``add_value_decrease``, VPS ``add_value``): with ``F_t`` the
    score trajectory of the prefix sets (``values`` ``[R]``, default ``ranking.scores``) and
    ``F_0 = start`` (default ``ranking.start_score``; if unknown, ``F_1``), the region at rank
    ``t`` gets ``v_t = -sum_{tau <= t} |F_tau - F_{tau-1}|``, then the values are min-max
    normalised. Regions ranked early with large steps come out brightest; once the score stops
    moving, the remaining regions share the lowest value. LiMA uses ``values = cons + colla``
    (``ranking.terms["cons"] + ranking.terms["colla"]``), VPS its ``F = cons + colla`` with
    ``start = F(empty)``.

    ``how="rank"``: ``v_t = (R - t) / R`` (first 1, last ``1/R``), needing only an order, which
    may be given directly as a LongTensor ``[R]``. A constant trajectory gives a map of ones.
    """
    check_choice(how, ("cumulative_gain", "rank"), "how")
    regions = check_regions(regions)
    r = regions.shape[0]
    if isinstance(ranking, Ranking):
        order = ranking.order
    else:
        order = check_tensor(ranking, "ranking", ndim=1, dtype="int", layout="[R] order")
        if how == "cumulative_gain" and values is None:
            raise InputError("how='cumulative_gain' needs a Ranking or `values`; an order alone supports how='rank'")
    order = check_order(order.cpu(), r, "ranking.order")
    if how == "rank":
        v = (r - torch.arange(r, dtype=torch.float64)) / r
    else:
        if values is None:
            values = ranking.scores  # type: ignore[union-attr]
        values = check_tensor(torch.as_tensor(values), "values", shape=(r,), dtype="float", finite=False).double().cpu()
        if not bool(torch.isfinite(values).all()):
            raise InputError(
                "`values` (default ranking.scores) has NaN entries: prefix sets the search never scored. Pass "
                "values= a complete trajectory (e.g. from ranking.terms), or search with evaluate_empty=True and a "
                "SetScorer with complement=True"
            )
        if start is None and isinstance(ranking, Ranking):
            start = ranking.start_score
        f0 = float(values[0]) if start is None else check_float(start, "start")
        steps = torch.diff(torch.cat([torch.tensor([f0], dtype=torch.float64), values])).abs()
        v = -steps.cumsum(0)
        lo, hi = v.min(), v.max()
        v = (v - lo) / (hi - lo) if hi > lo else torch.ones_like(v)
    per_region = torch.empty(r, dtype=torch.float64)
    per_region[order] = v
    return torch.einsum("r,rhw->hw", per_region.to(regions.device).float(), regions.float())


def ranking_to_attribution(
    ranking: Ranking,
    regions: torch.Tensor,
    target: int,
    *,
    kind: str = "pixels",
    method: str = "subset_search",
    values: torch.Tensor | None = None,
    start: float | None = None,
    how: str = "cumulative_gain",
) -> Attribution:
    """Wrap a ranking of one image as an :class:`Attribution` with the search's cost.

    ``kind="pixels"``: scores ``[1, H, W]`` = :func:`ranking_to_map`; ``kind="regions"``: scores
    ``[1, R]``, each region's value (in region index order). Either way ``meta`` holds
    ``regions``, ``order`` and the ``ranking``, so metrics can use the order directly
    (``insertion_deletion(model, x, attr.meta["order"], regions=...)``).
    """
    if not isinstance(ranking, Ranking):
        raise InputError(f"`ranking` must be a Ranking; got {type(ranking).__name__}")
    check_choice(kind, ("pixels", "regions"), "kind")
    target = check_int(target, "target", low=0)
    regions = check_regions(regions)
    m = ranking_to_map(ranking, regions, values=values, start=start, how=how)
    if kind == "pixels":
        scores = m.unsqueeze(0)
    else:
        per_region = (m.unsqueeze(0) * regions).flatten(1).sum(1) / regions.flatten(1).sum(1)
        scores = per_region.unsqueeze(0)
    return Attribution(
        scores=scores.float(),
        kind=kind,  # type: ignore[arg-type]
        method=method,
        target=torch.tensor([target]),
        cost=ranking.cost,
        meta={"regions": regions, "order": ranking.order, "ranking": ranking, "how": how},
    )

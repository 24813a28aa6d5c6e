"""Top-k ranking metrics for recommendation and retrieval: Recall@k, NDCG@k, MRR, hit rate.

Every function takes ``scores`` (``[U, I]``: one row of item scores per user or query, or ``[I]``
for one) and ``relevant`` (the same shape, binary: bool, 0/1 integers or 0./1. floats) and returns
one value per row, ``[U]`` float64: average them yourself (the official Mult-VAE code reports the
mean over test users). Items are ranked by descending score.

Conventions (the papers' official ones):

- **Recall@k** (Mult-VAE, Liang et al. 2018, and its code): ``|top-k ∩ relevant| / min(k, |relevant|)``
  with ``normalize="min"`` (the default), so a user with fewer relevant items than ``k`` can still
  reach 1. This is not plain recall; ``normalize="plain"`` divides by ``|relevant|`` (retrieval
  recall, e.g. the two-tower SSL paper's Recall@10/50 with one positive per query, where both agree).
- **NDCG@k**: binary gains, discount ``1/log2(rank + 1)``, normalised by the ideal DCG over
  ``min(k, |relevant|)`` items (Mult-VAE). Computed by :func:`sklearn.metrics.ndcg_score`, whose
  conventions match: binary ``y_true`` gives binary gains, its discount is ``1/log2(rank + 1)`` and
  its ideal DCG@k sorts the true relevances, which puts ``min(k, |relevant|)`` ones on top.
- **Hit rate@k**: 1 if any relevant item is in the top k.
- **MRR**: the reciprocal rank of the first relevant item (``0`` if it falls below ``k`` when a ``k``
  is given); the mean over rows is the mean reciprocal rank.

Written here because scikit-learn has no such function in this form: Recall@k with the ``min(k, ·)``
normaliser, hit rate@k, MRR. **Ties** are averaged everywhere: each metric is the expected value over
uniformly random orders of tied scores (what ``ndcg_score`` does with ``ignore_ties=False``,
McSherry & Najork 2008), so a popularity baseline with tied item counts is not flattered or
penalised by item order. With continuous scores there are no ties and this is the plain metric.

**Masking** (Mult-VAE sets the fold-in items' scores to −∞ before the top-k): pass ``exclude``, a
mask of the same shape; excluded items are ranked below every other item. Scores must be finite
(NaN or ±inf raise :class:`~xattr_nb.checks.InputError`: use ``exclude`` rather than −∞). An excluded
item may not be relevant, and every row needs at least one relevant item (the metric is undefined
otherwise; the official code skips such users, here they raise so that the caller decides).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from xattr_nb.checks import InputError, check_choice, check_int

__all__ = ["hit_rate_at_k", "mrr", "ndcg_at_k", "ndcg_at_k_batch", "recall_at_k", "recall_at_k_batch"]


def _array(v: Any, name: str) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    try:
        a = np.asarray(v)
    except (TypeError, ValueError) as e:
        raise InputError(f"`{name}` must be an array or tensor [U, I] or [I]; got {type(v).__name__}") from e
    if a.dtype == object:
        raise InputError(f"`{name}` must be a numeric array or tensor [U, I] or [I]; got a ragged or object array")
    return a


def _binary(v: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    a = _array(v, name)
    if a.shape != shape:
        raise InputError(f"`{name}` must have the shape of `scores` {shape}; got {a.shape}")
    if a.dtype == bool:
        return a
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(f"`{name}` must be bool or 0/1 numbers; got dtype {a.dtype}")
    ok = (a == 0) | (a == 1)
    if not ok.all():
        bad = np.unique(a[~ok])[:5].tolist()
        raise InputError(f"`{name}` must be binary (bool or 0/1); got values such as {bad}")
    return a.astype(bool)


def _prepare(scores: Any, relevant: Any, exclude: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``[U, I]`` float64 with excluded items pushed below every other, relevance ``[U, I]`` bool."""
    s = _array(scores, "scores")
    if s.ndim not in (1, 2):
        raise InputError(f"`scores` must be a 1-D [I] or 2-D [U, I] array; got shape {s.shape}")
    if s.size == 0:
        raise InputError(f"`scores` is empty (shape {s.shape})")
    if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)) or s.dtype == bool:
        raise InputError(f"`scores` must be real numbers; got dtype {s.dtype}")
    s = s.astype(np.float64)
    if np.isnan(s).any():
        raise InputError(f"`scores` contains {int(np.isnan(s).sum())} NaN value(s)")
    if np.isinf(s).any():
        raise InputError(
            f"`scores` contains {int(np.isinf(s).sum())} infinite value(s); to drop items from the ranking "
            "(e.g. fold-in items) pass them as `exclude` instead of scoring them -inf"
        )
    r = _binary(relevant, "relevant", s.shape)
    e = None if exclude is None else _binary(exclude, "exclude", s.shape)
    if s.ndim == 1:
        s, r = s[None], r[None]
        e = None if e is None else e[None]
    empty = np.flatnonzero(~r.any(axis=1))
    if empty.size:
        raise InputError(
            f"`relevant` has no relevant item in row(s) {empty[:10].tolist()}: the metric is undefined there "
            "(drop those users or queries first)"
        )
    if e is not None:
        clash = np.flatnonzero((e & r).any(axis=1))
        if clash.size:
            raise InputError(
                f"`exclude` masks relevant items in row(s) {clash[:10].tolist()}; an excluded item cannot count"
            )
        if e.any():
            lo, hi = s.min(), s.max()
            s = np.where(e, lo - max(1.0, hi - lo, abs(lo)), s)  # strictly below every kept item
    return s, r


def _check_k(k: Any) -> int:
    return check_int(k, "k", low=1)


def _expected_hits(s: np.ndarray, r: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the expected number of relevant items in the top k, and the probability of at least one,
    over uniformly random orders of tied scores."""
    n_items = s.shape[1]
    hits, anyhit = np.zeros(len(s)), np.zeros(len(s))
    for u in range(len(s)):
        if k >= n_items:
            hits[u], anyhit[u] = r[u].sum(), 1.0
            continue
        t = np.sort(s[u])[::-1][k - 1]  # the k-th best score
        above = s[u] > t
        tied = s[u] == t
        m = k - int(above.sum())  # slots of the top k filled from the tied group
        n_t, r_t = int(tied.sum()), int((tied & r[u]).sum())
        hits[u] = (above & r[u]).sum() + m * r_t / n_t
        if (above & r[u]).any():
            anyhit[u] = 1.0
        else:  # hypergeometric: none of the m drawn from the tied group is relevant
            anyhit[u] = 1.0 - math.comb(n_t - r_t, m) / math.comb(n_t, m)
    return hits, anyhit


def recall_at_k(
    scores: Any, relevant: Any, k: int, *, normalize: str = "min", exclude: Any | None = None
) -> torch.Tensor:
    """Recall@k per row, ``[U]`` float64: relevant items in the top ``k`` over ``min(k, |relevant|)``.

    ``normalize="min"`` (default) is Mult-VAE's definition (its ``Recall_at_k_batch``); ``"plain"``
    divides by ``|relevant|``. Written here: scikit-learn has no Recall@k with this normaliser.
    Ties are averaged (the expected recall over random orders of tied scores).
    """
    check_choice(normalize, ("min", "plain"), "normalize")
    k = _check_k(k)
    s, r = _prepare(scores, relevant, exclude)
    hits, _ = _expected_hits(s, r, k)
    n_rel = r.sum(axis=1)
    denom = np.minimum(k, n_rel) if normalize == "min" else n_rel
    return torch.from_numpy(hits / denom)


def hit_rate_at_k(scores: Any, relevant: Any, k: int, *, exclude: Any | None = None) -> torch.Tensor:
    """Hit rate@k per row, ``[U]`` float64: 1 if a relevant item is in the top ``k``, else 0.

    With ties at the k-th place it is the probability of a hit over random orders of the tied scores.
    Written here (scikit-learn's ``top_k_accuracy_score`` is for one true class per row and breaks
    ties by order, not by averaging).
    """
    k = _check_k(k)
    s, r = _prepare(scores, relevant, exclude)
    _, anyhit = _expected_hits(s, r, k)
    return torch.from_numpy(anyhit)


def ndcg_at_k(scores: Any, relevant: Any, k: int, *, exclude: Any | None = None) -> torch.Tensor:
    """NDCG@k per row, ``[U]`` float64, with binary gains, discount ``1/log2(rank + 1)`` and the ideal
    DCG over ``min(k, |relevant|)`` items (Mult-VAE's ``NDCG_binary_at_k_batch``).

    Computed with :func:`sklearn.metrics.ndcg_score` row by row (``ignore_ties=False``: tied scores
    share their discounts, the expected DCG over random orders of ties). Its conventions match the
    paper's: with 0/1 relevance the gains are binary, the discount is ``1/log2(rank + 1)`` and the
    ideal DCG@k sorts the true relevances, i.e. sums the first ``min(k, |relevant|)`` discounts.
    """
    from sklearn.metrics import ndcg_score

    k = _check_k(k)
    s, r = _prepare(scores, relevant, exclude)
    if s.shape[1] == 1:  # one item, and it is relevant: rank 1 (sklearn refuses a single document)
        return torch.ones(len(s), dtype=torch.float64)
    y = r.astype(np.float64)
    out = [float(ndcg_score(y[u : u + 1], s[u : u + 1], k=k, ignore_ties=False)) for u in range(len(s))]
    return torch.tensor(out, dtype=torch.float64)


def mrr(scores: Any, relevant: Any, *, k: int | None = None, exclude: Any | None = None) -> torch.Tensor:
    """Reciprocal rank of the first relevant item per row, ``[U]`` float64 (ranks from 1); its mean over
    rows is the mean reciprocal rank. With ``k``, a first relevant item below rank ``k`` counts 0 (MRR@k).

    Ties are averaged: if the best-scored relevant item shares its score with ``n`` items of which
    ``m`` are relevant, behind ``a`` strictly better items, this is ``E[1/(a + J)]`` with ``J`` the
    position of the first relevant item in a random order of the tied group
    (``P(J = j) = C(n - j, m - 1) / C(n, m)``). Written here: scikit-learn has no MRR.
    """
    if k is not None:
        k = _check_k(k)
    s, r = _prepare(scores, relevant, exclude)
    out = np.zeros(len(s))
    for u in range(len(s)):
        best = s[u][r[u]].max()
        a = int((s[u] > best).sum())
        tied = s[u] == best
        n, m = int(tied.sum()), int((tied & r[u]).sum())
        total = 0.0
        for j in range(1, n - m + 2):
            rank = a + j
            if k is not None and rank > k:
                break
            total += math.comb(n - j, m - 1) / math.comb(n, m) / rank
        out[u] = total
    return torch.from_numpy(out)


# --------------------------------------------------------------------------------------------
# Batched forms over a whole score matrix (one ``torch.topk``), for evaluation inside training loops
# --------------------------------------------------------------------------------------------


def _topk_hits(scores: Any, relevant: Any, k: int, exclude: Any | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[U, min(k, I)]`` bool: whether the item at each of the top positions is relevant, and ``[U]``
    the number of relevant items; excluded items are ranked last. Ties are broken by ``torch.topk``."""
    k = _check_k(k)
    s, r = _prepare(scores, relevant, exclude)  # the same checks (and exclusion) as the exact metrics
    st, rt = torch.from_numpy(s), torch.from_numpy(r)
    top = torch.topk(st, min(k, st.shape[1]), dim=1).indices
    return torch.gather(rt, 1, top), rt.sum(dim=1)


def recall_at_k_batch(scores: Any, relevant: Any, k: int, *, exclude: Any | None = None) -> torch.Tensor:
    """Recall@k per row, ``[U]`` float64, with the ``min(k, |relevant|)`` normaliser, in one ``topk``
    (Mult-VAE's ``Recall_at_k_batch``). Equal to :func:`recall_at_k` whenever scores have no ties at
    the k-th place (continuous model scores); with ties it counts one arbitrary order instead of the
    average over orders, so use :func:`recall_at_k` for tied scores such as popularity counts."""
    hits, n_rel = _topk_hits(scores, relevant, k, exclude)
    return hits.sum(dim=1).double() / torch.clamp(n_rel, max=k).double()


def ndcg_at_k_batch(scores: Any, relevant: Any, k: int, *, exclude: Any | None = None) -> torch.Tensor:
    """NDCG@k per row, ``[U]`` float64 (binary gains, ``1/log2(rank + 1)``, ideal DCG over
    ``min(k, |relevant|)`` items), in one ``topk`` (Mult-VAE's ``NDCG_binary_at_k_batch``). Equal to
    :func:`ndcg_at_k` when scores have no ties inside the top k; with ties it scores one arbitrary order
    (use :func:`ndcg_at_k` for tied scores)."""
    hits, n_rel = _topk_hits(scores, relevant, k, exclude)
    disc = 1.0 / torch.log2(torch.arange(2, hits.shape[1] + 2, dtype=torch.float64))
    dcg = (hits.double() * disc).sum(dim=1)
    ideal = torch.cumsum(disc, 0)[torch.clamp(n_rel, max=hits.shape[1]) - 1]
    return dcg / ideal

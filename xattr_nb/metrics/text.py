"""Faithfulness of token attributions: ERASER erasure metrics, token curves, AOPC, soft variants.

ERASER (DeYoung et al., 2020): *comprehensiveness* is the score drop when the top-k% tokens are
erased, *sufficiency* the drop when only they are kept, each averaged over the bins
(1, 5, 10, 20, 50)%. Token insertion/deletion curves and AOPC (Samek et al., 2017) erase the top
tokens one by one. The soft variants of Zhao & Aletras (2023) erase embedding dimensions at
random instead, with probabilities given by the (min-max normalised) importance. Padding and
special tokens (an Attribution's ``mask`` and ``special``) are never erased; each example is read
at its own last real token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_target, check_tensor
from xattr_nb.kernels import masked_token_scores, real_positions, target_scores
from xattr_nb.metrics.curves import Curves
from xattr_nb.models.io import logits_of

ERASER_BINS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20, 0.50)

__all__ = [
    "ERASER_BINS",
    "aopc",
    "comprehensiveness",
    "soft_comprehensiveness",
    "soft_sufficiency",
    "sufficiency",
    "token_curves",
    "token_deletion_curve",
]


def _token_batch(
    input_ids: Any, attr: Any, target: Any, attention_mask: Any
) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor | None, torch.Tensor]:
    """Validate text inputs; return ids [B, T], scores [B, T], targets, attention mask, candidates [B, T].

    The candidates (tokens that may be erased) are the real tokens that are not special: an
    Attribution's ``mask`` is also the attention mask when none is given, and its ``special``
    tokens ([CLS], [SEP], <bos>) are kept, as in ERASER.
    """
    input_ids = check_tensor(input_ids, "input_ids", ndim=(1, 2), dtype="int", layout="[B, T]")
    if input_ids.ndim == 1:
        input_ids = input_ids.unsqueeze(0)
    b, t = input_ids.shape
    cand = None
    if isinstance(attr, Attribution):
        if attr.kind != "tokens":
            raise InputError(f"`attr` must score tokens; this Attribution scores {attr.kind}")
        scores = attr.scores
        cand = attr.mask
        if attention_mask is None and attr.mask is not None:
            attention_mask = attr.mask.long()
        if attr.special is not None:
            cand = ~attr.special if cand is None else cand & ~attr.special
        if target is None:
            target = attr.target
    else:
        scores = check_tensor(attr, "attr", ndim=(1, 2), dtype="float", layout="[B, T]")
        if scores.ndim == 1:
            scores = scores.unsqueeze(0)
    if tuple(scores.shape) != (b, t):
        raise InputError(f"`attr` scores have shape {tuple(scores.shape)} but `input_ids` is {(b, t)}")
    if attention_mask is not None:
        attention_mask = check_tensor(attention_mask, "attention_mask", ndim=(1, 2), layout="[B, T]")
        if attention_mask.ndim == 1:
            attention_mask = attention_mask.unsqueeze(0)
        if tuple(attention_mask.shape) != (b, t):
            raise InputError(f"`attention_mask` has shape {tuple(attention_mask.shape)} but `input_ids` is {(b, t)}")
        real = attention_mask.bool()
        cand = real if cand is None else cand & real
    if cand is None:
        cand = torch.ones(b, t, dtype=torch.bool, device=input_ids.device)
    cand = cand.to(input_ids.device)
    if not bool(cand.any(1).all()):
        b0 = int((~cand.any(1)).nonzero()[0])
        raise InputError(f"example {b0} has no real, non-special token to erase (its mask is all False)")
    if target is None:
        raise InputError("`target` is required unless `attr` is an Attribution")
    targets = check_target(target, n_classes=2**62, batch=b).tolist()
    return input_ids, scores, targets, attention_mask, cand


def _bins(bins: Sequence[float]) -> tuple[float, ...]:
    if not isinstance(bins, (list, tuple)) or len(bins) == 0:
        raise InputError("`bins` must be a non-empty sequence of fractions in (0, 1]")
    return tuple(check_float(q, f"bins[{i}]", low=1e-9, high=1.0) for i, q in enumerate(bins))


def _top_mask(scores: torch.Tensor, cand: torch.Tensor, k: int) -> torch.Tensor:
    """Bool ``[T]``: the ``k`` candidate positions with the highest scores (ties: earlier position)."""
    s = scores.masked_fill(~cand, float("-inf"))
    idx = torch.argsort(-s, stable=True)[:k]
    out = torch.zeros_like(cand)
    out[idx] = True
    return out


def _n_top(q: float, n: int) -> int:
    # ceil so that every bin erases at least one token; the epsilon absorbs 0.1 * 30 = 3.0000000000000004.
    return max(1, min(n, math.ceil(q * n - 1e-9)))


def _erasure(
    model: Callable[..., object],
    input_ids: Any,
    attr: Any,
    target: Any,
    *,
    replace_id: int | torch.Tensor,
    attention_mask: Any,
    bins: Sequence[float],
    position: int,
    output: str,
    batch_size: int | None,
    which: str,
) -> torch.Tensor:
    ids, scores, targets, am, cand = _token_batch(input_ids, attr, target, attention_mask)
    qs = _bins(bins)
    out = torch.empty(ids.shape[0], len(qs), dtype=torch.float64)
    for i in range(ids.shape[0]):
        n = int(cand[i].sum())
        tops = [_top_mask(scores[i], cand[i], _n_top(q, n)) for q in qs]
        # comprehensiveness erases the top tokens; sufficiency keeps only them (and the non-candidates)
        keeps = [~m for m in tops] if which == "comprehensiveness" else [m | ~cand[i] for m in tops]
        keep = torch.stack([torch.ones_like(cand[i]), *keeps])
        s = masked_token_scores(
            model,
            ids[i],
            keep,
            targets[i],
            replace_id=replace_id,
            attention_mask=None if am is None else am[i],
            position=position,
            output=output,
            batch_size=batch_size,
        ).double()
        out[i] = s[0] - s[1:]
    if not bool(torch.isfinite(out).all()):
        raise InputError("the model returned NaN or infinite scores on the erased inputs")
    return out


def comprehensiveness(
    model: Callable[..., object],
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    replace_id: int | torch.Tensor,
    attention_mask: Any = None,
    bins: Sequence[float] = ERASER_BINS,
    position: int = -1,
    output: str = "prob",
    batch_size: int | None = None,
    per_bin: bool = False,
) -> torch.Tensor:
    """ERASER comprehensiveness: how much the score drops when the top-k% tokens are erased. ``[B]``.

    For each bin ``q`` the ``ceil(q * n)`` (at least one) highest-scored of the ``n`` real tokens
    are replaced by ``replace_id``, and ``f(x) - f(x without them)`` is averaged over the bins
    (``per_bin=True`` returns ``[B, len(bins)]``). Higher is better: the tokens the attribution
    ranks first are the ones the model needs. The model is called as ``model(input_ids=...,
    attention_mask=...)``; see :func:`~xattr_nb.kernels.masked_token_scores` for ``position`` and
    ``output``. Padding (``attention_mask == 0`` or the Attribution's ``mask``) is never erased.
    Cost per example: ``1 + len(bins)`` forward passes.
    """
    out = _erasure(
        model,
        input_ids,
        attr,
        target,
        replace_id=replace_id,
        attention_mask=attention_mask,
        bins=bins,
        position=position,
        output=output,
        batch_size=batch_size,
        which="comprehensiveness",
    )
    return out if per_bin else out.mean(1)


def sufficiency(
    model: Callable[..., object],
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    replace_id: int | torch.Tensor,
    attention_mask: Any = None,
    bins: Sequence[float] = ERASER_BINS,
    position: int = -1,
    output: str = "prob",
    batch_size: int | None = None,
    per_bin: bool = False,
) -> torch.Tensor:
    """ERASER sufficiency: how much the score drops when *only* the top-k% tokens are kept. ``[B]``.

    Same bins and erasure as :func:`comprehensiveness`, but every other real token is replaced:
    ``f(x) - f(top tokens only)``, averaged over the bins. Lower is better (the top tokens alone
    suffice); it can be negative when the kept tokens alone raise the score.
    """
    out = _erasure(
        model,
        input_ids,
        attr,
        target,
        replace_id=replace_id,
        attention_mask=attention_mask,
        bins=bins,
        position=position,
        output=output,
        batch_size=batch_size,
        which="sufficiency",
    )
    return out if per_bin else out.mean(1)


def token_curves(
    model: Callable[..., object],
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    replace_id: int | torch.Tensor,
    attention_mask: Any = None,
    position: int = -1,
    output: str = "prob",
    batch_size: int | None = None,
) -> Curves:
    """Token insertion and deletion curves of one sequence (protocol ``"tokens"``).

    Step ``k = 0..n`` keeps only (insertion) or erases (deletion) the ``k`` highest-scored real
    tokens; ``area`` is ``k / n``. Cost: ``2n`` forward passes (the two ends are shared).
    """
    ids, scores, targets, am, cand = _token_batch(input_ids, attr, target, attention_mask)
    if ids.shape[0] != 1:
        raise InputError(f"`input_ids` holds {ids.shape[0]} sequences; token_curves takes one (loop over the batch)")
    cand = cand[0]
    n = int(cand.sum())
    order = torch.argsort(-scores[0].masked_fill(~cand, float("-inf")), stable=True)[:n]
    reveal = torch.zeros(n + 1, cand.shape[0], dtype=torch.bool, device=ids.device)
    for k in range(1, n + 1):
        reveal[k, order[:k]] = True
    ins_keep = reveal | ~cand  # non-candidate positions (padding, specials) are never touched
    del_keep = ~reveal
    keep = torch.cat([ins_keep, del_keep[1:-1]])
    s = masked_token_scores(
        model,
        ids[0],
        keep,
        targets[0],
        replace_id=replace_id,
        attention_mask=None if am is None else am[0],
        position=position,
        output=output,
        batch_size=batch_size,
    ).double()
    if not bool(torch.isfinite(s).all()):
        raise InputError("the model returned NaN or infinite scores on the erased inputs")
    insertion = s[: n + 1]
    deletion = torch.cat([s[n : n + 1], s[n + 1 :], s[:1]])
    area = torch.arange(n + 1, dtype=torch.float64) / n
    return Curves(area, insertion, deletion, "tokens", targets[0], order.cpu(), keep.shape[0])


def token_deletion_curve(
    model: Callable[..., object],
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    replace_id: int | torch.Tensor,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fraction erased [n+1], score [n+1])`` as the top tokens are erased one by one (see :func:`token_curves`)."""
    c = token_curves(model, input_ids, attr, target, replace_id=replace_id, **kwargs)
    return c.area, c.deletion


def aopc(
    model: Callable[..., object],
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    replace_id: int | torch.Tensor,
    k_max: int | None = None,
    attention_mask: Any = None,
    position: int = -1,
    output: str = "prob",
    batch_size: int | None = None,
) -> torch.Tensor:
    """Area over the perturbation curve (Samek et al., 2017) for deletion of the top tokens: ``[B]``.

    ``AOPC = 1/(K+1) * sum_{k=0..K} (f(x) - f(x with the top k tokens erased))``, ``K = k_max``
    (default: every real token). Higher is better.
    """
    ids, scores, targets, am, cand = _token_batch(input_ids, attr, target, attention_mask)
    out = torch.empty(ids.shape[0], dtype=torch.float64)
    for i in range(ids.shape[0]):
        n = int(cand[i].sum())
        k = n if k_max is None else min(n, check_int(k_max, "k_max", low=1))
        order = torch.argsort(-scores[i].masked_fill(~cand[i], float("-inf")), stable=True)[:k]
        keep = torch.ones(k + 1, cand.shape[1], dtype=torch.bool, device=ids.device)
        for j in range(1, k + 1):
            keep[j, order[:j]] = False
        s = masked_token_scores(
            model,
            ids[i],
            keep,
            targets[i],
            replace_id=replace_id,
            attention_mask=None if am is None else am[i],
            position=position,
            output=output,
            batch_size=batch_size,
        ).double()
        out[i] = (s[0] - s).mean()
    if not bool(torch.isfinite(out).all()):
        raise InputError("the model returned NaN or infinite scores on the erased inputs")
    return out


def _distance(p_full: torch.Tensor, p: torch.Tensor, target: int, how: str) -> torch.Tensor:
    if how == "prob":
        return (p_full[target] - p[:, target]).clamp_min(0)
    # The ReAGent repository's variant: sum of squared root differences divided by sqrt(2) (no outer root).
    return ((p_full.sqrt() - p.sqrt()) ** 2).sum(-1) / math.sqrt(2)


def _soft(
    model: nn.Module,
    input_ids: Any,
    attr: Any,
    target: Any,
    *,
    attention_mask: Any,
    embeddings: nn.Module | None,
    draws: int,
    seed: int,
    normalized: bool,
    distance: str,
    position: int,
    which: str,
) -> torch.Tensor:
    check_choice(distance, ("prob", "hellinger"), "distance")
    draws = check_int(draws, "draws", low=1)
    seed = check_int(seed, "seed", low=0)
    ids, scores, targets, am, cand = _token_batch(input_ids, attr, target, attention_mask)
    if embeddings is None:
        get = getattr(model, "get_input_embeddings", None)
        embeddings = get() if callable(get) else None
        if not isinstance(embeddings, nn.Module):
            raise InputError("`embeddings` is required: the model has no get_input_embeddings()")
    position = check_int(position, "position")
    real = torch.ones_like(cand) if am is None else am.bool()
    pos = real_positions(real, position)
    out = torch.empty(ids.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for i in range(ids.shape[0]):
            c, r = cand[i], real[i]
            s = scores[i].double()
            lo, hi = s[c].min(), s[c].max()
            q = ((s - lo) / (hi - lo)).clamp(0, 1) if hi > lo else torch.ones_like(s)
            if which == "comprehensiveness":
                q = 1 - q
            q = torch.where(c, q, torch.ones_like(q))  # non-candidates are always kept
            e = embeddings(ids[i : i + 1])  # [1, T, D]
            am_i = None if am is None else am[i]

            def probs(
                emb: torch.Tensor, am_i: torch.Tensor | None = am_i, t_i: int = targets[i], p_i: int = int(pos[i])
            ) -> torch.Tensor:
                am_b = None if am_i is None else am_i.unsqueeze(0).expand(emb.shape[0], -1)
                logits = logits_of(model(inputs_embeds=emb, attention_mask=am_b))
                target_scores(logits, t_i, p_i, "logit")  # checks the shape, position and target
                if logits.ndim == 3:
                    logits = logits[:, p_i]
                return logits.double().softmax(-1)

            p_full = probs(e)[0]
            # Each example draws from its own stream seeded by `seed`, over its real positions only,
            # so its score does not depend on the batch it sits in nor on the padding around it.
            u = torch.zeros((draws, *e.shape[1:]), dtype=torch.float32)
            u[:, r.cpu()] = torch.rand((draws, int(r.sum()), e.shape[2]), generator=torch.Generator().manual_seed(seed))
            keep = u.to(e.device) < q.to(e.device)[None, :, None]
            d = _distance(p_full, probs(e * keep.to(e.dtype)), targets[i], distance).mean()
            zero = e * (~c).to(e.dtype)[None, :, None]
            s0 = 1 - _distance(p_full, probs(zero), targets[i], distance)[0]
            if which == "sufficiency":
                val = 1 - d
                out[i] = (val - s0).clamp_min(0) / (1 - s0).clamp_min(1e-12) if normalized else val
            else:
                out[i] = d / (1 - s0).clamp_min(1e-12) if normalized else d
    if not bool(torch.isfinite(out).all()):
        raise InputError("the model returned NaN or infinite scores on the soft-erased inputs")
    return out


def soft_sufficiency(
    model: nn.Module,
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    attention_mask: Any = None,
    embeddings: nn.Module | None = None,
    draws: int = 20,
    seed: int = 0,
    normalized: bool = True,
    distance: str = "prob",
    position: int = -1,
) -> torch.Tensor:
    """Soft (normalised) sufficiency of Zhao & Aletras (2023): ``[B]``, higher is better.

    Importance is min-max normalised per example to ``q`` in [0, 1]; each embedding dimension of
    token ``t`` is kept with probability ``q_t`` (dropped ones set to 0), ``draws`` times with a
    seeded generator. ``S = 1 - d(p(x), p(x_soft))`` averaged over draws, where ``d`` is
    ``max(0, p_y(x) - p_y(x_soft))`` (``distance="prob"``, the paper) or the ReAGent repository's
    ``sum (sqrt p - sqrt q)^2 / sqrt 2`` over the whole distribution (``"hellinger"``).
    ``normalized=True`` returns Soft-NS ``= max(0, S - S0) / (1 - S0)``, ``S0`` being the
    sufficiency of the input with every real token's embedding zeroed.

    The model must accept ``model(inputs_embeds=[B, T, D], attention_mask=...)`` (HF models do)
    and ``embeddings`` maps ids to ``[B, T, D]`` (default ``model.get_input_embeddings()``).
    """
    return _soft(
        model,
        input_ids,
        attr,
        target,
        attention_mask=attention_mask,
        embeddings=embeddings,
        draws=draws,
        seed=seed,
        normalized=normalized,
        distance=distance,
        position=position,
        which="sufficiency",
    )


def soft_comprehensiveness(
    model: nn.Module,
    input_ids: Any,
    attr: Attribution | torch.Tensor,
    target: Any = None,
    *,
    attention_mask: Any = None,
    embeddings: nn.Module | None = None,
    draws: int = 20,
    seed: int = 0,
    normalized: bool = True,
    distance: str = "prob",
    position: int = -1,
) -> torch.Tensor:
    """Soft (normalised) comprehensiveness of Zhao & Aletras (2023): ``[B]``, higher is better.

    As :func:`soft_sufficiency` but each dimension of token ``t`` is kept with probability
    ``1 - q_t`` (important tokens are erased): ``C = d(p(x), p(x_soft))`` averaged over draws;
    ``normalized=True`` returns Soft-NC ``= C / (1 - S0)``.
    """
    return _soft(
        model,
        input_ids,
        attr,
        target,
        attention_mask=attention_mask,
        embeddings=embeddings,
        draws=draws,
        seed=seed,
        normalized=normalized,
        distance=distance,
        position=position,
        which="comprehensiveness",
    )

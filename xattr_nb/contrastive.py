"""Contrastive losses for text (and any) embedders: InfoNCE with in-batch and hard negatives, its
focal reweighting, online hard-negative mixing, Matryoshka truncation and parameter soups.

Same layer as :mod:`xattr_nb.training` (imports only ``checks``). Written here because none of
torch, sentence-transformers' losses (not a dependency) or scikit-learn offers these exact forms:

- :func:`info_nce`: ``−log p_i`` with ``p_i = exp(s_ii/τ) / Z_i`` and, with ``in_batch=True``,
  ``Z_i`` summing the positive, the other in-batch positives and *every* in-batch hard negative
  (KaLM-Embedding's Eq. 3; ``negatives`` ``[B, M, d]``); with ``in_batch=False`` only the own
  positive and the own hard negatives. ``own_negatives`` ``[B, S, d]`` are extra negatives seen by
  their own row only (the mixed negatives of :func:`mix_hard_negatives`). ``symmetric=True`` adds
  the passage→query direction over the in-batch queries and averages the two.
  Cosine similarity: inputs are L2-normalised inside.
- :func:`focal_info_nce`: ``mean_i −(1 − p_i)^γ log p_i`` (focal loss of Lin et al. 2017 on the
  positive's InfoNCE probability); ``γ = 0`` is :func:`info_nce`. ``detach_weight`` and the
  normaliser (``"n"``: the batch size, ``"weights"``: ``Σ w_i``) are flags (the paper leaves them open).
- :func:`mix_hard_negatives`: MoCHi-style synthetic negatives per query (Kalantidis et al. 2020):
  from each row's ``top_k`` most similar negatives, ``n_mix`` normalised convex pairs
  ``normalise(λ n_a + (1 − λ) n_b)`` with ``λ ~ U(0, 1)`` and ``n_qmix`` query mixes
  ``normalise(β q + (1 − β) n_a)`` with ``β ~ U(0, beta_max)``; unit-norm, detached by default.
- :func:`matryoshka`: a loss summed over truncated, re-normalised prefixes of the embedding.
- :func:`average_state_dicts`: a (weighted) parameter average of models sharing one architecture
  ("model soup").

No persistent in-batch negatives here: the KaLM-Embedding spec does not name them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor

__all__ = [
    "average_state_dicts",
    "contrastive_logits",
    "focal_info_nce",
    "focal_weights",
    "info_nce",
    "matryoshka",
    "mix_hard_negatives",
]


def _check_inputs(
    q: Any, p: Any, negatives: Any, own_negatives: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    q = check_tensor(q, "q", ndim=2, dtype="float", layout="[B, d]")
    p = check_tensor(p, "p", shape=tuple(q.shape), dtype="float", layout="[B, d] like `q`")
    b, d = q.shape
    if negatives is not None:
        negatives = check_tensor(negatives, "negatives", ndim=3, dtype="float", layout="[B, M, d]")
        if negatives.shape[0] != b or negatives.shape[2] != d:
            raise InputError(f"`negatives` must have shape ({b}, M, {d}) [B, M, d]; got {tuple(negatives.shape)}")
    if own_negatives is not None:
        own_negatives = check_tensor(own_negatives, "own_negatives", ndim=3, dtype="float", layout="[B, S, d]")
        if own_negatives.shape[0] != b or own_negatives.shape[2] != d:
            raise InputError(
                f"`own_negatives` must have shape ({b}, S, {d}) [B, S, d]; got {tuple(own_negatives.shape)}"
            )
    return q, p, negatives, own_negatives


def contrastive_logits(
    q: torch.Tensor,
    p: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    tau: float = 0.05,
    in_batch: bool = True,
    own_negatives: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The InfoNCE logits ``[B, C]`` (cosine / τ; entries outside ``Z_i`` are ``−inf``) and the target column
    of each row's positive ``[B]``.

    Columns: the ``B`` in-batch positives, then the ``B·M`` in-batch hard negatives (row ``j``'s
    block at ``B + j·M``), then the row's own ``S`` extra negatives. ``in_batch=False`` masks every
    column that belongs to another row. ``valid`` ``[B, B + B·M]`` bool masks further in-batch columns
    (e.g. another row's negative that is this row's own positive document: batch deduplication); the
    positive itself is always kept.
    """
    q, p, negatives, own_negatives = _check_inputs(q, p, negatives, own_negatives)
    tau = check_float(tau, "tau", low=1e-6)
    b = q.shape[0]
    q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    cols = [p]
    owner = [torch.arange(b, device=q.device)]
    if negatives is not None:
        m = negatives.shape[1]
        cols.append(F.normalize(negatives, dim=-1).reshape(b * m, -1))
        owner.append(torch.arange(b, device=q.device).repeat_interleave(m))
    logits = q @ torch.cat(cols).T / tau
    if not in_batch:
        keep = torch.cat(owner)[None, :] == torch.arange(b, device=q.device)[:, None]
        logits = logits.masked_fill(~keep, float("-inf"))
    if valid is not None:
        valid = check_tensor(valid, "valid", shape=tuple(logits.shape), dtype="bool", layout="[B, B + B·M]")
        valid = valid | torch.eye(b, logits.shape[1], dtype=torch.bool, device=q.device)
        logits = logits.masked_fill(~valid, float("-inf"))
    if own_negatives is not None:
        own = torch.einsum("bd,bsd->bs", q, F.normalize(own_negatives, dim=-1)) / tau
        logits = torch.cat([logits, own], dim=1)
    return logits, torch.arange(b, device=q.device)


def info_nce(
    q: torch.Tensor,
    p: torch.Tensor,
    negatives: torch.Tensor | None = None,
    tau: float = 0.05,
    in_batch: bool = True,
    symmetric: bool = False,
    reduction: str = "mean",
    *,
    own_negatives: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE ``−log p_i`` of each query's positive (see the module docstring), averaged (``reduction="mean"``)
    or per row (``"none"``, ``[B]``). With ``symmetric=True`` the passage→query loss (each passage against
    the in-batch queries) is added and the two are averaged. Identical embeddings give ``log B``."""
    check_choice(reduction, ("mean", "none"), "reduction")
    if not isinstance(symmetric, bool):
        raise InputError(f"`symmetric` must be a bool; got {type(symmetric).__name__}")
    logits, target = contrastive_logits(
        q, p, negatives, tau=tau, in_batch=in_batch, own_negatives=own_negatives, valid=valid
    )
    loss = F.cross_entropy(logits, target, reduction="none")
    if symmetric:
        back, t2 = contrastive_logits(p, q, None, tau=tau, in_batch=True)
        loss = 0.5 * (loss + F.cross_entropy(back, t2, reduction="none"))
    return loss.mean() if reduction == "mean" else loss


def focal_weights(log_p: torch.Tensor, gamma: float) -> torch.Tensor:
    """``(1 − p)^γ`` from ``log p`` (in [0, 1], decreasing in ``p``; all ones at ``γ = 0``)."""
    gamma = check_float(gamma, "gamma", low=0.0)
    log_p = check_tensor(log_p, "log_p", dtype="float")
    if gamma == 0.0:
        return torch.ones_like(log_p)
    return (-torch.expm1(log_p)).clamp_min(0.0) ** gamma


def focal_info_nce(
    q: torch.Tensor,
    p: torch.Tensor,
    negatives: torch.Tensor | None = None,
    tau: float = 0.05,
    gamma: float = 1.0,
    detach_weight: bool = False,
    normalize: str = "n",
    *,
    in_batch: bool = True,
    own_negatives: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal InfoNCE ``Σ_i −(1 − p_i)^γ log p_i / N`` (``normalize="n"``) or ``/ Σ_i w_i`` (``"weights"``).

    ``γ = 0`` equals :func:`info_nce` exactly. ``detach_weight=True`` stops the gradient through the
    weights (standard focal loss does not detach: the default)."""
    check_choice(normalize, ("n", "weights"), "normalize")
    if not isinstance(detach_weight, bool):
        raise InputError(f"`detach_weight` must be a bool; got {type(detach_weight).__name__}")
    gamma = check_float(gamma, "gamma", low=0.0)
    logits, target = contrastive_logits(
        q, p, negatives, tau=tau, in_batch=in_batch, own_negatives=own_negatives, valid=valid
    )
    log_p = -F.cross_entropy(logits, target, reduction="none")
    w = focal_weights(log_p, gamma)
    if detach_weight:
        w = w.detach()
    total = -(w * log_p).sum()
    return total / (w.sum().clamp_min(1e-12) if normalize == "weights" else len(log_p))


def mix_hard_negatives(
    q: torch.Tensor,
    negs: torch.Tensor,
    top_k: int = 8,
    n_mix: int = 4,
    n_qmix: int = 2,
    beta_max: float = 0.5,
    detach: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Synthetic hard negatives per query, ``[B, n_mix + n_qmix, d]``, unit-norm.

    ``negs`` ``[B, N, d]`` are each row's candidate negatives (e.g. its hard negatives and the other
    rows' positives). The ``top_k`` most similar to ``q_i`` are kept; the first ``n_mix`` outputs are
    ``normalise(λ n_a + (1 − λ) n_b)`` (a, b drawn from the top k, ``λ ~ U(0, 1)``), the last ``n_qmix``
    are ``normalise(β q_i + (1 − β) n_a)`` with ``β ~ U(0, beta_max)``, which are at least as similar
    to ``q_i`` as ``n_a``. The coefficients carry no gradient; with ``detach=True`` neither do the
    parents (MoCHi's choice).
    """
    q = check_tensor(q, "q", ndim=2, dtype="float", layout="[B, d]")
    negs = check_tensor(negs, "negs", ndim=3, dtype="float", layout="[B, N, d]")
    if negs.shape[0] != q.shape[0] or negs.shape[2] != q.shape[1]:
        raise InputError(f"`negs` must have shape ({q.shape[0]}, N, {q.shape[1]}) [B, N, d]; got {tuple(negs.shape)}")
    top_k = check_int(top_k, "top_k", low=1)
    n_mix = check_int(n_mix, "n_mix", low=0)
    n_qmix = check_int(n_qmix, "n_qmix", low=0)
    beta_max = check_float(beta_max, "beta_max", low=0.0, high=1.0)
    if n_mix + n_qmix == 0:
        raise InputError("`n_mix` + `n_qmix` must be at least 1")
    if not isinstance(detach, bool):
        raise InputError(f"`detach` must be a bool; got {type(detach).__name__}")
    qn, nn_ = F.normalize(q, dim=-1), F.normalize(negs, dim=-1)
    if detach:
        qn, nn_ = qn.detach(), nn_.detach()
    b, n, d = nn_.shape
    k = min(top_k, n)
    sims = torch.einsum("bd,bnd->bn", qn.detach(), nn_.detach())
    top = sims.topk(k, dim=1).indices  # [B, k]
    hard = torch.gather(nn_, 1, top[..., None].expand(b, k, d))  # [B, k, d]
    dev = q.device
    out = []
    if n_mix:
        ia = torch.randint(0, k, (b, n_mix), generator=generator).to(dev)
        ib = torch.randint(0, k, (b, n_mix), generator=generator).to(dev)
        lam = torch.rand(b, n_mix, 1, generator=generator).to(dev, q.dtype)
        na = torch.gather(hard, 1, ia[..., None].expand(b, n_mix, d))
        nb = torch.gather(hard, 1, ib[..., None].expand(b, n_mix, d))
        out.append(F.normalize(lam * na + (1 - lam) * nb, dim=-1))
    if n_qmix:
        ia = torch.randint(0, k, (b, n_qmix), generator=generator).to(dev)
        beta = (torch.rand(b, n_qmix, 1, generator=generator) * beta_max).to(dev, q.dtype)
        na = torch.gather(hard, 1, ia[..., None].expand(b, n_qmix, d))
        out.append(F.normalize(beta * qn[:, None, :] + (1 - beta) * na, dim=-1))
    return torch.cat(out, dim=1)


def matryoshka(
    loss_fn: Callable[..., torch.Tensor],
    q: torch.Tensor,
    p: torch.Tensor,
    dims: Sequence[int] = (896, 512, 256, 128, 64),
    weights: Sequence[float] = (1.0, 0.3, 0.2, 0.1, 0.1),
    **kw: Any,
) -> torch.Tensor:
    """``Σ_m w_m · loss_fn(q[:, :d_m], p[:, :d_m], ...)`` over truncated prefixes (KaLM V1's
    ``CustomMatryoshkaLoss``). Tensor keyword arguments ``negatives`` / ``own_negatives`` are truncated
    the same way; the losses normalise each prefix themselves."""
    q = check_tensor(q, "q", ndim=2, dtype="float", layout="[B, d]")
    if not callable(loss_fn):
        raise InputError("`loss_fn` must be callable (e.g. info_nce)")
    dims, weights = list(dims), list(weights)
    if not dims or len(dims) != len(weights):
        raise InputError(
            f"`dims` and `weights` must be non-empty and of equal length; got {len(dims)} and {len(weights)}"
        )
    for i, dm in enumerate(dims):
        check_int(dm, f"dims[{i}]", low=1, high=q.shape[1])
    total = q.new_zeros(())
    for dm, w in zip(dims, weights, strict=True):
        cut = {
            k: (v[..., :dm] if isinstance(v, torch.Tensor) and k in ("negatives", "own_negatives") else v)
            for k, v in kw.items()
        }
        total = total + float(w) * loss_fn(q[:, :dm], p[:, :dm], **cut)
    return total


def average_state_dicts(
    state_dicts: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """The parameter average ``Σ_m w_m θ_m`` (uniform by default; weights are normalised to sum 1) of state
    dicts with the same keys and shapes. Integer buffers are taken from the first."""
    if isinstance(state_dicts, Mapping) or not isinstance(state_dicts, Sequence) or not state_dicts:
        raise InputError("`state_dicts` must be a non-empty list of state dicts")
    n = len(state_dicts)
    w = [1.0 / n] * n if weights is None else [float(x) for x in weights]
    if len(w) != n or any(x < 0 for x in w) or sum(w) <= 0:
        raise InputError(f"`weights` must be {n} non-negative numbers with a positive sum; got {weights!r}")
    w = [x / sum(w) for x in w]
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts):
        if list(sd) != keys:
            raise InputError(f"`state_dicts[{i}]` has different keys from `state_dicts[0]`")
        for k in keys:
            if sd[k].shape != state_dicts[0][k].shape:
                raise InputError(
                    f"`state_dicts[{i}]['{k}']` has shape {tuple(sd[k].shape)}, not {tuple(state_dicts[0][k].shape)}"
                )
    out = {}
    for k in keys:
        first = state_dicts[0][k]
        if not first.is_floating_point():
            out[k] = first.clone()
        else:
            out[k] = sum(wi * sd[k].detach().float() for wi, sd in zip(w, state_dicts, strict=True)).to(first.dtype)
    return out

"""Agreement between two attributions of the same inputs: rank correlations and top-k overlap.

``scipy.stats`` computes the correlations; padding (an Attribution's ``mask``) is left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_int, check_tensor

__all__ = ["kendall", "spearman", "topk_overlap"]


def _paired(a: Any, b: Any, *, ranks: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-example flattened score vectors of two attributions of the same inputs."""

    def scores_and_mask(v: Any, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(v, Attribution):
            return v.scores, v.mask
        return check_tensor(v, name, ndim=(2, 3), dtype="float", layout="[B, ...] (a batch dimension first)"), None

    sa, ma = scores_and_mask(a, "a")
    sb, mb = scores_and_mask(b, "b")
    if sa.shape != sb.shape:
        raise InputError(f"`a` and `b` must score the same units; got shapes {tuple(sa.shape)} and {tuple(sb.shape)}")
    mask = ma if mb is None else (mb if ma is None else ma & mb)
    pairs = []
    for i in range(sa.shape[0]):
        x, y = sa[i].flatten(), sb[i].flatten()
        if mask is not None:
            x, y = x[mask[i]], y[mask[i]]
        if x.numel() < 2:
            raise InputError(f"example {i} has {x.numel()} scored unit(s); a rank correlation needs at least 2")
        for name, v in (("a", x), ("b", y)):
            if ranks and bool((v == v[0]).all()):
                raise InputError(f"`{name}` is constant on example {i}: its rank correlation is undefined")
        pairs.append((x.double().cpu().numpy(), y.double().cpu().numpy()))
    return pairs


def spearman(a: Attribution | torch.Tensor, b: Attribution | torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between two attributions, per example: ``[B]`` (``scipy.stats.spearmanr``).

    ``a`` and ``b`` are Attributions or tensors ``[B, ...]`` over the same units; token padding
    (an Attribution's ``mask``) is left out. Identical maps give 1, reversed ones -1.
    """
    from scipy.stats import spearmanr

    return torch.tensor([float(spearmanr(x, y).statistic) for x, y in _paired(a, b)], dtype=torch.float64)


def kendall(a: Attribution | torch.Tensor, b: Attribution | torch.Tensor) -> torch.Tensor:
    """Kendall's tau-b between two attributions, per example: ``[B]`` (``scipy.stats.kendalltau``)."""
    from scipy.stats import kendalltau

    return torch.tensor([float(kendalltau(x, y).statistic) for x, y in _paired(a, b)], dtype=torch.float64)


def topk_overlap(a: Attribution | torch.Tensor, b: Attribution | torch.Tensor, k: int) -> torch.Tensor:
    """Share of the ``k`` highest-scored units that two attributions agree on, per example: ``[B]`` in [0, 1].

    Ties are broken by position (stable sort), so the result is deterministic.
    """
    pairs = _paired(a, b, ranks=False)
    n = min(len(x) for x, _ in pairs)
    k = check_int(k, "k", low=1, high=n)
    out = []
    for x, y in pairs:
        tx = set(np.argsort(-x, kind="stable")[:k].tolist())
        ty = set(np.argsort(-y, kind="stable")[:k].tolist())
        out.append(len(tx & ty) / k)
    return torch.tensor(out, dtype=torch.float64)

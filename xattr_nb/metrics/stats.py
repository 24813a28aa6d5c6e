"""Uncertainty of reported figures: percentile bootstrap intervals over examples.

- :func:`bootstrap_ci`: the interval of a mean (e.g. an accuracy over items).
- :func:`bootstrap_delta`: the interval of a *difference* between two methods of a statistic of
  their per-example scores (e.g. how much better one estimator's mean map correlates with the
  ground truth than another's), resampling the examples jointly so the comparison is paired.

Both are seeded and draw every resample from their own generator; neither touches global state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from xattr_nb.checks import InputError, check_float, check_int, check_numeric

__all__ = ["STATISTICS", "bootstrap_ci", "bootstrap_delta"]


def bootstrap_ci(values: Any, *, n: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval ``(lo, hi)`` of the mean of ``values``.

    ``values`` (any shape, flattened; a list, array or tensor) is resampled with replacement ``n``
    times by ``numpy.random.default_rng(seed)``; the bounds are the ``alpha / 2`` and
    ``1 - alpha / 2`` quantiles (``numpy.quantile``, linear) of the resampled means. Constant
    values give a zero-width interval; one value gives ``(v, v)``.

    Not ``scipy.stats.bootstrap(method="percentile")``: it draws the very same resamples from the
    same generator, but its quantile (``scipy.stats.quantile``) and its level
    ``(1 - confidence_level) / 2`` round differently, which moves a bound by up to ~1e-15 in about
    a third of cases (measured on random data), and it refuses a single value. Written here, the
    numbers are those ``methods.qa_circuits`` reported. Non-finite values are refused.
    """
    v = check_numeric(values, "values", finite=False, nonempty=False).detach().cpu().double().numpy().ravel()
    if v.size == 0:
        raise InputError("`values` must not be empty")
    if not np.isfinite(v).all():
        raise InputError("`values` holds NaN or infinite entries")
    n = check_int(n, "n", low=1)
    alpha = check_float(alpha, "alpha", low=0.0, high=1.0)
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    means = v[rng.integers(v.size, size=(n, v.size))].mean(1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def _pearson(x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """Pearson r of each row of ``x`` with the same row of ``y`` (over the units): ``[R]``."""
    if y is None:
        raise InputError("statistic='pearson' correlates with a reference: pass `truth`")
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))


def _mean(x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """Mean over the units of each row of ``x``; ``truth`` is not used (pass none)."""
    if y is not None:
        raise InputError("statistic='mean' compares the methods' own means; `truth` is not used (drop it)")
    return x.mean(1)


#: The named statistics of :func:`bootstrap_delta`: ``f(mean scores [R, D], mean truth [R, D] or None) -> [R]``.
STATISTICS: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "pearson": _pearson,
    "mean": _mean,
}


def _examples(v: Any, name: str) -> torch.Tensor:
    """Per-example scores as a float64 CPU matrix ``[N, D]`` (everything after the first dimension flattened)."""
    v = check_numeric(v, name, layout="[N, ...] (one row per example)")
    if v.ndim == 0:
        raise InputError(f"`{name}` must have an example dimension first, [N, ...]; got a scalar")
    return v.detach().cpu().reshape(v.shape[0], -1).double()


def bootstrap_delta(
    a: Any,
    b: Any,
    *,
    truth: Any = None,
    statistic: str | Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] = "pearson",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """``stat(a) - stat(b)`` with a percentile bootstrap interval over examples.

    ``a`` and ``b`` are two methods' per-example scores ``[N, ...]`` on the same ``N`` examples
    (e.g. per-prompt component scores ``[N, layers, positions]``, or per-example metric values
    ``[N]``); ``truth`` the reference's, same shape, when the statistic needs one. Each method's
    scores are averaged over the examples, and the statistic reads those mean scores ``[D]``:

    - ``"pearson"`` (needs ``truth``): Pearson r between a method's mean scores and the truth's,
      over the ``D`` units (RelP's "how well does the estimate track activation patching");
    - ``"mean"``: the mean over units, so with ``[N]`` values the delta is the paired difference
      of the two means;
    - a function ``f(means [R, D], truth_means [R, D] or None) -> [R]``, batched over resamples.

    The ``N`` examples are resampled with replacement ``n_boot`` times (``torch.randint`` from a
    ``torch.Generator`` seeded with ``seed``), the same resample for ``a``, ``b`` and ``truth``
    (paired); a resample is a weighting of the examples, so every mean is one matrix product.
    Returns ``{"delta": on the sample itself, "lo", "hi": the alpha / 2 and 1 - alpha / 2
    percentiles of the resampled deltas, "n_boot": how many resamples had a finite delta}``
    (a resample where the statistic is undefined, e.g. a constant mean map under Pearson, is
    left out).

    Written by hand rather than with ``scipy.stats.bootstrap``: the numbers must be those
    ``methods.relp.bootstrap_delta`` reported (torch's generator stream, not numpy's); scipy would
    evaluate the statistic on ``n_boot`` resampled copies of the ``[N, D]`` scores instead of one
    weighting; and one undefined resample turns scipy's whole interval into NaN.
    """
    n_boot = check_int(n_boot, "n_boot", low=10)
    alpha = check_float(alpha, "alpha", low=0.0, high=1.0)
    seed = check_int(seed, "seed", low=0)
    if isinstance(statistic, str):
        if statistic not in STATISTICS:
            raise InputError(f"`statistic` must be one of {sorted(STATISTICS)} or a function; got {statistic!r}")
        stat = STATISTICS[statistic]
    elif callable(statistic):
        stat = statistic
    else:
        raise InputError(f"`statistic` must be a name or a function; got {type(statistic).__name__}")
    ex = {"a": _examples(a, "a"), "b": _examples(b, "b")}
    if truth is not None:
        ex["truth"] = _examples(truth, "truth")
    shape = ex["a"].shape
    for k, v in ex.items():
        if v.shape != shape:
            raise InputError(f"`{k}` has {tuple(v.shape)} per-example scores but `a` has {tuple(shape)} (flattened)")
    n = shape[0]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=gen)
    weights = (
        torch.zeros(n_boot + 1, n, dtype=torch.float64).scatter_add_(
            1, torch.cat([torch.arange(n)[None], idx]), torch.ones(n_boot + 1, n, dtype=torch.float64)
        )
        / n
    )  # row 0: the sample itself; rows 1..: resamples, as example weights
    means = {k: weights @ v for k, v in ex.items()}  # [n_boot + 1, D]
    t = means.get("truth")
    deltas = []
    for k in ("a", "b"):
        s = stat(means[k], t)
        if not isinstance(s, torch.Tensor) or tuple(s.shape) != (n_boot + 1,):
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise InputError(f"`statistic` must return one value per resample, a tensor [{n_boot + 1}]; got {got}")
        deltas.append(s.double())
    d = (deltas[0] - deltas[1]).numpy()
    boots = d[1:][np.isfinite(d[1:])]
    if boots.size == 0:
        raise InputError("the statistic is undefined (NaN or infinite) on every resample")
    lo, hi = np.percentile(boots, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"delta": float(d[0]), "lo": float(lo), "hi": float(hi), "n_boot": int(boots.size)}

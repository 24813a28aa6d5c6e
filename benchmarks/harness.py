"""The benchmark harness: one row per comparison, agreement checked before any timing.

A row compares our call with a peer's call on the same work (same model, inputs and steps):

1. both run once and ``agree(ours_out, peer_out)`` must hold; a disagreement is a failed row and
   is never timed (timing two different computations says nothing);
2. the check run warms both sides up (plus one more warm-up each when the pair took under 10 s:
   allocator, thread pool, lazy caches), then ``repeats`` interleaved runs
   (ours, peer, ours, peer, ...) so that load drifting on a shared machine hits both sides alike;
3. the row reports the two medians and ``ratio = ours / peer`` (below 1: we are faster).

``quick=True`` (CI) stops after step 1: agreement only, no timing, so no timed assert exists.
``bound`` rows compare our call with the hardware bound of the same work (one batched
forward+backward, or the best chunking of it): ``peer`` is then that bound, named ``"bound: ..."``.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")

__all__ = [
    "Row",
    "allclose",
    "best_chunk",
    "bound",
    "compare",
    "failed",
    "max_abs_diff",
    "not_installable",
    "spearman",
    "to_numpy",
]


@dataclasses.dataclass
class Row:
    """One line of the results table.

    ``ours_s``/``peer_s`` are median wall seconds (``None`` in quick mode or when the row failed);
    ``ratio = ours_s / peer_s`` (below 1: ours is faster); ``agree`` says whether both sides computed
    the same thing, ``agreement`` how that was measured ("max abs diff 3e-07", "spearman 0.98").
    """

    name: str
    work: str
    ours_s: float | None
    peer: str
    peer_s: float | None
    ratio: float | None
    agree: bool
    agreement: str
    note: str = ""
    group: str = ""
    repeats: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def status(self) -> str:
        """``"failed"`` (disagreement or error), ``"behind"`` (ratio > 1), ``"ok"``, or ``"untimed"``."""
        if not self.agree:
            return "failed"
        if self.ratio is None:
            return "untimed"
        return "behind" if self.ratio > 1.0 else "ok"


# ---------------------------------------------------------------- agreement helpers


def to_numpy(x: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor / array / nested sequence (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def max_abs_diff(a: Any, b: Any) -> float:
    a, b = to_numpy(a), to_numpy(b)
    if a.shape != b.shape:
        return math.inf
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def allclose(atol: float = 1e-5, rtol: float = 1e-4) -> Callable[[Any, Any], tuple[bool, str]]:
    """An ``agree`` function: same shape and ``|a - b| <= atol + rtol * |b|`` everywhere."""

    def agree(a: Any, b: Any) -> tuple[bool, str]:
        x, y = to_numpy(a), to_numpy(b)
        if x.shape != y.shape:
            return False, f"shapes differ: {x.shape} vs {y.shape}"
        ok = bool(np.all(np.abs(x - y) <= atol + rtol * np.abs(y)))
        return ok, f"max abs diff {max_abs_diff(x, y):.1e}"

    return agree


def spearman(min_rho: float = 0.9) -> Callable[[Any, Any], tuple[bool, str]]:
    """An ``agree`` function for stochastic or differently-normalised methods: Spearman rank
    correlation of the flattened scores (per row mean when the inputs are 2-D with several rows)."""
    from scipy.stats import spearmanr

    def agree(a: Any, b: Any) -> tuple[bool, str]:
        x, y = to_numpy(a), to_numpy(b)
        if x.shape != y.shape:
            return False, f"shapes differ: {x.shape} vs {y.shape}"
        if x.ndim >= 2 and x.shape[0] > 1:
            rhos = [spearmanr(u.ravel(), v.ravel()).statistic for u, v in zip(x, y, strict=True)]
            rho = float(np.nanmean(rhos))
        else:
            rho = float(spearmanr(x.ravel(), y.ravel()).statistic)
        return bool(rho >= min_rho), f"spearman {rho:.3f}"

    return agree


# ---------------------------------------------------------------- timing


def _wall(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interleaved(ours: Callable[[], Any], peer: Callable[[], Any], repeats: int, warmup: bool) -> tuple[float, float]:
    if warmup:  # one more warm-up each side (allocator, thread pool, lazy caches) after the check run
        ours()
        peer()
    a: list[float] = []
    b: list[float] = []
    for _ in range(max(1, repeats)):
        gc.collect()
        a.append(_wall(ours))
        gc.collect()
        b.append(_wall(peer))
    return statistics.median(a), statistics.median(b)


def failed(name: str, work: str, peer: str, reason: str, *, group: str = "") -> Row:
    """A row that could not be run (error, disagreement): never timed, ``agree=False``."""
    return Row(name, work, None, peer, None, None, False, reason, "", group)


def not_installable(name: str, work: str, peer: str, reason: str, *, group: str = "") -> Row:
    """A row whose peer cannot be installed here: reported, not faked (``agree`` stays True so it
    does not read as a disagreement; ``agreement`` says why nothing was compared)."""
    return Row(name, work, None, peer, None, None, True, "-", f"peer not installable: {reason}", group)


def compare(
    name: str,
    work: str,
    ours: Callable[[], T],
    peer: Callable[[], T],
    *,
    peer_name: str,
    agree: Callable[[T, T], tuple[bool, str]],
    repeats: int = 5,
    quick: bool = False,
    note: str = "",
    group: str = "",
) -> Row:
    """Run ``ours`` and ``peer`` once, check ``agree``; unless ``quick``, time them interleaved.

    An exception on either side, or a disagreement, gives a failed row (``agree=False``) that is
    not timed; the exception's last line is in ``agreement``.
    """
    t0 = time.perf_counter()
    try:
        a = ours()
    except Exception as e:  # a benchmark run must report every row, not stop at the first error
        return failed(name, work, peer_name, f"ours raised {type(e).__name__}: {_last_line(e)}", group=group)
    try:
        b = peer()
    except Exception as e:
        return failed(name, work, peer_name, f"peer raised {type(e).__name__}: {_last_line(e)}", group=group)
    first = time.perf_counter() - t0
    ok, how = agree(a, b)
    del a, b
    if not ok or quick:
        return Row(name, work, None, peer_name, None, None, ok, how, note, group, 0)
    # The check run warmed both sides up; rows of a few seconds or less get one more warm-up.
    ours_s, peer_s = _interleaved(ours, peer, repeats, warmup=first < 10.0)
    ratio = ours_s / peer_s if peer_s > 0 else None
    return Row(name, work, ours_s, peer_name, peer_s, ratio, ok, how, note, group, repeats)


def bound(
    name: str,
    work: str,
    ours: Callable[[], Any],
    floor: Callable[[], Any],
    *,
    bound_name: str = "bound: one batched forward+backward",
    agree: Callable[[Any, Any], tuple[bool, str]] | None = None,
    repeats: int = 5,
    quick: bool = False,
    note: str = "",
    group: str = "",
) -> Row:
    """Our call against the hardware bound of the same work (``floor``: e.g. one batched forward +
    backward over the same rows, or the best chunking of it). ``agree`` defaults to "not compared"
    (the bound need not produce the same output); pass one when it does."""
    if agree is None:

        def agree(_a: Any, _b: Any) -> tuple[bool, str]:
            return True, "same work (bound)"

    label = bound_name if bound_name.startswith("bound") else f"bound: {bound_name}"
    return compare(
        name, work, ours, floor, peer_name=label, agree=agree, repeats=repeats, quick=quick, note=note, group=group
    )


def best_chunk(make: Callable[[int], Callable[[], Any]], sizes: list[int], repeats: int = 3) -> int:
    """The chunk size (rows per call) of ``sizes`` whose ``make(size)()`` has the smallest median wall
    time here, after one warm-up each: the best chunking, taken as a bound's chunking."""
    times = {}
    for c in sizes:
        fn = make(c)
        fn()
        times[c] = statistics.median(_wall(fn) for _ in range(repeats))
    return min(times, key=times.__getitem__)


def _last_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return (msg[-1] if msg else "")[:200]


def guarded(module_name: str, fn: Callable[[], list[Row]]) -> list[Row]:
    """Call a module's ``rows`` and turn a crash into one failed row naming the module."""
    try:
        return list(fn())
    except Exception as e:
        tb = traceback.format_exc(limit=3)
        return [failed(f"{module_name} (crashed)", "-", "-", f"{type(e).__name__}: {_last_line(e)} | {tb[-300:]}")]

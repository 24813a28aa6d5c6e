"""Runtime helpers every notebook calls first: seeding, device choice, recording results, progress.

``record(name, value)`` is how a notebook reports a headline figure. It shows a small line in
the notebook and attaches the value under the mimetype :data:`RECORD_MIMETYPE`, which
``xattr-nb run`` reads back from the executed notebook (see :func:`read_records`).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from xattr_nb.checks import InputError, check_int

RECORD_MIMETYPE = "application/vnd.xattr-nb.record+json"
T = TypeVar("T")

_RECORDS: dict[str, Any] = {}


def seed_everything(seed: int, *, threads: int | None = None):
    """Seed Python, NumPy and torch (CPU and CUDA) and return a seeded ``torch.Generator``.

    ``threads`` caps torch's intra-op threads (``None`` leaves torch's default).
    """
    import torch

    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(check_int(threads, "threads", low=1))
    return torch.Generator().manual_seed(seed)


def pick_device(device: Any = "auto"):
    """Resolve ``"auto"`` to CUDA, then Apple MPS, then CPU; check that an explicit device exists.

    Accepts a name (``"cpu"``, ``"cuda:1"``) or a ``torch.device`` (returned after the same checks).
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise InputError(f"`device` must be a string such as 'auto', 'cpu' or 'cuda:0'; got {type(device).__name__}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(
            f"`device` {device!r} is not a torch device name ('auto', 'cpu', 'cuda', 'cuda:1', 'mps')"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"`device` is {device!r} but CUDA is not available here; use 'auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"`device` {device!r}: only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("`device` is 'mps' but the MPS backend is not available here")
    return dev


def _jsonable(value: Any, name: str) -> Any:
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            raise InputError(f"record `{name}`: value must be finite; got {v}")
        return v
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # 0-d tensor / array
        return _jsonable(value.item(), name)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{name}[{i}]") for i, v in enumerate(value)]
    raise InputError(f"record `{name}`: value must be a number, string, bool, list or dict; got {type(value).__name__}")


def record(name: str, value: Any, *, unit: str | None = None, display: bool = True) -> Any:
    """Report a headline figure of a notebook and return it unchanged.

    The value is shown as ``name = value`` and carried in a display output with the mimetype
    :data:`RECORD_MIMETYPE`, so ``xattr-nb run`` collects it from the executed notebook.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError("`name` must be a non-empty string")
    payload = {"name": name, "value": _jsonable(value, name), "unit": unit}
    _RECORDS[name] = payload["value"]
    if display:
        from IPython.display import display as ipy_display

        shown = f"{value:.4g}" if isinstance(payload["value"], float) else repr(payload["value"])
        text = f"{name} = {shown}{' ' + unit if unit else ''}"
        ipy_display({RECORD_MIMETYPE: payload, "text/plain": text}, raw=True)
    return value


def record_table(values: Mapping[str, Any], *, prefix: str, title: str | None = None, digits: int = 4) -> Any:
    """Record many figures at once, silently, and show them as one table (returned as a DataFrame).

    ``values`` is ``{row: {column: value}}`` (recorded as ``prefix.column.row``, e.g. one row per
    method and one column per metric) or ``{name: value}`` (recorded as ``prefix.name``, one column).
    """
    import pandas as pd

    if not isinstance(values, Mapping) or not values:
        raise InputError("`values` must be a non-empty dict: {row: {column: value}} or {name: value}")
    if not isinstance(prefix, str) or not prefix.strip():
        raise InputError("`prefix` must be a non-empty string, e.g. 'reagent'")
    nested = all(isinstance(v, Mapping) for v in values.values())
    if nested:
        items = {f"{prefix}.{col}.{row}": v for row, cols in values.items() for col, v in cols.items()}
        table = pd.DataFrame({str(r): dict(c) for r, c in values.items()}).T
    else:
        items = {f"{prefix}.{name}": v for name, v in values.items()}
        table = pd.DataFrame({"value": dict(values)})
    payloads = [{"name": k, "value": _jsonable(record(k, v, display=False), k), "unit": None} for k, v in items.items()]
    table = table.round(digits)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            if title:
                display(Markdown(f"**{title}**"))
            # one output: the table for the reader, every record for `xattr-nb run`
            display({RECORD_MIMETYPE: payloads, "text/html": table.to_html(), "text/plain": str(table)}, raw=True)
    except ImportError:  # pragma: no cover - IPython is a dependency
        pass
    return table


def records() -> dict[str, Any]:
    """The values recorded so far in this Python process (a copy)."""
    return dict(_RECORDS)


def read_records(nb: Any) -> dict[str, Any]:
    """Collect ``record(...)`` values from an executed notebook (an ``nbformat`` node or a path)."""
    if isinstance(nb, (str, os.PathLike)):
        import nbformat

        nb = nbformat.read(os.fspath(nb), as_version=4)
    found: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            payload = (out.get("data") or {}).get(RECORD_MIMETYPE)
            for p in payload if isinstance(payload, list) else [payload] if payload else []:
                found[p["name"]] = p["value"]  # a list: the records of one record_table
    return found


def _summary_bar() -> type:
    """A tqdm that draws nothing while it runs and prints one line when it ends ("fit: 40/40 in 00:03"):
    what an executed notebook keeps, instead of a widget whose saved fallback reads "0%"."""
    import sys

    from tqdm.std import tqdm

    class SummaryBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(delay=float("inf"), file=sys.stdout)
            super().__init__(*args, **kwargs)

        def display(self, *args: Any, **kwargs: Any) -> bool:
            return True  # nothing while it runs (set_postfix, refresh): one line at close

        def close(self) -> None:
            if not self.disable and not getattr(self, "_said", False):
                self._said = True
                total = f"/{self.total}" if self.total is not None else ""
                took = self.format_interval(self._time() - self.start_t)
                print(f"{self.desc or 'progress'}: {self.n}{total} in {took}", file=sys.stdout)
            super().close()

    return SummaryBar


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> Iterator[T]:
    """A ``tqdm.auto`` progress bar (a widget in Jupyter, text elsewhere).

    ``XATTR_NB_PROGRESS`` chooses: ``0`` silences every bar of the library; ``summary`` prints one
    line per bar when it ends (what ``xattr-nb run``/``record``/``calibrate`` and the notebook tests
    use, so executed notebooks never keep a bar frozen at 0%); anything else, a live bar.
    """
    mode = os.environ.get("XATTR_NB_PROGRESS", "1")
    kwargs.setdefault("disable", mode == "0")
    if mode == "summary":
        return _summary_bar()(iterable, **kwargs)
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


@dataclass(frozen=True)
class Cost:
    """What a computation spent: forward and backward passes, and wall time.

    Passes are counted as rows through the model and **totalled over the batch**
    (:func:`xattr_nb.kernels.count_passes`): one forward of a batch of 4 is ``forward=4``, saliency
    on it costs ``Cost(4, 4, ...)`` and IG with 50 steps ``Cost(200, 200, ...)``. Divide by the
    batch size for the cost per example. Costs add up with ``+``.
    """

    forward: int = 0
    backward: int = 0
    wall_s: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.forward + other.forward, self.backward + other.backward, self.wall_s + other.wall_s)

    def __str__(self) -> str:
        return f"{self.forward} forward, {self.backward} backward, {self.wall_s:.3g} s"


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["s"]`` holds the elapsed wall time in seconds."""
    out = {"s": 0.0}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - t0

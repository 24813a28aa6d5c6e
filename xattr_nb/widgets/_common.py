"""What the three views share: where their front-end files live, the colour scale, PNG encoding,
and the static fallback added to every mimebundle.

The colour scale is written out here and in the ES modules with the same anchors and the same
arithmetic, so a colour seen in the browser, in the static HTML and in a test is the same
``rgb(...)`` triple: the 11 ColorBrewer ``RdBu`` colours that matplotlib's ``RdBu_r`` interpolates
(blue = against the target, white = 0, red = for it), linearly interpolated by hand because the
browser side has no matplotlib.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from xattr_nb.checks import InputError

# ColorBrewer RdBu, from -1 (dark blue) to +1 (dark red); the same list is in widgets/*.js.
ANCHORS: tuple[tuple[int, int, int], ...] = (
    (5, 48, 97),
    (33, 102, 172),
    (67, 147, 195),
    (146, 197, 222),
    (209, 229, 240),
    (247, 247, 247),
    (253, 219, 199),
    (244, 165, 130),
    (214, 96, 77),
    (178, 24, 43),
    (103, 0, 31),
)
NORMALIZE = ("maxabs", "shared", "p99")
_ASSETS = ("token_heatmap.js", "image_heatmap.js", "circuit_view.js")


def find_asset_dir(pkg: Path) -> Path:
    """The folder holding the views' ES modules and CSS, for the package folder ``pkg``.

    A wheel carries them inside the package as ``xattr_nb/_widgets`` (pyproject's force-include);
    an editable install (a checkout) reads them from the repository's top-level ``widgets/``.
    """
    for cand in (pkg / "_widgets", pkg.parent / "widgets"):
        if all((cand / f).is_file() for f in _ASSETS):
            return cand
    raise ImportError(
        f"xattr_nb.widgets cannot find its front-end files ({', '.join(_ASSETS)}) in {pkg / '_widgets'} "
        f"or {pkg.parent / 'widgets'}: reinstall the package"
    )


@cache
def asset_dir() -> Path:
    """Where this installation's front-end files are (see :func:`find_asset_dir`)."""
    return find_asset_dir(Path(__file__).resolve().parent.parent)


def read_asset(name: str) -> str:
    """The text of one front-end file (``token_heatmap.js``, ``circuit_view.css``, ...)."""
    return (asset_dir() / name).read_text(encoding="utf-8")


def diverging_rgb(t: float) -> tuple[int, int, int]:
    """Colour of a score already divided by the colour-scale limit; clipped to [-1, 1].

    Same arithmetic as ``rgb()`` in the ES modules (``Math.floor(x + 0.5)`` rounding), so the two
    agree to the unit.
    """
    if not math.isfinite(t):
        t = 0.0
    t = min(1.0, max(-1.0, t))
    pos = (t + 1.0) * 5.0
    i = min(9, math.floor(pos))
    f = pos - i
    a, b = ANCHORS[i], ANCHORS[i + 1]
    return tuple(math.floor(a[k] + (b[k] - a[k]) * f + 0.5) for k in range(3))  # type: ignore[return-value]


def css_rgb(rgb: Sequence[int]) -> str:
    return f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})"


def css_rgb_of(t: float) -> str:
    """The CSS colour a browser reports for a score already divided by the colour limit."""
    return css_rgb(diverging_rgb(t))


def hex_rgb(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def ink(rgb: Sequence[int]) -> str:
    """Black or white text, whichever reads on this background (same rule as the ES modules)."""
    return "#fff" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 128 else "#000"


def diverging_rgb_array(t: np.ndarray) -> np.ndarray:
    """:func:`diverging_rgb` over an array: ``[...] -> [..., 3]`` uint8."""
    t = np.clip(np.nan_to_num(np.asarray(t, dtype=np.float64)), -1.0, 1.0)
    pos = (t + 1.0) * 5.0
    i = np.minimum(9, np.floor(pos).astype(int))
    f = (pos - i)[..., None]
    a = np.asarray(ANCHORS, dtype=np.float64)
    return np.floor(a[i] + (a[i + 1] - a[i]) * f + 0.5).astype(np.uint8)


def scale_limit(values: Sequence[float], how: str, others: Sequence[Sequence[float]] = ()) -> float:
    """The colour-scale limit ``vmax`` (scores are shown as ``score / vmax``, clipped to [-1, 1]).

    ``maxabs``: the largest ``|score|`` of these values (each method on its own scale);
    ``shared``: the largest ``|score|`` over ``others`` too (one scale for all methods, so their
    magnitudes compare); ``p99``: the 99th percentile of ``|score|`` by nearest rank (one outlier,
    say a ``[CLS]`` token, no longer washes out the rest). Zero scores give 1.
    """
    if how == "shared":
        pool = [abs(v) for vs in (values, *others) for v in vs]
        m = max(pool, default=0.0)
    elif how == "p99":
        a = sorted(abs(v) for v in values)
        m = a[max(0, math.ceil(0.99 * len(a)) - 1)] if a else 0.0
    else:
        m = max((abs(v) for v in values), default=0.0)
    return m if m > 0 else 1.0


def png_b64(rgb: np.ndarray) -> str:
    """A uint8 ``[H, W, 3|4]`` array as base64 PNG (compact: a 32x32 map is about 1 KB, not 1,024 floats)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def check_finite_list(values: Any, name: str, n: int | None = None) -> list[float]:
    """A 1-D list/array/tensor of finite numbers as floats; ``n`` is the required length."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise InputError(f"`{name}` must be a list of numbers; got {type(values).__name__}")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"`{name}` must be a list of numbers: {e}") from None
    if arr.ndim != 1:
        raise InputError(f"`{name}` must be 1-D; got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"`{name}` is empty")
    if n is not None and arr.size != n:
        raise InputError(f"`{name}` has {arr.size} scores but there are {n} tokens")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise InputError(f"`{name}` contains {bad} NaN or infinite value(s)")
    return arr.tolist()


class StaticFallback:
    """Mixin for the anywidget views: a deterministic ``text/plain`` (anywidget's holds a memory
    address) and a self-contained ``text/html`` next to the widget view, for GitHub, nbconvert HTML
    and papermill outputs, where no widget manager runs."""

    def _plain(self) -> str:
        raise NotImplementedError

    def _static_html(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self._plain()

    def _repr_mimebundle_(self, **kwargs: Any):
        out = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        data, meta = out if isinstance(out, tuple) else (out, {})
        data = dict(data)
        data["text/plain"] = self._plain()
        data["text/html"] = self._static_html()
        return data, meta


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)

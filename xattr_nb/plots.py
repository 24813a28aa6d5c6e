"""Static figures in one style: token heatmaps (matplotlib and HTML), image heatmaps, curves, bars.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot global state, so
nothing accumulates when a notebook draws hundreds of figures), **displays it** in a notebook
wherever it is called (inside an ``if``, assigned to a name, in a loop) and returns it; returned as
a cell's last value it is not shown twice. A figure built by hand with :func:`figure` is shown
with :func:`show`. Figures use :data:`DPI` (100: readable, and executed notebooks stay small). The
widgets use these as their static fallbacks.

Colour conventions: signed scores use a diverging map (``RdBu_r``: red = supports the target,
blue = against it) centred at zero with symmetric limits, so white always means 0; non-negative
scores use a sequential map (``magma``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError, check_choice, check_int, check_tensor
from xattr_nb.metrics import Curves, CurveSet

DPI = 100
DIVERGING = "RdBu_r"
SEQUENTIAL = "magma"

__all__ = [
    "DIVERGING",
    "DPI",
    "SEQUENTIAL",
    "comparison_bars",
    "curves",
    "estimate_scatter",
    "figure",
    "image_heatmaps",
    "image_row",
    "layer_position_grid",
    "show",
    "signed_matrix",
    "style",
    "token_heatmap",
    "token_heatmap_html",
    "use_style",
]


def _rc(dpi: int = DPI) -> dict[str, Any]:
    import seaborn as sns

    rc: dict[str, Any] = {}
    rc.update(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.9))
    rc.update({"figure.dpi": dpi, "savefig.dpi": dpi, "savefig.bbox": "tight", "axes.titlesize": 10})
    return rc


def use_style(dpi: int = DPI) -> None:
    """Apply the project's style globally (seaborn ``whitegrid``, notebook context, ``dpi``) for pyplot figures too."""
    matplotlib.rcParams.update(_rc(check_int(dpi, "dpi", low=20, high=600)))


@contextmanager
def style(dpi: int = DPI):
    """The project's style for the figures built inside the ``with`` block only."""
    with matplotlib.rc_context(_rc(check_int(dpi, "dpi", low=20, high=600))):
        yield


class PlotFigure(Figure):
    """A matplotlib ``Figure`` that shows itself as a PNG in any notebook front end.

    IPython displays plain ``Figure`` objects only when the inline backend is active (not, for
    example, under ``MPLBACKEND=Agg`` or in a script); ``_repr_png_`` makes the figures of this
    module display everywhere, without pyplot's global state.
    """

    _shown: bool = False

    def _repr_png_(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()

    def _ipython_display_(self) -> None:
        # A figure that :func:`show` already put in the output is not shown again when it is also
        # the cell's last value (and leaves no ``Out[]`` line).
        if not self._shown:
            from IPython.display import display

            display({"image/png": self._repr_png_(), "text/plain": f"<figure {self.get_label() or ''}>"}, raw=True)
            self._shown = True


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show(fig: Figure) -> Figure:
    """Display ``fig`` now when running in a notebook kernel (once), and return it."""
    if not isinstance(fig, Figure):
        raise InputError(f"`fig` must be a matplotlib Figure; got {type(fig).__name__}")
    if isinstance(fig, PlotFigure):
        if _in_notebook():
            fig._ipython_display_()
    elif _in_notebook():
        from IPython.display import display

        display(fig)
    return fig


def figure(width: float, height: float) -> PlotFigure:
    """An empty figure in the project's style that displays itself in notebooks (add axes with ``add_subplot``)."""
    return PlotFigure(figsize=(width, height), dpi=matplotlib.rcParams["figure.dpi"], layout="constrained")


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


def _token_inputs(tokens: Any, scores: Any, example: int) -> tuple[list[str], np.ndarray]:
    if isinstance(tokens, Attribution):
        if scores is not None:
            raise InputError("`scores` come from the Attribution; do not pass them too")
        if tokens.kind != "tokens":
            raise InputError(f"`tokens` must be an Attribution of kind 'tokens'; got {tokens.kind}")
        example = check_int(example, "example", low=0, high=len(tokens) - 1)
        tokens, scores = tokens.tokens(example)
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise InputError(f"`tokens` must be a list of strings; got {type(tokens).__name__}")
    if len(tokens) == 0:
        raise InputError("`tokens` is empty")
    for i, t in enumerate(tokens):
        if not isinstance(t, str):
            raise InputError(f"`tokens[{i}]` must be a str; got {type(t).__name__}")
    if scores is None:
        raise InputError("`scores` is required: one score per token")
    if isinstance(scores, (list, tuple)):
        scores = torch.as_tensor(scores, dtype=torch.float64)
    s = check_tensor(scores, "scores", ndim=1, layout="[T]")
    if s.dtype == torch.bool or not (s.is_floating_point() or s.dtype in (torch.int32, torch.int64)):
        raise InputError(f"`scores` must be numbers; got {s.dtype}")
    if s.shape[0] != len(tokens):
        raise InputError(f"`tokens` has {len(tokens)} entries but `scores` has {s.shape[0]}")
    return list(tokens), s.detach().double().cpu().numpy()


def _norm(values: np.ndarray, signed: bool | None) -> tuple[Normalize, str]:
    """Symmetric limits around zero for signed values, [0, max] otherwise."""
    if signed is None:
        signed = bool((values < 0).any())
    if signed:
        v = float(np.abs(values).max()) or 1.0
        return Normalize(-v, v), DIVERGING
    hi = float(values.max()) or 1.0
    return Normalize(0.0, hi), SEQUENTIAL


def _shown(token: str) -> str:
    return token.replace("\n", "⏎").replace("\t", "⇥") or "∅"


def token_heatmap(
    tokens: Sequence[str] | Attribution,
    scores: Any = None,
    ax: Axes | None = None,
    *,
    example: int = 0,
    line_chars: int = 60,
    signed: bool | None = None,
    colorbar: bool = True,
    title: str | None = None,
) -> Figure:
    """Tokens as coloured boxes, wrapped in lines of about ``line_chars`` characters.

    ``scores`` ``[T]`` colour the boxes: a diverging map centred at zero (``signed=True``, the
    default when any score is negative) or a sequential one. Pass an :class:`Attribution` of
    kind tokens instead of ``tokens, scores`` to draw its example ``example``. Draws into ``ax``
    when given (then no colorbar is added, and the figure is not shown: the caller that owns the
    other panels shows it with :func:`show`) and returns the Figure.
    """
    own_figure = ax is None
    toks, vals = _token_inputs(tokens, scores, example)
    line_chars = check_int(line_chars, "line_chars", low=10)
    norm, cmap_name = _norm(vals, signed)
    cmap = matplotlib.colormaps[cmap_name]
    # Lay the boxes out in character units (monospace): a token of n characters takes n + 1 cells.
    places, x, y = [], 0, 0
    for t in toks:
        w = len(_shown(t)) + 1
        if x > 0 and x + w > line_chars:
            x, y = 0, y + 1
        places.append((x, y, w))
        x += w
    n_lines = y + 1
    with style():
        if ax is None:
            fig = figure(0.1 * line_chars + (0.9 if colorbar else 0.2), 0.3 * n_lines + (0.45 if title else 0.2))
            ax = fig.add_subplot()
        else:
            fig, colorbar = ax.figure, False
        for (x0, y0, w), t, v in zip(places, toks, vals, strict=True):
            rgba = cmap(norm(v))
            ax.add_patch(Rectangle((x0 + 0.05, y0 + 0.08), w - 0.1, 0.84, facecolor=rgba, edgecolor="none"))
            dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
            ax.text(
                x0 + w / 2,
                y0 + 0.5,
                _shown(t),
                ha="center",
                va="center",
                family="monospace",
                fontsize=9,
                color="white" if dark else "black",
                parse_math=False,
            )
        ax.set_xlim(0, line_chars)
        ax.set_ylim(n_lines, 0)
        ax.set_axis_off()
        if title:
            ax.set_title(title)
        if colorbar:
            mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
            fig.colorbar(mappable, ax=ax, fraction=0.04, pad=0.01, aspect=8)
    return show(fig) if own_figure else fig


def token_heatmap_html(
    tokens: Sequence[str] | Attribution, scores: Any = None, *, example: int = 0, signed: bool | None = None
) -> str:
    """A self-contained HTML snippet: one ``<span>`` per token, its background coloured by its score.

    Tokens are HTML-escaped (a token ``<script>`` shows as text); the score shows on hover.
    Same colours as :func:`token_heatmap`.
    """
    toks, vals = _token_inputs(tokens, scores, example)
    norm, cmap_name = _norm(vals, signed)
    cmap = matplotlib.colormaps[cmap_name]
    spans = []
    for t, v in zip(toks, vals, strict=True):
        rgba = cmap(norm(v))
        dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
        spans.append(
            f'<span title="{v:.4g}" style="background:{to_hex(rgba)};color:{"#fff" if dark else "#000"};'
            f'padding:1px 3px;margin:1px;border-radius:3px;white-space:pre">{html.escape(t)}</span>'
        )
    return '<div class="xattr-tokens" style="font-family:monospace;line-height:1.9">' + "".join(spans) + "</div>"


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _as_maps(name: str, value: Any, b: int, hw: tuple[int, int]) -> torch.Tensor:
    key = f"maps[{name!r}]"
    if isinstance(value, Attribution):
        if value.kind not in ("pixels", "patches"):
            raise InputError(f"`{key}` must score pixels or patches; this Attribution scores {value.kind}")
        value = value.scores
    m = check_tensor(value, key, ndim=(3, 4), dtype="float", layout="[B, H, W]")
    if m.ndim == 4:
        if m.shape[1] != 1:
            raise InputError(f"`{key}` must be [B, H, W] or [B, 1, H, W]; got {tuple(m.shape)}")
        m = m[:, 0]
    if m.shape[0] != b:
        raise InputError(f"`{key}` has {m.shape[0]} maps but `images` has {b}")
    m = m.detach().float().cpu()
    if tuple(m.shape[1:]) != hw:  # coarse maps (GradCAM, patches) are shown upsampled to the image
        m = torch.nn.functional.interpolate(m[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]
    return m


def image_heatmaps(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor | Attribution],
    *,
    masks: torch.Tensor | None = None,
    max_images: int = 6,
    signed: bool | None = None,
    alpha: float = 0.6,
    cell: float = 1.6,
) -> Figure:
    """A grid: one row per image, the image then one overlay per method (columns in ``maps`` order).

    ``images`` ``[B, 3 or 1, H, W]`` in [0, 1] (other ranges are min-max scaled for display);
    ``maps`` name -> ``[B, H, W]`` tensor or Attribution (pixels; coarser maps such as patches or
    GradCAM are upsampled bilinearly). Each overlay sits on the grey image: a diverging map with
    symmetric limits per image when the scores have both signs, a sequential one otherwise.
    ``masks`` ``[B, H, W]`` (bool) draws the ground-truth outline on every panel.
    """
    images = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, C, H, W]")
    if images.shape[1] not in (1, 3):
        raise InputError(f"`images` must have 1 or 3 channels; got {images.shape[1]}")
    if not isinstance(maps, Mapping) or len(maps) == 0:
        raise InputError("`maps` must be a non-empty dict: method name -> [B, H, W] maps")
    b, hw = images.shape[0], (int(images.shape[2]), int(images.shape[3]))
    max_images = check_int(max_images, "max_images", low=1)
    all_maps = {str(k): _as_maps(str(k), v, b, hw) for k, v in maps.items()}
    if masks is not None:
        masks = check_tensor(masks, "masks", shape=(b, *hw), dtype="bool", layout="[B, H, W]").cpu()
    n = min(b, max_images)
    imgs = images[:n].detach().float().cpu()
    lo, hi = imgs.amin((1, 2, 3), keepdim=True), imgs.amax((1, 2, 3), keepdim=True)
    if float(lo.min()) < 0 or float(hi.max()) > 1:
        imgs = (imgs - lo) / (hi - lo).clamp_min(1e-12)
    rgb = imgs.permute(0, 2, 3, 1).numpy()
    gray = imgs.mean(1).numpy()
    cols = 1 + len(all_maps)
    with style():
        fig = figure(cell * cols, cell * n + 0.3)
        axes = fig.subplots(n, cols, squeeze=False)
        for i in range(n):
            axes[i, 0].imshow(
                rgb[i] if rgb.shape[-1] == 3 else rgb[i, ..., 0], cmap=None if rgb.shape[-1] == 3 else "gray"
            )
            for j, (name, m) in enumerate(all_maps.items(), start=1):
                v = m[i].numpy()
                norm, cmap = _norm(v, signed)
                axes[i, j].imshow(gray[i], cmap="gray", vmin=0, vmax=1)
                axes[i, j].imshow(v, cmap=cmap, norm=norm, alpha=alpha)
                if i == 0:
                    axes[i, j].set_title(name)
            if masks is not None and bool(masks[i].any()) and not bool(masks[i].all()):
                for ax in axes[i]:
                    ax.contour(masks[i].numpy().astype(float), levels=[0.5], colors="lime", linewidths=1.0)
            for ax in axes[i]:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
        axes[0, 0].set_title("image")
    return show(fig)


# --------------------------------------------------------------------------------------------
# Curves and bars
# --------------------------------------------------------------------------------------------


def _xy(name: str, value: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InputError(f"`data[{name!r}]` must be Curves, a CurveSet or an (x, y) pair")
    x = check_tensor(torch.as_tensor(np.array(value[0], dtype=float)), f"data[{name!r}] x", ndim=1)
    y = check_tensor(torch.as_tensor(np.array(value[1], dtype=float)), f"data[{name!r}] y", ndim=1)
    if x.shape != y.shape:
        raise InputError(f"`data[{name!r}]`: x has {x.shape[0]} points but y has {y.shape[0]}")
    return x.numpy(), y.numpy()


def curves(
    data: Mapping[str, Curves | CurveSet | tuple[Any, Any]],
    *,
    which: str = "both",
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str = "score",
) -> Figure:
    """Line plots, one line per entry of ``data``.

    Values are :class:`~xattr_nb.metrics.Curves` (a CurveSet is shown as its mean curves), drawn
    as insertion and/or deletion panels (``which`` = ``"both"``, ``"insertion"``, ``"deletion"``)
    with the AUC in the legend; or plain ``(x, y)`` pairs, drawn in one panel.
    """
    if not isinstance(data, Mapping) or len(data) == 0:
        raise InputError("`data` must be a non-empty dict: name -> Curves or (x, y)")
    check_choice(which, ("both", "insertion", "deletion"), "which")
    kinds = {isinstance(v, (Curves, CurveSet)) for v in data.values()}
    if len(kinds) != 1:
        raise InputError("`data` mixes Curves and (x, y) pairs; plot them separately")
    with style():
        if kinds == {True}:
            parts = ["insertion", "deletion"] if which == "both" else [which]
            fig = figure(3.6 * len(parts), 3.0)
            axes = fig.subplots(1, len(parts), squeeze=False)[0]
            for ax, part in zip(axes, parts, strict=True):
                for name, v in data.items():
                    c = v.mean_curves() if isinstance(v, CurveSet) else v
                    y = getattr(c, part).numpy()
                    score = getattr(v, f"mean_{part}_auc") if isinstance(v, CurveSet) else getattr(c, f"{part}_auc")
                    ax.plot(c.area.numpy(), y, label=f"{name} (AUC {score:.3f})")
                unit = {"tokens": "tokens", "pixel": "pixels"}.get(next(iter(data.values())).protocol, "area")
                verb = "revealed" if part == "insertion" else "removed"
                ax.set_xlabel(xlabel or f"fraction of {unit} {verb}")
                ax.set_ylabel(ylabel)
                ax.set_title(part)
                ax.legend(fontsize=8)
        else:
            fig = figure(4.2, 3.0)
            ax = fig.add_subplot()
            for name, v in data.items():
                x, y = _xy(str(name), v)
                ax.plot(x, y, label=str(name))
            ax.set_xlabel(xlabel or "x")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=8)
        if title:
            fig.suptitle(title)
    return show(fig)


def _bar_value(name: str, value: Any) -> tuple[float, float, np.ndarray | None]:
    """``(height, error, points)`` from a number, samples, or ``{"mean": m, "std": s}``."""
    key = f"values[{name!r}]"
    if isinstance(value, Mapping):
        if set(value) - {"mean", "std"} or "mean" not in value:
            raise InputError(f"`{key}` as a dict must hold 'mean' and optionally 'std'; got keys {sorted(value)}")
        m, s = float(value["mean"]), float(value.get("std", 0.0))
        if not (np.isfinite(m) and np.isfinite(s)) or s < 0:
            raise InputError(f"`{key}` must have a finite mean and a finite, non-negative std; got {m}, {s}")
        return m, s, None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        v = float(value)
        if not np.isfinite(v):
            raise InputError(f"`{key}` must be finite; got {v}")
        return v, 0.0, None
    if isinstance(value, (list, tuple, np.ndarray)):
        value = torch.as_tensor(np.array(value, dtype=float))  # a copy: pandas hands out read-only views
    t = check_tensor(value, key, ndim=(0, 1), layout="a number or 1-D samples")
    t = t.double().flatten()
    if t.numel() == 1:
        return float(t[0]), 0.0, None
    return float(t.mean()), float(t.std(unbiased=True)), t.numpy()


def comparison_bars(
    values: Mapping[str, Any],
    *,
    metric: str = "score",
    title: str | None = None,
    higher_is_better: bool | None = None,
    show_points: bool = True,
) -> Figure:
    """One bar per method: its mean, with a standard-deviation error bar when samples are given.

    ``values`` maps a method name to a number, to 1-D samples (list, array or tensor; the
    individual values are drawn as dots when ``show_points``), or to ``{"mean": m, "std": s}``.
    ``higher_is_better`` adds an arrow to the axis label.
    """
    if not isinstance(values, Mapping) or len(values) == 0:
        raise InputError("`values` must be a non-empty dict: method -> number, samples or {'mean', 'std'}")
    rows = [(str(k), *_bar_value(str(k), v)) for k, v in values.items()]
    import seaborn as sns

    with style():
        fig = figure(max(3.0, 0.75 * len(rows) + 1.2), 3.0)
        ax = fig.add_subplot()
        colors = sns.color_palette("deep", len(rows))
        xs = np.arange(len(rows))
        ax.bar(
            xs,
            [r[1] for r in rows],
            yerr=[r[2] for r in rows],
            color=colors,
            capsize=3,
            edgecolor="none",
        )
        if show_points:
            rng = np.random.default_rng(0)  # fixed jitter so the figure is reproducible
            for x, (_, _, _, pts) in zip(xs, rows, strict=True):
                if pts is not None:
                    ax.scatter(x + rng.uniform(-0.15, 0.15, len(pts)), pts, s=8, color="black", alpha=0.5, zorder=3)
        ax.set_xticks(
            xs, [r[0] for r in rows], rotation=30 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center"
        )
        arrow = "" if higher_is_better is None else (" ↑" if higher_is_better else " ↓")
        ax.set_ylabel(metric + arrow)
        if title:
            ax.set_title(title)
    return show(fig)


# --------------------------------------------------------------------------------------------
# Image rows, signed matrices, layer x position grids, estimate-vs-truth scatters
# --------------------------------------------------------------------------------------------


def _display_images(images: Any, name: str = "images") -> np.ndarray:
    """``[B, C, H, W]`` (C = 1 or 3) or ``[B, H, W]`` as ``[B, H, W, 3]`` in [0, 1] for imshow."""
    x = check_tensor(images, name, ndim=(3, 4), dtype="float", layout="[B, C, H, W] or [B, H, W]")
    x = x.detach().float().cpu()
    if x.ndim == 3:
        x = x[:, None]
    if x.shape[1] not in (1, 3):
        raise InputError(f"`{name}` must have 1 or 3 channels; got {x.shape[1]}")
    lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    if float(lo.min()) < 0 or float(hi.max()) > 1:  # other ranges are min-max scaled per image
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return x.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()


def image_row(
    images: Any, titles: Sequence[str] | None = None, *, title: str | None = None, cell: float = 1.4, cols: int = 8
) -> Figure:
    """A row (wrapped every ``cols``) of images ``[B, C, H, W]`` or ``[B, H, W]``, each with its title."""
    rgb = _display_images(images)
    b = rgb.shape[0]
    if titles is not None and len(titles) != b:
        raise InputError(f"`titles` names {len(titles)} images but `images` holds {b}")
    cols = min(b, check_int(cols, "cols", low=1))
    rows = -(-b // cols)
    with style():
        fig = figure(cell * cols, cell * rows + (0.3 if title else 0.1))
        axes = fig.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if k >= b:
                ax.set_axis_off()
                continue
            ax.imshow(rgb[k])
            if titles is not None:
                ax.set_title(str(titles[k]), fontsize=8)
        if title:
            fig.suptitle(title)
    return show(fig)


def signed_matrix(
    matrix: Any,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    cbar_label: str = "score",
    annotate: bool | None = None,
    cell: float = 0.45,
) -> Figure:
    """A heatmap of a ``[R, C]`` matrix: diverging colours centred at 0 with symmetric limits when
    it has both signs (white is 0), sequential otherwise; values written in the cells when small."""
    m = check_tensor(torch.as_tensor(np.asarray(matrix, dtype=float)), "matrix", ndim=2, layout="[R, C]")
    if not bool(torch.isfinite(m).all()):
        raise InputError("`matrix` holds NaN or infinite values")
    r, c = m.shape
    for labels, n, name in ((row_labels, r, "row_labels"), (col_labels, c, "col_labels")):
        if labels is not None and len(labels) != n:
            raise InputError(f"`{name}` has {len(labels)} labels but `matrix` has {n}")
    v = m.numpy()
    norm, cmap = _norm(v, None)
    annotate = r * c <= 120 if annotate is None else annotate
    with style():
        fig = figure(max(2.6, cell * c + 1.6), max(1.8, cell * r + 0.9))
        ax = fig.add_subplot()
        im = ax.imshow(v, cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(c), list(col_labels) if col_labels is not None else range(c), fontsize=8)
        ax.set_yticks(range(r), list(row_labels) if row_labels is not None else range(r), fontsize=8)
        if col_labels is not None and max((len(str(x)) for x in col_labels), default=0) > 3:
            ax.tick_params(axis="x", labelrotation=45)
        ax.grid(False)
        if annotate:
            for i in range(r):
                for j in range(c):
                    ax.text(j, i, f"{v[i, j]:.2g}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label=cbar_label, shrink=0.8)
        if xlabel:
            ax.set_xlabel(xlabel)
        if ylabel:
            ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
    return show(fig)


def layer_position_grid(
    scores: Any,
    *,
    tokens: Sequence[str] | None = None,
    layer_labels: Sequence[str] | None = None,
    title: str | None = None,
    cbar_label: str = "effect",
) -> Figure:
    """A component's effect by layer (rows) and token position (columns): ``scores`` ``[L, P]``."""
    m = check_tensor(torch.as_tensor(np.asarray(scores, dtype=float)), "scores", ndim=2, layout="[L, P]")
    layers = layer_labels if layer_labels is not None else [f"L{i}" for i in range(m.shape[0])]
    return signed_matrix(
        m, row_labels=layers, col_labels=tokens, title=title, xlabel="position", ylabel="layer", cbar_label=cbar_label
    )


def estimate_scatter(
    data: Mapping[str, tuple[Any, Any]],
    *,
    xlabel: str = "truth",
    ylabel: str = "estimate",
    title: str | None = None,
) -> Figure:
    """Estimates against the truth, one colour per estimator: ``{name: (truth [N], estimate [N])}``,
    with the line ``y = x`` and each estimator's Pearson r in the legend."""
    if not isinstance(data, Mapping) or len(data) == 0:
        raise InputError("`data` must be a non-empty dict: name -> (truth, estimate)")
    pairs = {str(k): _xy(str(k), v) for k, v in data.items()}
    with style():
        fig = figure(3.8, 3.4)
        ax = fig.add_subplot()
        lo = min(min(x.min(), y.min()) for x, y in pairs.values())
        hi = max(max(x.max(), y.max()) for x, y in pairs.values())
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, linestyle="--", label="y = x")
        for name, (x, y) in pairs.items():
            r = float(np.corrcoef(x, y)[0, 1]) if len(x) > 1 and x.std() > 0 and y.std() > 0 else float("nan")
            ax.scatter(x, y, s=10, alpha=0.7, label=f"{name} (r {r:.2f})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        if title:
            ax.set_title(title)
    return show(fig)

"""Plots: figures with the expected axes, patches and lines; HTML escaping; bad inputs named."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from xattr_nb import plots
from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError
from xattr_nb.metrics import Curves, CurveSet

AREA = torch.linspace(0, 1, 5)


def _curves(ins: list[float]) -> Curves:
    y = torch.tensor(ins)
    return Curves(AREA, y, y.flip(0), "region", 1)


# ------------------------------------------------------------------ style


def test_use_style_sets_modest_dpi():
    with matplotlib.rc_context():
        plots.use_style()
        assert matplotlib.rcParams["figure.dpi"] == plots.DPI <= 100
        assert matplotlib.rcParams["savefig.dpi"] == plots.DPI


def test_use_style_rejects_bad_dpi():
    with pytest.raises(InputError, match="dpi"):
        plots.use_style(5)


# ------------------------------------------------------------------ tokens


def test_token_heatmap_boxes_colours_and_wrapping():
    toks = ["alpha", "beta", "$x$", "gamma"] * 5
    scores = torch.linspace(-1, 1, 20)
    fig = plots.token_heatmap(toks, scores, line_chars=20)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # the heatmap and its colorbar
    ax = fig.axes[0]
    assert len(ax.patches) == 20 and [t.get_text() for t in ax.texts] == toks  # "$x$" shown verbatim
    assert ax.get_ylim()[0] > 1  # wrapped over several lines
    # diverging and centred at 0: the most negative box is blue, the most positive red, a zero score white
    first, last = ax.patches[0].get_facecolor(), ax.patches[-1].get_facecolor()
    assert first[2] > first[0] and last[0] > last[2]
    mid = plots.token_heatmap(["a", "b", "c"], [-2.0, 0.0, 2.0]).axes[0].patches[1].get_facecolor()
    assert min(mid[:3]) > 0.9


def test_token_heatmap_from_attribution_and_into_given_axes():
    attr = Attribution(
        torch.tensor([[0.1, 0.5, 0.2]]),
        "tokens",
        "m",
        torch.tensor([0]),
        labels=[["a", "b"]],
        mask=torch.tensor([[True, True, False]]),
    )
    fig = Figure()
    ax = fig.add_subplot()
    out = plots.token_heatmap(attr, ax=ax)
    assert out is fig and len(fig.axes) == 1 and len(ax.patches) == 2  # padding left out, no colorbar


def test_token_heatmap_rejects_length_mismatch():
    with pytest.raises(InputError, match="scores"):
        plots.token_heatmap(["a", "b"], [1.0, 2.0, 3.0])


def test_token_heatmap_rejects_nan_scores():
    with pytest.raises(InputError, match="scores"):
        plots.token_heatmap(["a", "b"], [1.0, float("nan")])


def test_token_heatmap_rejects_empty_tokens():
    with pytest.raises(InputError, match="tokens"):
        plots.token_heatmap([], [])


def test_token_heatmap_rejects_a_string():
    with pytest.raises(InputError, match="tokens"):
        plots.token_heatmap("ab", [1.0, 2.0])


def test_token_heatmap_rejects_non_string_token():
    with pytest.raises(InputError, match=r"tokens\[1\]"):
        plots.token_heatmap(["a", 3], [1.0, 2.0])


def test_token_heatmap_html_escapes_and_colours():
    out = plots.token_heatmap_html(["<script>alert(1)</script>", "a&b", '"q"'], [1.0, 0.0, -1.0])
    assert "<script>" not in out and "&lt;script&gt;" in out and "a&amp;b" in out and "&quot;q&quot;" in out
    assert out.count("<span") == 3
    assert "background:#67001f" in out and "background:#053061" in out  # the two ends of RdBu_r


def test_token_heatmap_html_sequential_for_non_negative_scores():
    out = plots.token_heatmap_html(["a", "b"], [0.0, 1.0])
    assert "background:#000004" in out  # magma's dark end for 0


def test_token_heatmap_html_rejects_length_mismatch():
    with pytest.raises(InputError, match="scores"):
        plots.token_heatmap_html(["a"], [1.0, 2.0])


# ------------------------------------------------------------------ images


def test_image_heatmaps_grid_and_contours():
    imgs = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(8, 16, 16, dtype=torch.bool)
    masks[:, 4:10, 4:10] = True
    maps = {
        "signed": torch.randn(8, 16, 16),
        "coarse": torch.rand(8, 4, 4),  # upsampled to 16 x 16
        "attr": Attribution(torch.rand(8, 16, 16), "pixels", "m", torch.zeros(8, dtype=torch.long)),
    }
    fig = plots.image_heatmaps(imgs, maps, masks=masks, max_images=6)
    assert isinstance(fig, Figure) and len(fig.axes) == 6 * 4
    assert [fig.axes[j].get_title() for j in range(4)] == ["image", "signed", "coarse", "attr"]
    overlay = fig.axes[1].images[1]
    lo, hi = overlay.norm.vmin, overlay.norm.vmax
    assert lo == -hi and overlay.get_cmap().name == plots.DIVERGING  # signed map: symmetric, diverging
    assert fig.axes[2].images[1].get_cmap().name == plots.SEQUENTIAL
    assert fig.axes[2].images[1].get_array().shape == (16, 16)
    assert all(len(ax.collections) >= 1 for ax in fig.axes)  # the mask outline on every panel


def test_image_heatmaps_rejects_batch_mismatch():
    with pytest.raises(InputError, match="maps"):
        plots.image_heatmaps(torch.rand(2, 3, 8, 8), {"m": torch.rand(3, 8, 8)})


def test_image_heatmaps_rejects_nan_map():
    m = torch.rand(2, 8, 8)
    m[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="maps"):
        plots.image_heatmaps(torch.rand(2, 3, 8, 8), {"m": m})


def test_image_heatmaps_rejects_empty_maps():
    with pytest.raises(InputError, match="maps"):
        plots.image_heatmaps(torch.rand(2, 3, 8, 8), {})


def test_image_heatmaps_rejects_bad_channels():
    with pytest.raises(InputError, match="channels"):
        plots.image_heatmaps(torch.rand(2, 2, 8, 8), {"m": torch.rand(2, 8, 8)})


def test_image_heatmaps_rejects_mask_shape():
    with pytest.raises(InputError, match="masks"):
        plots.image_heatmaps(torch.rand(2, 3, 8, 8), {"m": torch.rand(2, 8, 8)}, masks=torch.ones(2, 4, 4).bool())


def test_image_heatmaps_rejects_token_attribution():
    attr = Attribution(torch.rand(2, 5), "tokens", "m", torch.zeros(2, dtype=torch.long))
    with pytest.raises(InputError, match="tokens"):
        plots.image_heatmaps(torch.rand(2, 3, 8, 8), {"m": attr})


# ------------------------------------------------------------------ curves and bars


def test_curves_two_panels_with_auc_labels():
    fig = plots.curves({"good": _curves([0, 0.4, 0.7, 0.9, 1]), "bad": _curves([0, 0.1, 0.3, 0.6, 1])}, title="t")
    assert len(fig.axes) == 2 and all(len(ax.lines) == 2 for ax in fig.axes)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["good (AUC 0.625)", "bad (AUC 0.375)"]
    assert fig.axes[1].get_title() == "deletion"


def test_curves_one_panel_and_curveset_mean():
    cs = CurveSet([_curves([0, 0.4, 0.7, 0.9, 1]), _curves([0, 0.2, 0.5, 0.7, 1])])
    fig = plots.curves({"set": cs}, which="insertion")
    assert len(fig.axes) == 1
    assert np.allclose(fig.axes[0].lines[0].get_ydata(), [0, 0.3, 0.6, 0.8, 1])


def test_curves_from_xy_pairs():
    fig = plots.curves({"a": ([0, 1], [0, 1]), "b": (np.array([0, 0.5, 1]), torch.tensor([1.0, 0.2, 0.0]))})
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2


def test_curves_rejects_mixed_inputs():
    with pytest.raises(InputError, match="mixes"):
        plots.curves({"a": _curves([0, 0.4, 0.7, 0.9, 1]), "b": ([0, 1], [0, 1])})


def test_curves_rejects_xy_length_mismatch():
    with pytest.raises(InputError, match="data"):
        plots.curves({"a": ([0, 1, 2], [0, 1])})


def test_curves_rejects_nan():
    with pytest.raises(InputError, match="data"):
        plots.curves({"a": ([0, 1], [0, float("nan")])})


def test_curves_rejects_empty():
    with pytest.raises(InputError, match="data"):
        plots.curves({})


def test_comparison_bars_heights_and_errors():
    fig = plots.comparison_bars(
        {"a": [1.0, 2.0, 3.0], "b": 2.5, "c": {"mean": 1.5, "std": 0.2}}, metric="AUC", higher_is_better=True
    )
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([2.0, 2.5, 1.5])
    assert ax.get_ylabel() == "AUC ↑"
    from matplotlib.container import BarContainer

    bars = next(c for c in ax.containers if isinstance(c, BarContainer))
    assert len(bars) == 3
    err = bars.errorbar.lines[2][0].get_segments()
    assert [s[1, 1] - s[0, 1] for s in err] == pytest.approx([2.0, 0.0, 0.4])  # +-1 std for samples [1, 2, 3]
    assert len(ax.collections) >= 2  # the sample points of "a" plus the error bars


def test_comparison_bars_rejects_nan():
    with pytest.raises(InputError, match="values"):
        plots.comparison_bars({"a": float("nan")})


def test_comparison_bars_rejects_bad_dict():
    with pytest.raises(InputError, match="values"):
        plots.comparison_bars({"a": {"avg": 1.0}})


def test_comparison_bars_rejects_negative_std():
    with pytest.raises(InputError, match="std"):
        plots.comparison_bars({"a": {"mean": 1.0, "std": -1.0}})


def test_comparison_bars_rejects_empty():
    with pytest.raises(InputError, match="values"):
        plots.comparison_bars({})


def test_figures_display_as_png_without_the_inline_backend():
    fig = plots.comparison_bars({"a": 1.0, "b": 2.0}, metric="m")
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ new helpers and display


def test_image_row_wraps_and_checks_titles():
    fig = plots.image_row(torch.rand(10, 3, 8, 8), [str(i) for i in range(10)], cols=4)
    assert len([a for a in fig.axes if a.get_images()]) == 10 and len(fig.axes) == 12
    with pytest.raises(InputError, match="titles"):
        plots.image_row(torch.rand(2, 8, 8), ["one"])
    with pytest.raises(InputError, match="channels"):
        plots.image_row(torch.rand(2, 2, 8, 8))


def test_signed_matrix_is_centred_and_checks_labels():
    fig = plots.signed_matrix(torch.tensor([[-2.0, 1.0], [0.5, 0.0]]), row_labels=["a", "b"], col_labels=["x", "y"])
    im = fig.axes[0].get_images()[0]
    assert im.norm.vmin == -2.0 and im.norm.vmax == 2.0  # symmetric: white is 0
    with pytest.raises(InputError, match="row_labels"):
        plots.signed_matrix(torch.zeros(2, 2), row_labels=["a"])
    with pytest.raises(InputError, match="NaN"):
        plots.signed_matrix(torch.tensor([[float("nan")]]))


def test_layer_position_grid_labels_layers():
    fig = plots.layer_position_grid(torch.randn(3, 4), tokens=["a", "b", "c", "d"])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["L0", "L1", "L2"]


def test_estimate_scatter_reports_pearson():
    x = torch.arange(10.0)
    fig = plots.estimate_scatter({"good": (x, 2 * x + 1), "flat": (x, -x)})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "good (r 1.00)" in labels and "flat (r -1.00)" in labels


@pytest.mark.slow
def test_figures_show_once_wherever_they_are_built(tmp_path):
    """Built inside an `if`, assigned to a name, or as the cell's last value: one image, no Out[]."""
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor

    src = [
        "from xattr_nb import plots\ndata = {'a': ([0, 1], [0, 1])}",
        "if True:\n    fig = plots.curves(data)",
        "plots.curves(data)",
        "fig = plots.figure(2, 2)\nfig.add_subplot().plot([0, 1])\nplots.show(fig)\nplots.show(fig)\nfig",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in src])
    ExecutePreprocessor(timeout=120, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    for cell in nb.cells[1:]:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, cell.source
        assert not [o for o in cell.outputs if o.output_type == "execute_result"], cell.source


def test_token_heatmap_into_a_given_axis_does_not_show_the_partial_figure(monkeypatch):
    shown = []
    monkeypatch.setattr(plots, "_in_notebook", lambda: True)
    monkeypatch.setattr(plots.PlotFigure, "_ipython_display_", lambda self: shown.append(self))
    fig = plots.figure(4, 2)
    axes = fig.subplots(2, 1)
    plots.token_heatmap(["a", "b"], [0.1, -0.2], ax=axes[0])
    plots.token_heatmap(["c", "d"], [0.3, 0.4], ax=axes[1])
    assert shown == []  # the caller shows the whole figure once
    plots.show(fig)
    assert shown == [fig]

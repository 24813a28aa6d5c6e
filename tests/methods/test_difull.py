"""DiFull / DiPart / GridPG settings, ML-Att attribution, the localization score and AggAtt.

Analytic cases: the slicing is a bijection, a disconnected head has exactly zero gradient on the
other cells, Grad-CAM on four identical cells puts exactly 3/4 of its mass outside, and so on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.methods import difull as D
from xattr_nb.models import ImageClassifier, TinyCNN, load_image_model
from xattr_nb.models.hub import IMAGENET_MEAN, IMAGENET_STD
from xattr_nb.worlds.folders import load_image_folder
from xattr_nb.worlds.grids import make_grids

CELL, SCALE, NCLS = 8, 2, 4


@pytest.fixture(scope="module")
def backbone() -> TinyCNN:
    torch.manual_seed(0)
    m = TinyCNN(n_classes=NCLS, in_ch=1, widths=(4, 6, 8))
    # Random BN statistics, so eval-mode batch norm is a non-trivial affine map.
    for blk in m.blocks:
        blk.norm.running_mean.uniform_(-0.1, 0.1)
        blk.norm.running_var.uniform_(0.5, 1.5)
    return m.eval()


@pytest.fixture(scope="module")
def grids():
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(12, 1, CELL, CELL, generator=g)
    labels = torch.arange(12) % NCLS
    return make_grids(imgs, labels, scale=SCALE, n_grids=3, seed=0)


# --------------------------------------------------------------------------------------------- slicing


def test_to_cells_is_row_major_and_from_cells_inverts_it():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    cells = D.to_cells(x, 2)
    assert cells.shape == (8, 1, 2, 2)
    assert torch.equal(cells[1, 0], x[0, 0, :2, 2:])  # grid 0, cell 1 = top-right
    assert torch.equal(cells[2, 0], x[0, 0, 2:, :2])  # grid 0, cell 2 = bottom-left
    assert torch.equal(cells[7, 0], x[1, 0, 2:, 2:])
    assert torch.equal(D.from_cells(cells, 2), x)


# --------------------------------------------------------------------------------------------- settings


def test_difull_head_k_equals_backbone_on_cell_k(backbone, grids):
    st = D.make_setting("DiFull", backbone, SCALE)
    out = st(grids.images).view(len(grids), SCALE * SCALE, NCLS)
    for k in range(SCALE * SCALE):
        x, y = divmod(k, SCALE)
        cell = grids.images[:, :, x * CELL : (x + 1) * CELL, y * CELL : (y + 1) * CELL]
        torch.testing.assert_close(out[:, k], backbone(cell), rtol=1e-5, atol=1e-5)


def test_gridpg_is_the_unchanged_model(backbone, grids):
    st = D.make_setting("GridPG", backbone, SCALE)
    torch.testing.assert_close(st(grids.images), backbone(grids.images), rtol=1e-5, atol=1e-5)
    assert st.n_heads == 1 and st.head_target(3, 2) == 2


def test_dipart_head_k_pools_quadrant_k_of_the_full_grid_features(backbone, grids):
    st = D.make_setting("DiPart", backbone, SCALE)
    f = backbone.feature_maps(grids.images)
    h = f.shape[-1] // 2
    out = st(grids.images).view(len(grids), 4, NCLS)
    torch.testing.assert_close(out[:, 3], backbone.head(f[..., h:, h:].mean((2, 3))), rtol=1e-5, atol=1e-5)
    assert st.head_target(3, 2) == 3 * NCLS + 2


def test_difull_gradient_is_exactly_zero_outside_the_head_cell(backbone, grids):
    st = D.make_setting("DiFull", backbone, SCALE)
    x = grids.images[:1].clone().requires_grad_(True)
    st(x)[0, st.head_target(0, 1)].backward()
    g = x.grad[0, 0]
    assert bool((g[:CELL, :CELL] != 0).any())
    inside = torch.zeros_like(g, dtype=torch.bool)
    inside[:CELL, :CELL] = True
    assert bool((g[~inside] == 0).all())  # exactly, not approximately


def test_head_batch_rows_and_targets(backbone, grids):
    st = D.make_setting("DiFull", backbone, SCALE)
    x, target, cell = D.head_batch(st, grids)
    assert D.eval_heads(st) == (0, 3)
    assert x.shape[0] == 2 * len(grids) and cell.tolist() == [0, 3] * len(grids)
    assert target[1].item() == 3 * NCLS + int(grids.labels[0, 3])
    assert D.eval_heads(D.make_setting("GridPG", backbone, SCALE)) == (0, 1, 2, 3)


# --------------------------------------------------------------------------------------------- metric


def test_localization_known_values():
    maps = torch.zeros(4, 4, 4)
    maps[0, :2, 2:] = 1.0  # all mass in cell 1
    maps[1] = 1.0  # uniform: chance level
    maps[2] = -1.0  # no positive evidence
    maps[3, :2, :2] = 3.0
    maps[3, 2:, 2:] = 1.0
    maps[3, 2:, :2] = -5.0  # negative mass is ignored
    L = D.localization(maps, torch.tensor([1, 2, 0, 0]), 2)
    torch.testing.assert_close(L, torch.tensor([1.0, 0.25, 0.0, 0.75]))


def test_localization_threshold_and_nearest_upsampling():
    tiny = torch.full((1, 4, 4), 1e-9)
    assert float(D.localization(tiny, [0], 2)[0]) == 0.0  # below eps = 1e-7
    coarse = torch.zeros(1, 2, 2)
    coarse[0, 0, 0] = 1.0
    assert float(D.localization(coarse, [0], 2, size=8, upsample="nearest")[0]) == 1.0
    assert float(D.localization(coarse, [0], 2, size=8, upsample="bilinear")[0]) < 1.0  # bilinear leaks


def test_gaussian_smooth_keeps_interior_mass_and_is_the_kernel_on_a_delta():
    m = torch.zeros(1, 21, 21)
    m[0, 10, 10] = 1.0
    s = D.gaussian_smooth(m, sigma=2.0, ksize=9)
    assert abs(float(s.sum()) - 1.0) < 1e-6
    t = torch.arange(-4, 5, dtype=torch.float32)
    g = torch.exp(-(t**2) / 8)
    g = g / g.sum()
    torch.testing.assert_close(s[0, 6:15, 6:15], g[:, None] * g[None, :])


# --------------------------------------------------------------------------------------------- ML-Att


@pytest.mark.parametrize("method", ["grad", "guided_backprop", "ixg", "int_grad"])
def test_gradient_methods_localize_exactly_under_difull(backbone, grids, method):
    st = D.make_setting("DiFull", backbone, SCALE)
    x, target, cell = D.head_batch(st, grids)
    a = D.attribute_at(st, x, target, method, "input", ig_steps=4)
    L = D.localization(a, cell, SCALE)
    mass = a.scores.clamp_min(0).flatten(1).sum(1)
    assert bool((mass > 1e-7).all())
    assert torch.equal(L, torch.ones_like(L))


def test_layer_methods_at_final_are_exact_with_nearest_under_difull_and_dipart(backbone, grids):
    for name in ("DiFull", "DiPart"):
        st = D.make_setting(name, backbone, SCALE)
        r = D.evaluate(
            st, grids, methods={"ixg": ("final",), "layer_cam": ("final",)}, upsample="nearest", show_progress=False
        )
        for key, L in r.scores.items():
            ok = r.positive_mass[key] > 1e-7
            assert bool(ok.any()) and torch.equal(L[ok], torch.ones_like(L[ok])), (name, key)


def test_gradcam_on_identical_cells_leaks_exactly_three_quarters(backbone):
    """Four copies of one image: Grad-CAM's channel weights multiply every cell's (identical)
    activations, so each cell gets 1/4 of the mass; Layer-CAM's per-position gradient keeps it in cell 0."""
    torch.manual_seed(3)
    img = torch.rand(1, 1, CELL, CELL)
    x = img.repeat(1, 1, 2, 2)
    st = D.make_setting("DiFull", backbone, SCALE)
    logits = st(x)[0, :NCLS]
    # The class whose Grad-CAM has positive mass (some class must have it for a random net).
    for c in range(NCLS):
        t = torch.tensor([st.head_target(0, c)])
        cam = D.attribute_at(st, x, t, "grad_cam", "final", upsample="nearest")
        if float(cam.scores.clamp_min(0).sum()) > 1e-6:
            break
    else:  # pragma: no cover - depends on the random net
        pytest.skip(f"no class with positive Grad-CAM; logits {logits}")
    torch.testing.assert_close(D.localization(cam, [0], SCALE), torch.tensor([0.25]))
    lcam = D.attribute_at(st, x, t, "layer_cam", "final", upsample="nearest")
    if float(lcam.scores.sum()) > 0:
        assert float(D.localization(lcam, [0], SCALE)[0]) == 1.0


def test_evaluate_reuses_input_maps_for_smoothing(backbone, grids):
    st = D.make_setting("GridPG", backbone, SCALE)
    r = D.evaluate(st, grids, methods={"ixg": ("input",), "s_ixg": ("input",)}, keep_maps=True, show_progress=False)
    # S-IxG blurs the IxG maps already computed: it costs their passes (spent once), plus the blur.
    base, smooth = r.cost[("ixg", "input")], r.cost[("s_ixg", "input")]
    assert (smooth.forward, smooth.backward) == (base.forward, base.backward) and base.forward == len(r.cells) > 0
    assert smooth.wall_s >= base.wall_s
    torch.testing.assert_close(r.maps[("s_ixg", "input")], D.gaussian_smooth(r.maps[("ixg", "input")], 2.0, 9))
    assert {row["method"] for row in r.rows()} == {"ixg", "s_ixg"}


def test_explain_runs_every_setting_and_method(backbone, grids):
    methods = {"ixg": ("input", "final"), "s_ixg": ("input",), "grad_cam": ("final",)}
    res = D.explain(backbone, grids, methods=methods, show_progress=False)
    assert list(res) == list(D.SETTINGS)
    for name, r in res.items():
        assert r.setting == name and set(r.scores) == {
            ("ixg", "input"),
            ("ixg", "final"),
            ("s_ixg", "input"),
            ("grad_cam", "final"),
        }
        assert all(
            len(v) == len(grids) * len(D.eval_heads(D.make_setting(name, backbone, SCALE))) for v in r.scores.values()
        )
    assert res["DiFull"].mean("ixg", "input") == pytest.approx(1.0)  # exact zeros outside the head's cell


def test_explain_setting_methods_replace_methods_for_one_setting(backbone, grids):
    res = D.explain(
        backbone,
        grids,
        methods={"ixg": ("input",), "grad": ("input",)},
        setting_methods={"DiPart": {"ixg": ("input",)}},
        show_progress=False,
    )
    assert set(res["DiFull"].scores) == {("ixg", "input"), ("grad", "input")}
    assert set(res["DiPart"].scores) == {("ixg", "input")}
    with pytest.raises(InputError, match="setting_methods"):
        D.explain(backbone, grids, settings=["DiFull"], setting_methods={"DiPart": {"ixg": ("input",)}})


def test_plot_aggatt_builds_one_panel_per_method_and_bin():
    from matplotlib.figure import Figure

    bins = D.aggatt_bins(torch.rand(10, 8, 8), torch.rand(10))
    fig = D.plot_aggatt({"a": bins, "b": bins}, cell_box=(0, 0, 4, 4))
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * (len(D.AGGATT_EDGES) - 1)


def test_layer_methods_come_from_the_attribution_layer():
    from xattr_nb.attribution import layers

    assert not any(
        hasattr(D, n) for n in ("layer_cam", "layer_grad", "layer_grad_x_act", "guided_backprop", "_upsample")
    )
    assert D.upsample_maps is layers.upsample


def test_aggatt_bins_sort_by_localization_then_inside_mass():
    maps = torch.stack([torch.full((2, 2), float(v)) for v in range(10)])
    loc = torch.tensor([0.1, 0.9, 0.9, 0.5, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8])
    inside = torch.tensor([0, 1, 2, 0, 0, 0, 0, 0, 0, 0], dtype=torch.float32)
    bins = D.aggatt_bins(maps, loc, inside, edges=(0.0, 0.2, 0.5, 1.0))
    # Sorted: 2 (ties broken by inside), 1, 9, 8, 7, 3, 6, 5, 4, 0
    assert [float(b[0, 0]) for b in bins] == pytest.approx([1.5, 8.0, np.mean([3, 6, 5, 4, 0])])
    assert len(D.aggatt_bins(maps, loc)) == len(D.AGGATT_EDGES) - 1


# --------------------------------------------------------------------------------------------- full-scale loaders


def test_hf_resnet_stand_in_and_image_folder(tmp_path):
    from PIL import Image
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], layer_type="basic", num_labels=3
    )
    torch.manual_seed(0)
    ResNetForImageClassification(cfg).save_pretrained(tmp_path / "resnet")
    model = load_image_model("full", small="", full=str(tmp_path / "resnet"))  # the notebook's scale="full" path
    rng = np.random.default_rng(0)
    for c in ("b_cls", "a_cls", "c_cls"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / c / f"{i}.png")
    x, y, classes = load_image_folder(tmp_path / "imgs", size=32)
    assert x.shape == (6, 3, 32, 32) and classes == ["a_cls", "b_cls", "c_cls"] and y.tolist() == [0, 0, 1, 1, 2, 2]
    grid = torch.cat([torch.cat([x[0], x[2]], 2), torch.cat([x[4], x[1]], 2)], 1)[None]  # [1, 3, 64, 64]
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    gp = D.make_setting("GridPG", model, 2)
    torch.testing.assert_close(gp(grid), model.hf((grid - mean) / std).logits, rtol=1e-4, atol=1e-5)
    df = D.make_setting("DiFull", model, 2)
    torch.testing.assert_close(df(grid)[:, 6:9], model.hf((x[4:5] - mean) / std).logits, rtol=1e-4, atol=1e-5)
    # confident() runs the HF model through its stages, i.e. on normalized pixels.
    pred = model.hf((x - mean) / std).logits
    assert D.confident(model, x, y, min_conf=0.0).tolist() == (pred.argmax(1) == y).tolist()
    # A bare HF ResNet gets ImageNet's statistics: the same setting.
    torch.testing.assert_close(D.make_setting("GridPG", model.hf, 2)(grid), gp(grid))


def test_stages_use_the_classifier_own_normalisation():
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1], layer_type="basic", num_labels=3)
    torch.manual_seed(0)
    model = ImageClassifier(ResNetForImageClassification(cfg).eval(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    gp = D.make_setting("GridPG", model, 1)
    torch.testing.assert_close(gp(x), model(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(gp(x), D.make_setting("GridPG", model.hf, 1)(x), atol=1e-3)


def test_confident_keeps_correct_and_sure_predictions():
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.tensor([[5.0, 0.0], [0.0, 0.1], [0.0, 5.0]]) + 0 * self.w

    keep = D.confident(Fixed(), torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 0]), min_conf=0.9)
    assert keep.tolist() == [True, False, False]  # 2nd: right but unsure; 3rd: wrong


# --------------------------------------------------------------------------------------------- bad input


def test_bad_to_cells_size():
    with pytest.raises(InputError, match="divisible"):
        D.to_cells(torch.zeros(1, 1, 5, 4), 2)


def test_bad_from_cells_count():
    with pytest.raises(InputError, match="multiple"):
        D.from_cells(torch.zeros(3, 1, 2, 2), 2)


def test_bad_localization_cells_range():
    with pytest.raises(InputError, match="cells"):
        D.localization(torch.ones(1, 4, 4), [4], 2)


def test_bad_localization_cells_length():
    with pytest.raises(InputError, match="cells"):
        D.localization(torch.ones(2, 4, 4), [0], 2)


def test_bad_localization_map_ndim():
    with pytest.raises(InputError, match="maps"):
        D.localization(torch.ones(4, 4), [0], 2)


def test_bad_localization_nan_maps():
    m = torch.ones(1, 4, 4)
    m[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        D.localization(m, [0], 2)


def test_bad_localization_map_not_divisible():
    with pytest.raises(InputError, match="divisible"):
        D.localization(torch.ones(1, 5, 5), [0], 2)


def test_bad_localization_upsample_mode():
    with pytest.raises(InputError, match="upsample"):
        D.localization(torch.ones(1, 4, 4), [0], 2, upsample="bicubic")


def test_bad_gaussian_even_ksize():
    with pytest.raises(InputError, match="odd"):
        D.gaussian_smooth(torch.ones(1, 4, 4), 1.0, ksize=4)


def test_bad_gaussian_zero_sigma():
    with pytest.raises(InputError, match="sigma"):
        D.gaussian_smooth(torch.ones(1, 4, 4), 0.0)


def test_bad_setting_name(backbone):
    with pytest.raises(InputError, match="name"):
        D.make_setting("DiHalf", backbone)


def test_bad_backbone_type():
    with pytest.raises(InputError, match="TinyCNN"):
        D.make_setting("DiFull", nn.Linear(3, 3))


def test_bad_setting_input_size(backbone):
    with pytest.raises(InputError, match="divisible"):
        D.make_setting("DiFull", backbone, 2)(torch.zeros(1, 1, 15, 16))


def test_bad_head_target_class(backbone):
    with pytest.raises(InputError, match="`c`"):
        D.make_setting("DiFull", backbone, 2).head_target(0, NCLS)


def test_bad_head_batch_scale(backbone, grids):
    with pytest.raises(InputError, match="scale"):
        D.head_batch(D.make_setting("DiFull", backbone, 3), grids)


def test_bad_head_batch_grids(backbone):
    with pytest.raises(InputError, match="GridData"):
        D.head_batch(D.make_setting("DiFull", backbone, 2), torch.zeros(1, 1, 16, 16))


def test_bad_attribute_at_method(backbone, grids):
    st = D.make_setting("DiFull", backbone, SCALE)
    x, t, _ = D.head_batch(st, grids)
    with pytest.raises(InputError, match="method"):
        D.attribute_at(st, x, t, "lrp")


def test_bad_attribute_at_method_layer_pair(backbone, grids):
    st = D.make_setting("DiFull", backbone, SCALE)
    x, t, _ = D.head_batch(st, grids)
    with pytest.raises(InputError, match="not defined at layer"):
        D.attribute_at(st, x, t, "guided_backprop", "final")


def test_bad_attribute_at_layer(backbone, grids):
    st = D.make_setting("DiFull", backbone, SCALE)
    x, t, _ = D.head_batch(st, grids)
    with pytest.raises(InputError, match="layer"):
        D.attribute_at(st, x, t, "ixg", "penultimate")


def test_bad_evaluate_methods(backbone, grids):
    with pytest.raises(InputError, match="methods"):
        D.evaluate(D.make_setting("DiFull", backbone, SCALE), grids, methods={"ixg": "final"}, show_progress=False)


def test_bad_explain_settings(backbone, grids):
    with pytest.raises(InputError, match="settings"):
        D.explain(backbone, grids, settings="DiFull")


def test_bad_aggatt_edges():
    with pytest.raises(InputError, match="edges"):
        D.aggatt_bins(torch.ones(3, 2, 2), torch.ones(3), edges=(0.0, 0.6, 0.5, 1.0))


def test_bad_aggatt_loc_length():
    with pytest.raises(InputError, match="loc"):
        D.aggatt_bins(torch.ones(3, 2, 2), torch.ones(2))


def test_bad_confident_min_conf(backbone):
    with pytest.raises(InputError, match="min_conf"):
        D.confident(backbone, torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), min_conf=1.5)


def test_bad_make_confident_grids_nothing_confident(backbone):
    with pytest.raises(InputError, match="confidence"):
        D.make_confident_grids(backbone, torch.rand(8, 1, 8, 8), torch.arange(8) % NCLS, min_conf=1.0)


def test_localization_dilate_counts_a_border_band():
    m = torch.zeros(1, 8, 8)
    m[0, :4, :4] = 1.0  # 16 inside cell 0
    m[0, 0, 4] = 2.0  # 1 px right of the border
    m[0, 0, 6] = 2.0  # 3 px right of the border
    assert float(D.localization(m, [0], 2)[0]) == pytest.approx(16 / 20)
    assert float(D.localization(m, [0], 2, dilate=1)[0]) == pytest.approx(18 / 20)
    assert float(D.localization(m, [0], 2, dilate=3)[0]) == pytest.approx(1.0)


def test_bad_localization_dilate():
    with pytest.raises(InputError, match="dilate"):
        D.localization(torch.ones(1, 4, 4), [0], 2, dilate=-1)

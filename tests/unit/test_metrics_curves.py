"""Faithfulness curves over images: AUC, highest confidence, insertion/deletion (hand-computed values, one test per bad input)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError
from xattr_nb.kernels import count_passes, grid_regions
from xattr_nb.metrics import (
    Curves,
    CurveSet,
    auc,
    highest_confidence,
    insertion_deletion,
    insertion_deletion_batch,
    order_from_scores,
    region_scores,
)

# ------------------------------------------------------------------ fixtures: models with known outputs

REGIONS = grid_regions(4, 4, 2, 2)  # four 2x2 quadrants, row-major
REGION_W = torch.tensor([0.4, 0.3, 0.2, 0.1])
WMAP = (REGIONS.float() * REGION_W[:, None, None] / 4).sum(0)  # weight per pixel; sums to 1


class RegionModel(nn.Module):
    """logit[1] = sum over pixels of WMAP * (channel mean): revealing quadrant r on a ones-image adds REGION_W[r]."""

    def __init__(self, wmap: torch.Tensor = WMAP) -> None:
        super().__init__()
        self.register_buffer("w", wmap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = (x.mean(1) * self.w).sum((1, 2))
        return torch.stack([torch.zeros_like(logit), logit], 1)


class NaNModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2), float("nan"))


X = torch.ones(3, 4, 4)

# perfect order [0, 1, 2, 3]: insertion 0, .4, .7, .9, 1 on area 0, .25, .5, .75, 1
INS_PERFECT = 0.25 * ((0 + 0.4) / 2 + (0.4 + 0.7) / 2 + (0.7 + 0.9) / 2 + (0.9 + 1.0) / 2)  # 0.625
DEL_PERFECT = 0.25 * ((1 + 0.6) / 2 + (0.6 + 0.3) / 2 + (0.3 + 0.1) / 2 + (0.1 + 0) / 2)  # 0.375


# ------------------------------------------------------------------ auc / highest confidence


def test_auc_linear_step_constant():
    x = torch.linspace(0, 1, 11)
    assert auc(x, x) == pytest.approx(0.5)
    assert auc([0, 0.5, 0.5, 1], [0, 0, 1, 1]) == pytest.approx(0.5)  # a step at 0.5
    assert auc(x, torch.full((11,), 0.3)) == pytest.approx(0.3)


def test_auc_rejects_non_monotonic_x():
    with pytest.raises(InputError, match="monotonic"):
        auc([0, 1, 0.5], [1, 1, 1])


def test_auc_rejects_length_mismatch():
    with pytest.raises(InputError, match="same length"):
        auc([0, 1], [0, 1, 2])


def test_auc_rejects_nan():
    with pytest.raises(InputError, match="NaN"):
        auc([0.0, 1.0], [0.0, float("nan")])


def test_auc_rejects_single_point():
    with pytest.raises(InputError, match="2 points"):
        auc([0.0], [1.0])


def test_highest_confidence_on_known_curve():
    area = torch.tensor([0, 0.25, 0.5, 0.75, 1.0])
    curve = torch.tensor([0.0, 0.4, 0.7, 0.9, 1.0])
    assert highest_confidence(curve, area, max_area=0.5) == pytest.approx(0.7)
    assert highest_confidence(curve, area, max_area=0.3) == pytest.approx(0.4)
    assert highest_confidence(Curves(area, curve, curve.flip(0), "region", 1), max_area=1.0) == pytest.approx(1.0)


def test_highest_confidence_requires_area_for_tensor():
    with pytest.raises(InputError, match="area"):
        highest_confidence(torch.tensor([0.0, 1.0]))


# ------------------------------------------------------------------ insertion / deletion


def test_region_curves_match_hand_computed_values_and_cost():
    model = RegionModel()
    with count_passes(model) as c:
        cur = insertion_deletion(model, X, torch.tensor([0, 1, 2, 3]), 1, regions=REGIONS, output="logit")
    assert c.forward == 8 == cur.n_forward  # 2R: the empty and full images serve both curves
    assert torch.allclose(cur.area, torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    assert torch.allclose(cur.insertion, torch.tensor([0, 0.4, 0.7, 0.9, 1.0], dtype=torch.float64))
    assert torch.allclose(cur.deletion, torch.tensor([1, 0.6, 0.3, 0.1, 0.0], dtype=torch.float64))
    assert cur.insertion_auc == pytest.approx(INS_PERFECT)
    assert cur.deletion_auc == pytest.approx(DEL_PERFECT)
    assert cur.protocol == "region" and cur.order.tolist() == [0, 1, 2, 3]


def test_perfect_order_beats_reversed_order():
    model = RegionModel()
    good = insertion_deletion(model, X, [0, 1, 2, 3], 1, regions=REGIONS, output="logit")
    bad = insertion_deletion(model, X, [3, 2, 1, 0], 1, regions=REGIONS, output="logit")
    assert bad.insertion_auc == pytest.approx(0.375) and bad.deletion_auc == pytest.approx(0.625)
    assert good.insertion_auc > bad.insertion_auc and good.deletion_auc < bad.deletion_auc


def test_pixel_map_region_scores_and_attribution_give_same_curves():
    model = RegionModel()
    ref = insertion_deletion(model, X, [0, 1, 2, 3], 1, regions=REGIONS, output="logit")
    from_map = insertion_deletion(model, X, WMAP, 1, regions=REGIONS, output="logit")
    from_scores = insertion_deletion(model, X, REGION_W.clone(), 1, regions=REGIONS, output="logit")
    attr = Attribution(WMAP[None], "pixels", "truth", torch.tensor([1]))
    from_attr = insertion_deletion(model, X, attr, regions=REGIONS, output="logit")  # target from the Attribution
    for c in (from_map, from_scores, from_attr):
        assert torch.allclose(c.insertion, ref.insertion) and torch.allclose(c.deletion, ref.deletion)


def test_region_and_patch_attributions():
    model = RegionModel()
    reg = Attribution(REGION_W[None].clone(), "regions", "truth", torch.tensor([1]), meta={"regions": REGIONS})
    patches = Attribution(REGION_W.view(1, 2, 2).clone(), "patches", "truth", torch.tensor([1]))
    for a in (reg, patches):
        c = insertion_deletion(model, X, a, output="logit")
        assert c.insertion_auc == pytest.approx(INS_PERFECT)


def test_pixel_protocol_steps_and_cost():
    model = RegionModel()
    with count_passes(model) as c:
        cur = insertion_deletion(model, X, WMAP, 1, protocol="pixel", output="logit")
    assert cur.area.shape[0] == 51 and c.forward == 100  # 50 steps of 2 %, both curves, shared ends
    assert cur.protocol == "pixel" and cur.order is None
    assert cur.insertion[0] == 0 and cur.insertion[-1] == pytest.approx(1.0)
    # 4 pixels per step on 16 pixels = one quadrant per step = the region protocol with the perfect order
    coarse = insertion_deletion(model, X, WMAP, 1, protocol="pixel", pixel_step=0.25, output="logit")
    assert torch.allclose(coarse.insertion, torch.tensor([0, 0.4, 0.7, 0.9, 1.0], dtype=torch.float64))


def test_baseline_sets_the_empty_score():
    cur = insertion_deletion(RegionModel(), X, [0, 1, 2, 3], 1, regions=REGIONS, baseline=0.5, output="logit")
    assert cur.insertion[0] == pytest.approx(0.5) and cur.deletion[-1] == pytest.approx(0.5)


def test_batch_returns_mean_aucs():
    model = RegionModel()
    xs = torch.ones(2, 3, 4, 4)
    orders = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    cs = insertion_deletion_batch(model, xs, orders, 1, regions=REGIONS, output="logit")
    assert isinstance(cs, CurveSet) and len(cs) == 2
    assert cs.insertion_auc.tolist() == pytest.approx([INS_PERFECT, 0.375])
    assert cs.mean_insertion_auc == pytest.approx((INS_PERFECT + 0.375) / 2)
    assert cs.mean_deletion_auc == pytest.approx((DEL_PERFECT + 0.625) / 2)
    mean = cs.mean_curves()
    assert torch.allclose(mean.insertion, (cs[0].insertion + cs[1].insertion) / 2)
    attr = Attribution(torch.stack([WMAP, -WMAP]), "pixels", "m", torch.tensor([1, 1]))
    cs2 = insertion_deletion_batch(model, xs, attr, regions=REGIONS, output="logit")
    assert cs2.insertion_auc.tolist() == pytest.approx([INS_PERFECT, 0.375])


def test_batch_rejects_wrong_number_of_maps():
    with pytest.raises(InputError, match="maps"):
        insertion_deletion_batch(RegionModel(), torch.ones(2, 3, 4, 4), WMAP[None], 1, regions=REGIONS)


def test_batch_rejects_wrong_number_of_targets():
    with pytest.raises(InputError, match="target"):
        insertion_deletion_batch(RegionModel(), torch.ones(2, 3, 4, 4), torch.stack([WMAP, WMAP]), [1, 1, 1])


def test_insertion_rejects_nan_map():
    bad = WMAP.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InputError, match="order_or_map"):
        insertion_deletion(RegionModel(), X, bad, 1, regions=REGIONS)


def test_insertion_rejects_map_shape_mismatch():
    with pytest.raises(InputError, match="map"):
        insertion_deletion(RegionModel(), X, torch.rand(5, 5), 1, regions=REGIONS)


def test_insertion_rejects_wrong_number_of_region_scores():
    with pytest.raises(InputError, match="regions"):
        insertion_deletion(RegionModel(), X, torch.rand(3), 1, regions=REGIONS)


def test_insertion_rejects_non_permutation_order():
    with pytest.raises(InputError, match="permutation"):
        insertion_deletion(RegionModel(), X, [0, 1, 1, 3], 1, regions=REGIONS)


def test_insertion_requires_regions_for_region_protocol():
    with pytest.raises(InputError, match="regions"):
        insertion_deletion(RegionModel(), X, WMAP, 1)


def test_insertion_pixel_protocol_rejects_an_order():
    with pytest.raises(InputError, match="pixel map"):
        insertion_deletion(RegionModel(), X, [0, 1, 2, 3], 1, protocol="pixel")


def test_insertion_pixel_protocol_rejects_regions():
    with pytest.raises(InputError, match="regions"):
        insertion_deletion(RegionModel(), X, WMAP, 1, protocol="pixel", regions=REGIONS)


def test_insertion_rejects_bad_protocol():
    with pytest.raises(InputError, match="protocol"):
        insertion_deletion(RegionModel(), X, WMAP, 1, regions=REGIONS, protocol="superpixel")


def test_insertion_requires_target():
    with pytest.raises(InputError, match="target"):
        insertion_deletion(RegionModel(), X, WMAP, regions=REGIONS)


def test_insertion_rejects_target_out_of_range():
    with pytest.raises(InputError, match="target"):
        insertion_deletion(RegionModel(), X, WMAP, 5, regions=REGIONS)


def test_insertion_rejects_a_batch_of_images():
    with pytest.raises(InputError, match="batch"):
        insertion_deletion(RegionModel(), torch.ones(2, 3, 4, 4), WMAP, 1, regions=REGIONS)


def test_insertion_rejects_multi_example_attribution():
    attr = Attribution(torch.stack([WMAP, WMAP]), "pixels", "m", torch.tensor([1, 1]))
    with pytest.raises(InputError, match="examples"):
        insertion_deletion(RegionModel(), X, attr, regions=REGIONS)


def test_insertion_rejects_token_attribution():
    attr = Attribution(torch.rand(1, 4), "tokens", "m", torch.tensor([1]))
    with pytest.raises(InputError, match="tokens"):
        insertion_deletion(RegionModel(), X, attr, regions=REGIONS)


def test_insertion_rejects_bad_pixel_step():
    with pytest.raises(InputError, match="pixel_step"):
        insertion_deletion(RegionModel(), X, WMAP, 1, protocol="pixel", pixel_step=1.5)


def test_insertion_rejects_nan_model_output():
    with pytest.raises(InputError, match="NaN"):
        insertion_deletion(NaNModel(), X, WMAP, 1, regions=REGIONS)


def test_region_scores_and_order():
    rs = region_scores(WMAP, REGIONS)
    assert torch.allclose(rs, REGION_W)
    assert torch.allclose(region_scores(WMAP, REGIONS, "mean"), REGION_W / 4)
    assert torch.allclose(region_scores(-WMAP, REGIONS, "abs_sum"), REGION_W)
    assert order_from_scores(torch.tensor([0.1, 0.5, 0.5, 0.2])).tolist() == [1, 2, 3, 0]  # stable ties


def test_region_scores_rejects_shape_mismatch():
    with pytest.raises(InputError, match="regions"):
        region_scores(torch.rand(5, 5), REGIONS)

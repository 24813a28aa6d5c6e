"""Tests of xattr_nb.methods.lima: analytic set functions with known rankings, exact forward counts, free curves."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xattr_nb.attribution import attribute
from xattr_nb.checks import InputError
from xattr_nb.kernels import count_passes, grid_regions
from xattr_nb.methods import lima as L
from xattr_nb.metrics import Curves, insertion_deletion

H = W = 8
GRID = 4  # 16 regions of 2x2
WEIGHTS = torch.tensor([3.0, 9.0, 1.0, 14.0, 6.0, 0.5, 11.0, 4.0, 8.0, 2.0, 13.0, 7.0, 0.2, 10.0, 5.0, 12.0])


class RegionSum(nn.Module):
    """Two classes; logit_0 = 0.1 * sum_r w_r * (mean of region r's pixels, channel 0) - 5.4, logit_1 = 0.

    On an all-ones image the class-0 probability of a kept set S is sigmoid(0.1 * sum_{r in S} w_r - 5.4):
    strictly increasing in the weights kept, so every sensible ranking is "descending w".
    """

    def __init__(self, weights: torch.Tensor = WEIGHTS) -> None:
        super().__init__()
        self.register_buffer("w", weights)
        self.register_buffer("regions", grid_regions(H, W, GRID, GRID).float())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bhw,rhw->br", x[:, 0], self.regions) / 4.0  # region means [B, R]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 0.1 * (self.features(x) @ self.w) - 5.4  # unsaturated over the whole range
        return torch.stack([z, torch.zeros_like(z)], 1)


@pytest.fixture()
def setup():
    model = RegionSum().eval()
    x = torch.ones(3, H, W)
    regions = L.partition(x, grid=GRID)
    return model, x, regions


DESCENDING = torch.argsort(-WEIGHTS)


# -------------------------------------------------------------------------------- the counts


def test_forward_counts_match_spec_formula():
    c = L.forward_counts(16, 4)
    assert (c["spec_naive"], c["spec_bidirectional"]) == (272, 200)
    assert (c["naive"], c["bidirectional"], c["embeddings"]) == (274, 202, 16)
    c50 = L.forward_counts(50, 8)
    assert (c50["spec_naive"], c50["spec_bidirectional"]) == (2550, 1668)


@pytest.mark.parametrize("how", ["bidirectional", "greedy"])
def test_search_forward_count_is_exact(setup, how):
    model, x, regions = setup
    scorer = L.make_scorer(model, x, regions, 0, lambdas={"cons": 20, "colla": 5, "conf": 0.01, "eff": 0})
    with count_passes(model) as outer:
        ranking = L.search(scorer, pending=4, how=how, model=model)
    want = L.forward_counts(16, 4)["bidirectional" if how == "bidirectional" else "naive"]
    assert ranking.n_forward == want == outer.forward == scorer.n_forward


# -------------------------------------------------------------------------------- the ranking


@pytest.mark.parametrize("how", ["bidirectional", "greedy"])
def test_monotone_set_function_ranks_by_weight(setup, how):
    model, x, regions = setup
    scorer = L.make_scorer(model, x, regions, 0, lambdas={"cons": 20, "colla": 5, "conf": 0.0, "eff": 0})
    ranking = L.search(scorer, pending=4, how=how)
    assert ranking.order.tolist() == DESCENDING.tolist()


def test_region_distances_known_angles():
    x = torch.zeros(1, 4, 4)
    regions = grid_regions(4, 4, 2, 2)
    # The embedding of a single-region image is the one-hot of the region shown (orthogonal: d = 1/2),
    # except regions 2 and 3, which embed to the same direction (d = 0).
    table = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 2.0]])

    def embed(im):
        shown = torch.einsum("bhw,rhw->br", im[:, 0], regions.float())
        return shown @ table

    d = L.region_distances(embed, x + 1.0, regions)
    want = torch.full((4, 4), 0.5)
    want[2, 3] = want[3, 2] = 0.0
    want.fill_diagonal_(0.0)
    assert torch.allclose(d, want, atol=1e-3)


def test_effectiveness_term_uses_distances():
    d = torch.full((16, 16), 0.25)
    terms = L.lima_terms(0, d)
    members = torch.zeros(2, 16, dtype=torch.bool)
    members[0, :3] = True  # three regions, each nearest at 0.25
    members[1, 5] = True  # a single region scores 0
    assert terms["eff"](None, None, members).tolist() == pytest.approx([0.75, 0.0])


# -------------------------------------------------------------------------------- curves and map


def test_make_scorer_default_lambdas_need_distances(setup):
    model, x, regions = setup
    with pytest.raises(InputError, match="distances"):  # the default lambdas weigh effectiveness
        L.make_scorer(model, x, regions, 0)


@pytest.mark.parametrize("how", ["bidirectional", "greedy"])
def test_curves_from_ranking_match_insertion_deletion(setup, how):
    model, x, regions = setup
    dist = L.region_distances(model.features, x, regions)
    scorer = L.make_scorer(model, x, regions, 0, distances=dist)
    ranking = L.search(scorer, pending=4, how=how)
    free = L.curves_from_ranking(ranking, regions, 0)
    measured = insertion_deletion(model, x, ranking.order, 0, regions=regions)
    assert torch.allclose(free.insertion, measured.insertion, atol=1e-6)
    assert torch.allclose(free.deletion, measured.deletion, atol=1e-6)
    assert free.insertion_auc == pytest.approx(measured.insertion_auc, abs=1e-6)


def test_attribution_map_is_bright_first_and_monotone(setup):
    model, x, regions = setup
    scorer = L.make_scorer(model, x, regions, 0, lambdas={"cons": 20, "colla": 5, "conf": 0.0, "eff": 0})
    ranking = L.search(scorer, pending=4)
    m = L.attribution_map(ranking, regions)
    per_region = torch.stack([m[r].mean() for r in regions])
    along = per_region[ranking.order]
    assert float(along[0]) == pytest.approx(1.0) and float(along.min()) == pytest.approx(0.0)
    assert bool((along[1:] <= along[:-1] + 1e-6).all())


def test_highest_confidence_at_known_curve():
    area = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    c1 = Curves(area, torch.tensor([0.0, 0.4, 0.2, 0.9, 0.5]), torch.zeros(5), "region", 0)
    c2 = Curves(area, torch.tensor([0.1, 0.1, 0.6, 0.6, 0.6]), torch.zeros(5), "region", 0)
    hc = L.highest_confidence_at([c1, c2], areas=(0.25, 0.5, 1.0))
    assert hc == pytest.approx({0.25: 0.25, 0.5: 0.5, 1.0: 0.75})


# -------------------------------------------------------------------------------- entry point and helpers


def test_explain_batch_orders_and_cost(setup):
    model, x, _ = setup
    images = torch.stack([x, x])
    attr = L.explain(model, images, 0, grid=GRID, pending=4)
    assert attr.scores.shape == (2, H, W) and attr.method == "lima"
    assert attr.meta["order"].tolist() == [DESCENDING.tolist()] * 2
    per_image = L.forward_counts(16, 4)["bidirectional"] + 16
    assert attr.cost.forward == 2 * per_image


def test_registered_with_attribute(setup):
    model, x, _ = setup
    attr = attribute(model, x[None], 0, method="lima", grid=GRID, lambdas={"cons": 1, "colla": 1, "eff": 0})
    assert attr.meta["order"][0].tolist() == DESCENDING.tolist()


def test_misclassified_indices():
    class Always0(nn.Module):
        def forward(self, x):
            return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], 1)

    labels = torch.tensor([0, 1, 0, 1, 1])
    idx = L.misclassified(Always0(), torch.zeros(5, 1, 4, 4), labels, 2)
    assert idx.tolist() == [1, 3]


def test_run_baselines_region_windows(setup):
    model, x, regions = setup
    out = L.run_baselines(model, x[None], 0, regions, methods=["occlusion", "feature_ablation"])
    assert out["occlusion"].meta["window"] == (2, 2)
    # On the all-ones image, ablating region r drops the logit by w_r: both methods recover the weights.
    fa = torch.stack([out["feature_ablation"].scores[0][r].mean() for r in regions])
    assert torch.argsort(-fa).tolist() == DESCENDING.tolist()


def test_show_regions_and_ranking_return_figures(setup):
    from matplotlib.figure import Figure

    model, x, regions = setup
    dist = L.region_distances(model.features, x, regions)
    fig = L.show_regions(x, regions, dist, title="all ones")
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "all ones"
    assert len(fig.axes[0].texts) == 16  # every region numbered
    ranking = L.search(L.make_scorer(model, x, regions, 0, distances=dist), pending=4)
    fig = L.show_ranking(x, ranking, regions, 0, label="class 0")
    free = L.curves_from_ranking(ranking, regions, 0)
    ins_line = fig.axes[2].lines[0]
    assert torch.allclose(torch.as_tensor(ins_line.get_ydata()).double(), free.insertion.double(), atol=1e-6)


def test_show_regions_rejects_wrong_distances(setup):
    _, x, regions = setup
    with pytest.raises(InputError, match="distances"):
        L.show_regions(x, regions, torch.zeros(3, 3))


# -------------------------------------------------------------------------------- full scale (local stand-in)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    from xattr_nb.models.text import word_tokenizer

    tok = word_tokenizer(["a", "photo", "of", "the", "circle", "square", "red", "blue"])
    cfg = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "eos_token_id": 2},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_clip")
    CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_zero_shot_clip_loads_and_explains(tiny_clip_dir):
    model = L.load_zero_shot_clip(tiny_clip_dir, ["circle", "square"], templates=["a photo of the {}"])
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        f = model.features(x)
    assert logits.shape == (1, 2) and bool((logits.abs() <= 100.0 + 1e-4).all())
    assert torch.allclose(f.norm(dim=1), torch.ones(1), atol=1e-5)
    attr = L.explain(model, x, 1, grid=2, pending=1)
    assert sorted(attr.meta["order"][0].tolist()) == [0, 1, 2, 3]
    assert attr.cost.forward == L.forward_counts(4, 1)["bidirectional"] + 4


# -------------------------------------------------------------------------------- bad input, one case each


def test_partition_rejects_batch():
    with pytest.raises(InputError, match="image"):
        L.partition(torch.zeros(1, 3, 8, 8))


def test_make_scorer_rejects_unknown_lambda(setup):
    model, x, regions = setup
    with pytest.raises(InputError, match="lambdas"):
        L.make_scorer(model, x, regions, 0, lambdas={"lambda1": 1.0})


def test_make_scorer_rejects_negative_lambda(setup):
    model, x, regions = setup
    with pytest.raises(InputError, match="lambdas"):
        L.make_scorer(model, x, regions, 0, lambdas={"cons": -1.0, "eff": 0})


def test_make_scorer_rejects_wrong_distances(setup):
    model, x, regions = setup
    with pytest.raises(InputError, match="distances"):
        L.make_scorer(model, x, regions, 0, distances=torch.zeros(4, 4))


def test_make_scorer_rejects_non_model(setup):
    _, x, regions = setup
    with pytest.raises(InputError, match="model"):
        L.make_scorer(lambda im: im, x, regions, 0)


def test_search_rejects_plain_callable():
    with pytest.raises(InputError, match="scorer"):
        L.search(lambda m: m.sum(1).double())


def test_search_rejects_bad_how(setup):
    model, x, regions = setup
    with pytest.raises(InputError, match="how"):
        L.search(L.make_scorer(model, x, regions, 0, lambdas={"eff": 0}), how="backward")


def test_search_rejects_zero_pending(setup):
    model, x, regions = setup
    with pytest.raises(InputError, match="pending"):
        L.search(L.make_scorer(model, x, regions, 0, lambdas={"eff": 0}), pending=0)


def test_curves_from_ranking_rejects_wrong_regions(setup):
    model, x, regions = setup
    ranking = L.search(L.make_scorer(model, x, regions, 0, lambdas={"eff": 0}))
    with pytest.raises(InputError, match="regions"):
        L.curves_from_ranking(ranking, grid_regions(H, W, 2, 2), 0)


def test_region_distances_rejects_non_callable(setup):
    _, x, regions = setup
    with pytest.raises(InputError, match="embed_fn"):
        L.region_distances("features", x, regions)


def test_explain_rejects_target_out_of_range(setup):
    model, x, _ = setup
    with pytest.raises(InputError, match="target"):
        L.explain(model, x[None], 5, grid=GRID)


def test_explain_rejects_eff_without_embeddings(setup):
    _, x, _ = setup

    class NoFeatures(nn.Module):
        def forward(self, im):
            return im.flatten(1)[:, :2]

    with pytest.raises(InputError, match="embed_fn"):
        L.explain(NoFeatures(), x[None], 0, grid=GRID)


def test_explain_rejects_unbatched_images(setup):
    model, x, _ = setup
    with pytest.raises(InputError, match="images"):
        L.explain(model, x, 0)


def test_misclassified_rejects_too_few(setup):
    model, x, _ = setup
    with pytest.raises(InputError, match="wrong"):
        L.misclassified(model, x[None].repeat(2, 1, 1, 1), torch.tensor([0, 0]), 1)


def test_highest_confidence_at_rejects_empty():
    with pytest.raises(InputError, match="curves"):
        L.highest_confidence_at([])


def test_run_baselines_rejects_unknown_method(setup):
    model, x, regions = setup
    with pytest.raises(InputError, match="methods"):
        L.run_baselines(model, x[None], 0, regions, methods=["lime"])


def test_load_zero_shot_clip_rejects_empty_classes(tiny_clip_dir):
    with pytest.raises(InputError, match="class_names"):
        L.load_zero_shot_clip(tiny_clip_dir, [])


def test_load_zero_shot_clip_rejects_template_without_slot(tiny_clip_dir):
    with pytest.raises(InputError, match="templates"):
        L.load_zero_shot_clip(tiny_clip_dir, ["circle"], templates=["a photo"])


def test_load_zero_shot_clip_rejects_missing_folder(tmp_path):
    with pytest.raises(InputError, match=r"folder|path"):
        L.load_zero_shot_clip(str(tmp_path / "nope" / "model"), ["circle"])


def test_sigmoid_model_sanity():
    # The analytic model really is sigmoid(0.1 sum w - 5.4) on kept regions (guards the other tests' premise).
    model = RegionSum()
    x = torch.ones(1, 3, H, W)
    p = model(x).softmax(-1)[0, 0]
    assert float(p) == pytest.approx(1 / (1 + math.exp(-(0.1 * float(WEIGHTS.sum()) - 5.4))), rel=1e-5)

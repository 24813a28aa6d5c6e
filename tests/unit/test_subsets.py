"""Subset search: greedy and bidirectional greedy on set functions with known optima, exact pass counts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from xattr_nb.attribution.result import Attribution
from xattr_nb.attribution.subsets import (
    Ranking,
    SetScorer,
    arccos_distances,
    bidirectional_cost,
    bidirectional_greedy_search,
    collaboration,
    consistency,
    effectiveness,
    entropy_confidence,
    greedy_cost,
    greedy_search,
    greedy_step,
    ranking_to_attribution,
    ranking_to_map,
)
from xattr_nb.checks import InputError
from xattr_nb.kernels import grid_regions, subset_keep


def modular(w: torch.Tensor):
    """F(S) = sum of the weights of S (an additive set function)."""
    return lambda members: members.double() @ w.double()


def coverage(sets: list[set[int]]):
    """F(S) = size of the union of the chosen sets: monotone submodular."""

    def f(members: torch.Tensor) -> torch.Tensor:
        return torch.tensor(
            [float(len(set().union(*[sets[r] for r in torch.nonzero(m).flatten().tolist()]))) for m in members]
        )

    return f


class MeanIntensity(nn.Module):
    """'Probabilities' [s, 1 - s] with s the mean of channel 0: additive over disjoint regions (baseline 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, 0].mean((1, 2))
        return torch.stack([s, 1 - s], 1)


def region_image(values: list[float], rows: int, cols: int, cell: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    regions = grid_regions(rows * cell, cols * cell, rows, cols)
    img = torch.einsum("r,rhw->hw", torch.tensor(values), regions.float())
    return img.expand(3, -1, -1).clone(), regions


# ----------------------------------------------------------------------------- greedy


def test_greedy_on_a_modular_function_returns_the_descending_order():
    w = torch.tensor([0.3, -0.2, 0.9, 0.1, 0.5, -0.7, 0.0])
    r = greedy_search(modular(w), 7, evaluate_empty=True)
    assert r.order.tolist() == torch.argsort(-w).tolist()
    assert torch.allclose(r.scores, torch.sort(w, descending=True).values.double().cumsum(0))
    assert torch.allclose(r.gains, torch.sort(w, descending=True).values.double())  # start_score is F({}) = 0
    assert r.start_score == 0.0 and r.n_selected == 7 and r.method == "greedy"


def test_bidirectional_on_a_modular_function_returns_the_descending_order():
    w = torch.tensor([0.3, -0.2, 0.9, 0.1, 0.5, -0.7, 0.0, 0.25, -0.4, 0.6])
    for pending in (1, 2, 4):
        r = bidirectional_greedy_search(modular(w), 10, pending=pending)
        assert r.order.tolist() == torch.argsort(-w).tolist(), pending


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_on_coverage_reaches_one_minus_one_over_e_of_the_optimum_for_every_k(seed):
    g = torch.Generator().manual_seed(seed)
    n_sets, universe = 8, 14
    sets = [set(torch.nonzero(torch.rand(universe, generator=g) < 0.3).flatten().tolist()) for _ in range(n_sets)]
    f = coverage(sets)
    r = greedy_search(f, n_sets)
    for k in range(1, n_sets + 1):
        best = max(len(set().union(*[sets[i] for i in c])) for c in itertools.combinations(range(n_sets), k))
        assert r.scores[k - 1] >= (1 - 1 / math.e) * best - 1e-9, (k, float(r.scores[k - 1]), best)


def test_greedy_with_k_appends_the_rest_by_their_last_step_scores():
    w = torch.tensor([0.3, -0.2, 0.9, 0.1, 0.5])
    r = greedy_search(modular(w), 5, k=2)
    assert r.order.tolist() == [2, 4, 0, 3, 1]
    assert r.n_selected == 2 and r.n_evaluations == 5 + 4 == greedy_cost(5, 2)
    assert torch.isnan(r.scores[2:]).all() and not torch.isnan(r.scores[:2]).any()


def test_greedy_ties_pick_the_lowest_index():
    r = greedy_search(modular(torch.zeros(4)), 4)
    assert r.order.tolist() == [0, 1, 2, 3]


def test_greedy_step_scores_every_remaining_region():
    w = torch.tensor([1.0, 2.0, 3.0])
    cand, scores = greedy_step(modular(w), torch.tensor([False, True, False]))
    assert cand.tolist() == [0, 2]
    assert scores.tolist() == [3.0, 5.0]


# ----------------------------------------------------------------------------- exact counts


def test_cost_formulas():
    assert greedy_cost(16) == 136 and greedy_cost(50) == 1275  # R(R+1)/2
    assert greedy_cost(5, 2) == 9 and greedy_cost(4, evaluate_empty=True) == 11
    # LiMA spec: forwards = 2 x evaluations; 200 vs 272 at R=16, p=4 and 1668 vs 2550 at R=50, p=8.
    assert 2 * bidirectional_cost(16, 4) == 200
    assert 2 * bidirectional_cost(50, 8) == 1668
    assert bidirectional_cost(16, 16) == greedy_cost(16)  # no backward step at all
    assert greedy_cost(16) / bidirectional_cost(16, 4) >= 1.25


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_naive_greedy_counts_every_evaluation_and_forward_exactly(n):
    model = MeanIntensity()
    x, regions = region_image([0.1 * (i + 1) for i in range(n)], 1, n)
    scorer = SetScorer(model, x, regions, {"cons": consistency(0), "colla": collaboration(0)})
    r = greedy_search(scorer, n, model=model)
    assert r.n_evaluations == n * (n + 1) // 2 == greedy_cost(n)
    assert r.n_forward == n * (n + 1)  # kept + complement image per subset, measured by count_passes
    assert scorer.n_forward == n * (n + 1) and scorer.n_evaluations == r.n_evaluations
    assert r.order.tolist() == list(range(n))[::-1]  # brightest region first
    assert r.cost.forward == r.n_forward and r.wall_s > 0


@pytest.mark.parametrize(("n", "pending"), [(16, 4), (9, 3), (10, 1), (5, 8)])
def test_bidirectional_counts_match_the_formula(n, pending):
    model = MeanIntensity()
    x, regions = region_image([((7 * i) % n) / n for i in range(n)], 1, n)
    scorer = SetScorer(model, x, regions, {"cons": consistency(0), "colla": collaboration(0)})
    r = bidirectional_greedy_search(scorer, n, pending=pending, model=model)
    assert r.n_evaluations == bidirectional_cost(n, pending)
    assert r.n_forward == 2 * bidirectional_cost(n, pending)
    assert sorted(r.order.tolist()) == list(range(n))
    n_back = sum(1 for s in r.steps if s.direction == "backward")
    assert all(s.candidates.numel() == pending for s in r.steps if s.direction == "backward")
    assert n_back == len(range(n, pending, -2))


def test_bidirectional_saves_forwards_against_naive_greedy_at_lima_settings():
    model = MeanIntensity()
    vals = torch.rand(16, generator=torch.Generator().manual_seed(0)).tolist()
    x, regions = region_image(vals, 4, 4)
    terms = {"cons": consistency(0), "colla": collaboration(0)}
    naive = greedy_search(SetScorer(model, x, regions, terms), 16, model=model)
    bidir = bidirectional_greedy_search(SetScorer(model, x, regions, terms), 16, pending=4, model=model)
    assert (naive.n_forward, bidir.n_forward) == (272, 200)
    assert naive.order.tolist() == bidir.order.tolist()  # additive objective: both exact


# ----------------------------------------------------------------------------- SetScorer and terms


def test_setscorer_terms_and_complement_swap_match_direct_evaluation():
    model = MeanIntensity()
    vals = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2]
    x, regions = region_image(vals, 2, 3)
    scorer = SetScorer(model, x, regions, {"cons": consistency(0), "colla": collaboration(0)})
    r = bidirectional_greedy_search(scorer, 6, pending=2, evaluate_empty=True)
    assert torch.isfinite(r.scores).all() and torch.isfinite(r.terms["cons"]).all()
    # Every prefix set's terms, including those rebuilt from backward steps, equal a direct evaluation.
    for t in range(6):
        members = torch.zeros(1, 6, dtype=torch.bool)
        members[0, r.order[: t + 1]] = True
        total, terms = scorer.evaluate(members)
        assert float(total[0]) == pytest.approx(float(r.scores[t]), abs=1e-6)
        assert terms["cons"][0] == pytest.approx(float(r.terms["cons"][t]), abs=1e-6)
    # cons of a set = its share of the total intensity (additive): the full set gives the image mean.
    assert float(r.terms["cons"][-1]) == pytest.approx(sum(vals) / 6, abs=1e-6)
    assert r.start_terms["cons"] == pytest.approx(0.0) and r.start_terms["colla"] == pytest.approx(1 - sum(vals) / 6)


def test_setscorer_weights_scale_terms():
    model = MeanIntensity()
    x, regions = region_image([0.2, 0.6], 1, 2)
    s = SetScorer(model, x, regions, {"cons": consistency(0), "colla": collaboration(0)}, {"cons": 2.0, "colla": 0.0})
    total, terms = s.evaluate(torch.tensor([[True, False]]))
    assert float(total[0]) == pytest.approx(2 * 0.2 / 2)
    assert float(terms["colla"][0]) == pytest.approx(1 - 0.6 / 2)


def test_effectiveness_analytic():
    d = torch.tensor([[0.0, 0.2, 0.5], [0.2, 0.0, 0.4], [0.5, 0.4, 0.0]])
    members = torch.tensor([[True, True, True], [True, False, False], [True, False, True], [False] * 3])
    assert effectiveness(d, members).tolist() == pytest.approx([0.2 + 0.2 + 0.4, 0.0, 1.0, 0.0])


def test_arccos_distances_and_entropy_confidence():
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [5.0, 0.0]])
    d = arccos_distances(e)
    assert d[0, 1] == pytest.approx(0.5) and d[0, 2] == pytest.approx(1.0) and d[0, 3] == pytest.approx(0.0, abs=1e-3)
    p = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    assert entropy_confidence(p).tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


# ----------------------------------------------------------------------------- ranking -> map


def test_ranking_to_map_cumulative_gain_and_rank():
    regions = grid_regions(4, 4, 2, 2)
    r = Ranking(
        order=torch.tensor([3, 0, 2, 1]),
        scores=torch.tensor([0.5, 0.8, 0.9, 0.9], dtype=torch.float64),
        gains=torch.zeros(4),
        n_evaluations=0,
        n_forward=None,
        wall_s=0.0,
        method="test",
        n_selected=4,
        start_score=0.0,
    )
    # steps |0.5|, 0.3, 0.1, 0 -> v = -0.5, -0.8, -0.9, -0.9 -> min-max: 1, 0.25, 0, 0
    m = ranking_to_map(r, regions)
    per_region = (m.unsqueeze(0) * regions).flatten(1).sum(1) / 4
    assert per_region.tolist() == pytest.approx([0.25, 0.0, 0.0, 1.0])
    ranked = ranking_to_map(r.order, regions, how="rank")
    assert ((ranked.unsqueeze(0) * regions).flatten(1).sum(1) / 4).tolist() == pytest.approx([0.75, 0.25, 0.5, 1.0])
    attr = ranking_to_attribution(r, regions, target=1, kind="regions")
    assert isinstance(attr, Attribution) and attr.kind == "regions"
    assert attr.scores[0].tolist() == pytest.approx([0.25, 0.0, 0.0, 1.0])
    assert torch.equal(attr.meta["order"], r.order) and attr.target.tolist() == [1]
    pix = ranking_to_attribution(r, regions, target=0)
    assert pix.scores.shape == (1, 4, 4) and torch.equal(pix.scores[0], m)


def test_search_map_puts_the_brightest_region_first():
    model = MeanIntensity()
    x, regions = region_image([0.1, 0.9, 0.3, 0.5], 2, 2)
    scorer = SetScorer(model, x, regions, {"cons": consistency(0), "colla": collaboration(0)})
    r = greedy_search(scorer, 4, evaluate_empty=True)
    m = ranking_to_map(r, regions)
    assert float(m[regions[1]].mean()) == 1.0 and float(m.min()) == 0.0


# ----------------------------------------------------------------------------- bad inputs


def test_bad_score_fn_not_callable():
    with pytest.raises(InputError, match="score_fn"):
        greedy_search("nope", 3)  # type: ignore[arg-type]


def test_bad_n_regions():
    with pytest.raises(InputError, match="n_regions"):
        greedy_search(modular(torch.ones(3)), 0)


def test_bad_k_larger_than_regions():
    with pytest.raises(InputError, match="`k`"):
        greedy_search(modular(torch.ones(3)), 3, k=4)


def test_bad_pending():
    with pytest.raises(InputError, match="pending"):
        bidirectional_greedy_search(modular(torch.ones(3)), 3, pending=0)


def test_bad_score_fn_wrong_shape():
    with pytest.raises(InputError, match="one score per subset"):
        greedy_search(lambda m: torch.zeros(m.shape[0], 2), 3)


def test_bad_score_fn_nan():
    with pytest.raises(InputError, match="NaN"):
        greedy_search(lambda m: torch.full((m.shape[0],), float("nan")), 3)


def test_bad_n_regions_mismatch_with_scorer():
    x, regions = region_image([0.1, 0.2], 1, 2)
    scorer = SetScorer(MeanIntensity(), x, regions, {"cons": consistency(0)}, complement=False)
    with pytest.raises(InputError, match="n_regions"):
        greedy_search(scorer, 3)


def test_bad_scorer_weights_name():
    x, regions = region_image([0.1, 0.2], 1, 2)
    with pytest.raises(InputError, match="weights"):
        SetScorer(MeanIntensity(), x, regions, {"cons": consistency(0)}, {"conf": 1.0})


def test_bad_scorer_empty_terms():
    x, regions = region_image([0.1, 0.2], 1, 2)
    with pytest.raises(InputError, match="terms"):
        SetScorer(MeanIntensity(), x, regions, {})


def test_bad_scorer_regions_not_a_partition():
    x, regions = region_image([0.1, 0.2], 1, 2)
    with pytest.raises(InputError, match="overlap"):
        SetScorer(MeanIntensity(), x, torch.cat([regions, regions[:1]]), {"cons": consistency(0)})


def test_bad_collaboration_without_complement():
    x, regions = region_image([0.1, 0.2], 1, 2)
    scorer = SetScorer(MeanIntensity(), x, regions, {"colla": collaboration(0)}, complement=False)
    with pytest.raises(InputError, match="complement"):
        scorer(torch.tensor([[True, False]]))


def test_bad_members_columns():
    x, regions = region_image([0.1, 0.2], 1, 2)
    scorer = SetScorer(MeanIntensity(), x, regions, {"cons": consistency(0)})
    with pytest.raises(InputError, match="columns"):
        scorer(torch.ones(1, 3, dtype=torch.bool))


def test_bad_members_dtype():
    with pytest.raises(InputError, match="boolean"):
        subset_keep(grid_regions(4, 4, 2, 2), torch.ones(1, 4))


def test_bad_term_target_out_of_range():
    x, regions = region_image([0.1, 0.2], 1, 2)
    scorer = SetScorer(MeanIntensity(), x, regions, {"cons": consistency(5)})
    with pytest.raises(InputError, match="target"):
        scorer(torch.tensor([[True, False]]))


def test_bad_greedy_step_nothing_left():
    with pytest.raises(InputError, match="no candidate"):
        greedy_step(modular(torch.ones(2)), torch.ones(2, dtype=torch.bool))


def test_bad_effectiveness_not_square():
    with pytest.raises(InputError, match="square"):
        effectiveness(torch.zeros(2, 3), torch.ones(1, 2, dtype=torch.bool))


def test_bad_ranking_to_map_incomplete_trajectory():
    r = bidirectional_greedy_search(modular(torch.arange(6.0)), 6, pending=2)
    assert torch.isnan(r.scores).any()  # a plain callable cannot score the complement prefixes
    with pytest.raises(InputError, match="NaN"):
        ranking_to_map(r, grid_regions(6, 6, 2, 3))


def test_bad_ranking_to_map_order_without_values():
    with pytest.raises(InputError, match="cumulative_gain"):
        ranking_to_map(torch.arange(4), grid_regions(4, 4, 2, 2))


def test_bad_ranking_to_map_how():
    with pytest.raises(InputError, match="how"):
        ranking_to_map(torch.arange(4), grid_regions(4, 4, 2, 2), how="linear")


def test_bad_ranking_to_attribution_kind():
    r = greedy_search(modular(torch.arange(4.0)), 4)
    with pytest.raises(InputError, match="kind"):
        ranking_to_attribution(r, grid_regions(4, 4, 2, 2), 0, kind="patches")


def test_bad_prescreen_output():
    with pytest.raises(InputError, match="prescreen"):
        bidirectional_greedy_search(modular(torch.arange(6.0)), 6, pending=2, prescreen=lambda c, s, b: torch.zeros(1))


def test_bad_search_batch_size_with_a_setscorer():
    x, regions = region_image([0.1, 0.2], 1, 2)
    scorer = SetScorer(MeanIntensity(), x, regions, {"cons": consistency(0)})
    with pytest.raises(InputError, match="batch_size"):
        greedy_search(scorer, 2, batch_size=1)

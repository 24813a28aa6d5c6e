"""DiFull / GridPG grid localization: analytic maps with known cell shares."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError
from xattr_nb.metrics import grid_accuracy, grid_cell_mass, grid_localization, localization_summary
from xattr_nb.worlds.grids import cell_mask


def test_all_positive_mass_in_the_target_cell_scores_one():
    m = torch.zeros(2, 8, 8)
    m[0][cell_mask(2, 4, 0)] = 1.0
    m[1][cell_mask(2, 4, 3)] = 2.0
    m[1][cell_mask(2, 4, 1)] = -5.0  # negative evidence elsewhere is ignored
    assert grid_localization(m, torch.tensor([0, 3]), 2).tolist() == [1.0, 1.0]
    assert grid_localization(m, torch.tensor([1, 0]), 2).tolist() == [0.0, 0.0]


def test_uniform_map_scores_chance_and_masses_are_shares():
    m = torch.ones(1, 6, 6)
    assert grid_localization(m, 2, 3).tolist() == pytest.approx([1 / 9])
    masses = grid_cell_mass(m, 3)
    assert masses.shape == (1, 9) and float(masses.sum()) == pytest.approx(1.0)


def test_mixed_map_share():
    m = torch.zeros(1, 4, 4)
    m[0, :2, :2] = 3.0  # cell 0
    m[0, 2:, 2:] = 1.0  # cell 3
    assert grid_localization(m, 0, 2).tolist() == pytest.approx([0.75])
    assert grid_localization(m, 3, 2).tolist() == pytest.approx([0.25])


def test_map_without_positive_mass_scores_zero():
    assert grid_localization(-torch.ones(1, 4, 4), 0, 2).tolist() == [0.0]
    assert grid_localization(torch.zeros(1, 4, 4), 0, 2).tolist() == [0.0]


def test_coarse_map_upsampling_nearest_is_exact_bilinear_leaks():
    coarse = torch.zeros(1, 2, 2)
    coarse[0, 0, 0] = 1.0  # a final-layer map that lights only cell 0
    assert grid_localization(coarse, 0, 2, size=16, upsample="nearest").tolist() == [1.0]
    leaky = float(grid_localization(coarse, 0, 2, size=16, upsample="bilinear")[0])
    assert 0.5 < leaky < 1.0


def test_grid_accuracy_and_attribution_input():
    m = torch.zeros(3, 4, 4)
    m[0, :2, :2] = 1.0  # cell 0 wins
    m[1, :2, :2] = 1.0
    m[1, :2, 2:] = 1.0  # tie between cells 0 and 1: a miss
    attr = Attribution(scores=m, kind="pixels", method="x", target=torch.zeros(3, dtype=torch.long))
    assert grid_accuracy(attr, torch.tensor([0, 0, 0]), 2).tolist() == [True, False, False]


def test_localization_summary():
    s = localization_summary(torch.tensor([1.0, 0.5, 0.0, 0.2]), scale=2)
    assert s["mean"] == pytest.approx(0.425)
    assert s["frac_perfect"] == 0.25 and s["frac_zero"] == 0.25 and s["frac_above_chance"] == 0.5
    assert s["chance"] == 0.25 and s["n"] == 4


def test_bad_cell_index_out_of_range():
    with pytest.raises(InputError, match="cell_index"):
        grid_localization(torch.ones(1, 4, 4), torch.tensor([4]), 2)


def test_bad_cell_index_length():
    with pytest.raises(InputError, match="cell_index"):
        grid_localization(torch.ones(2, 4, 4), torch.tensor([0]), 2)


def test_bad_single_map():
    with pytest.raises(InputError, match="batch"):
        grid_localization(torch.ones(4, 4), 0, 2)


def test_bad_size():
    with pytest.raises(InputError, match="size"):
        grid_localization(torch.ones(1, 2, 2), 0, 2, size=(4, 4, 4))


def test_bad_upsample():
    with pytest.raises(InputError, match="upsample"):
        grid_localization(torch.ones(1, 2, 2), 0, 2, size=4, upsample="cubic")


def test_bad_scale_larger_than_map():
    with pytest.raises(InputError, match="scale"):
        grid_localization(torch.ones(1, 2, 2), 0, 3)


def test_bad_nan_map():
    with pytest.raises(InputError, match="NaN"):
        grid_localization(torch.full((1, 4, 4), float("nan")), 0, 2)


def test_bad_summary_scores_outside_unit_interval():
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        localization_summary(torch.tensor([1.5]), scale=2)

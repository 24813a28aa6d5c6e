"""Localization metrics: pointing games, energy, inside mass, IoU (hand-made maps, one test per bad input)."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError
from xattr_nb.metrics import (
    energy_pointing_game,
    inside_mass,
    mask_iou,
    pointing_game,
)

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


def test_pointing_game_any_maximum_counts_a_tie_inside():
    # Two tied maxima: (row 0, col 0) inside the box x0=0, y0=0, x1=2, y1=2; (row 3, col 3) outside.
    tie = torch.zeros(4, 4)
    tie[0, 0] = tie[3, 3] = 1.0
    box = [0, 0, 2, 2]
    assert bool(pointing_game(tie, box, ties="any"))
    assert not bool(pointing_game(tie, box))  # the default "all": the tie outside is a miss
    # Batched, with the cases where the two conventions agree: one maximum outside, one inside.
    out, inside = torch.zeros(4, 4), torch.zeros(4, 4)
    out[3, 3] = 1.0
    inside[1, 1] = 1.0
    maps = torch.stack([tie, out, inside, tie.flip(0)])  # flipped: maxima at (3, 0) and (0, 3), both outside
    assert pointing_game(maps, box, ties="any").tolist() == [True, False, True, False]
    assert pointing_game(maps, box, ties="all").tolist() == [False, False, True, False]
    # one mask per map, and an Attribution
    masks = torch.zeros(4, 4, 4, dtype=torch.bool)
    masks[:, 3, 3] = True
    assert pointing_game(maps, masks, ties="any").tolist() == [True, True, False, False]
    attr = Attribution(maps, "pixels", "m", torch.zeros(4, dtype=torch.long))
    assert pointing_game(attr, box, ties="any").tolist() == [True, False, True, False]


def test_pointing_game_any_maximum_on_a_flat_map_and_with_tolerance():
    flat = torch.ones(4, 4)
    assert bool(pointing_game(flat, [3, 3, 4, 4], ties="any"))  # every pixel is a maximum
    m = torch.zeros(6, 6)
    m[0, 5] = m[5, 5] = 1.0  # tied maxima at columns 5, both 2 columns right of the box x < 3
    assert not bool(pointing_game(m, [0, 0, 3, 6], ties="any", tolerance=2))
    assert bool(pointing_game(m, [0, 0, 3, 6], ties="any", tolerance=3))


def test_pointing_game_conventions_agree_on_a_unique_maximum():
    maps = torch.rand(20, 5, 7, generator=torch.Generator().manual_seed(0))  # ties have probability 0
    box = torch.tensor([1.0, 1.0, 4.0, 3.0])
    assert torch.equal(pointing_game(maps, box, ties="any"), pointing_game(maps, box, ties="all"))


def test_pointing_game_rejects_bad_ties():
    with pytest.raises(InputError, match="ties"):
        pointing_game(_peak_map(), [0, 0, 2, 2], ties="first")


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

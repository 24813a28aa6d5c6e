"""RISE and D-RISE: a model that reads a known region must light that region; seeded determinism; cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xattr_nb.attribution.rise  # noqa: F401  (registers "rise")
from xattr_nb.attribution import attribute
from xattr_nb.attribution.rise import drise, rise, rise_masks
from xattr_nb.checks import InputError


class RegionMean(nn.Module):
    """Logit 0 = mean of channel 0 inside rows 4..11, cols 8..15 of a 16x16 image; logit 1 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))  # a parameter so `attribute` finds the model's device
        self.mask = torch.zeros(16, 16, dtype=torch.bool)
        self.mask[4:12, 8:16] = True
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, 0][:, self.mask].mean(1) + self.w
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_rise_masks_shape_range_density_and_seed():
    m = rise_masks(2000, (16, 16), grid=4, p=0.3, seed=0)
    assert m.shape == (2000, 16, 16)
    assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    assert float(m.mean()) == pytest.approx(0.3, abs=0.03)
    assert torch.equal(rise_masks(50, (16, 16), seed=1), rise_masks(50, (16, 16), seed=1))
    assert not torch.equal(rise_masks(50, (16, 16), seed=1), rise_masks(50, (16, 16), seed=2))


def test_rise_is_higher_inside_the_region_the_model_reads():
    model = RegionMean()
    x = torch.ones(2, 3, 16, 16)
    sal, meta = rise(model, x, torch.tensor([0, 0]), n_masks=400, grid=4, output="logit", seed=0)
    assert sal.shape == (2, 16, 16) and meta["n_masks"] == 400
    inside, outside = sal[0][model.mask], sal[0][~model.mask]
    # S(px) = E[f * M(px)] / p. Far outside the region f and M(px) are nearly independent, so S ~ E[f] = p;
    # inside, keeping px raises f, so S is larger.
    assert float(inside.mean()) > float(outside.mean()) + 0.04
    assert float(inside.min()) > float(outside.mean())
    assert torch.equal(sal[0], sal[1])  # same masks for every image of the batch


def test_rise_seeded_determinism():
    model = RegionMean()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a, _ = rise(model, x, torch.tensor([0]), n_masks=50, seed=3)
    b, _ = rise(model, x, torch.tensor([0]), n_masks=50, seed=3)
    c, _ = rise(model, x, torch.tensor([0]), n_masks=50, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rise_through_attribute_measures_its_cost():
    model = RegionMean()
    x = torch.ones(3, 3, 16, 16)
    attr = attribute(model, x, 0, method="rise", n_masks=40, batch_size=16)
    assert attr.kind == "pixels" and attr.scores.shape == (3, 16, 16) and attr.method == "rise"
    assert attr.cost.forward == 3 * 40 and attr.cost.backward == 0


def test_drise_lights_the_region_a_detection_score_reads():
    model = RegionMean()

    def score(im: torch.Tensor) -> torch.Tensor:
        return model(im)[:, 0]

    sal = drise(score, torch.ones(3, 16, 16), n_masks=400, grid=4, seed=0)
    assert sal.shape == (16, 16)
    assert float(sal[model.mask].mean()) > float(sal[~model.mask].mean()) + 0.04


def test_bad_n_masks():
    with pytest.raises(InputError, match="n_masks"):
        rise_masks(0, (8, 8))


def test_bad_p_zero():
    with pytest.raises(InputError, match="`p`"):
        rise_masks(4, (8, 8), p=0.0)


def test_bad_grid_finer_than_image():
    with pytest.raises(InputError, match="grid"):
        rise_masks(4, (8, 8), grid=9)


def test_bad_grid_triple():
    with pytest.raises(InputError, match="grid"):
        rise_masks(4, (8, 8), grid=(2, 2, 2))


def test_bad_baseline_batch():
    with pytest.raises(InputError, match="baseline"):
        rise(
            RegionMean(), torch.ones(2, 3, 16, 16), torch.tensor([0, 0]), n_masks=4, baseline=torch.zeros(3, 3, 16, 16)
        )


def test_bad_target_length():
    with pytest.raises(InputError, match="target"):
        rise(RegionMean(), torch.ones(2, 3, 16, 16), torch.tensor([0]), n_masks=4)


def test_bad_output():
    with pytest.raises(InputError, match="output"):
        rise(RegionMean(), torch.ones(1, 3, 16, 16), torch.tensor([0]), n_masks=4, output="softmax")


def test_bad_unknown_keyword_through_attribute():
    with pytest.raises(InputError, match="does not take"):
        attribute(RegionMean(), torch.ones(1, 3, 16, 16), 0, method="rise", masks=4)


def test_bad_drise_score_shape():
    with pytest.raises(InputError, match="one score per image"):
        drise(lambda im: torch.zeros(im.shape[0], 2), torch.ones(3, 16, 16), n_masks=4)


def test_bad_drise_batch_of_images():
    with pytest.raises(InputError, match="one image"):
        drise(lambda im: im.mean((1, 2, 3)), torch.ones(2, 3, 16, 16), n_masks=4)

"""Robustness metrics: max-sensitivity, rank stability under noise, class recall under channel ablation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.metrics import class_recall, max_sensitivity, noise_spearman

X = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) + 1.0


def identity(inp: torch.Tensor, target: object) -> torch.Tensor:
    return inp


def constant(inp: torch.Tensor, target: object) -> torch.Tensor:
    return torch.ones(inp.shape[0], 8, 8)


# ------------------------------------------------------------------ max-sensitivity


def test_max_sensitivity_of_a_constant_explanation_is_zero():
    assert torch.equal(max_sensitivity(constant, X, 0), torch.zeros(4, dtype=torch.float64))
    assert torch.equal(max_sensitivity(identity, X, 0, radius=0.0, n_samples=3), torch.zeros(4, dtype=torch.float64))


def test_max_sensitivity_of_the_identity_is_bounded_by_the_ball():
    s = max_sensitivity(identity, X, 0, radius=0.02, n_samples=5, seed=3)
    bound = 0.02 * (3 * 64) ** 0.5 / X.flatten(1).norm(dim=1)  # ‖δ‖ ≤ r·√n for δ in the L∞ ball
    assert s.dtype == torch.float64 and s.shape == (4,)
    assert bool((s > 0).all()) and bool((s <= bound.double() + 1e-9).all())
    assert torch.equal(s, max_sensitivity(identity, X, 0, radius=0.02, n_samples=5, seed=3))
    assert not torch.equal(s, max_sensitivity(identity, X, 0, radius=0.02, n_samples=5, seed=4))


def test_max_sensitivity_leaves_the_global_generator_alone():
    torch.manual_seed(5)
    a = torch.rand(1)
    torch.manual_seed(5)
    max_sensitivity(identity, X[:2], torch.tensor([0, 1]), n_samples=2)
    assert torch.equal(torch.rand(1), a)


# ------------------------------------------------------------------ noise spearman


def test_noise_spearman_known_cases():
    assert noise_spearman(lambda inp, target: inp[:, 0], X, 0, sigma=0.0).tolist() == pytest.approx([1.0] * 4)
    fixed = torch.arange(64.0).reshape(8, 8)
    assert noise_spearman(
        lambda inp, target: fixed.expand(inp.shape[0], 8, 8), X, 0, sigma=1.0
    ).tolist() == pytest.approx([1.0] * 4)
    assert noise_spearman(constant, X, 0).tolist() == [0.0] * 4  # no ranking: no agreement


def test_noise_spearman_drops_with_noise_and_is_seeded():
    small = noise_spearman(identity, X, 0, sigma=0.01, seed=1)
    large = noise_spearman(identity, X, 0, sigma=1.0, seed=1)
    assert bool((large < small).all()) and bool((small > 0.9).all())
    assert torch.equal(small, noise_spearman(identity, X, 0, sigma=0.01, seed=1))


# ------------------------------------------------------------------ class recall


class TwoChannels(nn.Module):
    """``feat`` copies the image's two channels; the logits are their mean values (class = brighter channel)."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Conv2d(2, 2, 1, bias=False)
        with torch.no_grad():
            self.feat.weight.copy_(torch.eye(2)[:, :, None, None])
        self.head = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feat(x).mean((2, 3)))


def _two_class_images() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.full((6, 2, 4, 4), 0.2)
    x[:3, 0] = 1.0  # class 0: channel 0 bright
    x[3:, 1] = 1.0  # class 1: channel 1 bright
    return x, torch.tensor([0, 0, 0, 1, 1, 1])


def test_class_recall_with_and_without_ablation():
    model, (x, y) = TwoChannels(), _two_class_images()
    assert class_recall(model, x, y, 0) == 1.0
    y_wrong = y.clone()
    y_wrong[3] = 0  # a class-1 image labelled 0: predicted 1, so class 0's recall is 3 / 4
    assert class_recall(model, x, y_wrong, 0) == 0.75
    zero = torch.zeros(2)  # one value per channel
    assert class_recall(model, x, y, 0, ablate=[0], layer="feat", ref=zero) == 0.0  # channel 0 gone: all read as 1
    assert class_recall(model, x, y, 1, ablate=0, layer="feat", ref=zero) == 1.0  # class 1 never needed it
    maps = torch.zeros(2, 4, 4)  # one map per channel
    assert class_recall(model, x, y, 1, ablate=np.array([1]), layer="feat", ref=maps) == 0.0
    assert class_recall(model, x, y, 0) == 1.0  # the intervention ended with the call


def test_class_recall_reads_logits_from_an_output_object():
    class WithLogits(TwoChannels):
        def forward(self, x: torch.Tensor) -> object:
            return type("Out", (), {"logits": super().forward(x)})()

    x, y = _two_class_images()
    assert class_recall(WithLogits(), x, y, 1, ablate=[1], layer="feat", ref=torch.zeros(2)) == 0.0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"ablate": [0]}, "`layer` and `ref`"),
        ({"ablate": [0], "layer": "feat"}, "`layer` and `ref`"),
        ({"ablate": [2], "layer": "feat", "ref": torch.zeros(2)}, "ablate"),
        ({"ablate": [0], "layer": "feat", "ref": torch.zeros(3)}, "ref"),
        ({"ablate": [0], "layer": "feat", "ref": torch.zeros(2, 3, 3)}, "ref"),
        ({"ablate": [0], "layer": "head", "ref": torch.zeros(2)}, "feature maps"),
        ({"ablate": [0], "layer": "nope", "ref": torch.zeros(2)}, "nope"),
        ({"cls": 2}, "cls"),
    ],
)
def test_class_recall_rejects(kw, match):
    x, y = _two_class_images()
    cls = kw.pop("cls", 0)
    with pytest.raises(InputError, match=match):
        class_recall(TwoChannels(), x, y, cls, **kw)


def test_class_recall_rejects_a_class_without_images_and_a_non_module():
    x, y = _two_class_images()
    with pytest.raises(InputError, match="no image of class 1"):
        class_recall(TwoChannels(), x, torch.zeros(6, dtype=torch.long), 1)
    with pytest.raises(InputError, match=r"torch\.nn\.Module"):
        class_recall(lambda t: t, x, y, 0)


# ------------------------------------------------------------------ shared bad inputs


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: max_sensitivity("saliency", X, 0), "callable"),
        (lambda: max_sensitivity(identity, X, 0, radius=-0.1), "radius"),
        (lambda: max_sensitivity(identity, X[0], 0), "x"),
        (lambda: noise_spearman(identity, X, 0, sigma=float("nan")), "sigma"),
        (lambda: noise_spearman(None, X, 0), "callable"),
        (lambda: noise_spearman(identity, X, 0, seed=-1), "seed"),
    ],
)
def test_explanation_metrics_reject(call, match):
    with pytest.raises(InputError, match=match):
        call()

"""fid_proxy (Fréchet distance after PCA) and the non-neural template_judge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from xattr_nb.checks import InputError
from xattr_nb.metrics import fid_proxy, frechet_distance, template_judge
from xattr_nb.metrics.generation import JUDGE_NONE
from xattr_nb.worlds import captions as W
from xattr_nb.worlds import shapes as S


def _closed_form(mu1, s1, mu2, s2):
    """W2² between two Gaussians, typed from the formula (not a call of the code under test)."""
    root = np.real(linalg.sqrtm(linalg.sqrtm(s1) @ s2 @ linalg.sqrtm(s1)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


def test_fid_zero_for_identical_sets_and_positive_for_shifted():
    x = torch.randn(400, 10, generator=torch.Generator().manual_seed(0))
    assert fid_proxy(x, x.clone()) == pytest.approx(0.0, abs=1e-6)
    assert fid_proxy(x, x + 0.5) == pytest.approx(10 * 0.25, rel=1e-6)  # mean shift only: ||d||² = 10 · 0.25
    assert fid_proxy(x, 2 * x) > 1.0


def test_fid_matches_closed_form_for_two_gaussians():
    rng = np.random.default_rng(1)
    d = 4
    a_ = rng.normal(size=(d, d))
    s1 = a_ @ a_.T / d + 0.2 * np.eye(d)
    b_ = rng.normal(size=(d, d))
    s2 = b_ @ b_.T / d + 0.5 * np.eye(d)
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    n = 200_000
    x1 = rng.multivariate_normal(mu1, s1, size=n)
    x2 = rng.multivariate_normal(mu2, s2, size=n)
    want = _closed_form(mu1, s1, mu2, s2)
    # the sample statistics' distance is the closed form of those statistics exactly (no PCA truncation)
    got_stats = frechet_distance(x1.mean(0), np.cov(x1, rowvar=False), x2.mean(0), np.cov(x2, rowvar=False))
    assert fid_proxy(torch.from_numpy(x1), torch.from_numpy(x2), pca_dim=None) == pytest.approx(got_stats, rel=1e-9)
    assert fid_proxy(torch.from_numpy(x1), torch.from_numpy(x2), pca_dim=d) == pytest.approx(got_stats, rel=1e-6)
    assert got_stats == pytest.approx(want, rel=0.02)
    # exact on the parameters themselves
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)
    # 1-D: (mu1 - mu2)² + (sigma1 - sigma2)²
    assert frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == pytest.approx(
        9.0 + 1.0
    )


def test_fid_input_errors():
    x = torch.randn(10, 4)
    with pytest.raises(InputError, match="feats_b"):
        fid_proxy(x, torch.randn(10, 5))
    with pytest.raises(InputError, match="feats_a"):
        fid_proxy(torch.randn(1, 4), x)
    with pytest.raises(InputError, match="pca_dim"):
        fid_proxy(x, x, pca_dim=0)
    with pytest.raises(InputError, match="feats_a"):
        fid_proxy([[1.0]], x)


@pytest.mark.parametrize("style", ["solid", "outline"])
def test_judge_right_on_clean_renders_of_every_shape_and_colour(style):
    d = S.make_shapes(800, classes=S.SHAPES, styles=(style,), backgrounds=S.BACKGROUNDS, seed=11)
    shapes, colors = template_judge(d.images)
    truth_s = np.array([S.SHAPES[i] for i in d.shape_ids])
    truth_c = np.array([list(S.COLORS)[i] for i in d.colors])
    shapes, colors = np.array(shapes), np.array(colors)
    assert (colors == truth_c).mean() >= 0.99
    assert (shapes == truth_s).mean() >= 0.9
    # every shape and every colour is recognised most of the time (near-twins at 32 px: circle/hexagon)
    for s in S.SHAPES:
        assert (shapes[truth_s == s] == s).mean() >= 0.6, s
    for c in S.COLORS:
        assert (colors[truth_c == c] == c).mean() >= 0.97, c


def test_judge_striped_renders_above_chance():
    d = S.make_shapes(480, classes=S.SHAPES, styles=("striped",), seed=12)
    shapes, _ = template_judge(d.images)
    truth = [S.SHAPES[i] for i in d.shape_ids]
    assert np.mean([a == b for a, b in zip(shapes, truth, strict=True)]) >= 0.5  # chance 1/16


def test_judge_uncertain_on_textures_and_empty_images():
    tex = W.far_ood_textures(400, seed=3)
    j = template_judge(tex, details=True)
    confident = [s != JUDGE_NONE for s in j.shapes]
    assert np.mean(confident) <= 0.1
    blank = torch.full((3, 3, 32, 32), 0.3)
    shapes, colors = template_judge(blank)
    assert shapes == [JUDGE_NONE] * 3 and colors == [JUDGE_NONE] * 3


def test_judge_colour_follows_the_pixels_not_the_shape():
    d = S.make_shapes(32, classes=("star",), colors=("red",), styles=("solid",), backgrounds=("black",), seed=4)
    blue = torch.tensor(S.COLORS["blue"])[None, :, None, None]
    x = torch.where(d.masks[:, None], blue, d.images)
    _, before = template_judge(d.images)
    _, after = template_judge(x)
    assert set(before) == {"red"} and set(after) == {"blue"}


def test_judge_input_errors():
    with pytest.raises(InputError, match="images"):
        template_judge(torch.rand(2, 1, 32, 32))
    with pytest.raises(InputError, match="images"):
        template_judge(torch.rand(3, 32, 32))
    with pytest.raises(InputError, match="min_iou"):
        template_judge(torch.rand(2, 3, 32, 32), min_iou=2.0)

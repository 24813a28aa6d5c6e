"""Digits with label noise: realised rates, flipped flags, the asymmetric map, splits."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.worlds.digits import ASYMMETRIC_MAP, asymmetric_noise, load_digit_images, make_digits, symmetric_noise


def test_images_and_clean_split():
    tr, te = make_digits(seed=0)
    assert tr.images.shape[1:] == (1, 8, 8) and len(tr) + len(te) == 1797
    assert float(tr.images.min()) >= 0 and float(tr.images.max()) == 1.0
    assert not set(tr.index.tolist()) & set(te.index.tolist())
    assert not tr.flipped.any() and torch.equal(tr.labels, tr.clean_labels)
    # stratified: class proportions agree within one example per class
    assert (torch.bincount(tr.labels) / len(tr) - torch.bincount(te.labels) / len(te)).abs().max() < 0.01


def test_upsampled_size():
    x, _y = load_digit_images(16)
    assert x.shape == (1797, 1, 16, 16) and float(x.min()) >= 0 and float(x.max()) <= 1


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_rate_and_flipped(rate):
    tr, _ = make_digits(noise="symmetric", rate=rate, seed=1)
    assert torch.equal(tr.flipped, tr.labels != tr.clean_labels)
    assert abs(tr.flipped.float().mean().item() - rate) < 1e-3


def test_symmetric_targets_uniform_over_other_classes():
    y = torch.zeros(9000, dtype=torch.long)
    noisy, flipped = symmetric_noise(y, 1.0, seed=0)
    assert bool(flipped.all())
    counts = torch.bincount(noisy, minlength=10)
    assert counts[0] == 0 and (counts[1:].float() / 1000 - 1).abs().max() < 0.12


def test_symmetric_include_true_class_flips_fewer():
    y = torch.arange(10).repeat(500)
    _noisy, flipped = symmetric_noise(y, 0.5, include_true_class=True, seed=0)
    assert abs(flipped.float().mean().item() - 0.5 * 0.9) < 0.02


def test_asymmetric_map_applied():
    tr, _ = make_digits(noise="asymmetric", rate=0.4, seed=2)
    assert torch.equal(tr.flipped, tr.labels != tr.clean_labels)
    for a, b in ASYMMETRIC_MAP.items():
        src = tr.clean_labels == a
        assert torch.all(tr.labels[src & tr.flipped] == b)
        assert abs(tr.flipped[src].float().mean().item() - 0.4) < 0.01
    untouched = ~torch.isin(tr.clean_labels, torch.tensor(list(ASYMMETRIC_MAP)))
    assert not tr.flipped[untouched].any()


def test_deterministic_per_seed():
    a, _ = make_digits(noise="symmetric", rate=0.3, seed=5)
    b, _ = make_digits(noise="symmetric", rate=0.3, seed=5)
    c, _ = make_digits(noise="symmetric", rate=0.3, seed=6)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.index, b.index)
    assert not torch.equal(a.index, c.index)


def test_rate_out_of_range():
    with pytest.raises(InputError, match="`rate`"):
        make_digits(noise="symmetric", rate=1.5)


def test_unknown_noise():
    with pytest.raises(InputError, match="`noise`"):
        make_digits(noise="pairflip", rate=0.2)


def test_rate_without_noise():
    with pytest.raises(InputError, match="`rate`"):
        make_digits(rate=0.2)


def test_bad_test_size():
    with pytest.raises(InputError, match="`test_size`"):
        make_digits(test_size=1.0)


def test_identity_mapping():
    with pytest.raises(InputError, match="`mapping`"):
        asymmetric_noise(torch.arange(10), 0.5, {3: 3})


def test_labels_out_of_range():
    with pytest.raises(InputError, match="`labels`"):
        symmetric_noise(torch.tensor([0, 12]), 0.5)

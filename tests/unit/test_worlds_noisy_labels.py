"""Label noise that reports what it did: chosen vs flipped, realised rates, maps, splits, bad input."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.worlds.noisy_labels import (
    NoisyLabelData,
    asymmetric_noise,
    make_noisy_digits,
    noisy_split,
    symmetric_noise,
)


def test_symmetric_official_includes_true_class():
    y = torch.arange(10).repeat(1000)
    rep = symmetric_noise(y, 0.4, seed=0)
    assert int(rep.chosen.sum()) == 4000
    assert torch.equal(rep.flipped, rep.noisy != y) and bool((rep.flipped <= rep.chosen).all())
    # uniform over all 10 classes: about 1/10 of the chosen keep their label -> 36 % flipped
    assert abs(rep.flip_rate - 0.36) < 0.01
    assert not bool((rep.noisy[~rep.chosen] != y[~rep.chosen]).any())
    counts = torch.bincount(rep.noisy[rep.chosen], minlength=10).float()
    assert (counts / 400 - 1).abs().max() < 0.2


def test_symmetric_other_classes_flips_every_chosen_label():
    y = torch.zeros(900, dtype=torch.long)
    rep = symmetric_noise(y, 0.5, include_true_class=False, seed=3)
    assert torch.equal(rep.flipped, rep.chosen) and int(rep.flipped.sum()) == 450
    assert torch.bincount(rep.noisy[rep.chosen], minlength=10)[0] == 0


def test_symmetric_is_seeded():
    y = torch.arange(10).repeat(50)
    a, b, c = (symmetric_noise(y, 0.3, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.noisy, b.noisy) and not torch.equal(a.noisy, c.noisy)


def test_asymmetric_flips_per_source_class_by_the_map():
    y = torch.arange(10).repeat(20)
    rep = asymmetric_noise(y, 0.4, {7: 1, 3: 8}, seed=0)
    assert torch.equal(rep.flipped, rep.chosen)
    assert int(rep.flipped[y == 7].sum()) == 8 and int(rep.flipped[y == 3].sum()) == 8
    assert bool((rep.noisy[rep.flipped & (y == 7)] == 1).all()) and bool((rep.noisy[rep.flipped & (y == 3)] == 8).all())
    assert not bool(rep.flipped[(y != 7) & (y != 3)].any())


def test_make_noisy_digits_split_standardised_and_clean_test():
    tr, te = make_noisy_digits(0.4, seed=5)
    assert isinstance(tr, NoisyLabelData) and len(tr) == 1200 and len(te) == 597
    assert tr.x.shape == (1200, 64) and not set(tr.index.tolist()) & set(te.index.tolist())
    assert tr.x.mean(0).abs().max() < 1e-4
    assert torch.equal(tr.flipped, tr.labels != tr.clean_labels) and int(tr.chosen.sum()) == 480
    assert not te.flipped.any() and torch.equal(te.labels, te.clean_labels)
    # the clean labels are sklearn's digits at those rows
    from sklearn.datasets import load_digits

    assert torch.equal(tr.clean_labels, torch.as_tensor(load_digits().target)[tr.index])


def test_noisy_split_with_a_separate_test_set():
    x, y = torch.randn(40, 3, 4, 4), torch.arange(4).repeat(10)
    tr, te = noisy_split(x, y, 0.5, test=(torch.randn(8, 3, 4, 4), torch.arange(4).repeat(2)), seed=0)
    assert len(tr) == 40 and len(te) == 8 and tr.n_classes == 4 and int(tr.chosen.sum()) == 20


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda: symmetric_noise(torch.tensor([0, 1]), 1.0), "rate"),
        (lambda: symmetric_noise(torch.tensor([0, 1]), -0.1), "rate"),
        (lambda: symmetric_noise(torch.tensor([0, 10]), 0.2), "labels"),
        (lambda: symmetric_noise(torch.tensor([-1, 0]), 0.2), "labels"),
        (lambda: symmetric_noise(torch.tensor([0.0, 1.0]), 0.2), "labels"),
        (lambda: symmetric_noise(torch.tensor([0, 1]), 0.2, n_classes=1), "n_classes"),
        (lambda: asymmetric_noise(torch.tensor([0, 1]), 0.2, {1: 1}), "mapping"),
        (lambda: asymmetric_noise(torch.tensor([0, 1]), 0.2, {1: 12}), "mapping"),
        (lambda: asymmetric_noise(torch.tensor([0, 1]), 0.2, {}), "mapping"),
        (lambda: make_noisy_digits(0.2, noise="none"), "rate"),
        (lambda: make_noisy_digits(0.2, noise="pairflip"), "noise"),
        (lambda: make_noisy_digits(0.2, n_train=5), "n_train"),
        (lambda: noisy_split(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), 0.2), "n_train"),
    ],
)
def test_bad_inputs_name_the_argument(call, arg):
    with pytest.raises(InputError, match=arg):
        call()

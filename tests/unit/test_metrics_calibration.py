"""Calibration of probabilities (``xattr_nb.metrics.confidence``: ECE, reliability-diagram data,
Brier score) against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.metrics import brier_score, ece, reliability_diagram


def test_perfectly_calibrated_toy_has_zero_ece():
    # binary form: p = 0.2 on ten examples of which two are positive, p = 0.8 on ten with eight positive
    p = np.array([0.2] * 10 + [0.8] * 10)
    y = np.array([1] * 2 + [0] * 8 + [1] * 8 + [0] * 2)
    assert ece(p, y) == pytest.approx(0.0)
    assert ece(p, y, n_bins=2, strategy="quantile") == pytest.approx(0.0)
    # top-label form: confidence 0.75 on four examples, three of them right
    probs = torch.tensor([[0.75, 0.25]] * 4)
    assert ece(probs, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0)


def test_known_miscalibration():
    # confidence 0.9 with accuracy 2/3 on three examples, confidence 0.6 with accuracy 0 on one
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 0])
    assert ece(probs, labels) == pytest.approx(3 / 4 * (0.9 - 2 / 3) + 1 / 4 * 0.6)
    # all confidence 0.9, half right: ECE = 0.4 whatever the binning
    p = np.full((10, 2), [0.9, 0.1])
    y = np.array([0, 1] * 5)
    for strategy in ("uniform", "quantile"):
        assert ece(p, y, n_bins=5, strategy=strategy) == pytest.approx(0.4)


def test_equal_width_and_equal_mass_bins_differ_as_computed_by_hand():
    p, y = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1])
    # equal width, 2 bins: all four in (0, 0.5]: confidence 0.25, frequency 0.5
    assert ece(p, y, n_bins=2) == pytest.approx(0.25)
    # equal mass, 2 bins: {0.1, 0.2} (0.15 vs 0) and {0.3, 0.4} (0.35 vs 1)
    assert ece(p, y, n_bins=2, strategy="quantile") == pytest.approx(0.5 * 0.15 + 0.5 * 0.65)


def test_reliability_diagram_data():
    p, y = np.array([0.05, 0.3, 0.5, 0.55, 1.0]), np.array([0, 1, 1, 0, 1])
    d = reliability_diagram(p, y, n_bins=10)
    assert d["count"].tolist() == [1, 0, 1, 0, 1, 1, 0, 0, 0, 1]  # 0.3 in (0.2, 0.3], 0.5 in (0.4, 0.5]
    assert d["lower"][2] == pytest.approx(0.2) and d["upper"][2] == pytest.approx(0.3)
    assert np.isnan(d["confidence"][1]) and np.isnan(d["accuracy"][1])
    assert d["accuracy"][5] == 0.0 and d["gap"][5] == pytest.approx(-0.55)
    assert d["count"].sum() == 5
    assert ece(p, y, n_bins=10) == pytest.approx(np.nansum(d["count"] / 5 * np.abs(d["gap"])))
    q = reliability_diagram(p, y, n_bins=2, strategy="quantile")
    assert q["count"].tolist() == [3, 2] and q["upper"][0] == 0.5 and q["lower"][1] == 0.55


def test_brier_known_values():
    assert brier_score(np.array([0.8, 0.3]), np.array([1, 0])) == pytest.approx((0.2**2 + 0.3**2) / 2)
    assert brier_score(np.array([[0.7, 0.2, 0.1]]), np.array([0])) == pytest.approx(0.09 + 0.04 + 0.01)
    two = np.array([[0.2, 0.8], [0.7, 0.3]])
    assert brier_score(two, np.array([1, 0])) == pytest.approx(2 * brier_score(two[:, 1], np.array([1, 0])))
    assert brier_score(np.array([0.0, 0.0]), np.array([0, 0])) == 0.0  # one class only is fine


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (np.array([0.2, np.nan]), np.array([0, 1]), "probs"),
        (np.array([0.2, 1.2]), np.array([0, 1]), r"\[0, 1\]"),
        (np.array([[0.2, 0.5]]), np.array([0]), "sum to 1"),
        (np.array([0.2, 0.5]), np.array([0, 2]), "binary"),
        (np.array([[0.5, 0.5]]), np.array([3]), r"\[0, 2\)"),
        (np.array([0.2, 0.5]), np.array([0]), "labels"),
        (np.array([0.2, 0.5]), np.array([0.5, 1.0]), "labels"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), "empty"),
        (np.array([1, 0]), np.array([1, 0]), "floating"),
    ],
)
def test_bad_input_raises(probs, labels, match):
    for fn in (ece, brier_score, reliability_diagram):
        with pytest.raises(InputError, match=match):
            fn(probs, labels)


def test_bad_bins_raise():
    p, y = np.array([0.2, 0.8]), np.array([0, 1])
    with pytest.raises(InputError, match="n_bins"):
        ece(p, y, n_bins=0)
    with pytest.raises(InputError, match="strategy"):
        ece(p, y, strategy="equal")
    with pytest.raises(InputError, match="n_bins"):
        ece(p, y, n_bins=3, strategy="quantile")

"""Bootstrap intervals: known answers on hand-made data, seeding, and one test per bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.metrics import bootstrap_ci, bootstrap_delta

# ------------------------------------------------------------------ bootstrap_ci


def test_ci_of_constant_values_has_zero_width():
    assert bootstrap_ci([0.5] * 25) == (0.5, 0.5)
    lo, hi = bootstrap_ci([0.7] * 25)
    assert lo == hi == pytest.approx(0.7)  # the mean of 25 copies of 0.7 rounds, but every resample alike
    assert bootstrap_ci([3.0]) == (3.0, 3.0)  # one value: every resample is that value


def test_ci_is_the_percentile_interval_of_resampled_means():
    v = np.random.default_rng(1).normal(size=40)
    rng = np.random.default_rng(7)
    means = v[rng.integers(40, size=(500, 40))].mean(1)
    expect = (float(np.quantile(means, 0.05)), float(np.quantile(means, 0.95)))
    assert bootstrap_ci(v, n=500, alpha=0.1, seed=7) == expect  # the same numbers, bit for bit


def test_ci_of_a_fair_coin_is_near_the_normal_interval():
    hits = np.r_[np.zeros(50), np.ones(50)]  # mean 0.5, standard error 0.05
    lo, hi = bootstrap_ci(hits, n=4000)
    assert lo == pytest.approx(0.5 - 1.96 * 0.05, abs=0.015)
    assert hi == pytest.approx(0.5 + 1.96 * 0.05, abs=0.015)


def test_ci_holds_the_mean_is_seeded_and_narrows_with_alpha():
    v = torch.rand(30, generator=torch.Generator().manual_seed(0))
    lo, hi = bootstrap_ci(v, seed=3)
    assert lo < float(v.mean()) < hi
    assert bootstrap_ci(v, seed=3) == (lo, hi)
    assert bootstrap_ci(v, seed=4) != (lo, hi)
    assert bootstrap_ci(v.numpy(), seed=3) == (lo, hi)  # tensor or array, same answer
    lo90, hi90 = bootstrap_ci(v, alpha=0.1, seed=3)
    assert lo <= lo90 < hi90 <= hi
    mid = bootstrap_ci(v, alpha=1.0, seed=3)
    assert mid[0] == mid[1]  # alpha = 1: both bounds are the median of the resampled means


@pytest.mark.parametrize(
    ("values", "kw", "match"),
    [
        ([], {}, "empty"),
        ([1.0, float("nan")], {}, "NaN"),
        ([1.0, 2.0], {"n": 0}, "n"),
        ([1.0, 2.0], {"alpha": 1.5}, "alpha"),
        ([1.0, 2.0], {"seed": -1}, "seed"),
    ],
)
def test_ci_rejects(values, kw, match):
    with pytest.raises(InputError, match=match):
        bootstrap_ci(values, **kw)


# ------------------------------------------------------------------ bootstrap_delta


def _maps(seed: int, n: int = 12, d: int = 6) -> torch.Tensor:
    return torch.randn(n, 2, d, generator=torch.Generator().manual_seed(seed))


def test_delta_of_a_method_with_itself_is_exactly_zero():
    a, truth = _maps(0), _maps(1)
    out = bootstrap_delta(a, a.clone(), truth=truth, n_boot=200)
    assert out == {"delta": 0.0, "lo": 0.0, "hi": 0.0, "n_boot": 200}


def test_delta_of_truth_against_its_negation_is_two():
    truth = _maps(1)
    out = bootstrap_delta(truth, -truth, truth=truth, n_boot=200)  # r = 1 against r = -1 on every resample
    assert out["delta"] == pytest.approx(2.0) and out["lo"] == pytest.approx(2.0) and out["hi"] == pytest.approx(2.0)


def test_delta_of_means_of_a_shifted_method_is_the_shift():
    b = torch.rand(50, generator=torch.Generator().manual_seed(0))
    out = bootstrap_delta(b + 0.25, b, statistic="mean", n_boot=100)
    assert out["delta"] == pytest.approx(0.25) and out["lo"] == pytest.approx(0.25) and out["hi"] == pytest.approx(0.25)
    noisy = b + 0.25 + 0.1 * torch.randn(50, generator=torch.Generator().manual_seed(1))
    out = bootstrap_delta(noisy, b, statistic="mean")
    assert out["delta"] == pytest.approx(float((noisy - b).mean()))
    assert out["lo"] < out["delta"] < out["hi"]


def test_delta_resamples_examples_jointly_with_torchs_generator():
    a, b, truth = _maps(0), _maps(2), _maps(1)
    idx = torch.randint(0, 12, (50, 12), generator=torch.Generator().manual_seed(5))

    def r(x: torch.Tensor, t: torch.Tensor) -> float:
        return float(np.corrcoef(x.flatten().numpy(), t.flatten().numpy())[0, 1])

    deltas = [
        r(a[i].double().mean(0), truth[i].double().mean(0)) - r(b[i].double().mean(0), truth[i].double().mean(0))
        for i in idx
    ]
    out = bootstrap_delta(a, b, truth=truth, n_boot=50, seed=5)
    assert out["delta"] == pytest.approx(r(a.mean(0), truth.mean(0)) - r(b.mean(0), truth.mean(0)))
    assert [out["lo"], out["hi"]] == pytest.approx(np.percentile(deltas, [2.5, 97.5]).tolist(), abs=1e-12)
    assert bootstrap_delta(a, b, truth=truth, n_boot=50, seed=5) == out
    assert bootstrap_delta(a, b, truth=truth, n_boot=50, seed=6) != out


def test_delta_leaves_out_resamples_where_the_statistic_is_undefined():
    truth = torch.zeros(4, 5)
    truth[0] = torch.arange(5.0)  # only example 0 varies: a resample without it has a flat mean truth
    a, b = _maps(0, n=4, d=5)[:, 0], _maps(2, n=4, d=5)[:, 0]
    idx = torch.randint(0, 4, (300, 4), generator=torch.Generator().manual_seed(0))
    with_0 = int((idx == 0).any(1).sum())
    out = bootstrap_delta(a, b, truth=truth, n_boot=300)
    assert out["n_boot"] == with_0 < 300
    assert np.isfinite([out["lo"], out["hi"]]).all()


def test_delta_takes_a_statistic_function():
    a, b = _maps(0), _maps(2)
    named = bootstrap_delta(a, b, statistic="mean", n_boot=100)
    assert bootstrap_delta(a, b, statistic=lambda x, t: x.mean(1), n_boot=100) == named


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"b": torch.rand(5, 3)}, "`b`"),
        ({"truth": torch.rand(6, 4)}, "`truth`"),
        ({"truth": None}, "truth"),  # pearson needs a reference
        ({"statistic": "mean"}, "truth"),  # mean does not take one
        ({"statistic": "median"}, "statistic"),
        ({"statistic": 3}, "statistic"),
        ({"statistic": lambda x, t: x.mean()}, "one value per resample"),
        ({"n_boot": 5}, "n_boot"),
        ({"alpha": -0.1}, "alpha"),
        ({"truth": torch.ones(6, 3)}, "every resample"),
        ({"b": [[1.0, float("nan"), 0.0]] * 6}, "`b`"),
    ],
)
def test_delta_rejects(kw, match):
    args = {"a": torch.rand(6, 3), "b": torch.rand(6, 3), "truth": torch.rand(6, 3), **kw}
    with pytest.raises(InputError, match=match):
        bootstrap_delta(args.pop("a"), args.pop("b"), **args)

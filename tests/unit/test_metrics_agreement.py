"""Rank agreement of two attributions: Spearman, Kendall, top-k overlap."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError
from xattr_nb.metrics import (
    kendall,
    spearman,
    topk_overlap,
)

# ------------------------------------------------------------------ rank agreement


def test_spearman_kendall_identical_and_reversed():
    a = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert spearman(a, a).tolist() == pytest.approx([1.0] * 3)
    assert spearman(a, -a).tolist() == pytest.approx([-1.0] * 3)
    assert kendall(a, a).tolist() == pytest.approx([1.0] * 3)
    assert kendall(a, -a).tolist() == pytest.approx([-1.0] * 3)


def test_spearman_known_value_and_token_mask():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0, 9.0]])
    b = torch.tensor([[1.0, 3.0, 2.0, 4.0, -9.0]])
    # with the last (padding) position left out: ranks 1 2 3 4 vs 1 3 2 4 -> 1 - 6*2/(4*15) = 0.8
    mask = torch.tensor([[True, True, True, True, False]])
    aa = Attribution(a, "tokens", "m", torch.tensor([0]), mask=mask)
    bb = Attribution(b, "tokens", "m", torch.tensor([0]), mask=mask)
    assert spearman(aa, bb).tolist() == pytest.approx([0.8])
    assert kendall(aa, bb).tolist() == pytest.approx([4 / 6])


def test_topk_overlap():
    a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    b = torch.tensor([[4.0, 1.0, 3.0, 2.0]])
    assert topk_overlap(a, b, 2).tolist() == [0.5]
    assert topk_overlap(a, b, 4).tolist() == [1.0]


def test_topk_overlap_rejects_k_too_large():
    with pytest.raises(InputError, match="k"):
        topk_overlap(torch.rand(1, 4), torch.rand(1, 4), 5)


def test_spearman_rejects_shape_mismatch():
    with pytest.raises(InputError, match="same units"):
        spearman(torch.rand(2, 4), torch.rand(2, 5))


def test_spearman_rejects_constant_map():
    with pytest.raises(InputError, match="constant"):
        spearman(torch.ones(1, 4), torch.rand(1, 4))


def test_spearman_rejects_nan():
    a = torch.rand(1, 4)
    a[0, 1] = float("nan")
    with pytest.raises(InputError, match="`a`"):
        spearman(a, torch.rand(1, 4))


def test_spearman_rejects_missing_batch_dim():
    with pytest.raises(InputError, match="batch"):
        spearman(torch.rand(4), torch.rand(4))

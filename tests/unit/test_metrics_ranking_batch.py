"""The batched Recall@k / NDCG@k (one ``torch.topk``) against hand-made cases and the exact metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.metrics.ranking import ndcg_at_k, ndcg_at_k_batch, recall_at_k, recall_at_k_batch

SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
REL = np.array([[1, 0, 1, 0, 0], [1, 0, 0, 0, 0]])


def test_hand_cases():
    assert ndcg_at_k_batch(SCORES, REL, 3)[0].item() == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k_batch(SCORES, REL, 3)[1].item() == 0.0
    assert ndcg_at_k_batch(SCORES, REL, 5)[1].item() == pytest.approx(1 / math.log2(6))
    assert recall_at_k_batch(SCORES, REL, 3).tolist() == [1.0, 0.0]
    assert recall_at_k_batch(SCORES, REL, 2).tolist() == [0.5, 0.0]
    assert recall_at_k_batch(SCORES, REL, 10).tolist() == [1.0, 1.0]  # k beyond the item count
    assert ndcg_at_k_batch(SCORES, REL, 10).tolist() == pytest.approx(ndcg_at_k(SCORES, REL, 10).tolist())


def test_exclusion_moves_items_last():
    s = np.array([[5.0, 4.0, 3.0, 2.0]])
    rel = np.array([[0, 0, 1, 0]])
    ex = np.array([[1, 1, 0, 0]])
    assert recall_at_k_batch(s, rel, 1).item() == 0.0
    assert recall_at_k_batch(s, rel, 1, exclude=ex).item() == 1.0
    assert ndcg_at_k_batch(s, rel, 1, exclude=ex).item() == 1.0


def test_equals_exact_metrics_without_ties():
    rng = np.random.default_rng(3)
    s = rng.standard_normal((60, 80))
    rel = rng.random((60, 80)) < 0.1
    rel[:, 0] = True
    ex = (rng.random((60, 80)) < 0.2) & ~rel
    for k in (1, 5, 20, 100):
        assert torch.allclose(ndcg_at_k_batch(s, rel, k, exclude=ex), ndcg_at_k(s, rel, k, exclude=ex))
        assert torch.allclose(recall_at_k_batch(s, rel, k, exclude=ex), recall_at_k(s, rel, k, exclude=ex))


def test_bad_input_names_the_argument():
    with pytest.raises(InputError, match="k"):
        ndcg_at_k_batch(SCORES, REL, 0)
    with pytest.raises(InputError, match="relevant"):
        recall_at_k_batch(SCORES, REL[:, :3], 2)

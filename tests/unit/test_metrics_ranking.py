"""Ranking metrics (``xattr_nb.metrics.ranking``) against hand-computed answers and a per-user loop
written from the Mult-VAE paper's definitions of Recall@k and NDCG@k."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.metrics import hit_rate_at_k, mrr, ndcg_at_k, recall_at_k

# user 0: relevant items at ranks 1 and 3; user 1: the one relevant item at rank 5
SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
REL = np.array([[1, 0, 1, 0, 0], [1, 0, 0, 0, 0]])


def test_ndcg_known_values():
    got = ndcg_at_k(SCORES, REL, 3)
    # DCG@3 = 1/log2(2) + 1/log2(4) = 1.5; ideal over min(3, 2) = 2 items: 1 + 1/log2(3)
    assert got[0].item() == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert got[1].item() == 0.0
    assert ndcg_at_k(SCORES, REL, 5)[1].item() == pytest.approx(1 / math.log2(6))


def test_recall_min_normaliser_and_plain():
    assert recall_at_k(SCORES, REL, 3).tolist() == [1.0, 0.0]  # 2 hits / min(3, 2)
    assert recall_at_k(SCORES, REL, 2).tolist() == [0.5, 0.0]  # 1 hit / min(2, 2)
    s, r = np.array([5.0, 4.0, 3.0, 2.0, 1.0]), np.array([1, 1, 0, 0, 1])
    assert recall_at_k(s, r, 2).item() == 1.0  # 2 / min(2, 3): the paper's normaliser
    assert recall_at_k(s, r, 2, normalize="plain").item() == pytest.approx(2 / 3)
    assert recall_at_k(s, r, 10).item() == 1.0  # k beyond the item count: every item is in the top k


def test_mrr_and_hit_rate_known_values():
    assert mrr(SCORES, REL).tolist() == pytest.approx([1.0, 0.2])
    assert mrr(SCORES, REL, k=4).tolist() == [1.0, 0.0]
    assert hit_rate_at_k(SCORES, REL, 4).tolist() == [1.0, 0.0]
    assert hit_rate_at_k(SCORES, REL, 5).tolist() == [1.0, 1.0]


def test_perfect_ranking_scores_one():
    rng = np.random.default_rng(0)
    rel = rng.random((20, 30)) < 0.2
    rel[:, 0] = True
    perfect = rel + 0.01 * rng.random(rel.shape)  # every relevant item above every other
    for k in (1, 5, 40):
        assert torch.allclose(ndcg_at_k(perfect, rel, k), torch.ones(20, dtype=torch.float64))
        assert torch.allclose(recall_at_k(perfect, rel, k), torch.ones(20, dtype=torch.float64))
    assert torch.allclose(mrr(perfect, rel), torch.ones(20, dtype=torch.float64))


def _by_definition(pred: np.ndarray, heldout: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall@k and NDCG@k as the Mult-VAE paper defines them, one user at a time (no ties here)."""
    recall, ndcg = [], []
    for scores, rel in zip(pred, heldout, strict=True):
        top = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
        hits = [bool(rel[i]) for i in top]
        n_rel = int(rel.sum())
        recall.append(sum(hits) / min(k, n_rel))
        dcg = sum(1.0 / math.log2(rank + 2) for rank, hit in enumerate(hits) if hit)
        idcg = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, n_rel)))
        ndcg.append(dcg / idcg)
    return np.array(recall), np.array(ndcg)


def test_matches_the_papers_definition():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(50, 40))
    held = rng.random((50, 40)) < 0.15
    held[:, 3] = True
    for k in (1, 5, 20):
        rec, nd = _by_definition(pred, held, k)
        assert np.allclose(recall_at_k(pred, held, k).numpy(), rec)
        assert np.allclose(ndcg_at_k(pred, held, k).numpy(), nd)


def test_random_ranking_recall_near_its_expectation():
    rng = np.random.default_rng(2)
    rel = np.zeros((2000, 50), dtype=bool)
    for u in range(2000):
        rel[u, rng.choice(50, 10, replace=False)] = True
    got = recall_at_k(rng.random((2000, 50)), rel, 5).mean().item()
    assert got == pytest.approx(5 * 10 / 50 / 5, abs=0.02)  # E[hits] / min(5, 10)


def test_ties_are_averaged():
    s, r = np.zeros(4), np.array([1, 0, 0, 0])
    assert recall_at_k(s, r, 1).item() == pytest.approx(0.25)
    assert hit_rate_at_k(s, r, 1).item() == pytest.approx(0.25)
    assert mrr(s, r).item() == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    discounts = [1 / math.log2(i + 1) for i in range(1, 5)]
    assert ndcg_at_k(s, r, 4).item() == pytest.approx(sum(discounts) / 4)
    r2 = np.array([1, 1, 0, 0])
    assert hit_rate_at_k(s, r2, 1).item() == pytest.approx(0.5)
    assert hit_rate_at_k(s, r2, 2).item() == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    # a tie below a clear winner does not matter
    assert recall_at_k(np.array([2.0, 1.0, 1.0]), np.array([1, 0, 0]), 1).item() == 1.0


def test_exclude_drops_items_from_the_ranking():
    s, r, ex = np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), np.array([True, False, False])
    assert mrr(s, r).item() == 0.5
    assert mrr(s, r, exclude=ex).item() == 1.0
    assert ndcg_at_k(s, r, 1, exclude=ex).item() == 1.0
    assert recall_at_k(s, r, 1, exclude=ex).item() == 1.0


def test_torch_numpy_and_one_row_agree():
    a = ndcg_at_k(torch.tensor(SCORES, dtype=torch.float32), torch.tensor(REL).bool(), 3)
    b = ndcg_at_k(SCORES, REL, 3)
    assert torch.allclose(a, b)
    assert ndcg_at_k(SCORES[0], REL[0], 3).shape == (1,)
    assert ndcg_at_k(SCORES[0], REL[0], 3).item() == pytest.approx(b[0].item())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scores": np.array([[np.nan, 1.0]]), "relevant": np.array([[1, 0]])}, "scores"),
        ({"scores": np.array([[-np.inf, 1.0]]), "relevant": np.array([[1, 0]])}, "exclude"),
        ({"scores": SCORES, "relevant": REL[:, :4]}, "relevant"),
        ({"scores": SCORES, "relevant": REL * 2}, "binary"),
        ({"scores": SCORES, "relevant": np.zeros_like(REL)}, "no relevant"),
        ({"scores": SCORES, "relevant": REL, "exclude": REL.astype(bool)}, "exclude"),
        ({"scores": np.zeros((2, 0)), "relevant": np.zeros((2, 0))}, "empty"),
    ],
)
def test_bad_input_raises(kwargs, match):
    for fn in (recall_at_k, ndcg_at_k, hit_rate_at_k):
        with pytest.raises(InputError, match=match):
            fn(k=3, **kwargs)
    with pytest.raises(InputError, match=match):
        mrr(**kwargs)


def test_bad_k_and_normalize():
    with pytest.raises(InputError, match="`k`"):
        recall_at_k(SCORES, REL, 0)
    with pytest.raises(InputError, match="`k`"):
        ndcg_at_k(SCORES, REL, 2.5)
    with pytest.raises(InputError, match="`k`"):
        mrr(SCORES, REL, k=0)
    with pytest.raises(InputError, match="normalize"):
        recall_at_k(SCORES, REL, 2, normalize="max")

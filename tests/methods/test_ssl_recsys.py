"""Tests of xattr_nb.methods.ssl_recsys: masks, losses, slices, pairs, MovieLens features, a tiny training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xattr_nb.checks import InputError
from xattr_nb.contrastive import info_nce
from xattr_nb.methods import ssl_recsys as S


def _corpus(n=40, seed=0):
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 4, n)
    tags = np.zeros((n, 10), bool)
    tags[np.arange(n), topic * 2] = True
    return S.item_features(
        {
            "item_id": torch.arange(n),
            "topic": torch.tensor(topic),
            "sub": torch.tensor(topic * 3 + rng.integers(0, 3, n)),
            "price": torch.tensor(rng.integers(0, 5, n)),
            "tags": torch.tensor(tags),
        }
    )


@pytest.mark.parametrize("mode", ["random", "correlated"])
@pytest.mark.parametrize("k", [2, 5, 6])
def test_masks_split_features_into_complementary_halves(mode, k):
    mi = np.random.default_rng(0).random((k, k))
    mi = mi + mi.T
    m = S.feature_masks(200, k, mode, mi=mi, generator=torch.Generator().manual_seed(0))
    assert m.shape == (200, k) and m.dtype == torch.bool
    assert (m.sum(1) == k // 2).all()  # view 1 masks floor(k/2) features
    assert ((m ^ ~m).all()) and not (m & ~m).any()  # view 2 = the complement: disjoint, covering all
    assert (~m).sum(1).eq(k - k // 2).all()


def test_cfm_masks_seed_with_its_highest_mi_partners():
    # planted structure: features 0,1,2 mutually informative; 3 and 4 a pair; 5 independent (no ties)
    mi = np.array(
        [
            [9, 1.0, 0.9, 0.1, 0.05, 0.02],
            [1.0, 9, 0.8, 0.11, 0.06, 0.03],
            [0.9, 0.8, 9, 0.12, 0.07, 0.04],
            [0.1, 0.11, 0.12, 9, 0.5, 0.01],
            [0.05, 0.06, 0.07, 0.5, 9, 0.015],
            [0.02, 0.03, 0.04, 0.01, 0.015, 9],
        ]
    )
    expected = {frozenset({0, 1, 2}), frozenset({3, 4, 2}), frozenset({5, 2, 1})}  # seed + its 2 top-MI partners
    m = S.feature_masks(600, 6, "correlated", mi=mi, generator=torch.Generator().manual_seed(1))
    got = {frozenset(np.flatnonzero(r.numpy()).tolist()) for r in m}
    assert got == expected  # every seed drawn (600 draws), each masks exactly its group
    # the masked group of a seed in the planted block has above-median pairwise MI
    off = mi[~np.eye(6, dtype=bool)]
    assert np.mean([mi[i, j] for i in (0, 1, 2) for j in (0, 1, 2) if i != j]) > np.median(off)


def test_feature_mi_finds_planted_dependence():
    c = _corpus(400)
    mi = S.feature_mi(c)
    o = c.order
    assert mi.shape == (5, 5) and np.allclose(mi, mi.T)
    # topic is a deterministic parent of sub: MI(topic, sub) = H(topic); price is independent of topic
    assert mi[o.index("topic"), o.index("sub")] == pytest.approx(mi[o.index("topic"), o.index("topic")])
    assert mi[o.index("topic"), o.index("price")] < 0.1 < mi[o.index("topic"), o.index("tags")]


def test_batch_softmax_loss_on_hand_vectors():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = I / tau: each row's positive has 1/tau, the other 0 -> loss = log(1 + e^{-1/tau})
    assert float(S.batch_softmax_loss(q, x, 0.5)) == pytest.approx(math.log(1 + math.exp(-2.0)))
    # all-equal embeddings: log B
    z = torch.ones(4, 3) / 3**0.5
    assert float(S.batch_softmax_loss(z, z, 0.1)) == pytest.approx(math.log(4))
    # logQ correction: subtracting log Q_j shifts column j; with equal logits the softmax follows 1/Q
    lq = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125]))
    p0 = (1 / 0.5) / (1 / 0.5 + 1 / 0.25 + 2 / 0.125)
    assert float(S.batch_softmax_loss(z[:1].expand(4, 3), z, 0.1, lq[:4])) == pytest.approx(
        float(np.mean([-math.log((1 / q) / (1 / 0.5 + 1 / 0.25 + 2 / 0.125)) for q in (0.5, 0.25, 0.125, 0.125)]))
    )
    assert p0 > 0


def test_ssl_loss_is_info_nce_log_n_for_identical_views():
    z = torch.ones(8, 4)
    assert float(info_nce(z, z, tau=0.1)) == pytest.approx(math.log(8), rel=1e-5)


def test_popularity_slices_by_training_counts_hand_case():
    # items 0..9; targets: item 0 x5, item 1 x3, item 2 x2, item 3 x1; items 4..9 never a target
    tgt = [0] * 5 + [1] * 3 + [2] * 2 + [3]
    pairs = np.stack([np.full(len(tgt), 9), np.array(tgt)], 1)
    s = S.popularity_slices(pairs, 10, head_share=0.2, tail_max=2)
    assert s["counts"].tolist() == [5, 3, 2, 1, 0, 0, 0, 0, 0, 0]
    assert s["head"].tolist() == [True, True] + [False] * 8
    assert s["tail"].tolist() == [False, False] + [True] * 8  # <= 2 occurrences, never-seen included
    # the query column never counts
    assert s["counts"][9] == 0


def test_coclick_and_test_pairs():
    X = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0]], dtype=np.float32))
    p = S.coclick_pairs(X, 200, seed=0)
    assert p.shape == (200, 2) and (p[:, 0] != p[:, 1]).all()
    assert {tuple(sorted(r)) for r in p.tolist()} <= {(0, 1), (2, 3)}  # only co-clicks of one user
    F = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
    H = sp.csr_matrix(np.array([[0, 1, 1, 0], [0, 0, 0, 1]], dtype=np.float32))
    t = S.test_pairs(F, H, seed=0)
    assert sorted(t.tolist()) == [[0, 1], [0, 2], [1, 3]]


def test_multi_value_dropout_rates():
    x = torch.ones(200, 50)
    assert torch.equal(S.multi_value_dropout(x, 0.0), x)
    assert S.multi_value_dropout(x, 1.0).sum() == 0
    kept = S.multi_value_dropout(x, 0.3, generator=torch.Generator().manual_seed(0)).mean()
    assert abs(float(kept) - 0.7) < 0.02


def test_tower_masks_replace_features_by_default():
    c = _corpus()
    t = S.FeatureTower(c.vocab(), c.order, set(c.multi))
    b = c.take(torch.arange(6))
    full = torch.ones(6, len(c.order), dtype=torch.bool)
    out = t(b, full)  # every feature masked: every item gets the same embedding
    assert torch.allclose(out, out[:1].expand_as(out), atol=1e-6)
    assert torch.allclose(out.norm(dim=1), torch.ones(6))
    assert not torch.allclose(t(b), t(b)[:1].expand(6, -1))


def test_train_and_evaluate_tiny_run():
    c = _corpus(30)
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 30, (300, 2))
    r = S.train(c, pairs, "cfm", steps=3, batch=16, ssl_batch=8, seed=0)
    assert len(r.losses["main"]) == 3 and len(r.losses["ssl"]) == 3
    test = rng.integers(0, 30, (20, 2))
    sl = S.popularity_slices(pairs, 30)
    ev = S.evaluate(r, c, test, {"head": sl["head"], "tail": sl["tail"]}, ks=(5, 30))
    assert ev["all"]["n"] == 20 and ev["head"]["n"] + ev["tail"]["n"] <= 20
    # k = corpus size: every target is retrieved unless it is the excluded query itself
    assert ev["all"]["recall@30"] == pytest.approx(float(np.mean(test[:, 0] != test[:, 1])))
    b = S.train(c, pairs, "baseline", steps=3, batch=16, seed=0)
    assert b.losses["ssl"] == []
    # same main-task batches: the baseline and FD at fd_rate=0 train identically
    f = S.train(c, pairs, "fd", steps=3, batch=16, seed=0, fd_rate=0.0)
    assert b.losses["main"] == pytest.approx(f.losses["main"])


def test_movielens_item_features_from_files(tmp_path):
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n5,Heat (1995),Action\n9,Old (1972),Drama\n"
    )
    f = S.movielens_item_features(tmp_path, [5, 1, 9, 77])
    assert f["item_id"].tolist() == [0, 1, 2, 3]
    assert f["genres"].shape == (4, 4) and f["genres"].sum(1).tolist() == [1, 2, 1, 0]
    assert f["decade"][0] == f["decade"][1] != f["decade"][2]
    c = S.item_features(f)
    assert set(c.multi) == {"genres"} and c.order == ["item_id", "genres", "decade"]
    (tmp_path / "other").mkdir()
    assert set(S.movielens_item_features(tmp_path / "other", [1, 2])) == {"item_id"}


def test_bad_inputs_name_the_argument():
    c = _corpus()
    with pytest.raises(InputError, match="mode"):
        S.feature_masks(3, 4, "half")
    with pytest.raises(InputError, match="mi"):
        S.feature_masks(3, 4, "correlated")
    with pytest.raises(InputError, match="train_pairs"):
        S.popularity_slices(np.zeros((3, 3), int), 5)
    with pytest.raises(InputError, match="train_pairs"):
        S.popularity_slices(np.array([[0, 7]]), 5)
    with pytest.raises(InputError, match="variant"):
        S.train(c, np.zeros((4, 2), int), "simclr")
    with pytest.raises(InputError, match="alpha"):
        S.train(c, np.zeros((4, 2), int), "cfm", alpha=-1.0)
    with pytest.raises(InputError, match="`x`"):
        S.batch_softmax_loss(torch.ones(2, 3), torch.ones(3, 3), 0.1)
    with pytest.raises(InputError, match="clicks"):
        S.coclick_pairs(np.ones((2, 2)), 5)
    with pytest.raises(InputError, match="features"):
        S.item_features({"a": torch.tensor([0.5, 1.0])})
    with pytest.raises(InputError, match="p"):
        S.multi_value_dropout(torch.ones(2, 2), 1.5)


def test_full_scale_path_on_movielens_stand_in(tmp_path):
    from xattr_nb.worlds.recsys import load_recsys

    rng = np.random.default_rng(0)
    lines = ["userId,movieId,rating,timestamp"]
    for u in range(1, 61):
        lines += [f"{u},{m},5.0,0" for m in rng.choice(np.arange(1, 31), 8, replace=False)]
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n"
        + "".join(f"{m},Film {m} ({1960 + m}),{'Drama' if m % 2 else 'Comedy'}\n" for m in range(1, 31))
    )
    data = load_recsys("full", data_dir=tmp_path, n_heldout=10)
    parts = S.build(data, n_train=200, features=S.movielens_item_features(tmp_path, data.item_ids))
    assert parts["corpus"].order == ["item_id", "genres", "decade"]
    table, _runs = S.compare(parts, steps=2, batch=8, ssl_batch=8)
    assert list(table.index) == list(S.VARIANTS) and table["all recall@50"].between(0, 1).all()
    with pytest.raises(InputError, match="features"):
        S.build(data)  # MovieLens ratings carry no item features

"""The recommendation world: the generator's ground truth, the strong-generalisation split (no leak
between training users, fold-in and held-out clicks) and the MovieLens reader on files written here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xattr_nb.checks import InputError
from xattr_nb.worlds.recsys import (
    from_interactions,
    load_movielens,
    load_recsys,
    make_implicit_feedback,
    read_movielens,
    split_fold_in,
)


@pytest.fixture(scope="module")
def world():
    return make_implicit_feedback(n_users=600, n_items=300, n_val=100, n_test=100, seed=3)


def _rows(m):
    return [set(m[i].indices.tolist()) for i in range(m.shape[0])]


def test_split_has_no_leak(world):
    tr, va, te = set(world.train_users), set(world.val_users), set(world.test_users)
    assert not (tr & va) and not (tr & te) and not (va & te)
    for fold, held in ((world.val_fold_in, world.val_heldout), (world.test_fold_in, world.test_heldout)):
        assert fold.shape == held.shape
        assert fold.multiply(held).nnz == 0  # no click is both input and target
        for f, h in zip(_rows(fold), _rows(held), strict=True):
            n = len(f) + len(h)
            assert len(h) == max(1, int(0.2 * n))  # the official int(0.2 * n) targets, at least one
    # every item column was clicked by some training user (the item set is the training users' items)
    assert (np.asarray(world.train.sum(0)).ravel() > 0).all()


def test_split_recovers_every_click():
    df = pd.DataFrame({"user": np.repeat(np.arange(40), 10), "item": np.tile(np.arange(10), 40)})
    d = from_interactions(df, n_val=10, n_test=10, seed=1)
    assert d.train.nnz + d.val_fold_in.nnz + d.val_heldout.nnz + d.test_fold_in.nnz + d.test_heldout.nnz == 400
    assert (d.val_fold_in + d.val_heldout).toarray().all()  # fold-in ∪ held-out = all of a user's clicks
    assert d.val_heldout.sum(1).ravel().tolist() == [[2] * 10]


def test_generator_is_seeded_and_has_a_long_tail(world):
    again = make_implicit_feedback(n_users=600, n_items=300, n_val=100, n_test=100, seed=3)
    assert (again.train != world.train).nnz == 0
    other = make_implicit_feedback(n_users=600, n_items=300, n_val=100, n_test=100, seed=4)
    assert other.train.shape != world.train.shape or (other.train != world.train).nnz > 0
    pop = np.sort(world.popularity())[::-1]
    assert pop[: len(pop) // 10].sum() > 0.3 * pop.sum()  # the top 10 % of items take a large share
    assert world.truth.logits(world.test_users).shape == (len(world.test_users), world.n_items)
    assert world.truth.item_logpop.shape == (world.n_items,)
    f = world.item_features
    assert {"item_id", "topic", "subtopic", "brand", "price", "tags"} <= set(f)
    assert (f["subtopic"] // 4 == f["topic"]).all()  # the sub-topic is a child of the topic
    assert f["tags"].shape[0] == world.n_items and f["tags"].sum(1).min() >= 1 and f["tags"].sum(1).max() <= 6


def test_clicks_follow_the_true_logits(world):
    # the items a test user clicked score higher under the true logits than those they did not
    logits = world.truth.logits(world.test_users).numpy()
    clicked = (world.test_fold_in + world.test_heldout).toarray() > 0
    assert logits[clicked].mean() > logits[~clicked].mean() + 1.0


def _write_csv(path):
    rows = []
    for u, ratings in {1: [5, 4, 4, 4.5, 4, 3.5], 2: [5, 5, 5, 3, 2, 1, 4], 3: [4, 4, 4, 4, 4, 4, 4]}.items():
        rows += [(u, 10 + i, r, 1000 + i) for i, r in enumerate(ratings)]
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(path, index=False)


def test_read_movielens_csv_threshold_and_min_count(tmp_path):
    f = tmp_path / "ratings.csv"
    _write_csv(f)
    df = read_movielens(f)
    # user 1: five ratings > 3.5 (3.5 itself is not a click) -> kept; user 2: four -> dropped; user 3: seven
    assert sorted(df["user"].unique()) == [1, 3]
    assert df[df.user == 1]["item"].tolist() == [10, 11, 12, 13, 14]
    assert len(df[df.user == 3]) == 7
    assert sorted(read_movielens(tmp_path, min_user_clicks=4)["user"].unique()) == [1, 2, 3]  # a folder works too
    # only ratings > 4: user 1 has two (5, 4.5), user 2 three, user 3 none
    assert len(read_movielens(f, threshold=4.0)) == 0
    assert read_movielens(f, threshold=4.0, min_user_clicks=2).groupby("user").size().to_dict() == {1: 2, 2: 3}


def test_read_movielens_dat(tmp_path):
    d = tmp_path / "ml-1m"
    d.mkdir()
    lines = [
        f"{u}::{100 + i}::{r}::97830{i}"
        for u, rs in {7: [5, 4, 4, 4, 4], 8: [5, 3, 4, 4, 4]}.items()
        for i, r in enumerate(rs)
    ]
    (d / "ratings.dat").write_text("\n".join(lines) + "\n")
    df = read_movielens(tmp_path)
    assert df["user"].unique().tolist() == [7] and df["item"].tolist() == [100, 101, 102, 103, 104]


def test_load_movielens_splits_like_the_paper(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(u, int(i), 5.0, 0) for u in range(60) for i in rng.choice(40, size=12, replace=False)]
    f = tmp_path / "ratings.csv"
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(f, index=False)
    d = load_movielens(f, n_heldout=10)
    assert d.train.shape[0] == 40 and d.val_fold_in.shape[0] <= 10 and d.test_fold_in.shape[0] <= 10
    assert set(d.item_ids) <= set(range(40))
    assert d.test_heldout.sum(1).min() >= 1 and d.test_fold_in.multiply(d.test_heldout).nnz == 0
    d2 = load_recsys("full", data_dir=str(f), n_heldout=10)
    assert (d2.train != d.train).nnz == 0  # the official seed makes the split reproducible


def test_bad_input_names_the_argument(tmp_path):
    with pytest.raises(InputError, match="n_users"):
        make_implicit_feedback(n_users=1)
    with pytest.raises(InputError, match="min_clicks"):
        make_implicit_feedback(min_clicks=2)
    with pytest.raises(InputError, match="n_val"):
        from_interactions(pd.DataFrame({"user": [1, 2], "item": [1, 1]}), n_val=1, n_test=1)
    with pytest.raises(InputError, match="interactions"):
        from_interactions(pd.DataFrame({"u": [1]}), n_val=1, n_test=1)
    with pytest.raises(InputError, match="holdout"):
        split_fold_in(pd.DataFrame({"user": [1] * 5, "item": range(5)}), holdout=1.0)
    with pytest.raises(InputError, match="path"):
        read_movielens(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="path"):
        read_movielens(tmp_path)  # a folder without a ratings file
    (tmp_path / "ratings.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="userId"):
        read_movielens(tmp_path / "ratings.csv")
    with pytest.raises(InputError, match="scale"):
        load_recsys("gpu")
    with pytest.raises(InputError, match="data_dir"):
        load_recsys("full")

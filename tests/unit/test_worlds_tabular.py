"""worlds.tabular: the latent-factor table's documented structure, min-max scaling, the CSV reader."""

import numpy as np
import pytest

from xattr_nb.checks import InputError
from xattr_nb.worlds.tabular import (
    label_of,
    load_tabular,
    make_latent_factor_table,
    minmax_fit_transform,
    read_csv_table,
)


@pytest.fixture(scope="module")
def table():
    return make_latent_factor_table(n=3000, n_test=500, seed=3)


def test_shapes_and_kinds(table):
    assert table.x_num.shape == (3000, 22) and table.x_cat.shape == (3000, 2)
    assert table.feature_kind.count("nuisance") == 10 and table.feature_kind.count("categorical") == 2
    assert len(table.feature_names) == table.n_features == 24
    assert table.x_cat.max() == 3 and table.x_cat.min() == 0


def test_label_depends_only_on_documented_factors(table):
    # the clean label is exactly 1[wᵀz + 0.5 z1 z2 > 0] ...
    assert np.array_equal(table.y_clean, label_of(table.z, table.w))
    # ... and the observed label is it with the documented flips
    assert np.array_equal(table.y, np.where(table.flipped, 1 - table.y_clean, table.y_clean))
    assert abs(table.flipped.mean() - 0.05) < 0.015
    # the label moves with z (the documented factor) ...
    z2 = table.z.copy()
    z2[:, 0] += 10.0
    assert not np.array_equal(label_of(z2, table.w), table.y_clean)  # and it does depend on z


def test_label_of_hand_case():
    z = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 0.0]])
    w = np.array([0.0, 0.0])
    assert label_of(z, w).tolist() == [1, 0, 0]  # 0.5 z1 z2 = 0.5, -0.5, 0


def test_nuisance_is_independent_and_structured_is_predictable(table):
    kinds = np.array(table.feature_kind)
    xn = table.x_num
    num_kinds = kinds[: xn.shape[1]]
    nuis, struct = xn[:, num_kinds == "nuisance"], xn[:, num_kinds != "nuisance"]
    y = table.y_clean
    assert max(abs(np.corrcoef(nuis[:, j], y)[0, 1]) for j in range(nuis.shape[1])) < 0.08
    assert max(abs(np.corrcoef(nuis[:, j], struct[:, 0])[0, 1]) for j in range(nuis.shape[1])) < 0.08
    c = np.corrcoef(struct.T)
    assert np.abs(c[np.triu_indices_from(c, 1)]).max() > 0.5  # structured columns share z


def test_splits_and_scaling(table):
    assert len(set(table.test_idx) & set(table.pretrain_idx)) == 0
    assert set(table.labelled_idx) <= set(table.pretrain_idx) and len(table.labelled_idx) == 100
    pre = table.x_num[table.pretrain_idx]
    assert np.allclose(pre.min(0), 0.0) and np.allclose(pre.max(0), 1.0)
    assert table.raw(table.test_idx[:5]).shape == (5, 22 + 8)


def test_seeded():
    a, b = make_latent_factor_table(n=200, n_test=50, seed=1), make_latent_factor_table(n=200, n_test=50, seed=1)
    assert np.array_equal(a.x_num, b.x_num) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x_num, make_latent_factor_table(n=200, n_test=50, seed=2).x_num)


def test_minmax_hand_numbers():
    fit, other = minmax_fit_transform(np.array([[0.0, 5.0], [2.0, 5.0]]), np.array([[1.0, 7.0]]))
    assert fit.tolist() == [[0.0, 0.0], [1.0, 0.0]] and other.tolist() == [[0.5, 2.0]]


def test_read_csv_table(tmp_path):
    p = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    rows = ["a,b,colour,label"] + [
        f"{rng.normal():.3f},{i},{'red' if i % 3 else 'blue'},{'yes' if i % 2 else 'no'}" for i in range(50)
    ]
    p.write_text("\n".join(rows) + "\n")
    t = read_csv_table(p, "label", test_frac=0.2, n_labelled=10, seed=0)
    assert t.x_num.shape == (50, 2) and t.x_cat.shape == (50, 1) and t.cat_cardinalities == [2]
    assert t.feature_names == ["a", "b", "colour"] and set(t.y.tolist()) == {0, 1}
    assert len(t.test_idx) == 10 and len(t.labelled_idx) == 10
    assert load_tabular("full", data_csv=p, target="label").n_features == 3


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: make_latent_factor_table(n=5), "`n`"),
        (lambda: make_latent_factor_table(flip=0.9), "`flip`"),
        (lambda: make_latent_factor_table(n=100, n_test=200), "`n_test`"),
        (lambda: load_tabular("huge"), "`scale`"),
        (lambda: load_tabular("full"), "`data_csv`"),
        (lambda: read_csv_table("/nonexistent.csv", "y"), "`path`"),
        (lambda: minmax_fit_transform(np.zeros(3)), "`x_fit`"),
    ],
)
def test_bad_input(call, name):
    with pytest.raises(InputError, match=name):
        call()


def test_bad_target_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b\n1,2\n3,4\n5,6\n")
    with pytest.raises(InputError, match="`target`"):
        read_csv_table(p, "nope")

"""ELR (paper 18): the training loop, detection, the paired comparison, the full-scale path on a stand-in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.methods import elr as E
from xattr_nb.worlds.noisy_labels import make_noisy_digits, noisy_split


def _blobs(n=200, rate=0.4, seed=0):
    """Four well-separated Gaussian blobs in 8-D with 40 % symmetric noise: easy to learn, easy to memorise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(4).repeat(n // 4)
    centers = 4 * torch.eye(4, 8)
    x = centers[y] + 0.5 * torch.randn(n, 8, generator=g)
    return noisy_split(x, y, rate, n_train=n // 2, seed=seed)


def test_make_mlp_shapes_and_seed():
    a, b = E.make_mlp(8, (16,), 4, seed=3), E.make_mlp(8, (16,), 4, seed=3)
    assert a(torch.zeros(2, 8)).shape == (2, 4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_train_noisy_history_and_determinism():
    tr, te = _blobs()
    r1 = E.train_noisy(tr, te, loss="elr", epochs=6, batch_size=32, milestones=(4,), seed=1, eval_every=2)
    r2 = E.train_noisy(tr, te, loss="elr", epochs=6, batch_size=32, milestones=(4,), seed=1, eval_every=2)
    assert list(r1.history["epoch"]) == [2, 4, 6]
    assert torch.equal(r1.targets, r2.targets) and r1.final == r2.final
    # targets: every example visited once per epoch, so rows sum to 1 - beta^epochs
    assert torch.allclose(r1.targets.sum(1), torch.full((len(tr),), 1 - 0.7**6), atol=1e-5)
    h = r1.history.iloc[-1]
    assert 0 <= h["fit_clean"] + h["memorized"] <= 1 and h["reg"] < 0  # log(1 - <p,t>) < 0 once t > 0


def test_ce_memorises_blobs_and_elr_does_not():
    tr, te = _blobs(n=400, seed=2)
    kw = dict(epochs=150, batch_size=20, lr=0.05, milestones=(1000,), weight_decay=0.0, hidden=(64, 64), seed=0)
    ce = E.train_noisy(tr, te, loss="ce", **kw)
    elr = E.train_noisy(tr, te, loss="elr", lam=3.0, beta=0.7, **kw)
    assert ce.final["memorized"] > 0.5  # a wide net with no decay fits the wrong labels
    assert elr.final["memorized"] < ce.final["memorized"] - 0.3
    flags, _score = E.detect(elr.targets, tr.labels)
    assert float((flags == tr.flipped).float().mean()) > 0.8


def test_detect_known_answer():
    t = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    flags, score = E.detect(t, torch.tensor([0, 0, 1]))
    assert flags.tolist() == [False, True, True] and torch.allclose(score, torch.tensor([0.2, 0.7, 0.6]))


def test_compare_pairs_runs_and_explain():
    methods = {"CE": {"loss": "ce"}, "ELR": {"loss": "elr"}}
    table, runs = E.compare(0.4, methods, n_runs=1, seed=0, epochs=2, eval_every=1)
    assert list(table["method"]) == ["CE", "ELR"] and set(runs) == {("CE", 0), ("ELR", 0)}
    assert {"test_acc", "memorized", "precision", "recall", "auroc", "peak_acc"} <= set(table.columns)
    assert E.summarize(table).index.tolist() == ["CE", "ELR"]
    tr, te = make_noisy_digits(0.4, seed=0)
    out = E.explain(tr, te, epochs=2)
    assert out["flags"].shape == (1200,) and 0 <= out["detection"]["precision"] <= 1


def test_load_full_on_a_standin_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c, name in enumerate(("airplane", "cat")):
            d = tmp_path / split / name
            d.mkdir(parents=True)
            for i in range(n):
                arr = (rng.uniform(0, 1, (12, 12, 3)) * 80 + 120 * c).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    tr, te, model = E.load_full(str(tmp_path), 0.5, size=8, depths=(1,), widths=(4,), embedding=4)
    assert tr.x.shape == (12, 3, 8, 8) and len(te) == 4 and tr.n_classes == 2 and int(tr.chosen.sum()) == 6
    res = E.train_noisy(tr, te, loss="elr", model=model, epochs=1, batch_size=4, augment=True)
    assert res.targets.shape == (12, 2) and len(res.history) == 1


def test_augment_keeps_shape_and_content_range():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float).reshape(2, 1, 4, 4)
    out = E._augment(x, torch.Generator().manual_seed(0), pad=1)
    assert out.shape == x.shape and float(out.max()) <= float(x.max())


@pytest.mark.parametrize(
    ("kw", "arg"),
    [
        ({"loss": "mae"}, "loss"),
        ({"lr": 0.0}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"milestones": (5, 2)}, "milestones"),
        ({"beta": 1.0}, "beta"),
        ({"loss": "gce", "q": 0.0}, "q"),
    ],
)
def test_bad_training_arguments(kw, arg):
    tr, te = _blobs()
    with pytest.raises(InputError, match=arg):
        E.train_noisy(tr, te, **{"epochs": 1, **kw})


def test_bad_data_and_paths(tmp_path):
    with pytest.raises(InputError, match="train"):
        E.train_noisy((torch.zeros(2, 2), torch.zeros(2)), None)
    with pytest.raises(InputError, match="data_dir"):
        E.load_full(str(tmp_path), 0.4)
    with pytest.raises(InputError, match="targets"):
        E.detect(torch.zeros(3), torch.zeros(3, dtype=torch.long))

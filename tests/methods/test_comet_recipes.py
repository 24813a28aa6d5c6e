"""The zoo recipes of notebook 05 (COMET): what they train, and the checkpoints they shipped."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.methods import comet as C
from xattr_nb.models import accuracy, build, zoo
from xattr_nb.models import comet_recipes as R

NAMES = ("comet_detector", "comet_baseline", "comet_model")


def test_recipes_are_registered_and_their_configs_build():
    recipes = zoo.recipes()
    assert set(NAMES) <= set(recipes)
    assert isinstance(build(recipes["comet_model"].config), C.CometModel)
    det = build(recipes["comet_detector"].config)
    assert det(torch.rand(2, 3, 32, 32)).shape == (2, 4)


def test_recipe_trains_the_notebook_setting_and_saves_a_loadable_checkpoint(tmp_path, monkeypatch):
    tiny = {**C.SMALL_SCALE, "n_train": 64, "n_test": 16, "det_epochs": 1, "epochs": 2}
    monkeypatch.setattr(C, "SMALL_SCALE", tiny)
    R._detector.cache_clear()
    try:
        model, metrics = R.train_comet_model(0)
        det, det_metrics = R.train_comet_detector(0)
    finally:
        R._detector.cache_clear()
    assert isinstance(model, C.CometModel) and len(metrics["area_per_epoch"]) == 2 and metrics["a"] == 4.0
    assert {"test_pred_correct", "test_comp_correct", "test_recall", "test_both_copies"} <= set(metrics)
    assert {"test_accuracy", "leak_control"} <= set(det_metrics)
    assert model.detector is det  # one detector, trained once per seed, frozen inside the system
    zoo.save("comet_model", model, config=R.COMET_CONFIG, metrics=metrics, root=tmp_path)
    back = zoo.load("comet_model", root=tmp_path)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back.mask(x), model.eval().mask(x)) and torch.equal(back(x), model(x))


def test_shipped_checkpoints_carry_one_frozen_detector():
    det = zoo.load("comet_detector")
    for name in ("comet_baseline", "comet_model"):
        system = zoo.load(name)
        assert isinstance(system, C.CometModel)
        for a, b in zip(det.state_dict().values(), system.detector.state_dict().values(), strict=True):
            assert torch.equal(a, b)


def test_shipped_checkpoints_reach_their_recorded_metrics_on_fresh_images():
    shipped = {e.name: e.metrics for e in zoo.entries()}
    _, fresh = C.twin_shapes(16, 400, seed=123_456)
    det = zoo.load("comet_detector")
    assert accuracy(det, fresh.images, fresh.labels) > shipped["comet_detector"]["test_accuracy"] - 0.05
    for name in ("comet_baseline", "comet_model"):
        r = C.evaluate(zoo.load(name), fresh.images, fresh.labels, fresh.masks)
        for key in ("pred_correct", "comp_correct", "area"):
            assert float(r[key].mean()) == pytest.approx(shipped[name][f"test_{key}"], abs=0.08), (name, key)

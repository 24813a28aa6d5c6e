"""The checkpoints shipped in data/ load, match their checksums and still reach their metrics."""

import json
import shutil
from dataclasses import asdict

import pytest

from xattr_nb.checks import InputError
from xattr_nb.models import accuracy, zoo
from xattr_nb.models.recipes import SHAPES_CNN_CLASSES
from xattr_nb.worlds.shapes import make_shapes


def test_every_shipped_checkpoint_verifies():
    results = zoo.verify()
    assert results, "data/manifest.json lists no checkpoint"
    assert all(ok for _, ok, _ in results), results


def test_every_recipe_has_a_shipped_checkpoint():
    assert set(zoo.recipes()) <= {e.name for e in zoo.entries()}


def test_shapes_cnn_reaches_its_recorded_accuracy_on_fresh_images():
    entry = next(e for e in zoo.entries() if e.name == "shapes_cnn")
    model = zoo.load("shapes_cnn")
    fresh = make_shapes(400, classes=SHAPES_CNN_CLASSES, n_distractors=2, seed=123_456)
    acc = accuracy(model, fresh.images, fresh.labels)
    assert acc > entry.metrics["test_accuracy"] - 0.05 and acc > 0.9


def test_copied_shipped_checkpoint_truncated_is_reported_not_raised(tmp_path):
    """A shipped checkpoint copied into a scratch zoo, truncated, and its manifest sha256 updated to
    match: the checksum passes, so only the format check stands between it and a SafetensorError."""
    shipped = {e.name: e for e in zoo.entries()}
    (tmp_path / "checkpoints").mkdir()
    manifest = {"checkpoints": {}}
    for name in ("shapes_cnn", "ioi_gpt2"):
        e = shipped[name]
        shutil.copyfile(e.path(), tmp_path / e.file)
        manifest["checkpoints"][name] = {k: v for k, v in asdict(e).items() if k != "name"}
    path = tmp_path / shipped["shapes_cnn"].file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    manifest["checkpoints"]["shapes_cnn"]["sha256"] = zoo._sha256(path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(InputError, match="truncated or corrupt") as info:
        zoo.load("shapes_cnn", root=tmp_path)
    assert str(path) in str(info.value)
    report = {name: ok for name, ok, _ in zoo.verify(tmp_path)}
    assert report == {"shapes_cnn": False, "ioi_gpt2": True}

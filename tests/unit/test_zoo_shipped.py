"""The checkpoints shipped in data/ load, match their checksums and still reach their metrics."""

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

"""The recipes behind the shipped checkpoints: ``xattr-nb zoo train NAME`` runs one of these.

Each recipe is a function ``seed -> (model, metrics)`` that builds its data from
:mod:`xattr_nb.worlds`, trains with :func:`~xattr_nb.models.fit.fit`, and reports held-out metrics.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from xattr_nb.models import zoo
from xattr_nb.models.fit import accuracy, fit
from xattr_nb.models.vision import TinyCNN
from xattr_nb.runtime import seed_everything
from xattr_nb.worlds.shapes import SHAPES, make_shapes

SHAPES_CNN_CLASSES = SHAPES[:4]


def train_shapes_cnn(
    seed: int, *, n_train: int = 8000, n_test: int = 1000, epochs: int = 8
) -> tuple[nn.Module, dict[str, Any]]:
    """A TinyCNN that tells circle, square, triangle and star apart on ShapesWorld (32x32, 2 distractors)."""
    seed_everything(seed)
    train = make_shapes(n_train, classes=SHAPES_CNN_CLASSES, n_distractors=2, seed=seed)
    test = make_shapes(n_test, classes=SHAPES_CNN_CLASSES, n_distractors=2, seed=seed + 10_000)
    model = TinyCNN(len(SHAPES_CNN_CLASSES))
    fit(model, (train.images, train.labels), epochs=epochs, lr=1e-2, batch_size=64, seed=seed, show_progress=False)
    model.eval()
    return model, {"test_accuracy": round(accuracy(model, test.images, test.labels), 4), "n_train": n_train}


zoo.register(
    "shapes_cnn",
    config=TinyCNN(len(SHAPES_CNN_CLASSES)).arch_config,
    train=train_shapes_cnn,
    description="TinyCNN on ShapesWorld: circle/square/triangle/star with 2 distractors, 32x32",
)

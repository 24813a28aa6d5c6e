"""Zoo recipe of notebook 16 (CFT): the ERM base ViT that concept-guided fine-tuning starts from.

``cft_vit_erm`` is :func:`xattr_nb.methods.concept_finetuning.train_erm` on the training split of
:func:`~xattr_nb.methods.concept_finetuning.make_data` at ``seed`` (data, initialisation and batch
order): a TinyViT (patch 4, dim 48, depth 3, 4 heads) trained by cross-entropy on the
spurious-background ShapesWorld, where the class-tied texture is a shortcut. The notebook loads it
at seed 0 and retrains it (``load_image_model(..., retrain=True, seed=seed)``) at any other seed,
so every seed's base model comes from the same recipe. Its manifest metrics hold the ID and OOD
accuracy the notebook re-measures.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from xattr_nb.models import zoo
from xattr_nb.models.fit import accuracy

__all__ = ["CFT_VIT_CONFIG", "train_cft_vit_erm"]

#: The base model's architecture (4 classes, 32×32 RGB, 8×8 patches + CLS).
CFT_VIT_CONFIG: dict[str, Any] = {
    "arch": "TinyViT",
    "kwargs": {"n_classes": 4, "image_size": 32, "patch": 4, "dim": 48, "depth": 3, "heads": 4, "in_ch": 3},
}


def train_cft_vit_erm(seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """The ERM base model at ``seed`` and its ID / OOD accuracy."""
    from xattr_nb.methods import concept_finetuning as cft

    k = cft.SMALL_SCALE
    data = cft.make_data(
        n_train=k["n_train"], n_id=k["n_id"], n_ood=k["n_ood"], spurious_bg=k["spurious_bg"], seed=seed
    )
    model = cft.train_erm(data["train"], epochs=k["erm_epochs"], lr=k["erm_lr"], seed=seed, show_progress=False)
    return model, {
        "id_accuracy": round(accuracy(model, data["id"].images, data["id"].labels), 4),
        "ood_accuracy": round(accuracy(model, data["ood"].images, data["ood"].labels), 4),
        "n_train": int(k["n_train"]),
        "epochs": int(k["erm_epochs"]),
    }


zoo.register(
    "cft_vit_erm",
    config=CFT_VIT_CONFIG,
    train=train_cft_vit_erm,
    description="CFT's ERM base: TinyViT (patch 4, dim 48, depth 3) on the spurious-texture ShapesWorld "
    "(concept_finetuning.make_data, crest = concept, texture tied to the class with p=0.9)",
)

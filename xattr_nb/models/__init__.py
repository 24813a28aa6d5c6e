"""Models: tiny ones that train in seconds, loaders for pretrained ones, a training loop, a zoo.

- :mod:`~xattr_nb.models.vision`: :class:`TinyCNN`, :class:`TinyViT`, :func:`build` from a config dict.
- :mod:`~xattr_nb.models.text`: :func:`word_tokenizer`, :func:`tiny_gpt2`, :class:`EncoderClassifier`,
  :func:`check_tokenizer_matches`.
- :mod:`~xattr_nb.models.hub`: :func:`load_encoder` (offline MiniLM), :func:`embed`,
  :func:`load_causal_lm` and :func:`load_classifier` (HF names or local folders).
- :mod:`~xattr_nb.models.fit`: :func:`fit` (a small AdamW loop with a progress bar), :func:`accuracy`.
- :mod:`~xattr_nb.models.detection`: :class:`TinyGridDetector` (ShapesWorld scenes), box IoU, NMS,
  mAP, :func:`~xattr_nb.models.detection.detection_score` (the VPS / D-RISE object score).
- :mod:`~xattr_nb.models.sae`: sparse autoencoders (:class:`TopKSAE`, :class:`L1SAE`), :func:`train_sae`,
  dead-latent revival, top activations.
- :mod:`~xattr_nb.models.moe`: :class:`TopKMoEMLP`, :func:`moeify_gpt2` (a tiny mixture of experts in HF
  GPT-2), :func:`routing_weights`, router-only training helpers.
- :mod:`~xattr_nb.models.attention`: the ``"xattr_eager"`` attention function (readable, detachable
  attention probabilities for HF models).
- :mod:`~xattr_nb.models.zoo`: shipped checkpoints in ``data/`` (safetensors + a checksummed manifest).
- :mod:`~xattr_nb.models.io`: the adapter seam every layer reads models through: :func:`logits_of`,
  :func:`device_of`, :func:`check_model`, :func:`eval_mode` (and token-input checks).
- :mod:`~xattr_nb.models.architectures`: :data:`ARCHITECTURES`, :func:`register_architecture`, :func:`build`.

The names of the submodules that load transformers (``hub``, ``moe``, ``text``) are imported on
first use (PEP 562), so that ``import xattr_nb.models.io`` (which :mod:`xattr_nb.kernels` does)
does not load transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xattr_nb.models.architectures import ARCHITECTURES, build, register_architecture
from xattr_nb.models.detection import (
    Detections,
    TinyGridDetector,
    detection_score,
    evaluate_detector,
    train_detector,
)
from xattr_nb.models.fit import FitHistory, accuracy, fit
from xattr_nb.models.io import check_model, device_of, eval_mode, logits_of
from xattr_nb.models.sae import L1SAE, TopKSAE, train_sae
from xattr_nb.models.vision import TinyCNN, TinyViT

if TYPE_CHECKING:
    from xattr_nb.models.hub import (
        ImageClassifier,
        embed,
        load_causal_lm,
        load_classifier,
        load_encoder,
        load_image_classifier,
        minilm_path,
    )
    from xattr_nb.models.moe import TopKMoEMLP, moeify_gpt2, routing_weights
    from xattr_nb.models.text import (
        EncoderClassifier,
        check_tokenizer_matches,
        hf_arch_config,
        tiny_gpt2,
        word_tokenizer,
    )

#: Names from the submodules that load transformers, imported on first use.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        [
            "ImageClassifier",
            "embed",
            "load_causal_lm",
            "load_classifier",
            "load_encoder",
            "load_image_classifier",
            "minilm_path",
        ],
        "hub",
    ),
    **dict.fromkeys(["TopKMoEMLP", "moeify_gpt2", "routing_weights"], "moe"),
    **dict.fromkeys(["LoadedLM", "load_image_model", "load_lm"], "loaders"),
    **dict.fromkeys(
        ["EncoderClassifier", "check_tokenizer_matches", "hf_arch_config", "tiny_gpt2", "word_tokenizer"], "text"
    ),
}

__all__ = [
    "ARCHITECTURES",
    "L1SAE",
    "Detections",
    "EncoderClassifier",
    "FitHistory",
    "ImageClassifier",
    "LoadedLM",
    "TinyCNN",
    "TinyGridDetector",
    "TinyViT",
    "TopKMoEMLP",
    "TopKSAE",
    "accuracy",
    "build",
    "check_model",
    "check_tokenizer_matches",
    "detection_score",
    "device_of",
    "embed",
    "eval_mode",
    "evaluate_detector",
    "fit",
    "hf_arch_config",
    "load_causal_lm",
    "load_classifier",
    "load_encoder",
    "load_image_classifier",
    "load_image_model",
    "load_lm",
    "logits_of",
    "minilm_path",
    "moeify_gpt2",
    "register_architecture",
    "routing_weights",
    "tiny_gpt2",
    "train_detector",
    "train_sae",
    "word_tokenizer",
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'xattr_nb.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"xattr_nb.models.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

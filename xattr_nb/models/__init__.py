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
"""

from xattr_nb.models.detection import (
    Detections,
    TinyGridDetector,
    detection_score,
    evaluate_detector,
    train_detector,
)
from xattr_nb.models.fit import FitHistory, accuracy, fit
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
from xattr_nb.models.sae import L1SAE, TopKSAE, train_sae
from xattr_nb.models.text import (
    EncoderClassifier,
    check_tokenizer_matches,
    hf_arch_config,
    tiny_gpt2,
    word_tokenizer,
)
from xattr_nb.models.vision import ARCHITECTURES, TinyCNN, TinyViT, build, register_architecture

__all__ = [
    "ARCHITECTURES",
    "L1SAE",
    "Detections",
    "EncoderClassifier",
    "FitHistory",
    "ImageClassifier",
    "TinyCNN",
    "TinyGridDetector",
    "TinyViT",
    "TopKMoEMLP",
    "TopKSAE",
    "accuracy",
    "build",
    "check_tokenizer_matches",
    "detection_score",
    "embed",
    "evaluate_detector",
    "fit",
    "hf_arch_config",
    "load_causal_lm",
    "load_classifier",
    "load_encoder",
    "load_image_classifier",
    "minilm_path",
    "moeify_gpt2",
    "register_architecture",
    "routing_weights",
    "tiny_gpt2",
    "train_detector",
    "train_sae",
    "word_tokenizer",
]

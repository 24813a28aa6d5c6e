"""Models: tiny ones that train in seconds, loaders for pretrained ones, a training loop, a zoo.

- :mod:`~xattr_nb.models.vision`: :class:`TinyCNN`, :class:`TinyViT`, :func:`build` from a config dict.
- :mod:`~xattr_nb.models.text`: :func:`word_tokenizer`, :func:`tiny_gpt2`, :class:`EncoderClassifier`,
  :func:`check_tokenizer_matches`.
- :mod:`~xattr_nb.models.hub`: :func:`load_encoder` (offline MiniLM), :func:`embed`,
  :func:`load_causal_lm` and :func:`load_classifier` (HF names or local folders).
- :mod:`~xattr_nb.models.fit`: :func:`fit` (a small AdamW loop with a progress bar), :func:`accuracy`.
- :mod:`~xattr_nb.models.detection`: :class:`TinyGridDetector` (ShapesWorld scenes), box IoU, NMS,
  mAP, :func:`~xattr_nb.models.detection.detection_score` (the VPS / D-RISE object score).
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
    "Detections",
    "EncoderClassifier",
    "FitHistory",
    "ImageClassifier",
    "TinyCNN",
    "TinyGridDetector",
    "TinyViT",
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
    "register_architecture",
    "tiny_gpt2",
    "train_detector",
    "word_tokenizer",
]

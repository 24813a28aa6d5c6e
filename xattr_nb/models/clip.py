"""TinyCLIP: a CLIP dual encoder (Hugging Face ``CLIPModel``) small enough for a CPU, with prompt hooks.

- :func:`tiny_clip`: a ``CLIPModel`` with a 4-layer ViT (32×32 images, 8×8 patches) and a 3-layer
  causal text transformer (width 64, projection 64), eager attention; :func:`clip_tokenizer` its
  word-level tokenizer over the caption vocabulary of :mod:`xattr_nb.worlds.captions`, adding
  ``[SOS] ... [EOS]`` as CLIP's own tokenizer does. Being a real ``CLIPModel``, it saves with
  ``save_pretrained`` and loads with ``from_pretrained``; ``scale="full"`` swaps in
  ``openai/clip-vit-base-patch16`` through the same :func:`load_clip`.
- :func:`encode_image` / :func:`encode_text`: the projected (by default unit-norm) features, with
  **prompt hooks** ``prompts={layer: tokens}`` (tokens ``[k, D]`` or ``[B, k, D]`` in the tower's
  width). At the first listed layer ``l0`` the ``k`` tokens are *inserted*: in the text tower right
  after ``[SOS]`` (at ``l0 = 0`` as word embeddings, receiving position embeddings: CoOp's learnable
  context), in the image tower after the patch tokens (at ``l0 = 0`` before the pre-layernorm:
  VPT / IVLP). At every later listed layer the same ``k`` slots are *replaced* by that layer's
  tokens (deep prompts: IVLP, MaPLe, PromptSRC); at unlisted layers they flow on. With
  ``prompts=None`` (or ``{}``) the features equal ``CLIPModel.get_image_features`` /
  ``get_text_features`` (normalised).
- :func:`zeroshot_weights`, :func:`zeroshot_logits`, :func:`clip_loss`.
- :func:`load_clip`: the zoo checkpoint ``tiny_clip`` (refused unless its ``world_version`` is the
  captions world's) or a Hugging Face CLIP by name or folder, as :class:`LoadedCLIP` ``(model, tokenizer)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerBase

from xattr_nb.checks import InputError, check_choice, check_tensor
from xattr_nb.models.io import check_model, device_of
from xattr_nb.models.text import word_tokenizer
from xattr_nb.worlds import captions as world

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "STEMS",
    "ConvStem",
    "HybridStem",
    "LoadedCLIP",
    "clip_loss",
    "clip_tokenizer",
    "encode_image",
    "encode_text",
    "load_clip",
    "stem_name",
    "tiny_clip",
    "tiny_clip_config",
    "tokenize",
    "use_stem",
    "zeroshot_logits",
    "zeroshot_weights",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_LEN = 16


def clip_tokenizer() -> PreTrainedTokenizerBase:
    """Word-level tokenizer of the captions world; ``tok(texts)`` adds ``[SOS]`` and ``[EOS]``."""
    from tokenizers.processors import TemplateProcessing

    tok = word_tokenizer(world.vocabulary(), specials=world.SPECIALS)
    sos, eos = tok.convert_tokens_to_ids(["[SOS]", "[EOS]"])
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="[SOS] $A [EOS]", special_tokens=[("[SOS]", sos), ("[EOS]", eos)]
    )
    tok.model_max_length = TEXT_LEN
    return tok


def tiny_clip_config(
    *,
    width: int = 64,
    vision_layers: int = 4,
    text_layers: int = 3,
    heads: int = 4,
    patch: int = 8,
    image_size: int = 32,
    embed_dim: int = 64,
    max_positions: int = 24,
) -> CLIPConfig:
    """The ``CLIPConfig`` of TinyCLIP (``max_positions`` leaves room for 8 prompt tokens after 16 text tokens)."""
    tok = clip_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("[PAD]", "[SOS]", "[EOS]")}
    text = {
        "vocab_size": len(tok),
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": text_layers,
        "num_attention_heads": heads,
        "max_position_embeddings": max_positions,
        "pad_token_id": ids["[PAD]"],
        "bos_token_id": ids["[SOS]"],
        "eos_token_id": ids["[EOS]"],
        "projection_dim": embed_dim,
    }
    vision = {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": vision_layers,
        "num_attention_heads": heads,
        "image_size": image_size,
        "patch_size": patch,
        "num_channels": 3,
        "projection_dim": embed_dim,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=embed_dim)


class ConvStem(nn.Sequential):
    """A convolutional patch embedding: a 3×3 convolution, then stride-2 3×3 convolutions (``norm``,
    GELU) down to the patch grid, and a linear 2×2 stride-2 projection to the tower's width.

    Xiao et al. (2021), "Early convolutions help transformers see better": a ViT trained from scratch
    on a few thousand 32×32 images learns shape far better with it than with one linear 8×8 patch
    projection (16-way supervised shape accuracy after 600 steps, seed 0: 0.81 against 0.25). It is a
    drop-in for ``CLIPVisionEmbeddings.patch_embedding`` (same output grid ``[B, D, H/p, W/p]``);
    ``weight`` is the last projection's, which Hugging Face reads for the input dtype.

    ``norm="batch"`` (the paper's; the zoo's ``tiny_clip_conv``), ``"group"`` (one group per sample:
    no batch statistics) or ``"none"``. Batch norm has a catch on TinyCLIP's colour-pure batches (hard
    negatives): the batch statistics subtract each batch's colour, and ``tiny_clip_conv`` learnt shape
    (zero-shot 0.87) but hardly colour (0.16, chance 0.125).
    """

    def __init__(self, width: int, patch: int, channels: int = 3, norm: str = "batch"):
        patch = int(patch)
        if patch < 2 or patch & (patch - 1):
            raise InputError(f"`patch` must be a power of two >= 2 for the conv stem; got {patch}")
        check_choice(norm, ("batch", "group", "none"), "norm")
        hidden = [max(8, width // 2)] + [width] * (patch.bit_length() - 2)
        layers: list[nn.Module] = []
        c, stride = channels, 1
        for h in hidden:
            if norm == "none":
                layers += [nn.Conv2d(c, h, 3, stride, 1), nn.GELU()]
            else:
                layers += [
                    nn.Conv2d(c, h, 3, stride, 1, bias=False),
                    nn.BatchNorm2d(h) if norm == "batch" else nn.GroupNorm(1, h),
                    nn.GELU(),
                ]
            c, stride = h, 2
        layers.append(nn.Conv2d(c, width, 2, 2))
        super().__init__(*layers)

    @property
    def weight(self) -> torch.Tensor:
        return self[-1].weight


class HybridStem(nn.Module):
    """A :class:`ConvStem` (batch norm) for shape and CLIP's linear patch projection for colour, summed.

    Batch norm over TinyCLIP's colour-pure batch halves turns colour into "this half's colour relative
    to the batch", which is gone at eval time (running statistics): ``tiny_clip_conv`` reads shape
    (zero-shot 0.87) but not colour (0.16). Here, in training, the conv path sees each image with its
    colour channels in a random order, so it cannot carry colour at all and colour has to pass through
    the un-normalised projection; in eval mode both see the image as it is. Same output grid
    ``[B, D, H/p, W/p]`` as either stem.
    """

    def __init__(self, width: int, patch: int, channels: int = 3):
        super().__init__()
        self.conv = ConvStem(width, patch, channels, norm="batch")
        self.linear = nn.Conv2d(channels, width, patch, patch, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape_in = x
        if self.training:
            order = torch.rand(x.shape[:2], device=x.device).argsort(1)
            shape_in = x.gather(1, order[:, :, None, None].expand_as(x))
        return self.conv(shape_in) + self.linear(x)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight


STEMS = ("patch", "conv", "hybrid")


def use_stem(vision_model: nn.Module, stem: str, norm: str = "batch") -> nn.Module:
    """Give a ``CLIPVisionTransformer`` / ``CLIPVisionModel`` the patch embedding ``stem`` (in place):
    ``"patch"`` keeps CLIP's linear patch projection, ``"conv"`` swaps in a :class:`ConvStem` (``norm``),
    ``"hybrid"`` a :class:`HybridStem` (``norm`` is not used)."""
    check_choice(stem, STEMS, "stem")
    emb = getattr(vision_model, "vision_model", vision_model).embeddings
    c = emb.config
    if stem == "conv":
        emb.patch_embedding = ConvStem(c.hidden_size, c.patch_size, c.num_channels, norm=norm)
    elif stem == "hybrid":
        emb.patch_embedding = HybridStem(c.hidden_size, c.patch_size, c.num_channels)
    return vision_model


def stem_name(vision_model: nn.Module) -> str:
    """Which of :data:`STEMS` a CLIP vision tower has (what :func:`use_stem` gives a copy of it)."""
    emb = getattr(vision_model, "vision_model", vision_model).embeddings.patch_embedding
    return "hybrid" if isinstance(emb, HybridStem) else "conv" if isinstance(emb, ConvStem) else "patch"


def tiny_clip(*, stem: str = "patch", norm: str = "batch", **kwargs: Any) -> CLIPModel:
    """A randomly initialised TinyCLIP (:func:`tiny_clip_config`), eager attention, eval mode.

    ``stem="conv"`` (the zoo's ``tiny_clip_conv``) replaces the linear patch projection with a
    :class:`ConvStem` (``norm``); such a model saves and loads through the zoo (``{"arch": "tiny_clip",
    "kwargs": {"stem": "conv"}}``),
    not through ``CLIPModel.from_pretrained``, which would rebuild a linear patch projection.
    """
    check_choice(stem, STEMS, "stem")
    cfg = tiny_clip_config(**kwargs)
    cfg._attn_implementation = "eager"
    model = CLIPModel(cfg)
    use_stem(model.vision_model, stem, norm)
    return model.eval()


def tokenize(tokenizer: Any, texts: Sequence[str], *, max_len: int = TEXT_LEN, device: Any = "cpu"):
    """``(input_ids, attention_mask)`` ``[B, T]`` of ``texts`` (padded, with ``[SOS]``/``[EOS]``)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise InputError("`texts` must be a non-empty list of strings")
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    ids = enc["input_ids"]
    if "[UNK]" in tokenizer.get_vocab() and bool((ids == tokenizer.unk_token_id).any()):
        bad = [t for t, row in zip(texts, ids, strict=True) if bool((row == tokenizer.unk_token_id).any())]
        raise InputError(f"`texts` hold words outside the vocabulary, e.g. {bad[:3]}")
    return ids.to(device), enc["attention_mask"].to(device)


# ----------------------------------------------------------------------------------------------- prompt hooks


def _check_prompts(prompts: Mapping[int, torch.Tensor] | None, n_layers: int, width: int, batch: int, name: str):
    if prompts is None or len(prompts) == 0:
        return {}, 0, None
    if not isinstance(prompts, Mapping):
        raise InputError(f"`{name}` must be a dict {{layer: tokens [k, D] or [B, k, D]}} or None")
    out, k = {}, None
    for layer, tok in prompts.items():
        if not isinstance(layer, int) or not 0 <= layer < n_layers:
            raise InputError(f"`{name}` keys must be layer indices in [0, {n_layers}); got {layer!r}")
        t = check_tensor(tok, f"{name}[{layer}]", nonempty=False)
        if t.ndim == 2:
            t = t.unsqueeze(0).expand(batch, -1, -1)
        if t.ndim != 3 or t.shape[0] != batch or t.shape[2] != width:
            raise InputError(f"`{name}[{layer}]` must be [k, {width}] or [{batch}, k, {width}]; got {tuple(tok.shape)}")
        if k is None:
            k = t.shape[1]
        elif t.shape[1] != k:
            raise InputError(f"`{name}`: every layer must hold the same number of tokens k; got {k} and {t.shape[1]}")
        out[layer] = t
    if k == 0:  # zero tokens: no prompt at all
        return {}, 0, None
    return out, k, min(out)


def _preprocess(model: CLIPModel, images: torch.Tensor) -> torch.Tensor:
    x = check_tensor(images, "images", ndim=4, layout="[B, 3, H, W] in [0, 1]")
    if x.shape[1] != 3:
        raise InputError(f"`images` must have 3 channels; got shape {tuple(x.shape)}")
    size = model.config.vision_config.image_size
    x = x.to(device_of(model), dtype=torch.float32)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def encode_image(
    model: CLIPModel,
    images: torch.Tensor,
    *,
    prompts: Mapping[int, torch.Tensor] | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Image features ``[B, E]`` of images in ``[0, 1]`` (resized and CLIP-normalised inside).

    ``prompts={layer: [k, D]}``: visual prompt tokens, inserted after the patch tokens at the first
    listed layer (layer 0: before the pre-layernorm) and replacing those slots at later listed layers.
    """
    check_model(model)
    vm = model.vision_model
    x = _preprocess(model, images)
    layers = vm.encoder.layers
    p, k, first = _check_prompts(prompts, len(layers), vm.config.hidden_size, x.shape[0], "prompts")
    h = vm.embeddings(x)
    if first == 0:
        h = torch.cat([h, p[0].to(h)], dim=1)
    h = vm.pre_layrnorm(h)
    for i, layer in enumerate(layers):
        if i in p and i > 0:
            kept = h if i == first else h[:, :-k]  # insert at the first listed layer, else replace the slots
            h = torch.cat([kept, p[i].to(h)], dim=1)
        h = layer(h, None)
    pooled = vm.post_layernorm(h[:, 0])
    feats = model.visual_projection(pooled)
    return F.normalize(feats, dim=-1) if normalize else feats


def _text_mask(attn: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive ``[B, 1, T, T]`` mask: causal, padding keys masked."""
    t = attn.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=attn.device).tril()
    allowed = causal[None] & attn.bool()[:, None, :]
    neg = torch.finfo(dtype).min
    return torch.zeros(allowed.shape, dtype=dtype, device=attn.device).masked_fill(~allowed, neg)[:, None]


def encode_text(
    model: CLIPModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    prompts: Mapping[int, torch.Tensor] | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Text features ``[B, E]`` pooled at each row's first ``[EOS]`` (CLIP's rule).

    ``prompts={layer: [k, D]}``: learnable context tokens inserted right after ``[SOS]`` at the first
    listed layer (layer 0: as word embeddings, before position embeddings are added) and replacing
    those ``k`` slots at later listed layers. ``input_ids`` need no placeholder tokens: prompt
    ``"[SOS] circle [EOS]"`` with ``k = 4`` reads ``[SOS] c1 c2 c3 c4 circle [EOS]``.
    """
    check_model(model)
    tm = model.text_model
    ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[B, T]").to(device_of(model))
    attn = torch.ones_like(ids) if attention_mask is None else attention_mask.to(ids.device).long()
    if attn.shape != ids.shape:
        raise InputError(f"`attention_mask` must have the shape of `input_ids` {tuple(ids.shape)}")
    eos_id = tm.config.eos_token_id
    has_eos = ids == eos_id
    if not bool(has_eos.any(1).all()):
        raise InputError(f"every row of `input_ids` must hold the [EOS] token (id {eos_id}); tokenize with `tokenize`")
    eos_pos = has_eos.int().argmax(1)
    layers = tm.encoder.layers
    b = ids.shape[0]
    p, k, first = _check_prompts(prompts, len(layers), tm.config.hidden_size, b, "prompts")
    emb = tm.embeddings
    tok = emb.token_embedding(ids)
    ones = torch.ones(b, k, dtype=attn.dtype, device=attn.device)
    if first == 0:
        tok = torch.cat([tok[:, :1], p[0].to(tok), tok[:, 1:]], dim=1)
        attn = torch.cat([attn[:, :1], ones, attn[:, 1:]], dim=1)
        eos_pos = eos_pos + k
    t = tok.shape[1]
    if t > emb.position_embedding.num_embeddings:
        raise InputError(
            f"{ids.shape[1]} tokens + {k} prompt tokens exceed the {emb.position_embedding.num_embeddings} positions"
        )
    h = tok + emb.position_embedding(torch.arange(t, device=ids.device))[None]
    mask = _text_mask(attn, h.dtype)
    for i, layer in enumerate(layers):
        if i in p and i > 0:
            if i == first:
                h = torch.cat([h[:, :1], p[i].to(h), h[:, 1:]], dim=1)
                attn = torch.cat([attn[:, :1], ones, attn[:, 1:]], dim=1)
                mask = _text_mask(attn, h.dtype)
                eos_pos = eos_pos + k
            else:
                h = torch.cat([h[:, :1], p[i].to(h), h[:, 1 + k :]], dim=1)
        h = layer(h, mask)
    h = tm.final_layer_norm(h)
    pooled = h[torch.arange(b, device=h.device), eos_pos]
    feats = model.text_projection(pooled)
    return F.normalize(feats, dim=-1) if normalize else feats


# ----------------------------------------------------------------------------------------------- zero-shot, loss


@torch.no_grad()
def zeroshot_weights(
    model: CLIPModel,
    tokenizer: Any,
    classnames: Sequence[str],
    templates: Sequence[str] = world.CLASS_TEMPLATES,
    *,
    slot: str = "shape",
) -> torch.Tensor:
    """Class text embeddings ``[C, E]``: the mean over ``templates`` (``{slot}`` filled) of unit text
    features, renormalised (CLIP's prompt ensemble)."""
    if isinstance(classnames, str) or not classnames:
        raise InputError("`classnames` must be a non-empty list of strings")
    out = []
    for t in templates:
        if "{" + slot + "}" not in t:
            raise InputError(f"template {t!r} has no {{{slot}}} slot")
        ids, mask = tokenize(tokenizer, [t.replace("{" + slot + "}", c) for c in classnames], device=device_of(model))
        out.append(encode_text(model, ids, mask))
    return F.normalize(torch.stack(out).mean(0), dim=-1)


def zeroshot_logits(model: CLIPModel, images: torch.Tensor, weights: torch.Tensor, *, batch_size: int = 512):
    """``[B, C]`` scaled cosine logits of ``images`` against class embeddings ``weights``."""
    scale = model.logit_scale.exp()
    with torch.no_grad():
        feats = torch.cat([encode_image(model, images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return scale * feats @ weights.to(feats).T


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over in-batch pairs (unit features ``[B, E]``; ``logit_scale`` is a log)."""
    logits = logit_scale.exp().clamp(max=100) * img @ txt.T
    target = torch.arange(len(img), device=img.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


# ----------------------------------------------------------------------------------------------- loading


class LoadedCLIP(NamedTuple):
    """A CLIP model and its tokenizer, in this order."""

    model: CLIPModel
    tokenizer: Any


def check_world_version(metrics: Mapping[str, Any], name: str) -> None:
    """Refuse a checkpoint trained on another version of the captions world."""
    have = metrics.get("world_version")
    want = world.world_version()
    if have != want:
        raise InputError(
            f"zoo checkpoint {name!r} was trained on captions world_version {have!r}, but this code generates "
            f"world_version {want!r}; retrain it with `xattr-nb zoo train {name}`"
        )


def load_clip(
    scale: str = "cpu",
    *,
    small: str = "tiny_clip",
    full: str | os.PathLike = "openai/clip-vit-base-patch16",
    root: str | os.PathLike | None = None,
    device: str = "cpu",
) -> LoadedCLIP:
    """``(model, tokenizer)``: the zoo TinyCLIP ``small`` (``scale="cpu"``; its world_version checked)
    or the Hugging Face CLIP ``full`` (a hub name or a local folder saved with ``save_pretrained``)."""
    check_choice(scale, ("cpu", "full"), "scale")
    if scale == "full":
        from transformers import AutoTokenizer

        model = CLIPModel.from_pretrained(str(full), attn_implementation="eager", use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(str(full))
        return LoadedCLIP(model.to(device).eval(), tok)
    import xattr_nb.models.zoo as zoo

    entry = {e.name: e for e in zoo.entries(root)}.get(small)
    if entry is None:
        raise InputError(f"no zoo checkpoint named {small!r}; train it with `xattr-nb zoo train {small}`")
    check_world_version(entry.metrics, small)
    model = zoo.load(small, root=root, device=device)
    if not isinstance(model, CLIPModel):
        raise InputError(f"zoo checkpoint {small!r} is a {type(model).__name__}, not a CLIPModel")
    return LoadedCLIP(model, clip_tokenizer())


def freeze(model: nn.Module) -> nn.Module:
    """Turn off every gradient of ``model`` (a frozen CLIP for prompt learning) and return it."""
    for q in check_model(model).parameters():
        q.requires_grad_(False)
    return model

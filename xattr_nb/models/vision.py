"""Tiny image classifiers that train in seconds on a CPU: :class:`TinyCNN` and :class:`TinyViT`.

Both take images as float tensors ``[B, C, H, W]`` with values in ``[0, 1]`` (the range is a
convention, not checked: attribution baselines and noise may leave it), on the model's device and
of its weights' dtype (float64 images into a float32 model are an :class:`InputError`, not cast),
and return logits ``[B, n_classes]``. Both expose the places interpretability methods look at:

- ``model.taps["input" | "middle" | "final"]``: identity modules, so a hook or captum's layer
  methods can read (or patch) the activations at the start, the middle and the end of the network;
- ``model.features(x)``: the embedding the linear head reads (the GAP vector for the CNN, the CLS
  token for the ViT);
- for the CNN, ``model.last_conv``: the last conv block, the layer Grad-CAM is usually pointed at;
- for the ViT, ``model.blocks[i].attn.last_attn``: attention probabilities ``[B, heads, T, T]``
  of the last forward when ``keep_attn`` is on, and ``model.blocks[i].attn.probs``, an identity
  module the probabilities pass through, for hooks.

Models are rebuilt from a plain config dict ``{"arch": name, "kwargs": {...}}`` by :func:`build`,
which looks the name up in :data:`ARCHITECTURES` (both live in :mod:`xattr_nb.models.architectures`
and are re-exported here). That is how the zoo stores a model: the config as JSON, the weights as
safetensors, never a pickled object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from xattr_nb.checks import InputError, check_int, check_placement, check_tensor
from xattr_nb.models.architectures import ARCHITECTURES, build, register_architecture

__all__ = ["ARCHITECTURES", "ConvBlock", "TinyCNN", "TinyViT", "build", "check_images", "register_architecture"]


def _check_n_classes(n_classes: Any) -> int:
    return check_int(n_classes, "n_classes", low=2)


def check_images(x: Any, in_ch: int, name: str = "x", weight: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` as images ``[B, in_ch, H, W]`` (float; on ``weight``'s device and of its dtype when given)."""
    # `finite=False`: a NaN is not a shape error, and scanning every batch would sync the GPU.
    x = check_tensor(x, name, ndim=4, dtype="float", finite=False, layout="[B, C, H, W]")
    if weight is not None:  # metadata only: meta device, device and dtype against the model's weights
        check_placement(x, weight, name)
    if x.shape[1] != in_ch:
        raise InputError(f"`{name}` must have {in_ch} channel(s) in dim 1 ([B, C, H, W]); got shape {tuple(x.shape)}")
    return x


class ConvBlock(nn.Module):
    """3×3 convolution (same padding), batch norm, ReLU; ``.conv``, ``.norm`` and ``.act`` are named for hooks.

    Batch norm keeps a few epochs of training stable: without it, small nets on ShapesWorld often
    collapse to dead ReLUs and chance accuracy. In eval mode it is a fixed affine map per channel.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class TinyCNN(nn.Module):
    """A small conv net: ``len(widths)`` conv blocks with 2×2 max-pooling between them, global
    average pooling (GAP), and a linear head.

    - ``model.blocks[i]``: the :class:`ConvBlock` s; ``model.last_conv`` is ``model.blocks[-1]``,
      whose output (post-ReLU feature maps ``[B, widths[-1], h, w]``) is what Grad-CAM weighs:
      :func:`~xattr_nb.attribution.attribute`'s ``grad_cam`` uses it when no ``layer`` is given.
    - ``model.taps``: ``"input"`` (the image), ``"middle"`` (after block ``len(widths) // 2 - 1``,
      or the input when there is one block), ``"final"`` (the last feature maps, before GAP).
    - ``model.features(x)``: the GAP embedding ``[B, widths[-1]]``; ``model.head`` maps it to logits.

    Images must have ``in_ch`` channels and sides of at least ``2 ** (len(widths) - 1)`` pixels.
    """

    def __init__(self, n_classes: int, in_ch: int = 3, widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        n_classes = _check_n_classes(n_classes)
        in_ch = check_int(in_ch, "in_ch", low=1)
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) == 0:
            raise InputError(f"`widths` must be a non-empty sequence of positive ints; got {widths!r}")
        widths = tuple(check_int(w, f"widths[{i}]", low=1) for i, w in enumerate(widths))
        self.n_classes, self.in_ch, self.widths = n_classes, in_ch, widths
        self.taps = nn.ModuleDict({"input": nn.Identity(), "middle": nn.Identity(), "final": nn.Identity()})
        self.blocks = nn.ModuleList(ConvBlock(c, w) for c, w in zip((in_ch, *widths[:-1]), widths, strict=True))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(widths[-1], n_classes)
        self._middle = len(widths) // 2 - 1  # index of the block after which the "middle" tap sits (-1: input)

    @property
    def last_conv(self) -> ConvBlock:
        """The last conv block (a property, not a second registration, so the weights are stored once)."""
        return self.blocks[-1]

    @property
    def arch_config(self) -> dict[str, Any]:
        """The config :func:`build` rebuilds this model from."""
        return {
            "arch": "TinyCNN",
            "kwargs": {"n_classes": self.n_classes, "in_ch": self.in_ch, "widths": list(self.widths)},
        }

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv block's output ``[B, widths[-1], H / 2**(n-1), W / 2**(n-1)]`` (floor division)."""
        x = check_images(x, self.in_ch, weight=self.head.weight)
        need = 2 ** (len(self.blocks) - 1)
        if x.shape[2] < need or x.shape[3] < need:
            raise InputError(
                f"`x` must be at least {need}×{need} pixels for {len(self.blocks)} blocks; got {tuple(x.shape)}"
            )
        h = self.taps["input"](x)
        if self._middle < 0:
            h = self.taps["middle"](h)
        for i, block in enumerate(self.blocks):
            h = block(h if i == 0 else self.pool(h))
            if i == self._middle:
                h = self.taps["middle"](h)
        return self.taps["final"](h)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The global-average-pooled embedding ``[B, widths[-1]]`` that the head reads."""
        return self.feature_maps(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Attention(nn.Module):
    """Multi-head self-attention written out so the probabilities can be kept and hooked.

    ``probs`` is an identity module the softmaxed attention ``[B, heads, T, T]`` passes through
    (hook it to read or patch the pattern). When ``keep_attn`` is on, ``last_attn`` holds the
    probabilities of the last forward, not detached, so ``last_attn.retain_grad()`` before
    ``backward()`` gives their gradient (as gradient-weighted attention methods need).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.probs = nn.Identity()
        self.out = nn.Linear(dim, dim)
        self.keep_attn = False
        self.last_attn: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = self.probs(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1))
        self.last_attn = attn if self.keep_attn else None
        return self.out((attn @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A small vision transformer: non-overlapping ``patch``×``patch`` patches embedded by a strided
    convolution, a learned CLS token and position embeddings, ``depth`` pre-norm blocks, and a
    linear head on the normalised CLS token.

    Tokens: index 0 is CLS, then the ``(image_size // patch) ** 2`` patches in row-major order, so
    ``T = 1 + (image_size // patch) ** 2``. With ``keep_attn`` on (the attribute, or
    ``forward(x, keep_attn=True)`` for one call), ``model.attn_maps`` lists each block's attention
    probabilities ``[B, heads, T, T]``; row 0 of a map is where CLS looks.
    ``model.taps``: ``"input"`` (the image), ``"middle"`` (tokens after block ``depth // 2 - 1``,
    or the embedded tokens when ``depth`` is 1), ``"final"`` (tokens after the last block).
    """

    def __init__(
        self,
        n_classes: int,
        image_size: int = 32,
        patch: int = 4,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        in_ch: int = 3,
    ):
        super().__init__()
        n_classes = _check_n_classes(n_classes)
        image_size = check_int(image_size, "image_size", low=1)
        patch = check_int(patch, "patch", low=1)
        dim, depth, heads = (
            check_int(dim, "dim", low=1),
            check_int(depth, "depth", low=1),
            check_int(heads, "heads", low=1),
        )
        in_ch = check_int(in_ch, "in_ch", low=1)
        if image_size % patch:
            raise InputError(f"`image_size` ({image_size}) must be a multiple of `patch` ({patch})")
        if dim % heads:
            raise InputError(f"`dim` ({dim}) must be a multiple of `heads` ({heads})")
        self.n_classes, self.image_size, self.patch, self.dim = n_classes, image_size, patch, dim
        self.depth, self.heads, self.in_ch = depth, heads, in_ch
        self.n_patches = (image_size // patch) ** 2
        self.taps = nn.ModuleDict({"input": nn.Identity(), "middle": nn.Identity(), "final": nn.Identity()})
        self.patch_embed = nn.Conv2d(in_ch, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.n_patches, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)
        self._middle = depth // 2 - 1

    @property
    def keep_attn(self) -> bool:
        return self.blocks[0].attn.keep_attn

    @keep_attn.setter
    def keep_attn(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise InputError(f"`keep_attn` must be a bool; got {type(value).__name__}")
        for block in self.blocks:
            block.attn.keep_attn = value

    @property
    def attn_maps(self) -> list[torch.Tensor]:
        """Each block's attention probabilities ``[B, heads, T, T]`` from the last forward with ``keep_attn``."""
        maps = [block.attn.last_attn for block in self.blocks]
        if any(m is None for m in maps):
            raise InputError("no attention kept: run `model(x, keep_attn=True)` or set `model.keep_attn = True` first")
        return maps  # type: ignore[return-value]

    @property
    def arch_config(self) -> dict[str, Any]:
        """The config :func:`build` rebuilds this model from."""
        keys = ("n_classes", "image_size", "patch", "dim", "depth", "heads", "in_ch")
        return {"arch": "TinyViT", "kwargs": {k: getattr(self, k) for k in keys}}

    def tokens(self, x: torch.Tensor, keep_attn: bool | None = None) -> torch.Tensor:
        """Token states after the last block ``[B, T, dim]`` (before the final norm)."""
        x = check_images(x, self.in_ch, weight=self.head.weight)
        if tuple(x.shape[2:]) != (self.image_size, self.image_size):
            raise InputError(
                f"`x` must be {self.image_size}×{self.image_size} images [B, {self.in_ch}, {self.image_size}, "
                f"{self.image_size}]; got {tuple(x.shape)}"
            )
        previous = self.keep_attn
        if keep_attn is not None:
            self.keep_attn = keep_attn
        try:
            h = self.patch_embed(self.taps["input"](x)).flatten(2).transpose(1, 2)
            h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1) + self.pos_embed
            if self._middle < 0:
                h = self.taps["middle"](h)
            for i, block in enumerate(self.blocks):
                h = block(h)
                if i == self._middle:
                    h = self.taps["middle"](h)
            return self.taps["final"](h)
        finally:
            if keep_attn is not None:
                self.keep_attn = previous

    def features(self, x: torch.Tensor, keep_attn: bool | None = None) -> torch.Tensor:
        """The normalised CLS embedding ``[B, dim]`` that the head reads."""
        return self.norm(self.tokens(x, keep_attn)[:, 0])

    def forward(self, x: torch.Tensor, keep_attn: bool | None = None) -> torch.Tensor:
        return self.head(self.features(x, keep_attn))

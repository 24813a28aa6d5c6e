"""TinyT2I: a latent rectified-flow text-to-image model small enough for a CPU (spec §9 of
``shared-multimodal.md``; used by papers 23 SAGE and 24 R0).

- :class:`TinyAE`: a convolutional autoencoder, 32×32 RGB ↔ a 64-d latent ``z``.
- :class:`VelocityNet`: an MLP with FiLM on the conditioning: ``v(z_t, t, c)``, ``c`` a frozen
  TinyCLIP text embedding (:func:`xattr_nb.models.clip.encode_text`, unit norm, 64-d), or the learnt
  null condition (classifier-free guidance; training drops the condition 10 % of the time).
- :class:`TinyT2INet`: both, plus the latent standardisation (``z_mean``, ``z_std``): the module the
  zoo stores (``arch = "TinyT2I"``).
- :class:`TinyT2I`: the generator people use: ``cond(prompts=... | embeds=... | text_prompts=...)``,
  ``sample(cond, z=None, steps=40, cfg=2.0, eta=0.0, ...)``, ``trainable_copy()``.
- :func:`load_tiny_t2i`: the zoo checkpoint ``tiny_t2i`` with the TinyCLIP it was trained on
  (both refused unless their ``world_version`` is the captions world's).

**Rectified flow.** Time runs from ``t = 1`` (noise ``z ~ N(0, I)``) to ``t = 0`` (a data latent
``x0``), ``x_t = (1 - t) x0 + t ε``, the network predicts ``v = ε - x0``. From ``(x_t, v)`` the
sampler reads ``x̂0 = x_t - t v`` and ``ε̂ = x_t + (1 - t) v`` and moves to the next time ``t'``:
``x_t' = (1 - t') x̂0 + t' (η ξ + sqrt(1 - η²) ε̂)`` with fresh noise ``ξ`` (R0's η knob,
reconstructed in spec §3.2). With ``η = 0`` this *is* the Euler step ``x_t' = x_t + (t' - t) v``.
With ``cfg = w`` the velocity is ``v_null + w (v_cond - v_null)``.

**SAGE's residual gradient** (``residual_grad=True``, reconstructed in spec §6.2): the final latent
gets ``+ (z - z.detach())`` before decoding: its value is unchanged but the gradient with respect
to the starting noise ``z`` gains an identity path that skips the sampling chain.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.checks import InputError, check_float, check_int, check_tensor, check_texts
from xattr_nb.models.io import device_of

__all__ = ["LATENT_DIM", "TinyAE", "TinyT2I", "TinyT2INet", "VelocityNet", "load_tiny_t2i", "t2i_arch_config"]

LATENT_DIM = 64


class TinyAE(nn.Module):
    """32×32×3 images in ``[0, 1]`` ↔ ``latent``-d codes (three stride-2 convolutions each way, nothing
    at full resolution but the last transposed convolution: cheap on a CPU)."""

    def __init__(self, latent: int = LATENT_DIM, width: int = 32):
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), nn.SiLU(),  # 16
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),  # 8
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(),  # 4
            nn.Flatten(), nn.Linear(2 * w * 16, latent),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(latent, 2 * w * 16), nn.SiLU(), nn.Unflatten(1, (2 * w, 4, 4)),
            nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(),  # 8
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.SiLU(),  # 16
            nn.ConvTranspose2d(w, 3, 4, 2, 1),  # 32
        )  # fmt: skip

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x * 2 - 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` (a sigmoid: differentiable everywhere, for SAGE and R0)."""
        return torch.sigmoid(self.decoder(z))


def _time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of ``t`` in ``[0, 1]`` (angular frequencies 1 to 200)."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(200.0), half, device=t.device))
    a = t[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=1)


class VelocityNet(nn.Module):
    """``v(z_t, t, c)``: residual MLP blocks, each FiLM-modulated (scale, shift) by ``[t-embedding, c]``."""

    def __init__(self, latent: int = LATENT_DIM, cond_dim: int = 64, width: int = 192, blocks: int = 4):
        super().__init__()
        self.cond_dim, self.width = cond_dim, width
        self.null = nn.Parameter(torch.zeros(cond_dim))  # the learnt "no condition" embedding (CFG)
        self.t_dim = 32
        self.embed = nn.Sequential(nn.Linear(self.t_dim + cond_dim, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU())
        self.inp = nn.Linear(latent, width)
        self.norms = nn.ModuleList(nn.LayerNorm(width, elementwise_affine=False) for _ in range(blocks))
        self.films = nn.ModuleList(nn.Linear(128, 2 * width) for _ in range(blocks))
        self.lins = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, latent))
        for f in self.films:  # start as identity modulation
            nn.init.zeros_(f.weight)
            nn.init.zeros_(f.bias)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        e = self.embed(torch.cat([_time_embedding(t, self.t_dim), cond], dim=1))
        h = self.inp(z_t)
        for norm, film, lin in zip(self.norms, self.films, self.lins, strict=True):
            scale, shift = film(e).chunk(2, dim=1)
            h = h + lin(F.silu(norm(h) * (1 + scale) + shift))
        return self.out(h)


class TinyT2INet(nn.Module):
    """Autoencoder + velocity net + latent standardisation: what the zoo checkpoint ``tiny_t2i`` holds."""

    def __init__(self, latent: int = LATENT_DIM, cond_dim: int = 64, ae_width: int = 32, width: int = 192,
                 blocks: int = 4):  # fmt: skip
        super().__init__()
        self.ae = TinyAE(latent, ae_width)
        self.vel = VelocityNet(latent, cond_dim, width, blocks)
        self.register_buffer("z_mean", torch.zeros(latent))
        self.register_buffer("z_std", torch.ones(latent))
        self.arch_config = t2i_arch_config(latent=latent, cond_dim=cond_dim, ae_width=ae_width, width=width,
                                           blocks=blocks)  # fmt: skip

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised latents ``[B, 64]`` of images ``[B, 3, 32, 32]`` in ``[0, 1]``."""
        return (self.ae.encode(images) - self.z_mean) / self.z_std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` of standardised latents."""
        return self.ae.decode(z * self.z_std + self.z_mean)


def t2i_arch_config(**kwargs: Any) -> dict[str, Any]:
    """The zoo config of a :class:`TinyT2INet` (``{"arch": "TinyT2I", "kwargs": ...}``)."""
    return {"arch": "TinyT2I", "kwargs": dict(kwargs)}


class TinyT2I:
    """The text-to-image generator: a :class:`TinyT2INet` conditioned on a frozen TinyCLIP's text embeddings.

    ``clip``/``tokenizer``: the TinyCLIP it was trained with (:func:`xattr_nb.models.clip.load_clip`).
    The CLIP is never trained here; :meth:`trainable_copy` copies the velocity net only.
    """

    def __init__(self, net: TinyT2INet, clip: nn.Module, tokenizer: Any):
        if not isinstance(net, TinyT2INet):
            raise InputError(f"`net` must be a TinyT2INet; got {type(net).__name__}")
        self.net = net
        self.clip = clip
        self.tokenizer = tokenizer
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.net.eval()

    # -- plumbing
    @property
    def device(self) -> torch.device:
        return device_of(self.net)

    def to(self, device: Any) -> TinyT2I:
        self.net.to(device)
        self.clip.to(device)
        return self

    def parameters(self):
        """The trainable parameters (the velocity net's; the autoencoder and the CLIP stay frozen)."""
        return (p for p in self.net.vel.parameters() if p.requires_grad)

    def trainable_copy(self) -> TinyT2I:
        """A new generator whose velocity net is an independent, trainable copy (autoencoder frozen,
        the same frozen CLIP shared): R0's student initialised from the teacher."""
        net = copy.deepcopy(self.net)
        for p in net.ae.parameters():
            p.requires_grad_(False)
        for p in net.vel.parameters():
            p.requires_grad_(True)
        out = TinyT2I(net, self.clip, self.tokenizer)
        return out

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, 3, 32, 32] in [0, 1]")
        if tuple(x.shape[1:]) != (3, 32, 32):
            raise InputError(f"`images` must be [B, 3, 32, 32]; got {tuple(x.shape)}")
        return self.net.encode(x.to(self.device))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(self._check_z(z, None))

    # -- conditioning
    def cond(
        self,
        prompts: Sequence[str] | None = None,
        embeds: torch.Tensor | None = None,
        *,
        text_prompts: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Conditioning vectors ``[B, 64]``: the unit TinyCLIP text embedding of each of ``prompts``
        (with optional prompt-hook tokens ``text_prompts={layer: [k, D] or [B, k, D]}`` inserted after
        ``[SOS]``, differentiable: SAGE's soft words and adversarial token), or ``embeds`` ``[B, 64]``
        given directly (normalised here). Exactly one of ``prompts`` / ``embeds``."""
        from xattr_nb.models.clip import encode_text, tokenize

        if (prompts is None) == (embeds is None):
            raise InputError("pass exactly one of `prompts` (a list of captions) or `embeds` ([B, 64] text embeddings)")
        dim = self.net.vel.cond_dim
        if embeds is not None:
            if text_prompts is not None:
                raise InputError("`text_prompts` only applies with `prompts`")
            e = check_tensor(embeds, "embeds", ndim=2, dtype="float", layout=f"[B, {dim}]")
            if e.shape[1] != dim:
                raise InputError(f"`embeds` must be [B, {dim}]; got {tuple(e.shape)}")
            return F.normalize(e.to(self.device), dim=-1)
        texts = check_texts(prompts, "prompts")
        ids, mask = tokenize(self.tokenizer, texts, device=device_of(self.clip))
        return encode_text(self.clip, ids, mask, prompts=text_prompts).to(self.device)

    def null_cond(self, n: int) -> torch.Tensor:
        """The learnt null condition, ``[n, 64]`` (what CFG contrasts with)."""
        return self.net.vel.null[None].expand(check_int(n, "n", low=1), -1)

    # -- sampling
    def _check_z(self, z: Any, batch: int | None) -> torch.Tensor:
        d = LATENT_DIM
        t = check_tensor(z, "z", ndim=2, dtype="float", layout=f"[B, {d}] standard-normal noise")
        if t.shape[1] != self.net.z_mean.numel() or (batch is not None and t.shape[0] != batch):
            want = f"[{batch if batch is not None else 'B'}, {self.net.z_mean.numel()}]"
            raise InputError(f"`z` must be {want}; got {tuple(t.shape)}")
        return t.to(self.device)

    def noise(self, n: int, seed: int = 0) -> torch.Tensor:
        """Seeded starting noise ``[n, 64]`` (CPU generator, so the same on every device)."""
        g = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
        return torch.randn(check_int(n, "n", low=1), self.net.z_mean.numel(), generator=g).to(self.device)

    def velocity(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, cfg: float = 1.0) -> torch.Tensor:
        """Guided velocity ``v_null + cfg (v_cond - v_null)`` (``cfg = 1``: the conditional one alone)."""
        if cfg == 1.0:
            return self.net.vel(z_t, t, cond)
        b = len(z_t)
        v = self.net.vel(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([cond, self.null_cond(b)]))
        v_c, v_u = v[:b], v[b:]
        return v_u + cfg * (v_c - v_u)

    def sample(
        self,
        cond: torch.Tensor,
        z: torch.Tensor | None = None,
        steps: int = 40,
        cfg: float = 2.0,
        eta: float = 0.0,
        return_intermediate: bool = False,
        residual_grad: bool = False,
        grad: bool = False,
        *,
        seed: int = 0,
        decode: bool = True,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Generate from ``cond`` ``[B, 64]`` (from :meth:`cond`) starting at noise ``z`` ``[B, 64]``
        (default: :meth:`noise` at ``seed``), ``steps`` uniform steps from ``t = 1`` to ``0``.

        ``eta`` in ``[0, 1]``: fresh-noise share of each re-noising (0: deterministic Euler; the fresh
        noise is seeded by ``seed``, so a call is deterministic given its arguments). ``grad=False``
        runs without autograd; ``grad=True`` keeps the graph (SAGE, R0). ``residual_grad``: SAGE's skip
        path from ``z`` to the final latent. Returns images ``[B, 3, 32, 32]`` in ``[0, 1]`` (latents with
        ``decode=False``), or with ``return_intermediate=True`` the list of the ``steps`` decoded
        ``x̂0`` predictions, the last one being the sample.
        """
        c = check_tensor(cond, "cond", ndim=2, dtype="float", layout=f"[B, {self.net.vel.cond_dim}]")
        if c.shape[1] != self.net.vel.cond_dim:
            raise InputError(f"`cond` must be [B, {self.net.vel.cond_dim}] (from .cond()); got {tuple(c.shape)}")
        b = c.shape[0]
        steps = check_int(steps, "steps", low=1, high=1000)
        cfg = check_float(cfg, "cfg", low=0.0)
        eta = check_float(eta, "eta", low=0.0, high=1.0)
        z0 = self.noise(b, seed) if z is None else self._check_z(z, b)
        c = c.to(self.device)
        gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0) + 1)
        with torch.set_grad_enabled(grad):
            x = z0
            ts = torch.linspace(1.0, 0.0, steps + 1)
            outs = []
            for i in range(steps):
                t, t_next = float(ts[i]), float(ts[i + 1])
                v = self.velocity(x, torch.full((b,), t, device=self.device), c, cfg)
                x0_hat = x - t * v
                if eta == 0.0:
                    x = x + (t_next - t) * v
                else:
                    eps_hat = x + (1 - t) * v
                    fresh = torch.randn(x.shape, generator=gen).to(self.device)
                    x = (1 - t_next) * x0_hat + t_next * (eta * fresh + math.sqrt(1 - eta**2) * eps_hat)
                if return_intermediate:
                    last = i == steps - 1
                    lat = x if last else x0_hat
                    if last and residual_grad:
                        lat = lat + (z0 - z0.detach())
                    outs.append(self.net.decode(lat) if decode else lat)
            if return_intermediate:
                return outs
            if residual_grad:
                x = x + (z0 - z0.detach())
            return self.net.decode(x) if decode else x

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> torch.Tensor:
        """``sample(cond(prompts), **kwargs)``."""
        return self.sample(self.cond(prompts), **kwargs)


def load_tiny_t2i(
    *, name: str = "tiny_t2i", clip: str = "tiny_clip", root: str | os.PathLike | None = None, device: str = "cpu"
) -> TinyT2I:
    """The zoo checkpoint ``name`` and the TinyCLIP ``clip`` it conditions on, as a :class:`TinyT2I`.

    Raises :class:`~xattr_nb.checks.InputError` when either was trained on another captions
    ``world_version`` (retrain with ``xattr-nb zoo train``), or when the zoo refuses the file
    (missing, checksum, corrupt; see :func:`xattr_nb.models.zoo.load`)."""
    import xattr_nb.models.zoo as zoo
    from xattr_nb.models.clip import check_world_version, load_clip

    entry = {e.name: e for e in zoo.entries(root)}.get(name)
    if entry is None:
        raise InputError(f"no zoo checkpoint named {name!r}; train it with `xattr-nb zoo train {name}`")
    check_world_version(entry.metrics, name)
    want_clip = entry.metrics.get("clip_sha256")
    clip_entry = {e.name: e for e in zoo.entries(root)}.get(clip)
    if want_clip is not None and clip_entry is not None and clip_entry.sha256 != want_clip:
        raise InputError(
            f"zoo checkpoint {name!r} was trained on the text embeddings of {clip!r} with sha256 {want_clip[:12]}…, "
            f"but the zoo now holds {clip_entry.sha256[:12]}…; retrain it with `xattr-nb zoo train {name}`"
        )
    net = zoo.load(name, root=root, device=device)
    if not isinstance(net, TinyT2INet):
        raise InputError(f"zoo checkpoint {name!r} is a {type(net).__name__}, not a TinyT2INet")
    model, tok = load_clip("cpu", small=clip, root=root, device=device)
    return TinyT2I(net, model, tok)

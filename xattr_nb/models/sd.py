"""Stable Diffusion behind TinyT2I's interface: the ``scale="full"`` generator of papers 23 SAGE and
24 R0 (spec §6.7 of ``23_sage.md``, §3.7 of ``24_r0.md``).

- :class:`SDGenerator`: an adapter over a diffusers ``StableDiffusionPipeline`` with the part of
  :class:`~xattr_nb.models.t2i.TinyT2I` that :mod:`xattr_nb.methods.sage` and :mod:`xattr_nb.methods.r0`
  use: :meth:`~SDGenerator.cond` (the pipeline's CLIP text encoder, via ``encode_prompt``),
  :meth:`~SDGenerator.null_cond` (the empty prompt, what classifier-free guidance contrasts with),
  :meth:`~SDGenerator.noise`, :meth:`~SDGenerator.velocity` (the UNet's guided prediction),
  :meth:`~SDGenerator.sample` (a differentiable few-step DDIM sampler), :meth:`~SDGenerator.decode`
  (the VAE, images in ``[0, 1]``), :meth:`~SDGenerator.trainable_copy`, :meth:`~SDGenerator.parameters`,
  :meth:`~SDGenerator.to`, :meth:`~SDGenerator.generate`.
- :func:`load_sd`: a hub name (:data:`SD_MODEL`) or a folder written by ``save_pretrained``,
  safetensors only, as an :class:`SDGenerator`; :func:`load_t2i`: the generator of papers 23 and 24 at
  either scale (TinyT2I from the zoo, or this), their ``load_generator``.

**Latents are flat.** TinyT2I's noise is ``[B, 64]``; here it is ``[B, C·h·w]`` (``C = 4`` latent
channels, ``h = H / 8``), reshaped to ``[B, C, h, w]`` inside. SAGE's typicality test and R0's
distillation term then read the same on both generators.

**Sampler.** diffusers' ``DDIMScheduler`` (built from the pipeline's scheduler config), run with
autograd on when ``grad=True``: gradients reach the starting latents and the prompt embeddings (SAGE)
and the UNet's parameters (R0). ``eta`` is DDIM's η (the share of the DDIM posterior's variance
re-injected as fresh noise at each step), the nearest diffusers has to R0's reconstructed η knob
(spec §3.2), not the same formula as TinyT2I's. ``residual_grad`` is SAGE's skip path, as in TinyT2I:
the final latent gets ``+ (z − z.detach())`` before decoding. At 512 px and 50 steps backpropagation
needs gradient checkpointing (``load_sd(..., gradient_checkpointing=True)``) and a large GPU.

Written by hand: only this glue (the sampling loop that keeps the graph, the flat latents and
the frozen/trainable split); the text encoder, UNet, VAE and scheduler are diffusers' and
transformers' own classes.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from xattr_nb.checks import InputError, check_float, check_int, check_tensor, check_texts
from xattr_nb.models.io import device_of

__all__ = ["CFG", "SD_MODEL", "STEPS", "SDGenerator", "latent_dim_of", "load_sd", "load_t2i"]

#: The paper-scale Stable Diffusion (SAGE spec §6.7, R0 spec §3.7: SD 1.5). The papers' name,
#: ``runwayml/stable-diffusion-v1-5``, was deleted from the hub in 2024; this is its maintained copy.
SD_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: SAGE's sampler setting at full scale (spec §6.7): DDIM steps and classifier-free guidance.
STEPS = 50
CFG = 7.5


class SDGenerator:
    """A ``StableDiffusionPipeline`` (``pipe``) as a TinyT2I-like generator.

    The VAE and the text encoder are always frozen; the UNet is frozen here (the teacher) and trainable
    in :meth:`trainable_copy` (R0's student). ``height``/``width``: the image size sampled (default: the
    UNet's ``sample_size`` × the VAE's scale factor, 512 for SD 1.5).
    """

    def __init__(self, pipe: Any, *, unet: nn.Module | None = None, height: int | None = None,
                 width: int | None = None):  # fmt: skip
        for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise InputError(f"`pipe` must be a StableDiffusionPipeline (with a {part}); got {type(pipe).__name__}")
        self.pipe = pipe
        self.unet = pipe.unet if unet is None else unet
        self.vae, self.text_encoder, self.tokenizer = pipe.vae, pipe.text_encoder, pipe.tokenizer
        for m in (self.vae, self.text_encoder):
            m.requires_grad_(False).eval()
        if unet is None:
            self.unet.requires_grad_(False)
        self.unet.eval()
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        default = int(self.unet.config.sample_size) * self.vae_scale
        self.height = check_int(height if height is not None else default, "height", low=self.vae_scale)
        self.width = check_int(width if width is not None else default, "width", low=self.vae_scale)
        if self.height % self.vae_scale or self.width % self.vae_scale:
            raise InputError(
                f"`height` and `width` must be multiples of {self.vae_scale}; got {self.height}, {self.width}"
            )
        self.latent_shape = (
            int(self.unet.config.in_channels),
            self.height // self.vae_scale,
            self.width // self.vae_scale,
        )
        self._null: torch.Tensor | None = None

    # -- plumbing
    @property
    def device(self) -> torch.device:
        return device_of(self.unet)

    @property
    def latent_dim(self) -> int:
        """The length of a flat latent, ``C·h·w``."""
        c, h, w = self.latent_shape
        return c * h * w

    def to(self, device: Any) -> SDGenerator:
        for m in (self.unet, self.vae, self.text_encoder):
            m.to(device)
        self._null = None
        return self

    def parameters(self):
        """The trainable parameters (the UNet's, in a :meth:`trainable_copy`; none in the frozen teacher)."""
        return (p for p in self.unet.parameters() if p.requires_grad)

    def trainable_module(self) -> nn.Module:
        """The module R0 trains (the UNet)."""
        return self.unet

    def trainable_copy(self) -> SDGenerator:
        """A generator whose UNet is an independent trainable copy (VAE, text encoder, tokenizer and
        scheduler config shared and frozen): R0's student initialised from the teacher."""
        unet = copy.deepcopy(self.unet).requires_grad_(True)
        return SDGenerator(self.pipe, unet=unet, height=self.height, width=self.width)

    # -- conditioning
    def cond(self, prompts: Sequence[str] | None = None, embeds: torch.Tensor | None = None, *,
             text_prompts: Mapping[int, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """Prompt embeddings ``[B, L, D]`` (the CLIP text encoder's last hidden states, ``L = 77``) of
        ``prompts``, or ``embeds`` ``[B, L, D]`` given directly (e.g. a SAGE-optimised embedding).
        Exactly one of the two. ``text_prompts`` (TinyT2I's prompt-hook tokens) is not supported here."""
        if text_prompts is not None:
            raise InputError("`text_prompts` is TinyT2I's prompt hook; with Stable Diffusion pass `embeds` instead")
        if (prompts is None) == (embeds is None):
            raise InputError(
                "pass exactly one of `prompts` (a list of captions) or `embeds` ([B, L, D] prompt embeddings)"
            )
        d = int(self.text_encoder.config.hidden_size)
        if embeds is not None:
            e = check_tensor(embeds, "embeds", ndim=3, dtype="float", layout=f"[B, L, {d}]")
            if e.shape[2] != d:
                raise InputError(f"`embeds` must be [B, L, {d}]; got {tuple(e.shape)}")
            return e.to(self.device, self.unet.dtype)
        texts = check_texts(prompts, "prompts")
        emb, _ = self.pipe.encode_prompt(texts, self.device, 1, False)
        return emb.to(self.unet.dtype)

    def null_cond(self, n: int) -> torch.Tensor:
        """The empty prompt's embeddings ``[n, L, D]`` (the unconditional branch of CFG)."""
        n = check_int(n, "n", low=1)
        if self._null is None or self._null.device != self.device:
            with torch.no_grad():
                self._null = self.pipe.encode_prompt([""], self.device, 1, False)[0].to(self.unet.dtype)
        return self._null.expand(n, -1, -1)

    # -- sampling
    def _check_z(self, z: Any, batch: int | None) -> torch.Tensor:
        t = check_tensor(z, "z", ndim=2, dtype="float", layout=f"[B, {self.latent_dim}] flat standard-normal noise")
        if t.shape[1] != self.latent_dim or (batch is not None and t.shape[0] != batch):
            want = f"[{batch if batch is not None else 'B'}, {self.latent_dim}]"
            raise InputError(f"`z` must be {want} (flat latents of {self.latent_shape}); got {tuple(t.shape)}")
        return t.to(self.device)

    def noise(self, n: int, seed: int = 0) -> torch.Tensor:
        """Seeded flat starting noise ``[n, C·h·w]`` (CPU generator, so the same on every device)."""
        g = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
        return torch.randn(check_int(n, "n", low=1), self.latent_dim, generator=g).to(self.device)

    def velocity(self, z_t: torch.Tensor, t: Any, cond: torch.Tensor, cfg: float = 1.0) -> torch.Tensor:
        """The UNet's guided prediction at timestep ``t`` (ε for SD 1.5; the scheduler's
        ``prediction_type`` says which), ``pred_null + cfg (pred_cond − pred_null)``; ``z_t`` in the
        UNet's layout ``[B, C, h, w]``. Named after TinyT2I's method, which it stands for."""
        if cfg == 1.0:
            return self.unet(z_t, t, encoder_hidden_states=cond).sample
        b = len(z_t)
        out = self.unet(torch.cat([z_t, z_t]), t, encoder_hidden_states=torch.cat([cond, self.null_cond(b)])).sample
        p_c, p_u = out[:b], out[b:]
        return p_u + cfg * (p_c - p_u)

    def _scheduler(self, steps: int):
        from diffusers import DDIMScheduler

        sch = DDIMScheduler.from_config(self.pipe.scheduler.config)
        sch.set_timesteps(steps, device=self.device)
        return sch

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in ``[0, 1]`` of flat latents ``z`` (the VAE; differentiable)."""
        lat = self._check_z(z, None).view(-1, *self.latent_shape).to(self.vae.dtype)
        x = self.vae.decode(lat / self.vae.config.scaling_factor).sample
        return (x.float() / 2 + 0.5).clamp(0, 1)

    def sample(
        self,
        cond: torch.Tensor,
        z: torch.Tensor | None = None,
        steps: int = STEPS,
        cfg: float = CFG,
        eta: float = 0.0,
        return_intermediate: bool = False,
        residual_grad: bool = False,
        grad: bool = False,
        *,
        seed: int = 0,
        decode: bool = True,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Generate from prompt embeddings ``cond`` ``[B, L, D]`` (from :meth:`cond`) starting at flat noise
        ``z`` ``[B, C·h·w]`` (default: :meth:`noise` at ``seed``): ``steps`` DDIM steps, guidance ``cfg``.

        Same contract as :meth:`xattr_nb.models.t2i.TinyT2I.sample`: ``grad=True`` keeps the graph,
        ``residual_grad`` adds SAGE's skip path, ``decode=False`` returns flat latents, and
        ``return_intermediate=True`` the list of the ``steps`` decoded ``x̂0`` predictions (the last one
        being the sample). ``eta``: DDIM's η (fresh noise seeded by ``seed``).
        """
        c = check_tensor(cond, "cond", ndim=3, dtype="float", layout="[B, L, D] from .cond()")
        b = c.shape[0]
        steps = check_int(steps, "steps", low=1, high=1000)
        cfg = check_float(cfg, "cfg", low=0.0)
        eta = check_float(eta, "eta", low=0.0, high=1.0)
        z0 = self.noise(b, seed) if z is None else self._check_z(z, b)
        c = c.to(self.device, self.unet.dtype)
        sch = self._scheduler(steps)
        gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0) + 1)
        shape = (b, *self.latent_shape)

        def out(lat: torch.Tensor) -> torch.Tensor:
            flat = lat.reshape(b, -1).float()
            return self.decode(flat) if decode else flat

        with torch.set_grad_enabled(grad):
            x = z0.view(shape).to(self.unet.dtype) * sch.init_noise_sigma
            outs = []
            for i, t in enumerate(sch.timesteps):
                pred = self.velocity(sch.scale_model_input(x, t), t, c, cfg)
                fresh = torch.randn(shape, generator=gen).to(x) if eta > 0 else None
                st = sch.step(pred, t, x, eta=eta, variance_noise=fresh)
                x = st.prev_sample
                if return_intermediate:
                    last = i == steps - 1
                    lat = x if last else st.pred_original_sample
                    if last and residual_grad:
                        lat = lat + (z0 - z0.detach()).view(shape)
                    outs.append(out(lat))
            if return_intermediate:
                return outs
            if residual_grad:
                x = x + (z0 - z0.detach()).view(shape)
            return out(x)

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> torch.Tensor:
        """``sample(cond(prompts), **kwargs)``."""
        return self.sample(self.cond(prompts), **kwargs)


def latent_dim_of(G: Any) -> int:
    """The length of a flat starting latent of generator ``G``: an :class:`SDGenerator`'s ``C·h·w``, or
    TinyT2I's 64 (``G.net.z_mean``)."""
    return G.latent_dim if hasattr(G, "latent_dim") else G.net.z_mean.numel()


def load_sd(
    name_or_path: str | os.PathLike = SD_MODEL,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    height: int | None = None,
    width: int | None = None,
    gradient_checkpointing: bool = False,
    local_files_only: bool | None = None,
) -> SDGenerator:
    """A Stable Diffusion pipeline (a hub name such as :data:`SD_MODEL`, or a folder written by
    ``StableDiffusionPipeline.save_pretrained``) as an :class:`SDGenerator` on ``device`` in ``dtype``.

    Weights from safetensors only. Raises :class:`~xattr_nb.checks.InputError` naming
    ``name_or_path`` when the folder is missing, holds no diffusers pipeline, or holds another kind of
    pipeline, and when diffusers is not installed."""
    from xattr_nb.models.hub import from_pretrained_offline
    from xattr_nb.runtime import pick_device

    try:
        from diffusers import StableDiffusionPipeline
    except ImportError as exc:  # pragma: no cover - diffusers is in the test extra
        raise InputError("`scale='full'` loads Stable Diffusion with diffusers, which is not installed: "
                         "`pip install diffusers`") from exc  # fmt: skip
    from diffusers.utils import logging as dlogging

    dlogging.disable_progress_bar()  # the "Loading pipeline components" bar clutters committed notebooks
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise InputError(f"`dtype` must be None or a torch.dtype; got {dtype!r}")
    folder = os.path.expanduser(os.fspath(name_or_path)) if isinstance(name_or_path, (str, os.PathLike)) else None
    if folder is not None and os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise InputError(f"`name_or_path` {str(name_or_path)!r} is a folder without model_index.json: not a diffusers "
                         "pipeline saved with save_pretrained")  # fmt: skip
    kwargs: dict[str, Any] = {"use_safetensors": True, "safety_checker": None, "requires_safety_checker": False}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    try:
        pipe = from_pretrained_offline(StableDiffusionPipeline.from_pretrained, name_or_path,
                                       "Stable Diffusion pipeline", local_files_only, **kwargs)  # fmt: skip
    except InputError as exc:
        raise InputError(f"`name_or_path`: {exc}") from exc
    except (TypeError, AttributeError, KeyError) as exc:
        raise InputError(f"`name_or_path` {str(name_or_path)!r} is not a Stable Diffusion pipeline: {exc}") from exc
    if not isinstance(pipe, StableDiffusionPipeline):
        raise InputError(
            f"`name_or_path` {str(name_or_path)!r} holds a {type(pipe).__name__}, not a StableDiffusionPipeline"
        )
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(pick_device(device))
    if gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    return SDGenerator(pipe, height=height, width=width)


def load_t2i(scale: str = "cpu", *, small: str = "tiny_t2i", full: str | os.PathLike = SD_MODEL, device: str = "cpu",
             dtype: torch.dtype | None = None, **kwargs: Any):  # fmt: skip
    """The text-to-image generator of papers 23 SAGE and 24 R0: the zoo's TinyT2I ``small``
    (``scale="cpu"``, :func:`~xattr_nb.models.t2i.load_tiny_t2i`), or Stable Diffusion ``full`` (a hub name
    or a folder written by ``save_pretrained``; safetensors only) as an :class:`SDGenerator` at
    ``scale="full"`` (``kwargs`` go to :func:`load_sd`: ``height``, ``width``, ``gradient_checkpointing``).
    Raises :class:`~xattr_nb.checks.InputError` naming ``full`` when it cannot be loaded."""
    from xattr_nb.checks import check_choice

    check_choice(scale, ("cpu", "full"), "scale")
    if scale == "cpu":
        from xattr_nb.models.t2i import load_tiny_t2i

        return load_tiny_t2i(name=small, device=device)
    if not isinstance(full, (str, os.PathLike)) or not str(full):
        raise InputError(f"`full` must name a Stable Diffusion model (e.g. {SD_MODEL!r}) or a local folder")
    try:
        return load_sd(full, device=device, dtype=dtype, **kwargs)
    except InputError as exc:
        raise InputError(f"`full`: {exc}") from exc

"""Sparse autoencoders on activations: TopK (tied or untied) and L1, a trainer, dead-latent revival.

The recipe follows the SelfReg code (Wu et al., KDD 2025) and OpenAI's TopK SAEs:

- encoder pre-activation ``u = (x - b_dec) W_enc + b_enc``; TopK keeps the ``k`` largest entries of
  ``u`` and then applies the ReLU (TopK before ReLU, as in the official code);
- decoder ``x_hat = a W_dec + b_dec``, with ``W_dec = W_enc^T`` when tied;
- loss: normalised MSE, ``mean_i ||x_hat_i - x_i||^2 / ||x_i||^2``;
- ``k`` may be annealed linearly from ``k0`` to ``k1`` over the first ``frac`` of the optimiser steps;
- task fine-tuning revives latents that never fire on the task data: the alive latents reconstruct
  ``x``, and the dead ones (their own TopK) reconstruct the residual, weighted by ``aux_weight``.

:class:`L1SAE` is the classic ReLU SAE with an L1 penalty and unit-norm decoder rows.
sae-lens trains and loads SAEs at scale but needs the network for its pretrained dictionaries; these
few dozen lines are written here so the small notebooks train offline in seconds.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import nn

from xattr_nb.checks import InputError, check_float, check_int, check_tensor
from xattr_nb.runtime import progress

__all__ = [
    "L1SAE",
    "TopKSAE",
    "dead_latents",
    "encode_direction",
    "explained_variance",
    "finetune_dead_revival",
    "l0",
    "nmse",
    "top_activations",
    "train_sae",
]


def nmse(x_hat: torch.Tensor, x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalised MSE: the mean over rows of ``||x_hat - x||^2 / ||x||^2`` (0 = perfect, 1 = predicting zero)."""
    if x_hat.shape != x.shape:
        raise InputError(f"`x_hat` has shape {tuple(x_hat.shape)} but `x` has {tuple(x.shape)}")
    return (((x_hat - x) ** 2).sum(-1) / (x.pow(2).sum(-1) + eps)).mean()


def _topk_mask(u: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, u.shape[-1])
    idx = u.topk(k, dim=-1).indices
    return torch.zeros_like(u).scatter_(-1, idx, 1.0)


class _SAE(nn.Module):
    d_in: int
    d_hidden: int

    def _check_acts(self, x: Any, name: str = "x") -> torch.Tensor:
        x = check_tensor(x, name, ndim=2)
        if x.shape[-1] != self.d_in:
            raise InputError(f"`{name}` must have {self.d_in} features (the SAE's d_in); got {x.shape[-1]}")
        if not torch.isfinite(x).all():
            raise InputError(f"`{name}` holds NaN or infinite values")
        return x.to(self.b_dec.dtype)

    def encode_pre(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder pre-activation ``(x - b_dec) W_enc + b_enc`` (no ReLU, no sparsity)."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def decode(self, a: torch.Tensor) -> torch.Tensor:
        return a @ self.decoder + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat, a)``: the reconstruction and the sparse code."""
        a = self.encode(x)
        return self.decode(a), a

    def extra_loss(self, a: torch.Tensor) -> torch.Tensor:
        return a.new_zeros(())


class TopKSAE(_SAE):
    """TopK sparse autoencoder: ``a = ReLU(TopK_k(u))``; tied (``W_dec = W_enc^T``) by default, as in SelfReg.

    ``k`` is an attribute: the trainer anneals it. Initialisation: Kaiming-normal encoder (the
    official code's choice), zero biases, ``b_dec`` set from the data's mean by :func:`train_sae`.
    """

    def __init__(self, d_in: int, d_hidden: int, k: int, *, tied: bool = True, seed: int = 0) -> None:
        super().__init__()
        self.d_in, self.d_hidden = check_int(d_in, "d_in", low=1), check_int(d_hidden, "d_hidden", low=1)
        self.k = check_int(k, "k", low=1, high=self.d_hidden)
        self.tied = bool(tied)
        gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
        w = torch.randn(d_in, d_hidden, generator=gen) * (2.0 / d_in) ** 0.5
        self.W_enc = nn.Parameter(w)
        self.b_enc = nn.Parameter(torch.zeros(d_hidden))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.W_dec = None if self.tied else nn.Parameter(w.T.clone())

    @property
    def decoder(self) -> torch.Tensor:
        """Decoder directions, one row per latent: ``[d_hidden, d_in]``."""
        return self.W_enc.T if self.W_dec is None else self.W_dec

    def encode(self, x: torch.Tensor, k: int | None = None, *, latents: torch.Tensor | None = None) -> torch.Tensor:
        """The sparse code; ``latents`` (bool ``[d_hidden]``) restricts TopK to those latents (dead-latent revival)."""
        u = self.encode_pre(x)
        if latents is not None:
            u = u.masked_fill(~latents, float("-inf"))
        k = self.k if k is None else k
        a = torch.relu(u.masked_fill(u == float("-inf"), 0.0) * _topk_mask(u, k))
        return a

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_hidden={self.d_hidden}, k={self.k}, tied={self.tied}"


class L1SAE(_SAE):
    """ReLU sparse autoencoder with an L1 penalty ``l1 * mean_i ||a_i||_1``; decoder rows kept at unit norm
    (renormalised after every step by :func:`train_sae`) so the penalty cannot be dodged by scaling."""

    def __init__(self, d_in: int, d_hidden: int, *, l1: float = 1e-2, seed: int = 0) -> None:
        super().__init__()
        self.d_in, self.d_hidden = check_int(d_in, "d_in", low=1), check_int(d_hidden, "d_hidden", low=1)
        self.l1 = check_float(l1, "l1", low=0.0)
        gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
        w = torch.randn(d_hidden, d_in, generator=gen)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_hidden))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    @property
    def decoder(self) -> torch.Tensor:
        return self.W_dec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.encode_pre(x))

    def extra_loss(self, a: torch.Tensor) -> torch.Tensor:
        return self.l1 * a.abs().sum(-1).mean()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_hidden={self.d_hidden}, l1={self.l1}"


def _check_sae(sae: Any) -> _SAE:
    if not isinstance(sae, _SAE):
        raise InputError(f"`sae` must be a TopKSAE or L1SAE; got {type(sae).__name__}")
    return sae


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=gen).split(batch_size))


def train_sae(
    sae: _SAE,
    acts: torch.Tensor,
    *,
    epochs: int = 3,
    batch_size: int = 512,
    lr: float = 1e-3,
    k_schedule: tuple[int, int, float] | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, list[float]]:
    """Train ``sae`` on activations ``acts`` ``[N, d_in]`` with Adam on nMSE (+ the L1 term of an L1SAE).

    ``k_schedule=(k0, k1, frac)`` (TopK only) anneals ``k`` linearly from ``k0`` to ``k1`` over the first
    ``frac`` of the steps, then keeps ``k1`` (SelfReg: 200 -> 20 over the first half). ``b_dec`` starts at
    the data mean. Returns the history: ``nmse`` per step and ``k`` per step. The SAE ends in eval mode.
    """
    sae = _check_sae(sae)
    x = sae._check_acts(acts, "acts")
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    lr = check_float(lr, "lr", low=0.0)
    if k_schedule is not None:
        if not isinstance(sae, TopKSAE):
            raise InputError("`k_schedule` applies to a TopKSAE only")
        if not (isinstance(k_schedule, (tuple, list)) and len(k_schedule) == 3):
            raise InputError(f"`k_schedule` must be (k0, k1, frac); got {k_schedule!r}")
        k0 = check_int(k_schedule[0], "k_schedule[0]", low=1, high=sae.d_hidden)
        k1 = check_int(k_schedule[1], "k_schedule[1]", low=1, high=sae.d_hidden)
        frac = check_float(k_schedule[2], "k_schedule[2]", low=0.0, high=1.0)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr, eps=6.25e-10)
    n_steps = epochs * -(-len(x) // batch_size)
    history: dict[str, list[float]] = {"nmse": [], "k": []}
    sae.train()
    quiet = {} if show_progress else {"disable": True}
    bar = progress(total=n_steps, desc=f"training {type(sae).__name__}", **quiet)
    step = 0
    for _ in range(epochs):
        for idx in _batches(len(x), batch_size, gen):
            if k_schedule is not None:
                t = min(1.0, step / max(1.0, frac * n_steps)) if frac > 0 else 1.0
                sae.k = max(1, round(k0 + (k1 - k0) * t))
            x_hat, a = sae(x[idx])
            loss_rec = nmse(x_hat, x[idx])
            loss = loss_rec + sae.extra_loss(a)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if isinstance(sae, L1SAE):
                sae.normalize_decoder()
            history["nmse"].append(float(loss_rec.detach()))
            history["k"].append(float(getattr(sae, "k", 0)))
            step += 1
            bar.update(1)
    bar.close()
    sae.eval()
    return history


@torch.no_grad()
def dead_latents(sae: _SAE, acts: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
    """Bool ``[d_hidden]``: latents that never fire (activation 0 on every row of ``acts``)."""
    sae = _check_sae(sae)
    x = sae._check_acts(acts, "acts")
    fired = torch.zeros(sae.d_hidden, dtype=torch.bool)
    for chunk in x.split(batch_size):
        fired |= (sae.encode(chunk) > 0).any(0)
    return ~fired


def finetune_dead_revival(
    sae: TopKSAE,
    acts: torch.Tensor,
    *,
    epochs: int = 2,
    lr: float = 1e-4,
    aux_weight: float = 0.1,
    batch_size: int = 512,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune a TopK SAE on task activations, reviving the latents that are dead on them (SelfReg).

    Loss = nMSE(decode(TopK over alive latents), x) + ``aux_weight`` * nMSE(decode(TopK over dead
    latents), x - sg(x_hat_alive)): the dead latents learn what the alive ones miss. Returns the
    history and the dead masks before and after.
    """
    if not isinstance(sae, TopKSAE):
        raise InputError(f"`sae` must be a TopKSAE for dead-latent revival; got {type(sae).__name__}")
    x = sae._check_acts(acts, "acts")
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    lr = check_float(lr, "lr", low=0.0)
    aux_weight = check_float(aux_weight, "aux_weight", low=0.0)
    dead = dead_latents(sae, x)
    alive = ~dead
    gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr, eps=6.25e-10)
    history: dict[str, Any] = {"nmse": [], "aux": [], "dead_before": int(dead.sum())}
    sae.train()
    quiet = {} if show_progress else {"disable": True}
    for _ in progress(range(epochs), desc="dead-latent revival", **quiet):
        for idx in _batches(len(x), batch_size, gen):
            xb = x[idx]
            x_hat = sae.decode(sae.encode(xb, latents=alive))
            loss_rec = nmse(x_hat, xb)
            loss = loss_rec
            if dead.any():
                resid = xb - x_hat.detach()
                a_dead = sae.encode(xb, latents=dead)
                aux = nmse(a_dead @ sae.decoder, resid)
                loss = loss + aux_weight * aux
                history["aux"].append(float(aux.detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
            history["nmse"].append(float(loss_rec.detach()))
    sae.eval()
    history["dead_after"] = int(dead_latents(sae, x).sum())
    return history


@torch.no_grad()
def top_activations(sae: _SAE, acts: torch.Tensor, labels: list[str], k: int = 20) -> pd.DataFrame:
    """For every latent that fires, its ``k`` strongest rows of ``acts`` with their ``labels`` (e.g. the token
    each activation belongs to): a long table ``latent, rank, label, activation``. The input of every
    automatic or human feature interpretation."""
    sae = _check_sae(sae)
    x = sae._check_acts(acts, "acts")
    if not isinstance(labels, (list, tuple)) or len(labels) != len(x):
        got = len(labels) if isinstance(labels, (list, tuple)) else type(labels).__name__
        raise InputError(f"`labels` must be a list with one label per row of `acts` ({len(x)}); got {got}")
    k = check_int(k, "k", low=1)
    a = sae.encode(x)
    vals, idx = a.topk(min(k, len(x)), dim=0)
    rows = []
    for j in torch.nonzero((a > 0).any(0)).flatten().tolist():
        for r in range(vals.shape[0]):
            if vals[r, j] <= 0:
                break
            rows.append((j, r, labels[int(idx[r, j])], float(vals[r, j])))
    return pd.DataFrame(rows, columns=["latent", "rank", "label", "activation"])


def encode_direction(sae: _SAE, w: torch.Tensor) -> torch.Tensor:
    """The SAE encoder's pre-activation of weight vector(s) ``w`` (``[d_in]`` or ``[C, d_in]``):
    ``(w - b_dec) W_enc + b_enc``, no ReLU or TopK. With a tied SAE this is ``<w, d_j>`` plus bias
    constants, SelfReg's similarity between a classifier's weights and each latent. Differentiable in ``w``."""
    sae = _check_sae(sae)
    if not isinstance(w, torch.Tensor) or w.ndim not in (1, 2) or w.shape[-1] != sae.d_in:
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise InputError(f"`w` must be a tensor [d_in] or [C, d_in] with d_in = {sae.d_in}; got {shape}")
    return sae.encode_pre(w)


def explained_variance(sae: _SAE, acts: torch.Tensor) -> float:
    """1 - nMSE of the reconstruction, for reporting."""
    with torch.no_grad():
        x = sae._check_acts(acts, "acts")
        return float(1 - nmse(sae(x)[0], x))


def l0(sae: _SAE, acts: torch.Tensor) -> float:
    """Mean number of active latents per row."""
    with torch.no_grad():
        x = sae._check_acts(acts, "acts")
        return float((sae.encode(x) > 0).float().sum(-1).mean())

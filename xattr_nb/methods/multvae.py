"""Mult-VAE: Variational Autoencoders for Collaborative Filtering (Liang, Krishnan, Hoffman, Jebara;
WWW 2018).

A user's clicks are a bag of items drawn from a multinomial over the catalogue, whose probabilities
are ``softmax(f_θ(z))`` of a Gaussian latent user vector ``z``; an encoder infers ``q(z | x)`` from the
clicks, so new users are scored from their fold-in clicks alone (strong generalisation). The KL term is
down-weighted by ``β``, annealed from 0 per gradient update, and the cap is chosen where validation
NDCG@100 peaks.

The steps, each small and tested (written here from the spec and the official notebook
``dawenl/vae_cf``, read, not copied; no library ships Mult-VAE for torch):

- :func:`multinomial_nll`, :func:`gaussian_nll`, :func:`logistic_nll`: the three likelihoods the
  paper compares, per user (summed over items);
- :func:`kl_diag_gaussian`: ``KL(N(μ, σ²) || N(0, I))`` per user;
- :func:`kl_beta`: the annealing schedule ``min(cap, step / total_anneal_steps)``;
- :class:`AutoEncoder`: the encoder/decoder MLPs (tanh, L2-normalised input, input dropout), variational
  (Mult-VAE) or deterministic (Mult-DAE);
- :func:`train`: Adam on the training users, β per update, validation NDCG@100 every epoch, the best
  checkpoint kept; :func:`select_beta` reads β at the validation peak of an anneal-to-1 run;
- :func:`popularity_scores`, :func:`ease_fit`: the baselines (counts over training users; EASE,
  Steck 2019, closed form);
- :func:`evaluate`: NDCG@100, Recall@20, Recall@50 on held-out users with fold-in items excluded,
  through :mod:`xattr_nb.metrics.ranking`;
- :func:`compare`: every model on one world with the paper's selection protocol; :func:`explain`:
  Mult-VAE end to end.

Figures: :func:`plot_annealing`, :func:`plot_results`.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from xattr_nb import plots
from xattr_nb.checks import InputError, check_choice, check_float, check_int
from xattr_nb.metrics.ranking import ndcg_at_k, ndcg_at_k_batch, recall_at_k
from xattr_nb.runtime import pick_device, progress
from xattr_nb.worlds.recsys import ImplicitFeedback

__all__ = [
    "LIKELIHOODS",
    "AutoEncoder",
    "TrainResult",
    "compare",
    "ease_fit",
    "evaluate",
    "explain",
    "gaussian_nll",
    "kl_beta",
    "kl_diag_gaussian",
    "logistic_nll",
    "multinomial_nll",
    "plot_annealing",
    "plot_results",
    "popularity_scores",
    "score",
    "select_beta",
    "train",
]

LIKELIHOODS = ("multinomial", "gaussian", "logistic")


# --------------------------------------------------------------------------------------------
# Likelihoods, KL, annealing
# --------------------------------------------------------------------------------------------


def _pair(out: Any, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(out, torch.Tensor) or not isinstance(x, torch.Tensor):
        raise InputError("`logits` and `x` must be tensors [B, I]")
    if out.shape != x.shape or out.ndim != 2:
        raise InputError(
            f"`logits` and `x` must both be [B, I] of one shape; got {tuple(out.shape)} and {tuple(x.shape)}"
        )
    return out, x.to(out.dtype)


def multinomial_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``-Σ_i x_ui log softmax(logits_u)_i`` per user ``[B]``: the multinomial log-likelihood up to the
    multinomial coefficient (which does not depend on the model)."""
    logits, x = _pair(logits, x)
    return -(F.log_softmax(logits, dim=-1) * x).sum(dim=-1)


def gaussian_nll(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``½ Σ_i (x_ui − f_ui)²`` per user ``[B]``: a unit-variance Gaussian likelihood up to a constant
    (the paper's ``c_ui`` confidence weights set to 1)."""
    out, x = _pair(out, x)
    return 0.5 * ((x - out) ** 2).sum(dim=-1)


def logistic_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``-Σ_i [x_ui log σ(f_ui) + (1 − x_ui) log(1 − σ(f_ui))]`` per user ``[B]`` (independent Bernoullis)."""
    logits, x = _pair(logits, x)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=-1)


NLL = {"multinomial": multinomial_nll, "gaussian": gaussian_nll, "logistic": logistic_nll}


def kl_diag_gaussian(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ, diag σ²) || N(0, I)) = ½ Σ_k (−log σ²_k + σ²_k + μ²_k − 1)`` per row ``[B]``."""
    if not isinstance(mu, torch.Tensor) or not isinstance(logvar, torch.Tensor) or mu.shape != logvar.shape:
        raise InputError("`mu` and `logvar` must be tensors of one shape [B, K]")
    return 0.5 * (-logvar + logvar.exp() + mu**2 - 1).sum(dim=-1)


def kl_beta(step: int, total_anneal_steps: int, cap: float) -> float:
    """The KL weight at gradient update ``step`` (counted from 0): ``min(cap, step / total_anneal_steps)``;
    ``total_anneal_steps = 0`` means no annealing (``β = cap`` from the first update)."""
    step = check_int(step, "step", low=0)
    total_anneal_steps = check_int(total_anneal_steps, "total_anneal_steps", low=0)
    cap = check_float(cap, "cap", low=0.0)
    if total_anneal_steps == 0:
        return cap
    return min(cap, step / total_anneal_steps)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class AutoEncoder(nn.Module):
    """Mult-VAE (``variational=True``: encoder ``I → hidden → 2K``, decoder ``K → reversed(hidden) → I``)
    or Mult-DAE (``variational=False``: ``I → hidden → K`` then ``K → reversed(hidden) → I``; the paper's
    DAE is ``hidden=(), latent=200``). tanh between layers, none on the output; the input is
    L2-normalised and dropped out (``dropout``) in training only; Xavier-uniform weights and
    truncated-normal(0.001) biases as in the official code."""

    def __init__(
        self,
        n_items: int,
        hidden: Sequence[int] = (200,),
        latent: int = 50,
        *,
        dropout: float = 0.5,
        variational: bool = True,
    ):
        super().__init__()
        n_items = check_int(n_items, "n_items", low=1)
        latent = check_int(latent, "latent", low=1)
        hidden = [check_int(h, "hidden", low=1) for h in hidden]
        self.dropout = check_float(dropout, "dropout", low=0.0, high=0.99)
        self.variational = bool(variational)
        self.latent = latent
        enc = [n_items, *hidden, 2 * latent if variational else latent]
        dec = [latent, *reversed(hidden), n_items]
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(enc))
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dec))
        for layer in [*self.encoder, *self.decoder]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.trunc_normal_(layer.bias, std=0.001, a=-0.002, b=0.002)

    @staticmethod
    def _mlp(layers: nn.ModuleList, h: torch.Tensor, last_tanh: bool) -> torch.Tensor:
        for i, layer in enumerate(layers):
            h = layer(h)
            if i < len(layers) - 1 or last_tanh:
                h = torch.tanh(h)
        return h

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(μ, log σ²)`` (VAE) or ``(h, None)`` (DAE) from clicks ``x [B, I]``."""
        h = F.normalize(x, dim=-1)
        h = F.dropout(h, self.dropout, training=self.training)
        if not self.variational:  # the official DAE: tanh after every layer but the very last one
            return self._mlp(self.encoder, h, last_tanh=True), None
        out = self._mlp(self.encoder, h, last_tanh=False)
        return out[:, : self.latent], out[:, self.latent :]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(logits [B, I], μ, log σ²)``: ``z = μ + σ ε`` in training, ``z = μ`` in evaluation."""
        mu, logvar = self.encode(x)
        z = mu
        if self.variational and self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self._mlp(self.decoder, z, last_tanh=False), mu, logvar

    def weight_norm2(self) -> torch.Tensor:
        """``Σ_W ‖W‖²_F`` over the weight matrices (not biases), the official L2 term."""
        return sum((layer.weight**2).sum() for layer in [*self.encoder, *self.decoder])


# --------------------------------------------------------------------------------------------
# Scoring, evaluation, baselines
# --------------------------------------------------------------------------------------------


def _check_csr(x: Any, name: str, n_items: int | None = None) -> sp.csr_matrix:
    if not sp.issparse(x):
        if isinstance(x, (np.ndarray, torch.Tensor)) and np.ndim(x) == 2:
            x = sp.csr_matrix(np.asarray(x, dtype=np.float32))
        else:
            raise InputError(f"`{name}` must be a scipy.sparse matrix or a 2-D array [users, items]")
    x = sp.csr_matrix(x)
    if n_items is not None and x.shape[1] != n_items:
        raise InputError(f"`{name}` must have {n_items} item columns; got {x.shape[1]}")
    return x


def _dense(x: sp.csr_matrix, rows: Any, device: Any) -> torch.Tensor:
    return torch.from_numpy(x[rows].toarray().astype(np.float32)).to(device)


@torch.no_grad()
def score(model: AutoEncoder, fold_in: Any, *, batch_size: int = 2000) -> np.ndarray:
    """Item scores ``[U, I]`` (the decoder's logits at ``z = μ``) from fold-in clicks, in evaluation mode."""
    x = _check_csr(fold_in, "fold_in")
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out = [
        model(_dense(x, slice(i, i + batch_size), device))[0].cpu().numpy() for i in range(0, x.shape[0], batch_size)
    ]
    model.train(was)
    return np.concatenate(out).astype(np.float64)


def popularity_scores(train: Any, n_users: int) -> np.ndarray:
    """Every user gets the item click counts over the training users ``[n_users, I]`` (ties are averaged
    by the metrics, so the item order does not flatter the baseline)."""
    x = _check_csr(train, "train")
    n_users = check_int(n_users, "n_users", low=1)
    return np.broadcast_to(np.asarray(x.sum(axis=0), dtype=np.float64).ravel(), (n_users, x.shape[1]))


def ease_fit(train: Any, lam: float = 500.0) -> np.ndarray:
    """EASE (Steck, WWW 2019): ``B = I − P diag(1/diag P)`` with ``P = (XᵀX + λI)⁻¹`` and a zero diagonal;
    scores are ``x_u B``. Closed form, written here (no library ships it)."""
    x = _check_csr(train, "train")
    lam = check_float(lam, "lam", low=0.0)
    g = (x.T @ x).toarray().astype(np.float64)
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b


def evaluate(
    scores: Any, fold_in: Any, heldout: Any, *, ks: Sequence[int] = (20, 50), ndcg_k: int = 100, chunk: int = 2000
) -> dict[str, np.ndarray]:
    """Per held-out user: ``NDCG@ndcg_k`` and ``Recall@k`` (``min(k, |held-out|)`` normaliser) with the
    fold-in items excluded from the ranking, by :mod:`xattr_nb.metrics.ranking` (ties averaged)."""
    f = _check_csr(fold_in, "fold_in")
    h = _check_csr(heldout, "heldout", f.shape[1])
    if f.shape != h.shape:
        raise InputError(f"`fold_in` {f.shape} and `heldout` {h.shape} must have the same shape")
    if np.shape(scores) != f.shape:
        raise InputError(f"`scores` must be [users, items] = {f.shape}; got {np.shape(scores)}")
    out: dict[str, list] = {f"ndcg@{ndcg_k}": [], **{f"recall@{k}": [] for k in ks}}
    for i in range(0, f.shape[0], chunk):
        s = np.asarray(scores[i : i + chunk], dtype=np.float64)
        ex, rel = f[i : i + chunk].toarray() > 0, h[i : i + chunk].toarray() > 0
        out[f"ndcg@{ndcg_k}"].append(ndcg_at_k(s, rel, ndcg_k, exclude=ex).numpy())
        for k in ks:
            out[f"recall@{k}"].append(recall_at_k(s, rel, k, exclude=ex).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """A trained model (its best checkpoint on validation NDCG@100) and what training measured."""

    model: AutoEncoder
    history: pd.DataFrame  # one row per epoch: epoch, step, beta, loss, val_ndcg
    config: dict[str, Any]
    best_epoch: int = 0
    best_val_ndcg: float = float("nan")
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best_beta(self) -> float:
        """β at the epoch of the best validation NDCG@100 (the paper's read-out of an anneal run)."""
        return select_beta(self.history)


def select_beta(history: pd.DataFrame) -> float:
    """β at the epoch where validation NDCG@100 peaks (the first peak on ties)."""
    if not isinstance(history, pd.DataFrame) or not {"beta", "val_ndcg"} <= set(history.columns) or history.empty:
        raise InputError("`history` must be a non-empty DataFrame with columns 'beta' and 'val_ndcg'")
    return float(history["beta"].iloc[int(np.argmax(history["val_ndcg"].to_numpy()))])


def train(
    train_x: Any,
    val_fold_in: Any,
    val_heldout: Any,
    *,
    likelihood: str = "multinomial",
    variational: bool = True,
    hidden: Sequence[int] = (200,),
    latent: int = 50,
    dropout: float = 0.5,
    epochs: int = 40,
    batch_size: int = 250,
    lr: float = 1e-3,
    anneal_cap: float = 0.2,
    total_anneal_steps: int | None = None,
    lam: float = 0.0,
    seed: int = 0,
    device: Any = "cpu",
    show_progress: bool = False,
    desc: str | None = None,
) -> TrainResult:
    """Train on the training users' clicks; after every epoch score the validation users from their
    fold-in clicks and keep the checkpoint with the best NDCG@100 on their held-out clicks.

    ``total_anneal_steps=None`` anneals over the whole run (``epochs × updates per epoch``); ``0`` holds
    ``β = anneal_cap`` from the start. The loss per batch is ``mean NLL + β mean KL + lam Σ‖W‖²`` (no KL
    for a DAE). The test users are never seen here.
    """
    check_choice(likelihood, LIKELIHOODS, "likelihood")
    x = _check_csr(train_x, "train_x")
    vf = _check_csr(val_fold_in, "val_fold_in", x.shape[1])
    vh = _check_csr(val_heldout, "val_heldout", x.shape[1])
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    lr = check_float(lr, "lr", low=0.0)
    lam = check_float(lam, "lam", low=0.0)
    anneal_cap = check_float(anneal_cap, "anneal_cap", low=0.0)
    steps_per_epoch = -(-x.shape[0] // batch_size)
    if total_anneal_steps is None:
        total_anneal_steps = epochs * steps_per_epoch
    total_anneal_steps = check_int(total_anneal_steps, "total_anneal_steps", low=0)
    dev = pick_device(device)
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    model = AutoEncoder(x.shape[1], hidden, latent, dropout=dropout, variational=variational).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    nll = NLL[likelihood]
    small = x.shape[0] * x.shape[1] <= 50_000_000  # keep small click matrices dense on the device
    x_dense = torch.from_numpy(x.toarray().astype(np.float32)).to(dev) if small else None
    vf_dense = torch.from_numpy(vf.toarray() > 0)
    vh_dense = torch.from_numpy(vh.toarray() > 0)
    rows, step, best, best_state, best_epoch = [], 0, -1.0, None, 0
    t0 = time.perf_counter()
    for epoch in progress(
        range(1, epochs + 1), desc=desc or f"{likelihood} {'VAE' if variational else 'DAE'}", disable=not show_progress
    ):
        model.train()
        perm = torch.randperm(x.shape[0], generator=gen).numpy()
        total, beta = 0.0, 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            xb = x_dense[torch.from_numpy(idx).to(dev)] if small else _dense(x, idx, dev)
            out, mu, logvar = model(xb)
            loss = nll(out, xb).mean()
            if variational:
                beta = kl_beta(step, total_anneal_steps, anneal_cap)
                loss = loss + beta * kl_diag_gaussian(mu, logvar).mean()
            if lam:
                loss = loss + lam * model.weight_norm2()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            total += float(loss.detach()) * len(xb)
        s = torch.from_numpy(score(model, vf))
        val = float(ndcg_at_k_batch(s, vh_dense, 100, exclude=vf_dense).mean())
        rows.append({"epoch": epoch, "step": step, "beta": beta, "loss": total / x.shape[0], "val_ndcg": val})
        if val > best:
            best, best_epoch, best_state = val, epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    cfg = dict(
        likelihood=likelihood,
        variational=variational,
        hidden=tuple(hidden),
        latent=latent,
        dropout=dropout,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        anneal_cap=anneal_cap,
        total_anneal_steps=total_anneal_steps,
        lam=lam,
        seed=seed,
        updates=step,
    )
    return TrainResult(model, pd.DataFrame(rows), cfg, best_epoch, best, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# The protocol: every model on one world
# --------------------------------------------------------------------------------------------


def _check_data(data: Any) -> ImplicitFeedback:
    if not isinstance(data, ImplicitFeedback):
        raise InputError(f"`data` must be an ImplicitFeedback (xattr_nb.worlds.recsys); got {type(data).__name__}")
    return data


def _row(name: str, scores: np.ndarray, data: ImplicitFeedback, **extra: Any) -> dict[str, Any]:
    m = evaluate(scores, data.test_fold_in, data.test_heldout)
    return {
        "model": name,
        **{k: float(v.mean()) for k, v in m.items()},
        "ndcg_se": float(m["ndcg@100"].std(ddof=1) / np.sqrt(len(m["ndcg@100"]))),
        **extra,
    }


def compare(
    data: ImplicitFeedback,
    *,
    likelihoods: Sequence[str] = LIKELIHOODS,
    hidden: Sequence[int] = (200,),
    latent: int = 50,
    dae_latent: int = 200,
    epochs: int = 40,
    batch_size: int = 250,
    lr: float = 1e-3,
    anneal_steps: int | None = None,
    ease_lams: Sequence[float] = (100.0, 500.0),
    beta_one: bool = True,
    dae: bool = True,
    seed: int = 0,
    device: Any = "cpu",
    show_progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, TrainResult]]:
    """Every model of the notebook on one world, test metrics in one table (one row per model).

    For each VAE likelihood, the paper's procedure: an **anneal run** with β rising from 0 towards 1
    over ``anneal_steps`` updates (default: the whole run), β* read where its validation NDCG@100
    peaks, then a **final run** with ``anneal_cap = β*`` and the same schedule; every likelihood gets the
    same architecture, epochs, batch and optimiser. Mult-DAE (``I → dae_latent → I``, λ = 0.01/batch),
    Mult-VAE with β = 1 from the start (``beta_one``), popularity over training users and EASE (λ chosen
    on validation NDCG@100 among ``ease_lams``) are the references. Checkpoints and every choice use the
    validation users; the test users are scored once, at the end.
    """
    data = _check_data(data)
    for lik in likelihoods:
        check_choice(lik, LIKELIHOODS, "likelihoods")
    common = dict(
        hidden=tuple(hidden),
        latent=latent,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        total_anneal_steps=anneal_steps,
        seed=seed,
        device=device,
        show_progress=show_progress,
    )
    args = (data.train, data.val_fold_in, data.val_heldout)
    rows, runs = [], {}
    n_test = data.test_fold_in.shape[0]
    rows.append(_row("Popularity", popularity_scores(data.train, n_test), data))
    if ease_lams:
        vbest, vlam, vb = -1.0, None, None
        for lam in ease_lams:
            b = ease_fit(data.train, lam)
            v = float(evaluate(data.val_fold_in @ b, data.val_fold_in, data.val_heldout, ks=())["ndcg@100"].mean())
            if v > vbest:
                vbest, vlam, vb = v, lam, b
        rows.append(_row("EASE", np.asarray(data.test_fold_in @ vb), data, val_ndcg=vbest, lam=vlam))
    names = {"multinomial": "Mult-VAE", "gaussian": "Gaussian-VAE", "logistic": "Logistic-VAE"}

    def add(name: str, res: TrainResult, seconds: float, **extra: Any) -> None:
        runs[name] = res
        test = score(res.model, data.test_fold_in)
        rows.append(
            _row(name, test, data, val_ndcg=res.best_val_ndcg, best_epoch=res.best_epoch, seconds=seconds, **extra)
        )

    for lik in likelihoods:
        ann = train(*args, likelihood=lik, anneal_cap=1.0, desc=f"{names[lik]} anneal", **common)
        beta_star = ann.best_beta
        fin = train(*args, likelihood=lik, anneal_cap=beta_star, desc=f"{names[lik]} β*={beta_star:.2f}", **common)
        runs[f"{names[lik]} anneal"] = ann
        add(names[lik], fin, ann.seconds + fin.seconds, beta=beta_star)
    if beta_one:
        one = train(
            *args, likelihood="multinomial", anneal_cap=1.0, desc="Mult-VAE β=1", **{**common, "total_anneal_steps": 0}
        )
        add("Mult-VAE β=1", one, one.seconds, beta=1.0)
    if dae:
        dae_cfg = {**common, "hidden": (), "latent": dae_latent, "total_anneal_steps": None}
        d = train(*args, likelihood="multinomial", variational=False, lam=0.01 / batch_size, desc="Mult-DAE", **dae_cfg)
        add("Mult-DAE", d, d.seconds)
    if data.truth is not None:  # the generator's own logits: a ceiling, not a baseline
        rows.append(_row("oracle (true logits)", data.truth.logits(data.test_users).numpy(), data))
    return pd.DataFrame(rows), runs


def explain(data: ImplicitFeedback, *, seed: int = 0, device: Any = "cpu", **kwargs: Any) -> TrainResult:
    """Mult-VAE end to end: an anneal-to-1 run, β* at its validation peak, the final run with cap β*;
    the returned result carries the test metrics in ``extra["test"]`` (per-user arrays)."""
    data = _check_data(data)
    args = (data.train, data.val_fold_in, data.val_heldout)
    ann = train(*args, anneal_cap=1.0, seed=seed, device=device, **kwargs)
    fin = train(*args, anneal_cap=ann.best_beta, seed=seed, device=device, **kwargs)
    fin.extra.update(
        anneal=ann,
        beta_star=ann.best_beta,
        test=evaluate(score(fin.model, data.test_fold_in), data.test_fold_in, data.test_heldout),
    )
    return fin


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def plot_annealing(runs: dict[str, TrainResult], *, title: str | None = None):
    """Validation NDCG@100 against the β of each epoch for anneal-to-1 runs, the peak (β*) marked."""
    if not runs:
        raise InputError("`runs` is empty")
    with plots.style():
        fig = plots.figure(4.6, 3.1)
        ax = fig.add_subplot()
        for name, res in runs.items():
            h = res.history
            (line,) = ax.plot(h["beta"], h["val_ndcg"], label=f"{name} (β* = {res.best_beta:.2f})")
            i = int(np.argmax(h["val_ndcg"].to_numpy()))
            ax.scatter([h["beta"].iloc[i]], [h["val_ndcg"].iloc[i]], color=line.get_color(), zorder=3, s=18)
        ax.set_xlabel("β at the end of the epoch (annealed linearly per update)")
        ax.set_ylabel("validation NDCG@100")
        ax.legend(fontsize=7)
        if title:
            ax.set_title(title, fontsize=9)
    return plots.show(fig)


def plot_results(table: pd.DataFrame, *, metrics: Sequence[str] = ("ndcg@100", "recall@20"), title: str | None = None):
    """One panel per metric: the mean over runs per model (bars) and each run (dots)."""
    if not isinstance(table, pd.DataFrame) or "model" not in table:
        raise InputError("`table` must be a DataFrame with a 'model' column and metric columns")
    import seaborn as sns

    names = list(dict.fromkeys(table["model"]))
    colors = sns.color_palette("deep", len(names))
    with plots.style():
        fig = plots.figure(3.6 * len(metrics), 3.2)
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, m in zip(axes, metrics, strict=True):
            for j, name in enumerate(names):
                v = table[table["model"] == name][m].to_numpy()
                ax.bar(j, v.mean(), color=colors[j])
                ax.scatter(np.full(len(v), j), v, s=6, color="black", zorder=3)
            ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=7)
            ax.set_ylabel(f"test {m}")
        if title:
            fig.suptitle(title, fontsize=9)
    return plots.show(fig)

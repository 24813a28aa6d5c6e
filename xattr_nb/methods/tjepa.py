"""T-JEPA (paper 28): augmentation-free joint-embedding prediction for tabular data.

Steps, each small and tested:

- :class:`FeatureTokenizer` — FT-Transformer tokens (numeric ``x_j·W_j + b_j``, categorical ``Emb_j[code] + b_j``),
  ``n_reg`` learned regularisation ([CLS]) tokens prepended, base-100 sinusoidal positions added (the official code's).
- :class:`Encoder` — tokenizer, post-norm transformer, LayerNorm → Linear → LayerNorm; ``keep`` selects the
  context features (the regularisation tokens are always kept: the paper's semantics, not the official indexing quirk).
- :class:`Predictor` — projects context outputs to ``d_pred``, adds fixed sin-cos positions, appends one mask
  token per target position, a transformer, back to ``d``; read at the mask positions.
- :func:`sample_jepa_masks` — context and ``num_preds`` target sets per row; targets never meet the context.
- :func:`ema_update`, :func:`cosine_with_warmup`, :func:`momentum_schedule` — the I-JEPA schedules.
- :func:`effective_rank`, :func:`collapse_metrics` — collapse diagnostics (written here: the library has none).
- :func:`pretrain` — one SSL arm: ``"tjepa"`` (EMA target, stop-gradient), ``"no_ema"`` (the control: the
  target is the online encoder itself, gradients flow, no EMA), ``"mae"`` (a masked-feature autoencoder:
  the same encoder and predictor, but the predictor reconstructs the raw values of the target features).
- :func:`embed`, :func:`linear_probe` — flattened tokens of the frozen encoder; one probe for every arm
  (standardise, then scikit-learn's ``LogisticRegressionCV``).
- :func:`compare` — every arm and the raw-feature baselines on one table; :func:`explain` is T-JEPA end to end.

Written by hand because no installed library has a tabular JEPA; the transformer layers are torch's.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_float, check_int
from xattr_nb.runtime import progress
from xattr_nb.worlds.tabular import TabularTable

__all__ = [
    "Encoder",
    "FeatureTokenizer",
    "Predictor",
    "PretrainResult",
    "collapse_metrics",
    "compare",
    "cosine_with_warmup",
    "effective_rank",
    "ema_update",
    "embed",
    "explain",
    "linear_probe",
    "momentum_schedule",
    "pretrain",
    "raw_baselines",
    "sample_jepa_masks",
    "token_variance",
]


def _sincos(n: int, d: int, base: float) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float32)
    ang = pos / base ** (i / d)
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang)[:, : d // 2]
    return pe


class FeatureTokenizer(nn.Module):
    """FT-Transformer-style tokens: ``[n_reg regularisation tokens, numeric features, categorical features]``."""

    def __init__(self, n_num: int, cat_cardinalities: list[int], d: int, n_reg: int = 1):
        super().__init__()
        self.n_num, self.n_cat, self.n_reg, self.d = n_num, len(cat_cardinalities), n_reg, d
        self.w_num = nn.Parameter(torch.empty(n_num, d))
        self.b_num = nn.Parameter(torch.empty(n_num, d))
        offsets = np.concatenate([[0], np.cumsum(cat_cardinalities)[:-1]]) if cat_cardinalities else np.zeros(0)
        self.register_buffer("cat_offsets", torch.as_tensor(offsets, dtype=torch.long))
        self.emb = nn.Embedding(max(1, int(sum(cat_cardinalities))), d)
        self.b_cat = nn.Parameter(torch.empty(self.n_cat, d))
        self.reg = nn.Parameter(torch.empty(n_reg, d))
        for p in (self.w_num, self.b_num, self.b_cat, self.reg, self.emb.weight):
            nn.init.trunc_normal_(p, std=0.02 if p is not self.w_num else 1.0 / math.sqrt(d))
        self.register_buffer("pos", _sincos(n_reg + n_num + self.n_cat, d, 100.0))

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        b = x_num.shape[0]
        toks = [self.reg.unsqueeze(0).expand(b, -1, -1), x_num.unsqueeze(-1) * self.w_num + self.b_num]
        if self.n_cat:
            toks.append(self.emb(x_cat + self.cat_offsets) + self.b_cat)
        return torch.cat(toks, dim=1) + self.pos


def _transformer(d: int, heads: int, ffn: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d, heads, ffn, dropout=dropout, batch_first=True, norm_first=False)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class Encoder(nn.Module):
    """Tokenizer + post-norm transformer + LayerNorm → Linear → LayerNorm (the official ``TabularEncoder``)."""

    def __init__(
        self,
        n_num: int,
        cat_cardinalities: list[int],
        d: int = 32,
        layers: int = 2,
        heads: int = 2,
        ffn: int = 64,
        n_reg: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.tok = FeatureTokenizer(n_num, cat_cardinalities, d, n_reg)
        self.body = _transformer(d, heads, ffn, layers, dropout)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.LayerNorm(d))
        self.n_reg, self.n_features, self.d = n_reg, n_num + len(cat_cardinalities), d

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Token outputs ``[B, n_reg + D, d]``, or ``[B, n_reg + k, d]`` for the features ``keep`` ``[B, k]``."""
        t = self.tok(x_num, x_cat)
        if keep is not None:
            reg, feats = t[:, : self.n_reg], t[:, self.n_reg :]
            feats = torch.gather(feats, 1, keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
            t = torch.cat([reg, feats], dim=1)
        return self.head(self.body(t))


class Predictor(nn.Module):
    """Latent predictor: context tokens + one mask token per target feature → predicted target tokens."""

    def __init__(
        self,
        n_features: int,
        d: int = 32,
        d_pred: int = 16,
        layers: int = 1,
        heads: int = 2,
        n_reg: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.inp = nn.Linear(d, d_pred)
        self.mask = nn.Parameter(torch.zeros(1, 1, d_pred))
        nn.init.trunc_normal_(self.mask, std=0.02)
        self.body = _transformer(d_pred, heads, 2 * d_pred, layers, dropout)
        self.out = nn.Sequential(nn.LayerNorm(d_pred), nn.Linear(d_pred, d))
        self.register_buffer("pos", _sincos(n_reg + n_features, d_pred, 10000.0))
        self.n_reg = n_reg

    def forward(self, ctx_out: torch.Tensor, ctx_idx: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
        b = ctx_out.shape[0]
        reg_pos = self.pos[: self.n_reg].unsqueeze(0).expand(b, -1, -1)
        pos_ctx = torch.cat([reg_pos, self.pos[self.n_reg + ctx_idx]], dim=1)
        h = self.inp(ctx_out) + pos_ctx
        m = self.mask.expand(b, tgt_idx.shape[1], -1) + self.pos[self.n_reg + tgt_idx]
        out = self.body(torch.cat([h, m], dim=1))
        return self.out(out[:, -tgt_idx.shape[1] :])


def sample_jepa_masks(
    n_features: int,
    batch: int,
    *,
    ctx_share: tuple[float, float] = (0.3, 0.5),
    tgt_share: tuple[float, float] = (0.15, 0.35),
    num_preds: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The official ``MaskCollator``: per batch, sizes ``n_ctx``/``n_tgt`` from the shares of ``n_features``
    (redrawn until ``n_ctx + n_tgt ≤ n_features``); per row a random context set, and ``num_preds`` target sets,
    each a random subset of the row's complement (targets may overlap each other, never the context).
    Returns ``ctx [batch, n_ctx]`` and a list of ``tgt [batch, n_tgt]`` (feature indices, 0-based)."""
    n_features = check_int(n_features, "n_features", low=2)
    batch = check_int(batch, "batch", low=1)
    num_preds = check_int(num_preds, "num_preds", low=1)
    for name, sh in (("ctx_share", ctx_share), ("tgt_share", tgt_share)):
        if len(sh) != 2 or not 0.0 < sh[0] <= sh[1] < 1.0:
            raise InputError(f"`{name}` must be a (low, high) pair with 0 < low <= high < 1; got {sh!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    for _ in range(100):
        u = torch.rand(2, generator=g).tolist()
        n_ctx = max(1, round(n_features * (ctx_share[0] + (ctx_share[1] - ctx_share[0]) * u[0])))
        n_tgt = max(1, round(n_features * (tgt_share[0] + (tgt_share[1] - tgt_share[0]) * u[1])))
        if n_ctx + n_tgt <= n_features:
            break
    else:
        raise InputError(f"`ctx_share`/`tgt_share` leave no room for a target among {n_features} features")
    perm = torch.argsort(torch.rand(batch, n_features, generator=g), dim=1)
    ctx, rest = perm[:, :n_ctx], perm[:, n_ctx:]
    tgts = []
    for _ in range(num_preds):
        pick = torch.argsort(torch.rand(batch, rest.shape[1], generator=g), dim=1)[:, :n_tgt]
        tgts.append(torch.gather(rest, 1, pick))
    return ctx, tgts


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """``θ̄ ← m·θ̄ + (1 − m)·θ`` for every parameter (buffers are copied)."""
    m = check_float(m, "m", low=0.0, high=1.0)
    for pt, po in zip(target.parameters(), online.parameters(), strict=True):
        pt.mul_(m).add_(po.detach(), alpha=1.0 - m)
    for bt, bo in zip(target.buffers(), online.buffers(), strict=True):
        bt.copy_(bo)


def cosine_with_warmup(
    step: int, total: int, warmup: int, base_lr: float, start_lr: float = 0.0, final_lr: float = 0.0
) -> float:
    """Linear warmup ``start_lr → base_lr`` over ``warmup`` steps, then cosine ``base_lr → final_lr``."""
    if step < warmup:
        return start_lr + (base_lr - start_lr) * step / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def momentum_schedule(step: int, total: int, start: float = 0.996, end: float = 1.0) -> float:
    """The EMA momentum, linear from ``start`` to ``end`` over ``total`` steps."""
    return start + (end - start) * min(1.0, step / max(1, total))


def effective_rank(z: Any) -> float:
    """``exp(H(p))`` with ``p`` the singular values of the centred ``z`` normalised to sum 1 (Roy & Vetterli).

    Identity-like (d equal, orthogonal directions) → ``d``; rank one → 1; all rows equal → 0 by convention."""
    a = torch.as_tensor(np.asarray(z, dtype=np.float64) if not torch.is_tensor(z) else z.detach().double())
    if a.ndim != 2 or a.shape[0] < 2:
        raise InputError(f"`z` must be a 2-D matrix with at least 2 rows; got shape {tuple(a.shape)}")
    a = a - a.mean(0, keepdim=True)
    s = torch.linalg.svdvals(a)
    if float(s.sum()) <= 1e-12 * max(1.0, float(a.abs().max())):
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_metrics(z: Any, n_pairs: int = 1000, seed: int = 0) -> dict[str, float]:
    """The official code's collapse read-outs on row representations ``z [n, d]``: mean Euclidean distance
    between random pairs of rows, mean per-dimension std, and the effective rank."""
    a = np.asarray(z.detach().cpu() if torch.is_tensor(z) else z, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise InputError(f"`z` must be a 2-D matrix with at least 2 rows; got shape {a.shape}")
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(a), n_pairs), rng.integers(0, len(a), n_pairs)
    return {
        "pairwise_l2": float(np.linalg.norm(a[i] - a[j], axis=1).mean()),
        "dim_std": float(a.std(0).mean()),
        "effective_rank": effective_rank(a),
    }


@dataclass
class PretrainResult:
    """One SSL arm: the encoder used downstream (T-JEPA: the EMA target encoder), the loss per step, and the
    collapse read-outs over training (``history``: step, effective rank and per-dimension std of the flattened
    tokens on a fixed batch of 256 pre-training rows)."""

    mode: str
    encoder: Encoder
    losses: list[float]
    history: list[dict[str, float]]
    config: dict[str, Any] = field(default_factory=dict)


def _tensors(table: TabularTable, idx: np.ndarray, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(table.x_num[idx], device=device), torch.as_tensor(table.x_cat[idx], device=device))


@torch.no_grad()
def _pooled(enc: Encoder, xn: torch.Tensor, xc: torch.Tensor) -> torch.Tensor:
    was = enc.training
    enc.eval()
    out = enc(xn, xc).flatten(1)
    enc.train(was)
    return out


def pretrain(
    table: TabularTable,
    mode: str = "tjepa",
    *,
    steps: int = 200,
    batch_size: int = 128,
    lr: float = 1e-3,
    d: int = 32,
    layers: int = 2,
    heads: int = 2,
    ffn: int = 64,
    d_pred: int = 16,
    pred_layers: int = 1,
    n_reg: int = 1,
    ctx_share: tuple[float, float] = (0.3, 0.5),
    tgt_share: tuple[float, float] = (0.15, 0.35),
    num_preds: int = 2,
    ema: tuple[float, float] = (0.996, 1.0),
    warmup: int = 10,
    log_every: int = 20,
    seed: int = 0,
    device: Any = "cpu",
    show_progress: bool = False,
) -> PretrainResult:
    """Pre-train one SSL arm on ``table.pretrain_idx`` (no labels). ``mode``: ``"tjepa"``, ``"no_ema"`` or ``"mae"``;
    ``"random"`` returns the initial encoder untrained. Every arm has the same encoder and predictor sizes, the
    same masks, optimiser (AdamW, warmup + cosine) and number of steps."""
    check_choice(mode, ("tjepa", "no_ema", "mae", "random"), "mode")
    steps = check_int(steps, "steps", low=1)
    batch_size = check_int(batch_size, "batch_size", low=2)
    lr = check_float(lr, "lr", low=0.0)
    n_reg = check_int(n_reg, "n_reg", low=0)
    if not isinstance(table, TabularTable):
        raise InputError(f"`table` must be a TabularTable; got {type(table).__name__}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n_num, cards, D = table.x_num.shape[1], table.cat_cardinalities, table.n_features
    cfg = dict(
        d=d,
        layers=layers,
        heads=heads,
        ffn=ffn,
        d_pred=d_pred,
        pred_layers=pred_layers,
        n_reg=n_reg,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        ctx_share=tuple(ctx_share),
        tgt_share=tuple(tgt_share),
        num_preds=num_preds,
        warmup=warmup,
    )
    enc = Encoder(n_num, cards, d, layers, heads, ffn, n_reg).to(device)
    pred = Predictor(D, d, d_pred, pred_layers, 2, n_reg).to(device)
    eval_idx = table.pretrain_idx[torch.randperm(len(table.pretrain_idx), generator=g)[:256].numpy()]
    exn, exc = _tensors(table, eval_idx, device)
    if mode == "random":
        return PretrainResult(mode, enc.eval(), [], [], cfg)
    tgt_enc = copy.deepcopy(enc).requires_grad_(False) if mode == "tjepa" else None
    params = list(enc.parameters()) + list(pred.parameters())
    dec = None
    if mode == "mae":  # per-feature read-outs of the raw values: numeric scalar, categorical logits
        dec = nn.ModuleDict(
            {"num": nn.Linear(d, max(1, n_num)), "cat": nn.ModuleList([nn.Linear(d, c) for c in cards])}
        ).to(device)
        params += list(dec.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    xn_all, xc_all = _tensors(table, table.pretrain_idx, device)
    losses, hist = [], []
    it = progress(range(steps), desc=f"pretrain {mode}") if show_progress else range(steps)
    for step in it:
        for grp in opt.param_groups:
            grp["lr"] = cosine_with_warmup(step, steps, warmup, lr)
        bi = torch.randint(0, len(xn_all), (batch_size,), generator=g)
        xn, xc = xn_all[bi], xc_all[bi]
        ctx, tgts = sample_jepa_masks(
            D, batch_size, ctx_share=ctx_share, tgt_share=tgt_share, num_preds=num_preds, generator=g
        )
        ctx, tgts = ctx.to(device), [t.to(device) for t in tgts]
        z = enc(xn, xc, keep=ctx)
        if mode == "tjepa":
            with torch.no_grad():
                h = tgt_enc(xn, xc)[:, n_reg:]
        elif mode == "no_ema":
            h = enc(xn, xc)[:, n_reg:]  # the target is the online encoder itself: no EMA, no stop-gradient
        loss = 0.0
        for t in tgts:
            p = pred(z, ctx, t)
            if mode == "mae":
                loss = loss + _recon_loss(p, t, xn, xc, dec, n_num)
            else:
                loss = loss + ((p - torch.gather(h, 1, t.unsqueeze(-1).expand(-1, -1, d))) ** 2).mean()
        loss = loss / len(tgts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if tgt_enc is not None:  # after the optimiser step
            ema_update(tgt_enc, enc, momentum_schedule(step, steps, *ema))
        losses.append(float(loss.detach()))
        if step % log_every == 0 or step == steps - 1:
            zz = _pooled(tgt_enc if tgt_enc is not None else enc, exn, exc)
            hist.append({"step": step, "effective_rank": effective_rank(zz), "dim_std": float(zz.std(0).mean())})
    out = tgt_enc if tgt_enc is not None else enc
    return PretrainResult(mode, out.eval(), losses, hist, cfg)


def _recon_loss(
    p: torch.Tensor, t: torch.Tensor, xn: torch.Tensor, xc: torch.Tensor, dec: nn.ModuleDict, n_num: int
) -> torch.Tensor:
    """Masked-feature reconstruction at target positions: MSE on scaled numerics, cross-entropy on categoricals."""
    tot, cnt = p.new_zeros(()), 0
    is_num = t < n_num
    if is_num.any() and n_num:
        w = dec["num"].weight[t.clamp(max=n_num - 1)]  # [B, k, d] per-feature read-out row
        b = dec["num"].bias[t.clamp(max=n_num - 1)]
        val = (p * w).sum(-1) + b
        true = torch.gather(xn, 1, t.clamp(max=n_num - 1))
        tot = tot + (((val - true) ** 2) * is_num).sum() / is_num.sum()
        cnt += 1
    for j, head in enumerate(dec["cat"]):
        sel = t == n_num + j
        if sel.any():
            rows = sel.any(1)
            pj = (p * sel.unsqueeze(-1)).sum(1)[rows]
            tot = tot + nn.functional.cross_entropy(head(pj), xc[rows, j])
            cnt += 1
    return tot / max(1, cnt)


@torch.no_grad()
def embed(
    encoder: Encoder, table: TabularTable, idx: np.ndarray, *, batch: int = 1024, device: Any = "cpu"
) -> np.ndarray:
    """The downstream representation of the official code: all ``n_reg + D`` output tokens, flattened."""
    encoder.eval()
    outs = []
    for s in range(0, len(idx), batch):
        xn, xc = _tensors(table, idx[s : s + batch], device)
        outs.append(encoder(xn, xc).flatten(1).cpu().numpy())
    return np.concatenate(outs)


@torch.no_grad()
def token_variance(encoder: Encoder, table: TabularTable, idx: np.ndarray, device: Any = "cpu") -> np.ndarray:
    """Per-feature token variance across rows (mean over dimensions), one value per feature (REG tokens dropped)."""
    xn, xc = _tensors(table, idx, device)
    h = encoder.eval()(xn, xc)[:, encoder.n_reg :]
    return h.var(0).mean(-1).cpu().numpy()


def linear_probe(
    z_train: np.ndarray,
    y_train: np.ndarray,
    z_test: np.ndarray,
    y_test: np.ndarray,
    *,
    Cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
    cv: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """The one probe of every arm: standardise, then ``LogisticRegressionCV`` (C by ``cv``-fold CV on the
    labelled rows only); returns test accuracy and the chosen C."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(z_train) != len(y_train) or len(z_test) != len(y_test):
        raise InputError("`z_train`/`y_train` and `z_test`/`y_test` must have matching lengths")
    folds = StratifiedKFold(cv, shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(Cs), cv=folds, max_iter=1000))
    with warnings.catch_warnings():  # scikit-learn's deprecation notices about future defaults
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(z_train, y_train)
    return {"acc": float((clf.predict(z_test) == y_test).mean()), "C": float(clf[-1].C_[0])}


def raw_baselines(table: TabularTable, seed: int = 0) -> dict[str, float]:
    """Raw-feature baselines on the labelled rows: the same probe (LR), an MLP and a GBDT (scikit-learn)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier

    xtr, ytr = table.raw(table.labelled_idx), table.y[table.labelled_idx]
    xte, yte = table.raw(table.test_idx), table.y[table.test_idx]
    out = {"raw LR": linear_probe(xtr, ytr, xte, yte, seed=seed)["acc"]}
    with warnings.catch_warnings():  # an unconverged MLP at max_iter is still the baseline as run
        warnings.simplefilter("ignore")
        mlp = MLPClassifier((64,), alpha=1e-2, max_iter=500, random_state=seed).fit(xtr, ytr)
    out["raw MLP"] = float((mlp.predict(xte) == yte).mean())
    gb = HistGradientBoostingClassifier(random_state=seed).fit(xtr, ytr)
    out["raw GBDT"] = float((gb.predict(xte) == yte).mean())
    return out


def compare(
    table: TabularTable,
    *,
    arms: tuple[str, ...] = ("tjepa", "mae", "no_ema", "random"),
    seed: int = 0,
    device: Any = "cpu",
    show_progress: bool = False,
    **cfg: Any,
) -> tuple[dict[str, float], dict[str, PretrainResult]]:
    """Every SSL arm (same encoder, predictor, masks and budget) probed identically, plus the raw baselines.
    Returns ``(accuracy per arm, runs)``; the T-JEPA 0-REG ablation is the arm ``"tjepa_noreg"``."""
    acc = raw_baselines(table, seed)
    runs = {}
    ytr, yte = table.y[table.labelled_idx], table.y[table.test_idx]
    for arm in arms:
        mode, extra = ("tjepa", {"n_reg": 0}) if arm == "tjepa_noreg" else (arm, {})
        r = pretrain(table, mode, seed=seed, device=device, show_progress=show_progress, **{**cfg, **extra})
        runs[arm] = r
        ztr, zte = (
            embed(r.encoder, table, table.labelled_idx, device=device),
            embed(r.encoder, table, table.test_idx, device=device),
        )
        acc[arm] = linear_probe(ztr, ytr, zte, yte, seed=seed)["acc"]
    return acc, runs


def explain(table: TabularTable, *, seed: int = 0, device: Any = "cpu", **cfg: Any) -> dict[str, Any]:
    """T-JEPA end to end: pre-train, freeze the EMA target encoder, probe on the labelled rows, score the test rows."""
    r = pretrain(table, "tjepa", seed=seed, device=device, **cfg)
    ytr, yte = table.y[table.labelled_idx], table.y[table.test_idx]
    probe = linear_probe(
        embed(r.encoder, table, table.labelled_idx, device=device),
        ytr,
        embed(r.encoder, table, table.test_idx, device=device),
        yte,
        seed=seed,
    )
    return {"run": r, "probe": probe}

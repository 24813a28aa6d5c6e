"""ELR: Early-Learning Regularization Prevents Memorization of Noisy Labels (Liu et al., NeurIPS 2020).

Under label noise a network first fits the clean structure (early learning: its predictions on
mislabelled examples are often their true class), then memorises the wrong labels. ELR keeps a
running average of each example's past predictions as a soft target ``t_i`` and adds
``λ · log(1 − ⟨p_i, t_i⟩)`` to cross-entropy, which pulls the prediction back towards what the
model said early on (the loss: :class:`xattr_nb.training.ELRLoss`).

The steps, each small and tested:

- :func:`make_mlp`: the small-scale model (64 → 128 → 128 → 10, ReLU);
- :func:`train_noisy`: SGD on noisy labels with ``loss="ce" | "gce" | "elr"``, measuring every
  ``eval_every`` epochs the test accuracy and, on the corrupted training examples, the share
  predicted as the true class vs as the wrong label (:func:`xattr_nb.metrics.memorization_stats`);
- :func:`detect`: ELR's label-error flags ``argmax t_i ≠ y_i`` and the score ``1 − t_i[y_i]``;
  :func:`loss_scores` the small-loss score of any trained model (``1 − p(y_i)``), the baseline;
- :func:`compare`: several methods × runs on the same noisy draws (paired), one row per run;
- :func:`explain`: the whole recipe in one call (for a training method, the trained model with
  what it measured);
- :func:`load_full`: the paper's setting (CIFAR-10/100 from image folders under ``data_dir``,
  a ResNet-34 from ``transformers.ResNetConfig``, crop-and-flip augmentation).

Figures: :func:`plot_early_learning`, :func:`plot_accuracy`, :func:`plot_detection`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from xattr_nb import plots
from xattr_nb.checks import InputError, check_choice, check_float, check_int
from xattr_nb.metrics import detection_scores, memorization_stats
from xattr_nb.models.io import logits_of
from xattr_nb.runtime import pick_device, progress
from xattr_nb.training import ELRLoss, GCELoss
from xattr_nb.worlds.noisy_labels import NoisyLabelData

__all__ = [
    "METHODS",
    "RunResult",
    "compare",
    "detect",
    "explain",
    "load_full",
    "loss_scores",
    "make_mlp",
    "plot_accuracy",
    "plot_detection",
    "plot_early_learning",
    "predict",
    "summarize",
    "train_noisy",
]

#: The methods of the small-scale comparison (spec 6.5): name -> keyword arguments of train_noisy.
METHODS: dict[str, dict[str, Any]] = {
    "CE": {"loss": "ce"},
    "GCE": {"loss": "gce", "q": 0.7},
    "ELR": {"loss": "elr", "lam": 3.0, "beta": 0.7},
    "ELR(7,0.9)": {"loss": "elr", "lam": 7.0, "beta": 0.9},
}


def make_mlp(d_in: int = 64, hidden: Sequence[int] = (128, 128), n_classes: int = 10, *, seed: int = 0) -> nn.Module:
    """A ReLU MLP ``d_in → hidden… → n_classes`` initialised from ``seed`` (torch's default init)."""
    d_in = check_int(d_in, "d_in", low=1)
    n_classes = check_int(n_classes, "n_classes", low=2)
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise InputError(f"`hidden` must be a sequence of layer widths; got {hidden!r}")
    widths = [check_int(h, "hidden", low=1) for h in hidden]
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(check_int(seed, "seed", low=0, high=2**32 - 1))
    layers: list[nn.Module] = []
    prev = d_in
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    layers.append(nn.Linear(prev, n_classes))
    model = nn.Sequential(*layers)
    torch.random.set_rng_state(gen_state)
    return model


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Softmax probabilities ``[N, C]`` of ``model`` on ``x`` (eval mode, in batches, on CPU)."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out = [torch.softmax(logits_of(model(x[i : i + batch_size].to(dev)), ndim=2), 1).cpu()
           for i in range(0, len(x), batch_size)]  # fmt: skip
    model.train(was)
    return torch.cat(out)


def _augment(xb: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR's standard augmentation on ``[B, C, H, W]``: random crop after zero-padding, random h-flip."""
    b, _, h, w = xb.shape
    padded = torch.nn.functional.pad(xb, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    out[flip] = out[flip].flip(-1)
    return out


@dataclass
class RunResult:
    """One training run on noisy labels.

    ``history``: one row per evaluated epoch (``epoch``, ``test_acc``, and on the corrupted
    training examples ``fit_clean`` / ``memorized``, the share predicted as the true class / as
    the wrong label; ``train_loss``, ``reg`` ELR's term). ``targets``: ELR's final targets
    ``[N, C]`` (None for other losses); ``probs``: the final model's training-set probabilities.
    """

    method: str
    model: nn.Module
    history: pd.DataFrame
    probs: torch.Tensor
    targets: torch.Tensor | None
    config: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def final(self) -> dict[str, float]:
        last = self.history.iloc[-1]
        return {k: float(last[k]) for k in ("test_acc", "fit_clean", "memorized")}


def _check_data(data: Any, name: str) -> NoisyLabelData:
    if not isinstance(data, NoisyLabelData):
        raise InputError(f"`{name}` must be a NoisyLabelData (xattr_nb.worlds.noisy_labels); got {type(data).__name__}")
    return data


def train_noisy(
    train: NoisyLabelData,
    test: NoisyLabelData,
    *,
    loss: str = "elr",
    q: float = 0.7,
    lam: float = 3.0,
    beta: float = 0.7,
    model: nn.Module | None = None,
    hidden: Sequence[int] = (128, 128),
    epochs: int = 120,
    lr: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
    batch_size: int = 128,
    milestones: Sequence[int] = (40, 80),
    gamma: float = 0.1,
    augment: bool = False,
    eval_every: int = 1,
    seed: int = 0,
    device: str = "cpu",
    name: str | None = None,
    show_progress: bool = False,
) -> RunResult:
    """Train on ``train.labels`` (noisy) with SGD and a step schedule; measure as it learns.

    ``loss``: ``"ce"``, ``"gce"`` (``q``) or ``"elr"`` (``lam``, ``beta``). SGD with ``momentum``
    and ``weight_decay``; the learning rate is multiplied by ``gamma`` at each epoch of
    ``milestones`` (so ×0.1 at 40 and ×0.01 from 80 with the defaults, the spec's small-scale
    recipe; the official CIFAR-10 asym config uses γ = 0.01). Batches are a seeded shuffle each
    epoch, every example visited once an epoch (ELR's targets move once per visit). ``model``
    default: :func:`make_mlp` from ``seed``. ``augment``: crop-and-flip for images.
    """
    train, test = _check_data(train, "train"), _check_data(test, "test")
    loss = check_choice(loss, ("ce", "gce", "elr"), "loss")
    epochs = check_int(epochs, "epochs", low=1)
    lr = check_float(lr, "lr", low=0.0)
    if lr == 0.0:
        raise InputError("`lr` must be > 0")
    momentum = check_float(momentum, "momentum", low=0.0, high=1.0)
    weight_decay = check_float(weight_decay, "weight_decay", low=0.0)
    batch_size = check_int(batch_size, "batch_size", low=1)
    gamma = check_float(gamma, "gamma", low=0.0, high=1.0)
    eval_every = check_int(eval_every, "eval_every", low=1)
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    ms = [check_int(m, "milestones", low=1) for m in milestones]
    if ms != sorted(ms):
        raise InputError(f"`milestones` must be increasing epochs; got {list(milestones)}")
    n, k = len(train), train.n_classes
    if test.n_classes != k:
        raise InputError(f"`test` has {test.n_classes} classes but `train` has {k}")
    if model is None:
        if train.x.ndim != 2:
            raise InputError("the default MLP needs flat features `train.x` [N, D]; pass `model` for images")
        model = make_mlp(train.x.shape[1], hidden, k, seed=seed)
    dev = pick_device(device)
    model.to(dev).train()
    criterion: nn.Module
    if loss == "ce":
        criterion = nn.CrossEntropyLoss()
    elif loss == "gce":
        criterion = GCELoss(q)
    else:
        criterion = ELRLoss(n, k, lam=lam, beta=beta).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=ms, gamma=gamma)
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = progress(
        range(1, epochs + 1), desc=name or loss, unit="epoch", **({} if show_progress else {"disable": True})
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in bar:
            total, reg = 0.0, 0.0
            order = torch.randperm(n, generator=gen)
            for s in range(0, n, batch_size):
                idx = order[s : s + batch_size]
                xb = train.x[idx]
                if augment:
                    xb = _augment(xb, gen)
                xb, yb = xb.to(dev), train.labels[idx].to(dev)
                logits = logits_of(model(xb), ndim=2)
                out = criterion(idx.to(dev), logits, yb) if loss == "elr" else criterion(logits, yb)
                if not torch.isfinite(out):
                    raise InputError(f"the training loss became {float(out)} at epoch {epoch}; lower `lr`")
                opt.zero_grad(set_to_none=True)
                out.backward()
                opt.step()
                total += float(out.detach()) * len(idx)
                reg += (criterion.last_reg if loss == "elr" else 0.0) * len(idx)
            sched.step()
            if epoch % eval_every == 0 or epoch == epochs:
                p_tr = predict(model, train.x).argmax(1)
                p_te = predict(model, test.x).argmax(1)
                mem = memorization_stats(p_tr, train.labels, train.clean_labels)
                rows.append({"epoch": epoch, "test_acc": float((p_te == test.clean_labels).float().mean()),
                             "fit_clean": mem["fit_clean"], "memorized": mem["memorized"],
                             "train_loss": total / n, "reg": reg / n})  # fmt: skip
    model.eval()
    targets = criterion.targets.detach().cpu().clone() if loss == "elr" else None
    config = {"loss": loss, "q": q, "lam": lam, "beta": beta, "epochs": epochs, "lr": lr, "seed": seed}
    return RunResult(name or loss, model, pd.DataFrame(rows), predict(model, train.x), targets, config,
                     time.perf_counter() - t0)  # fmt: skip


def detect(targets: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ELR's label-error detection (official README): ``flags = argmax t_i ≠ y_i`` and the
    continuous score ``1 − t_i[y_i]`` (higher = more likely mislabelled)."""
    t = torch.as_tensor(targets)
    if t.ndim != 2 or not t.is_floating_point():
        raise InputError(f"`targets` must be a float [N, C] tensor; got shape {tuple(t.shape)}")
    y = torch.as_tensor(labels).long()
    if y.shape != (t.shape[0],) or int(y.min()) < 0 or int(y.max()) >= t.shape[1]:
        raise InputError(f"`labels` must be [{t.shape[0]}] ints in [0, {t.shape[1]})")
    return t.argmax(1) != y, 1.0 - t.gather(1, y[:, None]).squeeze(1)


def loss_scores(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The small-loss baseline on a trained model's probabilities: ``flags = argmax p_i ≠ y_i`` and
    the score ``1 − p_i[y_i]`` (same form as :func:`detect`, on the current prediction)."""
    return detect(probs, labels)


def compare(
    rate: float,
    methods: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    n_runs: int = 3,
    seed: int = 0,
    noise: str = "symmetric",
    **train_kw: Any,
) -> tuple[pd.DataFrame, dict[tuple[str, int], RunResult]]:
    """Every method on the same ``n_runs`` noisy draws of digits (paired by run).

    Run ``r`` uses seed ``10 · seed + r`` for the split, the noise and the initial weights, so
    notebook seeds never share runs (0 → 0, 1, 2; 7 → 70…; 100 → 1000…). Returns one row per
    (method, run): final test accuracy, memorised / fit-clean shares, the best test accuracy over
    training (``peak_acc``, an oracle early stop), and detection figures: ELR's targets for ELR
    runs, the small-loss score of the final model for the others.
    """
    from xattr_nb.worlds.noisy_labels import make_noisy_digits

    methods = dict(METHODS if methods is None else methods)
    if not methods:
        raise InputError("`methods` is empty")
    n_runs = check_int(n_runs, "n_runs", low=1)
    seed = check_int(seed, "seed", low=0, high=2**28)
    rows, runs = [], {}
    for r in progress(range(n_runs), desc=f"runs at {rate:.0%}", unit="run"):
        s = 10 * seed + r
        train, test = make_noisy_digits(rate, noise=noise, seed=s)
        for name, kw in methods.items():
            res = train_noisy(train, test, seed=s, name=name, **{**train_kw, **kw})
            runs[(name, r)] = res
            if res.targets is not None:
                flags, score = detect(res.targets, train.labels)
            else:
                flags, score = loss_scores(res.probs, train.labels)
            det = detection_scores(flags, train.flipped, score)
            rows.append({"method": name, "run": r, "rate": rate, **res.final,
                         "peak_acc": float(res.history["test_acc"].max()),
                         "precision": det["precision"], "recall": det["recall"], "auroc": det["auroc"],
                         "wall_s": res.wall_s})  # fmt: skip
    return pd.DataFrame(rows), runs


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over runs per method (rows in the order the methods first appear)."""
    order = list(dict.fromkeys(table["method"]))
    return table.drop(columns=["run"]).groupby("method").mean().loc[order]


def explain(
    train: NoisyLabelData, test: NoisyLabelData, *, lam: float = 3.0, beta: float = 0.7, **train_kw: Any
) -> dict[str, Any]:
    """ELR end to end: train with :class:`~xattr_nb.training.ELRLoss` and detect label errors.

    Returns ``{"run": RunResult, "flags": bool [N], "score": [N], "detection": dict}`` (the
    detection scored against ``train.flipped``, the truly changed labels).
    """
    res = train_noisy(train, test, loss="elr", lam=lam, beta=beta, name="ELR", **train_kw)
    flags, score = detect(res.targets, train.labels)
    det = detection_scores(flags, train.flipped, score) if bool(train.flipped.any()) else {}
    return {"run": res, "flags": flags, "score": score, "detection": det}


# --------------------------------------------------------------------------------------------
# Paper scale: CIFAR from image folders, ResNet-34
# --------------------------------------------------------------------------------------------


def resnet(n_classes: int, *, depths: Sequence[int] = (3, 4, 6, 3), widths: Sequence[int] = (64, 128, 256, 512),
           embedding: int = 64) -> nn.Module:  # fmt: skip
    """A ResNet from ``transformers.ResNetConfig`` (basic blocks; the defaults are ResNet-34),
    randomly initialised, trained from scratch as in the paper. (HF's stem is ImageNet's 7×7
    conv + max-pool, not the CIFAR variant's 3×3 stem: on 32×32 images it is coarser.)"""
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(num_channels=3, embedding_size=check_int(embedding, "embedding", low=1),
                       hidden_sizes=[check_int(w, "widths", low=1) for w in widths],
                       depths=[check_int(d, "depths", low=1) for d in depths], layer_type="basic",
                       num_labels=check_int(n_classes, "n_classes", low=2))  # fmt: skip
    return ResNetForImageClassification(cfg)


def load_full(
    data_dir: str,
    rate: float,
    *,
    noise: str = "symmetric",
    size: int = 32,
    per_class: int | None = None,
    seed: int = 0,
    **resnet_kw: Any,
) -> tuple[NoisyLabelData, NoisyLabelData, nn.Module]:
    """The paper's setting: ``data_dir/train/<class>/*.png`` and ``data_dir/test/<class>/*.png``
    (CIFAR-10 or -100 exported as image folders), noise on the training labels, a ResNet.

    Images are normalised with the training mean and std per channel. Returns ``(train, test,
    model)`` for :func:`train_noisy` with ``augment=True`` and the paper's config (150 epochs,
    λ = 3, β = 0.7 for CIFAR-10 symmetric; see the notebook's "Going further").
    """
    from pathlib import Path

    from xattr_nb.worlds.folders import load_image_folder
    from xattr_nb.worlds.noisy_labels import noisy_split

    root = Path(data_dir).expanduser()
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise InputError(f"`data_dir` must hold train/ and test/ class folders; got {str(data_dir)!r}")
    x_tr, y_tr, names = load_image_folder(root / "train", size=size, per_class=per_class, seed=seed)
    x_te, y_te, _ = load_image_folder(root / "test", size=size, classes=names, seed=seed)
    mu, sd = x_tr.mean((0, 2, 3), keepdim=True), x_tr.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    train, test = noisy_split((x_tr - mu) / sd, y_tr, rate, noise=noise, n_classes=len(names),
                              test=((x_te - mu) / sd, y_te), seed=seed)  # fmt: skip
    return train, test, resnet(len(names), **resnet_kw)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def plot_early_learning(runs: Mapping[str, RunResult], *, title: str | None = None):
    """One panel per run: on the corrupted training examples, the share predicted as the true
    class (early learning) and as the wrong label (memorisation), with test accuracy, per epoch."""
    if not runs:
        raise InputError("`runs` is empty")
    with plots.style():
        fig = plots.figure(3.4 * len(runs), 2.9)
        axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)[0]
        for ax, (name, res) in zip(axes, runs.items(), strict=True):
            h = res.history
            ax.plot(h["epoch"], h["fit_clean"], label="noisy examples predicted as TRUE class", color="tab:green")
            ax.plot(h["epoch"], h["memorized"], label="… predicted as their WRONG label", color="tab:red")
            ax.plot(h["epoch"], h["test_acc"], label="test accuracy", color="black", ls="--", lw=1)
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.set_ylim(-0.02, 1.02)
        axes[0].set_ylabel("fraction")
        axes[0].legend(fontsize=7, loc="center right")
        if title:
            fig.suptitle(title)
    return plots.show(fig)


def plot_accuracy(table: pd.DataFrame, *, metric: str = "test_acc", title: str | None = None):
    """Grouped bars: mean ``metric`` per method (colour) and noise rate (group), runs as dots."""
    import seaborn as sns

    rates = sorted(table["rate"].unique())
    names = list(dict.fromkeys(table["method"]))
    colors = sns.color_palette("deep", len(names))
    with plots.style():
        fig = plots.figure(1.2 + 1.6 * len(rates), 3.0)
        ax = fig.add_subplot()
        w = 0.8 / len(names)
        for j, name in enumerate(names):
            for i, rate in enumerate(rates):
                v = table[(table["method"] == name) & (table["rate"] == rate)][metric].to_numpy()
                if len(v) == 0:  # a method not trained at this rate
                    continue
                x = i + (j - (len(names) - 1) / 2) * w
                ax.bar(x, v.mean(), w, color=colors[j], label=name if i == 0 else None)
                ax.scatter(np.full(len(v), x), v, s=6, color="black", zorder=3)
        ax.set_xticks(range(len(rates)), [f"{r:.0%} symmetric" for r in rates])
        ax.set_ylabel(metric.replace("_", " "))
        ax.legend(fontsize=7, ncol=2)
        if title:
            ax.set_title(title)
    return plots.show(fig)


def plot_detection(scores: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *, title: str | None = None):
    """Histograms of a detection score for clean vs truly mislabelled examples, one panel per
    entry ``name -> (score [N], truly_noisy [N] bool)``."""
    if not scores:
        raise InputError("`scores` is empty")
    with plots.style():
        fig = plots.figure(3.2 * len(scores), 2.6)
        axes = fig.subplots(1, len(scores), squeeze=False)[0]
        bins = np.linspace(0, 1, 26)
        for ax, (name, (s, noisy)) in zip(axes, scores.items(), strict=True):
            s, noisy = np.asarray(s, dtype=float), np.asarray(noisy, dtype=bool)
            ax.hist(s[~noisy], bins=bins, alpha=0.6, label="clean label", color="tab:blue")
            ax.hist(s[noisy], bins=bins, alpha=0.6, label="wrong label", color="tab:red")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("score (higher = flagged)")
        axes[0].set_ylabel("training examples")
        axes[0].legend(fontsize=7)
        if title:
            fig.suptitle(title)
    return plots.show(fig)

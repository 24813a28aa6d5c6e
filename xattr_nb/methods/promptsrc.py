"""PromptSRC (paper 20): self-regulating prompts on a frozen CLIP (spec: ``../shared/papers/20_promptsrc.md``).

Khattak et al., *Self-regulating Prompts: Foundational Model Adaptation without Forgetting*, ICCV 2023
(code ``muzairkhattak/PromptSRC``, read for the spec, not copied). The steps, each small and tested:

- :class:`PromptLearner`: learnable context tokens for a frozen CLIP through the prompt hooks of
  :mod:`xattr_nb.models.clip` (text: inserted after ``[SOS]`` at layer 0, initialised from the words
  of ``"a photo of a"``, replaced at each deeper layer < J; vision: appended to the patch tokens,
  replaced likewise). :func:`arm_config` gives the arms: CoOp (text context at layer 0 only, CE),
  IVLP (deep independent V+L prompts, CE), PromptSRC and its ablations.
- :func:`text_targets`: the frozen text targets; with textual diversity the mean over many
  caption templates (:func:`diverse_prompts`), without it one template.
- :func:`promptsrc_loss`: CE + λ1·L1(image features) + λ2·L1(text features) + KL(zero-shot ‖ prompted)
  summed and divided by B·C (the official normalisation: per-sample KL ÷ C).
- :func:`gaussian_epoch_weights`, :class:`GPAAverager`: Gaussian-weighted prompt aggregation over
  epochs, on the prompt parameters only.
- :func:`train_prompts`, :func:`evaluate_base_novel`, :func:`harmonic_mean`, :func:`compare` (every
  arm on the same few-shot draw and test sets), :func:`explain` (train one arm, evaluate it).
- :func:`load_full`: ``scale="full"``: ``openai/clip-vit-base-patch16`` through
  :func:`xattr_nb.models.clip.load_clip` and an ImageNet-style folder read by
  :func:`xattr_nb.worlds.folders.load_image_folder`, base / novel = the first / second half of its classes.

Written by hand because no library offers it: the prompt learner over our hooks, the loss, the GPA
weights and averager (a few lines each; the spec's algorithm, not the official code).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.models.clip import encode_image, encode_text, freeze, tokenize, zeroshot_weights
from xattr_nb.models.io import check_model, device_of
from xattr_nb.runtime import progress

__all__ = [
    "ARMS",
    "GPAAverager",
    "PromptLearner",
    "PromptRun",
    "Task",
    "arm_config",
    "compare",
    "compare_runs",
    "diverse_prompts",
    "evaluate_base_novel",
    "explain",
    "gaussian_epoch_weights",
    "harmonic_mean",
    "load_full",
    "make_task",
    "paired_means",
    "plot_base_novel",
    "plot_training",
    "promptsrc_loss",
    "text_targets",
    "train_prompts",
]

#: The arms, in the order a comparison shows them.
ARMS = ("coop", "ivlp", "promptsrc", "no_scl", "no_gpa", "no_diversity")


def arm_config(arm: str, depth: int = 3) -> dict[str, Any]:
    """Settings of one arm: prompt depths (text, vision), and which PromptSRC parts are on.

    - ``coop``: text context at layer 0 only, CE;
    - ``ivlp``: deep independent V+L prompts at layers < ``depth``, CE;
    - ``promptsrc``: IVLP + L_SCL + GPA + textual diversity;
    - ``no_scl`` / ``no_gpa`` / ``no_diversity``: PromptSRC without that part.
    """
    check_choice(arm, ARMS, "arm")
    depth = check_int(depth, "depth", low=1)
    if arm == "coop":
        return {"text_depth": 1, "vis_depth": 0, "scl": False, "gpa": False, "diversity": False}
    if arm == "ivlp":
        return {"text_depth": depth, "vis_depth": depth, "scl": False, "gpa": False, "diversity": False}
    cfg = {"text_depth": depth, "vis_depth": depth, "scl": True, "gpa": True, "diversity": True}
    if arm != "promptsrc":
        cfg[arm[3:]] = False
    return cfg


# ----------------------------------------------------------------------------------------------- small named steps


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)`` of two accuracies in [0, 1] (0 when both are 0): the base-to-novel HM."""
    a = check_float(a, "a", low=0.0)
    b = check_float(b, "b", low=0.0)
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def gaussian_epoch_weights(n_epochs: int, mean: float, std: float) -> np.ndarray:
    """GPA's epoch weights: ``w_e ∝ N(e; mean, std²)`` for ``e = 1..n_epochs``, normalised to sum 1."""
    n_epochs = check_int(n_epochs, "n_epochs", low=1)
    mean = check_float(mean, "mean")
    std = check_float(std, "std", low=1e-6)
    e = np.arange(1, n_epochs + 1, dtype=np.float64)
    logw = -0.5 * ((e - mean) / std) ** 2
    w = np.exp(logw - logw.max())
    return w / w.sum()


class GPAAverager:
    """Gaussian-weighted prompt aggregation: after epoch ``e`` (1-based) call ``update(params, e)``;
    ``result()`` is ``Σ_e w_e · P_e`` over the epochs seen (the weights of all ``n_epochs`` sum to 1)."""

    def __init__(self, n_epochs: int, mean: float, std: float) -> None:
        self.weights = gaussian_epoch_weights(n_epochs, mean, std)
        self.n_epochs = len(self.weights)
        self._sum: dict[str, torch.Tensor] = {}
        self.seen: list[int] = []

    def update(self, params: Mapping[str, torch.Tensor], epoch: int) -> None:
        epoch = check_int(epoch, "epoch", low=1, high=self.n_epochs)
        if epoch in self.seen:
            raise InputError(f"`epoch` {epoch} was already added")
        if not isinstance(params, Mapping) or not params:
            raise InputError("`params` must be a non-empty dict {name: tensor}")
        if self._sum and set(params) != set(self._sum):
            raise InputError(f"`params` must hold the same names every epoch; got {sorted(params)}")
        w = float(self.weights[epoch - 1])
        for k, v in params.items():
            v = check_tensor(v, f"params[{k!r}]").detach()
            self._sum[k] = self._sum.get(k, torch.zeros_like(v)) + w * v
        self.seen.append(epoch)

    def result(self) -> dict[str, torch.Tensor]:
        if not self._sum:
            raise InputError("GPAAverager.result() before any update")
        return {k: v.clone() for k, v in self._sum.items()}


def promptsrc_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    img_p: torch.Tensor,
    img_zs: torch.Tensor,
    txt_p: torch.Tensor,
    txt_zs: torch.Tensor,
    zs_logits: torch.Tensor,
    *,
    lam_img: float = 10.0,
    lam_txt: float = 25.0,
    scl: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PromptSRC's loss and its parts.

    ``L = CE(logits, y) + lam_img · mean|img_p − img_zs| + lam_txt · mean|txt_p − txt_zs|
    + KL(softmax(zs_logits) ‖ softmax(logits)) / (B·C)`` (KL summed over batch and classes, then
    divided by ``B·C``: the official normalisation). ``scl=False`` keeps CE alone (IVLP, CoOp).
    """
    z = check_tensor(logits, "logits", ndim=2, layout="[B, C]")
    b, c = z.shape
    y = check_tensor(y, "y", ndim=1, dtype="int", layout="[B]")
    if len(y) != b:
        raise InputError(f"`y` must have {b} labels (one per row of `logits`); got {len(y)}")
    ce = F.cross_entropy(z, y)
    parts = {"ce": float(ce.detach())}
    if not scl:
        return ce, parts
    z0 = check_tensor(zs_logits, "zs_logits", ndim=2, layout="[B, C]")
    if z0.shape != z.shape:
        raise InputError(f"`zs_logits` must have the shape of `logits` {tuple(z.shape)}; got {tuple(z0.shape)}")
    for name, p, q in (("img", img_p, img_zs), ("txt", txt_p, txt_zs)):
        check_tensor(p, f"{name}_p", ndim=2)
        if q.shape != p.shape:
            raise InputError(f"`{name}_zs` must have the shape of `{name}_p` {tuple(p.shape)}; got {tuple(q.shape)}")
    l_img = lam_img * F.l1_loss(img_p, img_zs.detach())
    l_txt = lam_txt * F.l1_loss(txt_p, txt_zs.detach())
    kl = F.kl_div(F.log_softmax(z, 1), F.log_softmax(z0.detach(), 1), reduction="sum", log_target=True) / (b * c)
    parts.update({k: float(v.detach()) for k, v in (("scl_img", l_img), ("scl_txt", l_txt), ("scl_kl", kl))})
    return ce + l_img + l_txt + kl, parts


def diverse_prompts(
    templates: Sequence[str], *, fills: Mapping[str, Sequence[str]], n_fill: int = 4, seed: int = 0, slot: str = "shape"
) -> list[str]:
    """Class templates (``{slot}`` left in) from caption templates: every other slot filled with
    ``n_fill`` seeded draws from ``fills`` (e.g. colours, sizes), so that a caption template like
    ``"a {color} {shape} on a {bg} background"`` becomes several class prompts. Templates with no
    other slot are kept once. The textual-diversity bank of the small world."""
    import re

    n_fill = check_int(n_fill, "n_fill", low=1)
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    out: list[str] = []
    for t in templates:
        if "{" + slot + "}" not in t:
            raise InputError(f"template {t!r} has no {{{slot}}} slot")
        names = [s for s in re.findall(r"\{(\w+)\}", t) if s != slot]
        missing = [s for s in names if s not in fills or not fills[s]]
        if missing:
            raise InputError(f"`fills` must give values for {missing} (template {t!r})")
        if not names:
            out.append(t)
            continue
        for _ in range(n_fill):
            vals = {s: str(fills[s][rng.integers(len(fills[s]))]) for s in names}
            filled = t
            for s, v in vals.items():
                filled = filled.replace("{" + s + "}", v)
            out.append(filled)
    return list(dict.fromkeys(out))


@torch.no_grad()
def text_targets(model: Any, tokenizer: Any, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Frozen text targets ``g̃`` ``[C, E]``: the mean of the frozen CLIP's unit text features over
    ``templates`` (``{shape}`` slot), renormalised (one template: no textual diversity)."""
    return zeroshot_weights(model, tokenizer, list(classnames), list(templates))


# ----------------------------------------------------------------------------------------------- the prompt learner


class PromptLearner(nn.Module):
    """Learnable prompt tokens for a frozen CLIP: ``text[l]`` ``[n_ctx, D_text]`` for ``l < text_depth``,
    ``vision[l]`` ``[n_ctx, D_vision]`` for ``l < vis_depth``.

    Text layer 0 is CoOp's context, initialised from the word embeddings of ``init`` when it has
    exactly ``n_ctx`` words; every other token starts from N(0, 0.02²) (the official init).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        n_ctx: int = 4,
        text_depth: int = 3,
        vis_depth: int = 3,
        init: str = "a photo of a",
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_model(model)
        n_ctx = check_int(n_ctx, "n_ctx", low=1)
        nt = len(model.text_model.encoder.layers)
        nv = len(model.vision_model.encoder.layers)
        text_depth = check_int(text_depth, "text_depth", low=1)
        vis_depth = check_int(vis_depth, "vis_depth", low=0)
        self.text_depth, self.vis_depth, self.n_ctx = min(text_depth, nt), min(vis_depth, nv), n_ctx
        dt, dv = model.text_model.config.hidden_size, model.vision_model.config.hidden_size
        g = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
        dev = device_of(model)
        self.text = nn.ParameterDict(
            {str(i): nn.Parameter((0.02 * torch.randn(n_ctx, dt, generator=g)).to(dev)) for i in range(self.text_depth)}
        )
        self.vision = nn.ParameterDict(
            {str(i): nn.Parameter((0.02 * torch.randn(n_ctx, dv, generator=g)).to(dev)) for i in range(self.vis_depth)}
        )
        if init:
            ids, _ = tokenize(tokenizer, [init], device=dev)
            words = ids[0, 1 : 1 + n_ctx + 1]
            special = set(getattr(tokenizer, "all_special_ids", []))
            words = torch.as_tensor([int(t) for t in words if int(t) not in special], device=dev)
            if len(words) == n_ctx:
                with torch.no_grad():
                    self.text["0"].copy_(model.text_model.embeddings.token_embedding(words))

    def text_prompts(self) -> dict[int, torch.Tensor]:
        return {int(k): v for k, v in self.text.items()}

    def vision_prompts(self) -> dict[int, torch.Tensor]:
        return {int(k): v for k, v in self.vision.items()}

    def prompt_state(self) -> dict[str, torch.Tensor]:
        """The prompt parameters only (what GPA averages)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def encode_text(self, model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return encode_text(model, ids, mask, prompts=self.text_prompts())

    def encode_image(self, model: Any, images: torch.Tensor) -> torch.Tensor:
        return encode_image(model, images, prompts=self.vision_prompts() or None)


# ----------------------------------------------------------------------------------------------- data, training


@dataclass
class Task:
    """A base-to-novel task: few-shot training images of the base classes, test images of each split."""

    base: tuple[str, ...]
    novel: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    base_x: torch.Tensor
    base_y: torch.Tensor
    novel_x: torch.Tensor
    novel_y: torch.Tensor
    templates: tuple[str, ...]  # single-template zero-shot / no diversity: templates[:1]
    diverse: tuple[str, ...]  # the textual-diversity bank


def make_task(
    *,
    shots: int = 16,
    n_test: int = 400,
    seed: int = 0,
    n_fill: int = 4,
    domain: Mapping[str, Sequence[str]] | None = None,
) -> Task:
    """The small-world task: ShapesWorld base / novel shapes (:mod:`xattr_nb.worlds.captions`) in the
    shifted downstream domain, ``shots`` images per base class, ``n_test`` test images per split, and
    the diversity bank: all 12 caption templates, other slots filled from the world's attribute values."""
    from xattr_nb.worlds import captions as W

    shots = check_int(shots, "shots", low=1)
    n_test = check_int(n_test, "n_test", low=1)
    seed = check_int(seed, "seed", low=0)
    dom = dict(W.DOWNSTREAM_DOMAIN if domain is None else domain)
    tr = W.fewshot(W.BASE_CLASSES, shots, domain=dom, seed=1000 * seed + 1)
    bt = W.labelled(W.BASE_CLASSES, n_test, domain=dom, seed=1000 * seed + 2)
    nt = W.labelled(W.NOVEL_CLASSES, n_test, domain=dom, seed=1000 * seed + 3)
    fills = {"color": W.COLORS, "size": W.SIZES, "style": W.STYLES, "bg": W.BACKGROUNDS, "pos": W.POSITIONS}
    return Task(
        W.BASE_CLASSES,
        W.NOVEL_CLASSES,
        tr.images,
        tr.labels,
        bt.images,
        bt.labels,
        nt.images,
        nt.labels,
        tuple(W.CLASS_TEMPLATES),
        tuple(diverse_prompts(W.TEMPLATES, fills=fills, n_fill=n_fill, seed=0)),
    )


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to ``pad`` pixels (reflect-padded crop): the
    small-image stand-in for random-resized-crop + flip. One view per image, used by both towers."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    if pad <= 0:
        return x
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    return torch.stack([xp[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


@dataclass
class PromptRun:
    """One trained arm: its prompt learner (GPA-aggregated where on), settings and per-epoch log."""

    arm: str
    learner: PromptLearner | None
    config: dict[str, Any]
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    last_state: dict[str, torch.Tensor] | None = None  # the prompts after the last epoch (before GPA)


def _lr_at(epoch: int, lr: float, epochs: int, warmup_lr: float) -> float:
    """Epoch 0: constant warm-up ``warmup_lr``; then cosine from ``lr`` (the official Dassl schedule)."""
    if epoch == 0:
        return warmup_lr
    return 0.5 * lr * (1 + math.cos(math.pi * epoch / epochs))


def train_prompts(
    model: Any,
    tokenizer: Any,
    task: Task,
    *,
    arm: str = "promptsrc",
    depth: int = 3,
    n_ctx: int = 4,
    epochs: int = 20,
    batch_size: int = 16,
    lr: float = 0.002,
    warmup_lr: float = 1e-5,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    lam_img: float = 3.5,
    lam_txt: float = 9.0,
    gpa_mean: float = 15.0,
    gpa_std: float = 1.0,
    augment_images: bool = True,
    seed: int = 0,
    show_progress: bool = False,
) -> PromptRun:
    """Train one arm's prompts on ``task``'s few-shot base images; the CLIP stays frozen.

    SGD with momentum, a one-epoch constant warm-up then cosine; every arm sees the same batches
    and augmentations for a given ``seed``. PromptSRC adds the L_SCL terms against the frozen CLIP
    (image target on the same augmented view; text target the template mean with ``diversity``, the
    first template without), and GPA loads ``Σ w_e P_e`` into the learner at the end.
    """
    cfg = arm_config(arm, depth)
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    lr = check_float(lr, "lr", low=0.0)
    seed = check_int(seed, "seed", low=0)
    freeze(model)
    model.eval()
    dev = device_of(model)
    learner = PromptLearner(
        model, tokenizer, n_ctx=n_ctx, text_depth=cfg["text_depth"], vis_depth=cfg["vis_depth"], seed=seed
    )
    ids, mask = tokenize(tokenizer, list(task.base), device=dev)
    targets = task.diverse if cfg["diversity"] else task.templates[:1]
    g_zs = text_targets(model, tokenizer, task.base, targets) if cfg["scl"] else None
    scale = model.logit_scale.exp().detach()
    opt = torch.optim.SGD(learner.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    gpa = GPAAverager(epochs, gpa_mean, gpa_std) if cfg["gpa"] else None
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = task.train_x, task.train_y
    n = len(x_all)
    rows = []
    for epoch in progress(range(epochs), desc=f"train {arm}", disable=not show_progress):
        for grp in opt.param_groups:
            grp["lr"] = _lr_at(epoch, lr, epochs, warmup_lr)
        order = torch.randperm(n, generator=gen)
        sums: dict[str, float] = {}
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x = x_all[idx]
            x = augment(x, gen) if augment_images else x
            x, y = x.to(dev), y_all[idx].to(dev)
            fp = learner.encode_image(model, x)
            gp = learner.encode_text(model, ids, mask)
            zp = scale * fp @ gp.T
            if cfg["scl"]:
                with torch.no_grad():
                    f0 = encode_image(model, x)
                    z0 = scale * f0 @ g_zs.T
                loss, parts = promptsrc_loss(zp, y, fp, f0, gp, g_zs, z0, lam_img=lam_img, lam_txt=lam_txt, scl=True)
            else:
                loss, parts = promptsrc_loss(zp, y, fp, fp, gp, gp, zp, scl=False)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx) / n
        if gpa is not None:
            gpa.update(learner.prompt_state(), epoch + 1)
        rows.append({"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], **sums})
    last = learner.prompt_state()
    if gpa is not None:
        learner.load_state_dict(gpa.result())
    return PromptRun(arm, learner, {**cfg, "lr": lr, "epochs": epochs}, pd.DataFrame(rows), last)


# ----------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def accuracy(
    model: Any,
    tokenizer: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    classnames: Sequence[str],
    *,
    learner: PromptLearner | None = None,
    templates: Sequence[str] = ("a photo of a {shape}",),
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy among ``classnames``: with a ``learner`` its prompted encoders (text = learnt
    context + class name), else zero-shot with the frozen CLIP and the ``templates`` ensemble."""
    x = check_tensor(images, "images", ndim=4)
    y = check_tensor(labels, "labels", ndim=1, dtype="int")
    if len(x) != len(y):
        raise InputError(f"`labels` must have one entry per image ({len(x)}); got {len(y)}")
    dev = device_of(model)
    if learner is None:
        w = zeroshot_weights(model, tokenizer, list(classnames), list(templates))
        enc = lambda b: encode_image(model, b)  # noqa: E731
    else:
        ids, mask = tokenize(tokenizer, list(classnames), device=dev)
        w = learner.encode_text(model, ids, mask)
        enc = lambda b: learner.encode_image(model, b)  # noqa: E731
    preds = torch.cat(
        [(enc(x[i : i + batch_size].to(dev)) @ w.T).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    )
    return float((preds == y.cpu()).float().mean())


def evaluate_base_novel(
    model: Any,
    tokenizer: Any,
    task: Task,
    *,
    learner: PromptLearner | None = None,
    templates: Sequence[str] | None = None,
) -> dict[str, float]:
    """``{"base", "novel", "hm"}``: base accuracy among the base classes, novel among the novel ones
    (the paper's protocol), and their harmonic mean."""
    tm = task.templates[:1] if templates is None else templates
    b = accuracy(model, tokenizer, task.base_x, task.base_y, task.base, learner=learner, templates=tm)
    n = accuracy(model, tokenizer, task.novel_x, task.novel_y, task.novel, learner=learner, templates=tm)
    return {"base": b, "novel": n, "hm": harmonic_mean(b, n)}


def compare(
    model: Any,
    tokenizer: Any,
    task: Task,
    *,
    arms: Sequence[str] = ("coop", "ivlp", "promptsrc"),
    seed: int = 0,
    show_progress: bool = False,
    **train_kw: Any,
) -> tuple[pd.DataFrame, dict[str, PromptRun]]:
    """Every arm on the same task (same few-shot draw, same test sets, same batches for ``seed``),
    plus three zero-shot rows: one template (``zs``), the class-template ensemble (``zs_ens``) and
    the diversity bank (``zs_div``). Returns a table (one row per arm) and the runs."""
    for a in arms:
        check_choice(a, ARMS, "arms")
    rows = {
        "zs": evaluate_base_novel(model, tokenizer, task, templates=task.templates[:1]),
        "zs_ens": evaluate_base_novel(model, tokenizer, task, templates=task.templates),
        "zs_div": evaluate_base_novel(model, tokenizer, task, templates=task.diverse),
    }
    runs = {}
    for a in arms:
        run = train_prompts(model, tokenizer, task, arm=a, seed=seed, show_progress=show_progress, **train_kw)
        runs[a] = run
        rows[a] = evaluate_base_novel(model, tokenizer, task, learner=run.learner)
    table = pd.DataFrame(rows).T
    table.index.name = "arm"
    return table, runs


def compare_runs(
    model: Any,
    tokenizer: Any,
    *,
    n_runs: int = 3,
    seed: int = 0,
    arms: Sequence[str] = ("coop", "ivlp", "promptsrc"),
    task_kw: Mapping[str, Any] | None = None,
    show_progress: bool = False,
    **train_kw: Any,
) -> tuple[pd.DataFrame, dict[tuple[str, int], PromptRun]]:
    """:func:`compare` over ``n_runs`` tasks (run ``r``: few-shot draw, test sets, init and batches
    at seed ``10·seed + r``), every arm on the same task within a run: a long table with columns
    ``run, arm, base, novel, hm`` (paired by ``run``) and the runs keyed by ``(arm, run)``."""
    n_runs = check_int(n_runs, "n_runs", low=1)
    seed = check_int(seed, "seed", low=0)
    rows, runs = [], {}
    for r in progress(range(n_runs), desc="runs", disable=not show_progress):
        s = 10 * seed + r
        task = make_task(seed=s, **dict(task_kw or {}))
        table, rr = compare(model, tokenizer, task, arms=arms, seed=s, **train_kw)
        runs.update({(a, r): v for a, v in rr.items()})
        rows += [{"run": r, "arm": a, **table.loc[a].to_dict()} for a in table.index]
    return pd.DataFrame(rows), runs


def paired_means(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ``base / novel / hm`` per arm over the runs of :func:`compare_runs`, plus ``zs_best``:
    per run the zero-shot prompt (single, ensemble, diversity bank) with the best HM on the test set."""
    need = {"run", "arm", "base", "novel", "hm"}
    if not isinstance(table, pd.DataFrame) or need - set(table.columns):
        raise InputError(f"`table` must be compare_runs' table with columns {sorted(need)}")
    zs = table[table["arm"].isin(["zs", "zs_ens", "zs_div"])]
    best = zs.loc[zs.groupby("run")["hm"].idxmax()].assign(arm="zs_best")
    full = pd.concat([table, best], ignore_index=True)
    return full.groupby("arm", sort=False)[["base", "novel", "hm"]].mean()


def plot_base_novel(table: pd.DataFrame, *, title: str | None = None):
    """Three panels (base, novel, HM accuracy): one bar per arm (mean over runs), runs as dots."""
    from xattr_nb import plots

    fig = plots.figure(11, 3.0)
    arms = list(dict.fromkeys(table["arm"]))
    for j, col in enumerate(("base", "novel", "hm")):
        ax = fig.add_subplot(1, 3, j + 1)
        means = [table.loc[table["arm"] == a, col].mean() for a in arms]
        colours = ["0.6" if a.startswith("zs") else ("C3" if a == "promptsrc" else "C0") for a in arms]
        ax.bar(range(len(arms)), means, color=colours)
        for i, a in enumerate(arms):
            v = table.loc[table["arm"] == a, col].to_numpy()
            ax.plot(np.full(len(v), i), v, "k.", ms=3)
        ax.axhline(means[0], color="0.3", lw=0.8, ls="--")
        ax.set_xticks(range(len(arms)), arms, rotation=45, ha="right")
        ax.set_title({"base": "base accuracy (8-way)", "novel": "novel accuracy (8-way)", "hm": "harmonic mean"}[col])
        lo = max(0.0, min(table[col]) - 0.05)
        ax.set_ylim(lo, max(table[col]) + 0.03)
    if title:
        fig.suptitle(title)
    return plots.show(fig)


def plot_training(runs: Mapping[str, PromptRun], weights: np.ndarray | None = None, *, title: str | None = None):
    """Per-epoch training loss parts of some arms (CE for all, L_SCL parts for PromptSRC), and GPA's
    epoch weights when given."""
    from xattr_nb import plots

    n = 2 if weights is not None else 1
    fig = plots.figure(5.5 * n, 3.0)
    ax = fig.add_subplot(1, n, 1)
    for name, run in runs.items():
        h = run.history
        ax.plot(h["epoch"], h["ce"], label=f"{name}: CE")
        for part in ("scl_img", "scl_txt", "scl_kl"):
            if part in h:
                ax.plot(h["epoch"], h[part], ls=":", label=f"{name}: {part}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (epoch mean)")
    ax.legend(fontsize=6)
    if weights is not None:
        ax2 = fig.add_subplot(1, n, 2)
        ax2.bar(np.arange(1, len(weights) + 1), weights, color="C3")
        ax2.set_xlabel("epoch e")
        ax2.set_ylabel("GPA weight w_e")
        ax2.set_title("Gaussian prompt aggregation")
    if title:
        fig.suptitle(title)
    return plots.show(fig)


def explain(
    model: Any, tokenizer: Any, task: Task, *, arm: str = "promptsrc", seed: int = 0, **train_kw: Any
) -> PromptRun:
    """PromptSRC end to end (a training method: no attribution): train ``arm``'s prompts on the
    task, then evaluate base / novel / HM; the scores are in ``run.config["eval"]``."""
    run = train_prompts(model, tokenizer, task, arm=arm, seed=seed, **train_kw)
    run.config["eval"] = evaluate_base_novel(model, tokenizer, task, learner=run.learner)
    return run


# ----------------------------------------------------------------------------------------------- full scale


def load_full(
    data_dir: str | os.PathLike,
    *,
    model: str | os.PathLike = "openai/clip-vit-base-patch16",
    shots: int = 16,
    per_class_test: int | None = None,
    templates: Sequence[str] = ("a photo of a {shape}.",),
    diverse: Sequence[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[Any, Any, Task]:
    """``(model, tokenizer, task)`` at paper scale: the CLIP ``model`` via
    :func:`xattr_nb.models.clip.load_clip` and ``data_dir/train/<class>/*`` + ``data_dir/test/<class>/*``
    via :func:`xattr_nb.worlds.folders.load_image_folder`, at the model's image size. Base = the
    first half of the sorted classes (``ceil(C/2)``, CoOp's subsample rule), novel = the rest;
    ``shots`` seeded training images per base class. Templates use the ``{shape}`` slot for the class."""
    from pathlib import Path

    from xattr_nb.models.clip import load_clip
    from xattr_nb.worlds.folders import load_image_folder

    root = Path(os.fspath(data_dir)).expanduser()
    for sub in ("train", "test"):
        if not (root / sub).is_dir():
            raise InputError(f"`data_dir` must hold train/<class>/ and test/<class>/ folders; {root / sub} is missing")
    shots = check_int(shots, "shots", low=1)
    m, tok = load_clip("full", full=model, device=device)
    # the openai configs carry the legacy eos_token_id 2; pool at the tokenizer's real end token
    eos = getattr(tok, "eos_token_id", None)
    if eos is not None and m.text_model.config.eos_token_id != eos:
        m.text_model.config.eos_token_id = eos
    size = m.config.vision_config.image_size
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    if len(classes) < 2:
        raise InputError(f"`data_dir` must hold at least 2 class folders under train/; found {classes}")
    n_base = math.ceil(len(classes) / 2)
    base, novel = tuple(classes[:n_base]), tuple(classes[n_base:])
    tx, ty, _ = load_image_folder(root / "train", size=size, per_class=shots, classes=base, seed=seed)
    bx, by, _ = load_image_folder(root / "test", size=size, per_class=per_class_test, classes=base, seed=seed)
    nx, ny, _ = load_image_folder(root / "test", size=size, per_class=per_class_test, classes=novel, seed=seed)
    task = Task(base, novel, tx, ty, bx, by, nx, ny, tuple(templates), tuple(diverse or templates))
    return m, tok, task

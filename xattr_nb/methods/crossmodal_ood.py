"""Cross-modal alignment (CMA) for out-of-distribution detection (Kim et al., CVPR 2025), on TinyCLIP.

Multi-modal fine-tuning (FLYP: the CLIP contrastive loss on image / class-prompt pairs, both towers
trained) is a strong base for zero-shot-style OoD scores (MCM, NegLabel), but it leaves a *modality
gap* between the ID image and text embeddings. CMA adds a free-energy term that pulls them together::

    S = s · u vᵀ                                     (B × B, in-batch image u_i / prompt v_j, s = exp(logit_scale))
    L = ½ [CE(S, arange B) + CE(Sᵀ, arange B)]      FLYP (same-class duplicates are negatives, as in the code)
        + λ · ½ [−mean_i logsumexp_j S_ij − mean_j logsumexp_i S_ij]      CMA

The steps (each one tested in ``tests/methods/test_crossmodal_ood.py``):

- :func:`make_data` (ShapesWorld ID-10 / near-OoD-6 / digits / textures) or :func:`load_folder_data`
  (``scale="full"``: ImageNet-style folders) → :class:`OODData`;
- :func:`flyp_loss`, :func:`cma_term`, :func:`flyp_cma_loss` (the loss, from ``utils/train_utils.py``);
- :func:`finetune` (AdamW, cosine schedule with warm-up via ``transformers``; logit scale trained and
  clamped at ln 100 as open_clip does);
- :func:`candidate_pool` (the NegLabel candidate phrases of the captions world) and
  :func:`xattr_nb.metrics.mine_negatives` (NegMining with the fine-tuned text encoder);
- :func:`evaluate` (ID accuracy, modality gap, own-class cosine, MCM / NegLabel AUROC and FPR95 per
  OoD set); :func:`explain` = fine-tune with CMA then evaluate, the entry point; :func:`compare` runs
  the three arms (zero-shot, FLYP, FLYP + CMA) on the same data and batch order.

Written by hand (no library offers them): the two loss terms (a few lines of torch over the logit
matrix) and the candidate pool; scores and metrics are :mod:`xattr_nb.metrics.ood` (scikit-learn
underneath), models are Hugging Face ``CLIPModel`` through :func:`xattr_nb.models.clip.load_clip`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from xattr_nb.checks import InputError, check_float, check_int, check_tensor
from xattr_nb.metrics.ood import auroc, fpr_at_tpr, mcm_score, mine_negatives, modality_gap, neglabel_score
from xattr_nb.models import clip as C
from xattr_nb.models.io import check_model, device_of
from xattr_nb.runtime import progress
from xattr_nb.worlds import captions as W

__all__ = [
    "PROMPT",
    "Evaluation",
    "FineTuned",
    "OODData",
    "candidate_pool",
    "class_features",
    "cma_term",
    "compare",
    "embed_images",
    "evaluate",
    "explain",
    "finetune",
    "flyp_cma_loss",
    "flyp_loss",
    "load_folder_data",
    "make_data",
    "ood_table",
    "plot_embeddings",
    "plot_scores",
]

#: The class prompt of fine-tuning and scoring. The paper's "The nice {}" is not in the captions
#: vocabulary; the world's first class template plays its role (full scale: pass ``template=``).
PROMPT = "a photo of a {shape}"
MAX_LOGIT_SCALE = float(np.log(100.0))


# ----------------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class OODData:
    """ID training / test images with labels over ``classes``, and named OoD test sets (images only)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    ood: dict[str, torch.Tensor]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in ("train", "test"):
            x = check_tensor(getattr(self, f"{name}_images"), f"{name}_images", ndim=4, layout="[N, 3, H, W]")
            y = check_tensor(getattr(self, f"{name}_labels"), f"{name}_labels", ndim=1, dtype="int")
            if len(x) != len(y):
                raise InputError(f"`{name}_images` and `{name}_labels` must have the same length; {len(x)} vs {len(y)}")
            if int(y.min()) < 0 or int(y.max()) >= len(self.classes):
                raise InputError(f"`{name}_labels` must index `classes` (0..{len(self.classes) - 1})")
        if not isinstance(self.ood, Mapping) or not self.ood:
            raise InputError("`ood` must be a non-empty dict {name: images [N, 3, H, W]}")
        for k, v in self.ood.items():
            check_tensor(v, f"ood[{k!r}]", ndim=4, layout="[N, 3, H, W]")


def make_data(
    n_train_per_class: int = 300, n_test: int = 1000, n_ood: int = 600, *, seed: int = 0, size: int = 32
) -> OODData:
    """The spec's small world: ID = the 10 :data:`~xattr_nb.worlds.captions.ID_CLASSES` (every colour,
    style, background), near-OoD = the 6 held-out shapes, far-OoD = coloured digits and textures.
    Training and test images are separate draws (different seeds)."""
    n_train_per_class = check_int(n_train_per_class, "n_train_per_class", low=1)
    n_test, n_ood = check_int(n_test, "n_test", low=1), check_int(n_ood, "n_ood", low=1)
    seed = check_int(seed, "seed", low=0, high=2**31 // 100_000)
    base = 100_000 * seed
    train = W.labelled(W.ID_CLASSES, n_train_per_class * len(W.ID_CLASSES), seed=base + 1, size=size)
    test = W.labelled(W.ID_CLASSES, n_test, seed=base + 2, size=size)
    near = W.labelled(W.NEAR_OOD_CLASSES, n_ood, seed=base + 3, size=size)
    ood = {
        "near": near.images,
        "digits": W.far_ood_digits(n_ood, seed=base + 4, size=size)[0],
        "textures": W.far_ood_textures(n_ood, seed=base + 5, size=size),
    }
    return OODData(train.images, train.labels, test.images, test.labels, ood, tuple(W.ID_CLASSES))


def load_folder_data(
    id_root: str | os.PathLike,
    ood_roots: Mapping[str, str | os.PathLike],
    *,
    size: int = 224,
    per_class: int | None = None,
    ood_per_class: int | None = None,
    seed: int = 0,
) -> OODData:
    """``scale="full"``: ImageNet-style folders. ``id_root/train/<class>/*`` and ``id_root/val/<class>/*``
    (the same class folders; class names = folder names, underscores read as spaces), and each OoD set
    ``ood_roots[name]/<any sub-folder>/*`` (labels ignored), through
    :func:`xattr_nb.worlds.folders.load_image_folder`."""
    from pathlib import Path

    from xattr_nb.worlds.folders import load_image_folder

    root = Path(os.fspath(id_root)).expanduser()
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise InputError(f"`id_root` must hold train/ and val/ class folders; {root / split} is missing")
    if not isinstance(ood_roots, Mapping) or not ood_roots:
        raise InputError("`ood_roots` must be a non-empty dict {name: folder of sub-folders of images}")
    xtr, ytr, names = load_image_folder(root / "train", size=size, per_class=per_class, seed=seed)
    xte, yte, _ = load_image_folder(root / "val", size=size, per_class=per_class, classes=names, seed=seed + 1)
    ood = {
        str(k): load_image_folder(v, size=size, per_class=ood_per_class, seed=seed + 2)[0] for k, v in ood_roots.items()
    }
    classes = tuple(n.replace("_", " ") for n in names)
    return OODData(xtr, ytr, xte, yte, ood, classes)


def candidate_pool(*, exclude: Sequence[str] = ()) -> list[str]:
    """NegLabel's candidate labels for the captions world (≈ 300 phrases, in a fixed order): every
    vocabulary word that is not an ID shape (the 6 non-ID shapes, colours, sizes, styles, backgrounds,
    positions, digit and texture words, ...) in the class templates and a few compositions
    ("a red thing", "a photo of a noise background", "a grid pattern", "the digit seven", ...).

    No phrase names an ID class. ``exclude``: words whose phrases are dropped (the control without the
    near-OoD shape names)."""
    drop = set(W.ID_CLASSES) | {str(w) for w in exclude}
    function_words = {"a", "photo", "of", "drawing", "an", "image", "showing", "on", "that", "is", "there", "in",
                      "the", "drawn", "picture"}  # fmt: skip
    words = [w for w in W.vocabulary() if w not in function_words and w not in drop]
    phrases = [t.format(shape=w) for w in words for t in W.CLASS_TEMPLATES]
    phrases += [f"an image showing a {w}" for w in words]
    nouns = [w for w in ("thing", "object", "pattern", "texture", "number", "letter", "digit") if w not in drop]
    phrases += [f"a {c} {n}" for c in W.COLORS for n in nouns if c not in drop]
    phrases += [f"a photo of a {b} background" for b in W.BACKGROUNDS if b not in drop]
    phrases += [f"a {b} pattern" for b in (*W.BACKGROUNDS, "stripes", "checker", "dots") if b not in drop]
    digits = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    phrases += [f"the digit {d}" for d in digits if d not in drop]
    phrases += [f"a drawing of the number {d}" for d in digits if d not in drop]
    out = list(dict.fromkeys(phrases))
    return [p for p in out if not drop & set(p.split())]


# ----------------------------------------------------------------------------------------------- loss


def _logit_matrix(s: Any) -> torch.Tensor:
    s = check_tensor(s, "logits", ndim=2, dtype="float", layout="[B, B] scaled image-text similarities")
    if s.shape[0] != s.shape[1] or s.shape[0] == 0:
        raise InputError(f"`logits` must be a square in-batch matrix [B, B]; got {tuple(s.shape)}")
    return s


def flyp_loss(logits: torch.Tensor) -> torch.Tensor:
    """FLYP's symmetric contrastive loss on the in-batch matrix ``S`` ``[B, B]`` (rows = images, columns =
    their class prompts): ``½ [CE(S, arange B) + CE(Sᵀ, arange B)]``; a same-class duplicate prompt
    counts as a negative, as in the official code."""
    s = _logit_matrix(logits)
    target = torch.arange(len(s), device=s.device)
    return 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.T, target))


def cma_term(logits: torch.Tensor) -> torch.Tensor:
    """CMA's alignment term on ``S`` ``[B, B]``: ``−½ [mean_i logsumexp_j S_ij + mean_j logsumexp_i S_ij]``,
    the mean free energy of the images w.r.t. the batch's texts and of the texts w.r.t. the images."""
    s = _logit_matrix(logits)
    return -0.5 * (torch.logsumexp(s, dim=1).mean() + torch.logsumexp(s, dim=0).mean())


def flyp_cma_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, *, lam: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """``FLYP + λ · CMA`` on unit features ``[B, E]`` (``logit_scale`` is a log, as in ``CLIPModel``,
    clamped at ln 100). Returns ``(loss, {"flyp", "cma"})``."""
    u = check_tensor(image_features, "image_features", ndim=2, dtype="float", layout="[B, E]")
    v = check_tensor(text_features, "text_features", ndim=2, dtype="float", layout="[B, E]")
    if u.shape != v.shape:
        raise InputError(
            f"`text_features` must have the shape of `image_features` {tuple(u.shape)}; got {tuple(v.shape)}"
        )
    lam = check_float(lam, "lam", low=0.0)
    s = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * u @ v.T
    flyp, cma = flyp_loss(s), cma_term(s)
    return flyp + lam * cma, {"flyp": float(flyp.detach()), "cma": float(cma.detach())}


# ----------------------------------------------------------------------------------------------- model


def _prompts(classes: Sequence[str], template: str) -> list[str]:
    if "{shape}" not in template and "{}" not in template:
        raise InputError(f"`template` must hold a {{shape}} (or {{}}) slot; got {template!r}")
    return [template.replace("{shape}", c).replace("{}", c) for c in classes]


def class_features(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 512) -> torch.Tensor:
    """Unit text features ``[T, E]`` of ``texts`` (no gradient)."""
    if isinstance(texts, str) or not texts:
        raise InputError("`texts` must be a non-empty list of strings")
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            ids, mask = C.tokenize(tokenizer, list(texts[i : i + batch_size]), device=device_of(model))
            out.append(C.encode_text(model, ids, mask))
    return torch.cat(out)


def embed_images(model: Any, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Unit image features ``[N, E]`` (no gradient)."""
    x = check_tensor(images, "images", ndim=4, layout="[N, 3, H, W]")
    with torch.no_grad():
        return torch.cat([C.encode_image(model, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).cpu()


@dataclasses.dataclass
class FineTuned:
    """A fine-tuned CLIP and its per-step training history (``loss``, ``flyp``, ``cma``, ``logit_scale``)."""

    model: Any
    history: pd.DataFrame
    lam: float


def finetune(
    model: Any,
    tokenizer: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    *,
    lam: float = 0.0,
    epochs: int = 4,
    batch_size: int = 128,
    lr: float = 1e-4,
    weight_decay: float = 0.1,
    warmup: int = 10,
    template: str = PROMPT,
    seed: int = 0,
    show_progress: bool = False,
) -> FineTuned:
    """Fine-tune a copy of ``model`` (both towers and the logit scale) with FLYP + ``lam`` · CMA.

    Each step draws a batch of images, pairs each with its class prompt (``template``), and takes one
    AdamW step on :func:`flyp_cma_loss`; the learning rate follows a cosine schedule after ``warmup``
    linear steps (``transformers.get_cosine_schedule_with_warmup``). The batch order depends on
    ``seed`` only, so two calls that differ in ``lam`` see the same batches (paired arms).
    """
    from transformers import get_cosine_schedule_with_warmup

    check_model(model)
    x = check_tensor(images, "images", ndim=4, layout="[N, 3, H, W]")
    y = check_tensor(labels, "labels", ndim=1, dtype="int")
    if len(x) != len(y):
        raise InputError(f"`labels` must have one entry per image ({len(x)}); got {len(y)}")
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=2)
    lr = check_float(lr, "lr", low=0.0)
    lam = check_float(lam, "lam", low=0.0)
    warmup = check_int(warmup, "warmup", low=0)
    prompts = _prompts(classes, template)
    if int(y.min()) < 0 or int(y.max()) >= len(prompts):
        raise InputError(f"`labels` must index `classes` (0..{len(prompts) - 1})")
    net = copy.deepcopy(model).train()
    for p in net.parameters():
        p.requires_grad_(True)
    dev = device_of(net)
    ids, mask = C.tokenize(tokenizer, prompts, device=dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=check_float(weight_decay, "weight_decay", low=0.0))
    gen = torch.Generator().manual_seed(int(seed))
    n_batches = len(x) // batch_size  # drop the last partial batch, as the official loader does
    if n_batches == 0:
        raise InputError(f"`batch_size` {batch_size} exceeds the {len(x)} training images")
    sched = get_cosine_schedule_with_warmup(opt, warmup, epochs * n_batches)
    rows = []
    bar = progress(range(epochs * n_batches), desc=f"fine-tune λ={lam:g}", disable=not show_progress)
    order = None
    # train-mode randomness inside the model (HybridStem's channel shuffle) draws from the global RNG: fork it and
    # seed it with `seed`, so that two arms that differ only in `lam` see the same shuffles too (paired arms)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(int(seed))
        for step in bar:
            if step % n_batches == 0:
                order = torch.randperm(len(x), generator=gen)
            idx = order[(step % n_batches) * batch_size : (step % n_batches + 1) * batch_size]
            yb = y[idx].to(dev)
            u = C.encode_image(net, x[idx].to(dev))
            v = C.encode_text(net, ids[yb], mask[yb])
            loss, parts = flyp_cma_loss(u, v, net.logit_scale, lam=lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                net.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
            rows.append(
                {
                    "step": step,
                    "loss": float(loss.detach()),
                    **parts,
                    "logit_scale": float(net.logit_scale.detach().exp()),
                }
            )
    return FineTuned(net.eval(), pd.DataFrame(rows), lam)


# ----------------------------------------------------------------------------------------------- evaluation


@dataclasses.dataclass
class Evaluation:
    """What :func:`evaluate` measured: ``summary`` (one flat dict of numbers), the image features of
    each set, the ID class features, the mined negatives and every OoD score."""

    summary: dict[str, float]
    image_features: dict[str, torch.Tensor]
    class_features: torch.Tensor
    negatives: list[str]
    scores: dict[str, dict[str, torch.Tensor]]
    correct: torch.Tensor  # [N_id] bool: ID test image classified correctly

    def neglabel_at(self, negative_features: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
        """NegLabel scores of every set with other negatives or another τ (the τ sweep, the pool control)."""
        return {
            k: neglabel_score(f, self.class_features, negative_features, temperature=temperature)
            for k, f in self.image_features.items()
        }


def _check_data(data: Any) -> None:
    if not isinstance(data, OODData):
        raise InputError(f"`data` must be an OODData (make_data / load_folder_data); got {type(data).__name__}")


def evaluate(
    model: Any,
    tokenizer: Any,
    data: OODData,
    *,
    pool: Sequence[str] | None = None,
    n_neg: int = 64,
    percentile: float = 0.95,
    tau_neg: float = 0.01,
    tau_mcm: float = 1.0,
    template: str = PROMPT,
) -> Evaluation:
    """Score ``data`` with one model: ID accuracy (cosine argmax over the class prompts), the modality
    gap and own-class cosine of the ID test images (:func:`xattr_nb.metrics.modality_gap`), and for each
    OoD set the AUROC and FPR95 of MCM (τ = ``tau_mcm``) and NegLabel (τ = ``tau_neg``, the ``n_neg``
    negatives mined from ``pool`` with *this* model's text encoder, :func:`xattr_nb.metrics.mine_negatives`).
    """
    _check_data(data)
    pool = candidate_pool() if pool is None else list(pool)
    n_neg = check_int(n_neg, "n_neg", low=1, high=len(pool))
    v_id = class_features(model, tokenizer, _prompts(data.classes, template))
    v_cand = class_features(model, tokenizer, pool)
    neg_idx = mine_negatives(v_cand, v_id, n_neg, percentile=percentile)
    v_neg = v_cand[neg_idx]
    feats = {"id": embed_images(model, data.test_images)}
    feats.update({k: embed_images(model, v) for k, v in data.ood.items()})
    v_id, v_neg = v_id.cpu(), v_neg.cpu()
    scores = {
        k: {
            "mcm": mcm_score(f, v_id, temperature=tau_mcm),
            "neglabel": neglabel_score(f, v_id, v_neg, temperature=tau_neg),
        }
        for k, f in feats.items()
    }
    u = feats["id"]
    correct = (u @ v_id.T).argmax(1) == data.test_labels
    gap = modality_gap(u, v_id, data.test_labels)
    out = {"id_acc": float(correct.float().mean()), **gap, "logit_scale": float(model.logit_scale.detach().exp())}
    for score in ("mcm", "neglabel"):
        out.update({f"{score}_{k}": v for k, v in ood_table({k: s[score] for k, s in scores.items()}).items()})
    return Evaluation(out, feats, v_id, [pool[i] for i in neg_idx.tolist()], scores, correct)


def ood_table(scores: Mapping[str, torch.Tensor], *, keep: torch.Tensor | None = None) -> dict[str, float]:
    """``{auroc_<set>, fpr95_<set>, auroc_mean, fpr95_mean}`` of one score, ID = ``scores["id"]``
    (restricted to the ID images where ``keep`` is true: e.g. those every arm classifies correctly)."""
    if "id" not in scores or len(scores) < 2:
        raise InputError("`scores` must hold 'id' and at least one OoD set")
    s_id = scores["id"] if keep is None else scores["id"][check_tensor(keep, "keep", ndim=1).bool()]
    if len(s_id) == 0:
        raise InputError("`keep` selects no ID image")
    out: dict[str, float] = {}
    sets = [k for k in scores if k != "id"]
    for k in sets:
        out[f"auroc_{k}"] = auroc(s_id, scores[k])
        out[f"fpr95_{k}"] = fpr_at_tpr(s_id, scores[k])
    out["auroc_mean"] = float(np.mean([out[f"auroc_{k}"] for k in sets]))
    out["fpr95_mean"] = float(np.mean([out[f"fpr95_{k}"] for k in sets]))
    return out


def explain(model: Any, tokenizer: Any, data: OODData, *, lam: float, **kwargs: Any) -> tuple[FineTuned, Evaluation]:
    """CMA end to end: fine-tune ``model`` with FLYP + ``lam`` · CMA on ``data``'s ID training images, then
    :func:`evaluate`. ``kwargs`` go to :func:`finetune` or :func:`evaluate` by name."""
    _check_data(data)
    ev_keys = {"pool", "n_neg", "percentile", "tau_neg", "tau_mcm"}
    ft = finetune(
        model,
        tokenizer,
        data.train_images,
        data.train_labels,
        data.classes,
        lam=lam,
        **{k: v for k, v in kwargs.items() if k not in ev_keys},
    )
    ev_kw = {k: v for k, v in kwargs.items() if k in ev_keys}
    if "template" in kwargs:
        ev_kw["template"] = kwargs["template"]
    return ft, evaluate(ft.model, tokenizer, data, **ev_kw)


def compare(
    model: Any, tokenizer: Any, data: OODData, *, lam: float, **kwargs: Any
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The three arms on the same data and batch order: zero-shot (``model`` as it is), FLYP (λ = 0) and
    FLYP + CMA (λ = ``lam``). Returns ``(table: one row per arm, {arm: (FineTuned | None, Evaluation)})``."""
    _check_data(data)
    ev_keys = {"pool", "n_neg", "percentile", "tau_neg", "tau_mcm", "template"}
    arms: dict[str, Any] = {
        "zero-shot": (None, evaluate(model, tokenizer, data, **{k: v for k, v in kwargs.items() if k in ev_keys}))
    }
    arms["FLYP"] = explain(model, tokenizer, data, lam=0.0, **kwargs)
    arms["FLYP+CMA"] = explain(model, tokenizer, data, lam=lam, **kwargs)
    table = pd.DataFrame({k: ev.summary for k, (_, ev) in arms.items()}).T
    return table, arms


# ----------------------------------------------------------------------------------------------- figures


def plot_scores(evals: Mapping[str, Evaluation], *, score: str = "neglabel", title: str | None = None):
    """One panel per arm: histograms of ``score`` on the ID test images and on each OoD set."""
    from xattr_nb import plots

    if not evals:
        raise InputError("`evals` must be a non-empty dict {arm: Evaluation}")
    with plots.style():
        fig = plots.figure(3.2 * len(evals), 2.8)
        axes = fig.subplots(1, len(evals), squeeze=False)[0]
        for ax, (arm, ev) in zip(axes, evals.items(), strict=True):
            s = ev.scores
            lo = min(float(v[score].min()) for v in s.values())
            hi = max(float(v[score].max()) for v in s.values())
            bins = np.linspace(lo, hi + 1e-9, 30)
            for k, v in s.items():
                ax.hist(v[score].numpy(), bins=bins, alpha=0.45, density=True, label="ID test" if k == "id" else k)
            ax.set_title(f"{arm}: {ev.summary[f'{score}_auroc_mean']:.3f} mean AUROC", fontsize=9)
            ax.set_xlabel(f"{score} score (higher = ID)")
            ax.set_yticks([])
        axes[0].legend(fontsize=7)
        if title:
            fig.suptitle(title)
    return plots.show(fig)


def plot_embeddings(evals: Mapping[str, Evaluation], *, title: str | None = None, max_points: int = 300):
    """One panel per arm: ID test images, near-OoD images and the ID class prompts on the first two
    principal axes of that arm's image + text features (the modality gap is the distance between clouds)."""
    from sklearn.decomposition import PCA

    from xattr_nb import plots

    with plots.style():
        fig = plots.figure(3.2 * len(evals), 3.0)
        axes = fig.subplots(1, len(evals), squeeze=False)[0]
        for ax, (arm, ev) in zip(axes, evals.items(), strict=True):
            u = ev.image_features["id"][:max_points]
            parts = {"ID images": u}
            if "near" in ev.image_features:
                parts["near-OoD images"] = ev.image_features["near"][:max_points]
            parts["ID prompts"] = ev.class_features
            allf = torch.cat(list(parts.values())).numpy()
            z = PCA(2, random_state=0).fit_transform(allf)
            i = 0
            for name, f in parts.items():
                zz = z[i : i + len(f)]
                i += len(f)
                big = name == "ID prompts"
                ax.scatter(zz[:, 0], zz[:, 1], s=40 if big else 4, marker="*" if big else "o", label=name,
                           alpha=1.0 if big else 0.4)  # fmt: skip
            ax.set_title(f"{arm}: gap {ev.summary['gap']:.2f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].legend(fontsize=7, markerscale=2)
        if title:
            fig.suptitle(title)
    return plots.show(fig)

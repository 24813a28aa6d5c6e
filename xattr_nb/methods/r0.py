"""R0 (Luo et al., 2025, arXiv 2503.13070): a few-step text-to-image generator trained from rewards
alone, as regularised reward maximisation (spec ``24_r0.md``).

    max_θ  E_{c, z} [ Σ_i w_i R_i(g_θ(z, c), c) ]  −  λ_w ||θ − θ_0||²

``g_θ`` is a ``K``-step sampler (``K = 4``) initialised from a pretrained diffusion model (the teacher);
there is no distillation loss and no training image.

**Reconstructed** (the paper has no released code; spec §3.2 [recon]), each a switch of
:class:`R0Config`: the η re-noising sampler with ``η ~ U(0, 1)`` during training (``random_eta``),
the weight regulariser toward the teacher (``lam_w``), intermediate supervision of the decoded ``x̂0``
of every step with weights ``kappa`` (``intermediate``), and the reward mixture (``w_align``, ``w_attr``).

Tiny rewards (spec §3.5): ``R_align`` = TinyCLIP cosine(image, caption) and ``R_attr`` = the
log-probability of the caption's shape and colour under the surrogate classifier C1 (C1 has only those
two heads; the spec's size/background terms are dropped). Evaluation uses what the training never sees:
the non-neural :func:`~xattr_nb.metrics.generation.template_judge`, the FID proxy on the held-out
classifier C2's penultimate features (and on raw pixels, which involve no network), and diversity.

Steps:

- :func:`rewards`: ``R_align`` and ``R_attr`` per image (differentiable);
- :func:`weight_penalty`: ``||θ − θ_0||²`` over the student's velocity net;
- :func:`reward_loss`: one training step's loss (rewards of the final or every intermediate ``x̂0``,
  the regulariser, optionally the distillation term of baseline (D));
- :func:`train_r0`: the training loop (Adam), the student being ``teacher.trainable_copy()``;
- :func:`teacher_targets`: the teacher's many-step latents for baseline (D)'s regression;
- :func:`evaluate`: rewards, judge accuracy, FID proxies and diversity of a generator on a fixed
  held-out (caption, noise) bank;
- :func:`load_generator`: TinyT2I at ``scale="cpu"``, Stable Diffusion (:data:`SD_MODEL`) at
  ``scale="full"``, as a :class:`xattr_nb.models.sd.SDGenerator` (the same interface: ``trainable_copy``
  copies the UNet, the DDIM sampler keeps the graph);
- :func:`explain`: the entry point: train one arm from a config and evaluate it.

``scale="full"`` (spec §3.7): :func:`make_full_bank` (prompt embeddings of captions naming ImageNet
classes), :class:`FullRewards` / :func:`load_rewards` (``R_align`` = CLIP score of a transformers CLIP,
:data:`REWARD_CLIP`; ``R_attr`` = the log-probability of the caption's class under an ImageNet
classifier ensemble), passed to :func:`train_r0` as ``reward_fn``. HPS v2.1 is not a transformers
model and is not wired. :func:`evaluate` at full scale scores with those rewards and a held-out ImageNet
classifier judge (:data:`FULL_JUDGE`), diversity on the CLIP's image features; its captions-world figures
(judge shape / colour, FID proxies against renders) are NaN there, and :func:`claim` turns a ledger row on
one of them into "not tested" (:data:`FULL_ABSENT`). :func:`setup` gives notebook 24 its teacher, banks,
rewards and judge at either scale (``-p scale full`` runs the notebook on them). Wired and tested on tiny
local stand-ins, not run at paper scale here.

Written by hand: no installed library trains a few-step generator by reward maximisation with these
regularisers (diffusers' reward fine-tuning examples are scripts, not a library API).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from xattr_nb.checks import InputError, check_float, check_int, check_tensor
from xattr_nb.models.sd import SD_MODEL as _SD_MODEL
from xattr_nb.models.sd import latent_dim_of
from xattr_nb.models.sd import load_t2i as load_generator
from xattr_nb.runtime import progress

__all__ = [
    "FULL_ABSENT",
    "FULL_JUDGE",
    "FULL_TEMPLATE",
    "REWARD_CLASSIFIERS",
    "REWARD_CLIP",
    "SD_MODEL",
    "SPECIFIC_TEMPLATES",
    "EvalBank",
    "FullRewards",
    "PromptBank",
    "R0Config",
    "Setup",
    "claim",
    "diversity",
    "evaluate",
    "explain",
    "finite",
    "item_labels",
    "load_generator",
    "load_rewards",
    "make_bank",
    "make_full_bank",
    "reward_loss",
    "rewards",
    "setup",
    "specific_captions",
    "teacher_targets",
    "train_r0",
    "weight_penalty",
]

#: The paper-scale generator (spec §3.7; the paper uses the Realistic-Vision fine-tune of it):
#: :data:`xattr_nb.models.sd.SD_MODEL`, SD 1.5 (runwayml/stable-diffusion-v1-5 is gone from the hub).
SD_MODEL = _SD_MODEL
#: The CLIP of the image-text reward at full scale (spec §3.7: CLIP ViT-H/14), transformers weights.
REWARD_CLIP = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
#: The attribute reward's classifiers at full scale (ImageNet classes named by the captions).
REWARD_CLASSIFIERS = ("google/vit-base-patch16-224",)
#: The held-out judge at full scale (never a reward): a larger ImageNet classifier, the judge's stand-in.
FULL_JUDGE = ("facebook/convnext-large-224",)
#: The caption of an ImageNet class at full scale.
FULL_TEMPLATE = "a photo of a {name}"
#: Why a figure of :func:`evaluate` is NaN at ``scale="full"`` (a ledger row then becomes "not tested").
FULL_ABSENT = ("needs the captions world's ground truth (the real renders the FID proxies compare with, C2, the "
               "colour attribute); scale 'full' has none of these here")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class R0Config:
    """One training arm. Defaults: R0 as the spec reconstructs it (arm E)."""

    steps: int = 4  # sampler steps K of the generator
    train_steps: int = 120  # optimiser steps
    batch: int = 32
    lr: float = 1e-4
    w_align: float = 1.0  # weight of R_align (TinyCLIP cosine)
    w_attr: float = 1.0  # weight of R_attr (C1 log-prob of shape + colour)
    lam_w: float = 1e-2  # [recon] weight regularisation toward the teacher
    random_eta: bool = True  # [recon] eta ~ U(0, 1) per step during training (else `eta`)
    eta: float = 0.0  # test-time (and fixed training) eta
    intermediate: bool = True  # [recon] rewards also on the intermediate x0-predictions
    kappa: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # [recon] their weights (last = the sample)
    cfg: float = 2.0
    distill: float = 0.0  # baseline (D): weight of ||latent - teacher 40-step latent||^2

    def __post_init__(self):
        check_int(self.steps, "steps", low=1, high=100)
        check_int(self.train_steps, "train_steps", low=0)
        check_int(self.batch, "batch", low=1)
        for k in ("lr", "w_align", "w_attr", "lam_w", "cfg", "distill"):
            check_float(getattr(self, k), k, low=0.0)
        check_float(self.eta, "eta", low=0.0, high=1.0)
        if self.intermediate and len(self.kappa) != self.steps:
            raise InputError(f"`kappa` must hold one weight per sampler step ({self.steps}); got {len(self.kappa)}")
        if self.w_align == 0.0 and self.w_attr == 0.0 and self.distill == 0.0:
            raise InputError("`w_align`, `w_attr` and `distill` are all 0: nothing to train on")


@dataclasses.dataclass
class PromptBank:
    """Captions with their conditioning and the attributes R_attr scores: ``cond`` ``[N, 64]`` (unit
    TinyCLIP text embeddings, also R_align's text side), ``shape_ids`` / ``color_ids`` ``[N]``."""

    captions: list[str]
    cond: torch.Tensor
    shape_ids: torch.Tensor
    color_ids: torch.Tensor
    names: list[str] | None = None  # at scale "full": the ImageNet class each caption names

    def __len__(self) -> int:
        return len(self.captions)


@dataclasses.dataclass
class EvalBank(PromptBank):
    """A :class:`PromptBank` with fixed noise ``z`` ``[N, 64]`` and the real renders of the captions
    (``real`` ``[N, 3, 32, 32]``: the FID proxies' reference), plus a diversity bank: ``div_cond``
    ``[P * R, 64]`` (``P`` captions repeated ``R`` times, ``div_groups`` ``[P * R]`` naming the caption)
    with its own noise ``div_z``."""

    z: torch.Tensor = None  # type: ignore[assignment]
    real: torch.Tensor = None  # type: ignore[assignment]
    div_cond: torch.Tensor = None  # type: ignore[assignment]
    div_z: torch.Tensor = None  # type: ignore[assignment]
    div_groups: torch.Tensor = None  # type: ignore[assignment]


#: Caption templates that name both the shape and the colour (the "specific conditions" R0 is about;
#: R_attr and the judge score exactly these two attributes).
SPECIFIC_TEMPLATES: tuple[int, ...] = (3, 4, 5, 6, 9, 10, 11)


def specific_captions(data: Any, seed: int = 0, templates: Sequence[int] = SPECIFIC_TEMPLATES) -> list[str]:
    """Captions of ``data``'s images (a captions-world draw) from ``templates`` only, drawn uniformly at ``seed``."""
    import numpy as np

    from xattr_nb.worlds import captions as W

    if not templates:
        raise InputError("`templates` must name at least one caption template")
    for t in templates:
        check_int(t, "templates", low=0, high=len(W.TEMPLATES) - 1)
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    pick = rng.choice(list(templates), size=len(data.attrs))
    return [W.caption(a, int(t)) for a, t in zip(data.attrs, pick, strict=True)]


def make_bank(G: Any, data: Any, *, captions: Sequence[str] | None = None, z_seed: int | None = None,
              div_prompts: int = 0, div_repeats: int = 8):  # fmt: skip
    """A :class:`PromptBank` of a captions-world draw ``data`` (:func:`xattr_nb.worlds.captions.corpus`),
    or with ``z_seed`` an :class:`EvalBank` (noise from ``G.noise(len, z_seed)``, renders = ``data.images``,
    the first ``div_prompts`` captions repeated ``div_repeats`` times for diversity). ``captions``: other
    captions of the same images (e.g. :func:`specific_captions`), default ``data.captions``."""
    caps = list(data.captions if captions is None else captions)
    if len(caps) != len(data.images):
        raise InputError(f"`captions` must hold one caption per image ({len(data.images)}); got {len(caps)}")
    with torch.no_grad():
        cond = G.cond(caps)
    base = dict(captions=caps, cond=cond, shape_ids=data.shape_ids.clone(), color_ids=data.color_ids.clone())
    return _bank(G, base, z_seed, div_prompts, div_repeats, data.images.clone())


def _bank(G: Any, base: dict[str, Any], z_seed: int | None, div_prompts: int, div_repeats: int, real: Any):
    """A :class:`PromptBank` of ``base``, or with ``z_seed`` an :class:`EvalBank` (fixed noise, diversity bank)."""
    if z_seed is None:
        return PromptBank(**base)
    z_seed = check_int(z_seed, "z_seed", low=0)
    n = len(base["captions"])
    p = check_int(div_prompts, "div_prompts", low=0, high=n)
    r = check_int(div_repeats, "div_repeats", low=2)
    groups = torch.arange(p).repeat_interleave(r)
    return EvalBank(**base, z=G.noise(n, z_seed), real=real, div_cond=base["cond"][groups],
                    div_z=G.noise(max(1, p * r), z_seed + 1)[: p * r], div_groups=groups)  # fmt: skip


# ----------------------------------------------------------------------------------------------- rewards


def rewards(images: torch.Tensor, cond: torch.Tensor, shape_ids: torch.Tensor, color_ids: torch.Tensor, *,
            clip: Any, c1: Any) -> dict[str, torch.Tensor]:  # fmt: skip
    """``{"align": [B], "attr": [B]}``: ``R_align`` = cosine of TinyCLIP's unit image feature with the
    unit caption embedding ``cond``; ``R_attr`` = ``log p_C1(shape) + log p_C1(colour)``. Differentiable."""
    from xattr_nb.models.clip import encode_image

    x = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, 3, 32, 32] in [0, 1]")
    c = check_tensor(cond, "cond", ndim=2, dtype="float", layout="[B, 64] unit text embeddings")
    s = check_tensor(shape_ids, "shape_ids", ndim=1, dtype="int")
    k = check_tensor(color_ids, "color_ids", ndim=1, dtype="int")
    if not (len(x) == len(c) == len(s) == len(k)):
        raise InputError(f"`images`, `cond`, `shape_ids`, `color_ids` must share the batch; got "
                         f"{len(x)}, {len(c)}, {len(s)}, {len(k)}")  # fmt: skip
    align = (encode_image(clip, x) * F.normalize(c.to(x.device), dim=-1)).sum(-1)
    out = c1(x)
    rows = torch.arange(len(x), device=x.device)
    attr = F.log_softmax(out["shape"], -1)[rows, s.to(x.device)] + F.log_softmax(out["color"], -1)[rows, k.to(x.device)]
    return {"align": align, "attr": attr}


def weight_penalty(student: Any, theta0: Sequence[torch.Tensor]) -> torch.Tensor:
    """``||θ − θ_0||²`` summed over the student's trainable parameters (``theta0``: their initial values)."""
    params = list(student.parameters())
    if len(params) != len(theta0):
        raise InputError(f"`theta0` must hold one tensor per trainable parameter ({len(params)}); got {len(theta0)}")
    return sum(((p - q.to(p.device)) ** 2).sum() for p, q in zip(params, theta0, strict=True))


def reward_loss(
    student: Any,
    batch: PromptBank,
    z: torch.Tensor,
    cfg_: R0Config,
    *,
    clip: Any,
    c1: Any,
    theta0: Sequence[torch.Tensor] | None = None,
    eta: float | None = None,
    seed: int = 0,
    target: torch.Tensor | None = None,
    reward_fn: Any = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one step and its parts: ``−Σ_k κ_k (w_align R_align + w_attr R_attr)(x̂0_k) / Σ κ``
    (only the final sample when ``intermediate`` is off), ``+ lam_w ||θ − θ_0||²``, ``+ distill
    ||latent − target||²`` (baseline (D); ``target`` the teacher's latents for the same ``z``).
    ``reward_fn(images, batch) -> {"align", "attr"}`` replaces :func:`rewards` (``clip``, ``c1`` unused
    then): :class:`FullRewards` at ``scale="full"``."""
    eta = cfg_.eta if eta is None else check_float(eta, "eta", low=0.0, high=1.0)
    want_lat = cfg_.distill > 0.0
    if want_lat and target is None:
        raise InputError("`target` (the teacher's latents for `z`) is needed when `distill` > 0")
    lats = student.sample(batch.cond, z, steps=cfg_.steps, cfg=cfg_.cfg, eta=eta, grad=True, seed=seed,
                          return_intermediate=True, decode=False)  # fmt: skip
    kappa = list(cfg_.kappa) if cfg_.intermediate else [0.0] * (cfg_.steps - 1) + [1.0]
    total = torch.zeros((), device=z.device)
    parts: dict[str, float] = {}
    for kap, lat in zip(kappa, lats, strict=True):
        if kap == 0.0:
            continue
        if reward_fn is None:
            r = rewards(student.decode(lat), batch.cond, batch.shape_ids, batch.color_ids, clip=clip, c1=c1)
        else:
            r = reward_fn(student.decode(lat), batch)
        total = total + kap * (cfg_.w_align * r["align"] + cfg_.w_attr * r["attr"]).mean()
        parts = {"align": float(r["align"].detach().mean()), "attr": float(r["attr"].detach().mean())}  # last step's
    loss = -total / sum(kappa)
    if cfg_.lam_w > 0.0:
        if theta0 is None:
            raise InputError("`theta0` (the teacher's parameters) is needed when `lam_w` > 0")
        reg = weight_penalty(student, theta0)
        loss = loss + cfg_.lam_w * reg
        parts["reg"] = float(reg.detach())
    if want_lat:
        d = ((lats[-1] - target.to(lats[-1].device)) ** 2).sum(-1).mean()
        loss = loss + cfg_.distill * d
        parts["distill"] = float(d.detach())
    parts["loss"] = float(loss.detach())
    return loss, parts


@torch.no_grad()
def teacher_targets(teacher: Any, cond: torch.Tensor, z: torch.Tensor, *, steps: int = 40, cfg: float = 2.0):
    """The teacher's ``steps``-step latents (η = 0) for each (``cond``, ``z``): baseline (D)'s regression targets."""
    return teacher.sample(cond, z, steps=check_int(steps, "steps", low=1), cfg=cfg, decode=False)


def _trainable_module(G: Any) -> torch.nn.Module:
    """What R0 trains: TinyT2I's velocity net, or the module the generator names (the SD UNet)."""
    return G.trainable_module() if hasattr(G, "trainable_module") else G.net.vel


def train_r0(
    teacher: Any,
    bank: PromptBank,
    cfg_: R0Config,
    *,
    clip: Any,
    c1: Any,
    seed: int = 0,
    targets: tuple[torch.Tensor, torch.Tensor] | None = None,
    show_progress: bool = False,
    reward_fn: Any = None,
) -> tuple[Any, list[dict[str, float]]]:
    """Train a student (``teacher.trainable_copy()``) for ``cfg_.train_steps`` Adam steps on batches of
    ``bank`` with fresh noise (seeded by ``seed``), or, for baseline (D), on ``targets = (z, latents)``
    aligned with ``bank``'s rows (:func:`teacher_targets`). Returns the student and its per-step log.
    ``reward_fn``: see :func:`reward_loss` (:class:`FullRewards` at ``scale="full"``)."""
    if not isinstance(cfg_, R0Config):
        raise InputError(f"`cfg_` must be an R0Config; got {type(cfg_).__name__}")
    if not isinstance(bank, PromptBank) or len(bank) == 0:
        raise InputError("`bank` must be a non-empty PromptBank (from make_bank)")
    seed = check_int(seed, "seed", low=0)
    if cfg_.distill > 0.0 and (targets is None or len(targets[0]) != len(bank) or len(targets[1]) != len(bank)):
        raise InputError(f"`targets` must be (z, latents) with one row per bank caption ({len(bank)}) for distill")
    student = teacher.trainable_copy()
    _trainable_module(student).train()
    params = list(student.parameters())
    theta0 = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=cfg_.lr)
    g = torch.Generator().manual_seed(seed)
    log: list[dict[str, float]] = []
    for step in progress(range(cfg_.train_steps), desc="R0 training", disable=not show_progress):
        idx = torch.randint(len(bank), (cfg_.batch,), generator=g)
        sub = PromptBank([bank.captions[int(i)] for i in idx], bank.cond[idx], bank.shape_ids[idx], bank.color_ids[idx],
                         None if bank.names is None else [bank.names[int(i)] for i in idx])  # fmt: skip
        if cfg_.distill > 0.0:
            z, target = targets[0][idx], targets[1][idx]
        else:
            z, target = torch.randn(cfg_.batch, latent_dim_of(student), generator=g).to(student.device), None
        eta = float(torch.rand((), generator=g)) if cfg_.random_eta else cfg_.eta
        loss, parts = reward_loss(student, sub, z, cfg_, clip=clip, c1=c1, theta0=theta0, eta=eta,
                                  seed=seed * 100_003 + step, target=target, reward_fn=reward_fn)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.append({"step": step, "eta": eta, **parts})
    _trainable_module(student).eval()
    for p in params:
        p.requires_grad_(False)
    return student, log


# ----------------------------------------------------------------------------------------------- evaluation


def diversity(feats: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between ``feats`` ``[N, D]`` rows of the same group (``groups`` ``[N]``),
    averaged over groups (groups of one row are skipped; 0.0 when none has two)."""
    f = check_tensor(feats, "feats", ndim=2, dtype="float")
    gr = check_tensor(groups, "groups", ndim=1, dtype="int")
    if len(gr) != len(f):
        raise InputError(f"`groups` must name one group per row of `feats` ({len(f)}); got {len(gr)}")
    vals = []
    for k in gr.unique():
        x = f[gr == k]
        if len(x) < 2:
            continue
        d = torch.cdist(x.double(), x.double())
        n = len(x)
        vals.append(float(d.sum() / (n * (n - 1))))
    return sum(vals) / len(vals) if vals else 0.0


def _rows(bank: PromptBank, sl: slice) -> PromptBank:
    names = None if bank.names is None else bank.names[sl]
    return PromptBank(bank.captions[sl], bank.cond[sl], bank.shape_ids[sl], bank.color_ids[sl], names)


def _evaluate_full(G, bank, *, steps, reward_fn, judge, eta, cfg, seed, chunk):
    from xattr_nb.models.surrogates import ImageNetEnsemble

    if not isinstance(reward_fn, FullRewards):
        raise InputError(
            f"`reward_fn` must be a FullRewards (load_rewards) at scale='full'; got {type(reward_fn).__name__}"
        )
    if not isinstance(judge, ImageNetEnsemble):
        raise InputError(f"`judge` must be an ImageNetEnsemble held out from the rewards; got {type(judge).__name__}")
    chunk = check_int(chunk, "chunk", low=1)
    align, attr, right = [], [], []
    for i in range(0, len(bank), chunk):
        sub = _rows(bank, slice(i, i + chunk))
        x = G.sample(sub.cond, bank.z[i : i + chunk], steps=steps, cfg=cfg, eta=eta, seed=seed + i)
        r = reward_fn(x, sub)
        align.append(r["align"].cpu())
        attr.append(r["attr"].cpu())
        right.append(~judge.all_wrong(x, sub.shape_ids.to(x.device), judge.HEAD).cpu())
    nan = float("nan")
    out = {"r_align": float(torch.cat(align).mean()), "r_attr": float(torch.cat(attr).mean()), "judge_shape": nan,
           "judge_color": nan, "judge_both": float(torch.cat(right).float().mean()), "judge_none": nan,
           "fid_c2": nan, "fid_pixels": nan}  # fmt: skip
    if len(bank.div_groups):
        feats = [reward_fn.image_features(G.sample(bank.div_cond[i : i + chunk], bank.div_z[i : i + chunk], steps=steps,
                                                   cfg=cfg, eta=eta, seed=seed + 7 + i)).cpu()
                 for i in range(0, len(bank.div_groups), chunk)]  # fmt: skip
        out["diversity"] = diversity(torch.cat(feats), bank.div_groups)
    return out


@torch.no_grad()
def evaluate(G: Any, bank: EvalBank, *, steps: int, clip: Any, c1: Any, c2: Any, eta: float = 0.0,
             cfg: float = 2.0, seed: int = 0, pca_dim: int = 32, reward_fn: Any = None, judge: Any = None,
             chunk: int = 8) -> dict[str, float]:  # fmt: skip
    """Figures of generator ``G`` sampled at ``steps`` on the fixed bank: the training rewards
    (``r_align``, ``r_attr``), the judge's shape / colour / both accuracy and its "none" rate,
    ``fid_c2`` (C2 penultimate features) and ``fid_pixels`` (4×4-average-pooled pixels, 192-d: no network
    involved) against the bank's renders, and
    ``diversity`` (C2 features, within a caption). ``G`` must be a TinyT2I-like sampler.

    ``scale="full"`` (``reward_fn`` a :class:`FullRewards`, ``judge`` a held-out
    :class:`~xattr_nb.models.surrogates.ImageNetEnsemble`, ``bank`` from :func:`make_full_bank`; ``clip``, ``c1``,
    ``c2`` unused): the rewards are ``reward_fn``'s, ``judge_both`` is the share of images where some judge member
    predicts the caption's class, ``diversity`` is on the CLIP's image features, sampled ``chunk`` at a time;
    the figures that need the captions world (judge shape / colour / none, both FID proxies) are NaN
    (:data:`FULL_ABSENT`)."""
    from xattr_nb.metrics.generation import JUDGE_NONE, fid_proxy, template_judge
    from xattr_nb.worlds import captions as W

    if not isinstance(bank, EvalBank):
        raise InputError(f"`bank` must be an EvalBank (make_bank with z_seed); got {type(bank).__name__}")
    steps = check_int(steps, "steps", low=1)
    if reward_fn is not None or judge is not None:
        return _evaluate_full(G, bank, steps=steps, reward_fn=reward_fn, judge=judge, eta=eta, cfg=cfg, seed=seed,
                              chunk=chunk)  # fmt: skip
    x = torch.cat([G.sample(bank.cond[i : i + 256], bank.z[i : i + 256], steps=steps, cfg=cfg, eta=eta, seed=seed + i)
                   for i in range(0, len(bank), 256)])  # fmt: skip
    r = rewards(x, bank.cond, bank.shape_ids, bank.color_ids, clip=clip, c1=c1)
    js, jc = template_judge(x)
    ok_s = torch.tensor([j == W.SHAPES[int(i)] for j, i in zip(js, bank.shape_ids, strict=True)])
    ok_c = torch.tensor([j == W.COLORS[int(i)] for j, i in zip(jc, bank.color_ids, strict=True)])
    feats = c2.mlp(c2.features(x))
    real = c2.mlp(c2.features(bank.real.to(x.device)))
    out = {
        "r_align": float(r["align"].mean()),
        "r_attr": float(r["attr"].mean()),
        "judge_shape": float(ok_s.float().mean()),
        "judge_color": float(ok_c.float().mean()),
        "judge_both": float((ok_s & ok_c).float().mean()),
        "judge_none": float(sum(j == JUDGE_NONE for j in js) / len(js)),
        "fid_c2": fid_proxy(feats, real, pca_dim=pca_dim),
        "fid_pixels": fid_proxy(
            F.avg_pool2d(x, 4).flatten(1), F.avg_pool2d(bank.real.to(x.device), 4).flatten(1), pca_dim=pca_dim
        ),
    }
    if len(bank.div_groups):
        xd = G.sample(bank.div_cond, bank.div_z, steps=steps, cfg=cfg, eta=eta, seed=seed + 7)
        out["diversity"] = diversity(c2.mlp(c2.features(xd)).cpu(), bank.div_groups)
    return out


# ----------------------------------------------------------------------------------------------- loading


def make_full_bank(G: Any, captions: Sequence[str], class_ids: Any, *, names: Sequence[str] | None = None,
                   z_seed: int | None = None, div_prompts: int = 0, div_repeats: int = 8) -> PromptBank:  # fmt: skip
    """A :class:`PromptBank` at ``scale="full"``: ``cond`` the generator's prompt embeddings of ``captions``
    and ``shape_ids`` the index (into the reward ensemble's ``classes``) of the class each caption names;
    ``color_ids`` are zeros (no colour attribute at full scale); ``names`` the class names. With ``z_seed``
    an :class:`EvalBank` as :func:`make_bank` makes it (fixed noise, diversity bank), without real images
    (``real`` is None: no FID proxy at full scale)."""
    from xattr_nb.checks import check_texts

    caps = check_texts(captions, "captions")
    ids = check_tensor(torch.as_tensor(class_ids), "class_ids", ndim=1, dtype="int", layout="[N] class indices")
    if len(ids) != len(caps):
        raise InputError(f"`class_ids` must hold one class per caption ({len(caps)}); got {len(ids)}")
    if names is not None and len(check_texts(names, "names")) != len(caps):
        raise InputError(f"`names` must hold one class name per caption ({len(caps)}); got {len(names)}")
    with torch.no_grad():
        cond = G.cond(caps)
    base = dict(captions=caps, cond=cond, shape_ids=ids.long().clone(), color_ids=torch.zeros(len(caps), dtype=torch.long),
                names=None if names is None else list(names))  # fmt: skip
    return _bank(G, base, z_seed, div_prompts, div_repeats, None)


class FullRewards:
    """R0's rewards at ``scale="full"`` as a ``reward_fn(images, batch)`` for :func:`train_r0`:
    ``align`` = the CLIP score (cosine of the unit image and caption features of a transformers
    ``CLIPModel``, images resized and CLIP-normalised inside) and ``attr`` = the log-probability of
    ``batch.shape_ids`` (the caption's class, :func:`make_full_bank`) under an
    :class:`~xattr_nb.models.surrogates.ImageNetEnsemble`. Both differentiable in the images."""

    def __init__(self, clip: Any, tokenizer: Any, ensemble: Any):
        from xattr_nb.models.surrogates import ImageNetEnsemble

        if not hasattr(clip, "get_image_features") or not hasattr(clip, "get_text_features"):
            raise InputError(f"`clip` must be a transformers CLIPModel; got {type(clip).__name__}")
        if not isinstance(ensemble, ImageNetEnsemble):
            raise InputError(
                f"`ensemble` must be an ImageNetEnsemble (load_imagenet_ensemble); got {type(ensemble).__name__}"
            )
        self.clip, self.tokenizer, self.ensemble = clip.requires_grad_(False).eval(), tokenizer, ensemble

    @staticmethod
    def _pooled(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, E]``: the CLIP's unit image features of ``images`` ``[B, 3, H, W]`` in ``[0, 1]``."""
        from xattr_nb.models.clip import _preprocess

        x = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, 3, H, W] in [0, 1]")
        return F.normalize(self._pooled(self.clip.get_image_features(pixel_values=_preprocess(self.clip, x))), dim=-1)

    def __call__(self, images: torch.Tensor, batch: PromptBank) -> dict[str, torch.Tensor]:
        x = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, 3, H, W] in [0, 1]")
        if len(batch) != len(x):
            raise InputError(f"`batch` must hold one caption per image ({len(x)}); got {len(batch)}")
        dev = next(self.clip.parameters()).device
        enc = self.tokenizer(list(batch.captions), padding=True, truncation=True, return_tensors="pt").to(dev)
        txt = F.normalize(self._pooled(self.clip.get_text_features(**enc)), dim=-1)
        img = self.image_features(x)
        rows = torch.arange(len(x), device=x.device)
        attr = self.ensemble.logprob(x, self.ensemble.HEAD)[rows, batch.shape_ids.to(x.device)]
        return {"align": (img * txt).sum(-1).to(x.device), "attr": attr}


def load_rewards(classes: Sequence[str], *, clip: str = REWARD_CLIP, classifiers: Sequence[str] = REWARD_CLASSIFIERS,
                 device: str = "cpu") -> FullRewards:  # fmt: skip
    """:class:`FullRewards` from the CLIP ``clip`` and the image classifiers ``classifiers`` (hub names or
    ``save_pretrained`` folders, safetensors only) over the ImageNet ``classes`` the captions name.
    Raises :class:`~xattr_nb.checks.InputError` naming ``clip`` or ``classifiers`` when one cannot be loaded."""
    from transformers import AutoTokenizer, CLIPModel

    from xattr_nb.models.hub import from_pretrained_offline
    from xattr_nb.models.surrogates import load_imagenet_ensemble

    try:
        model = from_pretrained_offline(CLIPModel.from_pretrained, clip, "CLIP model", None)
        tok = from_pretrained_offline(AutoTokenizer.from_pretrained, clip, "CLIP tokenizer", None)
    except InputError as exc:
        raise InputError(f"`clip`: {exc}") from exc
    ens = load_imagenet_ensemble(classifiers, classes, device=device, arg="classifiers")
    return FullRewards(model.to(device), tok, ens)


def explain(teacher: Any, bank: PromptBank, eval_bank: EvalBank, cfg_: R0Config | None = None, *, clip: Any, c1: Any,
            c2: Any, seed: int = 0, targets: Any = None, show_progress: bool = False, reward_fn: Any = None,
            judge: Any = None) -> dict[str, Any]:  # fmt: skip
    """Train one arm (default: R0, :class:`R0Config`) from ``teacher`` on ``bank`` and evaluate it on
    ``eval_bank`` at its own step count and test-time η: ``{"model", "log", "eval", "config"}``.
    ``reward_fn``, ``judge``: the full-scale rewards and held-out judge (:func:`setup`'s ``scorers``)."""
    if not isinstance(bank, PromptBank) or len(bank) == 0:
        raise InputError("`bank` must be a non-empty PromptBank (from make_bank)")
    if not isinstance(eval_bank, EvalBank):
        raise InputError("`eval_bank` must be an EvalBank (make_bank with z_seed)")
    if not hasattr(teacher, "trainable_copy"):
        raise InputError(f"`teacher` must be a TinyT2I (load_generator('cpu')); got {type(teacher).__name__}")
    cfg_ = R0Config() if cfg_ is None else cfg_
    student, log = train_r0(teacher, bank, cfg_, clip=clip, c1=c1, seed=seed, targets=targets,
                            show_progress=show_progress, reward_fn=reward_fn)  # fmt: skip
    ev = evaluate(student, eval_bank, steps=cfg_.steps, clip=clip, c1=c1, c2=c2, eta=cfg_.eta, cfg=cfg_.cfg, seed=seed,
                  reward_fn=reward_fn, judge=judge)  # fmt: skip
    return {"model": student, "log": log, "eval": ev, "config": cfg_}


# ----------------------------------------------------------------------------------------------- notebook 24


@dataclasses.dataclass
class Setup:
    """What notebook 24 trains and evaluates with, at either scale (:func:`setup`)."""

    G: Any  # the teacher (TinyT2I, or an SDGenerator)
    bank: PromptBank  # training captions
    ev: EvalBank  # held-out (caption, noise) pairs
    scorers: dict  # the keyword arguments of explain / evaluate: clip, c1, c2, reward_fn, judge
    accuracy: dict | None  # classifiers' and judge's accuracy on the evaluation renders ("cpu" only)
    judge_independent: bool  # the judge shares nothing with the rewards
    judge_text: str  # that sanity row's text


def setup(scale: str = "cpu", *, seed: int = 0, device: str = "cpu", n_train: int = 3000, epochs: int = 4,
          n_eval: int = 512, full_model: str = SD_MODEL, full_clip: str = REWARD_CLIP,
          full_classifiers: Sequence[str] = REWARD_CLASSIFIERS, full_judge: Sequence[str] = FULL_JUDGE,
          full_classes: Sequence[str] = ("goldfish", "tabby", "golden retriever", "tench"),
          gradient_checkpointing: bool = True) -> Setup:  # fmt: skip
    """The teacher, training and evaluation banks, rewards and judge of notebook 24.

    ``scale="cpu"``: TinyT2I; C1 (the reward R_attr) and C2 (evaluation) trained for ``epochs`` on ``n_train``
    renders of the captions world (seeded by ``seed``); 2048 training captions and ``n_eval`` evaluation
    captions naming shape and colour (:func:`specific_captions`); the template judge. ``scale="full"``:
    ``full_model`` through :func:`load_generator`, :func:`load_rewards` (``full_clip``, ``full_classifiers``),
    the held-out judge ``full_judge`` (refused if it names a reward classifier), captions
    :data:`FULL_TEMPLATE` of ``full_classes`` (the training bank one per class, the evaluation bank
    ``n_eval`` cycling over them, diversity over every class); ``full_*`` are ignored at ``"cpu"``."""
    import sys

    from xattr_nb.checks import check_choice, check_texts

    check_choice(scale, ("cpu", "full"), "scale")
    seed = check_int(seed, "seed", low=0)
    n_eval = check_int(n_eval, "n_eval", low=1)
    if scale == "full":
        from xattr_nb.models.surrogates import load_imagenet_ensemble

        classes = check_texts(full_classes, "full_classes")
        if isinstance(full_judge, str) or isinstance(full_classifiers, str):
            raise InputError("`full_judge` and `full_classifiers` must be lists of classifier names or folders")
        shared = {str(n) for n in full_judge} & {str(n) for n in full_classifiers}
        if shared:
            raise InputError(f"`full_judge` must not contain a reward classifier; shared: {sorted(shared)}")
        G = load_generator("full", full=full_model, device=device, gradient_checkpointing=gradient_checkpointing)
        rew = load_rewards(classes, clip=full_clip, classifiers=full_classifiers, device=device)
        judge = load_imagenet_ensemble(full_judge, classes, device=device, arg="full_judge")
        caps = [FULL_TEMPLATE.format(name=c) for c in classes]
        ids = list(range(len(classes)))
        bank = make_full_bank(G, caps, ids, names=classes)
        pick = [i % len(classes) for i in range(n_eval)]
        ev = make_full_bank(G, [caps[i] for i in pick], pick, names=[classes[i] for i in pick], z_seed=5000 + seed,
                            div_prompts=min(len(classes), n_eval))  # fmt: skip
        scorers = {"clip": None, "c1": None, "c2": None, "reward_fn": rew, "judge": judge}
        independent = not any(j is m for j in judge.members for m in rew.ensemble.members)
        return Setup(G, bank, ev, scorers, None, independent,
                     "the judge is a held-out ImageNet classifier, not a reward classifier or the reward CLIP")  # fmt: skip
    from xattr_nb.metrics.generation import template_judge
    from xattr_nb.models.surrogates import ClipMLP, SmallCNN, train_surrogate
    from xattr_nb.worlds import captions as W

    n_train = check_int(n_train, "n_train", low=1)
    epochs = check_int(epochs, "epochs", low=1)
    G = load_generator("cpu", device=device)
    train = W.corpus(n_train, seed=1000 + seed)
    tr = (train.images.to(device), train.shape_ids.to(device), train.color_ids.to(device))
    C1 = train_surrogate(SmallCNN().to(device), *tr, epochs=epochs, seed=seed)
    C2 = train_surrogate(ClipMLP(G.clip).to(device), *tr, epochs=epochs, seed=seed + 1)
    for m in (C1, C2):
        m.requires_grad_(False)
    d_train = W.corpus(2048, seed=3000 + seed)
    bank = make_bank(G, d_train, captions=specific_captions(d_train, seed=3000 + seed))
    d_eval = W.corpus(n_eval, seed=4000 + seed)
    ev = make_bank(G, d_eval, captions=specific_captions(d_eval, seed=4000 + seed), z_seed=5000 + seed, div_prompts=32)
    with torch.no_grad():
        acc = {name: {h: float((m(ev.real.to(device))[h].argmax(1).cpu() == ids).float().mean())
                      for h, ids in (("shape", ev.shape_ids), ("color", ev.color_ids))}
               for name, m in (("C1 (reward)", C1), ("C2 (eval)", C2))}  # fmt: skip
    js, jc = template_judge(ev.real)
    acc["judge (eval)"] = {"shape": sum(j == W.SHAPES[i] for j, i in zip(js, ev.shape_ids, strict=True)) / n_eval,
                           "color": sum(j == W.COLORS[i] for j, i in zip(jc, ev.color_ids, strict=True)) / n_eval}  # fmt: skip
    independent = not isinstance(template_judge, torch.nn.Module) and not any(
        isinstance(v, torch.nn.Module) for v in vars(sys.modules[template_judge.__module__]).values())  # fmt: skip
    return Setup(G, bank, ev, {"clip": G.clip, "c1": C1, "c2": C2, "reward_fn": None, "judge": None}, acc,
                 independent, "the judge is a plain function with no learnt parameter (template matching), not C1, "
                 "C2 or TinyCLIP")  # fmt: skip


def item_labels(bank: PromptBank, idx: Sequence[int]) -> list[str]:
    """Short labels of rows ``idx`` of ``bank``: ``"colour shape"`` in the captions world, the class name at full scale."""
    if bank.names is not None:
        return [bank.names[i] for i in idx]
    from xattr_nb.worlds import captions as W

    return [f"{W.COLORS[bank.color_ids[i]]} {W.SHAPES[bank.shape_ids[i]]}" for i in idx]


def finite(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``table`` (rows of figures, e.g. :func:`evaluate`'s per arm) without its NaN figures (those
    :func:`evaluate` has only in the captions world), for ``record_table``."""
    import math

    return {
        k: {m: v for m, v in row.items() if not (isinstance(v, float) and math.isnan(v))} for k, row in table.items()
    }


def claim(led: Any, name: str, value: float, **kw: Any) -> None:
    """``led.claim(name, value, **kw)``, or, when ``value`` is NaN (a figure :func:`evaluate` has only in the
    captions world), ``led.not_tested`` with the same ``text`` and ``paper`` and the reason :data:`FULL_ABSENT`."""
    import math

    if isinstance(value, float) and math.isnan(value):
        led.not_tested(name, text=kw["text"], paper=kw.get("paper", ""), why=FULL_ABSENT)
    else:
        led.claim(name, value, **kw)

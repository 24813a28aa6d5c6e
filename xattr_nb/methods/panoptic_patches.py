"""PPL: panoptic patch learning for AI-generated image detection (Yang et al., arXiv 2504.01396).

A fake image carries synthetic artifacts in every patch, yet a naively trained detector latches
onto the few most conspicuous ones (the *Few-Patch Bias*). The paper measures this with a
per-patch **total direct effect** (TDE: the fake score minus the score with that patch swapped
for its real counterpart) and fixes it with two training ingredients:

- **random patch replacement** (:func:`random_patch_replacement`, RPR): random patches of a fake
  are swapped for their real counterparts (label stays "fake"), so the strong patch is often
  gone and the detector must find the artifact elsewhere; ``mode="real+fake-patches"`` is the
  ICLR wording (random patches of a *real* image get their fake counterparts, labelled fake);
- **patch-wise contrastive learning** (:func:`patch_contrastive_loss`, PCL): the projected,
  L2-normalised feature of every patch is pulled towards patches of its own kind (synthetic or
  real) and pushed below a cosine margin ``m`` from the other kind.

The detector is :class:`PatchBagNet`: a stride-``patch`` convolution embeds each patch, two 1×1
convolutions make per-patch features, a linear head scores each patch and the logits are
**mean-pooled**. Patches never interact, so :func:`tde_per_patch` is exact: one re-scoring per
patch, and the TDEs of a fake sum to its score minus its real counterpart's score
(:func:`patch_logits` gives the same numbers in closed form). Measures: :func:`top1_share` (the
spec's Few-Patch index, the top-1 share of positive TDE mass) and :func:`gini` over patches.

The loss forms, weights and rates are the spec's **[recon]** (no code was found): λ = 0.5,
m = 0.3, RPR probability 0.5 and replaced fraction U[0.1, 0.75]. ``explain`` trains one arm and
measures it.

Full scale (``scale="full"`` in the notebook): :class:`CLIPPatchDetector` puts a linear head (and
the PCL projection) on the patch tokens of a frozen pretrained CLIP vision tower
(:func:`load_clip_backbone`, ``transformers.CLIPVisionModel``) and mean-pools the per-patch logits,
so it has the same interface as :class:`PatchBagNet` and every function here takes it (through
``train_detector(model_fn=...)``); its patches interact through attention, so the TDE is a
measured effect, no longer exact. :func:`load_genimage` reads GenImage-style folders
(``<root>/<generator>/{train,val}/{ai,nature}/*``) into the same :class:`AIGIData`; GenImage's real
and fake images are not pixel-paired, so a fake's "real counterpart" there is the real image it is
paired with by index, and :func:`mask_random_patches` makes the masked test set.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from sklearn.metrics import average_precision_score
from torch import nn

from xattr_nb import plots
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.models.io import eval_mode
from xattr_nb.worlds.generated_images import AIGIData, patch_grid

__all__ = [
    "ARMS",
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGE_EXTENSIONS",
    "RPR_MODES",
    "CLIPPatchDetector",
    "PatchBagNet",
    "accuracy_ap",
    "arm_config",
    "evaluate",
    "explain",
    "gini",
    "load_clip_backbone",
    "load_genimage",
    "mask_random_patches",
    "patch_contrastive_loss",
    "patch_logits",
    "plot_tde_maps",
    "random_patch_replacement",
    "score",
    "strong_patch_removed",
    "tde_per_patch",
    "top1_share",
    "train_detector",
]

RPR_MODES = ("fake→real-patches", "real+fake-patches")
#: The spec's four arms: (use RPR, use PCL).
ARMS: dict[str, tuple[bool, bool]] = {
    "naive": (False, False),
    "rpr": (True, False),
    "pcl": (False, True),
    "ppl": (True, True),
}


# ---------------------------------------------------------------------------------------------
# The detector
# ---------------------------------------------------------------------------------------------


class PatchBagNet(nn.Module):
    """Per-patch scorer + mean pooling: ``forward(x) -> logit [B]`` (fake = positive).

    ``conv(k=patch, stride=patch) -> ReLU -> conv1×1 -> ReLU -> conv1×1 -> ReLU`` gives per-patch
    features ``[B, P, width]``; ``proj`` (a 1×1 map to ``proj_dim``) feeds the contrastive loss;
    ``head`` scores each patch and the image logit is the mean over patches.
    """

    def __init__(self, patch: int = 8, width: int = 64, proj_dim: int = 32, in_ch: int = 3) -> None:
        super().__init__()
        self.patch = check_int(patch, "patch", low=1)
        width = check_int(width, "width", low=1)
        self.embed = nn.Conv2d(in_ch, width, patch, stride=patch)
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU()
        )
        self.head = nn.Linear(width, 1)
        self.proj = nn.Linear(width, check_int(proj_dim, "proj_dim", low=1))

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch features ``[B, P, width]`` (row-major patch order)."""
        x = check_tensor(x, "x", ndim=4, dtype="float", layout="[B, 3, H, W]")
        if x.shape[-1] % self.patch or x.shape[-2] % self.patch:
            raise InputError(f"`x` height and width must be multiples of patch={self.patch}; got {tuple(x.shape)}")
        h = self.body(self.embed(x))
        return h.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, return_patch_feats: bool = False):
        feats = self.patch_features(x)
        logit = self.head(feats).squeeze(-1).mean(1)
        return (logit, feats) if return_patch_feats else logit


#: CLIP's pixel normalisation (the ``CLIPImageProcessor`` defaults).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def load_clip_backbone(path: str, *, device: Any = "cpu") -> nn.Module:
    """A frozen ``transformers.CLIPVisionModel`` from ``path`` (a local folder written by
    ``save_pretrained``, or a hub name such as ``openai/clip-vit-large-patch14`` where the hub is
    reachable), in eval mode with every parameter's ``requires_grad`` off."""
    from transformers import CLIPVisionModel

    if not isinstance(path, (str, Path)):
        raise InputError(f"`path` must be a folder or model name for CLIPVisionModel; got {type(path).__name__}")
    vision = CLIPVisionModel.from_pretrained(str(path), use_safetensors=True).to(device).eval()
    for prm in vision.parameters():
        prm.requires_grad_(False)
    return vision


class CLIPPatchDetector(nn.Module):
    """A linear head on the patch tokens of a frozen CLIP vision tower, mean-pooled: ``forward(x) ->
    logit [B]``, the interface of :class:`PatchBagNet` (``patch``, ``patch_features``, ``head``,
    ``proj``).

    ``x`` ``[B, 3, S, S]`` in [0, 1] with ``S`` the tower's ``image_size``; it is normalised with
    :data:`CLIP_MEAN` / :data:`CLIP_STD`. Patch features are the last hidden state's patch tokens
    (CLS dropped) after the tower's ``post_layernorm``, row-major like :func:`patch_grid`. Only
    ``head`` and ``proj`` train; the tower stays frozen and in eval mode.
    """

    def __init__(self, vision: nn.Module, proj_dim: int = 32) -> None:
        super().__init__()
        cfg = getattr(vision, "config", None)
        tower = getattr(vision, "vision_model", vision)  # transformers < 5 nests the tower, 5 does not
        if cfg is None or not hasattr(cfg, "patch_size") or not hasattr(tower, "post_layernorm"):
            raise InputError(f"`vision` must be a transformers CLIPVisionModel; got {type(vision).__name__}")
        self.vision = vision
        self._post_ln = tower.post_layernorm
        self.patch = int(cfg.patch_size)
        self.image_size = int(cfg.image_size)
        for prm in self.vision.parameters():
            prm.requires_grad_(False)
        self.head = nn.Linear(cfg.hidden_size, 1)
        self.proj = nn.Linear(cfg.hidden_size, check_int(proj_dim, "proj_dim", low=1))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> CLIPPatchDetector:
        super().train(mode)
        self.vision.eval()  # frozen: no dropout, whatever the head does
        return self

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch features ``[B, P, hidden]`` (no gradient into the frozen tower)."""
        x = check_tensor(x, "x", ndim=4, dtype="float", layout="[B, 3, H, W]")
        if tuple(x.shape[1:]) != (3, self.image_size, self.image_size):
            raise InputError(
                f"`x` must be [B, 3, {self.image_size}, {self.image_size}] (the tower's image_size); "
                f"got {tuple(x.shape)}"
            )
        with torch.no_grad():
            h = self.vision(pixel_values=(x - self.mean) / self.std).last_hidden_state[:, 1:]
            return self._post_ln(h)

    def forward(self, x: torch.Tensor, return_patch_feats: bool = False):
        feats = self.patch_features(x)
        logit = self.head(feats).squeeze(-1).mean(1)
        return (logit, feats) if return_patch_feats else logit


def patch_logits(model: PatchBagNet | CLIPPatchDetector, x: torch.Tensor) -> torch.Tensor:
    """Each patch's own head score ``[B, P]``; the image logit is their mean."""
    with torch.no_grad(), eval_mode(model):
        return model.head(model.patch_features(x)).squeeze(-1)


def score(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Fake logits ``[N]`` without gradients, in batches."""
    x = check_tensor(x, "x", ndim=4, dtype="float", layout="[N, 3, H, W]")
    with torch.no_grad(), eval_mode(model):
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


# ---------------------------------------------------------------------------------------------
# Training ingredients
# ---------------------------------------------------------------------------------------------


def _check_pair(real: Any, fake: Any) -> tuple[torch.Tensor, torch.Tensor]:
    real = check_tensor(real, "real", ndim=4, dtype="float", layout="[N, C, H, W]")
    fake = check_tensor(fake, "fake", ndim=4, dtype="float", layout="[N, C, H, W]")
    if real.shape != fake.shape:
        raise InputError(f"`fake` must have the shape of `real` {tuple(real.shape)}; got {tuple(fake.shape)}")
    return real, fake


def random_patch_replacement(
    real: torch.Tensor,
    fake: torch.Tensor,
    patch: int,
    *,
    p: float = 0.5,
    frac: tuple[float, float] = (0.1, 0.75),
    mode: str = "fake→real-patches",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RPR on a batch of pairs: ``(images [N, C, H, W], synthetic [N, P] bool)``, all labelled fake.

    ``mode="fake→real-patches"`` (v1): with probability ``p`` an image gets a fraction
    ``U[frac]`` of its patches (at least one) from ``real``; the rest stay fake. ``synthetic``
    marks the patches still from ``fake``. ``mode="real+fake-patches"`` (ICLR): with probability
    ``p`` an image is ``real`` with a fraction ``U[frac]`` of its patches from ``fake`` (else the
    fake unchanged), i.e. synthetic cues injected into random patches of a real image.
    """
    real, fake = _check_pair(real, fake)
    check_choice(mode, RPR_MODES, "mode")
    p = check_float(p, "p", low=0.0, high=1.0)
    if not isinstance(frac, (tuple, list)) or len(frac) != 2 or not 0 <= frac[0] <= frac[1] <= 1:
        raise InputError(f"`frac` must be (low, high) with 0 <= low <= high <= 1; got {frac!r}")
    grid = patch_grid(real.shape[-1], patch).to(real.device)
    n, n_p = real.shape[0], int(grid.max()) + 1
    apply = torch.rand(n, generator=generator) < p
    f = frac[0] + (frac[1] - frac[0]) * torch.rand(n, generator=generator)
    k = torch.clamp((f * n_p).round().long(), min=1)
    ranks = torch.rand(n, n_p, generator=generator).argsort(1).argsort(1)
    chosen = (ranks < k[:, None]) & apply[:, None]  # [N, P]
    # v1: the chosen patches become real; ICLR: only the chosen patches of a real image are synthetic
    synthetic = ~chosen if mode == "fake→real-patches" else chosen | ~apply[:, None]
    pix = synthetic.to(real.device)[:, grid][:, None]  # [N, 1, H, W]
    return torch.where(pix, fake, real), synthetic


def patch_contrastive_loss(
    feats: torch.Tensor,
    labels: torch.Tensor,
    *,
    margin: float = 0.3,
    max_pairs: int = 512,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``mean_{same}(1 − cos) + mean_{different} max(0, cos − margin)`` over sampled patch pairs.

    ``feats`` ``[M, D]`` patch features (projected; normalised here), ``labels`` ``[M]`` (1 =
    synthetic patch). ``max_pairs`` random pairs of distinct patches are drawn (all pairs when
    there are fewer). A term with no pair of its kind is 0.
    """
    feats = check_tensor(feats, "feats", ndim=2, dtype="float", layout="[M, D]")
    labels = check_tensor(labels, "labels", ndim=1, layout="[M]")
    if labels.shape[0] != feats.shape[0]:
        raise InputError(f"`labels` must have one entry per row of `feats` ({feats.shape[0]}); got {labels.shape[0]}")
    margin = check_float(margin, "margin", low=-1.0, high=1.0)
    max_pairs = check_int(max_pairs, "max_pairs", low=1)
    m = feats.shape[0]
    if m < 2:
        raise InputError("`feats` needs at least two patches to form a pair")
    h = F.normalize(feats, dim=1)
    n_all = m * (m - 1) // 2
    if n_all <= max_pairs:
        i, j = torch.triu_indices(m, m, 1)
    else:
        i = torch.randint(0, m, (max_pairs,), generator=generator)
        j = (i + torch.randint(1, m, (max_pairs,), generator=generator)) % m
    i, j = i.to(feats.device), j.to(feats.device)
    cos = (h[i] * h[j]).sum(1)
    same = labels[i] == labels[j]
    zero = feats.sum() * 0.0
    pos = (1 - cos[same]).mean() if bool(same.any()) else zero
    neg = (cos[~same] - margin).clamp(min=0).mean() if bool((~same).any()) else zero
    return pos + neg


def arm_config(arm: str) -> dict[str, bool]:
    """``{"rpr": bool, "pcl": bool}`` of one of :data:`ARMS`."""
    check_choice(arm, tuple(ARMS), "arm")
    rpr, pcl = ARMS[arm]
    return {"rpr": rpr, "pcl": pcl}


def train_detector(
    train: AIGIData,
    *,
    rpr: bool = False,
    pcl: bool = False,
    lam: float = 0.5,
    margin: float = 0.3,
    rpr_p: float = 0.5,
    rpr_frac: tuple[float, float] = (0.1, 0.75),
    rpr_mode: str = "fake→real-patches",
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 2e-3,
    width: int = 64,
    max_pairs: int = 512,
    seed: int = 0,
    device: Any = "cpu",
    model_fn: Callable[[], nn.Module] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a :class:`PatchBagNet` (or ``model_fn()``, e.g. a :class:`CLIPPatchDetector`) on the pairs of ``train`` (each real image label 0, its fake 1).

    Each batch holds ``batch_size // 2`` pairs. With ``rpr`` the fakes go through
    :func:`random_patch_replacement`; with ``pcl`` the loss is ``lam·L_con + (1 − lam)·L_bce``
    (patch labels: synthetic patches of fakes 1, real and replaced patches 0), else plain BCE.
    ``model_fn`` builds the model after the seed is set (default ``PatchBagNet(train.patch, width)``);
    only its parameters with ``requires_grad`` train.
    Returns the model and ``{"loss": per-epoch means, "wall_s"}``.
    """
    if not isinstance(train, AIGIData):
        raise InputError(f"`train` must be an AIGIData (make_aigi_pairs); got {type(train).__name__}")
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=2)
    lam = check_float(lam, "lam", low=0.0, high=1.0)
    lr = check_float(lr, "lr", low=0.0)
    check_choice(rpr_mode, RPR_MODES, "rpr_mode")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = (PatchBagNet(train.patch, width=width) if model_fn is None else model_fn()).to(device)
    if getattr(model, "patch", None) != train.patch:
        raise InputError(
            f"the model's patch size {getattr(model, 'patch', None)} must equal the data's ({train.patch})"
        )
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=lr)
    real_all, fake_all = train.real.to(device), train.fake.to(device)
    n, half = len(train), max(batch_size // 2, 1)
    losses = []
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        tot, cnt = 0.0, 0
        for s in range(0, n, half):
            idx = perm[s : s + half].to(device)
            real, fake = real_all[idx], fake_all[idx]
            n_p = train.n_patches
            if rpr:
                fake, synth = random_patch_replacement(
                    real, fake, train.patch, p=rpr_p, frac=rpr_frac, mode=rpr_mode, generator=gen
                )
            else:
                synth = torch.ones(len(idx), n_p, dtype=torch.bool, device=real.device)
            x = torch.cat([real, fake])
            y = torch.cat([torch.zeros(len(idx)), torch.ones(len(idx))]).to(device)
            logit, feats = model(x, return_patch_feats=True)
            loss = F.binary_cross_entropy_with_logits(logit, y)
            if pcl:
                z = torch.cat([torch.zeros(len(idx), n_p, dtype=torch.bool, device=synth.device), synth])
                z = z.flatten().to(device)
                con = patch_contrastive_loss(
                    model.proj(feats.reshape(-1, feats.shape[-1])), z, margin=margin, max_pairs=max_pairs, generator=gen
                )
                loss = lam * con + (1 - lam) * loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot, cnt = tot + float(loss.detach()) * len(idx), cnt + len(idx)
        losses.append(tot / cnt)
    model.eval()
    return model, {"loss": losses, "wall_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------------------------


def tde_per_patch(score_fn: Any, x_fake: torch.Tensor, x_real: torch.Tensor, patch: int) -> torch.Tensor:
    """Total direct effect of every patch ``[N, P]``: ``s(x) − s(x with patch i from x_real)``.

    ``score_fn`` maps ``[B, C, H, W]`` to scores ``[B]`` (e.g. ``lambda x: score(model, x)``);
    one batched re-scoring per patch.
    """
    x_real, x_fake = _check_pair(x_real, x_fake)
    grid = patch_grid(x_fake.shape[-1], patch).to(x_fake.device)
    base = score_fn(x_fake)
    out = []
    for i in range(int(grid.max()) + 1):
        m = (grid == i)[None, None]
        out.append(base - score_fn(torch.where(m, x_real, x_fake)))
    return torch.stack(out, 1)


def top1_share(tde: torch.Tensor) -> torch.Tensor:
    """The Few-Patch index per image ``[N]``: the largest positive TDE over the sum of positive TDEs
    (``1/P`` when every patch counts equally, 1 when one patch carries it all; 0 if none is positive)."""
    tde = check_tensor(tde, "tde", ndim=2, dtype="float", layout="[N, P]")
    pos = tde.clamp(min=0)
    tot = pos.sum(1)
    return torch.where(tot > 0, pos.max(1).values / tot.clamp(min=1e-12), torch.zeros_like(tot))


def gini(v: torch.Tensor) -> torch.Tensor:
    """Gini coefficient per row ``[N]`` of non-negative values ``[N, P]`` (negatives clipped to 0):
    0 when all are equal, ``1 − 1/P`` when one holds everything; 0 for an all-zero row."""
    v = check_tensor(v, "v", ndim=2, dtype="float", layout="[N, P]").clamp(min=0)
    p = v.shape[1]
    s, _ = v.sort(1)
    k = torch.arange(1, p + 1, dtype=v.dtype, device=v.device)
    tot = s.sum(1)
    g = (2 * (k * s).sum(1) / tot.clamp(min=1e-12) - (p + 1)) / p
    return torch.where(tot > 0, g, torch.zeros_like(tot))


def accuracy_ap(model: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """Accuracy (logit > 0 = fake) and average precision on ``real`` (label 0) plus ``fake`` (label 1)."""
    real, fake = check_tensor(real, "real", ndim=4), check_tensor(fake, "fake", ndim=4)
    s = torch.cat([score(model, real), score(model, fake)]).cpu().numpy()
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    return {"acc": float(((s > 0) == y).mean()), "ap": float(average_precision_score(y, s))}


def strong_patch_removed(model: nn.Module, data: AIGIData) -> float:
    """Share of the fakes of ``data`` still detected (logit > 0) once their strong patches are real."""
    if not isinstance(data, AIGIData) or bool((data.strong_idx < 0).any()):
        raise InputError("`data` must be an AIGIData with strong patches (variant='train')")
    grid = patch_grid(data.real.shape[-1], data.patch)
    mask = torch.zeros(len(data), data.n_patches, dtype=torch.bool).scatter_(1, data.strong_idx, True)
    x = torch.where(mask[:, grid][:, None], data.real, data.fake)
    return float((score(model, x) > 0).float().mean())


def evaluate(model: nn.Module, tests: Mapping[str, AIGIData], *, tde_on: AIGIData, n_tde: int = 200) -> dict[str, Any]:
    """Accuracy/AP on every test set, the TDE of ``n_tde`` fakes of ``tde_on`` and its measures."""
    out: dict[str, Any] = {}
    for name, d in tests.items():
        r = accuracy_ap(model, d.real, d.fake)
        out[f"acc_{name}"], out[f"ap_{name}"] = r["acc"], r["ap"]
    sub = tde_on.subset(torch.arange(min(check_int(n_tde, "n_tde", low=1), len(tde_on))))
    tde = tde_per_patch(lambda x: score(model, x), sub.fake, sub.real, sub.patch)
    out["tde"] = tde
    out["top1_share"] = float(top1_share(tde).mean())
    out["gini"] = float(gini(tde).mean())
    if bool((sub.strong_idx >= 0).all()):
        out["strong_share"] = float(
            (tde.clamp(min=0).gather(1, sub.strong_idx).sum(1) / tde.clamp(min=0).sum(1).clamp(min=1e-12)).mean()
        )
        out["detected_without_strong"] = strong_patch_removed(model, sub)
    return out


def explain(
    train: AIGIData,
    tests: Mapping[str, AIGIData],
    *,
    arm: str = "ppl",
    tde_on: AIGIData | None = None,
    n_tde: int = 200,
    **train_kw: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one arm of :data:`ARMS` and measure it: ``(model, measures)`` (the per-patch TDE under
    ``"tde"``, on ``tde_on`` or the first test set)."""
    if not isinstance(train, AIGIData):
        raise InputError(f"`train` must be AIGIData (make_aigi_pairs); got {type(train).__name__}")
    if not isinstance(tests, Mapping) or not tests or not all(isinstance(t, AIGIData) for t in tests.values()):
        raise InputError("`tests` must name at least one test set, e.g. {'id': make_aigi_pairs(...)}")
    model, info = train_detector(train, **arm_config(arm), **train_kw)
    res = evaluate(model, tests, tde_on=tde_on if tde_on is not None else next(iter(tests.values())), n_tde=n_tde)
    res["train"] = info
    return model, res


# ---------------------------------------------------------------------------------------------
# Full-scale data: GenImage-style folders
# ---------------------------------------------------------------------------------------------

#: File endings read as images (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _read_rgb(path: Path, size: int) -> torch.Tensor:
    """``[3, size, size]`` in [0, 1]: RGB, shorter side resized to ``size`` (bilinear), centre crop."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        arr = np.array(im.crop((left, top, left + size, top + size)))
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0


def load_genimage(
    root: str | Path,
    generator: str,
    split: str = "train",
    *,
    image_size: int = 224,
    patch: int = 14,
    max_images: int | None = None,
    seed: int = 0,
) -> AIGIData:
    """Real/fake images of one generator from ``<root>/<generator>/<split>/{ai,nature}/*`` as :class:`AIGIData`.

    Both folders are read in sorted file order, shuffled with ``seed`` and paired by position; the
    pairs are ``min(#ai, #nature)`` (at most ``max_images``). Images are RGB in [0, 1], shorter side
    resized to ``image_size`` and centre-cropped (PIL). GenImage gives no pixel-paired counterpart,
    so a fake's ``real`` is an unrelated real image: a TDE on these pairs measures swapping a patch
    for the same patch of a real photograph. ``strong_idx`` is ``-1`` (no planted strong patch),
    ``weak_amp`` NaN (unknown), ``replaced`` all False, ``variant`` ``"genimage:<generator>"``.
    """
    image_size, patch = check_int(image_size, "image_size", low=1), check_int(patch, "patch", low=1)
    if image_size % patch:
        raise InputError(f"`patch` must divide `image_size`; got image_size={image_size}, patch={patch}")
    if max_images is not None:
        max_images = check_int(max_images, "max_images", low=1)
    base = Path(root) / str(generator) / str(split)
    files = {}
    for kind in ("ai", "nature"):
        d = base / kind
        if not d.is_dir():
            raise InputError(
                f"{d} does not exist: expected <root>/<generator>/<split>/{{ai,nature}}/*.png (GenImage layout)"
            )
        files[kind] = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files[kind]:
            raise InputError(f"{d} holds no image file (expected {', '.join(IMAGE_EXTENSIONS)})")
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    n = min(len(files["ai"]), len(files["nature"]), max_images or 2**62)
    fake_f = [files["ai"][i] for i in rng.permutation(len(files["ai"]))[:n]]
    real_f = [files["nature"][i] for i in rng.permutation(len(files["nature"]))[:n]]
    n_p = (image_size // patch) ** 2
    return AIGIData(
        real=torch.stack([_read_rgb(f, image_size) for f in real_f]),
        fake=torch.stack([_read_rgb(f, image_size) for f in fake_f]),
        strong_idx=torch.full((n, 1), -1, dtype=torch.long),
        weak_amp=torch.full((n,), float("nan")),
        replaced=torch.zeros(n, n_p, dtype=torch.bool),
        patch=patch,
        variant=f"genimage:{generator}",
    )


def mask_random_patches(data: AIGIData, *, frac: float = 0.25, seed: int = 0) -> AIGIData:
    """A masked test set: in each fake a random ``round(frac·P)`` of the patches come from its ``real``
    (``replaced`` marks them; the planted world's ``variant="masked"`` also removes the strong patch)."""
    if not isinstance(data, AIGIData):
        raise InputError(f"`data` must be an AIGIData; got {type(data).__name__}")
    frac = check_float(frac, "frac", low=0.0, high=1.0)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    n, n_p = len(data), data.n_patches
    k = round(frac * n_p)
    rep = torch.rand(n, n_p, generator=gen).argsort(1).argsort(1) < k
    grid = patch_grid(data.real.shape[-1], data.patch)
    fake = torch.where(rep[:, grid][:, None].to(data.real.device), data.real, data.fake)
    return dataclasses.replace(data, fake=fake, replaced=rep | data.replaced, variant=f"{data.variant}+masked")


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def plot_tde_maps(tdes: Mapping[str, torch.Tensor], data: AIGIData, *, examples: Sequence[int] = (0, 1, 2)):
    """Per-patch TDE grids (one row per arm, one column per example) with the strong patch boxed."""
    g = round(data.n_patches**0.5)
    names = list(tdes)
    ex = list(examples)
    with plots.style():
        fig = plots.figure(1.6 * len(ex) + 0.6, 1.5 * len(names) + 0.3)
        axes = fig.subplots(len(names), len(ex), squeeze=False)
        for r, name in enumerate(names):
            vmax = float(tdes[name][ex].abs().max()) or 1.0  # one colour scale per row (arm)
            for c, e in enumerate(ex):
                ax = axes[r, c]
                m = tdes[name][e].reshape(g, g).cpu().numpy()
                im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                for s in data.strong_idx[e].tolist():
                    if s >= 0:
                        ax.add_patch(Rectangle((s % g - 0.5, s // g - 0.5), 1, 1, fill=False, ec="k", lw=1.5))
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if c == 0:
                    ax.set_ylabel(name)
                if r == 0:
                    ax.set_title(f"fake {e}", fontsize=8)
            fig.colorbar(im, ax=axes[r, -1], shrink=0.8)
        fig.suptitle("per-patch TDE (logit; box = strong patch)")
    return plots.show(fig)

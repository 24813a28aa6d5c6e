"""SMDL-Attribution: fewer, more accurate regions by submodular subset selection over a prior's regions.

Chen et al., "Less is More: Fewer Interpretable Region via Submodular Subset Selection", ICLR 2024
(arXiv:2402.09164, code: github.com/RuoyuChen10/SMDL-Attribution). The precursor of LiMA.

The idea: start from any *prior* saliency map (the paper: HSIC-Attribution; here Grad-CAM), cut the
image into regions of similar prior importance, then re-order those regions with a greedy search
that asks the model directly which set of regions explains the prediction. The steps, in the order
the notebook calls them:

1. :func:`gradcam_prior`: the prior map (captum's ``LayerGradCam`` through
   :func:`xattr_nb.attribution.attribute`).
2. :func:`prior_guided_regions`: the prior resized to ``grid x grid`` cells, the cells sorted by
   prior, consecutive runs of ``per_set`` cells grouped into one region (regions can be scattered).
3. :func:`region_distances`: the angular distances between the embeddings of the images that show
   one region each (the effectiveness term reads them; one forward per region, once per image).
4. :func:`smdl_scorer`: the set function ``F = l_conf s_conf + l_eff s_eff + l_cons s_cons +
   l_colla s_colla`` as a :class:`~xattr_nb.attribution.subsets.SetScorer`, with the confidence
   ``s_conf = 1 - u`` of an *evidential* (EDL) twin network (:func:`edl_confidence`, trained by
   :func:`train_edl` with :class:`EDLLoss`).
5. :func:`~xattr_nb.attribution.subsets.greedy_search`: plain greedy, ``k`` regions (the search is
   shared with LiMA and VPS).
6. :func:`explain` chains 1-5 for a batch and returns an :class:`Attribution` whose ``meta`` keeps
   each image's regions, order and ranking; :func:`evaluate_orders` scores orders with
   region-protocol insertion/deletion; :func:`misclassified` picks the images an under-trained
   model gets wrong (the paper's second use: find the regions that restore the true class).

Two figures of this paper's own (through :func:`xattr_nb.plots.figure`): :func:`show_division`
(image, prior, prior-guided regions) and :func:`show_step` (one greedy step, each candidate's
score split into its four terms).

Code/paper differences kept from the spec: the *consistency* term is the target's softmax
probability (the code), not the cosine to a class prototype (the paper); the face variant's
logit scale (5) is the ``scale`` of :func:`edl_confidence`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from xattr_nb import plots
from xattr_nb.attribution import attribute
from xattr_nb.attribution.result import Attribution
from xattr_nb.attribution.subsets import (
    Ranking,
    SetScorer,
    collaboration,
    consistency,
    effectiveness,
    entropy_confidence,
    greedy_search,
    ranking_to_map,
    region_distances,
)
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_target, check_tensor
from xattr_nb.kernels import check_regions, grid_regions
from xattr_nb.metrics import CurveSet, insertion_deletion, order_from_scores, region_scores
from xattr_nb.models.fit import FitHistory, fit
from xattr_nb.models.io import check_model, eval_mode, logits_of
from xattr_nb.runtime import Cost, progress

__all__ = [
    "DEFAULT_WEIGHTS",
    "TERMS",
    "TUNED_WEIGHTS",
    "EDLLoss",
    "SMDLResult",
    "edl_confidence",
    "edl_evidence",
    "edl_loss",
    "edl_uncertainty",
    "evaluate_orders",
    "explain",
    "explain_one",
    "gradcam_prior",
    "make_edl_twin",
    "misclassified",
    "prior_guided_regions",
    "prior_order",
    "region_distances",
    "show_division",
    "show_step",
    "smdl_scorer",
    "train_edl",
]

#: The four terms of SMDL's set function: confidence, effectiveness, consistency, collaboration.
TERMS: tuple[str, ...] = ("conf", "eff", "cons", "colla")
#: The paper's setting: every lambda 1.
DEFAULT_WEIGHTS: dict[str, float] = {"conf": 1.0, "eff": 1.0, "cons": 1.0, "colla": 1.0}
#: LiMA's weights on the same terms (consistency and collaboration dominate), to show the sensitivity.
TUNED_WEIGHTS: dict[str, float] = {"conf": 1.0, "eff": 1.0, "cons": 20.0, "colla": 5.0}


# --------------------------------------------------------------------------------------------
# Step 2: prior-guided division
# --------------------------------------------------------------------------------------------


def prior_guided_regions(prior: torch.Tensor, grid: int = 8, per_set: int = 4) -> torch.Tensor:
    """SMDL's division of an image into regions of similar prior importance: ``[m, H, W]`` bool.

    1. Resize the prior map ``[H, W]`` to ``grid x grid`` cells by averaging it inside each cell
       of :func:`~xattr_nb.kernels.grid_regions` (an area resize; exact for 32 px and ``grid=8``).
    2. Sort the ``grid**2`` cells by their prior, highest first (ties: row-major cell order).
    3. Group consecutive runs of ``per_set`` cells into one region: ``m = ceil(grid**2 / per_set)``
       regions (the last one smaller when ``per_set`` does not divide ``grid**2``).

    Region 0 holds the cells the prior likes most, so the prior's own ranking of these regions is
    ``0, 1, ..., m-1`` (:func:`prior_order`). A region may be spatially scattered: what its cells
    share is a similar prior value. The official code's ``partition_by_mulit_grad`` does the same
    on a 10x10 grid with 4 cells per set.
    """
    prior = check_tensor(prior, "prior", ndim=2, dtype="float", layout="[H, W]")
    h, w = prior.shape
    grid = check_int(grid, "grid", low=1, high=min(h, w))
    per_set = check_int(per_set, "per_set", low=1, high=grid * grid)
    cells = grid_regions(h, w, grid, grid, device=prior.device)  # [grid**2, H, W]
    cell_prior = region_scores(prior, cells, reduce="mean")
    ranked = torch.argsort(-cell_prior, stable=True)
    m = math.ceil(grid * grid / per_set)
    group_of_cell = torch.empty(grid * grid, dtype=torch.long, device=prior.device)
    group_of_cell[ranked] = torch.arange(grid * grid, device=prior.device) // per_set
    onehot = group_of_cell.unsqueeze(0) == torch.arange(m, device=prior.device)[:, None]  # [m, grid**2]
    return (onehot.float() @ cells.flatten(1).float()).view(m, h, w) > 0


def prior_order(prior: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """The prior's own ranking of ``regions``: regions sorted by the prior summed inside them (``[m]``).

    The "prior alone" baseline at the same granularity as SMDL. For regions from
    :func:`prior_guided_regions` this is exactly ``0, 1, ..., m-1``.
    """
    prior = check_tensor(prior, "prior", ndim=2, dtype="float", layout="[H, W]")
    regions = check_regions(regions, hw=tuple(prior.shape))
    return order_from_scores(region_scores(prior, regions))


def gradcam_prior(
    model: nn.Module, images: torch.Tensor, target: Any, *, layer: nn.Module | str | None = None, relu: bool = False
) -> torch.Tensor:
    """Grad-CAM maps ``[B, H, W]`` at ``layer`` (default: the model's last conv), upsampled to the image.

    captum's ``LayerGradCam`` through :func:`xattr_nb.attribution.attribute`. ``relu=False`` (captum's
    default) keeps the negative evidence, so the cells the prior dislikes are still ordered instead
    of tying at 0.
    """
    check_model(model)
    images = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, C, H, W]")
    return attribute(model, images, target, method="grad_cam", layer=layer, relu=relu).scores


# --------------------------------------------------------------------------------------------
# The evidential (EDL) confidence network
# --------------------------------------------------------------------------------------------


def edl_evidence(logits: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Evidence ``e = exp(clamp(scale * z, -10, 10))`` per class from logits ``[B, K]`` (Sensoy et al., 2018)."""
    z = check_tensor(logits, "logits", ndim=2, dtype="float", layout="[B, K]")
    scale = check_float(scale, "scale", low=0.0)
    return torch.exp(torch.clamp(scale * z, -10.0, 10.0))


def edl_uncertainty(logits: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Dirichlet uncertainty ``u = K / sum_k alpha_k`` with ``alpha = e + 1``: 1 with no evidence, -> 0 with a lot."""
    e = edl_evidence(logits, scale)
    if e.shape[1] < 2:
        raise InputError(f"`logits` needs at least 2 classes; got {e.shape[1]}")
    return e.shape[1] / (e + 1.0).sum(1)


def edl_confidence(logits: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """SMDL's confidence term ``s_conf = 1 - u`` ``[B]`` from the logits of an EDL-trained network."""
    return 1.0 - edl_uncertainty(logits, scale)


def edl_loss(logits: torch.Tensor, y: torch.Tensor, *, anneal: float = 1.0) -> torch.Tensor:
    """Sensoy et al. (2018)'s evidential MSE loss, batch mean; written by hand (no library in our stack has it).

    With ``alpha = e + 1``, ``S = sum alpha``, ``p = alpha / S`` and one-hot ``y``:
    ``sum_k (y_k - p_k)^2 + p_k (1 - p_k) / (S + 1)`` (expected squared error under the
    Dirichlet) plus ``anneal * KL(Dir(alpha~) || Dir(1))``, where ``alpha~ = y + (1 - y) alpha``
    keeps only the *misleading* evidence, so the KL pushes it to zero.
    """
    z = check_tensor(logits, "logits", ndim=2, dtype="float", layout="[B, K]")
    k = z.shape[1]
    y = check_target(y, k, z.shape[0], name="y").to(z.device)
    anneal = check_float(anneal, "anneal", low=0.0, high=1.0)
    onehot = F.one_hot(y, k).to(z.dtype)
    alpha = edl_evidence(z) + 1.0
    s = alpha.sum(1, keepdim=True)
    p = alpha / s
    mse = ((onehot - p) ** 2 + p * (1 - p) / (s + 1)).sum(1)
    a = onehot + (1 - onehot) * alpha
    sa = a.sum(1)
    kl = (
        torch.lgamma(sa)
        - math.lgamma(k)
        - torch.lgamma(a).sum(1)
        + ((a - 1) * (torch.digamma(a) - torch.digamma(sa)[:, None])).sum(1)
    )
    return (mse + anneal * kl).mean()


class EDLLoss:
    """A ``loss_fn(logits, y)`` for :func:`~xattr_nb.models.fit` with the KL weight annealed by epoch.

    The weight is ``min(1, epoch / anneal_epochs)`` (epoch counted from 0), as in the official
    ``models/evidential.py``; the epoch is ``calls // steps_per_epoch``, so the loss must see
    exactly one call per training batch (which ``fit`` does).
    """

    def __init__(self, steps_per_epoch: int, anneal_epochs: int = 10) -> None:
        self.steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", low=1)
        self.anneal_epochs = check_int(anneal_epochs, "anneal_epochs", low=1)
        self.calls = 0

    @property
    def anneal(self) -> float:
        return min(1.0, (self.calls // self.steps_per_epoch) / self.anneal_epochs)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = edl_loss(logits, y, anneal=self.anneal)
        self.calls += 1
        return loss


def train_edl(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 6,
    anneal_epochs: int = 10,
    lr: float = 5e-3,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
    show_progress: bool = False,
) -> FitHistory:
    """Train ``model`` in place as SMDL's evidential twin: :func:`~xattr_nb.models.fit` with :class:`EDLLoss`.

    Its logits are then read by :func:`edl_confidence`. Deterministic for a given ``seed`` and
    initial weights.
    """
    check_model(model)
    images = check_tensor(images, "images", dtype="float", layout="[N, ...] model inputs")
    if images.ndim < 2:
        raise InputError(f"`images` must be a batch [N, ...] of model inputs; got shape {tuple(images.shape)}")
    labels = check_tensor(labels, "labels", shape=(images.shape[0],), dtype="int", layout="[N]")
    batch_size = check_int(batch_size, "batch_size", low=1)
    loss = EDLLoss(math.ceil(images.shape[0] / batch_size), anneal_epochs)
    return fit(
        model,
        (images, labels),
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        loss_fn=loss,
        seed=seed,
        device=device,
        show_progress=show_progress,
    )


def make_edl_twin(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    seed: int = 0,
    **kw: Any,
) -> nn.Module:
    """An EDL twin of ``model``: a deep copy fine-tuned with the evidential loss (:func:`train_edl`); ``model`` is untouched.

    The paper trains its EDL ResNet-101 separately; starting from the recognition weights gets a
    small twin to the same accuracy in one epoch instead of a full training (the twin still
    outputs evidence, not softmax logits: its uncertainty is what the confidence term reads).
    """
    import copy

    check_model(model)
    twin = copy.deepcopy(model)
    train_edl(twin, images, labels, epochs=epochs, lr=lr, seed=seed, **kw)
    return twin.eval()


# --------------------------------------------------------------------------------------------
# Steps 3-4: the set function
# --------------------------------------------------------------------------------------------


def _embed_fn(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    feats = getattr(model, "features", None)
    if not callable(feats):
        raise InputError(
            f"`model` ({type(model).__name__}) has no `features(x)` embedding for the effectiveness term: pass "
            "`embed_fn`, or use a TinyCNN / xattr_nb.models.load_image_classifier model"
        )
    return feats


def _weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    if not isinstance(weights, Mapping):
        raise InputError(f"`weights` must be a dict over {list(TERMS)}; got {type(weights).__name__}")
    unknown = sorted(set(weights) - set(TERMS))
    if unknown:
        raise InputError(f"`weights` names unknown terms {unknown}; SMDL's terms are {list(TERMS)}")
    out = dict(DEFAULT_WEIGHTS)
    for k, v in weights.items():
        out[k] = check_float(v, f"weights[{k!r}]", low=0.0)
    return out


def smdl_scorer(
    model: nn.Module,
    x: torch.Tensor,
    regions: torch.Tensor,
    target: int,
    *,
    edl_model: nn.Module | None = None,
    confidence: str = "edl",
    distances: torch.Tensor | None = None,
    embed_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    weights: Mapping[str, float] | None = None,
    edl_scale: float = 1.0,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = 64,
) -> SetScorer:
    """SMDL's set function over the ``regions`` of one image ``x`` ``[C, H, W]``, as a :class:`SetScorer`.

    ``F(S) = l_conf s_conf + l_eff s_eff + l_cons s_cons + l_colla s_colla`` (``weights``, default
    all 1: :data:`DEFAULT_WEIGHTS`), where, with ``x_S`` the image keeping only ``S``:

    - ``conf``: ``1 - u(x_S)`` from the EDL twin ``edl_model`` (:func:`edl_confidence`), or with
      ``confidence="entropy"`` LiMA's ``1 - H(p(x_S)) / log C`` (no twin needed; the spec's
      full-scale alternative);
    - ``eff``: ``sum_{i in S} min_{j in S, j != i} d_ij`` over ``distances`` (default
      :func:`region_distances` with ``embed_fn``, default ``model.features``);
    - ``cons``: ``p(target | x_S)`` (softmax of ``model``);
    - ``colla``: ``1 - p(target | x_{V \\ S})``.

    Each subset costs 2 images (kept and complement) through ``model`` and, for ``"edl"``, the
    same 2 through ``edl_model`` (the official code skips the twin on the complement; the saving
    is one tiny forward). ``scorer.n_forward`` counts images, not models.
    """
    check_model(model)
    check_choice(confidence, ("edl", "entropy"), "confidence")
    x = check_tensor(x, "x", ndim=3, dtype="float", layout="[C, H, W]")
    regions = check_regions(regions, hw=tuple(x.shape[1:])).to(x.device)
    m = regions.shape[0]
    target = check_int(target, "target", low=0)
    w = _weights(weights)
    edl_scale = check_float(edl_scale, "edl_scale", low=0.0)
    if confidence == "edl":
        if edl_model is None:
            raise InputError("confidence='edl' needs `edl_model` (an EDL-trained twin, see train_edl)")
        check_model(edl_model, "edl_model")
    elif edl_model is not None:
        raise InputError("`edl_model` is only used with confidence='edl'; drop it or set confidence='edl'")
    with torch.no_grad():
        n_classes = int(logits_of(model(x.unsqueeze(0))).shape[-1])
    if target >= n_classes:
        raise InputError(f"`target` must lie in [0, {n_classes}) for this model; got {target}")
    if distances is None:
        distances = region_distances(embed_fn or _embed_fn(model), x, regions, baseline=baseline)
    distances = check_tensor(distances, "distances", shape=(m, m), dtype="float", layout="[m, m]")

    def fn(images: torch.Tensor) -> torch.Tensor:
        probs = logits_of(model(images)).softmax(-1)
        if confidence == "edl":
            conf = edl_confidence(logits_of(edl_model(images)), edl_scale)  # type: ignore[misc]
        else:
            conf = entropy_confidence(probs)
        return torch.cat([probs, conf[:, None].to(probs)], 1)  # [B, C + 1]: probabilities, then confidence

    cons, colla = consistency(target), collaboration(target)
    terms = {
        "conf": lambda k, c, mem: k[:, -1],
        "eff": lambda k, c, mem: effectiveness(distances, mem),
        "cons": lambda k, c, mem: cons(k[:, :-1], None, mem),
        "colla": lambda k, c, mem: colla(k[:, :-1], None if c is None else c[:, :-1], mem),
    }
    return SetScorer(fn, x, regions, terms, w, baseline=baseline, complement=True, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# Steps 5-6: search and the entry point
# --------------------------------------------------------------------------------------------


@dataclass
class SMDLResult:
    """SMDL on one image: its ``prior`` ``[H, W]``, ``regions`` ``[m, H, W]``, the greedy ``ranking`` and the
    region ``order`` (``ranking.order``)."""

    prior: torch.Tensor
    regions: torch.Tensor
    ranking: Ranking

    @property
    def order(self) -> torch.Tensor:
        return self.ranking.order


def explain_one(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    edl_model: nn.Module | None = None,
    prior: torch.Tensor | None = None,
    grid: int = 8,
    per_set: int = 4,
    k: int | None = None,
    weights: Mapping[str, float] | None = None,
    confidence: str = "edl",
    baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = 64,
) -> SMDLResult:
    """SMDL on one image ``x`` ``[C, H, W]``: prior (default :func:`gradcam_prior`) -> :func:`prior_guided_regions`
    -> :func:`smdl_scorer` -> greedy search of ``k`` regions (default all ``m``)."""
    check_model(model)
    x = check_tensor(x, "x", ndim=3, dtype="float", layout="[C, H, W]")
    target = check_int(target, "target", low=0)
    if prior is None:
        prior = gradcam_prior(model, x.unsqueeze(0), target)[0]
    prior = check_tensor(prior, "prior", shape=tuple(x.shape[1:]), dtype="float", layout="[H, W]")
    regions = prior_guided_regions(prior.to(x.device), grid, per_set)
    scorer = smdl_scorer(
        model,
        x,
        regions,
        target,
        edl_model=edl_model,
        confidence=confidence,
        weights=weights,
        baseline=baseline,
        batch_size=batch_size,
    )
    ranking = greedy_search(scorer, regions.shape[0], k=k)
    return SMDLResult(prior=prior, regions=regions, ranking=ranking)


def explain(
    model: nn.Module,
    images: torch.Tensor,
    target: Any,
    *,
    edl_model: nn.Module | None = None,
    priors: torch.Tensor | None = None,
    grid: int = 8,
    per_set: int = 4,
    k: int | None = None,
    weights: Mapping[str, float] | None = None,
    confidence: str = "edl",
    baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = 64,
    show_progress: bool = False,
) -> Attribution:
    """SMDL attribution of ``target`` for each image of ``images`` ``[B, C, H, W]``: an :class:`Attribution`.

    ``scores`` ``[B, H, W]``: each region gets ``(m - rank) / m`` (first region 1, last ``1/m``;
    :func:`~xattr_nb.attribution.subsets.ranking_to_map` with ``how="rank"``), so the map shows
    the order the search found. ``meta``: ``orders`` ``[B, m]``, ``regions`` (list of ``[m, H,
    W]``), ``priors`` ``[B, H, W]``, ``rankings``. The cost counts the model forwards of the search
    (from the scorers) and the wall time; the Grad-CAM priors' passes are not included.
    ``priors`` replaces the Grad-CAM prior (e.g. an IG map). ``model`` and ``edl_model`` run in
    eval mode; each submodule's training flag is given back afterwards.
    """
    check_model(model)
    images = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, C, H, W]")
    b = images.shape[0]
    twin = check_model(edl_model, "edl_model") if edl_model is not None else nn.Identity()
    with eval_mode(model), eval_mode(twin):
        with torch.no_grad():
            n_classes = int(logits_of(model(images[:1])).shape[-1])
        tgt = check_target(target, n_classes, b)
        if priors is None:
            priors = gradcam_prior(model, images, tgt)
        priors = check_tensor(priors, "priors", shape=(b, *images.shape[2:]), dtype="float", layout="[B, H, W]")
        results = [
            explain_one(
                model,
                images[i],
                int(tgt[i]),
                edl_model=edl_model,
                prior=priors[i],
                grid=grid,
                per_set=per_set,
                k=k,
                weights=weights,
                confidence=confidence,
                baseline=baseline,
                batch_size=batch_size,
            )
            for i in progress(range(b), disable=not show_progress, desc="SMDL")
        ]
    maps = torch.stack([ranking_to_map(r.ranking, r.regions, how="rank") for r in results])
    cost = Cost(
        forward=sum(r.ranking.n_forward or 0 for r in results),
        backward=0,
        wall_s=sum(r.ranking.wall_s for r in results),
    )
    return Attribution(
        scores=maps.float(),
        kind="pixels",
        method="smdl",
        target=tgt,
        cost=cost,
        meta={
            "orders": torch.stack([r.order for r in results]),
            "regions": [r.regions for r in results],
            "priors": priors,
            "rankings": [r.ranking for r in results],
        },
    )


def evaluate_orders(
    model: nn.Module,
    images: torch.Tensor,
    orders: Any,
    target: Any,
    regions: Any,
    *,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = None,
) -> CurveSet:
    """Region-protocol insertion/deletion curves (area axis) of one region order per image: a :class:`CurveSet`.

    ``orders``: ``[B, m]`` ints (orders) or floats (region scores), or a list; ``regions``: one
    ``[m, H, W]`` partition per image (a list or ``[B, m, H, W]``); ``target``: an int or ``[B]``.
    """
    check_model(model)
    images = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, C, H, W]")
    b = images.shape[0]
    orders = list(orders)
    regions = list(regions)
    if len(orders) != b or len(regions) != b:
        raise InputError(f"`orders` ({len(orders)}) and `regions` ({len(regions)}) need one entry per image ({b})")
    with torch.no_grad():
        n_classes = int(logits_of(model(images[:1])).shape[-1])
    tgt = check_target(target, n_classes, b)
    return CurveSet(
        [
            insertion_deletion(
                model, images[i], orders[i], int(tgt[i]), regions=regions[i], baseline=baseline, batch_size=batch_size
            )
            for i in range(b)
        ]
    )


@torch.no_grad()
def misclassified(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices ``[n]`` of the first ``n`` images (in data order) that ``model`` (in eval mode) classifies wrongly."""
    check_model(model)
    images = check_tensor(images, "images", ndim=4, dtype="float", layout="[N, C, H, W]")
    labels = check_tensor(labels, "labels", shape=(images.shape[0],), dtype="int", layout="[N]")
    n = check_int(n, "n", low=1)
    with eval_mode(model):
        pred = torch.cat([logits_of(model(images[s : s + 256])).argmax(-1) for s in range(0, images.shape[0], 256)])
    wrong = torch.nonzero(pred.cpu() != labels.cpu()).flatten()
    if wrong.numel() < n:
        raise InputError(f"only {wrong.numel()} of {images.shape[0]} images are misclassified; asked for n={n}")
    return wrong[:n]


# --------------------------------------------------------------------------------------------
# This paper's figures
# --------------------------------------------------------------------------------------------


def _rgb(x: torch.Tensor) -> Any:
    x = x.detach().float().cpu()
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        x = (x - lo) / max(hi - lo, 1e-12)
    return x.permute(1, 2, 0).numpy() if x.shape[0] == 3 else x[0].numpy()


def show_division(image: torch.Tensor, prior: torch.Tensor, regions: torch.Tensor) -> Figure:
    """SMDL's division of one image, shown: the image ``[C, H, W]``, its prior ``[H, W]`` (diverging,
    white = 0) and the prior-guided ``regions`` ``[m, H, W]`` coloured by their prior rank
    (:func:`prior_guided_regions`: region 0, the prior's favourite, is brightest)."""
    x = check_tensor(image, "image", ndim=3, dtype="float", layout="[C, H, W]")
    prior = check_tensor(prior, "prior", shape=tuple(x.shape[1:]), dtype="float", layout="[H, W]")
    regions = check_regions(regions, hw=tuple(x.shape[1:]))
    m = regions.shape[0]
    rank = (regions.float().cpu() * torch.arange(m, dtype=torch.float32)[:, None, None]).sum(0)
    p = prior.detach().float().cpu()
    lim = max(float(p.abs().max()), 1e-12)
    with plots.style():
        fig = plots.figure(6.6, 2.5)
        axes = fig.subplots(1, 3)
        axes[0].imshow(_rgb(x), cmap=None if x.shape[0] == 3 else "gray")
        axes[0].set_title("image")
        im = axes[1].imshow(p.numpy(), cmap=plots.DIVERGING, vmin=-lim, vmax=lim)
        axes[1].set_title("prior (Grad-CAM)")
        fig.colorbar(im, ax=axes[1], shrink=0.8)
        im = axes[2].imshow(rank.numpy(), cmap="viridis_r", vmin=0, vmax=m - 1)
        axes[2].set_title(f"{m} regions (bright = high prior)")
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    return plots.show(fig)


def show_step(
    candidates: torch.Tensor, terms: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None
) -> Figure:
    """One greedy step, shown: each candidate region's score ``F(S + {r})`` as stacked bars of its
    weighted terms (``terms``: name -> ``[n_candidates]``, e.g. a scorer's ``last_terms``; ``weights``
    default :data:`DEFAULT_WEIGHTS`). The candidate the step picks (highest ``F``) is outlined."""
    cand = check_tensor(candidates, "candidates", ndim=1, dtype="int", layout="[n_candidates]").cpu()
    if not isinstance(terms, Mapping) or not terms:
        raise InputError("`terms` must be a non-empty dict: term name -> [n_candidates] values")
    w = _weights(weights)
    vals = {}
    for name, v in terms.items():
        if name not in w:
            raise InputError(f"`terms` names {name!r}; SMDL's terms are {list(TERMS)}")
        v = check_tensor(torch.as_tensor(v), f"terms[{name!r}]", shape=tuple(cand.shape), layout="[n_candidates]")
        vals[name] = w[name] * v.detach().double().cpu()
    total = torch.stack(list(vals.values())).sum(0)
    with plots.style():
        fig = plots.figure(7.0, 2.6)
        ax = fig.add_subplot()
        xs = torch.arange(cand.numel()).numpy()
        bottom = torch.zeros_like(total)
        for name, v in vals.items():
            ax.bar(xs, v.numpy(), bottom=bottom.numpy(), label=f"{w[name]:g}·{name}")
            bottom = bottom + v
        best = int(total.argmax())
        ax.bar([xs[best]], [float(total[best])], fill=False, edgecolor="black", linewidth=1.5, label="picked")
        ax.set_xticks(xs, [str(int(c)) for c in cand], fontsize=8)
        ax.set_xlabel("candidate region (0 = highest prior)")
        ax.set_ylabel("F(S ∪ {r})")
        ax.legend(fontsize=7, ncol=5)
    return plots.show(fig)

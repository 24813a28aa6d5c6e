"""LiMA: black-box attribution as the selection of a small, interpretable subset of image regions.

Chen et al., "Less is More: Efficient Black-box Attribution via Minimal Interpretable Subset
Selection" (2025, arXiv:2504.00470; code: github.com/RuoyuChen10/LIMA).

LiMA needs only the model's outputs (no gradients). The image is cut into ``R`` regions and a set
function ``F(S)`` scores every subset ``S`` of them from masked forwards:

- **consistency** ``p(c | x_S)``: the image that keeps only ``S`` is still class ``c``;
- **collaboration** ``1 - p(c | x_{V \\ S})``: removing ``S`` destroys the evidence for ``c``;
- **confidence** ``1 - H(p(. | x_S)) / log C``: the prediction on ``x_S`` is peaked;
- **effectiveness** ``sum_{i in S} min_{j in S, j != i} d_ij``: the regions of ``S`` look different
  to the model (``d_ij``: angle between the embeddings of the single-region images ``x_{v_i}``).

``F = sum_k lambda_k * term_k``. Ranking all regions with naive greedy costs ``R(R+1)/2`` subset
evaluations (two forwards each: kept and complement image). LiMA's **bidirectional greedy** grows
the most important regions from the front and the least important ones from the back at the same
time; the backward step only evaluates ``pending`` candidates, pre-screened by re-weighing the
forward step's outputs (no new forward), so it needs fewer forwards (exact counts:
:func:`forward_counts`). The order gives insertion/deletion curves for free
(:func:`curves_from_ranking`) and a saliency map (:func:`attribution_map`).

The search itself lives in :mod:`xattr_nb.attribution.subsets` (SMDL and VPS share it); this
module holds LiMA's choices: its terms and weights, its map, its full-scale models. The steps, in
the order the notebook calls them: :func:`partition` → :func:`region_distances` →
:func:`make_scorer` → :func:`search` → :func:`curves_from_ranking` / :func:`attribution_map`;
:func:`explain` chains them for a batch; it is also ``attribute(model, x, y, method="lima")``
(:mod:`xattr_nb.attribution.registry` lists it, so no import of this module is needed).
Two figures of this paper's own (through :func:`xattr_nb.plots.figure`): :func:`show_regions`
(the regions and their effectiveness distances) and :func:`show_ranking` (the order, the map and
the free curves of one search).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from xattr_nb import plots
from xattr_nb.attribution import Attribution, attribute
from xattr_nb.attribution.subsets import (
    Ranking,
    SetScorer,
    bidirectional_cost,
    bidirectional_greedy_search,
    collaboration,
    consistency,
    effectiveness,
    entropy_confidence,
    greedy_cost,
    greedy_search,
    ranking_to_map,
    region_distances,
)
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_target, check_tensor
from xattr_nb.kernels import check_regions, grid_regions, slic_regions
from xattr_nb.metrics import Curves, highest_confidence
from xattr_nb.models.hub import from_pretrained_offline
from xattr_nb.models.io import check_model, eval_mode, logits_of
from xattr_nb.runtime import Cost, pick_device, progress

__all__ = [
    "BASELINES",
    "LAMBDAS",
    "PAPER_CONFIGS",
    "LimaRun",
    "ZeroShotCLIP",
    "attribution_map",
    "curves_from_ranking",
    "explain",
    "forward_counts",
    "highest_confidence_at",
    "lima_terms",
    "load_zero_shot_clip",
    "make_scorer",
    "misclassified",
    "partition",
    "region_distances",
    "run_baselines",
    "search",
    "show_ranking",
    "show_regions",
]

#: The small-scale weights: the single-modal classifiers' (cons 20, colla 5, conf 0.01) plus the
#: multimodal files' effectiveness weight 0.05 on GAP features (the spec's §1.5).
LAMBDAS: dict[str, float] = {"cons": 20.0, "colla": 5.0, "conf": 0.01, "eff": 0.05}

#: The official scripts' configurations, with *named* lambdas (the files number them differently).
PAPER_CONFIGS: dict[str, dict[str, Any]] = {
    "clip-vit-l14": {"lambdas": {"conf": 0.0, "eff": 0.05, "cons": 20.0, "colla": 1.0}, "pending": 8},
    "clip-rn101": {"lambdas": {"conf": 0.01, "eff": 0.05, "cons": 20.0, "colla": 5.0}, "pending": 8},
    "languagebind": {"lambdas": {"conf": 0.0, "eff": 0.05, "cons": 20.0, "colla": 5.0}, "pending": 8},
    "imagebind": {"lambdas": {"conf": 0.0, "eff": 0.05, "cons": 10.0, "colla": 1.0}, "pending": 8},
    "misclassified": {"lambdas": {"conf": 0.0, "eff": 0.05, "cons": 10.0, "colla": 1.0}, "pending": 8},
    "single-modal": {"lambdas": {"conf": 0.01, "eff": 0.0, "cons": 20.0, "colla": 5.0}, "pending": 12},
}

#: The spec's captum baselines (and our RISE): name -> keyword arguments of ``attribute``.
#: ``feature_ablation`` and ``occlusion`` get the regions / window from :func:`run_baselines`.
BASELINES: dict[str, dict[str, Any]] = {
    "saliency": {},
    "integrated_gradients": {"n_steps": 32},
    "gradient_shap": {"n_samples": 16, "stdevs": 0.1},
    "grad_cam": {},
    "occlusion": {},
    "feature_ablation": {},
    "rise": {"n_masks": 500, "grid": 4, "p": 0.5},
}


def _check_lambdas(lambdas: Mapping[str, float] | None) -> dict[str, float]:
    lam = dict(LAMBDAS if lambdas is None else lambdas)
    unknown = sorted(set(lam) - set(LAMBDAS))
    if unknown:
        raise InputError(f"`lambdas` names {unknown}; LiMA's terms are {sorted(LAMBDAS)} (named, not numbered)")
    return {k: check_float(v, f"lambdas[{k!r}]", low=0.0) for k, v in lam.items()}


# ============================================================================================
# Step 1: the regions
# ============================================================================================


def partition(image: torch.Tensor, *, grid: int | tuple[int, int] = 4, n_segments: int | None = None) -> torch.Tensor:
    """Cut one image ``[C, H, W]`` into regions ``[R, H, W]`` (a disjoint, covering partition).

    By default a ``grid x grid`` grid (the small scale: 4x4 = 16 regions of 8x8 on 32x32 images);
    with ``n_segments`` SLIC superpixels instead (the paper uses SEEDS/SLICO superpixels, about 50
    per 224x224 image), via :func:`xattr_nb.kernels.slic_regions`.
    """
    x = check_tensor(image, "image", ndim=3, dtype="float", layout="[C, H, W]")
    if n_segments is not None:
        return slic_regions(x, check_int(n_segments, "n_segments", low=2))
    rows, cols = (grid, grid) if isinstance(grid, int) and not isinstance(grid, bool) else tuple(grid)  # type: ignore[misc]
    return grid_regions(int(x.shape[1]), int(x.shape[2]), rows, cols, device=x.device)


# ============================================================================================
# Step 2: the set function
# ============================================================================================


@torch.no_grad()
def lima_terms(target: int, distances: torch.Tensor | None = None) -> dict[str, Callable[..., torch.Tensor]]:
    """LiMA's four terms as :class:`~xattr_nb.attribution.subsets.SetScorer` terms (the scorer's ``fn`` returns
    probabilities). Without ``distances`` the effectiveness term is left out (the single-modal scripts)."""
    target = check_int(target, "target", low=0)
    terms: dict[str, Callable[..., torch.Tensor]] = {
        "cons": consistency(target),
        "colla": collaboration(target),
        "conf": lambda kept, comp, members: entropy_confidence(kept),
    }
    if distances is not None:
        d = check_tensor(distances, "distances", ndim=2, dtype="float", layout="[R, R]")
        terms["eff"] = lambda kept, comp, members: effectiveness(d, members.cpu())
    return terms


def make_scorer(
    model: nn.Module,
    x: torch.Tensor,
    regions: torch.Tensor,
    target: int,
    *,
    distances: torch.Tensor | None = None,
    lambdas: Mapping[str, float] | None = None,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = 64,
) -> SetScorer:
    """The set function ``F(S) = sum_k lambdas[k] * term_k(S)`` of one image, as a counting
    :class:`~xattr_nb.attribution.subsets.SetScorer` (kept and complement image per subset).

    ``model`` returns logits; the scorer reads ``softmax`` probabilities. ``lambdas`` are named
    (default :data:`LAMBDAS`; a term the dict leaves out weighs 0, so pass all four names);
    a positive ``lambdas["eff"]`` needs ``distances``
    (:func:`region_distances`).
    """
    model = check_model(model)
    lam = _check_lambdas(lambdas)
    if lam.get("eff", 0.0) > 0 and distances is None:
        raise InputError("`lambdas['eff']` > 0 needs `distances` [R, R] (region_distances); or set it to 0")
    x = check_tensor(x, "x", ndim=3, dtype="float", layout="[C, H, W]")
    regions = check_regions(regions, hw=tuple(x.shape[1:]))
    if distances is not None and tuple(distances.shape) != (regions.shape[0], regions.shape[0]):
        raise InputError(f"`distances` must be [{regions.shape[0]}, {regions.shape[0]}]; got {tuple(distances.shape)}")
    terms = lima_terms(target, distances if lam.get("eff", 0.0) > 0 else None)
    weights = {k: lam.get(k, 0.0) for k in terms}
    return SetScorer(
        lambda im: logits_of(model(im)).float().softmax(-1),
        x,
        regions,
        terms,
        weights,
        baseline=baseline,
        complement=True,
        batch_size=batch_size,
    )


# ============================================================================================
# Step 3: the search, and what its order gives for free
# ============================================================================================


def search(
    scorer: SetScorer,
    *,
    pending: int = 4,
    how: str = "bidirectional",
    model: nn.Module | None = None,
    show_progress: bool = False,
) -> Ranking:
    """Rank every region: LiMA's ``how="bidirectional"`` greedy (``pending`` backward candidates) or
    ``how="greedy"`` (naive greedy, the baseline of the speed-up), both over the same ``F``.

    The empty set is evaluated first (one evaluation) so that the score and the terms of every
    prefix set, including the full image, are known. ``model`` counts the forwards exactly
    (:func:`~xattr_nb.kernels.count_passes`); see :func:`forward_counts` for the expected numbers.
    """
    if not isinstance(scorer, SetScorer):
        raise InputError(f"`scorer` must be a SetScorer (make_scorer); got {type(scorer).__name__}")
    check_choice(how, ("bidirectional", "greedy"), "how")
    if how == "greedy":
        return greedy_search(scorer, scorer.n_regions, evaluate_empty=True, model=model, show_progress=show_progress)
    pending = check_int(pending, "pending", low=1)
    return bidirectional_greedy_search(
        scorer, scorer.n_regions, pending=pending, evaluate_empty=True, model=model, show_progress=show_progress
    )


def forward_counts(n_regions: int, pending: int) -> dict[str, int]:
    """Model forwards per image of the two searches as :func:`search` runs them (exact, by construction).

    - ``naive``: ``2 * (R(R+1)/2 + 1)``: every candidate of every step, kept + complement image,
      plus the empty set (whose complement is the full image);
    - ``bidirectional``: ``2 * (bidirectional_cost(R, pending) + 1)``;
    - ``embeddings``: ``R`` (single-region images for the effectiveness distances, both searches);
    - ``spec_naive`` / ``spec_bidirectional``: the spec's count without the empty set,
      ``R(R+1)`` and ``sum_{phase 1}(2c + 2p) + sum_{c <= p} 2c`` (272 and 200 for R=16, p=4).
    """
    r = check_int(n_regions, "n_regions", low=1)
    p = check_int(pending, "pending", low=1)
    spec_naive, spec_bidir = 2 * greedy_cost(r), 2 * bidirectional_cost(r, p)
    return {
        "naive": spec_naive + 2,
        "bidirectional": spec_bidir + 2,
        "embeddings": r,
        "spec_naive": spec_naive,
        "spec_bidirectional": spec_bidir,
    }


def _areas(ranking: Ranking, regions: torch.Tensor) -> torch.Tensor:
    sizes = regions[ranking.order.to(regions.device)].sum((1, 2)).double().cpu()
    return torch.cat([torch.zeros(1, dtype=torch.float64), sizes.cumsum(0)]) / float(regions[0].numel())


def curves_from_ranking(ranking: Ranking, regions: torch.Tensor, target: int) -> Curves:
    """Insertion and deletion curves read off the search's own evaluations: no new forward.

    Prefix ``t`` of the order is a set the search scored, so ``cons_t = p(c | x_{prefix_t})`` *is*
    the insertion curve and ``1 - colla_t = p(c | x_{V \\ prefix_t})`` the deletion curve (the
    image with the prefix removed); the empty set gives their first points. They equal what
    :func:`xattr_nb.metrics.insertion_deletion` measures for the same order (same masked images).
    """
    if not isinstance(ranking, Ranking):
        raise InputError(f"`ranking` must be a Ranking (search); got {type(ranking).__name__}")
    regions = check_regions(regions)
    if len(ranking) != regions.shape[0]:
        raise InputError(f"`ranking` orders {len(ranking)} regions but `regions` has {regions.shape[0]}")
    if not {"cons", "colla"} <= set(ranking.terms) or not {"cons", "colla"} <= set(ranking.start_terms):
        raise InputError("`ranking` needs the 'cons' and 'colla' terms of every prefix: search(make_scorer(...))")
    ins = torch.cat([torch.tensor([ranking.start_terms["cons"]]), ranking.terms["cons"]]).double()
    dele = 1.0 - torch.cat([torch.tensor([ranking.start_terms["colla"]]), ranking.terms["colla"]]).double()
    if not bool(torch.isfinite(ins).all() & torch.isfinite(dele).all()):
        raise InputError("`ranking` has unscored prefixes (NaN terms)")
    n_forward = 0 if ranking.n_forward is None else ranking.n_forward
    return Curves(
        _areas(ranking, regions), ins, dele, "region", check_int(target, "target", low=0), ranking.order, n_forward
    )


def attribution_map(ranking: Ranking, regions: torch.Tensor) -> torch.Tensor:
    """LiMA's saliency map ``[H, W]`` in [0, 1] (official ``add_value_decrease``).

    The region at rank ``t`` gets ``-sum_{tau <= t} |Delta_tau|`` with ``Delta`` the step change of
    ``cons + colla`` along the order (from the empty set), then min-max normalised: regions that
    come early and move the score a lot are brightest; once the score stops moving the remaining
    regions share the lowest value.
    """
    if not isinstance(ranking, Ranking):
        raise InputError(f"`ranking` must be a Ranking (search); got {type(ranking).__name__}")
    if not {"cons", "colla"} <= set(ranking.terms) or not {"cons", "colla"} <= set(ranking.start_terms):
        raise InputError("`ranking` needs the 'cons' and 'colla' terms of every prefix: search(make_scorer(...))")
    values = ranking.terms["cons"] + ranking.terms["colla"]
    start = ranking.start_terms["cons"] + ranking.start_terms["colla"]
    return ranking_to_map(ranking, regions, values=values, start=start)


# ============================================================================================
# The entry point
# ============================================================================================


@dataclass
class LimaRun:
    """What :func:`explain` did for one image: its regions, the ranking (order, prefix scores and
    terms, forward count, wall time) and the free curves."""

    regions: torch.Tensor
    ranking: Ranking
    curves: Curves
    n_embedding_forward: int


def explain(
    model: nn.Module,
    images: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    *,
    grid: int | tuple[int, int] = 4,
    n_segments: int | None = None,
    pending: int = 4,
    lambdas: Mapping[str, float] | None = None,
    how: str = "bidirectional",
    embed_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = 64,
    show_progress: bool = False,
) -> Attribution:
    """LiMA on a batch ``[B, C, H, W]``: partition → distances → set function → search → map, per image.

    Returns an :class:`Attribution` of kind ``pixels`` (``[B, H, W]`` maps, :func:`attribution_map`)
    whose ``meta`` holds ``order`` ``[B, R]`` (most important first; evaluate it directly with
    ``insertion_deletion_batch(model, images, meta["order"], target, regions=meta["regions"])``),
    ``regions`` (shared ``[R, H, W]`` for a grid, else a list), and ``runs`` (:class:`LimaRun` per
    image). ``embed_fn`` (default ``model.features`` when the model has it) feeds the
    effectiveness term; without one, ``lambdas["eff"]`` must be 0. The cost counts every forward:
    search plus embeddings.
    """
    model = check_model(model)
    x = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, C, H, W]")
    lam = _check_lambdas(lambdas)
    check_choice(how, ("bidirectional", "greedy"), "how")
    pending = check_int(pending, "pending", low=1)
    if embed_fn is None and lam.get("eff", 0.0) > 0:
        embed_fn = getattr(model, "features", None)
        if not callable(embed_fn):
            raise InputError("`lambdas['eff']` > 0 needs `embed_fn` (the model has no .features); or set it to 0")
    with eval_mode(model):
        with torch.no_grad():
            logits = logits_of(model(x[:1]))
        tgt = check_target(target, int(logits.shape[-1]), int(x.shape[0]))
        runs: list[LimaRun] = []
        maps = []
        cost = Cost()
        for i in progress(range(x.shape[0]), disable=not show_progress, desc="LiMA"):
            regions = partition(x[i], grid=grid, n_segments=n_segments)
            dist = None
            if lam.get("eff", 0.0) > 0:
                dist = region_distances(embed_fn, x[i], regions, baseline=baseline, batch_size=batch_size)  # type: ignore[arg-type]
            scorer = make_scorer(
                model, x[i], regions, int(tgt[i]), distances=dist, lambdas=lam, baseline=baseline, batch_size=batch_size
            )
            ranking = search(scorer, pending=pending, how=how, model=model)
            n_emb = 0 if dist is None else int(regions.shape[0])
            runs.append(LimaRun(regions, ranking, curves_from_ranking(ranking, regions, int(tgt[i])), n_emb))
            maps.append(attribution_map(ranking, regions))
            cost = cost + ranking.cost + Cost(forward=n_emb)
    same = all(r.regions.shape == runs[0].regions.shape and torch.equal(r.regions, runs[0].regions) for r in runs)
    return Attribution(
        scores=torch.stack(maps).float(),
        kind="pixels",
        method="lima" if how == "bidirectional" else "lima_greedy",
        target=tgt,
        cost=cost,
        meta={
            "order": torch.stack([r.ranking.order for r in runs]),
            "regions": runs[0].regions if same else [r.regions for r in runs],
            "runs": runs,
            "pending": pending,
            "lambdas": lam,
        },
    )


# ============================================================================================
# Evaluation helpers
# ============================================================================================


def run_baselines(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor | Sequence[int] | int,
    regions: torch.Tensor,
    *,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> dict[str, Attribution]:
    """The spec's baselines (:data:`BASELINES`) through :func:`xattr_nb.attribution.attribute`.

    ``occlusion`` uses a window the size of a region cell and the same stride (region-aligned
    single-region deletion; needs a grid of equal cells), ``feature_ablation`` the regions as its
    feature mask, ``gradient_shap`` and ``rise`` are seeded with ``seed``.
    """
    model = check_model(model)
    x = check_tensor(images, "images", ndim=4, dtype="float", layout="[B, C, H, W]")
    regions = check_regions(regions, hw=tuple(x.shape[-2:]))
    names = list(BASELINES) if methods is None else list(methods)
    bad = [m for m in names if m not in BASELINES]
    if bad:
        raise InputError(f"`methods` names {bad}; the baselines are {list(BASELINES)}")
    out: dict[str, Attribution] = {}
    for name in progress(names, disable=not show_progress, desc="baselines"):
        kw = dict(BASELINES[name])
        if name == "occlusion":
            rows = torch.nonzero(regions[0].any(1)).flatten()
            cols = torch.nonzero(regions[0].any(0)).flatten()
            win = (int(rows.numel()), int(cols.numel()))
            if x.shape[-2] % win[0] or x.shape[-1] % win[1] or int(regions[0].sum()) != win[0] * win[1]:
                raise InputError("occlusion needs `regions` to be a grid of equal rectangular cells")
            kw.update(window=win, stride=win)
        elif name == "feature_ablation":
            kw["feature_mask"] = regions.long().argmax(0).unsqueeze(0).to(x.device)
        elif name in ("gradient_shap", "rise"):
            kw["seed"] = seed
        out[name] = attribute(model, x, target, method=name, **kw)
    return out


@torch.no_grad()
def misclassified(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, n: int, *, batch_size: int = 256
) -> torch.Tensor:
    """Indices (ascending) of the first ``n`` images the model gets wrong; raises if there are fewer.

    LiMA's mistake analysis explains the *true* class on such images: which regions, shown alone,
    would have made the model right?
    """
    model = check_model(model)
    x = check_tensor(images, "images", ndim=4, dtype="float", layout="[N, C, H, W]")
    y = check_tensor(labels, "labels", shape=(x.shape[0],), dtype="int", layout="[N]").long()
    n = check_int(n, "n", low=1)
    with eval_mode(model):
        pred = torch.cat(
            [logits_of(model(x[s : s + batch_size])).argmax(-1).cpu() for s in range(0, len(x), batch_size)]
        )
    wrong = torch.nonzero(pred != y.cpu()).flatten()
    if wrong.numel() < n:
        raise InputError(f"the model gets only {wrong.numel()} of {len(x)} images wrong; `n` asks for {n}")
    return wrong[:n]


def highest_confidence_at(
    curves: Sequence[Curves], areas: Sequence[float] = (0.25, 0.5, 0.75, 1.0)
) -> dict[float, float]:
    """LiMA's "average highest confidence @p": mean over images of the best insertion score with at
    most ``p`` of the area revealed (:func:`xattr_nb.metrics.highest_confidence`), for each ``p``."""
    curves = list(curves)
    if not curves or not all(isinstance(c, Curves) for c in curves):
        raise InputError("`curves` must be a non-empty list of Curves (or a CurveSet)")
    return {float(a): sum(highest_confidence(c, max_area=float(a)) for c in curves) / len(curves) for a in areas}


# ============================================================================================
# This paper's figures
# ============================================================================================


def _gray(x: torch.Tensor) -> np.ndarray:
    g = x.detach().float().cpu().mean(0)
    lo, hi = float(g.min()), float(g.max())
    return ((g - lo) / max(hi - lo, 1e-12)).numpy() if lo < 0 or hi > 1 else g.numpy()


def _rgb(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        x = (x - lo) / max(hi - lo, 1e-12)
    return x.permute(1, 2, 0).numpy() if x.shape[0] == 3 else x[0].numpy()


def _region_ids(regions: torch.Tensor) -> torch.Tensor:
    return regions.long().argmax(0).cpu()


def show_regions(image: torch.Tensor, regions: torch.Tensor, distances: torch.Tensor, *, title: str = "") -> Figure:
    """The regions of one image ``[C, H, W]`` (numbered, outlined) beside their effectiveness distances
    ``[R, R]`` (:func:`region_distances`: the angle between the embeddings of single-region images)."""
    x = check_tensor(image, "image", ndim=3, dtype="float", layout="[C, H, W]")
    regions = check_regions(regions, hw=tuple(x.shape[1:]))
    r = regions.shape[0]
    d = check_tensor(distances, "distances", shape=(r, r), dtype="float", layout="[R, R]").detach().cpu()
    ids = _region_ids(regions)
    with plots.style():
        fig = plots.figure(7.0, 3.0)
        a1, a2 = fig.subplots(1, 2)
        a1.imshow(_rgb(x), cmap=None if x.shape[0] == 3 else "gray")
        for k in range(r):
            cy, cx = torch.nonzero(ids == k).float().mean(0).tolist()
            a1.text(cx, cy, str(k), ha="center", va="center", color="white", fontsize=8)
        a1.contour(ids.numpy(), levels=np.arange(r) + 0.5, colors="white", linewidths=0.5)
        a1.set_title(title or "regions")
        im = a2.imshow(d.numpy(), cmap="viridis")
        a2.set_title("d_ij between single-region images")
        a2.set_xlabel("region j")
        a2.set_ylabel("region i")
        fig.colorbar(im, ax=a2, shrink=0.8)
        for a in (a1, a2):
            a.grid(False)
        a1.set_xticks([])
        a1.set_yticks([])
    return plots.show(fig)


def show_ranking(
    image: torch.Tensor, ranking: Ranking, regions: torch.Tensor, target: int, *, label: str = ""
) -> Figure:
    """One search, shown: each region's rank (light = first), LiMA's map (:func:`attribution_map`) over the
    grey image, and the insertion/deletion curves its own evaluations give (:func:`curves_from_ranking`)."""
    x = check_tensor(image, "image", ndim=3, dtype="float", layout="[C, H, W]")
    regions = check_regions(regions, hw=tuple(x.shape[1:]))
    free = curves_from_ranking(ranking, regions, target)
    r = regions.shape[0]
    rank = torch.empty(r)
    rank[ranking.order.cpu()] = torch.arange(r).float()
    ids = _region_ids(regions)
    with plots.style():
        fig = plots.figure(9.5, 2.9)
        a1, a2, a3 = fig.subplots(1, 3)
        a1.imshow(rank[ids].numpy(), cmap="magma_r")
        a1.set_title("rank (light = first)")
        a2.imshow(_gray(x), cmap="gray")
        a2.imshow(attribution_map(ranking, regions).cpu().numpy(), cmap="inferno", alpha=0.6)
        a2.set_title("LiMA map")
        for a in (a1, a2):
            a.set_xticks([])
            a.set_yticks([])
            a.grid(False)
        a3.plot(free.area.numpy(), free.insertion.numpy(), label=f"insertion (AUC {free.insertion_auc:.2f})")
        a3.plot(free.area.numpy(), free.deletion.numpy(), label=f"deletion (AUC {free.deletion_auc:.2f})")
        a3.set_xlabel("area revealed / removed")
        a3.set_ylabel(f"p({label or target})")
        a3.legend(fontsize=7)
    return plots.show(fig)


# ============================================================================================
# Full scale: a CLIP zero-shot classifier (LiMA-CLIP)
# ============================================================================================

#: A few of CLIP's ImageNet prompt templates (the paper averages the 80 of the CLIP repo).
CLIP_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a close-up photo of a {}.",
    "a rendering of a {}.",
    "a cropped photo of the {}.",
    "itap of a {}.",
)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _pooled(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ZeroShotCLIP(nn.Module):
    """A CLIP model as a classifier: ``logits = scale * <g(x) / |g(x)|, t_c>`` over fixed class prototypes.

    ``t_c`` is the normalised mean text embedding of class ``c`` over prompt templates, so
    ``softmax(logits)`` is LiMA-CLIP's ``p(c | x)``. Images come in ``[0, 1]`` (masked with a black
    baseline, as LiMA does) and are resized and normalised with CLIP's statistics inside;
    :meth:`features` is the normalised image embedding (the effectiveness term's ``e``).
    """

    def __init__(self, clip: nn.Module, prototypes: torch.Tensor, *, image_size: int = 224, scale: float = 100.0):
        super().__init__()
        self.clip = clip
        p = check_tensor(prototypes, "prototypes", ndim=2, dtype="float", layout="[n_classes, D]")
        self.register_buffer("prototypes", p / p.norm(dim=1, keepdim=True).clamp_min(1e-12))
        self.register_buffer("mean", torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_CLIP_STD).view(1, 3, 1, 1))
        self.image_size = check_int(image_size, "image_size", low=8)
        self.scale = check_float(scale, "scale", low=0.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_tensor(x, "x", ndim=4, dtype="float", layout="[B, 3, H, W]")
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        g = _pooled(self.clip.get_image_features(pixel_values=(x - self.mean) / self.std))
        return g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.features(x) @ self.prototypes.T


def load_zero_shot_clip(
    name_or_path: str | os.PathLike,
    class_names: Sequence[str],
    *,
    templates: Sequence[str] = CLIP_TEMPLATES,
    device: str = "cpu",
    scale: float = 100.0,
) -> ZeroShotCLIP:
    """A :class:`ZeroShotCLIP` from a Hugging Face CLIP (``"openai/clip-vit-large-patch14"``, the
    paper's; or a local ``save_pretrained`` folder), offline first, in eval mode on ``device``."""
    from transformers import AutoTokenizer, CLIPModel

    names = list(class_names) if not isinstance(class_names, str) else []
    if not names or not all(isinstance(c, str) and c.strip() for c in names):
        raise InputError("`class_names` must be a non-empty list of non-empty strings")
    temps = list(templates) if not isinstance(templates, str) else []
    if not temps or not all(isinstance(t, str) and "{}" in t for t in temps):
        raise InputError("`templates` must be a non-empty list of strings with a '{}' for the class name")
    tok = from_pretrained_offline(AutoTokenizer.from_pretrained, name_or_path, "tokenizer", None)
    clip = from_pretrained_offline(CLIPModel.from_pretrained, name_or_path, "CLIP model", None)
    dev = pick_device(device)
    clip = clip.to(dev).eval()
    size = int(getattr(clip.config.vision_config, "image_size", 224))
    protos = []
    with torch.no_grad():
        for c in names:
            batch = tok([t.format(c) for t in temps], padding=True, return_tensors="pt").to(dev)
            t = _pooled(clip.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
            t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
            protos.append(t.mean(0))
    return ZeroShotCLIP(clip, torch.stack(protos), image_size=size, scale=scale).to(dev).eval()

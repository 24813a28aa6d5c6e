"""Out-of-distribution detection: scores and the metrics that compare them.

**One convention, everywhere: a higher score means more in-distribution (ID).** The metrics take the
ID and the OoD scores as two separate arguments, ``id_scores`` and ``ood_scores``, so there is no
label vector whose orientation could be flipped, and the ID examples are the positive class
(OpenOOD v1.5, MCM, NegLabel). Every score function here returns a score in that orientation. A score
where lower means ID (a raw energy, a distance to a prototype) must be negated before it comes in;
:func:`ood_metrics` says in its output when the AUROC is below 0.5, the usual sign of a flipped score.

Metrics (scikit-learn underneath):

- :func:`auroc`: ``roc_auc_score`` with ID = 1.
- :func:`fpr_at_tpr` (FPR95 by default): the false-positive rate (the share of OoD examples accepted
  as ID) at the first threshold where the true-positive rate (the share of ID examples kept) is
  at least ``tpr``, read off ``roc_curve(drop_intermediate=False)``, as OpenOOD does
  (``fpr[argmax(tpr >= 0.95)]``). The older ODIN/Hendrycks helper takes the point *nearest* to
  95% recall instead; the two differ by at most one step of the curve.
- :func:`aupr_in` / :func:`aupr_out`: ``average_precision_score`` with ID positive (scores as they
  are) and with OoD positive (scores negated). Average precision is the step-wise area under the
  precision-recall curve; OpenOOD's trapezoid over ``precision_recall_curve`` can read slightly higher.

Scores (written here, a few lines of torch each; inputs ``[N, ...]`` batches, outputs ``[N]`` float):

- :func:`mcm_score`: Maximum Concept Matching (Ming et al. 2022): ``max_c softmax_c(cos(u, v_c) / τ)``
  over the ID class text embeddings, τ = 1 by default (the MCM and CMA code).
- :func:`neglabel_score`: NegLabel (Jiang et al. 2024) without grouping, as the CMA code uses it:
  the softmax mass of the ID labels against ID + negative labels, τ = 0.01.
- :func:`energy_score`: the negative free energy ``T · logsumexp(logits / T)`` (Liu et al. 2020),
  i.e. ``-E(x)``, so that higher = ID.
- :func:`max_logit_score`: ``max_c logits_c`` (Hendrycks et al. 2022, MaxLogit).

Vision-language helpers (CMA, paper 21):

- :func:`mine_negatives`: NegMining (Jiang et al. 2024): the ``m`` candidate labels whose
  ``percentile``-quantile cosine to the ID labels is lowest (the farthest from every ID label).
- :func:`modality_gap`: ``‖mean_i u_i − mean_c v_c‖`` of unit image and class-text features, and the
  mean own-class cosine ``cos(u_i, v_{y_i})`` when labels are given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xattr_nb.checks import InputError, check_float, check_int, check_tensor

__all__ = [
    "aupr_in",
    "aupr_out",
    "auroc",
    "energy_score",
    "fpr_at_tpr",
    "max_logit_score",
    "mcm_score",
    "mine_negatives",
    "modality_gap",
    "neglabel_score",
    "ood_metrics",
]


def _scores(v: Any, name: str) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
    elif isinstance(v, (list, tuple)):
        try:
            v = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"`{name}` must be a 1-D array of numbers [N]; got a list that is not: {exc}") from None
    if isinstance(v, np.ndarray) and v.dtype == object:
        raise InputError(f"`{name}` must be a 1-D array of numbers [N]; got an object array")
    t = check_tensor(v, name, ndim=1, layout="[N] (one score per example, higher = more in-distribution)")
    if t.dtype == torch.bool or t.is_complex():
        raise InputError(f"`{name}` must hold real scores; got {t.dtype}")
    return t.double().numpy()


def _labelled(id_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ID = 1 and the concatenated scores."""
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    y = np.concatenate([np.ones(len(s_in), dtype=int), np.zeros(len(s_out), dtype=int)])
    return y, np.concatenate([s_in, s_out])


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve with ID as the positive class (``sklearn.metrics.roc_auc_score``):
    the probability that a random ID example scores above a random OoD one (ties count half)."""
    from sklearn.metrics import roc_auc_score

    y, s = _labelled(id_scores, ood_scores)
    return float(roc_auc_score(y, s))


def fpr_at_tpr(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """FPR at the first threshold where TPR ≥ ``tpr`` (FPR95 by default), ID positive.

    Reads the full ROC curve (``sklearn.metrics.roc_curve`` with ``drop_intermediate=False``, so no
    point is skipped) and returns ``fpr[argmax(tpr_curve >= tpr)]``, OpenOOD's definition: keep at
    least ``tpr`` of the ID examples, and report the share of OoD examples that pass as well.
    """
    from sklearn.metrics import roc_curve

    level = check_float(tpr, "tpr", low=0.0, high=1.0)
    if level == 0.0:
        raise InputError("`tpr` must lie in (0, 1]; got 0.0")
    y, s = _labelled(id_scores, ood_scores)
    fpr, tpr_curve, _ = roc_curve(y, s, drop_intermediate=False)
    return float(fpr[int(np.argmax(tpr_curve >= level - 1e-12))])


def aupr_in(id_scores: Any, ood_scores: Any) -> float:
    """Area under the precision-recall curve with ID as the positive class
    (``sklearn.metrics.average_precision_score`` on the scores as they are)."""
    from sklearn.metrics import average_precision_score

    y, s = _labelled(id_scores, ood_scores)
    return float(average_precision_score(y, s))


def aupr_out(id_scores: Any, ood_scores: Any) -> float:
    """Area under the precision-recall curve with OoD as the positive class
    (``sklearn.metrics.average_precision_score`` on the negated scores)."""
    from sklearn.metrics import average_precision_score

    y, s = _labelled(id_scores, ood_scores)
    return float(average_precision_score(1 - y, -s))


def ood_metrics(id_scores: Any, ood_scores: Any, *, tpr: float = 0.95) -> dict[str, float]:
    """``auroc``, ``fpr95`` (FPR at ``tpr``), ``aupr_in``, ``aupr_out``, ``n_id``, ``n_ood`` in one dict, and
    ``flipped`` (1.0 when the AUROC is below 0.5: the score may rank OoD above ID, i.e. lower = ID;
    negate it if so, the convention here is higher = more in-distribution)."""
    out = {
        "auroc": auroc(id_scores, ood_scores),
        "fpr95": fpr_at_tpr(id_scores, ood_scores, tpr),
        "aupr_in": aupr_in(id_scores, ood_scores),
        "aupr_out": aupr_out(id_scores, ood_scores),
        "n_id": float(len(_scores(id_scores, "id_scores"))),
        "n_ood": float(len(_scores(ood_scores, "ood_scores"))),
    }
    out["flipped"] = float(out["auroc"] < 0.5)
    return out


def _temperature(t: Any) -> float:
    v = check_float(t, "temperature", low=0.0)
    if v == 0.0:
        raise InputError("`temperature` must be > 0; got 0.0")
    return v


def _features(x: Any, name: str, dim: int | None = None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    t = check_tensor(x, name, ndim=2, dtype="float", layout="[N, D]")
    if dim is not None and t.shape[1] != dim:
        raise InputError(f"`{name}` must have {dim} features like `image_features`; got {t.shape[1]}")
    if bool((t.norm(dim=1) == 0).any()):
        raise InputError(f"`{name}` has an all-zero row: its cosine similarity is undefined")
    return t


def _cosines(image_features: Any, text_features: Any, text_name: str) -> torch.Tensor:
    u = _features(image_features, "image_features")
    v = _features(text_features, text_name, u.shape[1])
    u, v = u.double(), v.to(u.device).double()
    return torch.nn.functional.normalize(u, dim=1) @ torch.nn.functional.normalize(v, dim=1).T


def mcm_score(image_features: Any, text_features: Any, *, temperature: float = 1.0) -> torch.Tensor:
    """Maximum Concept Matching, ``[N]`` float64: ``max_c softmax_c(cos(u, v_c) / temperature)``.

    ``image_features`` ``[N, D]`` and the ID class ``text_features`` ``[C, D]`` are L2-normalised here,
    so raw CLIP embeddings can come in. ``temperature=1`` is the MCM paper's and CMA code's default
    (with cosines in [-1, 1] the scores then sit near ``1/C``; the ranking is what matters).
    Higher = more in-distribution.
    """
    t = _temperature(temperature)
    return torch.softmax(_cosines(image_features, text_features, "text_features") / t, dim=1).max(dim=1).values


def neglabel_score(
    image_features: Any, text_features: Any, negative_features: Any, *, temperature: float = 0.01
) -> torch.Tensor:
    """NegLabel without grouping, ``[N]`` float64:
    ``Σ_ID exp(cos(u, v_c)/τ) / (Σ_ID exp(cos(u, v_c)/τ) + Σ_neg exp(cos(u, ñ_n)/τ))``.

    ``text_features`` ``[C, D]`` are the ID labels' embeddings, ``negative_features`` ``[M, D]`` the
    mined negative labels' (mining them is the notebook's job); τ = 0.01 as in NegLabel and the CMA
    code. Computed as a log-sum-exp ratio, stable at small τ. Higher = more in-distribution.
    """
    t = _temperature(temperature)
    pos = _cosines(image_features, text_features, "text_features") / t
    neg = _cosines(image_features, negative_features, "negative_features") / t
    lse_pos = torch.logsumexp(pos, dim=1)
    return torch.exp(lse_pos - torch.logsumexp(torch.cat([pos, neg], dim=1), dim=1))


def _logits(logits: Any) -> torch.Tensor:
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    return check_tensor(logits, "logits", ndim=2, dtype="float", layout="[N, C]")


def energy_score(logits: Any, *, temperature: float = 1.0) -> torch.Tensor:
    """Negative free energy, ``[N]``: ``T · logsumexp(logits / T)`` (Liu et al. 2020, ``-E(x; f)``).

    The energy itself is lower for ID data; this returns its negation so that, like every score here,
    higher = more in-distribution. ``logits`` ``[N, C]``.
    """
    t = _temperature(temperature)
    return t * torch.logsumexp(_logits(logits) / t, dim=1)


def max_logit_score(logits: Any) -> torch.Tensor:
    """The largest logit, ``[N]`` (MaxLogit). ``logits`` ``[N, C]``. Higher = more in-distribution."""
    return _logits(logits).max(dim=1).values


def mine_negatives(candidate_features: Any, id_features: Any, m: int, *, percentile: float = 0.95) -> torch.Tensor:
    """NegMining (NegLabel, Jiang et al. 2024): indices ``[m]`` of the candidate labels farthest from the ID labels.

    Each candidate's closeness to the ID label set is the ``percentile``-quantile of its cosines to the
    ``C`` ID labels (``torch.quantile``, linear interpolation; 0.95 as in the NegLabel code, i.e. the
    paper's η = 0.05 percentile of the negative cosines: a robust maximum). The ``m`` candidates with the
    lowest closeness are returned, least ID-like first (ties by index). ``candidate_features`` ``[K, D]``,
    ``id_features`` ``[C, D]``; both are L2-normalised here.
    """
    c = _features(candidate_features, "candidate_features")
    v = _features(id_features, "id_features").to(c.device)
    if v.shape[1] != c.shape[1]:
        raise InputError(f"`id_features` must have {c.shape[1]} features like `candidate_features`; got {v.shape[1]}")
    m = check_int(m, "m", low=1, high=c.shape[0])
    q = check_float(percentile, "percentile", low=0.0, high=1.0)
    norm = torch.nn.functional.normalize
    cos = norm(c.double(), dim=1) @ norm(v.double(), dim=1).T
    close = torch.quantile(cos, q, dim=1)
    return torch.sort(close, stable=True).indices[:m].cpu()


def modality_gap(image_features: Any, text_features: Any, labels: Any = None) -> dict[str, float]:
    """The modality gap between unit image features ``[N, D]`` and class text features ``[C, D]``.

    ``gap`` = ``‖mean_i u_i − mean_c v_c‖`` (both sets L2-normalised first, each class counted once), and,
    with ``labels`` ``[N]`` indexing the ``C`` classes, ``own_cos`` = mean ``cos(u_i, v_{y_i})`` and
    ``other_cos`` = mean over images of the mean ``cos(u_i, v_c)`` over the other classes ``c ≠ y_i``
    (``own_cos − other_cos`` separates alignment from a collapse that raises every cosine; without
    labels both are NaN).
    """
    u = _features(image_features, "image_features")
    v = _features(text_features, "text_features", u.shape[1]).to(u.device)
    u = torch.nn.functional.normalize(u.double(), dim=1)
    v = torch.nn.functional.normalize(v.double(), dim=1)
    out = {"gap": float((u.mean(0) - v.mean(0)).norm()), "own_cos": float("nan"), "other_cos": float("nan")}
    if labels is not None:
        if isinstance(labels, np.ndarray):
            labels = torch.from_numpy(labels)
        y = check_tensor(labels, "labels", ndim=1, dtype="int", layout="[N] class indices")
        if len(y) != len(u):
            raise InputError(f"`labels` must have one entry per image ({len(u)}); got {len(y)}")
        if int(y.min()) < 0 or int(y.max()) >= len(v):
            raise InputError(f"`labels` must index the {len(v)} rows of `text_features`")
        cos = u @ v.T
        own = cos.gather(1, y.to(u.device)[:, None])[:, 0]
        out["own_cos"] = float(own.mean())
        if len(v) > 1:
            out["other_cos"] = float(((cos.sum(1) - own) / (len(v) - 1)).mean())
    return out

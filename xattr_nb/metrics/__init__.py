"""Metrics that score attributions, split by concern; every public name is re-exported here.

| module | holds |
|---|---|
| :mod:`~xattr_nb.metrics.curves` | insertion/deletion curves over images (region and 2%-pixel protocols), ``auc``, :class:`Curves`, :class:`CurveSet`, LiMA's ``highest_confidence`` |
| :mod:`~xattr_nb.metrics.localization` | pointing games (all / any maximum), energy pointing game, inside mass, mask IoU, GridPG / DiFull grid metrics |
| :mod:`~xattr_nb.metrics.text` | ERASER comprehensiveness and sufficiency, token curves, AOPC over tokens, soft (Zhao & Aletras) variants |
| :mod:`~xattr_nb.metrics.agreement` | rank agreement of two attributions: Spearman, Kendall, top-k overlap |
| :mod:`~xattr_nb.metrics.concepts` | matching latents to ground-truth factors: matched correlations, MCC |
| :mod:`~xattr_nb.metrics.stats` | percentile bootstrap intervals: of a mean, of a paired difference between two methods |
| :mod:`~xattr_nb.metrics.label_noise` | learning under label noise: memorisation of corrupted labels, noisy-label detection (precision, recall, AUROC) |
| :mod:`~xattr_nb.metrics.robustness` | max-sensitivity, rank stability under noise, class recall under channel ablation |
| :mod:`~xattr_nb.metrics.ranking` | top-k ranking: Recall@k (Mult-VAE's ``min(k, #relevant)`` normaliser), NDCG@k, MRR, hit rate |
| :mod:`~xattr_nb.metrics.ood` | OoD detection (higher score = more in-distribution): AUROC, FPR95, AUPR-in/out; MCM, NegLabel, energy, max-logit scores; NegMining, modality gap |
| :mod:`~xattr_nb.metrics.generation` | generated images: ``fid_proxy`` (Fréchet distance of features after PCA), ``template_judge`` (non-neural shape/colour judge of 32×32 ShapesWorld images) |
| :mod:`~xattr_nb.metrics.confidence` | calibration of probabilities (not the ledger's calibration rule): ECE (equal-width / equal-mass bins), reliability-diagram data, Brier score |

Every function takes raw tensors or an :class:`~xattr_nb.attribution.Attribution`, validates its
inputs (NaN scores, mismatched shapes and empty inputs raise :class:`~xattr_nb.checks.InputError`)
and is batch-aware. Library code is used where it exists (``sklearn.metrics.auc`` for the
trapezoid, ``scipy.stats`` for rank correlations, ``scipy.optimize`` for matching, captum for
max-sensitivity); what no library offers in this form (the region and 2%-pixel insertion/deletion
protocols, pointing games, ERASER erasure metrics) is written here. The ranking, OoD and confidence
metrics take torch tensors or numpy arrays and use ``sklearn.metrics`` (``ndcg_score``,
``roc_auc_score``, ``roc_curve``, ``average_precision_score``, ``brier_score_loss``); Recall@k, MRR,
hit rate, ECE and the OoD scores are written here. ``from xattr_nb.metrics import X`` is the stable
spelling; the submodules are where to read the code.
"""

from xattr_nb.metrics.agreement import kendall, spearman, topk_overlap
from xattr_nb.metrics.concepts import matched_correlations, mcc
from xattr_nb.metrics.confidence import brier_score, ece, reliability_diagram
from xattr_nb.metrics.curves import (
    Curves,
    CurveSet,
    auc,
    highest_confidence,
    insertion_deletion,
    insertion_deletion_batch,
    order_from_scores,
    region_scores,
)
from xattr_nb.metrics.generation import Judgement, fid_proxy, frechet_distance, template_judge
from xattr_nb.metrics.label_noise import detection_scores, memorization_stats
from xattr_nb.metrics.localization import (
    energy_pointing_game,
    grid_accuracy,
    grid_cell_mass,
    grid_localization,
    inside_mass,
    localization_summary,
    mask_iou,
    pointing_game,
)
from xattr_nb.metrics.ood import (
    aupr_in,
    aupr_out,
    auroc,
    energy_score,
    fpr_at_tpr,
    max_logit_score,
    mcm_score,
    mine_negatives,
    modality_gap,
    neglabel_score,
    ood_metrics,
)
from xattr_nb.metrics.ranking import hit_rate_at_k, mrr, ndcg_at_k, ndcg_at_k_batch, recall_at_k, recall_at_k_batch
from xattr_nb.metrics.robustness import class_recall, max_sensitivity, noise_spearman
from xattr_nb.metrics.stats import bootstrap_ci, bootstrap_delta
from xattr_nb.metrics.text import (
    ERASER_BINS,
    aopc,
    comprehensiveness,
    soft_comprehensiveness,
    soft_sufficiency,
    sufficiency,
    token_curves,
    token_deletion_curve,
)

__all__ = [
    "ERASER_BINS",
    "CurveSet",
    "Curves",
    "Judgement",
    "aopc",
    "auc",
    "aupr_in",
    "aupr_out",
    "auroc",
    "bootstrap_ci",
    "bootstrap_delta",
    "brier_score",
    "class_recall",
    "comprehensiveness",
    "detection_scores",
    "ece",
    "energy_pointing_game",
    "energy_score",
    "fid_proxy",
    "fpr_at_tpr",
    "frechet_distance",
    "grid_accuracy",
    "grid_cell_mass",
    "grid_localization",
    "highest_confidence",
    "hit_rate_at_k",
    "insertion_deletion",
    "insertion_deletion_batch",
    "inside_mass",
    "kendall",
    "localization_summary",
    "mask_iou",
    "matched_correlations",
    "max_logit_score",
    "max_sensitivity",
    "mcc",
    "mcm_score",
    "memorization_stats",
    "mine_negatives",
    "modality_gap",
    "mrr",
    "ndcg_at_k",
    "ndcg_at_k_batch",
    "neglabel_score",
    "noise_spearman",
    "ood_metrics",
    "order_from_scores",
    "pointing_game",
    "recall_at_k",
    "recall_at_k_batch",
    "region_scores",
    "reliability_diagram",
    "soft_comprehensiveness",
    "soft_sufficiency",
    "spearman",
    "sufficiency",
    "template_judge",
    "token_curves",
    "token_deletion_curve",
    "topk_overlap",
]

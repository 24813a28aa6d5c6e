"""The metrics package: every public name is re-exported from ``xattr_nb.metrics``, once, from one module.

The metrics themselves are tested by concern: ``test_metrics_curves``, ``test_metrics_localization``
(and ``test_grid_metrics``), ``test_metrics_text``, ``test_metrics_agreement``, ``test_metrics_stats``,
``test_metrics_robustness``, ``test_metrics_ranking``, ``test_metrics_ood``, ``test_metrics_calibration``
(the ``confidence`` module); ``mcc`` and ``matched_correlations`` in ``test_probes``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import xattr_nb.metrics as metrics

MODULES = (
    "agreement",
    "concepts",
    "confidence",
    "curves",
    "generation",
    "label_noise",
    "localization",
    "ood",
    "ranking",
    "robustness",
    "stats",
    "text",
)

# Every name `from xattr_nb.metrics import ...` offered before the split into a package.
BEFORE_THE_SPLIT = [
    "ERASER_BINS",
    "CurveSet",
    "Curves",
    "aopc",
    "auc",
    "comprehensiveness",
    "energy_pointing_game",
    "grid_accuracy",
    "grid_cell_mass",
    "grid_localization",
    "highest_confidence",
    "insertion_deletion",
    "insertion_deletion_batch",
    "inside_mass",
    "kendall",
    "localization_summary",
    "mask_iou",
    "matched_correlations",
    "mcc",
    "order_from_scores",
    "pointing_game",
    "region_scores",
    "soft_comprehensiveness",
    "soft_sufficiency",
    "spearman",
    "sufficiency",
    "token_curves",
    "token_deletion_curve",
    "topk_overlap",
]


def test_every_public_name_comes_from_exactly_one_module():
    owner: dict[str, str] = {}
    for name in MODULES:
        mod = importlib.import_module(f"xattr_nb.metrics.{name}")
        for public in mod.__all__:
            if public.isupper() and public != "ERASER_BINS":
                continue  # module constants such as stats.STATISTICS stay in their module
            assert public not in owner, f"{public} is public in both {owner.get(public)} and {name}"
            owner[public] = name
            assert getattr(metrics, public) is getattr(mod, public), public
    assert sorted(owner) == sorted(metrics.__all__)


def test_names_from_before_the_split_still_import():
    missing = [n for n in BEFORE_THE_SPLIT if not hasattr(metrics, n)]
    assert missing == []
    assert set(BEFORE_THE_SPLIT) <= set(metrics.__all__)


def test_importing_metrics_loads_no_later_layer():
    code = (
        "import sys, xattr_nb.metrics; "
        "print(sorted(m for m in sys.modules if m.startswith(('xattr_nb.methods', 'xattr_nb.plots', "
        "'xattr_nb.widgets', 'xattr_nb.training', 'xattr_nb.cli'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

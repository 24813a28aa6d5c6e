"""Interactive views for notebooks, with static fallbacks: :class:`TokenHeatmap`, :class:`ImageHeatmap`,
:class:`CircuitView`.

Each is an `anywidget <https://anywidget.dev>`_ whose front end is a plain ES module in the
repository's ``widgets/`` folder (packed into the wheel as ``xattr_nb/_widgets``): no build step,
nothing fetched from the network. In JupyterLab 4, Notebook 7 and VS Code the view is live and
two-way (``selected`` traitlets carry clicks back to Python). Where no widget manager runs (GitHub,
nbconvert HTML, a papermill output opened elsewhere) the output's ``text/html`` fallback shows a
static picture of the same data, and ``text/plain`` a deterministic one-line summary.
"""

from __future__ import annotations

from xattr_nb.widgets._common import asset_dir, css_rgb_of, diverging_rgb, scale_limit
from xattr_nb.widgets.circuit import CircuitView, circuit_layout
from xattr_nb.widgets.images import ImageHeatmap, maps_from_attribution
from xattr_nb.widgets.tokens import TokenHeatmap, merge_subwords, rank_by_magnitude

__all__ = [
    "CircuitView",
    "ImageHeatmap",
    "TokenHeatmap",
    "asset_dir",
    "circuit_layout",
    "css_rgb_of",
    "diverging_rgb",
    "maps_from_attribution",
    "merge_subwords",
    "rank_by_magnitude",
    "scale_limit",
]

"""The committed notebooks follow DESIGN.md: reads the executed .ipynb files, runs nothing.

- one `parameters` cell with seed, device and scale, and no committed `injected-parameters` cell;
- "Results at a glance" right under the title, equal to the ledger rows the outputs carry;
- every code cell that builds a figure or a widget has an image (or the widget's HTML fallback);
- no pyplot in notebooks or method modules (figures come from `xattr_nb.plots`);
- the last code cell prints the notebook's wall time and CPU time;
- the ledger is built with ``scale=scale`` (bounds calibrated at "cpu" are never asserted at "full").
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from xattr_nb.ledger import GLANCE_START, glance_is_current, read_claims

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Figure helpers of xattr_nb.plots and the widgets: a cell calling one must show a figure.
FIGURE_CALL = re.compile(
    r"\b(plots\.(image_heatmaps|image_row|curves|comparison_bars|token_heatmap|signed_matrix|layer_position_grid|"
    r"estimate_scatter|show)|TokenHeatmap|ImageHeatmap|CircuitView)\("
)
SHOWN = ("image/png", "image/svg+xml", "text/html", "application/vnd.jupyter.widget-view+json")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.stem)
def nb(request) -> nbformat.NotebookNode:
    return _read(request.param)


def test_parameters_cell_and_no_injected_parameters(nb):
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one code cell tagged 'parameters'"
    for name in ("seed", "device", "scale"):
        assert re.search(rf"^{name}\s*=", params[0].source, re.M), f"parameters cell does not set {name}"
    assert not [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
    # papermill skips (with a warning) any line holding two "=", so `-p NAME` could not reach it
    unparsed = [line for line in params[0].source.splitlines() if line.count("=") > 1]
    assert not unparsed, f"papermill cannot read these parameter lines (an '=' in the comment?): {unparsed}"


def test_ledger_knows_the_scale(nb):
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    ledgers = re.findall(r"Ledger\(([^)]*)\)", code)
    if not ledgers:
        pytest.skip("states no claim through the ledger yet")
    # the notebook's ledger (the first) asserts its calibrated bounds at scale "cpu" only
    assert "scale=scale" in ledgers[0], f"the ledger must be built with scale=scale; got Ledger({ledgers[0]})"


def test_glance_table_is_under_the_title_and_current(nb):
    if not read_claims(nb):
        pytest.skip("states no claim through the ledger yet")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("#")
    assert GLANCE_START in nb.cells[1].source, "the glance table must be the cell right under the title"
    assert glance_is_current(nb), "the glance table differs from the ledger rows in the outputs: run `xattr-nb record`"


def test_cells_that_build_figures_show_them(nb):
    missing = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code" or not FIGURE_CALL.search(c.source):
            continue
        if not any(set(o.get("data", {})) & set(SHOWN) for o in c.outputs):
            missing.append(i)
    assert not missing, f"cells {missing} build a figure or widget that never shows"


def test_no_pyplot_in_notebooks(nb):
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"matplotlib\.pyplot|\bplt\.", code), "use xattr_nb.plots, not pyplot"


def test_wall_and_cpu_time_printed_last(nb):
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    assert "wall time" in text and "CPU time" in text, "the last code cell prints wall time and CPU time"


def test_no_pyplot_in_method_modules():
    offenders = [
        p.name for p in (ROOT / "xattr_nb" / "methods").glob("*.py") if re.search(r"matplotlib\.pyplot", p.read_text())
    ]
    assert not offenders, f"method modules draw through xattr_nb.plots, not pyplot: {offenders}"


def test_readme_table_is_generated_from_the_ledgers():
    from xattr_nb import cli

    assert cli.main(["readme", "--check"]) == 0, "README's notebook table is stale: run `xattr-nb readme`"

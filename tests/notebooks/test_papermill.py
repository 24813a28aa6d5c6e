"""The rerun path: a notebook executed by papermill with overridden parameters uses them."""

from pathlib import Path

import nbformat
import papermill as pm
import pytest

from xattr_nb.runtime import read_records

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.mark.slow
def test_tour_rerun_with_overridden_parameters(tmp_path):
    out = tmp_path / "tour.out.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS / "00_tour.ipynb"),
        str(out),
        parameters={"seed": 1, "n_eval": 16, "ig_steps": 8},
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
    )
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "seed = 1" in injected[0].source and "n_eval = 16" in injected[0].source
    recorded = read_records(nb)
    # The values the notebook recorded prove the injected parameters reached the code below them.
    assert recorded["tour.seed"] == 1
    assert recorded["tour.n_eval_images"] == 16
    assert recorded["tour.ig_steps"] == 8

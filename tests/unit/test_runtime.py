import json

import nbformat
import numpy as np
import pytest
import torch

from xattr_nb import InputError
from xattr_nb.runtime import RECORD_MIMETYPE, Cost, pick_device, read_records, record, records, seed_everything


def test_seed_everything_repeats_draws():
    g1 = seed_everything(3)
    a = (torch.rand(3), np.random.rand(2), torch.rand(2, generator=g1))
    g2 = seed_everything(3)
    b = (torch.rand(3), np.random.rand(2), torch.rand(2, generator=g2))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])
    seed_everything(4)
    assert not torch.equal(torch.rand(3), a[0])


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0"])
def test_seed_rejects_bad_seed(seed):
    with pytest.raises(InputError, match="seed"):
        seed_everything(seed)


def test_pick_device_auto_and_cpu():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")


def test_pick_device_errors_name_the_argument():
    with pytest.raises(InputError, match="device"):
        pick_device("tpu-ish")
    with pytest.raises(InputError, match="device"):
        pick_device(0)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            pick_device("cuda")


def test_record_round_trip_through_a_notebook(capsys):
    value = record("tour.auc", np.float32(0.25), unit="AUC", display=False)
    assert value == np.float32(0.25)
    assert records()["tour.auc"] == 0.25
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={RECORD_MIMETYPE: {"name": "a", "value": 1.5}, "text/plain": "a"}),
        nbformat.v4.new_output("stream", text="noise"),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), cell]
    assert read_records(nb) == {"a": 1.5}
    assert json.loads(json.dumps(records()))  # JSON-serialisable


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), {"a": float("nan")}])
def test_record_rejects_unserialisable_or_nan(value):
    with pytest.raises(InputError, match="record"):
        record("x", value, display=False)


def test_record_rejects_empty_name():
    with pytest.raises(InputError, match="name"):
        record("  ", 1.0, display=False)


def test_cost_adds():
    assert Cost(1, 2, 0.5) + Cost(3, 4, 1.0) == Cost(4, 6, 1.5)


def test_pick_device_accepts_a_torch_device():
    assert pick_device(torch.device("cpu")) == torch.device("cpu")


def test_record_table_records_each_cell_silently():
    from xattr_nb.runtime import record_table, records

    t = record_table({"ig": {"hit": 0.5, "mrr": 0.25}, "saliency": {"hit": 0.125, "mrr": 0.5}}, prefix="demo")
    got = records()
    assert got["demo.hit.ig"] == 0.5 and got["demo.mrr.saliency"] == 0.5 and t.shape == (2, 2)
    flat = record_table({"a": 1.0, "b": 2}, prefix="flat")
    assert records()["flat.b"] == 2 and list(flat.columns) == ["value"]
    with pytest.raises(InputError, match="prefix"):
        record_table({"a": 1.0}, prefix="")
    with pytest.raises(InputError, match="finite"):
        record_table({"a": float("nan")}, prefix="x")


def test_progress_summary_mode_prints_one_final_line(monkeypatch, capsys):
    from xattr_nb.runtime import progress

    monkeypatch.setenv("XATTR_NB_PROGRESS", "summary")
    bar = progress(range(4), desc="fit")
    assert list(bar) == [0, 1, 2, 3]
    bar.set_postfix_str("loss 0.1")  # refreshes draw nothing in summary mode
    out = capsys.readouterr().out
    assert out.startswith("fit: 4/4 in ") and out.count("\n") == 1 and "0%" not in out
    monkeypatch.setenv("XATTR_NB_PROGRESS", "0")
    assert list(progress(range(2), desc="quiet")) == [0, 1] and capsys.readouterr().out == ""


def test_record_table_records_reach_read_records(tmp_path):
    from nbconvert.preprocessors import ExecutePreprocessor

    src = "from xattr_nb.runtime import record_table\nrecord_table({'ig': {'hit': 0.5}, 'sal': {'hit': 0.25}}, prefix='t');"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src)])
    ExecutePreprocessor(timeout=120, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert read_records(nb) == {"t.hit.ig": 0.5, "t.hit.sal": 0.25}
    assert sum("text/html" in o.get("data", {}) for o in nb.cells[0].outputs) == 1  # one table shown

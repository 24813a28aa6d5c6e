"""The claim ledger: the one calibration rule on hand-made values, rows and asserts that agree,
the glance table, and `xattr-nb calibrate` / `record` on a tiny notebook written by the test."""

from __future__ import annotations

import json
import statistics

import nbformat
import pytest

from xattr_nb import cli
from xattr_nb.checks import InputError
from xattr_nb.ledger import (
    GLANCE_START,
    Ledger,
    calibrate_bound,
    glance_is_current,
    glance_markdown,
    read_claims,
    status_counts,
    write_glance,
)

DEV = [0.30, 0.32, 0.34, 0.31, 0.33]  # min 0.30, sd 0.0158 -> floor 0.268


def test_rule_asserts_the_spec_when_the_floor_clears_it():
    assert calibrate_bound(DEV, spec=0.25, null=0.0) == (0.25, "reproduced")


def test_rule_asserts_the_floor_when_only_null_is_cleared():
    floor = 0.30 - 2 * statistics.stdev(DEV)
    bound, status = calibrate_bound(DEV, spec=0.5, null=0.0)
    assert status == "weaker margin" and bound == pytest.approx(floor, abs=1e-3) and bound <= floor


def test_rule_refuses_a_claim_whose_floor_does_not_clear_null():
    assert calibrate_bound([0.02, -0.01, 0.05, 0.0, 0.03], spec=0.1, null=0.0) == (None, "not reproduced")


def test_rule_lower_is_better_mirrors():
    bound, status = calibrate_bound([0.10, 0.12, 0.11], spec=0.2, higher=False)
    assert status == "reproduced" and bound == 0.2
    bound, status = calibrate_bound([0.10, 0.12, 0.11], spec=0.11, null=0.5, higher=False)
    assert status == "weaker margin" and 0.12 < bound < 0.5


@pytest.mark.parametrize(
    ("values", "kw", "match"),
    [
        ([0.1, 0.2], {"spec": 0.1}, "at least 3"),
        ([0.1, 0.2, 0.3], {}, "spec"),
        ([0.1, float("nan"), 0.3], {"spec": 0.1}, "finite"),
    ],
)
def test_rule_rejects_bad_input(values, kw, match):
    with pytest.raises(InputError, match=match):
        calibrate_bound(values, **kw)


def _ledger(values=DEV, spec=0.25, null=0.0) -> Ledger:
    cal = {"gain": {"values": {str(100 + i): v for i, v in enumerate(values)}}}
    return Ledger("99_demo", calibration=cal)


def test_claim_row_and_assert_agree():
    led = _ledger()
    row = led.claim("gain", 0.31, text="method beats baseline", spec=0.25, null=0.0, display=False)
    assert (row.bound, row.status, row.holds) == (0.25, "reproduced", True)
    led.check()
    led = _ledger()
    row = led.claim("gain", 0.2, text="method beats baseline", spec=0.25, null=0.0, display=False)
    assert row.holds is False
    with pytest.raises(AssertionError, match=r"gain = 0.2, asserted >= 0.25"):
        led.check()


def test_uncalibrated_and_not_reproduced_claims_are_not_asserted():
    led = Ledger("99_demo", calibration={})
    row = led.claim("gain", -5.0, text="x", spec=0.1, null=0.0, display=False)
    assert row.status == "not reproduced" and row.bound is None and "calibrate" in row.note
    led.check()  # nothing asserted


def test_another_scale_is_measured_not_asserted():
    led = Ledger("99_demo", calibration={"gain": {"values": dict(enumerate(DEV))}}, scale="full")
    row = led.claim("gain", -5.0, text="x", spec=0.25, null=0.0, display=False)
    assert row.status == "measured, not asserted" and row.bound is None and row.holds is None
    assert "'cpu' only" in row.note
    led.check()  # a figure far below the cpu bound is reported, not asserted
    assert status_counts([row])["measured, not asserted"] == 1
    with pytest.raises(InputError, match="scale"):
        Ledger("99_demo", scale="")


def test_sanity_and_not_tested_rows():
    led = _ledger()
    led.sanity("identity", True, text="cost identity", display=False)
    led.not_tested("big", text="paper-scale gain", why="needs ImageNet", display=False)
    bad = _ledger()
    bad.sanity("identity", False, text="cost identity", display=False)
    with pytest.raises(AssertionError, match="identity"):
        bad.check()
    counts = status_counts(list(led.rows.values()))
    assert counts["sanity"] == 1 and counts["not tested here"] == 1


def test_claim_rejects_nan_and_duplicates():
    led = _ledger()
    with pytest.raises(InputError, match="finite"):
        led.claim("gain", float("nan"), text="x", spec=0.1, display=False)
    led.claim("gain", 0.3, text="x", spec=0.1, display=False)
    with pytest.raises(InputError, match="twice"):
        led.claim("gain", 0.3, text="x", spec=0.1, display=False)


def test_calibrating_env_collects_without_asserting(monkeypatch):
    monkeypatch.setenv("XATTR_NB_CALIBRATING", "1")
    led = _ledger()
    led.claim("gain", -1.0, text="x", spec=0.25, null=0.0, display=False)
    led.check()


def test_glance_table_lists_status_and_bound():
    led = _ledger()
    led.claim("gain", 0.31, text="method | baseline", paper="+0.4", spec=0.25, null=0.0, display=False)
    md = glance_markdown(list(led.rows.values()))
    assert "| method \\| baseline | +0.4 | >= 0.25 | 0.31 | >= 0.25 | reproduced |" in md
    assert "1 reproduced" in md


NOTEBOOK_SOURCE = [
    "# 00 · demo\nA notebook written by the test.",
    "seed = 0\ndevice = 'auto'\nscale = 'cpu'",
    "from xattr_nb.ledger import Ledger\nled = Ledger('00_tour')\n"
    "led.claim('gain', 0.3 + 0.01 * (seed % 7), text='demo gain', spec=0.2, null=0.0)\n"
    "led.sanity('same', 1 + 1 == 2, text='arithmetic')",
    "led.check()",
]


def _write_demo(folder) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(NOTEBOOK_SOURCE[0])]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in NOTEBOOK_SOURCE[1:]]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(folder / "00_tour.ipynb"))


@pytest.mark.slow
def test_calibrate_then_record_a_notebook(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _write_demo(nbdir)
    monkeypatch.setattr(cli, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setenv("XATTR_NB_CALIBRATION_DIR", str(nbdir / "calibration"))  # the kernels read it too
    monkeypatch.delenv("XATTR_NB_CALIBRATING", raising=False)
    assert cli.main(["calibrate", "00", "--seeds", "100", "101", "102"]) == 0
    doc = json.loads((nbdir / "calibration" / "00_tour.json").read_text())
    gain = doc["claims"]["gain"]
    assert gain["values"] == {"100": pytest.approx(0.32), "101": pytest.approx(0.33), "102": pytest.approx(0.34)}
    assert (gain["bound"], gain["status"]) == (0.2, "reproduced")
    monkeypatch.delenv("XATTR_NB_CALIBRATING", raising=False)  # calibrate set it for its kernels
    assert cli.main(["record", "00"]) == 0
    nb = nbformat.read(str(nbdir / "00_tour.ipynb"), as_version=4)
    assert GLANCE_START in nb.cells[1].source and glance_is_current(nb)
    rows = read_claims(nb)
    assert [r["status"] for r in rows] == ["reproduced", "sanity"]
    assert "papermill" not in nb.metadata
    # a stale glance cell is detected
    nb.cells[1].source = nb.cells[1].source.replace("reproduced", "weaker margin")
    assert not glance_is_current(nb)
    assert glance_is_current(write_glance(nb))


def test_glance_names_the_development_seeds_of_the_calibration():
    from xattr_nb.ledger import seeds_phrase

    assert seeds_phrase([100, 101, 102, 103, 104]) == "100–104"
    assert seeds_phrase([104, 100, 101, 102, 103, 105, 106, 107]) == "100–107"
    assert seeds_phrase([100, 102, 105]) == "100, 102, 105"
    led = _ledger()
    led.claim("gain", 0.31, text="x", spec=0.25, null=0.0, display=False)
    assert "development seeds 100–107 " in glance_markdown(list(led.rows.values()), seeds=range(100, 108))
    assert "development seeds 100–104 " in glance_markdown(list(led.rows.values()))


def test_failures_lists_exactly_the_rows_check_would_raise_on(monkeypatch):
    led = _ledger()
    led.claim("gain", 0.2, text="x", spec=0.25, null=0.0, display=False)
    led.sanity("identity", True, text="cost identity", display=False)
    assert led.failures() == ["gain = 0.2, asserted >= 0.25"]
    monkeypatch.setenv("XATTR_NB_CALIBRATING", "1")
    assert _ledger().failures() == []

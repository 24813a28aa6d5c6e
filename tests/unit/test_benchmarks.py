"""benchmarks/: the harness checks agreement before it times, and every module's quick rows agree.

Quick mode only: agreement checks, never a timing, never a timed assert. A module whose peer is not
installed here (quantus, inseq: the `bench` / `bench-inseq` extras) is skipped with the reason.
"""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import harness
from benchmarks.harness import Row, allclose, compare, spearman


class Calls:
    def __init__(self, value):
        self.value, self.n = value, 0

    def __call__(self):
        self.n += 1
        return self.value


def test_a_disagreement_is_a_failed_row_and_is_never_timed():
    ours, peer = Calls(torch.ones(3)), Calls(torch.zeros(3))
    row = compare("x", "w", ours, peer, peer_name="p", agree=allclose(), repeats=5)
    assert (ours.n, peer.n) == (1, 1)  # run once each for the check, then nothing
    assert not row.agree and row.status == "failed"
    assert row.ours_s is None and row.peer_s is None and row.ratio is None
    assert "max abs diff 1.0e+00" in row.agreement


def test_quick_mode_checks_agreement_only():
    ours, peer = Calls(torch.ones(3)), Calls(torch.ones(3))
    row = compare("x", "w", ours, peer, peer_name="p", agree=allclose(), repeats=5, quick=True)
    assert (ours.n, peer.n) == (1, 1)
    assert row.agree and row.ratio is None and row.status == "untimed"


def test_timed_rows_interleave_warm_up_and_repeats():
    order: list[str] = []
    ours = lambda: order.append("o") or torch.ones(2)  # noqa: E731
    peer = lambda: order.append("p") or torch.ones(2)  # noqa: E731
    row = compare("x", "w", ours, peer, peer_name="p", agree=allclose(), repeats=3)
    # check (o, p), warm-up (o, p), then 3 interleaved pairs
    assert "".join(order) == "op" + "op" + "opopop"
    assert row.agree and row.ratio is not None and row.repeats == 3


def test_an_exception_is_a_failed_row_naming_the_side():
    def boom():
        raise ValueError("no such layer")

    row = compare("x", "w", boom, lambda: 1, peer_name="p", agree=allclose())
    assert not row.agree and "ours raised ValueError: no such layer" in row.agreement
    row = harness.guarded("mod", lambda: [][0])
    assert len(row) == 1 and not row[0].agree and "IndexError" in row[0].agreement


def test_agreement_helpers_have_known_answers():
    ok, how = allclose(1e-6, 0)(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]))
    assert not ok and how == "max abs diff 5.0e-01"
    ok, _ = allclose()(torch.ones(2), torch.ones(3))
    assert not ok
    ok, how = spearman(0.99)(torch.arange(5.0), torch.arange(5.0) ** 2)  # monotone: rank correlation 1
    assert ok and how == "spearman 1.000"
    ok, _ = spearman(0.0)(torch.arange(5.0), -torch.arange(5.0))
    assert not ok


def test_render_writes_one_table_per_group_and_lists_rows_behind(tmp_path):
    from benchmarks.__main__ import render

    rows = [
        Row("a", "w", 2.0, "p", 1.0, 2.0, True, "max abs diff 0", "why it is slower", group="attribution"),
        Row("b", "w", None, "q", None, None, False, "max abs diff 1", group="metrics"),
    ]
    md = render(
        {
            "machine": {
                "cpu": "cpu",
                "cores": 2,
                "torch_threads": 2,
                "versions": {},
                "date": "d",
                "load_average": [1.0, 2.0, 3.0],
            },
            "rows": [r.to_dict() for r in rows],
        }
    )
    assert "| a | w | 2.00 s | p | 1.00 s | **2.00** | max abs diff 0 | why it is slower |" in md
    assert "FAILED: max abs diff 1" in md
    assert "- **a** (2.00x p): why it is slower" in md


def test_the_entry_point_writes_results_and_keeps_other_modules_rows(tmp_path):
    from benchmarks.__main__ import main

    old = {"rows": [{**Row("kept", "w", 1.0, "p", 1.0, 1.0, True, "-").to_dict(), "module": "metrics"}]}
    (tmp_path / "results.json").write_text(json.dumps(old))
    assert main(["--quick", "--only", "suite", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    names = [r["name"] for r in data["rows"]]
    assert "kept" in names and "suite timings readable" in names
    assert data["machine"]["cores"] >= 1 and "torch" in data["machine"]["versions"]
    assert "suite timings readable" in (tmp_path / "RESULTS.md").read_text()


def test_readme_block_is_replaced_between_its_markers_only(tmp_path):
    from benchmarks.__main__ import README_END, README_START, write_readme

    rows = [
        {**Row("a", "w", 2.0, "p", 1.0, 2.0, True, "max abs diff 0").to_dict(), "group": "attribution"},
        {**Row("01_x", "run", 30.0, "-", None, None, True, "-").to_dict(), "group": "suite"},
        {**Row("02_y", "run", 50.0, "-", None, None, True, "-").to_dict(), "group": "suite"},
    ]
    machine = {"cpu": "cpu", "cores": 2, "date": "d", "load_average": [1.0, 2.0, 3.0]}
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\nbefore\n{README_START}\nold table\n{README_END}\nafter\n")
    assert write_readme({"machine": machine, "rows": rows}, readme)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# t\n\nbefore\n") and text.endswith("after\n")
    assert "| a | p | 2.00 | max abs diff 0 |" in text
    assert "2 notebooks, 80 s" in text and "slowest 02_y (50 s), 01_x (30 s)" in text
    (tmp_path / "NOMARK.md").write_text("no markers\n")
    assert not write_readme({"machine": machine, "rows": rows}, tmp_path / "NOMARK.md")


def _assert_all_agree(rows: list[Row]) -> None:
    assert rows
    bad = [(r.name, r.agreement) for r in rows if not r.agree]
    assert not bad, bad
    assert all(r.ours_s is None for r in rows)  # quick: nothing was timed


@pytest.mark.slow
def test_attribution_quick_rows_agree_with_captum():
    from benchmarks import attribution

    _assert_all_agree(attribution.image_rows(quick=True) + attribution.layer_ig_rows(quick=True))


@pytest.mark.slow
def test_search_quick_rows_agree():
    from benchmarks import search

    _assert_all_agree(search.rows(quick=True))


@pytest.mark.slow
def test_metrics_quick_rows_agree_with_quantus():
    pytest.importorskip("quantus", reason="quantus is not installed: pip install -e '.[bench]'")
    from benchmarks import metrics

    _assert_all_agree(metrics.rows(quick=True))


@pytest.mark.slow
def test_inseq_quick_rows_agree():
    pytest.importorskip(
        "inseq", reason="inseq is not installed (it cannot share an env with transformer-lens): '.[bench-inseq]'"
    )
    from benchmarks import attribution

    _assert_all_agree(attribution.inseq_rows(quick=True))


def test_without_inseq_its_rows_say_why_not_faked():
    from benchmarks import attribution

    try:
        import inseq  # noqa: F401

        pytest.skip("inseq is installed here: its rows run for real (test_inseq_quick_rows_agree)")
    except ImportError:
        pass
    rows = attribution.inseq_rows(quick=True)
    assert rows and all(r.ratio is None and "typeguard" in r.note for r in rows)


def test_suite_reads_the_recorded_notebook_times():
    from benchmarks import suite

    times = suite.recorded_times()
    assert times and all(w > 0 and c >= 0 for w, c in times.values())
    rows = suite.rows(quick=False)
    assert rows[-1].name == "whole suite" and "slowest:" in rows[-1].note

import json

import nbformat
import pytest

from xattr_nb import cli
from xattr_nb.papers import PAPERS, Paper, find


def test_paper_list_is_the_course():
    assert [p.number for p in PAPERS] == list(range(31))
    assert find("03").slug == "lima" and find("lima").number == 3 and find(3).slug == "lima"
    with pytest.raises(ValueError, match="no paper matches"):
        find("nope")


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("0.5", 0.5), ("True", True), ("none", None), ("full", "full")])
def test_parse_value(text, value):
    assert cli.parse_value(text) == value


def test_list_prints_thirty_papers(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 31 and "lima" in out[4]


def _notebook(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("seed = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), params, nbformat.v4.new_code_cell(source)]
    return nb


@pytest.mark.slow
def test_run_reports_records_and_failures(tmp_path, monkeypatch):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    good, bad = Paper(90, "good", "good"), Paper(91, "bad", "bad")
    nbformat.write(
        _notebook("from xattr_nb.runtime import record\nrecord('twice', seed * 2)"), nbdir / good.notebook_name
    )
    nbformat.write(_notebook("assert seed == 0, 'seed was changed'"), nbdir / bad.notebook_name)
    monkeypatch.setattr(cli, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(cli, "PAPERS", (good, bad))
    monkeypatch.setattr(cli, "find", lambda key: find(key, (good, bad)))
    out = tmp_path / "out"
    rc = cli.main(["run", "--all", "-p", "seed", "3", "--out", str(out)])
    assert rc == 1
    summary = json.loads((out / "summary.json").read_text())
    by = {r["slug"]: r for r in summary["notebooks"]}
    assert by["good"]["status"] == "ok" and by["good"]["records"] == {"twice": 6}
    assert by["bad"]["status"] == "failed" and "seed was changed" in by["bad"]["error"]
    assert by["bad"]["failing_cell"] is not None
    assert "| 90_good.ipynb | ok |" in (out / "summary.md").read_text()

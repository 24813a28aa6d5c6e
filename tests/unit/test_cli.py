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
    index = (out / "index.html").read_text()
    assert '<a href="html/90_good.html">90_good.ipynb</a>' in index and "failed" in index
    assert "twice" in (out / "html" / "90_good.html").read_text()


def test_run_summary_lists_each_claim(tmp_path, monkeypatch):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    paper = Paper(92, "claims", "claims")
    src = (
        "from xattr_nb.ledger import Ledger\nled = Ledger('92_claims', calibration={})\n"
        "led.claim('gain', 0.5, text='method beats baseline', spec=0.1, null=0.0)\nled.check()"
    )
    nbformat.write(_notebook(src), nbdir / paper.notebook_name)
    monkeypatch.setattr(cli, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(cli, "PAPERS", (paper,))
    monkeypatch.setattr(cli, "find", lambda key: find(key, (paper,)))
    assert cli.main(["run", "--all", "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| 92_claims.ipynb | method beats baseline | not reproduced | 0.5 | — | — |" in md
    assert "1 not reproduced" in (tmp_path / "out" / "index.html").read_text()


# --- issue 10 item 5 (and item 4's CLI side): zoo subcommands never print a traceback on bad input ------------


@pytest.fixture
def local_zoo(tmp_path, monkeypatch):
    """A zoo of two tiny checkpoints in tmp_path, made the default root through $XATTR_NB_DATA."""
    import torch

    from xattr_nb.models import zoo
    from xattr_nb.models.vision import TinyCNN

    for seed, name in enumerate(["a_good", "b_bad"]):
        torch.manual_seed(seed)
        zoo.save(name, TinyCNN(3, widths=(4, 8)), metrics={}, root=tmp_path)
    monkeypatch.setenv("XATTR_NB_DATA", str(tmp_path))
    return tmp_path


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_zoo_train_unknown_name_is_one_line_listing_recipes(capsys):
    from xattr_nb.models import zoo

    assert cli.main(["zoo", "train", "nosuch"]) == 2
    out, err = capsys.readouterr()
    line = _one_line_error(err)
    assert out == "" and line.startswith("xattr-nb zoo train: no recipe named 'nosuch'")
    assert all(name in line for name in zoo.recipes())


def test_zoo_train_misspelled_name_suggests(capsys):
    assert cli.main(["zoo", "train", "shape_cnn"]) == 2
    assert "did you mean ['shapes_cnn']" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [["zoo", "train", "Bad/Name"], ["zoo", "train", "shapes_cnn", "--seed", "-1"]])
def test_zoo_train_bad_arguments_exit_2(capsys, argv):
    assert cli.main(argv) == 2
    assert _one_line_error(capsys.readouterr().err).startswith("xattr-nb zoo train: ")


def test_zoo_verify_truncated_checkpoint_prints_bad_and_exits_1(local_zoo, capsys):
    from xattr_nb.models import zoo

    manifest = json.loads((local_zoo / "manifest.json").read_text())
    path = local_zoo / manifest["checkpoints"]["b_bad"]["file"]
    path.write_bytes(path.read_bytes()[:-64])
    manifest["checkpoints"]["b_bad"]["sha256"] = zoo._sha256(path)  # the manifest records the broken file
    (local_zoo / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["zoo", "verify"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("OK  a_good: ok")
    assert lines[1].startswith("BAD b_bad: ") and str(path) in lines[1] and "truncated or corrupt" in lines[1]
    assert "Traceback" not in err and "1 of 2" in err


def test_zoo_verify_all_good_exits_0(local_zoo, capsys):
    assert cli.main(["zoo", "verify"]) == 0
    assert [line[:3] for line in capsys.readouterr().out.splitlines()] == ["OK ", "OK "]


def test_zoo_verify_missing_root_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XATTR_NB_DATA", str(tmp_path / "nowhere"))
    assert cli.main(["zoo", "verify"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "no zoo manifest" in line and str(tmp_path / "nowhere" / "manifest.json") in line


@pytest.mark.parametrize("sub", ["list", "verify"])
def test_zoo_broken_manifest_is_one_line(local_zoo, capsys, sub):
    (local_zoo / "manifest.json").write_text("{not json")
    assert cli.main(["zoo", sub]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith(f"xattr-nb zoo {sub}: ") and "not valid JSON" in line


@pytest.mark.parametrize(("text", "value"), [("(1, 2)", (1, 2)), ("[0.5]", [0.5]), ("(oops", "(oops")])
def test_parse_value_reads_tuple_and_list_literals(text, value):
    assert cli.parse_value(text) == value


def _params_notebook(tmp_path, monkeypatch) -> Paper:
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    paper = Paper(92, "params", "params")
    nb = _notebook("pass")
    nb.cells[1].source = 'seed = 0\nscale = "small"  # "full" at paper scale\nlr = 1e-3\nks = (1, 2)\nfrac = 1 / 3'
    nbformat.write(nb, nbdir / paper.notebook_name)
    monkeypatch.setattr(cli, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(cli, "PAPERS", (paper,))
    monkeypatch.setattr(cli, "find", lambda key: find(key, (paper,)))
    return paper


def test_unknown_parameter_is_refused_with_the_notebooks_names(tmp_path, monkeypatch, capsys):
    _params_notebook(tmp_path, monkeypatch)
    assert cli.main(["run", "92", "-p", "sed", "3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no parameter 'sed'" in err and "seed, scale, lr, ks, frac" in err
    assert not (tmp_path / "o").exists()  # refused before anything ran


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [("seed", "abc", False), ("seed", "1.5", False), ("seed", "true", False), ("lr", "2", True),
     ("scale", "full", True), ("scale", "3", False), ("ks", "(1, 2, 4)", True), ("ks", "4", False),
     ("frac", "0.5", True)],
)  # fmt: skip
def test_parameter_types_are_checked_against_the_defaults(tmp_path, monkeypatch, name, value, ok):
    paper = _params_notebook(tmp_path, monkeypatch)
    problems = cli.check_parameters([paper], {name: cli.parse_value(value)})
    assert (problems == []) == ok
    if not ok:
        assert f"`{name}` expects" in problems[0]


def test_out_that_is_a_file_is_refused(tmp_path, monkeypatch, capsys):
    _params_notebook(tmp_path, monkeypatch)
    (tmp_path / "f").write_text("")
    assert cli.main(["run", "92", "--out", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_interrupted_run_summary_names_what_did_not_finish(tmp_path, monkeypatch):
    papers = tuple(Paper(93 + i, f"n{i}", f"n{i}") for i in range(3))
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    for p in papers:
        nbformat.write(_notebook("pass"), nbdir / p.notebook_name)
    monkeypatch.setattr(cli, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(cli, "PAPERS", papers)
    calls = []

    def fake_run(paper, out_dir, parameters, *, timeout):
        calls.append(paper.slug)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return cli.RunResult(paper.number, paper.slug, paper.notebook_name, "ok")

    monkeypatch.setattr(cli, "run_notebook", fake_run)
    monkeypatch.setattr(cli, "write_html", lambda results, out: out / "index.html")
    out = tmp_path / "out"
    assert cli.main(["run", "--all", "--out", str(out)]) == 130
    by = {r["slug"]: r["status"] for r in json.loads((out / "summary.json").read_text())["notebooks"]}
    assert by == {"n0": "ok", "n1": "interrupted", "n2": "not run"}

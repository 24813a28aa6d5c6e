"""The ``xattr-nb`` command: list the course, run notebooks with papermill, manage the zoo, open Lab.

``xattr-nb run --all`` is the main job: it executes every notebook that exists, writes each
executed copy under ``--out`` and a ``summary.json`` / ``summary.md`` with status, wall time and
every figure the notebook ``record``-ed, and exits non-zero naming any notebook that failed.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xattr_nb.papers import NOTEBOOKS_DIR, PAPERS, Paper, find


def parse_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value as papermill would read it: int, float, bool, None, a tuple or list
    literal (``"(1, 2)"``), else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.strip()[:1] in ("(", "["):
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            return text
        if isinstance(value, (tuple, list)):
            return value
    return text


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The names of a notebook's ``parameters`` cell with their default values (``...`` where the
    default is an expression, e.g. ``1 / 3``, whose type is not checked)."""
    import papermill as pm

    out = {}
    for name, info in pm.inspect_notebook(str(path)).items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            out[name] = ...
    return out


def _type_ok(default: Any, value: Any) -> bool:
    if default is None or default is ... or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(default))


def check_parameters(papers: list[Paper], parameters: dict[str, Any]) -> list[str]:
    """Problems with ``-p`` values for these notebooks: names a notebook does not declare (with the
    names it does) and values whose type differs from the default's. Empty when all is well; papermill
    itself would inject an unknown name silently and let a wrong type fail deep in a cell."""
    problems = []
    for paper in papers:
        path = NOTEBOOKS_DIR / paper.notebook_name
        if not path.exists():
            continue
        declared = notebook_parameters(path)
        unknown = [n for n in parameters if n not in declared]
        if unknown:
            problems.append(
                f"{paper.notebook_name} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters: {', '.join(declared)}"
            )
        for name, value in parameters.items():
            if name in declared and not _type_ok(declared[name], value):
                problems.append(
                    f"{paper.notebook_name}: `{name}` expects {type(declared[name]).__name__} "
                    f"(default {declared[name]!r}); got {type(value).__name__} {value!r}"
                )
    return problems


@dataclass
class RunResult:
    number: int
    slug: str
    notebook: str
    status: str  # "ok" | "failed" | "missing" | "interrupted" | "not run"
    wall_s: float = 0.0
    output: str | None = None
    records: dict[str, Any] = field(default_factory=dict)
    claims: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    failing_cell: int | None = None
    cpu_s: float = 0.0


def _failing_cell(exc: BaseException) -> int | None:
    index = getattr(exc, "cell_index", None)
    return int(index) if index is not None else None


def clean_executed(nb: Any) -> Any:
    """Drop what an execution leaves that does not belong in a committed notebook: papermill's
    injected-parameters cells and its timing metadata, and the kernel's per-cell timestamps."""
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    nb.metadata.pop("papermill", None)
    for c in nb.cells:
        c.metadata.pop("papermill", None)
        c.metadata.pop("execution", None)
    return nb


def run_notebook(paper: Paper, out_dir: Path, parameters: dict[str, Any], *, timeout: int | None) -> RunResult:
    """Execute one notebook with papermill (kernel ``python3``) and collect what it recorded."""
    import papermill as pm

    os.environ.setdefault("XATTR_NB_PROGRESS", "summary")  # the kernel inherits it: no frozen bars
    # Idle OpenMP threads sleep instead of spinning: on a busy machine spinning threads slowed cells
    # 20-100x; the results do not depend on it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from xattr_nb.ledger import read_claims
    from xattr_nb.runtime import read_records

    src = NOTEBOOKS_DIR / paper.notebook_name
    result = RunResult(paper.number, paper.slug, paper.notebook_name, "missing")
    if not src.exists():
        result.error = f"{src.name} does not exist yet (planned)"
        return result
    dst = out_dir / paper.notebook_name
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(src),
            str(dst),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(NOTEBOOKS_DIR),
            progress_bar=False,
            execution_timeout=timeout,
        )
        result.status = "ok"
    except Exception as exc:  # papermill re-raises the kernel's error; we report it and go on
        result.status = "failed"
        result.failing_cell = _failing_cell(exc)
        name = getattr(exc, "ename", type(exc).__name__)
        value = getattr(exc, "evalue", str(exc))
        result.error = f"{name}: {value}".strip()
    result.wall_s = round(time.perf_counter() - t0, 2)
    if dst.exists():
        result.output = str(dst)
        result.records = read_records(dst)
        result.claims = read_claims(dst)
    return result


def write_summary(results: list[RunResult], out_dir: Path, parameters: dict[str, Any]) -> None:
    data = {"parameters": parameters, "notebooks": [asdict(r) for r in results]}
    (out_dir / "summary.json").write_text(json.dumps(data, indent=2))
    lines = ["# xattr-nb run", "", f"Parameters: `{json.dumps(parameters)}`", ""]
    lines += ["| notebook | status | wall s | recorded |", "|---|---|---|---|"]
    for r in results:
        rec = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.records.items())
        status = r.status if r.failing_cell is None else f"{r.status} (cell {r.failing_cell})"
        lines.append(f"| {r.notebook} | {status} | {r.wall_s} | {rec} |")
    claims = [(r.notebook, c) for r in results for c in r.claims if c["status"] != "sanity"]
    if claims:
        from xattr_nb.ledger import status_counts

        counts = status_counts([c for _, c in claims])
        lines += ["", "## Claims", "", ", ".join(f"{n} {k}" for k, n in counts.items() if n), ""]
        lines += ["| notebook | claim | status | observed | asserted | holds |", "|---|---|---|---|---|---|"]
        for nb, c in claims:
            obs = "—" if c["observed"] is None else f"{c['observed']:.4g}"
            bound = "—" if c["bound"] is None else f"{'>=' if c['higher'] else '<='} {c['bound']:.4g}"
            holds = {True: "yes", False: "**no**", None: "—"}[c["holds"]]
            lines.append(f"| {nb} | {c['text']} | {c['status']} | {obs} | {bound} | {holds} |")
    errors = [r for r in results if r.error]
    if errors:
        lines += ["", "## Errors", ""] + [f"- **{r.notebook}**: {r.error}" for r in errors]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")


def write_html(results: list[RunResult], out_dir: Path) -> Path:
    """HTML copies of the executed notebooks (nbconvert; the widgets' static fallbacks show) and an
    ``index.html`` that lists them with their status, wall time and claim counts."""
    import html

    from nbconvert import HTMLExporter

    from xattr_nb.ledger import status_counts

    exporter = HTMLExporter()
    (out_dir / "html").mkdir(exist_ok=True)
    rows = []
    for r in results:
        link = r.notebook
        if r.output and Path(r.output).exists():
            body, _ = exporter.from_filename(r.output)
            name = Path(r.notebook).with_suffix(".html").name
            (out_dir / "html" / name).write_text(body)
            link = f'<a href="html/{html.escape(name)}">{html.escape(r.notebook)}</a>'
        counts = status_counts([c for c in r.claims if c["status"] != "sanity"])
        claims = ", ".join(f"{n} {k}" for k, n in counts.items() if n and k != "sanity") or "—"
        rows.append(f"<tr><td>{link}</td><td>{html.escape(r.status)}</td><td>{r.wall_s}</td><td>{claims}</td></tr>")
    page = (
        "<!doctype html><meta charset='utf-8'><title>xattr-nb run</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .8em;border-bottom:1px solid #ddd}</style>"
        "<h1>xattr-nb: the course, executed</h1><table><tr><th>notebook</th><th>status</th><th>wall s</th>"
        f"<th>claims</th></tr>{''.join(rows)}</table>"
    )
    index = out_dir / "index.html"
    index.write_text(page)
    return index


README_START, README_END = "<!-- notebooks:start -->", "<!-- notebooks:end -->"
_MARK = {"reproduced": "✓", "weaker margin": "≈", "not reproduced": "✗", "not tested here": "–"}


def notebook_table(notebooks_dir: Path | None = None) -> str:
    """README's notebook table, generated from the ledger rows of the committed notebooks."""
    import nbformat

    from xattr_nb.ledger import read_claims, status_counts

    folder = notebooks_dir or NOTEBOOKS_DIR
    lines = [
        "| NN | notebook | claims (✓ reproduced, ≈ weaker margin, ✗ not reproduced, – not tested here) |",
        "|---|---|---|",
    ]
    for p in PAPERS:
        path = folder / p.notebook_name
        if not path.exists():
            continue
        claims = [c for c in read_claims(nbformat.read(str(path), as_version=4)) if c["status"] != "sanity"]
        if claims:
            counts = status_counts(claims)
            head = ", ".join(f"{n} {k}" for k, n in counts.items() if n and k != "sanity")
            items = "; ".join(f"{_MARK[c['status']]} {c['text']}" for c in claims).replace("|", "/")
            text = f"{head}: {items}"
        else:
            text = "not on the claim ledger yet"
        lines.append(f"| {p.number:02d} | `{p.notebook_name}` | {text} |")
    return "\n".join(lines)


def cmd_readme(args: argparse.Namespace) -> int:
    """Regenerate README's notebook table from the committed notebooks' ledgers (``--check``: only compare)."""
    readme = Path(args.readme)
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        print(f"xattr-nb readme: {readme} has no {README_START} ... {README_END} block", file=sys.stderr)
        return 2
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{notebook_table()}\n{README_END}{tail}"
    if args.check:
        if new != text:
            print("xattr-nb readme: README's notebook table is stale; run `xattr-nb readme`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    print(f"wrote the notebook table of {readme}")
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    print(f"{'NN':<3} {'slug':<20} {'notebook':<8} title")
    for p in PAPERS:
        state = "present" if (NOTEBOOKS_DIR / p.notebook_name).exists() else "planned"
        print(f"{p.number:02d}  {p.slug:<20} {state:<8} {p.title}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from xattr_nb.runtime import progress

    if args.all == bool(args.notebooks):
        print("xattr-nb run: name notebooks (e.g. `00` or `tour`) or pass --all, not both", file=sys.stderr)
        return 2
    try:
        papers = (
            [p for p in PAPERS if (NOTEBOOKS_DIR / p.notebook_name).exists()]
            if args.all
            else [find(k) for k in args.notebooks]
        )
    except ValueError as exc:
        print(f"xattr-nb run: {exc}", file=sys.stderr)
        return 2
    parameters = {name: parse_value(value) for name, value in args.parameter or []}
    problems = check_parameters(papers, parameters)
    if problems:
        print("xattr-nb run: " + "\n  ".join(problems), file=sys.stderr)
        return 2
    out_dir = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        print(f"xattr-nb run: --out {out_dir} is a file, not a folder", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    bar = progress(papers, desc="notebooks", unit="nb", disable=False)
    try:
        for paper in bar:
            bar.set_postfix_str(paper.notebook_name)
            results.append(run_notebook(paper, out_dir, parameters, timeout=args.timeout))
    except KeyboardInterrupt:
        done = len(results)
        for i, paper in enumerate(papers[done:]):
            status = "interrupted" if i == 0 else "not run"
            results.append(RunResult(paper.number, paper.slug, paper.notebook_name, status, error=status))
        write_summary(results, out_dir, parameters)
        print(
            f"interrupted: {', '.join(r.notebook for r in results if r.error in ('interrupted', 'not run'))} "
            f"did not finish; summary: {out_dir / 'summary.md'}",
            file=sys.stderr,
        )
        return 130
    write_summary(results, out_dir, parameters)
    index = write_html(results, out_dir)
    for r in results:
        extra = f"  [{r.error}]" if r.error else ""
        cell = f" at cell {r.failing_cell}" if r.failing_cell is not None else ""
        print(f"{r.status.upper():<7} {r.notebook} ({r.wall_s} s){cell}{extra}")
        for k, v in r.records.items():
            print(f"          {k} = {v}")
    print(f"summary: {out_dir / 'summary.md'}; browse: {index}")
    failed = [r for r in results if r.status != "ok"]
    if failed:
        print("failed: " + ", ".join(r.notebook for r in failed), file=sys.stderr)
        return 1
    return 0


def _papers(keys: list[str], cmd: str) -> list[Paper] | None:
    try:
        return [find(k) for k in keys]
    except ValueError as exc:
        print(f"xattr-nb {cmd}: {exc}", file=sys.stderr)
        return None


def cmd_record(args: argparse.Namespace) -> int:
    """Re-execute notebooks in place with their default parameters, as they are committed: outputs,
    the "Results at a glance" table refreshed from the ledger, no papermill leftovers."""
    import tempfile

    import nbformat

    from xattr_nb.ledger import write_glance

    papers = _papers(args.notebooks, "record")
    if papers is None:
        return 2
    status = 0
    with tempfile.TemporaryDirectory() as tmp:
        for paper in papers:
            r = run_notebook(paper, Path(tmp), {}, timeout=args.timeout)
            if r.status != "ok":
                print(f"FAILED  {paper.notebook_name} at cell {r.failing_cell}: {r.error} (not written)")
                status = 1
                continue
            nb = clean_executed(nbformat.read(r.output, as_version=4))
            nbformat.write(write_glance(nb), str(NOTEBOOKS_DIR / paper.notebook_name))
            print(f"OK      {paper.notebook_name} ({r.wall_s} s, {len(r.claims)} ledger rows)")
    return status


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Run notebooks at the development seeds and commit each claim's per-seed values
    (``notebooks/calibration/NN_slug.json``); bounds follow from them by :func:`xattr_nb.ledger.calibrate_bound`."""
    from xattr_nb.ledger import CALIBRATING_ENV

    papers = _papers(args.notebooks, "calibrate")
    if papers is None:
        return 2
    os.environ[CALIBRATING_ENV] = "1"  # the kernel inherits it: claims are collected, not asserted
    # Threads are left as `run` and `record` leave them: training amplifies float rounding, so a
    # dev seed's value must be what `xattr-nb run NN -p seed S` gives on the same machine.
    try:
        return _calibrate(papers, args)
    finally:
        os.environ.pop(CALIBRATING_ENV, None)


def _calibrate(papers: list[Paper], args: argparse.Namespace) -> int:
    import tempfile

    from xattr_nb.ledger import MEASURED, RULE, calibrate_bound, calibration_path

    status = 0
    for paper in papers:
        values: dict[str, dict[str, float]] = {}
        meta: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for seed in args.seeds:
                r = run_notebook(paper, Path(tmp), {"seed": seed}, timeout=args.timeout)
                if r.status != "ok":
                    print(f"FAILED  {paper.notebook_name} seed {seed} at cell {r.failing_cell}: {r.error}")
                    status = 1
                    break
                for c in r.claims:
                    if c["status"] in ("sanity", "not tested here", MEASURED):
                        continue
                    values.setdefault(c["name"], {})[str(seed)] = c["observed"]
                    meta[c["name"]] = {k: c[k] for k in ("text", "spec", "null", "higher")}
                print(f"seed {seed}: {paper.notebook_name} ok ({r.wall_s} s)")
        if status:
            continue
        claims = {}
        for name, vals in values.items():
            bound, verdict = calibrate_bound(
                list(vals.values()), **{k: meta[name][k] for k in ("spec", "null", "higher")}
            )
            claims[name] = {**meta[name], "values": vals, "bound": bound, "status": verdict}
        path = calibration_path(paper.notebook_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"notebook": paper.notebook_name, "seeds": list(args.seeds), "rule": RULE, "claims": claims}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {path} ({len(claims)} claims)")
    return status


def cmd_zoo(args: argparse.Namespace) -> int:
    """``zoo list|train|verify``: a bad input (unknown name, broken or missing manifest) is one line on
    stderr and exit status 2, never a traceback; ``verify`` prints one OK/BAD line per checkpoint and
    exits 1 when any is BAD."""
    from xattr_nb.checks import InputError
    from xattr_nb.models import zoo

    try:
        return _zoo(args, zoo)
    except InputError as exc:
        print(f"xattr-nb zoo {args.zoo_cmd}: {exc}", file=sys.stderr)
        return 2


def _zoo(args: argparse.Namespace, zoo: Any) -> int:
    if args.zoo_cmd == "list":
        root = zoo.default_root()
        if not (root / zoo.MANIFEST).is_file():
            print(f"note: no zoo manifest at {root / zoo.MANIFEST}; nothing is shipped there", file=sys.stderr)
        entries = {e.name: e for e in zoo.entries()}
        names = sorted(set(entries) | set(zoo.recipes()))
        for name in names:
            e = entries.get(name)
            shipped = f"shipped sha256={e.sha256[:12]} metrics={e.metrics}" if e else "not trained yet"
            print(f"{name:<24} {shipped}")
        return 0
    if args.zoo_cmd == "train":
        entry = zoo.train(args.name, seed=args.seed)
        print(f"trained {entry.name}: {entry.metrics} -> {entry.file}")
        return 0
    results = zoo.verify()
    bad = 0
    for name, ok, message in results:
        print(f"{'OK ' if ok else 'BAD'} {name}: {message}")
        bad += not ok
    if not results:
        print(f"xattr-nb zoo verify: {zoo.default_root() / zoo.MANIFEST} lists no checkpoint", file=sys.stderr)
        return 1
    if bad:
        print(f"xattr-nb zoo verify: {bad} of {len(results)} checkpoint(s) BAD", file=sys.stderr)
    return 1 if bad else 0


def cmd_lab(args: argparse.Namespace) -> int:
    import subprocess

    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={NOTEBOOKS_DIR}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return subprocess.call(cmd + list(args.lab_args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xattr-nb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the thirty papers and whether their notebook exists").set_defaults(fn=cmd_list)
    run = sub.add_parser("run", help="execute notebooks with papermill and summarise what they recorded")
    run.add_argument("notebooks", nargs="*", help="numbers or slugs, e.g. 00 tour 03 lima")
    run.add_argument("--all", action="store_true", help="run every notebook that exists")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"))
    run.add_argument("--out", help="folder for executed notebooks and the summary (default runs/<time>)")
    run.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    run.set_defaults(fn=cmd_run)
    rec = sub.add_parser("record", help="re-execute notebooks in place (outputs + the ledger table) for committing")
    rec.add_argument("notebooks", nargs="+", help="numbers or slugs")
    rec.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    rec.set_defaults(fn=cmd_record)
    cal = sub.add_parser("calibrate", help="run notebooks at the development seeds; write notebooks/calibration/")
    cal.add_argument("notebooks", nargs="+", help="numbers or slugs")
    cal.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    cal.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    cal.set_defaults(fn=cmd_calibrate)
    readme = sub.add_parser("readme", help="regenerate README's notebook table from the notebooks' ledgers")
    readme.add_argument("--readme", default=str(NOTEBOOKS_DIR.parent / "README.md"))
    readme.add_argument("--check", action="store_true", help="exit 1 when the table is stale; write nothing")
    readme.set_defaults(fn=cmd_readme)
    zoo = sub.add_parser("zoo", help="shipped checkpoints: list, train NAME, verify")
    zsub = zoo.add_subparsers(dest="zoo_cmd", required=True)
    zsub.add_parser("list")
    train = zsub.add_parser("train")
    train.add_argument("name")
    train.add_argument("--seed", type=int, default=0)
    zsub.add_parser("verify")
    zoo.set_defaults(fn=cmd_zoo)
    lab = sub.add_parser("lab", help="open JupyterLab on the notebooks folder")
    lab.add_argument("lab_args", nargs=argparse.REMAINDER)
    lab.set_defaults(fn=cmd_lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())

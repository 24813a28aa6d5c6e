"""No pickle anywhere: nothing shipped is a pickle and no code of the project unpickles.

Loading a pickle can run arbitrary code. Checkpoints are safetensors + JSON (``data/``), Hugging Face
weights are read with ``use_safetensors=True`` (``models.hub.from_pretrained_offline``), and these
scans keep it so: a file with a pickle's extension or magic bytes in the tree, or a call that
unpickles in the package, the tests, the benchmarks or a notebook's code cells, fails here.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".npy", ".npz", ".sav")
# calls that unpickle: module.function names (np.load is fine unless allow_pickle=True)
UNPICKLING = {("pickle", "load"), ("pickle", "loads"), ("torch", "load"), ("joblib", "load"), ("dill", "load"),
              ("dill", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"), ("pd", "read_pickle"),
              ("pandas", "read_pickle")}  # fmt: skip


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / line for line in out.splitlines() if line]


def _unpickling_calls(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in UNPICKLING:
            found.append(f"{f.value.id}.{f.attr} (line {node.lineno})")
        if isinstance(f, ast.Attribute) and f.attr == "load":
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"load(allow_pickle=...) (line {node.lineno})")
    return found


def test_no_pickle_files_are_tracked():
    bad = [str(p.relative_to(ROOT)) for p in _tracked_files() if p.suffix.lower() in PICKLE_SUFFIXES]
    assert not bad, f"pickle-format files in the tree (ship safetensors + JSON instead): {bad}"


def test_no_tracked_file_starts_with_pickle_magic():
    bad = []
    for p in _tracked_files():
        if p.is_file() and p.stat().st_size >= 2:
            with open(p, "rb") as fh:
                head = fh.read(2)
            if head[0] == 0x80 and head[1] in range(2, 6):  # the PROTO opcode of pickle protocols 2-5
                bad.append(str(p.relative_to(ROOT)))
    assert not bad, f"files that look like pickles: {bad}"


def test_shipped_checkpoints_are_safetensors_and_json():
    data = ROOT / "data"
    others = [p.name for p in data.rglob("*") if p.is_file() and p.suffix not in (".safetensors", ".json", ".lock")]
    assert not others, f"data/ holds files that are not safetensors/JSON: {others}"


def test_no_code_unpickles():
    bad = {}
    for p in _tracked_files():
        if p.suffix == ".py" and p.is_file():
            calls = _unpickling_calls(p.read_text())
        elif p.suffix == ".ipynb" and p.is_file():
            nb = nbformat.read(str(p), as_version=4)
            cells = [c.source for c in nb.cells if c.cell_type == "code"]
            calls = [c for src in cells if not src.lstrip().startswith(("%", "!")) for c in _unpickling_calls(src)]
        else:
            continue
        if calls:
            bad[str(p.relative_to(ROOT))] = calls
    assert not bad, f"code that unpickles (use safetensors / JSON): {bad}"


@pytest.mark.parametrize(
    ("source", "hits"),
    [("import pickle\npickle.loads(b'')", 1), ("torch.load('x.pt', weights_only=True)", 1),
     ("np.load('a.npy', allow_pickle=True)", 1), ("np.load('a.npy')", 0), ("torch.save(m, 'x')", 0),
     ("safetensors.torch.load_file('x')", 0)],
)  # fmt: skip
def test_the_scan_finds_unpickling_calls(source, hits):
    assert len(_unpickling_calls(source)) == hits

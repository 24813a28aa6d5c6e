"""The same seed gives the same numbers in two fresh processes: Attribution scores bit for bit, and
the records and ledger values of executed notebooks exactly.

Each check runs its work twice in new interpreters (nothing shared: no cache, no warm state) and
compares. Timing records (wall time, milliseconds, seconds) are the only values left out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ATTRIBUTIONS = r"""
import hashlib, json, torch
from xattr_nb.attribution import attribute, attribute_text
from xattr_nb.models import zoo
from xattr_nb.worlds import shapes
torch.manual_seed(1234)
cnn = zoo.load("shapes_cnn")
x = shapes.make_shapes(4, seed=3).images
out = {}
for m, kw in [("saliency", {}), ("integrated_gradients", {"n_steps": 16}), ("occlusion", {}),
              ("grad_cam", {}), ("gradient_shap", {"seed": 5}), ("rise", {"n_masks": 64, "seed": 5}),
              ("feature_ablation", {})]:
    a = attribute(cnn, x, [0, 1, 2, 3], method=m, **kw)
    out[m] = hashlib.sha256(a.scores.detach().contiguous().numpy().tobytes()).hexdigest()
lm = zoo.load("ioi_gpt2")
tok = zoo.tokenizer("ioi_gpt2")
texts = ["when mary and john went to the store , john gave a drink to", "when tom and anna went to the park , anna gave a ball to"]
for m in ("layer_integrated_gradients", "saliency"):
    a = attribute_text(lm, tok, texts, target=["mary", "tom"], method=m)
    out["text_" + m] = hashlib.sha256(a.scores.detach().contiguous().numpy().tobytes()).hexdigest()
print(json.dumps(out))
"""


def _fresh(code: str) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_attribution_scores_are_bitwise_identical_across_processes():
    first, second = _fresh(ATTRIBUTIONS), _fresh(ATTRIBUTIONS)
    assert len(first) == 9
    assert first == second, {k: (v, second[k]) for k, v in first.items() if second[k] != v}


TIMING = ("wall", "_ms", "seconds", "time_s", "cpu_s")


def _results(out: Path) -> dict[str, dict]:
    summary = json.loads((out / "summary.json").read_text())
    res = {}
    for nb in summary["notebooks"]:
        assert nb["status"] == "ok", (nb["notebook"], nb["error"])
        records = {k: v for k, v in nb["records"].items() if not any(t in k for t in TIMING)}
        claims = [(c["text"], c["observed"], c["bound"], c["status"]) for c in nb["claims"]]
        res[nb["notebook"]] = {"records": records, "claims": claims}
    return res


@pytest.mark.slow
def test_notebook_records_are_identical_across_processes(tmp_path):
    """The tour and two paper notebooks (fast ones), each executed twice in fresh kernels."""
    runs = []
    for k in ("a", "b"):
        cmd = [sys.executable, "-m", "xattr_nb.cli", "run", "00", "16", "19", "--out", str(tmp_path / k)]
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        runs.append(_results(tmp_path / k))
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) == 3
    for nb in runs[0]:
        assert runs[0][nb]["records"], f"{nb} recorded nothing"
        assert runs[0][nb] == runs[1][nb], nb

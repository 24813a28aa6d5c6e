"""The whole suite: wall time per notebook, slowest named.

By default this reads what the recorded notebooks printed in their last cell ("notebook wall time:
X s, CPU time: Y s"), written when each was last recorded (``xattr-nb record``) under whatever load
the machine had then: a figure per notebook, not a fresh measurement. ``run=True`` (``xattr-nb bench
--suite``) really executes ``xattr-nb run --all`` (about 25 minutes on 2 cores) and reads its
``summary.json``. There is no peer: the ``ratio`` column stays empty.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import Row

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_TIMING = re.compile(r"notebook wall time:\s*([0-9.]+)\s*s,\s*CPU time:\s*([0-9.]+)\s*s")


def recorded_times(folder: Path = NOTEBOOKS) -> dict[str, tuple[float, float]]:
    """``{notebook name: (wall s, CPU s)}`` from the last code cell's printed timing, for every
    recorded notebook that printed one."""
    out: dict[str, tuple[float, float]] = {}
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
        text = ""
        for o in code[-1].get("outputs", []) if code else []:
            t = o.get("text", o.get("data", {}).get("text/plain", ""))
            text += "".join(t) if isinstance(t, list) else str(t)
        m = _TIMING.search(text)
        if m:
            out[path.stem] = (float(m.group(1)), float(m.group(2)))
    return out


def run_all(out_dir: Path) -> dict[str, tuple[float, float | None]]:
    """Execute every notebook with ``xattr-nb run --all`` and return ``{name: (wall s, CPU s)}``."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "xattr_nb.cli", "run", "--all", "--out", str(out_dir)]
    subprocess.run(cmd, check=False, env=env)
    data = json.loads((out_dir / "summary.json").read_text())
    times: dict[str, tuple[float, float | None]] = {}
    for r in data["notebooks"]:
        name = Path(str(r["notebook"])).stem
        times[name] = (float(r["wall_s"]), float(r.get("cpu_s") or 0.0) or None)
    return times


def rows(quick: bool = False, run: bool = False) -> list[Row]:
    if quick:
        times = recorded_times()
        ok = bool(times)
        return [Row("suite timings readable", f"{len(times)} recorded notebooks", None, "-", None, None, ok, "-")]
    if run:
        with tempfile.TemporaryDirectory(prefix="xattr_bench_suite_") as tmp:
            times = run_all(Path(tmp))
        source, note = "xattr-nb run --all, this run", ""
    else:
        times = recorded_times()
        source = "as recorded (last cell)"
        note = "recorded by xattr-nb record at different times and loads; --suite runs them all now"
    out = []
    for name, (wall, cpu) in times.items():
        extra = f"CPU {cpu:.1f} s" if cpu is not None else ""
        out.append(Row(name, f"default run ({source})", wall, "-", None, None, True, "-", extra))
    if times:
        total = sum(w for w, _ in times.values())
        slow = sorted(times.items(), key=lambda kv: -kv[1][0])[:3]
        named = ", ".join(f"{n} {w:.0f} s" for n, (w, _) in slow)
        out.append(
            Row(
                "whole suite",
                f"{len(times)} notebooks, sum of wall times",
                total,
                "-",
                None,
                None,
                True,
                "-",
                f"slowest: {named}. {note}".strip(),
            )
        )
    return out

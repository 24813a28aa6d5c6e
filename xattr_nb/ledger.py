"""The claim ledger: what a paper claims, what this run measured, and what is asserted.

A notebook opens a :class:`Ledger` (its calibration file is read once), states each claim with
:meth:`Ledger.claim` where the figure is computed, and ends with :meth:`Ledger.check`, which
asserts every claim against the bound in its own row: an assert and its ledger row cannot
disagree. :meth:`Ledger.sanity` states checks that are true by construction (a cost identity, a
reference that is zero by definition); they are asserted and shown apart, never counted as claims.

The one calibration rule (:func:`calibrate_bound`), applied to the values a claim took at the
development seeds (``xattr-nb calibrate NN``, committed under ``notebooks/calibration/``):

- ``floor = min(values) - 2 * sd(values)`` (``max + 2 sd`` when lower is better), ``sd`` the sample
  standard deviation, rounded outward to 3 decimals: the value the claim is expected to clear at
  any other seed;
- the spec's threshold is asserted as is when the floor clears it: **reproduced**;
- otherwise the floor is asserted when it still clears the no-effect value ``null`` (or when the
  claim has no ``null``): **weaker margin**;
- otherwise nothing is asserted and the row says **not reproduced**, with what was measured.

A claim the notebook cannot test at this scale is stated with :meth:`Ledger.not_tested`.
Wall-clock ratios are never claims (they vary with the machine); pass counts are.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xattr_nb.checks import InputError

CLAIM_MIMETYPE = "application/vnd.xattr-nb.claim+json"
#: A claim measured at a scale other than the calibrated one ("full"): reported, never asserted.
MEASURED = "measured, not asserted"
STATUSES: tuple[str, ...] = ("reproduced", "weaker margin", "not reproduced", "not tested here", MEASURED, "sanity")
RULE = "floor = min(dev) - 2 sd(dev) (max + 2 sd if lower is better); spec if the floor clears it, else the floor if it clears null"
CALIBRATION_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "calibration"
CALIBRATING_ENV = "XATTR_NB_CALIBRATING"
GLANCE_START, GLANCE_END = "<!-- ledger:start -->", "<!-- ledger:end -->"


@dataclass
class Claim:
    """One row of the ledger."""

    name: str
    text: str
    observed: float | None
    paper: str = ""
    spec: float | None = None
    null: float | None = None
    higher: bool = True
    bound: float | None = None
    status: str = "not reproduced"
    holds: bool | None = None
    note: str = ""

    @property
    def op(self) -> str:
        return ">=" if self.higher else "<="


def _finite(x: Any, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError) as exc:
        raise InputError(f"`{name}` must be a number; got {type(x).__name__}") from exc
    if not math.isfinite(v):
        raise InputError(f"`{name}` must be finite; got {v}")
    return v


def _clears(value: float, threshold: float, higher: bool) -> bool:
    return value >= threshold if higher else value <= threshold


def calibrate_bound(
    values: Sequence[float], *, spec: float | None = None, null: float | None = None, higher: bool = True
) -> tuple[float | None, str]:
    """The one calibration rule (module docstring): ``(bound to assert or None, status)``."""
    vals = [_finite(v, f"values[{i}]") for i, v in enumerate(values)]
    if len(vals) < 3:
        raise InputError(f"calibration needs the values of at least 3 development seeds; got {len(vals)}")
    if spec is None and null is None:
        raise InputError("a claim needs a `spec` threshold or a no-effect value `null` to be calibrated against")
    sd = statistics.stdev(vals)
    # rounded outward, so the bound never claims more than the rule gives
    floor = math.floor((min(vals) - 2 * sd) * 1000) / 1000 if higher else math.ceil((max(vals) + 2 * sd) * 1000) / 1000
    if spec is not None and _clears(floor, spec, higher):
        return float(spec), "reproduced"
    if null is None or (_clears(floor, null, higher) and floor != null):
        return floor, "weaker margin"
    return None, "not reproduced"


def calibration_path(notebook: str) -> Path:
    """``notebooks/calibration/<notebook stem>.json`` (``$XATTR_NB_CALIBRATION_DIR`` overrides the folder)."""
    folder = Path(os.environ.get("XATTR_NB_CALIBRATION_DIR") or CALIBRATION_DIR)
    return folder / f"{Path(notebook).stem}.json"


def load_calibration(notebook: str) -> dict[str, Any]:
    """The committed calibration of ``notebook`` (``{}`` when there is none yet)."""
    path = calibration_path(notebook)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"calibration file {path} is not valid JSON: {exc}") from exc
    return data.get("claims", {})


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


class Ledger:
    """The claims of one notebook; ``Ledger("12_steering")`` reads its calibration file."""

    def __init__(self, notebook: str, *, calibration: dict[str, Any] | None = None, scale: str = "cpu") -> None:
        if not isinstance(notebook, str) or not notebook:
            raise InputError("`notebook` must be the notebook's name, e.g. '12_steering'")
        if not isinstance(scale, str) or not scale:
            raise InputError(f"`scale` must be the notebook's scale parameter, e.g. 'cpu' or 'full'; got {scale!r}")
        self.notebook = Path(notebook).stem
        self.scale = scale
        # Bounds are calibrated on the default scale's seeds; another scale's figures are reported, not asserted.
        self.calibration = (
            {} if scale != "cpu" else load_calibration(self.notebook) if calibration is None else calibration
        )
        self.rows: dict[str, Claim] = {}
        self.calibrating = os.environ.get(CALIBRATING_ENV) == "1"

    def _add(self, row: Claim, display: bool) -> Claim:
        if row.name in self.rows:
            raise InputError(f"claim {row.name!r} is stated twice in this notebook")
        self.rows[row.name] = row
        payload = {"notebook": self.notebook, **asdict(row)}
        if display:
            from IPython.display import display as ipy_display

            ipy_display({CLAIM_MIMETYPE: payload, "text/plain": self._line(row)}, raw=True)
        return row

    @staticmethod
    def _line(r: Claim) -> str:
        bound = f" (asserted {r.op} {_fmt(r.bound)})" if r.bound is not None else ""
        return f"[{r.status}] {r.name} = {_fmt(r.observed)}{bound}"

    def claim(
        self,
        name: str,
        observed: Any,
        *,
        text: str,
        paper: str = "",
        spec: float | None = None,
        null: float | None = None,
        higher: bool = True,
        display: bool = True,
    ) -> Claim:
        """State a claim and what this run measured; the bound and status come from calibration.

        ``observed`` is the measured figure (a margin over the strongest baseline, an accuracy,
        a correlation); ``spec`` the spec's small-scale threshold on it; ``null`` its no-effect
        value (``0`` for a margin); ``higher=False`` when lower is better; ``paper`` the paper's
        own number or wording. Nothing is asserted here: :meth:`check` asserts every claim.
        """
        if not isinstance(name, str) or not name.strip():
            raise InputError("`name` must be a non-empty string")
        obs = _finite(observed, f"observed ({name})")
        spec = None if spec is None else _finite(spec, "spec")
        null = None if null is None else _finite(null, "null")
        cal = self.calibration.get(name)
        if self.scale != "cpu":
            bound, status, note = None, MEASURED, f"scale {self.scale!r}: bounds are calibrated at scale 'cpu' only"
        elif cal is None:
            bound, status, note = None, "not reproduced", "not calibrated yet: run `xattr-nb calibrate`"
        else:
            bound, status = calibrate_bound(cal["values"].values(), spec=spec, null=null, higher=higher)
            note = ""
        holds = None if bound is None else _clears(obs, bound, higher)
        row = Claim(name, text, obs, paper, spec, null, higher, bound, status, holds, note)
        return self._add(row, display)

    def not_tested(self, name: str, *, text: str, paper: str = "", why: str, display: bool = True) -> Claim:
        """A claim of the paper that this notebook cannot test at its scale, and why."""
        return self._add(Claim(name, text, None, paper, status="not tested here", note=why), display)

    def sanity(self, name: str, ok: bool, *, text: str, display: bool = True) -> Claim:
        """A check that is true by construction: asserted in :meth:`check`, never counted as a claim."""
        return self._add(Claim(name, text, float(bool(ok)), status="sanity", holds=bool(ok)), display)

    def table(self) -> str:
        """The ledger as a Markdown table (the notebook's "Results at a glance")."""
        return glance_table(list(self.rows.values()))

    def show(self) -> None:
        """Display the ledger (the notebook's closing table)."""
        from IPython.display import Markdown, display

        display(Markdown(self.table()))

    def failures(self) -> list[str]:
        """The asserted rows that did not hold, one line each (none while calibrating: nothing is asserted)."""
        if self.calibrating:
            return []
        return [
            f"{r.name} = {_fmt(r.observed)}, asserted {r.op} {_fmt(r.bound)}"
            for r in self.rows.values()
            if r.holds is False
        ]

    def check(self) -> None:
        """Show the ledger and assert every asserted claim and sanity check against its own row.

        A notebook writes the same as ``led.show()`` then ``assert not led.failures()``, so the
        reader sees the assert.
        """
        self.show()
        failed = self.failures()
        if failed:
            raise AssertionError(f"claims that did not hold: {'; '.join(failed)}")


def glance_table(rows: Sequence[Claim | dict[str, Any]]) -> str:
    """Markdown table of claims: what is claimed, the paper, the spec, this run, the bound, the status."""
    lines = [
        "| claim | paper | spec | this run | asserted | status |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        r = r if isinstance(r, Claim) else Claim(**{k: v for k, v in r.items() if k != "notebook"})
        spec = "—" if r.spec is None else f"{r.op} {_fmt(r.spec)}"
        bound = "—" if r.bound is None else f"{r.op} {_fmt(r.bound)}"
        observed = _fmt(r.observed) if r.status != "sanity" else ("true" if r.holds else "**false**")
        status = f"**{r.status}**" if r.status in ("not reproduced",) else r.status
        if r.note:
            status += f" ({r.note})"
        text = r.text.replace("|", "\\|")
        lines.append(f"| {text} | {r.paper.replace('|', '/') or '—'} | {spec} | {observed} | {bound} | {status} |")
    return "\n".join(lines)


def read_claims(nb: Any) -> list[dict[str, Any]]:
    """Collect the ledger rows from an executed notebook (an ``nbformat`` node or a path)."""
    if isinstance(nb, (str, os.PathLike)):
        import nbformat

        nb = nbformat.read(os.fspath(nb), as_version=4)
    found: list[dict[str, Any]] = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            payload = (out.get("data") or {}).get(CLAIM_MIMETYPE)
            if payload:
                found.append(payload)
    return found


def status_counts(rows: Sequence[Claim | dict[str, Any]]) -> dict[str, int]:
    """How many claims have each status (sanity checks apart)."""
    out = dict.fromkeys(STATUSES, 0)
    for r in rows:
        out[r.status if isinstance(r, Claim) else r["status"]] += 1
    return out


def seeds_phrase(seeds: Sequence[int] | None) -> str:
    """``[100, ..., 104]`` → ``"100–104"`` (a consecutive run), else the seeds listed; ``None`` → ``"100–104"``."""
    s = sorted(int(x) for x in (seeds or range(100, 105)))
    if s == list(range(s[0], s[-1] + 1)) and len(s) > 1:
        return f"{s[0]}–{s[-1]}"
    return ", ".join(str(x) for x in s)


def calibration_seeds(notebook: str) -> list[int] | None:
    """The development seeds of ``notebook``'s committed calibration (``None`` when it has none)."""
    path = calibration_path(notebook)
    if not path.exists():
        return None
    seeds = json.loads(path.read_text()).get("seeds")
    return [int(x) for x in seeds] if seeds else None


def _rows_seeds(rows: Sequence[Claim | dict[str, Any]]) -> list[int] | None:
    names = {r.get("notebook") for r in rows if isinstance(r, dict)} - {None}
    return calibration_seeds(names.pop()) if len(names) == 1 else None


def glance_markdown(rows: Sequence[Claim | dict[str, Any]], *, seeds: Sequence[int] | None = None) -> str:
    """The "Results at a glance" cell: the claims of the committed run, then the sanity checks.

    ``seeds`` are the development seeds the bounds came from (default: those of the rows' notebook's
    calibration file, else 100–104).
    """
    seeds = seeds if seeds is not None else _rows_seeds(rows)
    claims = [r for r in rows if (r.status if isinstance(r, Claim) else r["status"]) != "sanity"]
    sanity = [r for r in rows if r not in claims]
    counts = status_counts(claims)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "sanity") or "no claim stated yet"
    parts = [
        "## Results at a glance",
        "",
        GLANCE_START,
        f"From the committed run ({summary}). Bounds follow the one calibration rule of "
        f"`xattr_nb.ledger` at development seeds {seeds_phrase(seeds)} (`notebooks/calibration/`); the asserts at the end "
        "check these same rows.",
        "",
        glance_table(claims) if claims else "_No claim is stated yet._",
    ]
    if sanity:
        names = ", ".join(f"{r.text if isinstance(r, Claim) else r['text']}" for r in sanity)
        parts += ["", f"Sanity checks (true by construction, not claims): {names}."]
    parts.append(GLANCE_END)
    return "\n".join(parts)


def write_glance(nb: Any) -> Any:
    """Put the ledger of executed notebook ``nb`` (nbformat node) into its glance cell, right under the title.

    The cell is found by its markers; a notebook without one gets it inserted as cell 1 (when it
    states claims).
    """
    import nbformat

    rows = read_claims(nb)
    text = glance_markdown(rows)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and GLANCE_START in cell.source:
            cell.source = text
            return nb
    if rows:  # a notebook that states no claim yet keeps its cells as they are
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(text))
    return nb


def glance_is_current(nb: Any) -> bool:
    """Whether ``nb``'s glance cell shows exactly the claims its outputs carry."""
    want = glance_markdown(read_claims(nb))
    return any(c.cell_type == "markdown" and c.source == want for c in nb.cells)

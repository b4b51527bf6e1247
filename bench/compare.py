"""A run's numbers beside the committed reference (``results/<profile>``), each difference
read against that cell's measured noise.

The noise of a group (a table cell without its seed, or a victim's benign accuracy) is, in
order of preference:
- the calibrated tolerance in ``results/<profile>/baseline.json`` (``bench.check``), when this
  run has the baseline's seeds: it already covers seed spread and platform shifts;
- otherwise z x seed sd x sqrt(1/n_run + 1/n_ref), the sd pooled over the reference's and this
  run's seeds (and the baseline's seed sd where one exists), plus the baseline's platform shift;
- with a single seed everywhere and no baseline there is no estimate, and the line says so.
"""
from __future__ import annotations

import math
from pathlib import Path

from . import baseline as B
from . import records as R
from .io import CorruptFileError, read_json

Z = 4.0


def load_reference(ref_dir: Path, profile: str):
    """(cells, victims, baseline or None) of the committed reference; None when there is none."""
    if not (Path(ref_dir) / "records").is_dir():
        return None
    recs = [r for r in R.load_all(ref_dir) if r.profile == profile]
    if not recs:
        return None
    base = None
    path = Path(ref_dir) / "baseline.json"
    if path.exists():
        try:
            base = read_json(path)
        except CorruptFileError:
            base = None
    return ([r for r in recs if r.kind == "cell"], [r for r in recs if r.kind == "victim"], base)


def compare(run_records, ref_dir, profile: str, ref=None) -> list[dict]:
    """One row per group of this run: means, difference, tolerance and verdict. ``ref``: the
    reference already loaded by ``load_reference`` (read here when not given)."""
    ref = ref if ref is not None else load_reference(ref_dir, profile)
    if ref is None:
        return []
    cells, victims, base = ref
    ran = B.measure([r for r in run_records if r.kind == "cell"], [r for r in run_records if r.kind == "victim"])
    theirs = B.measure(cells, victims)
    groups = (base or {}).get("groups", {})
    rows = []
    for name in sorted(ran):
        mine = {s: v for s, v in ran[name]["values"].items()}
        ref_vals = theirs.get(name, {}).get("values", {})
        same = {s: v for s, v in ref_vals.items() if s in mine}
        ref_use = same if len(same) == len(mine) else ref_vals   # the same seeds where the reference has them
        m_run, m_ref = B.mean(mine), B.mean(ref_use)
        tol, how = tolerance(mine, ref_use, ref_vals, groups.get(name), base)
        diff = None if m_run is None or m_ref is None else m_run - m_ref
        verdict = ("no reference" if m_ref is None else "failed" if m_run is None else
                   "no noise estimate" if tol is None else
                   "within noise" if abs(diff) <= tol else "OUTSIDE noise")
        rows.append({"group": name, "run": m_run, "reference": m_ref, "diff": diff, "tolerance": tol,
                     "how": how, "verdict": verdict, "n_run": len(mine), "n_ref": len(ref_use)})
    return rows


def tolerance(mine: dict, ref_use: dict, ref_vals: dict, group: dict | None, base: dict | None):
    """(tolerance or None, how it was obtained). ``ref_use``: the reference seeds compared with;
    ``ref_vals``: all of them (for the spread)."""
    if group and base and sorted(mine) == sorted(map(str, base.get("seeds", []))):
        return group["tolerance"], "calibrated (bench.check)"
    sd, df = B.pooled_sd([mine, ref_vals])
    if group:
        g_sd, g_df = group["noise"]["seed_sd"], group["noise"]["df"]
        if g_df:
            sd = math.sqrt((sd ** 2 * df + g_sd ** 2 * g_df) / (df + g_df))
            df += g_df
    if not df:
        return None, "one seed: no spread measured"
    n_run = max(1, sum(v is not None for v in mine.values()))
    n_ref = max(1, sum(v is not None for v in ref_use.values()))
    tol = Z * sd * math.sqrt(1 / n_run + 1 / n_ref)
    if group:
        tol = max(tol, (base or {}).get("rule", B.RULE).get("margin", 1.5) * group["noise"]["platform_dev"])
    return round(max(tol, B.RULE["floor"]), 2), f"seed sd {sd:.2f} (df {df})"


def reference_commits(ref) -> str:
    """The commits the reference's records were made by (up to three)."""
    cells, victims, _ = ref
    return ", ".join(sorted({r.provenance.get("git_commit", "?") for r in cells + victims})[:3])


def render(rows, ref_dir, ref_commit: str | None) -> str:
    from tabulate import tabulate
    if not rows:
        return f"(no committed reference under {ref_dir} to compare with)"
    f = lambda v, sign=False: "—" if v is None else (f"{v:+.2f}" if sign else f"{v:.2f}")
    table = [[r["group"], f(r["run"]), f(r["reference"]), f(r["diff"], True),
              "—" if r["tolerance"] is None else f"±{r['tolerance']:.2f}", r["verdict"]] for r in rows]
    outside = sum(r["verdict"] == "OUTSIDE noise" for r in rows)
    unknown = sum(r["verdict"] == "no noise estimate" for r in rows)
    how = sorted({r["how"] for r in rows if r["tolerance"] is not None})
    head = (f"Compared with the committed reference {ref_dir}"
            + (f" (commit {ref_commit})" if ref_commit else "") + ": mean over this run's seeds vs the reference's.")
    tail = (f"{len(rows) - outside - unknown} of {len(rows)} groups within their noise, {outside} outside"
            + (f", {unknown} without a noise estimate" if unknown else "")
            + (f"; noise from: {'; '.join(how)}" if how else "") + ".")
    if outside:
        tail += (" A difference outside the noise on another CPU is worth a look (bench.check with three "
                 "seeds is the real test); on the reference's own platform it is a regression.")
    return "\n".join([head, "", tabulate(table, ["group", "this run", "reference", "Δ", "noise", "verdict"],
                                         tablefmt="github", disable_numparse=True), "", tail])

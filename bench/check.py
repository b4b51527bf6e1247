"""CI regression check: run the small fixed ``ci`` matrix and compare it with the baseline.

    python -m bench.check [--baseline results/ci/baseline.json] [--out DIR] [--update]
                          [--tolerance 2.0] [--data-root DIR] [--profile ci] [--jobs 1]
                          [--datasets A,B] [--defenses A,B] [--attacks A,B] [--labels A,B]

A baseline may cover a slice of a bigger profile (``--profile cpu --datasets fashionmnist
--defenses vanilla,ini --attacks knockoff``): ``--update`` writes the slice into the baseline
and later checks re-run that same slice without repeating the options.

Every clone accuracy (per cell: data set/defense/attack/label/seed) and every benign accuracy
(per victim: data set/defense/victim/-/seed) is compared with the committed baseline. A value
that moved by more than its tolerance (percentage points; the baseline may give a cell its
own ``"tolerance"``, a number or ``{metric: number}``), a cell that failed, or a cell missing
from the run is a regression. Cells the baseline does not know are listed but pass.
``--update`` rewrites the baseline from this run (keeping per-cell tolerances), records the
commit the numbers came from, and re-renders the tables next to it.

The run is CPU-deterministic, so the same commit gives the same numbers and the tolerance
only absorbs platform noise. Exit status: 0 pass, 1 regression, 2 bad input.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from . import records as R
from .io import CorruptFileError, git_commit, read_json, write_json

DEFAULT_BASELINE = Path("results/ci/baseline.json")
METRICS = ("clone_acc", "benign_acc")
SLICE_KEYS = ("datasets", "defenses", "attacks", "labels")
SCHEMA = 1
EPS = 1e-4   # below this a value has not moved (baseline values are rounded to 4 decimals)


class BadInput(Exception):
    """Unusable input; reported as one line and exit status 2."""


def _run_matrix(profile, out, **kw):
    from .run import run_matrix
    return run_matrix(profile, out, **kw)


def _get_profile(name):
    from .profiles import get_profile
    return get_profile(name)


# ------------------------------------------------------------------ measurements
def cell_id(dataset, defense, attack, label, seed) -> str:
    return f"{dataset}/{defense}/{attack}/{label}/{seed}"


def measure(cells, victims) -> dict:
    """cell id -> {metric: value or None (failed)}; benign accuracy under '<ds>/<def>/victim/-/<seed>'."""
    out = {}
    for c in cells:
        out[cell_id(c.dataset, c.defense, c.attack, c.label, c.seed)] = {
            "clone_acc": c.clone_acc if c.status == "ok" else None}
    benign = {}
    for c in cells:  # a cell carries its victim's benign accuracy; victim records win below
        if c.benign_acc is not None:
            benign[cell_id(c.dataset, c.defense, "victim", "-", c.seed)] = c.benign_acc
    for v in victims:
        benign[cell_id(v.dataset, v.defense, "victim", "-", v.seed)] = v.benign_acc
    for c in cells:
        benign.setdefault(cell_id(c.dataset, c.defense, "victim", "-", c.seed), None)
    out.update({k: {"benign_acc": v} for k, v in benign.items()})
    return out


# ------------------------------------------------------------------ comparison
@dataclass
class Change:
    cell: str
    metric: str
    base: float | None
    now: float | None
    tol: float | None
    verdict: str            # within | REGRESSION | FAILED | MISSING | new | still failed

    @property
    def regression(self) -> bool:
        return self.verdict in ("REGRESSION", "FAILED", "MISSING")

    def row(self):
        delta = self.now - self.base if self.now is not None and self.base is not None else None
        f = lambda v, s="": "—" if v is None else format(v, f"{s}.2f")  # noqa: E731
        return [self.cell, self.metric, f(self.base), f(self.now), f(delta, "+"),
                f(self.tol), self.verdict]


def tolerance(entry: dict, metric: str, default: float) -> float:
    t = entry.get("tolerance", default)
    if isinstance(t, dict):
        t = t.get(metric, default)
    if not isinstance(t, (int, float)) or t < 0:
        raise BadInput(f"bad tolerance {t!r} in the baseline (a number >= 0, or {{metric: number}})")
    return float(t)


def compare(baseline: dict, current: dict, default_tol: float) -> list[Change]:
    """Every value that moved, failed, vanished or is new; unchanged values are left out."""
    changes = []
    for cell, entry in sorted(baseline["cells"].items()):
        for metric in METRICS:
            if metric not in entry:
                continue
            base, tol = entry[metric], tolerance(entry, metric, default_tol)
            if cell not in current or metric not in current[cell]:
                changes.append(Change(cell, metric, base, None, tol, "MISSING"))
                continue
            now = current[cell][metric]
            if now is None:
                verdict = "still failed" if base is None else "FAILED"
            elif base is None:
                verdict = "new"   # failed in the baseline, works now
            elif abs(now - base) <= EPS:
                continue
            else:
                verdict = "within" if abs(now - base) <= tol + EPS else "REGRESSION"
            changes.append(Change(cell, metric, base, now, tol, verdict))
    for cell in sorted(set(current) - set(baseline["cells"])):
        for metric, now in current[cell].items():
            changes.append(Change(cell, metric, None, now, None, "new"))
    return changes


# ------------------------------------------------------------------ baseline file
def load_baseline(path: Path, profile: str) -> dict:
    if not path.exists():
        raise BadInput(f"no baseline at {path}; create it with `python -m bench.check --update`")
    try:
        b = read_json(path)
    except (CorruptFileError, OSError) as e:
        raise BadInput(f"cannot read baseline {path}: {e}") from e
    if not isinstance(b, dict) or not isinstance(b.get("cells"), dict):
        raise BadInput(f"baseline {path} has no 'cells' mapping; regenerate it with --update")
    if b.get("profile", profile) != profile:
        raise BadInput(f"baseline {path} is for profile {b.get('profile')!r}, not {profile!r}")
    if not isinstance(b.get("slice", {}), dict) or set(b.get("slice", {})) - set(SLICE_KEYS):
        raise BadInput(f"baseline {path}: 'slice' must map some of {list(SLICE_KEYS)} to name lists")
    return b


def slice_of(a, old: dict | None) -> dict:
    """The cells to run: the options given, else the slice the baseline was made from."""
    given = {k: [x.strip() for x in getattr(a, k).split(",") if x.strip()]
             for k in SLICE_KEYS if getattr(a, k)}
    if given or a.update:
        return given
    return dict((old or {}).get("slice", {}))


def new_baseline(profile: str, current: dict, records, old: dict | None, commit: str,
                 slice_: dict | None = None) -> dict:
    """``commit``: HEAD when the run started (the code Python imported); records written later
    may name later commits when the working tree changed during the run: listed apart."""
    later = sorted({r.provenance.get("git_commit") for r in records
                    if r.provenance.get("git_commit")} - {commit})
    prov = next((r.provenance for r in records if r.provenance), {})
    cells = {}
    for cell, metrics in sorted(current.items()):
        entry = {m: (round(v, 4) if v is not None else None) for m, v in metrics.items()}
        if old and "tolerance" in old.get("cells", {}).get(cell, {}):
            entry["tolerance"] = old["cells"][cell]["tolerance"]
        cells[cell] = entry
    kept = {"calibration": old["calibration"]} if old and "calibration" in old else {}
    return {**kept, "schema": SCHEMA, "profile": profile, "slice": slice_ or {}, "commit": commit,
            "record_commits_other": later,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": prov.get("device"), "versions": prov.get("versions"),
            "note": "Written by `python -m bench.check --update`. A cell may carry its own "
                    "\"tolerance\" (percentage points, a number or {metric: number}).",
            "cells": cells}


def calibrate(baseline: dict, noise_run: Path, factor: float, floor: float) -> dict:
    """Per-cell tolerances from measured noise: ``noise_run`` holds the same slice run by the
    same code with only something numerically irrelevant changed (e.g. ``--jobs 2``: other
    thread counts); each value gets max(floor, factor * |moved|)."""
    recs = R.load_all(noise_run)
    if not recs:
        raise BadInput(f"no records under {noise_run}/records to calibrate from")
    other = measure([r for r in recs if r.kind == "cell"], [r for r in recs if r.kind == "victim"])
    moved = {}
    for cell, entry in baseline["cells"].items():
        tol = {}
        for metric in METRICS:
            base, now = entry.get(metric), other.get(cell, {}).get(metric)
            if metric in entry:
                delta = abs(now - base) if base is not None and now is not None else 0.0
                tol[metric] = round(max(floor, factor * delta), 2)
                moved[f"{cell}:{metric}"] = round(delta, 2)
        entry["tolerance"] = tol
    baseline["calibration"] = {"noise_run_devices": sorted({r.provenance.get("device", "?") for r in recs}),
                               "factor": factor, "floor": floor, "moved": moved,
                               "rule": "tolerance = max(floor, factor * |value in the noise run - baseline|)"}
    return baseline


# ------------------------------------------------------------------ driver
def from_records(profile: str, src: Path, slice_: dict, dest: Path):
    """The slice's records from a finished run in ``src``, looked up by this code's cache keys
    (so stale records are not taken), copied into ``dest``; returns (cells, victims)."""
    from .profiles import get_profile
    from .run import cached_cell, cell_record_path, plan, select, victim_key, victim_record_path
    p = select(get_profile(profile), **slice_)
    todo = plan(p)
    cells = [cached_cell(p, src, c) for c in todo]
    missing = [c for c, r in zip(todo, cells) if r is None]
    if missing:
        raise BadInput(f"{src} lacks {len(missing)} of the {len(todo)} cells for this code's config "
                       f"(first: {'/'.join(map(str, missing[0]))}); run the matrix there first")
    victims = []
    for ds, df, sd in sorted({(c[0], c[1], c[4]) for c in todo}):
        path = victim_record_path(src, ds, df, sd, victim_key(p, ds, df, sd))
        if path.exists():
            victims.append(R.load(path))
            R.save(victim_record_path(dest, ds, df, sd, victims[-1].key), victims[-1])
    for c, rec in zip(todo, cells):
        R.save(cell_record_path(dest, *c, rec.key), rec)
    return cells, victims


def run(profile: str, run_dir: Path, data_root, jobs, progress, slice_=None):
    cells = _run_matrix(profile, run_dir, jobs=jobs, data_root=data_root, device="cpu",
                        progress=progress, **(slice_ or {}))
    victims = [r for r in R.load_all(run_dir) if r.kind == "victim" and r.profile == profile]
    return cells, victims


def data_root(given):
    """The ci matrix reads the shared real data (../shared/data) unless told otherwise."""
    if given or os.environ.get("STEALBENCH_DATA"):
        return given
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def publish(run_dir: Path, dest: Path, profile: str) -> None:
    """Copy the run's records next to the baseline and re-render the tables there."""
    from .report import render
    if run_dir.resolve() != dest.resolve():
        if (dest / "records").exists():
            shutil.rmtree(dest / "records")
        shutil.copytree(run_dir / "records", dest / "records")
    render(dest, dest, profile)


def report(changes: list[Change], n_values: int, baseline: dict) -> None:
    if changes:
        print(tabulate([c.row() for c in changes],
                       ["cell", "metric", "baseline", "now", "Δ", "tolerance", "verdict"],
                       tablefmt="github", disable_numparse=True))
    moved = sum(c.verdict in ("within", "REGRESSION") for c in changes)
    bad = sum(c.regression for c in changes)
    print(f"{n_values} values checked against the baseline from commit "
          f"{baseline.get('commit', 'unknown')}: {moved} moved, {bad} regressions")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.check",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    ap.add_argument("--out", type=Path, help="run the matrix here (an empty or new folder; "
                    "default: a temporary folder, removed when the check passes)")
    ap.add_argument("--update", action="store_true", help="rewrite the baseline from this run")
    ap.add_argument("--tolerance", type=float, default=2.0,
                    help="default tolerance in percentage points (default 2.0)")
    ap.add_argument("--data-root", help="data folder (default: $STEALBENCH_DATA, else "
                    "../shared/data next to the repository if it exists, else the harness's)")
    ap.add_argument("--from", dest="from_dir", type=Path,
                    help="with --update: take the numbers from the records of a finished run in this "
                    "folder (e.g. results/cpu) instead of running the matrix")
    ap.add_argument("--calibrate", type=Path, metavar="DIR",
                    help="set per-cell tolerances from a second run of the same slice in DIR (same "
                    "code, e.g. another --jobs): max(--floor, --factor x how far each value moved); "
                    "runs nothing")
    ap.add_argument("--factor", type=float, default=2.0, help="with --calibrate (default 2)")
    ap.add_argument("--floor", type=float, default=4.0, help="with --calibrate (default 4 points)")
    ap.add_argument("--allow-failed", action="store_true",
                    help="with --update: record failed cells as null instead of refusing")
    ap.add_argument("--profile", default="ci", help="matrix profile (default ci)")
    ap.add_argument("--jobs", type=int, default=1)
    for k in SLICE_KEYS:
        ap.add_argument(f"--{k}", help=f"comma-separated {k} of the profile to run (default: the "
                        "baseline's slice, else all)")
    ap.add_argument("--progress", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        return _main(a)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(a) -> int:
    try:
        _get_profile(a.profile)
    except ValueError as e:
        raise BadInput(str(e)) from e
    if a.tolerance < 0:
        raise BadInput(f"--tolerance must be >= 0, got {a.tolerance}")
    if a.from_dir and not a.update:
        raise BadInput("--from only makes sense with --update (a check always runs the matrix)")
    if a.calibrate:
        if a.update or a.factor < 0 or a.floor < 0:
            raise BadInput("--calibrate takes no --update, and --factor/--floor must be >= 0")
        base = calibrate(load_baseline(a.baseline, a.profile), a.calibrate, a.factor, a.floor)
        write_json(a.baseline, base)
        widest = max(((c, t) for c, e in base["cells"].items() for t in e["tolerance"].values()),
                     key=lambda x: x[1])
        print(f"wrote per-cell tolerances into {a.baseline} (widest: {widest[0]} {widest[1]})")
        return 0
    old = None if a.update and not a.baseline.exists() else load_baseline(a.baseline, a.profile)
    if a.out and (a.out / "records").exists():
        raise BadInput(f"{a.out} already holds records/ (cached cells would not be re-run); "
                       "give an empty or new folder")
    run_dir = a.out or Path(tempfile.mkdtemp(prefix="stealbench-check-"))
    started_at = None if a.from_dir else git_commit()   # HEAD when the run began
    slice_ = slice_of(a, old)
    if slice_:
        print("slice: " + "; ".join(f"{k} {','.join(v)}" for k, v in slice_.items()))
    try:
        if a.from_dir:
            cells, victims = from_records(a.profile, a.from_dir, slice_, run_dir)
        else:
            cells, victims = run(a.profile, run_dir, data_root(a.data_root), a.jobs, a.progress, slice_)
    except (ValueError, OSError) as e:
        raise BadInput(f"the {a.profile} matrix could not start: {e}") from e
    commit = started_at or Counter(r.provenance.get("git_commit", "unknown")
                                   for r in cells + victims).most_common(1)[0][0]
    current = measure(cells, victims)
    failed = [c for c in cells if c.status != "ok"]
    for c in failed:
        first = (c.error or "").strip().splitlines()[0][:300] if c.error else "?"
        print(f"failed cell {cell_id(c.dataset, c.defense, c.attack, c.label, c.seed)}: {first}",
              file=sys.stderr)
    if a.update and failed and not a.allow_failed:
        print(f"{len(failed)} of {len(cells)} cells failed: baseline not written "
              "(fix them, or pass --allow-failed to record them as null)", file=sys.stderr)
        code = 1
    elif a.update:
        base = new_baseline(a.profile, current, cells + victims, old, commit, slice_)
        write_json(a.baseline, base)
        publish(run_dir, a.baseline.parent, a.profile)
        print(f"wrote {a.baseline}: {len(base['cells'])} cells from commit {base['commit']}"
              + (f" ({len(failed)} failed cells recorded as null)" if failed else ""))
        code = 0
    else:
        changes = compare(old, current, a.tolerance)
        report(changes, sum(len(v) for v in current.values()), old)
        code = 1 if any(c.regression for c in changes) else 0
    if a.out is None:
        if code == 0:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"the run's records are kept in {run_dir}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""CI regression check: run the fixed ``ci`` matrix over several seeds and compare each
group's mean with the baseline's.

    python -m bench.check                       # run and compare (exit 1 on a regression)
    python -m bench.check --update              # new baseline from a run of this code
    python -m bench.check --calibrate DIR ...   # tolerances from runs on other platforms

A group is a table cell without its seed (``mnist/mad/knockoff/soft``, or
``mnist/mad/victim`` for benign accuracy). A group whose mean over the seeds moved by more
than its tolerance, a failed cell, or a group missing from the run is a regression; groups
the baseline does not know are listed but pass. Tolerances come from measured noise: the
seed spread and how far runs on other platforms (CPU kernels, thread counts, torch builds;
emulate them with ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA and --jobs) moved the means; see
``bench/baseline.py`` for the rule. ``.ci/calibrate`` makes those runs.

A baseline may cover a slice of a bigger profile (``--profile cpu --datasets fashionmnist
--defenses vanilla,ini --attacks knockoff``): ``--update`` writes the slice into the
baseline and later checks re-run that slice without repeating the options.
Exit status: 0 pass, 1 regression, 2 bad input.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from . import baseline as B
from . import records as R
from .baseline import BadInput
from .io import CorruptFileError, git_commit, read_json, write_json, write_text

DEFAULT_BASELINE = Path("results/ci/baseline.json")
SLICE_KEYS = ("datasets", "defenses", "attacks", "labels")
MIN_SEEDS = 3
EPS = 1e-4   # below this a mean has not moved (baseline values are rounded to 4 decimals)


def _run_matrix(profile, out, **kw):
    from .run import run_matrix
    return run_matrix(profile, out, **kw)


def _get_profile(name):
    from .profiles import get_profile
    return get_profile(name)


# ------------------------------------------------------------------ comparison
@dataclass
class Change:
    group: str
    metric: str
    base: dict | None       # {seed: value} of the baseline
    now: dict | None        # {seed: value} of this run
    tol: float | None
    verdict: str            # within | REGRESSION | FAILED | MISSING | new | still failed

    @property
    def regression(self) -> bool:
        return self.verdict in ("REGRESSION", "FAILED", "MISSING")

    @property
    def delta(self) -> float | None:
        a, b = _mean(self.now), _mean(self.base)
        return a - b if a is not None and b is not None else None

    def row(self):
        f = lambda v, s="": "—" if v is None else format(v, f"{s}.2f")  # noqa: E731
        return [self.group, self.metric, _ms(self.base), _ms(self.now), f(self.delta, "+"),
                f(self.tol), self.verdict]


def _mean(values):
    return B.mean(values) if values else None


def _ms(values) -> str:
    """mean ± std (n) of {seed: value}."""
    if not values:
        return "—"
    m = B.mean(values)
    if m is None:
        return f"failed ({sum(v is None for v in values.values())}/{len(values)})"
    return f"{m:.2f} ± {B.std(values):.2f} ({len(values)})"


def in_slice(group: str, slice_: dict) -> bool:
    """Whether a group (``ds/defense/attack/label`` or ``ds/defense/victim``) lies in a slice."""
    parts = group.split("/")
    keys = ("datasets", "defenses") if parts[-1] == "victim" else SLICE_KEYS
    return all(not slice_.get(k) or part in slice_[k] for k, part in zip(keys, parts))


def compare(baseline: dict, current: dict, slice_: dict | None = None) -> list[Change]:
    """Every group of the baseline (within ``slice_``, when a narrower one was run) and of the
    run, with its verdict."""
    changes = []
    for name, g in sorted(baseline["groups"].items()):
        if slice_ and not in_slice(name, slice_):
            continue
        tol, base = g["tolerance"], g["values"]
        now = current.get(name, {}).get("values")
        if not now:
            changes.append(Change(name, g["metric"], base, None, tol, "MISSING"))
            continue
        m = B.mean(now)
        if m is None:
            verdict = "still failed" if g["mean"] is None else "FAILED"
        elif g["mean"] is None:
            verdict = "new"   # failed in the baseline, works now
        else:
            verdict = "within" if abs(m - g["mean"]) <= tol + EPS else "REGRESSION"
        changes.append(Change(name, g["metric"], base, now, tol, verdict))
    for name in sorted(set(current) - set(baseline["groups"])):
        changes.append(Change(name, current[name]["metric"], None, current[name]["values"], None, "new"))
    return changes


def worst(changes: list[Change]) -> Change | None:
    """The group that moved most relative to its tolerance (failed or missing first)."""
    bad = [c for c in changes if c.verdict in ("FAILED", "MISSING")]
    if bad:
        return bad[0]
    moved = [c for c in changes if c.delta is not None and c.tol]
    return max(moved, key=lambda c: abs(c.delta) / c.tol, default=None)


# ------------------------------------------------------------------ baseline file
def load_baseline(path: Path, profile: str) -> dict:
    if not path.exists():
        raise BadInput(f"no baseline at {path}; create it with `python -m bench.check --update`")
    try:
        b = read_json(path)
    except (CorruptFileError, OSError) as e:
        raise BadInput(f"cannot read baseline {path}: {e}") from e
    if not isinstance(b, dict) or b.get("schema") != B.SCHEMA or not isinstance(b.get("groups"), dict):
        raise BadInput(f"baseline {path} is not a schema-{B.SCHEMA} baseline (per-group means over "
                       "seeds); regenerate it with `python -m bench.check --update`")
    if b.get("profile", profile) != profile:
        raise BadInput(f"baseline {path} is for profile {b.get('profile')!r}, not {profile!r}")
    if not isinstance(b.get("slice", {}), dict) or set(b.get("slice", {})) - set(SLICE_KEYS):
        raise BadInput(f"baseline {path}: 'slice' must map some of {list(SLICE_KEYS)} to name lists")
    return b


def previous_baseline(path: Path, profile: str) -> dict | None:
    """With --update: the baseline being replaced, if it is a usable one (its rule and hand-set
    tolerances carry over); an older schema or a missing file just gets replaced."""
    try:
        return load_baseline(path, profile)
    except BadInput:
        if path.exists():
            print(f"replacing {path}: not a usable schema-{B.SCHEMA} baseline", file=sys.stderr)
        return None


def slice_of(a, old: dict | None) -> dict:
    """The cells to run: the options given, else the slice the baseline was made from."""
    given = {k: [x.strip() for x in getattr(a, k).split(",") if x.strip()]
             for k in SLICE_KEYS if getattr(a, k)}
    if given or a.update:
        return given
    return dict((old or {}).get("slice", {}))


def seeds_of(a, old: dict | None, profile) -> list[int]:
    """--seeds, else the baseline's, else the profile's; at least MIN_SEEDS of them."""
    if a.seeds:
        try:
            seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
        except ValueError:
            raise BadInput(f"--seeds must be comma-separated integers, got {a.seeds!r}") from None
    elif old and old.get("seeds") and not a.update:
        seeds = [int(s) for s in old["seeds"]]
    else:
        seeds = list(getattr(profile, "seeds", None) or range(MIN_SEEDS))
    if len(set(seeds)) < MIN_SEEDS and not a.allow_few_seeds:
        raise BadInput(f"the check compares means over at least {MIN_SEEDS} seeds, got {seeds} "
                       f"(one seed moves by several points between CPUs); pass more with --seeds")
    return seeds


# ------------------------------------------------------------------ driver
def collect(profile: str, src: Path, slice_: dict, seeds: list, dest: Path | None = None):
    """The slice's records from a finished run in ``src``, looked up by this code's cache keys
    (so stale records are not taken), copied into ``dest`` if given; returns (cells, victims)."""
    from .profiles import get_profile
    from .run import cached_cell, cell_record_path, plan, select, victim_key, victim_record_path
    p = select(get_profile(profile), seeds=seeds, **slice_)
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
            if dest is not None:
                R.save(victim_record_path(dest, ds, df, sd, victims[-1].key), victims[-1])
    if dest is not None:
        for c, rec in zip(todo, cells):
            R.save(cell_record_path(dest, *c, rec.key), rec)
    return cells, victims


def run(profile: str, run_dir: Path, data_root, jobs, progress, slice_, seeds):
    cells = _run_matrix(profile, run_dir, jobs=jobs, data_root=data_root, device="cpu",
                        progress=progress, seeds=seeds, **slice_)
    victims = [r for r in R.load_all(run_dir) if r.kind == "victim" and r.profile == profile]
    return cells, victims


@contextlib.contextmanager
def baseline_memory_format(baseline: dict | None):
    """Run a check in the memory format its baseline was made in (older baselines: the default
    NCHW), whatever STEALBENCH_CHANNELS_LAST says; an update runs in the caller's."""
    if baseline is None:
        yield
        return
    fmt = baseline.get("memory_format", "contiguous")
    before = os.environ.get("STEALBENCH_CHANNELS_LAST")
    os.environ["STEALBENCH_CHANNELS_LAST"] = "1" if fmt == "channels_last" else "0"
    print(f"memory format: {fmt} (the baseline's)", flush=True)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("STEALBENCH_CHANNELS_LAST", None)
        else:
            os.environ["STEALBENCH_CHANNELS_LAST"] = before


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


def torch_of(records) -> str | None:
    """The torch the records were made with (from their provenance: this module loads no model)."""
    found = ((r.provenance or {}).get("versions", {}).get("torch") for r in records)
    return next((v for v in found if v), None)


def report(changes: list[Change], baseline: dict, platform: str, torch_version: str | None = None) -> None:
    print(tabulate([c.row() for c in changes],
                   ["group", "metric", "baseline mean ± std (n)", "now", "Δ mean", "tolerance", "verdict"],
                   tablefmt="github", disable_numparse=True))
    bad = sum(c.regression for c in changes)
    compared = sum(c.delta is not None and bool(c.tol) for c in changes)
    w = worst(changes)
    print(f"\nbaseline: commit {str(baseline.get('commit', 'unknown'))[:12]} on {baseline.get('platform', '?')}, "
          f"{len(baseline.get('calibration', {}).get('runs', []))} calibration platforms")
    print(f"this run: {platform}")
    ours, theirs = torch_version, (baseline.get("versions") or {}).get("torch")
    if ours and theirs and ours != theirs:
        print(f"note: this run's torch {ours} is not the baseline's {theirs}, whose kernels the "
              "tolerances were calibrated on: a failure may be the library's, not the code's "
              "(re-calibrate with .ci/calibrate)")
    if w is not None and w.delta is not None:
        print(f"worst group: {w.group} moved {w.delta:+.2f} (tolerance {w.tol:.2f}, "
              f"{abs(w.delta) / w.tol:.2f} of it)")
    print(f"{len(changes)} groups checked ({compared} compared): {bad} regressions")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE,
                    help=f"baseline file (default {DEFAULT_BASELINE})")
    ap.add_argument("--out", type=Path, help="run the matrix here (an empty or new folder; "
                    "default: a temporary folder, removed when the check passes)")
    ap.add_argument("--resume", action="store_true", help="with --out: go on with a stopped run "
                    "there (its finished cells are reused, the rest run)")
    ap.add_argument("--update", action="store_true", help="rewrite the baseline from this run "
                    "(drops the calibration runs: they were made by other code)")
    ap.add_argument("--from", dest="from_dir", type=Path,
                    help="take the numbers from the records of a finished run in this folder (e.g. "
                    "results/cpu, or an earlier check's --out) instead of running the matrix: with "
                    "--update a baseline from them, without it a check of them")
    ap.add_argument("--calibrate", type=Path, nargs="+", metavar="DIR",
                    help="add runs of the same slice by the same code on other platforms (each DIR a "
                    "--out of `bench.check`) and recompute the tolerances; runs nothing")
    for k, v in B.RULE.items():
        ap.add_argument(f"--{k}", type=float, help=f"with --calibrate: the tolerance rule's {k} "
                        f"(default: the baseline's, else {v}; see bench/baseline.py)")
    ap.add_argument("--data-root", help="data folder (default: $STEALBENCH_DATA, else "
                    "../shared/data next to the repository if it exists, else the harness's)")
    ap.add_argument("--allow-failed", action="store_true",
                    help="with --update: record failed cells as null instead of refusing")
    ap.add_argument("--profile", default=None,
                    help="matrix profile (default: the baseline's, else ci)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--seeds", help=f"comma-separated seeds (default: the baseline's; at least {MIN_SEEDS})")
    ap.add_argument("--allow-few-seeds", action="store_true", help=argparse.SUPPRESS)  # unit tests
    for k in SLICE_KEYS:
        ap.add_argument(f"--{k}", help=f"comma-separated {k} of the profile to run (default: the "
                        "baseline's slice, else all)")
    ap.add_argument("--no-progress", action="store_true",
                    help="no progress (default: bars on a terminal, a line per victim and cell in a log)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        return _main(a)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def baseline_profile(path: Path) -> str | None:
    """The profile a baseline file names, or None (no file, unreadable: load_baseline says why)."""
    try:
        b = read_json(path)
    except (CorruptFileError, OSError):
        return None
    return b.get("profile") if isinstance(b, dict) else None


def _main(a) -> int:
    if a.profile is None:   # a slice baseline of another profile checks without repeating it
        a.profile = baseline_profile(a.baseline) or "ci"
    try:
        profile = _get_profile(a.profile)
    except ValueError as e:
        raise BadInput(str(e)) from e
    if a.jobs < 1:
        raise BadInput(f"--jobs must be >= 1, got {a.jobs}")
    if a.calibrate:
        return _calibrate(a)
    old = previous_baseline(a.baseline, a.profile) if a.update else load_baseline(a.baseline, a.profile)
    if a.resume and not a.out:
        raise BadInput("--resume needs --out (the folder of the stopped run)")
    if a.out and (a.out / "records").exists() and not a.resume:
        raise BadInput(f"{a.out} already holds records/ (cached cells would not be re-run); "
                       "give an empty or new folder, or --resume to go on with it")
    if a.from_dir and not (a.from_dir / "records").is_dir():
        raise BadInput(f"no records under {a.from_dir}/records to take the numbers from")
    slice_, seeds = slice_of(a, old), seeds_of(a, old, profile)
    run_dir = a.out or Path(tempfile.mkdtemp(prefix="stealbench-check-"))
    started_at = None if a.from_dir else git_commit()   # HEAD when the run began
    print("slice: " + ("; ".join(f"{k} {','.join(v)}" for k, v in slice_.items()) or "whole profile")
          + f"; seeds {','.join(map(str, seeds))}", flush=True)
    try:
        if a.from_dir:
            cells, victims = collect(a.profile, a.from_dir, slice_, seeds, run_dir)
        else:
            with baseline_memory_format(None if a.update else old):
                cells, victims = run(a.profile, run_dir, data_root(a.data_root), a.jobs, not a.no_progress,
                                     slice_, seeds)
    except (ValueError, OSError) as e:
        raise BadInput(f"the {a.profile} matrix could not start: {e}") from e
    commit = started_at or B.most_common_commit(cells + victims)
    current, platform = B.measure(cells, victims), B.platform_of(cells + victims)
    failed = [c for c in cells if c.status != "ok"]
    for c in failed:
        first = (c.error or "").strip().splitlines()[0][:300] if c.error else "?"
        print(f"failed cell {B.group_of(c.dataset, c.defense, c.attack, c.label)} seed {c.seed}: {first}",
              file=sys.stderr)
    if a.update and failed and not a.allow_failed:
        print(f"{len(failed)} of {len(cells)} cells failed: baseline not written "
              "(fix them, or pass --allow-failed to record them as null)", file=sys.stderr)
        code = 1
    elif a.update:
        base = B.new_baseline(a.profile, current, cells + victims, old, commit, slice_, seeds, platform)
        write_json(a.baseline, base)
        publish(run_dir, a.baseline.parent, a.profile)
        print(f"wrote {a.baseline}: {len(base['groups'])} groups over seeds {seeds} from commit "
              f"{base['commit']}" + (f" ({len(failed)} failed cells recorded as null)" if failed else "")
              + "; calibrate its tolerances on other platforms next (.ci/calibrate)")
        code = 0
    else:
        changes = compare(old, current, slice_)
        report(changes, old, platform, torch_of(cells + victims))
        code = 1 if any(c.regression for c in changes) else 0
    if a.out is None:
        if code == 0:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"the run's records are kept in {run_dir}", file=sys.stderr)
    return code


def _calibrate(a) -> int:
    if a.update:
        raise BadInput("--calibrate takes no --update (update first, then calibrate)")
    base = load_baseline(a.baseline, a.profile)
    base["rule"] = {**base.get("rule", {}), **{k: getattr(a, k) for k in B.RULE if getattr(a, k) is not None}}
    for src in a.calibrate:
        if not (src / "records").is_dir():
            raise BadInput(f"no records under {src}/records to calibrate from")
        cells, victims = collect(a.profile, src, base.get("slice", {}), base["seeds"])
        recs = cells + victims
        base = B.add_calibration(base, B.measure(cells, victims), str(src), B.platform_of(recs),
                                 B.most_common_commit(recs))
    write_json(a.baseline, base)
    text = calibration_table(base)
    write_text(a.baseline.with_name("calibration.md"), text)
    print(text)
    print(f"wrote tolerances into {a.baseline} from {len(base['calibration']['runs'])} calibration runs "
          f"(table: {a.baseline.with_name('calibration.md')})")
    return 0


def calibration_table(base: dict) -> str:
    """Markdown: every group's baseline mean ± sd, each platform's mean, the pooled seed sd,
    the largest platform shift and the tolerance they give."""
    runs = base.get("calibration", {}).get("runs", [])
    rule = base["rule"]
    head = ["group", "baseline"] + [f"P{i + 1}" for i in range(len(runs))] + \
           ["pooled seed sd", "max platform Δ", "tolerance"]
    rows = []
    for g, e in sorted(base["groups"].items()):
        means = [r["means"].get(g) for r in runs]
        rows.append([g, _ms(e["values"])] + ["—" if m is None else f"{m:.2f}" for m in means]
                    + [f"{e['noise']['seed_sd']:.2f}", f"{e['noise']['platform_dev']:.2f}", f"{e['tolerance']:.2f}"])
    lines = ["# Regression-check calibration", "",
             f"Baseline `{base['profile']}` over seeds {base['seeds']} at commit {str(base['commit'])[:12]} "
             f"on {base.get('platform')}. Tolerance = max({rule['floor']}, {rule['z']} x pooled seed sd x "
             f"sqrt(2/n), {rule['margin']} x max platform Δ) (bench/baseline.py). Platforms:", ""]
    lines += [f"- P{i + 1}: {r['platform']} (`{r['source']}`, commit {str(r['commit'])[:12]})"
              for i, r in enumerate(runs)]
    lines += ["", tabulate(rows, head, tablefmt="github", disable_numparse=True), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Mutation test of the regression check: plant one real fault at a time and show that
``python -m bench.check`` fails on each.

    python tests/mutants/run_mutants.py [--faults a,b] [--victims-from DIR] [--jobs 2] [--keep]
    python tests/mutants/run_mutants.py --recheck /tmp     # kept runs against a new baseline

Each fault (``sitecustomize.py`` beside this file) runs the check on the slice it touches,
on MNIST, over the baseline's seeds. ``--victims-from`` copies trained victim weights from
a finished check run (a ``--out`` folder of the same code) for faults that do not touch
training, so only the attacks re-run. Writes ``mutants.json`` and ``mutants.md`` next to the
baseline: fault, slice, exit status, the worst group and how far it moved against its
tolerance. Exit status 1 when the check missed a fault.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from sitecustomize import FAULTS  # noqa: E402  (FAULT is unset here: nothing is planted)

# the slice each fault touches (MNIST; the check compares only the groups in the slice)
SLICES = {
    "oracle-uniform-soft": ["--defenses", "vanilla", "--labels", "soft"],
    "jbda-step-zero": ["--defenses", "vanilla", "--attacks", "jbda"],
    "knockoff-shuffled-labels": ["--defenses", "vanilla", "--attacks", "knockoff"],
    "mad-no-perturbation": ["--defenses", "mad", "--labels", "soft"],
    "dcp-serves-vanilla": ["--defenses", "dcp", "--labels", "soft"],
    "victim-lr-tenth": ["--defenses", "vanilla", "--attacks", "jbda"],
}
TRAINS_VICTIMS = {"victim-lr-tenth"}
WORST = re.compile(r"worst group: (\S+) moved ([+-][\d.]+) \(tolerance ([\d.]+)")
SUMMARY = re.compile(r"(\d+) groups checked .*: (\d+) regressions")


def copy_victims(src: Path, dest: Path) -> None:
    """Trained unit weights only (records, served predictions and exports are recomputed)."""
    for unit in (src / "victims").glob("*/state.pt"):
        if unit.parent.name in ("served", "export"):
            continue
        shutil.copytree(unit.parent, dest / "victims" / unit.parent.name, dirs_exist_ok=True)


def run_fault(fault, baseline, jobs, victims_from, data_root, keep, recheck=None) -> dict:
    """Run the check with the fault planted; with ``recheck`` (a kept run folder of the same
    fault) compare that run's records with the baseline instead of running again."""
    out = recheck or Path(tempfile.mkdtemp(prefix=f"mutant-{fault}-"))
    if victims_from and fault not in TRAINS_VICTIMS and not recheck:
        copy_victims(victims_from, out)
    env = {**os.environ, "STEALBENCH_FAULT": fault,
           "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "bench.check", "--baseline", str(baseline), "--datasets", "mnist",
           *SLICES[fault], "--jobs", str(jobs), *(["--from", str(out)] if recheck else ["--out", str(out)])]
    if data_root:
        cmd += ["--data-root", data_root]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    text = p.stdout + p.stderr
    w, s = WORST.search(text), SUMMARY.search(text)
    if not keep and not recheck:
        shutil.rmtree(out, ignore_errors=True)
    moved, tol = (float(w.group(2)), float(w.group(3))) if w else (None, None)
    return {"fault": fault, "what": FAULTS[fault].__doc__.strip(), "slice": ["mnist", *SLICES[fault]],
            "exit": p.returncode, "caught": p.returncode == 1,
            "worst_group": w.group(1) if w else None, "moved": moved, "tolerance": tol,
            "moved_over_tolerance": round(abs(moved) / tol, 2) if w and tol else None,
            "groups": int(s.group(1)) if s else None, "regressions": int(s.group(2)) if s else None,
            "wall_s": round(time.time() - t0, 1), "tail": text.strip().splitlines()[-3:]}


def write(results: list[dict], dest: Path, baseline: Path, recheck: Path | None = None) -> None:
    from bench.io import git_commit, platform_label, provenance, write_json, write_text
    prov = provenance()
    baseline = baseline.resolve().relative_to(REPO) if baseline.resolve().is_relative_to(REPO) else baseline
    write_json(dest / "mutants.json", {"baseline": str(baseline), "git_commit": git_commit(),
                                       "rechecked_from": str(recheck) if recheck else None,
                                       "platform": platform_label(prov), "provenance": prov,
                                       "results": results})
    lines = ["# Mutation test of the regression check", "",
             f"`python tests/mutants/run_mutants.py` at commit {git_commit()[:12]} on "
             f"{platform_label(prov)}, against `{baseline}`. Each row plants one fault "
             "(`tests/mutants/sitecustomize.py`) and runs `bench.check` on the slice it touches "
             "(MNIST, the baseline's seeds). *moved* is the worst group's change of its mean; the "
             "check fails when a group moves by more than its tolerance."
             + (f" Compared again (`--recheck {recheck}`) from the kept runs of each fault, against "
                "the baseline as it is now; *wall_s* in the JSON is then the recheck's." if recheck else ""), "",
             "| fault | what | slice | worst group | moved | tolerance | moved / tol | regressions | check |",
             "|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        f = lambda v, s="": "—" if v is None else format(v, s)  # noqa: E731
        lines.append(f"| {r['fault']} | {r['what']} | {' '.join(r['slice'][1:]).replace('--', '')} | "
                     f"{r['worst_group'] or '—'} | {f(r['moved'], '+.2f')} | {f(r['tolerance'], '.2f')} | "
                     f"{f(r['moved_over_tolerance'], '.2f')} | {f(r['regressions'])}/{f(r['groups'])} | "
                     f"{'fails (caught)' if r['caught'] else 'MISSED (exit %d)' % r['exit']} |")
    write_text(dest / "mutants.md", "\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, default=REPO / "results" / "ci" / "baseline.json")
    ap.add_argument("--faults", help=f"comma-separated (default all): {', '.join(FAULTS)}")
    ap.add_argument("--victims-from", type=Path, help="a finished check run's --out folder")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--data-root")
    ap.add_argument("--keep", action="store_true", help="keep each fault's run folder (for --recheck)")
    ap.add_argument("--recheck", type=Path, metavar="DIR",
                    help="run nothing: compare the kept runs DIR/mutant-<fault>-* with the baseline "
                    "again (after a re-calibration)")
    a = ap.parse_args(argv)
    faults = a.faults.split(",") if a.faults else list(FAULTS)
    bad = [f for f in faults if f not in FAULTS]
    if bad:
        print(f"error: unknown fault(s) {bad}; accepted: {', '.join(FAULTS)}", file=sys.stderr)
        return 2
    results = []
    for fault in faults:
        kept = sorted(a.recheck.glob(f"mutant-{fault}-*")) if a.recheck else [None]
        if not kept:
            print(f"error: no kept run {a.recheck}/mutant-{fault}-*", file=sys.stderr)
            return 2
        r = run_fault(fault, a.baseline, a.jobs, a.victims_from, a.data_root, a.keep, kept[-1])
        print(json.dumps({k: v for k, v in r.items() if k != "tail"}), flush=True)
        if r["exit"] not in (0, 1):
            print("\n".join(r["tail"]), file=sys.stderr)
        results.append(r)
    write(results, a.baseline.parent, a.baseline, a.recheck)
    return 0 if all(r["caught"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

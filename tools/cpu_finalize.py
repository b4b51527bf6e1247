"""Render the finished long run (state/cpu-run, or its worktree's results/cpu-new) into
results/cpu and results/cpu-extended: each gets the records its profile's plan names by key
(cpu-extended borrows the cpu run's MNIST victims and cells), its invocations' ledger entries,
the whole-profile profile.json and table.md (summary/PROFILE), the exported victims, the run's
active wall time (wall_time.md, tools/cpu_walltime.py), and the rendered tables. Hand-written
parts (README's Analysis, attack_choice.md, ci-slice/) are kept.

    python tools/cpu_finalize.py [--src DIR] [--profiles cpu,cpu-extended]

Run from a clean checkout, then commit results/ (and delete state/cpu-run) in one commit.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))


def copy_profile(src: Path, profile_name: str, dest: Path) -> dict:
    from bench.profiles import get_profile
    from bench.report import plan_keys
    profile = get_profile(profile_name)
    keys = plan_keys(profile)
    summary = src / "summary" / profile_name
    if not (summary / "profile.json").exists():
        raise SystemExit(f"{summary}/profile.json missing: the {profile_name} run has not completed "
                         "(tools/cpu_run.sh writes it after the last block)")
    for sub in ("records/victims", "records/cells", "runs"):
        shutil.rmtree(dest / sub, ignore_errors=True)
        (dest / sub).mkdir(parents=True)
    n = {"victims": 0, "cells": 0, "runs": 0, "exports": 0}
    for kind in ("victims", "cells"):
        for f in sorted((src / "records" / kind).glob("*.json")):
            if f.stem.rsplit("-", 1)[-1] in keys:
                shutil.copy2(f, dest / "records" / kind / f.name)
                n[kind] += 1
    for f in sorted((src / "runs").glob("*.json")):
        if json.loads(f.read_text()).get("profile") == profile_name:
            shutil.copy2(f, dest / "runs" / f.name)
            n["runs"] += 1
    for name in ("profile.json", "table.md"):
        shutil.copy2(summary / name, dest / name)
    exports = src / "victims" / "export"
    # seed 0 only: three seeds of four victims would take 20 of the folder's 25 MB
    wanted = {f"{ds}-{df}-s0" for ds in profile.roles for df in profile.export}   # bench.victims' names
    if wanted and exports.is_dir():
        shutil.rmtree(dest / "victims" / "export", ignore_errors=True)
        for d in sorted(exports.iterdir()):
            if d.name in wanted:
                shutil.copytree(d, dest / "victims" / "export" / d.name)
                n["exports"] += 1
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default=str(REPO / "state" / "cpu-run" / "results" / "cpu-new"),
                   help="the run's output folder (default: state/cpu-run/results/cpu-new)")
    p.add_argument("--profiles", default="cpu,cpu-extended")
    p.add_argument("--dest-root", default=str(REPO / "results"), help="where results/PROFILE go (a dry run: elsewhere)")
    p.add_argument("--state", default=None,
                   help="folder holding cpu.log and alive.log (default: two levels above --src)")
    a = p.parse_args(argv)
    src = Path(a.src)
    state = Path(a.state) if a.state else src.parents[1]
    if not (src / "records").is_dir():
        print(f"error: {src} holds no records/: pass the run's output folder with --src", file=sys.stderr)
        return 2
    for name in a.profiles.split(","):
        dest = Path(a.dest_root) / name
        n = copy_profile(src, name, dest)
        print(f"{name}: {n}")
        if (state / "cpu.log").exists():
            from cpu_walltime import load, render, segments
            dest.mkdir(parents=True, exist_ok=True)
            (dest / "wall_time.md").write_text(render(*segments(*load(state, src / "runs"))))
        subprocess.run([sys.executable, "-m", "bench.report", "--profile", name, "--out", str(dest)],
                       cwd=REPO, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env bash
# Keep the long cpu-profile run (issue 17) alive across machines. A session's machine is not
# kept: only what lands on main survives. So the run lives in a worktree pinned to one clean
# commit (state/cpu-run/COMMIT), and its output folder (records, victims' checkpoints, the
# per-epoch partial state of a unit in training, the ledger) is copied into state/cpu-run/ and
# committed before a session stops. That folder is a run in progress, not results: the finished
# run is rendered into results/cpu by tools/cpu_finalize.py.
#
#   bash tools/cpu_state.sh resume   # make the worktree if missing, restore, start in background
#   bash tools/cpu_state.sh restore  # the same without starting (CPU_RUN_DIR=/tmp/x: a trial)
#   bash tools/cpu_state.sh save     # copy the worktree's output into state/cpu-run (then commit)
#   bash tools/cpu_state.sh status   # blocks and units done, the last log lines
#   bash tools/cpu_state.sh pause|cont   # stop / continue the run (e.g. around the test suite)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/tools/pinned_worktree.sh"
state=$repo/state/cpu-run
wt=${CPU_RUN_DIR:-$(dirname "$repo")/cpurun}
out=results/cpu-new

running_pgid() {
  ps -eo pgid,args | awk '/tools\/cpu_run.sh/ && !/awk/ {print $1; exit}'
}

case "${1:-}" in
  resume|restore)
    if [ "$1" = resume ] && [ -n "$(running_pgid)" ]; then echo "cpu run already running (pgid $(running_pgid))"; exit 0; fi
    commit=$(cat "$state/COMMIT")
    if [ ! -x "$repo/.venv/bin/python" ]; then   # a new machine: the run's library versions
      echo "making $repo/.venv (torch 2.14.1, the versions the run's records were made with)"
      python3 -m venv "$repo/.venv"
      "$repo/.venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
      "$repo/.venv/bin/pip" install -q -e "$repo[dev,dask,art]"
    fi
    pinned_worktree "$repo" "$wt" "$commit"
    mkdir -p "$wt/$out"
    if [ -d "$state/$out" ]; then cp -an "$state/$out/." "$wt/$out/"; fi
    for f in cpu.log alive.log; do
      if [ -f "$state/$f" ] && [ ! -f "$wt/$f" ]; then cp "$state/$f" "$wt/$f"; fi
    done
    if [ "$1" = restore ]; then
      (cd "$wt" && STEALBENCH_DATA=${STEALBENCH_DATA:-$(dirname "$repo")/shared/data} .venv/bin/python -m bench.run \
        --matrix cpu --out "$out" --dry-run | grep -c '^cached' | sed 's/^/cpu cells cached: /')
      exit 0
    fi
    echo "=== resume $(date -u +%FT%TZ) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" >> "$wt/cpu.log"
    nohup setsid bash "$repo/tools/cpu_run.sh" "$wt" >> "$wt/cpu.log" 2>&1 < /dev/null &
    echo "cpu run started in $wt (log: $wt/cpu.log)"
    ;;
  save)
    mkdir -p "$state/$out"
    # atomic writes (tmp + rename) mean every file copied is whole; locks and tmp files stay behind
    (cd "$wt/$out" && find . -type f ! -name '.lock*' ! -name '*.tmp' -print0 \
      | xargs -0 -I{} cp --parents -p {} "$state/$out/")
    # a unit finished since the last save leaves its partial folder behind in the state copy
    (cd "$state/$out" && find victims -mindepth 2 -maxdepth 2 -name partial -type d 2>/dev/null \
      | while read -r d; do [ -d "$wt/$out/$d" ] || rm -rf "$d"; done)
    cp "$wt/cpu.log" "$state/cpu.log"
    if [ -f "$wt/alive.log" ]; then cp "$wt/alive.log" "$state/alive.log"; fi
    # keep the repository small: once a block's cells are done its checkpoints are needed only by
    # cpu-extended, which reuses MNIST's Vanilla, InI, AM and MAD units (not EDM's, not FashionMNIST's),
    # and by the probes (tools/probe_run.sh), which reuse both data sets' Vanilla and InI units
    python3 - "$state/$out/victims" "$state/cpu.log" <<'PY'
import json, sys
from pathlib import Path
victims, log = Path(sys.argv[1]), Path(sys.argv[2]).read_text()
for spec in victims.glob("*/spec.json"):
    s = json.loads(spec.read_text())
    done = f"=== block seed {s['seed']} {s['dataset']} end" in log
    if done and s["unit"] not in ("vanilla", "ini") and (s["dataset"] != "mnist" or s["unit"] == "edm"):
        for f in spec.parent.glob("*.pt"):
            f.unlink()
PY
    du -sh "$state"
    ;;
  status)
    grep -E '^=== ' "$wt/cpu.log" | tail -4
    echo "victim records: $(ls "$wt/$out/records/victims" 2>/dev/null | wc -l)," \
         "cell records: $(ls "$wt/$out/records/cells" 2>/dev/null | wc -l)"
    tail -3 "$wt/cpu.log"
    ;;
  pause) kill -STOP -"$(running_pgid)"; echo "paused $(date -u +%FT%TZ)" | tee -a "$wt/cpu.log" ;;
  cont) kill -CONT -"$(running_pgid)"; echo "continued $(date -u +%FT%TZ)" | tee -a "$wt/cpu.log" ;;
  *) echo "usage: tools/cpu_state.sh resume|restore|save|status|pause|cont" >&2; exit 2 ;;
esac

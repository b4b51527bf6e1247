#!/usr/bin/env bash
# Issue 17's controlled-change probes (profiles cpu-probe-wide, cpu-probe-long): KnockoffNets
# cells on the cpu run's own Vanilla and InI victims, run into a copy of the run's folder so the
# cpu run's folder stays that run alone. Victims are hard links (read only here), records copies.
# The probes run at the lowest priority (their session's autogroup at nice 19: plain `nice` does
# not reach across autogroups), so they take only what the cpu run leaves idle.
#
#   bash tools/probe_run.sh start    # make the worktree and folder, restore saved cells, run
#   bash tools/probe_run.sh save     # copy the probe cells and log into state/cpu-run/probe
#   bash tools/probe_run.sh status
#
# SEEDS_FM=0,1 limits FashionMNIST's seeds (its seed-2 victims may not exist yet); start again
# later with the default (0,1,2): finished cells are cached. LABELS='soft' and PROFILES='cpu-probe-wide'
# narrow the loop (defaults: 'soft hard', 'cpu-probe-wide cpu-probe-long').
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/tools/pinned_worktree.sh"
state=$repo/state/cpu-run/probe
wt=${PROBE_DIR:-$(dirname "$repo")/proberun}
run=${CPU_RUN_DIR:-$(dirname "$repo")/cpurun}/results/cpu-new
out=results/probe

probe_cells() {   # the probes' own cell records (the rest are the cpu run's, saved by cpu_state.sh)
  grep -l '"profile": "cpu-probe' "$wt/$out/records/cells/"*.json 2>/dev/null || true
}

case "${1:-}" in
  start)
    # the loop, not a bench.run: between two invocations no bench.run is alive
    if pgrep -f 'probe\.sh$' >/dev/null; then echo "probes already running"; exit 0; fi
    commit=$(cat "$state/COMMIT")
    pinned_worktree "$repo" "$wt" "$commit"
    mkdir -p "$wt/$out/victims" "$wt/$out/records" "$wt/$out/runs"
    # victims: links to the run's finished units (new ones appear as the run trains them)
    (cd "$run/victims" && find . -type f ! -name '.lock*' ! -name '*.tmp' ! -path '*/partial/*' -print0 \
      | xargs -0 -I{} cp -nl --parents {} "$wt/$out/victims/")
    cp -an "$run/records/." "$wt/$out/records/"
    if [ -d "$state/records" ]; then cp -an "$state/records/." "$wt/$out/records/"; fi
    if [ -f "$state/probe.log" ] && [ ! -f "$wt/probe.log" ]; then cp "$state/probe.log" "$wt/probe.log"; fi
    cat > "$wt/probe.sh" <<EOF
set -u
cd "$wt"
export STEALBENCH_DATA=\${STEALBENCH_DATA:-$(dirname "$repo")/shared/data}
echo 19 > /proc/self/autogroup 2>/dev/null || true
for labels in ${LABELS:-soft hard}; do
  for prof in ${PROFILES:-cpu-probe-wide cpu-probe-long}; do
    for ds in mnist fashionmnist; do
      seeds=0,1,2; [ "\$ds" = fashionmnist ] && seeds=${SEEDS_FM:-0,1,2}
      echo "=== \$prof \$ds \$labels seeds \$seeds start \$(date -u +%FT%TZ)"
      nice -n 19 .venv/bin/python -m bench.run --matrix \$prof --datasets \$ds --labels \$labels \\
        --seeds \$seeds --jobs 2 --out $out --no-progress || echo "=== FAILED rc \$?"
      echo "=== \$prof \$ds \$labels end \$(date -u +%FT%TZ)"
    done
  done
done
echo "=== probes complete \$(date -u +%FT%TZ)"
EOF
    nohup setsid bash "$wt/probe.sh" >> "$wt/probe.log" 2>&1 < /dev/null &
    echo "probes started in $wt (log: $wt/probe.log)"
    ;;
  save)
    mkdir -p "$state/records/cells"
    probe_cells | xargs -r -I{} cp -p {} "$state/records/cells/"
    if [ -f "$wt/probe.log" ]; then cp "$wt/probe.log" "$state/probe.log"; fi
    echo "probe cells saved: $(ls "$state/records/cells" | wc -l)"
    ;;
  status)
    grep -E '^=== ' "$wt/probe.log" | tail -3
    echo "probe cells: $(probe_cells | wc -l) of 48"
    ;;
  *) echo "usage: tools/probe_run.sh start|save|status" >&2; exit 2 ;;
esac

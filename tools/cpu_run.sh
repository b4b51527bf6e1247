#!/usr/bin/env bash
# The long cpu-profile run (issue 17), then cpu-extended (issue 15), block by block: (seed, data
# set) in turn, so that at any stop at most one block's victims wait for their cells. Runs in a worktree pinned to one clean
# commit; state that must outlive a machine goes to state/cpu-run via tools/cpu_state.sh save.
# Usage: bash tools/cpu_run.sh WORKTREE   (resumable: a block already done takes seconds)
set -u
# The whole profile once more, every cell cached (seconds): its table.md, and a profile.json that
# describes the whole profile (a block's describes its filtered slice), kept in summary/PROFILE.
summarize() {
  rm -f results/cpu-new/profile.json
  .venv/bin/python -m bench.run --matrix "$1" --out results/cpu-new --no-progress > /dev/null \
    || { echo "=== summary $1 FAILED"; exit 1; }
  mkdir -p "results/cpu-new/summary/$1"
  cp results/cpu-new/profile.json results/cpu-new/table.md "results/cpu-new/summary/$1/"
}

main() {
  wt=${1:?worktree path}
  cd "$wt"
  export STEALBENCH_DATA=${STEALBENCH_DATA:-/work/shared/data}
  # a heartbeat a minute: a session stop kills the run without a word, and the ledger only knows
  # the last finished victim or cell, not the epochs trained (and kept) after it
  # (tools/cpu_walltime.py sums the run's active time from it)
  ( while sleep 60; do date -u +%FT%TZ >> alive.log; done ) &
  beat=$!; trap 'kill "$beat" 2>/dev/null' EXIT
  for seed in 0 1 2; do
    for ds in mnist fashionmnist; do
      echo "=== block seed $seed $ds start $(date -u +%FT%TZ)"
      .venv/bin/python -m bench.run --matrix cpu --seeds "$seed" --datasets "$ds" --jobs 2 \
        --out results/cpu-new || { echo "=== block seed $seed $ds FAILED rc $?"; exit 1; }
      echo "=== block seed $seed $ds end $(date -u +%FT%TZ)"
    done
  done
  summarize cpu
  echo "=== cpu run complete $(date -u +%FT%TZ)"
  # issue 15's matrix: the same MNIST victims (same cache keys in the same folder), the defenses
  # and attacks beyond the paper
  # EXT_ATTACKS=a,b,...: only those attacks' cells (e.g. while one attack is being fixed); the
  # run then stops before the summary, which would run the missing cells one at a time
  for seed in 0 1 2; do
    echo "=== block extended seed $seed start $(date -u +%FT%TZ)${EXT_ATTACKS:+ (attacks $EXT_ATTACKS)}"
    .venv/bin/python -m bench.run --matrix cpu-extended --seeds "$seed" --jobs 2 \
      ${EXT_ATTACKS:+--attacks "$EXT_ATTACKS"} \
      --out results/cpu-new || { echo "=== block extended seed $seed FAILED rc $?"; exit 1; }
    echo "=== block extended seed $seed end $(date -u +%FT%TZ)"
  done
  if [ -n "${EXT_ATTACKS:-}" ]; then echo "=== cpu-extended blocks done for $EXT_ATTACKS only"; exit 0; fi
  summarize cpu-extended
  echo "=== cpu-extended run complete $(date -u +%FT%TZ)"
}
# one function read whole before it runs: editing this file cannot derail a running loop
main "$@"; exit

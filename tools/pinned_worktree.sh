# Sourced by tools/cpu_state.sh and tools/probe_run.sh: a worktree at one pinned, clean commit,
# sharing the repository's venv, so every record it writes names that commit.
#   pinned_worktree REPO WORKTREE COMMIT
pinned_worktree() {
  local repo=$1 wt=$2 commit=$3
  if [ ! -d "$wt" ]; then
    git -C "$repo" worktree prune
    git -C "$repo" worktree add --detach "$wt" "$commit"
    ln -s "$repo/.venv" "$wt/.venv"
  fi
  [ "$(git -C "$wt" rev-parse HEAD)" = "$(git -C "$repo" rev-parse "$commit")" ] \
    || { echo "$wt is not at the pinned commit $commit" >&2; exit 2; }
  [ -z "$(git -C "$wt" status --porcelain --untracked-files=no)" ] || { echo "$wt has changes" >&2; exit 2; }
}

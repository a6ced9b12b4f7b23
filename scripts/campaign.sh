#!/usr/bin/env bash
# A queue of experiment runs for a campaign that spans sessions, as issue 13's was run.
#
#   scripts/campaign.sh [--after PID] ITEM...     ITEM = <experiment folder>:<row>:<seed>
#   e.g. nohup scripts/campaign.sh experiments/table1:s4_rc_chp:1 experiments/fig8_weak:weak_025:1 > A.log 2>&1 &
#
# Each item trains in turn, with one torch thread (two queues side by side fill 2 cores; a lone
# queue, as at a session's end, can take both with CAMPAIGN_THREADS=2), from a
# detached worktree of this checkout's HEAD ($CAMPAIGN_DIR, default ../campaign): the runs are
# trained from a clean commit while this checkout is edited. HEAD must be committed. The worktree
# shares this checkout's data/ and runs/; each finished run's record goes to this checkout's
# experiments/results/runs/ (commit it), and the tables to a scratch folder: rewrite the real ones
# here with `python -m crossmodal experiment <folder> --tables-only`; `... --plan` lists the items
# left, with estimated times. --after PID waits for a
# process (a run of another queue) to end first. The worktree is moved to HEAD only when no process
# works in it (a running one imports modules lazily from it); a queue that finds it busy at another
# commit trains from a worktree of its own ($CAMPAIGN_DIR-<commit>), removed when the queue ends
# (or, if the queue was killed, by the next queue).
# bash reads this file as it runs: while a queue runs, replace the file (write a copy, mv it over)
# instead of editing it in place, or the queue reads the edit at its old offset when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN=$(pwd)
CAMPAIGN_DIR=${CAMPAIGN_DIR:-$MAIN/../campaign}
AFTER=
if [ "${1:-}" = "--after" ]; then
    AFTER=$2
    shift 2
fi
[ $# -gt 0 ] || { echo "campaign.sh: give items <experiment folder>:<row>:<seed>" >&2; exit 2; }
for item in "$@"; do
    IFS=: read -r folder row seed <<< "$item"
    [ -f "$folder/experiment.yaml" ] && [ -n "$row" ] && [ -n "$seed" ] \
        || { echo "campaign.sh: $item: expected <experiment folder>:<row>:<seed> with an experiment.yaml in the folder" >&2; exit 2; }
done
git diff --quiet HEAD -- || { echo "campaign.sh: commit first: runs are trained from a clean HEAD" >&2; exit 2; }
# The commit is fixed now, not after the wait: edits and commits made meanwhile are not trained.
COMMIT=$(git rev-parse HEAD)
if [ -n "$AFTER" ]; then
    while kill -0 "$AFTER" 2>/dev/null; do sleep "${CAMPAIGN_POLL_S:-15}"; done
fi
in_use() {  # does a process (a queue, or the run it started) work in this folder?
    local dir p
    dir=$(cd "$1" && pwd -P)
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/cwd" 2>/dev/null)" = "$dir" ] && return 0
    done
    return 1
}
WORKTREE=$CAMPAIGN_DIR OWN=
if [ -e "$WORKTREE/.git" ] && in_use "$WORKTREE" && [ "$(git -C "$WORKTREE" rev-parse HEAD)" != "$COMMIT" ]; then
    WORKTREE=$CAMPAIGN_DIR-${COMMIT:0:7} OWN=1
fi
# A queue killed at a session's end leaves its own worktree behind: clear those no process uses.
for stale in "$CAMPAIGN_DIR"-*; do
    if [ -e "$stale/.git" ] && [ "$stale" != "$WORKTREE" ] && ! in_use "$stale"; then
        git worktree remove --force "$stale" && echo "campaign: removed $stale, left by a queue that was stopped"
    fi
done
if [ ! -e "$WORKTREE/.git" ]; then
    git worktree add -q --detach "$WORKTREE" "$COMMIT"
elif ! in_use "$WORKTREE"; then
    git -C "$WORKTREE" checkout -q --detach "$COMMIT"
fi
mkdir -p data runs
ln -sfn "$MAIN/data" "$WORKTREE/data"
ln -sfn "$MAIN/runs" "$WORKTREE/runs"
echo "campaign: $(git -C "$WORKTREE" rev-parse --short HEAD) in $WORKTREE"
cd "$WORKTREE"
export OMP_NUM_THREADS=${CAMPAIGN_THREADS:-1} PYTHONPATH=$WORKTREE
for item in "$@"; do
    IFS=: read -r folder row seed <<< "$item"
    echo "=== $(date '+%F %T') $item"
    rc=0
    "$MAIN/.venv/bin/python" -m crossmodal experiment "$folder" --rows "$row" --seeds "$seed" \
        --results "$MAIN/runs/campaign-tables" --records "$MAIN/experiments/results/runs" trainer.progress=false || rc=$?
    echo "=== $(date '+%F %T') done (exit $rc) $item"
done
cd "$MAIN"
# A queue's own worktree goes when it is done, unless another queue of the same commit still uses it.
if [ -n "$OWN" ] && ! in_use "$WORKTREE"; then
    git worktree remove --force "$WORKTREE"
    echo "campaign: removed $WORKTREE"
fi

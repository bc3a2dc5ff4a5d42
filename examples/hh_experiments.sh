#!/usr/bin/env bash
# The two long HH-RLHF experiments (README, "upo frontier" and "Steered UPO"), as they are run on
# this repository's 2-core CPU: examples/frontier_hh_seeds.yaml (issue 15: 3 seeds, paired
# intervals) and examples/frontier_hh_steered.yaml (issue 17: one steered run against UPO trained
# per aux_coef), which share their common runs (points_dir). One process per core, one thread each
# (two processes of 2 threads slow each other 10-30x; one thread per core gives ~2x the throughput
# of one 2-thread process). Rerun the same command to continue: finished runs are skipped, a killed
# training resumes from its last checkpoint, a killed generation from its last batch.
#
#   bash examples/hh_experiments.sh            # starts both workers in the background, logs in runs/
#   bash examples/hh_experiments.sh report     # once both are done: writes both report.md
#
# Each worker takes its seeds through both sweeps, the first seed of each sweep first (so a first
# answer exists after one seed). A run that the other worker holds (each run folder is locked)
# fails in this worker with a lock message and is retried by its next pass: each worker passes over
# its jobs until a pass fails nothing (at most 3 passes). Pause both with `kill -STOP -- -PGID`
# (PGID in runs/hh-worker-N.pgid) while timing anything; `kill -CONT -- -PGID` resumes.
set -u
cd "$(dirname "$0")/.."
UPO=${UPO:-.venv/bin/upo}
SEEDS=examples/frontier_hh_seeds.yaml
STEERED=examples/frontier_hh_steered.yaml

worker() {  # worker CORE "SWEEP:SEED ..."
  local core=$1 jobs=$2 pass job failed
  for pass in 1 2 3; do
    failed=0
    for job in $jobs; do
      OMP_NUM_THREADS=1 taskset -c "$core" "$UPO" frontier --config "${job%%:*}" --seeds "${job##*:}" || failed=1
    done
    [ "$failed" = 0 ] && break
  done
}

if [ "${1:-}" = report ]; then
  "$UPO" frontier --config "$SEEDS" && "$UPO" frontier --config "$STEERED"
  exit
fi
mkdir -p runs
# worker 0: seed 1 of both sweeps, then seed 3; worker 1: seed 2 of both, then helps with seed 3
setsid bash -c "$(declare -f worker); UPO=$UPO worker 0 '$SEEDS:1 $STEERED:1 $SEEDS:3 $STEERED:3'" \
  > runs/hh-worker-0.log 2>&1 < /dev/null &
echo $! > runs/hh-worker-0.pgid
setsid bash -c "$(declare -f worker); UPO=$UPO worker 1 '$SEEDS:2 $STEERED:2 $STEERED:3 $SEEDS:3'" \
  > runs/hh-worker-1.log 2>&1 < /dev/null &
echo $! > runs/hh-worker-1.pgid
echo "workers started: logs runs/hh-worker-0.log, runs/hh-worker-1.log"

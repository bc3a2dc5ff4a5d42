#!/usr/bin/env bash
# The long HH-RLHF experiments (README, "upo frontier" and "Steered UPO"), as they are run on this
# repository's 2-core CPU: examples/frontier_hh_seeds.yaml (issue 15: 3 seeds, paired intervals),
# examples/frontier_hh_steered.yaml (issue 17: one steered run against UPO trained per aux_coef) and
# examples/frontier_hh_long.yaml (the seeds sweep's DPO, KTO and UPO runs evaluated again at 192 new
# tokens, where 64 cut most long answers; not queued since 2026-11-30, see below), which share their
# common runs (points_dir). One
# process per core, one thread each
# (two processes of 2 threads slow each other 10-30x; one thread per core gives ~2x the throughput
# of one 2-thread process). Rerun the same command to continue: finished runs are skipped, a killed
# training resumes from its last checkpoint, a killed generation from its last batch. Each job (one
# `upo frontier` process) imports a frozen copy of the committed src/ as of its start
# (runs/hh-code-COMMIT/src): commits made while it runs cannot mix two versions of upo in one
# process, and the worker's next job takes them up.
#
#   bash examples/hh_experiments.sh            # starts both workers in the background, logs in runs/
#   bash examples/hh_experiments.sh 0          # (re)starts worker 0 alone (1: worker 1)
#   bash examples/hh_experiments.sh report     # once all are done: writes the two sweeps' report.md (and
#                                              # the long sweep's, of its finished evaluations)
#   bash examples/hh_experiments.sh finished   # meanwhile: the reports of the runs finished so far
#   bash examples/hh_experiments.sh status     # where each run stands (done, training step S/T, ...)
#   bash examples/hh_experiments.sh stop       # stops both: a training saves its current step first (SIGUSR1),
#                                              # an evaluation resumes from its last generated batch
#   bash examples/hh_experiments.sh archive    # copies the finished runs' small files into results/hh/ (commit it)
#   bash examples/hh_experiments.sh rejudge    # judges every finished evaluation again where another judge did
#
# runs/ is not committed, and a new machine starts without it (2026-11-30: a session began on a new
# machine and every run of the previous two days was gone). So the small files of each finished run
# (config.yaml, metrics.jsonl, the evaluations' eval.json/eval.md/generations.jsonl, the .jsonl gzipped;
# never weights or checkpoints) are archived into results/hh/ with `archive` and committed; starting the workers first
# copies them back into runs/ where missing, so finished runs are skipped there too (what the
# reports need of a run is in those files). A training or evaluation that had not finished is
# lost with the machine; so is a steered run until it is evaluated at every condition (it is
# archived only then: else a new machine would train it again and mix two trainings' conditions). The judge (runs/rm-hh-025) is retrained where missing, by worker 1 before
# its runs, one thread, seed 42; the archive records the sha256 of the weights that judged it
# (results/hh/judge.sha256), and a judge whose weights differ is reported, since the archived
# evaluations and the new ones would then have been judged by two models: a judge retrained on another
# machine differs (2026-12-01: same data, seed and code, other CPU, other weights). `rejudge` (and
# `report`, first) judges again, from its generations, every evaluation another judge judged
# (`upo rejudge --if_changed`: each eval.json records its judge's weights, judge_weights).
#
# Each worker takes its seeds through the sweeps (seeds 1 and 2: a seed's seeds-sweep runs, then its
# steered-sweep runs; seed 3, shared: see the queues below), the first
# seed of each sweep first (so a first answer exists after one seed). A run that the other worker holds (each run folder is locked)
# fails in this worker with a lock message and is retried by its next pass: each worker passes over
# its jobs until a pass fails nothing (at most 3 passes). Pause both with `kill -STOP -- -PGID`
# (PGID in runs/hh-worker-N.pgid) while timing anything; `kill -CONT -- -PGID` resumes.
set -u
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
SEEDS=examples/frontier_hh_seeds.yaml
STEERED=examples/frontier_hh_steered.yaml
WEIGHTED=examples/frontier_hh_steered_weighted.yaml  # the steered run with aux_coef 0 on half its steps
LONG=examples/frontier_hh_long.yaml  # a seed's DPO/KTO/UPO runs evaluated again at 192 new tokens
ARCHIVE=results/hh                    # the finished runs' small files, committed (archive / restore)
JUDGE=runs/rm-hh-025                  # the sweeps' judge (eval.judge in the YAML files)

worker() {  # worker CORE "SWEEP:SEED[:POINT,...] ..."
  local core=$1 jobs=$2 pass job failed rest points code
  for pass in 1 2 3; do
    failed=0
    for job in $jobs; do
      [ "$job" = JUDGE ] && { judge || return 1; continue; }
      rest=${job#*:} points=()
      [ "${rest#*:}" != "$rest" ] && points=(--points "${rest#*:}")
      code=$(code_snapshot) || { failed=1; continue; }
      printf "\nhh_experiments: %s with the code of %s\n" "$job" "$code"  # after a progress bar's \\r
      OMP_NUM_THREADS=1 PYTHONPATH="$code/src" taskset -c "$core" "$PYTHON" -m upo.cli frontier \
        --config "${job%%:*}" --seeds "${rest%%:*}" "${points[@]}" || failed=1
    done
    [ "$failed" = 0 ] && break
  done
}

judge() {  # train the sweeps' judge unless it is there (the YAML files' header), then check it against the archive's
  if [ ! -f "$JUDGE/final/model.safetensors" ]; then
    printf "\nhh_experiments: training the judge %s\n" "$JUDGE"
    # glibc's mmap threshold: without it the judge's heap grew past 16 GB beside a 8 GB worker and was
    # killed for memory (2026-12-01); with it its RSS stays under 7 GB (the allocator alone: same numbers)
    MALLOC_MMAP_THRESHOLD_=131072 OMP_NUM_THREADS=1 taskset -c "$core" "$PYTHON" -m upo.cli rm train \
      --dataset ../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz --eval_fraction 0.25 --seed 42 \
      --output_dir "$JUDGE" --batch_size 8 --max_length 384 --learning_rate 1e-5 || return 1
  fi
  judge_check
}

judge_check() {  # the judge's weights against those that judged the archived evaluations (results/hh/judge.sha256)
  local have
  [ -f "$JUDGE/final/model.safetensors" ] || return 0
  have=$(sha256sum "$JUDGE/final/model.safetensors" | cut -d" " -f1)
  if [ -f "$ARCHIVE/judge.sha256" ] && [ "$(cat "$ARCHIVE/judge.sha256")" != "$have" ]; then
    echo "hh_experiments: WARNING: $JUDGE/final is not the judge of the archived evaluations ($ARCHIVE/judge.sha256):" \
      "their win rates and the new ones come from two judges; \`bash examples/hh_experiments.sh rejudge\` judges" \
      "every evaluation again with this one (report does it first)" >&2
  fi
  return 0
}

code_snapshot() {  # a frozen copy of the committed src/ (runs/hh-code-COMMIT), which a job imports
  local dir tmp
  dir="runs/hh-code-$(git rev-parse --short HEAD)" || return 1
  if [ ! -d "$dir" ]; then  # the two workers may make it at once: each in its own folder, the first rename wins
    tmp=$(mktemp -d "$dir.XXXX") && git archive HEAD src | tar -x -C "$tmp" && { mv -T "$tmp" "$dir" 2>/dev/null \
      || rm -rf "$tmp"; }
  fi
  [ -d "$dir" ] && echo "$PWD/$dir"
}

start() {  # start WORKER CORE "SWEEP:SEED ...": in the background, its own process group, log appended
  local pgid
  pgid=$(cat "runs/hh-worker-$1.pgid" 2>/dev/null) && kill -0 -- "-$pgid" 2>/dev/null && {
    echo "worker $1 is running (process group $pgid); stop it first: kill -- -$pgid" >&2; return 1; }
  setsid bash -c "$(declare -f worker code_snapshot judge judge_check); PYTHON='$PYTHON' JUDGE='$JUDGE' \
    ARCHIVE='$ARCHIVE' worker $2 '$3'" \
    >> "runs/hh-worker-$1.log" 2>&1 < /dev/null &
  echo $! > "runs/hh-worker-$1.pgid"
  echo "worker $1 started on core $2 (each job with the code of HEAD at its start): log runs/hh-worker-$1.log, process group $!"
}

archive() {  # the small files of every run folder holding a finished evaluation, into $ARCHIVE (mirroring runs/)
  local eval run r n=0
  mkdir -p "$ARCHIVE"
  while IFS= read -r eval; do
    run=${eval%/*}  # the run folder: the nearest one up holding config.yaml (none for the base model's evaluation)
    r=$run; while [ "$r" != runs ] && [ ! -f "$r/config.yaml" ]; do r=${r%/*}; done
    [ -f "$r/config.yaml" ] && run=$r
    if ! whole_steered_run "$run"; then continue; fi
    (find "$run" \( -name final -o -name checkpoints \) -prune -o -type f \( -name config.yaml -o -name metrics.jsonl \
       -o -name reward_standardizer.json -o -name eval.json -o -name eval.md -o -name generations.jsonl \) -print) |
      while IFS= read -r f; do  # the larger files (~0.2-0.4 MB each) gzipped
        mkdir -p "$ARCHIVE/${f%/*}"
        case "$f" in *.jsonl) gzip -9nc "$f" > "$ARCHIVE/$f.gz" ;; *) cp -p "$f" "$ARCHIVE/$f" ;; esac
      done
    n=$((n + 1))
  done < <(find runs/frontier-hh-seeds/points -name eval.json -not -path "*/final/*" | sort)
  [ -f "$JUDGE/final/model.safetensors" ] && [ ! -f "$ARCHIVE/judge.sha256" ] &&
    sha256sum "$JUDGE/final/model.safetensors" | cut -d" " -f1 > "$ARCHIVE/judge.sha256"
  judge_check
  echo "archived $n finished evaluations into $ARCHIVE ($(du -sh "$ARCHIVE" | cut -f1)); commit it: git add $ARCHIVE"
}

rejudge() {  # every finished evaluation judged by the judge as it is now, where another judged it (upo rejudge)
  [ -f "$JUDGE/final/model.safetensors" ] || { echo "no judge at $JUDGE/final: start a worker to train it" >&2; return 1; }
  find runs/frontier-hh-seeds/points -name eval.json -not -path "*/final/*" -print0 | sort -z |
    OMP_NUM_THREADS=1 xargs -0 -r "$PYTHON" -m upo.cli rejudge --if_changed --judge "rm:$JUDGE/final" || return 1
  # every finished evaluation is judged by this judge now (the archive's copies too, once archived)
  sha256sum "$JUDGE/final/model.safetensors" | cut -d" " -f1 > "$ARCHIVE/judge.sha256"
}

whole_steered_run() {  # false for a steered run not yet evaluated at every condition: archived, its evaluations
  # would be restored on a new machine without its weights, and the rest would come from a second training
  local want have
  [ -f "$1/config.yaml" ] || return 0
  want=$("$PYTHON" -c "import sys, yaml; print(len(yaml.safe_load(open(sys.argv[1])).get('steer_aux_coefs') or []))" \
    "$1/config.yaml") || return 0
  have=$(find "$1" -mindepth 2 -maxdepth 2 -path "$1/aux-*/eval.json" | wc -l)
  [ "$want" = 0 ] || [ "$have" -ge "$want" ] || { echo "not archived yet: $1 ($have of $want conditions evaluated)"; return 1; }
}

restore() {  # the archived files back into runs/, where missing (a new machine); nothing present is overwritten
  [ -d "$ARCHIVE/runs" ] || return 0
  (cd "$ARCHIVE" && find runs -type f) | while IFS= read -r f; do
    case "$f" in
      *.jsonl.gz) [ -e "${f%.gz}" ] || { mkdir -p "${f%/*}" && gunzip -c "$ARCHIVE/$f" > "${f%.gz}"; } ;;
      *) [ -e "$f" ] || { mkdir -p "${f%/*}" && cp -p "$ARCHIVE/$f" "$f"; } ;;
    esac
  done
}

mkdir -p runs
# worker 0: seed 1 of both sweeps, then seed 3; worker 1: the judge where missing, seed 2 of both, then
# helps with seed 3. Then the weighted steered sweep (its grid runs are the steered sweep's): worker 0
# seed 1, worker 1 seed 2, both seed 3. The 192-token evaluations (frontier_hh_long.yaml) are no longer queued: no issue
# needs them, and a run restored from the archive has no weights to generate from. Each
# seed takes the DPO family first (UPO with its DPO term against DPO is the comparison that matters
# most, and these runs are the cheap ones), then the KTO family.
DPO_FAMILY=base,dpo,upo-dpo-aux1,dpo-relabel,modpo
case "${1:-both}" in
  report) rejudge || exit 1  # one judge for every evaluation (a new machine retrains it: other weights)
          rc=0
          for sweep in "$SEEDS" "$STEERED"; do "$PYTHON" -m upo.cli frontier --config "$sweep" || rc=1; done
          # the long sweep is not queued (above), the weighted one may be running: their reports hold what is
          # finished, if anything (a report without --finished would train what is missing)
          for sweep in "$WEIGHTED" "$LONG"; do
            if ! out=$("$PYTHON" -m upo.cli frontier --config "$sweep" --finished 2>&1); then
              echo "$out"
              grep -q "no run of .* is finished yet" <<< "$out" || rc=1  # none exists: nothing to report, no failure
            fi
          done
          exit $rc ;;
  finished) for sweep in "$SEEDS" "$STEERED" "$WEIGHTED" "$LONG"; do
              "$PYTHON" -m upo.cli frontier --config "$sweep" --finished; done ;;
  status) for sweep in "$SEEDS" "$STEERED" "$WEIGHTED" "$LONG"; do
            "$PYTHON" -m upo.cli frontier --config "$sweep" --status; echo; done ;;
  stop) for n in 0 1; do  # each worker's loop first, then its upo process: a training saves its step (upo.stop)
          pgid=$(cat "runs/hh-worker-$n.pgid" 2>/dev/null) || continue
          pkill -KILL -x bash -g "$pgid"; pkill -USR1 -g "$pgid" -f "upo.cli frontier"
        done
        for n in 0 1; do
          pgid=$(cat "runs/hh-worker-$n.pgid" 2>/dev/null) || continue
          for _ in $(seq 120); do pgrep -g "$pgid" > /dev/null || break; sleep 1; done
          pkill -KILL -g "$pgid" && echo "worker $n: killed after 120 s" || echo "worker $n: stopped"
        done ;;
  archive) archive ;;
  rejudge) rejudge ;;
  restore) restore ;;
  0) restore; judge_check
     start 0 0 "$SEEDS:1:$DPO_FAMILY $SEEDS:1 $STEERED:1 $SEEDS:3:$DPO_FAMILY $SEEDS:3 $STEERED:3 $WEIGHTED:1 $WEIGHTED:3" ;;
  1) restore; start 1 1 "JUDGE $SEEDS:2:$DPO_FAMILY $SEEDS:2 $STEERED:2 $STEERED:3 $SEEDS:3 $WEIGHTED:2 $WEIGHTED:3" ;;
  both) bash "$SCRIPT" 0 && bash "$SCRIPT" 1 ;;
  *) echo "usage: bash examples/hh_experiments.sh [both|0|1|report|finished|status|stop|archive|restore|rejudge]" >&2
     exit 2 ;;
esac

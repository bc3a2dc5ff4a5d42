#!/bin/bash
# Probe of steered UPO by adapter with more steps at aux_coef 0 (README, "Steered UPO": where the steered
# front falls short is its aux_coef 0 condition, which does not reach KTO). Four runs of 160 steps on the
# first 400 training pairs (seed 1), two at a time (one per core): grid UPO at aux_coef 0 (KTO's policy)
# and 3, the steered design as measured (one step in 4 per value), and the same with steer_aux_weights
# 3,1,1,1 (aux_coef 0 on half the steps); then scripts/steering_probe.py's distances. ~30 min on 2 cores.
set -eo pipefail
cd "$(dirname "$0")/.."
out=runs/probe-steer-weights
common=(--model embedded:smollm2-135m-instruct --dataset ../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz
        --eval_fraction 0.25 --split_seed 42 --seed 1 --max_examples 400 --method upo --pref_loss kto
        --rewards safety=0.95,readability=0.05 --beta 0.1 --lora true --lora_r 16 --lora_alpha 32
        --learning_rate 2e-4 --batch_size 4 --max_steps 160 --save_steps 40 --heldout_eval false --max_length 256
        --max_prompt_length 128 --precision bf16 --progress false --resume true)
steered=(--steer_aux_coefs 0,0.3,1,3 --steer_by adapter)
run() { local name=$1; shift; [ -d "$out/$name/final" ] || OMP_NUM_THREADS=1 taskset -c "$CORE" .venv/bin/upo train \
  "${common[@]}" --output_dir "$out/$name" "$@" > "$out/$name.log" 2>&1; }
mkdir -p "$out"
# two at a time; the second pair reuses the reference log-probs the first computed (the cache shared by runs:
# the four runs' reference forwards see the same inputs)
trained() { for name in "$@"; do [ -d "$out/$name/final" ] || { echo "$name failed: see $out/$name.log" >&2; exit 1; }; done; }
{ CORE=0 run grid-aux0 --aux_coef 0; } & { CORE=1 run steered-weighted "${steered[@]}" --steer_aux_weights 3,1,1,1; } &
wait; trained grid-aux0 steered-weighted
{ CORE=0 run grid-aux3 --aux_coef 3; } & { CORE=1 run steered "${steered[@]}"; } & wait; trained grid-aux3 steered
probe() { OMP_NUM_THREADS=1 .venv/bin/python scripts/steering_probe.py "$@" 2> "$out/probe.err" | tail -1; }
probe "$out/grid-aux0/final" --against "$out/grid-aux3/final"
for s in steered steered-weighted; do
  probe "$out/$s/final"                                                   # aux_coef 0 vs 3
  probe "$out/$s/final" --conditions 0 0 --against "$out/grid-aux0/final"   # its aux_coef 0 vs KTO's policy
  probe "$out/$s/final" --conditions 3 3 --against "$out/grid-aux3/final"
  probe "$out/$s/final" --conditions 0 0 --against "$out/grid-aux3/final"
done

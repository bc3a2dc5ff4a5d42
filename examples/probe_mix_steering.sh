#!/bin/bash
# Reward-mix steering probe (README, "Steered UPO", the reward-mix front): one UPO run steered over two
# reward mixes by token, and one run trained on each mix, 160 steps each on the first 400 training pairs
# (seed 1), then how far apart scripts/steering_probe.py finds them. ~45 min on one core; rerun to resume.
set -eo pipefail
cd "$(dirname "$0")/.."
out=runs/probe-mixes
common=(--model embedded:smollm2-135m-instruct --dataset ../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz
        --eval_fraction 0.25 --split_seed 42 --seed 1 --max_examples 400 --method upo --pref_loss kto --aux_coef 3
        --beta 0.1 --lora true --lora_r 16 --lora_alpha 32 --learning_rate 2e-4 --batch_size 4 --max_steps 160
        --save_steps 40 --heldout_eval false --max_length 256 --max_prompt_length 128 --precision bf16
        --progress false --resume true)
export OMP_NUM_THREADS=1
upo() { .venv/bin/upo "$@"; }
[ -d "$out/steered/final" ] || upo train "${common[@]}" --output_dir "$out/steered" \
  --steer_reward_mixes '{safe: {safety: 0.95, readability: 0.05}, readable: {safety: 0.3, readability: 0.7}}'
[ -d "$out/grid-safe/final" ] || upo train "${common[@]}" --output_dir "$out/grid-safe" --rewards safety=0.95,readability=0.05
[ -d "$out/grid-readable/final" ] || upo train "${common[@]}" --output_dir "$out/grid-readable" --rewards safety=0.3,readability=0.7
probe() { .venv/bin/python scripts/steering_probe.py "$@" 2> "$out/probe.err" | tail -1; }  # errors: probe.err
probe "$out/steered/final" --mixes safe readable
probe "$out/grid-safe/final" --against "$out/grid-readable/final"
for mix in safe readable; do
  for grid in safe readable; do probe "$out/steered/final" --mixes "$mix" "$mix" --against "$out/grid-$grid/final"; done
done

#!/usr/bin/env bash
# The step-speed sitting of docs/benchmarks.md ("Trainer step speed"): otpref's DPO and reward
# trainers beside TRL's DPOTrainer and RewardTrainer on the same model folder, pairs, batch,
# length limit and steps, one after the other on a quiet machine. Prints one line per run:
# tokens/s (otpref: its progress line at the last step; TRL: its scripts' JSON), peak resident
# memory and wall time of the whole process (/usr/bin/time -v).
#
#   scripts/bench/step_speed.sh MODEL_DIR PAIRS_JSONL [STEPS] [BATCH]
#
# MODEL_DIR: a causal-LM folder (scripts/gpu/make_model.py); PAIRS_JSONL: TRL preference pairs
# (e.g. the first 200 of `dpo_trainer --write-builtin`). Needs the release binaries
# (`cargo build --release -p otpref-trainers`; OTPREF_BIN=DIR runs the binaries in DIR instead,
# e.g. a copy of an earlier commit's) and Python with torch, transformers and trl.
set -euo pipefail
model=$1; pairs=$2; steps=${3:-3}; batch=${4:-4}
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin=${OTPREF_BIN:-$root/target/release}
work=$(mktemp -d)
common=(--model "$model" --data "$pairs" --steps "$steps" --batch-size "$batch" --max-length 128
        --max-prompt-length 64 --eval-every 0 --save-every 0 --log-every 1 --warmup-ratio 0
        --output "$work/run")

# shellcheck source=measure.sh
source "$root/scripts/bench/measure.sh"

measure "otpref dpo_trainer" "$bin/dpo_trainer" "${common[@]}" \
    --method dpo --sft-steps 0 --eval-prompts 0 --rpo-alpha 0
measure "TRL DPOTrainer" python3 "$root/scripts/gpu/trl_dpo.py" "$model" "$pairs" "$work/run" \
    "$steps" "$batch" cpu
measure "otpref reward_trainer" "$bin/reward_trainer" "${common[@]}" \
    --loss bt --lr 1e-5 --max-grad-norm 0
measure "TRL RewardTrainer" python3 "$root/scripts/bench/trl_reward.py" "$model" "$pairs" \
    "$work/run" "$steps" "$batch" 128
rm -rf "$work"

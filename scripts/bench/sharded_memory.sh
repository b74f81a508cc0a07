#!/usr/bin/env bash
# docs/benchmarks.md, "Sharded optimizer state": dpo_trainer full fine-tuning on two replicas
# (threads of one process, sharing this machine's memory), without and with
# --shard-optimizer, one after the other. Prints each run's tokens/s, the whole process's peak
# resident memory and wall time; the first run is the anchor (the same steps, the same
# parameters: trainers/tests/data_parallel.rs).
#
#   scripts/bench/sharded_memory.sh MODEL_DIR PAIRS_JSONL EVAL_JSONL [STEPS]
#
# MODEL_DIR from scripts/gpu/make_model.py, the pairs from make_pairs.py (README.md here);
# needs the release binaries.
set -euo pipefail
model=$1; pairs=$2; eval=$3; steps=${4:-3}
root="$(cd "$(dirname "$0")/../.." && pwd)"
work=$(mktemp -d)

# shellcheck source=measure.sh
source "$root/scripts/bench/measure.sh"

otpref=("$root/target/release/dpo_trainer" --model "$model" --data "$pairs" --eval-data "$eval"
        --method dpo --sft-steps 0 --steps "$steps" --batch-size 2 --devices 2 --max-length 256
        --max-prompt-length 128 --eval-prompts 0 --eval-every 0 --save-every 0 --log-every 1
        --output "$work/run")
measure "otpref 2 replicas, AdamW state on each" "${otpref[@]}"
measure "otpref 2 replicas, --shard-optimizer" "${otpref[@]}" --shard-optimizer
rm -rf "$work"

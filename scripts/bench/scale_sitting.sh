#!/usr/bin/env bash
# docs/benchmarks.md, "Trainers at scale": otpref's dpo_trainer and TRL's DPOTrainer (f32, with
# PEFT for the LoRA rows) one after the other on each row, in one sitting: full fine-tuning,
# LoRA r16, LoRA r16 + checkpointing, and the latter with a bf16 base. Prints, per run, the
# peak resident memory of the whole process (/usr/bin/time -v) and the tokens/s each program
# reports.
#
#   scripts/bench/scale_sitting.sh MODEL_DIR PAIRS_JSONL EVAL_JSONL
#
# MODEL_DIR from scripts/gpu/make_model.py, the pairs from make_pairs.py (README.md here);
# needs the release binaries and Python with torch, transformers, peft, trl.
set -euo pipefail
model=$1; pairs=$2; eval=$3
root="$(cd "$(dirname "$0")/../.." && pwd)"
work=$(mktemp -d)

# shellcheck source=measure.sh
source "$root/scripts/bench/measure.sh"

# /usr/bin/time runs programs, not shell functions: the two commands as arrays.
otpref=("$root/target/release/dpo_trainer" --model "$model" --data "$pairs" --eval-data "$eval"
        --method dpo --sft-steps 0 --steps 2 --batch-size 8 --max-length 256
        --max-prompt-length 128 --eval-prompts 0 --eval-every 0 --save-every 0 --log-every 1
        --warmup-ratio 0 --max-grad-norm 0 --rpo-alpha 0 --output "$work/run")
# then LORA_RANK CHECKPOINTING [BASE_DTYPE]
trl=(python3 "$root/scripts/bench/trl_dpo_memory.py" "$model" "$pairs" "$work/run" 2 8 256)

lora=(--lora-rank 16 --lora-alpha 32)
measure "otpref full fine-tuning" "${otpref[@]}"
measure "TRL f32 full fine-tuning" "${trl[@]}" 0 0
measure "otpref LoRA r16" "${otpref[@]}" "${lora[@]}"
measure "TRL f32 LoRA r16" "${trl[@]}" 16 0
measure "otpref LoRA r16 + checkpointing" "${otpref[@]}" "${lora[@]}" --gradient-checkpointing
measure "TRL f32 LoRA r16 + checkpointing" "${trl[@]}" 16 1
measure "otpref LoRA r16 + checkpointing + bf16 base" "${otpref[@]}" "${lora[@]}" \
    --gradient-checkpointing --base-dtype bf16
measure "TRL LoRA r16 + checkpointing, model in bf16" "${trl[@]}" 16 1 bf16
rm -rf "$work"

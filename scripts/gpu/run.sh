#!/usr/bin/env bash
# On the GPU machine, after scripts/gpu/build.sh packed gpu-pack/: the test suite on CUDA, the
# benchmarks beside their anchors, and short runs of both trainers, all results in one folder.
#
#   scripts/gpu/run.sh [OUT]          # default OUT: gpu-results (about 5-10 minutes)
#   scripts/gpu/run.sh --cpu [OUT]    # dry run on a CPU machine (pack built with --cpu)
#
# Every step's output goes to OUT/<step>.txt and its exit status to OUT/status.txt; a failing
# step does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/../.."
PACK="${PACK:-gpu-pack}"
device=cuda small=() cases=16
if [[ "${1:-}" == "--cpu" ]]; then
    device=cpu small=(--small) cases=4
    shift
fi
OUT="${1:-gpu-results}"
# Models, checkpoints and saved models (gigabytes at 135M parameters) go to a scratch folder;
# OUT gets each run's summary, metrics, config and curves.
SCRATCH="${SCRATCH:-$(mktemp -d)}"
if [[ ! -d "$PACK" ]]; then
    tar -xJf "$PACK.tar.xz" || { echo "error: no $PACK/ and no $PACK.tar.xz: run scripts/gpu/build.sh first" >&2; exit 2; }
fi
mkdir -p "$OUT"
: >"$OUT/status.txt"

# keep NAME: copies the small files of the trainer run SCRATCH/NAME into OUT/NAME.
keep() {
    mkdir -p "$OUT/$1"
    for file in summary.json metrics.jsonl config.json curves.png; do
        [[ -f "$SCRATCH/$1/$file" ]] && cp "$SCRATCH/$1/$file" "$OUT/$1/"
    done
}

# step NAME COMMAND...: runs COMMAND with its output in OUT/NAME.txt.
step() {
    local name=$1 started=$SECONDS
    shift
    echo "== $name"
    "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "$name: exit $rc, $((SECONDS - started)) s" | tee -a "$OUT/status.txt"
}

# peak_memory NAME COMMAND...: like step, also sampling the GPU's memory use (MiB) every 100 ms.
peak_memory() {
    local name=$1
    if [[ $device == cuda ]]; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 \
            >"$OUT/$name.memory" &
        local sampler=$!
        step "$@"
        kill "$sampler"
        echo "$name: peak GPU memory $(sort -n "$OUT/$name.memory" | tail -1) MiB" |
            tee -a "$OUT/status.txt"
    else
        step "$@"
    fi
}

if [[ $device == cuda ]]; then
    step machine nvidia-smi
else
    step machine lscpu
fi

# 1. The test suite (POT parity, the OTPO fixture, gradient checks, properties at $cases cases,
#    and on CUDA the CUDA-vs-CPU comparison).
PROPTEST_CASES=$cases step tests "$PACK/bin/suite"

# 2. The benchmarks, then their anchors (POT from the pack, torch from the machine).
bench_device=()
[[ $device == cpu ]] && bench_device=(--cpu)
step bench "$PACK/bin/gpu_bench" "${small[@]}" "${bench_device[@]}"
python_tag=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
PYTHONPATH="$PACK/python/$python_tag" step anchors python3 scripts/gpu/anchors.py --device "$device" "${small[@]}"

# 3. The trainers: the built-in task (a few steps each), then a ~135M-parameter Llama with
#    random weights on the built-in task's pairs written as JSON lines.
step dpo_builtin "$PACK/bin/dpo_trainer" --device "$device" --sft-steps 20 --steps 20 \
    --log-every 10 --eval-prompts 16 --output "$SCRATCH/dpo_builtin"
keep dpo_builtin
step reward_builtin "$PACK/bin/reward_trainer" --device "$device" --steps 20 --log-every 10 \
    --output "$SCRATCH/reward_builtin"
keep reward_builtin
step make_model python3 scripts/gpu/make_model.py "$PACK/tokenizer" "$SCRATCH/llama135m"
step write_data "$PACK/bin/dpo_trainer" --write-builtin "$SCRATCH/pairs.jsonl"
steps=30 batch=16
[[ $device == cpu ]] && steps=2 batch=2
for method in otpo dpo; do
    peak_memory "dpo_135m_$method" "$PACK/bin/dpo_trainer" --device "$device" \
        --model "$SCRATCH/llama135m" --data "$SCRATCH/pairs.jsonl" --method "$method" --sft-steps 0 \
        --rpo-alpha 0 \
        --steps "$steps" --batch-size "$batch" --max-length 128 --max-prompt-length 32 \
        --log-every 5 --eval-every 0 --save-every 0 --eval-prompts 8 \
        --output "$SCRATCH/dpo_135m_$method"
    keep "dpo_135m_$method"
done
# The anchor: TRL's DPOTrainer on the dpo_135m_dpo workload (same model, pairs, batch, steps).
step install_trl python3 -m pip install --quiet --no-index --no-deps --target "$SCRATCH/site" \
    "$PACK"/wheels/*.whl
PYTHONPATH="$SCRATCH/site" step trl_dpo_135m python3 scripts/gpu/trl_dpo.py \
    "$SCRATCH/llama135m" "$SCRATCH/pairs.jsonl" "$SCRATCH/trl" "$steps" "$batch" "$device"
for loss in aplot bt; do
    peak_memory "reward_135m_$loss" "$PACK/bin/reward_trainer" --device "$device" \
        --model "$SCRATCH/llama135m" --data "$SCRATCH/pairs.jsonl" --loss "$loss" \
        --steps "$steps" --batch-size "$batch" --max-length 128 --max-prompt-length 32 \
        --log-every 5 --eval-every 0 --save-every 0 --output "$SCRATCH/reward_135m_$loss"
    keep "reward_135m_$loss"
done

echo
cat "$OUT/status.txt"

#!/usr/bin/env bash
# The data-parallel sitting of docs/benchmarks.md ("Data-parallel scaling"): both trainers on
# the built-in task at one global batch, on 1 replica and on N replicas (threads sharing this
# machine's cores), then on 2 processes (nodes on the loopback address), one after the other
# on a quiet machine. Prints one line per run: tokens/s
# (the progress line at the last step, summed over replicas), peak resident memory and wall
# time of the whole process (/usr/bin/time -v).
#
#   scripts/bench/data_parallel.sh [STEPS] [GLOBAL_BATCH] [REPLICAS]
#
# Needs the release binaries (`cargo build --release -p otpref-trainers`).
set -euo pipefail
steps=${1:-30}; global=${2:-32}; replicas=${3:-2}
root="$(cd "$(dirname "$0")/../.." && pwd)"
work=$(mktemp -d)
common=(--steps "$steps" --eval-every 0 --save-every 0 --log-every 1 --output "$work/run")

# shellcheck source=measure.sh
source "$root/scripts/bench/measure.sh"

for n in 1 "$replicas"; do
    batch=$((global / n))
    measure "reward_trainer --loss aplot, $n x batch $batch" \
        "$root/target/release/reward_trainer" "${common[@]}" --loss aplot \
        --batch-size "$batch" --devices "$n"
    measure "dpo_trainer --method otpo, $n x batch $batch" \
        "$root/target/release/dpo_trainer" "${common[@]}" --method otpo --sft-steps 0 \
        --eval-prompts 0 --batch-size "$batch" --devices "$n"
done

# The same global batch on two processes (nodes on the loopback address, burn's global
# orchestrator and websockets between them): node 0 measured, node 1 beside it (it writes
# nothing).
batch=$((global / 2))
for program in reward dpo; do
    case $program in
        reward) args=(--loss aplot) ;;
        dpo) args=(--method otpo --sft-steps 0 --eval-prompts 0) ;;
    esac
    port=$((29400 + RANDOM % 500 * 4))
    run=("$root/target/release/${program}_trainer" "${common[@]}" "${args[@]}"
         --batch-size "$batch" --nodes 2 --orchestrator "127.0.0.1:$port")
    "${run[@]}" --node-rank 1 --node-address "127.0.0.1:$((port + 2))" > /dev/null 2>&1 &
    measure "${program}_trainer ${args[0]} ${args[1]}, 2 nodes x batch $batch" \
        "${run[@]}" --node-rank 0 --node-address "127.0.0.1:$((port + 1))"
    wait
done
rm -rf "$work"

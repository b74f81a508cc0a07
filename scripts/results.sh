#!/usr/bin/env bash
# Reproduces docs/results.md: every run of the built-in task's comparison, then the tables.
#
#   scripts/results.sh            # all 76 runs (about two hours on 2 cores), then the tables
#   RUNS=runs/results scripts/results.sh   # where the run folders go (the default)
#
# A run whose folder already has a summary.json is not run again, so an interrupted sweep
# continues where it stopped. Each run's summary.json is copied to docs/results/runs/ and the
# tables of docs/results.md are rebuilt from those copies by scripts/results_table.py.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-runs/results}"
SAVED=docs/results/runs
mkdir -p "$RUNS" "$SAVED"
cargo build --release --bins

# run NAME TRAINER FLAGS...: one training run, its log beside its folder.
run() {
    local name=$1 trainer=$2
    shift 2
    if [[ ! -f "$RUNS/$name/summary.json" ]]; then
        echo "== $name: $trainer $*"
        local started=$SECONDS
        "target/release/$trainer" "$@" --output "$RUNS/$name" >"$RUNS/$name.log" 2>&1
        echo "   $((SECONDS - started)) s"
    fi
    cp "$RUNS/$name/summary.json" "$SAVED/$name.json"
    echo "$trainer $*" >"$SAVED/$name.cmd"
}

# The comparisons docs/results.md reports, at the default recipe: DPO vs OTPO and Bradley-Terry
# vs APLOT (with clean labels and with 20% of the training labels flipped) over three seeds, then
# SimPO, SamPO and LD-DPO at one seed.
for seed in 1 2 3; do
    for method in dpo otpo; do
        run "dpo-$method-seed$seed" dpo_trainer --method "$method" --seed "$seed"
    done
    for loss in bt aplot; do
        for noise in 0 0.2; do
            run "reward-$loss-noise$noise-seed$seed" reward_trainer --loss "$loss" --label-noise "$noise" --seed "$seed"
        done
    done
done
for method in simpo sampo ld-dpo; do
    run "dpo-$method-seed1" dpo_trainer --method "$method" --seed 1
done

# How the DPO recipe was chosen (docs/results.md), and DPO vs OTPO where the policies move: the
# previous recipe (lr 5e-6, no NLL term) and lr 5e-6 with the NLL term, over three seeds; then
# single-seed variations.
for seed in 1 2 3; do
    for method in dpo otpo; do
        run "dpo-$method-lr5e-6-rpo0-seed$seed" dpo_trainer --method "$method" --lr 5e-6 --rpo-alpha 0 --seed "$seed"
        run "dpo-$method-lr5e-6-seed$seed" dpo_trainer --method "$method" --lr 5e-6 --seed "$seed"
    done
done
run dpo-dpo-lr5e-6-beta0.5-seed1 dpo_trainer --method dpo --lr 5e-6 --beta 0.5 --seed 1
run dpo-dpo-rpo0-seed1 dpo_trainer --method dpo --rpo-alpha 0 --seed 1

# On-policy pairs from a weaker reference (600 supervised steps, the README's main job): the
# offline pairs, then K = 4 samples per training prompt scored by the task's checker, for every
# method over three seeds (OTPO's own ablations on one); then best-of-8 for both reward losses
# on each seed's offline policy, and label noise 0.4.
for seed in 1 2 3; do
    run "dpo-dpo-sft600-seed$seed" dpo_trainer --method dpo --sft-steps 600 --seed "$seed"
    for method in dpo otpo confpo simpo sampo ld-dpo; do
        run "dpo-$method-sft600-onpolicy4-seed$seed" dpo_trainer --method "$method" --sft-steps 600 --pairs-from-policy 4 --seed "$seed"
    done
    for loss in bt aplot; do
        run "bestofn-$loss-seed$seed" reward_trainer --loss "$loss" --best-of-n 8 --policy "$RUNS/dpo-dpo-sft600-seed$seed/model" --seed "$seed"
        run "reward-$loss-noise0.4-seed$seed" reward_trainer --loss "$loss" --label-noise 0.4 --seed "$seed"
    done
done
for method in uniform similarity; do
    run "dpo-$method-sft600-onpolicy4-seed1" dpo_trainer --method "$method" --sft-steps 600 --pairs-from-policy 4 --seed 1
done
# Iterative DPO: the same recipe with the pairs sampled again from the current policy every 50
# DPO steps (4 rounds), DPO and OTPO over three seeds.
for seed in 1 2 3; do
    for method in dpo otpo; do
        run "dpo-$method-sft600-onpolicy4-every50-seed$seed" dpo_trainer --method "$method" --sft-steps 600 --pairs-from-policy 4 --resample-every 50 --seed "$seed"
    done
done

python3 scripts/results_table.py "$SAVED" docs/results.md
echo "tables written into docs/results.md"

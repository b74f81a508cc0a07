#!/usr/bin/env bash
# Reproduces docs/results.md: every run of the built-in task's comparison, then the tables.
#
#   scripts/results.sh            # all runs (about 90 minutes on 2 cores), then the tables
#   RUNS=runs/results scripts/results.sh   # where the run folders go (the default)
#
# A run whose folder already has a summary.json is not run again, so an interrupted sweep
# continues where it stopped. Each run's summary.json is copied to docs/results/runs/ and the
# tables are rebuilt from those copies by scripts/results_table.py.
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

for seed in 1 2 3; do
    # DPO vs OTPO at the default recipe, and at a 4x larger learning rate (where the policy moves).
    for method in dpo otpo; do
        run "dpo-$method-seed$seed" dpo_trainer --method "$method" --seed "$seed"
        run "dpo-$method-lr2e-5-seed$seed" dpo_trainer --method "$method" --lr 2e-5 --seed "$seed"
    done
    # Bradley-Terry vs APLOT, with clean labels and with 20% of the training labels flipped.
    for loss in bt aplot; do
        for noise in 0 0.2; do
            run "reward-$loss-noise$noise-seed$seed" reward_trainer --loss "$loss" --label-noise "$noise" --seed "$seed"
        done
    done
done
for method in simpo sampo ld-dpo; do
    run "dpo-$method-seed1" dpo_trainer --method "$method" --seed 1
done

python3 scripts/results_table.py "$SAVED" >docs/results/tables.md
echo "tables written to docs/results/tables.md"

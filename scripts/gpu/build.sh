#!/usr/bin/env bash
# Builds and packs what scripts/gpu/run.sh needs, on a CPU machine with Rust (and PyPI, for the
# POT wheels): the test suite on CUDA, the GPU benchmarks, both trainers, fixtures, wheels.
#
#   scripts/gpu/build.sh          # -> gpu-pack/ (for an NVIDIA GPU machine; stays under 64 MiB)
#   scripts/gpu/build.sh --cpu    # the same, but the test suite built for the CPU backend, so
#                                 # that `scripts/gpu/run.sh --cpu` can dry-run it here
#
# The GPU machine needs the CUDA driver, torch and transformers, but no Rust and no network.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACK="${PACK:-gpu-pack}"
# cudarc guesses the newest CUDA version without nvcc; pin it to the driver we target (13.0).
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
suite_features=gpu-tests
[[ "${1:-}" == "--cpu" ]] && suite_features=cuda

rm -rf "$PACK"
mkdir -p "$PACK/bin" "$PACK/wheels" "$PACK/tokenizer"

echo "== the test suite (features: $suite_features)"
cargo test --release --features "$suite_features" --test suite --no-run --message-format=json \
    >"$PACK/suite-build.json"
suite=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "suite" and m.get("executable"):
        print(m["executable"])' "$PACK/suite-build.json" | tail -1)
rm "$PACK/suite-build.json"
cp "$suite" "$PACK/bin/suite"

echo "== the GPU benchmarks and the trainers"
cargo build --release --features cuda --example gpu_bench
cargo build --release --features cuda -p otpref-trainers --bins
cp target/release/examples/gpu_bench target/release/dpo_trainer target/release/reward_trainer \
    "$PACK/bin/"
strip "$PACK"/bin/*

echo "== a tokenizer for the ~135M-parameter model (random weights are made on the GPU machine)"
cp trainers/tests/fixtures/hf/smollm/{tokenizer.json,tokenizer_config.json} "$PACK/tokenizer/"

echo "== POT wheels for the anchors (the GPU machine has no network)"
for python in 3.10 3.11 3.12 3.13; do
    pip download --quiet --no-deps --only-binary=:all: --python-version "$python" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$PACK/wheels" "POT==0.9.7.post1" ||
        echo "   (no POT wheel for Python $python)"
done

du -sh "$PACK"
size=$(du -sm "$PACK" | cut -f1)
if ((size >= 64)); then
    echo "error: $PACK is $size MiB, over the 64 MiB a GPU machine accepts" >&2
    exit 1
fi

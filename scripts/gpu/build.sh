#!/usr/bin/env bash
# Builds and packs what scripts/gpu/run.sh needs, on a CPU machine with Rust (and PyPI, for the
# POT wheels): the test suite on CUDA, the GPU benchmarks, both trainers, fixtures, wheels.
#
#   scripts/gpu/build.sh          # -> gpu-pack.tar.xz (for an NVIDIA GPU machine; < 64 MiB)
#   scripts/gpu/build.sh --cpu    # the same, but the test suite built for the CPU backend, so
#                                 # that `scripts/gpu/run.sh --cpu` can dry-run it here
#
# The GPU machine needs the CUDA driver, torch, transformers, numpy and scipy, but no Rust and
# no network. POT is packed for Python 3.12 (the GPU machines' here); PYTHONS="3.11 3.12" packs
# others.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACK="${PACK:-gpu-pack}"
# cudarc guesses the newest CUDA version without nvcc; pin it to the driver we target (13.0).
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
suite_features=gpu-tests
[[ "${1:-}" == "--cpu" ]] && suite_features=cuda

rm -rf "$PACK" "$PACK.tar.xz"
mkdir -p "$PACK/bin" "$PACK/python" "$PACK/tokenizer"

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

echo "== POT for the anchors, unpacked per Python version (the GPU machine has no network)"
# POT's wheel is 33 MB, 31 of them its bsp extension, which the anchors do not use: it is
# replaced by a stub that raises if called.
# Python versions to pack POT for: the GPU machines here run 3.12 (with numpy and scipy).
for python in ${PYTHONS:-3.12}; do
    tag="cp${python/./}"
    wheels=$(mktemp -d)
    if pip download --quiet --no-deps --only-binary=:all: --python-version "$python" \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$wheels" "POT==0.9.7.post1"; then
        python3 -m zipfile -e "$wheels"/*.whl "$PACK/python/$tag"
        rm "$PACK/python/$tag"/ot/bsp/bsp_wrap*.so
        printf 'def bsp_solve_c(*args, **kwargs):\n    raise NotImplementedError("not packed")\n\n\nmerge_bijections_c = bsp_solve_c\n' \
            >"$PACK/python/$tag/ot/bsp/bsp_wrap.py"
    else
        echo "   (no POT wheel for Python $python)"
    fi
    rm -rf "$wheels"
done

echo "== TRL and datasets for the DPOTrainer anchor (pure Python; the rest is on the GPU machine)"
mkdir -p "$PACK/wheels"
for python in ${PYTHONS:-3.12}; do
    pip download --quiet --no-deps --only-binary=:all: --python-version "$python" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$PACK/wheels" \
        trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 ||
        echo "   (no TRL wheels for Python $python)"
done

echo "== one archive"
tar -cJf "$PACK.tar.xz" "$PACK"
size=$(du -m "$PACK.tar.xz" | cut -f1)
echo "$PACK.tar.xz: $size MiB"
if ((size >= 64)); then
    echo "error: $PACK.tar.xz is $size MiB, over the 64 MiB a GPU machine accepts" >&2
    exit 1
fi

"""torch's f32 matrix products at the step-speed workload's shapes, on 2 threads: the anchor
for `trainers/examples/matmul_speed.rs` (docs/benchmarks.md, "an Intel Xeon with AVX-512").

    python3 scripts/bench/matmul.py
"""
import time

import torch

torch.set_num_threads(2)
SHAPES = [(336, 576, 1536), (336, 1536, 576), (336, 576, 576), (336, 576, 192),
          (576, 336, 1536), (1536, 336, 576)]
for m, k, n in SHAPES:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(5):
        a @ b
    calls = 50
    started = time.perf_counter()
    for _ in range(calls):
        a @ b
    seconds = (time.perf_counter() - started) / calls
    gflops = 2 * m * k * n / seconds / 1e9
    print(f"{m} x {k} x {n}: torch {seconds * 1e3:.3f} ms, {gflops:.1f} GFLOP/s")

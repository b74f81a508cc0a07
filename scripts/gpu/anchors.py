"""The anchors of the GPU benchmarks (docs/benchmarks.md), measured on the same GPU in the same
sitting as examples/gpu_bench.rs, one JSON line per workload on stdout:

- POT's `ot.batch.solve_batch` on torch CUDA tensors: balanced Sinkhorn, batch 128,
  n = m = 1024, eps = 0.05, costs uniform in [0, 1], uniform masses, tol 1e-6;
- the released OTPO recipe on torch CUDA tensors: `torch.cdist` and POT's
  `sinkhorn_unbalanced(method="sinkhorn_stabilized")` per pair (as the OTPO authors' trainer
  does), batch 64, 512 tokens per side, hidden 2048 and 4096, reg 0.1, reg_m 0.2.

    python3 scripts/gpu/anchors.py [--device cpu] [--small]

`--small` divides every size by 8 and `--device cpu` uses torch's CPU tensors (the dry run on a
machine without a GPU). POT installs offline from the wheel that scripts/gpu/build.sh packs.
"""
import argparse
import json
import time

import ot
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cuda")
parser.add_argument("--small", action="store_true")
args = parser.parse_args()
device = torch.device(args.device)
scale = 8 if args.small else 1
REPEATS = 5


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn):
    fn()
    times = []
    for _ in range(REPEATS):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def balanced():
    batch, n = 128 // scale, 1024 // scale
    generator = torch.Generator(device=device).manual_seed(0)
    cost = torch.rand((batch, n, n), generator=generator, device=device)
    masses = torch.full((batch, n), 1.0 / n, device=device)
    result = {}

    def solve():
        result["log"] = ot.batch.solve_batch(cost, 0.05, masses, masses, max_iter=10_000,
                                             tol=1e-6, grad="detach").log

    seconds = median_seconds(solve)
    iterations = int(result["log"]["n_iter"])
    per_iteration = seconds / max(iterations, 1)
    bytes_ = 2 * batch * n * n * 4
    return {"workload": "balanced", "anchor": "POT ot.batch.solve_batch (torch)",
            "batch": batch, "n": n, "ms_per_solve": 1e3 * seconds, "iterations": iterations,
            "ms_per_iteration": 1e3 * per_iteration, "gb_per_s": bytes_ / per_iteration / 1e9}


def otpo(hidden):
    batch, tokens, hidden = 64 // scale, 512 // scale, hidden // scale
    generator = torch.Generator(device=device).manual_seed(0)
    chosen = torch.randn((batch, tokens, hidden), generator=generator, device=device)
    rejected = torch.randn((batch, tokens, hidden), generator=generator, device=device)
    mask = torch.ones((batch, tokens), device=device)

    def weights():
        out = []
        for i in range(batch):
            cost = torch.cdist(chosen[i] * mask[i][:, None], rejected[i] * mask[i][:, None]) + 1e-6
            top = cost.abs().max()
            if top > 1:
                cost = cost / top
            a, b = mask[i].double(), mask[i].double()
            plan = ot.unbalanced.sinkhorn_unbalanced(a, b, cost.double(), 0.1, (0.2,),
                                                     method="sinkhorn_stabilized",
                                                     reg_type="entropy")
            scale_ = plan.sum() / torch.minimum(a.sum(), b.sum())
            out.append((plan.sum(-1) / scale_, plan.sum(0) / scale_))
        return out

    seconds = median_seconds(weights)
    return {"workload": "otpo_weights", "anchor": "released recipe (torch.cdist + POT per pair)",
            "batch": batch, "tokens": tokens, "hidden": hidden, "ms_per_call": 1e3 * seconds}


print(json.dumps({"pot": ot.__version__, "torch": torch.__version__, "device": str(device),
                  "name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}))
print(json.dumps(balanced()))
for hidden in (2048, 4096):
    print(json.dumps(otpo(hidden)))

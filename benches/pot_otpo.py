"""The released OTPO weight computation (POT sinkhorn_stabilized, looped over pairs, numpy)
on the workload of benches/otpo.rs: batch 8, 256 tokens per response, hidden 512,
reg = 0.1, reg_m = 0.2. Dev-time baseline for docs/benchmarks.md.

    pip install POT==0.9.7.post1 numpy scipy torch
    python3 benches/pot_otpo.py

Also times the recipe as the OTPO authors' trainer runs it, on torch CPU tensors
(`torch.cdist` + the same POT call, POT's torch backend), when torch is installed.
"""
import numpy as np
import ot
from scipy.spatial.distance import cdist

from timing import median_ms

rng = np.random.default_rng(0)
B, T, H = 8, 256, 512
chosen = rng.standard_normal((B, T, H)).astype(np.float32)
rejected = rng.standard_normal((B, T, H)).astype(np.float32)
mask = np.ones((B, T), dtype=np.float32)


def weights():
    out = []
    for i in range(B):
        p = chosen[i] * mask[i][:, None]
        q = rejected[i] * mask[i][:, None]
        cost = cdist(p, q).astype(np.float32) + 1e-6
        top = np.abs(cost).max()
        if top > 1:
            cost = cost / top
        a, b = mask[i].astype(np.float64), mask[i].astype(np.float64)
        plan = ot.unbalanced.sinkhorn_unbalanced(a, b, cost.astype(np.float64), 0.1, (0.2,),
                                                 method="sinkhorn_stabilized",
                                                 reg_type="entropy")
        scale = plan.sum() / min(a.sum(), b.sum())
        out.append((plan.sum(-1) / scale, plan.sum(0) / scale))
    return out


def weights_torch():
    out = []
    for i in range(B):
        p = chosen_t[i] * mask_t[i][:, None]
        q = rejected_t[i] * mask_t[i][:, None]
        cost = torch.cdist(p, q) + 1e-6
        top = cost.abs().max()
        if top > 1:
            cost = cost / top
        a, b = mask_t[i], mask_t[i]
        plan = ot.unbalanced.sinkhorn_unbalanced(a, b, cost, 0.1, (0.2,),
                                                 method="sinkhorn_stabilized",
                                                 reg_type="entropy")
        scale = plan.sum() / min(a.sum(), b.sum())
        out.append((plan.sum(-1) / scale, plan.sum(0) / scale))
    return out



print("POT", ot.__version__, "released OTPO recipe, batch 8 x 256 x 256, hidden 512: %.1f ms"
      % median_ms(weights, 5))
try:
    import os

    import torch
    torch.set_num_threads(os.cpu_count())
    chosen_t, rejected_t, mask_t = (torch.from_numpy(x) for x in (chosen, rejected, mask))
    print("  the same on torch CPU tensors (torch %s, %d threads): %.1f ms"
          % (torch.__version__, torch.get_num_threads(), median_ms(weights_torch, 5)))
except ImportError:
    pass

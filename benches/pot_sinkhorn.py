"""POT baselines for docs/benchmarks.md, measured on the same machine as the Rust benches.

    pip install POT==0.9.7.post1 numpy torch
    python3 benches/pot_sinkhorn.py

Workload of benches/sinkhorn.rs: batch 16, n = m = 256, eps = 0.05, tol 1e-6, costs uniform in
[0, 1], uniform masses; balanced through ot.batch.solve_batch (numpy), and the unbalanced
problem (rho = 1) through ot.unbalanced.sinkhorn_unbalanced looped over the batch. The
balanced problem also runs on torch CPU tensors (POT's torch backend, one thread per core),
the faster of POT's two CPU paths.

The gradient row: forward and backward of <P, W> (W fixed, uniform in [-1, 1]) with respect
to the cost on torch CPU tensors, through POT's `grad="autodiff"` (backpropagation through
the iterations: POT's only exact gradient of the plan), beside benches/sinkhorn.rs's
`implicit_gradient` rows.
"""
import numpy as np
import ot

from timing import median_ms

rng = np.random.default_rng(0)
B, N, EPS = 16, 256, 0.05
M = rng.random((B, N, N))
a = np.full((B, N), 1.0 / N)



def balanced():
    return ot.batch.solve_batch(M, EPS, a, a, max_iter=1000, tol=1e-6, grad="detach")


def unbalanced():
    return [ot.unbalanced.sinkhorn_unbalanced(a[k], a[k], M[k], EPS, reg_m=1.0,
                                              reg_type="entropy", numItermax=1000,
                                              stopThr=1e-6) for k in range(B)]


def balanced_torch():
    return ot.batch.solve_batch(M_torch, EPS, a_torch, a_torch, max_iter=1000, tol=1e-6,
                                grad="detach")


def gradient_torch():
    cost = M_torch.clone().requires_grad_()
    plan = ot.batch.solve_batch(cost, EPS, a_torch, a_torch, max_iter=1000, tol=1e-6,
                                grad="autodiff").plan
    (plan * W_torch).sum().backward()
    return cost.grad


try:
    import os

    import torch
    torch.set_num_threads(os.cpu_count())
    # float32, as otpref runs (torch is faster in f32 than in numpy's float64).
    M_torch, a_torch = torch.from_numpy(M).float(), torch.from_numpy(a).float()
    W_torch = torch.from_numpy(rng.uniform(-1.0, 1.0, (B, N, N))).float()
except ImportError:
    torch = None

print("POT", ot.__version__, "numpy", np.__version__,
      "torch", torch.__version__ if torch else "(not installed)")
if torch:
    print("balanced   ot.batch.solve_batch, torch CPU f32: %.1f ms (%d threads)"
          % (median_ms(balanced_torch, 7), torch.get_num_threads()))
    print("gradient   solve_batch(grad=autodiff) + backward, torch CPU f32: %.1f ms"
          % median_ms(gradient_torch, 7))
print("balanced   ot.batch.solve_batch:              %.1f ms (%d iterations)"
      % (median_ms(balanced, 7), balanced().log["n_iter"]))
print("unbalanced sinkhorn_unbalanced, loop of 16:   %.1f ms" % median_ms(unbalanced, 7))

"""The timing rule of the Python anchors: one warm-up call, then the median of `repeats`."""
import time

import numpy as np


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))

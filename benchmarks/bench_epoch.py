"""Seconds per training epoch: fastbp against its NumPy reference, per workload and dtype.

Every benchmark's ``setup`` first checks fastbp against :mod:`fastbp.reference` on a few
examples (a mismatch fails the benchmark), then builds the timed data and compiles the
kernels. The timed method is one epoch and nothing else: for fastbp a
``Network.fit(..., epochs=1)`` call (shuffle, every minibatch step, and the per-call
input validation a user pays), for the reference a shuffle and
``reference.train_epoch``.

asv re-runs ``setup`` before every sample, so each sample trains fresh weights; the
check, the data and the compilation are done once per process (``_prepared``).
"""

import time

import numpy as np

from . import workloads as wl
from .workloads import DTYPES, NAMES, WORKLOADS

IMPLS = ("fastbp", "reference")

_DONE = {}


def _prepared(name, dtype, impl):
    """Check, build the timed data and warm up, once per process; return the data."""
    key = (name, dtype, impl)
    if key not in _DONE:
        w = WORKLOADS[name]
        if impl == "fastbp":
            wl.check_epoch(w, dtype)
        X, Y, _ = w.data(dtype, w.examples())
        # Warm-up outside the timed method: compiles (or loads) the training kernels
        # for this dtype and depth, and starts the thread pools.
        m = min(len(X), 2 * w.batch + 1)
        if impl == "fastbp":
            w.network(dtype).fit(X[:m], Y[:m], epochs=1, batch_size=w.batch, lr=w.lr,
                                 progress=False)
        else:
            net = w.network(dtype)
            w.reference_epoch(net.weights, net.biases, X[:m], Y[:m], np.arange(m))
        _DONE[key] = (X, Y)
    return _DONE[key]


class Epoch:
    """One epoch of minibatch SGD on a workload's full training set."""

    params = [list(NAMES), list(DTYPES), list(IMPLS)]
    param_names = ["workload", "dtype", "impl"]
    number = 1
    repeat = (3, 10, 30.0)
    min_run_count = 1
    warmup_time = 0
    timeout = 900

    def setup(self, name, dtype, impl):
        self.w = WORKLOADS[name]
        self.X, self.Y = _prepared(name, dtype, impl)
        self.net = self.w.network(dtype)
        self.rng = np.random.default_rng(wl.DATA_SEED)

    def time_epoch(self, name, dtype, impl):
        w = self.w
        if impl == "fastbp":
            self.net.fit(self.X, self.Y, epochs=1, batch_size=w.batch, lr=w.lr,
                         progress=False)
        else:
            order = self.rng.permutation(len(self.X))
            w.reference_epoch(self.net.weights, self.net.biases, self.X, self.Y, order)


class Throughput:
    """GFLOP/s of fastbp's epoch (FLOPs from :meth:`Workload.flops_per_example`) and
    the peak memory of a one-epoch fit."""

    params = [list(NAMES), list(DTYPES)]
    param_names = ["workload", "dtype"]
    timeout = 900

    def setup(self, name, dtype):
        self.w = WORKLOADS[name]
        self.X, self.Y = _prepared(name, dtype, "fastbp")
        self.net = self.w.network(dtype)

    def _fit(self):
        w = self.w
        self.net.fit(self.X, self.Y, epochs=1, batch_size=w.batch, lr=w.lr, progress=False)

    def track_gflops(self, name, dtype):
        """Median over a few epochs (one in the quick profile)."""
        times = []
        for _ in range(1 if wl.profile() == "quick" else 3):
            start = time.perf_counter()
            self._fit()
            times.append(time.perf_counter() - start)
        gflops = self.w.flops_per_epoch(len(self.X)) / float(np.median(times)) / 1e9
        return float(f"{gflops:.4g}")

    track_gflops.unit = "GFLOP/s"

    def peakmem_fit(self, name, dtype):
        self._fit()

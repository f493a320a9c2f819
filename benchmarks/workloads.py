"""The benchmark workloads, shared by the asv suite and ``compare.py``.

One registry, :data:`WORKLOADS`, names every timed network; the asv benchmarks and the
peer comparison both iterate over it, so a new workload is timed everywhere by adding
one entry. Timings use random data of the workload's shape drawn from a fixed seed: the
kernels' work does not depend on the values.

The environment variable ``FASTBP_BENCH_PROFILE=quick`` shrinks every epoch to at most
:data:`QUICK_EXAMPLES` examples, so that CI can run the whole suite in a few minutes.

This module also holds the correctness checks that every benchmark runs before it
times anything: fastbp against :mod:`fastbp.reference` on a few examples, with the
tolerances of the test suite.
"""

import os
from dataclasses import dataclass

import numpy as np

import fastbp
from fastbp import reference

DTYPES = ("float32", "float64")

#: Relative tolerance of fastbp against the reference, as in tests/conftest.py.
RTOL = {"float64": 1e-10, "float32": 1e-4}

#: Examples per epoch under FASTBP_BENCH_PROFILE=quick.
QUICK_EXAMPLES = 2000

#: Seeds of the timed data and of the initial weights.
DATA_SEED = 20240601
NET_SEED = 7


def profile():
    """"quick" or "full", from FASTBP_BENCH_PROFILE (default "full")."""
    value = os.environ.get("FASTBP_BENCH_PROFILE", "full").strip().lower()
    if value not in ("quick", "full"):
        raise ValueError(f"FASTBP_BENCH_PROFILE must be 'quick' or 'full'; got {value!r}.")
    return value


@dataclass(frozen=True)
class Workload:
    """One network and training setting, timed per epoch.

    Attributes
    ----------
    name : str
        Short name, e.g. "W4-b32"; the part before "-" is the family ("W4").
    sizes : tuple of int
        Neurons per layer, input layer first.
    hidden, output, cost : str
        As for :class:`fastbp.Network`.
    batch : int
        Minibatch size.
    n_examples : int
        Examples per epoch.
    lr : float
        Learning rate η (momentum 0, no weight decay).
    """

    name: str
    sizes: tuple
    hidden: str
    output: str
    cost: str
    batch: int
    n_examples: int
    lr: float

    @property
    def family(self):
        return self.name.split("-")[0]

    @property
    def classification(self):
        """Targets are one-hot class indicators (else real-valued regression targets)."""
        return self.output in ("softmax", "sigmoid") and self.sizes[-1] > 1

    def examples(self, quick=None):
        """Examples per epoch under the current profile (or ``quick`` if given)."""
        quick = profile() == "quick" if quick is None else quick
        return min(self.n_examples, QUICK_EXAMPLES) if quick else self.n_examples

    def flops_per_example(self):
        """Multiply-adds x 2 of one example's forward and backward pass.

        Per layer of n_in inputs and n_out outputs: the forward pass z = W a + b costs
        2 n_out n_in, the weight gradient δ a^T the same, and carrying δ back to the
        previous layer (BP2) the same again for every layer but the first. Activations,
        costs, biases and the parameter update are not counted: they are O(n_out) per
        example or O(parameters) per minibatch.
        """
        layers = [n_in * n_out for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:])]
        return 2 * sum(layers) + 2 * sum(layers) + 2 * sum(layers[1:])

    def flops_per_epoch(self, n_examples=None):
        """FLOPs of one epoch of ``n_examples`` (default: the profile's) examples."""
        n = self.examples() if n_examples is None else n_examples
        return n * self.flops_per_example()

    def network(self, dtype, seed=NET_SEED):
        """A fresh fastbp.Network of this architecture."""
        return fastbp.Network(
            list(self.sizes), hidden=self.hidden, output=self.output, cost=self.cost,
            dtype=dtype, seed=seed,
        )

    def data(self, dtype, n, seed=DATA_SEED):
        """Random inputs and targets of this workload's shape.

        Returns
        -------
        X : (n, n_inputs) array of ``dtype``, uniform in [0, 1) like scaled pixels.
        Y : (n, n_outputs) float targets of ``dtype``: one-hot rows for a classifier,
            N(0, 0.5²) values for a regression output.
        labels : (n,) int64 class labels, or None for regression.
        """
        rng = np.random.default_rng(seed)
        X = rng.random((n, self.sizes[0])).astype(dtype)
        n_out = self.sizes[-1]
        if self.classification:
            labels = rng.integers(0, n_out, n)
            Y = np.zeros((n, n_out), dtype=dtype)
            Y[np.arange(n), labels] = 1
            return X, Y, labels
        Y = (0.5 * rng.standard_normal((n, n_out))).astype(dtype)
        return X, Y, None

    def reference_epoch(self, weights, biases, X, Y, order):
        """One epoch of :func:`fastbp.reference.train_epoch`, in place."""
        return reference.train_epoch(
            weights, biases, X, Y, order, self.batch, self.lr, self.hidden, self.output,
            self.cost,
        )


def _w4(batch):
    return Workload(
        f"W4-b{batch}", (784, 100, 10), "relu", "softmax", "cross_entropy", batch, 60_000,
        0.05,
    )


#: Every workload, by name.
WORKLOADS = {
    w.name: w
    for w in [
        Workload("W1", (784, 16, 16, 10), "sigmoid", "sigmoid", "quadratic", 100, 60_000, 0.1),
        Workload("W2", (784, 30, 10), "sigmoid", "sigmoid", "quadratic", 10, 60_000, 0.1),
        Workload("W3", (4, 4, 4, 1), "sigmoid", "identity", "quadratic", 4, 20_000, 0.01),
        _w4(10),
        _w4(32),
        _w4(100),
        Workload(
            "W5", (784, 512, 512, 10), "relu", "softmax", "cross_entropy", 128, 12_800, 0.1
        ),
    ]
}

NAMES = tuple(WORKLOADS)


#: OpenBLAS's kernel families (threadpoolctl's "architecture") that use 512-bit vectors.
OPENBLAS_AVX512 = ("SkylakeX", "Cooperlake", "SapphireRapids")


def openblas_narrow_note():
    """A warning line when OpenBLAS runs 256-bit kernels on a CPU with AVX-512, else "".

    OpenBLAS picks its kernels from the CPU's model, and a model it does not know gets an
    older family's: on AMD's Zen 5 (family 26) OpenBLAS 0.3.30-0.3.31 runs its Haswell
    (AVX2) kernels, at about half the rate of its SkylakeX ones on the same machine.
    ``OPENBLAS_CORETYPE=SkylakeX`` in the environment of the process selects those.
    """
    from threadpoolctl import threadpool_info

    try:
        with open("/proc/cpuinfo") as f:
            avx512 = any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return ""
    narrow = sorted({
        i.get("architecture") for i in threadpool_info()
        if i.get("internal_api") == "openblas" and i.get("architecture") not in OPENBLAS_AVX512
    })
    if not (avx512 and narrow):
        return ""
    return (f"note: OpenBLAS runs its {'/'.join(map(str, narrow))} kernels on this AVX-512 "
            "CPU; OPENBLAS_CORETYPE=SkylakeX selects its 512-bit ones")


def parallel_region_us(calls=20000, samples=7):
    """Median µs of one empty Numba parallel region (a task per thread), called back to
    back from compiled code: the fixed cost each of a kernel's parallel regions pays in
    this process, printed beside the tables that depend on it.

    On the two-core AMD EPYC (Zen 5) virtual machine of README.md's tables it is bimodal,
    0.82-0.92 or 1.97-2.33 µs, and moves between the two within a process and from one
    process to the next (with ``OMP_PROC_BIND=true OMP_PLACES=cores`` as well; likewise
    with OMP_WAIT_POLICY=active or a larger GOMP_SPINCOUNT, which leave the threads
    spinning as they are by default). Kernels of a few µs with a parallel region move
    with it: W4's 100 -> 10 float64 forward pass over 100 examples took 2.4 µs in one run
    of gemm.py and 4.1-4.7 µs in four others the same hour.
    """

    import numba
    import time

    @numba.njit(parallel=True, cache=False)
    def region(x):
        for i in numba.prange(x.size):
            x[i] += 1.0

    @numba.njit(cache=False)
    def loop(x, n):
        for _ in range(n):
            region(x)

    x = np.zeros(numba.get_num_threads())
    loop(x, 10)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        loop(x, calls)
        times.append((time.perf_counter() - t0) / calls)
    return float(np.median(times)) * 1e6


def select(spec=None):
    """Workloads named in a comma-separated ``spec``; a family ("W4") selects all of it.

    >>> [w.name for w in select("W1,W4")]
    ['W1', 'W4-b10', 'W4-b32', 'W4-b100']
    """
    if not spec:
        return list(WORKLOADS.values())
    chosen = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        matches = [w for w in WORKLOADS.values() if token in (w.name, w.family)]
        if not matches:
            raise ValueError(
                f"Unknown workload {token!r}; choose among {', '.join(NAMES)} "
                f"(or a family such as W4)."
            )
        chosen += [w for w in matches if w not in chosen]
    return chosen


# --- correctness checks ----------------------------------------------------------------


def assert_close(actual, ref, dtype, rtol=None, what=""):
    """Element-wise agreement, as tests/conftest.py's ``assert_close``.

    float64: every entry within ``rtol`` (1e-10) of its reference value, no absolute
    floor. float32: ``rtol`` (1e-4) relative with an absolute floor of ``rtol`` times the
    array's largest entry, for entries that are sums with cancellation.
    """
    actual = np.asarray(actual, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    rtol = RTOL[dtype] if rtol is None else rtol
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    atol = 0.0 if dtype == "float64" else rtol * scale
    np.testing.assert_allclose(actual, ref, rtol=rtol, atol=atol, err_msg=what)


def check_examples(workload):
    """Examples of the checks: two full minibatches and a partial one of one example."""
    return 2 * workload.batch + 1


def check_epoch(workload, dtype):
    """One epoch of ``Network.fit`` against ``reference.train_epoch`` on a few examples.

    Both start from the same weights and visit the examples in order (no shuffling);
    raises AssertionError when any weight or bias differs beyond :data:`RTOL`.
    """
    n = check_examples(workload)
    X, Y, _ = workload.data(dtype, n, seed=DATA_SEED + 1)
    net = workload.network(dtype)
    weights = [w.copy() for w in net.weights]
    biases = [b.copy() for b in net.biases]
    net.fit(X, Y, epochs=1, batch_size=workload.batch, lr=workload.lr, shuffle=False,
            progress=False)
    workload.reference_epoch(weights, biases, X, Y, np.arange(n))
    for i, (w, b) in enumerate(zip(weights, biases)):
        assert_close(net.weights[i], w, dtype, what=f"{workload.name} {dtype} weights[{i}]")
        assert_close(net.biases[i], b, dtype, what=f"{workload.name} {dtype} biases[{i}]")


def check_minibatch(workload, dtype):
    """net.forward, net.gradients and net.cost against the reference on one minibatch."""
    n = workload.batch + 1
    X, Y, _ = workload.data(dtype, n, seed=DATA_SEED + 2)
    net = workload.network(dtype)
    rng = np.random.default_rng(DATA_SEED + 3)
    for b in net.biases:  # zero biases would leave their terms untested
        b[:] = rng.normal(0, 0.5, b.shape)
    W, B = list(net.weights), list(net.biases)
    args = (workload.hidden, workload.output)
    tag = f"{workload.name} {dtype}"
    assert_close(net.forward(X), reference.feedforward(W, B, X, *args), dtype,
                 what=f"{tag} forward")
    gW, gB = net.gradients(X, Y)
    rW, rB = reference.gradients(W, B, X, Y, *args, workload.cost)
    for i in range(len(W)):
        assert_close(gW[i], rW[i], dtype, what=f"{tag} gradient of weights[{i}]")
        assert_close(gB[i], rB[i], dtype, what=f"{tag} gradient of biases[{i}]")
    assert_close(net.cost(X, Y), reference.cost(W, B, X, Y, *args, workload.cost), dtype,
                 what=f"{tag} cost")

"""fastbp's matrix-shaped kernels beside OpenBLAS's GEMM on the same shapes.

For every layer of the selected workloads, at the workload's minibatch size, this times
the three kernels of a training step and the NumPy (OpenBLAS) product doing the same
multiply-adds:

- forward:  z = a W^T + b, σ(z)            against ``A @ W.T``
- backward: δ^{l-1} = (δ W) ⊙ σ'(z^{l-1})  against ``D @ W``   (every layer but the first)
- gradient: ∂C/∂W = δ^T a / m and the SGD step applied to W, b
                                           against ``D.T @ A``
- step+fwd: the first layer's gradient and step, then its forward pass of the next
  minibatch, in one kernel as training runs them when the minibatch is small
  (``FUSE_MAX_BYTES``)                     against ``D.T @ A`` and ``A' @ W.T``

Each product runs with W and δ stored both ways, row-major as fastbp keeps them (form
C: ``A @ W.T`` reads W through a transposed view) and transposed (form T: W^T and δ^T
row-major, so ``D @ W`` and ``D.T @ A`` read a view instead), and the faster counts: on
the small layers OpenBLAS's time moves by up to 2.4x with the layout, either way. The
fastbp kernels do a little more than the product (the activation, σ', the bias and the
update), which is counted against them. Prints the median time of each, GFLOP/s
(2 × multiply-adds / time) and fastbp's rate as a fraction of OpenBLAS's, alternating
the two so that both see the same machine state. Run one benchmark at a time.

OpenBLAS runs the kernels it picks for the CPU, named in the header. A CPU model it does
not know gets an older family's: on AMD's Zen 5 OpenBLAS 0.3.30 runs its 256-bit Haswell
kernels, at half the rate of its 512-bit SkylakeX ones there, and the header says so.
``OPENBLAS_CORETYPE=SkylakeX python benchmarks/gemm.py`` compares with its fastest.

A third column times what a kernel fuses done the unfused way (in OpenBLAS's faster
layout): OpenBLAS's product, then
the same element-wise work in its own passes (+ b, and σ as fastbp's forward kernels
apply it; σ' with ``derivative_scale``; the step W += -η/m ∂C/∂W, the sums of δ and
the biases' step), and ``vs unfused`` is that time over fastbp's. The first ratio asks whether
fastbp's kernels multiply as fast as OpenBLAS; the second whether they do the layer's
whole job faster than OpenBLAS plus separate passes would. On small layers the two differ
most: a float64 sigmoid over 100 × 16 weighted inputs costs more than their 16-term
products. So a forward kernel with a sigmoid or tanh is also timed with the identity in
its place (``σ=id``: the products, + b and the copy a = z), and ``ratio id`` is
OpenBLAS's time over that: how fast the kernel multiplies.

Both sides are timed as training runs them, from compiled code: a Numba loop calls the
kernel, or ``np.dot`` (which Numba sends straight to the ``?gemm`` of SciPy's OpenBLAS),
``reps`` times. Timed from Python instead (``--from-python``), each call also pays the
interpreter and dispatch (about 1-2 µs for a kernel's fifteen arguments, 0.6 µs for
``np.dot``), which swamps the small layers.

    python benchmarks/gemm.py --workloads W4-b32,W5 --dtypes float32
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import workloads as wl  # noqa: E402
from fastbp import kernels  # noqa: E402
from fastbp._config import launch  # noqa: E402
from fastbp.kernels import codes  # noqa: E402
from fastbp.kernels.blocked import _activate_rows  # noqa: E402
from fastbp.kernels.layers import derivative_scale  # noqa: E402
from fastbp.kernels.views import flat  # noqa: E402
from fastbp.network import _page_empty  # noqa: E402


#: Seconds of rest before each timing, for the other library's idle threads to stop
#: spinning (OpenBLAS and OpenMP workers spin for a while after a call, and on two
#: cores a spinning pool starves the other one).
SETTLE = 0.2

#: Activations whose σ costs a forward kernel about as much as its products on small
#: layers (e^x and a division per element): such forward kernels are timed again with
#: the identity (columns ``σ=id``).
SMOOTH = (codes.SIGMOID, codes.TANH)

#: Multiply-adds of each timed call's loop (``reps`` kernel calls; at least 2). Entering
#: a compiled loop from Python costs its dispatch, about 4-5 µs for a kernel's loop
#: (seventeen arguments, one of them the kernel) against 0.35 µs for ``np.dot``'s, and
#: all of it is counted against each call of the loop. At 2e6 multiply-adds a call, a
#: 100 × 10 × 100 gradient step made 20 calls a loop and gained 0.2-0.4 µs each of
#: them (2.08 against 1.88 µs in float32, 3.63 against 3.20 µs in float64), OpenBLAS
#: 0.02 µs.
REPS_WORK = 2e7


def huge_page_copy(a):
    """A C-contiguous copy of ``a`` at the start of memory that Linux is asked to back
    with transparent huge pages (2 MB), where it offers them (``network._page_empty``).

    NumPy asks the same for every array of 4 MB or more, so a training set's rows are
    read from 2 MB pages in training (60,000 × 784 float64: 358 of its 359 MB in huge
    pages, /proc/self/smaps). The small training sets timed here (about 512 KB) would
    sit in 4 KB pages, whose places in the caches differ from process to process: W4's
    first layer (batch 100, float64) took 179-212 µs for its forward pass and 219-258
    µs for its gradient step in three runs of this script that way, against 144-157 and
    192-199 in huge pages (OpenBLAS's products of the same shapes 3-8% less in huge
    pages). So both sides' first-layer inputs are placed as in training.
    """
    out = _page_empty(a.size, a.dtype, min_bytes=0).reshape(a.shape)
    out[...] = a
    return out


def _median_time(fn, min_time):
    """Median seconds of one call, over at least 5 calls and about ``min_time`` seconds."""
    time.sleep(SETTLE)
    fn()
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < 5 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _inner(fn, reps):
    def run():
        for _ in range(reps):
            fn()
    return run


@njit
def _minibatch(order, i, m):
    """Rows of the i-th minibatch of m, cycling through ``order``."""
    start = (i * m) % (order.shape[0] - m + 1)
    return order[start:start + m]


@njit
def _forward_loop(kernel, A, order, W, b, act, m, Z, A_out, reps):
    for i in range(reps):
        kernel(A, _minibatch(order, i, m), W, b, act, m, Z, A_out)


@njit
def _backward_loop(kernel, D, W, Z_prev, A_prev, act, m, D_prev, reps):
    for _ in range(reps):
        kernel(D, W, Z_prev, A_prev, act, m, D_prev)


@njit
def _gradient_loop(kernel, D, A, order, m, scale, W, b, gW, gb, VW, Vb, lr, momentum, decay,
                   panel, reps):
    for i in range(reps):
        kernel(D, A, _minibatch(order, i, m), m, scale, W, b, gW, gb, VW, Vb, lr, momentum,
               decay, True, panel)


@njit
def _step_forward_loop(kernel, D, A, order, m, scale, W, b, gW, gb, VW, Vb, lr, momentum,
                       decay, act, Z, A_out, reps):
    for i in range(reps):
        kernel(D, A, _minibatch(order, i, m), m, scale, W, b, gW, gb, VW, Vb, lr, momentum,
               decay, _minibatch(order, i + 1, m), m, act, Z, A_out)


@njit
def _two_dots_loop(a, b, out, c, d, out2, reps):
    for _ in range(reps):
        np.dot(a, b, out)
        np.dot(c, d, out2)


@njit
def _dot_loop(a, b, out, reps):
    for _ in range(reps):
        np.dot(a, b, out)


@njit
def _bias_activate(Z, b, act, A):
    """Z += b row by row, then A = σ(Z) as the forward kernels apply it."""
    m, n_out = Z.shape
    for s in range(m):
        for j in range(n_out):
            Z[s, j] += b[j]
    _activate_rows(act, m, Z, A, n_out)


@njit
def _step(G, coef, D, scale, W, b, gb, lr):
    """W += coef G; gb = scale Σ_s δ_s; b -= η gb: the plain SGD step of the gradient
    kernels, after the product G = δ^T a."""
    w, g = flat(W), flat(G)
    for i in range(w.shape[0]):
        w[i] += coef * g[i]
    gb[:] = 0
    for s in range(D.shape[0]):
        for j in range(D.shape[1]):
            gb[j] += D[s, j]
    for j in range(b.shape[0]):
        gb[j] *= scale
        b[j] -= lr * gb[j]


@njit
def _unfused_forward_loop(a, wt, b, act, out, A, reps):
    for _ in range(reps):
        np.dot(a, wt, out)
        _bias_activate(out, b, act, A)


@njit
def _unfused_backward_loop(D, W, out, act, Z_prev, A_prev, reps):
    n = out.size
    for _ in range(reps):
        np.dot(D, W, out)
        derivative_scale(act, flat(out), flat(Z_prev), flat(A_prev), 0, n)


@njit
def _unfused_gradient_loop(DT, a, G, coef, D, scale, W, b, gb, lr, reps):
    for _ in range(reps):
        np.dot(DT, a, G)
        _step(G, coef, D, scale, W, b, gb, lr)


@njit
def _unfused_step_forward_loop(DT, a, G, coef, D, scale, W, b, gb, lr, a_next, wt, act, out,
                               A, reps):
    for _ in range(reps):
        np.dot(DT, a, G)
        _step(G, coef, D, scale, W, b, gb, lr)
        np.dot(a_next, wt, out)
        _bias_activate(out, b, act, A)


def layer_cases(w, dtype, rng, from_python=False):
    """(layer, kernel name, fastbp timers, OpenBLAS timers, unfused timers, multiply-adds)
    for one workload; a timer, given a number of repetitions, returns a function making
    that many calls. fastbp's timers are the kernel as trained, then (forward kernels
    with a sigmoid or tanh) with the identity; OpenBLAS's and the unfused ones one per
    layout of W and δ (none unfused with ``from_python``).

    fastbp's kernels run on the buffers a :class:`fastbp.Network` trains with (its
    parameters, the workspaces and gradient buffer ``fit`` allocates), the first layer
    reading shuffled minibatches of a training set in place through their rows, as in
    training: a new minibatch every call, drawn from a set of rows small enough to stay
    in cache (about 512 KB, at least two minibatches), placed in huge pages as a real
    training set is (:func:`huge_page_copy`). OpenBLAS multiplies contiguous arrays of
    the same shapes, also in cache. This compares the kernels' arithmetic, not
    the memory traffic of fresh minibatches, which compare.py's epochs include. (One
    minibatch over and over would fix its rows' places against the gradient's rows: with
    rows 4 KB apart modulo a page, a bad pair of places stalls the gradient's loads on
    its stores, 4K aliasing, and the first layer's gradient ran up to 2x slower in some
    processes than in others.)
    """
    m = w.batch
    act = codes.ACTIVATION_CODES[w.hidden]
    real = np.dtype(dtype).type
    row_bytes = w.sizes[0] * np.dtype(dtype).itemsize
    n = max(2 * m, 512 * 1024 // row_bytes)
    X = huge_page_copy(w.data(dtype, n)[0])
    order = rng.permutation(n).astype(np.int64)
    net = w.network(dtype)
    # the workspaces of a fit long enough to place them in huge pages, as an epoch's
    sizes, par, ident, (zbuf, abuf, dbuf, pbuf) = net._kernel_args(m, huge=True)
    grad = net._gradient_buffer(X, abuf, m, huge=True)
    for buf in (zbuf, dbuf):
        buf[...] = rng.standard_normal(buf.shape)
    abuf[...] = rng.random(abuf.shape)
    gWs, gbs = net._views(grad)
    _, blocks = net._offsets(m)

    def block(buf, l, cols):
        return buf[blocks[l]:blocks[l] + m * cols].reshape(m, cols)

    for l, (n_in, n_out) in enumerate(zip(w.sizes[:-1], w.sizes[1:])):
        W, b, gW, gb = net.weights[l], net.biases[l], gWs[l], gbs[l]
        Z, A, D = block(zbuf, l, n_out), block(abuf, l, n_out), block(dbuf, l, n_out)
        if l == 0:
            A_prev, rows = X, order
        else:
            A_prev, rows = block(abuf, l - 1, n_in), ident
            Z_prev, D_prev = block(zbuf, l - 1, n_in), block(dbuf, l - 1, n_in)
        fwd = {codes.BLOCKED: kernels.forward_ser, codes.PARALLEL: kernels.forward_par,
               codes.NARROW: kernels.forward_narrow,
               codes.PACKED: kernels.forward_packed}[par[l, 0]]
        bwd = {codes.BLOCKED: kernels.backward_ser, codes.PARALLEL: kernels.backward_par,
               codes.NARROW: kernels.backward_narrow,
               codes.COLUMNS: kernels.backward_columns,
               codes.PACKED: kernels.backward_packed}[par[l, 1]]
        grd = {codes.PARALLEL: kernels.gradient_step_par,
               codes.NARROW: kernels.gradient_step_narrow,
               codes.COLUMNS: kernels.gradient_step_columns}[par[l, 2]]
        lr, zero = real(1e-9), real(0)
        grad_args = (D, A_prev, rows, m, real(1 / m), W, b, gW, gb, gW, gb, lr, zero, zero)
        panel = pbuf if par[l, 4] else pbuf[:0]
        # OpenBLAS's operands and outputs, each product timed with its operands stored
        # either way (W and δ as the kernels keep them, row-major, or transposed): on
        # small layers the layout moves OpenBLAS's time by up to 2.4x either way (a
        # 100 x 16 x 16 float32 forward product 1.17 µs through the view W.T, 0.53 µs
        # on a contiguous W^T), and its faster one counts
        # the first layer's: a training set's rows, in huge pages as X
        A_c = (huge_page_copy if l == 0 else np.ascontiguousarray)(A_prev[rows[:m]])
        W_t, D_t = np.asfortranarray(W), np.asfortranarray(D)  # the same, stored transposed
        outs = (np.empty((m, n_out), dtype), np.empty((m, n_in), dtype),
                np.empty((n_out, n_in), dtype))
        A_out = np.empty((m, n_out), dtype)
        step_args = (outs[2], -(lr * real(1 / m)), D, real(1 / m), W, b, gb, lr)
        mads = m * n_out * n_in
        forms = ((W, D), (W_t, D_t))
        if from_python:
            first = rows[:m]
            yield (l, "forward", [lambda r: _inner(
                       lambda: fwd(A_prev, first, W, b, act, m, Z, A), r)],
                   [lambda r, W=W: _inner(lambda: np.dot(A_c, W.T, out=outs[0]), r)
                    for W, _ in forms], [], mads)
            if l > 0:
                yield (l, "backward", [lambda r: _inner(
                           lambda: bwd(D, W, Z_prev, A_prev, act, m, D_prev), r)],
                       [lambda r, W=W: _inner(lambda: np.dot(D, W, out=outs[1]), r)
                        for W, _ in forms], [], mads)
            yield (l, "gradient", [lambda r: _inner(
                       lambda: grd(*grad_args[:2], first, *grad_args[3:], True, panel), r)],
                   [lambda r, D=D: _inner(lambda: np.dot(D.T, A_c, out=outs[2]), r)
                    for _, D in forms], [], mads)
        elif l == 0 and par[0, 3]:
            A_n = huge_page_copy(A_prev[rows[m:2 * m]])
            yield (l, "step+fwd",
                   [lambda r: lambda: _step_forward_loop(kernels.step_forward_par, *grad_args,
                                                         act, Z, A, r)],
                   [lambda r, W=W, D=D: lambda: _two_dots_loop(D.T, A_c, outs[2], A_n, W.T,
                                                               outs[0], r)
                    for W, D in forms],
                   [lambda r, W=W, D=D: lambda: _unfused_step_forward_loop(
                       D.T, A_c, *step_args, A_n, W.T, act, outs[0], A_out, r)
                    for W, D in forms],
                   2 * mads)
        else:
            # and the forward kernel once more with the identity in place of a sigmoid or
            # tanh: its products alone
            yield (l, "forward",
                   [lambda r, act=act: lambda: _forward_loop(fwd, A_prev, rows, W, b, act, m, Z,
                                                             A, r)
                    for act in ((act, codes.IDENTITY) if act in SMOOTH else (act,))],
                   [lambda r, W=W: lambda: _dot_loop(A_c, W.T, outs[0], r) for W, _ in forms],
                   [lambda r, W=W: lambda: _unfused_forward_loop(A_c, W.T, b, act, outs[0],
                                                                 A_out, r)
                    for W, _ in forms],
                   mads)
            if l > 0:
                yield (l, "backward",
                       [lambda r: lambda: _backward_loop(bwd, D, W, Z_prev, A_prev, act, m,
                                                         D_prev, r)],
                       [lambda r, W=W: lambda: _dot_loop(D, W, outs[1], r) for W, _ in forms],
                       [lambda r, W=W: lambda: _unfused_backward_loop(D, W, outs[1], act,
                                                                      Z_prev, A_prev, r)
                        for W, _ in forms],
                       mads)
            yield (l, "gradient",
                   [lambda r: lambda: _gradient_loop(grd, *grad_args, panel, r)],
                   [lambda r, D=D: lambda: _dot_loop(D.T, A_c, outs[2], r) for _, D in forms],
                   [lambda r, D=D: lambda: _unfused_gradient_loop(D.T, A_c, *step_args, r)
                    for _, D in forms],
                   mads)


def _blas_line(from_python):
    """Which OpenBLAS the products run on: NumPy's from Python, SciPy's from Numba."""
    from threadpoolctl import threadpool_info

    owner = "numpy" if from_python else "scipy"
    for lib in threadpool_info():
        if lib.get("internal_api") == "openblas" and f"{owner}." in lib.get("filepath", ""):
            return (f"{owner}'s OpenBLAS {lib.get('version')} ({lib.get('architecture')} "
                    f"kernels), {lib.get('num_threads')} threads, called from "
                    f"{'Python' if from_python else 'compiled loops'}")
    return f"{owner}'s BLAS, called from {'Python' if from_python else 'compiled loops'}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="W1,W2,W4-b10,W4-b32,W4-b100,W5")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--min-time", type=float, default=0.3,
                        help="seconds spent timing each kernel, and again each of its "
                             "OpenBLAS forms (default 0.3)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternations of the two sides per kernel; the lowest median "
                             "of each counts (default 2)")
    parser.add_argument("--from-python", action="store_true",
                        help="call each kernel and np.dot from the interpreter")
    args = parser.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, "
          f"{numba.config.NUMBA_NUM_THREADS} threads, numba {numba.__version__}, "
          f"numpy {np.__version__}; {_blas_line(args.from_python)}")
    note = wl.openblas_narrow_note()
    if note:
        print(f"# {note}")
    print(f"# an empty parallel region: {wl.parallel_region_us():.2f} µs")
    print(f"{'workload':8} {'dtype':7} {'layer':>5} {'kernel':8} {'fastbp µs':>10} "
          f"{'BLAS µs':>9} {'form':>4} {'fastbp GF/s':>11} {'BLAS GF/s':>9} {'ratio':>6} "
          f"{'unfused µs':>10} {'vs unfused':>10} {'σ=id µs':>8} {'ratio id':>8}")
    rng = np.random.default_rng(0)
    totals = {}
    with launch():
        for w in wl.select(args.workloads):
            for dtype in args.dtypes.split(","):
                for l, name, ours, blas, unfused, mads in layer_cases(w, dtype, rng,
                                                                      args.from_python):
                    reps = max(2, int(REPS_WORK // mads))
                    timers = [t(reps) for t in [*ours, *blas, *unfused]]
                    share = args.min_time / (2 * args.rounds)
                    for fn in timers:
                        fn()  # compiles
                    # alternate; the lowest median of each counts, and of OpenBLAS's
                    # layouts the faster
                    best = [float("inf")] * len(timers)
                    for _ in range(args.rounds):
                        for i, fn in enumerate(timers):
                            best[i] = min(best[i], _median_time(fn, share) / reps)
                    t_ours, t_ident = best[0], best[1:len(ours)]
                    best = best[len(ours):]
                    t_blas = min(best[:len(blas)])
                    form = "CT"[best.index(t_blas)]
                    t_unfused = [min(best[len(blas):])] if unfused else []
                    best = [t_ours, t_blas, *t_unfused]
                    gf_o, gf_b = 2 * mads / t_ours / 1e9, 2 * mads / t_blas / 1e9
                    key = (w.name, dtype)
                    totals[key] = [a + b for a, b in zip(totals.get(key, [0.0] * 3),
                                                         best + [0.0] * (3 - len(best)))]
                    line = (f"{w.name:8} {dtype:7} {l + 1:>5} {name:8} {t_ours * 1e6:10.2f} "
                            f"{t_blas * 1e6:9.2f} {form:>4} {gf_o:11.1f} {gf_b:9.1f} "
                            f"{gf_o / gf_b:6.2f}")
                    if t_unfused:
                        line += f" {t_unfused[0] * 1e6:10.2f} {t_unfused[0] / t_ours:10.2f}"
                    if t_ident:
                        line += f" {t_ident[0] * 1e6:8.2f} {t_blas / t_ident[0]:8.2f}"
                    print(line, flush=True)
    print(f"# an empty parallel region, at the end: {wl.parallel_region_us():.2f} µs")
    print("\nper workload, all the kernels of every layer (BLAS time / fastbp time; "
          "unfused time / fastbp time):")
    for (name, dtype), (a, b, c) in totals.items():
        line = (f"{name:8} {dtype:7} fastbp {a * 1e6:9.1f} µs  BLAS {b * 1e6:9.1f} µs  "
                f"ratio {b / a:5.2f}")
        if c:
            line += f"  unfused {c * 1e6:9.1f} µs  ratio {c / a:5.2f}"
        print(line)

if __name__ == "__main__":
    main()

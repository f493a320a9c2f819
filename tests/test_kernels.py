"""The kernels against the NumPy reference, for every activation × output/cost × dtype.

Each layer kernel is checked on its own against the reference's expression for the same
formula, and the whole network (forward, cost, BP1-BP4 through the drivers, one SGD epoch)
against fastbp.reference. float32 kernels are compared with the reference evaluated in
float64 on the same float32 parameters.
"""

import ctypes
import mmap
import sys
from fractions import Fraction

import numba
import numpy as np
import pytest
from conftest import (
    HIDDEN,
    OUTPUT_COST,
    assert_close,
    gradient_magnitudes,
    make_targets,
    randomize_biases,
)

import fastbp
from fastbp import kernels as K
from fastbp import reference as R
from fastbp._config import NOALIAS, SERIAL, WIDE
from fastbp.kernels import lanes, layers, views

SHAPES = {
    "chain-1-1-1-1": [1, 1, 1, 1],
    "4-4-4-1": [4, 4, 4, 1],
    "784-16-16-10": [784, 16, 16, 10],
    "7-5-3": [7, 5, 3],
    "40-30-12-4": [40, 30, 12, 4],
}
BATCHES = [1, 33]
DTYPES = ["float64", "float32"]


def _combos():
    for shape_name, sizes in SHAPES.items():
        for output, cost in OUTPUT_COST:
            if output == "softmax" and sizes[-1] < 2:
                continue
            yield shape_name, output, cost


def _setup(sizes, hidden, output, cost, dtype, batch, seed=0):
    rng = np.random.default_rng(seed)
    net = fastbp.Network(sizes, hidden=hidden, output=output, cost=cost, dtype=dtype, seed=seed)
    randomize_biases(net, rng)
    X = rng.uniform(-1, 1, (batch, sizes[0])).astype(dtype)
    Y = make_targets(rng, batch, sizes[-1], output, cost).astype(dtype)
    # the reference runs in float64 on exactly the same numbers
    W64 = [w.astype(np.float64) for w in net.weights]
    b64 = [b.astype(np.float64) for b in net.biases]
    return net, X, Y, W64, b64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("shape_name,output,cost", list(_combos()))
def test_network_matches_reference(shape_name, output, cost, hidden, batch, dtype):
    sizes = SHAPES[shape_name]
    net, X, Y, W64, b64 = _setup(sizes, hidden, output, cost, dtype, batch)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)

    out = net.forward(X)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, R.feedforward(W64, b64, X64, hidden, output), dtype, "forward")

    assert_close(net.cost(X, Y), R.cost(W64, b64, X64, Y64, hidden, output, cost), dtype, "cost")

    gw, gb = net.gradients(X, Y)
    rw, rb = R.gradients(W64, b64, X64, Y64, hidden, output, cost)
    mw, mb = gradient_magnitudes(W64, b64, X64, Y64, hidden, output, cost)
    for i, (g, r, mag) in enumerate(zip(gw, rw, mw)):
        assert g.dtype == np.dtype(dtype)
        assert_close(g, r, dtype, f"dC/dw layer {i}", magnitude=mag)
    for i, (g, r, mag) in enumerate(zip(gb, rb, mb)):
        assert_close(g, r, dtype, f"dC/db layer {i}", magnitude=mag)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output,cost", OUTPUT_COST)
@pytest.mark.parametrize("momentum,decay", [(0.0, 0.0), (0.9, 1e-3)])
@pytest.mark.parametrize("path", ["tiny", "blocked", "parallel"])
@pytest.mark.parametrize("batch", [8, 6])
def test_sgd_epoch_matches_reference(output, cost, hidden, dtype, momentum, decay, path,
                                     batch, monkeypatch):
    """An epoch of 34 examples in batches of 8 or 6 (the last one partial; 6 also leaves
    examples over from the kernels' blocks of four), shuffled, through the one-function
    epoch for tiny networks and through the serial and the parallel builds of the
    blocked layer kernels."""
    monkeypatch.setattr(fastbp.network, "TINY_MAX_WORK", 10**9 if path == "tiny" else 0)
    if path == "parallel":
        monkeypatch.setattr(fastbp.network, "PARALLEL_MIN_WORK", 0)
        monkeypatch.setattr(fastbp.network, "NARROW_SERIAL_MAX_BYTES", 0)
        monkeypatch.setattr(fastbp.network, "NARROW_GRADIENT_SERIAL_MAX_BYTES", 0)
    sizes = [7, 5, 4, 3]
    net, X, Y, W64, b64 = _setup(sizes, hidden, output, cost, dtype, 34, seed=3)
    order = np.random.default_rng(99).permutation(34)
    vel = ([np.zeros_like(w) for w in W64], [np.zeros_like(b) for b in b64])
    total = R.train_epoch(
        W64, b64, X.astype(np.float64), Y.astype(np.float64), order, batch, 0.1, hidden,
        output, cost, momentum, decay, vel,
    )
    history = net.fit(
        X[order], Y[order], epochs=1, batch_size=batch, lr=0.1, momentum=momentum,
        weight_decay=decay, shuffle=False,
    )
    assert_close(history.train_cost[0], total / 34, dtype, "epoch cost")
    # after 5-6 steps each parameter carries the round-off of as many gradients: measured
    # against the size of the layer's parameters (a parameter that passes near zero
    # would otherwise be judged by its own, accidental, smallness)
    for i in range(len(W64)):
        assert_close(net.weights[i], W64[i], dtype, f"w layer {i}",
                     magnitude=np.abs(W64[i]).max())
        assert_close(net.biases[i], b64[i], dtype, f"b layer {i}",
                     magnitude=max(np.abs(b64[i]).max(), np.abs(W64[i]).max()))


@pytest.mark.parametrize("sizes,batch,expected", [
    ([4, 4, 4, 1], 4, "tiny"),  # 4 x 36 multiply-adds per minibatch
    ([4, 4, 4, 1], 64, "flat"),  # 64 x 36
    ([30, 20, 3], 1, "flat"),  # 660
])
def test_training_path_follows_the_work_per_minibatch(sizes, batch, expected, monkeypatch):
    """fit trains through the one-function epoch of fastbp.kernels.tiny exactly when a
    minibatch's forward pass costs at most TINY_MAX_WORK multiply-adds, and through the
    layer kernels otherwise."""
    monkeypatch.setattr(fastbp.network, "TINY_MAX_WORK", 600)
    calls = []
    # the layer kernels' path: either build of the drivers (fastbp.kernels.flat.for_codes)
    for name, attr in (("tiny", "train_epoch"), ("flat", "train_epoch"),
                       ("flat", "train_epoch_unpacked")):
        module = getattr(K, name)
        real = getattr(module, attr)
        monkeypatch.setattr(module, attr,
                            lambda *a, _n=name, _f=real: calls.append(_n) or _f(*a))
    rng = np.random.default_rng(0)
    net = fastbp.Network(sizes, seed=0)
    net.fit(rng.normal(size=(70, sizes[0])), rng.uniform(size=(70, sizes[-1])), epochs=2,
            batch_size=batch, lr=0.1, progress=False)
    assert calls == [expected, expected]


# --- the layer kernels one by one, parallel and serial builds -----------------------------


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "relu", "tanh", "identity"])
def test_activation_at_extreme_inputs(act, dtype, parallel):
    """σ(z) far into the saturated tails, at ±0, at ±inf and at NaN, as the reference
    gives it (the kernels pick the sigmoid's overflow-free form without a branch)."""
    z = np.array([-np.inf, -1e4, -745.5, -100.0, -20.0, -1.0, -0.0, 0.0, 1e-300, 0.5,
                  20.0, 100.0, 800.0, 1e4, np.inf, np.nan], dtype=dtype)
    m = z.size
    W, b = np.ones((1, 1), dtype), np.zeros(1, dtype)
    Z, A = np.empty((m, 1), dtype), np.empty((m, 1), dtype)
    fwd = K.forward_par if parallel else K.forward_ser
    fwd(z.reshape(m, 1), np.arange(m), W, b, K.ACTIVATION_CODES[act], m, Z, A)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = R.ACTIVATIONS[act](z.astype(np.float64)).astype(dtype)
    finite = np.isfinite(ref)
    assert np.array_equal(A[~finite, 0], ref[~finite], equal_nan=True)
    assert_close(A[finite, 0], ref[finite], dtype, f"{act}(z)", magnitude=np.abs(ref[finite]))


def _extreme_values(rng, dtype, n):
    """n values: normal of spread 30, with ±inf, NaN, ±0 and values past overflow."""
    x = rng.normal(0, 30, n)
    x[rng.choice(n, n // 4, replace=False)] = rng.choice(
        [np.inf, -np.inf, np.nan, 0.0, -0.0, 800.0, -800.0, 100.0, -100.0], n // 4)
    return x.astype(dtype)


@numba.njit(**dict(SERIAL, cache=False))
def _softmax_row_by_row(Z, A, n):
    for s in range(Z.shape[0]):
        layers.softmax_row(Z[s], A[s], n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_element_wise_kernels_are_the_same_bits_in_any_vector_width(dtype, rng):
    """σ, tanh and softmax over whole rows (``activate_range``, ``softmax_rows``) are
    compiled for 512-bit vectors (``_config.WIDE``): their results are bitwise those of
    the same source compiled as the other kernels are (``NOALIAS``, which vectorises
    256 bits wide on CPUs LLVM prefers that for) and, for softmax, of ``softmax_row``
    one row at a time, as the tiny networks' path runs it; and the request for 512-bit
    vectors is in the function LLVM is given."""
    z = _extreme_values(rng, dtype, 4099)
    as_usual = numba.njit(**dict(NOALIAS, cache=False))(layers.activate_range.py_func)
    for act in ("sigmoid", "tanh", "relu", "identity"):
        code = K.ACTIVATION_CODES[act]
        wide, usual = np.full_like(z, 7.0), np.full_like(z, 7.0)
        with np.errstate(all="ignore"):
            layers.activate_range(code, z, wide, np.int64(3), np.int64(4090))
            as_usual(code, z, usual, np.int64(3), np.int64(4090))
        assert np.array_equal(wide.view(f"u{z.itemsize}"), usual.view(f"u{z.itemsize}")), act
        assert (wide[:3] == 7.0).all() and (wide[4090:] == 7.0).all()
    for n in (2, 3, 10, 16, 17, 32, 33):
        Z = _extreme_values(rng, dtype, 41 * n).reshape(41, n)
        Z[:20] = rng.normal(0, 10, (20, n))  # most rows finite, as in training
        wide, by_row = np.full_like(Z, 7.0), np.full_like(Z, 7.0)
        with np.errstate(all="ignore"):
            layers.softmax_rows(Z, wide, np.int64(2), np.int64(39), n)
            _softmax_row_by_row(Z[2:39], by_row[2:39], n)
        assert np.array_equal(wide, by_row, equal_nan=True), n
        assert np.isclose(wide[2:20].sum(axis=1), 1.0, rtol=0, atol=8 * np.finfo(dtype).eps).all()

    def double(x, out):
        for i in range(x.size):
            out[i] = 2 * x[i]

    f = numba.njit(**dict(WIDE, cache=False))(double)
    f(z, np.empty_like(z))
    assert '"prefer-vector-width"="512"' in next(iter(f.inspect_llvm().values()))


@numba.njit(**SERIAL)
def _exp_all(x, out):
    """The kernels' e^x over an array, compiled with the kernels' fastmath flags."""
    for i in range(x.size):
        out[i] = layers.exp(x[i])


@pytest.mark.skipif(np.finfo(np.longdouble).eps > 1e-18, reason="needs 80-bit long double")
@pytest.mark.parametrize("name,bound", [("_C64", 1.7e-17), ("_C32", 2.1e-8),
                                        ("_M64", 2.4e-17), ("_M32", 2.6e-8)])
def test_exp_polynomials_truncate_as_documented(name, bound):
    """The polynomials of layers.exp (e^r) and layers.tanh ((e^r - 1) / r) on
    |r| <= ln2/2, with their coefficients as stored: the relative error the comments
    state, checked in long double on 20001 points."""
    c = np.array([float(v) for v in getattr(layers, name)], dtype=np.longdouble)
    half = np.log(np.longdouble(2)) / 2
    r = np.linspace(-half, half, 20001, dtype=np.longdouble)
    r = r[r != 0]
    exact = np.exp(r) if name.startswith("_C") else np.expm1(r) / r
    p = np.zeros_like(r)
    for coef in c:
        p = p * r + coef
    rel = np.max(np.abs(p / exact - 1))
    assert rel <= bound, rel
    assert rel > bound / 10  # the stated bound is the polynomial's, not a loose one


@pytest.mark.parametrize("dtype,ulps", [("float64", 1.5), ("float32", 1.0)])
def test_exp_matches_numpy(dtype, ulps):
    """layers.exp within a few ulp of np.exp (evaluated in float64) over the whole range:
    normal results, subnormal ones (within one unit of the smallest subnormal), the
    underflow to 0 and overflow to inf, and ±inf, ±0 and NaN."""
    rng = np.random.default_rng(0)
    info = np.finfo(dtype)
    lo, hi = (-760.0, 720.0) if dtype == "float64" else (-110.0, 95.0)
    special = [-np.inf, np.inf, np.nan, 0.0, -0.0, 1e-300, -1e-300, 5e-324,
               np.log(info.tiny), np.log(info.max), np.log(info.max) * 1.0001,
               np.log(info.smallest_subnormal), np.log(info.smallest_subnormal) - 1]
    x = np.concatenate([rng.uniform(lo, hi, 200_000), rng.uniform(-1, 1, 100_000),
                        np.array(special)]).astype(dtype)
    out = np.empty_like(x)
    _exp_all(x, out)
    with np.errstate(over="ignore", under="ignore"):
        ref = np.exp(x.astype(np.float64))
    normal = ref >= info.tiny
    normal &= ref <= info.max
    rel = np.abs(out[normal] - ref[normal]) / ref[normal]
    assert rel.max() <= ulps * info.eps, rel.max() / info.eps
    sub = (ref < info.tiny) & (ref > 0)
    assert sub.sum() > 100
    assert np.all(np.abs(out[sub] - ref[sub]) <= info.smallest_subnormal)
    rest = ~(normal | sub)  # 0, inf and NaN, exactly as np.exp rounds them
    assert rest.sum() > 100
    with np.errstate(over="ignore"):
        expected = ref[rest].astype(dtype)
    assert np.array_equal(out[rest], expected, equal_nan=True)


@numba.njit(**SERIAL)
def _tanh_all(x, out):
    """The kernels' tanh over an array, compiled with the kernels' fastmath flags."""
    for i in range(x.size):
        out[i] = layers.tanh(x[i])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tanh_matches_numpy(dtype):
    """layers.tanh within 2.5 ε (relative) of np.tanh evaluated in float64: across the
    range, near 0 down to subnormals (where tanh x = x), where the reduction starts
    (2|x| = ln2/2) and where tanh rounds to ±1; ±inf give ±1, ±0 stay 0, NaN stays NaN."""
    rng = np.random.default_rng(1)
    info = np.finfo(dtype)
    tiny_exp = -300 if dtype == "float64" else -37
    x = np.concatenate([
        rng.uniform(-30, 30, 200_000), rng.uniform(-1, 1, 200_000),
        np.log(2) / 4 + rng.uniform(-1e-3, 1e-3, 10_000),
        10.0 ** rng.uniform(tiny_exp, 0, 100_000) * rng.choice([-1, 1], 100_000),
        [info.smallest_subnormal, -info.smallest_subnormal, 9.0, 10.0, 19.0, 22.0, 23.0],
    ]).astype(dtype)
    out = np.empty_like(x)
    _tanh_all(x, out)
    ref = np.tanh(x.astype(np.float64))
    nonzero = ref != 0
    rel = np.abs(out[nonzero] - ref[nonzero]) / np.abs(ref[nonzero])
    assert rel.max() <= 2.5 * info.eps, rel.max() / info.eps
    special = np.array([np.inf, -np.inf, 0.0, -0.0, np.nan], dtype)
    got = np.empty_like(special)
    _tanh_all(special, got)
    assert np.array_equal(got, [1.0, -1.0, 0.0, 0.0, np.nan], equal_nan=True)


def _rows(rng, n_src, m):
    """Rows read through an index array, as the first layer reads a shuffled batch."""
    return rng.permutation(n_src)[:m].astype(np.int64)


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "relu", "tanh", "identity", "softmax"])
@pytest.mark.parametrize("m,n_out,n_in", [(9, 5, 6), (1, 1, 3), (4, 8, 17), (13, 10, 33),
                                          (10, 9, 7), (7, 8, 5), (6, 7, 20), (2, 6, 16),
                                          (3, 3, 9)])
def test_forward(act, dtype, parallel, m, n_out, n_in, rng):
    if act == "softmax" and n_out < 2:
        pytest.skip("softmax needs two outputs")
    src = rng.normal(0, 1, (20, n_in)).astype(dtype)
    rows = _rows(rng, 20, m)
    W = rng.normal(0, 1, (n_out, n_in)).astype(dtype)
    b = rng.normal(0, 1, n_out).astype(dtype)
    Z = np.full((m + 3, n_out), np.nan, dtype)  # workspaces larger than m: rows >= m untouched
    A = np.full((m + 3, n_out), np.nan, dtype)
    fwd = K.forward_par if parallel else K.forward_ser
    fwd(src, rows, W, b, K.ACTIVATION_CODES[act], m, Z, A)
    z_ref = src[rows].astype(float) @ W.T.astype(float) + b.astype(float)
    assert_close(Z[:m], z_ref, dtype, "z")
    assert_close(A[:m], R.ACTIVATIONS[act](z_ref), dtype, "a")
    assert np.isnan(Z[m:]).all() and np.isnan(A[m:]).all()


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "softmax", "relu"])
@pytest.mark.parametrize("m,n_out,n_in,by_rows", [
    (101, 10, 64, True), (37, 5, 200, True), (130, 1, 300, True), (64, 13, 40, True),
    (99, 7, 50, True), (128, 16, 70, True), (24, 10, 150, False), (40, 20, 60, False)])
def test_forward_split_over_examples(act, dtype, parallel, m, n_out, n_in, by_rows, rng):
    """Layers of few neurons with work for a parallel region split their examples into
    parts: of at most 16 neurons over 8 blocks of examples or more, parts of the
    minibatch that each apply σ to their own rows (the first six shapes), else blocks
    of neurons × parts of the examples (blocked._example_parts; the last two). Every
    row of z and of a = σ(z), bit for bit as computed alone."""
    from fastbp.kernels.blocked import (
        FORWARD_MIN_TASKS,
        FORWARD_ROWS_MAX_OUTPUTS,
        _example_parts,
    )

    if act == "softmax" and n_out < 2:
        pytest.skip("softmax needs two outputs")
    n_jb, n_sb = (n_out + 3) // 4, (m + 3) // 4
    assert by_rows == (n_out <= FORWARD_ROWS_MAX_OUTPUTS and n_sb >= FORWARD_MIN_TASKS)
    assert by_rows or _example_parts.py_func(n_jb, n_sb, m * n_out * n_in) > 1
    src = rng.normal(0, 1, (m + 20, n_in)).astype(dtype)
    rows = _rows(rng, m + 20, m)
    W = rng.normal(0, 1, (n_out, n_in)).astype(dtype)
    b = rng.normal(0, 1, n_out).astype(dtype)
    Z = np.full((m + 3, n_out), np.nan, dtype)
    A = np.full((m + 3, n_out), np.nan, dtype)
    fwd = K.forward_par if parallel else K.forward_ser
    code = K.ACTIVATION_CODES[act]
    fwd(src, rows, W, b, code, m, Z, A)
    alone, a_alone = np.empty((1, n_out), dtype), np.empty((1, n_out), dtype)
    for s in range(m):
        K.forward_ser(src, rows[s:s + 1], W, b, code, 1, alone, a_alone)
        assert np.array_equal(Z[s], alone[0]), s
        assert np.array_equal(A[s], a_alone[0]), s
    z_ref = src[rows].astype(float) @ W.T.astype(float) + b.astype(float)
    assert_close(Z[:m], z_ref, dtype, "z")
    assert_close(A[:m], R.ACTIVATIONS[act](z_ref), dtype, "a")
    assert np.isnan(Z[m:]).all() and np.isnan(A[m:]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,cost", OUTPUT_COST)
def test_output_delta_and_cost(output, cost, dtype, rng):
    z = rng.normal(0, 2, (6, 4))
    a = R.ACTIVATIONS[output](z)
    y = make_targets(rng, 9, 4, output, cost)
    rows = _rows(rng, 9, 6)
    Z, A, Y = (v.astype(dtype) for v in (z, a, y))
    D = np.empty((6, 4), dtype)
    c = np.empty(6, dtype)
    K.output_delta_cost(A, Z, Y, rows, K.ACTIVATION_CODES[output], K.COST_CODES[cost], 6, D, c)
    Cref = R.COSTS[cost]
    z, a, y = (v.astype(float) for v in (Z, A, Y[rows]))
    assert_close(D, Cref.delta(z, a, y, output), dtype, "BP1")
    assert_close(c, Cref.fn(z, a, y, output), dtype, "C_x")


def test_softmax_cross_entropy_delta_with_unnormalised_targets(rng):
    """δ_j = a_j Σ_i y_i - y_j: exact for soft targets that do not sum to one."""
    net = fastbp.Network([3, 4], output="softmax", cost="cross_entropy", seed=1)
    X = rng.normal(0, 1, (5, 3))
    Y = rng.uniform(0, 1, (5, 4))
    assert fastbp.gradcheck(net, X, Y) < 1e-7


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "relu", "tanh", "identity"])
@pytest.mark.parametrize("m", [7, 8, 1])
@pytest.mark.parametrize("n_out", [5, 8, 3])
def test_backward(act, dtype, parallel, m, n_out, rng):
    """BP2 for each activation of the lower layer; blocks of four examples × four
    neurons, and the examples and neurons left over."""
    D = rng.normal(0, 1, (m, n_out)).astype(dtype)
    W = rng.normal(0, 1, (n_out, 6)).astype(dtype)
    Zp = rng.normal(0, 1, (m, 6)).astype(dtype)
    Ap = R.ACTIVATIONS[act](Zp.astype(float)).astype(dtype)
    Dp = np.empty((m, 6), dtype)
    bwd = K.backward_par if parallel else K.backward_ser
    bwd(D, W, Zp, Ap, K.ACTIVATION_CODES[act], m, Dp)
    d, w, zp, ap = (v.astype(float) for v in (D, W, Zp, Ap))
    sp = R.DERIVATIVES[act](zp, ap)
    assert_close(Dp, (d @ w) * sp, dtype, "BP2", magnitude=(np.abs(d) @ np.abs(w)) * np.abs(sp))


def _check_step(d, a, after, before, momentum, decay, apply, dtype):
    """A gradient step's results ``after`` = (W, b, gW, gb, VW, Vb) against the
    reference's, from float64 copies ``before`` = (W, b, VW, Vb) of its parameters, δ
    ``d`` and input rows ``a`` (learning rate 0.1)."""
    W, b, gW, gb, VW, Vb = after
    w, bb, vw, vb = before
    m = d.shape[0]
    ref_w, ref_b = d.T @ a / m, d.sum(axis=0) / m
    if apply and momentum == 0 and decay == 0:
        assert np.isnan(gW).all()
    else:
        assert_close(gW, ref_w, dtype, "BP4", magnitude=np.abs(d).T @ np.abs(a) / m)
    assert_close(gb, ref_b, dtype, "BP3", magnitude=np.abs(d).sum(axis=0) / m)
    if not apply:
        assert np.array_equal(W, w.astype(dtype)) and np.array_equal(b, bb.astype(dtype))
        return
    g = ref_w + decay * w
    if momentum:
        vw, vb = momentum * vw - 0.1 * g, momentum * vb - 0.1 * ref_b
        assert_close(VW, vw, dtype, "v_w", magnitude=np.abs(vw).max())
        assert_close(W, w + vw, dtype, "w", magnitude=np.abs(w).max())
        assert_close(b, bb + vb, dtype, "b", magnitude=np.abs(bb).max())
    else:
        assert_close(W, w - 0.1 * g, dtype, "w", magnitude=np.abs(w).max())
        assert_close(b, bb - 0.1 * ref_b, dtype, "b", magnitude=np.abs(bb).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [5, 8, 1, 6, 2])
@pytest.mark.parametrize("momentum,decay,apply", [
    (0.0, 0.0, False), (0.0, 0.0, True), (0.0, 0.01, True), (0.9, 0.0, True), (0.5, 0.01, True),
])
@pytest.mark.parametrize("n_out", [4, 7, 10])
def test_gradient_step(momentum, decay, apply, m, n_out, dtype, rng):
    """BP3/BP4 averaged over m examples read through ``rows``, then the SGD step; rows
    of W in blocks of four and the rows left over (two, one, or two and one), examples
    in blocks of four and the one to three left over. A plain SGD step (no momentum, no
    decay) goes straight into W and leaves the weight-gradient buffer untouched."""
    D = rng.normal(0, 1, (m + 2, n_out)).astype(dtype)
    src = rng.normal(0, 1, (11, 6)).astype(dtype)
    rows = _rows(rng, 11, m)
    W = rng.normal(0, 1, (n_out, 6)).astype(dtype)
    b = rng.normal(0, 1, n_out).astype(dtype)
    VW = rng.normal(0, 1, (n_out, 6)).astype(dtype)
    Vb = rng.normal(0, 1, n_out).astype(dtype)
    gW, gb = np.full((n_out, 6), np.nan, dtype), np.empty(n_out, dtype)
    real = np.dtype(dtype).type
    w, bb, vw, vb = (x.astype(float) for x in (W, b, VW, Vb))
    K.gradient_step_par(D, src, rows, m, real(1) / real(m), W, b, gW, gb, VW, Vb, real(0.1),
                        real(momentum), real(decay), apply, np.empty(0, dtype))
    d, a = D[:m].astype(float), src[rows].astype(float)
    _check_step(d, a, (W, b, gW, gb, VW, Vb), (w, bb, vw, vb), momentum, decay, apply, dtype)


def _guarded(values):
    """A copy of ``values`` ending right at an inaccessible page, so that a kernel
    reading or writing one element past its end crashes the test."""
    page = mmap.PAGESIZE
    pages = -(-values.nbytes // page) + 1
    buf = mmap.mmap(-1, pages * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    assert libc.mprotect(base + (pages - 1) * page, page, 0) == 0  # PROT_NONE
    out = np.frombuffer(buf, values.dtype, values.size, (pages - 1) * page - values.nbytes)
    out = out.reshape(values.shape)
    out[...] = values
    return out


NARROW_WIDTHS = [1, 5, 15, 16, 17, 30, 32]
#: Inputs of the narrow BP2 and gradient step, which take wider rows 32 columns at a time.
NARROW_INPUTS = NARROW_WIDTHS + [33, 64, 100]


def _forward_case(rng, m, n_out, n_in, dtype):
    """A forward pass's arguments, each array ending at an inaccessible page: m rows of
    a source of m + 3 read through ``rows`` (its last row always among them), W, b, and
    workspaces Z and A of m + 1 rows of NaN."""
    src = _guarded(rng.normal(0, 1, (m + 3, n_in)).astype(dtype))
    rows = rng.permutation(m + 3)[:m].astype(np.int64)
    rows[rng.integers(m)] = m + 2  # the source's last row is always read
    W = _guarded(rng.normal(0, 1, (n_out, n_in)).astype(dtype))
    b = _guarded(rng.normal(0, 1, n_out).astype(dtype))
    Z = _guarded(np.full((m + 1, n_out), np.nan, dtype))
    A = _guarded(np.full((m + 1, n_out), np.nan, dtype))
    return src, _guarded(rows), W, b, Z, A


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="guard pages via mprotect")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "identity", "softmax"])
@pytest.mark.parametrize("m", [1, 3, 4, 10, 21])
@pytest.mark.parametrize("n_out", [1, 2, 9, 15, 16, 17])
@pytest.mark.parametrize("n_in", NARROW_WIDTHS + [33])
def test_forward_narrow(act, dtype, m, n_out, n_in, rng):
    """The narrow forward pass (W^T copied to 16-lane rows on the stack, input rows read
    through ``rows``; wider layers handed to the blocked kernel) against the reference,
    every array ending at an inaccessible page and the workspaces' rows past m
    untouched."""
    if act == "softmax" and n_out < 2:
        pytest.skip("softmax needs two outputs")
    src, rows, W, b, Z, A = _forward_case(rng, m, n_out, n_in, dtype)
    K.forward_narrow(src, rows, W, b, K.ACTIVATION_CODES[act], m, Z, A)
    a, w = np.asarray(src, float)[rows], np.asarray(W, float)
    z_ref = a @ w.T + np.asarray(b, float)
    scale = np.abs(a) @ np.abs(w).T + np.abs(b)  # what z's round-off is proportional to
    assert_close(Z[:m], z_ref, dtype, "z", magnitude=scale)
    # identity and tanh carry z's error through at slope up to 1
    assert_close(A[:m], R.ACTIVATIONS[act](z_ref), dtype, "a",
                 magnitude=scale if act in ("identity", "tanh") else None)
    assert np.isnan(Z[m:]).all() and np.isnan(A[m:]).all()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="guard pages via mprotect")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "relu", "softmax"])
@pytest.mark.parametrize("m", [1, 3, 9, 21])
@pytest.mark.parametrize("n_out", [2, 16, 17, 40])
@pytest.mark.parametrize("n_in", [5, 33, 300, 600])
def test_forward_packed(act, dtype, m, n_out, n_in, rng):
    """The forward pass over copied blocks of W^T's columns (16 float64 or 32 float32
    neurons each, the last partial; 300 and 600 inputs: W^T's rows in two copies in
    float32, 600 in float64 too) against the reference, input rows read through
    ``rows``, every array ending at an inaccessible page and the workspaces' rows past
    m untouched; where the narrow pass takes the layer (up to 16 neurons over up to 32
    inputs), the same bits as it."""
    src, rows, W, b, Z, A = _forward_case(rng, m, n_out, n_in, dtype)
    code = K.ACTIVATION_CODES[act]
    K.forward_packed(src, rows, W, b, code, m, Z, A)
    a, w = np.asarray(src, float)[rows], np.asarray(W, float)
    z_ref = a @ w.T + np.asarray(b, float)
    scale = np.abs(a) @ np.abs(w).T + np.abs(b)
    assert_close(Z[:m], z_ref, dtype, "z", magnitude=scale)
    assert_close(A[:m], R.ACTIVATIONS[act](z_ref), dtype, "a")
    assert np.isnan(Z[m:]).all() and np.isnan(A[m:]).all()
    if n_out <= 16 and n_in <= 32:
        Zn, An = np.empty((m, n_out), dtype), np.empty((m, n_out), dtype)
        K.forward_narrow(src, rows, W, b, code, m, Zn, An)
        assert np.array_equal(Z[:m], Zn) and np.array_equal(A[:m], An)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="guard pages via mprotect")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu", "identity"])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 10, 17, 70])
@pytest.mark.parametrize("n_out", [1, 6, 16])
@pytest.mark.parametrize("n_in", NARROW_INPUTS)
@pytest.mark.parametrize("kernel", ["narrow", "columns", "packed"])
def test_backward_narrow(kernel, act, dtype, m, n_out, n_in, rng):
    """BP2 over narrow inputs (rows of 16 or 32 lanes, the last row of W copied to the
    stack), serial, parallel over parts of the examples and parallel over copied blocks
    of W's columns, in groups of eight, four and two examples (m = 70: parts of 8-12
    examples): the reference's values, and no element read or written past any array
    (each ends at an inaccessible page) nor past the m rows of δ^{l-1}."""
    D = _guarded(rng.normal(0, 1, (m, n_out)).astype(dtype))
    W = _guarded(rng.normal(0, 1, (n_out, n_in)).astype(dtype))
    Zp = _guarded(rng.normal(0, 1, (m + 1, n_in)).astype(dtype))
    Ap = _guarded(R.ACTIVATIONS[act](np.asarray(Zp, float)).astype(dtype))
    Dp = _guarded(np.full((m + 1, n_in), np.nan, dtype))
    bwd = {"narrow": K.backward_narrow, "columns": K.backward_columns,
           "packed": K.backward_packed}[kernel]
    bwd(D, W, Zp, Ap, K.ACTIVATION_CODES[act], m, Dp)
    d, w, zp, ap = (np.asarray(v, float) for v in (D, W, Zp[:m], Ap[:m]))
    sp = R.DERIVATIVES[act](zp, ap)
    assert_close(Dp[:m], (d @ w) * sp, dtype, "BP2",
                 magnitude=(np.abs(d) @ np.abs(w)) * np.abs(sp))
    assert np.isnan(Dp[m:]).all()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="guard pages via mprotect")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "relu"])
@pytest.mark.parametrize("m", [1, 9, 21])
@pytest.mark.parametrize("n_out", [64, 257, 513, 1100])
@pytest.mark.parametrize("n_in", [8, 17, 40])
def test_backward_packed_runs(act, dtype, m, n_out, n_in, rng):
    """BP2 over copied blocks of W's columns where a block's rows take several copies
    (``narrow.W_PANEL``: 256 rows of 32 float32 or 512 of 16 float64 at a time; 1100
    rows: three runs in float64, five in float32), the sums carried from run to run in
    δ^{l-1}'s rows: the reference's values, bit for bit those of the serial narrow
    kernel (one run, the same order of sums), also where δ holds ±inf and NaN, and no
    element read or written past any array nor past the m rows of δ^{l-1}."""
    from fastbp.kernels import narrow

    runs = -(-n_out // (narrow.W_PANEL // (64 // np.dtype(dtype).itemsize * 2)))
    assert (runs > 1) == (n_out > (256 if dtype == "float32" else 512))
    D = rng.normal(0, 1, (m, n_out)).astype(dtype)
    W = _guarded(rng.normal(0, 1, (n_out, n_in)).astype(dtype))
    Zp = _guarded(rng.normal(0, 1, (m + 1, n_in)).astype(dtype))
    Ap = _guarded(R.ACTIVATIONS[act](np.asarray(Zp, float)).astype(dtype))
    code = K.ACTIVATION_CODES[act]
    Dp = _guarded(np.full((m + 1, n_in), np.nan, dtype))
    K.backward_packed(_guarded(D), W, Zp, Ap, code, m, Dp)
    d, w, zp, ap = (np.asarray(v, float) for v in (D, W, Zp[:m], Ap[:m]))
    sp = R.DERIVATIVES[act](zp, ap)
    assert_close(Dp[:m], (d @ w) * sp, dtype, "BP2",
                 magnitude=(np.abs(d) @ np.abs(w)) * np.abs(sp))
    assert np.isnan(Dp[m:]).all()
    D.flat[rng.choice(D.size, min(D.size, 3), replace=False)] = [np.inf, -np.inf, np.nan][
        :min(D.size, 3)]
    D, serial = _guarded(D), np.full((m, n_in), np.nan, dtype)
    K.backward_packed(D, W, Zp, Ap, code, m, Dp)
    K.backward_narrow(D, W, Zp, Ap, code, m, serial)
    assert np.isnan(serial).any()
    bits = f"u{Dp.itemsize}"
    assert np.array_equal(Dp[:m].view(bits), serial.view(bits))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="guard pages via mprotect")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 5, 10])
@pytest.mark.parametrize("momentum,decay,apply", [
    (0.0, 0.0, False), (0.0, 0.0, True), (0.5, 0.01, True),
])
@pytest.mark.parametrize("n_out", [1, 6, 10, 12, 16, 21, 29])
@pytest.mark.parametrize("n_in", NARROW_INPUTS)
@pytest.mark.parametrize("kernel", ["narrow", "columns"])
@pytest.mark.parametrize("packed", [False, True])
def test_gradient_step_narrow(kernel, packed, momentum, decay, apply, m, n_out, n_in, dtype,
                              rng):
    """The narrow gradient step, serial and parallel over columns, δ read in place or
    packed into a workspace of NaNs first, against the reference, its rows read through
    ``rows`` (the source's last row, copied to the stack, always among them) and every
    array ending at an inaccessible page; a plain SGD step leaves gW unwritten."""
    real = np.dtype(dtype).type
    D = _guarded(rng.normal(0, 1, (m, n_out)).astype(dtype))
    src = _guarded(rng.normal(0, 1, (m + 3, n_in)).astype(dtype))
    rows = rng.permutation(m + 3)[:m].astype(np.int64)
    rows[rng.integers(m)] = m + 2
    rows = _guarded(rows)
    W, b, VW, Vb = (_guarded(rng.normal(0, 1, shape).astype(dtype))
                    for shape in ((n_out, n_in), n_out, (n_out, n_in), n_out))
    gW, gb = _guarded(np.full((n_out, n_in), np.nan, dtype)), _guarded(np.empty(n_out, dtype))
    w, bb, vw, vb = (np.array(x, float) for x in (W, b, VW, Vb))
    panel = _guarded(np.full(K.panel_size(m, n_out) if packed else 0, np.nan, dtype))
    step = K.gradient_step_narrow if kernel == "narrow" else K.gradient_step_columns
    step(D, src, rows, m, real(1) / real(m), W, b, gW, gb, VW, Vb, real(0.1), real(momentum),
         real(decay), apply, panel)
    d, a = np.asarray(D, float), np.asarray(src, float)[rows]
    _check_step(d, a, (W, b, gW, gb, VW, Vb), (w, bb, vw, vb), momentum, decay, apply, dtype)


def test_narrow_kernels_are_chosen_by_shape():
    """Serial gradient steps of any shape, serial BP2 of inputs up to 32 wide or of 8
    neurons or more, and serial forward passes of 9 to 16 neurons over inputs up to 32
    wide in minibatches of 8 or more, run the narrow kernels, also where the work would
    run in parallel, up to 524288 bytes of it (a gradient step past the first layer up
    to 1048576), and other forward passes up to that work the serial blocked kernel.
    Parallel gradient steps of hidden layers run the narrow kernel's parallel build
    (COLUMNS) in float32, and in float64 for 16 neurons or fewer; the first layer's run
    the blocked one. Parallel BP2 the narrow kernel suits runs its parallel build over
    the examples in float32, and in float64 over inputs up to 128 wide or of up to 16
    neurons; parallel BP2 of 64 neurons or more its parallel build over copied blocks of
    W's columns (PACKED), and parallel forward passes of rows of z of 1024 bytes or more
    over 32 examples or more over copied blocks of W^T's columns (PACKED). Gradient
    steps whose δ has rows of 1024 bytes or more and takes 32768 bytes or more pack it,
    and run the parallel build where they run in parallel, first layers too. The thread
    count plays no part."""
    from fastbp.kernels import codes

    for dtype in DTYPES:
        par = fastbp.Network([784, 30, 10], dtype=dtype)._kernel_args(10)[1]
        assert par[1, 1] == codes.NARROW and par[1, 2] == codes.NARROW
        assert par[0, 2] == codes.PARALLEL
        # wider inputs: BP2 of 8 neurons or more, any gradient step
        par = fastbp.Network([784, 100, 10], dtype=dtype)._kernel_args(10)[1]
        assert par[1, 1] == codes.NARROW and par[1, 2] == codes.NARROW
    # 100 x 100 x 10 multiply-adds: serial narrow BP2 and gradient step and the serial
    # blocked forward pass in float32 (400 KB), parallel in float64 (800 KB), BP2's over
    # the examples; the gradient step past the first layer serial up to 1 MiB of work
    par = fastbp.Network([784, 100, 10], dtype="float32")._kernel_args(100)[1]
    assert (par[1, 1:3] == codes.NARROW).all() and par[1, 0] == codes.BLOCKED
    par = fastbp.Network([784, 100, 10], dtype="float64")._kernel_args(100)[1]
    assert par[1, 0] == codes.PARALLEL and par[1, 1] == codes.COLUMNS
    assert par[1, 2] == codes.NARROW
    assert par[0, 2] == codes.PARALLEL and not par[:, 4].any()  # rows of δ of 800 bytes
    for batch, code in ((131, codes.NARROW), (132, codes.COLUMNS)):  # 1,048,000 bytes
        par = fastbp.Network([784, 100, 10], dtype="float64")._kernel_args(batch)[1]
        assert par[1, 2] == code, batch
    par = fastbp.Network([100, 10, 3], dtype="float64")._kernel_args(100)[1]
    assert par[0, 2] == codes.PARALLEL  # a first layer's: 800 KB, parallel
    # rows of δ of 1024 bytes or more, 32768 bytes of δ or more: packed, and the first
    # layer's step over columns too
    for dtype, n_out, batch, code in (
            ("float32", 256, 32, codes.COLUMNS), ("float32", 256, 31, codes.PARALLEL),
            ("float32", 255, 64, codes.PARALLEL), ("float64", 128, 32, codes.COLUMNS),
            ("float64", 128, 31, codes.PARALLEL), ("float64", 127, 64, codes.PARALLEL)):
        net = fastbp.Network([784, n_out, 10], dtype=dtype)
        par, (_, _, _, pbuf) = net._kernel_args(batch)[1::2]
        assert par[0, 2] == code and par[0, 4] == (code == codes.COLUMNS) and not par[1, 4]
        assert pbuf.size == (batch * n_out if code == codes.COLUMNS else 0)
    par = fastbp.Network([784, 512, 512, 10], dtype="float64")._kernel_args(128)[1]
    assert (par[:2, 2] == codes.COLUMNS).all() and par[:2, 4].all() and not par[2, 4]
    assert par[1, 1] == codes.PACKED and par[2, 1] == codes.COLUMNS
    assert (par[:2, 0] == codes.PACKED).all() and par[2, 0] == codes.PARALLEL
    for dtype, n_out, batch, code in (
            ("float64", 128, 32, codes.PACKED), ("float64", 127, 128, codes.PARALLEL),
            ("float64", 128, 31, codes.PARALLEL), ("float32", 256, 32, codes.PACKED),
            ("float32", 255, 128, codes.PARALLEL), ("float32", 256, 31, codes.PARALLEL)):
        par = fastbp.Network([784, n_out, n_out, 10], dtype=dtype)._kernel_args(batch)[1]
        assert (par[:2, 0] == code).all(), (dtype, n_out, batch)
    # 10 neurons over 200 inputs, 100 examples: parallel BP2 over examples; 17-32 over
    # 200 inputs in float32 only (float64's 200-wide rows stay on the blocked kernel);
    # 64 neurons or more over copied blocks of W's columns in both
    for dtype in DTYPES:
        for n_out, code in ((10, codes.COLUMNS), (16, codes.COLUMNS),
                            (17, codes.COLUMNS if dtype == "float32" else codes.PARALLEL),
                            (63, codes.COLUMNS if dtype == "float32" else codes.PARALLEL),
                            (64, codes.PACKED), (300, codes.PACKED)):
            par = fastbp.Network([784, 200, n_out], dtype=dtype)._kernel_args(100)[1]
            assert par[1, 1] == code, (dtype, n_out)
        # serial where the work is small (24 x 64 x 64 float32 multiply-adds: 393 KB)
        par = fastbp.Network([10, 64, 64], dtype=dtype)._kernel_args(24)[1]
        assert par[1, 1] == (codes.NARROW if dtype == "float32" else codes.PACKED)
    # 16 neurons over 32 inputs: serial up to 256 examples in float32, 128 in float64,
    # the gradient step up to 512 and 256
    for dtype, batch, code in (("float32", 256, codes.NARROW), ("float32", 257, codes.PARALLEL),
                               ("float64", 128, codes.NARROW), ("float64", 129, codes.PARALLEL)):
        par = fastbp.Network([32, 32, 16], dtype=dtype)._kernel_args(batch)[1]
        assert par[1, 0] == code
        assert par[1, 1] == (code if code == codes.NARROW else codes.COLUMNS)
        assert par[1, 2] == codes.NARROW
        step = fastbp.Network([32, 32, 16], dtype=dtype)._kernel_args(2 * batch)[1][1, 2]
        assert step == (code if code == codes.NARROW else codes.COLUMNS), (dtype, batch)
    # 17 neurons: parallel gradient steps over columns in float32 only
    for dtype, code in (("float32", codes.COLUMNS), ("float64", codes.PARALLEL)):
        par = fastbp.Network([32, 32, 17], dtype=dtype)._kernel_args(512)[1]
        assert par[1, 2] == code and not par[1, 4]
    par = fastbp.Network([784, 16, 16, 10], dtype="float64")._kernel_args(100)[1]
    assert (par[1:, 1:3] == codes.NARROW).all()
    assert (par[1:, 0] == codes.NARROW).all()  # 16 -> 16 and 16 -> 10, batches of 100
    par = fastbp.Network([50, 40, 3], dtype="float32")._kernel_args(10)[1]
    assert par[1, 1] == codes.BLOCKED and par[1, 2] == codes.NARROW
    assert par[1, 0] == codes.BLOCKED  # 3 outputs
    for batch, n_out, forward in ((7, 12, codes.BLOCKED), (8, 12, codes.NARROW),
                                  (8, 8, codes.BLOCKED), (8, 17, codes.BLOCKED)):
        par = fastbp.Network([3, 20, n_out], dtype="float64")._kernel_args(batch)[1]
        assert par[1, 0] == forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "relu", "softmax"])
@pytest.mark.parametrize("m,m_next", [(5, 5), (8, 3), (6, 1)])
@pytest.mark.parametrize("n_out", [4, 7])
@pytest.mark.parametrize("momentum,decay", [(0.9, 0.01), (0.0, 0.0)])
def test_step_forward_is_the_step_then_the_forward(act, m, m_next, n_out, momentum, decay,
                                                   dtype, rng):
    """The first layer's step fused with the next minibatch's forward pass gives, bit
    for bit, the gradient step followed by the forward pass, and touches no workspace
    row beyond the next minibatch."""
    real = np.dtype(dtype).type
    D = rng.normal(0, 1, (m + 2, n_out)).astype(dtype)
    src = rng.normal(0, 1, (11, 6)).astype(dtype)
    rows, rows_next = _rows(rng, 11, m), _rows(rng, 11, m_next)
    params = [rng.normal(0, 1, shape).astype(dtype)
              for shape in ((n_out, 6), n_out, (n_out, 6), n_out)]
    results = []
    for fused in (True, False):
        W, b, VW, Vb = (p.copy() for p in params)
        gW, gb = np.full((n_out, 6), np.nan, dtype), np.empty(n_out, dtype)
        Z = np.full((m_next + 2, n_out), np.nan, dtype)
        A = np.full((m_next + 2, n_out), np.nan, dtype)
        args = (D, src, rows, m, real(1) / real(m), W, b, gW, gb, VW, Vb, real(0.1),
                real(momentum), real(decay))
        if fused:
            K.step_forward_par(*args, rows_next, m_next, K.ACTIVATION_CODES[act], Z, A)
        else:
            K.gradient_step_par(*args, True, np.empty(0, dtype))
            K.forward_par(src, rows_next, W, b, K.ACTIVATION_CODES[act], m_next, Z, A)
        results.append((W, b, VW, Vb, gW, gb, Z, A))
    for name, x, y in zip(("W", "b", "VW", "Vb", "gW", "gb", "Z", "A"), *results):
        assert np.array_equal(x, y, equal_nan=True), name
    assert np.isnan(results[0][6][m_next:]).all() and np.isnan(results[0][7][m_next:]).all()
    assert not np.isnan(results[0][7][:m_next]).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [8, 6, 34])
@pytest.mark.parametrize("momentum,decay", [(0.9, 1e-3), (0.0, 0.0)])
def test_fused_first_layer_changes_no_bit_of_training(dtype, batch, momentum, decay,
                                                      monkeypatch):
    """Training with the first layer's step and next forward pass in one parallel region
    (FUSE_MAX_BYTES) gives bitwise the parameters, velocities and costs of training
    with them apart."""
    monkeypatch.setattr(fastbp.network, "TINY_MAX_WORK", 0)
    monkeypatch.setattr(fastbp.network, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(fastbp.network, "NARROW_SERIAL_MAX_BYTES", 0)
    monkeypatch.setattr(fastbp.network, "NARROW_GRADIENT_SERIAL_MAX_BYTES", 0)
    rng = np.random.default_rng(5)
    X = rng.normal(0, 1, (34, 7)).astype(dtype)
    Y = np.eye(3, dtype=dtype)[rng.integers(0, 3, 34)]
    runs = []
    for fuse_max in (10**9, 0):
        monkeypatch.setattr(fastbp.network, "FUSE_MAX_BYTES", fuse_max)
        net = fastbp.Network([7, 5, 4, 3], output="softmax", cost="cross_entropy",
                             dtype=dtype, seed=3)
        assert net._kernel_args(batch)[1][0, 3] == (fuse_max > 0)
        history = net.fit(X, Y, epochs=3, batch_size=batch, lr=0.1, momentum=momentum,
                          weight_decay=decay, seed=7)
        vel = [net._vel] if momentum else []
        runs.append(net.weights + net.biases + vel + [np.array(history.train_cost)])
    for x, y in zip(*runs):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float32_stays_float32(dtype):
    """The float32 path computes in float32: its rounding differs from float64's."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (50, 30))
    net = fastbp.Network([30, 20, 3], dtype=dtype, seed=0)
    ref = R.feedforward(
        [w.astype(float) for w in net.weights], [b.astype(float) for b in net.biases], X
    )
    err = np.max(np.abs(net.forward(X) - ref) / np.abs(ref))
    if dtype == "float32":
        assert 1e-9 < err < 1e-5  # float32 rounding, not float64's
    else:
        assert err < 1e-14


def test_nan_propagates():
    """The fastmath flags keep NaN meaningful: a NaN weight gives a NaN output."""
    for hidden in HIDDEN:
        net = fastbp.Network([3, 4, 2], hidden=hidden, seed=0)
        net.weights[0][1, 2] = np.nan
        out = net.forward(np.ones((2, 3)))
        assert np.isnan(out).all(), hidden


@numba.njit(**SERIAL)
def _views(buf, off, rows, cols, M):
    return views.mat(buf, off, rows, cols), views.flat(M)


@pytest.mark.parametrize("dtype", DTYPES)
def test_views_are_the_reshaped_slices(dtype):
    """The drivers' views of the flat buffers are ``buf[off:off + r * c].reshape(r, c)``
    and ``M.reshape(M.size)``: same elements, same memory, C-contiguous."""
    buf = np.arange(40, dtype=dtype)
    M = np.arange(12, dtype=dtype).reshape(4, 3)[1:]
    V, F = _views(buf, 7, 3, 5, M)
    assert V.shape == (3, 5) and V.flags.c_contiguous and F.flags.c_contiguous
    assert np.array_equal(V, buf[7:22].reshape(3, 5))
    assert np.array_equal(F, M.reshape(M.size))
    V[2, 4] = -1
    F[0] = -2
    assert buf[21] == -1 and M[0, 0] == -2
    with pytest.raises(numba.core.errors.TypingError, match="C-contiguous"):
        _views(buf, 0, 2, 2, M.T)


# --- exact arithmetic: the orders the kernels document ----------------------------------


def _rounded(value, dtype):
    """The exact rational ``value`` rounded to the nearest ``dtype`` (ties to even)."""
    dtype = np.dtype(dtype)
    near = dtype.type(float(value))  # within one ulp (float32: two roundings)
    candidates = [np.nextafter(near, dtype.type(-np.inf)), near,
                  np.nextafter(near, dtype.type(np.inf))]
    bits = {4: np.uint32, 8: np.uint64}[dtype.itemsize]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - value),
                                          int(np.array(c).view(bits)) & 1))


def _fma_exact(a, b, c, dtype):
    if not np.isfinite([a, b, c]).all():  # inf or NaN, however a·b is rounded
        with np.errstate(invalid="ignore"):
            return np.dtype(dtype).type(float(a) * float(b) + float(c))
    return _rounded(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)), dtype)


def _add_exact(a, b, dtype):
    return _rounded(Fraction(float(a)) + Fraction(float(b)), dtype)


def _fma_chain(xs, ys, start, dtype):
    """start, then each x·y added to it by one fused multiply-add, in order."""
    total = start
    for x, y in zip(xs, ys):
        total = _fma_exact(x, y, total, dtype)
    return total


@numba.njit(**SERIAL)
def _fma_all(a, b, c, out):
    for i in range(a.size):
        out[i] = lanes.fma(a[i], b[i], c[i])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fma_rounds_once(dtype):
    """lanes.fma(a, b, c) is a·b + c rounded once, also where a·b + c rounded twice differs
    (1 + 2^-p)(1 - 2^-p) - 1 = -2^-2p, which a rounded product loses."""
    p = 13 if dtype == "float32" else 27
    rng = np.random.default_rng(3)
    a = np.concatenate([[1 + 2.0**-p], rng.normal(size=200)]).astype(dtype)
    b = np.concatenate([[1 - 2.0**-p], rng.normal(size=200)]).astype(dtype)
    c = np.concatenate([[-1.0], rng.normal(size=200)]).astype(dtype)
    out = np.empty_like(a)
    _fma_all(a, b, c, out)
    assert out[0] == -(2.0 ** (-2 * p)) and a[0] * b[0] + c[0] == 0
    expected = np.array([_fma_exact(x, y, z, dtype) for x, y, z in zip(a, b, c)])
    assert np.array_equal(out, expected)


@numba.njit(**SERIAL)
def _transpose16(dst, dst_off, dst_stride, src, src_off, src_stride, n_rows, n_cols, exact):
    if exact:
        lanes.transpose16_exact(dst, dst_off, dst_stride, src, src_off, src_stride, n_rows,
                                n_cols)
    else:
        lanes.transpose16(dst, dst_off, dst_stride, src, src_off, src_stride, n_rows, n_cols)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("exact, dst_stride", [(False, 16), (False, 32), (False, 37),
                                               (True, 16), (True, 37), (True, 10),
                                               (True, 3)])
@pytest.mark.parametrize("n_rows, n_cols, src_off", [(16, 16, 0), (10, 14, 16), (1, 1, 3),
                                                     (16, 7, 5), (0, 4, 0), (3, 0, 0)])
def test_transpose16_stores_the_blocks_columns_as_rows(dtype, n_rows, n_cols, src_off,
                                                       exact, dst_stride):
    """The columns t < n_cols of the 16 × 16 block at src_off (rows i < n_rows, a stride
    apart; zeros past either) land as rows of 16 in dst, dst_stride apart; nothing else
    in dst is written, and nothing of src outside the block is read (src ends where the
    block does: a read past it would touch the guard page of a minimal array or the NaNs
    around it). ``transpose16_exact`` writes only each row's first n_rows elements, so
    its rows may be as short as that (a stride of 3 or 10: the rows written interleave
    with untouched elements, which are checked)."""
    if exact and dst_stride < n_rows:
        pytest.skip("rows of dst shorter than the block's")
    stride = 30
    rng = np.random.default_rng(n_rows * 31 + n_cols)
    src = np.full(max(n_rows - 1, 0) * stride + src_off + n_cols + 3, np.nan, dtype)
    block = rng.normal(size=(16, 16)).astype(dtype)
    for i in range(n_rows):
        src[src_off + i * stride:src_off + i * stride + n_cols] = block[i, :n_cols]
    src = src[:max(n_rows - 1, 0) * stride + src_off + n_cols]  # the block's last element
    dst = np.full(2 + 16 * max(dst_stride, 16) + 5, -7, dtype)
    _transpose16(dst, 2, dst_stride, src, src_off, stride, n_rows, n_cols, exact)
    expected = np.full((16, dst_stride), -7, dtype)
    if exact:
        expected[:n_cols, :n_rows] = block[:n_rows, :n_cols].T
    else:
        expected[:n_cols, :16] = 0
        expected[:n_cols, :n_rows] = block[:n_rows, :n_cols].T
    got = dst[2:2 + 16 * dst_stride].reshape(16, dst_stride)
    assert np.array_equal(got, expected)
    assert (dst[:2] == -7).all() and (dst[2 + 16 * dst_stride:] == -7).all()


@numba.njit(**SERIAL)
def _rows_sum16_store(x, out, off, stride, n_rows, bias, bias_off, n_cols):
    lanes.rows_sum16_store(x, out, off, stride, n_rows, bias, bias_off, n_cols)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_sum16_store_adds_pairwise_in_its_documented_order(dtype):
    """Each of the 16 rows of L lanes summed lane t + L/2 into t, then t + L/4 into t,
    ..., then the bias added: with terms whose sum depends on the order (1e30
    cancelling), the results are that order's and not a left-to-right sum's. Sum 4r + c
    lands at row r, column c of the block."""
    L = 16 if dtype == "float32" else 8
    rng = np.random.default_rng(4)
    x = rng.normal(size=16 * L).astype(dtype)
    x[[0, 3, 5 * L, 5 * L + L // 2 + 1]] = [1e30, -1e30, 1e30, -1e30]
    bias = rng.normal(size=4).astype(dtype)
    out = np.empty((4, 4), dtype)
    _rows_sum16_store(x, out.reshape(16), 0, 4, 4, bias, 0, 4)

    def tree(v):
        v = list(v)
        while len(v) > 1:
            h = len(v) // 2
            v = [_add_exact(v[t], v[t + h], dtype) for t in range(h)]
        return v[0]

    sums = np.array([tree(x[i * L:(i + 1) * L]) for i in range(16)], dtype).reshape(4, 4)
    expected = np.array([[_add_exact(sums[r, c], bias[c], dtype) for c in range(4)]
                         for r in range(4)], dtype)
    assert np.array_equal(out, expected)
    assert sums[0, 0] != _sum_left_to_right(x[:L])
    assert sums[1, 1] != _sum_left_to_right(x[5 * L:6 * L])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_rows", [0, 1, 3, 4])
@pytest.mark.parametrize("n_cols", [1, 2, 4])
def test_rows_sum16_store_writes_only_its_block(dtype, n_rows, n_cols):
    """Rows r < n_rows, columns c < n_cols of the block at dst[off + r stride + c] are
    written, nothing else; the bias is read only up to its n_cols-th element (its array
    ends there)."""
    L = 16 if dtype == "float32" else 8
    x = np.arange(16 * L, dtype=dtype)
    bias = np.arange(1, n_cols + 1, dtype=dtype) * 1000
    out = np.full((6, 7), np.nan, dtype)
    _rows_sum16_store(x, out.reshape(42), 7 + 2, 7, n_rows, bias, 0, n_cols)
    expected = np.full((6, 7), np.nan, dtype)
    sums = x.reshape(16, L).sum(axis=1).reshape(4, 4)  # small integers: exact
    expected[1:1 + n_rows, 2:2 + n_cols] = sums[:n_rows, :n_cols] + bias
    np.testing.assert_array_equal(out, expected)


def _sum_left_to_right(v):
    total = v.dtype.type(0)
    for value in v:
        total = total + value
    return total


@pytest.mark.parametrize("kernel,n_in,m", [("blocked", 29, 3), ("narrow", 29, 3),
                                           ("packed", 29, 3), ("packed", 600, 10)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_sums_run_in_the_documented_order(dtype, kernel, n_in, m):
    """z_sj bit for bit as the kernels document it, emulated with exact rationals:
    the blocked pass (fastbp.kernels.blocked._dots) sums in one register's L lanes, lane
    t taking k ≡ t (mod L) in ascending order by fma, then adds the lanes pairwise and the
    bias; the narrow pass and its packed parallel build start from b_j and add k in
    ascending order by fma (600 inputs: the packed pass's sums carried through z from
    one copy of W^T's rows to the next, eight examples and then four at a time)."""
    rng = np.random.default_rng(5)
    n_out = 5  # a tail of lanes, the last neurons and examples repeated
    W = rng.normal(size=(n_out, n_in)).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype)
    X = rng.normal(size=(m, n_in)).astype(dtype)
    Z = np.empty((m, n_out), dtype)
    A = np.empty_like(Z)
    rows = np.arange(m)
    fwd = {"blocked": K.forward_ser, "narrow": K.forward_narrow,
           "packed": K.forward_packed}[kernel]
    fwd(X, rows, W, b, K.IDENTITY, m, Z, A)
    L = 16 if dtype == "float32" else 8
    expected = np.empty_like(Z)
    for s in range(m):
        for j in range(n_out):
            if kernel == "blocked":
                acc = [np.dtype(dtype).type(0)] * L
                for k in range(n_in):
                    acc[k % L] = _fma_exact(W[j, k], X[s, k], acc[k % L], dtype)
                while len(acc) > 1:
                    h = len(acc) // 2
                    acc = [_add_exact(acc[t], acc[t + h], dtype) for t in range(h)]
                expected[s, j] = _add_exact(acc[0], b[j], dtype)
            else:
                expected[s, j] = _fma_chain(W[j], X[s], b[j], dtype)
    assert np.array_equal(Z, expected)


@pytest.mark.parametrize("act", ["identity", "sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("kernel", ["blocked", "narrow", "columns", "packed"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bp2_sums_run_in_the_documented_order(dtype, kernel, act):
    """δ^{l-1}_sk bit for bit as documented: Σ_j w_jk δ_sj from 0 in ascending order of j,
    one fma per term, then times σ'(z, a) as the reference writes it (identity 1 + 0 z,
    so that z = NaN or ±inf gives NaN, as the kernels' σ' does): every bit of every value
    but NaN's payload, over z = ±0, ±inf and NaN and sums that are infinite (ReLU's
    inf · 0 is NaN) or NaN. 16 + 23 columns: the narrow kernels' 16-lane and 32-lane
    blocks, ten examples: groups of eight and of four."""
    rng = np.random.default_rng(6)
    n_out, n_in, m = 7, 39, 10
    W = rng.normal(size=(n_out, n_in)).astype(dtype)
    D = rng.normal(size=(m, n_out)).astype(dtype)
    D[1, 2], D[4, 0], D[7, 6] = np.inf, -np.inf, np.nan
    Z_prev = rng.normal(size=(m, n_in)).astype(dtype)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype)
    Z_prev.flat[rng.choice(Z_prev.size, 40, replace=False)] = np.resize(special, 40)
    A_prev = R.ACTIVATIONS[act](Z_prev).astype(dtype)
    D_prev = np.empty((m, n_in), dtype)
    bwd = {"blocked": K.backward_ser, "narrow": K.backward_narrow,
           "columns": K.backward_columns, "packed": K.backward_packed}[kernel]
    bwd(D, W, Z_prev, A_prev, K.ACTIVATION_CODES[act], m, D_prev)
    sums = np.empty_like(D_prev)
    for s in range(m):
        for k in range(n_in):
            sums[s, k] = _fma_chain(W[:, k], D[s], np.dtype(dtype).type(0), dtype)
    one = np.dtype(dtype).type(1)
    with np.errstate(invalid="ignore"):
        slope = (one + 0 * Z_prev if act == "identity"
                 else R.DERIVATIVES[act](Z_prev, A_prev).astype(dtype))
        expected = sums * slope
    assert slope.dtype == dtype and np.isnan(expected).any() and np.isinf(expected).any()
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(D_prev), nan)
    assert np.array_equal(D_prev[~nan].view(f"u{D_prev.itemsize}"),
                          expected[~nan].view(f"u{D_prev.itemsize}"))


@numba.njit(**SERIAL)
def _bp3_in_order(D, src, rows, scale, gW, gb):
    """∂C/∂w_jk and ∂C/∂b_j as the narrow gradient step documents them: Σ_s from 0 in
    ascending order of s, one fma (δ) or one addition (the biases) per example, then
    times scale."""
    m, n_out = D.shape
    n_in = src.shape[1]
    zero = D.dtype.type(0)
    for j in range(n_out):
        sb = zero
        for s in range(m):
            sb = sb + D[s, j]
        gb[j] = sb * scale
        for k in range(n_in):
            t = zero
            for s in range(m):
                t = lanes.fma(D[s, j], src[rows[s], k], t)
            gW[j, k] = t * scale


@pytest.mark.parametrize("kernel", ["narrow", "columns"])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_out", [4, 6, 10, 14, 16, 21, 26])
@pytest.mark.parametrize("n_in,m", [(19, 7), (40, 7), (100, 96)])
def test_bp3_sums_run_in_the_documented_order(n_in, m, n_out, dtype, packed, kernel):
    """The narrow gradient step's ∂C/∂w_jk and ∂C/∂b_j (serial and parallel builds, δ
    read in place or packed) bit for bit as documented:
    Σ_s δ_sj a_{rows[s],k} from 0 in ascending order of s, one fma per term, then times
    scale; Σ_s δ_sj likewise by addition, then times scale (:func:`_bp3_in_order`,
    compiled IEEE fmas and additions in that order). 21 rows: a block of 16 and one of 8
    rows (3 of them past the layer); 26 rows: 16 and 10; 6, 10, 14 and 16 rows: blocks of
    columns in pairs, 8 rows, 10, or 8 + 8 (2 past the layer); 4 rows: one block of
    columns at a time. 19 or 40 columns: one to five blocks of a register's lanes, the
    last partial (in pairs, a last odd block). 96 examples of 100 columns: work past
    PARALLEL_MIN_WORK, so the parallel build shares out the blocks (pairs of them, the
    last share an odd block: 13 float64 blocks, 7 float32) and the serial build takes
    them all in one call."""
    from fastbp._config import PARALLEL_MIN_WORK

    rng = np.random.default_rng(7)
    assert (m * n_out * n_in >= PARALLEL_MIN_WORK) == (m == 96)
    real = np.dtype(dtype).type
    D = rng.normal(size=(m, n_out)).astype(dtype)
    src = rng.normal(size=(m + 2, n_in)).astype(dtype)
    rows = rng.permutation(m + 2)[:m].astype(np.int64)
    W = rng.normal(size=(n_out, n_in)).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype)
    gW, gb = np.empty_like(W), np.empty_like(b)
    scale = real(1) / real(m)
    step = K.gradient_step_narrow if kernel == "narrow" else K.gradient_step_columns
    panel = np.empty(K.panel_size(m, n_out) if packed else 0, dtype)
    step(D, src, rows, m, scale, W, b, gW, gb, W.copy(), b.copy(), real(0.1), real(0),
         real(0), False, panel)
    expected_gW, expected_gb = np.empty_like(gW), np.empty_like(gb)
    _bp3_in_order(D, src, rows, scale, expected_gW, expected_gb)
    assert np.array_equal(gW, expected_gW) and np.array_equal(gb, expected_gb)


"""The kernels against the NumPy reference, for every activation × output/cost × dtype.

Each layer kernel is checked on its own against the reference's expression for the same
formula, and the whole network (forward, cost, BP1-BP4 through the drivers, one SGD epoch)
against fastbp.reference. float32 kernels are compared with the reference evaluated in
float64 on the same float32 parameters.
"""

import numpy as np
import pytest
from conftest import HIDDEN, OUTPUT_COST, assert_close, make_targets, randomize_biases

import fastbp
from fastbp import kernels as K
from fastbp import reference as R

SHAPES = {
    "chain-1-1-1-1": [1, 1, 1, 1],
    "4-4-4-1": [4, 4, 4, 1],
    "784-16-16-10": [784, 16, 16, 10],
    "7-5-3": [7, 5, 3],
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
    for i, (g, r) in enumerate(zip(gw, rw)):
        assert g.dtype == np.dtype(dtype)
        assert_close(g, r, dtype, f"dC/dw layer {i}")
    for i, (g, r) in enumerate(zip(gb, rb)):
        assert_close(g, r, dtype, f"dC/db layer {i}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output,cost", OUTPUT_COST)
@pytest.mark.parametrize("momentum,decay", [(0.0, 0.0), (0.9, 1e-3)])
def test_sgd_epoch_matches_reference(output, cost, hidden, dtype, momentum, decay):
    """An epoch of 34 examples in batches of 8 (the last one partial), shuffled."""
    sizes = [7, 5, 4, 3]
    net, X, Y, W64, b64 = _setup(sizes, hidden, output, cost, dtype, 34, seed=3)
    order = np.random.default_rng(99).permutation(34)
    vel = ([np.zeros_like(w) for w in W64], [np.zeros_like(b) for b in b64])
    total = R.train_epoch(
        W64, b64, X.astype(np.float64), Y.astype(np.float64), order, 8, 0.1, hidden,
        output, cost, momentum, decay, vel,
    )
    history = net.fit(
        X[order], Y[order], epochs=1, batch_size=8, lr=0.1, momentum=momentum,
        weight_decay=decay, shuffle=False,
    )
    assert_close(history.train_cost[0], total / 34, dtype, "epoch cost")
    for i in range(len(W64)):
        assert_close(net.weights[i], W64[i], dtype, f"w layer {i}")
        assert_close(net.biases[i], b64[i], dtype, f"b layer {i}")


# --- the layer kernels one by one ------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "relu", "tanh", "identity", "softmax"])
def test_forward_layer(act, dtype, rng):
    A_prev = rng.normal(0, 1, (9, 6)).astype(dtype)
    W = rng.normal(0, 1, (5, 6)).astype(dtype)
    b = rng.normal(0, 1, 5).astype(dtype)
    Z = np.full((12, 5), np.nan, dtype)  # workspaces larger than m: rows >= m untouched
    A = np.full((12, 5), np.nan, dtype)
    K.forward_layer(A_prev, W, b, K.ACTIVATION_CODES[act], 9, Z, A)
    z_ref = A_prev.astype(float) @ W.T.astype(float) + b.astype(float)
    assert_close(Z[:9], z_ref, dtype, "z")
    assert_close(A[:9], R.ACTIVATIONS[act](z_ref), dtype, "a")
    assert np.isnan(Z[9:]).all() and np.isnan(A[9:]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,cost", OUTPUT_COST)
def test_output_delta_and_cost(output, cost, dtype, rng):
    z = rng.normal(0, 2, (6, 4))
    a = R.ACTIVATIONS[output](z)
    y = make_targets(rng, 6, 4, output, cost)
    Z, A, Y = (v.astype(dtype) for v in (z, a, y))
    D = np.empty((6, 4), dtype)
    c = np.empty(6, dtype)
    o, k = K.ACTIVATION_CODES[output], K.COST_CODES[cost]
    K.output_delta(A, Z, Y, o, k, 6, D)
    K.cost_per_sample(A, Z, Y, o, k, 6, c)
    Cref = R.COSTS[cost]
    z, a, y = (v.astype(float) for v in (Z, A, Y))
    assert_close(D, Cref.delta(z, a, y, output), dtype, "BP1")
    assert_close(c, Cref.fn(z, a, y, output), dtype, "C_x")


def test_softmax_cross_entropy_delta_with_unnormalised_targets(rng):
    """δ_j = a_j Σ_i y_i - y_j: exact for soft targets that do not sum to one."""
    net = fastbp.Network([3, 4], output="softmax", cost="cross_entropy", seed=1)
    X = rng.normal(0, 1, (5, 3))
    Y = rng.uniform(0, 1, (5, 4))
    assert fastbp.gradcheck(net, X, Y) < 1e-7


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "relu", "tanh", "identity"])
def test_backward_delta(act, dtype, rng):
    """BP2 for each activation of the lower layer."""
    D = rng.normal(0, 1, (7, 5)).astype(dtype)
    W = rng.normal(0, 1, (5, 6)).astype(dtype)
    Zp = rng.normal(0, 1, (7, 6)).astype(dtype)
    Ap = R.ACTIVATIONS[act](Zp.astype(float)).astype(dtype)
    Dp = np.empty((7, 6), dtype)
    K.backward_delta(D, W, Zp, Ap, K.ACTIVATION_CODES[act], 7, Dp)
    d, w, zp, ap = (v.astype(float) for v in (D, W, Zp, Ap))
    assert_close(Dp, (d @ w) * R.DERIVATIVES[act](zp, ap), dtype, "BP2")


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_gradients(dtype, rng):
    """BP3/BP4 averaged over m = 5 of a 7-row workspace."""
    D = rng.normal(0, 1, (7, 4)).astype(dtype)
    Ap = rng.normal(0, 1, (7, 6)).astype(dtype)
    gW = np.empty((4, 6), dtype)
    gb = np.empty(4, dtype)
    scale = np.dtype(dtype).type(1.0) / np.dtype(dtype).type(5)
    K.weight_gradients(D, Ap, scale, 5, gW, gb)
    d, ap = D[:5].astype(float), Ap[:5].astype(float)
    assert_close(gW, d.T @ ap / 5, dtype, "BP4")
    assert_close(gb, d.sum(axis=0) / 5, dtype, "BP3")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,decay", [(0.0, 0.0), (0.0, 0.01), (0.9, 0.0), (0.5, 0.01)])
def test_sgd_update(momentum, decay, dtype, rng):
    P = rng.normal(0, 1, (4, 3)).astype(dtype)
    G = rng.normal(0, 1, (4, 3)).astype(dtype)
    V = rng.normal(0, 1, (4, 3)).astype(dtype)
    real = np.dtype(dtype).type
    p, g, vel = (x.astype(float) for x in (P, G, V))
    K.sgd_update(P, G, V, real(0.1), real(momentum), real(decay))
    g = g + decay * p
    if momentum:
        vel = momentum * vel - 0.1 * g
        assert_close(V, vel, dtype, "v")
        assert_close(P, p + vel, dtype, "p")
    else:
        assert_close(P, p - 0.1 * g, dtype, "p")


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

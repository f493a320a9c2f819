"""Property tests: random networks against the NumPy reference (fastbp.reference).

Hypothesis draws the architecture (2-4 layers of 1-9 neurons), the hidden activation,
a valid output/cost pair, the dtype, the batch size (1-17) and a seed for the numbers.
Depths are limited to three values, since each depth and dtype compiles the drivers once.

Tolerances: float64 results agree with the float64 reference to 1e-10 relative, with an
absolute floor of 1e-12 times the largest entry of the reference array (for entries that
are sums with cancellation). float32 results are compared with the reference evaluated
in float64 on the same float32 numbers, to 1e-4 relative with a floor of 1e-6 times the
largest entry: the same ratio of floor to relative tolerance as in float64.
"""

import numpy as np
from conftest import HIDDEN, OUTPUT_COST, make_targets
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastbp
from fastbp import reference as R

SETTINGS = settings(max_examples=30, deadline=None)
TOLERANCE = {"float64": (1e-10, 1e-12), "float32": (1e-4, 1e-6)}


def assert_matches(actual, ref, dtype, what=""):
    """Agreement to TOLERANCE[dtype]: (relative, absolute floor per unit of max |ref|)."""
    actual = np.asarray(actual)
    ref = np.asarray(ref, dtype=np.float64)
    assert actual.dtype == np.dtype(dtype), what
    assert actual.shape == ref.shape, what
    rtol, floor = TOLERANCE[dtype]
    atol = floor * float(np.max(np.abs(ref))) if ref.size else 0.0
    np.testing.assert_allclose(actual.astype(np.float64), ref, rtol=rtol, atol=atol,
                               err_msg=what)


@st.composite
def problems(draw):
    """A network, a batch of inputs and targets suited to its output/cost pair."""
    depth = draw(st.sampled_from([2, 3, 4]), label="layers")
    sizes = [draw(st.integers(1, 9), label=f"units{i}") for i in range(depth)]
    output, cost = draw(st.sampled_from(OUTPUT_COST), label="output/cost")
    if output == "softmax" and sizes[-1] < 2:
        sizes[-1] = draw(st.integers(2, 9), label="softmax units")
    hidden = draw(st.sampled_from(HIDDEN), label="hidden")
    dtype = draw(st.sampled_from(["float64", "float32"]), label="dtype")
    batch = draw(st.integers(1, 17), label="batch")
    # class labels where the output reads as classes; float targets otherwise
    labels = output in ("softmax", "sigmoid") and draw(st.booleans(), label="labels")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")

    rng = np.random.default_rng(seed)
    net = fastbp.Network(sizes, hidden=hidden, output=output, cost=cost, dtype=dtype,
                         seed=seed)
    for b in net.biases:  # networks start with zero biases: exercise every term of z
        b[:] = rng.normal(0, 0.5, b.shape)
    X = rng.uniform(-2, 2, (batch, sizes[0])).astype(dtype)
    if labels:
        n_classes = max(sizes[-1], 2)
        Y = rng.integers(0, n_classes, batch)
        Y_ref = (Y[:, None].astype(np.float64) if sizes[-1] == 1
                 else np.eye(sizes[-1])[Y])
    else:
        Y = make_targets(rng, batch, sizes[-1], output, cost).astype(dtype)
        Y_ref = Y.astype(np.float64)
    return net, X, Y, Y_ref


def as_reference(net):
    """The parameters in float64 (exact for float32 networks), as fresh copies."""
    return ([w.astype(np.float64) for w in net.weights],
            [b.astype(np.float64) for b in net.biases])


def all_finite(arrays):
    return all(np.isfinite(a).all() for a in arrays)


def reference_args(net):
    return net.hidden, net.output, net.cost_name


@SETTINGS
@given(problems())
def test_gradients_match_the_reference(problem):
    net, X, Y, Y_ref = problem
    W, b = as_reference(net)
    X64 = X.astype(np.float64)
    grad_w, grad_b = net.gradients(X, Y)
    ref_w, ref_b = R.gradients(W, b, X64, Y_ref, *reference_args(net))
    assert len(grad_w) == len(ref_w) and len(grad_b) == len(ref_b)
    for i, (g, r) in enumerate(zip(grad_w, ref_w)):
        assert_matches(g, r, net.dtype, f"dC/dW[{i}]")
    for i, (g, r) in enumerate(zip(grad_b, ref_b)):
        assert_matches(g, r, net.dtype, f"dC/db[{i}]")


@SETTINGS
@given(problems())
def test_forward_and_cost_match_the_reference(problem):
    net, X, Y, Y_ref = problem
    W, b = as_reference(net)
    X64 = X.astype(np.float64)
    hidden, output, cost = reference_args(net)
    assert_matches(net.forward(X), R.feedforward(W, b, X64, hidden, output), net.dtype,
                   "forward")
    rtol, _ = TOLERANCE[net.dtype]
    ref_cost = R.cost(W, b, X64, Y_ref, hidden, output, cost)
    # a mean of non-negative costs: relative agreement, floored by the float's precision
    np.testing.assert_allclose(net.cost(X, Y), ref_cost, rtol=rtol,
                               atol=np.finfo(net.dtype).eps * 16 * max(ref_cost, 1.0))


@SETTINGS
@given(
    problems(),
    st.sampled_from([0.01, 0.1, 0.5, 1.0]),
    st.sampled_from([0.0, 0.9]),
    st.sampled_from([0.0, 1e-3]),
)
def test_one_fit_step_matches_reference_sgd_step(problem, lr, momentum, weight_decay):
    """fit with one full-batch epoch is exactly one reference.sgd_step."""
    net, X, Y, Y_ref = problem
    W, b = as_reference(net)
    velocities = None
    if momentum:
        velocities = ([np.zeros_like(w) for w in W], [np.zeros_like(x) for x in b])
    hidden, output, cost = reference_args(net)
    with np.errstate(over="ignore", invalid="ignore"):
        batch_cost = R.sgd_step(W, b, X.astype(np.float64), Y_ref, lr, hidden, output, cost,
                                momentum, weight_decay, velocities)
    assume(all_finite(W + b))  # a step that overflows is test_faults' subject
    history = net.fit(X, Y, epochs=1, batch_size=X.shape[0], lr=lr, momentum=momentum,
                      weight_decay=weight_decay, shuffle=False, progress=False)
    for i, (p, r) in enumerate(zip(net.weights, W)):
        assert_matches(p, r, net.dtype, f"weights[{i}] after the step")
    for i, (p, r) in enumerate(zip(net.biases, b)):
        assert_matches(p, r, net.dtype, f"biases[{i}] after the step")
    if momentum:
        for i, (v, r) in enumerate(zip(net._velocities[0] + net._velocities[1],
                                       velocities[0] + velocities[1])):
            assert_matches(v, r, net.dtype, f"velocity {i}")
    rtol, _ = TOLERANCE[net.dtype]
    np.testing.assert_allclose(history.train_cost[0], batch_cost / X.shape[0], rtol=rtol,
                               atol=np.finfo(net.dtype).eps * 16)


@SETTINGS
@given(problems(), st.integers(1, 6))
def test_an_epoch_of_minibatches_matches_reference_train_epoch(problem, batch_size):
    """Several minibatches in the given order, the last one partial."""
    net, X, Y, Y_ref = problem
    W, b = as_reference(net)
    n = X.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        total = R.train_epoch(W, b, X.astype(np.float64), Y_ref, np.arange(n), batch_size,
                              0.1, *reference_args(net))
    assume(all_finite(W + b))  # an epoch that overflows is test_faults' subject
    history = net.fit(X, Y, epochs=1, batch_size=batch_size, lr=0.1, shuffle=False,
                      progress=False)
    for i, (p, r) in enumerate(zip(net.weights + net.biases, W + b)):
        assert_matches(p, r, net.dtype, f"parameter {i} after the epoch")
    rtol, _ = TOLERANCE[net.dtype]
    np.testing.assert_allclose(history.train_cost[0], total / n, rtol=rtol,
                               atol=np.finfo(net.dtype).eps * 16)

"""Shared helpers: valid architecture combinations and the comparison used everywhere."""

import numpy as np
import pytest

HIDDEN = ["sigmoid", "relu", "tanh", "identity"]
#: every (output, cost) pair the library accepts
OUTPUT_COST = [
    ("sigmoid", "quadratic"),
    ("relu", "quadratic"),
    ("tanh", "quadratic"),
    ("identity", "quadratic"),
    ("softmax", "quadratic"),
    ("softmax", "cross_entropy"),
    ("sigmoid", "cross_entropy"),
]
RTOL = {"float64": 1e-10, "float32": 1e-4}


def assert_close(actual, ref, dtype, what=""):
    """Element-wise agreement to RTOL[dtype] relative.

    float64: every entry within 1e-10 of its reference value, no absolute floor.
    float32: 1e-4 relative, with an absolute floor of 1e-4 times the array's largest
    entry, for entries that are sums with cancellation (nearly zero next to their
    neighbours), where float32's round-off of the terms exceeds the entry itself.
    """
    actual = np.asarray(actual, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert actual.shape == ref.shape, what
    rtol = RTOL[dtype]
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    atol = 0.0 if dtype == "float64" else rtol * scale
    np.testing.assert_allclose(actual, ref, rtol=rtol, atol=atol, err_msg=what)


def make_targets(rng, n, n_out, output, cost):
    """Targets that suit the output/cost pair (one-hot rows for a softmax)."""
    if output == "softmax":
        return np.eye(n_out)[rng.integers(0, n_out, n)]
    if output == "tanh":
        return rng.uniform(-1, 1, (n, n_out))
    if output in ("identity", "relu"):
        return rng.normal(0, 1, (n, n_out))
    return rng.uniform(0, 1, (n, n_out))


def randomize_biases(net, rng):
    """Networks start with zero biases; tests want every term of z exercised."""
    for b in net.biases:
        b[:] = rng.normal(0, 0.5, b.shape)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)

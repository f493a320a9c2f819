"""Shared helpers: valid architecture combinations and the comparison used everywhere."""

import numpy as np
import pytest

from fastbp import reference as R

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


def assert_close(actual, ref, dtype, what="", magnitude=None):
    """Element-wise agreement to RTOL[dtype] (1e-10 in float64, 1e-4 in float32).

    Without ``magnitude``, each entry is judged relative to itself. With it, relative to
    ``magnitude`` where that is larger: for an entry that is a sum (a dot product, a
    gradient averaged over examples) ``magnitude`` is the same sum of the terms' absolute
    values, Σ|x_i y_i|, the scale round-off is proportional to. A sum whose terms cancel
    to nearly zero carries round-off of the size of its terms, and judging it by its own
    small value would measure the cancellation, not the kernel. float32 additionally
    allows 1e-4 times the array's largest entry.
    """
    actual = np.asarray(actual, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert actual.shape == ref.shape, what
    rtol = RTOL[dtype]
    scale = np.abs(ref)
    if magnitude is not None:
        scale = np.maximum(scale, np.abs(np.asarray(magnitude, dtype=np.float64)))
    if dtype == "float32" and ref.size:
        scale = np.maximum(scale, np.abs(ref).max())
    err = np.abs(actual - ref)
    bad = ~(err <= rtol * scale)
    assert not bad.any(), (
        f"{what}: {bad.sum()} of {bad.size} entries differ by more than {rtol:g} of their "
        f"scale; worst |diff|/scale = {np.max(err[bad] / np.maximum(scale[bad], 1e-300)):.3g}"
    )


def gradient_magnitudes(weights, biases, X, Y, hidden, output, cost):
    """Σ_x |a^{l-1}_k δ^l_j| / n and Σ_x |δ^l_j| / n: the scale of each gradient entry."""
    _, activations, deltas = R.backprop(weights, biases, X, Y, hidden, output, cost)
    n = X.shape[0]
    mw = [np.abs(d).T @ np.abs(a) / n for d, a in zip(deltas, activations[:-1])]
    mb = [np.abs(d).sum(axis=0) / n for d in deltas]
    return mw, mb


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

"""Element-wise pieces the layer kernels share: σ(z), σ'(z) and a softmax row.

Literals are ``float32`` so that float32 arrays stay float32 (``float32 op float64``
would promote); against float64 arrays they widen exactly (0, 0.5 and 1 are exact).
"""

import math

import numpy as np
from numba import njit

from .._config import SERIAL
from .codes import RELU, SIGMOID, TANH

ZERO = np.float32(0.0)
ONE = np.float32(1.0)


@njit(inline="always", **SERIAL)
def activate(act, z):
    """σ(z) for one weighted input ``z`` (every activation but softmax).

    The sigmoid is evaluated in the form that cannot overflow:
    ``1 / (1 + e^{-z})`` for ``z >= 0`` and ``e^z / (1 + e^z)`` otherwise, both as
    ``n / (1 + e^{-|z|})`` with the numerator n chosen without a branch (the sign of z
    in a layer is as good as random, and a mispredicted branch costs more than the
    division). ReLU is ``max(z, 0)`` with NaN passed through, as ``np.maximum`` does.
    """
    if act == SIGMOID:
        e = math.exp(-abs(z))
        return (ONE if z >= ZERO else e) / (ONE + e)
    if act == TANH:
        return math.tanh(z)
    if act == RELU:
        return ZERO if z <= ZERO else z
    return z


@njit(inline="always", **SERIAL)
def derivative(act, z, a):
    """σ'(z), from the weighted input ``z`` and the stored activation ``a = σ(z)``.

    sigmoid: a(1 - a); tanh: 1 - a²; relu: 1 where z > 0 else 0; identity: 1.
    """
    if act == SIGMOID:
        return a * (ONE - a)
    if act == TANH:
        return ONE - a * a
    if act == RELU:
        return ONE if z > ZERO else ZERO
    return ONE + ZERO * z


@njit(inline="always", **SERIAL)
def softmax_row(z, a, n):
    """a_j = e^{z_j - max z} / Σ_i e^{z_i - max z} over the first ``n`` entries."""
    zmax = z[0]
    for j in range(1, n):
        if z[j] > zmax:
            zmax = z[j]
    total = ZERO * zmax
    for j in range(n):
        e = math.exp(z[j] - zmax)
        a[j] = e
        total += e
    inv = ONE / total
    for j in range(n):
        a[j] *= inv


@njit(inline="always", **SERIAL)
def sgd(w, v, g, lr, momentum):
    """One SGD step of a parameter w with gradient g (weight decay already in g).

    Returns ``(w', v')``: w' = w - ηg, or with momentum v' = μv - ηg and w' = w + v'; v
    is returned unchanged without momentum (the caller need not store it).
    """
    if momentum != ZERO:
        v = momentum * v - lr * g
        return w + v, v
    return w - lr * g, v

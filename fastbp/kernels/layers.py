"""Per-layer kernels: the forward layer, BP1, BP2, BP3/BP4 and the SGD update.

Each is a ``@njit(parallel=True)`` explicit loop over the per-index formula it names.
Literals are ``float32`` so that float32 arrays stay float32 (``float32 op float64``
would promote); against float64 arrays they widen exactly (0, 0.5 and 1 are exact).
"""

import math

import numpy as np
from numba import njit, prange

from .._config import PARALLEL, SERIAL
from .codes import CROSS_ENTROPY, IDENTITY, RELU, SIGMOID, SOFTMAX, TANH

ZERO = np.float32(0.0)
HALF = np.float32(0.5)
ONE = np.float32(1.0)


@njit(inline="always", **SERIAL)
def activate(act, z):
    """σ(z) for one weighted input ``z`` (every activation but softmax).

    The sigmoid is evaluated in the form that cannot overflow:
    ``1 / (1 + e^{-z})`` for ``z >= 0`` and ``e^z / (1 + e^z)`` otherwise. ReLU is
    ``max(z, 0)`` with NaN passed through, as ``np.maximum`` does.
    """
    if act == SIGMOID:
        if z >= ZERO:
            return ONE / (ONE + math.exp(-z))
        e = math.exp(z)
        return e / (ONE + e)
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


@njit(**PARALLEL)
def gather_rows(src, order, start, m, dst):
    """dst[s, :] = src[order[start + s], :] for s < m: one shuffled minibatch."""
    n_cols = src.shape[1]
    for s in prange(m):
        row = order[start + s]
        for c in range(n_cols):
            dst[s, c] = src[row, c]


@njit(**PARALLEL)
def forward_layer(A_prev, W, b, act, m, Z, A):
    """Forward one layer for the first ``m`` examples of a minibatch.

    Parameters
    ----------
    A_prev : (batch, n_{l-1}) activations of layer l-1 (``X`` for the first layer).
    W : (n_l, n_{l-1}) weights; b : (n_l,) biases.
    act : activation code of layer l.
    m : number of rows to compute.
    Z, A : (batch, n_l) outputs, the weighted inputs and the activations.

    Notes
    -----
    z^l_j = Σ_k w^l_jk a^{l-1}_k + b^l_j and a^l_j = σ(z^l_j), for every example.
    Threads split the neurons j; each keeps its rows of W in cache while it sweeps the
    batch. Softmax needs the whole row z^L, so it runs as a second loop over examples.
    """
    n_out, n_in = W.shape
    for j in prange(n_out):
        for s in range(m):
            acc = b[j]
            for k in range(n_in):
                acc += W[j, k] * A_prev[s, k]
            Z[s, j] = acc
            if act != SOFTMAX:
                A[s, j] = activate(act, acc)
    if act == SOFTMAX:
        for s in prange(m):
            softmax_row(Z[s], A[s], n_out)


@njit(**PARALLEL)
def output_delta(A, Z, Y, act, cost, m, D):
    """BP1: the output error δ^L = ∇_a C ⊙ σ'(z^L), for each output/cost pair.

    Notes
    -----
    - quadratic, element-wise σ: δ_j = (a_j - y_j) σ'(z_j).
    - quadratic, softmax: the Jacobian ∂a_i/∂z_j = a_i(1[i=j] - a_j) couples the units,
      so δ_j = a_j ((a_j - y_j) - Σ_i (a_i - y_i) a_i).
    - cross-entropy, softmax (C = -Σ_j y_j ln a_j): δ_j = a_j Σ_i y_i - y_j, which is
      a_j - y_j when the targets of the example sum to one.
    - cross-entropy, sigmoid (C = -Σ_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)]):
      δ_j = a_j - y_j; the σ'(z) of BP1 cancels against the cost's 1/(a(1-a)).
    """
    n_out = A.shape[1]
    for s in prange(m):
        if act == SOFTMAX:
            if cost == CROSS_ENTROPY:
                ysum = ZERO * A[s, 0]
                for j in range(n_out):
                    ysum += Y[s, j]
                for j in range(n_out):
                    D[s, j] = A[s, j] * ysum - Y[s, j]
            else:
                dot = ZERO * A[s, 0]
                for i in range(n_out):
                    dot += (A[s, i] - Y[s, i]) * A[s, i]
                for j in range(n_out):
                    D[s, j] = A[s, j] * ((A[s, j] - Y[s, j]) - dot)
        elif cost == CROSS_ENTROPY:
            for j in range(n_out):
                D[s, j] = A[s, j] - Y[s, j]
        else:
            for j in range(n_out):
                D[s, j] = (A[s, j] - Y[s, j]) * derivative(act, Z[s, j], A[s, j])


@njit(**PARALLEL)
def cost_per_sample(A, Z, Y, act, cost, m, out):
    """out[s] = C_x, the cost of example s, for the first ``m`` examples.

    Notes
    -----
    - quadratic: C_x = ½ Σ_j (a_j - y_j)².
    - cross-entropy, softmax: C_x = -Σ_j y_j ln a_j, evaluated from z as
      Σ_j y_j (logsumexp(z) - z_j) so that a saturated a_j = 0 gives no ln 0.
    - cross-entropy, sigmoid: C_x = -Σ_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)], evaluated
      as Σ_j softplus(z_j) - y_j z_j with softplus(z) = max(z, 0) + ln(1 + e^{-|z|}).
    """
    n_out = A.shape[1]
    for s in prange(m):
        c = ZERO * A[s, 0]
        if cost == CROSS_ENTROPY:
            if act == SOFTMAX:
                zmax = Z[s, 0]
                for j in range(1, n_out):
                    if Z[s, j] > zmax:
                        zmax = Z[s, j]
                total = ZERO * zmax
                for j in range(n_out):
                    total += math.exp(Z[s, j] - zmax)
                lse = zmax + math.log(total)
                for j in range(n_out):
                    c += Y[s, j] * (lse - Z[s, j])
            else:
                for j in range(n_out):
                    z = Z[s, j]
                    c += max(z, ZERO) + math.log1p(math.exp(-abs(z))) - Y[s, j] * z
        else:
            for j in range(n_out):
                r = A[s, j] - Y[s, j]
                c += r * r
            c *= HALF
        out[s] = c


@njit(**PARALLEL)
def backward_delta(D, W, Z_prev, A_prev, act_prev, m, D_prev):
    """BP2: δ^{l-1}_k = (Σ_j w^l_jk δ^l_j) σ'(z^{l-1}_k), for the first ``m`` examples.

    Notes
    -----
    Threads split the examples; for one example the sum over j runs in ascending j,
    accumulating whole rows ``W[j, :]`` so the inner loop is contiguous in k.
    """
    n_out, n_in = W.shape
    for s in prange(m):
        for k in range(n_in):
            D_prev[s, k] = ZERO
        for j in range(n_out):
            d = D[s, j]
            for k in range(n_in):
                D_prev[s, k] += W[j, k] * d
        for k in range(n_in):
            D_prev[s, k] *= derivative(act_prev, Z_prev[s, k], A_prev[s, k])


@njit(**PARALLEL)
def weight_gradients(D, A_prev, scale, m, gW, gb):
    """BP3 and BP4 averaged over the first ``m`` examples of a minibatch.

    Notes
    -----
    ∂C/∂b^l_j = scale · Σ_x δ^l_j and ∂C/∂w^l_jk = scale · Σ_x a^{l-1}_k δ^l_j, with
    ``scale = 1/m`` for the mean cost. Threads split the neurons j; for one j the sum
    over examples runs in order, each step adding a^{l-1}_k δ^l_j to the contiguous row
    ``gW[j, :]``.
    """
    n_out, n_in = gW.shape
    for j in prange(n_out):
        for k in range(n_in):
            gW[j, k] = ZERO
        sb = ZERO * scale
        for s in range(m):
            d = D[s, j]
            sb += d
            for k in range(n_in):
                gW[j, k] += d * A_prev[s, k]
        for k in range(n_in):
            gW[j, k] *= scale
        gb[j] = sb * scale


@njit(**PARALLEL)
def sgd_update(P, G, V, lr, momentum, decay):
    """One SGD step on a parameter array ``P`` (weights or biases) viewed as rows.

    Notes
    -----
    With g = ∂C/∂p + λ p (λ = ``decay``, L2 weight decay):
    - plain SGD (``momentum == 0``): p := p - η g;
    - momentum μ: v := μ v - η g, p := p + v (``V`` holds v and is not read otherwise).
    """
    n_rows, n_cols = P.shape
    for r in prange(n_rows):
        for c in range(n_cols):
            g = G[r, c] + decay * P[r, c]
            if momentum != ZERO:
                v = momentum * V[r, c] - lr * g
                V[r, c] = v
                P[r, c] += v
            else:
                P[r, c] -= lr * g

"""Element-wise pieces the layer kernels share: e^x, σ(z), σ'(z) and a softmax row.

Literals are ``float32`` so that float32 arrays stay float32 (``float32 op float64``
would promote); against float64 arrays they widen exactly (0, 0.5 and 1 are exact).
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .._config import EXP_JIT, NOALIAS, SERIAL, WIDE
from .codes import RELU, SIGMOID, TANH
from .lanes import (
    columns_normalise16,
    columns_sub_max16,
    fma,
    register_lanes,
    scratch,
    transpose16,
    transpose16_exact,
)
from .views import flat

ZERO = np.float32(0.0)
ONE = np.float32(1.0)


def exp(x):
    """e^x in arithmetic that vectorises: a kernel's loop of them runs in SIMD lanes.

    ``math.exp`` is a call into libm that LLVM cannot vectorise (Numba's vector math
    library, SVML, needs an LLVM this llvmlite is not built with), and in a sigmoid
    layer it costs more than the multiply-adds. This is the textbook reduction
    e^x = 2^k e^r with k = round(x / ln 2) and r = x - k ln 2 (ln 2 split in a high
    part exact in products with k and a low part), e^r by a polynomial on |r| <= ln2/2
    (Chebyshev fits of degree 11 in float64 and 6 in float32, truncation below 2e-17 and
    2.1e-8 relative), and 2^k built from the bits of the exponent field, in two factors so
    that results down to the smallest subnormal come out right (a single rounding).
    Arguments are clamped where e^x has overflowed or underflowed, so ±inf give inf
    and 0 and NaN stays NaN. Measured against ``np.exp``: within 1.0 ε in float64 and
    0.72 ε in float32 (with the Taylor polynomials of degree 12 and 7 it replaces, 1.42 ε
    and 0.64 ε, 1.05x and 1.06x as long in a sigmoid layer; tests/test_kernels.py checks
    it). In Python (and for types other than float32 and float64) it is ``math.exp``.
    """
    return math.exp(x)


# Coefficients of e^r on |r| <= ln2/2, highest degree first, for Horner's rule:
# Chebyshev fits of degree 11 and 6 (mpmath.chebyfit, 60 digits), rounded to the dtype;
# relative truncation error 1.7e-17 and 2.0e-8 with the rounded coefficients (the
# Taylor polynomials of degree 12 and 7 they replace: 1.7e-16 and 5.3e-9).
_C64 = (2.5110037605963777e-08, 2.763263963904103e-07, 2.755724091857897e-06,
        2.4801485482328494e-05, 0.00019841269890047113, 0.0013888888952314775,
        0.008333333333319601, 0.0416666666664881, 0.1666666666666668, 0.5000000000000019,
        1.0, 1.0)
_C32 = tuple(np.float32(c) for c in (0.0013941108481958508, 0.00837512593716383,
                                     0.04166635125875473, 0.16666415333747864, 0.5, 1.0,
                                     1.0))


def _float_parts(x):
    """For a Numba float32 or float64 type: (float type, integer type of its width,
    exponent bias, mantissa bits, x/ln2 + shift rounding to an integer in the mantissa's
    low bits, that shift's bits, log2 e, ln 2 split in a high part exact in products with
    small integers and a low part), all converted; None for other types."""
    if isinstance(x, types.Float) and x.bitwidth == 64:
        f, i, bias, bits = np.float64, np.int64, 1023, 52
        ln2_hi, ln2_lo = 0.6931471803691238, 1.9082149292705877e-10
    elif isinstance(x, types.Float) and x.bitwidth == 32:
        f, i, bias, bits = np.float32, np.int32, 127, 23
        ln2_hi, ln2_lo = 0.693359375, -2.12194440e-4
    else:
        return None
    shift = f(1.5 * 2.0**bits)
    return (f, i, i(bias), i(bits), shift, shift.view(i), f(1.4426950408889634), f(ln2_hi),
            f(ln2_lo))


@overload(exp, jit_options=EXP_JIT)
def _exp_impl(x):
    parts = _float_parts(x)
    if parts is None:
        return lambda x: math.exp(x)
    f, i, bias, bits, shift, shift_bits, log2e, ln2_hi, ln2_lo = parts
    wide = x.bitwidth == 64
    low, high = (f(-746.0), f(710.0)) if wide else (f(-104.0), f(89.0))  # e^x is 0, inf
    c = _C64 if wide else _C32
    one = i(1)
    n = len(c)

    def impl(x):
        x = low if x < low else x  # NaN fails both tests and stays NaN
        x = high if x > high else x
        t = fma(x, log2e, shift)
        k = t - shift  # round(x / ln 2), as a float
        ki = f(t).view(i) - shift_bits  # the same as an integer
        r = fma(-k, ln2_lo, fma(-k, ln2_hi, x))
        p = c[0]
        for d in range(1, n):
            p = fma(p, r, c[d])
        k1 = ki >> one  # 2^k = 2^k1 2^k2, both normal for every k in range
        k2 = ki - k1
        return p * i((k1 + bias) << bits).view(f) * i((k2 + bias) << bits).view(f)

    return impl


def tanh(x):
    """tanh x in arithmetic that vectorises, as :func:`exp` is for e^x.

    tanh x = sign(x) u / (u + 2) with u = e^{2|x|} - 1 (no cancellation for small x):
    u from the reduction of :func:`exp`, 2|x| = k ln 2 + r, as 2^k (e^r - 1) + (2^k - 1),
    e^r - 1 as r times a polynomial ((e^r - 1) / r: Chebyshev fits of degree 10 in
    float64 and 5 in float32, truncation below 2.4e-17 and 2.6e-8 relative; Taylor
    polynomials of degree 13 and 7 before, as accurate here and in float64 1.2-1.35x as
    long). |x| is clamped at 22 (float64) or 10 (float32), where tanh is 1 to the
    last bit; ±inf give ±1 and NaN stays NaN. Measured against ``np.tanh``: relative
    error below 2.2 ε (3 ulp) in float64 and 1.9 ε in float32, the largest where
    2|x| > ln2/2 starts the reduction (tests/test_kernels.py checks 2.5 ε); 0.81 and
    0.33 ns per element in a loop. libm's tanh, which LLVM cannot vectorise, had cost a
    100 × 16 layer 20 µs against 3.8 µs for the sigmoid. In Python (and for other
    types) it is ``math.tanh``.
    """
    return math.tanh(x)


# Coefficients of (e^r - 1) / r on |r| <= ln2/2, highest degree first: Chebyshev fits
# of degree 10 and 5 (mpmath.chebyfit, 60 digits), rounded to the dtype; relative
# truncation error 2.4e-17 and 2.6e-8 with the rounded coefficients.
_M64 = (2.510520637395701e-08, 2.7626357241447223e-07, 2.7557255425746435e-06,
        2.4801504346997686e-05, 0.00019841269874800493, 0.0013888888932488599,
        0.008333333333326141, 0.04166666666657314, 0.1666666666666667, 0.5000000000000006,
        1.0)
_M32 = tuple(np.float32(c) for c in (0.0013933641603216529, 0.008369148708879948,
                                     0.04166646674275398, 0.16666504740715027, 0.5, 1.0))


@overload(tanh, jit_options=EXP_JIT)
def _tanh_impl(x):
    parts = _float_parts(x)
    if parts is None:
        return lambda x: math.tanh(x)
    f, i, bias, bits, shift, shift_bits, log2e, ln2_hi, ln2_lo = parts
    high, c = (f(22.0), _M64) if x.bitwidth == 64 else (f(10.0), _M32)
    zero, one, two = f(0), f(1), f(2)
    n = len(c)

    def impl(x):
        a = abs(x)
        a = high if a > high else a  # NaN stays NaN
        y = a + a
        t = fma(y, log2e, shift)
        k = t - shift
        ki = f(t).view(i) - shift_bits
        r = fma(-k, ln2_lo, fma(-k, ln2_hi, y))
        p = c[0]
        for d in range(1, n):
            p = fma(p, r, c[d])
        s = i((ki + bias) << bits).view(f)  # 2^k, k >= 0
        u = fma(s, p * r, s - one)  # e^y - 1
        h = u / (u + two)
        return h if x >= zero else -h

    return impl


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
        e = exp(-abs(z))
        return (ONE if z >= ZERO else e) / (ONE + e)
    if act == TANH:
        return tanh(z)
    if act == RELU:
        return ZERO if z <= ZERO else z
    return z


@njit(**WIDE)
def activate_range(act, z, a, start, stop):
    """a[i] = σ(z[i]) for ``start <= i < stop`` (every activation but softmax).

    One loop per activation, each calling :func:`activate` with a constant code, so
    that the choice is made once and not per element: a loop whose body branches on
    the activation does not vectorise. The loops run over slices from index 0 (see
    :func:`sgd_range`).
    """
    z, a, n = z[start:stop], a[start:stop], stop - start
    if act == SIGMOID:
        for i in range(n):
            a[i] = activate(SIGMOID, z[i])
    elif act == TANH:
        for i in range(n):
            a[i] = activate(TANH, z[i])
    elif act == RELU:
        for i in range(n):
            a[i] = activate(RELU, z[i])
    else:
        for i in range(n):
            a[i] = z[i]


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


@njit(**NOALIAS)
def derivative_scale(act, d, z, a, start, stop):
    """d[i] *= σ'(z[i]) (a = σ(z) stored) for ``start <= i < stop``, one loop per
    activation as in :func:`activate_range`."""
    d, z, a, n = d[start:stop], z[start:stop], a[start:stop], stop - start
    if act == SIGMOID:
        for i in range(n):
            d[i] *= derivative(SIGMOID, z[i], a[i])
    elif act == TANH:
        for i in range(n):
            d[i] *= derivative(TANH, z[i], a[i])
    elif act == RELU:
        for i in range(n):
            d[i] *= derivative(RELU, z[i], a[i])
    else:
        for i in range(n):
            d[i] *= derivative(act, z[i], a[i])


@njit(inline="always", **SERIAL)
def _row_sum(e, n):
    """Σ_j e_j over the first ``n`` entries, in order of j."""
    total = ZERO * e[0]
    for j in range(n):
        total += e[j]
    return total


@njit(inline="always", **SERIAL)
def shifted_exps(z, e, n):
    """e_j = e^{z_j - max z} over the first ``n`` entries; returns (max z, Σ_j e_j), the
    sum in order of j: softmax's numerators and denominator, and the cross-entropy
    cost's log-sum-exp (max z + log Σ_j e_j).

    The exponentials are a loop of their own, which vectorises; summed in the same loop
    (in order, as an in-order sum must be) they ran one lane at a time, 1.5-2.5x as
    long over rows of 10 to 100."""
    zmax = z[0]
    for j in range(1, n):
        if z[j] > zmax:
            zmax = z[j]
    for j in range(n):
        e[j] = exp(z[j] - zmax)
    return zmax, _row_sum(e, n)


@njit(inline="always", **SERIAL)
def softmax_row(z, a, n):
    """a_j = e^{z_j - max z} / Σ_i e^{z_i - max z} over the first ``n`` entries."""
    inv = ONE / shifted_exps(z, a, n)[1]
    for j in range(n):
        a[j] *= inv


#: Widest row (n_l) whose float32 softmax runs on blocks of 16 rows transposed
#: (:func:`softmax_rows`): 32 columns, two 16 × 16 transposes each way.
SOFTMAX_COLUMNS = 32
#: Elements of its transposed block: 16 lanes per column.
SOFTMAX_BLOCK = 16 * SOFTMAX_COLUMNS


@njit(inline="always", **SERIAL)
def _softmax_columns(Z, A, start, stop, n):
    """:func:`softmax_row` over the rows ``start <= s < stop`` (a multiple of 16 of them)
    of Z into A, bitwise the same, 16 rows at a time: each block's columns (n <=
    :data:`SOFTMAX_COLUMNS`) copied out as rows of 16 lanes, one lane per example
    (:func:`~fastbp.kernels.lanes.transpose16`), so that max z, z - max z, e^x, the
    sum in order of j, its reciprocal and the products are each one vector operation per
    column for 16 examples (:func:`~fastbp.kernels.lanes.columns_sub_max16`,
    :func:`~fastbp.kernels.lanes.columns_normalise16`), then copied back
    (:func:`~fastbp.kernels.lanes.transpose16_exact`)."""
    T = scratch(SOFTMAX_BLOCK, Z.dtype.type(0))
    z_flat, a_flat = flat(Z), flat(A)
    for s0 in range(start, stop, 16):
        for c0 in range(0, n, 16):
            transpose16(T, c0 * 16, 16, z_flat, s0 * n + c0, n, 16, min(16, n - c0))
        columns_sub_max16(T, n)
        for i in range(16 * n):
            T[i] = exp(T[i])
        columns_normalise16(T, n)
        for c0 in range(0, n, 16):
            transpose16_exact(a_flat, s0 * n + c0, n, T, c0 * 16, 16, min(16, n - c0), 16)


@njit(**WIDE)
def softmax_rows(Z, A, start, stop, n):
    """:func:`softmax_row` over the rows ``start <= s < stop`` of Z into A (rows of n
    elements: Z and A have n columns), bitwise the same.

    In float32, rows of at most :data:`SOFTMAX_COLUMNS` go 16 at a time through
    :func:`_softmax_columns` (100 rows of 10: 0.58 against 0.78 µs; 32 rows of 10, 20
    and 32: 1.41x, 1.72x and 1.59x; float64's 16-lane rows of two registers ran
    0.6-1.1x, and blocks of fewer than 16 rows, masked, 0.8-1.0x). The other rows go in
    three passes: z - max z written
    to A row by row, then e^x over all of them in one loop, then each row summed in
    order of j and scaled. The one loop of e^x runs in full vectors: row by row, a row
    of 10 had left two lanes to a scalar e^x each (100 rows of 10: float64 1.87 µs
    against 3.00, float32 1.33 against 2.38; of 100: 1.2x and 1.4x). Compiled once per
    dtype, not inlined into each of the four forward kernels (inlined, its vectorised
    loops added about 1.5 s to a cold first fit)."""
    if register_lanes(Z.dtype.type(0), 1) == 16 and n <= SOFTMAX_COLUMNS:
        full = start + (stop - start) // 16 * 16
        _softmax_columns(Z, A, start, full, n)
        start = full
    for s in range(start, stop):
        z, a = Z[s], A[s]
        zmax = z[0]
        for j in range(1, n):
            if z[j] > zmax:
                zmax = z[j]
        for j in range(n):
            a[j] = z[j] - zmax
    e = flat(A[start:stop])
    for i in range((stop - start) * n):
        e[i] = exp(e[i])
    for s in range(start, stop):
        a = A[s]
        inv = ONE / _row_sum(a, n)
        for j in range(n):
            a[j] *= inv


@njit(inline="always", **SERIAL)
def sgd(w, v, g, lr, momentum):
    """One SGD step of a parameter w with gradient g (weight decay already in g).

    Returns ``(w', v')``: w' = w - ηg, or with momentum v' = μv - ηg and w' = w + v'; v
    is returned unchanged without momentum (the caller need not store it).
    """
    if momentum != ZERO:
        v = fma(momentum, v, -(lr * g))
        return w + v, v
    return fma(-lr, g, w), v


@njit(**NOALIAS)
def sgd_range(w, v, g, start, stop, lr, momentum, decay):
    """The step of :func:`sgd` for the weights ``start <= i < stop`` with gradients g[i]
    and weight decay λ (g[i] + λ w[i]); the momentum is tested once, not per weight, so
    that either loop vectorises. v is neither read nor written without momentum.

    The loops index slices from 0, not the arrays from ``start``: Numba wraps negative
    indices around, and only an index known to be non-negative lets LLVM drop that
    select and vectorise (from an arbitrary start the loop stayed scalar, ~6x slower).
    """
    w, v, g, n = w[start:stop], v[start:stop], g[start:stop], stop - start
    if momentum != ZERO:
        for i in range(n):
            w[i], v[i] = sgd(w[i], v[i], fma(decay, w[i], g[i]), lr, momentum)
    else:
        for i in range(n):
            w[i] = sgd(w[i], ZERO, fma(decay, w[i], g[i]), lr, ZERO)[0]

"""Register-blocked layer kernels over flat parameter and workspace buffers.

The three matrix-shaped loops of backpropagation are written as small register-blocked
microkernels, each compiled twice from one Python function: ``*_par`` with
``parallel=True`` (``prange`` splits the blocks among threads) and ``*_ser`` without
(``prange`` runs as ``range``), for layers too small to repay a parallel region (about
1-2 µs on two cores). The gradient step is built parallel only: serial steps, and the
parallel ones of hidden layers, run :mod:`fastbp.kernels.narrow`'s. Which one a layer
uses depends only on its shape (and dtype), never on the thread count, and every output
element is computed by one thread in a fixed order, so results are bitwise identical for
any number of threads.

Rows of the layer's input are read through an index array ``rows``: the first layer reads
the shuffled minibatch straight from the training set (``rows`` = the epoch's order), so
no minibatch is ever copied; deeper layers pass the identity.
"""

import math
import types

import numpy as np
from numba import njit, prange

from .._config import ACTIVATE_PAR_MIN, PARALLEL, PARALLEL_MIN_WORK, SERIAL, WIDE
from .codes import CROSS_ENTROPY, SOFTMAX
from .layers import (
    activate_range,
    derivative,
    derivative_scale,
    exp,
    sgd_range,
    shifted_exps,
    softmax_rows,
)
from .lanes import (
    fma,
    load_prefix,
    row_fill,
    rows_fma_outer,
    rows_sum16_store,
    scratch,
    vector_lanes,
)
from .views import flat

ZERO = np.float32(0.0)
HALF = np.float32(0.5)
ONE = np.float32(1.0)
#: Elements of :func:`_dots`'s sums on the stack: 16 rows of up to 16 lanes.
DOT_SUMS = 256
#: Fewest tasks of a parallel forward pass (see :func:`_example_parts`).
FORWARD_MIN_TASKS = 8
#: Most neurons (n_l) of a layer whose parallel forward pass shares out parts of the
#: minibatch alone, each task summing all of the layer's neurons for its examples and
#: then applying σ (or softmax) to those rows in the same parallel region (with at least
#: :data:`FORWARD_MIN_TASKS` blocks of 4 examples; see :func:`_forward`).
FORWARD_ROWS_MAX_OUTPUTS = 16


@njit(inline="always", **SERIAL)
def _four(s0, m):
    """The three examples after s0 in a block of four of a minibatch of m, those past its
    last example repeating it (the last block then sums and stores it again)."""
    return min(s0 + 1, m - 1), min(s0 + 2, m - 1), min(s0 + 3, m - 1)


@njit(inline="always", **SERIAL)
def _dots(W, A, j0, j1, j2, j3, r0, r1, r2, r3, nb, n, acc, pad, zero):
    """The nb × 4 dot products A[r_b, :] · W[j_a, :] (nb = 4, or 2: b < 2 only), summed in
    the rows of ``acc``, that of (b, a) at row 4b + a (:func:`.lanes.rows_sum16_store`
    adds up their lanes).

    Each product is summed in the L lanes of one vector register (16 float32, 8
    float64; :func:`.lanes.vector_lanes`), a row of ``acc`` that stays in a register:
    lane t adds w_jk a_rk for k ≡ t (mod L) in ascending order of k, one fma each (per
    vector of k: four rows of W and nb rows of A loaded, 4 nb vector fmas). The last
    n mod L columns are first copied into zero-padded rows (``pad``, 8 rows of 16) and
    added in the same way.
    """
    L = vector_lanes(zero)
    for i in range(16):
        row_fill(acc, i * L, zero, 0)
    n_in = W.shape[1]
    w_flat = flat(W)
    a_flat = flat(A)
    wo = (j0 * n_in, j1 * n_in, j2 * n_in, j3 * n_in)
    ao = (r0 * n_in, r1 * n_in, r2 * n_in, r3 * n_in)
    n_full = n - n % L
    for k in range(0, n_full, L):
        if nb == 4:
            rows_fma_outer(acc, a_flat, (ao[0] + k, ao[1] + k, ao[2] + k, ao[3] + k),
                           w_flat, (wo[0] + k, wo[1] + k, wo[2] + k, wo[3] + k))
        else:
            rows_fma_outer(acc, a_flat, (ao[0] + k, ao[1] + k),
                           w_flat, (wo[0] + k, wo[1] + k, wo[2] + k, wo[3] + k))
    if n_full < n:
        rest = n - n_full
        for i in range(4):
            load_prefix(pad, 16 * i, w_flat, wo[i] + n_full, rest, 16)
            load_prefix(pad, 64 + 16 * i, a_flat, ao[i] + n_full, rest, 16)
        if nb == 4:
            rows_fma_outer(acc, pad, (64, 80, 96, 112), pad, (0, 16, 32, 48))
        else:
            rows_fma_outer(acc, pad, (64, 80), pad, (0, 16, 32, 48))


@njit(inline="always", **SERIAL)
def _add4x4(C, o0, o1, o2, o3, B, r0, r1, r2, r3, n, keep,
            d00, d01, d02, d03, d10, d11, d12, d13,
            d20, d21, d22, d23, d30, d31, d32, d33):
    """C[o_a, :] += Σ_b d_ab B[r_b, :] for a, b = 0..3 (or = without ``keep``): four
    rows of C updated from four rows of B and a 4 × 4 block of coefficients held in
    registers.

    The k loop vectorises: per vector of k it loads four rows of B and four of C and
    issues sixteen fused multiply-adds. BP2 (C = δ^{l-1}, B = W) and the weight gradient
    (C = ∂C/∂W, B = the layer's inputs) are both this.

    The four rows of C are all loaded before any is stored. Written as four ``+=`` the
    loads of one row followed the store to the row before (the compiler cannot know they
    differ), and rows a multiple of 4 KB apart (512 float64, 1024 float32) then wait on
    each other's stores (4K aliasing): BP2 of a 512-wide layer ran at half speed.
    """
    for k in range(n):
        b0 = B[r0, k]
        b1 = B[r1, k]
        b2 = B[r2, k]
        b3 = B[r3, k]
        zero = b0 * ZERO
        c0 = C[o0, k] if keep else zero
        c1 = C[o1, k] if keep else zero
        c2 = C[o2, k] if keep else zero
        c3 = C[o3, k] if keep else zero
        C[o0, k] = fma(d03, b3, fma(d02, b2, fma(d01, b1, fma(d00, b0, c0))))
        C[o1, k] = fma(d13, b3, fma(d12, b2, fma(d11, b1, fma(d10, b0, c1))))
        C[o2, k] = fma(d23, b3, fma(d22, b2, fma(d21, b1, fma(d20, b0, c2))))
        C[o3, k] = fma(d33, b3, fma(d32, b2, fma(d31, b1, fma(d30, b0, c3))))


@njit(**WIDE)
def _add4x2(C, o0, o1, o2, o3, B, r0, r1, n, keep, d00, d01, d10, d11, d20, d21, d30, d31):
    """:func:`_add4x4` with two rows of B: C[o_a, :] (+)= Σ_b d_ab B[r_b, :], b = 0, 1
    (the two examples a minibatch of 4n + 2 leaves over in the weight gradient).

    Compiled on its own, not inlined: inlined into :func:`_gradient_block` this loop was
    left scalar (its callers' other loops vectorised), and the two left-over examples
    of a 10-example minibatch then took longer than the eight before them.
    """
    for k in range(n):
        b0 = B[r0, k]
        b1 = B[r1, k]
        zero = b0 * ZERO
        c0 = C[o0, k] if keep else zero
        c1 = C[o1, k] if keep else zero
        c2 = C[o2, k] if keep else zero
        c3 = C[o3, k] if keep else zero
        C[o0, k] = fma(d01, b1, fma(d00, b0, c0))
        C[o1, k] = fma(d11, b1, fma(d10, b0, c1))
        C[o2, k] = fma(d21, b1, fma(d20, b0, c2))
        C[o3, k] = fma(d31, b1, fma(d30, b0, c3))


@njit(inline="always", **SERIAL)
def _zero4(C, o0, o1, o2, o3, n, zero):
    """Set the rows o0..o3 of C to zero (the start of a sum built by :func:`_add4x4`)."""
    for k in range(n):
        C[o0, k] = zero
        C[o1, k] = zero
        C[o2, k] = zero
        C[o3, k] = zero


@njit(**WIDE)
def _forward_block(A_prev, rows, W, b, m, Z, j0, n_out, n_in, s_lo, s_hi, zero):
    """z_{s,j} = Σ_k w_jk a_{rows[s],k} + b_j for the block of neurons j = j0 .. j0 + 3
    (fewer at the end) and the examples s_lo <= s < s_hi of the m (s_lo a multiple of
    4): the unit of work of :func:`_forward`'s threads.

    The block functions are compiled once, not inlined, and called with an int64 ``j0``
    (``prange``'s own index is unsigned, ``range``'s signed): one specialisation serves the
    serial, the parallel and the fused kernels, each of which otherwise compiles its own
    copies (the first cold fit took twice as long).
    """
    j_last = n_out - 1
    j1 = min(j0 + 1, j_last)  # the last 1-3 neurons repeat the last row (not stored)
    j2 = min(j0 + 2, j_last)
    j3 = min(j0 + 3, j_last)
    acc = scratch(DOT_SUMS, zero)
    pad = scratch(128, zero)
    z_flat = flat(Z)
    for s0 in range(s_lo, s_hi, 4):
        s1, s2, s3 = _four(s0, m)  # the last 1-3 examples likewise
        if s0 + 2 < m:
            _dots(W, A_prev, j0, j1, j2, j3, rows[s0], rows[s1], rows[s2], rows[s3], 4,
                  n_in, acc, pad, zero)
        else:  # two or one example(s) left: a 2 × 4 block
            _dots(W, A_prev, j0, j1, j2, j3, rows[s0], rows[s1], rows[s1], rows[s1], 2,
                  n_in, acc, pad, zero)
        # z_sj = sum + b_j, row s0 + r of the block stored for the examples < m
        rows_sum16_store(acc, z_flat, s0 * n_out + j0, n_out, min(m - s0, 4), b, j0,
                         min(n_out - j0, 4))


@njit(inline="always", **SERIAL)
def _activate_part(act, s_lo, s_hi, Z, A, n_out):
    """a = σ(z) (or softmax) over the rows s_lo <= s < s_hi, one contiguous run (an
    int64 ``s_lo``: :func:`activate_range` then gets the signature of the tiny networks'
    calls; a literal 0 would compile it a second time)."""
    if act == SOFTMAX:
        softmax_rows(Z, A, s_lo, s_hi, n_out)
    else:
        activate_range(act, flat(Z[s_lo:s_hi]), flat(A[s_lo:s_hi]), np.int64(0),
                       (s_hi - s_lo) * n_out)


@njit(inline="always", **SERIAL)
def _activate_rows(act, m, Z, A, n_out):
    """a = σ(z) (or softmax) over the first m rows, after their z are all computed.

    Row by row: a loop along a row vectorises (e^x included), the 4 × 4 blocks' few
    elements per row would not. In parallel over the examples (in a parallel build)
    for softmax and from ``ACTIVATE_PAR_MIN`` activations.
    """
    if act == SOFTMAX:  # blocks of 16 rows, one call each
        for sb in prange((m + 15) // 16):
            s0 = 16 * np.int64(sb)
            _activate_part(act, s0, min(s0 + 16, m), Z, A, n_out)
    elif m * n_out >= ACTIVATE_PAR_MIN:
        for s in prange(m):
            activate_range(act, Z[s], A[s], np.int64(0), n_out)
    else:  # the first m rows are one contiguous run
        _activate_part(act, np.int64(0), m, Z, A, n_out)


@njit(inline="always", **SERIAL)
def _example_parts(n_jb, n_sb, work):
    """Parts the forward pass splits its examples into (blocks of 4 examples each):
    enough that the parallel loop has at least :data:`FORWARD_MIN_TASKS` tasks (blocks
    of neurons × parts of the examples), an even number of them, when the work is worth
    a parallel region. A layer of a few neurons split by neurons alone left threads
    idle (10 neurons: three blocks of 4 for two threads). A shape's parts never depend
    on the thread count, and an element's sum is the same in any part."""
    if work < PARALLEL_MIN_WORK:
        return 1
    parts = (FORWARD_MIN_TASKS + n_jb - 1) // n_jb
    if parts * n_jb % 2:
        parts += 1
    return max(min(parts, n_sb), 1)


@njit(inline="always", **SERIAL)
def _part_rows(p, parts, m):
    """The examples s_lo <= s < s_hi of part p of ``parts`` of a minibatch of m, in whole
    blocks of 4 (s_lo a multiple of 4)."""
    n_sb = (m + 3) // 4
    return 4 * (p * n_sb // parts), min(4 * ((p + 1) * n_sb // parts), m)


def _forward(A_prev, rows, W, b, act, m, Z, A):
    """z^l_j = Σ_k w^l_jk a^{l-1}_k + b^l_j and a^l = σ(z^l) for m examples.

    Blocks of 4 neurons j × 4 examples, the sixteen sums in registers, in lanes
    (:func:`_dots`), added up and stored four neurons of an example at a time
    (:func:`.lanes.rows_sum16_store`); the last two or one examples take a 2 × 4 block,
    the last three a 4 × 4 block repeating the last example, and the last one to three
    neurons of a layer repeat its last row (the repeated sums are never stored).
    Example s reads its input row ``A_prev[rows[s]]``. The threads share out the blocks
    of neurons, each with all the examples or, for a layer of few neurons, with a part
    of them (:func:`_example_parts`), and σ (or softmax) follows row by row. A layer of
    at most :data:`FORWARD_ROWS_MAX_OUTPUTS` neurons over a minibatch of at least
    :data:`FORWARD_MIN_TASKS` blocks of examples is shared out by parts of the
    minibatch alone, each task applying σ to its own rows, so that σ runs in the
    products' parallel region, not in one of its own (100 -> 10 softmax over 100
    examples, float64 6.35 µs against 7.68; 512 -> 10 over 128 and 784 -> 16 sigmoid
    over 100, 1.08-1.12x; results bitwise the same).
    """
    n_out, n_in = W.shape
    zero = W.dtype.type(0)
    n_jb = (n_out + 3) // 4
    n_sb = (m + 3) // 4
    work = m * n_out * n_in
    if (THREADED and n_out <= FORWARD_ROWS_MAX_OUTPUTS and n_sb >= FORWARD_MIN_TASKS
            and work >= PARALLEL_MIN_WORK):
        for p in prange(FORWARD_MIN_TASKS):
            s_lo, s_hi = _part_rows(np.int64(p), FORWARD_MIN_TASKS, m)
            for jb in range(n_jb):
                _forward_block(A_prev, rows, W, b, m, Z, 4 * np.int64(jb), n_out, n_in,
                               s_lo, s_hi, zero)
            _activate_part(act, s_lo, s_hi, Z, A, n_out)
    else:
        parts = _example_parts(n_jb, n_sb, work) if THREADED else 1
        for t in prange(n_jb * parts):
            t = np.int64(t)
            jb = t // parts
            s_lo, s_hi = _part_rows(t - jb * parts, parts, m)
            _forward_block(A_prev, rows, W, b, m, Z, 4 * jb, n_out, n_in, s_lo, s_hi, zero)
        if THREADED:
            _activate_rows(act, m, Z, A, n_out)
        else:  # one call over all the rows
            _activate_part(act, np.int64(0), m, Z, A, n_out)


def _backward(D, W, Z_prev, A_prev, act_prev, m, D_prev):
    """BP2: δ^{l-1}_k = (Σ_j w^l_jk δ^l_j) σ'(z^{l-1}_k) for m examples.

    Blocks of 4 examples (split among threads) × 4 neurons j: per vector of k, four rows
    of W and the four contiguous rows of δ^{l-1} are loaded and sixteen multiply-adds
    issued. Each element sums its blocks of four j in ascending order, then any last
    neurons one at a time.
    """
    n_out, n_in = W.shape
    zero = W.dtype.type(0)
    j_full = n_out - n_out % 4
    # σ' over a block's rows at once: they are contiguous
    d_flat, z_flat, a_flat = flat(D_prev), flat(Z_prev), flat(A_prev)
    for sb in prange((m + 3) // 4):
        s0 = 4 * sb
        if s0 + 4 <= m:
            s1 = s0 + 1
            s2 = s0 + 2
            s3 = s0 + 3
            if j_full == 0:  # else the first block of neurons writes the rows
                _zero4(D_prev, s0, s1, s2, s3, n_in, zero)
            for j0 in range(0, j_full, 4):
                j1 = j0 + 1
                j2 = j0 + 2
                j3 = j0 + 3
                d00 = D[s0, j0]
                d01 = D[s0, j1]
                d02 = D[s0, j2]
                d03 = D[s0, j3]
                d10 = D[s1, j0]
                d11 = D[s1, j1]
                d12 = D[s1, j2]
                d13 = D[s1, j3]
                d20 = D[s2, j0]
                d21 = D[s2, j1]
                d22 = D[s2, j2]
                d23 = D[s2, j3]
                d30 = D[s3, j0]
                d31 = D[s3, j1]
                d32 = D[s3, j2]
                d33 = D[s3, j3]
                _add4x4(D_prev, s0, s1, s2, s3, W, j0, j1, j2, j3, n_in, j0 > 0,
                        d00, d01, d02, d03, d10, d11, d12, d13,
                        d20, d21, d22, d23, d30, d31, d32, d33)
            for j in range(j_full, n_out):
                d0 = D[s0, j]
                d1 = D[s1, j]
                d2 = D[s2, j]
                d3 = D[s3, j]
                for k in range(n_in):  # loads before stores, as in _add4x4
                    w = W[j, k]
                    p0 = D_prev[s0, k]
                    p1 = D_prev[s1, k]
                    p2 = D_prev[s2, k]
                    p3 = D_prev[s3, k]
                    D_prev[s0, k] = fma(w, d0, p0)
                    D_prev[s1, k] = fma(w, d1, p1)
                    D_prev[s2, k] = fma(w, d2, p2)
                    D_prev[s3, k] = fma(w, d3, p3)
        else:
            for s in range(s0, m):
                for k in range(n_in):
                    D_prev[s, k] = zero
                for j0 in range(0, j_full, 4):
                    d0 = D[s, j0]
                    d1 = D[s, j0 + 1]
                    d2 = D[s, j0 + 2]
                    d3 = D[s, j0 + 3]
                    for k in range(n_in):
                        D_prev[s, k] = fma(W[j0 + 3, k], d3, fma(W[j0 + 2, k], d2, fma(
                            W[j0 + 1, k], d1, fma(W[j0, k], d0, D_prev[s, k]))))
                for j in range(j_full, n_out):
                    d = D[s, j]
                    for k in range(n_in):
                        D_prev[s, k] = fma(W[j, k], d, D_prev[s, k])
        derivative_scale(act_prev, d_flat, z_flat, a_flat, s0 * n_in, min(s0 + 4, m) * n_in)


@njit(inline="always", **SERIAL)
def _deltas4(D, s0, m, j, zero):
    """δ_sj for the four examples s0 <= s < s0 + 4, zero for those past m."""
    d0 = D[s0, j]
    d1 = D[min(s0 + 1, m - 1), j] if s0 + 1 < m else zero
    d2 = D[min(s0 + 2, m - 1), j] if s0 + 2 < m else zero
    d3 = D[min(s0 + 3, m - 1), j] if s0 + 3 < m else zero
    return d0, d1, d2, d3


@njit(**WIDE)
def _gradient_rows4(D, A_prev, rows, m, coef, gW, j0, n_in, zero, add):
    """Σ_s (coef δ_sj) a_{rows[s],k} into the four rows j0..j0+3 of gW (added to them
    when ``add``); returns the four sums Σ_s δ_sj (for BP3, the biases' gradient).

    The examples are taken four at a time: per vector of k, four input rows and the four
    gradient rows are loaded and sixteen multiply-adds issued; two left over take a
    4 × 2 block (:func:`_add4x2`), one or three the 4 × 4 block with zero coefficients.
    Each element sums its blocks of examples in ascending order, as
    :func:`_gradient_row` does; the first block writes the rows (no pass to zero them
    first). The sums of δ come from
    the values the block loads anyway, in four independent chains (a separate loop down
    each column of δ, one dependent addition after another, took a third of a 16 × 16
    layer's step).
    """
    j1 = j0 + 1
    j2 = j0 + 2
    j3 = j0 + 3
    sb0 = sb1 = sb2 = sb3 = zero
    m4 = m - 2 if m % 4 == 2 else m
    for s0 in range(0, m4, 4):
        s1, s2, s3 = _four(s0, m)
        r00, r01, r02, r03 = _deltas4(D, s0, m, j0, zero)
        r10, r11, r12, r13 = _deltas4(D, s0, m, j1, zero)
        r20, r21, r22, r23 = _deltas4(D, s0, m, j2, zero)
        r30, r31, r32, r33 = _deltas4(D, s0, m, j3, zero)
        sb0 += (r00 + r01) + (r02 + r03)
        sb1 += (r10 + r11) + (r12 + r13)
        sb2 += (r20 + r21) + (r22 + r23)
        sb3 += (r30 + r31) + (r32 + r33)
        _add4x4(gW, j0, j1, j2, j3, A_prev, rows[s0], rows[s1], rows[s2], rows[s3], n_in,
                add or s0 > 0,
                r00 * coef, r01 * coef, r02 * coef, r03 * coef,
                r10 * coef, r11 * coef, r12 * coef, r13 * coef,
                r20 * coef, r21 * coef, r22 * coef, r23 * coef,
                r30 * coef, r31 * coef, r32 * coef, r33 * coef)
    if m4 < m:  # two examples left: a 4 × 2 block, not a 4 × 4 with two zero columns
        s0 = m4
        s1 = m4 + 1
        r00 = D[s0, j0]
        r01 = D[s1, j0]
        r10 = D[s0, j1]
        r11 = D[s1, j1]
        r20 = D[s0, j2]
        r21 = D[s1, j2]
        r30 = D[s0, j3]
        r31 = D[s1, j3]
        sb0 += r00 + r01
        sb1 += r10 + r11
        sb2 += r20 + r21
        sb3 += r30 + r31
        _add4x2(gW, j0, j1, j2, j3, A_prev, rows[s0], rows[s1], n_in, add or s0 > 0,
                r00 * coef, r01 * coef, r10 * coef, r11 * coef,
                r20 * coef, r21 * coef, r30 * coef, r31 * coef)
    return sb0, sb1, sb2, sb3


@njit(**WIDE)
def _gradient_rows2(D, A_prev, rows, m, coef, gW, j0, n_in, zero, add):
    """:func:`_gradient_rows4` for the two rows j0, j0 + 1 (the last of a layer): per
    vector of k, four input rows and the two gradient rows loaded, eight multiply-adds."""
    j1 = j0 + 1
    sb0 = sb1 = zero
    for s0 in range(0, m, 4):
        s1, s2, s3 = _four(s0, m)
        r00, r01, r02, r03 = _deltas4(D, s0, m, j0, zero)
        r10, r11, r12, r13 = _deltas4(D, s0, m, j1, zero)
        sb0 += (r00 + r01) + (r02 + r03)
        sb1 += (r10 + r11) + (r12 + r13)
        d00 = r00 * coef
        d01 = r01 * coef
        d02 = r02 * coef
        d03 = r03 * coef
        d10 = r10 * coef
        d11 = r11 * coef
        d12 = r12 * coef
        d13 = r13 * coef
        q0 = rows[s0]
        q1 = rows[s1]
        q2 = rows[s2]
        q3 = rows[s3]
        keep = add or s0 > 0
        for k in range(n_in):
            b0 = A_prev[q0, k]
            b1 = A_prev[q1, k]
            b2 = A_prev[q2, k]
            b3 = A_prev[q3, k]
            c0 = gW[j0, k] if keep else zero
            c1 = gW[j1, k] if keep else zero
            gW[j1, k] = fma(d13, b3, fma(d12, b2, fma(d11, b1, fma(d10, b0, c1))))
            gW[j0, k] = fma(d03, b3, fma(d02, b2, fma(d01, b1, fma(d00, b0, c0))))
    return sb0, sb1


@njit(**WIDE)
def _gradient_row(D, A_prev, rows, m, coef, gW, j, n_in, zero, add):
    """Σ_s (coef δ_sj) a_{rows[s],k} into row j of gW (added to it when ``add``), the
    examples four at a time (else the first four written: no pass to zero the row);
    returns Σ_s δ_sj."""
    sb = zero
    for s0 in range(0, m, 4):
        s1, s2, s3 = _four(s0, m)
        q0, q1, q2, q3 = _deltas4(D, s0, m, j, zero)
        sb += (q0 + q1) + (q2 + q3)
        d0 = q0 * coef
        d1 = q1 * coef
        d2 = q2 * coef
        d3 = q3 * coef
        r0 = rows[s0]
        r1 = rows[s1]
        r2 = rows[s2]
        r3 = rows[s3]
        keep = add or s0 > 0
        for k in range(n_in):
            c = gW[j, k] if keep else zero
            gW[j, k] = fma(d3, A_prev[r3, k], fma(d2, A_prev[r2, k], fma(
                d1, A_prev[r1, k], fma(d0, A_prev[r0, k], c))))
    return sb


#: What :func:`_gradient_block` does with a block's gradient rows: only compute them, or
#: also take the SGD step; DIRECT takes plain SGD's step without gradient rows.
GRADIENT, STEP, DIRECT = 0, 1, 2


@njit(**WIDE)
def _gradient_block(D, A_prev, rows, m, scale, W, b, gW, gb, VW, Vb, lr, momentum, decay,
                    mode, j0, n_out, n_in, zero):
    """BP3/BP4 for the rows j = j0 .. j0 + 3 (fewer at the end) of the layer and, unless
    ``mode`` is GRADIENT, its SGD step: the unit of work of :func:`_gradient_step`'s
    threads (compiled once, see :func:`_forward_block`).

    In DIRECT mode (plain SGD: no momentum, no weight decay) the weights take the step
    straight from the sums, w_jk += Σ_s (-η δ_sj / m) a_sk, without writing the gradient
    rows and reading them back; the biases step from their gradients as in STEP mode.
    """
    j_end = min(j0 + 4, n_out)
    direct = mode == DIRECT
    _weight_rows(D, A_prev, rows, m, -(lr * scale) if direct else scale,
                 W if direct else gW, j0, j_end, n_in, zero, direct, gb, scale)
    if mode == STEP:  # while the block's gradient rows are in cache
        sgd_range(flat(W), flat(VW), flat(gW), j0 * n_in,
                  j_end * n_in, lr, momentum, decay)
    if mode != GRADIENT:  # biases are not decayed
        sgd_range(b, Vb, gb, j0, j_end, lr, momentum, zero)


@njit(inline="always", **SERIAL)
def _weight_rows(D, A_prev, rows, m, coef, C, j0, j_end, n_in, zero, add, gb, scale):
    """Σ_s (coef δ_sj) a_{rows[s],k} into (or, when ``add``, added to) the rows
    j0 <= j < j_end of C, four at a time or one by one, and gb_j = scale Σ_s δ_sj.

    The three row functions are compiled on their own, not inlined: Numba copies an
    inlined function's IR into every caller, and inlined they took about 1.3 s longer
    to compile per dtype, for no speed (their loops run over whole rows)."""
    if j_end - j0 == 4:
        sb = _gradient_rows4(D, A_prev, rows, m, coef, C, j0, n_in, zero, add)
        gb[j0] = sb[0] * scale
        gb[j0 + 1] = sb[1] * scale
        gb[j0 + 2] = sb[2] * scale
        gb[j0 + 3] = sb[3] * scale
    else:
        for j in range(j0, j_end - 1, 2):
            sb = _gradient_rows2(D, A_prev, rows, m, coef, C, j, n_in, zero, add)
            gb[j] = sb[0] * scale
            gb[j + 1] = sb[1] * scale
        if (j_end - j0) % 2:
            j = j_end - 1
            gb[j] = _gradient_row(D, A_prev, rows, m, coef, C, j, n_in, zero, add) * scale


@njit(inline="always", **SERIAL)
def _mode(apply, momentum, decay, zero):
    """The :func:`_gradient_block` mode of a step (an int64, never a literal)."""
    if not apply:
        return GRADIENT
    return DIRECT if momentum == zero and decay == zero else STEP


def _gradient_step(D, A_prev, rows, m, scale, W, b, gW, gb, VW, Vb, lr, momentum, decay,
                   apply, panel):
    """BP3/BP4 averaged over m examples and, when ``apply``, the SGD step of the layer
    (the first layer's, in parallel: its rows, gathered from the training set, are read
    whole, where the narrow kernel's parallel build reads a register's width of each).
    ``panel`` is the narrow kernels' workspace (:func:`fastbp.kernels.narrow.panel_size`),
    unused here: the three gradient steps take the same arguments.

    ∂C/∂w_jk = Σ_s (scale δ_sj) a_{rows[s],k}, ∂C/∂b_j = scale Σ_s δ_sj (scale = 1/m).
    Threads split the neurons j in blocks of four rows, whose gradient rows stay in
    cache while the step is applied to W right after (g = ∂C/∂w + λw, then
    w := w - ηg, or with momentum v := μv - ηg, w := w + v; biases are not decayed).
    A plain SGD step (μ = λ = 0) adds -η scale δ_sj a_sk straight into W and leaves gW
    unwritten: in-process A/B, epochs 2-9% faster on W2 and W4 and 13% on W5 float64.
    """
    n_out, n_in = W.shape
    zero = W.dtype.type(0)
    mode = _mode(apply, momentum, decay, zero)
    for jb in prange((n_out + 3) // 4):
        _gradient_block(D, A_prev, rows, m, scale, W, b, gW, gb, VW, Vb, lr, momentum, decay,
                        mode, 4 * np.int64(jb), n_out, n_in, zero)


def _step_forward(D, A_prev, rows, m, scale, W, b, gW, gb, VW, Vb, lr, momentum, decay,
                  rows_next, m_next, act, Z, A):
    """The first layer's SGD step for one minibatch (:func:`_gradient_step`) and its
    forward pass for the next (:func:`_forward`, examples ``A_prev[rows_next]``) in one
    parallel region.

    The next minibatch's z_j needs only row j of the updated W, so each thread feeds
    its block of rows forward right after stepping it, while the rows are in cache: one
    parallel region per step fewer, same arithmetic as the two kernels one after the
    other (bitwise the same results).
    """
    n_out, n_in = W.shape
    zero = W.dtype.type(0)
    mode = _mode(True, momentum, decay, zero)
    for jb in prange((n_out + 3) // 4):
        j0 = 4 * np.int64(jb)
        _gradient_block(D, A_prev, rows, m, scale, W, b, gW, gb, VW, Vb, lr, momentum, decay,
                        mode, j0, n_out, n_in, zero)
        # from row np.int64(0), not the literal 0: the same compiled _forward_block as
        # forward_par's (a literal argument makes a signature of its own)
        _forward_block(A_prev, rows_next, W, b, m_next, Z, j0, n_out, n_in, np.int64(0),
                       m_next, zero)
    _activate_rows(act, m_next, Z, A, n_out)


def _named(f, suffix, namespace=None):
    """A copy of ``f`` under its own name, resolving its globals in ``namespace`` if given.

    Numba's disk cache files a compiled function under its module, qualified name and
    first line, not its compile options or globals: a parallel and a serial build of one
    function would share one cache entry and load each other's machine code (the serial
    build then launching parallel regions). Each build gets its own name instead.
    """
    g = types.FunctionType(f.__code__, f.__globals__ if namespace is None else namespace,
                           f.__name__ + suffix, f.__defaults__, f.__closure__)
    g.__qualname__ = f.__qualname__ + suffix
    g.__doc__ = f.__doc__
    return g


forward_par = njit(**PARALLEL)(_named(_forward, "_par"))
#: Whether a build of :func:`_forward` runs in parallel regions: its serial build
#: (``forward_ser``, compiled with this False) does every block of neurons over the
#: whole minibatch and then σ over all its rows in one call each, where the parallel
#: build shares out parts. So a float32 softmax takes its rows 16 at a time through
#: :func:`~fastbp.kernels.layers.softmax_rows`' transposed blocks, where parts of 12 or
#: 13 rows went row by row: 100 -> 10 over 100 examples 1.18x, 30 -> 10 over 200 1.28x;
#: with ReLU or the sigmoid 1.05-1.17x in float32, 0.98-1.04x in float64 (kernel A/B).
THREADED = True
forward_ser = njit(**WIDE)(_named(_forward, "_ser", dict(globals(), THREADED=False)))
backward_par = njit(**PARALLEL)(_named(_backward, "_par"))
backward_ser = njit(**WIDE)(_named(_backward, "_ser"))
gradient_step_par = njit(**PARALLEL)(_named(_gradient_step, "_par"))
step_forward_par = njit(**PARALLEL)(_named(_step_forward, "_par"))


@njit(**WIDE)
def output_delta_cost(A, Z, Y, rows, act, cost, m, D, costs):
    """BP1 and the cost C_x of each of m examples (targets ``Y[rows[s]]``).

    See :func:`fastbp.kernels.layers.output_delta` and ``cost_per_sample`` for the
    formulas; this serial version serves the small output layer inside a training step.
    """
    n_out = A.shape[1]
    for s in range(m):
        y = Y[rows[s]]
        c = ZERO * A[s, 0]
        if act == SOFTMAX:
            if cost == CROSS_ENTROPY:
                # the exponentials pass through D's row, overwritten below
                zmax, total = shifted_exps(Z[s], D[s], n_out)
                lse = zmax + math.log(total)
                ysum = ZERO * A[s, 0]
                for j in range(n_out):
                    ysum += y[j]
                for j in range(n_out):
                    D[s, j] = A[s, j] * ysum - y[j]
                    c += y[j] * (lse - Z[s, j])
            else:
                dot = ZERO * A[s, 0]
                for i in range(n_out):
                    r = A[s, i] - y[i]
                    dot += r * A[s, i]
                    c += r * r
                c *= HALF
                for j in range(n_out):
                    D[s, j] = A[s, j] * ((A[s, j] - y[j]) - dot)
        elif cost == CROSS_ENTROPY:
            for j in range(n_out):
                z = Z[s, j]
                D[s, j] = A[s, j] - y[j]
                c += max(z, ZERO) + math.log1p(exp(-abs(z))) - y[j] * z
        else:
            for j in range(n_out):
                r = A[s, j] - y[j]
                D[s, j] = r * derivative(act, Z[s, j], A[s, j])
                c += r * r
            c *= HALF
        costs[s] = c


"""The forward pass, BP2 and BP3/BP4 as sums of short rows held in registers, serially.

Each of the three sums ends in rows, or blocks of rows, of a few vectors:

- forward (n_l <= 16, n_{l-1} <= 32): the row of z^l of example s,
  b^l + Σ_k a^{l-1}_sk w^l_·k (a sum over the layer's inputs k of the columns of W,
  first copied to the stack as the rows of W^T);
- BP2: a block of 128 bytes of columns (32 float32, 16 float64; the last block one
  register, 64 bytes, where its columns fit) of the row of δ^{l-1} of example s,
  Σ_j δ^l_sj w^l_j·  (a sum over the layer's j);
- BP3: one register of columns (16 float32, 8 float64) of the row j of ∂C/∂W,
  Σ_s δ^l_sj a^{l-1}_s·  (a sum over the minibatch's s).

On a 16- or 30-wide row the register-blocked kernels of :mod:`fastbp.kernels.blocked`
spend more on setting up each short run-time-length loop (or, in the forward pass, on
adding up the lanes of each dot product) than on the arithmetic, and carry their
partial sums through memory from one block to the next. Here four such rows (in BP2
eight, so that eight or sixteen registers of sums are in flight; in BP3 up to sixteen)
are summed in registers over the whole sum: each term loads one row
of W, W^T or the layer's input as one or two vectors of a compile-time width (16 or 32
elements) and adds it, times four (eight, sixteen) broadcast coefficients, to the rows
of sums, the form of OpenBLAS's microkernels. A row of W or of the input read past its
last element runs into the next rows of the same array (those lanes are summed but never
stored); the last rows, where such a read would leave the array, are first copied into a
zero-padded row on the stack with a masked load. The sums are stored with masked stores
of exactly the row's elements (:mod:`fastbp.kernels.lanes`). Which layers run these
kernels is decided by their shapes (``fastbp._config``: ``NARROW_*``).

Each element's sum runs in ascending order of k (forward, from b^l_j), j (BP2) or s
(BP3), whatever the thread count: the kernels are serial but for the parallel builds
of BP2, whose threads split the examples, and of the gradient step, whose threads split
the blocks of columns (each element summed by one thread), and are chosen by the
layer's shape and dtype alone.
"""

import numpy as np
from numba import njit, prange

from .._config import NOALIAS, PARALLEL, PARALLEL_MIN_WORK, SERIAL
from .blocked import (
    DIRECT,
    GRADIENT,
    STEP,
    _activate_rows,
    _four,
    _mode,
    _named,
    _part_rows,
    forward_ser,
)
from .lanes import (
    WIDTH,
    axpy_prefix,
    load_prefix,
    prefetch,
    register_lanes,
    row_copy,
    row_fill,
    rows_axpy_prefix,
    rows_fma,
    rows_fma_broadcast,
    rows_fma_broadcast2,
    scratch,
    store_prefix_derivative,
    transpose16,
    vector_lanes,
)
from .layers import sgd_range
from .views import flat, mat

#: Elements of the rows of sums: up to eight rows (a compile-time size: ``scratch``
#: needs a literal).
SUMS = 8 * WIDTH
#: Widest layer (n_l) the narrow forward pass takes: its rows of W^T are 16 lanes, as
#: :func:`~fastbp.kernels.lanes.transpose16` writes them (a 32-lane W^T took longer to
#: copy than it saved below minibatches of 16-32).
FORWARD_WIDTH = 16
#: Elements of W^T on the stack in the forward pass: n_{l-1} <= WIDTH rows of 16.
PACKED = WIDTH * FORWARD_WIDTH


@njit(inline="always", **SERIAL)
def _rows_inside(n_rows, n_in, k0, w):
    """How many of the first rows of an (n_rows, n_in) array can be read as w elements
    from column k0 without leaving the array (row i: i n_in + k0 + w <= n_rows n_in).

    Counted without a division (a 64-bit division takes tens of cycles, and narrow
    blocks of a few examples ask once per block): a read running past its row by
    ``over`` elements needs ceil(over / n_in) rows after it, at most w of them."""
    over = k0 + w - n_in
    short = 0
    while over > 0:
        over -= n_in
        short += 1
    return max(n_rows - short, 0)


@njit(inline="always", **SERIAL)
def _add_row(acc, src, off, D, j, s0, s1, s2, s3, w, R):
    """The row src[off:off + w] times δ^l_sj added to the first R rows of ``acc``: for
    the examples s0 .. s3 (R = 4) or s0 .. s0 + 7 (R = 8)."""
    if R == 8:
        rows_fma(acc, WIDTH, src, off, (D[s0, j], D[s0 + 1, j], D[s0 + 2, j], D[s0 + 3, j],
                                        D[s0 + 4, j], D[s0 + 5, j], D[s0 + 6, j],
                                        D[s0 + 7, j]), w)
    else:
        rows_fma(acc, WIDTH, src, off, (D[s0, j], D[s1, j], D[s2, j], D[s3, j]), w)


@njit(inline="always", **SERIAL)
def _backward_sums(D, W, tail, inside, k0, n, s0, s1, s2, s3, acc, w, R, zero):
    """The first R rows of ``acc`` (:func:`_add_row`'s examples): the columns k0 .. k0 +
    w - 1 of Σ_j δ^l_sj w^l_j·, one row of W loaded per j (its first n elements, through
    ``tail``, for the rows j >= inside a read of w would leave W)."""
    n_out, n_in = W.shape
    w_flat = flat(W)
    for i in range(R):
        row_fill(acc, i * WIDTH, zero, w)
    for j in range(inside):
        _add_row(acc, w_flat, j * n_in + k0, D, j, s0, s1, s2, s3, w, R)
    for j in range(inside, n_out):
        load_prefix(tail, 0, w_flat, j * n_in + k0, n, w)
        _add_row(acc, tail, 0, D, j, s0, s1, s2, s3, w, R)


@njit(inline="always", **SERIAL)
def _store_rows(d, off, stride, s0, s1, s2, s3, acc, n, w, R, act, z, a):
    """The first R rows of ``acc`` (:func:`_add_row`'s examples s) stored, n elements
    each, at d[s stride + off], times σ'(z, a) at the same places unless ``act`` (an
    activation code) is None. Written out, not a loop: a row of the sums picked by a
    run-time index keeps them out of registers (as a loop: gradient step 0.61-0.76x)."""
    store_prefix_derivative(d, s0 * stride + off, acc, 0, n, w, act, z, a)
    if R == 8:
        store_prefix_derivative(d, (s0 + 1) * stride + off, acc, WIDTH, n, w, act, z, a)
        store_prefix_derivative(d, (s0 + 2) * stride + off, acc, 2 * WIDTH, n, w, act, z, a)
        store_prefix_derivative(d, (s0 + 3) * stride + off, acc, 3 * WIDTH, n, w, act, z, a)
        store_prefix_derivative(d, (s0 + 4) * stride + off, acc, 4 * WIDTH, n, w, act, z, a)
        store_prefix_derivative(d, (s0 + 5) * stride + off, acc, 5 * WIDTH, n, w, act, z, a)
        store_prefix_derivative(d, (s0 + 6) * stride + off, acc, 6 * WIDTH, n, w, act, z, a)
        store_prefix_derivative(d, (s0 + 7) * stride + off, acc, 7 * WIDTH, n, w, act, z, a)
    else:
        store_prefix_derivative(d, s1 * stride + off, acc, WIDTH, n, w, act, z, a)
        store_prefix_derivative(d, s2 * stride + off, acc, 2 * WIDTH, n, w, act, z, a)
        store_prefix_derivative(d, s3 * stride + off, acc, 3 * WIDTH, n, w, act, z, a)


@njit(inline="always", **SERIAL)
def _backward_columns(D, W, tail, m, s_lo, s_hi, k0, D_prev, Z_prev, A_prev, act_prev,
                      acc, w, zero):
    """Columns k0 .. k0 + w - 1 (those < n_{l-1}) of the rows s_lo <= s < s_hi of
    δ^{l-1} (s_lo a multiple of 4, m the minibatch), summed over all j in rows of
    ``acc`` and stored times σ': eight examples at a time, so eight or sixteen vector
    registers of sums, then four (the last block's missing examples repeating its last
    one). Where the block is one register (16 float32 or 8 float64 columns), float32 as
    four had run 0.76-0.95x (Intel Xeon). Two-register blocks as four examples, eight
    registers of sums, ran 0.79-0.93x (AMD EPYC, whose two FMA pipes need eight sums in
    flight to stay busy, and more to cover the loads; 16 to 100 inputs, 10 to 32
    neurons, 10-100 examples, float64 and float32; on the Intel Xeon, one FMA pipe for
    512-bit vectors, within noise)."""
    n_out, n_in = W.shape
    n = min(w, n_in - k0)
    inside = _rows_inside(n_out, n_in, k0, w)
    d_flat, z_flat, a_flat = flat(D_prev), flat(Z_prev), flat(A_prev)
    s_4 = s_lo + (s_hi - s_lo) // 8 * 8
    for s0 in range(s_lo, s_4, 8):
        _backward_sums(D, W, tail, inside, k0, n, s0, s0, s0, s0, acc, w, 8, zero)
        _store_rows(d_flat, k0, n_in, s0, s0, s0, s0, acc, n, w, 8, act_prev, z_flat,
                    a_flat)
    for s0 in range(s_4, s_hi, 4):
        # the last block's missing examples repeat its last one (same sums, same stores)
        s1, s2, s3 = _four(s0, m)
        _backward_sums(D, W, tail, inside, k0, n, s0, s1, s2, s3, acc, w, 4, zero)
        _store_rows(d_flat, k0, n_in, s0, s1, s2, s3, acc, n, w, 4, act_prev, z_flat,
                    a_flat)


@njit(**NOALIAS)
def _backward_rows(D, W, Z_prev, A_prev, act_prev, m, D_prev, s_lo, s_hi, zero):
    """The rows s_lo <= s < s_hi of δ^{l-1} (s_lo a multiple of 4; m the minibatch),
    block of columns by block of columns, each stored times σ':
    :func:`backward_narrow`'s work, or a thread's share of :func:`backward_columns`.
    Compiled once, not inlined, as :func:`_gradient_columns`."""
    n_in = W.shape[1]
    acc = scratch(SUMS, zero)
    tail = scratch(WIDTH, zero)
    # blocks of two registers (128 bytes: 32 float32 or 16 float64 columns, so that eight
    # rows of sums take 16 registers; the 30-wide float64 gradient step's former four-row
    # blocks ran 1.1x the blocked kernel in 32 columns, 1.4-1.6x in 16), the last block
    # one register where its columns fit in one
    one = register_lanes(zero, 1)
    two = register_lanes(zero, 2)
    for k0 in range(0, n_in, two):
        if n_in - k0 <= one:
            _backward_columns(D, W, tail, m, s_lo, s_hi, k0, D_prev, Z_prev, A_prev,
                              act_prev, acc, one, zero)
        else:
            _backward_columns(D, W, tail, m, s_lo, s_hi, k0, D_prev, Z_prev, A_prev,
                              act_prev, acc, two, zero)


@njit(**NOALIAS)
def backward_narrow(D, W, Z_prev, A_prev, act_prev, m, D_prev):
    """BP2, δ^{l-1}_sk = (Σ_j w^l_jk δ^l_sj) σ'(z^{l-1}_sk).

    128 bytes of columns k at a time (32 float32, 16 float64; a last one register's or
    fewer, 16 float32 or 8 float64, as a block of one register), eight examples at a
    time (the last four at a time): their rows of δ^{l-1} are summed in
    registers over all j (one row of W loaded per j, a multiply-add per row with
    δ^l_sj broadcast) and stored times σ'
    (:func:`~fastbp.kernels.lanes.store_prefix_derivative`; a pass of its own over
    δ^{l-1} had taken 20-25% of the kernel). Same arguments as
    :func:`fastbp.kernels.blocked.backward_ser`.
    """
    # the first row as an int64, not the literal 0: one compiled _backward_rows, as for
    # backward_columns (a literal argument makes a signature of its own)
    _backward_rows(D, W, Z_prev, A_prev, act_prev, m, D_prev, np.int64(0), m,
                   W.dtype.type(0))


#: Parts of the minibatch :func:`backward_columns` shares out (at most; whole blocks
#: of 4 examples).
BACKWARD_PARTS = 8


@njit(**PARALLEL)
def backward_columns(D, W, Z_prev, A_prev, act_prev, m, D_prev):
    """:func:`backward_narrow` in parallel: the threads share out
    :data:`BACKWARD_PARTS` parts of the minibatch (each row of δ^{l-1} summed and
    scaled by one thread, the same bits as in one part)."""
    parts = min(BACKWARD_PARTS, (m + 3) // 4)
    zero = W.dtype.type(0)
    for p in prange(parts):
        s_lo, s_hi = _part_rows(np.int64(p), parts, m)
        _backward_rows(D, W, Z_prev, A_prev, act_prev, m, D_prev, s_lo, s_hi, zero)


#: Elements of :func:`backward_packed`'s copy of a block of W's columns (on the stack,
#: 64 KB of float64): 512 rows of 16 float64 or 256 of 32 float32 at a time. Half and
#: twice as many ran W5's 512 -> 512 BP2 within 15% of this (float64 598 and 609 µs
#: against 626, float32 266 and 278 against 234; 2 threads, one run).
W_PANEL = 8192


@njit(inline="always", **SERIAL)
def _packed_shares(n, zero):
    """The blocks of two registers' lanes over n columns (BP2) or neurons (the forward
    pass) of the packed kernels, and the parts the threads share them out in (at most
    :data:`BACKWARD_PARTS`)."""
    two = register_lanes(zero, 2)
    n_blocks = (n + two - 1) // two
    return n_blocks, min(BACKWARD_PARTS, n_blocks)


@njit(inline="always", **SERIAL)
def _share(p, parts, n):
    """The items lo <= i < hi of part p of ``parts`` of n."""
    return p * n // parts, (p + 1) * n // parts


@njit(inline="always", **SERIAL)
def _pack_columns(W, j_lo, j_hi, k0, n, w, panel):
    """Rows j_lo <= j < j_hi of W's columns k0 .. k0 + w - 1 into ``panel``, row j at
    (j - j_lo) w: their first n elements are W's (the lanes past them whatever follows
    in W, or zeros where a read would leave W; their sums are never stored)."""
    n_in = W.shape[1]
    w_flat = flat(W)
    inside = min(max(_rows_inside(W.shape[0], n_in, k0, w), j_lo), j_hi)
    for j in range(j_lo, inside):
        row_copy(panel, (j - j_lo) * w, w_flat, j * n_in + k0, w)
    for j in range(inside, j_hi):
        load_prefix(panel, (j - j_lo) * w, w_flat, j * n_in + k0, n, w)


@njit(inline="always", **SERIAL)
def _resume_sums(acc, d, off, stride, s0, s1, s2, s3, n, w, R):
    """The first R rows of ``acc`` loaded from the sums so far of the examples s0 .. s3
    (or s0 .. s0 + 7), stored in their rows of d (at s stride + off, n elements)."""
    if R == 8:
        for i in range(8):
            load_prefix(acc, i * WIDTH, d, (s0 + i) * stride + off, n, w)
    else:
        load_prefix(acc, 0, d, s0 * stride + off, n, w)
        load_prefix(acc, WIDTH, d, s1 * stride + off, n, w)
        load_prefix(acc, 2 * WIDTH, d, s2 * stride + off, n, w)
        load_prefix(acc, 3 * WIDTH, d, s3 * stride + off, n, w)


@njit(inline="always", **SERIAL)
def _packed_sums(D, panel, j_lo, j_hi, s0, s1, s2, s3, acc, w, R, d, off, stride, n,
                 zero):
    """:func:`_backward_sums` over the rows j_lo <= j < j_hi, from their packed block
    of columns of W; from zero when j_lo = 0, else from the sums so far, stored in the
    examples' rows of d (at s stride + off, n elements)."""
    if j_lo == 0:
        for i in range(R):
            row_fill(acc, i * WIDTH, zero, w)
    else:
        _resume_sums(acc, d, off, stride, s0, s1, s2, s3, n, w, R)
    for j in range(j_lo, j_hi):
        _add_row(acc, panel, (j - j_lo) * w, D, j, s0, s1, s2, s3, w, R)


@njit(inline="always", **SERIAL)
def _packed_examples(D, panel, j_lo, j_hi, last, s0, s1, s2, s3, acc, w, R, d, off,
                     stride, n, act, z, a, zero):
    """:func:`_packed_sums` of R examples (s0 .. s3, or s0 .. s0 + 7) over the rows
    j_lo <= j < j_hi, stored back into their rows of d, times σ' after the ``last``
    run."""
    _packed_sums(D, panel, j_lo, j_hi, s0, s1, s2, s3, acc, w, R, d, off, stride, n, zero)
    if last:
        _store_rows(d, off, stride, s0, s1, s2, s3, acc, n, w, R, act, z, a)
    else:
        _store_rows(d, off, stride, s0, s1, s2, s3, acc, n, w, R, None, z, a)


@njit(inline="always", **SERIAL)
def _packed_block(D, W, panel, m, k0, D_prev, Z_prev, A_prev, act_prev, acc, w, zero):
    """Columns k0 .. k0 + w - 1 (those < n_{l-1}) of δ^{l-1}'s first m rows, as
    :func:`_backward_columns` sums them, from copies of that block of W's columns: each
    run of ``W_PANEL // w`` rows j is copied to ``panel``, then every example's sums
    carried over those j, eight examples at a time (the last block four, its missing
    ones repeating its last), from run to run in the rows of δ^{l-1}, and stored times
    σ' after the last run."""
    n_out, n_in = W.shape
    n = min(w, n_in - k0)
    d_flat, z_flat, a_flat = flat(D_prev), flat(Z_prev), flat(A_prev)
    s_8 = m // 8 * 8
    run = W_PANEL // w
    for j_lo in range(0, n_out, run):
        j_hi = min(j_lo + run, n_out)
        _pack_columns(W, j_lo, j_hi, k0, n, w, panel)
        last = j_hi == n_out
        for s0 in range(0, s_8, 8):
            _packed_examples(D, panel, j_lo, j_hi, last, s0, s0, s0, s0, acc, w, 8, d_flat,
                             k0, n_in, n, act_prev, z_flat, a_flat, zero)
        for s0 in range(s_8, m, 4):
            s1, s2, s3 = _four(s0, m)
            _packed_examples(D, panel, j_lo, j_hi, last, s0, s1, s2, s3, acc, w, 4, d_flat,
                             k0, n_in, n, act_prev, z_flat, a_flat, zero)


@njit(**NOALIAS)
def _backward_packed(D, W, Z_prev, A_prev, act_prev, m, D_prev, kb0, kb1, zero):
    """The blocks of columns kb0 <= kb < kb1 (128 bytes each, the last one too: a body
    for a last block of one register's lanes, as :func:`_backward_rows` has, added
    1.4-2.3 s to the first fit's compilation) of δ^{l-1}'s first m rows, each by
    :func:`_packed_block`: a share of :func:`backward_packed`. Compiled once, not
    inlined, as :func:`_backward_rows`."""
    acc = scratch(SUMS, zero)
    panel = scratch(W_PANEL, zero)
    two = register_lanes(zero, 2)
    for kb in range(kb0, kb1):
        _packed_block(D, W, panel, m, kb * two, D_prev, Z_prev, A_prev, act_prev, acc, two,
                      zero)


@njit(**PARALLEL)
def backward_packed(D, W, Z_prev, A_prev, act_prev, m, D_prev):
    """BP2 as :func:`backward_narrow` (the same sums in the same order, so the same
    bits), in parallel over blocks of columns k (128 bytes each; the threads share out
    up to :data:`BACKWARD_PARTS` runs of them), each block of W's columns first copied
    to the stack, :data:`W_PANEL` elements at a time, and then read by every example.

    In place, a block's rows of W lie n_{l-1} elements apart (4 KB for 512 float64
    inputs: each in another page and all in the same few sets of the first- and
    second-level caches), and every example's sums read them all again: the 512 -> 512
    BP2 over 128 examples, 2 threads (Intel Xeon), in a network's own buffers, ran at 43
    GFLOP/s (float64, examples shared out, :func:`backward_columns`) and 61 (the blocked
    kernel), 101 with the copies; float32 148 and 137, 243 with them. From the copies
    each run's sums go eight examples at a time (16 registers of sums; four at a time
    ran 0.81x in float64, 0.93x in float32). A layer of a few neurons repays no copy: 10
    neurons, 0.4-0.6x (``PACK_BACKWARD_MIN_OUTPUTS``). Same arguments as
    :func:`fastbp.kernels.blocked.backward_par`.
    """
    zero = W.dtype.type(0)
    n_blocks, parts = _packed_shares(W.shape[1], zero)
    for p in prange(parts):
        lo, hi = _share(np.int64(p), parts, n_blocks)
        _backward_packed(D, W, Z_prev, A_prev, act_prev, m, D_prev, lo, hi, zero)


@njit(inline="always", **SERIAL)
def _pack_transposed(W, j0, k_lo, k_hi, w, panel):
    """W^T's rows k_lo <= k < k_hi over its columns j0 .. j0 + w - 1 (W's rows; zeros for
    j >= n_l) into ``panel``, row k at (k - k_lo) w, 16 × 16 blocks at a time
    (:func:`~fastbp.kernels.lanes.transpose16`)."""
    n_out, n_in = W.shape
    w_flat = flat(W)
    for h in range(0, w, 16):
        j = j0 + h
        n_rows = min(max(n_out - j, 0), 16)
        for k in range(k_lo, k_hi, 16):
            transpose16(panel, (k - k_lo) * w + h, w, w_flat, j * n_in + k, n_in, n_rows,
                        min(16, k_hi - k))


@njit(inline="always", **SERIAL)
def _add_input(acc, panel, off, A, k, q0, q1, q2, q3, q4, q5, q6, q7, w, R):
    """The row panel[off:off + w] times a_qk added to the first R rows of ``acc``, for
    the input rows q0 .. q3 (R = 4) or q0 .. q7 (R = 8) of A."""
    if R == 8:
        rows_fma(acc, WIDTH, panel, off, (A[q0, k], A[q1, k], A[q2, k], A[q3, k],
                                          A[q4, k], A[q5, k], A[q6, k], A[q7, k]), w)
    else:
        rows_fma(acc, WIDTH, panel, off, (A[q0, k], A[q1, k], A[q2, k], A[q3, k]), w)


@njit(inline="always", **SERIAL)
def _forward_run(A_prev, panel, k_lo, k_hi, q0, q1, q2, q3, q4, q5, q6, q7, s0, s1, s2,
                 s3, acc, brow, z, off, stride, n, w, R):
    """The first R rows of ``acc``, examples s0 .. s3 (or s0 .. s0 + 7) reading input
    rows q0 .. q3 (q0 .. q7): b (``brow``) when k_lo = 0, else the sums so far, stored
    in their rows of z (at s stride + off, n elements); then plus a_qk times W^T's row
    k for k_lo <= k < k_hi, from its copy in ``panel``."""
    if k_lo == 0:
        for i in range(R):
            row_copy(acc, i * WIDTH, brow, 0, w)
    else:
        _resume_sums(acc, z, off, stride, s0, s1, s2, s3, n, w, R)
    for k in range(k_lo, k_hi):
        _add_input(acc, panel, (k - k_lo) * w, A_prev, k, q0, q1, q2, q3, q4, q5, q6, q7,
                   w, R)


@njit(inline="always", **SERIAL)
def _forward_examples(A_prev, rows, m, panel, k_lo, k_hi, acc, brow, z, off, stride, n,
                      w):
    """:func:`_forward_run` over the rows k_lo <= k < k_hi of W^T's copy in ``panel`` for
    the first m examples, each block's sums stored in their rows of z (at s stride +
    off, n elements): eight examples at a time (8 or 16 registers of sums), then four,
    the last block's missing examples repeating its last one."""
    s_8 = m // 8 * 8
    for s0 in range(0, s_8, 8):
        _forward_run(A_prev, panel, k_lo, k_hi, rows[s0], rows[s0 + 1], rows[s0 + 2],
                     rows[s0 + 3], rows[s0 + 4], rows[s0 + 5], rows[s0 + 6], rows[s0 + 7],
                     s0, s0, s0, s0, acc, brow, z, off, stride, n, w, 8)
        _store_rows(z, off, stride, s0, s0, s0, s0, acc, n, w, 8, None, z, z)
    for s0 in range(s_8, m, 4):
        s1, s2, s3 = _four(s0, m)
        q0 = rows[s0]
        _forward_run(A_prev, panel, k_lo, k_hi, q0, rows[s1], rows[s2], rows[s3], q0, q0,
                     q0, q0, s0, s1, s2, s3, acc, brow, z, off, stride, n, w, 4)
        _store_rows(z, off, stride, s0, s1, s2, s3, acc, n, w, 4, None, z, z)


@njit(inline="always", **SERIAL)
def _forward_packed_block(A_prev, rows, W, b, m, Z, j0, panel, acc, brow, w):
    """z^l's columns j0 .. j0 + w - 1 (those < n_l) of the first m examples: each run of
    ``W_PANEL // w`` rows k of W^T copied to ``panel``, then every example's sums
    carried over those k, eight examples at a time (the last block four, its missing
    ones repeating its last), from run to run in the rows of z."""
    n_out, n_in = W.shape
    n = min(w, n_out - j0)
    z_flat = flat(Z)
    load_prefix(brow, 0, b, j0, n, w)
    run = W_PANEL // w
    for k_lo in range(0, n_in, run):
        k_hi = min(k_lo + run, n_in)
        _pack_transposed(W, j0, k_lo, k_hi, w, panel)
        _forward_examples(A_prev, rows, m, panel, k_lo, k_hi, acc, brow, z_flat, j0, n_out,
                          n, w)


@njit(**NOALIAS)
def _forward_packed(A_prev, rows, W, b, m, Z, jb0, jb1, zero):
    """The blocks of columns jb0 <= jb < jb1 of z^l (two registers' lanes each), by
    :func:`_forward_packed_block`: a share of :func:`forward_packed`. Compiled once, not
    inlined, as :func:`_backward_rows`."""
    acc = scratch(SUMS, zero)
    panel = scratch(W_PANEL, zero)
    brow = scratch(WIDTH, zero)
    two = register_lanes(zero, 2)
    for jb in range(jb0, jb1):
        _forward_packed_block(A_prev, rows, W, b, m, Z, jb * two, panel, acc, brow, two)


@njit(**PARALLEL)
def forward_packed(A_prev, rows, W, b, act, m, Z, A):
    """z^l_sj = b^l_j + Σ_k w^l_jk a^{l-1}_{rows[s],k} and a^l = σ(z^l), in parallel
    over blocks of neurons j (two registers' lanes: 32 float32, 16 float64; the threads
    share out up to :data:`BACKWARD_PARTS` runs of them), each block of W's rows first
    copied to the stack as W^T (:data:`W_PANEL` elements at a time) and then read by
    every example: the sums of :func:`forward_narrow` (from b^l_j, in ascending order of
    k, one fma each), for any width. σ (or softmax) follows row by row. Same arguments
    as :func:`fastbp.kernels.blocked.forward_par`.
    """
    zero = W.dtype.type(0)
    n_blocks, parts = _packed_shares(W.shape[0], zero)
    for p in prange(parts):
        lo, hi = _share(np.int64(p), parts, n_blocks)
        _forward_packed(A_prev, rows, W, b, m, Z, lo, hi, zero)
    _activate_rows(act, m, Z, A, W.shape[0])


@njit(inline="always", **SERIAL)
def _forward_rows(A_prev, rows, W, b, m, Z, WT, brow, acc, w):
    """Z's first m rows: b + Σ_k a_{rows[s],k} W^T[k], eight examples at a time, then
    four."""
    n_out, n_in = W.shape
    # W^T, by input k: WT[k, :w] = w_·k, then zeros, 16 columns of W at a time (w is
    # transpose16's row of 16)
    wt_flat = flat(WT)
    for k0 in range(0, n_in, 16):
        transpose16(wt_flat, k0 * w, w, flat(W), k0, n_in, n_out, min(16, n_in - k0))
    load_prefix(brow, 0, b, 0, n_out, w)
    # the sums start from b (adding it after them took a scalar pass over the rows)
    _forward_examples(A_prev, rows, m, wt_flat, 0, n_in, acc, brow, flat(Z), 0, n_out,
                      n_out, w)


@njit(**NOALIAS)
def forward_narrow(A_prev, rows, W, b, act, m, Z, A):
    """z^l_sj = b^l_j + Σ_k w^l_jk a^{l-1}_{rows[s],k} and a^l = σ(z^l), for
    n_l <= :data:`FORWARD_WIDTH` and n_{l-1} <= :data:`WIDTH`.

    W^T is first copied to the stack (row k: the weights of input k, zero-padded to 16
    lanes), 16 columns of W at a time transposed in registers
    (:func:`~fastbp.kernels.lanes.transpose16`; copied element by element, the pass took
    1.0-1.5x as long in float32, 1.25x at 10 × 10 × 30, and 0.99-1.16x in float64). Eight
    examples at a time (then four): their rows of z are summed in registers over all k
    (one row of W^T loaded per k, eight multiply-adds with a_sk broadcast), then stored;
    σ (or softmax) follows row by row. Four at a time, with four (float32) or eight
    (float64) registers of sums, had run 0.79-0.95x over 32-100 examples, 4 to 32
    inputs, 4 to 16 neurons, float32 and float64, σ or the identity (AMD EPYC, two FMA
    pipes). Same arguments as :func:`fastbp.kernels.blocked.forward_ser`, which wider
    layers are handed to (their W^T would not fit in the stack's copy).
    """
    n_out, n_in = W.shape
    if n_out > FORWARD_WIDTH or n_in > WIDTH:
        forward_ser(A_prev, rows, W, b, act, m, Z, A)
        return
    zero = W.dtype.type(0)
    acc = scratch(SUMS, zero)
    brow = scratch(WIDTH, zero)
    WT = mat(scratch(PACKED, zero), 0, n_in, FORWARD_WIDTH)
    _forward_rows(A_prev, rows, W, b, m, Z, WT, brow, acc, FORWARD_WIDTH)
    _activate_rows(act, m, Z, A, n_out)


#: Rows j of ∂C/∂W the gradient step sums at once (at most; 10, 8 or 4 for the last).
GRADIENT_ROWS = 16
#: Elements of the gradient step's sums: its rows of one register (at most 16 elements)
#: and 16 lanes of sums of δ.
GRADIENT_SUMS = (GRADIENT_ROWS + 1) * 16
#: Neurons up to which the gradient step takes its blocks of columns two at a time
#: (two registers of columns × 8 or 10 rows of sums, :func:`_gradient_pairs`).
PAIR_ROWS = 16
#: Fewest neurons for which it does: 8 rows of sums for 1 to 4 neurons ran 0.72-1.29x
#: (kernel A/B), and a body of 4 rows would add to the compile time.
PAIR_MIN_ROWS = 5
#: Elements of the second register's sums of such a pair: 10 rows of one register.
PAIR_SUMS = 10 * 16
#: Elements of the gradient step's copy of a block of columns of its inputs (on the
#: stack): minibatches up to 512 examples in float64, 256 in float32.
INPUT_PANEL = 4096
#: Blocks of columns ahead of the one being copied whose inputs the gradient step asks
#: the cache for meanwhile: the first layer's rows come from all over the training set,
#: and its gradient over 128 examples of 784 float64 inputs ran 1.08x faster with them
#: in cache in time (rows drawn from 80 MB, kernel A/B, 2 threads).
AHEAD = 4


def panel_size(m, n_out):
    """Elements of the workspace in which the gradient step packs δ (m × n_out): its
    panels of 16 columns (the last zero-padded); a smaller workspace (none) has δ read
    in place."""
    return m * ((n_out + GRADIENT_ROWS - 1) // GRADIENT_ROWS * GRADIENT_ROWS)


@njit(inline="always", **SERIAL)
def _readable(a, off, inside, tail, n, w):
    """``(a, off)`` where a row of w elements (0: one register's) can be read from a[off]
    (``inside``), else ``(tail, 0)`` with the row's n elements copied into the
    zero-padded ``tail``."""
    if inside:
        return a, off
    load_prefix(tail, 0, a, off, n, w)
    return tail, 0


@njit(inline="always", **SERIAL)
def _gradient_rows(rows, tail, dtail, m, coef, C, add, gb, scale, acc, j0, k0, a_src,
                   a_base, a_stride, a_inside, a_packed, r_max, coefs, c_base, c_stride,
                   c_inside, R, zero):
    """Columns k0 .. k0 + L - 1 (those < n_in; L one register's lanes) of the rows
    j0 .. j0 + R - 1 (those < n_out) of C: coef Σ_s δ_sj a_{rows[s]} (added to C when
    ``add``); from the first block of columns also gb_j = scale Σ_s δ_sj.

    Example s's inputs are read from ``a_src`` at a_base + r a_stride, r = rows[s]
    (the layer's input in place: a_base = k0, a_stride = n_in) or, where
    ``a_packed``, r = s (a copy of the block's columns, a_stride = L); its
    coefficients δ_sj0, δ_s(j0+1), ... from ``coefs`` at c_base + s c_stride (the row
    of δ itself, stride n_out, or a panel of δ^T packed by :func:`_pack_panel`, stride
    16). Where a whole register of inputs or 16 coefficients cannot be read there (r >=
    ``a_inside``, s >= ``c_inside``) they are first copied to the zero-padded ``tail``,
    ``dtail``; ``r_max`` is the largest r."""
    n_out, n_in = C.shape
    L = vector_lanes(zero)
    n = min(L, n_in - k0)
    used = min(R, n_out - j0)
    for i in range(R):
        row_fill(acc, i * L, zero, 0)
    row_fill(acc, R * L, zero, 16)
    # the sums of δ in the first block of columns only (the branch is the same for
    # every example)
    sums = k0 == 0
    # the examples whose inputs and coefficients are all readable in place go through a
    # loop without the checks (W5's 512 -> 512 float64 step over 128 examples
    # 1.13-1.19x, float32 1.13x, 784 -> 512 1.06x / 1.14x; kernel A/B, 2 threads); the
    # rest, if any, after them
    checked = min(m, c_inside) if r_max < a_inside else 0
    for s in range(checked):
        r = s if a_packed else rows[s]
        rows_fma_broadcast(acc, a_src, a_base + r * a_stride, coefs, c_base + s * c_stride,
                           R, sums)
    for s in range(checked, m):
        r = s if a_packed else rows[s]
        src, src_off = _readable(a_src, a_base + r * a_stride, r < a_inside, tail, n, 0)
        cs, c_off = _readable(coefs, c_base + s * c_stride, s < c_inside, dtail, used, 16)
        rows_fma_broadcast(acc, src, src_off, cs, c_off, R, sums)
    rows_axpy_prefix(flat(C), j0 * n_in + k0, n_in, used, n, acc, coef, add, R)
    if k0 == 0:  # every block of columns has the same sums of δ
        axpy_prefix(gb, j0, acc, R * L, used, scale, False, 16)


@njit(inline="always", **SERIAL)
def _pair_rows(rows, tail, dtail, m, coef, C, add, gb, scale, acc, acc2, j0, k0, a_flat,
               a_inside, r_max, coefs, c_base, c_stride, c_inside, R, zero):
    """:func:`_gradient_rows` over two registers of columns, k0 .. k0 + 2L - 1 (at least
    L + 1 of them < n_in), and R rows (a literal), j0 .. j0 + R - 1 (those < n_out), the
    layer's input read in place: per example two loads of inputs for 2R multiply-adds
    with the same R broadcast coefficients, the sums in ``acc`` and ``acc2``. The loop
    over the examples read unchecked comes twice, with the sums of δ (the first block of
    columns) and without: with the test inside, LLVM kept the broadcast coefficients
    live across it and the sums spilled (0.85-0.91x), and in a loop of their own the
    sums of δ cost an extra dependent addition per example."""
    n_out, n_in = C.shape
    L = vector_lanes(zero)
    n = min(2 * L, n_in - k0)
    used = min(R, n_out - j0)
    for i in range(R):
        row_fill(acc, i * L, zero, 0)
        row_fill(acc2, i * L, zero, 0)
    row_fill(acc, R * L, zero, 16)
    sums = k0 == 0
    checked = min(m, c_inside) if r_max < a_inside else 0
    if sums:
        for s in range(checked):
            off = k0 + rows[s] * n_in
            rows_fma_broadcast2(acc, acc2, a_flat, off, off + L, coefs,
                                c_base + s * c_stride, R, True)
    else:
        for s in range(checked):
            off = k0 + rows[s] * n_in
            rows_fma_broadcast2(acc, acc2, a_flat, off, off + L, coefs,
                                c_base + s * c_stride, R, False)
    for s in range(checked, m):
        r = rows[s]
        src, src_off = _readable(a_flat, k0 + r * n_in, r < a_inside, tail, n,
                                 register_lanes(zero, 2))
        cs, c_off = _readable(coefs, c_base + s * c_stride, s < c_inside, dtail, used, 16)
        rows_fma_broadcast2(acc, acc2, src, src_off, src_off + L, cs, c_off, R, sums)
    c_flat = flat(C)
    rows_axpy_prefix(c_flat, j0 * n_in + k0, n_in, used, L, acc, coef, add, R)
    rows_axpy_prefix(c_flat, j0 * n_in + k0 + L, n_in, used, n - L, acc2, coef, add, R)
    if sums:  # every block of columns has the same sums of δ
        axpy_prefix(gb, j0, acc, R * L, used, scale, False, 16)


@njit(inline="always", **SERIAL)
def _pack_panel(D, m, j0, panel):
    """Columns j0 .. j0 + 15 of δ (m × n_out; those < n_out, the rest zeros) into
    ``panel`` from j0 m on, example by example: δ_sj at j0 m + 16 s + j - j0."""
    n_out = D.shape[1]
    d_flat = flat(D)
    n = min(16, n_out - j0)
    for s in range(m):
        load_prefix(panel, j0 * m + 16 * s, d_flat, s * n_out + j0, n, 16)


@njit(inline="always", **SERIAL)
def _coefficients(D, d_flat, panel, packed, m, j0):
    """Where the gradient step reads example s's coefficients δ_sj0, δ_s(j0+1), ...:
    ``(coefs, c_base, c_stride, c_inside)``, at c_base + s c_stride of ``coefs``, and
    16 of them readable in place for s < c_inside: from the row of δ, or where
    ``packed`` from the panels of δ^T (:func:`_pack_panel`: δ_sj at (j - j % 16) m +
    16 s + j % 16), where 16 read from a j0 inside a panel run past its last example's
    row."""
    if packed:
        within = j0 % GRADIENT_ROWS
        return (panel, (j0 - within) * m + within, GRADIENT_ROWS,
                m if within == 0 else m - 1)
    n_out = D.shape[1]
    return d_flat, j0, n_out, _rows_inside(D.shape[0], n_out, j0, 16)


@njit(**NOALIAS)
def _gradient_columns(D, A_prev, rows, m, coef, C, add, gb, scale, kb0, kb1, panel, packed,
                      zero):
    """The blocks of columns kb0 <= kb < kb1 (columns kb L .. kb L + L - 1) of all rows
    of C (:func:`_gradient_rows`), 16 rows at a time (the last block 16, 10, 8 or 4 rows,
    whichever covers the rest: 10, not 12, for the ten-way output layers, whose steps ran
    1.06-1.15x faster than with 12 rows; 11 or 12 rows left now take 16, 0.82-0.85x): a
    share of the gradient step, its coefficients δ read from ``panel`` where ``packed``
    (:func:`_pack_panel`), else from D. Compiled once, not inlined, as
    :func:`fastbp.kernels.blocked._forward_block`."""
    n_out, n_in = C.shape
    L = vector_lanes(zero)
    acc = scratch(GRADIENT_SUMS, zero)
    tail = scratch(16, zero)
    dtail = scratch(16, zero)
    block = scratch(INPUT_PANEL, zero)
    d_flat = flat(D)
    a_flat = flat(A_prev)
    # a block's inputs are copied together where several blocks of rows read them: in
    # place, each example's lie in a row of its own, n_in elements from the last (4 KB
    # for 512 float64 inputs: the 512 -> 512 float64 step over 128 examples ran 1.08x
    # faster with the copy, 795 against 861 µs on 2 threads)
    a_packed = n_out > GRADIENT_ROWS and m * L <= INPUT_PANEL
    r_max = m - 1  # the last row read (of the copy, else of A_prev)
    if not a_packed:
        r_max = 0
        for s in range(m):
            r_max = max(r_max, rows[s])
    for kb in range(kb0, kb1):
        k0 = kb * L
        if a_packed:
            n = min(L, n_in - k0)
            for s in range(m):
                load_prefix(block, s * L, a_flat, rows[s] * n_in + k0, n, 0)
                prefetch(a_flat, rows[s] * n_in + k0 + AHEAD * L)
            a_src, a_base, a_stride, a_inside = block, 0, L, m
        else:
            a_src, a_base, a_stride = a_flat, k0, n_in
            a_inside = _rows_inside(A_prev.shape[0], n_in, k0, L)
        for j0 in range(0, n_out, GRADIENT_ROWS):
            coefs, c_base, c_stride, c_inside = _coefficients(D, d_flat, panel, packed, m,
                                                              j0)
            rest = n_out - j0
            # R a literal: each is its own body, its sums in registers
            if rest > 10:
                _gradient_rows(rows, tail, dtail, m, coef, C, add, gb, scale, acc, j0, k0,
                               a_src, a_base, a_stride, a_inside, a_packed, r_max, coefs,
                               c_base, c_stride, c_inside, 16, zero)
            elif rest > 8:
                _gradient_rows(rows, tail, dtail, m, coef, C, add, gb, scale, acc, j0, k0,
                               a_src, a_base, a_stride, a_inside, a_packed, r_max, coefs,
                               c_base, c_stride, c_inside, 10, zero)
            elif rest > 4:
                _gradient_rows(rows, tail, dtail, m, coef, C, add, gb, scale, acc, j0, k0,
                               a_src, a_base, a_stride, a_inside, a_packed, r_max, coefs,
                               c_base, c_stride, c_inside, 8, zero)
            else:
                _gradient_rows(rows, tail, dtail, m, coef, C, add, gb, scale, acc, j0, k0,
                               a_src, a_base, a_stride, a_inside, a_packed, r_max, coefs,
                               c_base, c_stride, c_inside, 4, zero)


@njit(**NOALIAS)
def _gradient_pairs(D, A_prev, rows, m, coef, C, add, gb, scale, kb0, kb1, panel, packed,
                    zero):
    """:func:`_gradient_columns` for a layer of :data:`PAIR_MIN_ROWS` to
    :data:`PAIR_ROWS` neurons: its blocks of columns two at a time (:func:`_pair_rows`),
    8 rows at a time or the last 9 or 10 at once (10 rows as one block, 16 as 8 + 8, 12
    as 8 + 8 with four rows past the layer), an odd last block of columns by
    :func:`_gradient_columns`. Kernel A/B against one register of columns at a time,
    serial: 100 -> 10 over 10-100 examples 1.13-1.33x in float64 and 1.07-1.27x in
    float32, 16 -> 16 over 100 1.15x in float64, the same bits. One body of 10 rows
    for every layer cost 0.91-0.97x on 11-14 neurons; bodies of 10, 8 and 4 rows inlined
    into :func:`_gradient_columns` added 9 s to a cold first fit, these two about 2 s."""
    n_out, n_in = C.shape
    L = vector_lanes(zero)
    acc = scratch(GRADIENT_SUMS, zero)
    acc2 = scratch(PAIR_SUMS, zero)
    tail = scratch(WIDTH, zero)
    dtail = scratch(16, zero)
    d_flat = flat(D)
    a_flat = flat(A_prev)
    r_max = 0  # the last row of A_prev read
    for s in range(m):
        r_max = max(r_max, rows[s])
    for kb in range(kb0, kb1 - 1, 2):
        k0 = kb * L
        a_inside = _rows_inside(A_prev.shape[0], n_in, k0, 2 * L)
        for j0 in range(0, n_out, 8):
            coefs, c_base, c_stride, c_inside = _coefficients(D, d_flat, panel, packed, m,
                                                              j0)
            rest = n_out - j0
            if rest == 9 or rest == 10:
                _pair_rows(rows, tail, dtail, m, coef, C, add, gb, scale, acc, acc2, j0,
                           k0, a_flat, a_inside, r_max, coefs, c_base, c_stride, c_inside,
                           10, zero)
                break
            _pair_rows(rows, tail, dtail, m, coef, C, add, gb, scale, acc, acc2, j0, k0,
                       a_flat, a_inside, r_max, coefs, c_base, c_stride, c_inside, 8, zero)
    if (kb1 - kb0) % 2:
        _gradient_columns(D, A_prev, rows, m, coef, C, add, gb, scale, kb1 - 1, kb1, panel,
                          packed, zero)


def _gradient_step(D, A_prev, rows, m, scale, W, b, gW, gb, VW, Vb, lr, momentum, decay,
                   apply, panel):
    """BP3/BP4 and the SGD step, as :func:`fastbp.kernels.blocked.gradient_step_par`.

    One register of columns at a time (16 float32, 8 float64; the threads share out
    these blocks), up to 16 rows j of ∂C/∂W at a time (:data:`GRADIENT_ROWS`), or for
    a layer of 5 to 16 neurons two registers of columns and up to 10 rows at a time
    (:func:`_gradient_pairs`; the threads share out pairs of blocks), are
    summed in registers over all m examples: per example one input row loaded and one
    multiply-add per row j, its coefficient δ_sj broadcast straight from the row of δ
    (the row's δ are consecutive), and in the first block of columns that row of δ
    added to the sums Σ_s δ_sj (in every block: float64 0.85-0.96x). Then
    the sums are scaled and stored: ∂C/∂w_jk = scale Σ_s δ_sj a_sk, or for a plain SGD
    step (no momentum, no decay) w_jk += (-η scale) Σ_s δ_sj a_sk straight into W. A
    step with momentum or decay follows over all of W, then the biases take theirs.

    Where ``panel`` holds :func:`panel_size` (m, n_out) elements, δ is first copied
    into it as panels of δ^T, 16 columns each, example by example (the threads share
    out the panels), and the coefficients are read from there: read in place, each
    example's 16 lie in a row of their own, n_out elements past the last (4 KB for
    512 float64 neurons, each row in another page and all of them in the same few sets
    of the first-level cache), and the loads stall. On 128 examples of 784 inputs into
    512 neurons in float64, one thread: 53-56 GFLOP/s packed against 33-35 in place
    (δ's columns packed 64 at a time, to keep the panels in a stack buffer, ran at
    20-28: each such chunk reads all the inputs again). A workspace too small (none)
    leaves δ where it is: the caller packs only where it pays.

    Each sum runs over s in ascending order from 0, one fma (the biases' one addition)
    per example, whatever the thread count or packing. Four rows at a time, each δ
    loaded and broadcast on its own, took 1.2-1.7x as long (float32; a 16 x 16 step ran
    at 0.57 of OpenBLAS's rate).
    """
    n_out, n_in = W.shape
    zero = W.dtype.type(0)
    mode = _mode(apply, momentum, decay, zero)
    direct = mode == DIRECT
    coef = -(lr * scale) if direct else scale
    C = W if direct else gW
    n_blocks = (n_in + vector_lanes(zero) - 1) // vector_lanes(zero)
    # the threads' shares are whole pairs of blocks where the blocks go in pairs
    unit = 2 if PAIR_MIN_ROWS <= n_out <= PAIR_ROWS and n_blocks > 1 else 1
    n_units = (n_blocks + unit - 1) // unit
    # a share per block of columns for the threads, all in one share (one call) for
    # work too small for a parallel region and always in the serial build (each call
    # took 0.03-0.05 µs, a third of a 10 x 100 float64 step over 10 examples; one call
    # in place of 13 made the serial 100 -> 10 step over 100 examples 1.09-1.10x as
    # fast); each element's sum is the same in any share. (Shares by the thread count
    # would make the kernel uncacheable.)
    shares = n_units if THREADED and m * n_out * n_in >= PARALLEL_MIN_WORK else 1
    n_panels = (n_out + GRADIENT_ROWS - 1) // GRADIENT_ROWS
    packed = panel.shape[0] >= n_panels * GRADIENT_ROWS * m
    if packed:  # the panels shared out as the blocks of columns are
        parts = n_panels if shares > 1 else 1
        for p in prange(parts):
            p = np.int64(p)
            for q in range(p * n_panels // parts, (p + 1) * n_panels // parts):
                _pack_panel(D, m, GRADIENT_ROWS * q, panel)
    for t in prange(shares):
        t = np.int64(t)
        kb0 = unit * (t * n_units // shares)
        kb1 = min(unit * ((t + 1) * n_units // shares), n_blocks)
        if unit == 2:
            _gradient_pairs(D, A_prev, rows, m, coef, C, direct, gb, scale, kb0, kb1, panel,
                            packed, zero)
        else:
            _gradient_columns(D, A_prev, rows, m, coef, C, direct, gb, scale, kb0, kb1,
                              panel, packed, zero)
    if mode == STEP:
        for jb in prange((n_out + GRADIENT_ROWS - 1) // GRADIENT_ROWS):
            j0 = GRADIENT_ROWS * np.int64(jb)
            sgd_range(flat(W), flat(VW), flat(gW), j0 * n_in,
                      min(j0 + GRADIENT_ROWS, n_out) * n_in, lr, momentum, decay)
    if mode != GRADIENT:  # biases are not decayed; all in one pass (a few elements)
        sgd_range(b, Vb, gb, np.int64(0), n_out, lr, momentum, zero)


#: Whether :func:`_gradient_step`'s build runs parallel regions (a global of each
#: build's namespace, so a compile-time constant).
THREADED = True

gradient_step_narrow = njit(**NOALIAS)(
    _named(_gradient_step, "_narrow", dict(globals(), THREADED=False)))
gradient_step_columns = njit(**PARALLEL)(_named(_gradient_step, "_columns"))

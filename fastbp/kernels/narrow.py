"""The forward pass, BP2 and BP3/BP4 as sums of short rows held in registers, serially.

Each of the three sums ends in rows, or blocks of rows, of a few vectors:

- forward (n_l <= 16, n_{l-1} <= 32): the row of z^l of example s,
  b^l + Σ_k a^{l-1}_sk w^l_·k (a sum over the layer's inputs k of the columns of W,
  first copied to the stack as the rows of W^T);
- BP2: a block of 128 bytes of columns (32 float32, 16 float64) of the row of δ^{l-1}
  of example s, Σ_j δ^l_sj w^l_j·  (a sum over the layer's j);
- BP3: such a block of the row j of ∂C/∂W, Σ_s δ^l_sj a^{l-1}_s·  (a sum over the
  minibatch's s).

On a 16- or 30-wide row the register-blocked kernels of :mod:`fastbp.kernels.blocked`
spend more on setting up each short run-time-length loop (or, in the forward pass, on
adding up the lanes of each dot product) than on the arithmetic, and carry their
partial sums through memory from one block to the next. Here four (or five) such rows
are summed in registers over the whole sum: each term loads one row of W, W^T or the
layer's input as one or two vectors of a compile-time width (16 or 32 elements) and adds
it, times four (five) broadcast coefficients, to the rows of sums, the form of
OpenBLAS's microkernels. A row of W or of the input read past its last element runs into the next
rows of the same array (those lanes are summed but never stored); the last rows, where
such a read would leave the array, are first copied into a zero-padded row on the stack
with a masked load. The sums are stored with masked stores of exactly the row's elements
(:mod:`fastbp.kernels.lanes`). Which layers run these kernels is decided by their shapes
(``fastbp._config``: ``NARROW_*``).

Each element's sum runs in ascending order of k (forward, from b^l_j), j (BP2) or s
(BP3), whatever the thread count: the kernels are serial, chosen by the layer's shape
alone.
"""

from numba import njit

from .._config import NOALIAS, SERIAL
from .blocked import DIRECT, GRADIENT, STEP, _activate_rows, _mode, forward_ser
from .lanes import WIDTH, axpy_prefix, load_prefix, scratch, store_prefix
from .layers import derivative_scale, sgd_range
from .views import flat, mat

#: Most rows of sums in a block: four, or five where that computes fewer rows
#: (:func:`_five_rows`).
ROWS = 5
#: Elements of the rows of sums (a compile-time size: ``scratch`` needs a literal).
SUMS = ROWS * WIDTH
#: Widest layer (n_l) the narrow forward pass takes: its rows of W^T are 16 lanes (a
#: 32-lane W^T took longer to copy than it saved below minibatches of 16-32).
FORWARD_WIDTH = 16
#: Elements of W^T on the stack in the forward pass: n_{l-1} <= WIDTH rows of 16.
PACKED = WIDTH * FORWARD_WIDTH


@njit(inline="always", **SERIAL)
def _five_rows(n):
    """Whether n rows (examples, or neurons in the gradient step) go in blocks of five
    rather than four: when fewer rows are then computed. A block past the last row
    repeats the last row, so 10 rows in blocks of four compute 12 (W2 and W4-b10's
    minibatches, and every 10-class output layer's gradient step): in blocks of five
    the gradient step of a 10-neuron layer ran 1.1-1.3x."""
    return 5 * ((n + 4) // 5) < 4 * ((n + 3) // 4)


@njit(inline="always", **SERIAL)
def _four(i0, last, index):
    """Rows i0 .. i0 + 3, those past ``last`` repeating it (through ``index`` if given)."""
    i1 = min(i0 + 1, last)
    i2 = min(i0 + 2, last)
    i3 = min(i0 + 3, last)
    if index is None:
        return (i0, i1, i2, i3)
    return (index[i0], index[i1], index[i2], index[i3])


@njit(inline="always", **SERIAL)
def _five(i0, last, index):
    """As :func:`_four`, rows i0 .. i0 + 4."""
    i4 = min(i0 + 4, last)
    return _four(i0, last, index) + ((i4 if index is None else index[i4]),)


@njit(inline="always", **SERIAL)
def _zero_rows(acc, nr, w, zero):
    for c in range(w):
        for r in range(nr):
            acc[r, c] = zero


@njit(inline="always", **SERIAL)
def _add_rows(acc, q_flat, off, M, idx, col, w):
    """acc[r, :w] += M[idx[r], col] q_flat[off:off + w] for the rows r < len(idx) of the
    sums (a constant count: the loop over r is unrolled, and the rows stay in
    registers)."""
    # read through a view starting at off: indexed as q_flat[off + c], each lane's
    # index was checked for wraparound on its own and the row gathered element by
    # element (BP2 3x slower)
    row = mat(q_flat, off, 1, w)
    for c in range(w):
        q = row[0, c]
        for r in range(len(idx)):
            acc[r, c] += M[idx[r], col] * q


@njit(inline="always", **SERIAL)
def _rows_inside(n_rows, n_in, k0, w):
    """How many of the first rows of an (n_rows, n_in) array can be read as w elements
    from column k0 without leaving the array (row i: i n_in + k0 + w <= n_rows n_in)."""
    size = n_rows * n_in - k0
    return (size - w) // n_in + 1 if size >= w else 0


@njit(inline="always", **SERIAL)
def _columns(a):
    """Columns per block of the sums: 128 bytes, 32 float32 or 16 float64, so that
    four rows of sums take 8 vector registers (five, 10) (the 30-wide float64 gradient step in
    blocks of 32 columns, 16 registers, ran 1.1x the blocked kernel; in blocks of 16,
    1.4-1.6x)."""
    return WIDTH if a.itemsize == 4 else 16


@njit(inline="always", **SERIAL)
def _backward_block(D, W, tail, ss, k0, D_prev, acc, w, zero):
    """Columns k0 .. k0 + w - 1 (those < n_{l-1}) of the rows ss of δ^{l-1} (before
    σ'), summed over all j in the rows of ``acc``."""
    n_out, n_in = W.shape
    n = min(w, n_in - k0)
    inside = _rows_inside(n_out, n_in, k0, w)
    w_flat = flat(W)
    sums = flat(acc)
    stride = acc.shape[1]
    _zero_rows(acc, len(ss), w, zero)
    for j in range(inside):
        _add_rows(acc, w_flat, j * n_in + k0, D, ss, j, w)
    for j in range(inside, n_out):
        load_prefix(tail, 0, w_flat, j * n_in + k0, n, w)
        _add_rows(acc, tail, 0, D, ss, j, w)
    # a repeated last example stores the same sums again
    for r in range(len(ss)):
        store_prefix(flat(D_prev), ss[r] * n_in + k0, sums, r * stride, n, w)


@njit(inline="always", **SERIAL)
def _backward_columns(D, W, tail, m, k0, D_prev, acc, w, zero):
    """Columns k0 .. k0 + w - 1 of δ^{l-1}'s first m rows, four or five rows at a time."""
    if _five_rows(m):
        for s0 in range(0, m, 5):
            _backward_block(D, W, tail, _five(s0, m - 1, None), k0, D_prev, acc, w, zero)
    else:
        for s0 in range(0, m, 4):
            _backward_block(D, W, tail, _four(s0, m - 1, None), k0, D_prev, acc, w, zero)


@njit(**NOALIAS)
def backward_narrow(D, W, Z_prev, A_prev, act_prev, m, D_prev):
    """BP2, δ^{l-1}_sk = (Σ_j w^l_jk δ^l_sj) σ'(z^{l-1}_sk).

    128 bytes of columns k at a time (:func:`_columns`; a last 16 or fewer as one
    16-lane block), four or five examples at a time (:func:`_five_rows`): their rows of
    δ^{l-1} are summed in registers over all j (one row of W loaded per j, a
    multiply-add with δ^l_sj broadcast per example) and stored; then all m rows are
    scaled by σ'. Same arguments as :func:`fastbp.kernels.blocked.backward_ser`.
    """
    n_out, n_in = W.shape
    zero = W.dtype.type(0)
    acc = mat(scratch(SUMS, zero), 0, ROWS, WIDTH)
    tail = scratch(WIDTH, zero)
    step = _columns(W)
    for k0 in range(0, n_in, step):
        if n_in - k0 <= 16 or step == 16:
            _backward_columns(D, W, tail, m, k0, D_prev, acc, 16, zero)
        else:
            _backward_columns(D, W, tail, m, k0, D_prev, acc, WIDTH, zero)
    derivative_scale(act_prev, flat(D_prev), flat(Z_prev), flat(A_prev), 0, m * n_in)


@njit(inline="always", **SERIAL)
def _forward_block(A_prev, qs, n_in, wt_flat, brow, s0, Z, acc, w):
    """Z's rows s0 .. s0 + len(qs) - 1 (those < m, see _four): b + Σ_k a_{q,k} W^T[k]
    for the input rows q in qs."""
    n_out = Z.shape[1]
    m = Z.shape[0]
    sums = flat(acc)
    # the sums start from b (adding it after them took a scalar pass over the rows)
    for c in range(w):
        for r in range(len(qs)):
            acc[r, c] = brow[c]
    for k in range(n_in):
        _add_rows(acc, wt_flat, k * w, A_prev, qs, k, w)
    for r in range(len(qs)):
        store_prefix(flat(Z), min(s0 + r, m - 1) * n_out, sums, r * acc.shape[1], n_out, w)


@njit(inline="always", **SERIAL)
def _forward_rows(A_prev, rows, W, b, m, Z, WT, brow, acc, w, zero):
    """Z's first m rows, four or five examples at a time."""
    n_out, n_in = W.shape
    # W^T, by input k: WT[k, :w] = w_·k, then zeros
    for k in range(n_in):
        for c in range(w):
            WT[k, c] = W[c, k] if c < n_out else zero
    load_prefix(brow, 0, b, 0, n_out, w)
    zm = mat(flat(Z), 0, m, n_out)
    if _five_rows(m):
        for s0 in range(0, m, 5):
            _forward_block(A_prev, _five(s0, m - 1, rows), n_in, flat(WT), brow, s0, zm, acc,
                           w)
    else:
        for s0 in range(0, m, 4):
            _forward_block(A_prev, _four(s0, m - 1, rows), n_in, flat(WT), brow, s0, zm, acc,
                           w)


@njit(**NOALIAS)
def forward_narrow(A_prev, rows, W, b, act, m, Z, A):
    """z^l_sj = b^l_j + Σ_k w^l_jk a^{l-1}_{rows[s],k} and a^l = σ(z^l), for
    n_l <= :data:`FORWARD_WIDTH` and n_{l-1} <= :data:`WIDTH`.

    W^T is first copied to the stack (row k: the weights of input k, zero-padded to 16
    lanes). Four or five examples at a time (:func:`_five_rows`): their rows of z are
    summed in registers over all k (one row of W^T loaded per k, a multiply-add with
    a_sk broadcast per example), then stored; σ (or softmax) follows row by row. Same arguments as
    :func:`fastbp.kernels.blocked.forward_ser`, which wider layers are handed to (their
    W^T would not fit in the stack's copy).
    """
    n_out, n_in = W.shape
    if n_out > FORWARD_WIDTH or n_in > WIDTH:
        forward_ser(A_prev, rows, W, b, act, m, Z, A)
        return
    zero = W.dtype.type(0)
    acc = mat(scratch(SUMS, zero), 0, ROWS, WIDTH)
    brow = scratch(WIDTH, zero)
    WT = mat(scratch(PACKED, zero), 0, n_in, FORWARD_WIDTH)
    _forward_rows(A_prev, rows, W, b, m, Z, WT, brow, acc, FORWARD_WIDTH, zero)
    _activate_rows(act, m, Z, A, n_out)


@njit(inline="always", **SERIAL)
def _store_row(C, j, k0, n, add, coef, acc, r, w):
    """C[j, k0:k0 + n] = coef acc[r, :n] (+ C[j, k0:k0 + n] when ``add``)."""
    axpy_prefix(flat(C), j * C.shape[1] + k0, flat(acc), r * acc.shape[1], n, coef, add, w)


@njit(inline="always", **SERIAL)
def _gradient_rows(DT, A_prev, rows, tail, m, coef, C, add, gb, scale, acc, bsum, js, k0, w,
                   zero):
    """Columns k0 .. k0 + w - 1 (those < n_in) of the rows js of C (those < n_out, see
    _four): coef Σ_s δ_sj a_{rows[s]} (added to C when ``add``), and gb_j = scale Σ_s δ_sj
    (every block of columns stores the same sums of δ)."""
    n_out, n_in = C.shape
    n = min(w, n_in - k0)
    inside = _rows_inside(A_prev.shape[0], n_in, k0, w)
    a_flat = flat(A_prev)
    _zero_rows(acc, len(js), w, zero)
    for r in range(len(js)):
        bsum[r] = zero
    for s in range(m):
        for r in range(len(js)):
            bsum[r] += DT[js[r], s]
        q = rows[s]
        if q < inside:
            _add_rows(acc, a_flat, q * n_in + k0, DT, js, s, w)
        else:
            load_prefix(tail, 0, a_flat, q * n_in + k0, n, w)
            _add_rows(acc, tail, 0, DT, js, s, w)
    for r in range(len(js)):
        if js[0] + r < n_out:
            _store_row(C, js[r], k0, n, add, coef, acc, r, w)
            gb[js[r]] = bsum[r] * scale


@njit(inline="always", **SERIAL)
def _gradient_block(DT, A_prev, rows, tail, m, coef, C, add, gb, scale, acc, bsum, js, zero):
    """The rows js of C and gb over all columns, 128 bytes of them at a time."""
    n_in = C.shape[1]
    step = _columns(C)
    for k0 in range(0, n_in, step):
        if n_in - k0 <= 16 or step == 16:
            _gradient_rows(DT, A_prev, rows, tail, m, coef, C, add, gb, scale, acc, bsum, js,
                           k0, 16, zero)
        else:
            _gradient_rows(DT, A_prev, rows, tail, m, coef, C, add, gb, scale, acc, bsum, js,
                           k0, WIDTH, zero)


@njit(**NOALIAS)
def gradient_step_narrow(D, A_prev, rows, m, scale, W, b, gW, gb, VW, Vb, lr, momentum,
                         decay, apply):
    """BP3/BP4 and the SGD step, as :func:`fastbp.kernels.blocked.gradient_step_ser`.

    Four or five rows j of ∂C/∂W at a time (:func:`_five_rows`), 128 bytes of columns
    at a time (as :func:`backward_narrow`), are summed in registers over all m examples
    (one input row loaded per example, a multiply-add with δ_sj broadcast per row), then
    scaled
    and stored: ∂C/∂w_jk = scale Σ_s δ_sj a_sk, or for a plain SGD step (no momentum,
    no decay) w_jk += (-η scale) Σ_s δ_sj a_sk straight into W. Each block of rows takes
    its step (momentum, decay) right after, as the blocked kernel does; the biases take
    theirs at the end.
    """
    n_out, n_in = W.shape
    zero = W.dtype.type(0)
    mode = _mode(apply, momentum, decay, zero)
    direct = mode == DIRECT
    coef = -(lr * scale) if direct else scale
    C = W if direct else gW
    acc = mat(scratch(SUMS, zero), 0, ROWS, WIDTH)
    bsum = scratch(ROWS, zero)
    tail = scratch(WIDTH, zero)
    DT = D.T  # the coefficients of a row of sums: δ_sj for its j (a column of D)
    size = 5 if _five_rows(n_out) else 4
    for j0 in range(0, n_out, size):
        if size == 5:
            _gradient_block(DT, A_prev, rows, tail, m, coef, C, direct, gb, scale, acc, bsum,
                            _five(j0, n_out - 1, None), zero)
        else:
            _gradient_block(DT, A_prev, rows, tail, m, coef, C, direct, gb, scale, acc, bsum,
                            _four(j0, n_out - 1, None), zero)
        if mode == STEP:
            sgd_range(flat(W), flat(VW), flat(gW), j0 * n_in, min(j0 + size, n_out) * n_in,
                      lr, momentum, decay)
    if mode != GRADIENT:  # biases are not decayed; all in one pass (a few elements)
        sgd_range(b, Vb, gb, 0, n_out, lr, momentum, zero)

"""Fixed-width rows for the narrow-layer kernels: stack scratch and masked copies.

A layer whose rows are at most :data:`WIDTH` wide (the inputs of W1's and W2's second
and third layers: 16 or 30) is too narrow for loops over a run-time row length: LLVM's
vector loop wants 64 elements, and a 16-wide row runs its remainder loops. The kernels
of :mod:`fastbp.kernels.narrow` instead work on rows of a compile-time width (16 or 32
elements) whose sums stay in vector registers; what they need to move rows of ``n``
elements in and out of such fixed-width rows is here:

- :func:`scratch`: a fixed-size array on the stack (no allocation, no reference count),
  which LLVM keeps in registers where it can.
- :func:`load_prefix` / :func:`store_prefix_derivative`: copy the first ``n`` elements
  of a row with one masked vector load or store (the lanes past ``n`` are zero in a
  loaded row and untouched in a stored one), so no element beyond a row is read or
  written; the store can multiply the row by σ'(z) on the way.
- :func:`row_fill`, :func:`row_copy`, :func:`rows_fma`, :func:`rows_fma_broadcast`,
  :func:`rows_fma_outer` and :func:`rows_sum16_store`: rows of sums in such an array,
  set, added to by vector fused multiply-adds and summed across their lanes in a fixed
  pairwise order; :func:`axpy_prefix` and :func:`rows_axpy_prefix` add rows of sums,
  scaled, to an array's rows; :func:`transpose16` copies a 16 × 16 block's columns out
  as rows (:func:`transpose16_exact` into rows shorter than 16).
- :func:`columns_sub_max16` and :func:`columns_normalise16`: a softmax's steps over
  rows of 16 lanes, one lane per example (a transposed block of z).

None of them checks bounds (the callers pass offsets of rows inside the arrays).

The layer kernels also take their multiply-adds from here: :func:`fma` is IEEE's fused
multiply-add, a·b + c rounded once, as one instruction. The kernels are compiled without
fast-math flags (``fastbp._config``), so their arithmetic is exactly what the source
says: ``fma`` where they write it and every sum in the order written.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.core.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from .codes import RELU, SIGMOID, TANH

#: Widest row (elements) the narrow kernels take.
WIDTH = 32


def _width(width, name):
    if not isinstance(width, types.IntegerLiteral):
        return None
    if width.literal_value not in (8, 16, 32):
        raise TypingError(f"{name}: width must be 8, 16 or 32, got {width.literal_value}")
    return width.literal_value


def _contiguous_1d(ty, name):
    if not (isinstance(ty, types.Array) and ty.ndim == 1 and ty.layout == "C"):
        raise TypingError(f"{name}: expected a C-contiguous 1-D array, got {ty}")


@intrinsic
def fma(typingctx, a, b, c):
    """a·b + c rounded once (IEEE 754 fusedMultiplyAdd, ``llvm.fma``), in the widest of
    the three floats' types (as ``a * b + c`` would promote). Only in compiled code
    (Python 3.11 has no ``math.fma``)."""
    if not all(isinstance(t, types.Float) for t in (a, b, c)):
        raise TypingError(f"fma: expected three floats, got {a}, {b}, {c}")
    ty = max((a, b, c), key=lambda t: t.bitwidth)

    def codegen(context, builder, sig, args):
        return builder.fma(*(context.cast(builder, v, t, ty) for v, t in zip(args, sig.args)))

    return ty(a, b, c), codegen


def _register_lanes(ty):
    """Elements of the float type ``ty`` in one 64-byte vector register."""
    return 512 // ty.bitwidth


@intrinsic
def vector_lanes(typingctx, zero):
    """Elements of ``zero``'s float type in one 64-byte vector register (16 float32, 8
    float64), as a constant LLVM sees (a loop over that many lanes is unrolled and
    vectorised)."""
    if not isinstance(zero, types.Float):
        raise TypingError(f"vector_lanes: expected a float, got {zero}")
    lanes = _register_lanes(zero)

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, lanes)

    return types.intp(zero), codegen


@intrinsic
def register_lanes(typingctx, zero, registers):
    """Elements of ``zero``'s float type in ``registers`` (a literal) 64-byte vector
    registers, as a literal: a row width for the other intrinsics chosen by the dtype
    (one register: 16 float32, 8 float64). :func:`vector_lanes` gives one register's as
    an ordinary integer, for arithmetic and for arguments of compiled functions (a
    literal argument compiles a signature of its own)."""
    if not isinstance(registers, types.IntegerLiteral):
        return None
    if not isinstance(zero, types.Float):
        raise TypingError(f"register_lanes: expected a float, got {zero}")
    lanes = _register_lanes(zero) * registers.literal_value

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, lanes)

    return types.literal(lanes)(zero, registers), codegen


@intrinsic
def scratch(typingctx, size, zero):
    """An uninitialised 1-D array of ``size`` (a literal) elements of ``zero``'s type on
    the calling function's stack: valid until that function returns."""
    if not isinstance(size, types.IntegerLiteral):
        return None
    if not isinstance(zero, types.Float):
        raise TypingError(f"scratch: expected a float for the dtype, got {zero}")
    n = size.literal_value
    retty = types.Array(zero, 1, "C")

    def codegen(context, builder, sig, args):
        ety = context.get_data_type(zero)
        ptr = cgutils.alloca_once(builder, ety, size=n)
        intp = context.get_value_type(types.intp)
        itemsize = intp(context.get_abi_sizeof(ety))
        out = make_array(retty)(context, builder)
        populate_array(out, data=ptr, shape=[intp(n)], strides=[itemsize],
                       itemsize=itemsize, meminfo=None, parent=None)
        return out._getvalue()

    return retty(size, zero), codegen


def _row_ptr(context, builder, aty, a, off, offty):
    arr = make_array(aty)(context, builder, a)
    return cgutils.gep(builder, arr.data, context.cast(builder, off, offty, types.intp))


def _mask(builder, n, width):
    """<width x i1>: lane i set when i < n (n an i64, 0 <= n <= width)."""
    i64 = ir.IntType(64)
    bits = builder.lshr(i64(-1), builder.sub(i64(64), n))
    # a shift by 64 is poison: n == 0 selects no lanes instead
    bits = builder.select(builder.icmp_unsigned("==", n, i64(0)), i64(0), bits)
    return builder.bitcast(builder.trunc(bits, ir.IntType(width)),
                           ir.VectorType(ir.IntType(1), width))


def _bits(ety):
    return 32 if isinstance(ety, ir.FloatType) else 64


def _vector_name(vty):
    return f"v{vty.count}f{_bits(vty.element)}"


def _prefix_copy(name, dst, src, width, emit):
    """Typing and code generation shared by the masked row operations, whose arguments
    start (dst, dst_off, src, src_off, n, ...): ``emit(context, builder, sig, args, to,
    frm, mask, vty, align)`` works on the rows at the two w-lane pointers (w: ``width``,
    or with 0 one register's lanes)."""
    _contiguous_1d(dst, name)
    _contiguous_1d(src, name)
    w = _row_width(width, dst.dtype, name)
    if w is None:
        return None
    if dst.dtype != src.dtype:
        raise TypingError(f"{name}: dst and src must have one dtype")

    def codegen(context, builder, sig, args):
        ety = context.get_data_type(sig.args[0].dtype)
        vty = ir.VectorType(ety, w)
        to, frm = (builder.bitcast(_row_ptr(context, builder, sig.args[i], args[i],
                                            args[i + 1], sig.args[i + 1]), vty.as_pointer())
                   for i in (0, 2))
        mask = _mask(builder, context.cast(builder, args[4], sig.args[4], types.int64), w)
        emit(context, builder, sig, args, to, frm, mask, vty, context.get_abi_sizeof(ety))
        return context.get_dummy_value()

    return codegen


def _masked_call(builder, op, ret, args):
    vty = args[0].type if op == "store" else ret
    fnty = ir.FunctionType(ret, [a.type for a in args])
    fn = cgutils.get_or_insert_function(builder.module, fnty,
                                        f"llvm.masked.{op}.{_vector_name(vty)}.p0")
    return builder.call(fn, args)


def _fma_fn(builder, vty):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                          f"llvm.fma.{_vector_name(vty)}")


def _splat(builder, value, vty):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.IntType(32)(0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vty.count),
                                              [0] * vty.count))


def _load_row(context, builder, sig, args, to, frm, mask, vty, align):
    zeros = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * vty.count)
    vec = _masked_call(builder, "load", vty, [frm, ir.IntType(32)(align), mask, zeros])
    builder.store(vec, to, align=align)


@intrinsic
def load_prefix(typingctx, dst, dst_off, src, src_off, n, width):
    """``dst[dst_off:dst_off + width] = src[src_off:src_off + n]`` followed by zeros,
    reading no element of ``src`` past the n-th (0 <= n <= width)."""
    codegen = _prefix_copy("load_prefix", dst, src, width, _load_row)
    return codegen and (types.none(dst, dst_off, src, src_off, n, width), codegen)


@intrinsic
def store_prefix_derivative(typingctx, dst, dst_off, src, src_off, n, width, act, z, a):
    """``dst[o:o + n] = src[src_off:src_off + n] * σ'(z[o:o + n], a[o:o + n])`` (o:
    ``dst_off``; ``act`` an activation code, a = σ(z)): one masked load of z or a, σ'
    and the product in ``width`` lanes, one masked store; no element of any array past
    the n-th read or written; with ``act`` None, the row as it is. Each row branches
    to its activation's σ' (rows of stores compiled once per activation, the choice
    made once for a group of rows, took 4 s longer to compile and measured about as
    fast).

    σ' is :func:`fastbp.kernels.layers.derivative`'s, operation for operation (sigmoid
    a (1 - a), tanh 1 - a a, ReLU 1 where z > 0 else 0, any other code 1 + 0 z), and
    the product the same as its ``d *= σ'``: bit for bit the separate pass it replaces,
    which read and wrote every row of δ^{l-1} again."""
    for arr in (z, a):
        _contiguous_1d(arr, "store_prefix_derivative")
        if arr.dtype != getattr(dst, "dtype", None):
            raise TypingError("store_prefix_derivative: dst, z and a must have one dtype")
    if not isinstance(act, (types.NoneType, types.Integer)):
        raise TypingError(f"store_prefix_derivative: act must be an int or None, got {act}")

    def emit(context, builder, sig, args, to, frm, mask, vty, align):
        row = builder.load(frm, align=align)
        if not isinstance(sig.args[6], types.NoneType):
            zeros = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * vty.count)
            one = ir.Constant(vty, [ir.Constant(vty.element, 1.0)] * vty.count)

            def lanes(i):  # z's or a's row at dst_off
                p = _vptr(context, builder, sig.args[i], args[i], args[1], sig.args[1], vty)
                return _masked_call(builder, "load", vty, [p, ir.IntType(32)(align), mask,
                                                           zeros])

            def slope_of(c):
                if c == SIGMOID:
                    av = lanes(8)
                    return builder.fmul(av, builder.fsub(one, av))
                if c == TANH:
                    av = lanes(8)
                    return builder.fsub(one, builder.fmul(av, av))
                if c == RELU:
                    return builder.select(builder.fcmp_ordered(">", lanes(7), zeros), one,
                                          zeros)
                return builder.fadd(one, builder.fmul(zeros, lanes(7)))

            # one branch per activation
            act_v = context.cast(builder, args[6], sig.args[6], types.int64)
            done = builder.append_basic_block("slope.done")
            other = builder.append_basic_block("slope.other")
            switch = builder.switch(act_v, other)
            incoming = []
            for c in (SIGMOID, TANH, RELU):
                bb = builder.append_basic_block(f"slope.{c}")
                switch.add_case(ir.IntType(64)(c), bb)
                builder.position_at_end(bb)
                incoming.append((slope_of(c), builder.block))
                builder.branch(done)
            builder.position_at_end(other)
            incoming.append((slope_of(None), builder.block))
            builder.branch(done)
            builder.position_at_end(done)
            slope = builder.phi(vty)
            for v, bb in incoming:
                slope.add_incoming(v, bb)
            row = builder.fmul(row, slope)
        _masked_call(builder, "store", ir.VoidType(),
                     [row, to, ir.IntType(32)(align), mask])

    codegen = _prefix_copy("store_prefix_derivative", dst, src, width, emit)
    return codegen and (types.none(dst, dst_off, src, src_off, n, width, act, z, a), codegen)


@intrinsic
def axpy_prefix(typingctx, dst, dst_off, src, src_off, n, coef, keep, width):
    """``dst[dst_off:dst_off + n] = coef * src[src_off:src_off + n]``, plus the old values
    of ``dst`` when ``keep``: one vector multiply-add of ``width`` lanes between a masked
    load and a masked store, reading and writing no element past the n-th of either.

    Written as a loop over the lanes, this scaling of a row of sums held in registers
    was split by LLVM into one scalar multiply-add and a shuffle per lane."""
    if coef != getattr(dst, "dtype", coef):
        raise TypingError("axpy_prefix: dst, src and coef must have one dtype")
    codegen = _prefix_copy("axpy_prefix", dst, src, width, _axpy_row)
    return codegen and (types.none(dst, dst_off, src, src_off, n, coef, keep, width), codegen)


def _axpy_row(context, builder, sig, args, to, frm, mask, vty, align):
    """The code of :func:`axpy_prefix` (args[5] is coef, args[6] keep)."""
    keep = context.cast(builder, args[6], sig.args[6], types.boolean)
    _axpy(builder, to, frm, mask, keep, _splat(builder, args[5], vty), vty, align)


def _axpy(builder, to, frm, mask, keep, coef, vty, align):
    """*to = coef * *frm (+ *to when ``keep``), on the lanes of ``mask`` only."""
    align = ir.IntType(32)(align)
    zeros = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * vty.count)
    none = ir.Constant(mask.type, [ir.Constant(ir.IntType(1), 0)] * vty.count)
    old = _masked_call(builder, "load", vty, [to, align, builder.select(keep, mask, none),
                                              zeros])
    row = _masked_call(builder, "load", vty, [frm, align, mask, zeros])
    _masked_call(builder, "store", ir.VoidType(),
                 [builder.call(_fma_fn(builder, vty), [coef, row, old]), to, align, mask])


# Rows of sums held in vector registers. The narrow kernels and the forward pass's dot
# products keep their sums in a stack array (``scratch``) accessed only as whole
# vectors at constant offsets, which LLVM keeps in registers; written as loops over the
# lanes, they were left to LLVM's SLP vectoriser, which vectorised fused multiply-adds
# (``llvm.fma`` calls) only in part.


def _row_width(width, dtype, name):
    """A row's lanes: the literal ``width``, or one 64-byte register's when it is 0."""
    if not isinstance(width, types.IntegerLiteral):
        return None
    if width.literal_value == 0:
        return _register_lanes(dtype)
    return _width(width, name)


def _vptr(context, builder, aty, a, off, offty, vty):
    return builder.bitcast(_row_ptr(context, builder, aty, a, off, offty), vty.as_pointer())


def _vector_of(context, dtype, w):
    """The LLVM vector of w elements of ``dtype`` and the element's alignment."""
    ety = context.get_data_type(dtype)
    return ir.VectorType(ety, w), context.get_abi_sizeof(ety)


def _row_lanes(name, width, *arrays):
    """Checks the rows' arrays; the lanes of a row (None: ``width`` not yet literal)."""
    for a in arrays:
        _contiguous_1d(a, name)
    return _row_width(width, arrays[0].dtype, name)


def _row_at(context, builder, sig, args, i, vty):
    """Pointer to the row of ``vty`` in array argument i at offset argument i + 1."""
    return _vptr(context, builder, sig.args[i], args[i], args[i + 1], sig.args[i + 1], vty)


@intrinsic
def row_fill(typingctx, dst, off, value, width):
    """``dst[off:off + w] = value`` with one vector store (w: ``width``, or with 0 one
    register's lanes)."""
    w = _row_lanes("row_fill", width, dst)
    if w is None:
        return None

    def codegen(context, builder, sig, args):
        vty, align = _vector_of(context, sig.args[0].dtype, w)
        value = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        builder.store(_splat(builder, value, vty), _row_at(context, builder, sig, args, 0, vty),
                      align=align)
        return context.get_dummy_value()

    return types.none(dst, off, value, width), codegen


@intrinsic
def row_copy(typingctx, dst, dst_off, src, src_off, width):
    """``dst[dst_off:dst_off + w] = src[src_off:src_off + w]``: one vector load and store."""
    w = _row_lanes("row_copy", width, dst, src)
    if w is None:
        return None

    def codegen(context, builder, sig, args):
        vty, align = _vector_of(context, sig.args[0].dtype, w)
        v = builder.load(_row_at(context, builder, sig, args, 2, vty), align=align)
        builder.store(v, _row_at(context, builder, sig, args, 0, vty), align=align)
        return context.get_dummy_value()

    return types.none(dst, dst_off, src, src_off, width), codegen


@intrinsic
def rows_fma(typingctx, acc, stride, src, src_off, coefs, width):
    """``acc[r s:r s + w] = fma(c_r, src[src_off:src_off + w], acc[r s:r s + w])`` for
    each coefficient c_r of the tuple ``coefs`` (one to eight; s = ``stride``): one load
    of the source row, a vector fused multiply-add per row with its coefficient
    broadcast."""
    if getattr(acc, "dtype", None) != getattr(src, "dtype", None):
        raise TypingError("rows_fma: acc and src must have one dtype")
    if not (isinstance(coefs, types.UniTuple) and 1 <= coefs.count <= 8):
        raise TypingError("rows_fma: one to eight coefficients, as a tuple")
    w = _row_lanes("rows_fma", width, acc, src)
    if w is None:
        return None

    def codegen(context, builder, sig, args):
        vty, align = _vector_of(context, sig.args[0].dtype, w)
        fma_fn = _fma_fn(builder, vty)
        q = builder.load(_row_at(context, builder, sig, args, 2, vty), align=align)
        stride = context.cast(builder, args[1], sig.args[1], types.intp)
        cs = cgutils.unpack_tuple(builder, args[4], coefs.count)
        for r, c in enumerate(cs):
            off = builder.mul(stride, stride.type(r))
            p = _vptr(context, builder, sig.args[0], args[0], off, types.intp, vty)
            coef = context.cast(builder, c, coefs.dtype, sig.args[0].dtype)
            old = builder.load(p, align=align)
            builder.store(builder.call(fma_fn, [_splat(builder, coef, vty), q, old]), p,
                          align=align)
        return context.get_dummy_value()

    return types.none(acc, stride, src, src_off, coefs, width), codegen


@intrinsic
def rows_fma_outer(typingctx, acc, x, x_offs, y, y_offs):
    """``acc[(4a + b) L:(4a + b + 1) L] = fma(x[xo_a:xo_a + L], y[yo_b:yo_b + L], ...)``
    lane by lane, for each offset xo_a of the tuple ``x_offs`` (at most 4) and yo_b of
    ``y_offs`` (at most 4): L (one 64-byte register's lanes) products of each pair of rows
    added to its row of sums, each with one fused multiply-add."""
    for a in (acc, x, y):
        _contiguous_1d(a, "rows_fma_outer")
    if not (acc.dtype == x.dtype == y.dtype):
        raise TypingError("rows_fma_outer: acc, x and y must have one dtype")
    if not (isinstance(x_offs, types.UniTuple) and isinstance(y_offs, types.UniTuple)):
        return None
    na, nb = x_offs.count, y_offs.count
    if not (1 <= na <= 4 and 1 <= nb <= 4):
        raise TypingError("rows_fma_outer: one to four rows of x and of y")
    w = _register_lanes(acc.dtype)

    def codegen(context, builder, sig, args):
        vty, align = _vector_of(context, sig.args[0].dtype, w)
        fma_fn = _fma_fn(builder, vty)

        def rows(i, n):
            offs = cgutils.unpack_tuple(builder, args[i + 1], n)
            return [builder.load(_vptr(context, builder, sig.args[i], args[i], o,
                                       sig.args[i + 1].dtype, vty), align=align)
                    for o in offs]

        xs, ys = rows(1, na), rows(3, nb)
        for a, xa in enumerate(xs):
            for b, yb in enumerate(ys):
                off = context.get_constant(types.intp, (4 * a + b) * w)
                p = _vptr(context, builder, sig.args[0], args[0], off, types.intp, vty)
                old = builder.load(p, align=align)
                builder.store(builder.call(fma_fn, [xa, yb, old]), p, align=align)
        return context.get_dummy_value()

    return types.none(acc, x, x_offs, y, y_offs), codegen


def _sum_rows16(context, builder, aty, acc, vty, align):
    """The 16 rows of ``acc`` (one register each) summed across their lanes, pairwise
    (see :func:`rows_sum16_store`): a list of (vector, the rows in its lanes, in order)."""
    w = vty.count
    i32 = ir.IntType(32)
    groups = []
    for i in range(16):
        off = context.get_constant(types.intp, i * w)
        p = _vptr(context, builder, aty, acc, off, types.intp, vty)
        groups.append((builder.load(p, align=align), [i]))
    lanes = w
    while lanes > 1:
        half = lanes // 2
        merged = []
        for (v, rows_v), (u, rows_u) in zip(groups[0::2], groups[1::2]):
            n_v = len(rows_v)
            lo, hi = [], []
            for r in range(2 * n_v):  # rows of v, then of u (u's lanes from w up)
                base = (r % n_v) * lanes + (0 if r < n_v else w)
                lo += [base + t for t in range(half)]
                hi += [base + half + t for t in range(half)]
            pick = [builder.shuffle_vector(v, u, ir.Constant(ir.VectorType(i32, w), ix))
                    for ix in (lo, hi)]
            merged.append((builder.fadd(*pick), rows_v + rows_u))
        groups = merged
        lanes = half
    return groups


@intrinsic
def rows_sum16_store(typingctx, acc, dst, dst_off, stride, n_rows, bias, bias_off, n_cols):
    """The 16 sums Σ of ``acc[i L:(i + 1) L]`` (i < 16, L one register's lanes) as a 4 × 4
    block, sum i = 4r + c at row r and column c, plus ``bias[bias_off + c]``, stored at
    ``dst[dst_off + r stride + c]`` for r < n_rows and c < n_cols (both at most 4); no
    element of ``bias`` past the n_cols-th is read.

    Each sum adds its lanes pairwise in a fixed order: lane t + L/2 into lane t, then
    t + L/4 into t, ... down to lane 0; the bias is added last. The sixteen rows are
    added together: each step adds the halves of two rows' (or groups of rows') lanes
    with one vector addition, 15 additions in all in float32 where row by row took 64 on
    shrinking vectors (forward kernels 1.03-1.17x). Each row r of the block is then
    stored with one masked store of four lanes: stored element by element (each sum
    taken out of its lane, its bias added, a test for the last neurons and examples),
    the forward pass of 10 neurons over 100 inputs took 1.13-1.24x as long at 10-100
    examples, the same over 512- and 784-wide rows."""
    for a in (acc, dst, bias):
        _contiguous_1d(a, "rows_sum16_store")
    if not (acc.dtype == dst.dtype == bias.dtype):
        raise TypingError("rows_sum16_store: acc, dst and bias must have one dtype")
    w = _register_lanes(acc.dtype)
    sig = types.none(acc, dst, dst_off, stride, n_rows, bias, bias_off, n_cols)

    def codegen(context, builder, sig, args):
        vty, align = _vector_of(context, sig.args[0].dtype, w)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        groups = _sum_rows16(context, builder, sig.args[0], args[0], vty, align)
        row4 = ir.VectorType(vty.element, 4)
        n_cols = context.cast(builder, args[7], sig.args[7], types.int64)
        n_rows = context.cast(builder, args[4], sig.args[4], types.int64)
        cols = _mask(builder, n_cols, 4)
        none = _mask(builder, i64(0), 4)
        zeros = ir.Constant(row4, [ir.Constant(vty.element, 0.0)] * 4)
        b_ptr = builder.bitcast(_row_ptr(context, builder, sig.args[5], args[5], args[6],
                                         sig.args[6]), row4.as_pointer())
        bias4 = _masked_call(builder, "load", row4, [b_ptr, i32(align), cols, zeros])
        base = context.cast(builder, args[2], sig.args[2], types.intp)
        stride = context.cast(builder, args[3], sig.args[3], types.intp)
        for r in range(4):
            v, rows = next((v, rows) for v, rows in groups if 4 * r in rows)
            lane = rows.index(4 * r)
            assert rows[lane:lane + 4] == list(range(4 * r, 4 * r + 4))
            sums = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, 4),
                                                            list(range(lane, lane + 4))))
            off = builder.add(base, builder.mul(stride, stride.type(r)))
            p = builder.bitcast(_row_ptr(context, builder, sig.args[1], args[1], off,
                                         types.intp), row4.as_pointer())
            mask = builder.select(builder.icmp_signed(">", n_rows, i64(r)), cols, none)
            _masked_call(builder, "store", ir.VoidType(),
                         [builder.fadd(sums, bias4), p, i32(align), mask])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def rows_fma_broadcast(typingctx, acc, src, src_off, coefs, coef_off, n_rows, sums):
    """``acc[r L:(r + 1) L] = fma(coefs[coef_off + r], src[src_off:src_off + L], ...)``
    for r < R (``n_rows``, a literal up to 16; L one register's lanes), and the
    coefficients themselves added lane by lane to their own sums when ``sums`` is true,
    the R' (R rounded up to whole registers) lanes from ``acc[R L]``:
    ``acc[R L + i] += coefs[coef_off + i]``. So R' coefficients are read, all but R of
    them only into those sums.

    One load of the source row and R vector fused multiply-adds, each with its
    coefficient loaded and broadcast from memory (on AVX-512 the fma's own broadcast
    operand), and one vector addition per register of coefficients."""
    return _rows_fma_broadcast("rows_fma_broadcast", acc, src, src_off, coefs, coef_off,
                               n_rows, sums)


@intrinsic
def rows_fma_broadcast2(typingctx, acc, acc2, src, src_off, src_off2, coefs, coef_off,
                        n_rows, sums):
    """:func:`rows_fma_broadcast` into ``acc`` from ``src[src_off:]`` and into ``acc2``
    from ``src[src_off2:]`` at once: each coefficient loaded and broadcast once for its
    two multiply-adds (the sums of coefficients go to ``acc``)."""
    return _rows_fma_broadcast("rows_fma_broadcast2", acc, src, src_off, coefs, coef_off,
                               n_rows, sums, acc2, src_off2)


def _rows_fma_broadcast(name, acc, src, src_off, coefs, coef_off, n_rows, sums, acc2=None,
                        src_off2=None):
    arrays = (acc, src, coefs) if acc2 is None else (acc, acc2, src, coefs)
    if len({getattr(a, "dtype", None) for a in arrays}) != 1:
        raise TypingError(f"{name}: acc, src and coefs must have one dtype")
    for a in arrays:
        _contiguous_1d(a, name)
    if not isinstance(n_rows, types.IntegerLiteral):
        return None
    R = n_rows.literal_value
    if not 1 <= R <= 16:
        raise TypingError(f"{name}: 1 to 16 rows, got {R}")
    w = _register_lanes(acc.dtype)
    two = acc2 is not None
    # argument positions: acc, [acc2], src, src_off, [src_off2], coefs, coef_off, ...
    i_src, i_coefs = (1, 3) if not two else (2, 5)
    i_sums = i_coefs + 3

    def codegen(context, builder, sig, args):
        vty, align = _vector_of(context, sig.args[0].dtype, w)
        fma_fn = _fma_fn(builder, vty)
        q = builder.load(_row_at(context, builder, sig, args, i_src, vty), align=align)
        if two:
            p2 = _vptr(context, builder, sig.args[i_src], args[i_src], args[i_src + 2],
                       sig.args[i_src + 2], vty)
            q2 = builder.load(p2, align=align)
        base = context.cast(builder, args[i_coefs + 1], sig.args[i_coefs + 1], types.intp)
        coef_ptr = _row_ptr(context, builder, sig.args[i_coefs], args[i_coefs], base,
                            types.intp)

        def acc_ptr(i, k=0):
            return _vptr(context, builder, sig.args[k], args[k],
                         context.get_constant(types.intp, i), types.intp, vty)

        for r in range(R):
            c = _splat(builder, builder.load(cgutils.gep(builder, coef_ptr, r), align=align),
                       vty)
            for k, x in ((0, q), (1, q2)) if two else ((0, q),):
                p = acc_ptr(r * w, k)
                old = builder.load(p, align=align)
                builder.store(builder.call(fma_fn, [c, x, old]), p, align=align)
        # whole registers: a vector of 12 lanes, say, is taken apart lane by lane
        with builder.if_then(context.cast(builder, args[i_sums], sig.args[i_sums],
                                          types.boolean)):
            for i in range(0, R, w):
                p = acc_ptr(R * w + i)
                c = builder.load(builder.bitcast(cgutils.gep(builder, coef_ptr, i),
                                                 vty.as_pointer()), align=align)
                builder.store(builder.fadd(builder.load(p, align=align), c), p, align=align)
        return context.get_dummy_value()

    if two:
        return types.none(acc, acc2, src, src_off, src_off2, coefs, coef_off, n_rows,
                          sums), codegen
    return types.none(acc, src, src_off, coefs, coef_off, n_rows, sums), codegen


@intrinsic
def rows_axpy_prefix(typingctx, dst, dst_off, dst_stride, used, n, acc, coef, keep, n_rows):
    """``dst[o_r:o_r + n] = coef * acc[r L:r L + n]``, plus the old values of ``dst`` when
    ``keep``, for the rows r < ``used`` of R (``n_rows``, a literal), o_r = dst_off + r
    dst_stride (L one register's lanes, n <= L): for each row one vector multiply-add
    between a masked load and a masked store, reading and writing no element past the
    n-th of a row.

    The rows are picked by constant offsets: a row of ``acc`` picked by a run-time index
    would keep all of them out of registers."""
    for a in (dst, acc):
        _contiguous_1d(a, "rows_axpy_prefix")
    if not dst.dtype == acc.dtype == coef:
        raise TypingError("rows_axpy_prefix: dst, acc and coef must have one dtype")
    if not isinstance(n_rows, types.IntegerLiteral):
        return None
    R = n_rows.literal_value
    w = _register_lanes(acc.dtype)

    def codegen(context, builder, sig, args):
        vty, align = _vector_of(context, sig.args[0].dtype, w)

        def intp(i):
            return context.cast(builder, args[i], sig.args[i], types.intp)

        off, stride, used = intp(1), intp(2), intp(3)
        mask = _mask(builder, context.cast(builder, args[4], sig.args[4], types.int64), w)
        keep = context.cast(builder, args[7], sig.args[7], types.boolean)
        coef = _splat(builder, args[6], vty)
        for r in range(R):
            with builder.if_then(builder.icmp_signed(">", used, used.type(r))):
                to = _vptr(context, builder, sig.args[0], args[0],
                           builder.add(off, builder.mul(stride, stride.type(r))), types.intp,
                           vty)
                frm = _vptr(context, builder, sig.args[5], args[5],
                            context.get_constant(types.intp, r * w), types.intp, vty)
                _axpy(builder, to, frm, mask, keep, coef, vty, align)
        return context.get_dummy_value()

    return types.none(dst, dst_off, dst_stride, used, n, acc, coef, keep, n_rows), codegen


def _transpose_masks(h):
    """The two shuffles of a transpose stage that interleaves blocks of h lanes of two
    16-lane rows a, b: (a's even blocks with b's, a's odd blocks with b's)."""
    lo = [x for c in range(0, 16, 2 * h) for x in [*range(c, c + h), *range(16 + c, 16 + c + h)]]
    return lo, [x + h for x in lo]


def _transpose16(name, dst, dst_off, dst_stride, src, src_off, src_stride, n_rows,
                 n_cols, exact):
    """Typing and code generation of :func:`transpose16` and :func:`transpose16_exact`
    (``exact``: each row of ``dst`` stored with a mask of its first ``n_rows`` lanes)."""
    for a in (dst, src):
        _contiguous_1d(a, name)
    if dst.dtype != src.dtype:
        raise TypingError(f"{name}: dst and src must have one dtype")
    sig = types.none(dst, dst_off, dst_stride, src, src_off, src_stride, n_rows, n_cols)

    def codegen(context, builder, sig, args):
        vty, align = _vector_of(context, sig.args[0].dtype, 16)
        i32, i64 = ir.IntType(32), ir.IntType(64)

        def arg(i):
            return context.cast(builder, args[i], sig.args[i], types.int64)

        src_off, stride, n_rows, n_cols = arg(4), arg(5), arg(6), arg(7)
        cols = _mask(builder, n_cols, 16)
        none = _mask(builder, i64(0), 16)
        zeros = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * 16)
        rows = []
        for i in range(16):
            p = _vptr(context, builder, sig.args[3], args[3],
                      builder.add(src_off, builder.mul(stride, i64(i))), types.int64, vty)
            mask = builder.select(builder.icmp_signed(">", n_rows, i64(i)), cols, none)
            rows.append(_masked_call(builder, "load", vty, [p, i32(align), mask, zeros]))
        for h in (8, 4, 2, 1):
            lo, hi = (ir.Constant(ir.VectorType(i32, 16), m) for m in _transpose_masks(h))
            for i in range(16):
                if i // h % 2 == 0:
                    a, b = rows[i], rows[i + h]
                    rows[i] = builder.shuffle_vector(a, b, lo)
                    rows[i + h] = builder.shuffle_vector(a, b, hi)
        dst_off, dst_stride = arg(1), arg(2)
        used = _mask(builder, n_rows, 16) if exact else None
        for t in range(16):
            with builder.if_then(builder.icmp_signed(">", n_cols, i64(t))):
                p = _vptr(context, builder, sig.args[0], args[0],
                          builder.add(dst_off, builder.mul(dst_stride, i64(t))), types.int64,
                          vty)
                if exact:
                    _masked_call(builder, "store", ir.VoidType(),
                                 [rows[t], p, i32(align), used])
                else:
                    builder.store(rows[t], p, align=align)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def transpose16(typingctx, dst, dst_off, dst_stride, src, src_off, src_stride, n_rows,
                n_cols):
    """``dst[dst_off + t d:dst_off + t d + 16] = src[src_off + t::src_stride][:16]`` for
    t < n_cols (d = ``dst_stride``, at least 16): the columns of a 16 × 16 block of
    ``src`` (its rows i < n_rows at src_off + i src_stride, their first n_cols elements;
    zeros in their place past either) stored as rows of 16 elements, d apart.

    One masked load per row of the block, the transpose in registers (four stages of
    16 shuffles, each interleaving blocks of 8, 4, 2 and then 1 lanes of two rows) and
    one store per row of ``dst``: no element of ``src`` outside the block is read. The
    narrow forward pass's copy of W^T as a loop, element by element, took about a fifth
    of a 10 × 10 × 30 layer's pass (float64, sampled)."""
    return _transpose16("transpose16", dst, dst_off, dst_stride, src, src_off, src_stride,
                        n_rows, n_cols, False)


@intrinsic
def transpose16_exact(typingctx, dst, dst_off, dst_stride, src, src_off, src_stride,
                      n_rows, n_cols):
    """:func:`transpose16` writing only the block's transpose: of each row t < n_cols of
    ``dst`` its first n_rows elements, with a masked store (any ``dst_stride``: rows of
    ``dst`` may be as short as n_rows). No element of ``dst`` outside the n_cols × n_rows
    block is written."""
    return _transpose16("transpose16_exact", dst, dst_off, dst_stride, src, src_off,
                        src_stride, n_rows, n_cols, True)


def _each_row(builder, row, n, align, op):
    """Rows j < n of :func:`_columns16`'s array replaced in place by ``op(row j)``."""
    with cgutils.for_range(builder, n) as loop:
        p = row(loop.index)
        builder.store(op(builder.load(p, align=align)), p, align=align)


def _columns16(name, a, n, emit):
    """Typing and code generation of the operations on the first ``n`` rows of 16
    elements of ``a`` (row j at 16 j): ``emit(builder, row, n, vty)`` with ``row(j)`` the
    pointer to row j (an i64 j) and ``n`` an i64."""
    _contiguous_1d(a, name)

    def codegen(context, builder, sig, args):
        vty, align = _vector_of(context, sig.args[0].dtype, 16)
        arr = make_array(sig.args[0])(context, builder, args[0])

        def row(j):
            return builder.bitcast(cgutils.gep(builder, arr.data,
                                               builder.mul(j, j.type(16))),
                                   vty.as_pointer())

        emit(builder, row, context.cast(builder, args[1], sig.args[1], types.int64), vty,
             align)
        return context.get_dummy_value()

    return types.none(a, n), codegen


@intrinsic
def columns_sub_max16(typingctx, a, n):
    """Per lane i < 16 of the rows j < n of 16 elements of ``a`` (row j at 16 j, n >= 1):
    m_i = max_j a[16 j + i], taken in order of j as ``m = x if x > m else m`` from
    m = a[i] (a NaN in row 0 stays; one in a later row is passed over), then
    a[16 j + i] -= m_i for every row: a softmax's shifted inputs, 16 examples at once."""

    def emit(builder, row, n, vty, align):
        i64 = ir.IntType(64)
        best = cgutils.alloca_once_value(builder, builder.load(row(i64(0)), align=align))
        with cgutils.for_range_slice(builder, i64(1), n, i64(1)) as (j, _):
            x, m = builder.load(row(j), align=align), builder.load(best)
            builder.store(builder.select(builder.fcmp_ordered(">", x, m), x, m), best)
        m = builder.load(best)
        _each_row(builder, row, n, align, lambda x: builder.fsub(x, m))

    return _columns16("columns_sub_max16", a, n, emit)


@intrinsic
def columns_normalise16(typingctx, a, n):
    """Per lane i < 16 of the rows j < n of 16 elements of ``a`` (row j at 16 j):
    t_i = 0 a[i] + Σ_j a[16 j + i], summed in order of j (as :func:`~fastbp.kernels.layers.
    _row_sum` sums a row), then a[16 j + i] *= 1 / t_i: a softmax's quotients, 16
    examples at once."""

    def emit(builder, row, n, vty, align):
        i64 = ir.IntType(64)
        zero = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * 16)
        one = ir.Constant(vty, [ir.Constant(vty.element, 1.0)] * 16)
        total = cgutils.alloca_once_value(
            builder, builder.fmul(zero, builder.load(row(i64(0)), align=align)))
        with cgutils.for_range(builder, n) as loop:
            x = builder.load(row(loop.index), align=align)
            builder.store(builder.fadd(builder.load(total), x), total)
        inv = builder.fdiv(one, builder.load(total))
        _each_row(builder, row, n, align, lambda x: builder.fmul(x, inv))

    return _columns16("columns_normalise16", a, n, emit)


@intrinsic
def prefetch(typingctx, a, off):
    """A hint to bring the cache line of ``a[off]`` closer (an offset past the array is
    harmless: a prefetch never faults)."""
    _contiguous_1d(a, "prefetch")

    def codegen(context, builder, sig, args):
        arr = make_array(sig.args[0])(context, builder, args[0])
        off = context.cast(builder, args[1], sig.args[1], types.intp)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        p = builder.bitcast(builder.gep(arr.data, [off]), i8p)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        builder.call(fn, [p, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return types.none(a, off), codegen

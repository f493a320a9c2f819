"""Fixed-width rows for the narrow-layer kernels: stack scratch and masked copies.

A layer whose rows are at most :data:`WIDTH` wide (the inputs of W1's and W2's second
and third layers: 16 or 30) is too narrow for loops over a run-time row length: LLVM's
vector loop wants 64 elements, and a 16-wide row runs its remainder loops. The kernels
of :mod:`fastbp.kernels.narrow` instead work on rows of a compile-time width (16 or 32
elements) whose sums stay in vector registers; what they need to move rows of ``n``
elements in and out of such fixed-width rows is here:

- :func:`scratch`: a fixed-size array on the stack (no allocation, no reference count),
  which LLVM keeps in registers where it can.
- :func:`load_prefix` / :func:`store_prefix`: copy the first ``n`` elements of a row
  with one masked vector load or store (the lanes past ``n`` are zero in a loaded row
  and untouched in a stored one), so no element beyond a row is read or written.

None of them checks bounds (the callers pass offsets of rows inside the arrays).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.core.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

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
    frm, mask, vty, align)`` works on the rows at the two w-lane pointers."""
    w = _width(width, name)
    if w is None:
        return None
    _contiguous_1d(dst, name)
    _contiguous_1d(src, name)
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


def _load_row(context, builder, sig, args, to, frm, mask, vty, align):
    zeros = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * vty.count)
    vec = _masked_call(builder, "load", vty, [frm, ir.IntType(32)(align), mask, zeros])
    builder.store(vec, to, align=align)


def _store_row(context, builder, sig, args, to, frm, mask, vty, align):
    vec = builder.load(frm, align=align)
    _masked_call(builder, "store", ir.VoidType(), [vec, to, ir.IntType(32)(align), mask])


@intrinsic
def load_prefix(typingctx, dst, dst_off, src, src_off, n, width):
    """``dst[dst_off:dst_off + width] = src[src_off:src_off + n]`` followed by zeros,
    reading no element of ``src`` past the n-th (0 <= n <= width)."""
    codegen = _prefix_copy("load_prefix", dst, src, width, _load_row)
    return codegen and (types.none(dst, dst_off, src, src_off, n, width), codegen)


@intrinsic
def store_prefix(typingctx, dst, dst_off, src, src_off, n, width):
    """``dst[dst_off:dst_off + n] = src[src_off:src_off + n]`` with one masked store of
    ``width`` lanes, writing no element of ``dst`` past the n-th (0 <= n <= width)."""
    codegen = _prefix_copy("store_prefix", dst, src, width, _store_row)
    return codegen and (types.none(dst, dst_off, src, src_off, n, width), codegen)


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
    w = vty.count
    align = ir.IntType(32)(align)
    keep = context.cast(builder, args[6], sig.args[6], types.boolean)
    zeros = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * w)
    none = ir.Constant(mask.type, [ir.Constant(ir.IntType(1), 0)] * w)
    old = _masked_call(builder, "load", vty, [to, align, builder.select(keep, mask, none),
                                              zeros])
    row = _masked_call(builder, "load", vty, [frm, align, mask, zeros])
    splat = builder.insert_element(ir.Constant(vty, ir.Undefined), args[5],
                                   ir.IntType(32)(0))
    splat = builder.shuffle_vector(splat, ir.Constant(vty, ir.Undefined),
                                   ir.Constant(ir.VectorType(ir.IntType(32), w), [0] * w))
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                         f"llvm.fma.{_vector_name(vty)}")
    _masked_call(builder, "store", ir.VoidType(),
                 [builder.call(fma, [splat, row, old]), to, align, mask])


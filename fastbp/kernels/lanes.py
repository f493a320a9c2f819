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
    """<width x i1>: lane i set when i < n (0 <= n <= width)."""
    itype = ir.IntType(width)
    n = builder.trunc(n, ir.IntType(32)) if n.type.width > 32 else n
    ones = ir.Constant(ir.IntType(64), -1)
    bits = builder.lshr(ones, builder.sub(ir.Constant(ir.IntType(64), 64),
                                          builder.zext(n, ir.IntType(64))))
    # n == 0: lshr by 64 is poison; select 0 instead
    bits = builder.select(builder.icmp_unsigned("==", n, n.type(0)),
                          ir.Constant(ir.IntType(64), 0), bits)
    return builder.bitcast(builder.trunc(bits, itype), ir.VectorType(ir.IntType(1), width))


def _bits(ety):
    return 32 if isinstance(ety, ir.FloatType) else 64


def _vector_name(vty):
    return f"v{vty.count}f{_bits(vty.element)}"


@intrinsic
def load_prefix(typingctx, dst, dst_off, src, src_off, n, width):
    """``dst[dst_off:dst_off + width] = src[src_off:src_off + n]`` followed by zeros,
    reading no element of ``src`` past the n-th (0 <= n <= width)."""
    w = _width(width, "load_prefix")
    if w is None:
        return None
    _contiguous_1d(dst, "load_prefix")
    _contiguous_1d(src, "load_prefix")
    if dst.dtype != src.dtype:
        raise TypingError("load_prefix: dst and src must have one dtype")

    def codegen(context, builder, sig, args):
        ety = context.get_data_type(sig.args[0].dtype)
        vty = ir.VectorType(ety, w)
        to = builder.bitcast(_row_ptr(context, builder, sig.args[0], args[0], args[1],
                                      sig.args[1]), vty.as_pointer())
        frm = builder.bitcast(_row_ptr(context, builder, sig.args[2], args[2], args[3],
                                       sig.args[3]), vty.as_pointer())
        mask = _mask(builder, context.cast(builder, args[4], sig.args[4], types.int64), w)
        align = ir.IntType(32)(context.get_abi_sizeof(ety))
        fnty = ir.FunctionType(vty, [frm.type, ir.IntType(32), mask.type, vty])
        fn = cgutils.get_or_insert_function(builder.module, fnty,
                                            f"llvm.masked.load.{_vector_name(vty)}.p0")
        vec = builder.call(fn, [frm, align, mask, ir.Constant(vty, [ir.Constant(ety, 0.0)] * w)])
        builder.store(vec, to, align=context.get_abi_sizeof(ety))
        return context.get_dummy_value()

    return types.none(dst, dst_off, src, src_off, n, width), codegen


@intrinsic
def store_prefix(typingctx, dst, dst_off, src, src_off, n, width):
    """``dst[dst_off:dst_off + n] = src[src_off:src_off + n]`` with one masked store of
    ``width`` lanes, writing no element of ``dst`` past the n-th (0 <= n <= width)."""
    w = _width(width, "store_prefix")
    if w is None:
        return None
    _contiguous_1d(dst, "store_prefix")
    _contiguous_1d(src, "store_prefix")
    if dst.dtype != src.dtype:
        raise TypingError("store_prefix: dst and src must have one dtype")

    def codegen(context, builder, sig, args):
        ety = context.get_data_type(sig.args[0].dtype)
        vty = ir.VectorType(ety, w)
        to = builder.bitcast(_row_ptr(context, builder, sig.args[0], args[0], args[1],
                                      sig.args[1]), vty.as_pointer())
        frm = builder.bitcast(_row_ptr(context, builder, sig.args[2], args[2], args[3],
                                       sig.args[3]), vty.as_pointer())
        vec = builder.load(frm, align=context.get_abi_sizeof(ety))
        mask = _mask(builder, context.cast(builder, args[4], sig.args[4], types.int64), w)
        align = ir.IntType(32)(context.get_abi_sizeof(ety))
        fnty = ir.FunctionType(ir.VoidType(), [vty, to.type, ir.IntType(32), mask.type])
        fn = cgutils.get_or_insert_function(builder.module, fnty,
                                            f"llvm.masked.store.{_vector_name(vty)}.p0")
        builder.call(fn, [vec, to, align, mask])
        return context.get_dummy_value()

    return types.none(dst, dst_off, src, src_off, n, width), codegen

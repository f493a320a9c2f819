"""Views of C-contiguous buffers with their shapes changed, built without a call.

Numba compiles ``a.reshape(shape)`` to a general routine: it normalises the shape, then
calls a C helper that works out the strides for any layout (about 20 ns). A training step
of a small network takes some thirty such views of its flat buffers, which is 3% of
W2's step. The views here are only ever of C-contiguous arrays, whose new strides follow
from the shape alone, so they are made in a few instructions.

Neither checks its bounds: the callers (the kernels and :mod:`fastbp.kernels.flat`)
compute offsets and sizes from the layout of buffers that :class:`fastbp.Network`
allocated to fit them.
"""

from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.core.extending import intrinsic
from numba.core.imputils import impl_ret_borrowed
from numba.np.arrayobj import make_array, populate_array


def _contiguous(ty, ndim, name):
    if not (isinstance(ty, types.Array) and ty.ndim == ndim and ty.layout == "C"):
        raise TypingError(f"{name}: expected a C-contiguous {ndim}-D array, got {ty}")


@intrinsic
def mat(typingctx, buf, off, rows, cols):
    """``buf[off:off + rows * cols].reshape(rows, cols)`` for a C-contiguous 1-D ``buf``."""
    _contiguous(buf, 1, "mat")
    for arg in (off, rows, cols):
        if not isinstance(arg, types.Integer):
            raise TypingError(f"mat: offsets and sizes must be integers, got {arg}")
    retty = types.Array(buf.dtype, 2, "C")

    def codegen(context, builder, sig, args):
        src = make_array(sig.args[0])(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        off_, rows_, cols_ = (context.cast(builder, v, t, types.intp)
                              for v, t in zip(args[1:], sig.args[1:]))
        itemsize = intp(context.get_abi_sizeof(context.get_data_type(buf.dtype)))
        out = make_array(retty)(context, builder)
        populate_array(out, data=cgutils.gep(builder, src.data, off_), shape=[rows_, cols_],
                       strides=[builder.mul(cols_, itemsize), itemsize], itemsize=itemsize,
                       meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, retty, out._getvalue())

    return retty(buf, off, rows, cols), codegen


@intrinsic
def flat(typingctx, a):
    """``a.reshape(a.size)`` for a C-contiguous 2-D ``a``."""
    _contiguous(a, 2, "flat")
    retty = types.Array(a.dtype, 1, "C")

    def codegen(context, builder, sig, args):
        src = make_array(sig.args[0])(context, builder, args[0])
        rows, cols = cgutils.unpack_tuple(builder, src.shape, 2)
        out = make_array(retty)(context, builder)
        populate_array(out, data=src.data, shape=[builder.mul(rows, cols)],
                       strides=[src.itemsize], itemsize=src.itemsize, meminfo=src.meminfo,
                       parent=src.parent)
        return impl_ret_borrowed(context, builder, retty, out._getvalue())

    return retty(a), codegen

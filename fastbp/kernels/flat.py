"""Whole-network drivers over flat buffers: one compiled signature per dtype.

All parameters live in one 1-D buffer ``theta`` laid out layer by layer as
``[W^1, b^1, W^2, b^2, ...]`` (``W`` row-major, shape ``(n_l, n_{l-1})``); the gradients
``grad`` and momentum velocities ``vel`` share that layout. The weighted inputs, the
activations and the errors δ of a minibatch live in ``zbuf``, ``abuf`` and ``dbuf``,
layer l taking a block of ``batch * n_l`` entries. The drivers slice C-contiguous 2-D
views out of these buffers, so the number of layers is a run-time value: a network of any
depth uses the same compiled code.

``par[l]`` holds, for layer l, which kernel runs its forward pass, its backward (BP2)
and its gradient step (columns 0, 1, 2: ``BLOCKED``, ``PARALLEL``, ``NARROW`` or, for
BP2 and the gradient step, ``COLUMNS``, for the forward pass and BP2 also ``PACKED``,
of :mod:`fastbp.kernels.codes`), and ``par[0, 3]``
whether the first layer's SGD step feeds the next minibatch forward in the same
parallel region, ``par[l, 4]`` whether layer l's narrow gradient step first packs δ
into the workspace ``pbuf``: chosen from the shapes by the caller. The drivers never
allocate: they are compiled without reference counting (``fastbp._config.NO_REFCOUNT``),
so the views they slice cost no atomic operations.

The drivers come in two builds (:func:`for_codes` picks one): with the branches that run
the packed kernels and, for networks none of whose layers runs one, without them.
"""

from numba import njit

from .._config import NO_REFCOUNT, SERIAL
from .blocked import (
    _named,
    backward_par,
    backward_ser,
    forward_par,
    forward_ser,
    gradient_step_par,
    output_delta_cost,
    step_forward_par,
)
from .codes import COLUMNS, NARROW, PACKED, PARALLEL
from .narrow import (
    backward_columns,
    backward_narrow,
    backward_packed,
    forward_narrow,
    forward_packed,
    gradient_step_columns,
    gradient_step_narrow,
)
from .views import mat

#: Whether a build of the drivers has the branches that run the packed kernels: Numba
#: drops a branch on a constant before compiling it, so the build without them
#: (:func:`for_codes`) does not compile those kernels either.
PACKING = True


@njit(inline="always", **SERIAL)
def _offsets(sizes, batch, l):
    """Where layer l's W and b start in ``theta`` and its block starts in a workspace."""
    o = 0
    a = 0
    for i in range(l):
        o += sizes[i + 1] * sizes[i] + sizes[i + 1]
        a += batch * sizes[i + 1]
    return o, o + sizes[l + 1] * sizes[l], a


@njit(inline="always", **SERIAL)
def _layer_input(X, rows, abuf, ident, ao, batch, n_in, l):
    """Layer l's input rows: the training set through ``rows`` for the first layer, the
    previous layer's activations (just below layer l's block) for the others."""
    if l == 0:
        return X, rows
    return mat(abuf, ao - batch * n_in, batch, n_in), ident


def forward(theta, sizes, X, rows, m, batch, hidden, output, par, ident, zbuf, abuf, first):
    """Feed examples ``X[rows[s]]``, s < m, through the layers from ``first`` (0, or 1
    when the first layer's are already there) into zbuf/abuf."""
    L = sizes.shape[0] - 1
    for l in range(first, L):
        n_out, n_in = sizes[l + 1], sizes[l]
        wo, bo, ao = _offsets(sizes, batch, l)
        W = mat(theta, wo, n_out, n_in)
        b = theta[bo:bo + n_out]
        Z = mat(zbuf, ao, batch, n_out)
        A = mat(abuf, ao, batch, n_out)
        act = output if l == L - 1 else hidden
        A_prev, r = _layer_input(X, rows, abuf, ident, ao, batch, n_in, l)
        if par[l, 0] == PARALLEL:
            forward_par(A_prev, r, W, b, act, m, Z, A)
        elif par[l, 0] == NARROW:
            forward_narrow(A_prev, r, W, b, act, m, Z, A)
        elif PACKING and par[l, 0] == PACKED:
            forward_packed(A_prev, r, W, b, act, m, Z, A)
        else:
            forward_ser(A_prev, r, W, b, act, m, Z, A)


@njit(**NO_REFCOUNT)
def costs(sizes, Y, rows, m, batch, output, cost, zbuf, abuf, dbuf, out):
    """After :func:`forward`: the cost C_x of each of the m examples into ``out``, and
    BP1's δ^L into the output layer's block of ``dbuf``."""
    L = sizes.shape[0] - 1
    o = _offsets(sizes, batch, L - 1)[2]
    n_L = sizes[L]
    output_delta_cost(
        mat(abuf, o, batch, n_L), mat(zbuf, o, batch, n_L), Y, rows, output, cost, m,
        mat(dbuf, o, batch, n_L), out,
    )


def backward(theta, grad, vel, sizes, X, Y, rows, m, batch, hidden, output, cost, par, ident,
             zbuf, abuf, dbuf, pbuf, sample_costs, lr, momentum, decay, apply, rows_next,
             m_next):
    """After :func:`forward`: BP1 and the costs, then BP2 and BP3/BP4 layer by layer from
    the output down, each layer's SGD step applied (when ``apply``) right after its δ has
    been carried below it. ``grad`` receives the minibatch's mean gradients (but for
    the weights of a plain SGD step, which goes straight into W: see
    :func:`fastbp.kernels.blocked._gradient_step`).

    When the step is applied, ``m_next`` > 0 and ``par[0, 3]`` is set, the first layer's
    step also feeds the next minibatch ``X[rows_next]`` through that layer, in the same
    parallel region; returns whether it did. ``pbuf`` is the narrow gradient steps'
    workspace (:func:`fastbp.kernels.narrow.panel_size`)."""
    L = sizes.shape[0] - 1
    costs(sizes, Y, rows, m, batch, output, cost, zbuf, abuf, dbuf, sample_costs)
    real = theta.dtype.type
    scale = real(1.0) / real(m)
    for l in range(L - 1, -1, -1):
        n_out, n_in = sizes[l + 1], sizes[l]
        wo, bo, ao = _offsets(sizes, batch, l)
        W = mat(theta, wo, n_out, n_in)
        D = mat(dbuf, ao, batch, n_out)
        A_prev, r = _layer_input(X, rows, abuf, ident, ao, batch, n_in, l)
        if l > 0:
            Z_prev = mat(zbuf, ao - batch * n_in, batch, n_in)
            D_prev = mat(dbuf, ao - batch * n_in, batch, n_in)
            if par[l, 1] == PARALLEL:
                backward_par(D, W, Z_prev, A_prev, hidden, m, D_prev)
            elif par[l, 1] == NARROW:
                backward_narrow(D, W, Z_prev, A_prev, hidden, m, D_prev)
            elif par[l, 1] == COLUMNS:
                backward_columns(D, W, Z_prev, A_prev, hidden, m, D_prev)
            elif PACKING and par[l, 1] == PACKED:
                backward_packed(D, W, Z_prev, A_prev, hidden, m, D_prev)
            else:
                backward_ser(D, W, Z_prev, A_prev, hidden, m, D_prev)
        b = theta[bo:bo + n_out]
        gW = mat(grad, wo, n_out, n_in)
        gb = grad[bo:bo + n_out]
        VW = mat(vel, wo, n_out, n_in)
        Vb = vel[bo:bo + n_out]
        if l == 0 and apply and m_next > 0 and par[0, 3]:
            act = output if L == 1 else hidden
            step_forward_par(D, A_prev, r, m, scale, W, b, gW, gb, VW, Vb, lr, momentum,
                             decay, rows_next, m_next, act, mat(zbuf, 0, batch, n_out),
                             mat(abuf, 0, batch, n_out))
            return True
        panel = pbuf if par[l, 4] else pbuf[:0]  # the narrow step packs δ into pbuf
        if par[l, 2] == PARALLEL:
            gradient_step_par(D, A_prev, r, m, scale, W, b, gW, gb, VW, Vb, lr, momentum,
                              decay, apply, panel)
        elif par[l, 2] == COLUMNS:
            gradient_step_columns(D, A_prev, r, m, scale, W, b, gW, gb, VW, Vb, lr,
                                  momentum, decay, apply, panel)
        else:
            gradient_step_narrow(D, A_prev, r, m, scale, W, b, gW, gb, VW, Vb, lr, momentum,
                                 decay, apply, panel)
    return False


def train_epoch(theta, grad, vel, sizes, X, Y, order, batch, hidden, output, cost, par,
                ident, zbuf, abuf, dbuf, pbuf, sample_costs, lr, momentum, decay):
    """One epoch of minibatch SGD over the examples in ``order`` (the caller shuffles).

    Minibatches of ``batch`` examples, the last one partial, are read in place through
    ``order``; each makes one step. Returns the float64 sum, in example order, of each
    example's cost measured before its minibatch's step.
    """
    n = order.shape[0]
    total = 0.0
    ahead = False  # whether the first layer already fed this minibatch forward
    for start in range(0, n, batch):
        m = min(batch, n - start)
        rows = order[start:start + m]
        forward(theta, sizes, X, rows, m, batch, hidden, output, par, ident, zbuf, abuf,
                1 if ahead else 0)
        nxt = min(start + batch, n)
        m_next = min(batch, n - nxt)
        ahead = backward(theta, grad, vel, sizes, X, Y, rows, m, batch, hidden, output,
                         cost, par, ident, zbuf, abuf, dbuf, pbuf, sample_costs, lr,
                         momentum, decay, True, order[nxt:nxt + m_next], m_next)
        for s in range(m):
            total += sample_costs[s]
    return total


def _build(packing):
    """:func:`forward`, :func:`backward` and :func:`train_epoch` compiled with
    :data:`PACKING` set to ``packing``, each calling the others of its build (the build
    without it under names of its own, see :func:`~fastbp.kernels.blocked._named`)."""
    ns = dict(globals(), PACKING=packing)
    suffix = "" if packing else "_unpacked"
    for f in (forward, backward, train_epoch):  # each before its callers
        ns[f.__name__] = njit(**NO_REFCOUNT)(_named(f, suffix, ns))
    return ns["forward"], ns["backward"], ns["train_epoch"]


forward_unpacked, backward_unpacked, train_epoch_unpacked = _build(False)
forward, backward, train_epoch = _build(True)


def for_codes(par):
    """``(forward, backward, train_epoch)`` for the kernel choices ``par``: the build
    without the packed kernels' branches unless a layer runs one of them. The first fit
    of a network none of whose layers packs compiles neither packed kernel (an 8-16-4
    network's, float64: 23 s cold against 28-29 s)."""
    if (par[:, :2] == PACKED).any():
        return forward, backward, train_epoch
    return forward_unpacked, backward_unpacked, train_epoch_unpacked

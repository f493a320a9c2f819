"""One training epoch of a tiny network, example by example in scalar loops.

For a network such as 4-4-4-1 trained in minibatches of four, a step is a few hundred
multiply-adds: the time goes into calling the layer kernels and slicing their workspace
views, not into arithmetic. :func:`train_epoch` runs the whole step in one function with
plain index arithmetic on the flat buffers instead (the layout of
:mod:`fastbp.kernels.flat`): for every example, each layer's weighted inputs
z^l_j = Σ_k w^l_jk a^{l-1}_k + b^l_j and activations; BP1 and the costs; then from the
output layer down, BP2 δ^{l-1}_k = (Σ_j w^l_jk δ^l_j) σ'(z^{l-1}_k), and BP3/BP4 averaged
over the minibatch with the SGD step of the layer applied at once.

The network uses it when a minibatch's forward pass costs at most
``fastbp._config.TINY_MAX_WORK`` multiply-adds; larger layers are faster through the
register-blocked kernels. It is serial, so the thread count cannot change its results.
"""

from numba import njit

from .._config import SERIAL
from .blocked import output_delta_cost
from .codes import SOFTMAX
from .layers import activate, derivative, sgd, softmax_row


@njit(**SERIAL)
def train_epoch(theta, grad, vel, sizes, X, Y, order, batch, hidden, output, cost, zbuf,
                abuf, dbuf, sample_costs, lr, momentum, decay):
    """One epoch of minibatch SGD over the examples in ``order`` (the caller shuffles).

    Arguments and result as for :func:`fastbp.kernels.flat.train_epoch`, without the
    parallel flags and the identity rows: the float64 sum, in example order, of each
    example's cost measured before its minibatch's step.
    """
    n = order.shape[0]
    L = sizes.shape[0] - 1
    zero = theta.dtype.type(0)
    n_L = sizes[L]
    total = 0.0
    for start in range(0, n, batch):
        m = min(batch, n - start)
        rows = order[start:start + m]
        # feedforward; wo, ao end past the output layer's W, b and workspace block
        wo = 0
        ao = 0
        for l in range(L):
            n_in, n_out = sizes[l], sizes[l + 1]
            bo = wo + n_out * n_in
            act = output if l == L - 1 else hidden
            for s in range(m):
                zs = ao + s * n_out
                for j in range(n_out):
                    acc = zero
                    w = wo + j * n_in
                    if l == 0:
                        r = rows[s]
                        for k in range(n_in):
                            acc += theta[w + k] * X[r, k]
                    else:
                        p = ao - batch * n_in + s * n_in
                        for k in range(n_in):
                            acc += theta[w + k] * abuf[p + k]
                    z = acc + theta[bo + j]
                    zbuf[zs + j] = z
                    if act != SOFTMAX:
                        abuf[zs + j] = activate(act, z)
                if act == SOFTMAX:
                    softmax_row(zbuf[zs:zs + n_out], abuf[zs:zs + n_out], n_out)
            wo = bo + n_out
            ao += batch * n_out
        # BP1 and the costs
        oo = ao - batch * n_L
        output_delta_cost(
            abuf[oo:ao].reshape((batch, n_L)), zbuf[oo:ao].reshape((batch, n_L)), Y, rows,
            output, cost, m, dbuf[oo:ao].reshape((batch, n_L)), sample_costs,
        )
        scale = theta.dtype.type(1) / theta.dtype.type(m)
        # from the output layer down: BP2 below the layer, then its BP3/BP4 and SGD step
        for l in range(L - 1, -1, -1):
            n_in, n_out = sizes[l], sizes[l + 1]
            ao -= batch * n_out
            bo = wo - n_out
            wo = bo - n_out * n_in
            pa = ao - batch * n_in  # the layer below's workspace block (l > 0)
            if l > 0:
                for s in range(m):
                    for k in range(n_in):
                        acc = zero
                        for j in range(n_out):
                            acc += theta[wo + j * n_in + k] * dbuf[ao + s * n_out + j]
                        q = pa + s * n_in + k
                        dbuf[q] = acc * derivative(hidden, zbuf[q], abuf[q])
            for j in range(n_out):
                gb = zero
                for s in range(m):
                    gb += dbuf[ao + s * n_out + j]
                gb *= scale
                grad[bo + j] = gb
                for k in range(n_in):
                    acc = zero
                    if l == 0:
                        for s in range(m):
                            acc += dbuf[ao + s * n_out + j] * X[rows[s], k]
                    else:
                        for s in range(m):
                            acc += dbuf[ao + s * n_out + j] * abuf[pa + s * n_in + k]
                    g = acc * scale
                    i = wo + j * n_in + k
                    grad[i] = g
                    theta[i], v = sgd(theta[i], vel[i], g + decay * theta[i], lr, momentum)
                    if momentum != zero:
                        vel[i] = v
                theta[bo + j], v = sgd(theta[bo + j], vel[bo + j], gb, lr, momentum)
                if momentum != zero:
                    vel[bo + j] = v
        for s in range(m):
            total += sample_costs[s]
    return total

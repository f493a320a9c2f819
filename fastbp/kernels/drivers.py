"""Serial drivers that chain the per-layer kernels over a whole network.

The parameters and workspaces arrive as tuples of arrays (one entry per layer), so one
compiled call runs a forward pass, a backward pass, or a whole epoch of minibatch SGD
with no Python, no allocation and no dispatch between steps. A driver is compiled once
per (depth, dtype).

Tuple layout for a network with L weight layers (``len(sizes) == L + 1``):
``Ws[l]``, ``bs[l]`` parameters of layer l+1 (shapes ``(n_{l+1}, n_l)``, ``(n_{l+1},)``);
``As[0]`` the input minibatch and ``As[l+1]``, ``Zs[l]``, ``Ds[l]`` the activations,
weighted inputs and errors δ of layer l+1; ``gWs``, ``gbs`` the gradients and ``Vws``,
``Vbs`` the momentum velocities, shaped like the parameters.
"""

from numba import njit

from .._config import SERIAL
from .layers import (
    backward_delta,
    cost_per_sample,
    forward_layer,
    gather_rows,
    output_delta,
    sgd_update,
    weight_gradients,
)


@njit(**SERIAL)
def forward_pass(Ws, bs, hidden, output, m, Zs, As):
    """Feed the first ``m`` rows of ``As[0]`` forward through every layer."""
    L = len(Ws)
    for l in range(L):
        act = output if l == L - 1 else hidden
        forward_layer(As[l], Ws[l], bs[l], act, m, Zs[l], As[l + 1])


@njit(**SERIAL)
def backward_pass(Ws, hidden, output, cost, Y, m, Zs, As, Ds, gWs, gbs):
    """BP1 at the output, BP2 down to the first hidden layer, BP3/BP4 for every layer.

    The gradients are the mean over the ``m`` examples.
    """
    L = len(Ws)
    output_delta(As[L], Zs[L - 1], Y, output, cost, m, Ds[L - 1])
    real = Ws[0].dtype.type
    scale = real(1.0) / real(m)
    for l in range(L - 1, -1, -1):
        weight_gradients(Ds[l], As[l], scale, m, gWs[l], gbs[l])
        if l > 0:
            backward_delta(Ds[l], Ws[l], Zs[l - 1], As[l], hidden, m, Ds[l - 1])


@njit(**SERIAL)
def sample_costs(Ws, Y, output, cost, m, Zs, As, out):
    """Per-example cost of the first ``m`` rows after a forward pass."""
    L = len(Ws)
    cost_per_sample(As[L], Zs[L - 1], Y, output, cost, m, out)


@njit(**SERIAL)
def gradients(Ws, bs, hidden, output, cost, Y, m, Zs, As, Ds, gWs, gbs):
    """Forward and backward pass: the mean gradients of the first ``m`` examples."""
    forward_pass(Ws, bs, hidden, output, m, Zs, As)
    backward_pass(Ws, hidden, output, cost, Y, m, Zs, As, Ds, gWs, gbs)


@njit(**SERIAL)
def train_epoch(
    X, Y, order, batch_size, Ws, bs, Vws, Vbs, lr, momentum, decay,
    hidden, output, cost, Zs, As, Ds, gWs, gbs, Yb, costs,
):
    """One epoch of minibatch SGD over the examples in ``order``.

    The examples are taken in the order given (the caller shuffles), ``batch_size`` at a
    time with a last, partial batch kept; each minibatch makes one step
    w := w - η ∂C/∂w (with momentum and L2 decay as in :func:`sgd_update`).

    Returns the sum over all examples of each example's cost, measured in the forward
    pass of its minibatch, before that minibatch's step (as Keras and scikit-learn
    report a training loss). The sum runs in float64 in example order.
    """
    n = order.shape[0]
    L = len(Ws)
    total = 0.0
    no_decay = decay * 0  # biases are not decayed
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        gather_rows(X, order, start, m, As[0])
        gather_rows(Y, order, start, m, Yb)
        forward_pass(Ws, bs, hidden, output, m, Zs, As)
        cost_per_sample(As[L], Zs[L - 1], Yb, output, cost, m, costs)
        for s in range(m):
            total += costs[s]
        backward_pass(Ws, hidden, output, cost, Yb, m, Zs, As, Ds, gWs, gbs)
        for l in range(L):
            sgd_update(Ws[l], gWs[l], Vws[l], lr, momentum, decay)
            n_l = bs[l].shape[0]
            sgd_update(
                bs[l].reshape((1, n_l)), gbs[l].reshape((1, n_l)), Vbs[l].reshape((1, -1)),
                lr, momentum, no_decay,
            )
    return total

"""One training epoch of a tiny network in one function, examples in SIMD lanes.

For a network such as 4-4-4-1 trained in minibatches of four, a step is a few hundred
multiply-adds: the time goes into calling the layer kernels and slicing their workspace
views, not into arithmetic. :func:`train_epoch` runs the whole epoch in one function with
plain index arithmetic on the flat buffers instead. Its workspaces are transposed with
respect to :mod:`fastbp.kernels.flat`: layer l's block holds z^l_j (a^l_j, δ^l_j) of
example s at ``j * batch + s``, so that four examples sit side by side and every sum
below runs for four examples at once (per term one SIMD multiply, then one addition:
these short sums are chains of dependent additions, and an addition waits less than a
fused multiply-add: W3's epoch ran 1.13-1.19x faster in float32 and 0.98-1.17x in
float64 than with ``fma``; both are exact IEEE arithmetic in the order written):

- feedforward z^l_j = Σ_k w^l_jk a^{l-1}_k + b^l_j, then a^l = σ(z^l) over the layer's
  whole block in one loop (which vectorises, e^x included: :func:`.layers.exp`);
- BP1 and the costs, through the output layer's block viewed as (batch, n_L);
- from the output layer down, BP2 δ^{l-1}_k = (Σ_j w^l_jk δ^l_j) σ'(z^{l-1}_k), then
  BP3/BP4 averaged over the minibatch (∂C/∂w^l_jk a sum over examples, contiguous in
  this layout) with the layer's SGD step applied at once.

The first layer reads the minibatch's inputs transposed into ``xt``. The network uses
this path when a minibatch's forward pass costs at most
``fastbp._config.TINY_MAX_WORK`` multiply-adds; larger layers are faster through the
register-blocked kernels. It is serial, so the thread count cannot change its results.
"""

import numpy as np
from numba import njit

from .._config import NO_REFCOUNT, SERIAL
from .blocked import output_delta_cost
from .codes import SOFTMAX
from .layers import activate_range, derivative_scale, sgd, sgd_range, softmax_row


#: Indices are cast to unsigned: Numba wraps a negative signed index around, a test and
#: select at every access unless the index is a loop counter from 0, and that kept
#: W3's epoch 1.6x slower.
_u = np.uint64


@njit(inline="always", **SERIAL)
def _weighted_sums(theta, w0, w_step, n, src, p0, dst, q0, m, batch, bias):
    """dst[q0 + s] = Σ_t theta[w0 + t w_step] src[p0 + t batch + s] + bias for the m
    examples s, four at a time (one SIMD multiply and addition per term), the rest one
    by one.

    With the weights of neuron j along a row (w_step 1) this is the feedforward sum
    z^l_j; down a column of W (w_step n_in) it is BP2's Σ_j w^l_jk δ^l_j.
    """
    zero = theta.dtype.type(0)
    s = 0
    while s + 4 <= m:
        c0 = zero
        c1 = zero
        c2 = zero
        c3 = zero
        for t in range(n):
            w = theta[_u(w0 + t * w_step)]
            p = _u(p0 + t * batch + s)
            c0 += w * src[p]
            c1 += w * src[p + _u(1)]
            c2 += w * src[p + _u(2)]
            c3 += w * src[p + _u(3)]
        q = _u(q0 + s)
        dst[q] = c0 + bias
        dst[q + _u(1)] = c1 + bias
        dst[q + _u(2)] = c2 + bias
        dst[q + _u(3)] = c3 + bias
        s += 4
    while s < m:
        c0 = zero
        for t in range(n):
            c0 += theta[_u(w0 + t * w_step)] * src[_u(p0 + t * batch + s)]
        dst[_u(q0 + s)] = c0 + bias
        s += 1


@njit(inline="always", **SERIAL)
def _forward(theta, wo, bo, n_in, n_out, src, so, m, batch, zbuf, abuf, ao, act):
    """z and a of one layer (weights at ``wo``, biases at ``bo``) for m examples.

    ``src[so + k * batch + s]`` is a^{l-1}_k of example s; z^l_j of example s goes to
    ``zbuf[ao + j * batch + s]``.
    """
    for j in range(n_out):
        _weighted_sums(theta, wo + j * n_in, 1, n_in, src, so, zbuf, ao + j * batch, m,
                       batch, theta[bo + j])
    if act == SOFTMAX:
        end = ao + n_out * batch
        for s in range(m):
            softmax_row(zbuf[ao + s:end:batch], abuf[ao + s:end:batch], n_out)
    elif m == batch:  # one contiguous block
        activate_range(act, zbuf, abuf, ao, ao + n_out * batch)
    else:
        for j in range(n_out):
            activate_range(act, zbuf, abuf, ao + j * batch, ao + j * batch + m)


@njit(inline="always", **SERIAL)
def _backward(theta, wo, n_in, n_out, dbuf, ao, pa, m, batch, zbuf, abuf, act_prev):
    """BP2 into the layer below (its block at ``pa``) from δ at ``ao``:
    δ^{l-1}_k = (Σ_j w^l_jk δ^l_j) σ'(z^{l-1}_k), the factor σ' applied to the whole
    block afterwards in one loop."""
    zero = theta.dtype.type(0)
    for k in range(n_in):
        _weighted_sums(theta, wo + k, n_in, n_out, dbuf, ao, dbuf, pa + k * batch, m, batch,
                       zero)
    if m == batch:
        derivative_scale(act_prev, dbuf, zbuf, abuf, pa, pa + n_in * batch)
    else:
        for k in range(n_in):
            derivative_scale(act_prev, dbuf, zbuf, abuf, pa + k * batch, pa + k * batch + m)


@njit(inline="always", **SERIAL)
def _sum_products(x, p, y, q, m):
    """Σ_s x[p + s] y[q + s] over m terms, in four interleaved partial sums."""
    zero = x.dtype.type(0)
    a0 = zero
    a1 = zero
    a2 = zero
    a3 = zero
    s = 0
    while s + 4 <= m:
        i, k = _u(p + s), _u(q + s)
        a0 += x[i] * y[k]
        a1 += x[i + _u(1)] * y[k + _u(1)]
        a2 += x[i + _u(2)] * y[k + _u(2)]
        a3 += x[i + _u(3)] * y[k + _u(3)]
        s += 4
    while s < m:
        a0 += x[_u(p + s)] * y[_u(q + s)]
        s += 1
    return (a0 + a1) + (a2 + a3)


@njit(**NO_REFCOUNT)
def train_epoch(theta, grad, vel, sizes, X, Y, order, batch, hidden, output, cost, zbuf,
                abuf, dbuf, xt, a_out, z_out, d_out, sample_costs, lr, momentum, decay):
    """One epoch of minibatch SGD over the examples in ``order`` (the caller shuffles).

    Arguments and result as for :func:`fastbp.kernels.flat.train_epoch`, without the
    parallel flags and the identity rows, and with the workspaces in this module's
    layout: ``xt`` holds batch × n_0 inputs; ``a_out``, ``z_out`` and ``d_out`` are
    the output layer's blocks of ``abuf``, ``zbuf`` and ``dbuf`` viewed as
    (batch, n_L) arrays (``block.reshape(n_L, batch).T``). Returns the float64 sum, in
    example order, of each example's cost measured before its minibatch's step.
    """
    n = order.shape[0]
    L = sizes.shape[0] - 1
    zero = theta.dtype.type(0)
    n_0 = sizes[0]
    total = 0.0
    for start in range(0, n, batch):
        m = min(batch, n - start)
        rows = order[start:start + m]
        for s in range(m):
            r = _u(rows[s])
            for k in range(n_0):
                xt[_u(k * batch + s)] = X[r, k]
        # feedforward; wo, ao end past the output layer's W, b and workspace block
        wo = 0
        ao = np.int64(0)  # not a literal: a literal 0 compiled activate_range again
        for l in range(L):
            n_in, n_out = sizes[l], sizes[l + 1]
            bo = wo + n_out * n_in
            act = output if l == L - 1 else hidden
            if l == 0:
                _forward(theta, wo, bo, n_in, n_out, xt, 0, m, batch, zbuf, abuf, ao, act)
            else:
                _forward(theta, wo, bo, n_in, n_out, abuf, ao - batch * n_in, m, batch,
                         zbuf, abuf, ao, act)
            wo = bo + n_out
            ao += batch * n_out
        output_delta_cost(a_out, z_out, Y, rows, output, cost, m, d_out, sample_costs)
        scale = theta.dtype.type(1) / theta.dtype.type(m)
        # from the output layer down: BP2 below the layer, then its BP3/BP4 and SGD step
        for l in range(L - 1, -1, -1):
            n_in, n_out = sizes[l], sizes[l + 1]
            ao -= batch * n_out
            bo = wo - n_out
            wo = bo - n_out * n_in
            pa = ao - batch * n_in  # the layer below's workspace block (l > 0)
            if l > 0:
                _backward(theta, wo, n_in, n_out, dbuf, ao, pa, m, batch, zbuf, abuf, hidden)
            for j in range(n_out):
                p = ao + j * batch
                gb = zero
                for s in range(m):
                    gb += dbuf[_u(p + s)]
                gb *= scale
                grad[_u(bo + j)] = gb
                w = wo + j * n_in
                for k in range(n_in):
                    if l == 0:
                        g = _sum_products(dbuf, p, xt, k * batch, m)
                    else:
                        g = _sum_products(dbuf, p, abuf, pa + k * batch, m)
                    grad[_u(w + k)] = g * scale
            sgd_range(theta, vel, grad, wo, bo, lr, momentum, decay)
            # biases inline: a call to sgd_range for a few of them cost W3 4-7%
            for j in range(bo, bo + n_out):
                theta[j], v = sgd(theta[j], vel[j], grad[j], lr, momentum)
                if momentum != zero:
                    vel[j] = v
        for s in range(m):
            total += sample_costs[s]
    return total

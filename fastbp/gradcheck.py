"""Central finite differences: the seeds' "nudge w, watch C" made exact."""

import numpy as np


def gradcheck(net, X, Y, eps=1e-6):
    """Largest error of ``net.gradients`` against central differences of ``net.cost``.

    Every parameter p is nudged in turn, and ∂C/∂p is estimated as
    (C(p + ε) - C(p - ε)) / 2ε, whose truncation error is O(ε²). The error is measured
    relative to the size of the gradient:

        max_i |g_i - ĝ_i| / max(max_i |g_i|, max_i |ĝ_i|)

    over all weights and biases, g from backpropagation and ĝ from the differences. (An
    element-wise ratio would divide round-off by gradient entries that are nearly zero.)
    Each parameter is restored bit for bit afterwards.

    Parameters
    ----------
    net : Network
    X, Y : inputs and targets, as for :meth:`Network.cost`.
    eps : float, the nudge ε.

    Returns
    -------
    float
        Around 1e-9 or less for a float64 network with ε = 1e-6 away from ReLU kinks;
        float32 networks can only reach about 1e-2.
    """
    X, Y, _ = net._check_XY(X, Y)
    grad_w, grad_b = net.gradients(X, Y)
    analytic, numeric = [], []
    for params, grads in ((net.weights, grad_w), (net.biases, grad_b)):
        for p, g in zip(params, grads):
            flat = p.reshape(-1)
            est = np.empty(flat.size)
            for i in range(flat.size):
                old = flat[i]
                flat[i] = old + eps
                c_plus = net.cost(X, Y)
                flat[i] = old - eps
                c_minus = net.cost(X, Y)
                flat[i] = old
                est[i] = (c_plus - c_minus) / (2 * eps)
            analytic.append(g.reshape(-1).astype(np.float64))
            numeric.append(est)
    analytic = np.concatenate(analytic)
    numeric = np.concatenate(numeric)
    scale = max(np.max(np.abs(analytic)), np.max(np.abs(numeric)))
    if scale == 0:
        return 0.0
    return float(np.max(np.abs(analytic - numeric)) / scale)

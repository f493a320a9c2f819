"""The NumPy reference implementation: the specification the kernels answer to.

Vectorised over the minibatch and written to be read beside the four equations of
backpropagation. Notation (Nielsen's): layer l has weights W^l of shape (n_l, n_{l-1}),
w^l_jk connecting neuron k of layer l-1 to neuron j of layer l, and biases b^l;
z^l = W^l a^{l-1} + b^l is the weighted input and a^l = σ(z^l) the activation, with
a^1 = x. For a cost C:

- BP1  δ^L = ∇_a C ⊙ σ'(z^L)
- BP2  δ^l = ((W^{l+1})^T δ^{l+1}) ⊙ σ'(z^l), i.e. δ^{l-1}_k = (Σ_j w^l_jk δ^l_j) σ'(z^{l-1}_k)
- BP3  ∂C/∂b^l_j = δ^l_j
- BP4  ∂C/∂w^l_jk = a^{l-1}_k δ^l_j

A minibatch is stored row by row: ``X`` and every ``activations[l]`` have one example
per row, so the column vectors of the equations are rows here and z^l = a^{l-1} W^T + b.
The cost of a minibatch, and so its gradient, is the mean over its examples.

``weights[i]`` and ``biases[i]`` are the parameters of layer i + 2 in the 1-based layer
numbering above (``weights[0]`` connects the input layer to the first hidden layer).
"""

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "DERIVATIVES",
    "COSTS",
    "QuadraticCost",
    "CrossEntropyCost",
    "feedforward",
    "forward",
    "cost",
    "backprop",
    "gradients",
    "sgd_step",
    "train_epoch",
]


# --- activations and their derivatives -------------------------------------------------


def sigmoid(z):
    """σ(z) = 1 / (1 + e^{-z}), evaluated without overflow for large |z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def softmax(z):
    """a_j = e^{z_j} / Σ_i e^{z_i} along each row, shifted by the row's max for safety."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


ACTIVATIONS = {
    "identity": lambda z: z,
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "softmax": softmax,
}

#: σ'(z) of each element-wise activation, from z and the activation a = σ(z).
#: Softmax has no element-wise derivative; BP1 handles its Jacobian (see the costs).
DERIVATIVES = {
    "identity": lambda z, a: np.ones_like(z),
    "sigmoid": lambda z, a: a * (1 - a),
    "tanh": lambda z, a: 1 - a * a,
    "relu": lambda z, a: (z > 0).astype(z.dtype),
}


# --- costs: fn is C_x per example, delta is BP1 ------------------------------------------


def _softplus(z):
    """ln(1 + e^z) without overflow."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


class QuadraticCost:
    """C_x = ½ Σ_j (a^L_j - y_j)², so ∇_a C = a^L - y."""

    @staticmethod
    def fn(z, a, y, output):
        """Per-example cost, shape (n_examples,)."""
        return 0.5 * np.sum((a - y) ** 2, axis=1)

    @staticmethod
    def delta(z, a, y, output):
        """BP1. For softmax the Jacobian ∂a_i/∂z_j = a_i (1[i=j] - a_j) gives
        δ_j = a_j ((a_j - y_j) - Σ_i (a_i - y_i) a_i)."""
        grad_a = a - y
        if output == "softmax":
            return a * (grad_a - np.sum(grad_a * a, axis=1, keepdims=True))
        return grad_a * DERIVATIVES[output](z, a)


class CrossEntropyCost:
    """Cross-entropy: categorical with a softmax output, per-unit binary with sigmoid.

    softmax: C_x = -Σ_j y_j ln a_j, so δ^L_j = a_j Σ_i y_i - y_j (= a_j - y_j for
    targets that sum to one).
    sigmoid: C_x = -Σ_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)], so δ^L = a^L - y: the
    σ'(z) of BP1 cancels.

    Both costs are evaluated from z^L (log-sum-exp and softplus) so that a saturated
    output gives a finite cost rather than ln 0.
    """

    @staticmethod
    def fn(z, a, y, output):
        """Per-example cost, shape (n_examples,)."""
        if output == "softmax":
            zmax = z.max(axis=1, keepdims=True)
            lse = zmax + np.log(np.sum(np.exp(z - zmax), axis=1, keepdims=True))
            return np.sum(y * (lse - z), axis=1)
        return np.sum(_softplus(z) - y * z, axis=1)

    @staticmethod
    def delta(z, a, y, output):
        """BP1."""
        if output == "softmax":
            return a * np.sum(y, axis=1, keepdims=True) - y
        return a - y


COSTS = {"quadratic": QuadraticCost, "cross_entropy": CrossEntropyCost}


# --- forward and backward passes ---------------------------------------------------------


def forward(weights, biases, X, hidden="sigmoid", output="sigmoid"):
    """Feed a minibatch forward; return the weighted inputs and the activations.

    Returns
    -------
    zs : list of arrays, zs[i] = z of layer i + 2, shape (n_examples, n_{i+2}).
    activations : list of arrays, activations[0] = X and activations[i + 1] = σ(zs[i]).
    """
    activations = [X]
    zs = []
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        z = activations[-1] @ w.T + b  # z^l = W^l a^{l-1} + b^l, one example per row
        zs.append(z)
        activations.append(ACTIVATIONS[output if i == last else hidden](z))
    return zs, activations


def feedforward(weights, biases, X, hidden="sigmoid", output="sigmoid"):
    """The network's output a^L for each row of X."""
    return forward(weights, biases, X, hidden, output)[1][-1]


def cost(weights, biases, X, Y, hidden="sigmoid", output="sigmoid", cost="quadratic"):
    """The mean over the examples of C_x."""
    zs, activations = forward(weights, biases, X, hidden, output)
    return float(np.mean(COSTS[cost].fn(zs[-1], activations[-1], Y, output)))


def backprop(weights, biases, X, Y, hidden="sigmoid", output="sigmoid", cost="quadratic"):
    """The errors δ of every layer for every example, after a forward pass.

    Returns
    -------
    zs, activations : as :func:`forward`.
    deltas : list of arrays, deltas[i] = δ of layer i + 2, shape (n_examples, n_{i+2}).
    """
    zs, activations = forward(weights, biases, X, hidden, output)
    deltas = [None] * len(weights)
    deltas[-1] = COSTS[cost].delta(zs[-1], activations[-1], Y, output)  # BP1
    for i in range(len(weights) - 1, 0, -1):
        # BP2: δ^{l-1} = ((W^l)^T δ^l) ⊙ σ'(z^{l-1})
        sp = DERIVATIVES[hidden](zs[i - 1], activations[i])
        deltas[i - 1] = (deltas[i] @ weights[i]) * sp
    return zs, activations, deltas


def gradients(weights, biases, X, Y, hidden="sigmoid", output="sigmoid", cost="quadratic"):
    """∂C/∂w and ∂C/∂b of the mean cost over the examples of (X, Y).

    Parameters
    ----------
    weights, biases : lists of arrays shaped (n_l, n_{l-1}) and (n_l,).
    X : (n_examples, n_1) inputs. Y : (n_examples, n_L) float targets.
    hidden, output, cost : activation of the hidden layers, of the output layer, and
        the cost ("quadratic" or "cross_entropy").

    Returns
    -------
    nabla_w, nabla_b : lists shaped like ``weights`` and ``biases``.
    """
    _, activations, deltas = backprop(weights, biases, X, Y, hidden, output, cost)
    return _average(deltas, activations)


def _average(deltas, activations):
    """BP3 and BP4, averaged over the examples."""
    m = activations[0].shape[0]
    nabla_b = [d.sum(axis=0) / m for d in deltas]
    nabla_w = [d.T @ a / m for d, a in zip(deltas, activations[:-1])]
    return nabla_w, nabla_b


def sgd_step(
    weights, biases, X, Y, lr, hidden="sigmoid", output="sigmoid", cost="quadratic",
    momentum=0.0, weight_decay=0.0, velocities=None,
):
    """One minibatch step, in place: w := w - η (∂C/∂w + λ w), b := b - η ∂C/∂b.

    With ``momentum`` μ > 0, ``velocities`` (a pair of lists shaped like the weights
    and the biases, starting at zero) carries v := μ v - η g and p := p + v.

    Returns the sum over the minibatch of each example's cost before the step.
    """
    zs, activations, deltas = backprop(weights, biases, X, Y, hidden, output, cost)
    batch_cost = float(np.sum(COSTS[cost].fn(zs[-1], activations[-1], Y, output)))
    nabla_w, nabla_b = _average(deltas, activations)
    grads = [gw + weight_decay * w for gw, w in zip(nabla_w, weights)] + nabla_b
    params = list(weights) + list(biases)
    if momentum:
        vs = list(velocities[0]) + list(velocities[1])
        for p, g, v in zip(params, grads, vs):
            v *= momentum
            v -= lr * g
            p += v
    else:
        for p, g in zip(params, grads):
            p -= lr * g
    return batch_cost


def train_epoch(
    weights, biases, X, Y, order, batch_size, lr, hidden="sigmoid", output="sigmoid",
    cost="quadratic", momentum=0.0, weight_decay=0.0, velocities=None,
):
    """One epoch of minibatch SGD over the examples in ``order``, in place.

    Returns the sum over examples of each example's cost before its minibatch's step.
    """
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        total += sgd_step(
            weights, biases, X[idx], Y[idx], lr, hidden, output, cost,
            momentum, weight_decay, velocities,
        )
    return total

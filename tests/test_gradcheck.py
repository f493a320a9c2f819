"""Backpropagation against central finite differences, and a chain worked by hand."""

import math

import numpy as np
import pytest
from conftest import HIDDEN, OUTPUT_COST, make_targets, randomize_biases

import fastbp


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output,cost", OUTPUT_COST)
@pytest.mark.parametrize("sizes", [[4, 4, 4, 1], [7, 5, 3], [3, 6, 5, 4, 2]])
def test_gradcheck(sizes, hidden, output, cost):
    if output == "softmax" and sizes[-1] < 2:
        pytest.skip("softmax needs two or more outputs")
    rng = np.random.default_rng(7)
    net = fastbp.Network(sizes, hidden=hidden, output=output, cost=cost, seed=7)
    randomize_biases(net, rng)
    X = rng.uniform(-1, 1, (6, sizes[0]))
    Y = make_targets(rng, 6, sizes[-1], output, cost)
    err = fastbp.gradcheck(net, X, Y)
    assert err < 1e-6


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """The check can fail: a gradient off by 1% in one entry is reported."""
    rng = np.random.default_rng(0)
    net = fastbp.Network([3, 4, 2], seed=0)
    X, Y = rng.normal(size=(5, 3)), rng.uniform(size=(5, 2))
    right = fastbp.Network.gradients

    def wrong(self, X, Y):
        gw, gb = right(self, X, Y)
        gw[0][1, 2] *= 1.01
        return gw, gb

    monkeypatch.setattr(fastbp.Network, "gradients", wrong)
    assert fastbp.gradcheck(net, X, Y) > 1e-4


def test_gradcheck_restores_parameters():
    net = fastbp.Network([3, 4, 2], seed=0)
    before = [p.copy() for p in net.weights + net.biases]
    fastbp.gradcheck(net, np.ones((2, 3)), np.array([0, 1]))
    for p, q in zip(before, net.weights + net.biases):
        assert np.array_equal(p, q)


def _chain(weights, biases):
    net = fastbp.Network([1, 1, 1, 1], hidden="sigmoid", output="sigmoid", seed=0)
    for i in range(3):
        net.weights[i][0, 0] = weights[i]
        net.biases[i][0] = biases[i]
    return net


def test_one_neuron_chain_identity_by_hand():
    """The seeds' chain of one neuron per layer, with σ(z) = z so every number is exact.

    w = (2, -1, 0.5), b = (1, 0, -0.5), x = 3, y = 1, C = ½ (a⁴ - y)².
      z² = 2·3 + 1 = 7          a² = 7
      z³ = -1·7 + 0 = -7        a³ = -7
      z⁴ = 0.5·(-7) - 0.5 = -4  a⁴ = -4      C = ½ (-4 - 1)² = 12.5
    BP1  δ⁴ = (a⁴ - y) σ'(z⁴) = -5 · 1 = -5
    BP3/4  ∂C/∂b⁴ = -5,   ∂C/∂w⁴ = a³ δ⁴ = -7 · -5 = 35
    BP2  δ³ = w⁴ δ⁴ σ'(z³) = 0.5 · -5 = -2.5
         ∂C/∂b³ = -2.5,   ∂C/∂w³ = a² δ³ = 7 · -2.5 = -17.5
    BP2  δ² = w³ δ³ σ'(z²) = -1 · -2.5 = 2.5
         ∂C/∂b² = 2.5,    ∂C/∂w² = x δ² = 3 · 2.5 = 7.5
    """
    net = fastbp.Network([1, 1, 1, 1], hidden="identity", output="identity", seed=0)
    for i, (w, b) in enumerate([(2.0, 1.0), (-1.0, 0.0), (0.5, -0.5)]):
        net.weights[i][0, 0] = w
        net.biases[i][0] = b
    X, Y = np.array([[3.0]]), np.array([[1.0]])
    assert net.forward(X)[0, 0] == -4.0
    assert net.cost(X, Y) == 12.5
    gw, gb = net.gradients(X, Y)
    assert [g[0, 0] for g in gw] == [7.5, -17.5, 35.0]
    assert [g[0] for g in gb] == [2.5, -2.5, -5.0]


def test_one_neuron_chain_sigmoid_by_hand():
    """The same chain with sigmoid neurons, the chain rule applied step by step in plain
    Python floats (an oracle independent of both the kernels and the reference):

        ∂C/∂w^L = ∂z^L/∂w^L · ∂a^L/∂z^L · ∂C/∂a^L = a^{L-1} · σ'(z^L) · (a^L - y)
    """
    w, b, x, y = [0.8, -1.2, 1.5], [0.1, 0.3, -0.2], 0.6, 0.25
    s = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    z2 = w[0] * x + b[0]
    a2 = s(z2)  # z² = 0.58,       a² = σ(0.58)
    z3 = w[1] * a2 + b[1]
    a3 = s(z3)  # z³ = -1.2 a² + 0.3
    z4 = w[2] * a3 + b[2]
    a4 = s(z4)  # z⁴ = 1.5 a³ - 0.2
    cost = 0.5 * (a4 - y) ** 2
    d4 = (a4 - y) * a4 * (1 - a4)  # BP1, σ'(z) = σ(z)(1 - σ(z))
    d3 = w[2] * d4 * a3 * (1 - a3)  # BP2
    d2 = w[1] * d3 * a2 * (1 - a2)  # BP2
    expect_w = [x * d2, a2 * d3, a3 * d4]  # BP4
    expect_b = [d2, d3, d4]  # BP3

    net = _chain(w, b)
    X, Y = np.array([[x]]), np.array([[y]])
    assert net.forward(X)[0, 0] == pytest.approx(a4, rel=1e-14)
    assert net.cost(X, Y) == pytest.approx(cost, rel=1e-14)
    gw, gb = net.gradients(X, Y)
    assert [g[0, 0] for g in gw] == pytest.approx(expect_w, rel=1e-12)
    assert [g[0] for g in gb] == pytest.approx(expect_b, rel=1e-12)
    # and one SGD step with η = 2 moves each parameter by -η ∂C/∂p
    net.fit(X, Y, epochs=1, batch_size=1, lr=2.0)
    assert [W[0, 0] for W in net.weights] == pytest.approx(
        [wi - 2 * g for wi, g in zip(w, expect_w)], rel=1e-12
    )

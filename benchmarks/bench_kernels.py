"""One minibatch through the public entry points: ``forward``, ``gradients`` and ``cost``.

fastbp's timings go through ``Network.forward``, ``Network.gradients`` and
``Network.cost``, so they include the input validation every call makes; at the small
minibatches of W2, W3 and W4-b10 that overhead is a visible part of the time. The
reference timings are the matching :mod:`fastbp.reference` functions on arrays that are
already targets of the right dtype.

``setup`` checks the three entry points against the reference on a minibatch (a
mismatch fails the benchmark) and warms them up, once per process.
"""

from fastbp import reference

from . import workloads as wl
from .workloads import DTYPES, NAMES, WORKLOADS

IMPLS = ("fastbp", "reference")

_DONE = {}


def _prepared(name, dtype, impl):
    """Check, build one minibatch and warm up, once per process."""
    key = (name, dtype, impl)
    if key not in _DONE:
        w = WORKLOADS[name]
        if impl == "fastbp":
            wl.check_minibatch(w, dtype)
        X, Y, _ = w.data(dtype, w.batch)
        net = w.network(dtype)
        ops = _ops(w, net, impl)
        for op in ops.values():
            op(X, Y)
        _DONE[key] = (X, Y, ops)
    return _DONE[key]


def _ops(w, net, impl):
    if impl == "fastbp":
        return {
            "forward": lambda X, Y: net.forward(X),
            "gradients": net.gradients,
            "cost": net.cost,
        }
    W, B = net.weights, net.biases
    return {
        "forward": lambda X, Y: reference.feedforward(W, B, X, w.hidden, w.output),
        "gradients": lambda X, Y: reference.gradients(W, B, X, Y, w.hidden, w.output, w.cost),
        "cost": lambda X, Y: reference.cost(W, B, X, Y, w.hidden, w.output, w.cost),
    }


class Minibatch:
    """Each sample is a single call (asv re-runs ``setup`` between calls); many samples."""

    params = [list(NAMES), list(DTYPES), list(IMPLS)]
    param_names = ["workload", "dtype", "impl"]
    number = 1
    repeat = (10, 200, 2.0)
    min_run_count = 1
    warmup_time = 0
    timeout = 300

    def setup(self, name, dtype, impl):
        self.X, self.Y, ops = _prepared(name, dtype, impl)
        self.forward, self.gradients, self.cost = ops["forward"], ops["gradients"], ops["cost"]

    def time_forward(self, name, dtype, impl):
        self.forward(self.X, self.Y)

    def time_gradients(self, name, dtype, impl):
        self.gradients(self.X, self.Y)

    def time_cost(self, name, dtype, impl):
        self.cost(self.X, self.Y)

"""The hot path: Numba kernels implementing the per-index backpropagation formulas.

Every kernel takes C-contiguous arrays of one float dtype, writes into ``out`` buffers the
caller owns, and neither validates nor allocates: :mod:`fastbp.network` does that before
the first call. An array a kernel writes must not overlap any other array it is given:
the serial kernels are compiled on that promise (``fastbp._config.NOALIAS``), and
overlapping arguments give undefined results. Each output element is written by exactly
one thread and its sums run in a fixed order, so any thread count gives
bitwise-identical results.

Layout: ``A[l]`` holds the activations of a minibatch row by row, shape
``(batch, n_l)``; ``W[l]`` has shape ``(n_l, n_{l-1})`` so ``W[l][j, k]`` is
:math:`w^l_{jk}`; ``j`` indexes a neuron of layer ``l`` and ``k`` one of layer ``l-1``.
Only the first ``m`` rows of a workspace are used, so one set of workspaces sized for the
largest minibatch also serves the last, partial one.
"""

from .._config import kernel_cache, lock_cache_writes

# Numba fixes a kernel's cache location when it is decorated.
with kernel_cache():
    from . import blocked, flat, layers, narrow, tiny
    from .blocked import (
        backward_par,
        backward_ser,
        forward_par,
        forward_ser,
        gradient_step_par,
        output_delta_cost,
        step_forward_par,
    )
    from .narrow import (
        backward_columns,
        backward_narrow,
        backward_packed,
        forward_narrow,
        forward_packed,
        gradient_step_columns,
        gradient_step_narrow,
        panel_size,
    )
    from .codes import (
        ACTIVATION_CODES,
        COST_CODES,
        CROSS_ENTROPY,
        IDENTITY,
        QUADRATIC,
        RELU,
        SIGMOID,
        SOFTMAX,
        TANH,
    )

for _module in (layers, blocked, narrow, flat, tiny):
    for _name in dir(_module):
        if hasattr(getattr(_module, _name), "py_func"):
            lock_cache_writes(getattr(_module, _name))

__all__ = [
    "ACTIVATION_CODES",
    "COST_CODES",
    "CROSS_ENTROPY",
    "IDENTITY",
    "QUADRATIC",
    "RELU",
    "SIGMOID",
    "SOFTMAX",
    "TANH",
    "backward_columns",
    "backward_narrow",
    "backward_packed",
    "backward_par",
    "backward_ser",
    "flat",
    "forward_narrow",
    "forward_packed",
    "forward_par",
    "forward_ser",
    "gradient_step_columns",
    "gradient_step_narrow",
    "gradient_step_par",
    "output_delta_cost",
    "panel_size",
    "step_forward_par",
    "tiny",
]

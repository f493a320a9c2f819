"""Integer codes the kernels branch on, and their public names."""

IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
SOFTMAX = 4

QUADRATIC = 0
CROSS_ENTROPY = 1

ACTIVATION_CODES = {
    "identity": IDENTITY,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "softmax": SOFTMAX,
}
COST_CODES = {"quadratic": QUADRATIC, "cross_entropy": CROSS_ENTROPY}

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

#: Which kernel a layer's forward pass, BP2 or gradient step runs (columns 0-2 of the
#: drivers' ``par``): the register-blocked serial or parallel one, or the narrow one;
#: for BP2 and the gradient step also the narrow one's parallel build (threads split the
#: examples in BP2, the columns in the gradient step); for the forward pass and BP2 also
#: its parallel build over copied blocks of W (``PACKED``: of W^T's columns in the
#: forward pass, of W's in BP2).
BLOCKED = 0
PARALLEL = 1
NARROW = 2
COLUMNS = 3
PACKED = 4

"""The Network: parameters, workspaces and validation around the kernels.

Data flows one way: user arrays -> validation (:mod:`fastbp._validation`) -> workspaces
allocated once per call -> kernels (:mod:`fastbp.kernels`) -> results.
"""

import math
import mmap
import sys
from dataclasses import dataclass, field

import numpy as np

from . import _validation as v
from . import kernels
from ._config import (
    COLUMNS_FLOAT64_MAX_INPUTS,
    COLUMNS_FLOAT64_MAX_OUTPUTS,
    FUSE_MAX_BYTES,
    NARROW_FORWARD_MIN_BATCH,
    NARROW_FORWARD_OUTPUTS,
    NARROW_BACKWARD_MIN_OUTPUTS,
    NARROW_MAX_WIDTH,
    NARROW_GRADIENT_SERIAL_MAX_BYTES,
    NARROW_SERIAL_MAX_BYTES,
    PACK_BACKWARD_MIN_OUTPUTS,
    PACK_FORWARD_MIN_BATCH,
    PACK_FORWARD_MIN_ROW_BYTES,
    PACK_MIN_BYTES,
    PACK_MIN_ROW_BYTES,
    PARALLEL_MIN_WORK,
    TINY_MAX_WORK,
    launch,
)
from .kernels import codes, flat, tiny

#: Rows fed forward at once by forward/cost/evaluate/predict: bounds their memory.
CHUNK = 4096


def _same_view(a, view):
    """Whether ``a`` is exactly the view ``view`` of the parameter buffer."""
    return a is view or (
        a.__array_interface__["data"][0] == view.__array_interface__["data"][0]
        and a.strides == view.strides and np.shares_memory(a, view)
    )


def _all_finite(arrays):
    return all(v.all_finite(a) for a in arrays)


#: Bytes of the address bits that loads and stores are matched on (4K aliasing).
PAGE = 4096
#: Bytes of a transparent huge page (x86-64 Linux).
HUGE_PAGE = 2 * 1024 * 1024
#: Bytes from which the gradient buffer and workspaces of a long enough fit
#: (``HUGE_PAGE_MIN_WORK``) are placed in huge pages (:func:`_page_empty`): each such
#: buffer takes whole 2 MB pages, so smaller ones stay in ordinary memory.
HUGE_PAGE_MIN_BYTES = 65536
#: The same bound for the buffers a network keeps (parameters, momentum velocities),
#: higher so that a network held in memory takes at most 2 MB per buffer more than its
#: parameters' size (W4's 318 KB float32 parameters and up are placed).
HUGE_PAGE_KEEP_MIN_BYTES = 262144
#: Multiply-adds of the forward passes (examples × epochs × Σ n_in n_out) from which a
#: fit places its gradient buffer and workspaces in huge pages. The first touch of a
#: huge page clears all 2 MB of it: three 83 KB workspaces in huge pages took
#: ``predict`` on 10 rows of W5 from 0.51 to 0.92-0.96 ms. The parameters, made once per
#: network, are always placed; the workspaces only for work that repays it (one epoch
#: of W4 is 4.8e9 multiply-adds, a fit or ``partial_fit`` over a few hundred rows of
#: it some 1e7; prediction never).
HUGE_PAGE_MIN_WORK = 2**30


def _page_empty(n, dtype, min_bytes=None):
    """An uninitialised 1-D array of n elements; from ``min_bytes`` up
    (``HUGE_PAGE_MIN_BYTES`` if None; never if infinite), at the start of memory of its
    own that Linux is asked to back with transparent huge pages (2 MB), as NumPy asks
    for arrays of 4 MB or more.

    In 4 KB pages, where each page of a layer's W and workspaces lands in the cache
    changes from one process to the next, and so did the kernels' speed: fit(epochs=1),
    three processes each alternating, 4 KB pages against huge pages: W4 in minibatches
    of 32, float64 349-417 ms against 332-351, float32 190-204 against 165-189; of 100,
    float64 334-384 against 321-339, float32 182-195 against 170-178; W5 float64
    477-483 against 447-464; W1 and W5 float32 alike. Where the system offers no such
    advice, or refuses it, the memory is ordinary memory all the same.
    """
    itemsize = np.dtype(dtype).itemsize
    nbytes = n * itemsize
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < (HUGE_PAGE_MIN_BYTES if min_bytes is None else min_bytes) or advice is None:
        return np.empty(n, dtype)
    length = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    # private: a shared anonymous map is shared memory, whose huge pages are a setting
    # of their own; one page more, to start on a page
    memory = mmap.mmap(-1, length + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(memory, np.uint8)
    start = -raw.ctypes.data % HUGE_PAGE
    try:
        memory.madvise(advice, start, length)
    except OSError:  # advice not taken here: ordinary pages
        pass
    return raw[start:start + nbytes].view(dtype)


def _workspace_min_bytes(huge):
    """:func:`_page_empty`'s lower bound for a fit's workspaces and gradient buffer:
    ``HUGE_PAGE_MIN_BYTES`` if the fit is long enough to repay huge pages (``huge``,
    see ``HUGE_PAGE_MIN_WORK``), else none of them is placed."""
    return HUGE_PAGE_MIN_BYTES if huge else math.inf


def _page_copy(a):
    """A copy of the 1-D array ``a``, a buffer a network keeps, in memory from
    :func:`_page_empty`."""
    out = _page_empty(a.size, a.dtype, HUGE_PAGE_KEEP_MIN_BYTES)
    out[...] = a
    return out


def _spaced_empty(n, dtype, partners, min_bytes=None):
    """An uninitialised array of n elements, placed so that its blocks do not sit at the
    same offset within a 4 KB page as the rows they are updated from.

    BP2 and the weight gradient add rows of one array (B) into rows of another (C). A
    load that follows a store at the same address modulo 4 KB waits for it, so when B
    trails C by a few hundred bytes modulo 4 KB every load stalls: the 512 × 512 float64
    gradient ran at 37 against 85 GFLOP/s. Rows whose length is a multiple of 1 KB keep
    that distance all along, so this array's start is shifted (by whole cache lines,
    within one page of padding) to hold each block as far as it can be from the rows
    it is paired with.

    partners : list of (offset of the block in elements, address of the other rows in
        bytes, bytes per row). Pairs whose rows are not a multiple of 1 KB long are
        ignored (their rows' distances vary and average out).
    min_bytes : as for :func:`_page_empty`.
    """
    itemsize = np.dtype(dtype).itemsize
    pairs = [(own, other, math.gcd(row, PAGE)) for own, other, row in partners]
    pairs = [p for p in pairs if p[2] >= 1024]
    if not pairs:
        return _page_empty(n, dtype, min_bytes)
    raw = _page_empty(n + PAGE // itemsize, dtype, min_bytes)
    base = raw.ctypes.data
    best, best_gap = 0, -1
    for shift in range(0, PAGE, 64):
        gap = PAGE
        for own, other, period in pairs:
            phase = (other - base - shift - own * itemsize) % period
            gap = min(gap, phase, period - phase)
        if gap > best_gap:
            best, best_gap = shift, gap
    start = best // itemsize
    return raw[start:start + n]


class TrainingDivergedError(FloatingPointError):
    """The training cost became NaN or infinite; the parameters were restored."""

    def __init__(self, message, epoch, history):
        super().__init__(message)
        self.epoch = epoch
        self.history = history


@dataclass
class History:
    """Per-epoch record of a :meth:`Network.fit` run.

    Attributes
    ----------
    train_cost : list of float
        Mean training cost of each epoch, each example's cost measured in the forward
        pass of its minibatch, before that minibatch's step (as Keras and
        scikit-learn's ``loss_curve_`` report it).
    val_cost, val_accuracy : list of float
        Cost and accuracy on ``validation_data`` after each epoch (empty without it).
    """

    train_cost: list = field(default_factory=list)
    val_cost: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)

    @property
    def epochs(self):
        """Number of completed epochs."""
        return len(self.train_cost)

    def __len__(self):
        return self.epochs

    def as_dict(self):
        """The record as a dict of lists."""
        return {
            "train_cost": list(self.train_cost),
            "val_cost": list(self.val_cost),
            "val_accuracy": list(self.val_accuracy),
        }


class Network:
    """A fully-connected feed-forward network trained by backpropagation.

    Parameters
    ----------
    sizes : sequence of int
        Neurons per layer, input layer first: ``[784, 30, 10]`` has 784 inputs, one
        hidden layer of 30 and 10 outputs.
    hidden : {"sigmoid", "relu", "tanh", "identity"}, default "sigmoid"
        Activation σ of every hidden layer.
    output : {"sigmoid", "softmax", "relu", "tanh", "identity"}, default "sigmoid"
        Activation of the output layer.
    cost : {"quadratic", "cross_entropy"}, default "quadratic"
        C_x = ½ Σ_j (a_j - y_j)², or the cross-entropy: categorical with a softmax output,
        per-unit binary with a sigmoid output (other outputs take "quadratic" only).
    dtype : {"float64", "float32"}, default "float64"
        Precision of the parameters and of every computation in the kernels.
    seed : int or None
        Seeds the weight initialisation and, when ``fit`` gets no seed of its own, the
        shuffling: the same seed and the same calls give bitwise-identical results.

    Attributes
    ----------
    weights : list of ndarray
        ``weights[i]`` has shape ``(sizes[i + 1], sizes[i])``; ``weights[i][j, k]`` is
        w_jk, from neuron k of layer i to neuron j of layer i + 1. The live parameters:
        training updates these arrays in place.
    biases : list of ndarray
        ``biases[i]`` has shape ``(sizes[i + 1],)``.

    Notes
    -----
    Initialisation: w_jk ~ N(0, g / n_in) with n_in the number of inputs of the layer,
    g = 2 for ReLU layers (He et al.) and g = 1 otherwise (LeCun; Nielsen's improved
    initialisation for sigmoid layers); biases start at zero.

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> net = fastbp.Network([2, 3, 1], seed=0)
    >>> net.forward(np.array([[0.5, -1.0]])).shape
    (1, 1)
    """

    def __init__(
        self, sizes, hidden="sigmoid", output="sigmoid", cost="quadratic",
        dtype="float64", seed=None,
    ):
        self.sizes = v.check_architecture(sizes, hidden, output, cost)
        self.hidden, self.output, self.cost_name = hidden, output, cost
        self.dtype = v.check_dtype(dtype, "Network")
        self.seed = seed
        self._rng = np.random.default_rng(v.check_seed(seed, "Network"))
        n_params = sum(o * i + o for i, o in zip(self.sizes, self.sizes[1:]))
        self._theta = _page_empty(n_params, self.dtype, HUGE_PAGE_KEEP_MIN_BYTES)
        self._bind()
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            act = output if i == len(self.sizes) - 2 else hidden
            gain = 2.0 if act == "relu" else 1.0
            n_out, n_in = w.shape
            w[...] = self._rng.standard_normal((n_out, n_in)) * math.sqrt(gain / n_in)
            b[...] = 0
        self.history = History()
        self._vel = None  # momentum velocities (theta's layout), kept across fit calls

    def _views(self, buf):
        """Per-layer weight and bias views of a buffer laid out like the parameters."""
        weights, biases = [], []
        for o, n_in, n_out in zip(self._offsets(0)[0], self.sizes, self.sizes[1:]):
            weights.append(buf[o:o + n_out * n_in].reshape(n_out, n_in))
            biases.append(buf[o + n_out * n_in:o + n_out * n_in + n_out])
        return weights, biases

    def _bind(self):
        """Point ``weights`` and ``biases`` at their places in the flat buffer."""
        self.weights, self.biases = self._views(self._theta)

    @property
    def _velocities(self):
        """The momentum velocities as (weights-shaped, biases-shaped) views, or None."""
        if self._vel is None:
            return None
        w, b = self._views(self._vel)
        return tuple(w), tuple(b)

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["weights"], state["biases"]  # views of _theta, rebuilt on load
        return state

    def __setstate__(self, state):
        """Unpickle; the buffers are copied into memory from :func:`_page_empty` (also
        those memory-mapped read-only, as joblib loads them, which become writeable)."""
        self.__dict__.update(state)
        self._theta = _page_copy(self._theta)
        if self._vel is not None:
            self._vel = _page_copy(self._vel)
        self._bind()

    # --- descriptive ------------------------------------------------------------------

    @property
    def n_inputs(self):
        return self.sizes[0]

    @property
    def n_outputs(self):
        return self.sizes[-1]

    def __repr__(self):
        return (
            f"Network({self.sizes}, hidden={self.hidden!r}, output={self.output!r}, "
            f"cost={self.cost_name!r}, dtype={self.dtype!r})"
        )

    def _codes(self):
        return (
            kernels.ACTIVATION_CODES[self.hidden],
            kernels.ACTIVATION_CODES[self.output],
            kernels.COST_CODES[self.cost_name],
        )

    def _params(self):
        """Check ``weights``/``biases`` still describe the network; return them as tuples.

        The parameters live in one flat buffer that the kernels read; ``weights`` and
        ``biases`` are views of it. An entry the user replaced by an array of the same
        shape and dtype is copied into the buffer (and the view put back); anything else
        is refused before a kernel runs.
        """
        views_w, views_b = self._views(self._theta)
        pairs = (("weights", self.weights, views_w), ("biases", self.biases, views_b))
        for name, arrays, views in pairs:
            if len(arrays) != len(views):
                raise ValueError(f"Network.{name} must hold {len(views)} arrays.")
            for i, (a, view) in enumerate(zip(arrays, views)):
                if not (isinstance(a, np.ndarray) and a.shape == view.shape
                        and a.dtype == self.dtype):
                    got = (f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray)
                           else type(a).__name__)
                    raise ValueError(
                        f"Network.{name}[{i}] must be a {self.dtype} array of shape "
                        f"{view.shape}; got {got}."
                    )
        for name, arrays, views in pairs:
            for i, (a, view) in enumerate(zip(arrays, views)):
                if not _same_view(a, view):
                    np.copyto(view, a)
                    arrays[i] = view
        return tuple(self.weights), tuple(self.biases)

    def _kernel_args(self, batch, huge=False):
        """Sizes, per-layer parallel flags and workspaces for minibatches of ``batch``
        (in huge pages if ``huge``: see ``HUGE_PAGE_MIN_WORK``).

        Each of a layer's three kernels runs the narrow kernel where its shape suits it:
        the gradient step always, BP2 over a narrow input (``NARROW_MAX_WIDTH``) or of a
        layer of several neurons (``NARROW_BACKWARD_MIN_OUTPUTS``), the forward pass of a
        narrow layer over a narrow input (``NARROW_FORWARD_OUTPUTS``,
        ``NARROW_FORWARD_MIN_BATCH``), unless its work (batch × n_out × n_in
        multiply-adds) is more than a serial narrow kernel does faster
        (``NARROW_SERIAL_MAX_BYTES``; a hidden or output layer's gradient step
        ``NARROW_GRADIENT_SERIAL_MAX_BYTES``). Otherwise it runs in parallel when
        its work repays a parallel region (``PARALLEL_MIN_WORK``; for the forward pass,
        work that a serial kernel does not do faster either) and its parallel loop
        has more than one block, and the serial blocked kernel if not. A parallel
        gradient step runs the narrow kernel's parallel build (``COLUMNS``) where it packs
        δ (``PACK_MIN_ROW_BYTES``, ``PACK_MIN_BYTES``), and in a hidden layer (l > 0)
        also in float32, and in float64 up to ``COLUMNS_FLOAT64_MAX_OUTPUTS`` neurons;
        other first layers' stay blocked (their rows, gathered from the training set,
        are read whole). A parallel BP2 of ``PACK_BACKWARD_MIN_OUTPUTS`` neurons or more
        runs the narrow kernel's parallel build over copied blocks of W's columns
        (``PACKED``); one of fewer that the narrow kernel suits its parallel build over
        the examples (``COLUMNS``) in float32, and in float64 over inputs up to
        ``COLUMNS_FLOAT64_MAX_INPUTS`` wide or of up to ``COLUMNS_FLOAT64_MAX_OUTPUTS``
        neurons. A parallel forward pass of layers whose rows of z take
        ``PACK_FORWARD_MIN_ROW_BYTES`` or more, over ``PACK_FORWARD_MIN_BATCH`` examples or
        more, runs the narrow kernel's parallel build over copied blocks of W^T's columns
        (``PACKED``), but for a first layer fused with its SGD step. The choices depend on
        shapes and the dtype alone, never on the thread count.
        Column 3 of the first layer's flags: whether its step feeds the next minibatch
        forward in the same region (``FUSE_MAX_BYTES``); column 4 of each layer's:
        whether its narrow gradient step first packs δ into the returned workspace
        ``pbuf``.
        """
        sizes = np.asarray(self.sizes, dtype=np.int64)
        par = np.zeros((len(self.sizes) - 1, 5), dtype=np.int64)
        itemsize = self._theta.itemsize
        for l, (n_in, n_out) in enumerate(zip(self.sizes, self.sizes[1:])):
            work = batch * n_out * n_in
            big = work >= PARALLEL_MIN_WORK
            narrow = (
                n_in <= NARROW_MAX_WIDTH and n_out in NARROW_FORWARD_OUTPUTS
                and batch >= NARROW_FORWARD_MIN_BATCH,
                n_in <= NARROW_MAX_WIDTH or n_out >= NARROW_BACKWARD_MIN_OUTPUTS,
                True,
            )
            serial = work * itemsize <= NARROW_SERIAL_MAX_BYTES
            # a hidden or output layer's gradient step: serial over more work
            serials = (serial, serial, serial or l > 0 and (
                work * itemsize <= NARROW_GRADIENT_SERIAL_MAX_BYTES))
            parallel = (big and n_out > 4 and not serial, big and batch > 4,
                        big and n_out > 1)
            packs = (n_out * itemsize >= PACK_MIN_ROW_BYTES
                     and batch * n_out * itemsize >= PACK_MIN_BYTES)
            # where a parallel kernel runs the narrow kernel's parallel build instead
            columns = (
                False,
                narrow[1] and l > 0 and (itemsize == 4 or n_in <= COLUMNS_FLOAT64_MAX_INPUTS
                                         or n_out <= COLUMNS_FLOAT64_MAX_OUTPUTS),
                packs or l > 0 and (itemsize == 4 or n_out <= COLUMNS_FLOAT64_MAX_OUTPUTS),
            )
            for c in range(3):
                par[l, c] = (
                    codes.NARROW if narrow[c] and (serials[c] or not parallel[c]) else
                    codes.COLUMNS if parallel[c] and columns[c] else
                    codes.PARALLEL if parallel[c] else codes.BLOCKED)
            if (l > 0 and par[l, 1] in (codes.PARALLEL, codes.COLUMNS)
                    and n_out >= PACK_BACKWARD_MIN_OUTPUTS):
                par[l, 1] = codes.PACKED
            par[l, 4] = packs and par[l, 2] in (codes.NARROW, codes.COLUMNS)
        par[0, 3] = (par[0, 2] == codes.PARALLEL
                     and batch * self.sizes[0] * itemsize <= FUSE_MAX_BYTES)
        for l, n_out in enumerate(self.sizes[1:]):
            if (par[l, 0] == codes.PARALLEL and not (l == 0 and par[0, 3])
                    and n_out * itemsize >= PACK_FORWARD_MIN_ROW_BYTES
                    and batch >= PACK_FORWARD_MIN_BATCH):
                par[l, 0] = codes.PACKED
        total = batch * sum(self.sizes[1:])
        # BP2 adds rows of W^l into δ^{l-1}'s block, and a plain SGD step adds rows of
        # a^{l-1}'s block into W^l (see _spaced_empty)
        w_offsets, blocks = self._offsets(batch)
        partners = [(blocks[l - 1], self._theta.ctypes.data + w_offsets[l] * itemsize,
                     self.sizes[l] * itemsize) for l in range(1, len(self.sizes) - 1)]
        lower = _workspace_min_bytes(huge)
        zbuf = _page_empty(total, self.dtype, lower)
        abuf = _spaced_empty(total, self.dtype, partners, lower)
        dbuf = _spaced_empty(total, self.dtype, partners, lower)
        pbuf = _page_empty(max([kernels.panel_size(batch, n_out)
                                for l, n_out in enumerate(self.sizes[1:]) if par[l, 4]],
                               default=0), self.dtype, lower)
        return sizes, par, np.arange(batch, dtype=np.int64), (zbuf, abuf, dbuf, pbuf)

    def _offsets(self, batch):
        """Where each layer's W starts in the parameter buffer (its b follows W) and its
        (batch, n_out) block in a workspace buffer, in elements; the layout of
        :mod:`fastbp.kernels.flat`."""
        w_offsets, blocks, o, a = [], [], 0, 0
        for n_in, n_out in zip(self.sizes, self.sizes[1:]):
            w_offsets.append(o)
            blocks.append(a)
            o += n_out * n_in + n_out
            a += batch * n_out
        return w_offsets, blocks

    def _gradient_buffer(self, X, abuf, batch, huge=False):
        """The buffer of ∂C/∂w and ∂C/∂b, laid out like the parameters; each layer's
        gradient adds up rows of its input (X, or the block of the layer below in
        ``abuf``), so it is placed with :func:`_spaced_empty` (in huge pages if
        ``huge``)."""
        itemsize = self._theta.itemsize
        w_offsets, blocks = self._offsets(batch)
        partners = [(w_offsets[0], X.ctypes.data, X.strides[0])]
        partners += [(w_offsets[l], abuf.ctypes.data + blocks[l - 1] * itemsize,
                      self.sizes[l] * itemsize) for l in range(1, len(self.sizes) - 1)]
        return _spaced_empty(self._theta.size, self.dtype, partners,
                             _workspace_min_bytes(huge))

    def _output_block(self, buf, batch, transposed=False):
        """The output layer's (batch, n_out) block of a workspace buffer (stored
        neuron by neuron when ``transposed``, as :mod:`fastbp.kernels.tiny` has it)."""
        n_out = self.n_outputs
        start = self._offsets(batch)[1][-1]
        block = buf[start:start + batch * n_out]
        return block.reshape(n_out, batch).T if transposed else block.reshape(batch, n_out)

    def _check_X(self, X):
        return v.check_X(X, self.n_inputs, self.dtype)

    def _check_XY(self, X, Y):
        X = self._check_X(X)
        Y, labels = v.check_Y(Y, X.shape[0], self.n_outputs, self.dtype)
        return X, Y, labels

    # --- inference --------------------------------------------------------------------

    def _sweep(self, X, Y=None):
        """Feed X forward in chunks; return the outputs and the summed cost (if Y)."""
        self._params()
        hidden, output, cost = self._codes()
        n = X.shape[0]
        batch = min(n, CHUNK)
        sizes, par, ident, (zbuf, abuf, dbuf, _) = self._kernel_args(batch)
        forward = flat.for_codes(par)[0]
        all_rows = np.arange(n, dtype=np.int64)
        out = np.empty((n, self.n_outputs), self.dtype)
        costs = np.empty(batch, self.dtype)
        a_out = self._output_block(abuf, batch)
        total = 0.0
        for start in range(0, n, batch):
            m = min(batch, n - start)
            rows = all_rows[start:start + m]
            with launch():
                forward(self._theta, sizes, X, rows, m, batch, hidden, output, par, ident,
                        zbuf, abuf, 0)
                if Y is not None:
                    flat.costs(sizes, Y, rows, m, batch, output, cost, zbuf, abuf, dbuf,
                               costs)
            out[start:start + m] = a_out[:m]
            if Y is not None:
                total += float(np.sum(costs[:m], dtype=np.float64))
        return out, total

    def forward(self, X):
        """Output activations a^L for each row of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_inputs)

        Returns
        -------
        ndarray of shape (n_samples, n_outputs), of the network's dtype.
        """
        return self._sweep(self._check_X(X))[0]

    def cost(self, X, Y):
        """Mean cost over the examples: (1/n) Σ_x C_x.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_inputs)
        Y : integer class labels of shape (n_samples,), or float targets of shape
            (n_samples, n_outputs).

        Returns
        -------
        float
        """
        X, Y, _ = self._check_XY(X, Y)
        return self._sweep(X, Y)[1] / X.shape[0]

    def predict(self, X):
        """Class indices: argmax of the outputs, or output >= 0.5 for a single output."""
        return self._classes(self.forward(X))

    def _classes(self, out):
        if out.shape[1] == 1:
            return (out[:, 0] >= 0.5).astype(np.int64)
        return np.argmax(out, axis=1)

    def _accuracy(self, out, Y, labels):
        truth = labels if labels is not None else self._classes(Y)
        return float(np.mean(self._classes(out) == truth))

    def evaluate(self, X, Y):
        """Mean cost and accuracy on (X, Y) in one forward pass.

        For float targets the true class is the argmax of each row of Y (or Y >= 0.5
        for a single output).

        Returns
        -------
        dict with keys "cost" and "accuracy".
        """
        X, Y, labels = self._check_XY(X, Y)
        out, total = self._sweep(X, Y)
        return {"cost": total / X.shape[0], "accuracy": self._accuracy(out, Y, labels)}

    # --- gradients --------------------------------------------------------------------

    def gradients(self, X, Y):
        """∂C/∂w and ∂C/∂b of the mean cost over (X, Y), by backpropagation.

        BP1 gives δ^L at the output, BP2 carries it back, δ^{l-1}_k =
        (Σ_j w^l_jk δ^l_j) σ'(z^{l-1}_k), and BP3/BP4 give ∂C/∂b^l_j = δ^l_j and
        ∂C/∂w^l_jk = a^{l-1}_k δ^l_j, averaged over the examples.

        Returns
        -------
        grad_weights, grad_biases : lists of new arrays shaped like ``weights`` and
            ``biases``.
        """
        X, Y, _ = self._check_XY(X, Y)
        self._params()
        hidden, output, cost = self._codes()
        n = X.shape[0]
        sizes, par, ident, (zbuf, abuf, dbuf, pbuf) = self._kernel_args(n)
        grad = self._gradient_buffer(X, abuf, n)
        real = np.dtype(self.dtype).type
        forward, backward, _ = flat.for_codes(par)
        with launch():
            forward(self._theta, sizes, X, ident, n, n, hidden, output, par, ident, zbuf,
                    abuf, 0)
            backward(self._theta, grad, grad, sizes, X, Y, ident, n, n, hidden, output, cost,
                     par, ident, zbuf, abuf, dbuf, pbuf, np.empty(n, self.dtype), real(0),
                     real(0), real(0), False, ident[:0], 0)
        return self._views(grad)

    # --- training ---------------------------------------------------------------------

    def fit(
        self, X, Y, epochs, batch_size, lr, momentum=0.0, weight_decay=0.0, shuffle=True,
        seed=None, validation_data=None, callbacks=None, progress=None,
    ):
        """Train by minibatch stochastic gradient descent.

        Each epoch shuffles the examples (when ``shuffle``), splits them into minibatches
        of ``batch_size`` (the last, partial one kept) and makes one step per minibatch
        with the gradient of that minibatch's mean cost:
        w := w - η (∂C/∂w + λ w) and b := b - η ∂C/∂b, η = ``lr``, λ = ``weight_decay``.
        With ``momentum`` μ: v := μ v - η g, p := p + v. The velocities v start at zero
        and are kept across calls (as an optimiser's state is), so a second ``fit`` goes
        on where the first stopped; :meth:`reset_momentum` zeroes them.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_inputs)
        Y : integer class labels (n_samples,) or float targets (n_samples, n_outputs).
        epochs : int >= 0
        batch_size : int >= 1 (larger than n_samples means full-batch descent).
        lr : float > 0, the learning rate η.
        momentum : float in [0, 1).
        weight_decay : float >= 0, L2 decay λ of the weights (not the biases) per step;
            Nielsen's regularisation parameter λ_N over n examples is λ = λ_N / n.
        shuffle : bool, reshuffle the examples every epoch.
        seed : int or None; seeds the shuffling. None continues the network's own
            generator (itself seeded by ``Network(seed=...)``).
        validation_data : (X_val, Y_val) or None; evaluated after every epoch.
        callbacks : list of callables ``f(net, history)``, called after every epoch;
            a callback that returns True stops training after that epoch.
        progress : bool or None; show a tqdm bar (None: when stderr is a terminal).

        Returns
        -------
        History
            Also kept as ``net.history``, which holds the epochs completed so far even
            when fit is interrupted.

        Raises
        ------
        TrainingDivergedError
            When the training cost turns NaN or infinite. The parameters are restored
            to those after the last finite epoch.
        """
        owner = "Network.fit"
        X, Y, _ = self._check_XY(X, Y)
        epochs = v.check_int(epochs, "epochs", 0, owner)
        batch_size = v.check_int(batch_size, "batch_size", 1, owner)
        lr = v.check_float(lr, "lr", owner, low_open=True)
        momentum = v.check_float(momentum, "momentum", owner, high=1.0)
        weight_decay = v.check_float(weight_decay, "weight_decay", owner)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise ValueError(
                f"The 'shuffle' parameter of {owner} must be an instance of 'bool'. "
                f"Got {shuffle!r} instead."
            )
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError(
                    f"The 'validation_data' parameter of {owner} must be a pair "
                    f"(X_val, Y_val). Got {type(validation_data).__name__} instead."
                )
            X_val, Y_val, labels_val = self._check_XY(*validation_data)
        v.check_seed(seed, owner)
        callbacks = [callbacks] if callable(callbacks) else list(callbacks or [])
        for cb in callbacks:
            if not callable(cb):
                raise ValueError(f"Each callback of {owner} must be callable; got {cb!r}.")
        self._params()
        hidden, output, cost = self._codes()
        # The kernels write the parameters (and velocities) while they read X and Y, and
        # are compiled on the promise that no array they write overlaps one they read
        # (fastbp._config.NOALIAS): training data that is a view of those buffers is
        # read as it was when fit was called.
        own = [self._theta] + ([self._vel] if self._vel is not None else [])
        if any(np.may_share_memory(X, p) for p in own):
            X = X.copy()
        if any(np.may_share_memory(Y, p) for p in own):
            Y = Y.copy()

        rng = np.random.default_rng(seed) if seed is not None else self._rng
        n = X.shape[0]
        batch = min(batch_size, n)
        real = np.dtype(self.dtype).type
        per_example = sum(a * b for a, b in zip(self.sizes, self.sizes[1:]))
        huge = n * epochs * per_example >= HUGE_PAGE_MIN_WORK
        sizes, par, ident, (zbuf, abuf, dbuf, pbuf) = self._kernel_args(batch, huge)
        train_epoch = flat.for_codes(par)[2]
        # a tiny network trains faster in one function per epoch (see fastbp.kernels.tiny)
        work = batch * per_example
        small = work <= TINY_MAX_WORK
        if small:  # its layout: inputs transposed, the output block as (batch, n_L)
            xt = np.empty(batch * self.n_inputs, self.dtype)
            out_views = [self._output_block(buf, batch, transposed=True)
                         for buf in (abuf, zbuf, dbuf)]
        grad = self._gradient_buffer(X, abuf, batch, huge)
        if momentum > 0 and self._vel is None:
            self._vel = _page_empty(self._theta.size, self.dtype, HUGE_PAGE_KEEP_MIN_BYTES)
            self._vel[...] = 0
        vel = self._vel if momentum > 0 else grad  # never read when momentum is zero
        costs = np.empty(batch, self.dtype)
        order = np.arange(n, dtype=np.int64)
        state = [self._theta] + ([self._vel] if momentum > 0 else [])  # restored on divergence
        snapshot = [np.empty_like(p) for p in state]

        history = self.history = History()
        if progress is None:
            progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, unit="epoch", desc="fit", leave=True)
        try:
            for epoch in range(1, epochs + 1):
                if shuffle:
                    order = rng.permutation(n).astype(np.int64, copy=False)
                for p, s in zip(state, snapshot):
                    np.copyto(s, p)
                with launch():
                    if small:
                        total = tiny.train_epoch(
                            self._theta, grad, vel, sizes, X, Y, order, batch, hidden,
                            output, cost, zbuf, abuf, dbuf, xt, *out_views, costs, real(lr),
                            real(momentum), real(weight_decay),
                        )
                    else:
                        total = train_epoch(
                            self._theta, grad, vel, sizes, X, Y, order, batch, hidden,
                            output, cost, par, ident, zbuf, abuf, dbuf, pbuf, costs,
                            real(lr), real(momentum), real(weight_decay),
                        )
                train_cost = total / n
                # Each cost is measured before its step, so the last step of an epoch
                # can overflow the parameters under a finite cost: check them too.
                if not (math.isfinite(train_cost) and _all_finite(state)):
                    for p, s in zip(state, snapshot):
                        np.copyto(p, s)
                    what = (
                        f"the training cost became {train_cost}"
                        if not math.isfinite(train_cost)
                        else "the parameters overflowed to infinity or NaN"
                    )
                    raise TrainingDivergedError(
                        f"Training diverged: {what} in epoch {epoch}. The parameters "
                        f"were restored to those after epoch {epoch - 1}. Try a lower "
                        f"learning rate (lr={lr:g} now)"
                        + (", a lower momentum" if momentum else "")
                        + (", a lower weight_decay" if weight_decay else "")
                        + ", or inputs scaled to a small range.",
                        epoch, history,
                    )
                history.train_cost.append(train_cost)
                if validation_data is not None:
                    out, vtotal = self._sweep(X_val, Y_val)
                    history.val_cost.append(vtotal / X_val.shape[0])
                    history.val_accuracy.append(self._accuracy(out, Y_val, labels_val))
                if bar is not None:
                    post = {"cost": f"{train_cost:.4g}"}
                    if history.val_accuracy:
                        post["val_acc"] = f"{history.val_accuracy[-1]:.4f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
                stop = False
                for cb in callbacks:
                    stop = (cb(self, history) is True) or stop
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()
        return history

    def reset_momentum(self):
        """Forget the momentum velocities kept from earlier ``fit`` calls."""
        self._vel = None

    # --- persistence ------------------------------------------------------------------

    def save(self, path):
        """Save the architecture and parameters to ``path`` (.npz; see :func:`fastbp.load`)."""
        from .io import save

        save(self, path)

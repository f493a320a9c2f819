"""Input checks, in scikit-learn's wording, run before any kernel sees the data.

Every public entry point converts user arrays here into C-contiguous, writeable arrays of
the network's dtype; the kernels then never check anything.
"""

import numbers
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_array

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu")
OUTPUTS = ACTIVATIONS + ("softmax",)
COSTS = ("quadratic", "cross_entropy")
DTYPES = ("float32", "float64")


def _sparse_error(name):
    return TypeError(
        f"Sparse data was passed for {name}, but dense data is required. Use "
        "'.toarray()' to convert to a dense numpy array."
    )


#: Bytes of an array from which :func:`all_finite` sums its parts in threads.
THREADED_SUM_MIN_BYTES = 1 << 24


def _sum(a):
    with np.errstate(over="ignore", invalid="ignore"):  # per thread
        return a.sum()


def all_finite(a):
    """Whether every element of the float array ``a`` is finite.

    A NaN or an infinity makes every sum that includes it NaN or infinite, so a finite
    sum of ``a`` proves all its elements finite, in one pass that only reads it (the
    first check of scikit-learn's ``assert_all_finite``); only a sum that is not finite
    (a bad element, or finite ones whose sum overflows) sends ``a`` through
    ``np.isfinite`` element by element. That test writes a boolean array as large as
    ``a`` first: over 60,000 × 784 inputs it took 37 ms in float64 (23 in float32)
    against the sum's 23 ms (12), a third of a W1 training epoch. From
    ``THREADED_SUM_MIN_BYTES`` on, a contiguous ``a`` is summed in as many parts as the
    kernels' threads (``fastbp.threads``), each in a thread of its own (NumPy sums
    without the GIL): 16 ms (11) on two threads. The answer is exact whatever the parts.
    """
    n = numba.get_num_threads() if a.nbytes >= THREADED_SUM_MIN_BYTES else 1
    if n > 1 and (a.flags.c_contiguous or a.flags.f_contiguous):
        parts = np.array_split(a.reshape(-1, order="A"), n)
        with ThreadPoolExecutor(n) as pool:
            sums = list(pool.map(_sum, parts))
    else:
        sums = [_sum(a)]
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.sum(sums))) or bool(np.isfinite(a).all())


def _as_kernel_array(a, dtype, name):
    """C-contiguous and writeable (Numba types read-only arrays differently), finite.

    ``a`` has passed scikit-learn's finiteness check in its own dtype; a float64 value
    beyond float32's range turns into an infinity when cast to a float32 network's
    dtype, so a narrowing cast is checked again, in scikit-learn's wording.
    """
    dtype = np.dtype(dtype)
    narrowing = a.dtype.kind == "f" and a.dtype.itemsize > dtype.itemsize
    with np.errstate(over="ignore"):
        a = np.ascontiguousarray(a, dtype=dtype)
    if narrowing and not all_finite(a):
        raise ValueError(
            f"Input {name} contains infinity or a value too large for {dtype!r}."
        )
    if not a.flags.writeable:
        a = a.copy()
    return a


def _ready(a, dtype, n_rows, n_cols):
    """Whether ``a`` already is what the checks below would return unchanged: a finite,
    C-contiguous, writeable ndarray of ``dtype`` with at least one row, ``n_cols``
    columns and ``n_rows`` rows (when given). Such an array skips scikit-learn's
    check_array, whose generic dispatch costs a few hundred microseconds per call (as
    much as a whole training epoch of a small network takes ten times over); anything
    else goes through the full checks and their messages."""
    return (
        type(a) is np.ndarray
        and a.dtype == dtype
        and a.ndim == 2
        and a.shape[0] >= 1
        and a.shape[1] == n_cols
        and (n_rows is None or a.shape[0] == n_rows)
        and a.flags.c_contiguous
        and a.flags.writeable
        and all_finite(a)
    )


def check_X(X, n_features, dtype, owner="Network"):
    """Validate the inputs X of a network with ``n_features`` inputs.

    Returns a C-contiguous, writeable array of ``dtype``, shape (n_samples, n_features).
    """
    if _ready(X, dtype, None, n_features):
        return X
    if sp.issparse(X):
        raise _sparse_error("X")
    X = check_array(
        X, dtype="numeric", ensure_all_finite=True, input_name="X", estimator=owner
    )
    if X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, but {owner} is expecting {n_features} "
            "features as input."
        )
    return _as_kernel_array(X, dtype, "X")


def check_Y(Y, n_samples, n_outputs, dtype, owner="Network"):
    """Validate targets: integer class labels, or floats of shape (n_samples, n_outputs).

    Returns
    -------
    Y : C-contiguous float array (n_samples, n_outputs) of ``dtype``; class labels are
        one-hot encoded (a single output neuron takes labels 0/1 as its target).
    labels : the int64 class labels, or None when Y was given as floats.
    """
    if _ready(Y, dtype, n_samples, n_outputs):
        return Y, None
    if sp.issparse(Y):
        raise _sparse_error("Y")
    if Y is None:
        raise ValueError(f"{owner} requires Y to be passed, but the target Y is None.")
    if np.ndim(Y) == 0:
        raise ValueError(
            f"Expected 1-D labels or 2-D targets for Y, got scalar array instead: Y={Y!r}."
        )
    Y = check_array(
        Y, dtype="numeric", ensure_2d=False, ensure_all_finite=True, input_name="Y",
        estimator=owner,
    )
    if Y.ndim > 2:  # check_array refuses these; kept for a clear message regardless
        raise ValueError(f"Y must be 1-D labels or 2-D targets; got {Y.ndim} dimensions.")
    if Y.shape[0] != n_samples:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{n_samples}, {Y.shape[0]}]"
        )
    if Y.ndim == 1 and Y.dtype.kind in "biu":
        labels = Y.astype(np.int64)
        n_classes = max(n_outputs, 2)
        bad = np.unique(labels[(labels < 0) | (labels >= n_classes)])
        if bad.size:
            raise ValueError(
                f"Y contains class labels outside [0, {n_classes - 1}], the range of "
                f"{owner}'s {n_outputs} output neuron(s): {bad[:10].tolist()}."
            )
        onehot = np.zeros((n_samples, n_outputs), dtype=dtype)
        if n_outputs == 1:
            onehot[:, 0] = labels
        else:
            onehot[np.arange(n_samples), labels] = 1
        return onehot, labels
    if Y.ndim == 1:
        if n_outputs != 1:
            raise ValueError(
                f"Y is a 1-D array of {Y.dtype} values, but {owner} has {n_outputs} "
                "output neurons: pass integer class labels or a 2-D array of shape "
                f"(n_samples, {n_outputs})."
            )
        Y = Y.reshape(-1, 1)
    if Y.shape[1] != n_outputs:
        raise ValueError(
            f"Y has {Y.shape[1]} columns, but {owner} is expecting {n_outputs} "
            "outputs."
        )
    return _as_kernel_array(Y, dtype, "Y"), None


def check_choice(value, name, choices, owner):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"The '{name}' parameter of {owner} must be a str among "
            f"{sorted(choices)}. Got {value!r} instead."
        )
    return value


def check_dtype(dtype, owner):
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(
            f"The 'dtype' parameter of {owner} must be a str among {list(DTYPES)}. "
            f"Got {dtype!r} instead."
        )
    return name


def check_int(value, name, low, owner):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(
            f"The '{name}' parameter of {owner} must be an int in the range "
            f"[{low}, inf). Got {value!r} instead."
        )
    return int(value)


def check_float(value, name, owner, low=0.0, high=np.inf, low_open=False, high_open=True):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = np.isfinite(value) and (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(
            f"The '{name}' parameter of {owner} must be a float in the range "
            f"{lo}{low}, {high}{hi}. Got {value!r} instead."
        )
    return value


def check_architecture(sizes, hidden, output, cost, owner="Network"):
    """Validate the layer sizes and the activation/cost names; return the sizes."""
    try:
        sizes = list(sizes)
    except TypeError:
        sizes = None
    if (
        sizes is None
        or len(sizes) < 2
        or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1
               for n in sizes)
    ):
        raise ValueError(
            f"The 'sizes' parameter of {owner} must be a sequence of at least two "
            f"positive ints (inputs, ..., outputs). Got {sizes!r} instead."
        )
    check_choice(hidden, "hidden", ACTIVATIONS, owner)
    check_choice(output, "output", OUTPUTS, owner)
    check_choice(cost, "cost", COSTS, owner)
    if cost == "cross_entropy" and output not in ("softmax", "sigmoid"):
        raise ValueError(
            f"cost='cross_entropy' needs output='softmax' (categorical) or "
            f"output='sigmoid' (per-unit binary); got output={output!r}. Use "
            "cost='quadratic' with this output."
        )
    if output == "softmax" and sizes[-1] < 2:
        raise ValueError(
            "output='softmax' needs at least 2 output neurons (a softmax over one "
            "neuron is always 1); use output='sigmoid' for a single output."
        )
    return [int(n) for n in sizes]


def check_seed(seed, owner):
    """None or a non-negative int, the seeds numpy's default_rng takes."""
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
    ):
        raise ValueError(
            f"The 'seed' parameter of {owner} must be None or an int in the range "
            f"[0, inf). Got {seed!r} instead."
        )
    return seed

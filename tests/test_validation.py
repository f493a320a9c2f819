"""Bad input is refused before any kernel runs, and a refused call changes nothing.

Every public method of Network is fed each kind of bad input; the test asserts the error
type, its wording (scikit-learn's where scikit-learn has one), that no kernel was
launched and that the parameters, the momentum velocities, the history and the random
generator are bitwise what they were. Arrays that are valid but unusual (Fortran-ordered,
strided, read-only, integer, another float width, byte-swapped) must give bitwise the
same results as C-ordered copies in the network's dtype.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import fastbp
from fastbp import kernels

SIZES = [8, 6, 3]
N = 12
FIT = dict(epochs=2, batch_size=5, lr=0.1)
#: every kernel entry point Network may call
# both builds of the drivers (fastbp.kernels.flat.for_codes)
KERNEL_ENTRY_POINTS = ("forward", "costs", "backward", "train_epoch", "forward_unpacked",
                       "backward_unpacked", "train_epoch_unpacked")


# --- helpers -------------------------------------------------------------------------


def make_net(dtype="float64", sizes=SIZES, seed=3, **kwargs):
    net = fastbp.Network(sizes, hidden="tanh", output="softmax", cost="cross_entropy",
                         dtype=dtype, seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 100)
    for b in net.biases:
        b[:] = rng.normal(0, 0.5, b.shape)
    return net


def make_data(n=N, n_in=SIZES[0], n_out=SIZES[-1], seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, n_in))
    labels = rng.integers(0, n_out, n)
    return X, labels


def state_of(net):
    """Everything a refused call must leave alone, as copies."""
    velocities = None
    if net._velocities is not None:
        velocities = [v.copy() for group in net._velocities for v in group]
    return {
        "weights": [w.copy() for w in net.weights],
        "biases": [b.copy() for b in net.biases],
        "velocities": velocities,
        "history": net.history.as_dict(),
        "history_object": net.history,
        "rng": net._rng.bit_generator.state,
    }


def assert_bitwise(a, b, what=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, what
    assert a.shape == b.shape, what
    assert a.tobytes() == b.tobytes(), what


def assert_state_unchanged(net, before):
    after = state_of(net)
    for name in ("weights", "biases"):
        assert len(after[name]) == len(before[name])
        for i, (x, y) in enumerate(zip(after[name], before[name])):
            assert_bitwise(x, y, f"{name}[{i}]")
    if before["velocities"] is None:
        assert after["velocities"] is None
    else:
        for x, y in zip(after["velocities"], before["velocities"]):
            assert_bitwise(x, y, "velocities")
    assert after["history"] == before["history"]
    assert after["history_object"] is before["history_object"]
    assert after["rng"] == before["rng"]


@pytest.fixture
def no_kernels(monkeypatch):
    """Make any kernel launch fail the test: validation must refuse first."""
    calls = []

    def forbidden(name):
        def launch(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"kernel {name} was launched on refused input")
        return launch

    for name in KERNEL_ENTRY_POINTS:
        monkeypatch.setattr(kernels.flat, name, forbidden(name))
    return calls


@pytest.fixture
def trained():
    """A network with momentum velocities and a history, the most state to preserve."""
    net = make_net()
    X, y = make_data()
    net.fit(X, y, epochs=2, batch_size=4, lr=0.1, momentum=0.9, seed=0)
    assert net._velocities is not None and net.history.epochs == 2
    return net


def call(method, net, X, Y):
    if method == "forward":
        return net.forward(X)
    if method == "predict":
        return net.predict(X)
    if method == "cost":
        return net.cost(X, Y)
    if method == "gradients":
        return net.gradients(X, Y)
    if method == "evaluate":
        return net.evaluate(X, Y)
    if method == "fit":
        return net.fit(X, Y, **FIT)
    if method == "fit-validation-X":
        Xt, yt = make_data()
        return net.fit(Xt, yt, validation_data=(X, Y), **FIT)
    raise AssertionError(method)


X_METHODS = ["forward", "predict", "cost", "gradients", "evaluate", "fit", "fit-validation-X"]
Y_METHODS = ["cost", "gradients", "evaluate", "fit", "fit-validation-X"]


# --- bad X -----------------------------------------------------------------------------


def _with(X, index, value):
    X = X.copy()
    X[index] = value
    return X


X_GOOD, Y_GOOD = make_data()

BAD_X = {
    "nan": (_with(X_GOOD, (3, 2), np.nan), ValueError, r"^Input X contains NaN\."),
    "inf": (_with(X_GOOD, (0, 0), np.inf), ValueError,
            r"^Input X contains infinity or a value too large for dtype\('float64'\)\."),
    "-inf": (_with(X_GOOD, (5, 7), -np.inf), ValueError, r"^Input X contains infinity"),
    "1-D": (X_GOOD[0], ValueError, r"^Expected 2D array, got 1D array instead"),
    "3-D": (X_GOOD[None], ValueError,
        r"^Found array with dim 3, while dim <= 2 is required by Network\."),
    "scalar": (1.5, ValueError, r"^Expected 2D array, got scalar array instead"),
    "None": (None, ValueError, r"^Expected 2D array, got scalar array instead"),
    "too few features": (X_GOOD[:, :5], ValueError,
                         r"^X has 5 features, but Network is expecting 8 features as input\.$"),
    "too many features": (np.hstack([X_GOOD, X_GOOD]), ValueError,
                          r"^X has 16 features, but Network is expecting 8 features as input\.$"),
    "no rows": (X_GOOD[:0], ValueError,
                r"^Found array with 0 sample\(s\) \(shape=\(0, 8\)\) while a minimum of 1 is "
                r"required by Network\."),
    "no columns": (X_GOOD[:, :0], ValueError,
        r"^Found array with 0 feature\(s\) \(shape=\(12, 0\)\)"),
    "strings": (X_GOOD.astype(str), ValueError,
                r"dtype='numeric' is not compatible with arrays of bytes/strings"),
    "bytes": (X_GOOD.astype(bytes), ValueError,
              r"dtype='numeric' is not compatible with arrays of bytes/strings"),
    "objects": (np.full(X_GOOD.shape, "a", dtype=object), ValueError,
        r"could not convert string to float"),
    "object with None": (_with(X_GOOD.astype(object), (1, 1), None), ValueError,
        r"^Input X contains NaN\."),
    "complex": (X_GOOD + 1j, ValueError, r"^Complex data not supported"),
    "csr": (sp.csr_matrix(X_GOOD), TypeError,
            r"^Sparse data was passed for X, but dense data is required\. Use '\.toarray\(\)'"),
    "csc array": (sp.csc_array(X_GOOD), TypeError, r"^Sparse data was passed for X"),
}


def _y_for(method, X):
    """Good targets matching the rows of a bad X (or a fixed count when X has none)."""
    n = np.shape(X)[0] if np.ndim(X) >= 2 else N
    return np.arange(n) % SIZES[-1] if n else Y_GOOD


@pytest.mark.parametrize("case", list(BAD_X))
@pytest.mark.parametrize("method", X_METHODS)
def test_bad_X_is_refused_and_changes_nothing(method, case, trained, no_kernels):
    X, error, match = BAD_X[case]
    before = state_of(trained)
    with pytest.raises(error, match=match):
        call(method, trained, X, _y_for(method, X))
    assert no_kernels == []
    assert_state_unchanged(trained, before)


@pytest.mark.parametrize("method", X_METHODS)
def test_float64_beyond_float32_range_is_refused_by_a_float32_network(method, no_kernels):
    net = make_net("float32")
    X = _with(X_GOOD, (2, 4), 1e300)  # finite in float64, infinite once cast
    before = state_of(net)
    with pytest.raises(ValueError, match=r"^Input X contains infinity or a value too large "
                                         r"for dtype\('float32'\)\."):
        call(method, net, X, Y_GOOD)
    assert no_kernels == []
    assert_state_unchanged(net, before)


# --- bad Y -----------------------------------------------------------------------------

ONE_HOT = np.eye(SIZES[-1])[Y_GOOD]

BAD_Y = {
    "nan": (_with(ONE_HOT, (2, 1), np.nan), ValueError, r"^Input Y contains NaN\."),
    "inf": (_with(ONE_HOT, (2, 1), np.inf), ValueError, r"^Input Y contains infinity"),
    "fewer rows": (Y_GOOD[:-1], ValueError,
                   r"^Found input variables with inconsistent numbers of samples: \[12, 11\]$"),
    "more rows": (np.concatenate([ONE_HOT, ONE_HOT]), ValueError,
                  r"^Found input variables with inconsistent numbers of samples: \[12, 24\]$"),
    "label too large": (_with(Y_GOOD, 4, 3), ValueError,
                        r"^Y contains class labels outside \[0, 2\], the range of Network's 3 "
                        r"output neuron\(s\): \[3\]\.$"),
    "negative label": (_with(Y_GOOD, 0, -1), ValueError,
                       r"^Y contains class labels outside \[0, 2\].*: \[-1\]\.$"),
    "unsigned label too large": (_with(Y_GOOD.astype(np.uint8), 0, 255), ValueError,
                                 r"outside \[0, 2\].*: \[255\]\.$"),
    "too many columns": (np.zeros((N, 4)), ValueError,
                         r"^Y has 4 columns, but Network is expecting 3 outputs\.$"),
    "one column": (np.zeros((N, 1)), ValueError,
                   r"^Y has 1 columns, but Network is expecting 3 outputs\.$"),
    "1-D floats": (Y_GOOD.astype(float), ValueError,
                   r"^Y is a 1-D array of float64 values, but Network has 3 output neurons"),
    "3-D": (ONE_HOT[:, :, None], ValueError, r"^Found array with dim 3"),
    "no rows": (Y_GOOD[:0], ValueError, r"^Found array with 0 sample\(s\)"),
    "strings": (Y_GOOD.astype(str), ValueError,
                r"dtype='numeric' is not compatible with arrays of bytes/strings"),
    "None": (None, ValueError, r"^Network requires Y to be passed, but the target Y is None\."),
    "scalar": (1, ValueError, r"^Expected 1-D labels or 2-D targets for Y, got scalar array"),
    "csr": (sp.csr_matrix(ONE_HOT), TypeError,
            r"^Sparse data was passed for Y, but dense data is required"),
}


@pytest.mark.parametrize("case", list(BAD_Y))
@pytest.mark.parametrize("method", Y_METHODS)
def test_bad_Y_is_refused_and_changes_nothing(method, case, trained, no_kernels):
    Y, error, match = BAD_Y[case]
    before = state_of(trained)
    with pytest.raises(error, match=match):
        call(method, trained, X_GOOD, Y)
    assert no_kernels == []
    assert_state_unchanged(trained, before)


@pytest.mark.parametrize("method", Y_METHODS)
def test_float64_targets_beyond_float32_range_are_refused(method, no_kernels):
    net = make_net("float32")
    before = state_of(net)
    with pytest.raises(ValueError, match=r"^Input Y contains infinity or a value too large "
                                         r"for dtype\('float32'\)\."):
        call(method, net, X_GOOD, _with(ONE_HOT, (0, 0), -1e40))
    assert no_kernels == []
    assert_state_unchanged(net, before)


def test_single_output_takes_labels_0_and_1_only(no_kernels):
    net = fastbp.Network([8, 1], seed=0)
    before = state_of(net)
    with pytest.raises(ValueError, match=r"outside \[0, 1\], the range of Network's 1 output "
                                         r"neuron\(s\): \[2\]\."):
        net.cost(X_GOOD, np.arange(N) % 3)
    assert no_kernels == []
    assert_state_unchanged(net, before)


# --- bad hyperparameters of fit ---------------------------------------------------------

BAD_FIT = [
    (dict(epochs=-1),
        r"^The 'epochs' parameter of Network\.fit must be an int in the range \[0, inf\)\. Got -1 "
        r"instead\."),
    (dict(epochs=1.5), r"'epochs' parameter .* Got 1\.5 instead"),
    (dict(epochs="3"), r"'epochs' parameter .* Got '3' instead"),
    (dict(epochs=True), r"'epochs' parameter .* Got True instead"),
    (dict(epochs=None), r"'epochs' parameter .* Got None instead"),
    (dict(batch_size=0),
        r"^The 'batch_size' parameter of Network\.fit must be an int in the range \[1, inf\)\. Got "
        r"0 instead\."),
    (dict(batch_size=-3), r"'batch_size' parameter .* Got -3 instead"),
    (dict(batch_size=2.0), r"'batch_size' parameter .* Got 2\.0 instead"),
    (dict(lr=0.0),
        r"^The 'lr' parameter of Network\.fit must be a float in the range \(0\.0, inf\)\. Got "
        r"0\.0 instead\."),
    (dict(lr=-0.1), r"'lr' parameter .* Got -0\.1 instead"),
    (dict(lr=np.nan), r"'lr' parameter .* Got nan instead"),
    (dict(lr=np.inf), r"'lr' parameter .* Got inf instead"),
    (dict(lr="0.1"), r"'lr' parameter .* Got '0\.1' instead"),
    (dict(lr=None), r"'lr' parameter .* Got None instead"),
    (dict(momentum=1.0),
        r"^The 'momentum' parameter of Network\.fit must be a float in the range \[0\.0, 1\.0\)\. "
        r"Got 1\.0 instead\."),
    (dict(momentum=-0.5), r"'momentum' parameter .* Got -0\.5 instead"),
    (dict(weight_decay=-1e-3), r"'weight_decay' parameter .* Got -0\.001 instead"),
    (dict(weight_decay=np.nan), r"'weight_decay' parameter .* Got nan instead"),
    (dict(shuffle=1),
        r"^The 'shuffle' parameter of Network\.fit must be an instance of 'bool'\. Got 1 "
        r"instead\."),
    (dict(shuffle="yes"), r"'shuffle' parameter"),
    (dict(validation_data=X_GOOD),
        r"'validation_data' parameter of Network\.fit must be a pair \(X_val, Y_val\)\. Got "
        r"ndarray instead\."),
    (dict(validation_data=(X_GOOD,)), r"'validation_data' parameter .* Got tuple instead"),
    (dict(callbacks=[lambda net, h: None, 42]),
        r"^Each callback of Network\.fit must be callable; got 42\."),
]


@pytest.mark.parametrize("kwargs,match", BAD_FIT, ids=[str(k) for k, _ in BAD_FIT])
@pytest.mark.parametrize("momentum_state", [False, True], ids=["fresh", "trained"])
def test_bad_fit_parameters_are_refused_and_change_nothing(
    kwargs, match, momentum_state, trained, no_kernels
):
    net = trained if momentum_state else make_net()
    args = dict(FIT, momentum=0.5)
    args.update(kwargs)
    before = state_of(net)
    with pytest.raises(ValueError, match=match):
        net.fit(X_GOOD, Y_GOOD, **args)
    assert no_kernels == []
    assert_state_unchanged(net, before)


def test_a_refused_fit_does_not_shift_later_results():
    """The refused call drew nothing from the network's generator."""
    X, y = X_GOOD, Y_GOOD
    a, b = make_net(), make_net()
    with pytest.raises(ValueError):
        a.fit(X, y, epochs=2, batch_size=4, lr=-1.0)
    with pytest.raises(ValueError):
        a.fit(X, y[:-1], epochs=2, batch_size=4, lr=0.1)
    a.fit(X, y, epochs=2, batch_size=4, lr=0.1)
    b.fit(X, y, epochs=2, batch_size=4, lr=0.1)
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        assert_bitwise(p, q)


# --- bad constructor arguments -----------------------------------------------------------

BAD_INIT = [
    (dict(sizes=[8]),
        r"^The 'sizes' parameter of Network must be a sequence of at least two positive ints"),
    (dict(sizes=[]), r"'sizes' parameter"),
    (dict(sizes=[8, 0]), r"'sizes' parameter .* Got \[8, 0\] instead"),
    (dict(sizes=[8, -2, 3]), r"'sizes' parameter"),
    (dict(sizes=[8, 2.5]), r"'sizes' parameter"),
    (dict(sizes=[8, True]), r"'sizes' parameter"),
    (dict(sizes=None), r"'sizes' parameter .* Got None instead"),
    (dict(sizes=8), r"'sizes' parameter"),
    (dict(hidden="softmax"),
        r"^The 'hidden' parameter of Network must be a str among \['identity', 'relu', 'sigmoid', "
        r"'tanh'\]\. Got 'softmax' instead\."),
    (dict(hidden="Sigmoid"), r"'hidden' parameter .* Got 'Sigmoid' instead"),
    (dict(hidden=None), r"'hidden' parameter .* Got None instead"),
    (dict(output="logistic"),
        r"^The 'output' parameter of Network must be a str among \['identity', 'relu', 'sigmoid', "
        r"'softmax', 'tanh'\]\. Got 'logistic' instead\."),
    (dict(cost="mse"),
        r"^The 'cost' parameter of Network must be a str among \['cross_entropy', 'quadratic'\]\. "
        r"Got 'mse' instead\."),
    (dict(cost="cross_entropy", output="tanh"),
        r"cost='cross_entropy' needs output='softmax' .* got output='tanh'"),
    (dict(cost="cross_entropy", output="identity"), r"cost='cross_entropy' needs"),
    (dict(output="softmax", sizes=[8, 1]), r"output='softmax' needs at least 2 output neurons"),
    (dict(dtype="float16"),
        r"^The 'dtype' parameter of Network must be a str among \['float32', 'float64'\]\. Got "
        r"'float16' instead\."),
    (dict(dtype=np.int64), r"'dtype' parameter"),
    (dict(dtype="double precision"), r"'dtype' parameter"),
]


@pytest.mark.parametrize("kwargs,match", BAD_INIT, ids=[str(k) for k, _ in BAD_INIT])
def test_bad_constructor_arguments_are_refused(kwargs, match):
    args = dict(sizes=SIZES)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fastbp.Network(**args)


def test_network_with_broken_parameters_is_refused_before_kernels(no_kernels):
    """Parameters replaced by the user with arrays that no longer fit are caught."""
    net = make_net()
    net.weights[0] = net.weights[0][:, :-1].copy()
    with pytest.raises(ValueError, match=r"Network\.weights\[0\] must be a float64 array of shape"):
        net.forward(X_GOOD)
    net = make_net()
    net.biases[1] = net.biases[1].astype(np.float32)
    with pytest.raises(ValueError, match=r"Network\.biases\[1\] must be a float64 array of shape"):
        net.fit(X_GOOD, Y_GOOD, **FIT)
    assert no_kernels == []


def test_replaced_parameters_of_the_right_shape_are_taken():
    """An entry replaced by an array of the same shape and dtype (any layout) is copied
    into the network's parameter buffer, and the list holds the live view again."""
    net, twin = make_net(), make_net()
    new = np.asfortranarray(net.weights[0] * 0.5)
    net.weights[0] = new
    twin.weights[0][...] = new
    assert np.array_equal(net.forward(X_GOOD), twin.forward(X_GOOD))
    assert net.weights[0] is not new and np.array_equal(net.weights[0], new)
    net.fit(X_GOOD, Y_GOOD, **FIT)
    twin.fit(X_GOOD, Y_GOOD, **FIT)
    assert np.array_equal(net.weights[0], twin.weights[0])


# --- valid but unusual layouts: bitwise the same results ----------------------------------


def _readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def _wide_columns(a):
    """A view of the columns of a wider array: rows are not contiguous."""
    wide = np.zeros((a.shape[0], a.shape[1] + 5), a.dtype)
    wide[:, 2:2 + a.shape[1]] = a
    view = wide[:, 2:2 + a.shape[1]]
    assert not view.flags.c_contiguous
    return view


def _every_other_row(a):
    """A view of every other row of a taller array."""
    tall = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
    tall[::2] = a
    view = tall[::2]
    assert not view.flags.c_contiguous
    return view


def _reversed_twice(a):
    """Negative strides: a view reversed along both axes of a reversed copy."""
    return np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1]


X_LAYOUTS = {
    "fortran": np.asfortranarray,
    "column slice": _wide_columns,
    "row stride": _every_other_row,
    "negative strides": _reversed_twice,
    "read-only": _readonly,
    "read-only fortran": lambda a: _readonly(np.asfortranarray(a)),
    "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "list": lambda a: a.tolist(),
}


def _outputs(net, X, Y, X_val, Y_val):
    """Everything Network computes from (X, Y), on a fresh copy of ``net``."""
    results = {
        "forward": net.forward(X),
        "predict": net.predict(X),
        "cost": np.float64(net.cost(X, Y)),
        "evaluate": np.array(list(net.evaluate(X, Y).values())),
    }
    gW, gb = net.gradients(X, Y)
    results.update({f"gW{i}": g for i, g in enumerate(gW)})
    results.update({f"gb{i}": g for i, g in enumerate(gb)})
    history = net.fit(X, Y, epochs=3, batch_size=5, lr=0.2, momentum=0.5,
                      weight_decay=1e-3, seed=7, validation_data=(X_val, Y_val))
    results.update({f"W{i}": w for i, w in enumerate(net.weights)})
    results.update({f"b{i}": b for i, b in enumerate(net.biases)})
    for key, values in history.as_dict().items():
        results[key] = np.array(values)
    return results


def _assert_same_outputs(got, expected):
    assert got.keys() == expected.keys()
    for key in expected:
        assert_bitwise(got[key], expected[key], key)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layout", list(X_LAYOUTS))
def test_unusual_layouts_give_bitwise_the_same_results(layout, dtype):
    X = X_GOOD.astype(dtype)
    Y = np.eye(SIZES[-1], dtype=dtype)[Y_GOOD]
    expected = _outputs(make_net(dtype), X, Y, X, Y)
    transform = X_LAYOUTS[layout]
    X_odd, Y_odd = transform(X), transform(Y)
    X_keep, Y_keep = np.array(X_odd), np.array(Y_odd)
    got = _outputs(make_net(dtype), X_odd, Y_odd, transform(X), transform(Y))
    _assert_same_outputs(got, expected)
    # and the caller's arrays are left as they were
    assert_bitwise(np.array(X_odd), X_keep)
    assert_bitwise(np.array(Y_odd), Y_keep)


OTHER_DTYPES = {
    "int64 X": lambda X, dtype: np.round(X * 3).astype(np.int64),
    "int8 X": lambda X, dtype: np.round(X * 3).astype(np.int8),
    "bool X": lambda X, dtype: X > 0,
    "float16 X": lambda X, dtype: X.astype(np.float16),
    "float32 X": lambda X, dtype: X.astype(np.float32),
    "float64 X": lambda X, dtype: X.astype(np.float64),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", list(OTHER_DTYPES))
def test_other_input_dtypes_match_a_cast_copy(kind, dtype):
    """Any numeric X gives what its C-ordered cast to the network's dtype gives."""
    X_other = OTHER_DTYPES[kind](X_GOOD, dtype)
    X_cast = np.ascontiguousarray(X_other, dtype=dtype)
    Y = np.eye(SIZES[-1], dtype=dtype)[Y_GOOD]
    expected = _outputs(make_net(dtype), X_cast, Y, X_cast, Y)
    got = _outputs(make_net(dtype), np.asfortranarray(X_other), Y, X_other, Y)
    _assert_same_outputs(got, expected)


LABEL_FORMS = {
    "int64 labels": lambda y: y.astype(np.int64),
    "uint8 labels": lambda y: y.astype(np.uint8),
    "int32 read-only labels": lambda y: _readonly(y.astype(np.int32)),
    "strided labels": lambda y: _every_other_row(y.astype(np.int16)),
    "list of labels": lambda y: y.tolist(),
    "float32 one-hot": lambda y: np.eye(SIZES[-1], dtype=np.float32)[y],
    "int one-hot fortran": lambda y: np.asfortranarray(np.eye(SIZES[-1], dtype=np.int64)[y]),
}


@pytest.mark.parametrize("form", list(LABEL_FORMS))
def test_label_forms_match_float_one_hot_targets(form):
    Y_ref = np.eye(SIZES[-1])[Y_GOOD]
    expected = _outputs(make_net(), X_GOOD, Y_ref, X_GOOD, Y_ref)
    Y = LABEL_FORMS[form](Y_GOOD)
    got = _outputs(make_net(), X_GOOD, Y, X_GOOD, LABEL_FORMS[form](Y_GOOD))
    _assert_same_outputs(got, expected)


def test_single_output_labels_match_a_float_column():
    net_a = fastbp.Network([8, 4, 1], seed=5)
    net_b = fastbp.Network([8, 4, 1], seed=5)
    y = Y_GOOD % 2
    got = _outputs(net_a, X_GOOD, y.astype(np.uint8), X_GOOD, y.tolist())
    expected = _outputs(net_b, X_GOOD, y[:, None].astype(float), X_GOOD, y.astype(float))
    _assert_same_outputs(got, expected)


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_all_finite_is_the_elementwise_test(dtype, threaded, monkeypatch):
    """all_finite answers as np.isfinite(a).all() does: for finite arrays, also those
    whose sum overflows (its element-by-element fallback), and for arrays with a NaN, an
    infinity of either sign, or both infinities (whose sum is NaN); summed whole, and in
    parts in threads (for the test, from any size; C and Fortran order)."""
    import numba

    from fastbp import _validation as v

    if threaded:
        if numba.config.NUMBA_NUM_THREADS < 2:
            pytest.skip("one thread only")
        monkeypatch.setattr(v, "THREADED_SUM_MIN_BYTES", 0)
        parts, whole = [], v._sum
        monkeypatch.setattr(v, "_sum", lambda a: parts.append(a.size) or whole(a))

    big = np.finfo(dtype).max
    cases = {
        "finite": X_GOOD,
        "sum overflows": _with(_with(X_GOOD, (0, 0), big), (4, 3), big),
        "sum overflows below": _with(_with(X_GOOD, (0, 0), -big), (4, 3), -big),
        "nan": _with(X_GOOD, (3, 2), np.nan),
        "inf": _with(X_GOOD, (11, 7), np.inf),
        "-inf": _with(X_GOOD, (1, 1), -np.inf),
        "both infinities": _with(_with(X_GOOD, (0, 1), np.inf), (2, 2), -np.inf),
        "one element": np.array([[np.nan]]),
        "empty": X_GOOD[:0],
    }
    for name, a in cases.items():
        for a in (a.astype(dtype), np.asfortranarray(a, dtype=dtype)):
            expected = bool(np.isfinite(a).all())
            with fastbp.threads(2 if threaded else 1), np.errstate(over="raise"):
                assert v.all_finite(a) is expected, name
            assert expected == (name in ("finite", "sum overflows", "sum overflows below",
                                         "empty")), name
    if threaded:  # two parts a call
        assert len(parts) == 2 * 2 * len(cases) and sum(parts) > 0
    huge = cases["sum overflows"].astype(dtype)
    with np.errstate(over="ignore"):
        assert not np.isfinite(huge.sum())
    assert v.check_X(huge, SIZES[0], dtype) is huge  # taken as it is


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ready_arrays_are_taken_as_they_are_and_others_checked(dtype):
    """A finite, C-contiguous, writeable array of the network's dtype and shape is used
    without a copy (it skips scikit-learn's check_array); the same array with one NaN,
    of another dtype or read-only is checked, converted or refused as before."""
    from fastbp import _validation as v

    X, labels = make_data()
    X, Y = X.astype(dtype), np.eye(SIZES[-1], dtype=dtype)[labels]  # one-hot, C-ordered
    assert v.check_X(X, SIZES[0], dtype) is X
    Y2, labels = v.check_Y(Y, N, SIZES[-1], dtype)
    assert Y2 is Y and labels is None
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        v.check_X(bad, SIZES[0], dtype)
    with pytest.raises(ValueError, match="X has 8 features, but Network is expecting 9"):
        v.check_X(X, SIZES[0] + 1, dtype)
    frozen = X.copy()
    frozen.flags.writeable = False
    taken = v.check_X(frozen, SIZES[0], dtype)
    assert taken is not frozen and taken.flags.writeable and np.array_equal(taken, X)
    other = "float32" if dtype == "float64" else "float64"
    assert v.check_X(X, SIZES[0], other).dtype == other

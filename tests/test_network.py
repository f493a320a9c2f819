"""The Network API: training, prediction, persistence, determinism, and a real task."""

import numba
import numpy as np
import pytest

import fastbp
from fastbp import reference as R
from fastbp.datasets import load
from fastbp.kernels import codes, flat


def _data(n=40, n_in=5, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, n_in))
    y = np.argmax(X @ rng.normal(0, 1, (n_in, n_out)), axis=1)  # a learnable rule
    return X, y


def test_shapes_and_dtypes():
    net = fastbp.Network([5, 4, 3], dtype="float32", seed=0)
    assert [w.shape for w in net.weights] == [(4, 5), (3, 4)]
    assert [b.shape for b in net.biases] == [(4,), (3,)]
    assert all(p.dtype == np.float32 for p in net.weights + net.biases)
    X, y = _data()
    assert net.forward(X).shape == (40, 3)
    assert net.forward(X).dtype == np.float32
    assert net.predict(X).shape == (40,)
    res = net.evaluate(X, y)
    assert set(res) == {"cost", "accuracy"}
    assert 0 <= res["accuracy"] <= 1


def test_initialisation_is_seeded_and_scaled():
    a = fastbp.Network([400, 300, 10], hidden="relu", seed=3)
    b = fastbp.Network([400, 300, 10], hidden="relu", seed=3)
    c = fastbp.Network([400, 300, 10], hidden="relu", seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a.weights, b.weights))
    assert not np.array_equal(a.weights[0], c.weights[0])
    # He for ReLU layers: std sqrt(2/400); LeCun for the sigmoid output: std sqrt(1/300)
    assert a.weights[0].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert a.weights[1].std() == pytest.approx(np.sqrt(1 / 300), rel=0.05)
    assert all(not b.any() for b in a.biases)


def test_labels_and_one_hot_targets_are_the_same():
    X, y = _data()
    net = fastbp.Network([5, 4, 3], output="softmax", cost="cross_entropy", seed=0)
    Y = np.eye(3)[y]
    assert net.cost(X, y) == net.cost(X, Y)
    g1, g2 = net.gradients(X, y), net.gradients(X, Y)
    assert all(np.array_equal(a, b) for a, b in zip(g1[0] + g1[1], g2[0] + g2[1]))


def test_single_output_labels_and_threshold():
    X, _ = _data(n_out=2)
    y = (X[:, 0] > 0).astype(int)
    net = fastbp.Network([5, 8, 1], output="sigmoid", cost="cross_entropy", seed=0)
    net.fit(X, y, epochs=200, batch_size=8, lr=0.5, seed=0)
    out = net.forward(X)[:, 0]
    assert np.array_equal(net.predict(X), (out >= 0.5).astype(int))
    assert net.evaluate(X, y)["accuracy"] >= 0.95


def test_predict_is_argmax_and_evaluate_matches():
    X, y = _data()
    net = fastbp.Network([5, 6, 3], seed=1)
    out = net.forward(X)
    assert np.array_equal(net.predict(X), out.argmax(axis=1))
    res = net.evaluate(X, y)
    assert res["accuracy"] == np.mean(out.argmax(axis=1) == y)
    assert res["cost"] == pytest.approx(net.cost(X, y), rel=1e-15)


def test_fit_matches_reference_over_epochs():
    """Three shuffled epochs with momentum and decay, against the reference's SGD."""
    X, y = _data(n=50)
    Y = np.eye(3)[y]
    net = fastbp.Network([5, 7, 3], hidden="tanh", output="softmax", cost="cross_entropy", seed=2)
    W = [w.copy() for w in net.weights]
    B = [b.copy() for b in net.biases]
    vel = ([np.zeros_like(w) for w in W], [np.zeros_like(b) for b in B])
    rng = np.random.default_rng(11)
    costs = [
        R.train_epoch(W, B, X, Y, rng.permutation(50), 16, 0.2, "tanh", "softmax",
                      "cross_entropy", 0.9, 1e-3, vel) / 50
        for _ in range(3)
    ]
    hist = net.fit(X, y, epochs=3, batch_size=16, lr=0.2, momentum=0.9, weight_decay=1e-3, seed=11)
    np.testing.assert_allclose(hist.train_cost, costs, rtol=1e-10)
    for p, q in zip(net.weights + net.biases, W + B):
        np.testing.assert_allclose(p, q, rtol=1e-10)


def test_history_validation_and_callbacks():
    X, y = _data(n=60)
    net = fastbp.Network([5, 6, 3], output="softmax", cost="cross_entropy", seed=0)
    seen = []

    def cb(net_, history):
        seen.append((net_ is net, history.epochs))
        return history.epochs == 3  # stop after the third epoch

    hist = net.fit(X, y, epochs=10, batch_size=10, lr=0.1, validation_data=(X[:20], y[:20]),
                   callbacks=[cb])
    assert seen == [(True, 1), (True, 2), (True, 3)]
    assert hist.epochs == 3 and len(hist.val_cost) == 3 and len(hist.val_accuracy) == 3
    assert hist is net.history
    assert hist.val_cost[-1] == pytest.approx(net.evaluate(X[:20], y[:20])["cost"], rel=1e-15)
    assert hist.val_accuracy[-1] == net.evaluate(X[:20], y[:20])["accuracy"]
    assert set(hist.as_dict()) == {"train_cost", "val_cost", "val_accuracy"}


def test_training_cost_goes_down():
    X, y = _data(n=200)
    net = fastbp.Network([5, 10, 3], output="softmax", cost="cross_entropy", seed=0)
    hist = net.fit(X, y, epochs=20, batch_size=10, lr=0.1, seed=0)
    assert hist.train_cost[-1] < 0.8 * hist.train_cost[0]


def test_zero_epochs_changes_nothing():
    X, y = _data()
    net = fastbp.Network([5, 4, 3], seed=0)
    before = [p.copy() for p in net.weights + net.biases]
    hist = net.fit(X, y, epochs=0, batch_size=4, lr=1.0)
    assert hist.epochs == 0
    assert all(np.array_equal(p, q) for p, q in zip(before, net.weights + net.biases))


def test_batch_larger_than_data_is_full_batch():
    X, y = _data(n=12)
    a = fastbp.Network([5, 4, 3], seed=0)
    b = fastbp.Network([5, 4, 3], seed=0)
    a.fit(X, y, epochs=2, batch_size=100, lr=0.5, shuffle=False)
    b.fit(X, y, epochs=2, batch_size=12, lr=0.5, shuffle=False)
    assert all(np.array_equal(p, q) for p, q in zip(a.weights + a.biases, b.weights + b.biases))


def test_seed_fixes_everything():
    X, y = _data()
    runs = []
    for _ in range(2):
        net = fastbp.Network([5, 4, 3], seed=5)
        net.fit(X, y, epochs=3, batch_size=7, lr=0.3)  # shuffled by the network's seed
        runs.append(net.weights + net.biases)
    assert all(np.array_equal(p, q) for p, q in zip(*runs))
    other = fastbp.Network([5, 4, 3], seed=5)
    other.fit(X, y, epochs=3, batch_size=7, lr=0.3, seed=123)
    assert not np.array_equal(other.weights[0], runs[0][0])


@pytest.mark.parametrize("sizes,batch", [([40, 40, 30], 8), ([4, 4, 4, 1], 2)])
def test_fit_reads_training_data_that_is_its_own_weights_as_it_was(sizes, batch):
    """Inputs that are a view of the parameters being trained are read as they were when
    fit was called: the kernels never read what they write."""
    net = fastbp.Network(sizes, seed=0)
    twin = fastbp.Network(sizes, seed=0)
    X = net.weights[0]  # (sizes[1], sizes[0]): as many inputs as the network takes
    X_before = X.copy()
    y = np.arange(X.shape[0]) % max(2, sizes[-1])
    net.fit(X, y, epochs=2, batch_size=batch, lr=0.5, momentum=0.9, seed=1)
    twin.fit(X_before, y, epochs=2, batch_size=batch, lr=0.5, momentum=0.9, seed=1)
    assert not np.array_equal(net.weights[0], X_before)
    assert all(np.array_equal(p, q)
               for p, q in zip(net.weights + net.biases, twin.weights + twin.biases))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes,batch", [([784, 16, 16, 10], 100), ([7, 5, 3], 1), ([4, 4, 4, 1], 33),
                                        ([30, 64, 64, 12], 100), ([50, 200, 12], 100),
                                        ([40, 300, 10], 100)])
def test_thread_count_changes_no_bit(sizes, batch, dtype):
    """Any thread count, bitwise the same gradients, training and outputs; the last
    three networks' hidden layers take parallel gradient steps over columns and parallel
    BP2 over examples (COLUMNS), but 64 -> 64's BP2 over copied blocks of W's columns
    (PACKED), and their forward passes split examples among threads, but 40 -> 300's
    over copied blocks of W^T's columns (PACKED); the last's first layer (and in float64
    the one before's) packs δ and steps over columns too."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (300, sizes[0]))
    y = rng.integers(0, sizes[-1], 300)
    results = []
    for n_threads in (1, 2):
        with fastbp.threads(n_threads):
            assert numba.get_num_threads() == n_threads
            net = fastbp.Network(sizes, hidden="relu", output="softmax" if sizes[-1] > 1 else "sigmoid",
                                 cost="cross_entropy", dtype=dtype, seed=0)
            grads = net.gradients(X, y)
            net.fit(X, y, epochs=2, batch_size=batch, lr=0.05, momentum=0.9, seed=0)
            if sizes == [40, 300, 10]:
                par = net._kernel_args(batch)[1]
                assert par[0, 4] and par[0, 2] == codes.COLUMNS and par[0, 0] == codes.PACKED
            if sizes == [30, 64, 64, 12]:
                assert net._kernel_args(batch)[1][1, 1] == codes.PACKED
            results.append((grads[0] + grads[1], net.weights + net.biases, net.forward(X)))
    (g1, p1, o1), (g2, p2, o2) = results
    assert all(np.array_equal(a, b) for a, b in zip(g1, g2))
    assert all(np.array_equal(a, b) for a, b in zip(p1, p2))
    assert np.array_equal(o1, o2)


@pytest.mark.parametrize("sizes,batch,dtype,packs", [
    ([8, 16, 4], 32, "float64", False), ([784, 16, 16, 10], 100, "float32", False),
    ([784, 100, 10], 10, "float64", False), ([30, 64, 64, 12], 100, "float64", True),
    ([40, 300, 10], 100, "float32", True), ([784, 512, 512, 10], 128, "float64", True),
])
def test_drivers_run_the_packed_kernels_where_a_layer_packs(sizes, batch, dtype, packs):
    """A network whose layers run a packed kernel (forward pass or BP2) trains through
    the drivers built with those kernels' branches; any other through the build without
    them, whose first fit compiles neither packed kernel."""
    par = fastbp.Network(sizes, dtype=dtype, seed=0)._kernel_args(batch)[1]
    assert (par[:, :2] == codes.PACKED).any() == packs
    built = ((flat.forward, flat.backward, flat.train_epoch) if packs else
             (flat.forward_unpacked, flat.backward_unpacked, flat.train_epoch_unpacked))
    assert all(a is b for a, b in zip(flat.for_codes(par), built, strict=True))


def test_threads_context_restores_on_error():
    before = numba.get_num_threads()
    with pytest.raises(RuntimeError):
        with fastbp.threads(1):
            raise RuntimeError("boom")
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="number of threads"):
        with fastbp.threads(0):
            pass


def test_save_and_load_roundtrip(tmp_path):
    X, y = _data()
    net = fastbp.Network([5, 4, 3], hidden="tanh", output="softmax", cost="cross_entropy",
                         dtype="float32", seed=0)
    net.fit(X, y, epochs=2, batch_size=8, lr=0.1)
    path = tmp_path / "model.npz"
    net.save(path)
    back = fastbp.load(path)
    assert (back.sizes, back.hidden, back.output, back.cost_name, back.dtype) == (
        [5, 4, 3], "tanh", "softmax", "cross_entropy", "float32")
    assert all(np.array_equal(p, q) for p, q in zip(net.weights + net.biases, back.weights + back.biases))
    assert np.array_equal(net.forward(X), back.forward(X))


def test_digits_reaches_95_percent():
    """64-32-10 on scikit-learn's embedded digits, seeded: at least 0.95 test accuracy."""
    data = load("digits")
    net = fastbp.Network([64, 32, 10], hidden="sigmoid", output="softmax",
                         cost="cross_entropy", seed=0)
    hist = net.fit(data.X_train, data.y_train, epochs=30, batch_size=10, lr=0.5, seed=0,
                   validation_data=(data.X_test, data.y_test))
    acc = net.evaluate(data.X_test, data.y_test)["accuracy"]
    assert acc >= 0.95
    assert hist.val_accuracy[-1] == acc


def test_bad_seed_and_single_callback():
    with pytest.raises(ValueError, match="'seed' parameter of Network must be None or an int"):
        fastbp.Network([2, 1], seed=-1)
    X, y = _data(n_out=2)
    net = fastbp.Network([5, 1], seed=0)
    before = [p.copy() for p in net.weights + net.biases]
    with pytest.raises(ValueError, match="'seed' parameter of Network.fit"):
        net.fit(X, y % 2, epochs=1, batch_size=4, lr=0.1, seed="a")
    assert all(np.array_equal(p, q) for p, q in zip(before, net.weights + net.biases))
    hist = net.fit(X, y % 2, epochs=5, batch_size=4, lr=0.1, callbacks=lambda n, h: h.epochs == 2)
    assert hist.epochs == 2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_workspaces_are_placed_half_a_page_from_their_rows(dtype):
    """BP2, the gradient and the plain SGD step add rows a multiple of 4 KB long into
    rows of a workspace (or of the weights): the workspace block is placed half a page
    (4 KB) away from them, whatever the allocator returned; other shapes get a plain
    array."""
    from fastbp.network import PAGE, _spaced_empty

    itemsize = np.dtype(dtype).itemsize
    rows = np.empty((8, PAGE // itemsize), dtype)
    for own in (0, 5, 77):
        buf = _spaced_empty(1000, dtype, [(own, rows.ctypes.data, rows.strides[0])])
        assert buf.shape == (1000,) and buf.dtype == dtype and buf.flags.c_contiguous
        phase = (rows.ctypes.data - buf.ctypes.data - own * itemsize) % PAGE
        assert abs(phase - PAGE // 2) <= 64
    plain = _spaced_empty(1000, dtype, [(0, rows.ctypes.data, 784 * itemsize)])
    assert plain.base is None and plain.shape == (1000,)
    net = fastbp.Network([100, PAGE // itemsize, PAGE // itemsize, 3], dtype=dtype, seed=0)
    X = np.zeros((20, 100), dtype)
    _, _, _, (_, abuf, dbuf, _) = net._kernel_args(10)
    grad = net._gradient_buffer(X, abuf, 10)
    w_offsets, blocks = net._offsets(10)
    for l in (1, 2):
        grad_phase = (abuf.ctypes.data + blocks[l - 1] * itemsize - grad.ctypes.data
                      - w_offsets[l] * itemsize) % PAGE
        bp2_phase = (net._theta.ctypes.data + w_offsets[l] * itemsize - dbuf.ctypes.data
                     - blocks[l - 1] * itemsize) % PAGE
        step_phase = (net._theta.ctypes.data + w_offsets[l] * itemsize - abuf.ctypes.data
                      - blocks[l - 1] * itemsize) % PAGE
        assert min(grad_phase, PAGE - grad_phase) >= 1024
        assert min(bp2_phase, PAGE - bp2_phase) >= 1024
        assert min(step_phase, PAGE - step_phase) >= 1024


def _huge_page_advised(a):
    """Whether the mapping that holds a's data carries the huge-page advice (VmFlags
    ``hg`` in /proc/self/smaps); None where that file cannot be read."""
    try:
        lines = open("/proc/self/smaps").read().splitlines()
    except OSError:
        return None
    address, inside = a.ctypes.data, False
    for line in lines:
        head = line.split()[0] if line.split() else ""
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            return "hg" in line.split()[1:]
    return None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_large_buffers_are_placed_in_huge_pages(dtype, monkeypatch):
    """From HUGE_PAGE_KEEP_MIN_BYTES up, parameters and velocities, and from
    HUGE_PAGE_MIN_BYTES up the workspaces of a fit of HUGE_PAGE_MIN_WORK, start on a 2 MB
    page of memory advised for transparent huge pages (where Linux offers the advice);
    smaller ones, and those of shorter fits and of predictions, are ordinary arrays. The placement changes no bit of training, and a
    pickled network is placed again when loaded."""
    import mmap
    import pickle

    from fastbp import network

    itemsize = np.dtype(dtype).itemsize
    n = network.HUGE_PAGE_MIN_BYTES // itemsize
    small = network._page_empty(n - 1, dtype)
    assert small.base is None and small.shape == (n - 1,) and small.dtype == dtype
    advice = hasattr(mmap, "MADV_HUGEPAGE")
    big = network._page_empty(n, dtype)
    assert big.shape == (n,) and big.dtype == dtype
    assert big.flags.c_contiguous and big.flags.writeable
    big[...] = 1  # every element can be written
    one = network._page_empty(1, dtype, min_bytes=0)  # a lower bound of the caller's
    assert one.shape == (1,) and (one.base is None) != advice
    if advice:
        assert big.ctypes.data % network.HUGE_PAGE == 0
        assert one.ctypes.data % network.HUGE_PAGE == 0
        assert _huge_page_advised(big) in (True, None)

    X, y = _data(n=300, n_in=1100, n_out=10)
    X = X.astype(dtype)

    def trained():
        net = fastbp.Network([1100, 64, 10], hidden="relu", output="softmax",
                             cost="cross_entropy", dtype=dtype, seed=0)
        net.fit(X, y, epochs=2, batch_size=300, lr=0.05, momentum=0.9, progress=False)
        return net

    asked = []  # the huge flag of each workspace request
    kernel_args = network.Network._kernel_args
    monkeypatch.setattr(network.Network, "_kernel_args", lambda self, batch, huge=False: (
        asked.append(huge), kernel_args(self, batch, huge))[1])
    trained()  # 600 examples: too little work to place the workspaces
    monkeypatch.setattr(network, "HUGE_PAGE_MIN_WORK", 1)
    net = trained()
    assert asked == [False, True]
    buffers = [net._theta, net._vel, *kernel_args(net, 300, True)[3][:3]]
    assert all(b.nbytes >= network.HUGE_PAGE_MIN_BYTES for b in buffers)
    assert net._theta.nbytes >= network.HUGE_PAGE_KEEP_MIN_BYTES
    kept = fastbp.Network([300, 64, 10], dtype=dtype)._theta  # 80 or 159 KB: not placed
    assert kept.base is None and kept.nbytes >= network.HUGE_PAGE_MIN_BYTES
    assert all(b.base is None for b in kernel_args(net, 300)[3][:3])  # predict's
    if advice:
        assert all(b.ctypes.data % network.HUGE_PAGE == 0 for b in buffers)
    loaded = pickle.loads(pickle.dumps(net))
    assert np.array_equal(loaded._theta, net._theta)
    assert np.array_equal(loaded._vel, net._vel)
    if advice:
        assert loaded._theta.ctypes.data % network.HUGE_PAGE == 0
        assert loaded._vel.ctypes.data % network.HUGE_PAGE == 0
    monkeypatch.setattr(network, "HUGE_PAGE_MIN_BYTES", 1 << 62)  # ordinary memory
    monkeypatch.setattr(network, "HUGE_PAGE_KEEP_MIN_BYTES", 1 << 62)
    plain = trained()
    assert plain._theta.base is None and plain._vel.base is None
    assert np.array_equal(plain._theta, net._theta) and np.array_equal(plain._vel, net._vel)

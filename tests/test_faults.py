"""Faults: divergence, interrupted training, damaged model files, threads and the cache.

- A diverging fit stops, restores the parameters (and momentum velocities) of the last
  finite epoch and raises TrainingDivergedError naming the epoch and what to try.
- An exception or KeyboardInterrupt from a callback leaves the parameters after the last
  completed epoch and keeps the history.
- Saving is atomic; loading refuses pickles, foreign and truncated files and arrays that
  do not match the config, with a ValueError.
- Python threads may call into fastbp at once; a thread-count setting is restored; a
  seed fixes every bit whatever the thread count; an unwritable kernel cache is no
  obstacle.
"""

import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numba
import numpy as np
import pytest

import fastbp
from fastbp import TrainingDivergedError

# --- helpers -------------------------------------------------------------------------


def params_of(net):
    return [p.copy() for p in net.weights + net.biases]


def velocities_of(net):
    if net._velocities is None:
        return None
    return [v.copy() for group in net._velocities for v in group]


def assert_bitwise(a, b, what=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert a.tobytes() == b.tobytes(), what


def assert_same_arrays(xs, ys, what=""):
    assert (xs is None) == (ys is None), what
    if xs is None:
        return
    assert len(xs) == len(ys), what
    for i, (x, y) in enumerate(zip(xs, ys)):
        assert_bitwise(x, y, f"{what}[{i}]")


def all_finite(net):
    arrays = net.weights + net.biases + (velocities_of(net) or [])
    return all(np.isfinite(a).all() for a in arrays)


def regression_data(n=20, n_in=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, n_in))
    Y = X @ rng.normal(0, 1, (n_in, 1)) + 0.1
    return X, Y


def classification_data(n=24, n_in=5, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, n_in)), rng.integers(0, n_out, n)


# --- divergence ------------------------------------------------------------------------

#: a huge step on an identity network: the cost overflows after a few epochs
DIVERGING = dict(batch_size=20, lr=1e6, seed=11)


def identity_net(dtype, seed=2):
    return fastbp.Network([4, 3, 1], hidden="identity", output="identity", dtype=dtype,
                          seed=seed)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_divergence_restores_the_last_finite_epoch(dtype, momentum):
    X, Y = regression_data()
    net = identity_net(dtype)
    if momentum:  # velocities from an earlier call are state to restore too
        net.fit(X, Y, epochs=1, batch_size=5, lr=1e-3, momentum=momentum, seed=1)
    with pytest.raises(TrainingDivergedError) as info:
        net.fit(X, Y, epochs=500, momentum=momentum, **DIVERGING)
    err = info.value
    k = err.epoch
    assert k >= 2, "the test wants an epoch to restore"
    message = str(err)
    assert "diverged" in message
    assert f"epoch {k}" in message and f"after epoch {k - 1}" in message
    assert "lower learning rate" in message
    assert ("lower momentum" in message) == bool(momentum)
    assert isinstance(err, FloatingPointError)

    assert err.history is net.history
    assert net.history.epochs == k - 1
    assert all(np.isfinite(net.history.train_cost))
    assert all_finite(net)

    twin = identity_net(dtype)
    if momentum:
        twin.fit(X, Y, epochs=1, batch_size=5, lr=1e-3, momentum=momentum, seed=1)
    twin.fit(X, Y, epochs=k - 1, momentum=momentum, **DIVERGING)
    assert_same_arrays(params_of(net), params_of(twin), "parameters")
    assert_same_arrays(velocities_of(net), velocities_of(twin), "velocities")
    assert net.history.train_cost == twin.history.train_cost


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_divergence_in_the_first_epoch_restores_the_starting_point(momentum):
    X, Y = regression_data()
    net = identity_net("float64")
    start = params_of(net)
    with pytest.raises(TrainingDivergedError, match=r"in epoch 1\b") as info:
        net.fit(X, Y, epochs=5, batch_size=1, lr=1e8, momentum=momentum, seed=0)
    assert info.value.epoch == 1
    assert net.history.epochs == 0
    assert_same_arrays(params_of(net), start)
    if momentum:
        assert all(not v.any() for v in velocities_of(net))


def _decay_diverging(epochs):
    """A network and a fit with lr·λ = 3 > 2: the weights double in size every epoch.

    With a sigmoid/cross-entropy output the cost only grows like |z|, so it stays finite
    up to the step in which the float32 parameters themselves overflow.
    """
    X, y = classification_data(n=16, n_in=3, n_out=2, seed=4)
    net = fastbp.Network([3, 4, 1], output="sigmoid", cost="cross_entropy", dtype="float32",
                         seed=1)

    def run():
        return net.fit(X, y % 2, epochs=epochs, batch_size=16, lr=1.0, weight_decay=3.0,
                       shuffle=False)
    return net, run


def test_divergence_leaves_finite_parameters_when_the_parameters_overflow_first():
    net, run = _decay_diverging(epochs=1000)
    with pytest.raises(TrainingDivergedError) as info:
        run()
    assert net.history.epochs == info.value.epoch - 1
    assert all(np.isfinite(net.history.train_cost))
    assert all_finite(net), (
        f"after divergence in epoch {info.value.epoch} the restored parameters are not "
        "finite"
    )


def test_a_fit_that_ends_with_overflowed_parameters_raises():
    """The epoch whose last step overflows must be caught, not only the one after it."""
    net, run = _decay_diverging(epochs=1000)
    with pytest.raises(TrainingDivergedError) as info:
        run()
    last = info.value.epoch - 1  # the last epoch whose training cost was finite
    net, run = _decay_diverging(epochs=last)
    try:
        history = run()
    except TrainingDivergedError as err:
        assert err.epoch <= last
        assert all_finite(net)
        return
    assert all_finite(net), (
        f"fit returned normally after {history.epochs} epochs with non-finite parameters"
    )


# --- exceptions and interrupts during fit -----------------------------------------------


class Stop(Exception):
    pass


def _fit(net, X, y, epochs, callbacks=()):
    return net.fit(X, y, epochs=epochs, batch_size=7, lr=0.3, momentum=0.8,
                   weight_decay=1e-3, seed=5, validation_data=(X[:9], y[:9]),
                   callbacks=list(callbacks))


def _net(seed=6):
    return fastbp.Network([5, 7, 3], hidden="relu", output="softmax", cost="cross_entropy",
                          seed=seed)


@pytest.mark.parametrize("error", [Stop, KeyboardInterrupt, MemoryError])
@pytest.mark.parametrize("at_epoch", [1, 3])
def test_exception_from_a_callback_keeps_the_last_completed_epoch(error, at_epoch):
    X, y = classification_data()
    seen = []

    def callback(net, history):
        seen.append(history.epochs)
        if history.epochs == at_epoch:
            raise error("stop here")

    net = _net()
    with pytest.raises(error, match="stop here"):
        _fit(net, X, y, epochs=6, callbacks=[callback])
    assert seen == list(range(1, at_epoch + 1))
    assert net.history.epochs == at_epoch
    assert len(net.history.val_cost) == len(net.history.val_accuracy) == at_epoch

    twin = _net()
    _fit(twin, X, y, epochs=at_epoch)
    assert_same_arrays(params_of(net), params_of(twin), "parameters")
    assert_same_arrays(velocities_of(net), velocities_of(twin), "velocities")
    assert net.history.as_dict() == twin.history.as_dict()

    # the interrupted network trains on exactly like the twin
    for n in (net, twin):
        n.fit(X, y, epochs=2, batch_size=7, lr=0.1, momentum=0.8, seed=9)
    assert_same_arrays(params_of(net), params_of(twin), "parameters after resuming")


def test_callback_stop_and_later_exception_from_a_second_callback():
    X, y = classification_data()
    net = _net()

    def stop(net, history):
        return history.epochs == 2

    def boom(net, history):
        if history.epochs == 2:
            raise Stop("second callback")

    with pytest.raises(Stop):
        _fit(net, X, y, epochs=5, callbacks=[stop, boom])
    twin = _net()
    _fit(twin, X, y, epochs=2)
    assert_same_arrays(params_of(net), params_of(twin))
    assert net.history.epochs == 2


# --- model files -------------------------------------------------------------------------


def saved_net(dtype="float64"):
    net = fastbp.Network([4, 5, 3], hidden="tanh", output="softmax", cost="cross_entropy",
                         dtype=dtype, seed=8)
    X, y = classification_data(n_in=4)
    net.fit(X, y, epochs=2, batch_size=6, lr=0.2, seed=0)
    return net


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_and_load_round_trip_bitwise(tmp_path, dtype):
    net = saved_net(dtype)
    path = tmp_path / "model.npz"
    net.save(path)
    back = fastbp.load(path)
    assert (back.sizes, back.hidden, back.output, back.cost_name, back.dtype) == (
        net.sizes, net.hidden, net.output, net.cost_name, net.dtype)
    assert_same_arrays(params_of(back), params_of(net))
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    # the path is used as given, without a suffix added
    net.save(tmp_path / "model")
    assert_same_arrays(params_of(fastbp.load(tmp_path / "model")), params_of(net))


def test_save_into_a_missing_directory_creates_nothing(tmp_path):
    target = tmp_path / "missing" / "model.npz"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        saved_net().save(target)
    assert os.listdir(tmp_path) == []


def _savez_failing_midway(error):
    real = np.savez

    def savez(file, *args, **kwargs):
        real(file, *args, **kwargs)  # a complete archive written to the temporary file ...
        file.write(b"garbage")
        raise error("disk full")  # ... and then the write fails
    return savez


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_a_failing_save_leaves_the_previous_file_intact(tmp_path, monkeypatch, error):
    path = tmp_path / "model.npz"
    old = saved_net()
    old.save(path)
    before = path.read_bytes()
    new = fastbp.Network([4, 5, 3], seed=99)
    monkeypatch.setattr(np, "savez", _savez_failing_midway(error))
    with pytest.raises(error, match="disk full"):
        new.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"], "a temporary file was left behind"
    assert_same_arrays(params_of(fastbp.load(path)), params_of(old))


def test_a_failing_rename_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    saved_net().save(path)
    before = path.read_bytes()

    def replace(src, dst):
        raise PermissionError("rename refused")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError):
        fastbp.Network([4, 5, 3], seed=99).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_save_gives_the_permissions_of_a_plain_open(tmp_path):
    net = saved_net()
    umask = os.umask(0o022)
    try:
        os.umask(umask)
        net.save(tmp_path / "new.npz")
        assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == 0o666 & ~umask
        private = tmp_path / "private.npz"
        private.write_bytes(b"")
        os.chmod(private, 0o600)
        net.save(private)
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    finally:
        os.umask(umask)


def test_save_refuses_non_finite_parameters(tmp_path):
    net = saved_net()
    net.weights[1][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"weights\[1\] contains NaN or infinity"):
        net.save(tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


INVALID = r"is not a valid fastbp model file"


def test_every_truncation_is_a_clear_error(tmp_path):
    path = tmp_path / "model.npz"
    saved_net().save(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError, match=INVALID):
            fastbp.load(cut)


def test_damaged_bytes_are_a_clear_error(tmp_path):
    path = tmp_path / "model.npz"
    saved_net().save(path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for _ in range(40):
        damaged = bytearray(data)
        for i in rng.integers(0, len(data), 8):
            damaged[i] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            net = fastbp.load(path)
        except ValueError as exc:
            assert INVALID in str(exc)
        else:  # a flip that only touched padding or a CRC-free header byte
            assert all_finite(net)


PICKLE_LOADS = []


def _record_unpickling(token):
    PICKLE_LOADS.append(token)
    return token


class Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (_record_unpickling, ("ran",))


def _write_npz(path, config=None, /, **arrays):
    if config is not None:
        arrays["config"] = np.array(json.dumps(config))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _valid_parts(dtype="float64"):
    net = saved_net(dtype)
    config = {"format": "fastbp.Network", "version": 1, "sizes": net.sizes,
              "hidden": net.hidden, "output": net.output, "cost": net.cost_name,
              "dtype": net.dtype}
    arrays = {}
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"weights_{i}"] = w
        arrays[f"biases_{i}"] = b
    return config, arrays


def test_the_test_helper_writes_a_loadable_file(tmp_path):
    config, arrays = _valid_parts()
    _write_npz(tmp_path / "m.npz", config, **arrays)
    fastbp.load(tmp_path / "m.npz")


def test_pickled_objects_inside_are_refused_unrun(tmp_path):
    config, arrays = _valid_parts()
    arrays["weights_0"] = np.array([Payload()], dtype=object)
    _write_npz(tmp_path / "m.npz", config, **arrays)
    PICKLE_LOADS.clear()
    with pytest.raises(ValueError, match=INVALID + r".*(pickle|Object arrays)"):
        fastbp.load(tmp_path / "m.npz")
    assert PICKLE_LOADS == []


def test_a_pickle_file_is_refused_unrun(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(pickle.dumps({"weights_0": Payload()}))
    PICKLE_LOADS.clear()
    with pytest.raises(ValueError, match=INVALID):
        fastbp.load(path)
    assert PICKLE_LOADS == []


def _write_npy(path, array):
    with open(path, "wb") as f:
        np.save(f, array)


def _write_zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)


def _zip_with_raw_member(path):
    config, arrays = _valid_parts()
    _write_npz(path, config, **arrays)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("notes.txt", b"not an array")


FOREIGN = {
    "empty": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("weights = [1, 2, 3]\n"),
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000)),
    "other npz": lambda p: _write_npz(p, a=np.zeros(3), b=np.ones((2, 2))),
    "single npy": lambda p: _write_npy(p, np.zeros(3)),
    "empty zip": lambda p: _write_zip(p, {}),
    "zip of text": lambda p: _write_zip(p, {"config": "{}", "weights_0.txt": "1 2"}),
    "raw member beside arrays": _zip_with_raw_member,
}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_foreign_files_are_refused(tmp_path, kind):
    path = tmp_path / "m.npz"
    FOREIGN[kind](path)
    with pytest.raises(ValueError, match=INVALID):
        fastbp.load(path)


def _mismatch(change):
    config, arrays = _valid_parts()
    change(config, arrays)
    return config, arrays


MISMATCHES = {
    "transposed weights": (lambda c, a: a.update(weights_0=a["weights_0"].T.copy()),
                           r"weights_0 has shape \(4, 5\).*asks for \(5, 4\)"),
    "bias too long": (lambda c, a: a.update(biases_1=np.zeros(4)), r"biases_1 has shape \(4,\)"),
    "float32 arrays": (lambda c, a: a.update(weights_1=a["weights_1"].astype(np.float32)),
                       r"weights_1 has shape .* dtype float32"),
    "sizes say more layers": (lambda c, a: c.update(sizes=[4, 5, 5, 3]),
        r"do not match its config"),
    "missing biases": (lambda c, a: a.pop("biases_0"), r"do not match its config"),
    "extra array": (lambda c, a: a.update(extra=np.zeros(2)), r"do not match its config"),
    "nan weight": (lambda c, a: a["weights_0"].__setitem__((0, 0), np.nan),
        r"weights_0 contains NaN"),
    "inf bias": (lambda c, a: a["biases_1"].__setitem__(0, -np.inf),
        r"biases_1 contains NaN or infinity"),
    "format tag": (lambda c, a: c.update(format="keras"), r"bad config .*wrong format tag"),
    "version": (lambda c, a: c.update(version=99), r"unsupported version 99"),
    "unknown activation": (lambda c, a: c.update(hidden="swish"),
        r"bad config .*'hidden' parameter"),
    "unknown dtype": (lambda c, a: c.update(dtype="float16"), r"bad config .*'dtype' parameter"),
    "sizes not ints": (lambda c, a: c.update(sizes=["4", "5", "3"]), r"bad config .*'sizes'"),
    "no sizes": (lambda c, a: c.pop("sizes"), r"bad config"),
    "huge sizes": (lambda c, a: c.update(sizes=[10**7, 10**7, 3]), r"do not match|has shape"),
}


@pytest.mark.parametrize("kind", list(MISMATCHES))
def test_arrays_that_do_not_fit_the_config_are_refused(tmp_path, kind):
    change, match = MISMATCHES[kind]
    config, arrays = _mismatch(change)
    _write_npz(tmp_path / "m.npz", config, **arrays)
    with pytest.raises(ValueError, match=INVALID + ".*" + match):
        fastbp.load(tmp_path / "m.npz")


@pytest.mark.parametrize("config", [
    "not json {", json.dumps([1, 2]), json.dumps("fastbp.Network"),
])
def test_a_bad_config_string_is_refused(tmp_path, config):
    _, arrays = _valid_parts()
    with open(tmp_path / "m.npz", "wb") as f:
        np.savez(f, config=np.array(config), **arrays)
    with pytest.raises(ValueError, match=INVALID + ".*bad config"):
        fastbp.load(tmp_path / "m.npz")


def test_a_config_that_is_not_a_string_is_refused(tmp_path):
    _, arrays = _valid_parts()
    _write_npz(tmp_path / "m.npz", None, config=np.arange(3.0), **arrays)
    with pytest.raises(ValueError, match=INVALID + ".*no fastbp config"):
        fastbp.load(tmp_path / "m.npz")


def test_missing_paths_and_directories_are_os_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "nothing.npz")
    with pytest.raises(IsADirectoryError):
        fastbp.load(tmp_path)


# --- threads -----------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_threads_is_restored_after_an_exception(error):
    before = numba.get_num_threads()
    with pytest.raises(error):
        with fastbp.threads(1):
            assert numba.get_num_threads() == 1
            raise error("inside")
    assert numba.get_num_threads() == before


def test_threads_is_restored_when_fit_raises_inside():
    before = numba.get_num_threads()
    net = _net()
    X, y = classification_data()

    def boom(net, history):
        assert numba.get_num_threads() == 1
        raise Stop

    with pytest.raises(Stop):
        with fastbp.threads(1):
            _fit(net, X, y, epochs=3, callbacks=[boom])
    assert numba.get_num_threads() == before


def test_threads_nested_and_invalid():
    before = numba.get_num_threads()
    limit = numba.config.NUMBA_NUM_THREADS
    with fastbp.threads(limit):
        with fastbp.threads(1):
            assert numba.get_num_threads() == 1
        assert numba.get_num_threads() == limit
        with fastbp.threads(None):
            assert numba.get_num_threads() == limit
    assert numba.get_num_threads() == before
    for bad in (0, -1, limit + 1):
        with pytest.raises(ValueError, match=r"number of threads must be an int in the range"):
            with fastbp.threads(bad):
                pass  # pragma: no cover
        assert numba.get_num_threads() == before


needs_two_threads = pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2"
)


def _seeded_run(dtype, seed):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (61, 30))
    y = rng.integers(0, 10, 61)
    net = fastbp.Network([30, 24, 16, 10], hidden="sigmoid", output="softmax",
                         cost="cross_entropy", dtype=dtype, seed=seed)
    history = net.fit(X, y, epochs=3, batch_size=16, lr=0.5, momentum=0.7,
                      weight_decay=1e-4, validation_data=(X[:20], y[:20]))
    out = {f"p{i}": p for i, p in enumerate(params_of(net))}
    out["forward"] = net.forward(X)
    gW, gb = net.gradients(X, y)
    out.update({f"g{i}": g for i, g in enumerate(gW + gb)})
    out.update({k: np.array(v) for k, v in history.as_dict().items()})
    return out


@needs_two_threads
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_seed_fixes_every_bit_whatever_the_thread_count(dtype):
    with fastbp.threads(1):
        one = _seeded_run(dtype, seed=21)
    with fastbp.threads(2):
        two = _seeded_run(dtype, seed=21)
    again = _seeded_run(dtype, seed=21)
    assert one.keys() == two.keys() == again.keys()
    for key in one:
        assert_bitwise(one[key], two[key], key)
        assert_bitwise(one[key], again[key], key)
    other = _seeded_run(dtype, seed=22)
    assert other["p0"].tobytes() != one["p0"].tobytes()


# --- several Python threads at once -------------------------------------------------------


def _job(index):
    """Fit and gradients on a network of its own; depths and dtypes vary by index."""
    dtype = ("float64", "float32")[index % 2]
    sizes = ([6, 9, 4], [6, 8, 7, 4])[(index // 2) % 2]
    rng = np.random.default_rng(index)
    X = rng.uniform(-1, 1, (40, 6))
    y = rng.integers(0, 4, 40)
    net = fastbp.Network(sizes, hidden="tanh", output="softmax", cost="cross_entropy",
                         dtype=dtype, seed=index)
    history = net.fit(X, y, epochs=4, batch_size=8, lr=0.3, momentum=0.5, seed=index)
    gW, gb = net.gradients(X, y)
    return params_of(net) + gW + gb + [net.forward(X), np.array(history.train_cost)]


def _run_in_threads(target, n_threads):
    barrier = threading.Barrier(n_threads)
    results, errors = [None] * n_threads, []

    def worker(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert errors == []
    return results


def test_four_threads_fitting_their_own_networks_match_sequential_runs():
    expected = [_job(i) for i in range(4)]
    for _ in range(3):
        got = _run_in_threads(_job, 4)
        for i in range(4):
            assert_same_arrays(got[i], expected[i], f"job {i}")


def test_concurrent_forward_on_one_shared_network():
    net = _net()
    X, y = classification_data(n=300)
    chunks = [X[i::4] for i in range(4)]
    expected = [(net.forward(c), net.predict(c), net.evaluate(c, y[i::4])["cost"],
                 net.gradients(c, y[i::4])[0][0]) for i, c in enumerate(chunks)]
    before = params_of(net)

    def job(i):
        out = []
        for _ in range(25):
            out.append((net.forward(chunks[i]), net.predict(chunks[i]),
                        net.evaluate(chunks[i], y[i::4])["cost"],
                        net.gradients(chunks[i], y[i::4])[0][0]))
        return out

    for i, runs in enumerate(_run_in_threads(job, 4)):
        for forward, predict, cost, grad in runs:
            assert_bitwise(forward, expected[i][0])
            assert_bitwise(predict, expected[i][1])
            assert cost == expected[i][2]
            assert_bitwise(grad, expected[i][3])
    assert_same_arrays(params_of(net), before)


CONCURRENCY_SCRIPT = """
import threading, numpy as np, numba, fastbp

def job(i):
    rng = np.random.default_rng(i)
    X = rng.uniform(-1, 1, (40, 6)); y = rng.integers(0, 4, 40)
    net = fastbp.Network([6, 9, 4], output="softmax", cost="cross_entropy", seed=i)
    net.fit(X, y, epochs=3, batch_size=8, lr=0.3, seed=i)
    return np.concatenate([p.ravel() for p in net.weights + net.biases] + [net.forward(X).ravel()])

expected = [job(i) for i in range(4)]
results = [None] * 4
barrier = threading.Barrier(4)
def worker(i):
    barrier.wait()
    results[i] = [job(i) for _ in range(3)]
threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
for i in range(4):
    for r in results[i]:
        assert r.tobytes() == expected[i].tobytes(), i
print("layer", numba.threading_layer())
"""


def test_concurrent_fits_under_the_workqueue_threading_layer():
    """workqueue aborts on concurrent launches unless fastbp serialises them."""
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    proc = subprocess.run([sys.executable, "-c", CONCURRENCY_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "layer workqueue" in proc.stdout


# --- an unwritable kernel cache ---------------------------------------------------------------

CACHE_SCRIPT = """
import sys, numpy as np
import fastbp
assert fastbp.__file__.startswith(sys.argv[1]), fastbp.__file__
rng = np.random.default_rng(0)
X = rng.uniform(-1, 1, (30, 5)); y = rng.integers(0, 3, 30)
net = fastbp.Network([5, 6, 3], output="softmax", cost="cross_entropy", seed=0)
net.fit(X, y, epochs=3, batch_size=7, lr=0.3, seed=1)
np.savez(sys.argv[2], *net.weights, *net.biases, net.forward(X), *net.gradients(X, y)[0])
"""


def _reference_for_cache_script():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (30, 5))
    y = rng.integers(0, 3, 30)
    net = fastbp.Network([5, 6, 3], output="softmax", cost="cross_entropy", seed=0)
    net.fit(X, y, epochs=3, batch_size=7, lr=0.3, seed=1)
    return [*net.weights, *net.biases, net.forward(X), *net.gradients(X, y)[0]]


def cache_env(enabled, **extra):
    """The environment of a subprocess, with Numba's disk cache on or off."""
    env = {k: v for k, v in os.environ.items() if k not in ("FASTBP_CACHE", "NUMBA_CACHE_DIR")}
    env["FASTBP_CACHE"] = "1" if enabled else "0"
    env.update(extra)
    return env


@pytest.mark.parametrize("cache", [False, True], ids=["FASTBP_CACHE=0", "FASTBP_CACHE=1"])
def test_training_works_where_no_kernel_cache_can_be_written(tmp_path, cache):
    """A read-only install: the package directory and every cache location unwritable.

    Directories below a regular file can never be created, whatever the user's rights,
    so they stand for read-only locations even for root. The package is copied with
    its ``__pycache__`` directories replaced by files, so that Numba's fallback beside
    the sources is unwritable too.
    """
    site = tmp_path / "site"
    package = Path(fastbp.__file__).resolve().parent
    shutil.copytree(package, site / "fastbp",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    for sub in ("fastbp", "fastbp/kernels"):
        (site / sub / "__pycache__").write_bytes(b"")
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    env = cache_env(
        cache,
        HOME=str(blocker / "home"),
        XDG_CACHE_HOME=str(blocker / "cache"),
        NUMBA_CACHE_DIR=str(blocker / "numba"),
        PYTHONPATH=str(site),
        PYTHONDONTWRITEBYTECODE="1",
    )
    out = tmp_path / "out.npz"
    proc = subprocess.run([sys.executable, "-c", CACHE_SCRIPT, str(site), str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as data:
        got = [data[f"arr_{i}"] for i in range(len(data.files))]
    assert_same_arrays(got, _reference_for_cache_script())
    written = [p for p in site.rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert written == []


FIRST_CALL_SCRIPT = """
import sys, numpy as np, fastbp
rng = np.random.default_rng(0)
X = rng.uniform(-1, 1, (30, 5)); y = rng.integers(0, 3, 30)
sizes = [[5, 6, 3], [5, 6, 4, 3]][int(sys.argv[1])]
net = fastbp.Network(sizes, output="softmax", cost="cross_entropy", seed=0)
net.fit(X, y, epochs=2, batch_size=7, lr=0.3, seed=1)
np.savez(sys.argv[2], *net.weights, *net.biases, net.forward(X))
"""


def test_a_driver_loaded_from_the_cache_as_the_first_call_runs(tmp_path):
    """The first call of a fresh process may be a driver that Numba loads from its cache.

    A driver compiled in a process that loaded the parallel kernels it calls from the
    cache (rather than compiling them) is cached without Numba's note that it runs
    parallel regions, so loading it does not start the threading layer. Process 1
    fills an empty cache for a 1-layer network; process 2 compiles the 2-layer drivers
    on top of the cached layer kernels; process 3 starts straight with the 2-layer
    network, all of it loaded from the cache.
    """
    env = cache_env(True, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    outputs = []
    for step, depth in enumerate((0, 1, 1), 1):
        out = tmp_path / f"process{step}.npz"
        proc = subprocess.run([sys.executable, "-c", FIRST_CALL_SCRIPT, str(depth), str(out)],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (
            f"process {step} exited with {proc.returncode}: {proc.stderr[-2000:]}"
        )
        with np.load(out) as data:
            outputs.append([data[f"arr_{i}"] for i in range(len(data.files))])
    assert_same_arrays(outputs[2], outputs[1])


HISTORY_SCRIPT = """
import sys, numpy as np, fastbp
if sys.argv[2] == "after":  # another network trained first in this process
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 10)); y = rng.integers(0, 2, (300, 1)).astype(float)
    fastbp.Network([10, 16, 1], output="sigmoid", seed=0).fit(
        X, y, epochs=2, batch_size=200, lr=0.1, progress=False)
rng = np.random.default_rng(0)
X = rng.uniform(-1, 1, (30, 5)); y = rng.integers(0, 3, 30)
net = fastbp.Network([5, 6, 3], hidden="relu", output="softmax", cost="cross_entropy",
                     seed=0)
net.fit(X, y, epochs=3, batch_size=7, lr=0.3, seed=1, progress=False)
grad_w, grad_b = net.gradients(X, y)
np.savez(sys.argv[1], *net.weights, *net.biases, *grad_w, *grad_b)
"""


def test_results_do_not_depend_on_what_the_process_ran_before(tmp_path):
    """The same seeded training gives the same bits whatever else the process trained
    first, with its kernels compiled or loaded from a warm cache.

    Numba links a copy of each kernel into every compiled caller, and a process runs
    the copy of a function it loaded first. The copies are optimised with their callers,
    so they agree only if no optimisation may change a result: fastbp's kernels are
    compiled without fast-math flags. With re-association allowed, the third process
    here (another network's drivers loaded from the cache first) had given a gradient
    with different last bits. Four processes share one fresh cache: alone (compiles),
    after another fit (compiles the rest), after it again and alone again (all cached).
    """
    env = cache_env(True, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    outputs = []
    for step, history in enumerate(("alone", "after", "after", "alone"), 1):
        out = tmp_path / f"process{step}.npz"
        proc = subprocess.run([sys.executable, "-c", HISTORY_SCRIPT, str(out), history],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"process {step}: {proc.stderr[-2000:]}"
        with np.load(out) as data:
            outputs.append([data[f"arr_{i}"] for i in range(len(data.files))])
    for step in (1, 2, 3):
        assert_same_arrays(outputs[step], outputs[0], f"process {step + 1}")

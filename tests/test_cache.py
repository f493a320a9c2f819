"""Numba's on-disk kernel cache: FASTBP_CACHE=0 turns it off, and with it on, saves are
serialised across processes; and a first fit compiles each kernel once.

Numba writes a cache entry by reading the index, picking the first free data-file number
and writing both back, with no lock; two processes saving different signatures at once
can leave the index pointing at the wrong machine code. fastbp wraps every kernel's save
in a file lock (fastbp._config.lock_cache_writes).
"""

import os
import subprocess
import sys
import textwrap
import time

import filelock
import pytest

WORKER = textwrap.dedent(
    """
    import numpy as np
    import fastbp
    net = fastbp.Network([3, 2], seed=0)
    out = net.forward(np.ones((1, 3)))
    assert np.isfinite(out).all()
    print("ok")
    """
)


def _env(cache_dir):
    return dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), FASTBP_CACHE="1")


def test_cache_can_be_turned_off():
    probe = subprocess.run(
        [sys.executable, "-c", "import fastbp.kernels as K, fastbp._config as c; "
         "print(c.CACHE, type(K.forward_par._cache).__name__)"],
        env=dict(os.environ, FASTBP_CACHE="0"), capture_output=True, text=True, check=True,
    )
    assert probe.stdout.split() == ["False", "NullCache"]


def test_every_kernel_saves_under_the_lock(tmp_path):
    probe = subprocess.run(
        [sys.executable, "-c", "import fastbp.kernels as K\n"
         "ks = [getattr(m, n) for m in (K.layers, K.blocked, K.narrow, K.flat, K.tiny)\n"
         "      for n in dir(m)\n"
         "      if hasattr(getattr(m, n), 'py_func')]\n"
         "print(len(ks), all(k._cache._cache_file._fastbp_locked for k in ks))"],
        env=_env(tmp_path), capture_output=True, text=True, check=True,
    )
    n, locked = probe.stdout.split()
    assert int(n) >= 20 and locked == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_save_waits_for_the_lock_held_by_another_process(tmp_path):
    env = _env(tmp_path)
    # where the child's kernels will be cached: the same hashed directory layout
    probe = subprocess.run(
        [sys.executable, "-c", "import fastbp.kernels as K; "
         "print(K.forward_par._cache._cache_file._cache_path)"],
        env=env, capture_output=True, text=True, check=True,
    )
    cache_path = probe.stdout.strip()
    assert cache_path.startswith(str(tmp_path))
    lock = filelock.FileLock(os.path.join(cache_path, ".save.lock"))
    with lock:
        child = subprocess.Popen([sys.executable, "-c", WORKER], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # wait until the child has all but stopped using CPU (under 5% over 2 s: the
        # lock is polled): it has compiled a kernel and now waits to save it
        deadline = time.monotonic() + 300
        last = -1000
        while time.monotonic() < deadline and child.poll() is None:
            time.sleep(2)
            used = _cpu_ticks(child.pid)
            if used - last < 0.1 * os.sysconf("SC_CLK_TCK"):
                break
            last = used
        assert child.poll() is None, child.communicate()[1][-2000:]
        assert last > 0
        assert not list(tmp_path.rglob("*.nbi")), "a save went through while locked"
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-2000:]
    assert out.strip() == "ok"
    assert list(tmp_path.rglob("*.nbi")), "nothing was cached after the lock was released"


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_parallel_and_serial_builds_have_their_own_cache_entries(tmp_path):
    """Numba files a cached function by name and line, not by its compile options: the
    parallel and serial builds of one kernel must not share an entry, or one would load
    the other's machine code."""
    probe = subprocess.run(
        [sys.executable, "-c", "import fastbp.kernels as K\n"
         "for p, s in (('forward_par', 'forward_ser'), ('backward_par', 'backward_ser'),\n"
         "             ('gradient_step_columns', 'gradient_step_narrow')):\n"
         "    p, s = getattr(K, p), getattr(K, s)\n"
         "    print(p._cache._cache_file._index_name, s._cache._cache_file._index_name,\n"
         "          p.targetoptions.get('parallel'), s.targetoptions.get('parallel'))"],
        env=_env(tmp_path), capture_output=True, text=True, check=True,
    )
    lines = probe.stdout.split("\n")[:3]
    for line in lines:
        par_index, ser_index, par_flag, ser_flag = line.split()
        assert par_index != ser_index
        assert par_flag == "True" and ser_flag in ("False", "None")


CACHEABLE = textwrap.dedent(
    """
    import warnings
    warnings.filterwarnings("error", message=".*[Cc]annot cache")
    import numpy as np
    import fastbp
    from fastbp.kernels import codes

    rng = np.random.default_rng(0)
    seen = set()
    for sizes, batch, dtype in (([30, 64, 64, 12], 100, "float32"),
                                ([50, 200, 12], 100, "float64"),
                                ([20, 16, 10], 16, "float64"), ([4, 4, 1], 4, "float32")):
        net = fastbp.Network(sizes, dtype=dtype, seed=0)
        seen |= set(net._kernel_args(batch)[1][:, :3].ravel().tolist())
        X = rng.random((2 * batch, sizes[0]))
        y = rng.integers(0, sizes[-1], 2 * batch) if sizes[-1] > 1 else rng.random(2 * batch)
        net.fit(X, y, epochs=1, batch_size=batch, lr=0.1, momentum=0.5)
        net.gradients(X, y)
    assert seen == {codes.BLOCKED, codes.PARALLEL, codes.NARROW, codes.COLUMNS,
                    codes.PACKED}, seen
    print("ok")
    """
)


def test_every_kernel_training_runs_can_be_cached(tmp_path):
    """Training that runs every kind of layer kernel (blocked, parallel, narrow, narrow
    over columns, the tiny path) compiles nothing Numba refuses to cache (a kernel
    asking for the thread count, for one, could not be: every process would compile it
    and its callers again)."""
    run = subprocess.run([sys.executable, "-c", CACHEABLE], env=_env(tmp_path),
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "ok"


SIGNATURES = textwrap.dedent(
    """
    import numpy as np
    import fastbp
    import fastbp.kernels as K

    rng = np.random.default_rng(0)
    X = rng.random((37, 8))
    net = fastbp.Network([8, 16, 4], hidden="relu", output="softmax",
                         cost="cross_entropy", dtype="float64", seed=0)
    net.fit(X, rng.integers(0, 4, 37), epochs=1, batch_size=32, lr=0.1, progress=False)
    small = fastbp.Network([4, 4, 4, 1], hidden="sigmoid", output="identity", seed=0)
    small.fit(X[:, :4], rng.random((37, 1)), epochs=1, batch_size=4, lr=0.1,
              progress=False)
    seen = set()
    for m in (K.layers, K.blocked, K.narrow, K.flat, K.tiny):
        for name in dir(m):
            kernel = getattr(m, name)
            if getattr(kernel, "signatures", None) and id(kernel) not in seen:
                seen.add(id(kernel))
                print(m.__name__, name, len(kernel.signatures))
    """
)


def test_each_kernel_is_compiled_once_per_signature():
    """A first fit through the layer kernels and the tiny path, all in float64, compiles
    every kernel it uses once: none is called with a literal argument in one place and
    a variable in another (Numba compiles ``Literal[int](0)`` as a signature of its own
    beside the int64 one: four such kernels had cost 2-3 s of a cold first fit)."""
    probe = subprocess.run(
        [sys.executable, "-c", SIGNATURES], env=dict(os.environ, FASTBP_CACHE="0"),
        capture_output=True, text=True, check=True, timeout=900,
    )
    rows = [line.split() for line in probe.stdout.splitlines()]
    assert len(rows) >= 20  # the kernels were compiled in this process, not loaded
    assert [r for r in rows if r[2] != "1"] == []
    # no layer of either network runs a packed kernel: the drivers built without their
    # branches ran, and neither packed kernel was compiled
    names = {(r[0].rsplit(".", 1)[-1], r[1]) for r in rows}
    assert ("flat", "train_epoch_unpacked") in names and ("flat", "train_epoch") not in names
    assert not names & {("narrow", "forward_packed"), ("narrow", "backward_packed"),
                        ("narrow", "_forward_packed"), ("narrow", "_backward_packed")}

"""Compile time: ``import fastbp`` plus the first ``fit`` of a small network, in a fresh
Python process.

The first fit trains an 8-16-4 network in minibatches of 32 through the layer
kernels; a second fit then trains a 4-4-4-1 network through the one-function epoch of
tiny networks (``track_tiny_first_fit``), whose kernel is compiled separately.

"cold" runs with an empty kernel cache (a new temporary ``NUMBA_CACHE_DIR``), so the
first fit compiles the training kernels and writes them to the cache, as on a user's
first run; "warm" runs again against the cache the cold run filled. The child process
times itself from before ``import fastbp`` to the end of the fit, so interpreter start-up
is left out. Both runs happen once, in ``setup_cache``, and the ``track_`` methods
report their parts.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

CHILD = textwrap.dedent(
    """
    import json
    import time

    start = time.perf_counter()
    import numpy as np
    import fastbp

    imported = time.perf_counter()
    # minibatches of 32 (and a last one of 5): the layer kernels' path
    net = fastbp.Network([8, 16, 4], hidden="relu", output="softmax",
                         cost="cross_entropy", dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    X = rng.random((37, 8))
    y = rng.integers(0, 4, 37)
    net.fit(X, y, epochs=1, batch_size=32, lr=0.1, progress=False)
    done = time.perf_counter()
    # then a network small enough for the one-function epoch of fastbp.kernels.tiny
    small = fastbp.Network([4, 4, 4, 1], hidden="sigmoid", output="identity", seed=0)
    small.fit(X[:, :4], rng.random((37, 1)), epochs=1, batch_size=4, lr=0.1, progress=False)
    tiny_done = time.perf_counter()
    print(json.dumps({"import": imported - start, "first_fit": done - imported,
                      "total": done - start, "tiny_first_fit": tiny_done - done}))
    """
)


def run_child(cache_dir, timeout=600):
    """Run :data:`CHILD` with its kernel cache in ``cache_dir``; return its timings."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), FASTBP_CACHE="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"the compile-time child failed with exit code {proc.returncode}:\n"
            f"{proc.stderr}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


class FirstFit:
    params = ["cold", "warm"]
    param_names = ["cache"]
    unit = "seconds"
    number = 1
    repeat = 1
    timeout = 900

    def setup_cache(self):
        with tempfile.TemporaryDirectory(prefix="fastbp-bench-cache-") as cache_dir:
            cold = run_child(cache_dir)
            warm = run_child(cache_dir)
        return {"cold": cold, "warm": warm}

    setup_cache.timeout = 900

    def track_import_and_first_fit(self, results, cache):
        return results[cache]["total"]

    def track_first_fit(self, results, cache):
        return results[cache]["first_fit"]

    def track_import(self, results, cache):
        return results[cache]["import"]

    def track_tiny_first_fit(self, results, cache):
        return results[cache]["tiny_first_fit"]

"""One place for the settings every kernel shares.

``FASTMATH_FLAGS`` is the only fastmath setting in fastbp: every ``@njit`` reads it. It
allows re-association, contraction into FMA, reciprocal and approximate-function
transforms and ignores the sign of zero, but leaves out ``nnan`` and ``ninf`` so that a
NaN or an infinity keeps its meaning (a diverging run shows up as NaN instead of being
optimised away). Re-association only changes the order of a sum *within* one output
element, and that order is the same whatever the thread count, so results stay
bitwise reproducible.

``CACHE`` turns on Numba's on-disk cache of compiled kernels. Numba writes it beside the
sources when that directory is writable and otherwise under the user's cache directory;
``NUMBA_CACHE_DIR`` overrides both.
"""

import os

FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

CACHE = os.environ.get("FASTBP_DISABLE_CACHE", "") in ("", "0")

#: Keyword arguments of every parallel kernel.
PARALLEL = dict(parallel=True, fastmath=set(FASTMATH_FLAGS), cache=CACHE, nogil=True)
#: Keyword arguments of every serial kernel and driver.
SERIAL = dict(fastmath=set(FASTMATH_FLAGS), cache=CACHE, nogil=True)


import contextlib  # noqa: E402
import threading  # noqa: E402

import numba  # noqa: E402

_launch_lock = threading.RLock()


@contextlib.contextmanager
def threads(n):
    """Run the enclosed kernels on ``n`` threads (at most ``NUMBA_NUM_THREADS``).

    The previous setting is restored on exit, also when the block raises. Results do
    not depend on ``n``: only the speed does.

    Examples
    --------
    >>> import fastbp
    >>> with fastbp.threads(1):
    ...     pass  # every kernel launched here runs on one thread
    """
    if n is None:
        yield
        return
    n = int(n)
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= limit:
        raise ValueError(
            f"The number of threads must be an int in the range [1, {limit}] "
            f"(NUMBA_NUM_THREADS); got {n}."
        )
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def launch_lock():
    """A lock to hold around a kernel launch when the threading layer needs it.

    Numba's ``workqueue`` layer aborts the process when two Python threads launch
    parallel kernels at once; ``omp`` and ``tbb`` are safe. Until the first launch has
    chosen a layer, the lock is held to be safe.
    """
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return _launch_lock
    return _launch_lock if layer == "workqueue" else contextlib.nullcontext()

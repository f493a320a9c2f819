"""One place for the settings every kernel shares.

``FASTMATH_FLAGS`` is the only fastmath setting in fastbp: every ``@njit`` reads it. It
allows re-association, contraction into FMA, reciprocal and approximate-function
transforms and ignores the sign of zero, but leaves out ``nnan`` and ``ninf`` so that a
NaN or an infinity keeps its meaning (a diverging run shows up as NaN instead of being
optimised away). Re-association only changes the order of a sum *within* one output
element, and that order is the same whatever the thread count, so results stay
bitwise reproducible.

``CACHE`` turns on Numba's on-disk cache of compiled kernels; it is off unless the
environment sets ``FASTBP_CACHE=1``, so each process compiles the kernels it uses on first
use (seconds). Reason: Numba's cache is not safe for kernels like these. Processes that
compile at once can write inconsistent entries, and entries written by different processes
for parallel kernels that call each other have been seen to crash (segfault) when loaded
together, even with the saves serialised by :func:`lock_cache_writes`. A crash is worse
than a compile. With ``FASTBP_CACHE=1`` the cache lives in a directory named after a hash
of every kernel source file, this file and the Numba version (:func:`kernel_cache_dir`,
since Numba checks a cached kernel only against its own source file, not the kernels it
calls or these flags), under ``$NUMBA_CACHE_DIR`` when that is set and the user's cache
directory otherwise; where that cannot be written, Numba falls back to ``__pycache__``
beside the sources, then to its own user-wide directory, then to compiling in memory.
"""

import contextlib
import functools
import hashlib
import os
import threading
from pathlib import Path

import filelock
import numba

FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

CACHE = os.environ.get("FASTBP_CACHE", "0") == "1"

#: Keyword arguments of every serial kernel and driver. ``error_model="numpy"``: a
#: division by zero gives inf or NaN as in NumPy (kernels never raise).
SERIAL = dict(fastmath=set(FASTMATH_FLAGS), cache=CACHE, nogil=True, error_model="numpy")
#: Keyword arguments of every parallel kernel.
PARALLEL = dict(SERIAL, parallel=True)


@functools.lru_cache(maxsize=None)
def kernel_cache_dir():
    """The directory for Numba's cache of fastbp's kernels (see the module docstring)."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256(numba.__version__.encode())
    for path in [here / "_config.py", *sorted((here / "kernels").glob("*.py"))]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    root = os.environ.get("NUMBA_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "fastbp"
    return base / f"kernels-{digest.hexdigest()[:16]}"


@contextlib.contextmanager
def kernel_cache():
    """Point Numba's cache at :func:`kernel_cache_dir` while kernels are defined."""
    previous = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = str(kernel_cache_dir())
    try:
        yield
    finally:
        numba.config.CACHE_DIR = previous

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


def lock_cache_writes(dispatcher):
    """Make Numba's cache writes for ``dispatcher`` safe against other processes.

    Numba saves a compiled kernel by reading its cache index, choosing the first free
    data-file number and writing both back, without a lock: two processes compiling
    different signatures at once can both pick ``*.1.nbc``, leaving the index pointing
    at the other signature's machine code, which crashes on the next load (numba
    issues #4807 and #10128). This wraps the save in an inter-process file lock in the
    cache directory, so each save sees the previous one's index.
    """
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    cache_path = getattr(cache_file, "_cache_path", None)
    if cache_path is None or not callable(getattr(cache_file, "save", None)):
        return  # caching off, or a Numba whose cache works differently
    if getattr(cache_file, "_fastbp_locked", False):
        return
    save = cache_file.save
    lock = filelock.FileLock(os.path.join(cache_path, ".save.lock"), is_singleton=True)

    def locked_save(key, data):
        with lock:
            save(key, data)

    cache_file.save = locked_save
    cache_file._fastbp_locked = True


@contextlib.contextmanager
def launch():
    """Hold the launch lock where the threading layer needs it.

    Numba's ``workqueue`` threading layer aborts the process when two Python threads
    launch parallel kernels at once (``omp`` and ``tbb`` are safe): under it, and until
    the first launch has chosen a layer, launches are serialised.
    """
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = None
    if layer in ("workqueue", None):
        with _launch_lock:
            yield
    else:
        yield

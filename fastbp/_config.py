"""One place for the settings every kernel shares.

Every ``@njit`` is compiled without fast-math flags: LLVM may then change neither the
order of a sum nor a rounding, so a kernel's arithmetic is exactly its source's (the
layer kernels' multiply-adds are written as :func:`fastbp.kernels.lanes.fma`, sums that
vectorise as rows of lanes). This is what makes results bitwise reproducible. Numba links
a copy of each compiled callee into every caller and optimises the copies again with
their callers, and a process then runs whichever copy of a function it loaded first;
under re-association the copies had summed in different orders, so a network's last
bits depended on which others the process had trained before (from the disk cache).

``CACHE`` turns on Numba's on-disk cache of compiled kernels, so that only the first run on
a machine pays the compile time (seconds per dtype); ``FASTBP_CACHE=0`` turns it off. Numba
checks a cached kernel only against its own source file, not against the kernels it calls
or these flags, so the cache lives in a directory named after a hash of every kernel
source file, this file and the Numba version (:func:`kernel_cache_dir`), under
``$NUMBA_CACHE_DIR`` when that is set and the user's cache directory otherwise. Where that
directory cannot be written the cache stays off: Numba's own fallbacks are not keyed by
the sources, and with none writable Numba refuses to define a cached kernel at all.
Two defects of Numba's cache are worked around here: saves from several processes are
serialised (:func:`lock_cache_writes`), and the threading layer is started before the
first launch (:func:`launch`), which a driver loaded from the cache may not do itself.
"""

import contextlib
import functools
import hashlib
import os
import tempfile
import threading
from pathlib import Path

import filelock
import numba
from numba.core import compiler, lowering, typed_passes
from numba.core.compiler_machinery import register_pass


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


def _cache_writable():
    """Whether :func:`kernel_cache_dir` can be created and written to."""
    try:
        path = kernel_cache_dir()
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except (OSError, RuntimeError):  # RuntimeError: no home directory to be found
        return False
    return True


#: Numba's disk cache, unless FASTBP_CACHE=0, and only where fastbp's own directory is
#: writable: Numba's fallbacks are not keyed by the kernels' sources, and where none of
#: them is writable either Numba refuses to define the kernels ("no locator available").
CACHE = os.environ.get("FASTBP_CACHE", "1") != "0" and _cache_writable()

#: Keyword arguments of every serial kernel and driver. ``error_model="numpy"``: a
#: division by zero gives inf or NaN as in NumPy (kernels never raise).
SERIAL = dict(fastmath=False, cache=CACHE, nogil=True, error_model="numpy")
#: Compile options of the exponential and tanh (Numba overloads, compiled into their
#: callers).
EXP_JIT = dict(fastmath=False, error_model="numpy")
#: Keyword arguments of every parallel kernel.
PARALLEL = dict(SERIAL, parallel=True)


class _NoAliasCompiler(compiler.Compiler):
    """Numba's compiler, with the arrays' data pointers of the compiled function marked
    ``noalias`` (the flag Numba sets itself on a parallel loop's body when it finds no
    aliased arrays there)."""

    def __init__(self, typingctx, targetctx, library, args, return_type, flags, locals):
        flags = flags.copy()
        flags.noalias = True
        super().__init__(typingctx, targetctx, library, args, return_type, flags, locals)


#: Keyword arguments of functions that never allocate: compiled without Numba's
#: reference counting (``_nrt=False``), so that the array views they take and pass on
#: (slices, reshapes, a kernel's arguments) cost no atomic increment and decrement each.
#: On small layers that was most of a kernel call's fixed cost (a 1 × 1 layer's BP2
#: called from compiled code: 80 -> 56 ns; its gradient step 121 -> 44 ns).
NO_REFCOUNT = dict(SERIAL, _nrt=False)

#: Keyword arguments of serial kernels whose array arguments never overlap where one
#: of them is written (and which never allocate, as NO_REFCOUNT). LLVM then vectorises
#: their loops without first testing at run time whether each stored row overlaps each
#: row loaded (some fifty comparisons before a 4 × 4 block's loop) and keeps values in
#: registers across stores. Such a kernel must not be given a written array that
#: overlaps another of its arguments.
NOALIAS = dict(NO_REFCOUNT, pipeline_class=_NoAliasCompiler)

#: LLVM's function attribute asking the loop vectoriser for vectors of up to 512 bits.
PREFER_512 = '"prefer-vector-width"="512"'


class _WideLower(lowering.Lower):
    """Numba's lowering, with the compiled function marked :data:`PREFER_512`."""

    def lower_normal_function(self, fndesc):
        super().lower_normal_function(fndesc)
        # llvmlite's ir knows only attributes without values; this one is written into
        # the function's definition as it is
        set.add(self.function.attributes, PREFER_512)


@register_pass(mutates_CFG=True, analysis_only=False)
class _WideLowering(typed_passes.NativeLowering):
    """Numba's native lowering pass, lowering with :class:`_WideLower`."""

    _name = "fastbp_wide_lowering"

    @property
    def lowering_class(self):
        return _WideLower


class _WideCompiler(_NoAliasCompiler):
    """:class:`_NoAliasCompiler` whose functions LLVM vectorises 512 bits wide."""

    def define_pipelines(self):
        pm = compiler.DefaultPassBuilder.define_nopython_pipeline(self.state)
        if typed_passes.NativeLowering not in (p for p, _ in pm.passes):
            raise RuntimeError("Numba's pipeline has no NativeLowering pass to replace")
        pm.passes = [(_WideLowering if p is typed_passes.NativeLowering else p, what)
                     for p, what in pm.passes]
        pm.finalize()
        return [pm]


#: Keyword arguments of the serial kernels whose loops LLVM vectorises itself: NOALIAS,
#: and those loops 512 bits wide (:data:`PREFER_512`). LLVM prefers 256-bit vectors on
#: some CPUs with AVX-512 (the Intel Xeon measured here, LLVM's "rocketlake", is one).
#: The element-wise kernels (:mod:`fastbp.kernels.layers`: σ, tanh, softmax) are bound
#: by e^x's arithmetic, not by memory: σ over 1,600 elements took 1.37 µs against 1.77
#: (float64) and 0.56 against 0.70 (float32), tanh 1.23 against 1.61 and 0.47 against
#: 0.57. The blocked kernels' gradient rows (:mod:`fastbp.kernels.blocked`,
#: ``_add4x4``), in-process A/B with the inputs in huge pages, 2 threads: 784 -> 100
#: over 100 examples float64 172 µs against 194, float32 90 against 101, over 32 1.10x
#: and 1.15x, 784 -> 512 over 128 1.12x and 1.16x, 784 -> 16 1.15x; their forward pass,
#: in explicit vectors, 0.99x. Results are bitwise the same: every operation is the
#: same, lane by lane. The explicit vector kernels (:mod:`fastbp.kernels.lanes`) are 512
#: bits wide either way, and the parallel kernels' loop bodies, which Numba compiles
#: itself, keep LLVM's preference. On CPUs without 512-bit vectors the attribute changes
#: nothing.
WIDE = dict(NOALIAS, pipeline_class=_WideCompiler)

#: Multiply-adds (batch × n_out × n_in) from which a layer's kernels run in parallel.
#: A parallel region costs about 1-2 µs on two cores, the time of some 30-60 thousand
#: multiply-adds in one thread; smaller layers run serially. Depends on shapes only,
#: so it never makes results depend on the thread count.
PARALLEL_MIN_WORK = 32768

#: Activations (batch × n_out) of a layer from which its σ is evaluated in parallel over
#: the examples. In vector code σ costs about half a nanosecond an element, so a
#: parallel region (1-2 µs) pays from several thousand. Element-wise, so results do not
#: depend on it.
ACTIVATE_PAR_MIN = 8192

#: Widest input (n_{l-1}) whose serial BP2 always runs the narrow kernel
#: (:func:`fastbp.kernels.narrow.backward_narrow`; its blocks of sums are 128 bytes of
#: columns: 32 float32, 16 float64), and the forward pass may. Kernel A/B against the
#: blocked kernel, 2 cores, 16- to 30-wide inputs, m = 10-100: BP2 float32 2.0-2.9x,
#: float64 1.5-1.9x. Serial gradient steps of any width run the narrow kernel
#: (:func:`~fastbp.kernels.narrow.gradient_step_narrow`): kernel A/B against the serial
#: blocked kernel, 10-100 examples, 10-16 neurons over 64-100 inputs: float32
#: 1.27-1.82x, float64 1.14-1.35x.
NARROW_MAX_WIDTH = 32

#: Fewest neurons (n_l) from which a serial BP2 over a wider input also runs the narrow
#: kernel: its sum over j is then long enough to repay each block's stores. Kernel A/B,
#: 8 to 30 neurons over 40- to 100-wide inputs: float32 1.08-1.7x, float64 0.93-1.22x;
#: 4 neurons over 200 inputs: float32 1.09x, float64 0.87x.
NARROW_BACKWARD_MIN_OUTPUTS = 8

#: Bytes of work (batch × n_out × n_in × itemsize) up to which a layer's narrow kernels
#: run serially although the work reaches ``PARALLEL_MIN_WORK``: 131072 multiply-adds in
#: float32, 65536 in float64. Kernel A/B against the parallel blocked kernels on 2
#: threads, 33-131 thousand multiply-adds (16-32 neurons over 16-32 inputs, 10-16 over
#: 64-100 for BP2): float32 gradient step 1.7-4.6x, BP2 1.1-3.4x, forward 2.0-3.3x;
#: float64 up to 65536: gradient step 1.6-2.4x, BP2 1.2-2.2x, forward 1.3-1.9x, but at
#: 100-131 thousand gradient step 0.84-1.8x, BP2 0.78-1.7x. A forward pass the narrow
#: kernel does not suit runs the serial blocked kernel up to this work too: against the
#: parallel one, 2 threads (Intel Xeon), float32 100 -> 10 over 100 examples 1.17-1.42x,
#: 64 -> 32 over 50 1.36x, 200 -> 50 over 10 1.38x, 128 -> 32 over 32 1.44x, 784 -> 16
#: over 8 1.71x; float64 100 -> 10 over 64 1.26x, 128 -> 32 over 16 1.79x, 200 -> 50 over
#: 6 1.28x (and past it, 100 -> 40 over 64, 0.78x).
NARROW_SERIAL_MAX_BYTES = 524288

#: Bytes of work up to which the gradient step of a layer past the first runs the
#: narrow kernel serially (the first layer's, ``NARROW_SERIAL_MAX_BYTES``). Kernel
#: A/B against its parallel build (``COLUMNS``), 2 threads (Intel Xeon), inputs 100
#: wide: float64 100 -> 10 over 100 examples (800 KB of work) 1.12x and 1.17x in two
#: runs, 100 -> 16 over 100 (1.28 MB) 1.10x, 100 -> 10 over 128 (1 MB) 0.97x, over 200
#: (1.6 MB) 0.83x, 100 -> 32 over 100 (2.56 MB) 0.91x; float32 100 -> 10 over 200
#: (800 KB) 1.18x, 100 -> 32 over 100 (1.28 MB) 1.08x, over 200 (2.56 MB) 0.86x.
NARROW_GRADIENT_SERIAL_MAX_BYTES = 1048576

#: Most neurons (n_l) for which a float64 hidden layer's parallel gradient step runs the
#: narrow kernel's parallel build over blocks of columns (``COLUMNS``); float32 hidden
#: layers always do, and any layer whose step packs δ (``PACK_MIN_ROW_BYTES``); other
#: first layers never (their rows, gathered from the training set, are read whole by the
#: blocked kernel; over columns W4-b100's float32 epoch ran 0.85x).
#: Against the parallel blocked kernel in a network's own buffers, 2 threads: W5's
#: 512 -> 10 float64 1.15-1.18x, 512 -> 512 float64 0.91-0.92x (float32 1.17-1.21x).
COLUMNS_FLOAT64_MAX_OUTPUTS = 16

#: Widest input (n_{l-1}) over which a float64 layer's parallel BP2 runs the narrow
#: kernel's parallel build (``COLUMNS``: threads split the minibatch) where the narrow
#: kernel suits the layer (``NARROW_*``) and its neurons are more than
#: ``COLUMNS_FLOAT64_MAX_OUTPUTS``; float32 layers, and float64 layers of at most that
#: many neurons, always do. Against the parallel blocked kernel, 2 threads, ReLU,
#: 100-128 examples, on an AMD EPYC: float64 over 100 inputs 1.10-1.22x (10 and 100
#: neurons), 512 inputs 0.60x (512 neurons); float32 0.90-1.43x (512 -> 512 1.43x, 512 ->
#: 10 1.12x, 100 -> 10 1.19x, 200 -> 16 0.90x). On an Intel Xeon, in a network's own
#: buffers: float64 over 200 and 512 inputs 1.13-1.45x for 10-16 neurons (0.97x in
#: earlier kernels on the EPYC), 0.93x for 32 neurons over 512 inputs.
COLUMNS_FLOAT64_MAX_INPUTS = 128

#: Fewest neurons (n_l) from which a parallel BP2 runs the narrow kernel's parallel build
#: over copied blocks of W's columns (``PACKED``,
#: :func:`fastbp.kernels.narrow.backward_packed`), any dtype. Kernel A/B in a network's
#: own buffers (Intel Xeon, 2 cores with AVX-512), 2 threads, 128 examples over 512
#: inputs, against the best of the blocked kernel and ``COLUMNS``: float64 32 neurons
#: 0.96x, 64 1.07x, 128 1.32x, 256 1.44x, 512 1.65x; float32 32 neurons 0.76x, 64 1.14x,
#: 128 1.38x, 512 1.64x; 512 -> 512 over 10 and 32 examples 1.18-1.34x; 256 neurons over
#: 100 inputs 1.12x (float64), 0.97x (float32). 10 neurons 0.4-0.6x.
PACK_BACKWARD_MIN_OUTPUTS = 64

#: Bytes of a row of δ (n_l × itemsize) and of all of δ (batch × n_l × itemsize) from
#: which a layer's narrow gradient step (serial or ``COLUMNS``) first packs δ into panels
#: of δ^T (:func:`fastbp.kernels.narrow.panel_size`) instead of reading each example's
#: coefficients from its own row of δ, and a parallel step runs ``COLUMNS`` in the first
#: layer too. Results are bitwise the same either way. Kernel A/B, 2 threads, in a
#: network's own buffers, rows drawn from 80-376 MB of inputs: 784 -> 512 over 128
#: examples, float64 1.27x (1143 µs against the blocked kernel's 1451), float32 1.24x
#: (520 against 645); 784 -> 100 over 100 examples (rows of 400 and 800 bytes), float32
#: packed 0.96x and unpacked 1.12x, float64 1.13x and 1.09x, but in whole epochs the first
#: layer over columns ran 0.97x (float32) and 0.95-1.01x (float64) and stays blocked.
PACK_MIN_ROW_BYTES = 1024
PACK_MIN_BYTES = 32768

#: Bytes of a row of z (n_l × itemsize: 128 float64 or 256 float32 neurons, eight blocks
#: of two registers' lanes) and fewest examples from which a parallel forward pass runs
#: the narrow kernel's parallel build over copied blocks of W^T's columns (``PACKED``,
#: :func:`fastbp.kernels.narrow.forward_packed`), unless the first layer's runs in its
#: SGD step's region (``FUSE_MAX_BYTES``). Kernel A/B against the parallel blocked kernel
#: in a network's own buffers (Intel Xeon, 2 cores with AVX-512), 2 threads, 784 inputs
#: over 128 examples: float64 100 neurons 1.04x, 128 1.37x, 256 1.36x, 512 1.42x (512 ->
#: 512 1.41x); float32 100 neurons 0.87x, 128 1.04x, 256 1.34x, 512 1.46x (512 -> 512
#: 1.47x); 16 neurons 0.48-0.86x. 784 -> 512 over 32 examples 1.06-1.11x, over 10
#: 0.72-0.76x.
PACK_FORWARD_MIN_ROW_BYTES = 1024
PACK_FORWARD_MIN_BATCH = 32

#: Smallest minibatch whose serial forward pass runs the narrow kernel
#: (:func:`fastbp.kernels.narrow.forward_narrow`), for layers of 9 to 16 neurons
#: (``NARROW_FORWARD_OUTPUTS``) over inputs up to ``NARROW_MAX_WIDTH`` wide: each call
#: first copies W^T to the stack, which smaller minibatches do not repay. Kernel A/B
#: against the blocked kernel, 2 cores, sigmoid, m >= 8: float32 1.3-2.4x, float64
#: 1.05-1.5x (16->16, 16->10, 30->10); at m = 1-4 0.6-1.2x; 8 outputs or fewer (half
#: the 16 lanes idle) down to 0.71x, 32-lane rows 0.6-1.1x below m = 32.
NARROW_FORWARD_MIN_BATCH = 8
#: Layer widths (n_l) the narrow forward pass is chosen for (see above).
NARROW_FORWARD_OUTPUTS = range(9, 17)

#: Bytes of a minibatch's input rows (batch × n_0 × itemsize) up to which the first
#: layer's SGD step and its forward pass of the next minibatch share one parallel region
#: (:func:`fastbp.kernels.blocked.step_forward_par`). Each thread then reads both
#: minibatches' rows for each of its blocks of neurons. Measured on 2 cores, 784-n-10
#: networks (time per step, two kernels / one): 0.7-1.8 µs saved from 12 to 147 KB
#: (W2 float32, 31 KB: 5-6% of the epoch); from 196 KB mixed, -19 to +13 µs (784-100-10
#: float64 at 612 KB 4-6% slower). Bitwise the same results either way.
FUSE_MAX_BYTES = 131072

#: Multiply-adds of a minibatch's forward pass (batch × Σ_l n_l n_{l-1}) up to which
#: training runs through :mod:`fastbp.kernels.tiny`, one function per epoch. Measured on
#: 2 cores (epoch time, flat kernels / tiny path, float64 and float32 alike): 5.2x at 144
#: (4-4-4-1, batches of 4), 1.4-1.7x at 1,920-2,400, 1.0-1.5x at 4,352-4,608, 0.9-1.1x at
#: 5,120-5,376, 0.9-1.4x at 8,192-8,320 and 0.3-0.7x from 13,440 (32-32-10, batches of 10)
#: up. Work counts only the forward pass, so the same work can favour either path.
TINY_MAX_WORK = 4096


@contextlib.contextmanager
def kernel_cache():
    """Point Numba's cache at :func:`kernel_cache_dir` while kernels are defined."""
    if not CACHE:
        yield
        return
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
    launch parallel kernels at once (``omp`` and ``tbb`` are safe): under it, launches
    are serialised. The first launch starts the threading layer.
    """
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        # A driver loaded from Numba's cache does not record that the kernels it calls
        # are parallel when it was compiled against kernels that were themselves loaded
        # from the cache, so nothing starts the threading layer before its first
        # parallel region, which then crashes. get_num_threads() starts it.
        numba.get_num_threads()
        layer = numba.threading_layer()
    if layer == "workqueue":
        with _launch_lock:
            yield
    else:
        yield

"""fastbp beside its peers: seconds per training epoch, in one process.

Usage::

    python benchmarks/compare.py [--workloads W1,W2] [--dtypes float32,float64]
                                 [--repeat 5] [--threads N] [--quick] [--output FILE]
    python benchmarks/compare.py --check [--workloads ...] [--dtypes ...]

Every implementation trains the same network (the workloads of
:mod:`benchmarks.workloads`) by plain minibatch SGD with the same cost (mean over the
minibatch), the same update w := w - η ∇C, the same batch size and dtype, from the same
initial weights and on the same data:

- ``fastbp``: ``Network.fit(..., epochs=1)``, which includes its input validation;
- ``numpy reference``: :func:`fastbp.reference.train_epoch`;
- ``PyTorch eager``: ``nn.Linear`` layers, the cost written out (``F.cross_entropy`` with
  probability targets for softmax), ``torch.optim.SGD``;
- ``JAX jit step``: one jitted ``grad`` + update per minibatch, the minibatch gathered
  inside the jitted function;
- ``JAX scan epoch``: one jitted call per epoch, the shuffled full minibatches stacked
  and stepped through with ``lax.scan`` (a partial last minibatch by the step function);
- ``scikit-learn``: ``MLPClassifier``/``MLPRegressor`` with ``solver="sgd"``, one epoch
  per ``partial_fit``, where its architecture matches: softmax output with
  cross-entropy, or identity output with the quadratic cost.

Each epoch shuffles the examples (each implementation with its own generator). All
implementations are set up and run two untimed epochs first (compilation and thread
pools, then a calibration epoch), then they take turns, one turn each per round, the
starting one rotating, so that drift of the machine hits all alike. A turn trains as many
consecutive epochs as last at least ``TURN`` (0.25 s) by the calibration epoch, so that
an epoch of a few milliseconds is not timed alone right after a rest (see ``TURN``);
``--quick`` turns are single epochs. The table gives the median over the rounds of the
turns' seconds per epoch, the epochs per turn, GFLOP/s from
:meth:`Workload.flops_per_example`, and the speedup of fastbp over each peer (peer time /
fastbp time).

``--threads N`` sets fastbp's threads (``fastbp.threads``), the BLAS threads of NumPy and
scikit-learn (threadpoolctl), ``torch.set_num_threads`` and, for N = 1, XLA's CPU thread
pool (other counts leave JAX on its default pool; the header says so).

``--check`` trains one epoch of every implementation on a few examples of each selected
workload, without shuffling, from the same weights, and compares the final weights with
fastbp's (rtol 1e-4 in float32, 1e-8 in float64, with an absolute floor of rtol times
the largest weight); it exits with status 1 when one disagrees.

PyTorch and JAX are optional (scikit-learn comes with fastbp): a missing peer is reported
as not installed.
"""

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import sys
import time
import traceback

import numpy as np

if __package__:
    from . import workloads as wl
else:  # run as a script: python benchmarks/compare.py
    import workloads as wl

import fastbp

#: rtol of the peers' final weights against fastbp's in --check.
CHECK_RTOL = {"float32": 1e-4, "float64": 1e-8}


class Unavailable(Exception):
    """The implementation cannot run here (not installed, or a different architecture)."""


# --- implementations --------------------------------------------------------------------


class Impl:
    """One implementation of an epoch of minibatch SGD for a workload and dtype.

    ``setup`` converts the data to the implementation's own arrays and compiles what it
    compiles; ``load`` sets the parameters (fastbp's layout: W of shape (n_out, n_in));
    ``epoch`` trains one epoch and returns when the parameters are final; ``params``
    returns them in fastbp's layout.
    """

    name = "?"
    module = None  # the package whose absence makes this implementation unavailable

    def __init__(self, workload, dtype, threads):
        self.w, self.dtype, self.threads = workload, dtype, threads
        self.rng = np.random.default_rng(1)

    @classmethod
    def missing(cls):
        """Why the implementation is unavailable here, or None."""
        if cls.module and importlib.util.find_spec(cls.module) is None:
            return "not installed"
        return None

    def order(self, n, shuffle):
        return self.rng.permutation(n) if shuffle else np.arange(n)


class Fastbp(Impl):
    name = "fastbp"
    key = "fastbp"

    def setup(self, X, Y, labels):
        w = self.w
        self.X, self.Y = X, Y
        self.net = w.network(self.dtype)
        m = min(len(X), 2 * w.batch + 1)  # compiles the training kernels
        w.network(self.dtype).fit(X[:m], Y[:m], epochs=1, batch_size=w.batch, lr=w.lr,
                                  progress=False)

    def load(self, weights, biases):
        for p, q in zip(self.net.weights + self.net.biases, list(weights) + list(biases)):
            p[...] = q

    def epoch(self, shuffle=True):
        w = self.w
        self.net.fit(self.X, self.Y, epochs=1, batch_size=w.batch, lr=w.lr, shuffle=shuffle,
                     progress=False)

    def params(self):
        return [w.copy() for w in self.net.weights], [b.copy() for b in self.net.biases]


class Reference(Impl):
    name = "numpy reference"
    key = "reference"

    def setup(self, X, Y, labels):
        self.X, self.Y = X, Y

    def load(self, weights, biases):
        self.W = [np.array(w) for w in weights]
        self.B = [np.array(b) for b in biases]

    def epoch(self, shuffle=True):
        self.w.reference_epoch(self.W, self.B, self.X, self.Y, self.order(len(self.X), shuffle))

    def params(self):
        return [w.copy() for w in self.W], [b.copy() for b in self.B]


class Torch(Impl):
    name = "PyTorch eager"
    key = "torch"
    module = "torch"

    def setup(self, X, Y, labels):
        import torch
        import torch.nn.functional as F
        from torch import nn

        torch.set_num_threads(self.threads)
        w = self.w
        tdtype = getattr(torch, self.dtype)
        self.torch = torch
        self.X, self.Y = torch.from_numpy(X), torch.from_numpy(Y)
        hidden = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh,
                  "identity": nn.Identity}[w.hidden]
        layers = []
        for i, (n_in, n_out) in enumerate(zip(w.sizes[:-1], w.sizes[1:])):
            layers.append(nn.Linear(n_in, n_out, dtype=tdtype))
            if i < len(w.sizes) - 2:
                layers.append(hidden())
        self.model = nn.Sequential(*layers)  # outputs z^L; the cost applies σ of the output
        self.linears = [m for m in layers if isinstance(m, nn.Linear)]
        self.opt = torch.optim.SGD(self.model.parameters(), lr=w.lr)
        self.gen = torch.Generator().manual_seed(1)

        output = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh,
                  "identity": lambda z: z, "softmax": lambda z: torch.softmax(z, 1)}[w.output]
        if w.cost == "quadratic":
            def loss(z, y):
                return 0.5 * ((output(z) - y) ** 2).sum(1).mean()
        elif w.output == "softmax":
            def loss(z, y):  # probability targets: mean of -Σ y log softmax(z)
                return F.cross_entropy(z, y)
        else:
            def loss(z, y):
                return F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(1).mean()
        self.loss = loss

    def load(self, weights, biases):
        with self.torch.no_grad():
            for lin, W, b in zip(self.linears, weights, biases):
                lin.weight.copy_(self.torch.from_numpy(np.ascontiguousarray(W)))
                lin.bias.copy_(self.torch.from_numpy(np.ascontiguousarray(b)))

    def epoch(self, shuffle=True):
        torch, X, Y, batch = self.torch, self.X, self.Y, self.w.batch
        n = X.shape[0]
        order = torch.randperm(n, generator=self.gen) if shuffle else torch.arange(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.model(X[idx]), Y[idx]).backward()
            self.opt.step()

    def params(self):
        return ([lin.weight.detach().numpy().copy() for lin in self.linears],
                [lin.bias.detach().numpy().copy() for lin in self.linears])


def _import_jax():
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 arrays stay float64
    return jax


def _jax_sgd(w):
    """The jittable minibatch step of workload ``w``: params -> params."""
    jax = _import_jax()
    jnp = jax.numpy
    acts = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "tanh": jnp.tanh,
            "identity": lambda z: z, "softmax": lambda z: jax.nn.softmax(z, axis=1)}
    hidden, last = acts[w.hidden], len(w.sizes) - 2

    def logits(params, x):
        a = x
        for i, (W, b) in enumerate(params):
            z = a @ W.T + b
            if i < last:
                a = hidden(z)
        return z

    def loss(params, x, y):
        z = logits(params, x)
        if w.cost == "quadratic":
            return 0.5 * jnp.mean(jnp.sum((acts[w.output](z) - y) ** 2, axis=1))
        if w.output == "softmax":
            return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(z, axis=1), axis=1))
        return jnp.mean(jnp.sum(jax.nn.softplus(z) - y * z, axis=1))

    grad = jax.grad(loss)
    lr = w.lr

    def sgd(params, x, y):
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grad(params, x, y))

    return sgd


class JaxStep(Impl):
    name = "JAX jit step"
    key = "jax-step"
    module = "jax"

    def setup(self, X, Y, labels):
        jax = self.jax = _import_jax()
        self.X, self.Y = jax.device_put(X), jax.device_put(Y)
        sgd = _jax_sgd(self.w)
        self.step = jax.jit(lambda p, X, Y, idx: sgd(p, X[idx], Y[idx]), donate_argnums=0)

    def load(self, weights, biases):
        jnp = self.jax.numpy
        self.p = tuple((jnp.array(W), jnp.array(b)) for W, b in zip(weights, biases))

    def epoch(self, shuffle=True):
        batch, n = self.w.batch, self.X.shape[0]
        order, p = self.order(n, shuffle), self.p
        for start in range(0, n, batch):
            p = self.step(p, self.X, self.Y, order[start:start + batch])
        self.p = self.jax.block_until_ready(p)

    def params(self):
        return [np.array(W) for W, _ in self.p], [np.array(b) for _, b in self.p]


class JaxScan(JaxStep):
    name = "JAX scan epoch"
    key = "jax-scan"

    def setup(self, X, Y, labels):
        super().setup(X, Y, labels)
        jax, sgd = self.jax, _jax_sgd(self.w)

        def full_batches(p, X, Y, idx):
            Xs, Ys = X[idx], Y[idx]  # (n_batches, batch, ...): the shuffled minibatches

            def body(p, xy):
                return sgd(p, *xy), None

            return jax.lax.scan(body, p, (Xs, Ys))[0]

        self.scan = jax.jit(full_batches, donate_argnums=0)

    def epoch(self, shuffle=True):
        batch, n = self.w.batch, self.X.shape[0]
        order, p = self.order(n, shuffle), self.p
        full = n // batch
        if full:
            p = self.scan(p, self.X, self.Y, order[:full * batch].reshape(full, batch))
        if n % batch:
            p = self.step(p, self.X, self.Y, order[full * batch:])
        self.p = self.jax.block_until_ready(p)


class Sklearn(Impl):
    name = "scikit-learn"
    key = "sklearn"
    module = "sklearn"
    ACTIVATIONS = {"sigmoid": "logistic", "relu": "relu", "tanh": "tanh",
                   "identity": "identity"}

    def __init__(self, workload, dtype, threads):
        super().__init__(workload, dtype, threads)
        w = workload
        if w.hidden not in self.ACTIVATIONS:
            raise Unavailable(f"n/a: no {w.hidden} hidden layers")
        if w.output == "softmax" and w.cost == "cross_entropy" and w.sizes[-1] > 2:
            self.classifier = True
        elif w.output == "identity" and w.cost == "quadratic":
            self.classifier = False
        else:
            raise Unavailable(f"n/a: no {w.output} output with {w.cost} cost")

    def setup(self, X, Y, labels):
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        w = self.w
        Estimator = MLPClassifier if self.classifier else MLPRegressor
        self.est = Estimator(
            hidden_layer_sizes=tuple(w.sizes[1:-1]), activation=self.ACTIVATIONS[w.hidden],
            solver="sgd", alpha=0.0, batch_size=w.batch, learning_rate="constant",
            learning_rate_init=w.lr, momentum=0.0, nesterovs_momentum=False, shuffle=True,
            random_state=1, max_iter=1, tol=0.0, n_iter_no_change=2**31 - 1,
        )
        self.X = X
        self.target = labels if self.classifier else (Y[:, 0] if Y.shape[1] == 1 else Y)
        # partial_fit initialises the parameters on its first call (here one minibatch);
        # load() then overwrites them in place, where the optimiser holds them.
        extra = {"classes": np.arange(w.sizes[-1])} if self.classifier else {}
        self.est.partial_fit(X[:w.batch], self.target[:w.batch], **extra)

    def load(self, weights, biases):
        for c, W in zip(self.est.coefs_, weights):
            c[...] = W.T
        for c, b in zip(self.est.intercepts_, biases):
            c[...] = b

    def epoch(self, shuffle=True):
        self.est.shuffle = shuffle
        self.est.partial_fit(self.X, self.target)

    def params(self):
        return ([c.T.copy() for c in self.est.coefs_],
                [c.copy() for c in self.est.intercepts_])


IMPLEMENTATIONS = [Fastbp, Reference, Torch, JaxStep, JaxScan, Sklearn]


def build(cls, workload, dtype, threads, X, Y, labels, weights, biases):
    """An implementation set up with the data and weights, or a string saying why not."""
    reason = cls.missing()
    if reason:
        return reason
    try:
        impl = cls(workload, dtype, threads)
        impl.setup(X, Y, labels)
        impl.load(weights, biases)
    except Unavailable as e:
        return str(e)
    except ImportError as e:
        return f"not installed ({e})"
    return impl


# --- machine ----------------------------------------------------------------------------


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(threads, xla_note):
    import numba
    from threadpoolctl import threadpool_info

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not started"
    blas = ", ".join(
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')} kernels, "
        f"{i.get('num_threads')} thread(s))"
        for i in threadpool_info() if i.get("user_api") == "blas"
    ) or "none found"
    note = wl.openblas_narrow_note()
    versions = ", ".join(
        f"{d} {_version(d)}"
        for d in ("numpy", "numba", "scikit-learn", "torch", "jax", "jaxlib")
    )
    return [
        f"- CPU: {cpu_model()}; {os.cpu_count()} logical cores, {usable} usable",
        (
            f"- threads: {threads} (numba {numba.get_num_threads()} of "
            f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}, threading layer "
            f"{layer}); JAX: {xla_note}"
        ),
        f"- BLAS: {blas}" + (f" ({note})" if note else ""),
        f"- Python {platform.python_version()}, fastbp {fastbp.__version__}, {versions}",
    ]


# --- timing -----------------------------------------------------------------------------


#: Seconds of rest before each timed turn. Thread pools (OpenMP's, OpenBLAS's, XLA's)
#: spin for a while after their last task; on two cores a pool still spinning from the
#: previous implementation would starve the next one.
SETTLE = 0.3

#: Shortest timed turn, in seconds. After a rest, or after other work, this machine runs
#: the next few milliseconds of any code slowly (a serial Numba loop of 1 ms took 1.3-2x
#: as long right after a 0.3 s sleep or a 0.3 s spin as back to back), so a turn of one
#: 2 ms epoch measured mostly that. Each turn therefore trains as many consecutive epochs
#: as fill TURN (from an untimed calibration epoch, at most MAX_EPOCHS_PER_TURN) and the
#: sample is the turn's time divided by its epochs, as timeit and asv do.
TURN = 0.25
MAX_EPOCHS_PER_TURN = 200


def epochs_per_turn(seconds, turn=TURN):
    """Consecutive epochs per timed turn for an epoch that took ``seconds``."""
    if seconds <= 0 or not np.isfinite(seconds):
        return MAX_EPOCHS_PER_TURN
    return int(min(MAX_EPOCHS_PER_TURN, max(1, np.ceil(turn / seconds))))


def measure_workload(workload, dtype, threads, repeat, quick, classes=None, turn=TURN):
    """Seconds per epoch of every implementation on one workload and dtype.

    Returns
    -------
    n : int, the examples per epoch.
    rows : list of (name, samples or None, epochs, note), in IMPLEMENTATIONS order;
        samples are the timed turns' seconds per epoch, epochs the epochs per turn, note
        says why there are no samples or flags a divergence.
    """
    n = workload.examples(quick)
    X, Y, labels = workload.data(dtype, n)
    net = workload.network(dtype)
    weights, biases = net.weights, net.biases
    impls, notes = [], {}
    classes = IMPLEMENTATIONS if classes is None else classes
    for cls in classes:
        got = build(cls, workload, dtype, threads, X, Y, labels, weights, biases)
        if isinstance(got, str):
            notes[cls.name] = got
        else:
            impls.append(got)
    times = {impl.name: [] for impl in impls}
    epochs = {impl.name: 1 for impl in impls}
    running = list(impls)

    def attempt(impl):
        """Seconds per epoch of one turn of ``impl``, or None when it failed."""
        time.sleep(SETTLE)  # let the previous implementation's idle threads stop spinning
        try:
            k = epochs[impl.name]
            start = time.perf_counter()
            for _ in range(k):
                impl.epoch()
            return (time.perf_counter() - start) / k
        except Exception as e:  # noqa: BLE001  a failing peer must not stop the others
            notes[impl.name] = f"failed: {type(e).__name__}: {e}".splitlines()[0][:120]
            traceback.print_exc(file=sys.stderr)
            running.remove(impl)
            return None

    for impl in list(running):  # warm-up epoch, untimed, then the calibration epoch
        if attempt(impl) is not None:
            seconds = attempt(impl)
            if seconds is not None:
                epochs[impl.name] = epochs_per_turn(seconds, turn)
    for r in range(repeat):
        k = r % max(len(running), 1)
        for impl in running[k:] + running[:k]:
            if impl in running:
                seconds = attempt(impl)
                if seconds is not None:
                    times[impl.name].append(seconds)
    rows = []
    for cls in classes:
        samples = times.get(cls.name)
        if cls.name in notes or not samples:
            rows.append((cls.name, None, 0, notes.get(cls.name, "no samples")))
            continue
        impl = next(i for i in impls if i.name == cls.name)
        finite = all(np.isfinite(p).all() for ps in impl.params() for p in ps)
        rows.append((cls.name, samples, epochs[cls.name],
                     "" if finite else "diverged (non-finite weights)"))
    return n, rows


def _fmt_seconds(s):
    return f"{s:.3g}" if s < 100 else f"{s:.0f}"


def markdown(results, threads, repeat):
    head = [
        (
            f"Seconds per epoch, median of {repeat} rounds, {threads} thread(s); each round "
            "times one turn of every implementation, a turn being the consecutive epochs "
            "(epochs column) that fill at least TURN seconds; spread = (max - min) / median; "
            "speedup = peer time / fastbp time."
        ),
        "",
        (
            "| workload | network | batch | examples | dtype | implementation | s/epoch "
            "| spread | epochs | GFLOP/s | fastbp speedup |"
        ),
        "|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    lines = []
    for w, dtype, n, rows in results:
        medians = {name: float(np.median(s)) for name, s, _, note in rows if s and not note}
        base = medians.get("fastbp")
        net = "-".join(map(str, w.sizes)) + f" {w.hidden}/{w.output} {w.cost}"
        for name, samples, epochs, note in rows:
            cells = [w.name, net, str(w.batch), str(n), dtype, name]
            if samples is None or note:
                cells += [note or "", "", "", "", ""]
            else:
                med = float(np.median(samples))
                spread = (max(samples) - min(samples)) / med * 100
                gflops = w.flops_per_epoch(n) / med / 1e9
                speed = "—" if name == "fastbp" else (f"{med / base:.2f}×" if base else "")
                cells += [_fmt_seconds(med), f"{spread:.0f}%", str(epochs), f"{gflops:.3g}", speed]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(head + lines)


# --- check ------------------------------------------------------------------------------


def check(workloads, dtypes, threads):
    """Train one unshuffled epoch of each implementation on a few examples from the
    same weights; compare the final parameters with fastbp's. Returns success."""
    ok = True
    print("| workload | dtype | implementation | max |Δ| / max |w| | result |")
    print("|---|---|---|---:|---|")
    for w in workloads:
        for dtype in dtypes:
            n = wl.check_examples(w)
            X, Y, labels = w.data(dtype, n, seed=wl.DATA_SEED + 4)
            net = w.network(dtype)
            rng = np.random.default_rng(wl.DATA_SEED + 5)
            biases = [rng.normal(0, 0.5, b.shape).astype(dtype) for b in net.biases]
            weights = net.weights
            rtol = CHECK_RTOL[dtype]
            expected = None
            for cls in IMPLEMENTATIONS:
                got = build(cls, w, dtype, threads, X, Y, labels, weights, biases)
                if isinstance(got, str):
                    print(f"| {w.name} | {dtype} | {cls.name} | | {got} |")
                    continue
                try:
                    got.epoch(shuffle=False)
                    params = [p for ps in got.params() for p in ps]
                except Exception as e:  # noqa: BLE001  reported, and the check fails
                    ok = False
                    print(f"| {w.name} | {dtype} | {cls.name} | | FAILED: {type(e).__name__}: "
                          f"{e} |")
                    continue
                if expected is None:  # fastbp comes first
                    expected = params
                    moved = any(not np.array_equal(p, q)
                                for p, q in zip(params, list(weights) + biases))
                    ok = ok and moved
                    print(f"| {w.name} | {dtype} | {cls.name} | | "
                          f"{'the baseline' if moved else 'FAILED: no parameter changed'} |")
                    continue
                err, bad = 0.0, []
                for i, (a, b) in enumerate(zip(params, expected)):
                    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
                    scale = float(np.max(np.abs(b64)))
                    err = max(err, float(np.max(np.abs(a64 - b64))) / scale)
                    if a.shape != b.shape or not np.allclose(a64, b64, rtol=rtol,
                                                             atol=rtol * scale):
                        bad.append(i)
                result = "ok" if not bad else f"MISMATCH in parameter arrays {bad}"
                ok = ok and not bad
                print(f"| {w.name} | {dtype} | {cls.name} | {err:.1e} | {result} |")
    return ok


# --- main -------------------------------------------------------------------------------


def parse_args(argv=None):
    import numba

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=None,
                   help=f"comma-separated names or families (default all: {', '.join(wl.NAMES)})")
    p.add_argument("--dtypes", default="float32,float64")
    keys = [cls.key for cls in IMPLEMENTATIONS]
    p.add_argument("--impls", default=",".join(keys),
                   help=f"comma-separated implementations to time (default all: {','.join(keys)})")
    p.add_argument("--repeat", type=int, default=5, help="timed turns (rounds) per implementation")
    p.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS,
                   help="threads for every implementation (default: NUMBA_NUM_THREADS)")
    p.add_argument("--quick", action="store_true",
                   help=f"at most {wl.QUICK_EXAMPLES} examples per epoch, one epoch per turn")
    p.add_argument("--check", action="store_true",
                   help="only compare one epoch of every peer with fastbp on a few examples")
    p.add_argument("--output", default=None, help="also write the Markdown table to this file")
    args = p.parse_args(argv)
    args.workloads = wl.select(args.workloads)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtypes:
        if d not in wl.DTYPES:
            p.error(f"unknown dtype {d!r}; choose among {', '.join(wl.DTYPES)}")
    args.impls = [k.strip() for k in args.impls.split(",") if k.strip()]
    for k in args.impls:
        if k not in keys:
            p.error(f"unknown implementation {k!r}; choose among {', '.join(keys)}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= args.threads <= limit:
        p.error(f"--threads must be in [1, {limit}] (NUMBA_NUM_THREADS)")
    return args


def main(argv=None):
    args = parse_args(argv)
    threads = args.threads
    if threads == 1:  # XLA reads its flags when JAX is first imported
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()
        xla_note = "1 thread (XLA_FLAGS)"
    elif threads == os.cpu_count():
        xla_note = "its default pool (all cores)"
    else:
        xla_note = "its default pool (all cores): XLA has no runtime thread limit"

    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
    with fastbp.threads(threads):
        tiny = fastbp.Network([2, 2], seed=0)  # starts Numba's threading layer
        tiny.forward(np.zeros((1, 2)))
        print("## Machine\n")
        print("\n".join(machine_lines(threads, xla_note)))
        print()
        if args.check:
            print("## Check: one unshuffled epoch from the same weights, against fastbp\n")
            good = check(args.workloads, args.dtypes, threads)
            print("\nall implementations agree" if good else "\nCHECK FAILED")
            return 0 if good else 1
        start_region = wl.parallel_region_us()
        results = []
        for w in args.workloads:
            for dtype in args.dtypes:
                print(f"timing {w.name} {dtype} ...", file=sys.stderr, flush=True)
                classes = [cls for cls in IMPLEMENTATIONS if cls.key in args.impls]
                n, rows = measure_workload(w, dtype, threads, args.repeat, args.quick, classes,
                                           turn=0.0 if args.quick else TURN)
                results.append((w, dtype, n, rows))
        table = markdown(results, threads, args.repeat)
        region = (f"- an empty parallel region of fastbp's threads: {start_region:.2f} µs "
                  f"before the runs, {wl.parallel_region_us():.2f} µs after them")
    print(region + "\n")
    print("## Seconds per epoch\n")
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join([*machine_lines(threads, xla_note), region]) + "\n\n" + table
                    + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

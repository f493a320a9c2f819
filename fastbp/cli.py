"""The ``fastbp`` command: train a network on a data set from the shell.

``fastbp train`` (also ``python -m fastbp train``) loads a data set with
:func:`fastbp.datasets.load`, trains a :class:`fastbp.Network` on its training split and
reports the cost and accuracy on its test split after every epoch, then prints a last
line ``test accuracy: 0.9750``. The test split serves as the validation data of
:meth:`fastbp.Network.fit`: there is no separate validation split, so the per-epoch test
figures are for watching a run, and the recipes below, which were picked by watching
them, are demonstrations rather than unbiased estimates.

Every training option left out takes its value from the recipe of the data set, the
dict :data:`RECIPES`:

    option           digits           fashion-mnist    mnist
    ---------------  ---------------  ---------------  ---------------
    --layers         100              256 128          30
    --hidden         relu             relu             sigmoid
    --output         softmax          softmax          sigmoid
    --cost           cross_entropy    cross_entropy    quadratic
    --epochs         30               30               30
    --batch-size     32               64               10
    --lr             0.1              0.02             3.0
    --lr-schedule    cosine           cosine           constant
    --momentum       0.9              0.9              0.0
    --weight-decay   0.001            0.0005           0.0
    --dtype          float64          float32          float64

The mnist recipe is the one of Nielsen's *Neural Networks and Deep Learning*, chapter 1
(784-30-10, sigmoid, quadratic cost, η = 3.0, minibatches of 10, 30 epochs). The cosine
schedule anneals the learning rate from ``--lr`` in the first epoch towards 0 in the last
(:func:`learning_rate`); it steadies the final accuracy, which with a constant rate
wanders by half a percent from epoch to epoch on fashion-mnist. Runs are seeded
(``--seed``, default 0): the same command gives the same numbers, whatever ``--threads``.

Examples
--------
::

    fastbp train                                  # digits, a few seconds
    fastbp train --dataset fashion-mnist --plot curves.png --save fashion.npz
    fastbp train --dataset mnist --data-home ~/data --no-download
    fastbp train --layers 64,32 --hidden tanh --epochs 10 --threads 1

Errors (a bad option value, missing data, a diverging run) print one
``fastbp: error: ...`` message to stderr and exit with status 2.
"""

import argparse
import math
import os
import sys
import textwrap
import time
from pathlib import Path

import numba
from tqdm.auto import tqdm

from . import __version__, datasets
from ._config import threads
from ._validation import ACTIVATIONS, COSTS, DTYPES, OUTPUTS
from .network import History, Network, TrainingDivergedError
from .plotting import plot_history, require_matplotlib

__all__ = ["RECIPES", "learning_rate", "main"]

#: Default training options per data set; see the module docstring for the table.
RECIPES = {
    "digits": {
        "layers": [100],
        "hidden": "relu",
        "output": "softmax",
        "cost": "cross_entropy",
        "epochs": 30,
        "batch_size": 32,
        "lr": 0.1,
        "lr_schedule": "cosine",
        "momentum": 0.9,
        "weight_decay": 1e-3,
        "dtype": "float64",
    },
    "fashion-mnist": {
        "layers": [256, 128],
        "hidden": "relu",
        "output": "softmax",
        "cost": "cross_entropy",
        "epochs": 30,
        "batch_size": 64,
        "lr": 0.02,
        "lr_schedule": "cosine",
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "dtype": "float32",
    },
    "mnist": {
        "layers": [30],
        "hidden": "sigmoid",
        "output": "sigmoid",
        "cost": "quadratic",
        "epochs": 30,
        "batch_size": 10,
        "lr": 3.0,
        "lr_schedule": "constant",
        "momentum": 0.0,
        "weight_decay": 0.0,
        "dtype": "float64",
    },
}

DATASETS = tuple(RECIPES)
SCHEDULES = ("constant", "cosine")
DEFAULT_SEED = 0
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130

_N_CLASSES = 10


def _recipe_table():
    """The recipes as the text table of the module docstring and of ``--help``."""
    width = 15
    rows = [("option", *DATASETS), *[("-" * width,) * (1 + len(DATASETS))]]
    for key in RECIPES["digits"]:
        cells = []
        for name in DATASETS:
            value = RECIPES[name][key]
            cells.append(" ".join(map(str, value)) if key == "layers" else str(value))
        rows.append(("--" + key.replace("_", "-"), *cells))
    return "\n".join("  ".join(f"{cell:<{width}}" for cell in row).rstrip() for row in rows)


def learning_rate(lr, schedule, epoch, epochs):
    """The learning rate of ``epoch`` (1-based) of ``epochs`` under ``schedule``.

    ``"constant"`` keeps η; ``"cosine"`` anneals it along half a cosine,
    η_e = η (1 + cos(π (e - 1) / E)) / 2, from η in the first epoch towards 0 in the
    last (Loshchilov and Hutter's SGDR without restarts).
    """
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


# --- argument types -------------------------------------------------------------------


def _int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}")
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def _float_in(what, low, high=math.inf, low_open=False):
    """A finite float in [low, high), or in (low, high) when ``low_open``."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        if not ok or value >= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


def _layer_sizes(text):
    """One ``--layers`` word: ``100``, ``100,30`` or ``none`` (no hidden layer)."""
    if text.strip().lower() == "none":
        return []
    sizes = []
    for part in text.replace(",", " ").split():
        try:
            size = int(part)
        except ValueError:
            size = 0
        if size < 1:
            where = "" if part == text else f" in {text!r}"
            raise argparse.ArgumentTypeError(
                f"invalid hidden layer size {part!r}{where}: expected positive ints, "
                "as in '--layers 100 30' or '--layers 100,30' (or 'none')"
            )
        sizes.append(size)
    if not sizes:
        raise argparse.ArgumentTypeError(f"no hidden layer size in {text!r}")
    return sizes


def _threads(text):
    limit = numba.config.NUMBA_NUM_THREADS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= limit:
        raise argparse.ArgumentTypeError(
            f"expected an int in [1, {limit}] (NUMBA_NUM_THREADS), got {text!r}"
        )
    return value


# --- the parser -----------------------------------------------------------------------


class _UsageError(Exception):
    def __init__(self, message, prog):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as an exception, which :func:`main` turns into one line."""

    def error(self, message):
        raise _UsageError(message, self.prog)


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30, width=88)


def build_parser():
    """The ``fastbp`` argument parser."""
    parser = _Parser(
        prog="fastbp",
        description="JIT-compiled backpropagation for fully-connected networks.",
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    recipe = "(default: from the recipe)"
    train = commands.add_parser(
        "train",
        help="train a network on a data set and report its test accuracy",
        description=textwrap.fill(
            "Train a network on the training split of a data set by minibatch SGD and "
            "report, after every epoch, the training cost and the cost and accuracy on "
            "the test split (which serves as the validation data), then a last line "
            "'test accuracy: X'. Options left out come from the recipe of the data set.",
            width=86,
        ),
        epilog=(
            "recipes (the default of each option, per --dataset):\n\n"
            + textwrap.indent(_recipe_table(), "  ")
            + "\n\nThe mnist recipe is Nielsen's (Neural Networks and Deep Learning, "
            "chapter 1).\nData: digits ships with scikit-learn; fashion-mnist and mnist "
            "are read from\n--data-home, $FASTBP_DATA or ~/.cache/fastbp/<name>, and "
            "downloaded there unless\n--no-download is given (fastbp.datasets documents "
            "the search)."
        ),
        formatter_class=_formatter,
    )
    data = train.add_argument_group("data")
    data.add_argument(
        "--dataset", choices=DATASETS, default="digits",
        help="the data set (default: digits)",
    )
    data.add_argument(
        "--data-home", metavar="DIR",
        help="directory holding the IDX files of fashion-mnist/mnist, searched first",
    )
    data.add_argument(
        "--download", action=argparse.BooleanOptionalAction, default=True,
        help="download missing IDX files (default: --download)",
    )

    net = train.add_argument_group("network")
    net.add_argument(
        "--layers", nargs="+", type=_layer_sizes, metavar="N",
        help="hidden layer sizes, as '100 30' or '100,30', or 'none' " + recipe,
    )
    net.add_argument("--hidden", choices=ACTIVATIONS, help="hidden activation " + recipe)
    net.add_argument("--output", choices=OUTPUTS, help="output activation " + recipe)
    net.add_argument("--cost", choices=COSTS, help="cost function " + recipe)
    net.add_argument("--dtype", choices=DTYPES, help="floating-point precision " + recipe)

    fit = train.add_argument_group("training")
    fit.add_argument(
        "--epochs", type=_int_at_least(1), metavar="N",
        help="passes over the training split " + recipe,
    )
    fit.add_argument(
        "--batch-size", type=_int_at_least(1), metavar="N",
        help="examples per SGD step " + recipe,
    )
    fit.add_argument(
        "--lr", type=_float_in("a float > 0", 0.0, low_open=True), metavar="ETA",
        help="learning rate > 0 " + recipe,
    )
    fit.add_argument(
        "--lr-schedule", choices=SCHEDULES,
        help="constant, or cosine annealing from --lr towards 0 " + recipe,
    )
    fit.add_argument(
        "--momentum", type=_float_in("a float in [0, 1)", 0.0, 1.0), metavar="MU",
        help="momentum in [0, 1) " + recipe,
    )
    fit.add_argument(
        "--weight-decay", type=_float_in("a float >= 0", 0.0), metavar="LAMBDA",
        help="L2 weight decay per step, >= 0 " + recipe,
    )
    fit.add_argument(
        "--seed", type=_int_at_least(0), default=DEFAULT_SEED, metavar="N",
        help="seeds the initial weights and the shuffling (default: %(default)s)",
    )
    fit.add_argument(
        "--threads", type=_threads, metavar="N",
        help="number of threads for the kernels (default: all, NUMBA_NUM_THREADS)",
    )

    out = train.add_argument_group("output")
    out.add_argument(
        "--save", metavar="PATH", help="save the trained model (.npz, read by fastbp.load)"
    )
    out.add_argument(
        "--plot", metavar="PATH",
        help="write the learning curves to an image (PNG); needs matplotlib",
    )
    out.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )
    out.add_argument(
        "-q", "--quiet", action="store_true",
        help="print only the last line, 'test accuracy: X'",
    )
    return parser


def _resolve(args):
    """Fill every option left out from the recipe of ``args.dataset``."""
    for key, value in RECIPES[args.dataset].items():
        if getattr(args, key) is None:
            setattr(args, key, list(value) if isinstance(value, list) else value)
    if args.layers and isinstance(args.layers[0], list):  # one list per --layers word
        args.layers = [size for word in args.layers for size in word]
    if args.cost == "cross_entropy" and args.output not in ("softmax", "sigmoid"):
        raise _UsageError(
            f"--cost cross_entropy needs --output softmax or sigmoid, not {args.output}",
            "fastbp train",
        )
    for option in ("save", "plot"):
        path = getattr(args, option)
        if path is None:
            continue
        parent = Path(path).expanduser().resolve().parent
        if not parent.is_dir():
            raise _UsageError(
                f"argument --{option}: directory {str(parent)!r} does not exist",
                "fastbp train",
            )
        if not os.access(parent, os.W_OK):
            raise _UsageError(
                f"argument --{option}: directory {str(parent)!r} is not writable",
                "fastbp train",
            )
    return args


# --- the train command ----------------------------------------------------------------


class _Error(Exception):
    """A failure reported as ``fastbp: error: <message>`` with exit status 2."""


def _say(line, quiet):
    if not quiet:
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()


def _load_data(args):
    """The data set of ``args``, downloaded when missing unless ``--no-download``."""
    def load(download):
        return datasets.load(
            args.dataset, data_home=args.data_home, download=download, dtype=args.dtype
        )

    hint = (
        "On the command line: pass --data-home DIR or set "
        f"${datasets.DATA_ENV} to a directory holding the files"
    )
    try:
        try:
            return load(download=False)
        except FileNotFoundError as missing:
            if not args.download:
                raise _Error(
                    f"{missing}\n{hint}, or leave out --no-download to download them."
                ) from None
            if not args.quiet:
                print(f"{args.dataset} not found: downloading it", file=sys.stderr)
            try:
                return load(download=True)
            except datasets.DownloadError as failed:
                raise _Error(f"{missing}\nThe download failed: {failed}\n{hint}.") from None
    except (OSError, ValueError) as exc:
        raise _Error(f"cannot load {args.dataset}: {exc}") from None


def _train(args):
    if args.plot is not None:
        try:
            require_matplotlib()
        except ImportError as exc:
            raise _Error(f"--plot: {exc}") from None

    data = _load_data(args)
    sizes = [data.X_train.shape[1], *args.layers, _N_CLASSES]
    network = Network(
        sizes, hidden=args.hidden, output=args.output, cost=args.cost, dtype=args.dtype,
        seed=args.seed,
    )
    shape = "-".join(map(str, sizes))
    quiet = args.quiet
    progress = args.progress
    if progress is None:
        progress = not quiet and bool(getattr(sys.stderr, "isatty", lambda: False)())

    with threads(args.threads):
        _say(
            f"{args.dataset}: {len(data.X_train)} training and {len(data.X_test)} test "
            f"examples; network {shape}, {args.hidden}/{args.output}, {args.cost}, "
            f"{args.dtype}",
            quiet,
        )
        _say(
            f"{args.epochs} epochs, batch size {args.batch_size}, lr {args.lr} "
            f"({args.lr_schedule}), "
            f"momentum {args.momentum}, weight decay {args.weight_decay}, "
            f"seed {args.seed}, {numba.get_num_threads()} thread(s)",
            quiet,
        )
        width = len(str(args.epochs))
        bar = tqdm(
            total=args.epochs, desc=f"{args.dataset} {shape}", unit="epoch",
            file=sys.stderr, disable=not progress, leave=False, dynamic_ncols=True,
        )
        history = History()
        start = time.perf_counter()
        try:
            for epoch in range(1, args.epochs + 1):
                tic = time.perf_counter()
                lr = learning_rate(args.lr, args.lr_schedule, epoch, args.epochs)
                try:
                    # One fit call per epoch: the momentum velocities and the shuffling
                    # generator carry over, so with a constant rate this is one
                    # fit(epochs=E) call, bit for bit.
                    record = network.fit(
                        data.X_train, data.y_train, epochs=1, batch_size=args.batch_size,
                        lr=lr, momentum=args.momentum, weight_decay=args.weight_decay,
                        validation_data=(data.X_test, data.y_test), progress=False,
                    )
                except TrainingDivergedError as exc:
                    network.history = history
                    raise _Error(
                        f"training diverged in epoch {epoch}: the training cost became "
                        f"NaN or infinite (lr {lr:g} in that epoch). Try a lower --lr"
                        + (", a lower --momentum" if args.momentum else "")
                        + " or a smaller --batch-size."
                    ) from exc
                for name, values in record.as_dict().items():
                    getattr(history, name).extend(values)
                bar.update(1)
                bar.set_postfix(
                    {"cost": f"{history.train_cost[-1]:.4f}",
                     "test_acc": f"{history.val_accuracy[-1]:.4f}"},
                    refresh=True,
                )
                _say(
                    f"epoch {epoch:>{width}}/{args.epochs}  "
                    f"train cost {history.train_cost[-1]:.4f}  "
                    f"test cost {history.val_cost[-1]:.4f}  "
                    f"test accuracy {history.val_accuracy[-1]:.4f}  "
                    f"({time.perf_counter() - tic:.2f} s)",
                    quiet,
                )
        finally:
            bar.close()
        network.history = history
    elapsed = time.perf_counter() - start
    _say(f"trained {history.epochs} epochs in {elapsed:.2f} s", quiet)

    if args.save is not None:
        try:
            network.save(Path(args.save).expanduser())
        except OSError as exc:
            raise _Error(f"cannot save the model to {args.save!r}: {exc}") from None
        _say(f"model saved to {args.save}", quiet)
    if args.plot is not None:
        title = f"fastbp {args.dataset}: {shape} {args.hidden}/{args.output}, {args.cost}"
        try:
            plot_history(history, Path(args.plot).expanduser(), title=title, val_label="test")
        except (OSError, ValueError) as exc:
            raise _Error(f"cannot write the plot to {args.plot!r}: {exc}") from None
        _say(f"learning curves written to {args.plot}", quiet)

    print(f"test accuracy: {history.val_accuracy[-1]:.4f}", flush=True)
    return EXIT_OK


def main(argv=None):
    """Run the ``fastbp`` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 2 after an error (a bad option value, missing
        data, a diverging run), 130 when interrupted, 1 when stdout was closed early.
    """
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            raise _UsageError(
                f"unrecognized arguments: {' '.join(extra)}", f"fastbp {args.command}"
            )
        if args.command == "train":
            args = _resolve(args)
            return _train(args)
        raise _UsageError(f"unknown command {args.command!r}", "fastbp")
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    except _UsageError as exc:
        print(f"fastbp: error: {exc} (see '{exc.prog} --help')", file=sys.stderr)
        return EXIT_ERROR
    except (_Error, ValueError) as exc:
        print(f"fastbp: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("fastbp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early, as by `fastbp train | head`
        try:  # keep Python's final flush of stdout from failing again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())

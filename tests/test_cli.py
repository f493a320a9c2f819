"""Tests of the ``fastbp`` command line (fastbp.cli), run in-process through ``main``.

Only the digits data set is trained on; fashion-mnist and mnist are never downloaded.
"""

import os
import re
import subprocess
import sys
import textwrap
import urllib.request

import numpy as np
import pytest

import fastbp
from fastbp import cli
from fastbp.datasets import load as load_dataset

EPOCH_LINE = re.compile(
    r"^epoch +(\d+)/(\d+)  train cost (\S+)  test cost (\S+)  test accuracy (\S+)  "
    r"\((\S+) s\)$"
)
FINAL_LINE = re.compile(r"^test accuracy: (\d\.\d{4})$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def one_thread():
    """Train on one thread: results do not depend on it, and digits is too small to
    gain from two, while a parallel region can stall when the machine is busy."""
    with fastbp.threads(1):
        yield


def run(capsys, *argv):
    """``main(argv)`` with its exit status, stdout lines and stderr."""
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def final_accuracy(lines):
    match = FINAL_LINE.match(lines[-1])
    assert match, f"last line is not 'test accuracy: X': {lines[-1]!r}"
    accuracy = float(match.group(1))
    assert 0.0 <= accuracy <= 1.0
    return accuracy


def assert_usage_error(status, err, *fragments):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastbp: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


# --- training -------------------------------------------------------------------------


def test_train_prints_one_line_per_epoch_and_the_test_accuracy(capsys):
    status, lines, err = run(capsys, "train", "--epochs", "3", "--no-progress")
    assert status == 0, err
    epochs = [EPOCH_LINE.match(line) for line in lines]
    epochs = [m for m in epochs if m]
    assert [(int(m.group(1)), int(m.group(2))) for m in epochs] == [(1, 3), (2, 3), (3, 3)]
    for m in epochs:
        train_cost, test_cost, accuracy = map(float, m.group(3, 4, 5))
        assert train_cost > 0 and test_cost > 0
        assert 0 <= accuracy <= 1
    accuracy = final_accuracy(lines)
    assert f"{accuracy:.4f}" == epochs[-1].group(5)
    assert err == ""  # no progress bar when asked not to, and nothing else on stderr


def test_default_digits_recipe_reaches_97_percent(capsys):
    status, lines, err = run(capsys, "train")
    assert status == 0, err
    assert sum(bool(EPOCH_LINE.match(line)) for line in lines) == cli.RECIPES["digits"]["epochs"]
    assert final_accuracy(lines) >= 0.97


def test_runs_are_reproducible_and_options_are_used(capsys):
    argv = ["train", "--epochs", "2", "--layers", "20", "10", "--hidden", "tanh",
            "--seed", "3", "--threads", "1", "--batch-size", "16", "--lr", "0.2",
            "--momentum", "0.5", "--weight-decay", "0"]
    first = run(capsys, *argv)
    second = run(capsys, *argv)
    assert first[0] == second[0] == 0

    def without_times(lines):
        return [re.sub(r"\(\S+ s\)|in \S+ s", "", line) for line in lines]

    assert without_times(first[1]) == without_times(second[1])
    header = "\n".join(first[1][:2])
    assert "network 64-20-10-10, tanh/softmax, cross_entropy, float64" in header
    assert "2 epochs, batch size 16, lr 0.2 (cosine), momentum 0.5, weight decay 0.0" in header
    assert "seed 3, 1 thread" in header


def test_constant_schedule_matches_one_fit_call_bit_for_bit(tmp_path, capsys):
    path = tmp_path / "model.npz"
    status, _, err = run(
        capsys, "train", "--epochs", "3", "--lr-schedule", "constant", "--save", str(path)
    )
    assert status == 0, err
    recipe = cli.RECIPES["digits"]
    data = load_dataset("digits")
    net = fastbp.Network(
        [64, *recipe["layers"], 10], hidden=recipe["hidden"], output=recipe["output"],
        cost=recipe["cost"], dtype=recipe["dtype"], seed=cli.DEFAULT_SEED,
    )
    net.fit(
        data.X_train, data.y_train, epochs=3, batch_size=recipe["batch_size"],
        lr=recipe["lr"], momentum=recipe["momentum"], weight_decay=recipe["weight_decay"],
        progress=False,
    )
    saved = fastbp.load(path)
    for a, b in zip(saved.weights + saved.biases, net.weights + net.biases):
        assert np.array_equal(a, b)


def test_cosine_schedule():
    lrs = [cli.learning_rate(0.1, "cosine", e, 4) for e in range(1, 5)]
    assert lrs[0] == 0.1
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] > 0
    assert lrs[2] == pytest.approx(0.05)  # halfway: cos(pi / 2) = 0
    assert cli.learning_rate(0.1, "constant", 3, 4) == 0.1


def test_dtype_float32(capsys):
    status, lines, err = run(capsys, "train", "--epochs", "2", "--dtype", "float32")
    assert status == 0, err
    assert "float32" in lines[0]
    final_accuracy(lines)


@pytest.mark.parametrize(
    "words, sizes",
    [(["100"], [100]), (["100", "30"], [100, 30]), (["100,30"], [100, 30]),
     (["100,", "30"], [100, 30]), (["none"], [])],
)
def test_layers_accepts_words_commas_and_none(words, sizes):
    args = cli._resolve(cli.build_parser().parse_args(["train", "--layers", *words]))
    assert args.layers == sizes


def test_quiet_prints_only_the_final_line(capsys):
    status, lines, err = run(capsys, "train", "--epochs", "2", "--quiet")
    assert status == 0 and err == ""
    assert len(lines) == 1
    final_accuracy(lines)


def test_progress_bar_goes_to_stderr(capsys):
    status, lines, err = run(capsys, "train", "--epochs", "2", "--progress")
    assert status == 0
    assert "2/2" in err and "epoch" in err  # tqdm's bar
    assert FINAL_LINE.match(lines[-1])


def test_save_writes_a_model_that_loads_back(tmp_path, capsys):
    path = tmp_path / "model.npz"
    status, lines, err = run(capsys, "train", "--epochs", "4", "--save", str(path))
    assert status == 0, err
    assert path.is_file()
    net = fastbp.load(path)
    assert net.sizes == [64, 100, 10] and net.hidden == "relu" and net.output == "softmax"
    data = load_dataset("digits")
    accuracy = net.evaluate(data.X_test, data.y_test)["accuracy"]
    assert f"{accuracy:.4f}" == FINAL_LINE.match(lines[-1]).group(1)


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (fastbp[plot])")
    path = tmp_path / "curves.png"
    status, lines, err = run(capsys, "train", "--epochs", "3", "--plot", str(path))
    assert status == 0, err
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert b"IEND" in data[-12:]
    assert b"Matplotlib" in data  # the Software text chunk matplotlib writes
    assert FINAL_LINE.match(lines[-1])


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    path = tmp_path / "curves.png"
    status, _, err = run(capsys, "train", "--epochs", "1", "--plot", str(path))
    assert status == 2
    assert err.startswith("fastbp: error: ") and 'pip install "fastbp[plot]"' in err
    assert not path.exists()


def test_plot_history_rejects_an_empty_history(tmp_path):
    from fastbp.plotting import plot_history

    with pytest.raises(ValueError, match="no epoch"):
        plot_history(fastbp.History(), tmp_path / "empty.png")


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--epochs", "-1"], ["--epochs", "int >= 1", "'-1'"]),
        (["--epochs", "ten"], ["--epochs", "'ten'"]),
        (["--lr", "0"], ["--lr", "float > 0", "'0'"]),
        (["--lr", "nan"], ["--lr", "'nan'"]),
        (["--lr-schedule", "step"], ["--lr-schedule", "invalid choice"]),
        (["--momentum", "1"], ["--momentum", "[0, 1)"]),
        (["--weight-decay", "-0.1"], ["--weight-decay", ">= 0"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--dataset", "foo"], ["--dataset", "invalid choice: 'foo'", "digits"]),
        (["--layers", "abc"], ["--layers", "'abc'", "positive ints"]),
        (["--layers", "100,-3"], ["--layers", "'-3'"]),
        (["--hidden", "softplus"], ["--hidden", "invalid choice"]),
        (["--threads", "0"], ["--threads", "NUMBA_NUM_THREADS"]),
        (["--output", "relu", "--cost", "cross_entropy"], ["--output softmax or sigmoid"]),
        (["--save", "/nonexistent-dir/model.npz"], ["--save", "does not exist"]),
        (["--frobnicate"], ["unrecognized arguments: --frobnicate"]),
    ],
)
def test_bad_values_exit_2_with_one_line(capsys, argv, fragments):
    status, lines, err = run(capsys, "train", *argv)
    assert_usage_error(status, err, *fragments)
    assert lines == []  # nothing trained


def test_missing_command_exits_2(capsys):
    status, _, err = run(capsys)
    assert_usage_error(status, err, "COMMAND")


def test_help_lists_the_recipes(capsys):
    status, lines, _ = run(capsys, "train", "--help")
    assert status == 0
    text = "\n".join(lines)
    for line in cli._recipe_table().splitlines():
        assert line in text
    assert "test split" in text and "validation" in text


def test_module_docstring_table_matches_the_recipes():
    assert textwrap.indent(cli._recipe_table(), "    ") in cli.__doc__


def test_mnist_recipe_is_nielsens():
    assert cli.RECIPES["mnist"] == {
        "layers": [30], "hidden": "sigmoid", "output": "sigmoid", "cost": "quadratic",
        "epochs": 30, "batch_size": 10, "lr": 3.0, "lr_schedule": "constant",
        "momentum": 0.0, "weight_decay": 0.0, "dtype": "float64",
    }


def test_missing_mnist_exits_2_with_the_datasets_message(tmp_path, capsys, monkeypatch):
    for name in ("FASTBP_DATA", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))

    def no_network(*args, **kwargs):
        raise AssertionError("no download may be attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    empty = tmp_path / "empty"
    empty.mkdir()
    status, lines, err = run(
        capsys, "train", "--dataset", "mnist", "--data-home", str(empty), "--no-download"
    )
    assert status == 2 and lines == []
    assert err.startswith("fastbp: error: mnist data not found")
    assert "Traceback" not in err
    assert str(empty) in err and "--no-download" in err
    assert list(empty.iterdir()) == []
    assert not (tmp_path / "xdg_cache_home" / "fastbp" / "mnist").exists()


def test_divergence_exits_2(capsys):
    status, lines, err = run(
        capsys, "train", "--epochs", "2", "--output", "identity", "--cost", "quadratic",
        "--lr", "50",
    )
    assert status == 2
    assert err.startswith("fastbp: error: training diverged in epoch 1")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not any(FINAL_LINE.match(line) for line in lines)


# --- entry point ----------------------------------------------------------------------


def test_python_dash_m_fastbp_train():
    env = dict(os.environ, PYTHONIOENCODING="utf-8", NUMBA_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "fastbp", "train", "--epochs", "1"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert EPOCH_LINE.match(lines[-3]) and lines[-3].startswith("epoch 1/1")
    final_accuracy(lines)
    assert "Traceback" not in result.stderr

"""Learning curves of a training run, drawn with matplotlib.

matplotlib is an optional dependency (``pip install "fastbp[plot]"``); it is imported
only when a plot is drawn. Figures are rendered by the Agg backend on a figure of their
own, so plotting neither needs a display nor touches pyplot's global state.
"""

__all__ = ["plot_history"]

_MISSING = (
    'plotting needs matplotlib, an optional dependency of fastbp: '
    'pip install "fastbp[plot]"'
)


def require_matplotlib():
    """Import matplotlib, or raise an ImportError that says how to install it.

    Returns
    -------
    module
        The ``matplotlib`` module.

    Raises
    ------
    ImportError
        When matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    return matplotlib


def _curves(history):
    """The per-epoch lists of a History, or of a mapping as ``History.as_dict()`` gives."""
    names = ("train_cost", "val_cost", "val_accuracy")
    if hasattr(history, "keys"):
        return [list(history.get(name, [])) for name in names]
    return [list(getattr(history, name, [])) for name in names]


def plot_history(history, path, title=None, val_label="validation"):
    """Write the learning curves of a training run to an image file.

    The training cost and the validation cost of each epoch share the left axis; the
    validation accuracy has a second axis on the right.

    Parameters
    ----------
    history : History or mapping
        The record returned by :meth:`fastbp.Network.fit`, or a mapping with the keys
        ``"train_cost"``, ``"val_cost"`` and ``"val_accuracy"`` (as
        :meth:`History.as_dict` gives). The validation curves are drawn when present.
    path : str or os.PathLike
        The file to write; its suffix picks the format (``.png``, ``.svg``, ``.pdf``).
    title : str, optional
        A title for the figure.
    val_label : str, default "validation"
        What the validation data is called in the legend ("test" when the test split
        served as validation data).

    Returns
    -------
    matplotlib.figure.Figure
        The figure, already written to ``path``.

    Raises
    ------
    ImportError
        When matplotlib is not installed.
    ValueError
        When ``history`` holds no epoch, or its validation curves do not have one value
        per epoch.

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> from fastbp.plotting import plot_history
    >>> X = np.random.default_rng(0).random((40, 4)); y = (X[:, 0] > 0.5).astype(int)
    >>> net = fastbp.Network([4, 8, 2], output="softmax", cost="cross_entropy", seed=0)
    >>> history = net.fit(X, y, epochs=5, batch_size=8, lr=0.5, validation_data=(X, y))
    >>> fig = plot_history(history, "curves.png", title="toy")  # doctest: +SKIP
    """
    train_cost, val_cost, val_accuracy = _curves(history)
    n = len(train_cost)
    if n == 0:
        raise ValueError("history holds no epoch: there is nothing to plot.")
    for name, values in (("val_cost", val_cost), ("val_accuracy", val_accuracy)):
        if values and len(values) != n:
            raise ValueError(
                f"history has {n} epochs of train_cost but {len(values)} of {name}."
            )
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    epochs = range(1, n + 1)
    ax = fig.add_subplot()
    lines = ax.plot(epochs, train_cost, color="C0", marker=".", label="training cost")
    if val_cost:
        lines += ax.plot(
            epochs, val_cost, color="C1", marker=".", label=f"{val_label} cost"
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost")
    ax.grid(True, alpha=0.3)
    if n < 20:
        ax.set_xticks(list(epochs))
    if val_accuracy:
        ax2 = ax.twinx()
        lines += ax2.plot(
            epochs, val_accuracy, color="C2", marker=".", label=f"{val_label} accuracy"
        )
        ax2.set_ylabel("accuracy")
    ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=100)
    return fig

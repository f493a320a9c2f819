"""Saving and loading networks: an .npz of plain arrays plus a JSON config.

Files are read with ``allow_pickle=False``: a model file can never run code. Saving is
atomic: the file is written beside its destination under a temporary name and renamed
into place, so a failed save leaves any previous file intact.
"""

import json
import os
import secrets
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import _validation as v

FORMAT = "fastbp.Network"
VERSION = 1

#: What parsing a file that is not a valid .npz archive can raise once it is open.
_PARSE_ERRORS = (
    ValueError, EOFError, KeyError, OSError, zipfile.BadZipFile, zlib.error,
    struct.error, NotImplementedError, RuntimeError,
)


def save(net, path):
    """Write ``net`` to ``path`` atomically.

    The arrays go to a temporary file in the same directory, which is flushed to disk
    and then renamed onto ``path``: a failed save leaves any previous file at ``path``
    intact and no temporary file behind. A file that is replaced keeps its permission
    bits; a new one gets those of a plain ``open(path, "w")``.

    Parameters
    ----------
    net : Network
    path : str or path-like; written as given (no suffix is added).

    Raises
    ------
    FileNotFoundError
        When the directory of ``path`` does not exist (nothing is created).
    ValueError
        When a parameter is not a finite array of the network's shape and dtype (such
        a file could not be loaded back).
    """
    path = Path(path)
    Ws, bs = net._params()
    for name, params in (("weights", Ws), ("biases", bs)):
        for i, p in enumerate(params):
            if not np.isfinite(p).all():
                raise ValueError(
                    f"Network.{name}[{i}] contains NaN or infinity: the network cannot "
                    "be saved."
                )
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"Cannot save the network to {path}: the directory {path.parent} does not "
            "exist."
        )
    config = {
        "format": FORMAT,
        "version": VERSION,
        "sizes": net.sizes,
        "hidden": net.hidden,
        "output": net.output,
        "cost": net.cost_name,
        "dtype": net.dtype,
    }
    arrays = {"config": np.array(json.dumps(config))}
    for i, (w, b) in enumerate(zip(Ws, bs)):
        arrays[f"weights_{i}"] = w
        arrays[f"biases_{i}"] = b
    tmp, fd = _create_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def _create_beside(path):
    """Create a new, uniquely named temporary file next to ``path``; return (path, fd).

    The file is created with the permission bits of an existing ``path`` (0o666 for a
    new one), which the process umask then narrows, as for a plain ``open``.
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
        try:
            return tmp, os.open(tmp, flags, mode)
        except FileExistsError:
            continue


def _fsync_directory(directory):
    """Make a rename in ``directory`` durable where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # directories cannot be opened on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path):
    """Read a network written by :meth:`Network.save`.

    Raises
    ------
    FileNotFoundError, PermissionError, IsADirectoryError
        When ``path`` cannot be opened for reading.
    ValueError
        When the file is not a fastbp model: truncated, foreign, with pickled objects
        inside, or with arrays that do not match its config. The arrays are checked
        against the config before a network is built.
    """
    from .network import Network

    path = Path(path)
    bad = f"{path} is not a valid fastbp model file"
    with open(path, "rb") as f:
        try:
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not an .npz archive")
            with data:
                arrays = {k: data[k] for k in data.files}
        except _PARSE_ERRORS as exc:
            raise ValueError(f"{bad}: {exc}") from exc
    raw = sorted(k for k, a in arrays.items() if not isinstance(a, np.ndarray))
    if raw:
        raise ValueError(f"{bad}: members {raw} are not .npy arrays.")
    config = arrays.pop("config", None)
    if config is None or config.shape != () or config.dtype.kind != "U":
        raise ValueError(f"{bad}: no fastbp config inside.")
    try:
        config = json.loads(config.item())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
        if config.get("format") != FORMAT:
            raise ValueError("wrong format tag")
        if config.get("version") != VERSION:
            raise ValueError(f"unsupported version {config.get('version')!r}")
        sizes = v.check_architecture(
            config["sizes"], config["hidden"], config["output"], config["cost"]
        )
        dtype = np.dtype(v.check_dtype(config["dtype"], "Network"))
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{bad}: bad config ({exc}).") from exc

    n_layers = len(sizes) - 1
    expected = {}
    for i in range(n_layers):
        expected[f"weights_{i}"] = (sizes[i + 1], sizes[i])
        expected[f"biases_{i}"] = (sizes[i + 1],)
    if set(arrays) != set(expected):
        raise ValueError(f"{bad}: arrays {sorted(arrays)} do not match its config.")
    for name, shape in expected.items():
        a = arrays[name]
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(
                f"{bad}: {name} has shape {a.shape} and dtype {a.dtype}; the config "
                f"asks for {shape} {dtype}."
            )
        if not np.isfinite(a).all():
            raise ValueError(f"{bad}: {name} contains NaN or infinity.")

    net = Network(
        sizes, hidden=config["hidden"], output=config["output"], cost=config["cost"],
        dtype=dtype.name,
    )
    for i in range(n_layers):
        np.copyto(net.weights[i], arrays[f"weights_{i}"])
        np.copyto(net.biases[i], arrays[f"biases_{i}"])
    return net


__all__ = ["save", "load"]

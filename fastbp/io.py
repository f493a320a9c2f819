"""Saving and loading networks: an .npz of plain arrays plus a JSON config.

Files are read with ``allow_pickle=False``: a model file can never run code.
"""

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np


FORMAT = "fastbp.Network"
VERSION = 1


def save(net, path):
    """Write ``net`` to ``path`` atomically.

    The arrays go to a temporary file in the same directory, which is then renamed onto
    ``path``: a failed save leaves any previous file at ``path`` intact.

    Parameters
    ----------
    net : Network
    path : str or path-like; written as given (no suffix is added).
    """
    path = Path(path)
    net._params()
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
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"weights_{i}"] = w
        arrays[f"biases_{i}"] = b
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def load(path):
    """Read a network written by :meth:`Network.save`.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a fastbp model (truncated, foreign, pickled objects inside,
        or arrays that do not match its config).
    """
    from .network import Network

    path = Path(path)
    bad = f"{path} is not a valid fastbp model file"
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ValueError(f"{bad}: {exc}") from exc
    if not isinstance(arrays, dict) or "config" not in arrays:
        raise ValueError(f"{bad}: no fastbp config inside.")
    try:
        config = json.loads(str(arrays.pop("config")))
        if config.get("format") != FORMAT:
            raise ValueError("wrong format tag")
        if config.get("version") != VERSION:
            raise ValueError(f"unsupported version {config.get('version')!r}")
        net = Network(
            config["sizes"], hidden=config["hidden"], output=config["output"],
            cost=config["cost"], dtype=config["dtype"],
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{bad}: bad config ({exc}).") from exc
    n_layers = len(net.sizes) - 1
    expected = {f"weights_{i}" for i in range(n_layers)} | {f"biases_{i}" for i in range(n_layers)}
    if set(arrays) != expected:
        raise ValueError(f"{bad}: arrays {sorted(arrays)} do not match its config.")
    for i in range(n_layers):
        for name, target in (("weights", net.weights[i]), ("biases", net.biases[i])):
            a = arrays[f"{name}_{i}"]
            if a.shape != target.shape or a.dtype != target.dtype:
                raise ValueError(
                    f"{bad}: {name}_{i} has shape {a.shape} and dtype {a.dtype}; the "
                    f"config asks for {target.shape} {target.dtype}."
                )
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{bad}: {name}_{i} contains NaN or infinity.")
            np.copyto(target, a)
    return net


__all__ = ["save", "load"]

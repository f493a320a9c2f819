"""Small image-classification data sets for examples, tests and benchmarks.

Three data sets are available through :func:`load`:

``"digits"``
    scikit-learn's embedded 8x8 handwritten digits (1797 images, 64 features). It ships
    with scikit-learn, so it works offline.
``"fashion-mnist"``
    Zalando's Fashion-MNIST (60000 + 10000 images of 28x28 pixels, 784 features).
``"mnist"``
    LeCun, Cortes and Burges' MNIST handwritten digits (same layout as Fashion-MNIST).

The two MNIST-style data sets are read from the four IDX files of the original
distribution (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each either raw or gzipped
(``.gz``). :func:`find` looks for a directory holding them in this order:

1. the ``data_home`` argument (the files directly in it, or in ``data_home/<name>/``);
2. the environment variable ``FASTBP_DATA`` (the files directly in it, or in
   ``$FASTBP_DATA/<name>/``);
3. the user cache, ``$XDG_CACHE_HOME/fastbp/<name>/`` (``~/.cache/fastbp/<name>/`` when
   ``XDG_CACHE_HOME`` is unset);
4. for Fashion-MNIST only, :data:`DEBIAN_FASHION_MNIST_DIR`, where Debian's package
   ``dataset-fashion-mnist`` installs the gzipped files.

When none holds the files, :func:`load` downloads them (unless ``download=False``) from
the mirrors in :data:`MIRRORS` into ``data_home/<name>/`` or the user cache, and checks
every file against :data:`CHECKSUMS` before it is moved into place.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "CHECKSUMS",
    "DATASETS",
    "DATA_ENV",
    "DEBIAN_FASHION_MNIST_DIR",
    "IDX_FILES",
    "MIRRORS",
    "ChecksumError",
    "Dataset",
    "DownloadError",
    "download",
    "find",
    "load",
    "read_idx",
]

logger = logging.getLogger(__name__)

#: Names accepted by :func:`load`.
DATASETS = ("digits", "fashion-mnist", "mnist")

#: The data sets distributed as IDX files.
_IDX_DATASETS = ("fashion-mnist", "mnist")

#: Stems of the four IDX files, in the order train images, train labels, test images,
#: test labels. On disk each may carry a ``.gz`` suffix.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: Where Debian's package ``dataset-fashion-mnist`` installs Fashion-MNIST: the four
#: upstream file names with a ``.gz`` suffix.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Environment variable naming a directory that holds the data sets.
DATA_ENV = "FASTBP_DATA"

#: Base URLs the gzipped IDX files are downloaded from, tried in order.
MIRRORS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": (
        "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
}

# Checksums of the gzipped upstream files; a download must match every digest listed.
#
# Fashion-MNIST: the MD5s are the ones Zalando publishes in the project's README. Debian's
# package recompresses the files without the stored file name, so its .gz files differ
# from upstream, but their deflate streams are the upstream ones: rebuilding the upstream
# gzip header (stored name, modification time 2017-08-31) around them reproduces files
# of the published sizes whose MD5s equal the published ones, and the SHA-256s of those
# files are the values below, which also match the SHA-256s other projects record for
# the upstream files.
#
# MNIST: the MD5s are the long-published ones for the original files; the SHA-256s are
# the values recorded by several independent projects for the same files (sizes
# 9912422, 28881, 1648877 and 4542 bytes). They have not been checked against a local
# copy, which is why both digests are verified.
CHECKSUMS: dict[str, dict[str, dict[str, str]]] = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": {
            "sha256": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "md5": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        },
        "train-labels-idx1-ubyte.gz": {
            "sha256": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "md5": "25c81989df183df01b3e8a0aad5dffbe",
        },
        "t10k-images-idx3-ubyte.gz": {
            "sha256": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "md5": "bef4ecab320f06d8554ea6380940ec79",
        },
        "t10k-labels-idx1-ubyte.gz": {
            "sha256": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            "md5": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": {
            "sha256": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "md5": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        },
        "train-labels-idx1-ubyte.gz": {
            "sha256": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "md5": "d53e105ee54ea40749a09fcbcd1e9432",
        },
        "t10k-images-idx3-ubyte.gz": {
            "sha256": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "md5": "9fb629c4189551a2d022fa330f9573f3",
        },
        "t10k-labels-idx1-ubyte.gz": {
            "sha256": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "md5": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
}

#: IDX type codes and the (big-endian) NumPy dtypes they stand for.
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_N_CLASSES = 10
_IMAGE_SHAPE = (28, 28)


class Dataset(NamedTuple):
    """A train/test split of a classification data set.

    Attributes
    ----------
    X_train : numpy.ndarray
        Training inputs, shape ``(n_train, n_features)``, C-contiguous, scaled to
        ``[0, 1]``.
    y_train : numpy.ndarray
        Training labels, shape ``(n_train,)``, ``int64`` class indices.
    X_test : numpy.ndarray
        Test inputs, shape ``(n_test, n_features)``, same dtype as ``X_train``.
    y_test : numpy.ndarray
        Test labels, shape ``(n_test,)``, ``int64``.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


class DownloadError(OSError):
    """A data file could not be downloaded from any mirror."""


class ChecksumError(DownloadError):
    """A downloaded file did not match its expected checksum."""


def load(name, *, data_home=None, download=True, dtype="float64"):
    """Load a data set as a train/test split.

    Parameters
    ----------
    name : {"digits", "fashion-mnist", "mnist"}
        The data set.
    data_home : str or os.PathLike, optional
        Directory holding the IDX files, directly or in a subfolder named after the data
        set; searched first (see :func:`find`). When the files have to be downloaded,
        they go to ``data_home/<name>/``, or to the user cache if ``data_home`` is None.
        Ignored for ``"digits"``.
    download : bool, default True
        Download the IDX files from :data:`MIRRORS` when they are not found. Ignored for
        ``"digits"``, which ships with scikit-learn.
    dtype : {"float32", "float64"}, default "float64"
        Floating-point type of ``X_train`` and ``X_test``.

    Returns
    -------
    Dataset
        ``X_*`` are C-contiguous arrays of ``dtype`` in ``[0, 1]`` with one flattened
        image per row (64 features for digits, 784 for the MNISTs); ``y_*`` are ``int64``
        labels in ``0..9``. Digits is split 80/20 (1437/360), stratified, with a fixed
        seed; the MNISTs keep their official 60000/10000 split.

    Raises
    ------
    ValueError
        If ``name`` or ``dtype`` is not supported, or the data files are malformed.
    FileNotFoundError
        If the IDX files are not found and ``download`` is False.
    DownloadError
        If the files have to be downloaded and no mirror delivers a file with the
        expected checksum (:class:`ChecksumError` when a checksum did not match).
    """
    _check_name(name)
    dtype = _check_dtype(dtype)
    if name == "digits":
        return _load_digits(dtype)

    directory = find(name, data_home)
    if directory is None:
        if not download:
            raise FileNotFoundError(_not_found_message(name, data_home))
        directory = _download(
            _download_dir(name, data_home),
            MIRRORS[name],
            CHECKSUMS[name],
            timeout=60.0,
        )
    return _load_idx_directory(directory, dtype)


def find(name, data_home=None):
    """Find the directory holding the four IDX files of a data set.

    A directory holds them when each of ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``
    is present, raw or with a ``.gz`` suffix.

    Parameters
    ----------
    name : {"fashion-mnist", "mnist"}
        The data set.
    data_home : str or os.PathLike, optional
        Directory searched first, as is and then its subfolder ``name``.

    Returns
    -------
    pathlib.Path or None
        The first directory holding all four files, searching ``data_home``, then
        ``$FASTBP_DATA`` (as is and then its subfolder ``name``), then the user cache
        ``$XDG_CACHE_HOME/fastbp/<name>`` (default ``~/.cache/fastbp/<name>``), then, for
        Fashion-MNIST, :data:`DEBIAN_FASHION_MNIST_DIR`; None if none does.

    Raises
    ------
    ValueError
        If ``name`` is not one of the IDX data sets.
    """
    _check_name(name, allowed=_IDX_DATASETS)
    for directory in _search_dirs(name, data_home):
        if _idx_paths(directory) is not None:
            return directory
    return None


def read_idx(path):
    """Read an IDX file into a NumPy array.

    IDX is the format of the MNIST distribution: a 4-byte magic number (two zero bytes,
    a type code and the number of dimensions), one big-endian 32-bit size per
    dimension, then the values in C order.

    Parameters
    ----------
    path : str or os.PathLike
        The file, raw or gzip-compressed. Compression is recognised by the gzip magic
        bytes, whatever the file's suffix.

    Returns
    -------
    numpy.ndarray
        A writable, native-byte-order array with the shape the header gives. The type
        codes 0x08 (uint8), 0x09 (int8), 0x0B (int16), 0x0C (int32), 0x0D (float32) and
        0x0E (float64) are supported.

    Raises
    ------
    ValueError
        If the file is not a well-formed IDX file: bad magic number, unsupported type
        code, no dimensions, a header or payload shorter than the header announces
        (truncated), bytes past the payload, or broken gzip data. The message names the
        file.
    OSError
        If the file cannot be read.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise ValueError(
            f"{path}: truncated or corrupt IDX file: {len(data)} bytes, no header"
        )
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise ValueError(
            f"{path}: not an IDX file: bad magic number 0x{data[:4].hex()} "
            "(must start with two zero bytes)"
        )
    if type_code not in _IDX_TYPES:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_TYPES)
        raise ValueError(
            f"{path}: unsupported IDX type code 0x{type_code:02X} (supported: {known})"
        )
    if ndim == 0:
        raise ValueError(f"{path}: corrupt IDX file: header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"{path}: truncated or corrupt IDX file: header declares {ndim} dimensions "
            f"but the file has only {len(data)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = _IDX_TYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header_size
    if actual < expected:
        raise ValueError(
            f"{path}: truncated or corrupt IDX file: dimensions {shape} need {expected} "
            f"bytes of data, found {actual}"
        )
    if actual > expected:
        raise ValueError(
            f"{path}: corrupt IDX file: {actual - expected} trailing bytes after the "
            f"{expected} bytes of data that dimensions {shape} need"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header_size)
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def download(name, dest_dir, mirrors=None, hashes=None, *, timeout=60.0):
    """Download the four gzipped IDX files of a data set and verify them.

    Each file is streamed into a temporary file in ``dest_dir`` while it is hashed, and
    moved into place only if every expected digest matches, so ``dest_dir`` never holds
    a partial or unverified file. Files already in ``dest_dir`` that match their
    checksums are kept. Mirrors are tried in order until one delivers a file with the
    expected checksums.

    Parameters
    ----------
    name : {"fashion-mnist", "mnist"}
        The data set.
    dest_dir : str or os.PathLike
        Directory the ``.gz`` files are written to; created if missing.
    mirrors : sequence of str, optional
        Base URLs, each joined with the file name. Defaults to ``MIRRORS[name]``.
    hashes : mapping, optional
        Expected checksums by file name (``"train-images-idx3-ubyte.gz"`` and so on). A
        value is either a SHA-256 hex digest or a mapping from :mod:`hashlib` algorithm
        names to hex digests, e.g. ``{"sha256": ..., "md5": ...}``; every digest given is
        checked. Defaults to ``CHECKSUMS[name]``.
    timeout : float, default 60.0
        Socket timeout in seconds for each request.

    Returns
    -------
    pathlib.Path
        ``dest_dir``.

    Raises
    ------
    ValueError
        If ``name`` is not an IDX data set, ``mirrors`` is empty, or ``hashes`` has no
        usable entry for one of the files.
    ChecksumError
        If no mirror delivered a file and at least one delivered a file whose checksum
        did not match; the message names the file and the expected and actual digests.
    DownloadError
        If no mirror delivered a file for another reason (HTTP error, network error).
    """
    _check_name(name, allowed=_IDX_DATASETS)
    return _download(
        Path(dest_dir),
        MIRRORS[name] if mirrors is None else mirrors,
        CHECKSUMS[name] if hashes is None else hashes,
        timeout=timeout,
    )


# --- helpers -----------------------------------------------------------------------


def _check_name(name, allowed=DATASETS):
    if name not in allowed:
        valid = ", ".join(repr(n) for n in allowed)
        raise ValueError(f"unknown data set {name!r}; valid names are {valid}")


def _check_dtype(dtype):
    # np.dtype(None) means float64, and a dtype compares equal to None, so None is
    # rejected explicitly.
    try:
        resolved = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in ("float32", "float64"):
        raise ValueError(f"unsupported dtype {dtype!r}; use 'float32' or 'float64'")
    return resolved


def _load_digits(dtype):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=0, stratify=y
    )
    return Dataset(
        _scaled(X_train, 16.0, dtype),
        np.ascontiguousarray(y_train, dtype=np.int64),
        _scaled(X_test, 16.0, dtype),
        np.ascontiguousarray(y_test, dtype=np.int64),
    )


def _scaled(X, scale, dtype):
    X = np.array(X.reshape(len(X), -1), dtype=dtype, order="C")
    X /= scale
    return X


def _cache_root():
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative XDG_CACHE_HOME.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fastbp"


def _download_dir(name, data_home):
    if data_home is not None:
        return Path(data_home).expanduser() / name
    return _cache_root() / name


def _search_dirs(name, data_home):
    dirs = []
    if data_home is not None:
        home = Path(data_home).expanduser()
        dirs += [home, home / name]
    env = os.environ.get(DATA_ENV, "")
    if env:
        root = Path(env).expanduser()
        dirs += [root, root / name]
    dirs.append(_cache_root() / name)
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST_DIR)
    return dirs


def _idx_paths(directory):
    """The four IDX files in ``directory`` (raw preferred over .gz), or None."""
    paths = []
    for stem in IDX_FILES:
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                paths.append(candidate)
                break
        else:
            return None
    return paths


def _not_found_message(name, data_home):
    places = "\n".join(f"  - {d}" for d in _search_dirs(name, data_home))
    files = ", ".join(f"{stem}[.gz]" for stem in IDX_FILES)
    ways = []
    if name == "fashion-mnist":
        ways.append(
            "install Debian's package dataset-fashion-mnist "
            f"(apt-get install dataset-fashion-mnist, files in {DEBIAN_FASHION_MNIST_DIR})"
        )
    ways += [
        f"put the four files in ${DATA_ENV} or ${DATA_ENV}/{name}/ (or pass data_home=)",
        f"call load({name!r}, download=True) to download them into "
        f"{_download_dir(name, data_home)}",
    ]
    hints = "\n".join(f"  - {way}" for way in ways)
    return (
        f"{name} data not found: no directory holding {files}.\nSearched:\n{places}\n"
        f"To get the data:\n{hints}"
    )


def _read_maybe_gzip(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: truncated or corrupt gzip data: {exc}") from exc


def _check_images(path, images):
    if images.dtype != np.uint8:
        raise ValueError(
            f"{path}: images must be unsigned bytes (IDX type 0x08), got {images.dtype}"
        )
    if images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
        raise ValueError(f"{path}: images must have shape (n, 28, 28), got {images.shape}")


def _check_labels(path, labels, n_images, images_path):
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{path}: labels must be a 1-D integer array, got shape {labels.shape} "
            f"of {labels.dtype}"
        )
    if len(labels) != n_images:
        raise ValueError(
            f"{path}: {len(labels)} labels for {n_images} images in {images_path}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= _N_CLASSES):
        raise ValueError(
            f"{path}: labels must lie in 0..{_N_CLASSES - 1}, found "
            f"{labels.min()}..{labels.max()}"
        )


def _load_idx_directory(directory, dtype):
    paths = _idx_paths(Path(directory))
    if paths is None:
        raise FileNotFoundError(f"{directory} does not hold the four IDX files")
    splits = []
    for images_path, labels_path in (paths[0:2], paths[2:4]):
        images = read_idx(images_path)
        _check_images(images_path, images)
        labels = read_idx(labels_path)
        _check_labels(labels_path, labels, len(images), images_path)
        splits.append((_scaled(images, 255.0, dtype), labels.astype(np.int64)))
    (X_train, y_train), (X_test, y_test) = splits
    return Dataset(X_train, y_train, X_test, y_test)


def _expected_digests(hashes, filename):
    try:
        entry = hashes[filename]
    except KeyError:
        raise ValueError(
            f"no checksum given for {filename}; every download is verified"
        ) from None
    if isinstance(entry, str):
        entry = {"sha256": entry}
    if not isinstance(entry, Mapping) or not entry:
        raise ValueError(
            f"checksum for {filename} must be a SHA-256 hex string or a non-empty mapping"
        )
    digests = {}
    for algorithm, digest in entry.items():
        if algorithm not in hashlib.algorithms_available:
            raise ValueError(f"unknown hash algorithm {algorithm!r} for {filename}")
        digests[algorithm] = str(digest).lower()
    return digests


def _new_hashers(digests):
    return {
        algorithm: hashlib.new(algorithm, usedforsecurity=False) for algorithm in digests
    }


def _mismatches(hashers, digests):
    """``(algorithm, expected, actual)`` for every digest that does not match."""
    return [
        (algorithm, expected, hashers[algorithm].hexdigest())
        for algorithm, expected in digests.items()
        if hashers[algorithm].hexdigest() != expected
    ]


def _file_matches(path, digests):
    hashers = _new_hashers(digests)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return not _mismatches(hashers, digests)


def _download(dest_dir, mirrors, hashes, *, timeout):
    dest_dir = Path(dest_dir)
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    if not mirrors:
        raise ValueError("no mirror to download from")
    # Every checksum is checked up front so that a bad table downloads nothing.
    expected = {f"{stem}.gz": None for stem in IDX_FILES}
    for filename in expected:
        expected[filename] = _expected_digests(hashes, filename)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for filename, digests in expected.items():
        target = dest_dir / filename
        if target.is_file() and _file_matches(target, digests):
            continue
        _fetch(filename, target, mirrors, digests, timeout)
    return dest_dir


def _fetch(filename, target, mirrors: Sequence[str], digests, timeout):
    """Download ``filename`` from the first mirror that delivers the right bytes."""
    failures = []
    checksum_failed = False
    last_error = None
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            _fetch_one(url, target, digests, timeout)
            return
        except ChecksumError as exc:
            checksum_failed = True
            failures.append(f"{url}: {exc}")
            last_error = exc
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{url}: {exc}")
            last_error = exc
    error = ChecksumError if checksum_failed else DownloadError
    tried = "\n".join(f"  - {failure}" for failure in failures)
    raise error(
        f"could not download {filename} into {target.parent}:\n{tried}"
    ) from last_error


def _fetch_one(url, target, digests, timeout):
    logger.info("downloading %s", url)
    hashers = _new_hashers(digests)
    request = urllib.request.Request(url, headers={"User-Agent": "fastbp"})
    tmp = tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
    )
    try:
        with tmp, urllib.request.urlopen(request, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                tmp.write(chunk)
                for h in hashers.values():
                    h.update(chunk)
        mismatches = _mismatches(hashers, digests)
        if mismatches:
            detail = "; ".join(
                f"{algorithm} expected {expected}, got {actual}"
                for algorithm, expected, actual in mismatches
            )
            raise ChecksumError(f"checksum mismatch for {target.name}: {detail}")
        # NamedTemporaryFile creates the file readable by its owner only.
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, target)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise

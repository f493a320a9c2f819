"""Tests of fastbp.datasets: digits, the IDX reader, the search order and downloads.

Downloads are only ever made from a loopback HTTP server started by the tests.
"""

import functools
import gzip
import hashlib
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from fastbp import datasets
from fastbp.datasets import (
    ChecksumError,
    Dataset,
    DownloadError,
    download,
    find,
    load,
    read_idx,
)

IDX_CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}
STEMS = datasets.IDX_FILES
N_TRAIN, N_TEST = 50, 20


# --- helpers -------------------------------------------------------------------------


def idx_bytes(array, type_code=None, shape=None):
    """The IDX encoding of ``array``; ``type_code``/``shape`` override the header."""
    array = np.asarray(array)
    big = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    code = IDX_CODES[big] if type_code is None else type_code
    shape = array.shape if shape is None else shape
    header = struct.pack(">BBBB", 0, 0, code, len(shape))
    header += struct.pack(f">{len(shape)}I", *shape)
    return header + array.astype(big).tobytes()


def write_idx(path, array, *, gz=False, **header):
    data = idx_bytes(array, **header)
    # mtime=0: the same array gives the same bytes (and hash) whatever the clock says.
    Path(path).write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return Path(path)


def make_mnist_like(seed=0, n_train=N_TRAIN, n_test=N_TEST):
    """Random uint8 images and 0..9 labels shaped like the MNIST files."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_mnist_like(directory, arrays, *, gz=True):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(directory / (f"{stem}.gz" if gz else stem), array, gz=gz)
    return directory


def assert_matches(ds, arrays, dtype=np.float64):
    assert isinstance(ds, Dataset)
    expected = (
        arrays["train-images-idx3-ubyte"].reshape(-1, 784) / 255.0,
        arrays["train-labels-idx1-ubyte"],
        arrays["t10k-images-idx3-ubyte"].reshape(-1, 784) / 255.0,
        arrays["t10k-labels-idx1-ubyte"],
    )
    for got, want in zip(ds, expected, strict=True):
        assert got.shape == want.shape
        assert got.flags.c_contiguous
    for X, want in ((ds.X_train, expected[0]), (ds.X_test, expected[2])):
        assert X.dtype == dtype
        np.testing.assert_allclose(X, want.astype(dtype), rtol=1e-7)
        assert X.min() >= 0.0 and X.max() <= 1.0
    for y, want in ((ds.y_train, expected[1]), (ds.y_test, expected[3])):
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, want)


def sha256_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No FASTBP_DATA, a cache under tmp_path, no Debian directory, no proxies."""
    monkeypatch.delenv("FASTBP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    for var in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    return tmp_path


# --- digits --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_digits(dtype):
    ds = load("digits", dtype=dtype)
    assert ds.X_train.shape == (1437, 64)
    assert ds.X_test.shape == (360, 64)
    assert ds.y_train.shape == (1437,)
    assert ds.y_test.shape == (360,)
    for X in (ds.X_train, ds.X_test):
        assert X.dtype == np.dtype(dtype)
        assert X.flags.c_contiguous
        assert X.min() == 0.0 and X.max() == 1.0
    for y in (ds.y_train, ds.y_test):
        assert y.dtype == np.int64
        assert y.flags.c_contiguous
        assert set(np.unique(y)) == set(range(10))
    # Stratified: every class is about a fifth in the test split.
    counts = np.bincount(ds.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_digits_deterministic_and_values():
    from sklearn.datasets import load_digits

    a, b = load("digits"), load("digits")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # The rows are scikit-learn's images divided by 16, and the split is a partition.
    X, y = load_digits(return_X_y=True)
    both = np.concatenate([a.X_train, a.X_test]) * 16
    order = np.lexsort(both.T)
    ref_order = np.lexsort(X.T)
    np.testing.assert_array_equal(both[order], X[ref_order])
    assert (
        np.bincount(np.concatenate([a.y_train, a.y_test])).tolist()
        == np.bincount(y).tolist()
    )


def test_bad_name_and_dtype():
    with pytest.raises(ValueError, match=r"'cifar'.*'digits', 'fashion-mnist', 'mnist'"):
        load("cifar")
    with pytest.raises(ValueError, match="float16.*'float32' or 'float64'"):
        load("digits", dtype="float16")
    with pytest.raises(ValueError, match="unsupported dtype"):
        load("digits", dtype="int64")
    with pytest.raises(ValueError, match="unsupported dtype"):
        load("digits", dtype="nonsense")
    with pytest.raises(ValueError, match="unsupported dtype None"):
        load("digits", dtype=None)
    with pytest.raises(ValueError, match="unknown data set 'digits'"):
        find("digits")


# --- read_idx ------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_read_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        array = rng.standard_normal((3, 4, 5)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, (3, 4, 5), endpoint=True, dtype=dtype)
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), array, gz=gz)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype)  # native byte order
    assert got.dtype.isnative
    assert got.flags.writeable
    np.testing.assert_array_equal(got, array)


def test_read_idx_detects_gzip_by_magic(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = write_idx(tmp_path / "no-suffix", array, gz=True)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(path), array)
    np.testing.assert_array_equal(read_idx(str(path)), array)


def test_read_idx_one_dimension(tmp_path):
    labels = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l", labels)), labels)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_wrong_magic(tmp_path, gz):
    data = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    data[0] = 0x12
    path = tmp_path / "bad"
    path.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
    with pytest.raises(
        ValueError, match=r"bad.*not an IDX file: bad magic number 0x12000802"
    ):
        read_idx(path)


def test_read_idx_unsupported_type(tmp_path):
    path = write_idx(tmp_path / "t", np.zeros(4, np.uint8), type_code=0x0A)
    with pytest.raises(ValueError, match="unsupported IDX type code 0x0A"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated_payload(tmp_path, gz):
    data = idx_bytes(np.ones((4, 28, 28), np.uint8))[:-1]
    path = tmp_path / "short.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(
        ValueError, match=r"short\.idx: truncated or corrupt.*need 3136 bytes.*found 3135"
    ):
        read_idx(path)


def test_read_idx_trailing_bytes(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(np.ones((2, 3), np.int32)) + b"\x00\x00")
    with pytest.raises(ValueError, match=r"long\.idx: corrupt IDX file: 2 trailing bytes"):
        read_idx(path)


def test_read_idx_wrong_dims(tmp_path):
    array = np.zeros((2, 3), np.uint8)
    # The header claims a bigger shape than the data holds...
    bigger = write_idx(tmp_path / "bigger", array, shape=(2, 4))
    with pytest.raises(ValueError, match=r"bigger: truncated or corrupt.*\(2, 4\)"):
        read_idx(bigger)
    # ...a smaller one...
    smaller = write_idx(tmp_path / "smaller", array, shape=(2, 2))
    with pytest.raises(ValueError, match=r"smaller: corrupt IDX file: 2 trailing bytes"):
        read_idx(smaller)
    # ...more dimensions than it has sizes for, and no dimension at all.
    header_only = tmp_path / "header"
    header_only.write_bytes(struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">I", 5))
    with pytest.raises(ValueError, match=r"header: truncated or corrupt.*3 dimensions"):
        read_idx(header_only)
    scalar = tmp_path / "scalar"
    scalar.write_bytes(struct.pack(">BBBB", 0, 0, 8, 0))
    with pytest.raises(ValueError, match="declares 0 dimensions"):
        read_idx(scalar)


def test_read_idx_tiny_and_corrupt_gzip(tmp_path):
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="tiny: truncated or corrupt IDX file"):
        read_idx(tiny)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(idx_bytes(np.ones((50, 50), np.uint8)))[:-20])
    with pytest.raises(ValueError, match=r"broken\.gz: truncated or corrupt gzip"):
        read_idx(broken)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


# --- loading IDX data sets from disk --------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_from_data_home(isolated, gz, dtype):
    arrays = make_mnist_like()
    home = write_mnist_like(isolated / "data", arrays, gz=gz)
    ds = load("fashion-mnist", data_home=home, download=False, dtype=np.dtype(dtype).name)
    assert_matches(ds, arrays, dtype)
    assert ds.X_train.shape == (N_TRAIN, 784) and ds.X_test.shape == (N_TEST, 784)
    assert find("fashion-mnist", data_home=home) == home


def test_load_mixed_raw_and_gz(isolated):
    arrays = make_mnist_like(seed=3)
    home = isolated / "mixed"
    home.mkdir()
    for i, (stem, array) in enumerate(arrays.items()):
        write_idx(home / (stem + (".gz" if i % 2 else "")), array, gz=bool(i % 2))
    assert_matches(load("mnist", data_home=home, download=False), arrays)


def test_search_order(isolated, monkeypatch):
    """data_home, then $FASTBP_DATA, then the user cache, then Debian's directory."""
    sets = {
        key: make_mnist_like(seed=i)
        for i, key in enumerate(["home", "env", "cache", "deb"])
    }
    home = write_mnist_like(isolated / "home-data" / "fashion-mnist", sets["home"])
    env = write_mnist_like(isolated / "env-data", sets["env"])
    cache = write_mnist_like(isolated / "cache" / "fastbp" / "fashion-mnist", sets["cache"])
    deb = write_mnist_like(isolated / "deb", sets["deb"])
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", deb)
    monkeypatch.setenv("FASTBP_DATA", str(env))

    assert find("fashion-mnist", data_home=isolated / "home-data") == home
    assert_matches(
        load("fashion-mnist", data_home=isolated / "home-data", download=False),
        sets["home"],
    )
    assert find("fashion-mnist") == env
    assert_matches(load("fashion-mnist", download=False), sets["env"])
    monkeypatch.delenv("FASTBP_DATA")
    assert find("fashion-mnist") == cache
    assert_matches(load("fashion-mnist", download=False), sets["cache"])
    for f in cache.iterdir():
        f.unlink()
    assert find("fashion-mnist") == deb
    assert_matches(load("fashion-mnist", download=False), sets["deb"])
    # Debian's directory is only a fallback for Fashion-MNIST.
    assert find("mnist") is None


def test_fastbp_data_subfolder(isolated, monkeypatch):
    arrays = make_mnist_like(seed=5)
    write_mnist_like(isolated / "root" / "mnist", arrays)
    monkeypatch.setenv("FASTBP_DATA", str(isolated / "root"))
    assert find("mnist") == isolated / "root" / "mnist"
    assert find("fashion-mnist") is None
    assert_matches(load("mnist", download=False), arrays)


def test_cache_without_xdg(isolated, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    arrays = make_mnist_like(seed=6)
    cache = write_mnist_like(isolated / "home" / ".cache" / "fastbp" / "mnist", arrays)
    assert find("mnist") == cache


def test_incomplete_directory_is_skipped(isolated):
    home = write_mnist_like(isolated / "partial", make_mnist_like())
    (home / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find("mnist", data_home=home) is None


def test_not_found_without_download(isolated, monkeypatch):
    monkeypatch.setenv("FASTBP_DATA", str(isolated / "env"))
    with pytest.raises(FileNotFoundError) as info:
        load("fashion-mnist", data_home=isolated / "here", download=False)
    message = str(info.value)
    for place in [
        isolated / "here",
        isolated / "here" / "fashion-mnist",
        isolated / "env",
        isolated / "env" / "fashion-mnist",
        isolated / "cache" / "fastbp" / "fashion-mnist",
        isolated / "no-debian",
    ]:
        assert f"- {place}\n" in message
    assert "dataset-fashion-mnist" in message
    assert "FASTBP_DATA" in message
    assert "download=True" in message
    with pytest.raises(FileNotFoundError, match="mnist data not found") as info:
        load("mnist", download=False)
    assert "dataset-fashion-mnist" not in str(info.value)


def _write_set(home, arrays):
    write_mnist_like(home, arrays)
    return home


def test_labels_count_mismatch(isolated):
    arrays = make_mnist_like()
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:-1]
    home = _write_set(isolated / "d", arrays)
    with pytest.raises(
        ValueError, match=r"train-labels-idx1-ubyte\.gz: 49 labels for 50 images"
    ):
        load("mnist", data_home=home, download=False)


def test_labels_out_of_range(isolated):
    arrays = make_mnist_like()
    arrays["t10k-labels-idx1-ubyte"][3] = 10
    home = _write_set(isolated / "d", arrays)
    with pytest.raises(
        ValueError, match=r"t10k-labels-idx1-ubyte\.gz: labels must lie in 0\.\.9"
    ):
        load("mnist", data_home=home, download=False)


def test_images_wrong_shape(isolated):
    arrays = make_mnist_like()
    arrays["train-images-idx3-ubyte"] = np.zeros((N_TRAIN, 28, 27), np.uint8)
    home = _write_set(isolated / "d", arrays)
    with pytest.raises(
        ValueError, match=r"must have shape \(n, 28, 28\), got \(50, 28, 27\)"
    ):
        load("mnist", data_home=home, download=False)
    arrays["train-images-idx3-ubyte"] = np.zeros((N_TRAIN, 28, 28), np.int32)
    home = _write_set(isolated / "e", arrays)
    with pytest.raises(ValueError, match="images must be unsigned bytes"):
        load("mnist", data_home=home, download=False)


# --- downloads from a loopback server -------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        self.server.requests.append(self.path)


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over tmp_path/www; yields (base URL, root, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        assert host == "127.0.0.1"
        yield f"http://127.0.0.1:{port}", root, httpd.requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def served(isolated, server):
    """Good files under /good/, one corrupted file under /bad/, nothing under /empty/."""
    base, root, requests = server
    arrays = make_mnist_like(seed=11)
    good = write_mnist_like(root / "good", arrays)
    hashes = {f.name: sha256_of(f) for f in good.iterdir()}
    bad = root / "bad"
    shutil.copytree(good, bad)
    corrupt = bad / "train-labels-idx1-ubyte.gz"
    damaged = bytearray(corrupt.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(damaged))
    (root / "empty").mkdir()
    return {
        "base": base,
        "arrays": arrays,
        "hashes": hashes,
        "bad_hash": sha256_of(corrupt),
        "requests": requests,
    }


def test_download_success(served, isolated):
    dest = isolated / "cache" / "fastbp" / "mnist"
    got = download(
        "mnist", dest, mirrors=[served["base"] + "/good/"], hashes=served["hashes"]
    )
    assert got == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(served["hashes"])
    for name, digest in served["hashes"].items():
        assert sha256_of(dest / name) == digest
    assert find("mnist") == dest
    assert_matches(load("mnist", download=False), served["arrays"])


def test_download_accepts_several_digests(served, isolated):
    root = isolated / "www" / "good"
    hashes = {
        p.name: {
            "sha256": sha256_of(p),
            "md5": hashlib.md5(p.read_bytes()).hexdigest().upper(),
        }
        for p in root.iterdir()
    }
    dest = download(
        "mnist", isolated / "d", mirrors=served["base"] + "/good", hashes=hashes
    )
    assert len(list(dest.iterdir())) == 4
    hashes["t10k-labels-idx1-ubyte.gz"]["md5"] = "0" * 32
    (dest / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ChecksumError, match="md5 expected 0{32}, got [0-9a-f]{32}"):
        download("mnist", dest, mirrors=[served["base"] + "/good/"], hashes=hashes)


def test_download_checksum_mismatch_leaves_nothing(served, isolated):
    dest = isolated / "dest"
    name = "train-labels-idx1-ubyte.gz"
    with pytest.raises(ChecksumError) as info:
        download("mnist", dest, mirrors=[served["base"] + "/bad/"], hashes=served["hashes"])
    message = str(info.value)
    assert name in message
    assert served["hashes"][name] in message  # expected
    assert served["bad_hash"] in message  # actual
    assert isinstance(info.value, OSError)
    # Only the file verified before the corrupt one is there; no partial or temp file.
    assert sorted(p.name for p in dest.iterdir()) == ["train-images-idx3-ubyte.gz"]
    assert find("mnist", data_home=dest) is None


def test_download_falls_through_404(served, isolated):
    dest = isolated / "dest"
    mirrors = [served["base"] + "/empty/", served["base"] + "/good/"]
    download("mnist", dest, mirrors=mirrors, hashes=served["hashes"])
    assert sorted(p.name for p in dest.iterdir()) == sorted(served["hashes"])
    assert "/empty/train-images-idx3-ubyte.gz" in served["requests"]
    assert "/good/train-images-idx3-ubyte.gz" in served["requests"]


def test_download_falls_through_corrupt_mirror(served, isolated):
    dest = isolated / "dest"
    mirrors = [served["base"] + "/bad/", served["base"] + "/good/"]
    download("mnist", dest, mirrors=mirrors, hashes=served["hashes"])
    assert sorted(p.name for p in dest.iterdir()) == sorted(served["hashes"])
    assert_matches(load("mnist", data_home=dest, download=False), served["arrays"])


def test_download_all_mirrors_fail(served, isolated):
    dest = isolated / "dest"
    with pytest.raises(
        DownloadError, match=r"(?s)could not download train-images-idx3-ubyte\.gz.*404"
    ) as info:
        download(
            "mnist", dest, mirrors=[served["base"] + "/empty/"], hashes=served["hashes"]
        )
    assert not isinstance(info.value, ChecksumError)
    assert list(dest.iterdir()) == []


def test_download_refused_connection(served, isolated):
    # A port nobody listens on: bind one, then close it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = isolated / "dest"
    mirrors = [f"http://127.0.0.1:{port}/", served["base"] + "/good/"]
    download("mnist", dest, mirrors=mirrors, hashes=served["hashes"], timeout=5)
    assert len(list(dest.iterdir())) == 4


def test_download_keeps_verified_files(served, isolated):
    dest = isolated / "dest"
    download("mnist", dest, mirrors=[served["base"] + "/good/"], hashes=served["hashes"])
    served["requests"].clear()
    # A damaged file is fetched again, the intact ones are not.
    damaged = dest / "t10k-images-idx3-ubyte.gz"
    damaged.write_bytes(b"junk")
    download("mnist", dest, mirrors=[served["base"] + "/good/"], hashes=served["hashes"])
    assert served["requests"] == ["/good/t10k-images-idx3-ubyte.gz"]
    assert sha256_of(damaged) == served["hashes"][damaged.name]


def test_download_needs_a_checksum_for_every_file(served, isolated):
    hashes = dict(served["hashes"])
    del hashes["t10k-images-idx3-ubyte.gz"]
    with pytest.raises(
        ValueError, match=r"no checksum given for t10k-images-idx3-ubyte\.gz"
    ):
        download(
            "mnist", isolated / "d", mirrors=[served["base"] + "/good/"], hashes=hashes
        )
    assert not (isolated / "d").exists()  # nothing was downloaded
    assert served["requests"] == []
    with pytest.raises(ValueError, match="no mirror"):
        download("mnist", isolated / "d", mirrors=[], hashes=served["hashes"])
    with pytest.raises(ValueError, match="unknown data set 'digits'"):
        download("digits", isolated / "d")


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_load_downloads_into_cache(served, isolated, monkeypatch, name):
    monkeypatch.setitem(
        datasets.MIRRORS, name, (served["base"] + "/empty/", served["base"] + "/good/")
    )
    monkeypatch.setitem(datasets.CHECKSUMS, name, served["hashes"])
    ds = load(name)
    assert_matches(ds, served["arrays"])
    cache = isolated / "cache" / "fastbp" / name
    assert sorted(p.name for p in cache.iterdir()) == sorted(served["hashes"])
    # The second call finds the cache and makes no request.
    served["requests"].clear()
    assert_matches(load(name, download=False), served["arrays"])
    assert served["requests"] == []


def test_load_downloads_into_data_home(served, isolated, monkeypatch):
    monkeypatch.setitem(datasets.MIRRORS, "mnist", (served["base"] + "/good/",))
    monkeypatch.setitem(datasets.CHECKSUMS, "mnist", served["hashes"])
    assert_matches(load("mnist", data_home=isolated / "mine"), served["arrays"])
    assert len(list((isolated / "mine" / "mnist").iterdir())) == 4
    assert not (isolated / "cache").exists()


def test_load_download_failure_leaves_cache_clean(served, isolated, monkeypatch):
    monkeypatch.setitem(datasets.MIRRORS, "fashion-mnist", (served["base"] + "/bad/",))
    monkeypatch.setitem(datasets.CHECKSUMS, "fashion-mnist", served["hashes"])
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte.gz"):
        load("fashion-mnist")
    cache = isolated / "cache" / "fastbp" / "fashion-mnist"
    assert [p.name for p in cache.iterdir()] == ["train-images-idx3-ubyte.gz"]
    with pytest.raises(FileNotFoundError):
        load("fashion-mnist", download=False)


# --- the built-in tables ---------------------------------------------------------------


def test_checksum_and_mirror_tables():
    files = {f"{stem}.gz" for stem in STEMS}
    for name in ("fashion-mnist", "mnist"):
        assert set(datasets.CHECKSUMS[name]) == files
        for digests in datasets.CHECKSUMS[name].values():
            assert len(digests["sha256"]) == 64 and int(digests["sha256"], 16) >= 0
            assert len(digests["md5"]) == 32 and int(digests["md5"], 16) >= 0
        assert all(m.endswith("/") for m in datasets.MIRRORS[name])
    assert datasets.MIRRORS["fashion-mnist"][0].startswith(
        "https://fashion-mnist.s3-website"
    )
    assert datasets.MIRRORS["mnist"] == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    )
    debian = Path("/usr/share/datasets/fashion-mnist")
    assert debian == datasets.DEBIAN_FASHION_MNIST_DIR


# --- Debian's Fashion-MNIST ----------------------------------------------------------


def test_debian_fashion_mnist(tmp_path, monkeypatch):
    debian = datasets.DEBIAN_FASHION_MNIST_DIR
    if not all((debian / f"{stem}.gz").is_file() for stem in STEMS):
        pytest.skip(
            f"Debian's dataset-fashion-mnist is not installed ({debian} is missing)"
        )
    monkeypatch.delenv("FASTBP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert find("fashion-mnist") == debian
    ds = load("fashion-mnist", download=False, dtype="float32")
    assert ds.X_train.shape == (60000, 784)
    assert ds.X_test.shape == (10000, 784)
    assert ds.X_train.dtype == np.float32 and ds.X_train.flags.c_contiguous
    assert ds.X_train.min() >= 0.0 and ds.X_train.max() <= 1.0
    assert ds.X_train.max() == 1.0
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.y_train.min() == 0 and ds.y_train.max() == 9

"""reference.data: where the article's MNIST slice comes from, how it is laid out, what is refused.

Every test runs with the network off (PARITY_NO_DOWNLOAD=1) and HOME / KERAS_HOME in tmp, so
the real keras cache is never read unless a test puts a file there itself.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from reference import data
from reference.data import SyntheticDataWarning, load_article_data, load_mnist_arrays

REPO = Path(__file__).resolve().parents[1]
SHARED_CANDIDATES = [
    p
    for p in (
        os.environ.get("PARITY_MNIST"),
        str(REPO.parent / "shared" / "data" / "mnist_train_head5000.npz"),
    )
    if p
]
SHA_X200 = "c53778cb407d47190d64bb397a11d124c9afb24b39e34a6f4b7ee98e379e720e"
SHA_Y200 = "701cbdf4c1116ea4b0ba50ce82e37ef67cc5b7597af5bcad6c597b1af12f9606"


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("PARITY_NO_DOWNLOAD", "1")
    monkeypatch.delenv("PARITY_MNIST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))


@pytest.fixture
def shared_npz() -> str:
    """The real first-5000 MNIST file: skipped where absent, except on CI where it must exist."""
    for path in SHARED_CANDIDATES:
        if os.path.isfile(path) or os.path.isdir(path):
            return path
    msg = f"MNIST file not found (PARITY_MNIST or {SHARED_CANDIDATES[-1]})"
    if os.environ.get("CI"):
        pytest.fail(msg + " and CI is set: the real-data tests must run on CI")
    pytest.skip(msg)


def fake_mnist(n=30, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def write_idx(folder: Path, x, y, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    with opener(folder / f"train-images-idx3-ubyte{suffix}", "wb") as f:
        f.write((0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in x.shape))
        f.write(x.tobytes())
    with opener(folder / f"train-labels-idx1-ubyte{suffix}", "wb") as f:
        f.write((0x801).to_bytes(4, "big") + len(y).to_bytes(4, "big") + y.tobytes())
    return folder


def sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize("via", ["argument", "PARITY_MNIST"])
def test_shared_mnist_file_gives_the_article_layout(shared_npz, via, monkeypatch):
    if via == "PARITY_MNIST":
        monkeypatch.setenv("PARITY_MNIST", shared_npz)
        d = load_article_data(200)
    else:
        d = load_article_data(200, source=shared_npz)
    x, labels, _ = load_mnist_arrays(shared_npz)
    assert sha(x[:200]) == SHA_X200
    assert sha(np.asarray(labels[:200], dtype=np.uint8)) == SHA_Y200
    assert d.X.shape == (28, 28, 200) and d.X.dtype == np.float64
    assert d.X.min() == 0.0 and d.X.max() == 1.0
    np.testing.assert_array_equal(d.X, np.transpose(x[:200], (2, 1, 0)) / 255)
    assert d.X[3, 17, 5] == x[5, 17, 3] / 255 and d.X[20, 9, 0] == x[0, 9, 20] / 255
    assert d.y.shape == (1, 200) and d.y.dtype == np.float64
    np.testing.assert_array_equal(d.y[0], (labels[:200] > 4).astype(np.float64))
    assert d.labels.dtype == np.int64 and d.labels.shape == (200,)
    assert os.path.abspath(shared_npz) in d.source and SHA_X200[:16] in d.source
    assert d.sha256 == SHA_X200
    assert via.replace("argument", "source argument") in d.source


# --------------------------------------------------------------------------- other sources


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_idx_folder_matches_npz(tmp_path, gz):
    x, y = fake_mnist()
    np.savez(tmp_path / "m.npz", x_train=x, y_train=y)
    folder = write_idx(tmp_path / "idx", x, y, gz)
    from_npz = load_article_data(30, source=tmp_path / "m.npz")
    for src in (folder, next(folder.glob("train-images*"))):  # the folder, or a file in it
        from_idx = load_article_data(30, source=src)
        np.testing.assert_array_equal(from_idx.X, from_npz.X)
        np.testing.assert_array_equal(from_idx.labels, from_npz.labels)
        assert from_idx.source.startswith(f"mnist-idx:{folder}")


@pytest.mark.parametrize("home_var", ["KERAS_HOME", "HOME"])
def test_keras_cache_is_found(tmp_path, monkeypatch, home_var):
    if home_var == "HOME":
        monkeypatch.delenv("KERAS_HOME")
        cache = tmp_path / "home" / ".keras" / "datasets" / "mnist.npz"
    else:
        cache = tmp_path / "keras" / "datasets" / "mnist.npz"
    cache.parent.mkdir(parents=True)
    x, y = fake_mnist()
    np.savez(cache, x_train=x, y_train=y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_article_data(20)
    assert d.source.startswith(f"mnist:{cache} (keras cache;")
    np.testing.assert_array_equal(d.labels, y[:20])


def test_corrupt_keras_cache_falls_through_and_says_why(tmp_path):
    cache = tmp_path / "keras" / "datasets" / "mnist.npz"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"")
    with pytest.warns(SyntheticDataWarning, match="keras cache unusable"):
        d = load_article_data(10)
    assert d.source.startswith("synthetic:") and "file is empty" in d.source


def fake_keras(load_data):
    return types.SimpleNamespace(
        datasets=types.SimpleNamespace(mnist=types.SimpleNamespace(load_data=load_data))
    )


def test_keras_download_is_used_with_a_timeout(monkeypatch):
    monkeypatch.delenv("PARITY_NO_DOWNLOAD")
    x, y = fake_mnist()
    seen = []

    def load_data():
        seen.append(socket.getdefaulttimeout())
        return (x, y), (x, y)

    monkeypatch.setitem(sys.modules, "keras", fake_keras(load_data))
    before = socket.getdefaulttimeout()
    d = load_article_data(30)
    assert seen == [data.DOWNLOAD_TIMEOUT_S] and socket.getdefaulttimeout() == before
    assert "downloaded by keras" in d.source
    np.testing.assert_array_equal(d.labels, y)


def test_failed_download_falls_back_to_synthetic(monkeypatch):
    monkeypatch.delenv("PARITY_NO_DOWNLOAD")

    def load_data():
        raise OSError("network unreachable")

    monkeypatch.setitem(sys.modules, "keras", fake_keras(load_data))
    with pytest.warns(SyntheticDataWarning, match="network unreachable"):
        d = load_article_data(10)
    assert d.source.startswith("synthetic:seed=0 (no MNIST found:")


def test_importing_the_module_does_not_import_keras():
    code = "import sys, reference.data; assert 'keras' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("via", ["argument", "PARITY_MNIST"])
def test_explicit_missing_source_is_an_error_not_a_fallback(tmp_path, monkeypatch, via):
    missing = tmp_path / "nowhere" / "mnist.npz"
    if via == "PARITY_MNIST":
        monkeypatch.setenv("PARITY_MNIST", str(missing))
        missing_arg = None
    else:
        missing_arg = missing
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_article_data(10, source=missing_arg)


def _obj_npz(path):
    x, y = fake_mnist()
    np.savez(path, x_train=np.array([x, "oops"], dtype=object), y_train=y)


def _truncated(path):
    x, y = fake_mnist()
    np.savez(path, x_train=x, y_train=y)
    path.write_bytes(path.read_bytes()[:5000])


def _npz(**arrays):
    return lambda path: np.savez(path, **arrays)


X, Y = fake_mnist()
BAD_NPZ = {
    "empty": (lambda p: p.write_bytes(b""), "file is empty"),
    "truncated": (_truncated, "corrupt or truncated .npz"),
    "pickle-not-npz": (lambda p: p.write_bytes(pickle.dumps({"x_train": X})), "not a .npz"),
    "no-x_train": (_npz(y_train=Y), "no x_train"),
    "no-y_train": (_npz(x_train=X), "no y_train"),
    "float-pixels": (_npz(x_train=X / 255, y_train=Y), "dtype float64; expected uint8"),
    "wrong-shape": (_npz(x_train=X.reshape(30, 784), y_train=Y), r"shape \(30, 784\)"),
    "float-labels": (_npz(x_train=X, y_train=Y.astype(float)), "1-D integer array"),
    "label-count": (_npz(x_train=X, y_train=Y[:29]), "30 images but 29 labels"),
    "label-range": (_npz(x_train=X, y_train=Y + 1), r"labels outside 0\.\.9"),
    "object-array": (_obj_npz, "pickled arrays are refused"),
}


@pytest.mark.parametrize("make, problem", BAD_NPZ.values(), ids=BAD_NPZ.keys())
def test_bad_npz_is_refused_naming_file_and_problem(tmp_path, monkeypatch, make, problem):
    path = tmp_path / "bad.npz"
    make(path)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the loader must never unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    with pytest.raises(ValueError, match=problem) as err:
        load_article_data(10, source=path)
    assert str(path) in str(err.value)


def test_too_few_images_is_an_error(tmp_path):
    np.savez(tmp_path / "m.npz", x_train=X, y_train=Y)
    with pytest.raises(ValueError, match=r"m\.npz.*holds only 30 images, n_images=31"):
        load_article_data(31, source=tmp_path / "m.npz")


def _patch(name, fn):
    def make(folder):
        path = folder / name
        path.write_bytes(fn(path.read_bytes()))
        return path

    return make


BAD_IDX = {
    "images-magic": (
        _patch("train-images-idx3-ubyte", lambda b: b"\0\0\x08\x01" + b[4:]),
        "bad IDX magic number 0x00000801; expected 0x00000803",
    ),
    "labels-magic": (
        _patch("train-labels-idx1-ubyte", lambda b: b"\0\0\x08\x03" + b[4:]),
        "bad IDX magic number",
    ),
    "images-truncated": (
        _patch("train-images-idx3-ubyte", lambda b: b[:-100]),
        "claims 30 images of 28x28 pixels .* but the file holds 23420 bytes",
    ),
    "labels-truncated": (_patch("train-labels-idx1-ubyte", lambda b: b[:5]), "truncated IDX header"),
    "not-28x28": (
        _patch(
            "train-images-idx3-ubyte",
            lambda b: b[:8] + (14).to_bytes(4, "big") + (56).to_bytes(4, "big") + b[16:],
        ),
        r"shape \(14, 56\); expected \(28, 28\)",
    ),
}


@pytest.mark.parametrize("corrupt, problem", BAD_IDX.values(), ids=BAD_IDX.keys())
def test_bad_idx_is_refused_naming_file_and_problem(tmp_path, corrupt, problem):
    folder = write_idx(tmp_path / "idx", X, Y, gz=False)
    bad = corrupt(folder)
    with pytest.raises(ValueError, match=problem) as err:
        load_article_data(10, source=folder)
    assert str(bad) in str(err.value)


def test_corrupt_gzip_and_missing_labels_file(tmp_path):
    folder = write_idx(tmp_path / "idx", X, Y, gz=True)
    gz = folder / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:50])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        load_article_data(10, source=folder)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no train-labels-idx1-ubyte"):
        load_article_data(10, source=folder)


@pytest.mark.parametrize(
    "n, error",
    [
        ("200", TypeError),
        (2.0, TypeError),
        (True, TypeError),
        (None, TypeError),
        (0, ValueError),
        (-5, ValueError),
        (60001, ValueError),
    ],
    ids=["str", "float", "bool", "None", "zero", "negative", "too-many"],
)
def test_bad_n_images(n, error):
    with pytest.raises(error, match="n_images"):
        load_article_data(n, source="synthetic")


# --------------------------------------------------------------------------- synthetic fallback


def test_synthetic_fallback_is_loud_deterministic_and_well_formed():
    with pytest.warns(SyntheticDataWarning, match="NO MNIST FOUND.*PARITY_MNIST") as record:
        d = load_article_data(200)
    assert "PARITY_NO_DOWNLOAD" in str(record[0].message) and "mnist.npz" in str(record[0].message)
    assert d.source.startswith("synthetic:seed=0 (no MNIST found:")
    assert d.X.shape == (28, 28, 200) and d.y.shape == (1, 200) and d.labels.shape == (200,)
    assert d.X.dtype == np.float64 and 0.0 <= d.X.min() and d.X.max() <= 1.0
    assert np.array_equal(np.bincount(d.labels, minlength=10), np.full(10, 20))
    np.testing.assert_array_equal(d.y[0], d.labels > 4)
    with pytest.warns(SyntheticDataWarning):
        again = load_article_data(200)
    np.testing.assert_array_equal(again.X, d.X)
    assert again.source == d.source


def test_synthetic_can_be_forced_without_warning_and_is_seeded():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_article_data(50, source="synthetic")
    assert d.source.startswith("synthetic:seed=0 (requested by source argument;")
    x0, l0 = data.synthetic_digits(1200, seed=0)
    x1, _ = data.synthetic_digits(1200, seed=1)
    assert x0.dtype == np.uint8 and x0.shape == (1200, 28, 28) and l0.dtype == np.int64
    assert x0.max() > 150 and not np.array_equal(x0, x1)
    np.testing.assert_array_equal(data.synthetic_digits(50)[0], x0[:50])  # prefix-stable
    np.testing.assert_array_equal(d.X, (x0[:50] / 255).T)


# --------------------------------------------------------------------------- the images' sha256

SYNTHETIC5_SOURCE = (
    "synthetic:seed=0 (requested by source argument; sha256 of the first 5 images: e28f7517c22e14a5)"
)


def test_sha256_is_the_full_digest_of_the_images_used(tmp_path):
    x, y = fake_mnist()
    np.savez(tmp_path / "m.npz", x_train=x, y_train=y)
    folder = write_idx(tmp_path / "idx", x, y, gz=True)
    d5 = load_article_data(5, source=tmp_path / "m.npz")
    d6 = load_article_data(6, source=tmp_path / "m.npz")
    assert re.fullmatch("[0-9a-f]{64}", d5.sha256) and d5.sha256 == sha(x[:5])
    assert d6.sha256 == sha(x[:6]) != d5.sha256
    assert load_article_data(5, source=tmp_path / "m.npz").sha256 == d5.sha256  # stable
    assert load_article_data(5, source=folder).sha256 == d5.sha256  # same images, other file
    assert d5.source.endswith(f"; sha256 of the first 5 images: {d5.sha256[:16]})")
    synthetic = load_article_data(5, source="synthetic")
    assert synthetic.source == SYNTHETIC5_SOURCE  # reports stay byte-identical
    assert synthetic.sha256 == sha(data.synthetic_digits(5)[0])
    assert synthetic.sha256.startswith("e28f7517c22e14a5")
    assert load_article_data(6, source="synthetic").sha256 != synthetic.sha256


# --------------------------------------------------------------------------- FIFOs, devices, sockets

needs_mkfifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no os.mkfifo here")


def run_without_hanging(fn, fifos, timeout=5.0):
    """Return fn(), run in a daemon thread that may not block on one of `fifos`.

    If fn is still running after `timeout` seconds (blocked opening or reading a FIFO: the
    bug), each FIFO's write end is opened and closed so the reader sees end-of-file and the
    thread ends; the test then fails instead of hanging CI. fn's exception is re-raised.
    """
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as err:  # noqa: BLE001  (handed to the test below)
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    hung = thread.is_alive()
    deadline = time.monotonic() + 10
    while thread.is_alive() and time.monotonic() < deadline:
        for fifo in fifos:
            try:  # non-blocking: fails (ENXIO) unless the loader is waiting on the read end
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(0.1)
    assert not hung, f"the loader blocked on a FIFO for more than {timeout} s"
    assert not thread.is_alive(), "the loader is still blocked after its FIFO was closed"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _fifo_source(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "mnist.npz")
    return tmp_path / "mnist.npz", tmp_path / "mnist.npz"


def _fifo_env(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "mnist.npz")
    monkeypatch.setenv("PARITY_MNIST", str(tmp_path / "mnist.npz"))
    return None, tmp_path / "mnist.npz"


def _link_to_fifo(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe")
    os.symlink(tmp_path / "pipe", tmp_path / "mnist.npz")
    return tmp_path / "mnist.npz", tmp_path / "mnist.npz"


def _fifo_idx_file(tmp_path, monkeypatch):
    folder = tmp_path / "idx"
    folder.mkdir()
    os.mkfifo(folder / "train-images-idx3-ubyte")
    return folder / "train-images-idx3-ubyte", folder / "train-images-idx3-ubyte"


def _fifo_in_idx_folder(name, gz):
    def make(tmp_path, monkeypatch):
        folder = write_idx(tmp_path / "idx", X, Y, gz)
        fifo = folder / (name + (".gz" if gz else ""))
        fifo.unlink()
        os.mkfifo(fifo)
        return folder, fifo

    return make


FIFOS = {
    "source-argument": (_fifo_source, "MNIST source {p} is a FIFO, not a .npz file or an IDX folder"),
    "PARITY_MNIST": (_fifo_env, "MNIST source {p} is a FIFO, not a .npz file or an IDX folder"),
    "symlink-to-fifo": (_link_to_fifo, "{p} is a FIFO, not a .npz file or an IDX folder"),
    "fifo-named-like-an-idx-file": (_fifo_idx_file, "{p} is a FIFO, not a .npz file or an IDX"),
    "images-in-idx-folder": (
        _fifo_in_idx_folder("train-images-idx3-ubyte", False),
        "{p} is a FIFO, not an IDX file",
    ),
    "labels-gz-in-idx-folder": (
        _fifo_in_idx_folder("train-labels-idx1-ubyte", True),
        "{p} is a FIFO, not an IDX file",
    ),
}


@needs_mkfifo
@pytest.mark.parametrize("make, problem", FIFOS.values(), ids=FIFOS.keys())
def test_fifo_source_is_refused_not_read(tmp_path, monkeypatch, make, problem):
    source, fifo = make(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=re.escape(problem.format(p=fifo))):
        run_without_hanging(lambda: load_article_data(10, source=source), [fifo])


@needs_mkfifo
def test_fifo_keras_cache_falls_through_and_says_why(tmp_path):
    cache = tmp_path / "keras" / "datasets" / "mnist.npz"
    cache.parent.mkdir(parents=True)
    os.mkfifo(cache)
    with pytest.warns(SyntheticDataWarning, match="keras cache unusable: .* is a FIFO") as record:
        d = run_without_hanging(lambda: load_article_data(10), [cache])
    assert f"{cache} is a FIFO, not a .npz file" in str(record[0].message)
    assert d.source.startswith("synthetic:seed=0 (no MNIST found: keras cache unusable:")


@needs_mkfifo
@pytest.mark.parametrize("reader", ["npz", "idx", "idx-gz"])
def test_the_open_itself_refuses_a_fifo(tmp_path, reader):
    """A path checked as a regular file and then swapped for a FIFO is still refused, unblocked."""
    fifo = tmp_path / ("train-images-idx3-ubyte.gz" if reader == "idx-gz" else "f")
    os.mkfifo(fifo)
    read = {
        "npz": lambda: data._load_npz(str(fifo)),
        "idx": lambda: data._read_idx(str(fifo), data.IDX_IMAGES_MAGIC),
        "idx-gz": lambda: data._read_idx(str(fifo), data.IDX_IMAGES_MAGIC),
    }[reader]
    with pytest.raises(ValueError, match=re.escape(f"{fifo} is a FIFO, not a")):
        run_without_hanging(read, [fifo])


def test_device_is_refused(monkeypatch):
    if not os.path.exists(os.devnull) or os.devnull != "/dev/null":
        pytest.skip("no /dev/null character device here")
    for via in ("argument", "PARITY_MNIST"):
        monkeypatch.setenv("PARITY_MNIST", os.devnull)
        source = os.devnull if via == "argument" else None
        with pytest.raises(ValueError, match="/dev/null is a character device, not a .npz file"):
            run_without_hanging(lambda: load_article_data(10, source=source), [])


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets here")
def test_socket_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # bind a short relative name: socket paths are length-limited
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind("mnist.sock")
        with pytest.raises(
            ValueError,
            match=re.escape(f"{tmp_path / 'mnist.sock'} is a socket, not a .npz file or an IDX folder"),
        ):
            run_without_hanging(lambda: load_article_data(10, source=tmp_path / "mnist.sock"), [])


# --------------------------------------------------------------------------- absurd IDX headers


def _header_claims(which, dims):
    """Rewrite the images' or labels' IDX header to claim `dims`; the payload is unchanged."""
    name = f"train-{which}-idx{len(dims)}-ubyte"
    return name, lambda b: b[:4] + b"".join(d.to_bytes(4, "big") for d in dims) + b[4 + 4 * len(dims) :]


G = 2**31
# case: (file, claimed dims, what the message says of the claim, of what a plain / gzipped file
# holds; None: refused from the header alone)
IDX_CLAIMS = {
    "images-2^31-of-28x28": (
        "images",
        (G, 28, 28),
        f"claims {G} images of 28x28 pixels",
        "the file holds 23520 bytes after the header",
        r"the gzip file is only \d+ bytes \(at most ~\d+ decompressed\)",
    ),
    "images-one-more-than-held": (
        "images",
        (31, 28, 28),
        "claims 31 images of 28x28 pixels",
        "the file holds 23520 bytes after the header",
        "the decompressed file holds 23520 bytes after the header",
    ),
    "images-one-fewer-than-held": (
        "images",
        (29, 28, 28),
        "claims 29 images of 28x28 pixels",
        "the file holds 23520 bytes after the header",
        "the decompressed file holds more than 22736 bytes",
    ),
    "images-2^31x2^31": (
        "images",
        (30, G, G),
        rf"claims 30 images of shape \({G}, {G}\); expected \(28, 28\)",
        None,
        None,
    ),
    # 8353097 * 1258148 * 1755256 = 2**64 + 23520: an int64 product wraps to the real size
    "images-product-wraps-to-the-file-size": (
        "images",
        (8353097, 1258148, 1755256),
        r"claims 8353097 images of shape \(1258148, 1755256\); expected \(28, 28\)",
        None,
        None,
    ),
    "images-all-2^32-1": (
        "images",
        (2**32 - 1,) * 3,
        r"of shape \(4294967295, 4294967295\)",
        None,
        None,
    ),
    "images-14x56": ("images", (30, 14, 56), r"shape \(14, 56\); expected \(28, 28\)", None, None),
    "labels-2^32-1": (
        "labels",
        (2**32 - 1,),
        "claims 4294967295 labels",
        "the file holds 30 bytes after the header",
        r"the gzip file is only \d+ bytes \(at most ~\d+ decompressed\)",
    ),
    "labels-one-more-than-held": (
        "labels",
        (31,),
        "claims 31 labels",
        "the file holds 30 bytes after the header",
        "the decompressed file holds 30 bytes after the header",
    ),
    "labels-zero": (
        "labels",
        (0,),
        "claims 0 labels",
        "the file holds 30 bytes after the header",
        "the decompressed file holds more than 0 bytes",
    ),
}


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
@pytest.mark.parametrize(
    "which, dims, claim, plain_holds, gz_holds", IDX_CLAIMS.values(), ids=IDX_CLAIMS.keys()
)
def test_idx_header_claiming_what_the_file_does_not_hold(
    tmp_path, gz, which, dims, claim, plain_holds, gz_holds
):
    folder = write_idx(tmp_path / "idx", X, Y, gz)
    name, patch = _header_claims(which, dims)
    path = folder / (name + (".gz" if gz else ""))
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        content = patch(f.read())
    with opener(path, "wb") as f:
        f.write(content)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as err:
            load_article_data(10, source=folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert re.search(claim, message), message
    holds = gz_holds if gz else plain_holds
    if holds is not None:
        assert re.search(holds, message), message
        assert f"dimensions {dims}" in message
    assert peak < 16 * 2**20, f"{peak} bytes allocated to refuse a {path.stat().st_size}-byte file"

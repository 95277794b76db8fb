"""The article's data: the first n MNIST training images, scaled and laid out as the article does.

`load_article_data(n)` returns an `ArticleData` with

- `X`: float64 (28, 28, n) in [0, 1], built exactly as the published code does,
  `(x_train[:n] / 255).T`. The `.T` also transposes every image:
  ``X[a, b, i] == x_train[i, b, a] / 255`` (X[:, :, i] is image i transposed).
- `y`: float64 (1, n), 1.0 where the digit is > 4, else 0.0.
- `labels`: int64 (n,), the original digits 0..9.
- `source`: one short line saying where the data came from (goes into every report).
- `sha256`: the full sha256 (64 hex digits) of the uint8 images used, `x_train[:n]` in MNIST's
  own layout; `source` quotes its first 16 digits.

Where MNIST is looked for, in this order:

1. the `source` argument, else the `PARITY_MNIST` environment variable: a `.npz` holding
   `x_train` (N, 28, 28) uint8 and `y_train` (N,) (like keras's `mnist.npz`), or a folder
   with the IDX files `train-images-idx3-ubyte` and `train-labels-idx1-ubyte` (gzipped or
   not). The value "synthetic" forces the synthetic set. An explicit source that is missing
   or bad raises; it never falls back silently.
2. the keras cache `$KERAS_HOME/datasets/mnist.npz` (default `~/.keras/datasets/mnist.npz`).
3. a download through keras, if keras is importable, with a 5 s socket timeout; off when
   `PARITY_NO_DOWNLOAD=1`.
4. a deterministic synthetic digit-like set (`synthetic_digits`), with a loud
   `SyntheticDataWarning`.

Files are read with `np.load(path, allow_pickle=False)`: nothing is ever unpickled. Only
regular files are opened: a FIFO, device or socket is refused with a ValueError (reading one
could block forever or never end), and an IDX header is checked against what the file holds
before its payload is read, so a header claiming absurd dimensions allocates nothing.
This module imports only numpy and the standard library (keras only lazily, for step 3).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import math
import numbers
import os
import socket
import stat
import warnings
import zipfile
import zlib
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

MAX_IMAGES = 60000
ARTICLE_IMAGES = 200  # the article trains on x_train[:200]
DOWNLOAD_TIMEOUT_S = 5.0
SYNTHETIC = "synthetic"

IMAGE_FILES = ("train-images-idx3-ubyte", "train-images.idx3-ubyte")
LABEL_FILES = ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte")
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
READ_CHUNK = 1 << 20  # IDX payloads are read in chunks: memory follows what the file really holds
# Deflate cannot compress better than 1032:1, so a gzip file of c bytes decompresses to at most
# ~1032 c bytes (a little margin here): a header claiming more is refused before decompressing.
GZIP_MAX_RATIO = 1100


class SyntheticDataWarning(UserWarning):
    """No MNIST was found: the numbers come from made-up digit-like images, not the article's."""


@dataclass(frozen=True, eq=False)
class ArticleData:
    """X (28, 28, n) float64 in [0, 1], transposed images; y (1, n) float64; labels (n,) int64."""

    X: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    source: str
    sha256: str

    def __repr__(self) -> str:
        return (
            f"ArticleData(X={self.X.shape}, y={self.y.shape}, labels={self.labels.shape}, "
            f"source={self.source!r})"
        )


# --------------------------------------------------------------------------- public API


def load_article_data(n_images: int = ARTICLE_IMAGES, source=None) -> ArticleData:
    """Return the article's first `n_images` images as `ArticleData` (see the module docstring).

    `source`: None (search as described above), "synthetic", or a path to a `.npz` or an IDX
    folder. Raises FileNotFoundError / ValueError for an explicit source that is missing or
    bad, TypeError / ValueError for a bad `n_images`.
    """
    n = _check_n_images(n_images)
    how = "source argument"
    if source is None and os.environ.get("PARITY_MNIST"):
        source, how = os.environ["PARITY_MNIST"], "PARITY_MNIST"

    if isinstance(source, str) and source == SYNTHETIC:
        x, labels = synthetic_digits(n)
        return _article(x, labels, n, "synthetic:seed=0", f"requested by {how}")
    if source is not None:
        x, labels, desc = _load_enough(source, n)
        return _article(x, labels, n, desc, f"from {how}")

    looked = []
    cache = _keras_cache_path()
    kind = _path_kind(cache)
    if kind is None:
        looked.append(f"keras cache {cache} missing")
    else:
        try:
            if kind != "regular file":  # a FIFO there would block np.load forever
                raise ValueError(f"{cache} is a {kind}, not a .npz file")
            x, labels, desc = _load_enough(cache, n)
            return _article(x, labels, n, desc, "keras cache")
        except (OSError, ValueError) as err:
            looked.append(f"keras cache unusable: {err}")

    found, note = _try_keras_download(n)
    if found is not None:
        x, labels, desc = found
        return _article(x, labels, n, desc, "downloaded by keras")
    looked.append(note)

    reason = "; ".join(looked)
    warnings.warn(
        SyntheticDataWarning(
            f"NO MNIST FOUND ({reason}). Using SYNTHETIC digit-like images: the numbers are NOT "
            "the article's. Point the loader at MNIST with load_article_data(source=PATH) or "
            "PARITY_MNIST=PATH (PATH: a keras mnist.npz or a folder with the IDX files "
            f"train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]), or put mnist.npz at {cache}."
        ),
        stacklevel=2,
    )
    x, labels = synthetic_digits(n)
    return _article(x, labels, n, "synthetic:seed=0", f"no MNIST found: {reason}")


def load_mnist_arrays(source) -> tuple[np.ndarray, np.ndarray, str]:
    """Read and validate MNIST training images from a `.npz` file or an IDX folder.

    Returns `(x, labels, description)`: x uint8 (N, 28, 28) in MNIST's own layout (not
    transposed), labels int64 (N,) in 0..9, description like "mnist:/abs/path.npz".
    A path to one of the IDX files themselves is read as its folder.
    Raises FileNotFoundError (missing path) or ValueError (anything wrong with the content,
    or a path that is neither a regular file nor a folder: a FIFO, device or socket).
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path (str or os.PathLike), got {type(source).__name__}")
    path = os.path.abspath(os.fspath(source))
    kind = _path_kind(path)
    if kind is None:
        raise FileNotFoundError(f"MNIST source {path} does not exist")
    if kind not in ("regular file", "directory"):
        raise ValueError(f"MNIST source {path} is a {kind}, not a .npz file or an IDX folder")
    name = os.path.basename(path)
    if kind == "regular file" and name.removesuffix(".gz") in IMAGE_FILES + LABEL_FILES:
        path = os.path.dirname(path)
    if os.path.isdir(path):
        return _load_idx_folder(path)
    return _load_npz(path)


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return `(x, labels)`: n deterministic digit-like images, uint8 (n, 28, 28), labels int64 (n,).

    Each image is a jittered seven-segment-style drawing of its digit (random size, position,
    slant, stroke width and brightness). Images are made in blocks of 1000 seeded by
    (seed, block), so the first k images do not depend on n. Every run of 10 labels is a
    permutation of 0..9, so the classes are balanced.
    """
    n = _check_n_images(n, name="n")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    blocks = [_synthetic_block(int(seed), k) for k in range(-(-n // 1000))]
    x = np.concatenate([b[0] for b in blocks])[:n]
    labels = np.concatenate([b[1] for b in blocks])[:n]
    return x, labels


# --------------------------------------------------------------------------- assembling


def _check_n_images(n_images, name: str = "n_images") -> int:
    if isinstance(n_images, bool) or not isinstance(n_images, numbers.Integral):
        raise TypeError(f"{name} must be an int in 1..{MAX_IMAGES}, got {type(n_images).__name__}")
    if not 1 <= n_images <= MAX_IMAGES:
        raise ValueError(f"{name} must be in 1..{MAX_IMAGES}, got {n_images}")
    return int(n_images)


def _article(x: np.ndarray, labels: np.ndarray, n: int, desc: str, note: str) -> ArticleData:
    digest = hashlib.sha256(np.ascontiguousarray(x[:n]).tobytes()).hexdigest()
    X = (x[:n] / 255).T  # exactly the published code: transposes the stack and every image
    y = (labels[:n] > 4).astype(np.float64).reshape(1, n)
    source = f"{desc} ({note}; sha256 of the first {n} images: {digest[:16]})"
    return ArticleData(X=X, y=y, labels=labels[:n].astype(np.int64), source=source, sha256=digest)


def _load_enough(source, n: int):
    x, labels, desc = load_mnist_arrays(source)
    if len(x) < n:
        raise ValueError(f"{desc}: holds only {len(x)} images, n_images={n} were requested")
    return x, labels, desc


def _keras_cache_path() -> str:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(os.path.expanduser(home), "datasets", "mnist.npz")


def _try_keras_download(n: int):
    """Return ((x, labels, desc), "") on success, else (None, why it did not work)."""
    if os.environ.get("PARITY_NO_DOWNLOAD", "").strip().lower() not in ("", "0", "false", "no"):
        return None, "download disabled by PARITY_NO_DOWNLOAD"
    try:
        # Looked up by name, on demand: the reference itself imports only numpy.
        keras = importlib.import_module("keras")
    except Exception as err:  # noqa: BLE001  (any import failure means: no keras download)
        return None, f"keras not importable ({type(err).__name__})"
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        (x, y), _ = keras.datasets.mnist.load_data()
    except Exception as err:  # noqa: BLE001  (network, hash or disk trouble: fall through)
        return None, f"keras download failed ({type(err).__name__}: {err})"[:200]
    finally:
        socket.setdefaulttimeout(old)
    origin = "mnist:keras.datasets.mnist.load_data()"
    try:
        x, labels = _validated(np.asarray(x), np.asarray(y), "keras.datasets.mnist.load_data()")
    except ValueError as err:
        return None, f"keras download unusable ({err})"
    if len(x) < n:
        return None, f"keras download holds only {len(x)} images"
    cache = _keras_cache_path()
    return (x, labels, f"mnist:{cache}" if os.path.isfile(cache) else origin), ""


# --------------------------------------------------------------------------- file formats


def _kind(mode: int) -> str:
    """What an `st_mode` is, in words: "regular file", "directory", "FIFO", "socket", ..."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    for test, kind in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return kind
    return "special file"


def _path_kind(path) -> str | None:
    """`_kind` of what `path` names (links followed), None where nothing is (os.path.exists)."""
    try:
        return _kind(os.stat(path).st_mode)
    except (OSError, ValueError):
        return None


def _open_regular(path: str, what: str):
    """Open `path` for binary reading, refusing anything but a regular file with a ValueError.

    The open never blocks (O_NONBLOCK: a FIFO without a writer would otherwise hang here) and
    the check is made on the opened descriptor, so a file swapped for a FIFO after the callers'
    own check is still refused.
    """
    nonblock = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0))
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind != "regular file":
            raise ValueError(f"{path} is a {kind}, not {what}")
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _validated(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check x is uint8 (N, 28, 28) and y holds N digits 0..9; return (x, y as int64)."""
    if x.dtype != np.uint8:
        raise ValueError(
            f"{where}: x_train has dtype {x.dtype}; expected uint8 "
            "(raw 0..255 pixels, as in keras mnist.npz)"
        )
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.shape[0] == 0:
        raise ValueError(f"{where}: x_train has shape {x.shape}; expected (N, 28, 28) with N >= 1")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(
            f"{where}: y_train has shape {y.shape} and dtype {y.dtype}; "
            "expected a 1-D integer array of digits"
        )
    if len(y) != len(x):
        raise ValueError(f"{where}: {len(x)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{where}: labels outside 0..9 (min {y.min()}, max {y.max()})")
    return x, y.astype(np.int64)


def _load_npz(path: str):
    # We open the file ourselves: np.load leaks its own handle when a zip is corrupt.
    with _open_regular(path, "a .npz file") as fh:
        head = fh.read(4)
        if not head:
            raise ValueError(f"{path}: file is empty; expected a .npz archive with x_train, y_train")
        if head[:2] != b"PK":
            raise ValueError(
                f"{path}: not a .npz (zip) archive nor an IDX folder (starts with {head!r})"
            )
        fh.seek(0)
        try:
            with np.load(fh, allow_pickle=False) as npz:
                files = sorted(npz.files)
                x = npz["x_train"] if "x_train" in files else None
                y = npz["y_train"] if "y_train" in files else None
        except ValueError as err:  # numpy refuses object (pickled) arrays, or a malformed header
            raise ValueError(
                f"{path}: unreadable array in .npz ({err}); object/pickled arrays "
                "are refused, x_train must be uint8 and y_train integer"
            ) from err
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise ValueError(
                f"{path}: corrupt or truncated .npz archive ({type(err).__name__}: {err})"
            ) from err
    missing = [k for k, v in (("x_train", x), ("y_train", y)) if v is None]
    if missing:
        raise ValueError(f"{path}: .npz has no {' or '.join(missing)} (it holds {files})")
    x, labels = _validated(x, y, path)
    return x, labels, f"mnist:{path}"


def _load_idx_folder(folder: str):
    images = _find_idx(folder, IMAGE_FILES)
    labels_path = _find_idx(folder, LABEL_FILES)
    x = _read_idx(images, IDX_IMAGES_MAGIC)  # checks the images are 28 x 28
    y = _read_idx(labels_path, IDX_LABELS_MAGIC)
    x, y = _validated(x, y, f"{images} + {os.path.basename(labels_path)}")
    desc = f"mnist-idx:{folder} ({os.path.basename(images)}, {os.path.basename(labels_path)})"
    return x, y, desc


def _find_idx(folder: str, names) -> str:
    for name in names:
        for candidate in (name, name + ".gz"):
            path = os.path.join(folder, candidate)
            kind = _path_kind(path)
            if kind == "regular file":
                return path
            if kind is not None:
                raise ValueError(f"{path} is a {kind}, not an IDX file")
    raise FileNotFoundError(
        f"{folder}: no {names[0]} or {names[0]}.gz in this folder "
        "(expected the MNIST IDX training files, or give a .npz)"
    )


def _read_upto(f, limit: int) -> bytearray:
    """Read up to `limit` bytes in chunks: allocates only what the file really holds (+ a chunk)."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = f.read(min(READ_CHUNK, limit - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _idx_dims(path: str, head: bytes, magic: int) -> tuple[int, ...]:
    """The dimensions an IDX header claims, after checking its length and magic number."""
    ndim = magic & 0xFF
    if len(head) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({len(head)} bytes, need {4 + 4 * ndim})")
    found = int.from_bytes(head[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: bad IDX magic number 0x{found:08x}; expected 0x{magic:08x}")
    dims = tuple(int.from_bytes(head[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    if ndim == 3 and dims[1:] != (28, 28):
        raise ValueError(
            f"{path}: the IDX header claims {dims[0]} images of shape {dims[1:]}; "
            "expected (28, 28) (MNIST digits)"
        )
    return dims


def _read_idx(path: str, magic: int) -> np.ndarray:
    """Read one IDX file (optionally gzipped) of unsigned bytes; check magic, header and size.

    The size the header claims is checked against what the file holds before the payload is
    read (plain: the file size; gzipped: the most its compressed size can hold, then the
    payload read in chunks), so an absurd header is refused without allocating it.
    """
    gz = path.endswith(".gz")
    header = 4 + 4 * (magic & 0xFF)
    with _open_regular(path, "an IDX file") as raw:
        on_disk = os.fstat(raw.fileno()).st_size
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") if gz else nullcontext(raw) as f:
                dims = _idx_dims(path, _read_upto(f, header), magic)
                size = math.prod(dims)  # Python ints: no overflow
                most = GZIP_MAX_RATIO * on_disk
                if gz and size > most:
                    holds = f"the gzip file is only {on_disk} bytes (at most ~{most} decompressed)"
                    raise _claim_error(path, dims, header, holds)
                if not gz and size != on_disk - header:
                    holds = f"the file holds {on_disk - header} bytes after the header"
                    raise _claim_error(path, dims, header, holds)
                data = _read_upto(f, size + 1)
        except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
            what = "corrupt or truncated gzip" if gz else "unreadable IDX file"
            raise ValueError(f"{path}: {what} ({type(err).__name__}: {err})") from err
    if len(data) != size:
        got = f"more than {size}" if len(data) > size else f"{len(data)}"
        holds = f"the {'decompressed ' if gz else ''}file holds {got} bytes after the header"
        raise _claim_error(path, dims, header, holds)
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _claim_error(path: str, dims: tuple[int, ...], header: int, holds: str) -> ValueError:
    """What an IDX header claims versus what the file holds (`holds`), naming the file."""
    claim = f"{dims[0]} images of {dims[1]}x{dims[2]} pixels" if len(dims) == 3 else f"{dims[0]} labels"
    return ValueError(
        f"{path}: the IDX header claims {claim} (dimensions {dims}: {math.prod(dims)} bytes "
        f"after the {header}-byte header) but {holds} (truncated or corrupt file)"
    )


# --------------------------------------------------------------------------- synthetic digits


def _segments() -> tuple[np.ndarray, np.ndarray]:
    """Strokes of each digit in a unit box (x right, y down): (10, S, 2, 2) endpoints + mask."""
    corner = {
        "a": ((0, 0), (1, 0)),
        "b": ((1, 0), (1, 0.5)),
        "c": ((1, 0.5), (1, 1)),
        "d": ((0, 1), (1, 1)),
        "e": ((0, 0.5), (0, 1)),
        "f": ((0, 0), (0, 0.5)),
        "g": ((0, 0.5), (1, 0.5)),
    }
    t = np.linspace(0, 2 * np.pi, 13)
    ring = np.stack([0.5 + 0.5 * np.cos(t), 0.5 + 0.5 * np.sin(t)], axis=1)
    strokes = {
        0: [(tuple(ring[k]), tuple(ring[k + 1])) for k in range(12)],
        1: [((0.6, 0), (0.6, 1)), ((0.6, 0), (0.3, 0.25))],
        7: [corner["a"], ((1, 0), (0.35, 1))],
    }
    for digit, names in {
        2: "abged",
        3: "abgcd",
        4: "fgbc",
        5: "afgcd",
        6: "afgedc",
        8: "abcdefg",
        9: "abcdfg",
    }.items():
        strokes[digit] = [corner[c] for c in names]
    size = max(len(s) for s in strokes.values())
    segs = np.zeros((10, size, 2, 2))
    mask = np.zeros((10, size), dtype=bool)
    for digit, lines in strokes.items():
        segs[digit, : len(lines)] = lines
        mask[digit, : len(lines)] = True
    return segs, mask


def _synthetic_block(seed: int, block: int, size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, block])
    labels = np.argsort(rng.random((size // 10, 10)), axis=1).ravel().astype(np.int64)
    width, height = rng.uniform(8, 13, size), rng.uniform(14, 19, size)
    cx, cy = rng.uniform(11.5, 15.5, size), rng.uniform(11.5, 15.5, size)
    slant, half = rng.uniform(-0.3, 0.3, size), rng.uniform(0.7, 1.5, size)
    peak = rng.uniform(190, 255, size)

    segs, mask = _segments()
    s = segs[labels]  # (size, S, 2 ends, 2 coords) in the unit box
    ys = cy[:, None, None] + (s[..., 1] - 0.5) * height[:, None, None]
    xs = (
        cx[:, None, None]
        + (s[..., 0] - 0.5) * width[:, None, None]
        - slant[:, None, None] * (ys - cy[:, None, None])
    )
    row, col = np.mgrid[0:28, 0:28].astype(np.float64)
    dist2 = np.full((size, 28, 28), np.inf)  # squared distance to the nearest stroke
    for k in range(s.shape[1]):  # over the few stroke segments; vectorised over images and pixels
        idx = np.flatnonzero(mask[labels, k])
        ax, ay = xs[idx, k, 0, None, None], ys[idx, k, 0, None, None]
        dx, dy = xs[idx, k, 1, None, None] - ax, ys[idx, k, 1, None, None] - ay
        px, py = col - ax, row - ay
        t = np.clip((px * dx + py * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0, 1)
        dist2[idx] = np.minimum(dist2[idx], (px - t * dx) ** 2 + (py - t * dy) ** 2)
    dist = np.sqrt(dist2)
    ink = np.clip(half[:, None, None] + 0.5 - dist, 0, 1) * peak[:, None, None]
    return np.rint(ink).astype(np.uint8), labels

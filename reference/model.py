"""The article's whole model: initialisation, forward pass, backward pass and one update.

Each step calls the stage functions of this package (one per article equation), so the
model adds no maths of its own. Inputs are validated once here; the private kernels it
calls skip re-validation.

    X (n, n, N) -> patches (N, P, s, s) -> Z1 = patches * f (N, K, P) -> A1 = sigmoid(Z1)
      -> flatten (K*P, N) -> Z2 = W^T A1 + b (1, N) -> O = sigmoid(Z2) -> E (scalar)
"""

from __future__ import annotations

import math

import numpy as np

from reference import activations, conv, dense, flatten, loss, patches, update
from reference._validate import choice, float_array, mapping, positive_int
from reference.tensors import Tensors
from reference.update import sgd_update

SCHEMES = ("informative", "article")
DTYPES = ("float32", "float64")
# init_params refuses sizes whose parameters would not fit in memory (2^31 float64 = 16 GiB)
# with a ValueError naming them, instead of numpy's MemoryError or dimension overflow.
MAX_PARAMETERS = 2**31


def init_params(seed: int = 0, dtype="float64", scheme: str = "informative", *,
                n_filters: int = 3, filter_size: int = 5, image_side: int = 28) -> Tensors:
    """Initial parameters f (s, s, K), W (K * P, 1), b (1,); article: (5, 5, 3), (1728, 1), (1,).

    scheme="article": the published code: f = uniform[0, 1) of shape (K, s, s) then `.T`
      (so every filter is transposed too), W uniform[0, 1), b = 0. With it O is exactly 1.0
      and every gradient is exactly zero (docs/article.md F1): fine for the forward pass, vacuous
      for gradients.
    scheme="informative" (default for parity checks): centred LeCun-uniform draws,
      f ~ U(-sqrt(3/s^2), sqrt(3/s^2)), W ~ U(-sqrt(3/F), sqrt(3/F)) (variance 1/fan_in),
      b ~ U(-0.5, 0.5), so that O stays well inside (0.05, 0.95) and every gradient is
      informative; b != 0 so that a forgotten bias shows in Z2.
    Parameters are drawn in float64 from `np.random.default_rng(seed)` and then cast, so
    float32 and float64 runs start from the same values rounded once.
    """
    seed = positive_int("seed", seed, minimum=0)
    if not _is_dtype(dtype) or str(np.dtype(dtype)) not in DTYPES:
        raise (ValueError if isinstance(dtype, (str, np.dtype, type)) else TypeError)(
            f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    dtype = np.dtype(dtype)
    scheme = choice("scheme", scheme, SCHEMES)
    K = positive_int("n_filters", n_filters)
    s = positive_int("filter_size", filter_size)
    n = positive_int("image_side", image_side)
    if s > n:
        raise ValueError(f"filter_size must be <= image_side {n}, got {s}")
    F = K * patches.output_side(n, s) ** 2
    if F > MAX_PARAMETERS or K * s * s > MAX_PARAMETERS:
        raise ValueError(f"n_filters={K}, filter_size={s}, image_side={n} give {F} dense "
                         f"weights and {K * s * s} filter weights; at most {MAX_PARAMETERS} "
                         f"of each are drawn")
    rng = np.random.default_rng(seed)
    if scheme == "article":
        f = rng.uniform(size=(K, s, s)).T
        W = rng.uniform(size=(F, 1))
        b = np.zeros(1)
    else:
        f = rng.uniform(-1, 1, size=(K, s, s)).T * np.sqrt(3 / s**2)
        W = rng.uniform(-1, 1, size=(F, 1)) * np.sqrt(3 / F)
        b = rng.uniform(-0.5, 0.5, size=1)
    return Tensors(f=np.ascontiguousarray(f, dtype=dtype), W=W.astype(dtype), b=b.astype(dtype))


def _is_dtype(value) -> bool:
    try:
        np.dtype(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, str) or value in DTYPES


def _required(name, value):
    if value is None:
        raise TypeError(f"{name} must be a numpy array of float32 or float64, got None")
    return value


def check_params(params, X=None):
    """Validate f, W, b (and X against them); returns (f, W, b)."""
    mapping("params", params, ("f", "W", "b"))
    f = float_array("params['f']", params["f"], (None, None, None))
    if f.shape[0] != f.shape[1]:
        raise ValueError(f"params['f'] must have shape (s, s, K), got {f.shape}")
    rows = None
    if X is not None:
        X = float_array("X", X, (None, None, None), dtype=f.dtype)
        if X.shape[0] != X.shape[1]:
            raise ValueError(f"X must hold square images (n, n, N), got shape {X.shape}")
        if X.shape[0] < f.shape[0]:
            raise ValueError(f"X must hold images at least as large as the {f.shape[0]}x"
                             f"{f.shape[0]} filters params['f'], got shape {X.shape}")
        rows = f.shape[2] * patches.output_side(X.shape[0], f.shape[0]) ** 2
    W = float_array("params['W']", params["W"], (rows, 1), dtype=f.dtype)
    b = float_array("params['b']", params["b"], (1,), dtype=f.dtype)
    return f, W, b


def forward(params, X: np.ndarray) -> Tensors:
    """E1..E6: returns X, patches, Z1, A1, Z2, O (article layout and names).

    Z1 is computed from the images directly (reference.conv's banded-filter kernel, the
    same sums as conv_forward(patches, f)), so no s^2-times-the-input copy of the windows
    is made. `patches` is returned as a read-only strided view holding exactly
    extract_patches(X, s)'s values and shape, over a buffer of s column-shifted images
    (s * n * m values per image: 4.3x the input for the article, not 18.4x).
    """
    f, W, b = check_params(params, _required("X", X))
    buf = _Arena(f, X, backward=False)
    return _forward(f, W, b, X, conv._images(X, out=buf.images), buf)


def _forward(f, W, b, X, images, buf):
    Z1 = conv._conv_forward_images(images, f, out=buf.Z1)
    A1 = activations._sigmoid(Z1, out=buf.A1)
    Z2 = dense._dense_forward(flatten._flatten(A1), W, b)
    O = activations._sigmoid(Z2)
    P = patches._patches_view_images(images, f.shape[0], out=buf.shifted)
    return Tensors(X=X, patches=P, Z1=Z1, A1=A1, Z2=Z2, O=O)


class _Arena:
    """The large arrays of one call, carved out of ONE allocation.

    A step makes ~8 arrays the size of Z1 or larger; allocated one by one, the C allocator
    hands their memory back to the OS after every step and takes it again (page faults cost
    more than the arithmetic at batch 200 here). One block is recycled whole instead (and
    gets NumPy's huge-page advice once it is >= 4 MiB). The arrays returned to the caller
    (Z1, A1, the patches buffer, dE_dA1, dE_dZ1) are disjoint C-contiguous views of it, so
    the block is freed when the last of them is.
    """

    def __init__(self, f, X=None, *, N=None, m=None, forward=True, backward=True):
        s, K = f.shape[0], f.shape[2]
        if X is not None:
            n, N = X.shape[0], X.shape[2]
            m = n - s + 1
        n = m + s - 1
        conv_map = (N, K, m * m)
        copy = X is not None and not X.transpose(2, 0, 1).flags.c_contiguous
        want = {"images": (N, n, n) if copy else None,
                "scratch": (2, min(N * K * m * m, activations.BLOCK))}   # for the E14 chain
        if forward:
            want.update(Z1=conv_map, A1=conv_map, shifted=(N, s, n, m))
        if backward:
            want.update(dE_dA1=conv_map, dE_dZ1=conv_map, work=conv._grad_work_shape(n, s, K))
        align = max(1, 64 // f.dtype.itemsize)          # every view starts on 64 bytes
        sizes = {k: -(-int(np.prod(v)) // align) * align for k, v in want.items() if v}
        block = np.empty(sum(sizes.values()), dtype=f.dtype)
        start = 0
        for name in ("images", "scratch", "Z1", "A1", "shifted", "dE_dA1", "dE_dZ1", "work"):
            view = None
            if want.get(name):
                view = block[start:start + int(np.prod(want[name]))].reshape(want[name])
                start += sizes[name]
            setattr(self, name, view)


def backward(params, cache, y: np.ndarray, reduction: str = "sum") -> Tensors:
    """E7..E16: the loss E and every derivative, each in the shape of what it differentiates.

    dE_dO, dO_dZ2, dE_dZ2: (1, N); dE_dW: (F, 1); dE_db: (1,); dE_dA1, dE_dZ1: (N, K, P);
    dE_df: (s, s, K). `cache` is forward()'s result. E16 is summed over the images
    cache['X'] when the cache has them (its form in the article, and what forward()
    returns); only a cache without X is read through cache['patches'].
    """
    f, W, b = check_params(params)
    mapping("cache", cache, ("A1", "O"))
    O = float_array("cache['O']", cache["O"], (1, None), dtype=f.dtype)
    A1 = float_array("cache['A1']", cache["A1"], (O.shape[1], f.shape[2], None), dtype=f.dtype)
    s, N, K = f.shape[0], O.shape[1], f.shape[2]
    images = P = None
    if "X" in cache:
        X = float_array("cache['X']", cache["X"], (None, None, N), dtype=f.dtype)
        if X.shape[0] != X.shape[1] or X.shape[0] < s or (X.shape[0] - s + 1) ** 2 != A1.shape[2]:
            raise ValueError(f"cache['X'] must hold square images (n, n, {N}) with "
                             f"(n - {s} + 1)^2 = {A1.shape[2]} windows for A1 of shape "
                             f"{A1.shape}, got {X.shape}")
    else:
        mapping("cache", cache, ("patches", "A1", "O"))
        P = float_array("cache['patches']", cache["patches"], (N, A1.shape[2], s, s),
                        dtype=f.dtype)
    if W.shape[0] != K * A1.shape[2]:
        raise ValueError(f"params['W'] must have {K * A1.shape[2]} rows for A1 of "
                         f"shape {A1.shape}, got {W.shape}")
    y = float_array("y", y, O.shape, dtype=O.dtype)
    reduction = choice("reduction", reduction, loss.REDUCTIONS)
    if P is None:
        buf = _Arena(f, X, forward=False)
        images = conv._images(X, out=buf.images)
    else:
        buf = _Arena(f, N=N, m=math.isqrt(A1.shape[2]), forward=False)
    return _backward(W, s, O, A1, y, reduction, images, P, buf)


def _backward(W, s, O, A1, y, reduction, images, P, buf):
    E = loss.half_squared_error(O, y, reduction)
    dE_dO = loss._loss_grad_output(O, y, reduction)
    dO_dZ2 = O * (1 - O)
    dE_dZ2 = dE_dO * dO_dZ2
    A1_flat = flatten._flatten(A1)
    dE_dW = dense._dense_grad_weights(A1_flat, dE_dZ2)
    dE_db = dense._dense_grad_bias(dE_dZ2)
    dE_dA1, dE_dZ1 = _conv_deltas(W, dE_dZ2, A1, buf)
    if images is not None:
        dE_df = conv._conv_grad_filter_images(images, dE_dZ1, s, work=buf.work)
    else:
        dE_df = conv._conv_grad_filter(P, dE_dZ1)
    return Tensors(E=E, dE_dO=dE_dO, dO_dZ2=dO_dZ2, dE_dZ2=dE_dZ2, dE_dW=dE_dW, dE_db=dE_db,
                   dE_dA1=dE_dA1, dE_dZ1=dE_dZ1, dE_df=dE_df)


def _conv_deltas(W, dE_dZ2, A1, buf):
    """E13 + unflatten, then E14: dE_dA1 and dE_dZ1 = dE_dA1 * (A1 * (1 - A1)), (N, K, P).

    dE_dA1[n, k, p] = W[k * P + p] * dE_dZ2[n]: the entries of the outer product W . dE_dZ2
    (one product each, as the matrix product gives them), written directly in A1's layout.
    Evaluated over blocks of images (activations.BLOCK values each) so that 1 - A1 and its
    product stay in cache: same operations, same order, same values as the whole-array form.
    """
    N, K, P = A1.shape
    F = K * P
    A1 = A1.reshape(N, F)
    dz2, w = dE_dZ2.reshape(N, 1), W.reshape(1, F)
    dE_dA1, dE_dZ1 = buf.dE_dA1.reshape(N, F), buf.dE_dZ1.reshape(N, F)
    rows = max(1, activations.BLOCK // F)                 # images per block
    if min(rows, N) * F <= buf.scratch.size:
        scratch = buf.scratch.reshape(-1)[:min(rows, N) * F].reshape(-1, F)
    else:                                                 # images wider than 2 BLOCKs
        scratch = np.empty((min(rows, N), F), dtype=A1.dtype)
    for start in range(0, N, rows):
        r = slice(start, start + rows)
        a = A1[r]
        t = scratch[:a.shape[0]]
        np.multiply(dz2[r], w, out=dE_dA1[r])
        np.subtract(1, a, out=t)
        np.multiply(a, t, out=t)
        np.multiply(dE_dA1[r], t, out=dE_dZ1[r])
    return dE_dA1.reshape(N, K, P), dE_dZ1.reshape(N, K, P)


def sgd_step(params, grads, lr: float) -> Tensors:
    """E17 for every parameter: returns the new f, W, b (same shapes and dtype)."""
    f, W, b = check_params(params)
    mapping("grads", grads, ("dE_df", "dE_dW", "dE_db"))
    for name, param in (("dE_df", f), ("dE_dW", W), ("dE_db", b)):
        float_array(f"grads[{name!r}]", grads[name], param.shape, dtype=param.dtype)
    return Tensors(f=sgd_update(f, grads["dE_df"], lr), W=sgd_update(W, grads["dE_dW"], lr),
                   b=sgd_update(b, grads["dE_db"], lr))


def train_step(params, X, y, lr: float = 0.1, reduction: str = "sum") -> Tensors:
    """forward + backward + update: every named tensor of one step, incl. f_new, W_new, b_new."""
    # Validated once here, then the same kernels as forward() and backward() run on the
    # checked arrays (the images are laid out once for both convolutions).
    f, W, b = check_params(params, _required("X", X))
    y = float_array("y", y, (1, X.shape[2]), dtype=f.dtype)
    reduction = choice("reduction", reduction, loss.REDUCTIONS)
    lr = update._learning_rate(lr)
    buf = _Arena(f, X)
    images = conv._images(X, out=buf.images)
    cache = _forward(f, W, b, X, images, buf)
    g = _backward(W, f.shape[0], cache.O, cache.A1, y, reduction, images, None, buf)
    return Tensors(f=f, W=W, b=b, **cache, **g, f_new=update._sgd_update(f, g.dE_df, lr),
                   W_new=update._sgd_update(W, g.dE_dW, lr),
                   b_new=update._sgd_update(b, g.dE_db, lr))

"""Every layout conversion between the article layout and the frameworks', in one place.

The article layout is canonical. Its images and filters are both transposed by the
published code's `.T`, so the article's convolution is the *transpose* of the framework
one, and its flatten order (filter k, then window p = i * m + j) differs from both NCHW and
NHWC flatten orders. Derivation, with img_n the original image (row r, column c):

    article X[a, b, n]   = img_n[b, a]                      (X = x_train.T)
    article Z1[n, k, i*m + j] = sum_uv img_n[j + v, i + u] * f[u, v, k]
    torch   out[n, k, r, c]   = sum_ab img_n[r + a, c + b] * w[k, 0, a, b]
    => r = j, c = i, a = v, b = u:  w[k, 0, v, u] = f[u, v, k],  Z1[n, k, i*m + j] = out[n, k, j, i]

TensorFlow's NHWC / HWIO are the same with channels last. The dense weights follow the
features: article row k * P + i * m + j is torch row k * P + j * m + i and keras row
(j * m + i) * K + k. Every function below is a pure re-indexing (no arithmetic), asserts
its shapes, and has an inverse; the tests check each round trip.
"""

from __future__ import annotations

import math

import numpy as np

from reference._validate import choice, float_array, positive_int


def _filters(n_filters, rows: int, what: str) -> int:
    K = positive_int("n_filters", n_filters)
    if rows % K:
        raise ValueError(f"{what} has {rows} entries, not a multiple of n_filters={K}")
    return K


def _side(P: int, what: str) -> int:
    m = math.isqrt(P)
    if m * m != P:
        raise ValueError(f"{what} must have a square number of windows P = m * m, got P = {P}")
    return m


# --- images: article (n, n, N) <-> torch (N, 1, n, n) <-> TF (N, n, n, 1) -------------


def images_to_nchw(X):
    X = float_array("X", X, (None, None, None))
    return np.ascontiguousarray(X.transpose(2, 1, 0)[:, None])  # (N, 1, n, n)


def nchw_to_images(x):
    x = float_array("x", x, (None, 1, None, None))
    return np.ascontiguousarray(x[:, 0].transpose(2, 1, 0))  # (n, n, N)


def images_to_nhwc(X):
    X = float_array("X", X, (None, None, None))
    return np.ascontiguousarray(X.transpose(2, 1, 0)[..., None])  # (N, n, n, 1)


def nhwc_to_images(x):
    x = float_array("x", x, (None, None, None, 1))
    return np.ascontiguousarray(x[..., 0].transpose(2, 1, 0))  # (n, n, N)


# --- filters: article (s, s, K) <-> torch OIHW (K, 1, s, s) <-> TF HWIO (s, s, 1, K) ----


def filters_to_oihw(f):
    f = float_array("f", f, (None, None, None))
    return np.ascontiguousarray(f.transpose(2, 1, 0)[:, None])  # w[k,0,v,u] = f[u,v,k]


def oihw_to_filters(w):
    w = float_array("w", w, (None, 1, None, None))
    return np.ascontiguousarray(w[:, 0].transpose(2, 1, 0))  # (s, s, K)


def filters_to_hwio(f):
    f = float_array("f", f, (None, None, None))
    return np.ascontiguousarray(f.transpose(1, 0, 2)[:, :, None, :])  # kern[v,u,0,k] = f[u,v,k]


def hwio_to_filters(kern):
    kern = float_array("kern", kern, (None, None, 1, None))
    return np.ascontiguousarray(kern[:, :, 0, :].transpose(1, 0, 2))  # (s, s, K)


# --- conv maps: article (N, K, P) <-> torch (N, K, m, m) <-> TF (N, m, m, K) --------------


def conv_map_to_nchw(Z):
    Z = float_array("Z", Z, (None, None, None))
    N, K, P = Z.shape
    m = _side(P, "Z")
    return np.ascontiguousarray(Z.reshape(N, K, m, m).transpose(0, 1, 3, 2))  # out[n,k,j,i]


def nchw_to_conv_map(z):
    z = float_array("z", z, (None, None, None, None))
    N, K, m, m2 = z.shape
    if m != m2:
        raise ValueError(f"z must be a square conv map (N, K, m, m), got shape {z.shape}")
    return np.ascontiguousarray(z.transpose(0, 1, 3, 2)).reshape(N, K, m * m)


def conv_map_to_nhwc(Z):
    Z = float_array("Z", Z, (None, None, None))
    N, K, P = Z.shape
    m = _side(P, "Z")
    return np.ascontiguousarray(Z.reshape(N, K, m, m).transpose(0, 3, 2, 1))  # out[n,j,i,k]


def nhwc_to_conv_map(z):
    z = float_array("z", z, (None, None, None, None))
    N, m, m2, K = z.shape
    if m != m2:
        raise ValueError(f"z must be a square conv map (N, m, m, K), got shape {z.shape}")
    return np.ascontiguousarray(z.transpose(0, 3, 2, 1)).reshape(N, K, m * m)


# --- dense weights: article W (K*P, 1) <-> torch Linear.weight (1, K*P) <-> keras (K*P, 1)
# The rows of W are a conv map of one "image" (k, p), so they reuse the maps above.


def dense_weights_to_torch(W, n_filters: int):
    W = float_array("W", W, (None, 1))
    n_filters = _filters(n_filters, W.shape[0], "W")
    _side(W.shape[0] // n_filters, "W")
    rows = conv_map_to_nchw(W.reshape(1, n_filters, -1))  # (1, K, m, m), NCHW flatten order
    return rows.reshape(1, -1)  # Linear.weight (out=1, in=F)


def torch_to_dense_weights(w, n_filters: int):
    w = float_array("w", w, (1, None))
    n_filters = _filters(n_filters, w.shape[1], "w")
    m = _side(w.shape[1] // n_filters, "w")
    return nchw_to_conv_map(w.reshape(1, n_filters, m, m)).reshape(-1, 1)


def dense_weights_to_keras(W, n_filters: int):
    W = float_array("W", W, (None, 1))
    n_filters = _filters(n_filters, W.shape[0], "W")
    _side(W.shape[0] // n_filters, "W")
    return conv_map_to_nhwc(W.reshape(1, n_filters, -1)).reshape(-1, 1)  # (F, 1) NHWC order


def keras_to_dense_weights(kern, n_filters: int):
    kern = float_array("kern", kern, (None, 1))
    n_filters = _filters(n_filters, kern.shape[0], "kern")
    m = _side(kern.shape[0] // n_filters, "kern")
    return nhwc_to_conv_map(kern.reshape(1, m, m, n_filters)).reshape(-1, 1)


# --- per-image vectors: article (1, N) <-> frameworks (N, 1) ---------------------------


def row_to_column(v):
    v = float_array("v", v, (1, None))
    return np.ascontiguousarray(v.T)  # (N, 1)


def column_to_row(v):
    v = float_array("v", v, (None, 1))
    return np.ascontiguousarray(v.T)  # (1, N)


# --- patches: torch F.unfold (N, s*s, P_torch) -> article (N, P, s, s) -----------------


def unfold_to_patches(cols, size: int):
    """torch.nn.functional.unfold on NCHW images -> article patches.

    unfold gives cols[n, a*s + b, r*m + c] = img_n[r + a, c + b]; the article window
    p = i*m + j holds X[i + u, j + v, n] = img_n[j + v, i + u]: r = j, c = i, a = v, b = u.
    """
    size = positive_int("size", size)
    cols = float_array("cols", cols, (None, size * size, None))
    N, _, P = cols.shape
    m = _side(P, "cols")
    c = cols.reshape(N, size, size, m, m)  # [n, a, b, r, c] = [n, v, u, j, i]
    return np.ascontiguousarray(c.transpose(0, 4, 3, 2, 1)).reshape(N, P, size, size)


def patches_to_unfold(patches):
    patches = float_array("patches", patches, (None, None, None, None))
    N, P, s, s2 = patches.shape
    if s != s2:
        raise ValueError(f"patches must have square windows (N, P, s, s), got {patches.shape}")
    m = _side(P, "patches")
    c = patches.reshape(N, m, m, s, s).transpose(0, 4, 3, 2, 1)  # [n, v, u, j, i]
    return np.ascontiguousarray(c).reshape(N, s * s, P)


def extract_patches_to_patches(cols, size: int):
    """tf.image.extract_patches on NHWC images, (N, m, m, s*s) -> article patches.

    It gives cols[n, r, c, a*s + b] = img_n[r + a, c + b]; as for unfold, r = j, c = i,
    a = v, b = u.
    """
    size = positive_int("size", size)
    cols = float_array("cols", cols, (None, None, None, size * size))
    N, m, m2, _ = cols.shape
    if m != m2:
        raise ValueError(f"cols must hold square maps (N, m, m, size^2), got shape {cols.shape}")
    c = cols.reshape(N, m, m, size, size)  # [n, r, c, a, b] = [n, j, i, v, u]
    return np.ascontiguousarray(c.transpose(0, 2, 1, 4, 3)).reshape(N, m * m, size, size)


def patches_to_extract_patches(patches):
    """article patches -> tf.image.extract_patches' (N, m, m, s*s) (inverse of the above)."""
    patches = float_array("patches", patches, (None, None, None, None))
    N, P, s, s2 = patches.shape
    if s != s2:
        raise ValueError(f"patches must have square windows (N, P, s, s), got {patches.shape}")
    m = _side(P, "patches")
    c = patches.reshape(N, m, m, s, s).transpose(0, 2, 1, 4, 3)  # [n, j, i, v, u]
    return np.ascontiguousarray(c).reshape(N, m, m, s * s)


# --- whole steps: an implementation that works in a framework's layout -------------------
#
# A bring-your-own implementation declares LAYOUT = "article" (default), "nchw" (torch's:
# X (N, 1, n, n), f (K, 1, s, s), W as nn.Linear's weight (1, F) in NCHW flatten order,
# Z1/A1 (N, K, m, m), per-image vectors (N, 1), patches as F.unfold's (N, s*s, P)) or
# "nhwc" (TensorFlow's: X (N, n, n, 1), f HWIO (s, s, 1, K), W as keras Dense's kernel
# (F, 1) in NHWC flatten order, Z1/A1 (N, m, m, K), patches as tf.image.extract_patches'
# (N, m, m, s*s)). Gradients and updated parameters have their tensor's layout; b, dE_db,
# b_new and E are the same everywhere.

LAYOUTS = ("article", "nchw", "nhwc")


def _named_arrays(name: str, tensors) -> None:
    if not isinstance(tensors, dict) or not all(isinstance(k, str) for k in tensors):
        raise TypeError(f"{name} must be a dict of tensor names to arrays, got {type(tensors).__name__}")


CONVERTED = (
    "X",
    "y",
    "f",
    "W",
    "b",
    "patches",
    "Z1",
    "A1",
    "Z2",
    "O",
    "E",
    "dE_dO",
    "dO_dZ2",
    "dE_dZ2",
    "dE_dW",
    "dE_db",
    "dE_dA1",
    "dE_dZ1",
    "dE_df",
    "f_new",
    "W_new",
    "b_new",
)


def _converters(layout: str, n_filters: int, size: int) -> dict:
    """name -> (article -> layout, layout -> article)."""
    choice("layout", layout, LAYOUTS)
    n_filters, size = positive_int("n_filters", n_filters), positive_int("size", size)
    same = (np.asarray, np.asarray)
    if layout == "article":
        return dict.fromkeys(CONVERTED, same)
    column = (row_to_column, column_to_row)
    if layout == "nchw":
        image, filt, cmap = (
            (images_to_nchw, nchw_to_images),
            (filters_to_oihw, oihw_to_filters),
            (conv_map_to_nchw, nchw_to_conv_map),
        )
        dense = (
            lambda W: dense_weights_to_torch(W, n_filters),
            lambda w: torch_to_dense_weights(w, n_filters),
        )
        windows = (patches_to_unfold, lambda c: unfold_to_patches(c, size))
    else:
        image, filt, cmap = (
            (images_to_nhwc, nhwc_to_images),
            (filters_to_hwio, hwio_to_filters),
            (conv_map_to_nhwc, nhwc_to_conv_map),
        )
        dense = (
            lambda W: dense_weights_to_keras(W, n_filters),
            lambda k: keras_to_dense_weights(k, n_filters),
        )
        windows = (patches_to_extract_patches, lambda c: extract_patches_to_patches(c, size))
    kinds = {
        "X": image,
        "patches": windows,
        "f": filt,
        "dE_df": filt,
        "f_new": filt,
        "W": dense,
        "dE_dW": dense,
        "W_new": dense,
        "b": same,
        "dE_db": same,
        "b_new": same,
        "E": same,
        "Z1": cmap,
        "A1": cmap,
        "dE_dA1": cmap,
        "dE_dZ1": cmap,
    }
    return {name: kinds.get(name, column) for name in CONVERTED}


def to_layout(tensors: dict, layout: str, n_filters: int, size: int) -> dict:
    """Article-layout tensors in `layout` (names it does not know pass unchanged)."""
    conv = _converters(layout, n_filters, size)
    _named_arrays("tensors", tensors)
    return {k: conv[k][0](v) if k in conv else v for k, v in tensors.items()}


def from_layout(tensors: dict, layout: str, n_filters: int, size: int) -> tuple[dict, list]:
    """`layout` tensors in the article layout, and the names that could not be converted
    (a wrong shape or dtype: those are returned as they came, for the contract check)."""
    conv = _converters(layout, n_filters, size)
    _named_arrays("tensors", tensors)
    out, failed = {}, []
    for k, v in tensors.items():
        if k not in conv:
            out[k] = v
            continue
        try:
            out[k] = conv[k][1](v)
        except (TypeError, ValueError):
            out[k], failed = v, [*failed, k]
    return out, failed


# --- any channel count: NCHW <-> NHWC maps, OIHW <-> HWIO filters --------------------------
# The batch-first networks (reference/network.py) keep NCHW maps and OIHW filters
# (C_out, C_in, k, k); TensorFlow runs NHWC with HWIO filters (k, k, C_in, C_out).


def nchw_to_nhwc(x):
    x = float_array("x", x, (None, None, None, None))
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (N, H, W, C)


def nhwc_to_nchw(x):
    x = float_array("x", x, (None, None, None, None))
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W)


def oihw_to_hwio(w):
    w = float_array("w", w, (None, None, None, None))
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # kern[a, b, i, o] = w[o, i, a, b]


def hwio_to_oihw(kern):
    kern = float_array("kern", kern, (None, None, None, None))
    return np.ascontiguousarray(kern.transpose(3, 2, 0, 1))  # (C_out, C_in, k, k)

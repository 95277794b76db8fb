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

from reference._validate import float_array, positive_int


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

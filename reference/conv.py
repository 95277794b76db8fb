"""Stage 2 of the article: the convolution layer, forward (E1) and filter gradient (E15, E16)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from reference._validate import float_array


def conv_forward(patches: np.ndarray, f: np.ndarray) -> np.ndarray:
    """E1: Z1 = X * f, a cross-correlation (the filter is not flipped).

    Z1[n, k, p] = sum over (u, v) of patches[n, p, u, v] * f[u, v, k].
    patches: (N, P, s, s); f: (s, s, K) -> Z1: (N, K, P). Article: (200, 3, 576).
    """
    patches = float_array("patches", patches, (None, None, None, None))
    s = patches.shape[2]
    if patches.shape[3] != s:
        raise ValueError(f"patches must have square windows (N, P, s, s), got {patches.shape}")
    f = float_array("f", f, (s, s, None), dtype=patches.dtype)
    return _conv_forward(patches, f)


def _conv_forward(patches, f):
    N, P, s, _ = patches.shape
    K = f.shape[2]
    # One BLAS product (N*P, s*s) @ (s*s, K) instead of a loop over windows.
    z = patches.reshape(N * P, s * s) @ f.reshape(s * s, K)
    return np.ascontiguousarray(z.reshape(N, P, K).transpose(0, 2, 1))


def conv_local_gradient(patches: np.ndarray) -> np.ndarray:
    """E15: dZ1/df = X: dZ1[n, k, p] / df[u, v, k] = patches[n, p, u, v].

    The article's text mistypes this as "differentiating Z with respect to X". The Jacobian
    block is the input window itself, so this returns `patches` (N, P, s, s) unchanged; it
    exists so the audit can name the function that states E15.
    """
    return float_array("patches", patches, (None, None, None, None))


def conv_grad_filter(patches: np.ndarray, dE_dZ1: np.ndarray) -> np.ndarray:
    """E16: dE/df = delta1 convolved with X (not multiplied by it).

    dE_df[u, v, k] = sum over n, p of dE_dZ1[n, k, p] * patches[n, p, u, v]
    patches: (N, P, s, s); dE_dZ1: (N, K, P) -> dE_df: (s, s, K), f's shape.
    Each entry is a sum of N * P products (115,200 for the article).
    """
    patches = float_array("patches", patches, (None, None, None, None))
    N, P, s, _ = patches.shape
    dE_dZ1 = float_array("dE_dZ1", dE_dZ1, (N, None, P), dtype=patches.dtype)
    return _conv_grad_filter(patches, dE_dZ1)


def _conv_grad_filter(patches, dE_dZ1):
    N, P, s, _ = patches.shape
    K = dE_dZ1.shape[1]
    # (s*s, N*P) @ (N*P, K): one BLAS product over all images and windows.
    delta = np.ascontiguousarray(dE_dZ1.transpose(0, 2, 1)).reshape(N * P, K)
    return (patches.reshape(N * P, s * s).T @ delta).reshape(s, s, K)


# --- Kernels on the images themselves (the model's fast path) ---------------------------
#
# `patches` holds every window of every image: s^2 m^2 values per image (14,400 for the
# article, 18x the image). The kernels below compute the same E1 and E16 sums from the
# images directly, as BLAS products with a banded ("Toeplitz") form of the filters:
#
#   Z1[N, k, i, j] = sum over u, b of rows_i[N, (u, b)] * T[k, j, (u, b)]
#   rows_i[N, (u, b)] = X[i + u, b, N]          (output row i reads s whole image rows)
#   T[k, j, (u, b)]   = f[u, b - j, k] if 0 <= b - j < s, else 0
#
# rows_i is a strided view of the images (no copy) and T is tiny (K x m x s*n), so nothing
# larger than Z1 is ever allocated. The price is arithmetic on the zeros of T (n/s = 5.6x
# the products of E1 for the article), which BLAS does faster than a copy of the patches
# can be written. Every sum has exactly the terms of E1 / E16 (the extra terms are exact
# zeros), only in another order: results agree with the patch form to rounding.


def _images(X, out=None):
    """(n, n, N) article layout -> (N, n, n) C-contiguous, images[N, a, b] = X[a, b, N].

    Free for an X already laid out that way, else one small copy (into `out` if given).
    """
    images = X.transpose(2, 0, 1)
    if images.flags.c_contiguous:
        return images
    if out is None:
        return np.ascontiguousarray(images)
    np.copyto(out, images)
    return out


def _row_windows(images, s):
    """rows[i, N, u * n + b] = images[N, i + u, b]: (m, N, s * n), a view (no copy)."""
    N, n, _ = images.shape
    t = images.strides
    return as_strided(images, (n - s + 1, N, s * n), (t[1], t[0], t[2]), writeable=False)


def _banded_filters(f, n):
    """T[k, j, u, b] = f[u, b - j, k] for 0 <= b - j < s, else 0; shape (K, m, s, n)."""
    s, _, K = f.shape
    T = np.zeros((K, n - s + 1, s, n), dtype=f.dtype)
    t = T.strides
    # T[k, j, u, j + v] for all k, j, u, v is one strided view: fill it with f[u, v, k].
    band = as_strided(T, (K, n - s + 1, s, s), (t[0], t[1] + t[3], t[2], t[3]))
    band[...] = f.transpose(2, 0, 1)[:, None]
    return T


def _conv_forward_images(images, f, out=None):
    """E1 from the images: (N, n, n) and f (s, s, K) -> Z1 (N, K, m * m) (into `out`)."""
    N, n, _ = images.shape
    s, _, K = f.shape
    m = n - s + 1
    T = _banded_filters(f, n).reshape(K, m, s * n)
    Z1 = np.empty((N, K, m, m), dtype=images.dtype) if out is None else out.reshape(N, K, m, m)
    # One BLAS product (N, s*n) @ (s*n, m) per output row i and filter k, written in place
    # into Z1 (viewed as [i, k, N, j]); numpy runs the m*K products in C.
    np.matmul(_row_windows(images, s)[:, None], T.transpose(0, 2, 1)[None],
              out=Z1.transpose(2, 1, 0, 3))
    return Z1.reshape(N, K, m * m)


def _grad_work_shape(n, s, K):
    """Shape of the scratch `work` that _conv_grad_filter_images may be given."""
    return (n - s + 1, K, n - s + 1, s * n)


def _conv_grad_filter_images(images, dE_dZ1, s, work=None):
    """E16 from the images: (N, n, n), dE_dZ1 (N, K, m * m) -> dE_df (s, s, K).

    G[k, j, (u, b)] = sum over i, N of dE_dZ1[N, k, i, j] * images[N, i + u, b] (the
    transpose of the forward product), then dE_df[u, v, k] = sum over j of G[k, j, u, j + v].
    """
    N, n, _ = images.shape
    K = dE_dZ1.shape[1]
    m = n - s + 1
    delta = dE_dZ1.reshape(N, K, m, m).transpose(2, 1, 3, 0)              # [i, k, j, N]
    G = np.matmul(delta, _row_windows(images, s)[:, None], out=work)      # (m, K, m, s*n)
    G = G.sum(axis=0)                                                     # (K, m, s*n)
    G = G.reshape(K, m, s, n)
    g = G.strides
    band = as_strided(G, (K, m, s, s), (g[0], g[1] + g[3], g[2], g[3]))   # [k, j, u, v]
    return np.ascontiguousarray(band.sum(axis=1).transpose(1, 2, 0))

"""Max pooling (X6) and average pooling (X7), forward and backward, without padding.

Batch-first NCHW: X (N, C, H, W) -> A (N, C, H_out, W_out), each channel pooled on its own,
H_out = floor((H - k) / stride) + 1 (X2 with p = 0), stride k by default. No padding, as
the spec says: with padding the frameworks disagree on average pooling (torch counts the
padded zeros, TensorFlow 'SAME' does not). Windows may overlap (stride < k); an element in
several windows then sums the gradient it receives from each.
"""

from __future__ import annotations

import numpy as np

from reference._validate import float_array, positive_int
from reference.layers.conv2d import _shape4, _windows, output_side


def max_pool_forward(X: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
    """X6: A[n, c, i, j] = max over u, v < k of X[n, c, s i + u, s j + v].

    X: (N, C, H, W) -> A: (N, C, H_out, W_out), H_out = floor((H - k) / stride) + 1.
    No arithmetic: every A entry is one of X's values.
    """
    X, k, stride = _check(X, k, stride)
    return np.ascontiguousarray(_windows(X, k, stride).max(axis=(4, 5)))


def max_pool_backward(X: np.ndarray, dA: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
    """X6: dE/dX[n, c, s i + u*, s j + v*] += dA[n, c, i, j], (u*, v*) the position of the
    window's maximum; every other element of the window gets nothing from it.

    Ties go to the FIRST maximum in row-major order of the window (u, then v), as torch and
    TensorFlow do on the CPU: a window of equal values (all zeros after a ReLU) sends its
    whole delta to its top-left element, never shared or copied to every maximum.
    X: (N, C, H, W), the pool's input; dA: (N, C, H_out, W_out) -> dX: (N, C, H, W).
    """
    X, k, stride = _check(X, k, stride)
    N, C, H_out, W_out = _out_shape(X.shape, k, stride)
    dA = float_array("dA", dA, (N, C, H_out, W_out), dtype=X.dtype)
    # np.argmax returns the first occurrence: the frameworks' tie rule, with no extra step.
    first = _windows(X, k, stride).reshape(N, C, H_out, W_out, k * k).argmax(axis=-1)
    rows = stride * np.arange(H_out)[:, None] + first // k
    cols = stride * np.arange(W_out)[None, :] + first % k
    n = np.arange(N)[:, None, None, None]
    c = np.arange(C)[None, :, None, None]
    dX = np.zeros_like(X)
    np.add.at(dX, (n, c, rows, cols), dA)  # unbuffered: overlapping windows accumulate
    return dX


def avg_pool_forward(X: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
    """X7: A[n, c, i, j] = (1 / k^2) sum over u, v < k of X[n, c, s i + u, s j + v].

    X: (N, C, H, W) -> A: (N, C, H_out, W_out), H_out = floor((H - k) / stride) + 1.
    Each entry is a sum of k^2 values and one division.
    """
    X, k, stride = _check(X, k, stride)
    return np.ascontiguousarray(_windows(X, k, stride).sum(axis=(4, 5)) / (k * k))


def avg_pool_backward(dA: np.ndarray, x_shape: tuple, k: int, stride: int | None = None) -> np.ndarray:
    """X7: dE/dX[n, c, s i + u, s j + v] += dA[n, c, i, j] / k^2 for every u, v < k.

    dA: (N, C, H_out, W_out); x_shape: the pool input's shape (N, C, H, W)
    -> dX: (N, C, H, W), dA's dtype. Elements no window covers (stride remainder) get 0.
    """
    x_shape = _shape4("x_shape", x_shape)
    dA = float_array("dA", dA, (None, None, None, None))
    k, stride = _geometry(x_shape, k, stride)
    N, C, H_out, W_out = _out_shape(x_shape, k, stride)
    dA = float_array("dA", dA, (N, C, H_out, W_out))
    u = np.arange(k)
    rows = (stride * np.arange(H_out))[:, None, None, None] + u[None, None, :, None]
    cols = (stride * np.arange(W_out))[None, :, None, None] + u[None, None, None, :]
    share = np.broadcast_to((dA / (k * k))[..., None, None], (N, C, H_out, W_out, k, k))
    dX = np.zeros(x_shape, dtype=dA.dtype)
    np.add.at(dX, (slice(None), slice(None), rows, cols), share)
    return dX


def _check(X, k, stride):
    X = float_array("X", X, (None, None, None, None))
    return (X, *_geometry(X.shape, k, stride))


def _geometry(shape, k, stride):
    """k and stride (default k) checked against an input of `shape` (N, C, H, W)."""
    k = positive_int("k", k)
    stride = k if stride is None else positive_int("stride", stride)
    output_side(shape[2], k, stride)  # raises, naming k, when the window does not fit
    output_side(shape[3], k, stride)
    return k, stride


def _out_shape(shape, k, stride):
    N, C, H, W = shape
    return N, C, (H - k) // stride + 1, (W - k) // stride + 1

"""The general convolution layer (X1..X5): channels, stride, zero padding, optional bias.

Batch-first NCHW: X (N, C_in, H, W), filters F (C_out, C_in, k, k), bias b (C_out,),
Z (N, C_out, H_out, W_out). A cross-correlation, as in the article (E1) and in both
frameworks: the filter is not flipped. Each forward function sits beside its derivatives.
The output side is X2's floor((n + 2p - k) / s) + 1: a remainder is dropped, as both
frameworks do, and the dropped rows and columns get a zero input gradient.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from reference._validate import float_array, positive_int


def output_side(n: int, k: int, stride: int = 1, pad: int = 0) -> int:
    """X2: windows start every `stride` pixels: side = floor((n + 2 pad - k) / stride) + 1.

    n: input side; k: window side; pad: zeros added on each side (X1). Raises, naming `k`,
    when the window does not fit the padded input (the side would be below 1).
    """
    n = positive_int("n", n)
    k = positive_int("k", k)
    stride = positive_int("stride", stride)
    pad = positive_int("pad", pad, minimum=0)
    if k > n + 2 * pad:
        raise ValueError(
            f"k={k} does not fit the padded input: side n + 2*pad = {n} + 2*{pad} = {n + 2 * pad}"
        )
    return (n + 2 * pad - k) // stride + 1


def pad_input(X: np.ndarray, pad: int) -> np.ndarray:
    """X1: Xp = X surrounded by `pad` zeros on every side of each image and channel.

    X: (N, C, H, W) -> Xp: (N, C, H + 2 pad, W + 2 pad), X's dtype. Symmetric, like torch's
    `padding=p` (TensorFlow's 'SAME' is not when the total is odd: mirror it with tf.pad).
    """
    X = float_array("X", X, (None, None, None, None))
    return _pad(X, positive_int("pad", pad, minimum=0))


def _pad(X, pad):
    if pad == 0:
        return X
    return np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def _windows(Xp, k, stride):
    """(N, C, Hp, Wp) -> the read-only view (N, C, H_out, W_out, k, k) of every window:
    window (i, j) is Xp[:, :, s i : s i + k, s j : s j + k]. No copy, no loop."""
    return sliding_window_view(Xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def conv2d_forward(
    X: np.ndarray, F: np.ndarray, b: np.ndarray | None = None, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """X1..X4: Z[n, o, i, j] = sum over c, u, v of F[o, c, u, v] Xp[n, c, s i + u, s j + v]
    + b[o] (X3; no bias term when b is None), Xp = X padded with `pad` zeros (X1).

    X: (N, C_in, H, W); F: (C_out, C_in, k, k); b: (C_out,) or None
    -> Z: (N, C_out, H_out, W_out), H_out = floor((H + 2 pad - k) / stride) + 1 (X2).
    Each entry is a sum of C_in k^2 products (plus the bias).
    """
    X, F, b, stride, pad = _check_forward(X, F, b, stride, pad)
    Z = np.einsum("nchwuv,ocuv->nohw", _windows(_pad(X, pad), F.shape[2], stride), F, optimize=True)
    if b is not None:
        Z += b[None, :, None, None]
    return np.ascontiguousarray(Z)


def conv2d_grad_bias(dZ: np.ndarray) -> np.ndarray:
    """X3: dE/db[o] = sum over n, i, j of dZ[n, o, i, j] (the bias enters every position).

    dZ: (N, C_out, H_out, W_out) -> db: (C_out,).
    """
    dZ = float_array("dZ", dZ, (None, None, None, None))
    return dZ.sum(axis=(0, 2, 3))


def conv2d_grad_filter(
    X: np.ndarray, dZ: np.ndarray, k: int, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """X4: dE/dF[o, c, u, v] = sum over n, i, j of dZ[n, o, i, j] Xp[n, c, s i + u, s j + v].

    Taken from the PADDED input Xp (X1): the zeros are real operands of the forward sum.
    X: (N, C_in, H, W); dZ: (N, C_out, H_out, W_out); k the filter side (it cannot be read
    from the shapes when stride > 1) -> dF: (C_out, C_in, k, k).
    Each entry is a sum of N H_out W_out products.
    """
    X = float_array("X", X, (None, None, None, None))
    k, stride, pad, (H_out, W_out) = _check_geometry(X, k, stride, pad)
    dZ = float_array("dZ", dZ, (X.shape[0], None, H_out, W_out), dtype=X.dtype)
    return np.einsum("nchwuv,nohw->ocuv", _windows(_pad(X, pad), k, stride), dZ, optimize=True)


def conv2d_grad_input(
    dZ: np.ndarray, F: np.ndarray, x_shape: tuple, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """X5: dE/dXp[n, c, s i + u, s j + v] += dZ[n, o, i, j] F[o, c, u, v] (summed over o, i, j,
    u, v); dE/dX = dE/dXp with the `pad` border cropped.

    Computed as X5's equivalent form: the full correlation of the stride-dilated delta
    (dZ[n, o, i, j] placed at (s i, s j), zeros between) with the flipped filters,
    F[o, c, k-1-u, k-1-v]. The dilated delta is padded with k - 1 zeros on the top/left and
    as many on the bottom/right as make the result Xp's size, so rows and columns the
    forward dropped (stride remainder) get zero.
    dZ: (N, C_out, H_out, W_out); F: (C_out, C_in, k, k); x_shape: X's shape (N, C_in, H, W)
    -> dX: (N, C_in, H, W), dZ's dtype.
    """
    F = float_array("F", F, (None, None, None, None))
    x_shape = _shape4("x_shape", x_shape)
    if x_shape[1] != F.shape[1]:
        raise ValueError(f"x_shape must have F's C_in={F.shape[1]} channels, got {x_shape}")
    _check_square("F", F)
    k = F.shape[2]
    N, C_in, H, W = x_shape
    stride = positive_int("stride", stride)
    pad = positive_int("pad", pad, minimum=0)
    H_out, W_out = output_side(H, k, stride, pad), output_side(W, k, stride, pad)
    dZ = float_array("dZ", dZ, (N, F.shape[0], H_out, W_out), dtype=F.dtype)
    Hp, Wp = H + 2 * pad, W + 2 * pad
    dilated = np.zeros((N, F.shape[0], Hp + k - 1, Wp + k - 1), dtype=dZ.dtype)
    rows = slice(k - 1, k + (H_out - 1) * stride, stride)  # dZ[:, :, i] lands on row k-1 + s i
    cols = slice(k - 1, k + (W_out - 1) * stride, stride)
    dilated[:, :, rows, cols] = dZ
    flipped = F[:, :, ::-1, ::-1]
    dXp = np.einsum("nohwuv,ocuv->nchw", _windows(dilated, k, 1), flipped, optimize=True)
    return np.ascontiguousarray(dXp[:, :, pad : pad + H, pad : pad + W])


def conv2d_backward(
    X: np.ndarray, F: np.ndarray, dZ: np.ndarray, stride: int = 1, pad: int = 0, bias: bool = True
) -> dict:
    """X3..X5 together: {"dX": X5, "dF": X4, "db": X3 (only when bias)} for Z = conv2d_forward.

    X: (N, C_in, H, W); F: (C_out, C_in, k, k); dZ: (N, C_out, H_out, W_out)
    -> dX (N, C_in, H, W), dF (C_out, C_in, k, k), db (C_out,).
    """
    X, F, _, stride, pad = _check_forward(X, F, None, stride, pad)
    grads = {
        "dX": conv2d_grad_input(dZ, F, X.shape, stride, pad),
        "dF": conv2d_grad_filter(X, dZ, F.shape[2], stride, pad),
    }
    if bias:
        grads["db"] = conv2d_grad_bias(dZ)
    return grads


# --- argument checks --------------------------------------------------------------------


def _check_square(name, F):
    if F.shape[2] != F.shape[3]:
        raise ValueError(f"{name} must have square k x k windows (C_out, C_in, k, k), got {F.shape}")


def _shape4(name, shape):
    if not isinstance(shape, tuple | list) or len(shape) != 4:
        raise TypeError(f"{name} must be a 4-tuple (N, C, H, W), got {shape!r}")
    N, C, H, W = shape
    return (
        positive_int(f"{name}[0] (N)", N),
        positive_int(f"{name}[1] (C)", C),
        positive_int(f"{name}[2] (H)", H),
        positive_int(f"{name}[3] (W)", W),
    )


def _check_geometry(X, k, stride, pad):
    """k, stride and pad checked against X (N, C, H, W); returns them and (H_out, W_out)."""
    k = positive_int("k", k)
    stride = positive_int("stride", stride)
    pad = positive_int("pad", pad, minimum=0)
    return (
        k,
        stride,
        pad,
        (output_side(X.shape[2], k, stride, pad), output_side(X.shape[3], k, stride, pad)),
    )


def _check_forward(X, F, b, stride, pad):
    X = float_array("X", X, (None, None, None, None))
    F = float_array("F", F, (None, X.shape[1], None, None), dtype=X.dtype)
    _check_square("F", F)
    if b is not None:
        b = float_array("b", b, (F.shape[0],), dtype=X.dtype)
    k, stride, pad, _ = _check_geometry(X, F.shape[2], stride, pad)
    return X, F, b, stride, pad

"""Stage 2 of the article: the convolution layer, forward (E1) and filter gradient (E15, E16)."""

from __future__ import annotations

import numpy as np

from reference._validate import float_array
from reference.trace import implements


@implements("E1")
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


@implements("E1")
def _conv_forward(patches, f):
    N, P, s, _ = patches.shape
    K = f.shape[2]
    # One BLAS product (N*P, s*s) @ (s*s, K) instead of a loop over windows.
    z = patches.reshape(N * P, s * s) @ f.reshape(s * s, K)
    return np.ascontiguousarray(z.reshape(N, P, K).transpose(0, 2, 1))


@implements("E15")
def conv_local_gradient(patches: np.ndarray) -> np.ndarray:
    """E15: dZ1/df = X: dZ1[n, k, p] / df[u, v, k] = patches[n, p, u, v].

    The article's text mistypes this as "differentiating Z with respect to X". The Jacobian
    block is the input window itself, so this returns `patches` (N, P, s, s) unchanged; it
    exists so the audit can name the function that states E15.
    """
    return float_array("patches", patches, (None, None, None, None))


@implements("E16")
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


@implements("E16")
def _conv_grad_filter(patches, dE_dZ1):
    N, P, s, _ = patches.shape
    K = dE_dZ1.shape[1]
    # (s*s, N*P) @ (N*P, K): one BLAS product over all images and windows.
    delta = np.ascontiguousarray(dE_dZ1.transpose(0, 2, 1)).reshape(N * P, K)
    return (patches.reshape(N * P, s * s).T @ delta).reshape(s, s, K)

"""Stage 1 of the article: every window of every image (E1's operand, E2's sizes)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from reference._validate import float_array, positive_int


def output_side(image_side: int, size: int) -> int:
    """E2: an (n, n) image and an (f, f) filter give an (n - f + 1, n - f + 1) output."""
    image_side = positive_int("image_side", image_side)
    size = positive_int("size", size)
    if size > image_side:
        raise ValueError(f"size must be <= the image side {image_side}, got {size}")
    return image_side - size + 1


def extract_patches(X: np.ndarray, size: int) -> np.ndarray:
    """E1 operand: every `size` x `size` window of every image, stride 1, no padding.

    X: (n, n, N) in the article layout (image i is X[:, :, i], transposed by the published
    code's `.T`). Returns patches (N, P, size, size) with P = m * m, m = n - size + 1 (E2),
    window p = i * m + j being X[i:i + size, j:j + size, image] (rows, then columns, of
    the stored array). For the article: (28, 28, 200) -> (200, 576, 5, 5).
    """
    X = float_array("X", X, (None, None, None))
    size = positive_int("size", size)
    if X.shape[0] != X.shape[1]:
        raise ValueError(f"X must hold square images (n, n, N), got shape {X.shape}")
    m = output_side(X.shape[0], size)
    return _extract_patches(X, size, m)


def _extract_patches(X: np.ndarray, size: int, m: int) -> np.ndarray:
    # The strided view costs nothing; the one copy makes windows contiguous for BLAS.
    windows = sliding_window_view(X, (size, size), axis=(0, 1))  # (m, m, N, size, size)
    out = np.empty((X.shape[2], m, m, size, size), dtype=X.dtype)
    np.copyto(out, windows.transpose(2, 0, 1, 3, 4))
    return out.reshape(X.shape[2], m * m, size, size)

"""Stage 1 of the article: every window of every image (E1's operand, E2's sizes)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from reference._validate import float_array, positive_int
from reference.trace import implements


@implements("E2")
def output_side(image_side: int, size: int) -> int:
    """E2: an (n, n) image and an (f, f) filter give an (n - f + 1, n - f + 1) output."""
    image_side = positive_int("image_side", image_side)
    size = positive_int("size", size)
    if size > image_side:
        raise ValueError(f"size must be <= the image side {image_side}, got {size}")
    return image_side - size + 1


@implements("E1")
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


@implements("E1")
def _extract_patches(X: np.ndarray, size: int, m: int) -> np.ndarray:
    # One contiguous copy of the windows (size * size times the input): what the article
    # computes and what BLAS-friendly consumers of `patches` want.
    return np.ascontiguousarray(_patches_view(X, size, m))


@implements("E1")
def _patches_view(X: np.ndarray, size: int, m: int) -> np.ndarray:
    """The same (N, m * m, size, size) values as `_extract_patches`, as a read-only view."""
    return _patches_view_images(np.ascontiguousarray(X.transpose(2, 0, 1)), size)


@implements("E1")
def _patches_view_images(images: np.ndarray, size: int, out=None) -> np.ndarray:
    """patches from images (N, n, n), images[N, a, b] = X[a, b, N], as a read-only view.

    A view of shape (N, P, s, s) cannot sit on X itself (window p = i * m + j steps by one
    across the end of an output row, but X's rows are n = m + s - 1 long). It can sit on
    `size` column-shifted crops of the images, shifted[N, v, a, j] = X[a, j + v, N]: there
    patches[N, i * m + j, u, v] = shifted[N, v, i + u, j], so p has stride 1, u stride m
    and v stride n * m. That buffer holds size * n * m values per image (3,360 for the
    article, 4.3x the image) instead of the size^2 * m^2 of a copy (14,400, 18.4x).
    """
    N, n, _ = images.shape
    m = n - size + 1
    shifted = np.empty((N, size, n, m), dtype=images.dtype) if out is None else out
    t = images.strides
    # src[N, v, a, j] = images[N, a, j + v]: a strided view, copied once.
    np.copyto(shifted, as_strided(images, (N, size, n, m), (t[0], t[2], t[1], t[2])))
    e = shifted.itemsize
    return as_strided(
        shifted, (N, m * m, size, size), (size * n * m * e, e, m * e, n * m * e), writeable=False
    )

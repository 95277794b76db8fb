"""E4: the flatten between the convolution and the dense layer, and its inverse."""

from __future__ import annotations

import numpy as np

from reference._validate import float_array, positive_int
from reference.trace import implements


@implements("E4")
def flatten(A1: np.ndarray) -> np.ndarray:
    """E4: the dense layer sees 1-D features per image: (N, K, P) -> (K * P, N).

    Feature index = k * P + p (filter-major, then window p = i * m + j): the article's order,
    which is NOT PyTorch's NCHW flatten order; reference.layout maps between them.
    Article: (200, 3, 576) -> (1728, 200). Returns a view.
    """
    A1 = float_array("A1", A1, (None, None, None))
    return _flatten(A1)


@implements("E4")
def _flatten(A1):
    N, K, P = A1.shape
    return A1.reshape(N, K * P).T


@implements("E4")
def unflatten(features: np.ndarray, n_filters: int) -> np.ndarray:
    """Inverse of E4: (K * P, N) -> (N, K, P); used to give dE/dA1 A1's shape."""
    features = float_array("features", features, (None, None))
    K = positive_int("n_filters", n_filters)
    if features.shape[0] % K:
        raise ValueError(f"features must have a multiple of n_filters={K} rows, got {features.shape}")
    return _unflatten(features, K)


@implements("E4")
def _unflatten(features, K):
    F, N = features.shape
    return np.ascontiguousarray(features.T).reshape(N, K, F // K)

"""The sigmoid (E3, E6) and its derivative written through its output (E9, E14)."""

from __future__ import annotations

import numpy as np

from reference._validate import float_array


def sigmoid(Z: np.ndarray) -> np.ndarray:
    """E3 / E6: sigmoid(x) = 1 / (1 + e^-x), values in (0, 1); any shape, dtype kept.

    Numerically stable: e^-|x| never overflows, so |x| up to 1e4 gives no warning
    (for x < 0 it uses the equal form e^x / (1 + e^x)).
    """
    Z = float_array("Z", Z, ndim=None, allow_empty=True)
    return _sigmoid(Z)


def _sigmoid(Z):
    e = np.exp(-np.abs(Z))
    return np.where(Z >= 0, 1 / (1 + e), e / (1 + e)).astype(Z.dtype, copy=False)


def sigmoid_grad_from_output(A: np.ndarray) -> np.ndarray:
    """E9 / E14: d sigmoid(z) / dz = A (1 - A) with A = sigmoid(z); any shape.

    E9 is dO/dZ2 = O (1 - O), E14 is dA1/dZ1 = A1 (1 - A1). The article's text calls this
    factor "sigmoid"; it means the derivative written through the output.
    """
    A = float_array("A", A, ndim=None, allow_empty=True)
    if A.size and (A.min() < 0 or A.max() > 1):
        raise ValueError(f"A must be a sigmoid output in [0, 1], got values in "
                         f"[{A.min()}, {A.max()}]")
    return A * (1 - A)

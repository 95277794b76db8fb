"""The sigmoid (E3, E6) and its derivative written through its output (E9, E14)."""

from __future__ import annotations

import numpy as np

from reference._validate import float_array
from reference.trace import implements


@implements("E3", "E6")
def sigmoid(Z: np.ndarray) -> np.ndarray:
    """E3 / E6: sigmoid(x) = 1 / (1 + e^-x), values in (0, 1); any shape, dtype kept.

    Computed as written; where e^-x overflows (x < -709.78 in float64, -88.72 in float32)
    the true value is e^x / (1 + e^x) and 1 + e^x rounds to 1, so those elements get e^x
    itself: any finite x (|x| up to 1e4 and beyond) gives no warning. e^-x underflowing to
    0 for large x gives 1, the correctly rounded value. (reference.fast runs the same four
    operations over cache-sized blocks.)
    """
    Z = float_array("Z", Z, ndim=None, allow_empty=True)
    with np.errstate(over="ignore", under="ignore"):
        e = np.exp(np.negative(Z))
        A = np.divide(1, np.add(e, 1), out=np.empty_like(Z))
        overflow = np.isinf(e)
        if overflow.any():
            A[overflow] = np.exp(Z[overflow])
    return A


@implements("E9", "E14")
def sigmoid_grad_from_output(A: np.ndarray) -> np.ndarray:
    """E9 / E14: d sigmoid(z) / dz = A (1 - A) with A = sigmoid(z); any shape.

    E9 is dO/dZ2 = O (1 - O), E14 is dA1/dZ1 = A1 (1 - A1). The article's text calls this
    factor "sigmoid"; it means the derivative written through the output.
    """
    A = float_array("A", A, ndim=None, allow_empty=True)
    if A.size and (A.min() < 0 or A.max() > 1):
        raise ValueError(f"A must be a sigmoid output in [0, 1], got values in [{A.min()}, {A.max()}]")
    return _sigmoid_grad_from_output(A)


@implements("E9", "E14")
def _sigmoid_grad_from_output(A):
    return A * (1 - A)

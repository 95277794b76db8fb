"""Stage 3 of the article: the dense layer, forward (E5) and its gradients (E10..E13)."""

from __future__ import annotations

import numpy as np

from reference._validate import float_array
from reference.trace import implements


@implements("E5")
def dense_forward(A1_flat: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """E5: Z2 = W^T . A1 + b.

    A1_flat: (F, N) features (E4); W: (F, 1); b: (1,) -> Z2: (1, N).
    Each Z2 entry is a sum of F products (1728 for the article).
    """
    A1_flat = float_array("A1_flat", A1_flat, (None, None))
    W = float_array("W", W, (A1_flat.shape[0], 1), dtype=A1_flat.dtype)
    b = float_array("b", b, (1,), dtype=A1_flat.dtype)
    return _dense_forward(A1_flat, W, b)


@implements("E5")
def _dense_forward(A1_flat, W, b):
    return W.T @ A1_flat + b[:, None]


@implements("E10", "E11")
def dense_grad_weights(A1_flat: np.ndarray, dE_dZ2: np.ndarray) -> np.ndarray:
    """E10 + E11: dE/dW = sum over images n of A1[:, n] * dE/dZ2[n], W's shape.

    dZ2/dW = A1 (E10); dE/dZ2 = dE/dO . dO/dZ2 (E8, E9).
    A1_flat: (F, N); dE_dZ2: (1, N) -> dE_dW: (F, 1). Each entry sums N products.
    """
    A1_flat = float_array("A1_flat", A1_flat, (None, None))
    dE_dZ2 = float_array("dE_dZ2", dE_dZ2, (1, A1_flat.shape[1]), dtype=A1_flat.dtype)
    return _dense_grad_weights(A1_flat, dE_dZ2)


@implements("E10", "E11")
def _dense_grad_weights(A1_flat, dE_dZ2):
    return A1_flat @ dE_dZ2.T


@implements("E12")
def dense_grad_bias(dE_dZ2: np.ndarray) -> np.ndarray:
    """E12: dE/db = sum over the batch of dE/dO . dO/dZ2. dE_dZ2: (1, N) -> (1,).

    Left to the reader by the article; the bias enters every image, so its gradient is the
    batch sum of the output deltas.
    """
    dE_dZ2 = float_array("dE_dZ2", dE_dZ2, (1, None))
    return _dense_grad_bias(dE_dZ2)


@implements("E12")
def _dense_grad_bias(dE_dZ2):
    return dE_dZ2.sum(axis=1)


@implements("E13")
def dense_grad_input(W: np.ndarray, dE_dZ2: np.ndarray) -> np.ndarray:
    """E13: dE/dA1 = W . dE/dZ2 (the text writes dZ2/dA1 = W^T; as a matrix product the
    upstream delta is multiplied by W). W: (F, 1); dE_dZ2: (1, N) -> (F, N), A1_flat's shape.
    """
    W = float_array("W", W, (None, 1))
    dE_dZ2 = float_array("dE_dZ2", dE_dZ2, (1, None), dtype=W.dtype)
    return _dense_grad_input(W, dE_dZ2)


@implements("E13")
def _dense_grad_input(W, dE_dZ2):
    return W @ dE_dZ2

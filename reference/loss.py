"""The squared-error loss (E7) and its derivative (E8), with an explicit batch reduction."""

from __future__ import annotations

import numpy as np

from reference._validate import choice, float_array
from reference.trace import implements

REDUCTIONS = ("sum", "mean")


@implements("E7")
def half_squared_error(O: np.ndarray, y: np.ndarray, reduction: str = "sum") -> np.ndarray:
    """E7: E = sum (or mean) over images of (y - O)^2 / 2.

    The article does not say how the per-image losses combine; "sum" (default) matches the
    published dense-layer gradient. O, y: (1, N) -> E: a 0-d array of O's dtype.
    """
    O, y, reduction = _check(O, y, reduction)
    per_image = (y - O) ** 2 / 2
    return per_image.sum() if reduction == "sum" else per_image.mean()


@implements("E8")
def loss_grad_output(O: np.ndarray, y: np.ndarray, reduction: str = "sum") -> np.ndarray:
    """E8: dE/dO = -(y - O), divided by N when reduction="mean". O, y: (1, N) -> (1, N)."""
    O, y, reduction = _check(O, y, reduction)
    return _loss_grad_output(O, y, reduction)


@implements("E8")
def _loss_grad_output(O, y, reduction):
    g = -(y - O)
    return g / O.shape[1] if reduction == "mean" else g


def _check(O, y, reduction):
    O = float_array("O", O, (1, None))
    y = float_array("y", y, O.shape, dtype=O.dtype)
    return O, y, choice("reduction", reduction, REDUCTIONS)

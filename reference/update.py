"""E17: the gradient-descent update, new = old - lr * gradient (for W, b and f)."""

from __future__ import annotations

import numpy as np

from reference._validate import finite_float, float_array
from reference.trace import implements

# The suite's learning rate, 2^-4: Keras keeps the learning rate in a float32 variable, so a
# value float32 cannot hold exactly (0.1) would shift every float64 update. (The article's
# own examples use 0.1; train_step's default stays that.)
SUITE_LR = 2.0**-4


@implements("E17")
def sgd_update(param: np.ndarray, grad: np.ndarray, lr: float) -> np.ndarray:
    """E17: new = old - lr * gradient. param and grad of equal shape and dtype; lr > 0.

    A Python float `lr` keeps the parameter's dtype (float32 stays float32).
    """
    param = float_array("param", param, ndim=None)
    grad = float_array("grad", grad, param.shape, dtype=param.dtype)
    return _sgd_update(param, grad, _learning_rate(lr))


def _learning_rate(lr) -> float:
    lr = finite_float("lr", lr)
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return lr


@implements("E17")
def _sgd_update(param, grad, lr):
    return param - lr * grad

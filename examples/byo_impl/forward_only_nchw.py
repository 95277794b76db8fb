"""The smallest implementation the suite checks: the forward pass only, in torch's layout.

    PYTHONPATH=examples/byo_impl pytest parity_tests/test_parity.py --parity-impl forward_only_nchw

Z1, A1, Z2, O and E are compared; every other name is reported as absent.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LAYOUT = "nchw"  # X (N, 1, 28, 28), f (K, 1, 5, 5), W (1, 1728) like nn.Linear, y (N, 1)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def train_step(params, X, y, lr, reduction):
    f, W, b = params["f"], params["W"], params["b"]
    s = f.shape[-1]
    windows = sliding_window_view(X[:, 0], (s, s), axis=(1, 2))  # (N, 24, 24, 5, 5)
    Z1 = np.einsum("nijuv,kuv->nkij", windows, f[:, 0])  # (N, K, 24, 24)
    A1 = sigmoid(Z1)
    Z2 = A1.reshape(len(X), -1) @ W.T + b  # (N, 1)
    O = sigmoid(Z2)
    per_image = (y - O) ** 2 / 2
    E = per_image.sum() if reduction == "sum" else per_image.mean()
    return {"Z1": Z1, "A1": A1, "Z2": Z2, "O": O, "E": E}

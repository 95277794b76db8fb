"""The article's model written the way the article writes it: Python loops over images and
windows (the published code's style), for timing only.

Same maths, layout and names as reference.model.train_step (E1..E17, sum reduction): the
convolution loops over every image, every window and every filter; the filter gradient
(E16) loops over every image and window, pairing each image with its own delta (the text's
derivation, not the published code's D3/D7 slips). The dense layer is one matrix product,
as in the article. Used by benchmarks/bench_step.py at batch 200 only: it is slow by design,
it is the "before" of the vectorised reference.
"""

from __future__ import annotations

import numpy as np

from reference.update import SUITE_LR


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def train_step(params, X, y, lr=SUITE_LR):
    """One step (forward, backward, update) with loops; returns E, dE_df and the new f, W, b."""
    f, W, b = params["f"], params["W"], params["b"]
    n, _, N = X.shape
    s, _, K = f.shape
    m = n - s + 1

    # E1: every window of every image, then each window times each filter.
    patches = np.zeros((N, m * m, s, s), dtype=X.dtype)
    for img in range(N):
        p = 0
        for i in range(m):
            for j in range(m):
                patches[img, p] = X[i : i + s, j : j + s, img]
                p += 1
    Z1 = np.zeros((N, K, m * m), dtype=X.dtype)
    for img in range(N):
        for k in range(K):
            for p in range(m * m):
                Z1[img, k, p] = np.sum(patches[img, p] * f[:, :, k])
    A1 = _sigmoid(Z1)  # E3

    # E4..E6: flatten (filter-major), dense layer, output sigmoid.
    A1_flat = A1.reshape(N, K * m * m).T  # (F, N)
    Z2 = W.T @ A1_flat + b
    O = _sigmoid(Z2)

    # E7..E14
    E = np.sum((y - O) ** 2 / 2)
    dE_dZ2 = -(y - O) * O * (1 - O)  # (1, N)
    dE_dW = A1_flat @ dE_dZ2.T
    dE_db = np.sum(dE_dZ2, axis=1)
    dE_dA1 = (W @ dE_dZ2).T.reshape(N, K, m * m)
    dE_dZ1 = dE_dA1 * A1 * (1 - A1)

    # E16: each image's delta convolved with that image's windows.
    dE_df = np.zeros_like(f)
    for img in range(N):
        for k in range(K):
            for p in range(m * m):
                dE_df[:, :, k] += dE_dZ1[img, k, p] * patches[img, p]

    # E17
    return {
        "E": E,
        "dE_df": dE_df,
        "f_new": f - lr * dE_df,
        "W_new": W - lr * dE_dW,
        "b_new": b - lr * dE_db,
    }

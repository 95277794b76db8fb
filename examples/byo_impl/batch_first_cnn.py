"""An independent implementation of the article's CNN, written the way a third party might.

Nothing here comes from the suite's `reference/` package: a class holds the parameters,
images are batch-first (N, 28, 28) inside, windows come from a hand-made im2col (index
arrays), and every contraction is an einsum. What makes it checkable by the parity suite is
`LAYOUT = "nchw"` (it works in torch's layout, so the suite hands it X (N, 1, 28, 28),
f (K, 1, 5, 5), W (1, 1728), y (N, 1) and reads its tensors back in that layout) and the
module-level function

    train_step(params, X, y, lr, reduction) -> dict

which returns the article's names (docs/byo.md): patches, Z1, A1, Z2, O, E,
dE_dO, dO_dZ2, dE_dZ2, dE_dW, dE_db, dE_dA1, dE_dZ1, dE_df, f_new, W_new, b_new.

Run the suite on it from the project root:

    PYTHONPATH=examples/byo_impl pytest parity_tests/test_parity.py --parity-impl batch_first_cnn
"""

import numpy as np


def _sigmoid(z):
    # tanh form: no overflow for large |z|, and no branch on the sign.
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class BatchFirstCNN:
    """conv (K filters, s x s, valid, stride 1) -> sigmoid -> flatten -> dense(1) -> sigmoid."""

    def __init__(self, kernels, weights, bias):
        self.kernels = kernels  # (K, s, s): kernels[k] is filter k as it slides
        self.weights = weights  # (K * m * m,) in flatten order (filter, row, column)
        self.bias = bias  # scalar array, shape ()

    # --- im2col --------------------------------------------------------------------------
    @staticmethod
    def windows(images, s):
        """(N, n, n) -> (N, m * m, s * s): window (i, j) of image n at row i * m + j."""
        n = images.shape[1]
        m = n - s + 1
        rows = np.arange(m)[:, None, None, None] + np.arange(s)[None, None, :, None]
        cols = np.arange(m)[None, :, None, None] + np.arange(s)[None, None, None, :]
        return images[:, rows, cols].reshape(images.shape[0], m * m, s * s)

    # --- forward / backward ----------------------------------------------------------------
    def forward(self, images):
        K, s, _ = self.kernels.shape
        cols = self.windows(images, s)  # (N, P, s*s)
        z1 = np.einsum("npq,kq->nkp", cols, self.kernels.reshape(K, s * s))
        a1 = _sigmoid(z1)  # (N, K, P)
        feats = a1.reshape(a1.shape[0], -1)  # (N, K*P)
        z2 = feats @ self.weights + self.bias  # (N,)
        out = _sigmoid(z2)
        self.cache = dict(cols=cols, z1=z1, a1=a1, feats=feats, z2=z2, out=out)
        return out

    def backward(self, targets, reduction):
        c = self.cache
        scale = 1.0 / len(targets) if reduction == "mean" else 1.0
        residual = c["out"] - targets
        loss = 0.5 * np.sum(residual * residual) * scale
        d_out = residual * scale  # dE/dO
        d_out_d_z2 = c["out"] * (1.0 - c["out"])  # dO/dZ2
        d_z2 = d_out * d_out_d_z2  # (N,)
        d_w = c["feats"].T @ d_z2  # (K*P,)
        d_b = np.sum(d_z2)
        d_a1 = np.einsum("n,f->nf", d_z2, self.weights).reshape(c["a1"].shape)
        d_z1 = d_a1 * c["a1"] * (1.0 - c["a1"])  # (N, K, P)
        d_kernels = np.einsum("nkp,npq->kq", d_z1, c["cols"]).reshape(self.kernels.shape)
        self.grads = dict(
            loss=loss,
            d_out=d_out,
            d_out_d_z2=d_out_d_z2,
            d_z2=d_z2,
            d_w=d_w,
            d_b=d_b,
            d_a1=d_a1,
            d_z1=d_z1,
            d_kernels=d_kernels,
        )
        return loss

    def step(self, lr):
        g = self.grads
        return BatchFirstCNN(
            self.kernels - lr * g["d_kernels"], self.weights - lr * g["d_w"], self.bias - lr * g["d_b"]
        )


LAYOUT = "nchw"


def train_step(params, X, y, lr=0.1, reduction="sum"):
    """One step from the suite's parameters, every tensor in NCHW (torch's) layout."""
    net = BatchFirstCNN(params["f"][:, 0], params["W"][0], params["b"][0])
    net.forward(X[:, 0])
    net.backward(y[:, 0], reduction)
    new = net.step(lr)
    c, g = net.cache, net.grads
    N, (K, s, _) = len(X), net.kernels.shape
    m = X.shape[-1] - s + 1

    def column(v):  # (N,) -> (N, 1)
        return np.asarray(v, dtype=X.dtype).reshape(N, 1)

    def maps(v):  # (N, K, P) -> (N, K, m, m)
        return v.reshape(N, K, m, m)

    return {
        "patches": c["cols"].transpose(0, 2, 1),  # F.unfold's (N, s*s, P)
        "Z1": maps(c["z1"]),
        "A1": maps(c["a1"]),
        "Z2": column(c["z2"]),
        "O": column(c["out"]),
        "E": np.asarray(g["loss"], dtype=X.dtype),
        "dE_dO": column(g["d_out"]),
        "dO_dZ2": column(g["d_out_d_z2"]),
        "dE_dZ2": column(g["d_z2"]),
        "dE_dW": g["d_w"].reshape(1, -1),
        "dE_db": np.asarray(g["d_b"], dtype=X.dtype).reshape(1),
        "dE_dA1": maps(g["d_a1"]),
        "dE_dZ1": maps(g["d_z1"]),
        "dE_df": g["d_kernels"][:, None],
        "f_new": new.kernels[:, None],
        "W_new": new.weights.reshape(1, -1),
        "b_new": np.asarray(new.bias, dtype=X.dtype).reshape(1),
    }

"""Flatten in NCHW order and the dense layer with U units (X10), batch-first.

The article's own layer (reference/dense.py, E5) keeps one image per COLUMN; here, as in
the rest of reference/layers/ and in both frameworks, one image per ROW: A (N, F). X10's
Z = W^T A + b is that equation per image (a_n = A[n] as a column), so W keeps X10's shape
(F, U): torch's nn.Linear weight is W.T, a Keras Dense kernel is W itself.
"""

from __future__ import annotations

import numpy as np

from reference import rounding
from reference._validate import float_array
from reference.layers.conv2d import _shape4
from reference.layers.registry import HOLDS, Bound, Case, Equation, LayerKind, Mistake, Site
from reference.trace import implements


@implements("X10")
def flatten(X: np.ndarray) -> np.ndarray:
    """The flatten before the first dense layer: (N, C, H, W) -> (N, C H W), row-major.

    Feature index f = c H W + h W + w (NCHW order, torch's `flatten(1)`; NOT the article's
    E4 order and not TensorFlow's NHWC order). No arithmetic. Returns a view when it can.
    """
    X = float_array("X", X, (None, None, None, None))
    return X.reshape(X.shape[0], -1)


@implements("X10")
def flatten_backward(dA: np.ndarray, x_shape: tuple) -> np.ndarray:
    """The flatten's backward: the delta reshaped back, (N, C H W) -> x_shape (N, C, H, W)."""
    x_shape = _shape4("x_shape", x_shape)
    N, C, H, W = x_shape
    dA = float_array("dA", dA, (N, C * H * W))
    return dA.reshape(x_shape)


@implements("X10")
def dense_forward(A: np.ndarray, W: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """X10: Z[n, u] = sum over f of A[n, f] W[f, u] + b[u] (Z = W^T a_n + b per image;
    no bias term when b is None).

    A: (N, F); W: (F, U); b: (U,) or None -> Z: (N, U). Each entry sums F products.
    """
    A = float_array("A", A, (None, None))
    W = float_array("W", W, (A.shape[1], None), dtype=A.dtype)
    Z = A @ W
    if b is not None:
        Z += float_array("b", b, (W.shape[1],), dtype=A.dtype)
    return Z


@implements("X10")
def dense_grad_weights(A: np.ndarray, dZ: np.ndarray) -> np.ndarray:
    """X10: dE/dW[f, u] = sum over n of A[n, f] dZ[n, u] (X10's A delta^T). A: (N, F);
    dZ: (N, U) -> dW: (F, U), W's shape. Each entry sums N products."""
    A = float_array("A", A, (None, None))
    dZ = float_array("dZ", dZ, (A.shape[0], None), dtype=A.dtype)
    return A.T @ dZ


@implements("X10")
def dense_grad_bias(dZ: np.ndarray) -> np.ndarray:
    """X10: dE/db[u] = sum over images n of dZ[n, u]. dZ: (N, U) -> db: (U,)."""
    dZ = float_array("dZ", dZ, (None, None))
    return dZ.sum(axis=0)


@implements("X10")
def dense_grad_input(W: np.ndarray, dZ: np.ndarray) -> np.ndarray:
    """X10: dE/dA[n, f] = sum over u of W[f, u] dZ[n, u] (X10's W delta). W: (F, U);
    dZ: (N, U) -> dA: (N, F), A's shape. Each entry sums U products."""
    W = float_array("W", W, (None, None))
    dZ = float_array("dZ", dZ, (None, W.shape[1]), dtype=W.dtype)
    return dZ @ W.T


@implements("X10")
def dense_backward(A: np.ndarray, W: np.ndarray, dZ: np.ndarray, bias: bool = True) -> dict:
    """X10 together: {"dA", "dW", "db" (only when bias)} for Z = dense_forward(A, W, b).
    A: (N, F); W: (F, U); dZ: (N, U) -> dA (N, F), dW (F, U), db (U,)."""
    A = float_array("A", A, (None, None))
    W = float_array("W", W, (A.shape[1], None), dtype=A.dtype)
    dZ = float_array("dZ", dZ, (A.shape[0], W.shape[1]), dtype=A.dtype)
    grads = {"dA": dense_grad_input(W, dZ), "dW": dense_grad_weights(A, dZ)}
    if bias:
        grads["db"] = dense_grad_bias(dZ)
    return grads


# --- the registry entries (reference/layers/registry.py) ----------------------------------


def _flatten_bound(site: Site, short: str) -> Bound:
    """A re-indexing: exact."""
    return Bound(None, rounding.SELECT_ROUNDINGS)


def _dense_bound(site: Site, short: str) -> Bound:
    """X10: every tensor a sum of products over F features, N images or U units."""
    layer, a = site.layer, np.abs
    W = a(site.params["W"])
    if short == "Z":
        b = a(site.params["b"]) if layer.bias else None
        F_in = W.shape[0]
        k = rounding.roundings_affine(F_in) if layer.bias else rounding.roundings_dot(F_in)
        return Bound(dense_forward(a(site.x), W, b), k, "|A||W|+|b|")
    n = site.x.shape[0]
    if short == "dW":
        return Bound(
            dense_grad_weights(a(site.x), a(site.upstream)), rounding.roundings_dot(n), "|A|^T|dZ|"
        )
    if short == "db":
        return Bound(dense_grad_bias(a(site.upstream)), rounding.roundings_sum(n), "sum |dZ|")
    return Bound(dense_grad_input(W, a(site.upstream)), rounding.roundings_dot(W.shape[1]), "|dZ||W|^T")


def _dense_init(layer, in_shape):
    """W (F, U) (X10's shape) and b (U,), fan-in F."""
    return in_shape[0], {"W": (in_shape[0], layer.units), "b": (layer.units,)}


# --- the mistakes (registry entries' catalogues; parity_tests/model_mutants.py runs them) ---


def flatten_channel_last(X):
    """(N, C, H, W) -> (N, H W C): TensorFlow's NHWC feature order, not NCHW's c H W + h W + w."""
    return np.ascontiguousarray(X.transpose(0, 2, 3, 1)).reshape(X.shape[0], -1)


def flatten_channel_last_backward(dA, x_shape):
    N, C, H, W = x_shape
    return np.ascontiguousarray(dA.reshape(N, H, W, C).transpose(0, 3, 1, 2))


def dense_backward_bias_mean(A, W, dZ, bias):
    """X10 with dE/db averaged over the images instead of summed."""
    grads = dense_backward(A, W, dZ, bias)
    if bias:
        grads["db"] = dZ.mean(axis=0)
    return grads


FLATTEN = LayerKind(
    passes_on=True,
    name="flatten",
    family="flatten",
    outputs=("A",),
    input_grad="dX",
    equations={"A": "E4", "dX": "E4"},
    forward=flatten,
    backward=flatten_backward,
    bound=_flatten_bound,
    mistakes=(
        Mistake(
            id="flatten_channel_last",
            equation="E4",
            first="flatten.A",
            case=Case("conv(4,3)-relu-maxpool(2)-dense(10)-softmax_ce"),
            title="features flattened channel-last (NHWC: h W C + w C + c) instead of NCHW, "
            "forward and backward alike",
            explains="flatten_channel_last",
            forward=flatten_channel_last,
            backward=flatten_channel_last_backward,
            caught_on="any input with more than one channel before the flatten",
        ),
    ),
)
DENSE = LayerKind(
    name="dense",
    family="dense",
    outputs=("Z",),
    input_grad="dA",
    equations={"Z": "X10", "dA": "X10", "dW": "X10", "db": "X10"},
    forward=dense_forward,
    backward=dense_backward,
    bound=_dense_bound,
    params=("W", "b"),
    init=_dense_init,
    user=("affine_forward(x, w, b) -> (out, cache)", "affine_backward(dout, cache) -> (dx, dw, db)"),
    mistakes=(
        Mistake(
            id="dense_bias_grad_mean",
            equation="X10",
            first="dense3.db",
            case=Case("conv(4,5,stride=2)-relu-dense(32)-relu-dense(10)-softmax_ce"),
            title="dense bias gradient averaged over the images instead of summed",
            explains="dense_bias_grad_mean",
            backward=dense_backward_bias_mean,
            caught_on="any batch of more than one image",
        ),
    ),
)

# Its layer kinds' registry entries, collected in reference.layers.KINDS.
ENTRIES = (
    FLATTEN,
    DENSE,
)

# Its equations' audit records (reference/equations.py, docs/extensions.md).
EQUATIONS = (
    Equation(
        "X10",
        "dense with U units: Z = W^T a + b per image, W of shape (F, U); dE/dW = A^T dZ, "
        "dE/db = dZ summed over images, dE/dA = dZ W^T",
        HOLDS,
        note="torch's nn.Linear weight is W^T; the flatten before the first dense reads NCHW "
        "order (torch's flatten(1), not TensorFlow's NHWC nor the article's E4)",
    ),
)

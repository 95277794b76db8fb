"""The general convolution layer (X1..X5): channels, stride, zero padding, optional bias.

Batch-first NCHW: X (N, C_in, H, W), filters F (C_out, C_in, k, k), bias b (C_out,),
Z (N, C_out, H_out, W_out). A cross-correlation, as in the article (E1) and in both
frameworks: the filter is not flipped. Each forward function sits beside its derivatives.
The output side is X2's floor((n + 2p - k) / s) + 1: a remainder is dropped, as both
frameworks do, and the dropped rows and columns get a zero input gradient.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from reference import rounding
from reference._validate import float_array, positive_int
from reference.layers.registry import HOLDS, Bound, Case, Equation, LayerKind, Mistake, Site
from reference.trace import implements


@implements("X2")
def output_side(n: int, k: int, stride: int = 1, pad: int = 0) -> int:
    """X2: windows start every `stride` pixels: side = floor((n + 2 pad - k) / stride) + 1.

    n: input side; k: window side; pad: zeros added on each side (X1). Raises, naming `k`,
    when the window does not fit the padded input (the side would be below 1).
    """
    n = positive_int("n", n)
    k = positive_int("k", k)
    stride = positive_int("stride", stride)
    pad = positive_int("pad", pad, minimum=0)
    if k > n + 2 * pad:
        raise ValueError(
            f"k={k} does not fit the padded input: side n + 2*pad = {n} + 2*{pad} = {n + 2 * pad}"
        )
    return (n + 2 * pad - k) // stride + 1


@implements("X1")
def pad_input(X: np.ndarray, pad: int) -> np.ndarray:
    """X1: Xp = X surrounded by `pad` zeros on every side of each image and channel.

    X: (N, C, H, W) -> Xp: (N, C, H + 2 pad, W + 2 pad), X's dtype. Symmetric, like torch's
    `padding=p` (TensorFlow's 'SAME' is not when the total is odd: mirror it with tf.pad).
    """
    X = float_array("X", X, (None, None, None, None))
    return _pad(X, positive_int("pad", pad, minimum=0))


@implements("X1")
def _pad(X, pad):
    if pad == 0:
        return X
    return np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


@implements("X2")
def _windows(Xp, k, stride):
    """(N, C, Hp, Wp) -> the read-only view (N, C, H_out, W_out, k, k) of every window:
    window (i, j) is Xp[:, :, s i : s i + k, s j : s j + k]. No copy, no loop."""
    return sliding_window_view(Xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


@implements("X3", "X4")
def conv2d_forward(
    X: np.ndarray, F: np.ndarray, b: np.ndarray | None = None, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """X1..X4: Z[n, o, i, j] = sum over c, u, v of F[o, c, u, v] Xp[n, c, s i + u, s j + v]
    + b[o] (X3; no bias term when b is None), Xp = X padded with `pad` zeros (X1).

    X: (N, C_in, H, W); F: (C_out, C_in, k, k); b: (C_out,) or None
    -> Z: (N, C_out, H_out, W_out), H_out = floor((H + 2 pad - k) / stride) + 1 (X2).
    Each entry is a sum of C_in k^2 products (plus the bias).
    """
    X, F, b, stride, pad = _check_forward(X, F, b, stride, pad)
    C_out, k = F.shape[0], F.shape[2]
    cols, (H_out, W_out) = _im2col(_pad(X, pad), k, stride)
    Z = F.reshape(C_out, -1) @ cols  # (C_out, N H_out W_out): every filter times every window
    if b is not None:
        Z += b[:, None]
    return _to_nchw(Z, X.shape[0], H_out, W_out)


@implements("X3")
def conv2d_grad_bias(dZ: np.ndarray) -> np.ndarray:
    """X3: dE/db[o] = sum over n, i, j of dZ[n, o, i, j] (the bias enters every position).

    dZ: (N, C_out, H_out, W_out) -> db: (C_out,).
    """
    dZ = float_array("dZ", dZ, (None, None, None, None))
    return _grad_bias(dZ)


@implements("X3")
def _grad_bias(dZ):
    return dZ.sum(axis=(0, 2, 3))


@implements("X4")
def conv2d_grad_filter(
    X: np.ndarray, dZ: np.ndarray, k: int, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """X4: dE/dF[o, c, u, v] = sum over n, i, j of dZ[n, o, i, j] Xp[n, c, s i + u, s j + v].

    Taken from the PADDED input Xp (X1): the zeros are real operands of the forward sum.
    X: (N, C_in, H, W); dZ: (N, C_out, H_out, W_out); k the filter side (it cannot be read
    from the shapes when stride > 1) -> dF: (C_out, C_in, k, k).
    Each entry is a sum of N H_out W_out products.
    """
    X = float_array("X", X, (None, None, None, None))
    k, stride, pad, (H_out, W_out) = _check_geometry(X, k, stride, pad)
    dZ = float_array("dZ", dZ, (X.shape[0], None, H_out, W_out), dtype=X.dtype)
    return _grad_filter(X, _from_nchw(dZ), k, stride, pad)


@implements("X4")
def _grad_filter(X, dZ2, k, stride, pad):
    """X4 from dZ2 = dZ as (C_out, N H_out W_out) (_from_nchw)."""
    cols, _ = _im2col(_pad(X, pad), k, stride)  # (C_in k k, N H_out W_out)
    dF = dZ2 @ cols.T  # each entry: a sum over n, i, j
    return dF.reshape(dZ2.shape[0], X.shape[1], k, k)


@implements("X5")
def conv2d_grad_input(
    dZ: np.ndarray, F: np.ndarray, x_shape: tuple, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """X5: dE/dXp[n, c, s i + u, s j + v] += dZ[n, o, i, j] F[o, c, u, v] (summed over o, i, j,
    u, v); dE/dX = dE/dXp with the `pad` border cropped.

    Computed as X5 stands: G[(c, u, v), (n, i, j)] = sum over o of F[o, c, u, v] dZ[n, o, i, j]
    (one matrix product, F^T dZ), then every G value added at the pixel (s i + u, s j + v)
    its window read (_col2im, the adjoint of the forward's _im2col). Rows and columns the
    forward dropped (stride remainder) get zero.
    dZ: (N, C_out, H_out, W_out); F: (C_out, C_in, k, k); x_shape: X's shape (N, C_in, H, W)
    -> dX: (N, C_in, H, W), dZ's dtype.
    """
    F = float_array("F", F, (None, None, None, None))
    x_shape = _shape4("x_shape", x_shape)
    if x_shape[1] != F.shape[1]:
        raise ValueError(f"x_shape must have F's C_in={F.shape[1]} channels, got {x_shape}")
    _check_square("F", F)
    k = F.shape[2]
    N, C_in, H, W = x_shape
    stride = positive_int("stride", stride)
    pad = positive_int("pad", pad, minimum=0)
    H_out, W_out = output_side(H, k, stride, pad), output_side(W, k, stride, pad)
    dZ = float_array("dZ", dZ, (N, F.shape[0], H_out, W_out), dtype=F.dtype)
    return _grad_input(_from_nchw(dZ), F, x_shape, stride, pad)


@implements("X5")
def _grad_input(dZ2, F, x_shape, stride, pad):
    """X5 from dZ2 = dZ as (C_out, N H_out W_out) (_from_nchw)."""
    C_out, C_in, k, _ = F.shape
    N, _, H, W = x_shape
    Hp, Wp = H + 2 * pad, W + 2 * pad
    G = F.reshape(C_out, C_in * k * k).T @ dZ2  # (C_in k k, N H_out W_out)
    G = G.reshape(C_in, k, k, N, (Hp - k) // stride + 1, (Wp - k) // stride + 1)  # [c, u, v, n, i, j]
    dXp = _col2im(G.transpose(1, 2, 3, 0, 4, 5), (N, C_in, Hp, Wp), stride)
    return np.ascontiguousarray(dXp[:, :, pad : pad + H, pad : pad + W])


@implements("X3", "X4")
def conv2d_backward(
    X: np.ndarray,
    F: np.ndarray,
    dZ: np.ndarray,
    stride: int = 1,
    pad: int = 0,
    bias: bool = True,
    *,
    input_grad: bool = True,
) -> dict:
    """X3..X5 together: {"dX": X5, "dF": X4, "db": X3 (only when bias)} for Z = conv2d_forward.

    X: (N, C_in, H, W); F: (C_out, C_in, k, k); dZ: (N, C_out, H_out, W_out)
    -> dX (N, C_in, H, W), dF (C_out, C_in, k, k), db (C_out,). input_grad=False leaves dX
    out (a first layer: nothing before it needs the image's gradient).
    """
    X, F, _, stride, pad = _check_forward(X, F, None, stride, pad)
    k = F.shape[2]
    _, _, _, (H_out, W_out) = _check_geometry(X, k, stride, pad)
    dZ = float_array("dZ", dZ, (X.shape[0], F.shape[0], H_out, W_out), dtype=F.dtype)
    dZ2 = _from_nchw(dZ)  # validated once, shared by X5 and X4
    grads = {"dX": _grad_input(dZ2, F, X.shape, stride, pad)} if input_grad else {}
    grads["dF"] = _grad_filter(X, dZ2, k, stride, pad)
    if bias:
        grads["db"] = _grad_bias(dZ)
    return grads


# --- windows as matrix columns ----------------------------------------------------------


@implements("X4")
def _im2col(Xp, k, stride):
    """(N, C, Hp, Wp) -> (cols, (H_out, W_out)): every window one column of the matrix
    cols (C k k, N H_out W_out), cols[(c, u, v), (n, i, j)] = Xp[n, c, s i + u, s j + v].

    One copy of the windows view (k^2 times the input), rows in a filter bank's (c, u, v)
    order: F (C_out, C_in, k, k) reshaped to (C_out, C_in k k) times cols is X4's sum for
    every image and window in one matrix product.
    """
    windows = _windows(Xp, k, stride)  # (N, C, H_out, W_out, k, k)
    N, C, H_out, W_out = windows.shape[:4]
    cols = windows.transpose(1, 4, 5, 0, 2, 3).reshape(C * k * k, N * H_out * W_out)
    return cols, (H_out, W_out)


@implements("X5")
def _col2im(G, xp_shape, stride):
    """The adjoint of _windows, X5's (and the pools') += for every window at once: G (k, k,
    N, C, H_out, W_out), one value per window element, G[u, v, n, c, i, j] read from pixel
    (s i + u, s j + v) -> (N, C, Hp, Wp), each pixel the sum of the G values read from it.

    No np.add.at: each offset (u, v) gets a zeroed plane of its own, where a strided view
    puts G[u, v, n, c, i, j] at row s i + u and column s j + v (distinct places: a plain
    assignment); the k^2 planes are then summed, so overlapping windows (stride < k) add
    up. Pixels no window reads (stride remainder) get 0. Memory: k^2 times the result.
    """
    k, _, N, C, H_out, W_out = G.shape
    planes = np.zeros((k, k, *xp_shape), dtype=G.dtype)
    t = planes.strides
    at_pixels = as_strided(
        planes,
        G.shape,  # [u, v, n, c, i, j] -> planes[u, v, n, c, s i + u, s j + v]
        (t[0] + t[4], t[1] + t[5], t[2], t[3], stride * t[4], stride * t[5]),
    )
    at_pixels[...] = G
    return planes.sum(axis=(0, 1))


def _from_nchw(A):
    """(N, C, H, W) -> (C, N H W), a copy: one row per channel, the layout of im2col's columns."""
    return A.transpose(1, 0, 2, 3).reshape(A.shape[1], -1)


def _to_nchw(Z, N, H, W):
    """(C, N H W) -> (N, C, H, W), C-contiguous: _from_nchw undone."""
    return np.ascontiguousarray(Z.reshape(-1, N, H, W).transpose(1, 0, 2, 3))


# --- argument checks --------------------------------------------------------------------


def _check_square(name, F):
    if F.shape[2] != F.shape[3]:
        raise ValueError(f"{name} must have square k x k windows (C_out, C_in, k, k), got {F.shape}")


def _shape4(name, shape):
    if not isinstance(shape, tuple | list) or len(shape) != 4:
        raise TypeError(f"{name} must be a 4-tuple (N, C, H, W), got {shape!r}")
    N, C, H, W = shape
    return (
        positive_int(f"{name}[0] (N)", N),
        positive_int(f"{name}[1] (C)", C),
        positive_int(f"{name}[2] (H)", H),
        positive_int(f"{name}[3] (W)", W),
    )


def _check_geometry(X, k, stride, pad):
    """k, stride and pad checked against X (N, C, H, W); returns them and (H_out, W_out)."""
    k = positive_int("k", k)
    stride = positive_int("stride", stride)
    pad = positive_int("pad", pad, minimum=0)
    return (
        k,
        stride,
        pad,
        (output_side(X.shape[2], k, stride, pad), output_side(X.shape[3], k, stride, pad)),
    )


def _check_forward(X, F, b, stride, pad):
    X = float_array("X", X, (None, None, None, None))
    F = float_array("F", F, (None, X.shape[1], None, None), dtype=X.dtype)
    _check_square("F", F)
    if b is not None:
        b = float_array("b", b, (F.shape[0],), dtype=X.dtype)
    k, stride, pad, _ = _check_geometry(X, F.shape[2], stride, pad)
    return X, F, b, stride, pad


# --- the registry entry (reference/layers/registry.py) ------------------------------------


def _bound(site: Site, short: str) -> Bound:
    """Stage bounds of X3..X5: each a sum of products, M the same sum on |X|, |F|, |dZ|."""
    layer, a = site.layer, np.abs
    F = a(site.params["F"])
    if short == "Z":
        b = a(site.params["b"]) if layer.bias else None
        M = conv2d_forward(a(site.x), F, b, layer.stride, layer.pad)
        terms = F.shape[1] * layer.kernel**2
        k = rounding.roundings_affine(terms) if layer.bias else rounding.roundings_dot(terms)
        return Bound(M, k, "conv(|X|,|F|)+|b|")
    n, _, h, w = site.upstream.shape
    if short == "dF":
        M = conv2d_grad_filter(a(site.x), a(site.upstream), layer.kernel, layer.stride, layer.pad)
        return Bound(M, rounding.roundings_dot(n * h * w), "sum |dZ||Xp|")
    if short == "db":
        return Bound(conv2d_grad_bias(a(site.upstream)), rounding.roundings_sum(n * h * w), "sum |dZ|")
    M = conv2d_grad_input(a(site.upstream), F, site.x.shape, layer.stride, layer.pad)
    return Bound(M, rounding.roundings_dot(F.shape[0] * layer.kernel**2), "sum |dZ||F|")


def _init(layer, in_shape):
    """F (C_out, C_in, k, k) and b (C_out,), fan-in C_in k^2."""
    c_in, k = in_shape[0], layer.kernel
    return c_in * k * k, {"F": (layer.channels, c_in, k, k), "b": (layer.channels,)}


# --- the mistakes (registry entry's catalogue; parity_tests/model_mutants.py runs them) ----


def _pad_end(X, pad):
    """X with 2 pad zeros after its last row and column only: the padded input's size with
    the image at the top-left corner (the padding offset forgotten)."""
    return np.pad(X, ((0, 0), (0, 0), (0, 2 * pad), (0, 2 * pad)))


def _backward_with(dX=None, dF=None, db=None):
    """conv2d_backward with some of its gradients computed another (mistaken) way."""

    def backward(X, F, dZ, stride, pad, bias):
        grads = conv2d_backward(X, F, dZ, stride, pad, bias)
        if dX is not None:
            grads["dX"] = dX(X, F, dZ, stride, pad)
        if dF is not None:
            grads["dF"] = dF(X, F, dZ, stride, pad)
        if db is not None:
            grads["db"] = db(X, F, dZ, stride, pad)
        return grads

    return backward


def grad_input_undilated(X, F, dZ, stride, pad):
    """X5 with the deltas placed side by side (no zeros between them): the stride's
    dilation forgotten. The same as X5 when stride = 1."""
    N, _, H, W = X.shape
    k, (H_out, W_out) = F.shape[2], dZ.shape[2:]
    Hp, Wp = H + 2 * pad, W + 2 * pad
    placed = np.zeros((N, F.shape[0], Hp + k - 1, Wp + k - 1), dtype=dZ.dtype)
    placed[:, :, k - 1 : k - 1 + H_out, k - 1 : k - 1 + W_out] = dZ
    dXp = np.einsum("nohwuv,ocuv->nchw", _windows(placed, k, 1), F[:, :, ::-1, ::-1], optimize=True)
    return np.ascontiguousarray(dXp[:, :, pad : pad + H, pad : pad + W])


def grad_input_corner_crop(X, F, dZ, stride, pad):
    """X5's gradient of the padded input, cropped at its top-left corner instead of the
    pad border on every side."""
    N, C, H, W = X.shape
    dXp = conv2d_grad_input(dZ, F, (N, C, H + 2 * pad, W + 2 * pad), stride, 0)
    return np.ascontiguousarray(dXp[:, :, :H, :W])


def grad_filter_unpadded(X, F, dZ, stride, pad):
    """X4 from the unpadded input indexed as if padded: X[s i + u], not Xp[s i + u]."""
    return conv2d_grad_filter(_pad_end(X, pad), dZ, F.shape[2], stride, 0)


def grad_bias_mean_positions(X, F, dZ, stride, pad):
    """X3 summed over the images but averaged over the positions."""
    return dZ.sum(axis=0).mean(axis=(1, 2))


def grad_bias_one_position(X, F, dZ, stride, pad):
    """X3 summed over the images at position (0, 0) only."""
    return dZ[:, :, 0, 0].sum(axis=0)


def conv_forward_pad_end(X, F, b, stride, pad):
    """X1 with all 2p zeros after the image (bottom/right), none before it."""
    return conv2d_forward(_pad_end(X, pad), F, b, stride, 0)


def conv_backward_pad_end(X, F, dZ, stride, pad, bias):
    """The backward of conv_forward_pad_end, consistent with it."""
    H, W = X.shape[2:]
    grads = conv2d_backward(_pad_end(X, pad), F, dZ, stride, 0, bias)
    grads["dX"] = np.ascontiguousarray(grads["dX"][:, :, :H, :W])
    return grads


_TWO_CONV = "conv(2,3)-relu-conv(3,3{})-relu-dense(10)-softmax_ce"
_PADDED_NET = "conv(4,3,pad=1)-relu-maxpool(2)-dense(10)-softmax_ce"
_POOL_NET = "conv(4,3)-relu-maxpool(2)-dense(10)-softmax_ce"
_STRIDED_NET = "conv(4,5,stride=2)-relu-dense(10)-softmax_ce"
MISTAKES = (
    Mistake(
        id="conv_grad_input_no_dilation",
        equation="X5,X2",
        first="conv2.dX",
        case=Case(_TWO_CONV.format(",stride=2,pad=1")),
        title="conv input gradient without the stride dilation: the deltas placed side by "
        "side instead of every s pixels",
        explains="conv_grad_input_no_dilation",
        backward=_backward_with(dX=grad_input_undilated),
        caught_on="a conv with stride > 1 that needs its input gradient (not the first layer)",
        blind=Case(_TWO_CONV.format(",pad=1")),
    ),
    Mistake(
        id="conv_grad_input_corner_crop",
        equation="X5,X1",
        first="conv2.dX",
        case=Case(_TWO_CONV.format(",pad=1")),
        title="conv input gradient cropped at the top-left corner of the padded gradient "
        "instead of removing the pad border on every side",
        explains="conv_grad_input_crop",
        backward=_backward_with(dX=grad_input_corner_crop),
        caught_on="a padded conv (pad > 0) that needs its input gradient",
        blind=Case(_TWO_CONV.format("")),
    ),
    Mistake(
        id="conv_grad_filter_unpadded",
        equation="X4,X1",
        first="conv1.dF",
        case=Case(_PADDED_NET),
        title="conv filter gradient taken from the unpadded input (indexed as if padded: "
        "X[s i + u] for Xp[s i + u])",
        explains="conv_grad_filter_unpadded",
        backward=_backward_with(dF=grad_filter_unpadded),
        caught_on="a padded conv (pad > 0)",
        blind=Case(_POOL_NET),
    ),
    Mistake(
        id="conv_bias_grad_mean_positions",
        equation="X3",
        first="conv1.db",
        case=Case(_STRIDED_NET),
        title="conv bias gradient summed over the images but averaged over the positions",
        explains="conv_bias_grad_mean_over_positions",
        backward=_backward_with(db=grad_bias_mean_positions),
        caught_on="any conv output larger than 1 x 1",
    ),
    Mistake(
        id="conv_bias_grad_one_position",
        equation="X3",
        first="conv1.db",
        case=Case(_STRIDED_NET),
        title="conv bias gradient summed over the images at position (0, 0) only",
        explains="conv_bias_grad_one_position",
        backward=_backward_with(db=grad_bias_one_position),
        caught_on="any conv output larger than 1 x 1",
    ),
    Mistake(
        id="conv_pad_one_side",
        equation="X1",
        first="conv1.Z",
        case=Case(_PADDED_NET),
        title="conv padding all after the image (2p zeros bottom/right, none top/left, "
        "like TensorFlow's 'SAME' with an odd total) instead of p on every side",
        explains="conv_pad_one_side",
        forward=conv_forward_pad_end,
        backward=conv_backward_pad_end,
        caught_on="a padded conv (pad > 0)",
        blind=Case(_POOL_NET),
    ),
)

CONV = LayerKind(
    name="conv",
    family="conv",
    outputs=("Z",),
    input_grad="dX",
    equations={"Z": "X4", "dF": "X4", "db": "X3", "dX": "X5"},
    forward=conv2d_forward,
    backward=conv2d_backward,
    params_only=lambda X, F, dZ, s, p, bias: conv2d_backward(X, F, dZ, s, p, bias, input_grad=False),
    bound=_bound,
    params=("F", "b"),
    init=_init,
    mistakes=MISTAKES,
    user=(
        "conv_forward(x, w, b, conv_param) -> (out, cache)",
        "conv_backward(dout, cache) -> (dx, dw, db)",
    ),
)

# Its layer kinds' registry entries, collected in reference.layers.KINDS.
ENTRIES = (CONV,)

# Its equations' audit records (reference/equations.py, docs/extensions.md).
EQUATIONS = (
    Equation(
        "X1",
        "padding: each image and channel is surrounded by p zeros on every side, (H, W) -> "
        "(H + 2p, W + 2p), before the windows are taken",
        HOLDS,
        note="symmetric, like torch's padding=p; TensorFlow's 'SAME' puts an odd extra row and "
        "column at the bottom and right, so its mirror pads with tf.pad and uses 'VALID'",
        via=("X4", "X5"),
        via_setting="pad",
    ),
    Equation(
        "X2",
        "stride: windows start every s pixels, so a side of n gives floor((n + 2p - k) / s) + 1 "
        "outputs (pools: p = 0)",
        HOLDS,
        note="a remainder the stride leaves over is dropped, as both frameworks do; the "
        "dropped pixels get a zero input gradient",
        via=("X4", "X5", "X6", "X7"),
        via_setting="stride",
    ),
    Equation(
        "X3",
        "conv bias: b[o] is added at every output position of filter o, so dE/db[o] is the "
        "sum of dZ[n, o, i, j] over images and positions",
        HOLDS,
    ),
    Equation(
        "X4",
        "channels: Z[n, o, i, j] = sum over input channels c and offsets u, v of "
        "F[o, c, u, v] Xp[n, c, s i + u, s j + v] (+ b[o]); dE/dF[o, c, u, v] = sum over "
        "n, i, j of dZ[n, o, i, j] Xp[n, c, s i + u, s j + v]",
        HOLDS,
        note="a cross-correlation (the filter is not flipped), as E1 and both frameworks; "
        "the filter gradient reads the padded input Xp",
    ),
    Equation(
        "X5",
        "conv input gradient: each delta goes back through its filter to every pixel of its "
        "window, dE/dXp[n, c, s i + u, s j + v] += dZ[n, o, i, j] F[o, c, u, v], then the "
        "padding border is cropped",
        HOLDS,
        note="computed as one matrix product F^T dZ giving every window element's share, then "
        "added back onto the padded image window by window (col2im, the adjoint of the "
        "forward's im2col); pixels no window covers get 0",
    ),
)

"""Fast kernels for the spec networks' layers: the same tensors as reference/layers/, faster.

reference/layers/ is what an auditor reads: one validated function per quantity. This module
computes the same tensors for the kinds where time goes in LeNet (conv, maxpool, relu,
dense) and is what the spec networks' checks run by default (`fast_network(spec)`, a
`reference.network.Network` whose `ops` are these kernels); the readable Network stays the
reference they are checked against. parity_tests/test_fast_layers.py proves every tensor
of every kernel equal to its readable function, both dtypes, several shapes, strides and
paddings: value for value (a zero may carry the other sign), and in one stated case, where
the readable layer's matrix is a column-major view that NumPy hands to BLAS transposed,
within the stage rule's rounding bound (2 gamma(k) M, parity_tests/model_stages.py).

What makes them faster, each measured (benchmarks/README.md):

- a convolution copies its windows once into a reused buffer (`cols`, the readable layer's
  im2col matrix), makes the readable layer's own matrix products (the same shapes, so the
  same BLAS kernels and roundings) into reused buffers, adds the bias on the way to NCHW,
  and keeps `cols` for the filter gradient of the same step (the readable layer copies the
  windows again in backward);
- the input gradient adds the k^2 window offsets' products straight into the gradient (the
  readable layer zero-fills k^2 planes the size of the padded input, then sums them), per
  pixel the same terms in the same order;
- pooling reduces over k^2 strided views of the input (no planes copy);
- every large array comes from a per-network `Workspace` and is reused by the next step
  once nothing holds it any more (the article's arena does the same per step): a training
  loop that drops each step's tensors allocates nothing after its first step.

Inputs are not validated here: `Network.train_step` validates X and the parameters once,
and every other input of a kernel is an output of the kernel before it. A non-finite value
the readable layers would refuse (an overflow inside the network) propagates here.
One network's steps run one at a time (the Workspace is not shared between threads).
"""

from __future__ import annotations

import sys
from functools import partial

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from reference.layers import activations, conv2d, dense, pool
from reference.network import Network, Ops
from reference.trace import implements

# How many buffers of one role and shape a Workspace keeps for reuse. A caller that keeps
# every step's tensors (the checks' harness) makes it allocate fresh ones beyond these,
# which are then simply the caller's arrays (not kept here).
KEEP = 4


class Workspace:
    """Reusable buffers, by role and shape: `take(role, shape, dtype)` returns one that no
    one else holds (nothing but this workspace refers to it, no view of it is alive), else a
    new one. Roles keep buffers with different invariants apart (a padded copy's zero
    border is written once, when its buffer is made)."""

    def __init__(self, keep: int = KEEP):
        self.keep = keep  # 0: nothing kept (each step's arrays freed with the caller's last use)
        self._buffers: dict = {}
        self.windows: dict = {}  # conv: id(X) -> (X, padded copy, cols) from forward to backward

    def take(self, role: str, shape: tuple, dtype, zeros: bool = False) -> np.ndarray:
        dtype = np.dtype(dtype)
        kept = self._buffers.setdefault((role, shape, dtype.str), [])
        for buffer in kept:
            # Held only by `kept`, this loop's variable and getrefcount's argument: free.
            if sys.getrefcount(buffer) == 3:
                return buffer
        buffer = np.zeros(shape, dtype) if zeros else np.empty(shape, dtype)
        if len(kept) < self.keep:
            kept.append(buffer)
        return buffer

    def nbytes(self) -> int:
        """Bytes of the buffers kept (not counting those only a caller holds)."""
        return sum(b.nbytes for kept in self._buffers.values() for b in kept)


# --- convolution (X1..X5) ------------------------------------------------------------------


def _geometry(x_shape, F, stride, pad):
    N, C, H, W = x_shape
    k = F.shape[2]
    return N, C, H, W, k, (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1


@implements("X1", "X2", proven_equal_to=(conv2d._im2col,))
def _cols(ws, X, k, stride, pad):
    """(Xp, cols): Xp = X padded (X1) in a workspace buffer (its zero border written once),
    cols (C k k, N H_out W_out) = every window a column, cols[(c, u, v), (n, i, j)] =
    Xp[n, c, s i + u, s j + v] (X2): the readable layer's _im2col, into a reused buffer."""
    N, C, H, W = X.shape
    Xp = ws.take("Xp", (N, C, H + 2 * pad, W + 2 * pad), X.dtype, zeros=True)
    Xp[:, :, pad : pad + H, pad : pad + W] = X
    windows = sliding_window_view(Xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    H_out, W_out = windows.shape[2:4]
    cols = ws.take("cols", (C, k, k, N, H_out, W_out), X.dtype)
    np.copyto(cols, windows.transpose(1, 4, 5, 0, 2, 3))  # [c, u, v, n, i, j]
    return Xp, cols.reshape(C * k * k, N * H_out * W_out)


@implements("X3", "X4", proven_equal_to=(conv2d.conv2d_forward,))
def conv_forward(ws, X, F, b, stride, pad):
    """X1..X4: Z = F (C_out, C_in k k) @ cols (+ b), the readable layer's one product, into
    workspace buffers. The windows are kept for this X's backward (`ws.windows`).
    X (N, C_in, H, W); F (C_out, C_in, k, k); b (C_out,) or None -> Z (N, C_out, H_out, W_out)."""
    N, C, H, W, k, H_out, W_out = _geometry(X.shape, F, stride, pad)
    C_out = F.shape[0]
    Xp, cols = _cols(ws, X, k, stride, pad)
    Z2 = ws.take("Z2", (C_out, cols.shape[1]), X.dtype)
    np.matmul(F.reshape(C_out, -1), cols, out=Z2)
    Z = ws.take("Z", (N, C_out, H_out, W_out), X.dtype)
    nchw = Z2.reshape(C_out, N, H_out * W_out).transpose(1, 0, 2)
    if b is None:
        np.copyto(Z.reshape(N, C_out, -1), nchw)
    else:  # the bias added on the way to NCHW: one pass, the same sums
        np.add(nchw, b[:, None], out=Z.reshape(N, C_out, -1))
    if len(ws.windows) >= KEEP:  # forwards without their backward (forward-only calls)
        ws.windows.pop(next(iter(ws.windows)))
    ws.windows[id(X)] = (X, Xp, cols, k, stride, pad)
    return Z


def _windows_of(ws, X, k, stride, pad):
    """The forward's cols of this very X (same array, same values, same geometry), taken
    out of the workspace; else cols made again."""
    kept = ws.windows.pop(id(X), None)
    if kept is not None:
        X0, Xp, cols, *geometry = kept
        H, W = X.shape[2:]
        if (
            X0 is X
            and geometry == [k, stride, pad]
            and np.array_equal(Xp[:, :, pad : pad + H, pad : pad + W], X)
        ):
            return cols
    return _cols(ws, X, k, stride, pad)[1]


@implements("X4", proven_equal_to=(conv2d._grad_filter,))
def _grad_filter(cols, dZ2, F):
    """X4: dF = dZ2 (C_out, N H_out W_out) @ cols^T, the readable layer's product, from the
    forward's cols."""
    return (dZ2 @ cols.T).reshape(F.shape)


@implements("X5", proven_equal_to=(conv2d._grad_input,))
def _grad_input(ws, dZ2, F, x_shape, stride, pad):
    """X5: G = F^T (C_in k k, C_out) @ dZ2 (dZ as (C_out, N H_out W_out)), the readable
    layer's product (the same shapes: a product of another shape may round differently in
    BLAS's edge kernels); then for each window offset (u, v) in row-major order, G[(c, u, v),
    (n, i, j)] added at pixel (s i + u, s j + v) of the padded input's gradient, which is
    cropped: per pixel the same sum, in the same (u, v) order, as conv2d._col2im's planes,
    without its k^2 zero-filled planes of the padded input."""
    N, C, H, W, k, H_out, W_out = _geometry(x_shape, F, stride, pad)
    C_out, Hp, Wp = F.shape[0], H + 2 * pad, W + 2 * pad
    acc = ws.take("dXp_cn", (C, N, Hp, Wp), F.dtype)  # G's (c, n) order: contiguous adds
    acc.fill(0)
    G = ws.take("G", (C * k * k, dZ2.shape[1]), F.dtype)
    np.matmul(F.reshape(C_out, -1).T, dZ2, out=G)
    G = G.reshape(C, k, k, N, H_out, W_out)
    rows, cols = (H_out - 1) * stride + 1, (W_out - 1) * stride + 1
    for u in range(k):  # k^2 offsets, each one vectorised add over C N H_out W_out values
        for v in range(k):
            acc[:, :, u : u + rows : stride, v : v + cols : stride] += G[:, u, v]
    dX = ws.take("dX", x_shape, F.dtype)
    np.copyto(dX, acc[:, :, pad : pad + H, pad : pad + W].transpose(1, 0, 2, 3))
    return dX


@implements("X3", "X4", "X5", proven_equal_to=(conv2d.conv2d_backward,))
def conv_backward(ws, X, F, dZ, stride, pad, bias, input_grad=True):
    """X3..X5 with the forward's windows: {"dX" (when input_grad), "dF", "db" (when bias)}.
    X (N, C_in, H, W); F (C_out, C_in, k, k); dZ (N, C_out, H_out, W_out) -> dX X's shape,
    dF F's, db (C_out,)."""
    N, C, H, W, k, H_out, W_out = _geometry(X.shape, F, stride, pad)
    C_out = F.shape[0]
    dZ2 = ws.take("dZ2", (C_out, N, H_out, W_out), F.dtype)
    np.copyto(dZ2, dZ.transpose(1, 0, 2, 3))  # the readable layer's _from_nchw
    dZ2 = dZ2.reshape(C_out, -1)
    cols = _windows_of(ws, X, k, stride, pad)
    grads = {"dX": _grad_input(ws, dZ2, F, X.shape, stride, pad)} if input_grad else {}
    grads["dF"] = _grad_filter(cols, dZ2, F)
    if bias:
        grads["db"] = conv2d._grad_bias(dZ)
    return grads


# --- pooling (X6, X7) -------------------------------------------------------------------


def _offsets(X, k, stride):
    """[(u, v, view)]: for each window offset in row-major order, the view V[n, c, i, j] =
    X[n, c, s i + u, s j + v] over every window (no copy)."""
    rows = (X.shape[2] - k) // stride * stride + 1  # the span of the windows' first rows
    cols = (X.shape[3] - k) // stride * stride + 1
    views = [X[:, :, u : u + rows : stride, v : v + cols : stride] for u in range(k) for v in range(k)]
    return [(i // k, i % k, view) for i, view in enumerate(views)]


def _window_max(ws, X, k, stride, role):
    views = _offsets(X, k, stride)
    A = ws.take(role, views[0][2].shape, X.dtype)
    np.copyto(A, views[0][2])
    for _, _, view in views[1:]:
        np.maximum(A, view, out=A)
    return A, views


@implements("X6", proven_equal_to=(pool.max_pool_forward,))
def max_pool_forward(ws, X, k, stride):
    """X6: the window maximum as k^2 - 1 elementwise maxima of the offsets' views."""
    return _window_max(ws, X, k, stride, "pool_A")[0]


@implements("X6", proven_equal_to=(pool.max_pool_backward,))
def max_pool_backward(ws, X, dA, k, stride):
    """X6: dA added at each window's FIRST maximum in row-major (u, v) order: offsets are
    visited in that order and an offset takes the windows where it equals the maximum and
    no earlier offset did."""
    A, views = _window_max(ws, X, k, stride, "pool_max")
    dX = ws.take("pool_dX", X.shape, dA.dtype)
    tiles = stride == k  # every element in at most one window: its delta is written, not added
    if not tiles or A.shape[2] * k != X.shape[2] or A.shape[3] * k != X.shape[3]:
        dX.fill(0)  # overlaps add up; elements past the last window get 0
    hit = ws.take("pool_hit", A.shape, np.bool_)
    taken = ws.take("pool_taken", A.shape, np.bool_)
    taken.fill(False)
    sent = None if tiles else ws.take("pool_sent", A.shape, dA.dtype)
    for (_, _, view), (_, _, target) in zip(views, _offsets(dX, k, stride)):
        np.equal(view, A, out=hit)
        np.greater(hit, taken, out=hit)  # a maximum no earlier offset took
        taken |= hit
        if tiles:
            np.multiply(dA, hit, out=target)
        else:
            target += np.multiply(dA, hit, out=sent)
    # A zero here may be -0.0 (False times a negative delta) where the readable layer has
    # 0.0: equal values (the comparisons' metrics read -0.0 as 0.0), one pass fewer.
    return dX


# --- ReLU (X8) and dense (X10) ----------------------------------------------------------


@implements("X8", proven_equal_to=(activations.relu,))
def relu(ws, Z):
    """X8: max(0, Z) into a workspace buffer."""
    return np.maximum(Z, 0, out=ws.take("relu_A", Z.shape, Z.dtype))


@implements("X8", proven_equal_to=(activations.relu_backward,))
def relu_backward(ws, dA, Z, A):
    """X8: dA [Z > 0]. A negative delta times 0 stays -0.0 here (the readable layer adds 0
    to make it 0.0): equal values, one pass fewer."""
    mask = np.greater(Z, 0, out=ws.take("relu_mask", Z.shape, np.bool_))
    return np.multiply(dA, mask, out=ws.take("relu_dZ", Z.shape, Z.dtype))


@implements("X10", proven_equal_to=(dense.dense_forward,))
def dense_forward(ws, A, W, b):
    """X10: Z = A @ W + b, into a workspace buffer (the same product as the readable layer)."""
    Z = np.matmul(A, W, out=ws.take("dense_Z", (A.shape[0], W.shape[1]), A.dtype))
    if b is not None:
        Z += b
    return Z


@implements("X10", proven_equal_to=(dense.dense_backward,))
def dense_backward(ws, A, W, dZ, bias):
    """X10: dA = dZ @ W^T (into a workspace buffer), dW = A^T @ dZ, db = sum over images."""
    dA = np.matmul(dZ, W.T, out=ws.take("dense_dA", A.shape, A.dtype))
    grads = {"dA": dA, "dW": A.T @ dZ}
    if bias:
        grads["db"] = dZ.sum(axis=0)
    return grads


# --- the ops of a fast network ----------------------------------------------------------


def fast_ops(ws: Workspace | None = None) -> dict[str, Ops]:
    """{kind: Ops} of the kernels above, bound to one Workspace (a fresh one by default);
    the other kinds keep their readable functions (Network's defaults)."""
    ws = Workspace() if ws is None else ws

    def conv_params_only(X, F, dZ, s, p, bias):
        return conv_backward(ws, X, F, dZ, s, p, bias, input_grad=False)

    return {
        "conv": Ops(
            partial(conv_forward, ws),
            partial(conv_backward, ws),
            conv_params_only,
        ),
        "maxpool": Ops(partial(max_pool_forward, ws), partial(max_pool_backward, ws)),
        "relu": Ops(partial(relu, ws), partial(relu_backward, ws)),
        "dense": Ops(partial(dense_forward, ws), partial(dense_backward, ws)),
    }


# The kinds with a fast kernel (every other kind runs its readable function).
FAST_KINDS = tuple(fast_ops(Workspace(0)))


def fast_network(spec, keep: int = KEEP) -> Network:
    """The spec's Network on the fast kernels, with a Workspace of its own that keeps up to
    `keep` buffers of each role and shape between steps (0: none, for a caller that keeps
    every step's tensors anyway, as the checks' harness does)."""
    return Network(spec, ops=fast_ops(Workspace(keep)))

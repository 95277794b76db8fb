"""Layers as a CS231n student writes them: forward returns (out, cache), backward takes
(dout, cache). NCHW, batch first, plain NumPy, written independently of reference/.

    pytest parity_tests/test_own_layers.py \\
        --parity-layer=conv=examples/cs231n_layers/layers.py:conv_forward,examples/cs231n_layers/layers.py:conv_backward

checks one kind (docs/own_layers.md); the suite checks this file by default. Every function
keeps its inputs' dtype (zeros_like, not zeros) and leaves its arguments as they are.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def affine_forward(x, w, b):
    """x (N, d1, ..., dk) reshaped to (N, D); w (D, M); b (M,) -> out (N, M)."""
    out = x.reshape(x.shape[0], -1) @ w + b
    cache = (x, w, b)
    return out, cache


def affine_backward(dout, cache):
    x, w, b = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    out = np.maximum(x, 0)
    cache = x
    return out, cache


def relu_backward(dout, cache):
    x = cache
    dx = dout * (x > 0)  # the derivative is 0 at x = 0
    return dx


def sigmoid_forward(x):
    # exp of -|x| only: no overflow for large negative x.
    e = np.exp(-np.abs(x))
    out = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    cache = out
    return out, cache


def sigmoid_backward(dout, cache):
    out = cache
    return dout * out * (1 - out)


def tanh_forward(x):
    out = np.tanh(x)
    cache = out
    return out, cache


def tanh_backward(dout, cache):
    out = cache
    return dout * (1 - out * out)


def _windows(x, hh, ww, stride):
    """(N, C, H, W) -> (N, C, H_out, W_out, hh, ww): every window, a view."""
    return sliding_window_view(x, (hh, ww), axis=(2, 3))[:, :, ::stride, ::stride]


def conv_forward(x, w, b, conv_param):
    """x (N, C, H, W); w (F, C, HH, WW); b (F,); conv_param {"stride", "pad"}
    -> out (N, F, H_out, W_out), H_out = 1 + (H + 2 pad - HH) // stride."""
    stride, pad = conv_param["stride"], conv_param["pad"]
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = _windows(x_pad, w.shape[2], w.shape[3], stride)
    # (N, C, H_out, W_out, HH, WW) x (F, C, HH, WW) -> (N, H_out, W_out, F)
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    out = out + b[None, :, None, None]
    cache = (x, w, b, conv_param)
    return out, cache


def conv_backward(dout, cache):
    x, w, b, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    _, _, H, W = x.shape
    _, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = _windows(x_pad, HH, WW, stride)
    db = dout.sum(axis=(0, 2, 3))
    dw = np.tensordot(dout, windows, axes=([0, 2, 3], [0, 2, 3]))  # (F, C, HH, WW)
    dx_pad = np.zeros_like(x_pad)
    for i in range(HH):
        for j in range(WW):
            # window (r, c) read x_pad[stride r + i, stride c + j] through w[:, :, i, j]
            contribution = np.tensordot(dout, w[:, :, i, j], axes=([1], [0]))  # (N, H_out, W_out, C)
            rows = slice(i, i + stride * H_out, stride)
            cols = slice(j, j + stride * W_out, stride)
            dx_pad[:, :, rows, cols] += contribution.transpose(0, 3, 1, 2)
    dx = dx_pad[:, :, pad : pad + H, pad : pad + W]
    return dx, dw, db


def max_pool_forward(x, pool_param):
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    out = _windows(x, ph, pw, stride).max(axis=(4, 5))
    cache = (x, pool_param)
    return out, cache


def max_pool_backward(dout, cache):
    x, pool_param = cache
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    N, C, H_out, W_out = dout.shape
    windows = _windows(x, ph, pw, stride).reshape(N, C, H_out, W_out, ph * pw)
    first = windows.argmax(axis=-1)  # the FIRST maximum of each window, in row-major order
    di, dj = np.divmod(first, pw)
    rows = stride * np.arange(H_out)[None, None, :, None] + di
    cols = stride * np.arange(W_out)[None, None, None, :] + dj
    n = np.arange(N)[:, None, None, None]
    c = np.arange(C)[None, :, None, None]
    dx = np.zeros_like(x)
    np.add.at(dx, (n, c, rows, cols), dout)  # overlapping windows add up
    return dx


def avg_pool_forward(x, pool_param):
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    out = _windows(x, ph, pw, stride).mean(axis=(4, 5))
    cache = (x, pool_param)
    return out, cache


def avg_pool_backward(dout, cache):
    x, pool_param = cache
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    _, _, H_out, W_out = dout.shape
    dx = np.zeros_like(x)
    share = dout / (ph * pw)
    for i in range(ph):
        for j in range(pw):
            dx[:, :, i : i + stride * H_out : stride, j : j + stride * W_out : stride] += share
    return dx


def softmax_loss(x, y):
    """x (N, C) scores, y (N,) labels -> (loss, dx): the mean cross-entropy over the N images."""
    N = x.shape[0]
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    probs = np.exp(log_probs)
    loss = -log_probs[np.arange(N), y].sum() / N
    dx = probs.copy()
    dx[np.arange(N), y] -= 1
    dx /= N
    return loss, dx

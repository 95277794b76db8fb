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


# --- normalisation and dropout (CS231n assignment 2) --------------------------------------
#
# bn_param: {"mode": "train" or "test", "eps", "momentum", "running_mean", "running_var"};
# training mode updates the running statistics IN bn_param (the caller reads them back):
# running = momentum * running + (1 - momentum) * batch statistic, with the batch's BIASED
# variance (the one it normalised with). Test mode normalises with the running statistics.


def batchnorm_forward(x, gamma, beta, bn_param):
    """x (N, D); gamma, beta (D,) -> out (N, D)."""
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    D = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))
    if mode == "train":
        mu = x.mean(axis=0)
        xc = x - mu
        var = (xc * xc).mean(axis=0)
        std = np.sqrt(var + eps)
        xhat = xc / std
        out = gamma * xhat + beta
        cache = (xc, std, xhat, gamma)
        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
    elif mode == "test":
        out = gamma * ((x - running_mean) / np.sqrt(running_var + eps)) + beta
        cache = None
    else:
        raise ValueError(f"invalid batchnorm mode {mode!r}")
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, cache


def batchnorm_backward(dout, cache):
    """The staged chain through the forward's graph: xhat = xc / std, std = sqrt(var + eps),
    var = mean(xc^2), xc = x - mu, mu = mean(x)."""
    xc, std, xhat, gamma = cache
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    dstd = -(dxhat * xc).sum(axis=0) / (std * std)
    dvar = dstd / (2 * std)
    dxc = dxhat / std + 2 * xc * dvar / N
    dmu = -dxc.sum(axis=0)
    dx = dxc + dmu / N
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """The same gradient as one expression: dx = (dxhat - mean dxhat - xhat mean(dxhat xhat)) / std."""
    xc, std, xhat, gamma = cache
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    dx = (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0)) / std
    return dx, dgamma, dbeta


def _channels_last(x):
    """(N, C, H, W) -> (N H W, C): spatial batch norm is batch norm with H and W folded
    into the batch."""
    N, C, H, W = x.shape
    return x.transpose(0, 2, 3, 1).reshape(-1, C)


def _channels_first(y, shape):
    N, C, H, W = shape
    return y.reshape(N, H, W, C).transpose(0, 3, 1, 2)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """x (N, C, H, W); gamma, beta (C,) -> out (N, C, H, W)."""
    out, cache = batchnorm_forward(_channels_last(x), gamma, beta, bn_param)
    return _channels_first(out, x.shape), (cache, x.shape)


def spatial_batchnorm_backward(dout, cache):
    cache, shape = cache
    dx, dgamma, dbeta = batchnorm_backward_alt(_channels_last(dout), cache)
    return _channels_first(dx, shape), dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    """x (N, D); gamma, beta (D,); ln_param {"eps"}: each image over its own D values."""
    eps = ln_param.get("eps", 1e-5)
    mu = x.mean(axis=1, keepdims=True)
    xc = x - mu
    std = np.sqrt((xc * xc).mean(axis=1, keepdims=True) + eps)
    xhat = xc / std
    return gamma * xhat + beta, (std, xhat, gamma)


def layernorm_backward(dout, cache):
    std, xhat, gamma = cache
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    dx = (
        dxhat - dxhat.mean(axis=1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=1, keepdims=True)
    ) / std
    return dx, dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """x (N, C, H, W); gamma, beta (1, C, 1, 1); G groups of C / G consecutive channels, each
    normalised per image over its channels and positions."""
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    mu = xg.mean(axis=2, keepdims=True)
    xc = xg - mu
    std = np.sqrt((xc * xc).mean(axis=2, keepdims=True) + eps)
    xhat = (xc / std).reshape(x.shape)
    return gamma * xhat + beta, (G, std, xhat, gamma)


def spatial_groupnorm_backward(dout, cache):
    G, std, xhat, gamma = cache
    N = dout.shape[0]
    dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)
    dgamma = (dout * xhat).sum(axis=(0, 2, 3), keepdims=True)
    dxhat = (dout * gamma).reshape(N, G, -1)
    xh = xhat.reshape(N, G, -1)
    dx = (
        dxhat - dxhat.mean(axis=2, keepdims=True) - xh * (dxhat * xh).mean(axis=2, keepdims=True)
    ) / std
    return dx.reshape(dout.shape), dgamma, dbeta


def dropout_forward(x, dropout_param):
    """Inverted dropout. dropout_param {"p", "mode", "seed"}: p is the probability of KEEPING
    a value (CS231n's convention since 2019); kept values are scaled by 1 / p in training,
    and mode "test" returns x as it is."""
    p, mode = dropout_param["p"], dropout_param["mode"]
    if "seed" in dropout_param:
        np.random.seed(dropout_param["seed"])
    mask = None
    if mode == "train":
        mask = ((np.random.rand(*x.shape) < p) / p).astype(x.dtype)
        out = x * mask
    elif mode == "test":
        out = x
    else:
        raise ValueError(f"invalid dropout mode {mode!r}")
    return out, (dropout_param, mask)


def dropout_backward(dout, cache):
    dropout_param, mask = cache
    if dropout_param["mode"] == "train":
        return dout * mask
    return dout

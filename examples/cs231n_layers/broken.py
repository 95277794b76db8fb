"""layers.py with eight mistakes students make, each marked "PLANTED MISTAKE" (the suite's
own test, parity_tests/test_own_layers_examples.py, checks that each is caught, named and
pinned to the hyper-parameters that trigger it):

- conv_backward places the deltas of dx side by side, without the stride dilation: wrong
  only when stride > 1;
- max_pool_backward sends a window's gradient to every maximum of a tied window, not to
  the first one only: wrong only where a window holds its maximum twice (after a ReLU, a
  window of zeros);
- softmax_loss's dx lacks the 1/N of the mean: wrong only when N > 1;
- batchnorm_backward leaves out the path through the batch mean (its backward_alt is
  layers.py's): wrong wherever the upstream gradient's mean over the batch is not 0;
- spatial_batchnorm_forward takes a statistic per channel AND position (H and W not folded
  into the batch): wrong only when H W > 1;
- layernorm_forward normalises each feature over the batch (batch norm's axis), not each
  image over its features;
- spatial_groupnorm_forward puts channel c in group c mod G, not c // (C / G): wrong only
  when G > 1 and a group holds more than one channel;
- dropout_forward and dropout_backward leave out the 1 / p scaling of the kept values:
  wrong only when p < 1.

Every other kind is layers.py's correct one (imported below), so this file drops into the
commands of README.md and docs/own_layers.md in place of layers.py:

    L=examples/cs231n_layers/broken.py   # eight planted mistakes: each is caught and named
    .venv/bin/python -m pytest parity_tests/test_own_layers.py --parity-data=synthetic \\
      --parity-layer=maxpool=$L:max_pool_forward,$L:max_pool_backward

    .venv/bin/python -m pytest parity_tests/test_own_layers.py parity_tests/test_model.py \\
      --parity-model=lenet --parity-reduction=mean \\
      --parity-layer=conv=$L:conv_forward,$L:conv_backward \\
      --parity-layer=relu=$L:relu_forward,$L:relu_backward \\
      --parity-layer=maxpool=$L:max_pool_forward,$L:max_pool_backward \\
      --parity-layer=dense=$L:affine_forward,$L:affine_backward \\
      --parity-layer=softmax_ce=$L:softmax_loss
"""

import importlib.util
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _correct_layers():
    """layers.py beside this file, loaded by its path: --parity-layer loads this file by
    path too, so its folder is not on sys.path and `from layers import ...` would fail."""
    spec = importlib.util.spec_from_file_location(
        "cs231n_layers_correct", Path(__file__).with_name("layers.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_correct = _correct_layers()
# The kinds with no planted mistake: layers.py's own functions.
affine_forward, affine_backward = _correct.affine_forward, _correct.affine_backward
relu_forward, relu_backward = _correct.relu_forward, _correct.relu_backward
sigmoid_forward, sigmoid_backward = _correct.sigmoid_forward, _correct.sigmoid_backward
tanh_forward, tanh_backward = _correct.tanh_forward, _correct.tanh_backward
avg_pool_forward, avg_pool_backward = _correct.avg_pool_forward, _correct.avg_pool_backward
batchnorm_forward, batchnorm_backward_alt = _correct.batchnorm_forward, _correct.batchnorm_backward_alt
layernorm_backward = _correct.layernorm_backward


def _windows(x, hh, ww, stride):
    return sliding_window_view(x, (hh, ww), axis=(2, 3))[:, :, ::stride, ::stride]


def conv_forward(x, w, b, conv_param):
    stride, pad = conv_param["stride"], conv_param["pad"]
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = _windows(x_pad, w.shape[2], w.shape[3], stride)
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
    dw = np.tensordot(dout, windows, axes=([0, 2, 3], [0, 2, 3]))
    dx_pad = np.zeros_like(x_pad)
    for i in range(HH):
        for j in range(WW):
            contribution = np.tensordot(dout, w[:, :, i, j], axes=([1], [0]))
            # PLANTED MISTAKE: window (r, c) starts at (stride r, stride c), but its delta is
            # put at (r + i, c + j): the rows and columns should be i : ... : stride.
            dx_pad[:, :, i : i + H_out, j : j + W_out] += contribution.transpose(0, 3, 1, 2)
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
    _, _, H_out, W_out = dout.shape
    windows = _windows(x, ph, pw, stride)
    # PLANTED MISTAKE: the mask is every element equal to the window's maximum, so a tied
    # window gives its whole delta to each of its maxima (the first one only is right).
    mask = windows == windows.max(axis=(4, 5), keepdims=True)
    dx = np.zeros_like(x)
    for i in range(ph):
        for j in range(pw):
            rows = slice(i, i + stride * H_out, stride)
            cols = slice(j, j + stride * W_out, stride)
            dx[:, :, rows, cols] += mask[:, :, :, :, i, j] * dout
    return dx


def softmax_loss(x, y):
    N = x.shape[0]
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    probs = np.exp(log_probs)
    loss = -log_probs[np.arange(N), y].sum() / N
    dx = probs.copy()
    dx[np.arange(N), y] -= 1
    # PLANTED MISTAKE: the loss is the mean over the N images, so dx needs "dx /= N" too.
    return loss, dx


def batchnorm_backward(dout, cache):
    xc, std, xhat, gamma = cache
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    dvar = -(dxhat * xc).sum(axis=0) / (std * std) / (2 * std)
    # PLANTED MISTAKE: mu = mean(x) depends on x too, so dx also needs the term through mu,
    # dx = dxc - dxc.mean(axis=0); this is dxc alone.
    dx = dxhat / std + 2 * xc * dvar / N
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    # PLANTED MISTAKE: x is reshaped to (N, C H W) and batch-normalised as it is: a mean and
    # variance per channel and position (over the N images only), where spatial batch norm
    # folds H and W into the batch, (N H W, C). gamma and beta are repeated per position.
    flat = x.reshape(N, -1)
    stats = ("running_mean", "running_var")
    inner = dict(bn_param, **{k: np.repeat(bn_param.get(k, np.zeros(C, x.dtype)), H * W) for k in stats})
    out, cache = batchnorm_forward(flat, np.repeat(gamma, H * W), np.repeat(beta, H * W), inner)
    for key in stats:  # back to one statistic per channel
        bn_param[key] = inner[key].reshape(C, H * W).mean(axis=1)
    return out.reshape(x.shape), (cache, x.shape)


def spatial_batchnorm_backward(dout, cache):
    """The gradient of the forward above (the mistake is in the forward)."""
    cache, (N, C, H, W) = cache
    dx, dgamma, dbeta = batchnorm_backward_alt(dout.reshape(N, -1), cache)
    return dx.reshape(dout.shape), dgamma.reshape(C, -1).sum(axis=1), dbeta.reshape(C, -1).sum(axis=1)


def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    # PLANTED MISTAKE: axis=0 is the batch: each feature over the images (batch norm), where
    # layer norm takes each image over its own features (axis=1).
    mu = x.mean(axis=0, keepdims=True)
    xc = x - mu
    std = np.sqrt((xc * xc).mean(axis=0, keepdims=True) + eps)
    xhat = xc / std
    return gamma * xhat + beta, (std, xhat, gamma)


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    # PLANTED MISTAKE: (N, C // G, G, ...) puts channel c in group c % G (the groups
    # interleaved); the groups are the C / G consecutive channels, x.reshape(N, G, -1).
    xg = x.reshape(N, C // G, G, H * W)
    mu = xg.mean(axis=(1, 3), keepdims=True)
    xc = xg - mu
    std = np.sqrt((xc * xc).mean(axis=(1, 3), keepdims=True) + eps)
    xhat = (xc / std).reshape(x.shape)
    return gamma * xhat + beta, (G, std, xhat, gamma)


def spatial_groupnorm_backward(dout, cache):
    """The gradient of the forward above (the mistake is in the forward)."""
    G, std, xhat, gamma = cache
    N, C, H, W = dout.shape
    dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)
    dgamma = (dout * xhat).sum(axis=(0, 2, 3), keepdims=True)
    dxhat = (dout * gamma).reshape(N, C // G, G, H * W)
    xh = xhat.reshape(N, C // G, G, H * W)
    mean = dxhat.mean(axis=(1, 3), keepdims=True)
    dx = (dxhat - mean - xh * (dxhat * xh).mean(axis=(1, 3), keepdims=True)) / std
    return dx.reshape(dout.shape), dgamma, dbeta


def dropout_forward(x, dropout_param):
    p, mode = dropout_param["p"], dropout_param["mode"]
    if "seed" in dropout_param:
        np.random.seed(dropout_param["seed"])
    mask = None
    if mode == "train":
        # PLANTED MISTAKE: the kept values are not scaled by 1 / p (inverted dropout), so
        # the expected activation in training is p x, not x as at test time.
        mask = (np.random.rand(*x.shape) < p).astype(x.dtype)
        out = x * mask
    else:
        out = x
    return out, (dropout_param, mask)


def dropout_backward(dout, cache):
    dropout_param, mask = cache
    return dout * mask if dropout_param["mode"] == "train" else dout

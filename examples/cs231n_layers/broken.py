"""layers.py with three mistakes students make, each marked "PLANTED MISTAKE" (the suite's
own test, parity_tests/test_own_layers_examples.py, checks that each is caught, named and
pinned to the hyper-parameters that trigger it):

- conv_backward places the deltas of dx side by side, without the stride dilation: wrong
  only when stride > 1;
- max_pool_backward sends a window's gradient to every maximum of a tied window, not to
  the first one only: wrong only where a window holds its maximum twice (after a ReLU, a
  window of zeros);
- softmax_loss's dx lacks the 1/N of the mean: wrong only when N > 1.

Every other kind is layers.py's correct one (imported below), so this file drops into the
commands of README.md and docs/own_layers.md in place of layers.py:

    L=examples/cs231n_layers/broken.py   # three planted mistakes: each is caught and named
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

"""The stage rule for every tensor of a spec-built network (reference/network.py).

A stage-isolated check feeds one framework layer the reference's input to that layer, its
parameters and the reference's upstream gradient; both sides then round the same
expression. As for the article's stages (parity_tests/stages.py), the allowance is
2 gamma(k) M: M the expression evaluated on absolute values (our own layer functions fed
|x|, |F|, |dZ|, ...), k the roundings of its longest chain, counted in
parity_tests/tolerance.py with its reason. Re-indexing and selection (flatten, ReLU,
max-pool's forward) get the exact rule.

`EQUATIONS` gives each (layer kind, tensor) its equation id for the records.
"""

from __future__ import annotations

import math

import numpy as np

from parity_tests import tolerance
from reference.layers import conv2d, dense, pool
from reference.network import Network, Node

EQUATIONS = {
    ("conv", "Z"): "X4",
    ("conv", "dF"): "X4",
    ("conv", "db"): "X3",
    ("conv", "dX"): "X5",
    ("maxpool", "A"): "X6",
    ("maxpool", "dX"): "X6",
    ("avgpool", "A"): "X7",
    ("avgpool", "dX"): "X7",
    ("relu", "A"): "X8",
    ("relu", "dZ"): "X8",
    ("tanh", "A"): "X9",
    ("tanh", "dZ"): "X9",
    ("sigmoid", "A"): "E3",
    ("sigmoid", "dZ"): "E9",
    ("flatten", "A"): "E4",
    ("flatten", "dX"): "E4",
    ("dense", "Z"): "X10",
    ("dense", "dA"): "X10",
    ("dense", "dW"): "X10",
    ("dense", "db"): "X10",
    ("softmax_ce", "P"): "X11",
    ("softmax_ce", "E"): "X12",
    ("softmax_ce", "dZ"): "X12",
    ("mse", "E"): "E7",
    ("mse", "dO"): "E8",
}
UPDATE_EQUATION = "E17"


def equation(net: Network, tensor: str) -> str:
    node, short = net.node_of(tensor), tensor.split(".", 1)[1]
    if short.endswith("_new"):
        return UPDATE_EQUATION
    return EQUATIONS[(node.kind, short)]


def quantity(net: Network, tensor: str) -> str:
    if tensor in net.forward_names:
        return "forward"
    return "update" if tensor.endswith("_new") else "gradient"


def _windows_per_element(k: int, stride: int) -> int:
    return math.ceil(k / stride) ** 2


def _softmax_scale(Z):
    """1 + max_j |z_j - max z| per image (rows): the exponent's own rounding, u |z - m|,
    is a relative error of every exp of that row and so of P."""
    return 1 + (Z.max(axis=1, keepdims=True) - Z.min(axis=1, keepdims=True))


def bound(node: Node, short: str, x, params, upstream, ours: dict, reduction: str, target=None):
    """(M, k, what) of the stage rule for `node`'s tensor `short`; M None: exact.

    x: the layer's input; params: every parameter (qualified names); upstream: dE/d(output);
    ours: the reference's own outputs of this layer (node.q names); target: the loss's.
    """
    layer, kind = node.layer, node.kind
    a = np.abs
    if kind == "conv":
        F = a(params[node.q("F")])
        if short == "Z":
            b = a(params[node.q("b")]) if layer.bias else None
            M = conv2d.conv2d_forward(a(x), F, b, layer.stride, layer.pad)
            terms = F.shape[1] * layer.kernel**2
            k = tolerance.roundings_affine(terms) if layer.bias else tolerance.roundings_dot(terms)
            return M, k, "conv(|X|,|F|)+|b|"
        if short == "dF":
            M = conv2d.conv2d_grad_filter(a(x), a(upstream), layer.kernel, layer.stride, layer.pad)
            n, _, h, w = upstream.shape
            return M, tolerance.roundings_dot(n * h * w), "sum |dZ||Xp|"
        if short == "db":
            n, _, h, w = upstream.shape
            return conv2d.conv2d_grad_bias(a(upstream)), tolerance.roundings_sum(n * h * w), "sum |dZ|"
        if short == "dX":
            M = conv2d.conv2d_grad_input(a(upstream), F, x.shape, layer.stride, layer.pad)
            terms = F.shape[0] * layer.kernel**2
            return M, tolerance.roundings_dot(terms), "sum |dZ||F|"
    if kind == "maxpool":
        if short == "A":
            return None, tolerance.SELECT_ROUNDINGS, ""
        windows = _windows_per_element(layer.size, layer.stride)
        if windows == 1:  # each element gets at most one window's delta: placed, not added
            return None, tolerance.SELECT_ROUNDINGS, ""
        M = pool.max_pool_backward(x, a(upstream), layer.size, layer.stride)
        k = tolerance.roundings_window_sum(windows)
        return M, k, "scatter |dA|"
    if kind == "avgpool":
        if short == "A":
            M = pool.avg_pool_forward(a(x), layer.size, layer.stride)
            return M, tolerance.roundings_avg_pool(layer.size), "mean |X|"
        M = pool.avg_pool_backward(a(upstream), x.shape, layer.size, layer.stride)
        k = tolerance.roundings_window_sum(_windows_per_element(layer.size, layer.stride)) + 1
        return M, k, "scatter |dA|/k^2"
    if kind in ("relu", "flatten"):
        return None, tolerance.SELECT_ROUNDINGS, ""
    if kind == "tanh":
        A = ours[node.q("A")]
        if short == "A":
            return a(A), tolerance.TANH_ROUNDINGS, "|A|"
        return a(upstream) * (1 + A * A), tolerance.TANH_BACKWARD_ROUNDINGS, "|dA|(1+A^2)"
    if kind == "sigmoid":
        A = ours[node.q("A")]
        if short == "A":
            return a(A), tolerance.SIGMOID_ROUNDINGS, "|A|"
        M = a(upstream) * tolerance.sigmoid_grad_magnitude(A)
        return M, tolerance.SIGMOID_BACKWARD_ROUNDINGS, "|dA|(A(1-A)+A)"
    if kind == "dense":
        W = a(params[node.q("W")])
        if short == "Z":
            b = a(params[node.q("b")]) if layer.bias else None
            M = dense.dense_forward(a(x), W, b)
            F_in = W.shape[0]
            k = tolerance.roundings_affine(F_in) if layer.bias else tolerance.roundings_dot(F_in)
            return M, k, "|A||W|+|b|"
        if short == "dW":
            return (
                dense.dense_grad_weights(a(x), a(upstream)),
                tolerance.roundings_dot(x.shape[0]),
                "|A|^T|dZ|",
            )
        if short == "db":
            return dense.dense_grad_bias(a(upstream)), tolerance.roundings_sum(x.shape[0]), "sum |dZ|"
        if short == "dA":
            return (
                dense.dense_grad_input(W, a(upstream)),
                tolerance.roundings_dot(W.shape[1]),
                "|dZ||W|^T",
            )
    if kind == "softmax_ce":
        n, K = x.shape
        P, scale = ours[node.q("P")], _softmax_scale(x)
        if short == "P":
            return P * scale, tolerance.roundings_softmax(K), "P(1+max|z-m|)"
        if short == "dZ":
            div = n if reduction == "mean" else 1
            return (P * scale + 1) / div, tolerance.roundings_softmax_backward(K), "(P(1+max|z-m|)+1)/N?"
        # E: per image |z_y - m| + log S (S in [1, K]) + the exp's rounding scale.
        shifted = x - x.max(axis=1, keepdims=True)
        logS = np.log(np.exp(shifted).sum(axis=1))
        M = (a(shifted).max(axis=1) + logS + scale[:, 0]).sum()
        M = M / n if reduction == "mean" else M
        return np.asarray(M), tolerance.roundings_cross_entropy(K, n), "sum(|z-m|+logS+1+max|z-m|)"
    if kind == "mse":
        n = x.shape[0]
        div = n if reduction == "mean" else 1
        if short == "E":
            M = ((a(x) + a(target)) ** 2).sum() / 2 / div
            return np.asarray(M), tolerance.roundings_loss(n), "sum (|y|+|O|)^2/2"
        return (a(x) + a(target)) / div, tolerance.LOSS_GRAD_ROUNDINGS, "|O|+|y|"
    raise KeyError(f"no stage bound for {node.q(short)} ({kind})")


def stage_tolerance(node, short, x, params, upstream, ours, reduction, dtype, target=None):
    """The stage rule's Tolerance for `node`'s tensor `short` (see `bound`)."""
    M, k, what = bound(node, short, x, params, upstream, ours, reduction, target)
    if M is None:
        return tolerance.exact(np.shape(ours[node.q(short)]))
    return tolerance.with_underflow(tolerance.stage(M, k, dtype, what), k, dtype)


def update_tolerance(param, grad, lr, dtype) -> tolerance.Tolerance:
    M = np.abs(param) + lr * np.abs(grad)
    return tolerance.stage(M, tolerance.SGD_ROUNDINGS, dtype, "(|p|+lr|g|)")

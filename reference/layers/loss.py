"""Softmax (X11) with cross-entropy on integer labels (X12), and the squared error, batch-first.

Logits Z (N, K): one image per row, K classes (10 for MNIST digits); labels y (N,), integers
in 0..K-1. The reduction over images is explicit, "sum" (the suite's default) or "mean":
torch's CrossEntropyLoss and Keras's SparseCategoricalCrossentropy both default to the mean,
so a mirror must name it. E is returned as a 0-d array of Z's dtype.
"""

from __future__ import annotations

import numpy as np

from reference import rounding
from reference._validate import choice, float_array
from reference.layers.registry import Bound, LayerKind, Site
from reference.trace import implements

REDUCTIONS = ("sum", "mean")


@implements("X11")
def softmax(Z: np.ndarray) -> np.ndarray:
    """X11: P[n, k] = exp(Z[n, k] - m_n) / sum over j of exp(Z[n, j] - m_n), m_n = max_j Z[n, j].

    Subtracting the row maximum changes nothing mathematically and keeps every exponent
    <= 0, so nothing overflows (logits of 1000 are fine); each row sums to 1.
    Z: (N, K) -> P: (N, K), Z's dtype.
    """
    Z = float_array("Z", Z, (None, None))
    return _softmax(Z)[0]


@implements("X11")
def _softmax(Z):
    shifted = Z - Z.max(axis=1, keepdims=True)
    with np.errstate(under="ignore"):  # exp of a very negative shift is 0, correctly
        e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)  # >= 1: the maximum contributes exp(0)
    return e / total, shifted - np.log(total)


@implements("X11")
def log_softmax(Z: np.ndarray) -> np.ndarray:
    """X11 in logs: log P[n, k] = (Z[n, k] - m_n) - log sum over j of exp(Z[n, j] - m_n).

    Finite for every finite Z, where log(softmax(Z)) would give -inf once P underflows.
    Z: (N, K) -> (N, K).
    """
    Z = float_array("Z", Z, (None, None))
    return _softmax(Z)[1]


@implements("X11", "X12")
def softmax_cross_entropy(Z: np.ndarray, y: np.ndarray, reduction: str = "sum") -> tuple:
    """X11 + X12 forward: P = softmax(Z) and E = - sum over n of log P[n, y_n] (reduction
    "sum"), or that sum / N ("mean").

    log P is taken from the shifted logits (log_softmax), never as log of P.
    Z: (N, K); y: (N,) integers in 0..K-1 -> (P (N, K), E a 0-d array of Z's dtype).
    """
    Z, y, reduction = _check_ce("Z", Z, y, reduction)
    P, logP = _softmax(Z)
    picked = np.take_along_axis(logP, y[:, None], axis=1)
    E = -(picked.sum() if reduction == "sum" else picked.mean())
    return P, np.asarray(E, dtype=Z.dtype)


@implements("X12")
def softmax_cross_entropy_backward(P: np.ndarray, y: np.ndarray, reduction: str = "sum") -> np.ndarray:
    """X12 backward through X11: dE/dZ[n, k] = P[n, k] - [k == y_n], divided by N when
    reduction="mean" (the softmax Jacobian and the log's 1/p cancel to this).

    P: (N, K), the softmax output; y: (N,) integers in 0..K-1 -> dZ: (N, K).
    """
    P, y, reduction = _check_ce("P", P, y, reduction)
    if P.min() < 0 or P.max() > 1:
        raise ValueError(f"P must be softmax probabilities in [0, 1], got [{P.min()}, {P.max()}]")
    onehot = np.arange(P.shape[1]) == y[:, None]
    dZ = P - onehot
    return dZ / P.shape[0] if reduction == "mean" else dZ


@implements("E7")
def mse(O: np.ndarray, Y: np.ndarray, reduction: str = "sum") -> np.ndarray:
    """The article's loss (E7) batch-first: E = sum over n, u of (Y[n, u] - O[n, u])^2 / 2
    ("sum"), or that sum / N ("mean": the mean over IMAGES, as E7's).

    Not torch's mse_loss: that has no 1/2, and its "mean" divides by N U.
    O, Y: (N, U) -> E: a 0-d array of O's dtype.
    """
    O, Y, reduction = _check_mse(O, Y, reduction)
    total = ((Y - O) ** 2).sum() / 2
    return total if reduction == "sum" else total / O.shape[0]


@implements("E8")
def mse_backward(O: np.ndarray, Y: np.ndarray, reduction: str = "sum") -> np.ndarray:
    """E8 batch-first: dE/dO = O - Y, divided by N under "mean". O, Y: (N, U) -> (N, U)."""
    O, Y, reduction = _check_mse(O, Y, reduction)
    dO = O - Y
    return dO / O.shape[0] if reduction == "mean" else dO


# --- argument checks --------------------------------------------------------------------


def _check_mse(O, Y, reduction):
    O = float_array("O", O, (None, None))
    Y = float_array("Y", Y, O.shape, dtype=O.dtype)
    return O, Y, choice("reduction", reduction, REDUCTIONS)


def _check_ce(name, Z, y, reduction):
    Z = float_array(name, Z, (None, None))
    return Z, _labels(y, *Z.shape, name), choice("reduction", reduction, REDUCTIONS)


def _labels(y, N, K, against):
    """y as an (N,) integer array of class indices in 0..K-1, or an error naming y."""
    if type(y) is not np.ndarray:
        raise TypeError(f"y must be a numpy array of integer labels, got {type(y).__name__}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.shape != (N,):
        raise ValueError(f"y must have shape ({N},), one label per row of {against}, got {y.shape}")
    if y.min() < 0 or y.max() >= K:
        raise ValueError(f"y must hold labels in 0..{K - 1} ({K} classes), got [{y.min()}, {y.max()}]")
    return y.astype(np.intp, copy=False)


# --- the registry entries (reference/layers/registry.py) ----------------------------------


def _softmax_scale(Z):
    """1 + max_j |z_j - max z| per image (rows): the exponent's own rounding, u |z - m|,
    is a relative error of every exp of that row and so of P."""
    return 1 + (Z.max(axis=1, keepdims=True) - Z.min(axis=1, keepdims=True))


def _softmax_ce_bound(site: Site, short: str) -> Bound:
    """X11, X12: P's exp and normalisation; dZ = P - onehot; E = log-sum-exp sums."""
    x, a = site.x, np.abs
    n, K = x.shape
    P, scale = site.ours["P"], _softmax_scale(x)
    div = n if site.reduction == "mean" else 1
    if short == "P":
        return Bound(P * scale, rounding.roundings_softmax(K), "P(1+max|z-m|)")
    if short == "dZ":
        M = (P * scale + 1) / div
        return Bound(M, rounding.roundings_softmax_backward(K), "(P(1+max|z-m|)+1)/N?")
    # E: per image |z_y - m| + log S (S in [1, K]) + the exp's rounding scale.
    shifted = x - x.max(axis=1, keepdims=True)
    logS = np.log(np.exp(shifted).sum(axis=1))
    M = (a(shifted).max(axis=1) + logS + scale[:, 0]).sum() / div
    return Bound(np.asarray(M), rounding.roundings_cross_entropy(K, n), "sum(|z-m|+logS+1+max|z-m|)")


def _mse_bound(site: Site, short: str) -> Bound:
    """E7, E8 batch-first: (|O| + |y|)^2 / 2 summed; O - y."""
    x, a = site.x, np.abs
    n = x.shape[0]
    div = n if site.reduction == "mean" else 1
    if short == "E":
        M = ((a(x) + a(site.target)) ** 2).sum() / 2 / div
        return Bound(np.asarray(M), rounding.roundings_loss(n), "sum (|y|+|O|)^2/2")
    return Bound((a(x) + a(site.target)) / div, rounding.LOSS_GRAD_ROUNDINGS, "|O|+|y|")


SOFTMAX_CE = LayerKind(
    name="softmax_ce",
    family="softmax_ce",
    outputs=("P", "E"),
    input_grad="dZ",
    equations={"P": "X11", "E": "X12", "dZ": "X12"},
    forward=softmax_cross_entropy,
    backward=softmax_cross_entropy_backward,
    bound=_softmax_ce_bound,
)
MSE = LayerKind(
    name="mse",
    family="mse",
    outputs=("E",),
    input_grad="dO",
    equations={"E": "E7", "dO": "E8"},
    forward=mse,
    backward=mse_backward,
    bound=_mse_bound,
)

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
from reference.layers.registry import CONVENTION, HOLDS, Bound, Case, Equation, LayerKind, Mistake, Site
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


# --- the mistakes (registry entries' catalogues; parity_tests/model_mutants.py runs them) ---


def softmax_ce_unshifted(Z, y, reduction):
    """X11 + X12 without subtracting the row maximum: exp(Z) overflows to inf once a logit
    exceeds log(max float) (88.7 in float32, 709.8 in float64); below that it is the same
    function, within rounding."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(Z)
        total = e.sum(axis=1, keepdims=True)
        P = e / total
        logP = Z - np.log(total)
    picked = np.take_along_axis(logP, np.asarray(y, dtype=np.intp)[:, None], axis=1)
    E = -(picked.sum() if reduction == "sum" else picked.mean())
    return P, np.asarray(E, dtype=Z.dtype)


def ce_backward_without_1_over_N(P, y, reduction):
    """p - onehot(y) whatever the reduction: the mean's 1/N forgotten."""
    return softmax_cross_entropy_backward(P, y, "sum")


def mse_without_half(O, Y, reduction):
    """E = sum (y - O)^2: torch's mse_loss form, without the article's 1/2 (E7)."""
    total = ((Y - O) ** 2).sum()
    return total if reduction == "sum" else total / O.shape[0]


def mse_backward_without_half(O, Y, reduction):
    dO = 2 * (O - Y)
    return dO / O.shape[0] if reduction == "mean" else dO


_LOGITS_NET = "conv(4,3)-relu-dense(10)-softmax_ce"
_POOL_NET = "conv(4,3)-relu-maxpool(2)-dense(10)-softmax_ce"
# Images times this make _LOGITS_NET's logits exceed log(max float32) = 88.7 (up to ~190 at
# seed 0): the inputs on which a softmax without the max shift overflows. (Pixels not
# divided by 255 are not enough for this conv net: its logits stay below ~90.)
LARGE_LOGITS_SCALE = 1000.0

SOFTMAX_CE = LayerKind(
    name="softmax_ce",
    family="softmax_ce",
    outputs=("P", "E"),
    input_grad="dZ",
    equations={"P": "X11", "E": "X12", "dZ": "X12"},
    forward=softmax_cross_entropy,
    backward=softmax_cross_entropy_backward,
    bound=_softmax_ce_bound,
    user=("softmax_loss(x, y) -> (loss, dx)",),
    mistakes=(
        Mistake(
            id="softmax_no_max_shift",
            equation="X11",
            first="softmax_ce.P",
            case=Case(_LOGITS_NET, pixel_scale=LARGE_LOGITS_SCALE),
            title="softmax without subtracting the row maximum: exp overflows (float32: logits "
            "above 88.7)",
            explains="softmax_no_max_shift",
            forward=softmax_ce_unshifted,
            caught_on="logits above log(max float32) = 88.7 only: here images scaled x1000 "
            "(logits up to ~190). On the suite's [0, 1] pixels the logits stay far below (and "
            "at float64's 709.8 further still) and the shift-less softmax is the same function "
            "within rounding: NOT detectable there",
            blind=Case(_LOGITS_NET),
        ),
        Mistake(
            id="ce_grad_mean_without_1_over_N",
            equation="X12",
            first="softmax_ce.dZ",
            case=Case(_POOL_NET, reduction="mean"),
            title="dE/dZ = p - onehot(y) under the mean reduction: the 1/N forgotten",
            explains="ce_grad_missing_1_over_N",
            backward=ce_backward_without_1_over_N,
            caught_on="reduction 'mean' with more than one image (under 'sum' it is right)",
            blind=Case(_POOL_NET),
        ),
    ),
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
    mistakes=(
        Mistake(
            id="mse_without_half",
            equation="E7,E8",
            first="mse.E",
            case=Case("conv(4,5,stride=2)-relu-dense(1)-sigmoid-mse"),
            title="E = sum (y - O)^2 without the 1/2 of E7 (torch's mse_loss form), and dE/dO = "
            "2 (O - y) to match",
            explains="mse_without_half",
            forward=mse_without_half,
            backward=mse_backward_without_half,
        ),
    ),
)

# Its layer kinds' registry entries, collected in reference.layers.KINDS.
ENTRIES = (
    SOFTMAX_CE,
    MSE,
)

# Its equations' audit records (reference/equations.py, docs/extensions.md).
EQUATIONS = (
    Equation(
        "X11",
        "softmax: P[n, k] = exp(z_k - m) / sum over j of exp(z_j - m), m = max_j z_j",
        HOLDS,
        note="the shift by the row's largest logit changes nothing mathematically and keeps "
        "every exponent <= 0; log P is taken from the shifted logits, never as log of a "
        "rounded P",
    ),
    Equation(
        "X12",
        "cross-entropy: E = - sum over images of log P[n, y_n]; dE/dZ = P - onehot(y) "
        "(divided by N under the mean)",
        CONVENTION,
        convention="sum over images (the suite's default; torch and Keras default to the "
        "mean, set explicitly)",
        note="reduction='mean' divides E and dE/dZ by N, as E7 does",
    ),
)

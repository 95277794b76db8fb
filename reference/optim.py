"""Optimisers: one function per update rule (O1..O11), each convention a named variant.

Every rule updates one parameter `p` from its gradient `g` and its optimiser state, all
arrays of p's shape and dtype (a float32 run stays float32; Python-float hyper-parameters
keep the array's dtype). A rule returns `(p_new, state_new)`; it never writes into its
arguments. The state is an explicit dict per parameter (CS231n's names):

    sgd       {}
    momentum  {"velocity"}          nesterov  {"velocity"}
    rmsprop   {"cache"}             adam      {"m", "v", "t"}    (t: steps taken, an int)

Equations (docs/optimisers.md has them with the measured size of each difference):

    O1  sgd              p' = p - lr g
    O2  l2_decay         g' = g + wd p                        (coupled: added to the gradient)
    O3  decoupled_decay  p' = p - lr wd p                      (AdamW; Keras' `weight_decay=`)
    O4  momentum_torch   v' = mu v + g;        p' = p - lr v'
    O5  momentum_keras   v' = mu v - lr g;     p' = p + v'
    O6  nesterov_torch   v' = mu v + g;        p' = p - lr (g + mu v')
    O7  nesterov_keras   v' = mu v - lr g;     p' = p + mu v' - lr g
    O8  rmsprop_torch    c' = rho c + (1-rho) g^2;   p' = p - lr g / (sqrt(c') + eps)
    O9  rmsprop_keras    c' = rho c + (1-rho) g^2;   p' = p - lr g / sqrt(c' + eps)
    O10 adam_torch       t' = t + 1;  m' = m + (1-b1)(g - m);  v' = b2 v + (1-b2) g^2;
                         p' = p - lr/(1-b1^t') m' / (sqrt(v')/sqrt(1-b2^t') + eps)
    O11 adam_keras       t', m', v' as O10;
                         p' = p - lr sqrt(1-b2^t')/(1-b1^t') m' / (sqrt(v') + eps)

AdamW is O3 then O10 (torch) or O3 then O11 (Keras); the decay reads p before the step
(Adam's step does not read p, so the order changes nothing).

Where torch and Keras differ, each convention is its own function (O4/O5, O6/O7, O8/O9,
O10/O11) and the two framework conventions are `TORCH` and `KERAS` below. Keras also holds
some hyper-parameters in float32 whatever the variables' dtype (measured, docs/optimisers.md):
the learning rate is a float32 variable, and what its source passes through
`ops.cast(python_float, dtype)` (SGD's momentum, Adam's betas in the powers b^t,
weight_decay) becomes a float32 tensor first; a Python float met in plain arithmetic (rho,
1 - rho, epsilon, 1 - beta) keeps float64. `Convention.cast` applies that rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from reference._validate import finite_float, float_array
from reference.trace import implements


def _check(p, g):
    p = float_array("p", p, ndim=None)
    g = float_array("g", g, p.shape, dtype=p.dtype)
    return p, g


def _state_array(name: str, value, p) -> np.ndarray:
    return float_array(name, value, p.shape, dtype=p.dtype)


# --- the rules --------------------------------------------------------------------------


@implements("O1")
def sgd(p, g, lr):
    """O1: p' = p - lr g. p, g: any shape, one dtype; returns p'."""
    p, g = _check(p, g)
    return p - lr * g


@implements("O2")
def l2_decay(p, g, wd):
    """O2: g' = g + wd p, the L2 penalty wd/2 |p|^2 added to the loss (torch's `weight_decay=`
    of SGD, RMSprop and Adam): the optimiser then sees g'. Returns g'."""
    p, g = _check(p, g)
    return g + wd * p


@implements("O3")
def decoupled_decay(p, lr, wd, convention: str = "torch"):
    """O3: p' = p - lr wd p, applied to the parameter before the step (Loshchilov & Hutter).

    torch (AdamW) computes p (1 - lr wd) with 1 - lr wd in Python float64; Keras (every
    optimiser's `weight_decay=`) computes p - p wd lr in the dtype. Returns p'."""
    p = float_array("p", p, ndim=None)
    if convention == "torch":
        return p * (1 - lr * wd)
    return p - p * wd * lr


@implements("O4")
def momentum_torch(p, g, velocity, lr, mu):
    """O4 (torch.optim.SGD(momentum=mu)): v' = mu v + g; p' = p - lr v'.

    The velocity is a sum of gradients, in gradient units; torch's first step sets v' = g
    (the same value from v = 0). Returns (p', v')."""
    p, g = _check(p, g)
    v = mu * _state_array("velocity", velocity, p) + g
    return p - lr * v, v


@implements("O5")
def momentum_keras(p, g, velocity, lr, mu):
    """O5 (keras.optimizers.SGD(momentum=mu)): v' = mu v - lr g; p' = p + v'.

    The velocity is a sum of steps, in parameter units: with a constant lr it is -lr times
    O4's, so the two agree up to rounding. Returns (p', v')."""
    p, g = _check(p, g)
    v = mu * _state_array("velocity", velocity, p) - lr * g
    return p + v, v


@implements("O6")
def nesterov_torch(p, g, velocity, lr, mu):
    """O6 (torch SGD(nesterov=True)): v' = mu v + g; p' = p - lr (g + mu v'). Returns (p', v')."""
    p, g = _check(p, g)
    v = mu * _state_array("velocity", velocity, p) + g
    return p - lr * (g + mu * v), v


@implements("O7")
def nesterov_keras(p, g, velocity, lr, mu):
    """O7 (Keras SGD(nesterov=True)): v' = mu v - lr g; p' = p + mu v' - lr g. Returns (p', v')."""
    p, g = _check(p, g)
    v = mu * _state_array("velocity", velocity, p) - lr * g
    return p + (mu * v - lr * g), v


@implements("O8")
def rmsprop_torch(p, g, cache, lr, rho, eps):
    """O8 (torch.optim.RMSprop(alpha=rho)): c' = rho c + (1-rho) g^2;
    p' = p - lr g / (sqrt(c') + eps): epsilon added to the root. Returns (p', c')."""
    p, g = _check(p, g)
    c = rho * _state_array("cache", cache, p) + (1 - rho) * (g * g)
    return p - lr * g / (np.sqrt(c) + eps), c


@implements("O9")
def rmsprop_keras(p, g, cache, lr, rho, eps):
    """O9 (keras.optimizers.RMSprop): c' = rho c + (1-rho) g^2; p' = p - (lr g) / sqrt(c' + eps):
    epsilon inside the root, so it acts like eps^2 of O8 (1e-7 inside is 3.2e-4 outside).
    Returns (p', c')."""
    p, g = _check(p, g)
    c = rho * _state_array("cache", cache, p) + (1 - rho) * (g * g)
    return p - (lr * g) / np.sqrt(c + eps), c


def _moments(p, m, v, t):
    return _state_array("m", m, p), _state_array("v", v, p), int(t) + 1


@implements("O10")
def adam_torch(p, g, m, v, t, lr, b1, b2, eps):
    """O10 (torch.optim.Adam): t' = t + 1; m' = m + (1-b1)(g - m); v' = b2 v + (1-b2) g^2;
    p' = p - lr/(1-b1^t') m' / (sqrt(v')/sqrt(1-b2^t') + eps).

    Epsilon is added after the bias correction of sqrt(v). The corrections 1 - b^t are
    computed in Python float64 (the step count is a number there). Returns (p', m', v', t')."""
    p, g = _check(p, g)
    m, v, t = _moments(p, m, v, t)
    m = m + (1 - b1) * (g - m)  # torch's lerp(m, g, 1 - b1)
    v = b2 * v + (1 - b2) * (g * g)
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    denom = np.sqrt(v) / bc2**0.5 + eps
    return p - (lr / bc1) * (m / denom), m, v, t


@implements("O11")
def adam_keras(p, g, m, v, t, lr, b1, b2, eps, b1_power=None, b2_power=None):
    """O11 (keras.optimizers.Adam): t' = t + 1; m' = m + (1-b1)(g - m); v' = v + (1-b2)(g^2 - v);
    p' = p - alpha m' / (sqrt(v') + eps), alpha = lr sqrt(1-b2^t') / (1-b1^t').

    Epsilon is added to sqrt(v') before the bias correction (Kingma & Ba's "epsilon hat"): it
    acts like eps / sqrt(1 - b2^t) of O10, 31.6 eps at t = 1 with b2 = 0.999. The powers
    b^t are taken in the dtype, of `b1_power`/`b2_power` (default b1, b2: Keras casts the
    betas there, and only there, to float32). Returns (p', m', v', t')."""
    p, g = _check(p, g)
    m, v, t = _moments(p, m, v, t)
    m = m + (g - m) * (1 - b1)
    v = v + (g * g - v) * (1 - b2)
    dt = p.dtype.type
    base1 = b1 if b1_power is None else b1_power
    base2 = b2 if b2_power is None else b2_power
    alpha = dt(lr) * np.sqrt(1 - dt(base2) ** t) / (1 - dt(base1) ** t)
    return p - (m * alpha) / (np.sqrt(v) + eps), m, v, t


# --- conventions ------------------------------------------------------------------------


def float32_held(value: float) -> float:
    """A hyper-parameter as Keras holds it: rounded to float32 (0.1 -> 0.10000000149)."""
    return float(np.float32(value))


@dataclass(frozen=True)
class Convention:
    """A framework's convention: `name`, what it means (`text`), and whether the hyper-
    parameters it casts to the variables' dtype pass through float32 (`cast32`)."""

    name: str
    text: str
    cast32: bool

    def cast(self, value: float) -> float:
        """A hyper-parameter the framework casts to the variables' dtype, as it arrives."""
        return float32_held(value) if self.cast32 else float(value)


TORCH = Convention(
    "torch",
    "hyper-parameters in Python float64; momentum in gradient units (O4, O6); epsilon added "
    "to the root (O8) after Adam's bias correction (O10); weight_decay= is the L2 penalty "
    "(O2) except AdamW's (O3)",
    cast32=False,
)
KERAS = Convention(
    "keras",
    "lr a float32 variable; momentum, Adam's betas in b^t and weight_decay cast through "
    "float32; momentum in parameter units (O5, O7); epsilon inside RMSprop's root (O9) and "
    "added before Adam's bias correction (O11); weight_decay= is always decoupled (O3)",
    cast32=True,
)
CONVENTIONS: Mapping[str, Convention] = {"torch": TORCH, "keras": KERAS}


def convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        raise ValueError(f"convention must be one of {list(CONVENTIONS)}, got {name!r}")
    return CONVENTIONS[name]


def check_hyper(name: str, value, low: float = 0.0, high: float = float("inf"), *, open_low=False):
    """One hyper-parameter validated: a finite number in [low, high] (or (low, high])."""
    value = finite_float(name, value)
    if value < low or value > high or (open_low and value == low):
        side = "(" if open_low else "["
        raise ValueError(f"{name} must be in {side}{low:g}, {high:g}], got {value!r}")
    return value

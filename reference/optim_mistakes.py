"""The optimiser mistakes the suite must catch and name, each a replacement step in torch's
convention (`(p, g, state, h) -> (p', state')`, as reference/optim_registry.py's Variant).

Each is what a person writing optim.py gets wrong; the registry entry of its optimiser lists
it (`Optimiser.mistakes`) with the tensor and the step where it must show first.
parity_tests/test_optim_mistakes.py runs each in a K-step training run against torch's own
loop, checks where it is caught and that the explainer names it.

`scope`: "parameter", a rule wrong for every parameter alike; "shared", one state for every
parameter (the registry's `shared_state`, run by parity_tests/trajectory.py); "restart", the
state not carried from one step to the next.
"""

from __future__ import annotations

import numpy as np

from reference import optim


def adam_no_bias_correction(p, g, state, h):
    """Adam without bias correction: p' = p - lr m' / (sqrt(v') + eps)."""
    m = state["m"] + (1 - h["beta1"]) * (g - state["m"])
    v = h["beta2"] * state["v"] + (1 - h["beta2"]) * (g * g)
    return p - h["lr"] * m / (np.sqrt(v) + h["eps"]), {"m": m, "v": v, "t": state["t"] + 1}


def adam_bias_from_t0(p, g, state, h):
    """Bias correction with the step count before it is incremented: 1 - b^0 = 0 at the
    first step (t counted from 0), a division by zero, then a correction one step behind."""
    t = state["t"]
    m = state["m"] + (1 - h["beta1"]) * (g - state["m"])
    v = h["beta2"] * state["v"] + (1 - h["beta2"]) * (g * g)
    with np.errstate(divide="ignore", invalid="ignore"):
        m_hat, v_hat = m / (1 - h["beta1"] ** t), v / (1 - h["beta2"] ** t)
        p_new = p - h["lr"] * m_hat / (np.sqrt(v_hat) + h["eps"])
    return p_new.astype(p.dtype), {"m": m, "v": v, "t": t + 1}


def adam_eps_inside_sqrt(p, g, state, h):
    """Epsilon inside the square root: p' = p - lr m_hat / sqrt(v_hat + eps)."""
    t = state["t"] + 1
    m = state["m"] + (1 - h["beta1"]) * (g - state["m"])
    v = h["beta2"] * state["v"] + (1 - h["beta2"]) * (g * g)
    m_hat, v_hat = m / (1 - h["beta1"] ** t), v / (1 - h["beta2"] ** t)
    return p - h["lr"] * m_hat / np.sqrt(v_hat + h["eps"]), {"m": m, "v": v, "t": t}


def rmsprop_decay_on_gradient(p, g, state, h):
    """RMSprop's running average of the gradient, not of its square: c' = rho c + (1-rho) g."""
    c = h["rho"] * state["cache"] + (1 - h["rho"]) * g
    with np.errstate(invalid="ignore"):
        return p - h["lr"] * g / (np.sqrt(c) + h["eps"]), {"cache": c}


def momentum_wrong_sign(p, g, state, h):
    """Momentum with the gradient's sign flipped in the velocity: v' = mu v - g, p' = p - lr v'."""
    v = h["momentum"] * state["velocity"] - g
    return p - h["lr"] * v, {"velocity": v}


def nesterov_as_momentum(p, g, state, h):
    """Nesterov computed as plain momentum: p' = p - lr v' (no look-ahead g + mu v')."""
    v = h["momentum"] * state["velocity"] + g
    return p - h["lr"] * v, {"velocity": v}


def adamw_coupled(p, g, state, h):
    """AdamW asked, L2 given: the decay added to the gradient (O2) instead of to p (O3)."""
    g = optim.l2_decay(p, g, h["weight_decay"])
    p_new, m, v, t = optim.adam_torch(
        p, g, state["m"], state["v"], state["t"], h["lr"], h["beta1"], h["beta2"], h["eps"]
    )
    return p_new, {"m": m, "v": v, "t": t}


def adam_l2_decoupled(p, g, state, h):
    """Adam with weight_decay (L2, O2) asked, decoupled decay given (O3, AdamW's)."""
    p = optim.decoupled_decay(p, h["lr"], h["weight_decay"])
    p_new, m, v, t = optim.adam_torch(
        p, g, state["m"], state["v"], state["t"], h["lr"], h["beta1"], h["beta2"], h["eps"]
    )
    return p_new, {"m": m, "v": v, "t": t}

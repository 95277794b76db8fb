"""The optimiser mistakes the suite must catch and name, each a replacement step in torch's
convention (`(p, g, state, h) -> (p', state')`, as reference/optim_registry.py's Variant),
and its mirror in Keras' convention (`*_keras`: the same mistake made by someone writing
Keras' equations, O3, O5, O7, O9, O11, with Keras' float32 hyper-parameters), which a run
against Keras' own loop trains with.

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
from reference.optim import KERAS


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


# --- the same mistakes in Keras' convention -------------------------------------------------
# Each is the registry's Keras variant (reference/optim_registry.py) with the one mistake:
# lr, momentum and the betas of b^t through float32 (KERAS.cast), rho, 1 - rho, epsilon and
# 1 - beta as Python floats, Adam's moments in Keras' form m + (g - m)(1 - b1).


def _keras_moments(g, state, h):
    m = state["m"] + (g - state["m"]) * (1 - h["beta1"])
    v = state["v"] + (g * g - state["v"]) * (1 - h["beta2"])
    return m, v


def _keras_alpha(dtype, h, t):
    """Keras' lr sqrt(1 - b2^t) / (1 - b1^t), the powers of the float32 betas in the dtype."""
    dt = np.dtype(dtype).type
    b1, b2 = dt(KERAS.cast(h["beta1"])), dt(KERAS.cast(h["beta2"]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return dt(KERAS.cast(h["lr"])) * np.sqrt(1 - b2**t) / (1 - b1**t)


def adam_no_bias_correction_keras(p, g, state, h):
    """O11 without bias correction: alpha = lr, p' = p - lr m' / (sqrt(v') + eps)."""
    m, v = _keras_moments(g, state, h)
    lr = p.dtype.type(KERAS.cast(h["lr"]))
    return p - (m * lr) / (np.sqrt(v) + h["eps"]), {"m": m, "v": v, "t": state["t"] + 1}


def adam_bias_from_t0_keras(p, g, state, h):
    """O11's alpha with the count before its increment: 0 / 0 at the first step."""
    t = state["t"]
    m, v = _keras_moments(g, state, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_new = p - (m * _keras_alpha(p.dtype, h, t)) / (np.sqrt(v) + h["eps"])
    return p_new.astype(p.dtype), {"m": m, "v": v, "t": t + 1}


def adam_eps_inside_sqrt_keras(p, g, state, h):
    """O11 with epsilon inside the root: p' = p - alpha m' / sqrt(v' + eps)."""
    t = state["t"] + 1
    m, v = _keras_moments(g, state, h)
    return p - (m * _keras_alpha(p.dtype, h, t)) / np.sqrt(v + h["eps"]), {"m": m, "v": v, "t": t}


def adam_coupled_keras(p, g, state, h):
    """Keras' weight_decay= (decoupled, O3, for Adam and AdamW alike) asked, the L2 penalty
    given: g + wd p (O2) into O11, no decay of p. The mirror of both adam_l2_decoupled (the
    other form of decay than the framework's weight_decay= asks) and adamw_coupled."""
    g = optim.l2_decay(p, g, h["weight_decay"])
    t = state["t"] + 1
    m, v = _keras_moments(g, state, h)
    return p - (m * _keras_alpha(p.dtype, h, t)) / (np.sqrt(v) + h["eps"]), {"m": m, "v": v, "t": t}


def rmsprop_decay_on_gradient_keras(p, g, state, h):
    """O9 with the running average of g, not g^2: c' = rho c + (1-rho) g."""
    c = h["rho"] * state["cache"] + (1 - h["rho"]) * g
    with np.errstate(invalid="ignore"):
        return p - (KERAS.cast(h["lr"]) * g) / np.sqrt(c + h["eps"]), {"cache": c}


def momentum_wrong_sign_keras(p, g, state, h):
    """O5 with the gradient's sign flipped: v' = mu v + lr g, p' = p + v'."""
    v = KERAS.cast(h["momentum"]) * state["velocity"] + KERAS.cast(h["lr"]) * g
    return p + v, {"velocity": v}


def nesterov_as_momentum_keras(p, g, state, h):
    """Keras' Nesterov computed as plain momentum: p' = p + v' (O5; no look-ahead mu v' - lr g)."""
    p_new, v = optim.momentum_keras(
        p, g, state["velocity"], KERAS.cast(h["lr"]), KERAS.cast(h["momentum"])
    )
    return p_new, {"velocity": v}

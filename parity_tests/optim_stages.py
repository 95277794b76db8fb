"""The stage rule for an optimiser's update (reference/optim_registry.py) and its check.

A stage-isolated optimiser check feeds a framework's optimiser (torch.optim, keras.optimizers)
our parameter p, gradient g and state at step k, and compares what it gives (p' and every
state) with the reference's variant of *that framework's* convention (torch: O2, O4, O6,
O8, O10; Keras: O3, O5, O7, O9, O11), in the same dtype. Both sides round the same
expression of the same inputs, so they differ by at most 2 gamma(k) M, M the expression on
absolute values and k the roundings of its longest chain (docs/tolerance.md), counted below
with their reasons. The two conventions' own difference is never in M: it is measured and
stated (docs/optimisers.md, benchmarks/optim_conventions.py).

Counting. A product, quotient, sum or square root rounds once; a hyper-parameter that the
dtype cannot hold (0.9 in float32) once more where it is used, and a power b^t (Keras
computes it in the dtype) POW_ROUNDINGS. An expression whose terms cannot cancel (RMSprop's
cache, Adam's v in torch's form) has M equal to itself; where they can (m' = m + (1-b1)(g-m))
M sums the terms' absolute values. The update p' = p - delta charges delta's relative error
to |delta| (every factor of delta is a product, quotient or root of positive numbers
except the first moment, whose absolute error M_m enters scaled as delta / m' does), plus the
bias corrections' cancellation: 1 - b^t has relative error POW_ROUNDINGS u b^t / (1 - b^t)
(at t = 2 with b2 = 0.999 that is 500 ulp), carried by the amplification A below.
"""

from __future__ import annotations

import numpy as np

from parity_tests import tolerance
from parity_tests.harness import Check
from reference import optim_registry as registry

CONVENTION_OF = {"torch": "torch", "tensorflow": "keras"}

# A power b^t in the dtype (Keras' ops.power): pow is correctly rounded or within an ulp in
# the libraries measured; charged 2 (the cast of b to the dtype, the power).
POW_ROUNDINGS = 2


def _abs(a):
    return np.abs(np.asarray(a, dtype=np.float64))


def _decay_terms(p, h, convention):
    """(M of what the decay adds to p', its roundings): O2 adds lr wd |p| through the
    gradient (product, sum, then O1's two); O3 p - p wd lr (two products, a difference)."""
    wd, lr = h.get("weight_decay", 0.0), h["lr"]
    if not wd:
        return 0.0, 0
    return 2 * lr * wd * _abs(p), 4 if convention == "torch" else 3


def bounds(name: str, convention: str, p, g, state: dict, h: dict) -> dict:
    """{tensor: (M, k, what)} for p_new and every state of optimiser `name` in `convention`
    at the inputs (float64 abs values of ours). t is an integer: compared exactly (M None)."""
    P, G = _abs(p), _abs(g)
    lr = h["lr"]
    dM, dk = _decay_terms(p, h, convention)
    out = {}
    if name == "sgd":
        out["p_new"] = (P + lr * G + dM, 2 + dk, "|p|+lr|g|(+decay)")
        return out
    if name in ("momentum", "nesterov"):
        mu, V = h["momentum"], _abs(state["velocity"])
        if convention == "torch":  # v' = mu v + g (+ wd p): 3 roundings, 2 more with decay
            Mv, kv = mu * V + G + (h.get("weight_decay", 0) * P), 3 + (2 if dk else 0)
            if name == "momentum":
                Mp, kp = P + lr * Mv, kv + 2
            else:  # p - lr (g + mu v')
                Mp, kp = P + lr * (G + mu * Mv), kv + 5
        else:  # v' = mu v - lr g; p' = p + v' (+ mu v' - lr g)
            Mv, kv = mu * V + lr * G, 4
            Mp, kp = (P + Mv, kv + 1) if name == "momentum" else (P + mu * Mv + lr * G, kv + 5)
            Mp, kp = Mp + dM, kp + dk
        out["velocity"] = (Mv, kv, "mu|v|+|g| (torch) or mu|v|+lr|g| (keras)")
        out["p_new"] = (Mp, kp, "|p|+|step| from |v'|")
        return out
    if name == "rmsprop":
        rho, eps = h["rho"], h["eps"]
        Gc = G + (h.get("weight_decay", 0) * P if convention == "torch" else 0)
        C = rho * _abs(state["cache"]) + (1 - rho) * Gc * Gc  # no cancellation: c' itself
        kc = 5  # g*g, two products, the sum, the float32 rounding of rho or 1 - rho
        denom = np.sqrt(C) + eps if convention == "torch" else np.sqrt(C + eps)
        step = lr * Gc / denom
        # delta = lr g / denom: c' (kc) halves through the root, root, eps sum, product,
        # quotient, lr's float32 rounding, then p - delta.
        out["cache"] = (C, kc, "c' (rho c + (1-rho) g^2, no cancellation)")
        out["p_new"] = (P + step + dM, kc + 6 + dk, "|p|+lr|g|/denom")
        return out
    # adam, adamw
    b1, b2, eps = h["beta1"], h["beta2"], h["eps"]
    t = int(state["t"]) + 1
    Gc = G + (h.get("weight_decay", 0) * P if convention == "torch" and name == "adam" else 0)
    M, V = _abs(state["m"]), _abs(state["v"])
    Mm, km = M + (1 - b1) * (Gc + M), 4  # m + (1-b1)(g - m): difference, product, sum, 1-b1
    if convention == "torch":
        Mv, kv = b2 * V + (1 - b2) * Gc * Gc, 5  # positive terms: v' itself
    else:
        Mv, kv = V + (1 - b2) * (Gc * Gc + V), 5  # v + (1-b2)(g^2 - v): may cancel
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    v_new = b2 * V + (1 - b2) * Gc * Gc  # the value (both forms): the denominator's size
    if convention == "torch":
        denom = np.sqrt(v_new) / np.sqrt(bc2) + eps
    else:
        denom = (np.sqrt(v_new) + eps) / np.sqrt(bc2)
    # Keras takes b^t in the dtype: 1 - b^t's cancellation amplifies its rounding by
    # b^t / (1 - b^t) (square root: half for b2); torch takes it in float64 (one rounding of
    # the step size to the dtype, inside the count).
    A = POW_ROUNDINGS * (b1**t / bc1 + 0.5 * b2**t / bc2) if convention == "keras" else 0.0
    scale = lr / bc1 / denom  # d delta / d m'
    step = scale * Mm
    # v' enters through its root: its relative error halves; then root, eps sum, bias
    # corrections, lr, products and quotient: 8 more, the subtraction 1.
    kp = km + kv + 9
    out["m"] = (Mm, km, "|m|+(1-b1)(|g|+|m|)")
    out["v"] = (Mv, kv, "b2|v|+(1-b2)g^2 (torch) or |v|+(1-b2)(g^2+|v|) (keras)")
    out["p_new"] = (P + step * (1 + A / kp) + dM, kp + dk, "|p|+lr/bc1 M_m/denom (1 + A)")
    out["t"] = (None, 0, "exact: a count")
    return out


def tolerance_of(name, convention, tensor, p, g, state, h, dtype) -> tolerance.Tolerance:
    M, k, what = bounds(name, convention, p, g, state, h)[tensor]
    if M is None:
        return tolerance.exact(())
    return tolerance.with_underflow(tolerance.stage(M, k, dtype, what), k, dtype)


def stage_check(name: str, framework: str, tensor: str, p, g, state: dict, h: dict) -> Check:
    """The framework's optimiser vs the reference's variant of its convention, on the same
    p, g, state (arrays of one dtype); the truth of a float32 check is the variant in float64
    on the same inputs."""
    from parity_tests.mirrors import optim_tf, optim_torch

    convention = CONVENTION_OF[framework]
    mirror = optim_torch if framework == "torch" else optim_tf
    dtype = np.asarray(p).dtype
    p_fw, s_fw = mirror.step(name, p, g, dict(state), h)
    p_ref, s_ref = registry.step(name, convention, p, g, dict(state), h)
    wide = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    p64, s64 = registry.step(name, convention, p.astype(np.float64), g.astype(np.float64), wide, h)
    got = {"p_new": (p_fw, p_ref, p64), **{k: (s_fw[k], s_ref[k], s64[k]) for k in s_ref}}
    actual, expected, exact = (
        np.asarray(x, dtype=np.float64 if tensor == "t" else None) for x in got[tensor]
    )
    tol = tolerance_of(name, convention, tensor, p, g, state, h, dtype)
    truth = None if dtype == np.float64 or tensor == "t" else exact
    return Check(actual, expected, tol, truth, truth_zero=not np.any(exact))


def inputs(name: str, convention: str, k: int, dtype: str, seed: int = 0, shape=(6, 7), h=None):
    """(p, g, state) at step k (k >= 1): p uniform in [-1, 1]; each step's gradient
    uniform in [-1, 1] times 10^e, e from -9 to 0 across the last axis (magnitudes where
    epsilon and the float32 hyper-parameters matter and where they do not); the state
    after k - 1 reference steps in `convention` (hyper-parameters `h`, default the entry's),
    in float64, then everything cast to dtype."""
    rng = np.random.default_rng((seed, k))
    mags = 10.0 ** np.linspace(-9, 0, shape[-1])
    p = rng.uniform(-1, 1, shape)
    entry = registry.optimiser(name)
    h = registry.hyper(name) if h is None else h
    state = entry.init_state(p)
    for _ in range(k - 1):
        p, state = registry.step(name, convention, p, rng.uniform(-1, 1, shape) * mags, state, h)
    g = rng.uniform(-1, 1, shape) * mags
    cast = {s: (v.astype(dtype) if isinstance(v, np.ndarray) else v) for s, v in state.items()}
    return p.astype(dtype), g.astype(dtype), cast

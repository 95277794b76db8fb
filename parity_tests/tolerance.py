"""The one tolerance policy of the suite: every allowed difference is made here.

No test carries its own numbers. Each rule returns a `Tolerance`: a per-element absolute
allowance (article layout) and the name of the rule that made it, which goes into every
report record.

Rules (docs/tolerance.md):

* stage: a framework operation fed the reference's exact inputs computes the same
  expression with its own rounding. Both results lie within gamma(k) * M of the exact value,
  where M is the expression evaluated on absolute values (for a contraction: sum |x||y|,
  computed by running the reference's own contraction on |x| and |y|) and k the number of
  roundings on the way; so they differ by at most 2 * gamma(k) * M.
* end_to_end: the whole model run by each framework lets rounding propagate. Its allowance
  is the stage allowance for that tensor plus E2E_FACTOR times the reference's own float32
  rounding error (float32 run vs float64 run on the same inputs), scaled to the unit
  roundoff of the dtype checked. That measured error is floored at the stage allowance in
  float32 units: one run's error can be near zero by luck (at small batches a tensor rests
  on a few roundings), but not below what its last operation may round (see end_to_end).
* finite_difference: central differences in float64; truncation estimated from two step
  sizes, rounding from the loss magnitude.
* exact: re-indexing only (patches): no difference allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from parity_tests.metrics import PRECISION_QUANTILE

# Unit roundoff u of the arithmetic in force (TF32: a 10-bit mantissa, for GPU runs).
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53, "tf32": 2.0**-11}

# Higham & Mary (2019): |fl(x.y) - x.y| <= g(K) sum|x||y| with g(K) = exp(lam sqrt(K) u +
# K u^2 / (1 - u)) - 1 holds with probability >= 1 - 2K exp(-lam^2 (1 - u)^2 / 2). We pick lam
# so that the bound fails for at most one element in a million.
FAILURE_PROBABILITY = 1e-6

# The rounding counts k of the stage rule live with the maths (reference/rounding.py); the
# policy reads them from there.
from reference.rounding import (  # noqa: E402, F401
    EXACT_ROUNDINGS,
    LOSS_GRAD_ROUNDINGS,
    LOSS_SIGMOID_BACKWARD_ROUNDINGS,
    SELECT_ROUNDINGS,
    SGD_ROUNDINGS,
    SIGMOID_BACKWARD_ROUNDINGS,
    SIGMOID_GRAD_ROUNDINGS,
    SIGMOID_ROUNDINGS,
    TANH_BACKWARD_ROUNDINGS,
    TANH_ROUNDINGS,
    roundings_affine,
    roundings_cross_entropy,
    roundings_dot,
    roundings_loss,
    roundings_softmax,
    roundings_softmax_backward,
    roundings_sum,
    roundings_window_sum,
    sigmoid_grad_magnitude,
)


def with_underflow(tol: Tolerance, k: int, dtype) -> Tolerance:
    """tol + 2 k eta, eta the dtype's smallest subnormal: an operation whose result falls in
    the subnormal range errs by up to eta absolutely, not relatively (a softmax probability
    of 5e-42 in float32 has no relative precision left); negligible everywhere else."""
    eta = float(np.finfo(np.dtype(dtype)).smallest_subnormal)
    return Tolerance(tol.array + 2 * k * eta, f"{tol.rule} + 2*k*eta (underflow)", tol.roundings)


# End-to-end, spec-built networks: the reference's own float32 error is measured at the
# run's weights and at this many more weight points nearby (each weight times 1 + 2^-8 xi,
# xi uniform in [-1, 1]): the same magnitudes, independent roundings. One point is one
# sample per element, and a tensor whose error rests on a few roundings (a dense(1) output
# at four images: four numbers) can be lucky low there; a framework then exceeds four
# times it (generated networks: 3 of 40 at budgets 1.02..1.15 with one point).
SPREAD_POINTS = 3
SPREAD_PERTURBATION = 2.0**-8

# End-to-end: two implementations each as far from the truth as our own float32 run
# (triangle inequality: 2x), and 2x for different accumulation orders across the chain.
E2E_FACTOR = 4.0


@dataclass(frozen=True)
class Tolerance:
    """Absolute allowance per element (float64, broadcastable to the tensor) and its rule;
    `roundings`: the stage rule's k of the tensor's own operation (the length of its
    longest sum: what the effective-precision verdict's floor scales with,
    parity_tests/metrics.py precision_floor), 0 where the rule knows none."""

    array: np.ndarray
    rule: str
    roundings: int = 0


def unit_roundoff(dtype, tf32: bool = False) -> float:
    name = "tf32" if tf32 else str(np.dtype(dtype))
    if name not in UNIT_ROUNDOFF:
        raise ValueError(f"dtype must be float32 or float64, got {name}")
    return UNIT_ROUNDOFF[name]


def from_float32(dtype) -> float:
    """u / u32: what scales the reference's float32 error (the spread) to the same
    operations' rounding in `dtype` (1 for float32, 2^-29 for float64)."""
    return unit_roundoff(dtype) / UNIT_ROUNDOFF["float32"]


def _u_label(u: float) -> str:
    return f"2^{int(round(math.log2(u)))}"


def gamma(k: int, u: float) -> float:
    """Relative error bound for k roundings: min(deterministic k u / (1 - k u), probabilistic)."""
    if k <= 0:
        return 0.0
    deterministic = k * u / (1 - k * u) if k * u < 1 else math.inf
    lam = math.sqrt(2 * math.log(2 * k / FAILURE_PROBABILITY)) / (1 - u)
    probabilistic = math.expm1(lam * math.sqrt(k) * u + k * u * u / (1 - u))
    return min(deterministic, probabilistic)


def gamma_deterministic(k: int, u: float) -> float:
    """k u / (1 - k u), the worst case of k roundings: for sums whose roundings are not
    independent (a running sum of many equal values rounds the same way each time)."""
    return k * u / (1 - k * u) if k * u < 1 else math.inf


def stage(
    magnitude, k: int, dtype, what: str = "|x|.|y|", tf32: bool = False, deterministic: bool = False
) -> Tolerance:
    """2 * gamma(k) * M: both sides round the same expression of the same inputs
    (`deterministic`: gamma's worst case, gamma_deterministic, not the probabilistic one)."""
    u = unit_roundoff(dtype, tf32)
    m = np.abs(np.asarray(magnitude, dtype=np.float64))
    if deterministic:
        rule = f"stage: 2*gamma_det(k={k},u={_u_label(u)})*{what}"
        return Tolerance(2 * gamma_deterministic(k, u) * m, rule, k)
    return Tolerance(2 * gamma(k, u) * m, f"stage: 2*gamma(k={k},u={_u_label(u)})*{what}", k)


def exact(shape) -> Tolerance:
    # A read-only broadcast zero: no full-size array for the 2.9M entries of `patches`.
    return Tolerance(np.broadcast_to(np.float64(0.0), shape), "exact: re-indexing, no arithmetic")


def end_to_end(stage_tol: Tolerance, ref_lo, ref_hi, dtype) -> Tolerance:
    """stage allowance + E2E_FACTOR * (u_dtype / u_float32) * max(spread, floor).

    spread = max|ref_float32 - ref_float64|: how far the reference's own float32 run strayed
    from the exact result at this tensor, standing in for the rounding a whole-model run
    accumulates on the way there.

    floor = max(stage allowance) * u_float32 / u_dtype: the tensor's stage allowance
    2 gamma(k, u) M (linear in u to first order) in float32 units, i.e. how much two
    float32 implementations may differ on the last operation alone. The spread is one
    sample and can be far below that by luck: at one or two images E, dE_db and the scale
    of dE_dA1 and dE_dW each rest on the rounding of one or two numbers (Z2, O, dE_dZ2). On
    MNIST, seed 0, one image, our float32 dE_db is 9.8e-9 (1.3 ulp) from the truth and
    TensorFlow's float64 dE_db 9.7e-17 (7 ulp) from ours: the spread term allowed 7.3e-17. A
    whole-model run still rounds the last operation, so a spread below what that
    operation may round is not trusted; the spread term is then E2E_FACTOR stage
    allowances. Maxima are compared (the spread is a maximum over the tensor too). The rule
    text names the term used.

    The floor knows the tensor's own operation only; an error made upstream (dE_db at one
    image is a one-term sum, k = 1, while its error comes from Z2's 1728-term dot product)
    is covered only as far as E2E_FACTOR stage allowances reach.
    """
    spread = float(
        np.max(np.abs(np.asarray(ref_lo, np.float64) - np.asarray(ref_hi, np.float64)), initial=0.0)
    )
    return end_to_end_from_spread(stage_tol, spread, dtype, "max|ref32-ref64|")


def end_to_end_from_spread(stage_tol: Tolerance, spread: float, dtype, what: str) -> Tolerance:
    """The end-to-end rule (see end_to_end) for a spread measured elsewhere; `what` says how
    (parity_tests/model_harness.py measures it at several weight points)."""
    scale = from_float32(dtype)
    floor = float(np.max(stage_tol.array, initial=0.0)) / scale
    used = "stage floor" if floor > spread else "spread"
    return Tolerance(
        stage_tol.array + E2E_FACTOR * scale * (floor if floor > spread else spread),
        f"end_to_end: [{stage_tol.rule}] + {E2E_FACTOR:g}*(u/u32)*max("
        f"{what} (={spread:.3g}), stage floor max(stage)*u32/u "
        f"(={floor:.3g})): {used} used",
        stage_tol.roundings,
    )


def finite_difference(fd_h, fd_2h, loss_magnitude: float, h: float) -> Tolerance:
    """Central differences in float64: truncation ~ |fd(2h) - fd(h)| / 3 (error ~ h^2),
    rounding ~ u |E| / h; both charged 4x."""
    trunc = np.abs(np.asarray(fd_2h) - np.asarray(fd_h)) / 3
    rounding = UNIT_ROUNDOFF["float64"] * abs(loss_magnitude) / h
    return Tolerance(
        4 * (trunc + rounding), f"finite_difference: 4*(|fd(2h)-fd(h)|/3 + u*|E|/h), h={h:g}"
    )


def quadrature(sum_of_squares, n_terms: int) -> np.ndarray:
    """lambda sqrt(sum (a d)^2): independent errors d of at most n_terms terms, each times its
    coefficient a, exceed this with probability below FAILURE_PROBABILITY (the lambda of
    gamma, Hoeffding's bound for bounded independent terms)."""
    lam = math.sqrt(2 * math.log(2 * max(n_terms, 1) / FAILURE_PROBABILITY))
    return lam * np.sqrt(np.asarray(sum_of_squares, dtype=np.float64))


def carried(tol: Tolerance, magnitude, upstream: str) -> Tolerance:
    """tol + M: M the layer's bound fed the end-to-end allowance of its upstream `upstream`
    (parity_tests/model_harness.py, ModelHarness._carried), what a framework's upstream
    delta, off by its own allowance, makes of this tensor."""
    return Tolerance(
        tol.array + np.asarray(magnitude, dtype=np.float64),
        f"{tol.rule} + [end_to_end allowance of {upstream}, carried through the layer]",
        tol.roundings,
    )


def end_to_end_update(
    update_tol: Tolerance, grad_tol: Tolerance, lr: float, grad: str, share: float = 1.0
) -> Tolerance:
    """new = old - lr * g: a framework's gradient may legitimately differ from ours by its
    own end-to-end allowance, which the update carries over scaled by lr.

    `share` (update_share): how much of the new value the step lr g typically is. The new
    value carries the gradient's error in that proportion (all of it where p is 0, a bias
    at its first step), so its sum length for the precision verdict's floor is the
    gradient's scaled to share^2 k (the floor grows like sqrt(k)), at least SGD's own."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1] (a fraction of the new value), got {share!r}")
    return Tolerance(
        update_tol.array + lr * grad_tol.array,
        f"{update_tol.rule} + lr*[end_to_end allowance of {grad}]",
        max(update_tol.roundings, int(grad_tol.roundings * share * share)),
    )


def update_share(param, grad, lr: float) -> float:
    """The step's typical share of the new value, lr |g| / |p - lr g| at its
    PRECISION_QUANTILE-th percentile (the precision verdict's statistic), at most 1: 1 for a
    parameter at 0, ~lr |g| / |p| for a weight that a step moves a little."""
    p, g = np.asarray(param, np.float64), np.asarray(grad, np.float64)
    step = lr * np.abs(g)
    new = np.abs(p - lr * g)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(new > 0, step / new, np.where(step > 0, 1.0, 0.0))
    if ratio.size == 0:
        return 0.0
    return float(min(1.0, np.percentile(ratio, PRECISION_QUANTILE)))

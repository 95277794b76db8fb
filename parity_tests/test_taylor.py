"""A gradient check with no step size to tune: the Taylor remainder.

Along a random unit direction v over all parameters (f, W, b), with g the reference's
gradient (dE_df, dE_dW, dE_db), E(p + h v) - E(p) - h <g, v> = O(h^2) exactly when g is the
gradient of E; with any other g it is O(h). So the fitted slope of log |remainder| against
log h is 2 for the right gradient and 1 for a wrong one, whatever h range is used, as long
as it stays above rounding (|remainder| >> u |E|) and below where h^3 terms dominate.
(Classic central finite differences of sampled entries live in test_reference.py.)
"""

import numpy as np

from parity_tests.harness import Check
from parity_tests.tolerance import UNIT_ROUNDOFF, Tolerance
from reference import loss, model
from reference.published import VARIANTS

H = 2.0 ** -np.arange(3, 21, 1.5)  # 0.125 down to 1.4e-6, 12 step sizes
ABOVE_ROUNDING = 1e3  # keep points whose remainder is >= 1000 u |E|
SLOPE_BAND = 0.2  # 2 +- 0.2 (a wrong gradient gives 1)
PARAMS = ("f", "W", "b")


def _loss(params, X, y) -> float:
    return float(loss.half_squared_error(model.forward(params, X).O, y))


def remainders(params, grads, X, y, seed=12345):
    """(h, |E(p+hv) - E(p)|, |E(p+hv) - E(p) - h <g, v>|, E(p)) along a random unit v."""
    rng = np.random.default_rng(seed)
    v = {k: rng.standard_normal(params[k].shape) for k in PARAMS}
    norm = np.sqrt(sum(float(np.sum(a * a)) for a in v.values()))
    v = {k: a / norm for k, a in v.items()}
    gv = sum(float(np.vdot(grads[f"dE_d{k}"], v[k])) for k in PARAMS)
    E0 = _loss(params, X, y)
    Eh = np.array([_loss({k: params[k] + h * v[k] for k in PARAMS}, X, y) for h in H])
    return H, np.abs(Eh - E0), np.abs(Eh - E0 - H * gv), E0


def fitted_slope(h, r, E0) -> tuple[float, int]:
    """Slope of log r vs log h over the points well above rounding; and how many there were."""
    keep = r > ABOVE_ROUNDING * UNIT_ROUNDOFF["float64"] * abs(E0)
    return float(np.polyfit(np.log(h[keep]), np.log(r[keep]), 1)[0]), int(keep.sum())


def test_taylor_remainder_is_second_order(parity, article_data, run_config):
    X, y = article_data.X, article_data.y
    params = model.init_params(run_config.seed)  # informative: gradients are not zero
    grads = model.backward(params, model.forward(params, X), y)
    h, first, second, E0 = remainders(params, grads, X, y)
    slope1, n1 = fitted_slope(h, first, E0)
    slope2, n2 = fitted_slope(h, second, E0)
    assert n2 >= 8, f"only {n2} step sizes above rounding: widen H"
    parity.check(
        tensor="dE_dparams",
        equation="E11,E12,E16",
        step="backprop",
        quantity="gradient",
        mode="taylor",
        against="finite_difference",
        dtype="float64",
        compute=lambda: Check(
            np.array([slope2]),
            np.array([2.0]),
            Tolerance(np.array([SLOPE_BAND]), f"taylor: |slope - 2| <= {SLOPE_BAND}"),
            None,
        ),
        note=f"Taylor remainder slope {slope2:.4f} (2 expected) over {n2} step sizes "
        f"h in [{h[-1]:.1e}, {h[0]:.3g}] above rounding; first-order remainder "
        f"slope {slope1:.4f} (1 expected)",
    )
    assert abs(slope1 - 1) < SLOPE_BAND, f"|E(p+hv) - E(p)| slope {slope1:.3f} over {n1} points"


def test_taylor_check_rejects_a_wrong_gradient(article_data, run_config):
    # NOTE: the published code's D2 gradient (A1 + (1 - A1)): the check must see slope ~1.
    X, y = article_data.X, article_data.y
    params = model.init_params(run_config.seed)
    wrong = VARIANTS["D2"].train_step(params, X, y)
    h, _, second, E0 = remainders(params, wrong, X, y)
    slope, _ = fitted_slope(h, second, E0)
    assert abs(slope - 1) < SLOPE_BAND, f"wrong gradient gave slope {slope:.3f}, expected ~1"

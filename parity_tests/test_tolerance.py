"""The tolerance policy itself: the bound formula, and that it accepts correct float32
results of the longest reduction (dE/df: 115,200 products per entry) while rejecting an
error a few times the bound."""

import math

import numpy as np
import pytest

from parity_tests import tolerance
from parity_tests.metrics import compare_arrays
from parity_tests.stages import BY_TENSOR

U32 = tolerance.UNIT_ROUNDOFF["float32"]


@pytest.mark.parametrize("k", [1, 2, 25])
def test_gamma_is_deterministic_for_short_sums(k):
    assert tolerance.gamma(k, U32) == pytest.approx(k * U32 / (1 - k * U32), rel=1e-12)


def test_gamma_grows_like_sqrt_k_for_long_sums():
    # Higham & Mary: ~ lambda sqrt(K) u, far below the worst case K u for K = 115,200.
    g = tolerance.gamma(115_200, U32)
    lam = math.sqrt(2 * math.log(2 * 115_200 / tolerance.FAILURE_PROBABILITY))
    assert g == pytest.approx(lam * math.sqrt(115_200) * U32, rel=0.01)
    assert g < 115_200 * U32 / 40


def test_gamma_is_monotone():
    values = [tolerance.gamma(k, U32) for k in (1, 10, 100, 1000, 10_000, 100_000)]
    assert values == sorted(values)


def test_rounding_counts_are_the_documented_sums():
    # The stage rule's k per kind of operation (parity_tests/stages.py takes them from here).
    S = tolerance.SIGMOID_ROUNDINGS
    assert tolerance.EXACT_ROUNDINGS == 0
    assert [tolerance.roundings_dot(k) for k in (1, 25, 115_200)] == [1, 25, 115_200]
    assert tolerance.roundings_affine(1728) == 1729
    assert tolerance.roundings_sum(200) == 200
    assert [tolerance.roundings_loss(n) for n in (1, 200)] == [4, 203]
    assert tolerance.LOSS_GRAD_ROUNDINGS == 2
    assert tolerance.SIGMOID_GRAD_ROUNDINGS == S + 2
    assert tolerance.SIGMOID_BACKWARD_ROUNDINGS == S + 3
    assert tolerance.LOSS_SIGMOID_BACKWARD_ROUNDINGS == S + 4
    assert tolerance.SGD_ROUNDINGS == 2


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="float32 or float64"):
        tolerance.unit_roundoff("float16")


def test_policy_accepts_correct_float32_dE_df_and_rejects_planted_error(harness, framework):
    check = harness.stage_check(BY_TENSOR["dE_df"], framework, "float32")
    tol = check.tolerance.array
    assert compare_arrays(check.actual, check.expected, tol)["status"] == "pass"
    # NOTE: plant 3x the bound at the entry with the most room, in float32 like the data.
    i = np.unravel_index(np.argmax(tol), tol.shape)
    planted = check.actual.copy()
    planted[i] = np.float32(check.expected[i] + 3 * tol[i])
    result = compare_arrays(planted, check.expected, tol)
    assert result["status"] == "fail" and result["n_bad"] == 1
    assert result["worst_index"] == tuple(int(j) for j in i)
    assert 2.9 < result["budget_used"] < 3.1
    # NOTE: the bound must stay meaningful: a few percent of the largest entry at most (about
    # 0.7% on MNIST, 1.5% on the synthetic digits, whose deltas cancel more).
    assert tol.max() < 0.05 * np.abs(check.expected).max()


def test_end_to_end_rule_scales_with_unit_roundoff():
    stage = tolerance.Tolerance(np.zeros(3), "stage: none")
    lo, hi = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0 + 2**-20])
    t32 = tolerance.end_to_end(stage, lo, hi, "float32")
    t64 = tolerance.end_to_end(stage, lo, hi, "float64")
    assert t32.array.tolist() == [tolerance.E2E_FACTOR * 2**-20] * 3
    assert t64.array[0] == pytest.approx(t32.array[0] * 2.0**-29)
    assert "max|ref32-ref64|" in t32.rule
    assert "spread used" in t32.rule


@pytest.mark.parametrize("k", [1, 12, 1729, 115_200])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_end_to_end_floor_is_the_stage_allowance_in_float32_units(k, dtype):
    # A lucky float32 run (no spread at all) still leaves E2E_FACTOR stage allowances: the
    # floor is the float32 stage allowance of the same operation, scaled to dtype.
    magnitude = np.array([0.5, 2.0, 0.0])
    stage = tolerance.stage(magnitude, k, dtype)
    same = np.array([1.0, -2.0, 0.0])
    t = tolerance.end_to_end(stage, same, same, dtype)
    extra = t.array - stage.array
    assert np.allclose(extra, tolerance.E2E_FACTOR * stage.array.max(), rtol=1e-12, atol=0)
    scale = tolerance.unit_roundoff(dtype) / U32
    floor32 = extra[0] / (tolerance.E2E_FACTOR * scale)
    assert floor32 == pytest.approx(tolerance.stage(magnitude, k, "float32").array.max(), rel=1e-4)
    assert "stage floor used" in t.rule and "max|ref32-ref64| (=0)" in t.rule


def test_end_to_end_spread_above_the_floor_is_kept():
    # Where our float32 run strayed more than its last operation may round, the measured
    # spread rules, as before the floor.
    stage = tolerance.Tolerance(np.array([1e-9, 3e-9]), "stage: given")
    lo, hi = np.array([1.0, 2.0]), np.array([1.0, 2.0 + 2**-20])
    t = tolerance.end_to_end(stage, lo, hi, "float32")
    assert t.array.tolist() == (stage.array + tolerance.E2E_FACTOR * 2**-20).tolist()
    assert "spread used" in t.rule
    just_below = tolerance.Tolerance(np.array([2**-20 * 0.99]), "stage: given")
    assert "spread used" in tolerance.end_to_end(just_below, lo, hi, "float32").rule
    just_above = tolerance.Tolerance(np.array([2**-20 * 1.01]), "stage: given")
    assert "stage floor used" in tolerance.end_to_end(just_above, lo, hi, "float32").rule


# --- the length of the sum, carried for the precision verdict's floor ------------------------


def test_every_rule_carries_its_stage_k():
    # Tolerance.roundings: the stage rule's k, which the precision verdict's floor scales
    # with (parity_tests/metrics.py precision_floor); end to end it is the stage's, and an
    # update's is its gradient's when longer (the new value carries the gradient's error).
    M = np.ones(4)
    stage = tolerance.stage(M, 115_200, "float32")
    assert stage.roundings == 115_200
    assert tolerance.stage(M, 25, "float32", deterministic=True).roundings == 25
    assert tolerance.with_underflow(stage, 115_200, "float32").roundings == 115_200
    e2e = tolerance.end_to_end_from_spread(stage, 1e-6, "float32", "spread")
    assert e2e.roundings == 115_200
    assert tolerance.carried(e2e, M, "conv1.dZ").roundings == 115_200
    update = tolerance.stage(M, tolerance.SGD_ROUNDINGS, "float32")
    assert tolerance.end_to_end_update(update, e2e, 0.1, "dE_df").roundings == 115_200
    # a step of a tenth of the new value: the floor of sqrt(0.01 k), 0.1 sqrt(k)
    assert tolerance.end_to_end_update(update, e2e, 0.1, "dE_df", 0.1).roundings == 1152
    assert tolerance.end_to_end_update(update, e2e, 0.1, "dE_df", 0.0).roundings == 2
    with pytest.raises(ValueError, match="share must be in"):
        tolerance.end_to_end_update(update, e2e, 0.1, "dE_df", 1.5)


@pytest.mark.parametrize(
    "p,g,share",
    [
        (np.zeros(20), np.ones(20), 1.0),  # a bias at 0: the new value is all step
        (np.ones(20), np.full(20, 0.1), 0.01 / 0.99),  # lr 0.1 times g = 0.1: 0.01 of 0.99
        (np.ones(20), np.zeros(20), 0.0),  # no step
    ],
    ids=["zero-param", "small-step", "no-step"],
)
def test_update_share_is_the_steps_part_of_the_new_value(p, g, share):
    assert tolerance.update_share(p, g, 0.1) == pytest.approx(share)
    assert tolerance.exact((2, 2)).roundings == 0


@pytest.mark.parametrize("tensor,k", [("dE_df", 115_200), ("Z2", 1729), ("patches", 0)])
def test_article_checks_carry_their_sums_length(harness, tensor, k):
    stage = harness.stage_check(BY_TENSOR[tensor], "torch", "float32")
    assert stage.tolerance.roundings == k
    if tensor != "patches":
        assert harness.end_to_end_tolerance(tensor, "float32").roundings == k

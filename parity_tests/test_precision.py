"""Effective precision (docs/tolerance.md, "Effective precision"): a float32 result computed
from float16 or bfloat16 operands, or in TF32, is failed even where it lies within the
worst-case stage allowance, and a correct float32 computation is not.

The planted steps are the mutants of parity_tests/mutants.py (dE_df_float16_operands,
dE_df_bfloat16_operands, Z1_tf32; test_mutants.py localises them through every stage
check); here each is compared at the tensor it changes, against each framework, and the
record must say why.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from parity_tests import mutants
from parity_tests.detection import STEPPER
from parity_tests.explain import explain_precision
from parity_tests.metrics import (
    PRECISION_FLOOR_ROUNDINGS,
    PRECISION_MIN_ELEMENTS,
    PRECISION_RATIO_LIMIT,
    compare_arrays,
    compare_check,
    precision_floor,
    precision_stats,
)
from parity_tests.stages import BY_TENSOR
from reference._validate import HAS_EXTENDED

# The float64 truth is the reference in extended precision (np.longdouble), which x86-64
# Linux has and ARM macOS and Windows do not; the fallback is tested on every platform
# (test_without_extended_precision_float64_has_the_allowance_alone).
EXTENDED_ONLY = pytest.mark.skipif(
    not HAS_EXTENDED, reason="this platform's longdouble is float64: no float64 truth"
)

FRAMEWORKS = ("torch", "tensorflow")
PLANTED = ("dE_df_float16_operands", "dE_df_bfloat16_operands", "Z1_tf32")


def _compare(harnesses, run_config, data, step, tensor, framework):
    harness = harnesses(run_config, data, step)
    c = harness.stage_check(BY_TENSOR[tensor], framework, "float32")
    return compare_arrays(
        c.actual,
        c.expected,
        c.tolerance.array,
        truth=c.truth,
        against=framework,
        roundings=c.tolerance.roundings,
    )


def _framework(parity_settings, framework):
    if framework not in parity_settings.frameworks:
        pytest.skip(f"{framework} deselected by --parity-frameworks")


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("planted", PLANTED)
def test_low_precision_operands_fail(
    detection_harness_for, run_config, article_batch, parity_settings, planted, framework
):
    _framework(parity_settings, framework)
    step = mutants.MUTANTS[planted]
    r = _compare(detection_harness_for, run_config, article_batch, step, step.first, framework)
    assert r["status"] == "fail", r
    assert r["impl_bits"] <= 14, r  # 24 - log2(8000): float16 ~13, bfloat16 ~10, TF32 ~12
    assert r["against_bits"] >= 18, r
    assert "precision: impl computed at about" in r["note"], r["note"]
    if planted.startswith("dE_df"):
        # Within the worst-case bound of a 115,200-term sum: only the precision fails it.
        assert r["budget_used"] <= 1 and r["mismatch_kind"] == "precision", r
    found = explain_precision(r, step.first, framework)
    assert found is not None and found.suspect == "precision", r
    assert "fewer than the other side's" in found.message


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("tensor", ("Z1", "dE_dW", "dE_dZ1", "dE_df"))
def test_clean_float32_step_is_not_flagged(
    detection_harness_for, run_config, article_batch, parity_settings, tensor, framework
):
    _framework(parity_settings, framework)
    r = _compare(detection_harness_for, run_config, article_batch, STEPPER, tensor, framework)
    assert r["status"] == "pass", r
    assert r["impl_bits"] >= 18 and r["against_bits"] >= 18, r
    assert "precision" not in r["note"]


# --- precision_stats on made-up numbers ------------------------------------------------------

RNG = np.random.default_rng(3)


def _dot_case(n_out=64, k=4096, fmt=None):
    x = RNG.standard_normal((n_out, k)).astype(np.float32)
    y = RNG.standard_normal((k,)).astype(np.float32)
    truth = x.astype(np.float64) @ y.astype(np.float64)
    tol = 2 * 8 * np.sqrt(k) * 2.0**-24 * (np.abs(x).astype(np.float64) @ np.abs(y))
    clean = (x @ y).astype(np.float64)
    if fmt:
        x, y = mutants.round_operand(x, fmt), mutants.round_operand(y, fmt)
    return clean, (x @ y).astype(np.float64), truth, tol


@pytest.mark.parametrize("fmt", ["float16", "bfloat16", "tf32"])
def test_stats_name_the_low_precision_side(fmt):
    clean, low, truth, tol = _dot_case(fmt=fmt)
    prec = precision_stats(clean, low, truth, tol, np.float32)
    assert prec["worse"] == "impl" and prec["excess"] > PRECISION_RATIO_LIMIT, prec
    swapped = precision_stats(low, clean, truth, tol, np.float32)
    assert swapped["worse"] == "against", swapped


def _two_orders():
    """(truth, tol, blas, sequential) of 64 float32 dot products of 4,096 terms: BLAS's
    order, and the same float32 products summed one by one, left to right (the worst
    common order)."""
    x = RNG.standard_normal((64, 4096)).astype(np.float32)
    y = RNG.standard_normal((4096,)).astype(np.float32)
    truth = x.astype(np.float64) @ y.astype(np.float64)
    tol = 2 * 8 * np.sqrt(4096) * 2.0**-24 * (np.abs(x).astype(np.float64) @ np.abs(y))
    blas = (x @ y).astype(np.float64)
    sequential = np.cumsum(x * y, axis=1, dtype=np.float32)[:, -1].astype(np.float64)
    return truth, tol, blas, sequential


def test_stats_reordered_sum_is_legitimate():
    truth, tol, blas, sequential = _two_orders()
    prec = precision_stats(blas, sequential, truth, tol, np.float32)
    assert prec["worse"] == "", prec
    assert precision_stats(sequential, blas, truth, tol, np.float32)["worse"] == ""


@pytest.mark.parametrize(
    "k,floor", [(0, 8.0), (25, 8.0), (4096, 8.0), (28_800, 28_800**0.5 / 8), (115_200, 115_200**0.5 / 8)]
)
def test_floor_grows_with_the_sums_length(k, floor):
    assert precision_floor(k) == pytest.approx(floor) and precision_floor(k) >= PRECISION_FLOOR_ROUNDINGS


@pytest.mark.parametrize("bad", [-1, 2.5, "115200", None, True])
def test_floor_refuses_a_length_that_is_not_a_count(bad):
    with pytest.raises(ValueError, match="roundings must be an int >= 0"):
        precision_floor(bad)


def test_long_sum_left_to_right_is_legitimate_and_float16_is_not():
    # 28,800 terms whose sum partly cancels (a quarter of each row's mean left), as conv3.db
    # behind a group norm: a left-to-right float32 sum errs by ~150 roundings of |t|, a
    # pairwise one ~7. The fixed floor of 8 roundings failed the left-to-right order (~20x);
    # the floor of a 28,800-term sum, sqrt(k) / 8 = 21 roundings, takes it (~7x), and
    # float16 operands summed either way stay far beyond the limit.
    k = 28_800
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, k)).astype(np.float32)
    x = (x - np.float32(0.75) * x.mean(axis=1, keepdims=True)).astype(np.float32)
    truth = x.astype(np.float64).sum(axis=1)
    tol = 2 * 8 * np.sqrt(k) * 2.0**-24 * np.abs(x).astype(np.float64).sum(axis=1)
    pairwise = x.sum(axis=1).astype(np.float64)
    sequential = np.cumsum(x, axis=1, dtype=np.float32)[:, -1].astype(np.float64)
    low = mutants.round_operand(x, "float16").sum(axis=1).astype(np.float64)
    fixed = precision_stats(sequential, pairwise, truth, tol, np.float32)
    assert fixed["worse"] == "against" and fixed["floor_roundings"] == PRECISION_FLOOR_ROUNDINGS
    scaled = precision_stats(sequential, pairwise, truth, tol, np.float32, roundings=k)
    assert scaled["worse"] == "" and scaled["excess"] < PRECISION_RATIO_LIMIT / 2, scaled
    caught = precision_stats(low, pairwise, truth, tol, np.float32, roundings=k)
    assert caught["worse"] == "against" and caught["excess"] > 10 * PRECISION_RATIO_LIMIT, caught


def test_stats_correctly_rounded_side_does_not_fail_the_other():
    clean, _, truth, tol = _dot_case()
    exact = truth.astype(np.float32).astype(np.float64)
    assert precision_stats(clean, exact, truth, tol, np.float32)["worse"] == ""


def test_stats_need_enough_elements_and_a_scale():
    clean, low, truth, tol = _dot_case(n_out=PRECISION_MIN_ELEMENTS - 1, fmt="bfloat16")
    assert precision_stats(clean, low, truth, tol, np.float32) is None  # too few elements
    # ... unless a correct computation's error is known (end to end): the scale alone
    few = precision_stats(clean, low, truth, tol, np.float32, legit=np.abs(clean - truth))
    assert np.isnan(few["impl_bits"]) and few["worse"] == "" and "scaled" in few
    zeros = np.zeros(64)
    assert precision_stats(zeros, zeros, zeros, np.ones(64), np.float32) is None  # both ~0
    exact = np.zeros(64)  # an exact rule (tolerance 0): nothing to normalise by
    assert precision_stats(exact, exact, exact, exact, np.float32) is None


def test_exact_zero_errors_are_no_evidence():
    truth = np.arange(1.0, 65.0)
    r = compare_arrays(truth.astype(np.float32), truth.astype(np.float32), 1e-6 * truth, truth=truth)
    assert r["status"] == "pass" and r["impl_bits"] == 24 and r["against_bits"] == 24


# --- the scale verdict (docs/tolerance.md, "Scale") ------------------------------------------


@pytest.mark.parametrize("e", [3e-6, -3e-6, 1e-5])
def test_scale_error_hidden_from_the_typical_error_fails(e):
    # A dot product of 4,096 terms: the typical-error verdict needs ~128 roundings (7.6e-6)
    # before it fails; the scale verdict catches 3e-6, about 50 roundings.
    clean, _, truth, tol = _dot_case()
    other = np.asarray(truth, np.float64).astype(np.float32).astype(np.float64)
    scaled = (clean * (1 + e)).astype(np.float32).astype(np.float64)
    prec = precision_stats(clean, scaled, truth, tol, np.float32, roundings=4096)
    assert prec["scaled"] and prec["impl_scale"] == pytest.approx(e, rel=0.1), prec
    if abs(e) < 5e-6:  # the premise: the typical-error verdict alone lets it through
        assert prec["worse"] == "", prec
    r = compare_arrays(clean, scaled, tol, truth=truth, against="torch", roundings=4096)
    assert r["budget_used"] <= 1 and r["status"] == "fail" and r["mismatch_kind"] == "precision", r
    assert "scale: impl is scaled by 1 " in r["note"], r["note"]
    found = explain_precision(r, "dE_df", "torch")
    assert found is not None and found.suspect == "factor" and "constant factor" in found.message
    # Against a correctly rounded side (no scatter) the limit rests on the implementation's
    # own scatter about its scale and one rounding, not on zero: a clean result passes.
    assert not precision_stats(other, clean, truth, tol, np.float32, roundings=4096)["scaled"]


def test_scale_verdict_passes_other_orders_of_summation():
    truth, tol, blas, sequential = _two_orders()
    for a, e in ((blas, sequential), (sequential, blas)):
        prec = precision_stats(a, e, truth, tol, np.float32, roundings=4096)
        assert not prec["scaled"] and abs(prec["impl_scale"]) < prec["scale_limit"] / 2, prec


# --- fewer than 16 elements: the scale alone, against a correct computation's own error ---


@pytest.mark.parametrize("e, scaled", [(0.0, False), (3.0, False), (12.0, True), (-12.0, True)])
def test_a_scalar_is_judged_by_its_scale_against_the_legit_error(e, scaled):
    """One value (a loss, a bias): its error against the truth is its scale; the limit is
    SCALE_LIMIT (5) times the larger of the framework's error, a correct computation's own
    (legit) and one rounding. A framework correctly rounded by luck does not make the limit
    one rounding."""
    t = np.array([0.7310585786300049])
    u = 2.0**-24
    legit = np.array([4 * u * t[0]])  # a correct float32 computation: 4 roundings off
    a = t.astype(np.float32).astype(np.float64)  # the framework: correctly rounded
    impl = t * (1 + e * 4 * u)
    prec = precision_stats(a, impl, t, np.array([1e-3]), np.float32, legit=legit)
    assert prec["scaled"] is scaled, prec
    assert prec["scale_limit"] == pytest.approx(5 * 4 * u, rel=1e-6)


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=EXTENDED_ONLY)])
@pytest.mark.parametrize(
    "tensor, mode",
    [
        ("E", "end_to_end"),
        ("dE_db", "end_to_end"),
        ("b_new", "end_to_end"),
        ("E", "stage"),
        ("dE_db", "stage"),
    ],
)
def test_a_small_tensor_scaled_within_its_allowance_fails(harness, tensor, mode, dtype):
    """The article's E, dE_db and b_new (one element each) had the allowance alone: a scale
    error 550 to 750 times what a framework legitimately differs by passed. Scaled by 20
    times the larger of the framework's and the reference's own error (end to end: its
    whole step's at the spread's weight points; stage: its layer's alone; float64: against
    the extended-precision truth), well within the allowance, each now fails on precision
    and is named a factor. (b_new stage-isolated is one update, allowed a rounding or two.)"""
    make = harness.stage_check if mode == "stage" else harness.end_to_end_check
    c = make(BY_TENSOR[tensor], "torch", dtype)
    t = c.truth.astype(np.float64)
    a, ours = (np.asarray(x, np.float64) for x in (c.actual, c.expected))
    e = 20 * float(np.max(np.maximum(np.abs(a - t), c.legit)) / np.max(np.abs(t)))
    assert compare_check(c, against="torch")["status"] == "pass"
    scaled = dataclasses.replace(c, expected=(ours * (1 + e)).astype(c.expected.dtype))
    r = compare_check(scaled, against="torch")
    assert r["budget_used"] <= 1, r  # the allowance alone lets it through
    assert r["status"] == "fail" and r["mismatch_kind"] == "precision", r
    assert "scale: impl is scaled by 1 " in r["note"], r["note"]


# --- float64: measured against the reference in extended precision ----------------------


def _mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """x with its mantissa rounded to `bits` bits: a float64 result that carries fewer."""
    m, e = np.frexp(x)
    return np.ldexp(np.round(m * 2.0**bits) / 2.0**bits, e)


@EXTENDED_ONLY
@pytest.mark.parametrize("mode", ["stage", "end_to_end"])
@pytest.mark.parametrize(
    "tensor, change",
    [
        ("dE_df", "scaled 1e-12"),  # the example: hidden by a 1e-11 allowance
        ("dE_df", "40 bits"),
        ("Z2", "scaled 3e-14"),
        ("dE_dW", "45 bits"),
    ],
)
def test_a_float64_result_within_its_allowance_but_imprecise_fails(harness, tensor, change, mode):
    """float64 had no truth, so the allowance alone judged it: dE_df x (1 + 1e-12) passed,
    and so did a result carrying 40 of float64's 53 bits. The truth is now the reference in
    extended precision (np.longdouble, 64 bits on x86), the same verdicts as float32 apply,
    and each of these fails on precision though within its allowance."""
    make = harness.stage_check if mode == "stage" else harness.end_to_end_check
    c = make(BY_TENSOR[tensor], "torch", "float64")
    assert c.truth is not None
    clean = compare_check(c, against="torch")
    assert clean["status"] == "pass" and clean["impl_bits"] >= 48, clean
    ours = np.asarray(c.expected, np.float64)
    if change.startswith("scaled"):
        changed = ours * (1 + float(change.split()[1]))
    else:
        changed = _mantissa(ours, int(change.split()[0]))
    r = compare_check(dataclasses.replace(c, expected=changed), against="torch")
    assert r["budget_used"] <= 1, r  # the allowance alone lets it through
    assert r["status"] == "fail" and r["mismatch_kind"] == "precision", r
    if change.endswith("bits"):  # rounding to b bits errs by about 2^-(b + 2) relative
        assert abs(r["impl_bits"] - (int(change.split()[0]) + 2)) <= 3, r
        assert "precision: impl computed at about" in r["note"], r["note"]


@EXTENDED_ONLY
def test_the_float64_truth_is_more_precise_than_float64():
    """The extended-precision step differs from the float64 one by about float64's rounding
    (so it is that much closer to the exact result), and computing it leaves the
    reference refusing longdouble from anyone else."""
    from reference._validate import EXTENDED, float_array

    assert np.finfo(EXTENDED).nmant >= 63
    with pytest.raises(TypeError, match="must have dtype float32 or float64, got float128"):
        float_array("X", np.ones(3, EXTENDED))


def test_without_extended_precision_float64_has_the_allowance_alone(
    monkeypatch, harness, run_config, article_data
):
    """Where longdouble is float64 there is no float64 truth: the checks carry none (no
    precision verdict, the allowance alone, as before), and float32 keeps its float64
    truth."""
    from parity_tests import harness as harness_module
    from parity_tests.harness import truth_dtype
    from parity_tests.model_harness import ModelHarness
    from reference.network import Network

    monkeypatch.setattr(harness_module, "HAS_EXTENDED", False)
    assert truth_dtype("float64") is None and truth_dtype("float32") == np.float64
    article = harness.stage_check(BY_TENSOR["dE_df"], "torch", "float64")
    assert article.truth is None and compare_check(article, against="torch")["status"] == "pass"
    assert harness.stage_check(BY_TENSOR["dE_df"], "torch", "float32").truth is not None
    net = ModelHarness(Network("conv(2,3)-relu-dense(10)-softmax_ce"), run_config, article_data)
    assert net.truth("float64") is None and net.legit_error("conv1.Z", "float64") is None
    spec = net.stage_check("conv1.dF", "torch", "float64")
    assert spec.truth is None and compare_check(spec, against="torch")["status"] == "pass"

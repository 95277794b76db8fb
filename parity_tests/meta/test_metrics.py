"""compare_arrays and format_mismatch against values worked out by hand."""

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from parity_tests.metrics import compare_arrays, format_mismatch
from reports.fields import normalise_record

F32 = np.float32
INF, NAN = math.inf, math.nan


def f64(*values):
    return np.array(values, dtype=np.float64)


@dataclass
class Case:
    id: str
    actual: np.ndarray
    expected: np.ndarray
    tol: object
    want: dict = field(default_factory=dict)


VALUE_CASES = [
    # errors [0, 0.5, 0.5]; budgets [0, 2, 2]; rel 0.5/2.5 and 0.5/3
    Case("scalar-tol", f64(1.0, 2.0, 3.5), f64(1.0, 2.5, 3.0), 0.25,
         {"n": 3, "max_abs_err": 0.5, "max_rel_err": 0.2, "mean_abs_err": 1 / 3,
          "budget_used": 2.0, "budget_q99": 2.0, "n_bad": 2, "worst_index": (1,),
          "against_at_worst": 2.0, "impl_at_worst": 2.5, "tol_at_worst": 0.25,
          "status": "fail", "passed": False}),
    # errors [0, 0.125, 0.5] over tolerances [0.5, 0.25, 0.25]: budgets [0, 0.5, 2]
    Case("per-element-tol", f64(0.0, 1.125, -2.0), f64(0.0, 1.0, -2.5), f64(0.5, 0.25, 0.25),
         {"max_abs_err": 0.5, "max_rel_err": 0.2, "mean_abs_err": 0.625 / 3,
          "budget_used": 2.0, "n_bad": 1, "worst_index": (2,), "tol_at_worst": 0.25,
          "status": "fail"}),
    # budgets 2 at (1, 0) and exactly 1 at (0, 2): only one element is bad
    Case("2d-index", f64(1, 2, 3.25, 4.5, 5, 6).reshape(2, 3), f64(1, 2, 3, 4, 5, 6).reshape(2, 3),
         0.25, {"shape": (2, 3), "n": 6, "worst_index": (1, 0), "budget_used": 2.0,
                "n_bad": 1, "against_at_worst": 4.5, "impl_at_worst": 4.0}),
    Case("budget-exactly-1-passes", f64(1.25, 3.0), f64(1.0, 3.0), 0.25,
         {"budget_used": 1.0, "n_bad": 0, "status": "pass", "passed": True}),
    Case("tie-takes-first", f64(1.5, 2.5), f64(1.0, 2.0), 0.5,
         {"budget_used": 1.0, "worst_index": (0,)}),
    Case("rel-err-expected-zero", f64(0.5, 4.0), f64(0.0, 4.0), 0.25,
         {"max_rel_err": INF, "budget_used": 2.0, "status": "fail"}),
    Case("exact-check-equal", f64(1.0, -2.0), f64(1.0, -2.0), 0.0,
         {"budget_used": 0.0, "max_rel_err": 0.0, "status": "pass", "vacuous": False}),
    Case("exact-check-differs", f64(1.0, 2.0), f64(1.0, 3.0), 0.0,
         {"budget_used": INF, "n_bad": 1, "worst_index": (1,), "status": "fail"}),
    # NOTE: budgets k/64 for k = 0..199; the 99th percentile is taken at the next element
    # up (198/64), never interpolated (that would mix inf and finite budgets).
    Case("q99", 10 + np.arange(200) / 64, np.full(200, 10.0), 1.0,
         {"budget_used": 199 / 64, "budget_q99": 198 / 64, "n_bad": 200 - 65}),
    Case("inf-equals-inf", f64(INF, -INF, 1.0), f64(INF, -INF, 1.0), 0.5,
         {"max_abs_err": 0.0, "budget_used": 0.0, "status": "pass"}),
    Case("inf-vs-minus-inf", f64(INF, 1.0), f64(-INF, 1.0), 0.5,
         {"max_abs_err": INF, "budget_used": INF, "n_bad": 1, "status": "fail"}),
    Case("inf-vs-finite", f64(1.0, INF), f64(1.0, 2.0), 0.5,
         {"budget_used": INF, "max_rel_err": INF, "worst_index": (1,), "status": "fail"}),
    Case("minus-zero-equals-zero", f64(-0.0, 2.0), f64(0.0, 2.0), 0.0,
         {"max_abs_err": 0.0, "max_ulp": 0, "budget_used": 0.0, "status": "pass"}),
]  # fmt: skip


@pytest.mark.parametrize("case", VALUE_CASES, ids=lambda c: c.id)
def test_metric_values(case):
    got = compare_arrays(case.actual, case.expected, case.tol)
    for key, want in case.want.items():
        expect = pytest.approx(want, rel=1e-15) if isinstance(want, float) else want
        assert got[key] == expect, key


ONE = F32(1.0)
TINY = F32(np.finfo(F32).smallest_subnormal)
ULP_CASES = [
    ("f32-next-up", ONE, np.nextafter(ONE, F32(2)), 1),
    ("f32-two-steps", ONE, ONE + F32(2**-22), 2),
    ("f32-next-down", ONE, np.nextafter(ONE, F32(0)), 1),
    ("f32-minus-zero", F32(-0.0), F32(0.0), 0),
    ("f32-across-zero", -TINY, TINY, 2),
    ("f32-negative", F32(-1.0), np.nextafter(F32(-1.0), F32(-2)), 1),
    ("f32-max-to-inf", np.finfo(F32).max, F32(np.inf), 1),
    ("f64-next-up", 1.0, 1.0 + 2.0**-52, 1),
    (
        "f64-extremes",
        -np.finfo(np.float64).max,
        np.finfo(np.float64).max,
        2 * (0x7FEFFFFFFFFFFFFF),
    ),
]


@pytest.mark.parametrize(("a", "e", "ulp"), [c[1:] for c in ULP_CASES], ids=[c[0] for c in ULP_CASES])
def test_max_ulp(a, e, ulp):
    got = compare_arrays(np.array([a]), np.array([e]), 1.0)["max_ulp"]
    assert got == ulp and type(got) is int


@pytest.mark.parametrize(
    ("actual", "expected", "nan_note"),
    [
        (f64(NAN, 1.0), f64(1.0, 1.0), "1 in torch, 0 in impl"),
        (f64(1.0, 1.0), f64(1.0, NAN), "0 in torch, 1 in impl"),
        (
            f64(NAN, 1.0),
            f64(NAN, 1.0),
            "1 in torch, 1 in impl",
        ),  # same place: still fails
    ],
    ids=["actual", "expected", "both-same-place"],
)
def test_nan_is_a_mismatch(actual, expected, nan_note):
    got = compare_arrays(actual, expected, 0.5, against="torch")
    assert (got["status"], got["passed"], got["n_bad"], got["budget_used"]) == (
        "fail",
        False,
        1,
        INF,
    )
    assert nan_note in got["note"]


@pytest.mark.parametrize(
    ("actual", "expected", "words"),
    [
        (np.zeros((2, 3)), np.zeros((3, 2)), ["shape", "against (2, 3)", "impl (3, 2)"]),
        (np.zeros(2, F32), np.zeros(2), ["dtype", "against float32", "impl float64"]),
        # shape is checked before dtype
        (np.zeros(2, F32), np.zeros(3), ["shape", "against (2,)", "impl (3,)"]),
    ],
    ids=["shape", "dtype", "shape-before-dtype"],
)
def test_structural_mismatch_fails_without_crashing(actual, expected, words):
    got = compare_arrays(actual, expected, 0.1)
    assert (got["status"], got["passed"]) == ("fail", False)
    assert all(w in got["note"] for w in words), got["note"]
    assert math.isnan(got["budget_used"]) and math.isnan(got["max_abs_err"])


def test_empty_is_an_error():
    got = compare_arrays(np.zeros((0, 3)), np.zeros((0, 3)), 0.1)
    assert (got["n"], got["status"], got["note"], got["passed"]) == (
        0,
        "error",
        "empty",
        False,
    )


@pytest.mark.parametrize(
    ("actual", "expected", "tol", "expect_zero", "status", "vacuous"),
    [
        (np.zeros(4), np.zeros(4), 1e-6, False, "vacuous", True),
        (np.zeros(4), np.zeros(4), 0.0, False, "vacuous", True),
        (f64(1e-9, 0), f64(-1e-9, 0), 1e-8, False, "vacuous", True),
        (np.zeros(4), np.zeros(4), 1e-6, True, "pass", True),
        (
            f64(0, 0, 1.0),
            f64(0, 0, 1.0),
            1e-6,
            False,
            "pass",
            False,
        ),  # one real value decides
    ],
    ids=["zeros", "zeros-exact", "tiny", "zeros-expected", "one-nonzero"],
)
def test_vacuous(actual, expected, tol, expect_zero, status, vacuous):
    got = compare_arrays(actual, expected, tol, expect_zero=expect_zero)
    assert (got["status"], got["vacuous"], got["passed"]) == (
        status,
        vacuous,
        status == "pass",
    )
    if expect_zero:
        assert got["note"] == "zeros expected"


@pytest.mark.parametrize(
    ("actual", "expected", "closer", "err_a", "err_e"),
    [
        (f64(1.0, 2.25), f64(1.5, 2.0), "tensorflow", 0.25, 0.5),
        (f64(1.5, 2.0), f64(1.0, 2.25), "impl", 0.5, 0.25),
        (f64(1.25, 2.0), f64(1.0, 1.75), "tie", 0.25, 0.25),
    ],
    ids=["framework", "impl", "tie"],
)
def test_closer_to_truth(actual, expected, closer, err_a, err_e):
    # actual is the other side (named by `against`), expected the implementation under test.
    got = compare_arrays(actual, expected, 1.0, truth=f64(1.0, 2.0), against="tensorflow")
    assert (
        got["closer_to_truth"],
        got["against_err_vs_truth"],
        got["impl_err_vs_truth"],
    ) == (closer, err_a, err_e)


def test_no_truth_leaves_truth_fields_blank():
    got = compare_arrays(f64(1.0), f64(1.0), 0.5)
    assert got["closer_to_truth"] == "" and math.isnan(got["against_err_vs_truth"])


def test_brief_skips_only_the_unused_metrics():
    a, e = f64(1.0, 2.0, 3.5), f64(1.0, 2.5, 3.0)
    full = compare_arrays(a, e, 0.25, truth=e)
    brief = compare_arrays(a, e, 0.25, truth=e, brief=True)
    skipped = {
        "max_ulp",
        "budget_q99",
        "against_err_vs_truth",
        "impl_err_vs_truth",
        "closer_to_truth",
    }
    assert {k: v for k, v in brief.items() if k not in skipped} == {
        k: v for k, v in full.items() if k not in skipped
    }
    assert math.isnan(brief["max_ulp"]) and math.isnan(brief["budget_q99"])
    assert brief["closer_to_truth"] == "" and full["closer_to_truth"] == "impl"


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"actual": [1.0]}, TypeError, "actual"),
        ({"expected": np.array([1 + 2j])}, TypeError, "expected"),
        ({"actual": np.array([1.0], dtype=object)}, TypeError, "actual"),
        ({"tol": "0.1"}, TypeError, "tolerance"),
        ({"tol": -1.0}, ValueError, "tolerance"),
        ({"tol": f64(0.1, 0.1)}, ValueError, "tolerance"),
        ({"truth": np.array([1.0], F32)}, ValueError, "truth"),
    ],
    ids=[
        "list",
        "complex",
        "object",
        "tol-str",
        "tol-negative",
        "tol-shape",
        "truth-f32",
    ],
)
def test_bad_input_names_the_argument(kwargs, error, name):
    args = {"actual": f64(1.0), "expected": f64(1.0), "tol": 0.1} | kwargs
    truth = args.pop("truth", None)
    with pytest.raises(error, match=name):
        compare_arrays(args["actual"], args["expected"], args["tol"], truth=truth)


LOSSY = {
    "masked": (lambda: np.ma.array([[1.0]], mask=[[True]]), " is a masked array: its mask"),
    "matrix": (lambda: np.matrix([[1.0]]), ": np.matrix is not supported, pass np.asarray"),
}


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("kind", LOSSY)
@pytest.mark.parametrize("arg", ["actual", "expected", "truth", "tolerance"])
def test_masked_array_and_matrix_are_refused(arg, kind):
    # np.asarray drops a mask silently (a masked NaN would compare as equal) and keeps no
    # trace of a matrix: both are refused, naming the argument.
    make, says = LOSSY[kind]
    args = {"actual": np.ones((1, 1)), "expected": np.ones((1, 1)), "truth": np.ones((1, 1)),
            "tolerance": np.full((1, 1), 0.1)} | {arg: make()}  # fmt: skip
    with pytest.raises(TypeError, match=re.escape(arg + says)):
        compare_arrays(args["actual"], args["expected"], args["tolerance"], truth=args["truth"])


def test_results_are_plain_python_and_json_safe():
    got = compare_arrays(np.ones(3, F32), np.ones(3, F32), F32(1e-6), truth=np.ones(3))
    assert all(type(v) in (float, int, bool, str, tuple) for v in got.values()), got
    json.dumps(normalise_record(got))


@given(
    hnp.arrays(
        F32,
        hnp.array_shapes(max_dims=3),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    ).filter(lambda x: np.any(x != 0))
)
def test_identical_arrays_pass_with_zero_budget(x):
    got = compare_arrays(x, x.copy(), F32(0.0))
    assert (got["status"], got["budget_used"], got["max_ulp"]) == ("pass", 0.0, 0)


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_one_step_up_is_one_ulp(v):
    a = np.array([v], F32)
    with np.errstate(over="ignore"):  # the largest float32's next step up is inf: one ULP too
        up = np.nextafter(a, F32(np.inf))
    assert compare_arrays(a, up, 1.0)["max_ulp"] == 1


def _record(**changes):
    rec = compare_arrays(f64(1.0, 2.0, 3.5), f64(1.0, 2.5, 3.0), 0.25, against="torch")
    rec.update(
        tensor="dE_df",
        equation="E16",
        mode="stage",
        impl="reference",
        against="torch",
        dtype="float64",
        tolerance_rule="gamma(K) sum|x||y|",
    )
    return rec | changes


def test_mismatch_message():
    lines = format_mismatch(_record(), "pytest 'x::y[dE_df]' --seed 3").splitlines()
    assert lines[0] == "`dE_df` (E16, stage) differs between reference and torch [float64]"
    assert lines[1] == "Mismatched elements: 2 / 3 (66.7%)"
    assert lines[2] == (
        "Greatest budget used: 2 (error / tolerance) at index (1,): "
        "impl reference: 2.5, torch: 2, |diff| 0.5, allowed 0.25"
    )
    assert "Greatest absolute difference: 0.5" in lines[3]
    assert lines[4] == "Greatest relative difference: 0.2"
    assert "Tolerance rule: gamma(K) sum|x||y|" in lines
    assert lines[-1] == "reproduce: pytest 'x::y[dE_df]' --seed 3"


def test_vacuous_message_says_it_proves_nothing():
    rec = compare_arrays(np.zeros(3), np.zeros(3), 1e-6) | {
        "tensor": "dE_dW",
        "equation": "E12",
    }
    first = format_mismatch(rec, "pytest x").splitlines()[0]
    assert "indistinguishable from zero" in first and "proves nothing" in first


def test_shape_mismatch_message_carries_the_note():
    rec = compare_arrays(np.zeros((2, 3)), np.zeros((3, 2)), 0.1, against="torch") | {"tensor": "Z1"}
    text = format_mismatch(rec, "pytest x")
    assert "shape mismatch: torch (2, 3), impl (3, 2)" in text and "Mismatched" not in text


def test_shape_mismatch_with_expected_shaped_tolerance_is_recorded_not_raised():
    # A user implementation returning dE_dW as (1, 4) instead of (4, 1).
    out = compare_arrays(np.zeros((1, 4)), np.zeros((4, 1)), np.ones((4, 1)))
    assert out["status"] == "fail" and "shape mismatch" in out["note"]


def test_messages_say_whose_is_whose():
    # Records and messages name the implementation under test ("impl reference") and the
    # framework ("torch"), never actual/expected.
    x, ours = f64(0.74412322, 0.5), f64(0.74412304, 0.5)  # torch's, ours
    rec = compare_arrays(x, ours, 1e-8, truth=f64(0.744123, 0.5), against="torch")
    rec |= {"tensor": "A1", "equation": "E3", "mode": "stage", "impl": "reference",
            "against": "torch", "dtype": "float64"}  # fmt: skip
    assert (rec["against_at_worst"], rec["impl_at_worst"]) == (float(x[0]), float(ours[0]))
    assert rec["closer_to_truth"] == "impl"
    text = format_mismatch(rec, "pytest x")
    assert "impl reference: 0.74412304, torch: 0.74412322" in text, text
    closer = next(line for line in text.splitlines() if line.startswith("Closer"))
    assert "error of impl reference" in closer and ", of torch" in closer
    assert "actual" not in text and "expected" not in text


def test_absent_message():
    rec = {"tensor": "dE_dZ1", "status": "absent", "impl": "my_cnn", "dtype": "float64",
           "mode": "contract"}  # fmt: skip
    first = format_mismatch(rec, "pytest x").splitlines()[0]
    assert first == "`dE_dZ1` (contract) was not provided by impl my_cnn [float64]: nothing to compare"


@pytest.mark.parametrize(
    ("truth", "truth_zero", "status"),
    [
        (np.zeros(4), False, "pass"),  # a float64 truth of zeros: zeros are right
        (None, True, "pass"),  # declared by the caller (Network.exact_zeros)
        (f64(0, 0, 1e-3, 0), False, "vacuous"),  # both sides zero where the truth is not
        (None, False, "vacuous"),  # nothing known: the check could not fail
        (f64(0, 0, 5e-7, 0), False, "pass"),  # the truth is within the allowance of zero too
    ],
    ids=["truth-zero", "declared-zero", "truth-nonzero", "unknown", "truth-below-allowance"],
)
def test_zeros_are_declared_where_the_truth_is_zero(truth, truth_zero, status):
    got = compare_arrays(np.zeros(4), np.zeros(4), 1e-6, truth=truth, truth_zero=truth_zero)
    assert (got["status"], got["passed"]) == (status, status == "pass")
    if status == "pass" and truth is not None and np.any(truth):
        assert got["note"] == (
            "both sides within tolerance of zero, and so is the truth (largest |truth| "
            "5e-07, allowed 1e-06 there): the value cannot be told from zero at this dtype "
            "(declared)"
        )
        # a float32 check's float64 twin is the one that can tell it from zero
        f32 = np.zeros(4, np.float32)
        note = compare_arrays(f32, f32, 1e-6, truth=truth)["note"]
        assert note.endswith("(declared; the float64 check tests it)"), note
    elif status == "pass":
        assert got["note"] == "exactly zero on both sides, as the truth is exactly zero here (declared)"


def test_a_typical_error_that_overflows_is_the_largest_not_nan():
    # errors beyond float64's range over a tiny allowance: inf, never NaN (a NaN typical
    # error fails no verdict)
    from parity_tests.metrics import precision_stats

    truth = np.linspace(1.0, 2.0, 64)
    wild = truth.copy()
    wild[::2] = 1e300
    prec = precision_stats(truth, wild, truth, np.full(64, 1e-300), np.float64)
    assert prec["worse"] == "impl" and prec["excess"] == np.inf, prec


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_a_scaled_result_is_named_in_any_float_dtype(dtype):
    # the notes name what the result was measured against; a dtype the suite's checks do
    # not use (float16 in a bare comparison) gets a plain word, not a crash
    truth = np.linspace(1.0, 2.0, 64)
    clean = truth.astype(dtype)
    scaled = (truth * 1.01).astype(dtype)
    r = compare_arrays(clean, scaled, np.ones(64), truth=truth)
    assert r["status"] == "fail" and r["mismatch_kind"] == "precision", r
    assert "scale: impl is scaled by 1 +0.01" in r["note"] or "1 +0.00998" in r["note"], r["note"]
    assert ("the float64 truth" in r["note"]) == (dtype == "float32"), r["note"]


# --- the percentile the precision verdict and budget_q99 read ---------------------------


def _values(kind: str, n: int, seed: int) -> np.ndarray:
    """n values of one shape of data a comparison meets: errors spread over magnitudes, a
    dead ReLU's zeros, few distinct values, overflowed infs, a NaN, a periodic pattern that
    a strided sample sees only part of."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal(n)) * 10.0 ** rng.integers(-8, 2, n)
    if kind == "zeros":
        x[rng.random(n) < 0.9] = 0.0
    elif kind == "ties":
        x = rng.integers(0, 4, n).astype(np.float64)
    elif kind == "infs":
        x[rng.random(n) < 0.15] = math.inf
    elif kind == "nan":
        x[rng.integers(n)] = math.nan
    elif kind == "periodic":
        x = np.tile(np.r_[np.zeros(63), 1.0], n // 64 + 1)[:n] * (1 + rng.random(n))
    return x


@given(
    kind=st.sampled_from(["spread", "zeros", "ties", "infs", "nan", "periodic"]),
    n=st.one_of(st.integers(1, 300), st.integers(1 << 16, 300_000)),
    seed=st.integers(0, 2**32 - 1),
    q=st.sampled_from([90, 99, 50, 0, 100]),
    method=st.sampled_from(["linear", "higher"]),
)
def test_percentile_is_numpys_value(kind, n, seed, q, method):
    from parity_tests.metrics import percentile

    x = _values(kind, n, seed)
    with np.errstate(invalid="ignore"):
        want = np.percentile(x, q, method=method)
        got = percentile(x.copy(), q, method)
    assert got == want or (math.isnan(got) and math.isnan(want))


@pytest.mark.parametrize("kind", ["spread", "zeros", "periodic"])
def test_percentile_selects_above_a_bound_and_falls_back_exactly(kind, monkeypatch):
    # The fast selection must be taken (a bound below the rank) for ordinary data, and a
    # bound that is too high (forced here) must fall back to the whole array, exactly.
    from parity_tests import metrics

    x = _values(kind, 200_000, 7)
    want = np.percentile(x, 90)
    assert metrics.percentile(x.copy(), 90) == want
    monkeypatch.setattr(metrics, "math", _SkewedMath())  # the bound's rank far too high
    assert metrics.percentile(x.copy(), 90) == want


@pytest.mark.parametrize(("q", "method"), [(101, "linear"), (-1, "higher"), (50, "nearest")])
def test_percentile_refuses_what_it_does_not_compute(q, method):
    from parity_tests.metrics import percentile

    with pytest.raises(ValueError, match="percentile takes q in"):
        percentile(np.ones(3), q, method)


class _SkewedMath:
    """math, but a square root of -10^6: the sample bound lands near the top of the sample."""

    def __getattr__(self, name):
        return getattr(math, name)

    @staticmethod
    def sqrt(v):
        return -1e6 if v > 0 else 0.0

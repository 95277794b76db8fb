"""Records, the records frame, outliers, the summary and the terminal lines."""

import json
import math

import numpy as np
import pytest

from reports.fields import RECORD_FIELDS, normalise_record
from reports.tables import (
    by_severity,
    fill_outliers,
    headline,
    records_frame,
    summary_frame,
    terminal_lines,
)


def rec(check="t[x]", **fields):
    base = {
        "check": check,
        "tensor": "Z1",
        "mode": "stage",
        "impl": "reference",
        "against": "torch",
        "dtype": "float32",
        "status": "pass",
        "passed": True,
        "budget_used": 0.5,
    }
    return base | fields


@pytest.mark.parametrize(
    ("key", "value", "stored"),
    [
        ("max_abs_err", np.float32(0.5), 0.5),
        ("n", np.int64(576), 576),
        ("passed", np.bool_(True), True),
        ("worst_index", (2, np.int64(3), 1), "(2, 3, 1)"),
        ("worst_index", (np.intp(5),), "(5,)"),
        ("shape", (), "()"),
        ("budget_used", np.array(2.0), 2.0),
        (
            "versions",
            {"torch": "2.13.0", "numpy": "2.4.6"},
            '{"numpy": "2.4.6", "torch": "2.13.0"}',
        ),
        ("seed", None, ""),
    ],
    ids=[
        "f32",
        "i64",
        "bool",
        "index",
        "index-1",
        "shape-0d",
        "0d-array",
        "dict",
        "none",
    ],
)
def test_normalise_converts_to_plain_python(key, value, stored):
    out = normalise_record({key: value})
    assert out[key] == stored and type(out[key]) is type(stored)
    json.dumps(out)


def test_normalise_fills_missing_fields_in_order():
    out = normalise_record({"tensor": "Z1"})
    assert list(out) == RECORD_FIELDS
    assert (out["check"], out["status"], out["passed"], out["vacuous"]) == (
        "",
        "",
        False,
        False,
    )
    assert math.isnan(out["budget_used"]) and math.isnan(out["n"])


def test_normalise_rejects_unknown_keys():
    with pytest.raises(ValueError, match="'budget'.*'tensr'"):
        normalise_record({"tensor": "Z1", "tensr": "Z1", "budget": 1.0})


def test_records_frame_order_is_stable():
    records = [
        rec("t[b]", tensor="A1"),
        rec("t[a]", tensor="Z1", against="tensorflow"),
        rec("t[a]", tensor="Z1", against="torch", note="first"),
        rec("t[a]", tensor="A1"),
        rec("t[a]", tensor="Z1", against="torch", note="second"),
    ]
    df = records_frame(records)
    assert list(df.columns) == RECORD_FIELDS
    got = list(zip(df["check"], df["tensor"], df["against"], df["note"]))
    assert got == [
        ("t[a]", "A1", "torch", ""),
        ("t[a]", "Z1", "tensorflow", ""),
        ("t[a]", "Z1", "torch", "first"),
        ("t[a]", "Z1", "torch", "second"),
        ("t[b]", "A1", "torch", ""),
    ]


def truth_pair(ref_err, torch_err, tf_err, **fields):
    """A torch and a tensorflow record of one tensor with the given truth errors."""
    return [
        rec(
            f"t[{fw}]",
            against=fw,
            against_err_vs_truth=err,
            impl_err_vs_truth=ref_err,
            seed=1,
        )
        | fields
        for fw, err in (("torch", torch_err), ("tensorflow", tf_err))
    ]


@pytest.mark.parametrize(
    ("errors", "outlier"),
    [
        ((0.25, 0.25, 1.0), "tensorflow"),
        ((0.25, 1.0, 0.25), "torch"),
        ((1.0, 0.125, 0.25), "reference"),
        ((0.25, 0.25, 0.5), "none"),  # exactly 2x is not more than 2x
        ((0.25, 0.125, 0.375), "none"),
        ((0.0, 0.0, 0.0), "none"),
    ],
    ids=["tensorflow", "torch", "reference", "exactly-2x", "under-2x", "all-exact"],
)
def test_outlier(errors, outlier):
    df = fill_outliers(records_frame(truth_pair(*errors)))
    assert list(df["outlier"]) == [outlier, outlier]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outlier_is_named_in_each_dtype_with_a_truth(dtype):
    df = fill_outliers(records_frame(truth_pair(0.25, 1.0, 0.25, dtype=dtype)))
    assert list(df["outlier"]) == ["torch", "torch"]


def test_no_outlier_without_truth_errors():
    records = truth_pair(0.25, 1.0, 0.25, dtype="float64")
    for r in records:
        r["against_err_vs_truth"] = r["impl_err_vs_truth"] = float("nan")  # no extended truth
    assert list(fill_outliers(records_frame(records))["outlier"]) == ["", ""]


def test_outlier_names_the_implementation_under_test():
    df = fill_outliers(records_frame(truth_pair(1.0, 0.125, 0.25, impl="mutant:sign_dE_dO")))
    assert list(df["outlier"]) == ["mutant:sign_dE_dO"] * 2


def test_outliers_are_named_per_tensor_and_seed_even_without_a_seed():
    records = [
        *truth_pair(0.25, 0.25, 1.0, tensor="Z1"),
        *truth_pair(0.25, 1.0, 0.25, tensor="A1"),
        *truth_pair(1.0, 0.125, 0.25, tensor="A1", seed=None),  # no seed: a group of its own
    ]
    df = fill_outliers(records_frame(records))
    assert sorted(zip(df["tensor"], df["seed"].astype(str), df["against"], df["outlier"])) == [
        ("A1", "", "tensorflow", "reference"),
        ("A1", "", "torch", "reference"),
        ("A1", "1", "tensorflow", "torch"),
        ("A1", "1", "torch", "torch"),
        ("Z1", "1", "tensorflow", "tensorflow"),
        ("Z1", "1", "torch", "tensorflow"),
    ]


@pytest.mark.parametrize(
    "records",
    [
        truth_pair(0.25, 0.25, 1.0)[:1],  # torch only
        [r | {"against_err_vs_truth": math.nan} for r in truth_pair(0.25, 0.25, 1.0)],
        [truth_pair(0.25, 0.25, 1.0)[0], truth_pair(0.25, 0.25, 1.0)[1] | {"seed": 2}],
    ],
    ids=["one-framework", "no-truth", "different-seeds"],
)
def test_outlier_left_blank_when_undecidable(records):
    assert set(fill_outliers(records_frame(records))["outlier"]) == {""}


SUMMARY_RECORDS = [
    rec("t[1]", tensor="A1", budget_used=0.9),
    rec(
        "t[2]",
        tensor="A1",
        budget_used=3.0,
        status="fail",
        passed=False,
        max_abs_err=2e-6,
    ),
    rec("t[3]", tensor="Z2", budget_used=0.5),
    rec("t[4]", tensor="dE_dW", budget_used=0.0, status="vacuous", passed=False),
    rec(
        "t[5]",
        tensor="O",
        budget_used=math.nan,
        status="error",
        passed=False,
        error="boom",
    ),
    rec("t[6]", tensor="E", budget_used=0.75),
]


def test_summary_one_row_per_group_worst_first():
    s = summary_frame(records_frame(SUMMARY_RECORDS))
    assert list(s["tensor"]) == ["O", "A1", "dE_dW", "E", "Z2"]
    a1 = s.iloc[1]
    assert (a1["status"], a1["checks"], a1["budget_used"], a1["worst_check"]) == (
        "fail",
        2,
        3.0,
        "t[2]",
    )
    assert a1["max_abs_err"] == 2e-6


def test_terminal_lines():
    r = rec(
        "t[w]",
        tensor="dE_df",
        status="fail",
        passed=False,
        budget_used=3.2,
        worst_index=(2, 3, 1),
        max_abs_err=7.9e-07,
        max_rel_err=1.2e-06,
    )
    lines = terminal_lines(records_frame([r, *SUMMARY_RECORDS]), n=3)
    assert lines == [
        "ERROR O torch float32 stage budget n/a at n/a abs n/a rel n/a | boom",
        "FAIL dE_df torch float32 stage budget 3.2 at (2, 3, 1) abs 7.9e-07 rel 1.2e-06",
        "FAIL A1 torch float32 stage budget 3 at n/a abs 2e-06 rel n/a",
    ]


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("error", "boom\x1b[2J\x1b[H", "boom\\x1b[2J\\x1b[H"),
        ("note", "line one\nline two\tend", "line one line two end"),
        ("tensor", "Z1\x07\x9b", "Z1\\x07\\x9b"),
    ],
    ids=["clear-screen-escape", "newline-and-tab", "bell-and-c1"],
)
def test_terminal_lines_show_control_characters_harmlessly(field, value, shown):
    r = rec("t[w]", status="fail", passed=False, budget_used=3.0) | {field: value}
    (line,) = terminal_lines(records_frame([r]), n=1)
    assert shown in line and "\x1b" not in line and "\n" not in line and "\t" not in line


# --- the headline ---------------------------------------------------------------------------

ORDER = ["patches", "Z1", "A1", "Z2", "O", "E", "dE_dO", "dE_dW", "f_new"]


def bad(tensor, status="fail", **fields):
    return rec(
        f"t[{tensor}-{fields.get('against', 'torch')}-{fields.get('mode', 'stage')}]",
        tensor=tensor,
        status=status,
        passed=False,
        **fields,
    )


def absent(tensor, dtype="float64"):
    return rec(
        f"t[contract-{dtype}]",
        tensor=tensor,
        status="absent",
        passed=False,
        mode="contract",
        against="",
        dtype=dtype,
        budget_used=math.nan,
    )


def test_headline_all_pass_is_one_line():
    records = [rec("t[1]"), rec("t[2]", tensor="A1")]
    assert headline(records_frame(records), ORDER) == [
        "verdict: every comparison passed (2 comparisons)"
    ]


def test_headline_first_diverging_in_forward_backward_order():
    records = [
        rec("t[ok]"),
        # Worse budgets, but later in the order than Z2:
        bad("dE_dW", budget_used=1e9, equation="E12"),
        bad("O", budget_used=50.0, mode="end_to_end"),
        bad("Z2", budget_used=7.5, mode="end_to_end", against="tensorflow", equation="E4"),
        bad("Z2", budget_used=3.25, equation="E4", explanation="torch's Z2 is ours + 0.5 [affine]"),
        bad("E", "vacuous", budget_used=0.5),
        bad("Q", budget_used=2.0),  # not in the order: after every name that is
        bad("A1", "error", budget_used=math.nan, error="RuntimeError: boom\n  at line 3"),
        absent("f_new"),
        absent("dE_dO", dtype="float32"),
        absent("dE_dO", dtype="float64"),
    ]
    lines = headline(records_frame(records), ORDER)
    assert lines == [
        # the stage check localises: it comes before the end-to-end one of the same tensor
        "verdict: first diverging tensor Z2 (E4, stage, impl reference vs torch, float32): "
        "budget used 3.25 (error / tolerance); explainer: torch's Z2 is ours + 0.5 [affine]",
        "also disagree: O (budget 50), E (vacuous), dE_dW (budget 1e+09), Q (budget 2)",
        # errors after the disagreements: A1 comes before Z2 but cannot hide it
        "errors: A1 could not be compared (1 comparison; first: RuntimeError: boom)",
        "not provided: dE_dO, f_new",
    ]


def test_headline_errors_only_and_absent_only():
    error = bad("O", "error", budget_used=math.nan, error="ImportError: no torch", equation="E5")
    lines = headline(records_frame([rec("t[ok]"), error, bad("A1", "error")]), ORDER)
    assert lines[0] == (
        "verdict: first diverging tensor A1 (stage, impl reference vs torch, float32): "
        "could not be compared"
    )
    assert lines[1:] == ["errors: O could not be compared (1 comparison; first: ImportError: no torch)"]
    lines = headline(records_frame([rec("t[ok]"), absent("dE_dW")]), ORDER)
    assert lines == ["verdict: no tensor disagrees (1 of 1 comparison passed)", "not provided: dE_dW"]


def test_headline_names_a_record_without_a_tensor_by_its_test():
    # records._failure_record: a parity test that failed outside its comparisons
    failed = {
        "check": "t.py::test_x[D1]",
        "tensor": "",
        "mode": "",
        "against": "",
        "dtype": "",
        "impl": "reference",
        "status": "error",
        "passed": False,
        "error": "the test failed in call without a failing comparison: boom",
    }
    lines = headline(records_frame([rec("t[ok]"), failed, failed | {"check": "t.py::test_y"}]), ORDER)
    assert lines == [
        "verdict: first diverging tensor (test t.py::test_x[D1]) (impl reference): could not be "
        "compared: the test failed in call without a failing comparison: boom",
        "errors: (test t.py::test_y) could not be compared (1 comparison; first: the test "
        "failed in call without a failing comparison: boom)",
    ]


def test_headline_shape_mismatch_vacuous_and_detection():
    records = [
        bad("Z1", "vacuous", budget_used=0.0, note="both sides are within tolerance of zero"),
        bad("A1", mismatch_kind="shape", budget_used=math.nan, note="shape mismatch: ..."),
        rec("t[d1]", impl="published:D1", mode="detection", budget_used=0.1),
        rec("t[d2]", impl="mutant:x", mode="detection", status="fail", passed=False),
    ]
    lines = headline(records_frame(records), ORDER)
    assert lines == [
        "verdict: first diverging tensor Z1 (stage, impl reference vs torch, float32): proves "
        "nothing (vacuous): both sides are within tolerance of zero",
        "also disagree: A1 (shape)",
        "detection: 1 of 2 variant/mutant checks failed (not caught, or caught at another "
        "tensor): mutant:x",
    ]
    only_detection = records_frame([rec("t[ok]"), records[3]])
    assert (
        headline(only_detection, ORDER)[0] == "verdict: no tensor disagrees (1 of 2 comparisons passed)"
    )


def test_headline_is_safe_on_a_terminal_and_empty():
    r = bad("Z1\x1b[2J", budget_used=2.0, explanation="line one\nline two")
    (line,) = headline(records_frame([r]), ORDER)
    assert "\x1b" not in line and "\\x1b[2J" in line and "explainer: line one" in line
    assert headline(records_frame([]), ORDER) == ["verdict: no comparisons were recorded"]


def test_absent_sorts_between_vacuous_and_pass():
    statuses = ["pass", "absent", "error", "vacuous", "fail"]
    records = [rec(f"t[{s}]", status=s, passed=s == "pass") for s in statuses]
    assert list(by_severity(records_frame(records))["status"]) == [
        "error",
        "fail",
        "vacuous",
        "absent",
        "pass",
    ]


def test_terminal_lines_leave_absent_names_to_the_headline():
    present = dict(
        check="t[Z1]",
        tensor="Z1",
        against="torch",
        mode="stage",
        dtype="float64",
        impl="mine",
        status="pass",
        passed=True,
        budget_used=0.5,
    )
    absent = [
        dict(
            check="c",
            tensor=f"T{i}",
            mode="contract",
            dtype="float64",
            impl="mine",
            status="absent",
            passed=False,
        )
        for i in range(12)
    ]
    lines = terminal_lines(records_frame([present, *absent]), n=10)
    assert len(lines) == 1 and lines[0].startswith("PASS Z1 torch")


def test_a_forward_only_runs_counts_agree_everywhere():
    """The verdict said "50 of 50 comparisons passed" and the terminal's last line "74
    comparisons": the 24 records of tensors not provided were counted there only. Every
    count of comparisons now leaves them out and says them apart (issue 24, point 6)."""
    from reports.render import status_counts
    from reports.tables import comparisons_text

    records = [rec("t[1]"), rec("t[2]", tensor="A1"), rec("t[3]", tensor="O")]
    df = records_frame([*records, absent("dE_dW"), absent("dE_dW", "float32")])
    assert headline(df, ORDER)[0] == "verdict: no tensor disagrees (3 of 3 comparisons passed)"
    assert comparisons_text(df) == "3 comparisons, 2 not provided"
    assert status_counts(df).endswith("2 absent, 3 pass (3 comparisons)")
    assert comparisons_text(records_frame(records)) == "3 comparisons"

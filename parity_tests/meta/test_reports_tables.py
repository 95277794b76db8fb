"""Records, the records frame, outliers, the summary and the terminal lines."""

import json
import math

import numpy as np
import pytest

from reports.fields import RECORD_FIELDS, normalise_record
from reports.tables import fill_outliers, records_frame, summary_frame, terminal_lines


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
            actual_err_vs_truth=err,
            expected_err_vs_truth=ref_err,
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


@pytest.mark.parametrize(
    "records",
    [
        truth_pair(0.25, 0.25, 1.0)[:1],  # torch only
        truth_pair(0.25, 0.25, 1.0, dtype="float64"),  # float64 is the truth's own precision
        [r | {"actual_err_vs_truth": math.nan} for r in truth_pair(0.25, 0.25, 1.0)],
        [truth_pair(0.25, 0.25, 1.0)[0], truth_pair(0.25, 0.25, 1.0)[1] | {"seed": 2}],
    ],
    ids=["one-framework", "float64", "no-truth", "different-seeds"],
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

"""diff_reports / is_regression / format_diff, and the CLI's exit codes."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from reports import (
    diff_reports,
    format_diff,
    is_regression,
    records_frame,
    write_report,
)
from reports.cli import main
from reports.diff import WITHIN_CHANGE, environment_changes, experiment_mismatches

ROOT = Path(__file__).resolve().parents[2]


def rec(check, budget, passed=None, **fields):
    passed = budget <= 1 if passed is None else passed
    return {
        "check": check,
        "tensor": "Z1",
        "mode": "stage",
        "impl": "reference",
        "against": "torch",
        "dtype": "float32",
        "budget_used": budget,
        "passed": passed,
        "status": "pass" if passed else "fail",
    } | fields


BASELINE = [rec("t[a]", 0.5), rec("t[b]", 0.01), rec("t[c]", 2.0), rec("t[d]", 0.2)]


@pytest.mark.parametrize(
    ("replaced", "added", "change", "regression"),
    [
        ({"t[a]"}, [rec("t[a]", 1.5)], "new failure", True),
        ({"t[d]"}, [], "vanished", True),
        # 0.2 > 10 * 0.01, but at or below half the allowance: listed, no regression
        ({"t[b]"}, [rec("t[b]", 0.2)], WITHIN_CHANGE, False),
        ({"t[b]"}, [rec("t[b]", 0.6)], "budget grew", True),  # 60x, past half the allowance
        (
            {"t[c]"},
            [rec("t[c]", 25.0)],
            "budget grew",
            True,
        ),  # failed before, 12.5x worse now
        ({"t[c]"}, [rec("t[c]", 0.5)], "fixed", False),
        (set(), [rec("t[e]", 0.5)], "new check", False),
        (
            set(),
            [rec("t[a]", 0.5, against="tensorflow")],
            "new check",
            False,
        ),  # a new key
    ],
    ids=[
        "new-failure",
        "vanished",
        "grew-within",
        "grew",
        "fail-grew",
        "fixed",
        "new-check",
        "new-key",
    ],
)
def test_one_change(replaced, added, change, regression):
    current = [r for r in BASELINE if r["check"] not in replaced] + added
    diff = diff_reports(records_frame(BASELINE), records_frame(current))
    assert list(diff["change"]) == [change]
    assert is_regression(diff) is regression


@pytest.mark.parametrize(
    ("before", "after", "factor", "floor", "grew"),
    [
        (0.01, 0.09, 10.0, 1e-3, False),  # 9x: under the factor
        (0.01, 0.11, 10.0, 1e-3, True),
        (0.01, 0.11, 20.0, 1e-3, False),
        (1e-6, 5e-3, 10.0, 1e-3, False),  # tiny baseline: measured against the floor
        (1e-6, 2e-2, 10.0, 1e-3, True),
        (1e-6, 2e-3, 10.0, 1e-4, True),
        (0.5, math.inf, 10.0, 1e-3, True),
        (math.nan, 0.5, 10.0, 1e-3, True),  # no baseline budget: the floor stands in
    ],
    ids=[
        "9x",
        "11x",
        "11x-factor-20",
        "floor",
        "over-floor",
        "lower-floor",
        "to-inf",
        "from-nan",
    ],
)
def test_budget_growth(before, after, factor, floor, grew):
    diff = diff_reports(
        records_frame([rec("t[a]", before, passed=True)]),
        records_frame([rec("t[a]", after, passed=True)]),
        factor,
        floor,
    )
    # The factor and the floor decide whether a budget grew; `within` whether that regresses.
    assert (list(diff["change"]) in (["budget grew"], [WITHIN_CHANGE])) is grew


@pytest.mark.parametrize(
    ("before", "after", "factor", "grew"),
    [
        (0.0, 0.0067, 10.0, False),  # measured: an environment change moved it; not a regression
        (1e-4, 0.05, 10.0, False),  # 500x, but still below 1 / factor of its allowance
        (0.0, 0.099, 10.0, False),
        (0.001, 0.2, 10.0, True),
        (0.02, 0.25, 10.0, True),
        (0.0, 0.2, 4.0, False),  # floor 1/16: below 1/4 of the allowance
        (0.0, 0.3, 4.0, True),
    ],
    ids=["0-to-0.0067", "below-1/factor", "0-to-0.099", "0.001-to-0.2", "0.02-to-0.25",
         "factor-4-below", "factor-4-above"],
)  # fmt: skip
def test_default_floor_is_one_over_factor_squared(before, after, factor, grew):
    diff = diff_reports(
        records_frame([rec("t[a]", before, passed=True)]),
        records_frame([rec("t[a]", after, passed=True)]),
        factor,
    )
    assert (list(diff["change"]) in (["budget grew"], [WITHIN_CHANGE])) is grew


# Issue 21: oneDNN on and NumPy's BLAS on two threads (a legitimate reordering) moved two
# LeNet TensorFlow float32 end-to-end checks from 0 to 0.272 of their allowance.
ONEDNN = [
    f"parity_tests/test_model.py::test_model_end_to_end[{t}-end_to_end-tensorflow-float32]"
    for t in ("pool1.A", "relu1.A")
]


def test_onednn_budget_0_to_0_272_at_27_percent_is_reported_not_a_regression():
    before = [rec(c, 0.0, tensor=c.split("[")[1].split("-")[0], against="tensorflow") for c in ONEDNN]
    after = [r | {"budget_used": 0.272} for r in before]
    diff = diff_reports(records_frame(before), records_frame(after))
    assert list(diff["change"]) == [WITHIN_CHANGE] * 2
    assert not is_regression(diff)
    text = format_diff(diff)
    assert text.splitlines()[0] == f"no regression: 2 {WITHIN_CHANGE}", text
    for check in ONEDNN:
        row = next(line for line in text.splitlines() if check in line)
        assert row.split()[-3:] == ["0", "0.272", "27.2"], row  # reported: before, after, ratio


@pytest.mark.parametrize(
    ("before", "after", "kwargs", "change", "regression"),
    [
        (0.0, 0.272, {}, WITHIN_CHANGE, False),
        (0.05, 0.9, {}, "budget grew", True),  # 18x, to 90% of the allowance
        (0.04, 0.5, {}, WITHIN_CHANGE, False),  # at the fraction: within
        (0.04, 0.51, {}, "budget grew", True),
        (0.06, 0.55, {}, None, False),  # past the fraction, under the factor: no change
        (2.0, 25.0, {}, "budget grew", True),  # failed before, 12.5x worse now
        (0.0, 0.272, {"within": 0}, "budget grew", True),  # within 0: every growth regresses
        (0.0, 0.272, {"within": 0.25}, "budget grew", True),
        (0.05, 0.9, {"within": 1}, WITHIN_CHANGE, False),
        (0.0, 0.272, {"floor": 0.05}, None, False),  # 0.272 <= 10 x 0.05: did not grow
        (0.0, 0.6, {"floor": 0.05}, "budget grew", True),
    ],
    ids=["onednn-0-to-0.272", "0.05-to-0.9", "0.04-to-0.5-at-the-fraction",
         "0.04-to-0.51-past-it", "0.06-to-0.55-under-the-factor", "failing-2-to-25",
         "within-0-regresses", "within-0.25", "within-1", "floor-0.05-no-growth",
         "floor-0.05-to-0.6"],
)  # fmt: skip
def test_growth_within_the_error_model_is_listed_not_a_regression(
    before, after, kwargs, change, regression
):
    diff = diff_reports(
        records_frame([rec("t[a]", before)]), records_frame([rec("t[a]", after)]), **kwargs
    )
    assert list(diff["change"]) == ([change] if change else [])
    assert is_regression(diff) is regression


def bits(check, impl_bits, against_bits, budget=0.3, **fields):
    return rec(check, budget, impl_bits=impl_bits, against_bits=against_bits, **fields)


@pytest.mark.parametrize(
    ("before", "after", "change", "says"),
    [
        # float16 operands: about 13 bits where the baseline had 24; the budget did not move
        ((24.0, 22.0), (13.0, 22.0), "precision dropped", "impl 24.0 -> 13.0 bits"),
        ((24.0, 20.0), (24.0, 15.5), "precision dropped", "against 20.0 -> 15.5 bits"),
        ((20.0, 20.0), (16.5, 16.5), None, ""),  # 3.5 bits: the precision check allows 4
        ((20.0, 20.0), (15.9, 20.0), "precision dropped", "impl 20.0 -> 15.9 bits"),
        # 24 -> 17.5: within 16x of 8 roundings (21 bits), as the precision check allows
        ((24.0, 24.0), (17.5, 24.0), None, ""),
        ((24.0, 24.0), (16.9, 24.0), "precision dropped", "impl 24.0 -> 16.9 bits"),
        ((math.nan, math.nan), (13.0, 22.0), None, ""),  # an older baseline: no verdict
        ((24.0, 22.0), (math.nan, math.nan), None, ""),  # not measured now
    ],
    ids=["impl-24-to-13", "against-20-to-15.5", "3.5-bits", "impl-20-to-15.9",
         "24-to-17.5-within-8-roundings", "24-to-16.9", "old-baseline-nan", "not-measured-now"],
)  # fmt: skip
def test_precision_drop_is_a_regression_even_when_the_budget_did_not_grow(before, after, change, says):
    diff = diff_reports(records_frame([bits("t[a]", *before)]), records_frame([bits("t[a]", *after)]))
    assert list(diff["change"]) == ([change] if change else [])
    assert is_regression(diff) is bool(change)
    if change:
        assert diff["precision"].iat[0] == says
        text = format_diff(diff)
        assert text.splitlines()[0] == "REGRESSION: 1 precision dropped"
        assert "precision" in text.splitlines()[2] and says in text, text  # its own column


@pytest.mark.parametrize(
    ("floor", "after", "change"),
    [
        # dE_df's floor, sqrt(115,200) / 8 = 42.4 roundings (5.4 bits): 24 - 5.4 - 4 = 14.6
        (42.4, 15.0, None),
        (42.4, 14.4, "precision dropped"),
        # the fixed floor of 8 (3 bits): 17 bits is the limit, as without the field
        (8.0, 17.5, None),
        (8.0, 16.9, "precision dropped"),
        (math.nan, 16.9, "precision dropped"),  # a record without one: the fixed floor
    ],
    ids=["k-floor-15.0", "k-floor-14.4", "floor-8-17.5", "floor-8-16.9", "no-floor-16.9"],
)
def test_precision_drop_is_judged_against_the_records_floor(floor, after, change):
    before = [bits("t[a]", 24.0, 24.0, precision_floor=floor)]
    now = [bits("t[a]", after, 24.0, precision_floor=floor)]
    diff = diff_reports(records_frame(before), records_frame(now))
    assert list(diff["change"]) == ([change] if change else [])


def test_a_check_newly_failing_on_precision_is_a_new_failure_naming_the_drop():
    before = [bits("t[a]", 24.0, 22.0)]
    after = [bits("t[a]", 13.0, 22.0, passed=False, status="fail", mismatch_kind="precision")]
    diff = diff_reports(records_frame(before), records_frame(after))
    assert list(diff["change"]) == ["new failure"] and is_regression(diff)
    assert diff["precision"].iat[0] == "impl 24.0 -> 13.0 bits"


def test_tables_without_a_precision_drop_have_no_precision_column():
    diff = diff_reports(records_frame(BASELINE), records_frame([*BASELINE[1:], rec("t[a]", 1.5)]))
    assert "precision" not in format_diff(diff)


def test_the_precision_drop_is_the_precision_checks_own_limit():
    from parity_tests.metrics import PRECISION_FLOOR_ROUNDINGS, PRECISION_RATIO_LIMIT
    from reports.diff import PRECISION_DROP_BITS, PRECISION_FLOOR_BITS

    assert 2**PRECISION_DROP_BITS == PRECISION_RATIO_LIMIT
    assert 2**PRECISION_FLOOR_BITS == PRECISION_FLOOR_ROUNDINGS


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"factor": 0}, "factor must be a finite number > 1, got 0"),
        ({"factor": -1}, "factor must be a finite number > 1, got -1"),
        ({"factor": math.nan}, "factor must be a finite number > 1, got nan"),
        ({"factor": math.inf}, "factor must be a finite number > 1, got inf"),
        ({"factor": 1}, "factor must be a finite number > 1, got 1"),
        ({"factor": "10"}, "factor must be a finite number > 1, got '10'"),
        ({"floor": -0.1}, "floor must be a finite number >= 0, got -0.1"),
        ({"floor": math.nan}, "floor must be a finite number >= 0, got nan"),
        ({"floor": math.inf}, "floor must be a finite number >= 0, got inf"),
        ({"within": -0.1}, "within must be a number in 0..1, got -0.1"),
        ({"within": 1.5}, "within must be a number in 0..1, got 1.5"),
        ({"within": math.nan}, "within must be a number in 0..1, got nan"),
        ({"within": "0.5"}, "within must be a number in 0..1, got '0.5'"),
    ],
    ids=["factor-0", "factor-negative", "factor-nan", "factor-inf", "factor-1", "factor-str",
         "floor-negative", "floor-nan", "floor-inf", "within-negative", "within-over-1",
         "within-nan", "within-str"],
)  # fmt: skip
def test_factor_and_floor_are_validated(kwargs, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        diff_reports(records_frame(BASELINE), records_frame(BASELINE), **kwargs)


@pytest.mark.parametrize(
    ("current", "partial", "changes"),
    [
        (BASELINE[:3], True, ["not run"]),
        (BASELINE[:3], False, ["vanished"]),
        ([*BASELINE[:3], rec("t[d]", 0.2, tensor="A1")], True, ["vanished", "new check"]),
        ([*BASELINE[1:3], rec("t[a]", 1.5)], True, ["new failure", "not run"]),
    ],
    ids=["check-not-run", "not-partial-vanished", "check-ran-key-gone", "not-run-listed-last"],
)
def test_partial_run_checks_it_did_not_run_are_not_run(current, partial, changes):
    diff = diff_reports(records_frame(BASELINE), records_frame(current), partial=partial)
    assert list(diff["change"]) == changes
    assert is_regression(diff) is (changes != ["not run"])


def absent(tensor="Z1", dtype="float32"):
    """test_contract's record of a name the implementation did not return."""
    return rec("t[contract]", math.nan, passed=False, tensor=tensor, status="absent",
               mode="contract", against="", dtype=dtype)  # fmt: skip


@pytest.mark.parametrize(
    ("baseline", "current", "changes", "statuses"),
    [
        # Z1 is no longer provided: its passing checks are new failures, not "vanished"
        (BASELINE, [absent()], ["new failure"] * 3, [("pass", "absent")] * 3),
        # provided again: fixed where it passes, a new check where it does not
        ([absent()], BASELINE, ["fixed"] * 3 + ["new check"], [("absent", "pass")] * 3
         + [("absent", "fail")]),
        # still absent: no change
        ([absent()], [absent()], [], []),
        # another tensor, or another dtype, is absent: the checks of Z1 float32 vanish
        (BASELINE, [absent("A1")], ["vanished"] * 4 + ["new check"], None),
        (BASELINE, [absent(dtype="float64")], ["vanished"] * 4 + ["new check"], None),
        # the same key going pass -> absent and back
        ([rec("t[contract]", 0.5, mode="contract", against="")], [absent()], ["new failure"],
         [("pass", "absent")]),
        ([absent()], [rec("t[contract]", 0.5, mode="contract", against="")], ["fixed"],
         [("absent", "pass")]),
    ],
    ids=["pass-to-absent", "absent-to-checked", "still-absent", "other-tensor", "other-dtype",
         "same-key-pass-to-absent", "same-key-absent-to-pass"],
)  # fmt: skip
def test_absent_names(baseline, current, changes, statuses):
    diff = diff_reports(records_frame(baseline), records_frame(current))
    assert list(diff["change"]) == changes
    if statuses is not None:
        assert list(zip(diff["status_before"], diff["status_after"])) == statuses
    assert is_regression(diff) is bool({"new failure", "vanished"} & set(changes))


@pytest.mark.parametrize(
    ("n_not_run", "says", "listed"),
    [
        (1, "1 baseline checks not run in this (partial) run (e.g. t[n00])", 1),
        (12, "12 baseline checks not run in this (partial) run (e.g. t[n00], t[n01], t[n02], ...)", 3),
    ],
    ids=["one", "twelve"],
)
def test_format_diff_counts_checks_not_run(n_not_run, says, listed):
    base = [*BASELINE, *(rec(f"t[n{i:02d}]", 0.5) for i in range(n_not_run))]
    diff = diff_reports(records_frame(base), records_frame(BASELINE), partial=True)
    text = format_diff(diff)
    assert text.splitlines()[0] == f"no regression: {n_not_run} not run"
    assert says in text
    assert sum("t[n" in line for line in text.splitlines()) == 1  # no table row per check
    assert text.count("t[n") == listed


EXPERIMENT = {"seed": 0, "n_images": 200, "init_scheme": "informative", "reduction": "sum",
              "data_sha256": "c53778cb", "impl": "reference", "lr": 0.0625}  # fmt: skip


@pytest.mark.parametrize(
    ("baseline", "current", "messages"),
    [
        (EXPERIMENT, dict(EXPERIMENT), []),
        (EXPERIMENT | {"lr": 0.0625, "seed": 0.0}, EXPERIMENT | {"seed": 0}, []),
        ({k: EXPERIMENT[k] for k in ("seed",)}, {"seed": 0}, []),
        (EXPERIMENT, EXPERIMENT | {"seed": 1}, ["seed: baseline 0, this run 1"]),
        (
            EXPERIMENT,
            EXPERIMENT | {"impl": "published:D3", "lr": 0.1},
            ["impl: baseline reference, this run published:D3", "lr: baseline 0.0625, this run 0.1"],
        ),
        (
            {k: v for k, v in EXPERIMENT.items() if k != "data_sha256"},
            EXPERIMENT,
            ["data_sha256: not recorded in the baseline (re-create it with this version of the suite)"],
        ),
        (EXPERIMENT, {"seed": 0}, [f"{k}: baseline {EXPERIMENT[k]}, not recorded in this run"
                                   for k in EXPERIMENT if k != "seed"]),
        (EXPERIMENT | {"seed": True}, EXPERIMENT | {"seed": 1}, ["seed: baseline True, this run 1"]),
    ],
    ids=["same", "numbers-compare-numerically", "neither-records-it", "seed", "impl-and-lr",
         "older-baseline", "current-lacks", "bool-is-not-a-number"],
)  # fmt: skip
def test_experiment_mismatches(baseline, current, messages):
    assert experiment_mismatches(baseline, current) == messages


ENV = {"numpy": "2.4.6", "torch": "2.13.0", "tensorflow": "2.21.0", "python": "3.11.9",
       "TF_ENABLE_ONEDNN_OPTS": "0", "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip


@pytest.mark.parametrize(
    ("before", "after", "changes"),
    [
        ({"environment": ENV}, {"environment": dict(ENV)}, []),
        (
            {"environment": ENV},
            {"environment": ENV | {"torch": "2.14.1", "TF_ENABLE_ONEDNN_OPTS": "1", "keras": "3.1"}},
            ["TF_ENABLE_ONEDNN_OPTS 0 -> 1", "keras (absent) -> 3.1", "torch 2.13.0 -> 2.14.1"],
        ),
        (
            {"environment": ENV},
            {"environment": {k: v for k, v in ENV.items() if k != "tensorflow"}},
            ["tensorflow 2.21.0 -> (absent)"],
        ),
        ({}, {"environment": ENV}, []),
        ({"environment": ENV}, {}, []),
    ],
    ids=["equal", "changed-and-added", "removed", "baseline-lacks", "current-lacks"],
)
def test_environment_changes(before, after, changes):
    assert environment_changes(before, after) == changes


def test_identical_runs_have_no_changes():
    diff = diff_reports(records_frame(BASELINE), records_frame(list(reversed(BASELINE))))
    assert diff.empty and not is_regression(diff)
    assert format_diff(diff).startswith("No changes")


def test_format_diff_shows_budgets_and_ratio():
    diff = diff_reports(records_frame(BASELINE), records_frame([*BASELINE[1:], rec("t[a]", 1.5)]))
    text = format_diff(diff)
    assert text.splitlines()[0] == "REGRESSION: 1 new failure"
    row = next(line for line in text.splitlines() if "t[a]" in line)
    assert row.split() == [
        "new",
        "failure",
        "t[a]",
        "Z1",
        "torch",
        "float32",
        "stage",
        "reference",
        "pass",
        "->",
        "fail",
        "0.5",
        "1.5",
        "3",
    ]


def cli(capsys, *args) -> tuple[int, str]:
    """`python -m reports ARGS` in this process: (exit status, stdout + stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="module")
def report_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = {
        "base": BASELINE,
        "same": BASELINE,
        "broken": [*BASELINE[1:], rec("t[a]", 1.5)],
        "grown5x": [*BASELINE[:3], rec("t[d]", 1.0)],
        "onednn": [BASELINE[0], rec("t[b]", 0.272), *BASELINE[2:]],  # 27.2x, to 27%
        "bits": [bits(r["check"], 24.0, 22.0, r["budget_used"]) for r in BASELINE],
        "bits_dropped": [bits(r["check"], 13.0, 22.0, r["budget_used"]) for r in BASELINE],
        "old_no_bits": BASELINE,  # its comparisons.csv loses the precision columns below
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("GITHUB_STEP_SUMMARY", raising=False)  # NOTE: keep CI's job summary clean
        for name, records in runs.items():
            write_report(records, root / name, {"seed": 1}, heat_map=False)
        csv = root / "old_no_bits" / "comparisons.csv"
        old = pd.read_csv(csv, keep_default_na=False, dtype=str)
        old = old.drop(columns=["against_bits", "impl_bits", "precision_ratio", "precision_floor"])
        old.to_csv(csv, index=False, lineterminator="\n")
        meta = EXPERIMENT | {"environment": ENV, "completeness": COMPLETE}
        runs = {
            "exp_base": (BASELINE, meta),
            "exp_seed1": (BASELINE, meta | {"seed": 1}),
            "exp_old": (BASELINE, {k: v for k, v in meta.items() if k != "data_sha256"}),
            "exp_empty": ([], meta),
            "exp_partial": (BASELINE[:3], meta | {"completeness": PARTIAL}),
            "exp_interrupted": (BASELINE[:3], meta | {"completeness": INTERRUPTED}),
            "exp_upgraded": (BASELINE, meta | {"environment": ENV | {"torch": "2.14.1"}}),
            "exp_unknown": (BASELINE, meta | {"completeness": {"status": "done?"}}),
        }
        for name, (records, meta) in runs.items():
            write_report(records, root / name, meta, heat_map=False)
    (root / "not_a_report").mkdir()
    (root / "a_file").write_text("not a report")
    (root / "base_link").symlink_to(root / "base")
    for name, text in {
        "meta_list": "[]",
        "meta_null": "null",
        "meta_text": '"x"',
        "meta_42": "42",
    }.items():
        write_report(BASELINE, root / name, {"seed": 1}, heat_map=False)
        (root / name / "run.json").write_text(text)
    return root


COMPLETE = {"status": "complete", "detail": "9 tests, 4 comparisons"}
PARTIAL = {"status": "partial", "detail": "selected with -k 't[a] or t[b] or t[c]'"}
INTERRUPTED = {"status": "interrupted", "detail": "interrupted after 3 of 9 tests"}


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["diff", "@base", "@same"], 0, "No changes"),
        (["diff", "@base", "@broken"], 1, "new failure"),
        (["diff", "@base", "@grown5x"], 0, "No changes"),
        (["diff", "@base", "@grown5x", "--factor", "2"], 1, "budget grew"),
        (["diff", "@base", "@onednn"], 0, f"no regression: 1 {WITHIN_CHANGE}"),
        (["diff", "@base", "@onednn", "--within", "0"], 1, "REGRESSION: 1 budget grew"),
        (["diff", "@base", "@onednn", "--floor", "0.05"], 0, "No changes"),
        (["diff", "@bits", "@bits_dropped"], 1, "REGRESSION: 4 precision dropped"),
        (["diff", "@old_no_bits", "@bits_dropped"], 0, "No changes"),
        (["diff", "@bits_dropped", "@old_no_bits"], 0, "No changes"),
        (["diff", "@base", "@missing"], 2, "missing: not a report directory"),
        (["diff", "@not_a_report", "@base"], 2, "comparisons.csv: missing"),
        (["show", "@broken"], 0, "FAIL Z1 torch float32 stage budget 1.5"),
        (["show", "@broken"], 0, "verdict: first diverging tensor Z1 (stage, impl reference vs torch"),
        (["show", "@not_a_report"], 2, "not a report directory"),
        (["frobnicate"], 2, "invalid choice"),
        (["diff", "@exp_base", "@exp_seed1"], 2, "seed: baseline 0, this run 1"),
        (["diff", "@exp_old", "@exp_base"], 2, "data_sha256: not recorded in the baseline"),
        (["diff", "@exp_empty", "@exp_base"], 2, "exp_empty holds no comparisons"),
        (["diff", "@exp_base", "@exp_interrupted"], 2, "interrupted after 3 of 9 tests"),
        (["diff", "@exp_base", "@exp_partial"], 0, "1 baseline checks not run in this (partial) run"),
        (["diff", "@exp_base", "@exp_upgraded"], 0, "environment changed: torch 2.13.0 -> 2.14.1\n"),
        (["diff", "@base", "@same", "--factor", "1"], 2, "--factor: must be a finite number > 1"),
        (["diff", "@base", "@same", "--factor", "nan"], 2, "--factor: must be a finite number > 1"),
        (["diff", "@base", "@same", "--factor", "inf"], 2, "--factor: must be a finite number > 1"),
        (["diff", "@base", "@same", "--factor", "ten"], 2, "--factor: 'ten' is not a number"),
        (["diff", "@base", "@same", "--floor", "-1"], 2, "--floor: must be a finite number >= 0"),
        (["diff", "@base", "@same", "--within", "1.5"], 2, "--within: must be a number in 0..1"),
        (["diff", "@base", "@same", "--within", "nan"], 2, "--within: must be a number in 0..1"),
        (["diff", "@base", "@same", "--within", "half"], 2, "--within: 'half' is not a number"),
        (["show", "@base", "-n", "-1"], 2, "-n: must be a whole number >= 0"),
        (["show", "@base", "-n", "2.5"], 2, "-n: must be a whole number >= 0"),
        (["show", "@a_file"], 2, "a_file is a file, not a report directory"),
        (["show", "@exp_partial"], 0, "run: partial (selected with -k"),
        (["diff", "@exp_base", "@exp_unknown"], 2, "completeness {'status': 'done?'} has no status"),
        (["diff", "@base", "@base"], 2, "is the baseline itself"),
        (["diff", "@base", "@base_link"], 2, "is the baseline itself"),
        (["diff", "@base", "@not_a_report/../base"], 2, "is the baseline itself"),
        (["show", "@meta_list"], 2, "expected a JSON object of run facts, got list"),
        (["diff", "@meta_null", "@base"], 2, "expected a JSON object of run facts, got NoneType"),
        (["diff", "@base", "@meta_text"], 2, "expected a JSON object of run facts, got str"),
        (["show", "@meta_42"], 2, "expected a JSON object of run facts, got int"),
    ],
    ids=[
        "identical",
        "regression",
        "under-factor",
        "over-factor",
        "onednn-0.01-to-0.272-reported-exit-0",
        "onednn-within-0-regresses",
        "onednn-floor-0.05",
        "precision-dropped",
        "old-baseline-without-precision-fields",
        "old-current-without-precision-fields",
        "missing-dir",
        "not-a-report",
        "show",
        "show-verdict",
        "show-bad",
        "bad-command",
        "other-experiment",
        "baseline-predates-data-hash",
        "empty-baseline",
        "interrupted-run",
        "partial-run",
        "environment-changed",
        "factor-1",
        "factor-nan",
        "factor-inf",
        "factor-not-a-number",
        "floor-negative",
        "within-over-1",
        "within-nan",
        "within-not-a-number",
        "show-n-negative",
        "show-n-not-int",
        "show-a-file",
        "show-completeness",
        "unknown-completeness",
        "self-compare",
        "self-compare-through-a-symlink",
        "self-compare-respelled",
        "run-json-list",
        "run-json-null",
        "run-json-string",
        "run-json-number",
    ],
)
def test_cli_exit_codes(capsys, report_dirs, args, code, says):
    status, text = cli(capsys, *[report_dirs / a[1:] if a.startswith("@") else a for a in args])
    assert status == code, text
    assert says in text


def test_entry_point_runs_without_the_frameworks(report_dirs):
    # NOTE: the one real `python -m reports` process: the entry point, its exit status, and
    # that reading a report never imports torch, TensorFlow or the reference.
    code = (
        "import runpy, sys\n"
        "try:\n"
        "    runpy.run_module('reports', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    print('exit:', exc.code)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'tensorflow', 'keras', 'reference'))\n"
        "print('imported:', bad)\n"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    env.pop("GITHUB_STEP_SUMMARY", None)
    done = subprocess.run(
        [sys.executable, "-c", code, "show", str(report_dirs / "broken")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout + done.stderr
    assert "FAIL Z1 torch float32 stage budget 1.5" in out, out
    assert out.startswith("verdict: first diverging tensor Z1"), out  # the verdict first
    assert "exit: 0" in out and "imported: []" in out, out


@pytest.mark.slow  # a 3,000-row report and an interpreter start-up (~1 s)
def test_show_into_a_closed_pipe_is_quiet(tmp_path):
    # `python -m reports show DIR | head`: the reader leaves early; no traceback, status 0.
    records = [rec(f"t[{i}]", 0.5) for i in range(3000)]  # more than a pipe buffer
    write_report(records, tmp_path / "big", {"seed": 1}, heat_map=False)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reports", "show", str(tmp_path / "big"), "-n", "3000"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.read(200)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("current", "code", "says"),
    [
        ([*BASELINE[1:], rec("t[a]", 1.5)], 1, "regression gate: REGRESSION against the baseline"),
        (BASELINE, 0, "regression gate: no regression against the baseline"),
        (None, 0, None),
    ],
    ids=["show-after-a-regression-exits-1", "show-after-no-regression-exits-0", "show-without-a-gate"],
)
def test_show_prints_the_gates_verdict_and_exits_as_it_did(
    capsys, tmp_path, monkeypatch, current, code, says
):
    """A run gated with --parity-baseline leaves regression.md beside its report; show printed
    "every comparison passed" and exited 0 after a regression (issue 24, point 7)."""
    from reports.diff import regression_markdown

    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    records = current if current is not None else BASELINE
    extra = {}
    if current is not None:
        diff = diff_reports(records_frame(BASELINE), records_frame(current))
        extra["regression.md"] = regression_markdown(diff, "baselines/torch_2", 2.0)
    write_report(records, tmp_path / "run", {"seed": 1}, extra_files=extra, heat_map=False)
    got, text = cli(capsys, "show", tmp_path / "run")
    assert got == code, text
    if says is None:
        assert "regression gate" not in text
    else:
        gate_line = next(ln for ln in text.splitlines() if ln.startswith("regression gate:"))
        assert gate_line.startswith(says) and "baselines/torch_2 (factor 2)" in gate_line, gate_line
        assert gate_line.endswith(str(tmp_path / "run" / "regression.md"))
        # Right under the run's verdict.
        assert text.splitlines()[text.splitlines().index(gate_line) - 1].startswith("verdict: ")


def test_show_of_a_regression_md_without_a_verdict_is_unreadable(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    write_report(
        BASELINE, tmp_path / "run", {"seed": 1}, extra_files={"regression.md": "# x\n"}, heat_map=False
    )
    got, text = cli(capsys, "show", tmp_path / "run")
    assert got == 2 and "not a regression gate's verdict" in text, text


def test_show_says_the_data_were_synthetic_on_the_verdict_and_run_lines(capsys, tmp_path, monkeypatch):
    """A report of synthetic digits must not read like one of MNIST (issue 24, point 4)."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    synthetic = EXPERIMENT | {"data_source": "synthetic:seed=0 (requested by --parity-data)"}
    for name, meta in (("synthetic", synthetic), ("mnist", EXPERIMENT | {"data_source": "mnist.npz"})):
        write_report(BASELINE, tmp_path / name, meta | {"completeness": COMPLETE}, heat_map=False)
    note = "on SYNTHETIC digits, not MNIST: set PARITY_MNIST"
    _, text = cli(capsys, "show", tmp_path / "synthetic")
    verdict = text.splitlines()[0]
    assert verdict.startswith("verdict: ") and verdict.endswith(note), verdict
    assert f"run: complete {note}" in text
    _, text = cli(capsys, "show", tmp_path / "mnist")
    assert "SYNTHETIC" not in text

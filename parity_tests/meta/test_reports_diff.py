"""diff_reports / is_regression / format_diff, and the CLI's exit codes."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reports import (
    diff_reports,
    format_diff,
    is_regression,
    records_frame,
    write_report,
)
from reports.cli import main

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
        ({"t[b]"}, [rec("t[b]", 0.2)], "budget grew", True),  # 0.2 > 10 * 0.01
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
    assert (list(diff["change"]) == ["budget grew"]) is grew


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
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("GITHUB_STEP_SUMMARY", raising=False)  # NOTE: keep CI's job summary clean
        for name, records in runs.items():
            write_report(records, root / name, {"seed": 1}, heat_map=False)
    (root / "not_a_report").mkdir()
    return root


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["diff", "@base", "@same"], 0, "No changes"),
        (["diff", "@base", "@broken"], 1, "new failure"),
        (["diff", "@base", "@grown5x"], 0, "No changes"),
        (["diff", "@base", "@grown5x", "--factor", "2"], 1, "budget grew"),
        (["diff", "@base", "@missing"], 2, "missing: not a report directory"),
        (["diff", "@not_a_report", "@base"], 2, "comparisons.csv: missing"),
        (["show", "@broken"], 0, "FAIL Z1 torch float32 stage budget 1.5"),
        (["show", "@not_a_report"], 2, "not a report directory"),
        (["frobnicate"], 2, "invalid choice"),
    ],
    ids=[
        "identical",
        "regression",
        "under-factor",
        "over-factor",
        "missing-dir",
        "not-a-report",
        "show",
        "show-bad",
        "bad-command",
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
    assert "exit: 0" in out and "imported: []" in out, out


@pytest.mark.slow  # a 3,000-row report and an interpreter start-up (~1 s)
def test_show_into_a_closed_pipe_is_quiet(tmp_path):
    # `python -m reports show DIR | head`: the reader leaves early; no traceback, status 0.
    records = [rec(f"t[{i}]", 0.5) for i in range(3000)]      # more than a pipe buffer
    write_report(records, tmp_path / "big", {"seed": 1}, heat_map=False)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "reports", "show", str(tmp_path / "big"),
                             "-n", "3000"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.read(200)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err, err

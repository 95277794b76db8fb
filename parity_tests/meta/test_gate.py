"""The regression gate's diff (parity_tests/gate.py) when the run is narrower than the
baseline: the checks of files it did not run are "not run", and its own checks are never
"new" when the baseline has them."""

import pytest

from parity_tests.gate import gate_diff
from reports import is_regression, records_frame
from reports.diff import WITHIN_CHANGE


def rec(check, budget=0.5):
    return {
        "check": check,
        "tensor": "Z1",
        "mode": "stage",
        "impl": "reference",
        "against": "torch",
        "dtype": "float32",
        "budget_used": budget,
        "passed": budget <= 1,
        "status": "pass" if budget <= 1 else "fail",
    }


def _parity(first_budget=0.5):
    return [rec("parity_tests/test_parity.py::test_forward[Z1]", first_budget)] + [
        rec(f"parity_tests/test_parity.py::test_forward[{t}]") for t in ("A1", "Z2")
    ]


MODEL = [rec(f"parity_tests/test_model.py::test_model_stage[{t}]") for t in ("conv1.Z", "relu1.A")]


@pytest.mark.parametrize("grown", [False, True], ids=["unchanged", "one-budget-grew"])
def test_a_narrower_run_lists_no_baseline_check_as_new(grown):
    # The baseline is a whole ./parity report; this run is test_parity.py alone.
    baseline = _parity(0.01 if grown else 0.5) + MODEL
    diff = gate_diff(
        records_frame(baseline),
        records_frame(_parity(0.9 if grown else 0.5)),
        {"parity_tests/test_parity.py"},
        factor=10,
        partial=False,
    )
    changes = diff["change"].value_counts().to_dict()
    assert changes.get("new check", 0) == 0, diff.to_string()
    assert changes.get("not run", 0) == len(MODEL)
    assert (changes.get("budget grew", 0) == 1) == grown
    assert is_regression(diff) == grown


@pytest.mark.parametrize(
    ("policy", "change"),
    [({}, WITHIN_CHANGE), ({"within": 0}, "budget grew"), ({"floor": 0.05}, None)],
    ids=["onednn-0-to-0.272-default-policy", "within-0-regresses", "floor-0.05-no-growth"],
)
def test_the_gate_diffs_under_its_policy(policy, change):
    # --parity-baseline-floor / --parity-baseline-within reach both diffs of gate_diff.
    diff = gate_diff(
        records_frame(_parity(0.0) + MODEL),
        records_frame(_parity(0.272)),
        {"parity_tests/test_parity.py"},
        factor=10,
        partial=False,
        **policy,
    )
    changes = diff["change"].value_counts().to_dict()
    assert changes.pop("not run") == len(MODEL)
    assert changes == ({change: 1} if change else {})
    assert is_regression(diff) == (change == "budget grew")

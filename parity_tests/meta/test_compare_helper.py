"""The comparison helper fails on a planted mismatch with a message that says what, where,
how much, and how to reproduce; errors inside a computation become error records."""

import json
import shlex
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from parity_tests import tolerance
from parity_tests.compare import RECORD_KEY, ParityRecorder, RunContext
from parity_tests.harness import Check

CONTEXT = RunContext(
    seed=7,
    data_source="synthetic:seed=0",
    versions="numpy=x",
    impl="reference",
    init_scheme="informative",
    reduction="sum",
    reproduce_options="--parity-seed 7",
)


def _recorder():
    return ParityRecorder(
        SimpleNamespace(nodeid="t.py::test_x[dE_df-torch-float32]", user_properties=[]),
        CONTEXT,
    )


FIELDS = dict(
    tensor="dE_df",
    equation="E16",
    step="conv",
    quantity="gradient",
    mode="stage",
    against="torch",
    dtype="float32",
)


def _check(rec, actual, expected, tol):
    return rec.check(
        **FIELDS, compute=lambda: Check(actual, expected, tolerance.Tolerance(tol, "rule-x"), None)
    )


def test_planted_mismatch_message():
    rec = _recorder()
    expected = np.zeros((2, 2, 1), np.float32) + 1
    actual = expected.copy()
    actual[1, 0, 0] = 1.5
    with pytest.raises(pytest.fail.Exception) as info:
        _check(rec, actual, expected, np.full(expected.shape, 0.1))
    msg = str(info.value)
    for part in (
        "dE_df",
        "E16",
        "torch",
        "float32",
        "1 / 4",
        "(1, 0, 0)",
        "1.5",
        "rule-x",
        # The interpreter that ran the check: no activated virtual environment needed.
        f"reproduce: {shlex.quote(sys.executable)} -m pytest 't.py::test_x[dE_df-torch-float32]' "
        "--parity-seed 7",
    ):
        assert part in msg, f"{part!r} missing from:\n{msg}"
    ((key, value),) = rec.node.user_properties
    record = json.loads(value)
    assert key == RECORD_KEY and record["status"] == "fail" and record["budget_used"] == 5.0


def test_crash_becomes_error_record():
    rec = _recorder()

    def boom():
        raise RuntimeError("framework exploded")

    with pytest.raises(pytest.fail.Exception, match="framework exploded"):
        rec.check(**FIELDS, compute=boom)
    record = json.loads(rec.node.user_properties[0][1])
    assert record["status"] == "error" and "framework exploded" in record["error"]


def test_all_zero_comparison_is_vacuous_not_a_pass():
    rec = _recorder()
    zeros = np.zeros(3, np.float32)
    with pytest.raises(pytest.fail.Exception, match="proves nothing"):
        _check(rec, zeros, zeros, np.zeros(3))


def test_missing_framework_is_an_error_not_a_skip(monkeypatch):
    from parity_tests import mirrors

    monkeypatch.setitem(mirrors._MODULES, "torch", "no_such_framework_module")
    with pytest.raises(mirrors.MirrorUnavailable, match="torch is selected.*No module named"):
        mirrors.load_mirror("torch")

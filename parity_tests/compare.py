"""The one comparison helper of the suite: compare, record, and fail with a message that
says what, where and how much.

Every check anywhere in parity_tests/ goes through `ParityRecorder.check`, which measures
with `parity_tests.metrics.compare_arrays`, appends one record to the test's user_properties
(pytest-xdist relays them to the controller, which writes the reports) and fails the test
with `parity_tests.metrics.format_mismatch` when the comparison does not pass.
"""

from __future__ import annotations

import json
import shlex
import sys
import traceback
from dataclasses import dataclass

import pytest

from parity_tests.explain import explain, explain_precision
from parity_tests.impl_call import Absent, ImplementationError, TrainingDiverged
from parity_tests.metrics import compare_check, format_mismatch
from parity_tests.mirrors import MirrorUnavailable
from reports import normalise_record

RECORD_KEY = "parity_record"


@dataclass(frozen=True)
class RunContext:
    """Run-wide record fields and the options that reproduce the run."""

    seed: int
    data_source: str
    versions: str
    init_scheme: str
    reduction: str
    impl: str
    reproduce_options: str
    device: str = "cpu"


class ParityRecorder:
    brief = False  # compare_arrays(brief=...): every metric for the checks that are reported

    def __init__(self, node, context: RunContext):
        self.node, self.context = node, context

    def reproduce(self) -> str:
        """The command that reruns this check: the interpreter that ran it (so it works
        without an activated virtual environment), `-m pytest`, the test id, the options.
        Shell-quoted: a test id or a path must paste as an argument, never as a command."""
        command = shlex.join([sys.executable, "-m", "pytest", self.node.nodeid])
        return f"{command} {self.context.reproduce_options}".strip()

    def _base(self, **fields) -> dict:
        c = self.context
        return dict(
            check=self.node.nodeid,
            device=c.device,
            impl=c.impl,
            seed=c.seed,
            data_source=c.data_source,
            versions=c.versions,
            init_scheme=c.init_scheme,
            reduction=c.reduction,
            **fields,
        )

    def record(self, *, tensor: str, status: str, mismatch_kind: str = "", error: str = "", **fields):
        """A record that is a finding, not a comparison (absent, unknown name, wrong shape)."""
        return self.add(
            self._base(
                tensor=tensor,
                status=status,
                passed=status == "pass",
                mismatch_kind=mismatch_kind,
                error=error,
                **fields,
            )
        )

    def add(self, record: dict) -> dict:
        record = normalise_record(record)
        self.node.user_properties.append((RECORD_KEY, json.dumps(record, sort_keys=True)))
        return record

    def check(
        self,
        *,
        tensor,
        equation,
        step,
        quantity,
        mode,
        against,
        dtype,
        compute,
        expect_zero=False,
        fail=True,
        note="",
        model="",
        extra=None,
    ) -> dict:
        """Run `compute() -> harness.Check`, record the comparison, fail the test on mismatch.

        Any exception on the way to the verdict (the implementation, a framework that
        crashes, a missing mirror, the comparison itself; SystemExit and other
        BaseExceptions from user code too, but not Ctrl-C) becomes an error record and a
        failing test carrying the original message, never a skip. The one exception: a
        tensor a partial implementation did not return (Absent) skips the check, since
        test_contract records it once as "absent" (a record per check would bury the rest).
        `model` names a spec-built network's checks; `extra` gives more record fields
        (kinks), a dict or a callable called after compute.
        """
        fields = dict(
            tensor=tensor,
            equation=equation,
            step=step,
            quantity=quantity,
            mode=mode,
            against=against,
            dtype=dtype,
        )
        if model:
            fields["model"] = model
        absent = None
        try:
            record, crash = self._measure(fields, compute, expect_zero, note, extra), None
        except KeyboardInterrupt:
            raise  # the user's Ctrl-C: the session is interrupted, and says so
        except Absent as exc:
            record, crash, absent = None, None, exc.name
        except BaseException as exc:  # noqa: BLE001  (SystemExit from user code is a failure too)
            # A missing framework's message says it all; a crash needs its traceback.
            where = (
                ""
                if isinstance(exc, (MirrorUnavailable, ImplementationError, TrainingDiverged))
                else traceback.format_exc(limit=3)
            )
            record, crash = None, (f"{type(exc).__name__}: {exc}", where)
        if absent:  # outside the except block, like the failures below
            if fail:
                pytest.skip(f"{absent} was not returned by {self.context.impl} (recorded as absent)")
            return normalise_record(self._base(**fields, status="absent", passed=False))
        if crash:  # outside the except block, so pytest shows no chained tracebacks
            message, where = crash
            record = self.add(
                self._base(**fields, status="error", passed=False, mismatch_kind="error", error=message)
            )
            if fail:
                pytest.fail(
                    f"`{tensor}` ({equation}, {mode}) vs {against} [{dtype}] could not "
                    f"be computed: {message}\n{where}reproduce: {self.reproduce()}",
                    pytrace=False,
                )
            return record  # fail=False: the caller sees the error record
        if fail and not record["passed"]:
            pytest.fail(format_mismatch(record, self.reproduce()), pytrace=False)
        return record

    def _measure(self, fields, compute, expect_zero, note, extra=None) -> dict:
        """compute() and compare: anything that goes wrong on the way raises to check().

        c.actual is the other side (`against`), c.expected the implementation under test's:
        the record says so by name (against_at_worst, impl_at_worst, closer_to_truth).
        """
        c = compute()
        metrics = compare_check(
            c,
            expect_zero=expect_zero,
            brief=self.brief,
            against=fields["against"],
        )
        if metrics["mismatch_kind"] == "precision":
            verdict, line = explain_precision_check(metrics, fields["tensor"], fields["against"])
            metrics.update(verdict, note=_join(metrics["note"], line))
        elif metrics["status"] == "fail":
            verdict, line = explain_check(c, fields["tensor"], fields["against"])
            if not verdict["suspect"] and explain_precision(metrics):
                # Beyond the allowance with no exact fit, and one side short of bits (TF32
                # in a 25-term sum): the precision is the best guess.
                verdict, line = explain_precision_check(metrics, fields["tensor"], fields["against"])
            metrics.update(verdict, note=_join(metrics["note"], line))
        metrics["note"] = _join(metrics["note"], note() if callable(note) else note)
        more = (extra() if callable(extra) else extra) or {}
        return self.add(self._base(**fields, **metrics, **more, tolerance_rule=c.tolerance.rule))


def _join(*parts) -> str:
    return "; ".join(p for p in parts if p)


def explain_precision_check(metrics: dict, tensor: str, against: str) -> tuple[dict, str]:
    """explain_check's counterpart for a comparison failed on precision: the explainer's
    verdict from the measured bits (parity_tests.explain.explain_precision)."""
    found = explain_precision(metrics, tensor, against)
    text = str(found) if found else "no simple fit"
    return dict(explanation=text, suspect=found.suspect if found else ""), f"explainer: {text}"


def explain_check(check, tensor, against) -> tuple[dict, str]:
    """The mismatch explainer's best guess (parity_tests.explain) for a failing comparison.

    Returns its record fields, `explanation` (the explainer's text) and `suspect` (its short
    name, "" when nothing fits), which code reads by name, and the line for the record's
    human `note` ("explainer: ...").
    """
    try:
        found = explain(
            check.actual,
            check.expected,
            tensor=tensor,
            against=against,
            context=getattr(check, "context", None),
        )
    except Exception as exc:  # the explainer must never mask the mismatch itself
        text = f"explainer failed: {type(exc).__name__}: {exc}"
        return dict(explanation=text, suspect=""), text
    text = str(found) if found else "no simple fit"
    return dict(explanation=text, suspect=found.suspect if found else ""), f"explainer: {text}"


def records_from_report(report) -> list[dict]:
    return [json.loads(v) for k, v in report.user_properties if k == RECORD_KEY]

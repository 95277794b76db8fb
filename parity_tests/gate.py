"""The regression gate (--parity-baseline): one test of its own, `parity::regression_gate`.

Its verdict is where CI looks (pytest's result line, JUnit XML, the exit status): the run's
records are diffed against the baseline's (reports.diff) and the test fails with the table
of what changed when the run regressed. In a serial run it is the RegressionGate item,
added last to the session; under pytest-xdist (-n N) the controller, which runs no test,
judges at session end and reports the same test under the same id (report_gate).

The plugin (plugin.py) calls `add_gate` from pytest_collection_finish and `judge` from
pytest_sessionfinish; the report (session_report.py) writes the gate's regression.md.
"""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from parity_tests.completeness import completeness
from parity_tests.records import run_meta
from parity_tests.settings import ROOT, SETTINGS, STATE, distributing, is_worker

# The gate's test id; JUnit XML reads it as classname "parity", name "regression_gate".
GATE_NODEID = "parity::regression_gate"
# The file the gate's test reports as its location: the plugin's entry point.
GATE_FILE = Path(__file__).with_name("plugin.py")


@dataclasses.dataclass
class GateState:
    added: bool = False  # the RegressionGate item is in session.items
    ran: bool = False  # ... and its runtest ran (it reported the verdict itself)
    completeness: dict = dataclasses.field(default_factory=dict)  # as the gate saw it
    message: str = ""  # the failure message: the verdict and the changes, brief
    text: str = ""  # the failure text: also the environment changes, every column
    markdown: str = ""  # regression.md


GATE = pytest.StashKey[GateState]()


def gate_state(config) -> GateState:
    return config.stash.setdefault(GATE, GateState())


@dataclasses.dataclass(frozen=True)
class _Crash:
    """What pytest reads of a failure's `reprcrash`: JUnit's failure message, and the first
    line of it in the short test summary (-ra)."""

    path: str
    lineno: int
    message: str


class GateVerdict:
    """A failing gate's longrepr: reprcrash.message is the brief changes table (JUnit's
    `message` attribute keeps about 500 characters); str() and the FAILURES section are the
    whole text (JUnit's failure text)."""

    def __init__(self, gate: GateState, path: str):
        self.reprcrash, self.text = _Crash(path, 0, gate.message), gate.text

    def __str__(self) -> str:
        return self.text

    def toterminal(self, tw) -> None:
        for line in self.text.splitlines():
            tw.line(line)


class RegressionFound(Exception):
    pass


class RegressionGate(pytest.Item):
    """`parity::regression_gate`: added last to the session when --parity-baseline is given.

    It runs after every other test, so the records are all in (RunState.records, collected
    on this process from the teardown reports), and fails with the table of what changed
    when the run regressed: pytest's result line counts it, JUnit XML holds it as a failure
    whose message is the table, and the exit status is 1. No regression: it passes (it
    skips when nothing was recorded).

    Under pytest-xdist (-n N) no test can see the other workers' records, so no such item is
    collected: the controller diffs at session end and reports the same test, passed or
    failed, under the same id through pytest_runtest_logreport (report_gate), which the
    terminal, JUnit XML and the exit status read like any test's report.
    """

    def runtest(self):
        config, gate = self.config, gate_state(self.config)
        gate.ran = True
        gate.completeness = completeness(self.session, pytest.ExitCode.OK)
        if not config.stash[STATE].records:
            pytest.skip("no comparisons were recorded: nothing to compare with the baseline")
        if compute_gate(config, gate.completeness):
            raise RegressionFound(gate.message)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, RegressionFound):
            return GateVerdict(gate_state(self.config), self.location[0])
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, "regression_gate"


def add_gate(session) -> None:
    """Append the gate to the collected tests when a baseline is given (not on an xdist
    worker or controller, not with --collect-only)."""
    config = session.config
    s = config.stash[SETTINGS]
    if (
        s.baseline is None
        or is_worker(config)
        or distributing(config)
        or config.getoption("collectonly")
    ):
        return
    session.items.append(
        RegressionGate.from_parent(session, name="regression_gate", nodeid=GATE_NODEID, path=GATE_FILE)
    )
    gate_state(config).added = True


def gate_diff(base, current, ran_files, factor: float, partial: bool, floor=None, within=None):
    """The baseline's checks against this run's under the policy (factor, floor, within;
    None: reports.diff's defaults). Checks of test files this run did not run
    at all (a baseline made by `./parity report`, gated by a narrower run) were not run, not
    vanished, and this run's checks are diffed only against the baseline's of the files it
    ran; within those files a missing check vanished unless the run was partial."""
    from reports import diff_reports
    from reports.diff import DEFAULT_WITHIN

    policy = dict(factor=factor, floor=floor, within=DEFAULT_WITHIN if within is None else within)

    def in_run(frame):
        return frame["check"].str.split("::").str[0].isin(ran_files)

    diff = diff_reports(base[in_run(base)], current[in_run(current)], partial=partial, **policy)
    if not in_run(base).all():
        # Only "not run" rows: nothing of this run belongs to those files.
        elsewhere = diff_reports(base[~in_run(base)], current[~in_run(current)], partial=True, **policy)
        diff = pd.concat([diff, elsewhere], ignore_index=True)
    return diff


def compute_gate(config, status: dict) -> bool:
    """Diff this run's records against the baseline; keep the diff, the environment
    changes, the failure texts and regression.md. True on a regression."""
    from reports import format_diff, is_regression, records_frame
    from reports.diff import environment_changes, policy_text, regression_markdown
    from reports.escape import terminal_text

    s, state, gate = config.stash[SETTINGS], config.stash[STATE], gate_state(config)
    ran_files = {nodeid.split("::")[0] for nodeid in state.ran}
    diff = gate_diff(
        state.baseline_df,
        records_frame(state.records),
        ran_files,
        s.baseline_factor,
        partial=status["status"] == "partial",
        floor=s.baseline_floor,
        within=s.baseline_within,
    )
    state.diff = diff
    state.environment_changes = environment_changes(state.baseline_meta, run_meta(config))
    # The message: JUnit's message attribute keeps whole lines up to ~500 characters, so
    # the verdict and the brief table first, the baseline last.
    policy = policy_text(s.baseline_factor, s.baseline_floor, s.baseline_within)
    against = terminal_text(f"baseline: {s.baseline} ({policy})")
    gate.message = f"{format_diff(diff, brief=True)}\n\n{against}"
    changed = [terminal_text("environment changed: " + "; ".join(state.environment_changes))]
    gate.text = "\n\n".join([format_diff(diff), *changed[: bool(state.environment_changes)], against])
    gate.markdown = regression_markdown(
        diff, s.baseline, s.baseline_factor, state.environment_changes, policy=policy
    )
    return is_regression(diff)


def report_gate(session, failed: bool) -> None:
    """The gate's verdict as the test reports of `parity::regression_gate` (xdist's
    controller, which runs no test): the terminal, JUnit XML and pytest's counts read them
    like any other test's reports."""
    config = session.config
    hook, gate = config.hook, gate_state(config)
    where = GATE_FILE.resolve()
    path = str(where.relative_to(ROOT)) if where.is_relative_to(ROOT) else str(where)
    location = (path, None, "regression_gate")
    keywords = {"regression_gate": 1, "parity": 1}
    session.testscollected += 1  # the progress count: one more test
    hook.pytest_runtest_logstart(nodeid=GATE_NODEID, location=location)
    for when, outcome, longrepr in (
        ("setup", "passed", None),
        ("call", "failed", GateVerdict(gate, path)) if failed else ("call", "passed", None),
        ("teardown", "passed", None),
    ):
        report = pytest.TestReport(GATE_NODEID, location, keywords, outcome, longrepr, when)
        hook.pytest_runtest_logreport(report=report)
    hook.pytest_runtest_logfinish(nodeid=GATE_NODEID, location=location)


def judge(session) -> None:
    """The gate's verdict at session end: the RegressionGate item's, or (xdist, or no item
    ran) made here and reported as that item's failure."""
    config = session.config
    from reports import is_regression

    s, state, gate = config.stash[SETTINGS], config.stash[STATE], gate_state(config)
    if s.baseline is None or state.completeness["status"] == "interrupted" or not state.records:
        return
    if state.diff is None:  # no gate item ran (pytest -n N): judged here
        compute_gate(config, state.completeness)
    regression = is_regression(state.diff)
    if not gate.ran:  # pytest -n N: the same test, passed or failed, as in a serial run
        report_gate(session, regression)
    if regression and session.exitstatus == 0:
        session.exitstatus = 1

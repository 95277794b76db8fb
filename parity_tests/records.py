"""The run's records and the facts written beside them.

Every comparison appends one record to its test's user_properties (compare.ParityRecorder);
the controller (the only process without xdist) collects them from the teardown reports
(RecordCollector). A parity test that fails without a failing comparison still leaves a
record: an error record made from its failure (record_failure). `run_context` is what each
record repeats about the run (seed, data, versions, ...); `run_meta` is run.json, which the
report, the gate's environment check and the terminal's verdict read.
"""

import json
import time

from parity_tests.compare import RECORD_KEY, ParityRecorder, RunContext, records_from_report
from parity_tests.completeness import model_order
from parity_tests.settings import (
    SETTINGS,
    STATE,
    RunState,
    experiment,
    reproduce_options,
    versions_text,
)
from parity_tests.stages import STAGES
from reports import normalise_record

# Which of the reference's two forms a run checked (run.json; the audit names the functions).
REFERENCE_KERNELS = {
    "reference": "fast path (reference.fast), proven against the readable model in "
    "parity_tests/test_fast_path.py",
    "reference:readable": "readable model (reference.model)",
}


def run_context(config, data) -> RunContext:
    s, state = config.stash[SETTINGS], config.stash[STATE]
    return RunContext(
        seed=s.seed,
        data_source=data.source,
        versions=versions_text(state.environment),
        init_scheme=s.init_scheme,
        reduction=s.reduction,
        impl=s.impl,
        reproduce_options=reproduce_options(s),
    )


def _failure_record(item, report) -> dict:
    """An error record for a parity test that failed without recording why."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    stage = params.get("stage")
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr).strip()[-500:]
    base = ParityRecorder(item, run_context(item.config, item.config.stash[STATE].data))._base(
        tensor=getattr(stage, "tensor", params.get("name", "")),
        equation=getattr(stage, "equation", ""),
        against=params.get("framework", ""),
        dtype=params.get("dtype", ""),
        status="error",
        passed=False,
        mismatch_kind="error",
        error=f"the test failed in {report.when} without a failing comparison: {message}",
    )
    return normalise_record(base)


def record_failure(item, report) -> None:
    """Every failure is a record: a parity test that fails must leave a non-pass record
    (called by the plugin's pytest_runtest_makereport with each phase's report)."""
    if report.failed and "parity" in getattr(item, "fixturenames", ()):
        recorded = [json.loads(v) for k, v in item.user_properties if k == RECORD_KEY]
        if all(r.get("status") == "pass" for r in recorded):
            entry = (RECORD_KEY, json.dumps(_failure_record(item, report), sort_keys=True))
            item.user_properties.append(entry)
            if report.when == "teardown":
                report.user_properties.append(entry)


class RecordCollector:
    """Collects the records on the controller (pytest_runtest_logreport has no `config`)."""

    def __init__(self, state: RunState):
        self.state = state

    def pytest_runtest_logreport(self, report):
        # Teardown reports carry the item's complete user_properties (setup and call too).
        if report.when == "teardown":
            self.state.records.extend(records_from_report(report))
            self.state.ran.add(report.nodeid)


def run_meta(config) -> dict:
    """run.json: the experiment, the environment, the completeness and the command."""
    s, state = config.stash[SETTINGS], config.stash[STATE]
    return {
        **experiment(s, state.data),
        "frameworks": list(s.frameworks),
        "dtypes": list(s.dtypes),
        "data_source": state.data.source,
        "environment": state.environment,
        "versions": versions_text(state.environment),
        "completeness": state.completeness,
        "reference_kernels": REFERENCE_KERNELS.get(s.impl, "not the reference"),
        "model_impl": s.model_impl,
        "model_kernels": (
            "fast kernels (reference.fast_layers), proven equal to the readable layers "
            "(reference/layers/) in parity_tests/test_fast_layers.py"
            if s.model_impl == "reference"
            else f"the readable layers (reference/layers/) with {s.model_impl}"
        ),
        "wall_time_s": round(time.time() - state.started, 2),
        # The heat map's rows: the article's tensors, then the spec network's, each in
        # forward/backward order.
        "tensor_order": [st.tensor for st in STAGES] + list(model_order(s)),
        "command": " ".join(["pytest", *config.invocation_params.args]),
    }

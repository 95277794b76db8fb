"""The parity suite's pytest plugin: options, validated settings, fixtures, records, reports
and the regression gate.

Every option is checked in pytest_configure, before any test runs: a bad value is one usage
error (pytest exit 4) naming the option, the value and what is expected. The run's state
lives in `config.stash`; tests reach it through fixtures (`parity_settings`, `run_config`,
`article_data`, `harness`, `parity`).

Records: every comparison appends one record to its test's user_properties; the controller
(the only process without xdist) collects them from the teardown reports and, at session
end, writes the report (only into a folder the suite wrote before, see reports.writer).
Whether the run was complete, partial or interrupted goes into run.json, the top of
summary.md/summary.html and the last line of the terminal output.

The regression gate (--parity-baseline) is a test of its own, `parity::regression_gate`,
so that its verdict is where CI looks (pytest's result line, JUnit XML): see
RegressionGate.
"""

import parity_tests.pins  # noqa: F401, I001  (first: before NumPy, torch or TensorFlow load)
import dataclasses
import gc
import json
import os
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, settings

from parity_tests.compare import RECORD_KEY, ParityRecorder, RunContext, records_from_report
from parity_tests.harness import Harness, RunConfig
from parity_tests.impl_call import INPUT_NAMES
from parity_tests.settings import (
    ROOT,
    RunState,
    Settings,
    add_options,
    environment,
    experiment,
    is_worker,
    reproduce_options,
    validate_options,
    versions_text,
)
from parity_tests.stages import END_TO_END, STAGES
from reference.data import ARTICLE_IMAGES, load_article_data
from reports import normalise_record

PARITY_TEST_FILE = "test_parity.py"
MODEL_TEST_FILE = "test_model.py"  # the spec-built network's checks (--parity-model)
PYPROJECT = ROOT / "pyproject.toml"
# Which of the reference's two forms a run checked (run.json; the audit names the functions).
REFERENCE_KERNELS = {
    "reference": "fast path (reference.fast), proven against the readable model in "
    "parity_tests/test_fast_path.py",
    "reference:readable": "readable model (reference.model)",
}
# -m expressions that select the whole suite: pyproject's default and ./parity test's.
FULL_MARK_EXPRESSIONS = ("not slow", "slow or not slow", "")


# Property-based tests: fixed examples (derandomize) so a run is reproducible. "gate", the
# default, keeps the plain `pytest` run quick; `./parity test` (what CI runs) selects
# "thorough" with --hypothesis-profile=thorough.
for _name, _examples in (("gate", 25), ("thorough", 200)):
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        derandomize=True,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
settings.load_profile("gate")


SETTINGS = pytest.StashKey[Settings]()
STATE = pytest.StashKey[RunState]()


# --------------------------------------------------------------------------- options


def pytest_addoption(parser):
    add_options(parser)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Root the session at the project when pytest took its rootdir from an option's value.

    pytest picks its rootdir from the path-like words of the command line before any
    plugin can declare options, so `pytest --parity-data /abs/mnist.npz` run in the project
    roots the session at /abs and reads no pyproject.toml (no testpaths, no addopts, and the
    test ids lose their parity_tests/ prefix). Installed through its pytest11 entry point,
    this plugin is loaded before this hook: it re-reads the project's configuration when the
    run is about the project (run from inside it, or naming a path inside it) and no
    --rootdir or -c says otherwise.
    """
    from _pytest.config.findpaths import locate_config, parse_override_ini

    ns = early_config.known_args_namespace
    here = early_config.invocation_params.dir
    if early_config.inipath == PYPROJECT or ns.rootdir or ns.inifilename:
        return
    named = [Path(here, a).resolve() for a in ns.file_or_dir]
    if not (_inside(here.resolve(), ROOT) or any(_inside(p, ROOT) for p in named)):
        return
    rootdir, inipath, inicfg, _ = locate_config(here, [ROOT])
    if inipath != PYPROJECT:
        return
    early_config._rootpath, early_config._inipath = rootdir, inipath
    early_config._inicfg = {**inicfg, **parse_override_ini(ns.override_ini)}
    early_config._inicache.clear()
    ns.confcutdir = str(ROOT)
    args[:] = [*early_config.getini("addopts"), *args]


def _distributing(config) -> bool:
    """True in the xdist controller of a `pytest -n N` run (N > 0)."""
    return (
        not is_worker(config)
        and bool(getattr(config.option, "numprocesses", 0))
        and getattr(config.option, "dist", "no") != "no"
    )


# The frameworks' import leaves millions of objects that live for the whole session, and
# every full collection of the cyclic garbage collector walks them all again: about 1.5 s
# of a 20 s gate. The collector is off from the start of the run until the frameworks are
# imported; then what exists is frozen (never walked again) and the collector is back on
# (_settle_gc: at the end of pytest_configure, and again once the tests are collected).
# Whatever ends the run, pytest's cleanup turns it back on: pytest.main() called from a
# notebook must not leave its interpreter without one.
@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    gc.disable()
    config.add_cleanup(gc.enable)


def _settle_gc() -> None:
    """Freeze every object made so far out of the collector's reach and turn it back on."""
    gc.freeze()
    gc.enable()


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: long checks (seed and batch sweeps, pytest sessions in subprocesses); left out "
        "of the default run (pyproject's -m 'not slow'), run by ./parity test",
    )
    config.addinivalue_line("markers", "parity: compares the reference with a framework")
    s, state = validate_options(config)
    config.stash[SETTINGS], config.stash[STATE] = s, state
    if not is_worker(config):
        config.pluginmanager.register(RecordCollector(state), "parity-record-collector")
    if _distributing(config):
        _settle_gc()  # the controller collects no tests
        return  # the xdist controller runs no test: only the workers import the frameworks
    # Thread counts must be set before TensorFlow's first op; one thread keeps every
    # reduction order, and so comparisons.csv, identical from run to run.
    if "tensorflow" in s.frameworks:
        try:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except Exception as exc:  # reported by every tensorflow check, never skipped
            state.framework_errors["tensorflow"] = f"{type(exc).__name__}: {exc}"
    if "torch" in s.frameworks:
        try:
            import torch

            torch.set_num_threads(1)
        except Exception as exc:
            state.framework_errors["torch"] = f"{type(exc).__name__}: {exc}"
    state.environment = environment(s)
    _settle_gc()  # the frameworks are in: the bulk of start-up's objects


@pytest.hookimpl(trylast=True)
def pytest_generate_tests(metafunc):
    s = metafunc.config.stash[SETTINGS]
    # Tests that parametrise these themselves keep their own values.
    own = {
        name.strip()
        for mark in metafunc.definition.iter_markers("parametrize")
        for name in (mark.args[0].split(",") if isinstance(mark.args[0], str) else mark.args[0])
    }
    for name, values in (("framework", s.frameworks), ("dtype", s.dtypes)):
        if name in metafunc.fixturenames and name not in own:
            metafunc.parametrize(name, values)


def pytest_report_header(config):
    s, state = config.stash[SETTINGS], config.stash[STATE]
    lines = [
        f"parity: frameworks={','.join(s.frameworks)} dtypes={','.join(s.dtypes)} "
        f"seed={s.seed} init={s.init_scheme} impl={s.impl} reduction={s.reduction} "
        f"n_images={s.n_images}",
        f"parity networks: the article's (test_parity.py), {s.model_checked} (test_model.py)",
        f"parity data: {state.data.source}",
    ]
    if s.layers:
        lines.append(f"parity own layers (--parity-layer): {'; '.join(s.layers)}")
    if state.environment:
        lines.append(f"parity versions: {versions_text(state.environment)}")
    for name, err in state.framework_errors.items():
        lines.append(f"parity: {name} FAILED TO LOAD: {err}")
    return lines


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def parity_settings(pytestconfig) -> Settings:
    return pytestconfig.stash[SETTINGS]


@pytest.fixture(scope="session")
def run_config(parity_settings) -> RunConfig:
    return parity_settings.run_config


@pytest.fixture(scope="session")
def article_data(pytestconfig):
    state = pytestconfig.stash[STATE]
    for message in state.data_warnings:  # loaded at start-up; warned where pytest sees it
        warnings.warn(message, stacklevel=1)
    return state.data


@pytest.fixture(scope="session")
def article_batch(pytestconfig, article_data):
    """The article's own 200 images, for tests about them whatever --parity-n-images says:
    the run's batch when it is those, else the same source's first 200."""
    if article_data.X.shape[2] == ARTICLE_IMAGES:
        return article_data
    return load_article_data(ARTICLE_IMAGES, source=pytestconfig.getoption("--parity-data"))


@pytest.fixture(scope="session")
def harness(pytestconfig, run_config, article_data) -> Harness:
    return Harness(run_config, article_data, pytestconfig.stash[STATE].impl)


@pytest.fixture(scope="session")
def model_network(parity_settings):
    """The spec-built network test_model.py checks (reference.network.Network)."""
    from reference.network import Network

    return Network(parity_settings.model_checked)


@pytest.fixture(scope="session")
def model_harness(parity_settings, run_config, article_data, model_network):
    from parity_tests.model_harness import ModelHarness

    impl = None
    if parity_settings.layers:  # --parity-layer: the same network built with the user's layers
        from parity_tests.own_layers import user_network

        impl = user_network(model_network.spec, parity_settings.layers, parity_settings.reduction)
    return ModelHarness(model_network, run_config, article_data, impl=impl)


def _context(config, data) -> RunContext:
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


@pytest.fixture
def parity(request, article_data) -> ParityRecorder:
    """The comparison helper bound to this test: `parity.check(...)` records and asserts."""
    context = _context(request.config, article_data)
    s = request.config.stash[SETTINGS]
    if request.node.path.name == MODEL_TEST_FILE:
        # --parity-impl names an implementation of the article's train_step; the spec
        # network is the reference's, or built from the user's --parity-layer functions.
        impl = "reference"
        if s.layers:
            from parity_tests.own_layers import impl_label, load

            impl = impl_label(load(s.layers, s.reduction))
        context = dataclasses.replace(context, impl=impl)
    return ParityRecorder(request.node, context)


# --------------------------------------------------------------------------- records


def _failure_record(item, report) -> dict:
    """An error record for a parity test that failed without recording why."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    stage = params.get("stage")
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr).strip()[-500:]
    base = ParityRecorder(item, _context(item.config, item.config.stash[STATE].data))._base(
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    # Every failure is a record: a parity test that fails must leave a non-pass record.
    if report.failed and "parity" in getattr(item, "fixturenames", ()):
        recorded = [json.loads(v) for k, v in item.user_properties if k == RECORD_KEY]
        if all(r.get("status") == "pass" for r in recorded):
            entry = (RECORD_KEY, json.dumps(_failure_record(item, report), sort_keys=True))
            item.user_properties.append(entry)
            if report.when == "teardown":
                report.user_properties.append(entry)
    return report


class RecordCollector:
    """Collects the records on the controller (pytest_runtest_logreport has no `config`)."""

    def __init__(self, state: RunState):
        self.state = state

    def pytest_runtest_logreport(self, report):
        # Teardown reports carry the item's complete user_properties (setup and call too).
        if report.when == "teardown":
            self.state.records.extend(records_from_report(report))
            self.state.ran.add(report.nodeid)


def pytest_testnodedown(node, error):
    """xdist controller: the environment the workers ran with (the controller imports no
    framework)."""
    env = getattr(node, "workeroutput", {}).get("parity_environment")
    if env:
        node.config.stash[STATE].environment = dict(env)


# --------------------------------------------------------------------------- regression gate

# The gate's test id; JUnit XML reads it as classname "parity", name "regression_gate".
GATE_NODEID = "parity::regression_gate"


@dataclasses.dataclass
class GateState:
    added: bool = False  # the RegressionGate item is in session.items
    ran: bool = False  # ... and its runtest ran (it reported the verdict itself)
    completeness: dict = dataclasses.field(default_factory=dict)  # as the gate saw it
    message: str = ""  # the failure message: the verdict and the changes, brief
    text: str = ""  # the failure text: also the environment changes, every column
    markdown: str = ""  # regression.md


GATE = pytest.StashKey[GateState]()


def _gate_state(config) -> GateState:
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
    failed, under the same id through pytest_runtest_logreport (_report_gate), which the
    terminal, JUnit XML and the exit status read like any test's report.
    """

    def runtest(self):
        config, gate = self.config, _gate_state(self.config)
        gate.ran = True
        gate.completeness = completeness(self.session, pytest.ExitCode.OK)
        if not config.stash[STATE].records:
            pytest.skip("no comparisons were recorded: nothing to compare with the baseline")
        if _compute_gate(config, gate.completeness):
            raise RegressionFound(gate.message)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, RegressionFound):
            return GateVerdict(_gate_state(self.config), self.location[0])
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, "regression_gate"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session):
    """Add the gate last, after every selection and reordering (-k, -m, --deselect, --lf,
    --ff) is done, so that it is never deselected and runs after the checks it judges."""
    _settle_gc()  # and the collected tests: the session's own from here on
    config = session.config
    s = config.stash[SETTINGS]
    if (
        s.baseline is None
        or is_worker(config)
        or _distributing(config)
        or config.getoption("collectonly")
    ):
        return
    session.items.append(
        RegressionGate.from_parent(
            session, name="regression_gate", nodeid=GATE_NODEID, path=Path(__file__)
        )
    )
    _gate_state(config).added = True


def _compute_gate(config, status: dict) -> bool:
    """Diff this run's records against the baseline; keep the diff, the environment
    changes, the failure texts and regression.md. True on a regression."""
    from reports import diff_reports, format_diff, is_regression, records_frame
    from reports.diff import environment_changes, regression_markdown
    from reports.escape import terminal_text

    s, state, gate = config.stash[SETTINGS], config.stash[STATE], _gate_state(config)
    current, base = records_frame(state.records), state.baseline_df
    # Checks of test files this run did not run at all (a baseline made by `./parity test`,
    # gated by `./parity report`) were not run, not vanished; within the files it ran,
    # a missing check vanished unless the run was partial.
    ran_files = {nodeid.split("::")[0] for nodeid in state.ran}
    in_run = base["check"].str.split("::").str[0].isin(ran_files)
    diff = diff_reports(
        base[in_run], current, factor=s.baseline_factor, partial=status["status"] == "partial"
    )
    if not in_run.all():
        elsewhere = diff_reports(base[~in_run], current, factor=s.baseline_factor, partial=True)
        diff = pd.concat([diff, elsewhere], ignore_index=True)
    state.diff = diff
    state.environment_changes = environment_changes(state.baseline_meta, _meta(config))
    # The message: JUnit's message attribute keeps whole lines up to ~500 characters, so
    # the verdict and the brief table first, the baseline last.
    against = terminal_text(f"baseline: {s.baseline} (factor {s.baseline_factor:g})")
    gate.message = f"{format_diff(diff, brief=True)}\n\n{against}"
    changed = [terminal_text("environment changed: " + "; ".join(state.environment_changes))]
    gate.text = "\n\n".join([format_diff(diff), *changed[: bool(state.environment_changes)], against])
    gate.markdown = regression_markdown(diff, s.baseline, s.baseline_factor, state.environment_changes)
    return is_regression(diff)


def _report_gate(session, failed: bool) -> None:
    """The gate's verdict as the test reports of `parity::regression_gate` (xdist's
    controller, which runs no test): the terminal, JUnit XML and pytest's counts read them
    like any other test's reports."""
    config = session.config
    hook, gate = config.hook, _gate_state(config)
    where = Path(__file__).resolve()
    path = str(where.relative_to(ROOT)) if _inside(where, ROOT) else str(where)
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


# --------------------------------------------------------------------------- session end


def expected_parity_tests(s: Settings) -> int:
    """The tests of test_parity.py for these frameworks and dtypes: the stage and end-to-end
    checks per framework and dtype, then per dtype the contract and one check per input."""
    stage_checks = len(STAGES) + len(END_TO_END)
    per_dtype = 1 + len(INPUT_NAMES)
    return (stage_checks * len(s.frameworks) + per_dtype) * len(s.dtypes)


def expected_model_tests(s: Settings) -> int:
    """The tests of test_model.py: every tensor of the network, stage and end to end, per
    framework and dtype."""
    return 2 * len(_model_order(s)) * len(s.frameworks) * len(s.dtypes)


def completeness(session, exitstatus) -> dict:
    """complete | partial (deselected or restricted, with counts) | interrupted."""
    config = session.config
    s, state = config.stash[SETTINGS], config.stash[STATE]
    # The regression gate judges the run; it is not one of its tests.
    ran = len(state.ran - {GATE_NODEID})
    collected = int(session.testscollected) - _gate_state(config).added
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        return dict(status="interrupted", detail=f"interrupted after {ran} of {collected} tests")
    if session.shouldstop or session.shouldfail or ran < collected:
        why = session.shouldstop or session.shouldfail or "stopped early"
        return dict(status="interrupted", detail=f"{why}: {ran} of {collected} tests ran")
    why = list(s.restricted)
    o = config.option
    if getattr(o, "keyword", ""):
        why.append(f"selected with -k {o.keyword!r}")
    if getattr(o, "markexpr", "") not in FULL_MARK_EXPRESSIONS:
        why.append(f"selected with -m {o.markexpr!r}")
    if getattr(o, "deselect", None):
        why.append(f"{len(o.deselect)} --deselect option(s)")
    expected = expected_parity_tests(s)
    got = sum(1 for n in state.ran if n.split("::")[0].endswith(PARITY_TEST_FILE))
    if got < expected:
        why.append(f"{got} of the {expected} parity tests ({PARITY_TEST_FILE}) ran")
    expected = expected_model_tests(s)
    got = sum(1 for n in state.ran if n.split("::")[0].endswith(MODEL_TEST_FILE))
    if got < expected:
        why.append(f"{got} of the {expected} tests of {s.model_checked} ({MODEL_TEST_FILE}) ran")
    if why:
        return dict(status="partial", detail="; ".join(why))
    return dict(status="complete", detail=f"{ran} of {collected} tests ran")


def _model_order(s: Settings) -> tuple:
    from reference.network import Network

    return Network(s.model_checked).order


def _meta(config) -> dict:
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
        "wall_time_s": round(time.time() - state.started, 2),
        # The heat map's rows: the article's tensors, then the spec network's, each in
        # forward/backward order.
        "tensor_order": [st.tensor for st in STAGES] + list(_model_order(s)),
        "command": " ".join(["pytest", *config.invocation_params.args]),
    }


def _write_report(config) -> None:
    from parity_tests.audit_hook import audit_files
    from reports import write_report

    s, state = config.stash[SETTINGS], config.stash[STATE]
    if s.report_dir is None:
        state.no_report_why = "--parity-no-report"
    elif not state.records:
        state.no_report_why = "no comparisons were recorded"
    elif state.completeness["status"] == "interrupted":
        state.no_report_why = f"the run was {state.completeness['detail']}"
    else:
        meta = _meta(config)
        extra = audit_files(state.records, meta)
        if _gate_state(config).markdown:  # the gate's verdict, whenever a baseline was given
            extra["regression.md"] = _gate_state(config).markdown
        write_report(state.records, s.report_dir, meta, extra_files=extra)
        state.report = s.report_dir
    note = os.environ.get("PARITY_REPORT_NOTE")  # ./parity report: which report to show
    if note:
        Path(note).write_text(str(state.report or ""), encoding="utf-8")


def _gate(session) -> None:
    """The gate's verdict at session end: the RegressionGate item's, or (xdist, or no item
    ran) made here and reported as that item's failure."""
    config = session.config
    from reports import is_regression

    s, state, gate = config.stash[SETTINGS], config.stash[STATE], _gate_state(config)
    if s.baseline is None or state.completeness["status"] == "interrupted" or not state.records:
        return
    if state.diff is None:  # no gate item ran (pytest -n N): judged here
        _compute_gate(config, state.completeness)
    regression = is_regression(state.diff)
    if not gate.ran:  # pytest -n N: the same test, passed or failed, as in a serial run
        _report_gate(session, regression)
    if regression and session.exitstatus == 0:
        session.exitstatus = 1


def _append_step_summary(text: str) -> None:
    """GitHub Actions' job summary gets regression.md after the report's summary.md."""
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary and text:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)


@pytest.hookimpl(tryfirst=True)  # before junitxml writes its file: the gate's report is in it
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if is_worker(config):
        config.workeroutput["parity_environment"] = config.stash[STATE].environment
        return
    state, gate = config.stash[STATE], _gate_state(config)
    if gate.ran and exitstatus != pytest.ExitCode.INTERRUPTED:
        # As the gate saw it: its own failure (-x, --maxfail) does not make the run interrupted.
        state.completeness = gate.completeness
    else:
        state.completeness = completeness(session, exitstatus)
    _gate(session)
    _write_report(config)
    _append_step_summary(gate.markdown)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The worst comparisons, the verdict (reports.headline), the regression gate and the
    run's completeness line, last.

    The outermost wrapper: this runs after pytest's own summary (FAILURES, the short test
    summary), so however many tests failed or errored, the verdict and the completeness
    line end the output, right above pytest's result line.
    """
    from reports import format_diff, headline, is_regression, records_frame, terminal_lines
    from reports.escape import terminal_text

    yield
    if is_worker(config):
        return
    s, state = config.stash[SETTINGS], config.stash[STATE]
    tr = terminalreporter
    df = records_frame(state.records) if state.records else None
    if df is not None:
        tr.section("parity: worst comparisons")
        for line in terminal_lines(df, n=10):
            tr.write_line(line)
    if state.report:  # where each file is, before the verdict (which ends the output)
        files = sorted(p.name for p in Path(state.report).iterdir() if not p.name.startswith("."))
        tr.write_line(
            f"report files in {state.report}: {', '.join(files)} (summary.html: open it in a browser)"
        )
    if df is not None:
        tr.section("parity: verdict")
        for line in headline(df, _meta(config)["tensor_order"]):
            fine = line.startswith("verdict: every comparison passed")
            tr.write_line(line, bold=line.startswith("verdict:"), green=fine, red=not fine)
    if state.diff is not None:  # last but the completeness line: the gate's verdict
        tr.section("parity: regression gate")
        if state.environment_changes:
            tr.write_line(terminal_text("environment changed: " + "; ".join(state.environment_changes)))
        tr.write_line(format_diff(state.diff))
        regression = is_regression(state.diff)
        verdict = "REGRESSION" if regression else "no regression"
        where = f"; {state.report}/regression.md" if state.report else ""
        tr.write_line(
            terminal_text(f"{verdict} against {s.baseline}{where}"),
            red=regression,
            green=not regression,
            bold=True,
        )
    if not state.completeness:
        return
    status = state.completeness["status"]
    line = f"parity run {status.upper()}: {state.completeness['detail']}"
    if state.report:
        line += f"; {len(state.records)} comparisons; report: {state.report}/summary.md"
    else:
        kept = f"; {s.report_dir} is untouched" if s.report_dir else ""
        line += f"; no report written ({state.no_report_why}){kept}"
    tr.write_line(line, red=status != "complete", bold=True)

"""The parity suite's pytest plugin: the entry point that registers every hook and fixture.

Loaded through the project's pytest11 entry point (pyproject.toml: parity =
"parity_tests.plugin"), or by conftest.py when the project is not installed. pytest finds
hooks only in registered plugins, so every hook of the suite is defined here, with its
ordering (tryfirst, wrapper, ...), and hands its work to the module whose job it is:

    pins.py            the environment: variables before the frameworks load, thread counts
    rootdir.py         a run rooted at an option's value re-rooted at the project
    settings.py        the --parity-* options, validated (a bad value: one usage error, exit
                       4, before any test), the run's Settings and RunState in config.stash
    fixtures.py        the fixtures (registered through `pytest_plugins` below)
    records.py         the records: failures made records, collection on the controller,
                       the run's meta (run.json)
    completeness.py    complete, partial or interrupted
    gate.py            the regression gate (--parity-baseline), the test
                       `parity::regression_gate`
    session_report.py  the report written at session end and the terminal's parity sections

Here too: the hypothesis profiles, the markers, the parametrisation over frameworks and
dtypes, the report header and the garbage collector's pause during start-up.
"""

import parity_tests.pins  # noqa: F401, I001  (first: before NumPy, torch or TensorFlow load)
import gc

import pytest
from hypothesis import HealthCheck, settings

from parity_tests import gate, records, rootdir, session_report
from parity_tests.completeness import completeness
from parity_tests.pins import pin_framework_threads
from parity_tests.settings import (
    SETTINGS,
    STATE,
    add_options,
    distributing,
    environment,
    is_worker,
    validate_options,
    versions_text,
)
from reports.escape import terminal_text

pytest_plugins = ("parity_tests.fixtures",)


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


# --------------------------------------------------------------------------- start-up


def pytest_addoption(parser):
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Root the session at the project when pytest took its rootdir from an option's value
    (rootdir.py). Installed through its pytest11 entry point, this plugin is loaded before
    this hook; loaded by conftest.py, it is too late for it."""
    rootdir.reroot(early_config, args)


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
        config.pluginmanager.register(records.RecordCollector(state), "parity-record-collector")
    if distributing(config):
        _settle_gc()  # the controller collects no tests
        return  # the xdist controller runs no test: only the workers import the frameworks
    pin_framework_threads(s.frameworks, state.framework_errors)
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
        f"parity data: {terminal_text(state.data.source)}",  # a path: no escape sequences
    ]
    if s.layers:
        where = "a child process per module" if s.layer_isolation == "process" else "inline"
        lines.append(
            f"parity own layers (--parity-layer, {where}): {terminal_text('; '.join(s.layers))}"
        )
    if state.environment:
        lines.append(f"parity versions: {versions_text(state.environment)}")
    for name, err in state.framework_errors.items():
        lines.append(terminal_text(f"parity: {name} FAILED TO LOAD: {err}"))
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session):
    """Add the gate last, after every selection and reordering (-k, -m, --deselect, --lf,
    --ff) is done, so that it is never deselected and runs after the checks it judges."""
    _settle_gc()  # and the collected tests: the session's own from here on
    gate.add_gate(session)


# --------------------------------------------------------------------------- tests and records


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    records.record_failure(item, report)  # a failing parity test leaves a non-pass record
    return report


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist must still load us
def pytest_testnodedown(node, error):
    """xdist controller: the environment the workers ran with (the controller imports no
    framework)."""
    env = getattr(node, "workeroutput", {}).get("parity_environment")
    if env:
        node.config.stash[STATE].environment = dict(env)


# --------------------------------------------------------------------------- session end


@pytest.hookimpl(tryfirst=True)  # before junitxml writes its file: the gate's report is in it
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if is_worker(config):
        config.workeroutput["parity_environment"] = config.stash[STATE].environment
        return
    state, verdict = config.stash[STATE], gate.gate_state(config)
    if verdict.ran and exitstatus != pytest.ExitCode.INTERRUPTED:
        # As the gate saw it: its own failure (-x, --maxfail) does not make the run interrupted.
        state.completeness = verdict.completeness
    else:
        state.completeness = completeness(session, exitstatus)
    gate.judge(session)
    session_report.write_run_report(config)
    session_report.append_step_summary(verdict.markdown)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The worst comparisons, the verdict (reports.headline), the regression gate and the
    run's completeness line, last (session_report.terminal_summary).

    The outermost wrapper: this runs after pytest's own summary (FAILURES, the short test
    summary), so however many tests failed or errored, the verdict and the completeness
    line end the output, right above pytest's result line.
    """
    yield
    if is_worker(config):
        return
    session_report.terminal_summary(terminalreporter, config)

"""pytest options, fixtures and the report hooks of the parity suite.

Records: every comparison appends one record to its test's user_properties; the
controller (the only process when not using xdist) collects them in
pytest_runtest_logreport and writes the reports at session end.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

# TensorFlow reads these at import; set before anything can import it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # pinned: oneDNN changes float32 conv sums
# NumPy's BLAS reads these at import: its thread count changes float32 summation order (256
# fields of comparisons.csv differ between 1 and 2 threads), and one thread per library keeps
# torch, TensorFlow and NumPy from spinning against each other on small machines.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _var in BLAS_THREAD_VARS:
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from parity_tests.compare import ParityRecorder, RunContext, records_from_report  # noqa: E402
from parity_tests.harness import Harness, RunConfig  # noqa: E402
from parity_tests.impls import resolve_impl  # noqa: E402
from parity_tests.mirrors import FRAMEWORKS  # noqa: E402
from parity_tests.stages import STAGES  # noqa: E402

ROOT = Path(__file__).resolve().parent
DTYPES = ("float64", "float32")

# Property-based tests: fixed examples (derandomize) so a run is reproducible. "gate", the
# default, keeps the plain `pytest` run quick; `./parity test` (what CI runs) selects
# "thorough" with --hypothesis-profile=thorough.
for _name, _examples in (("gate", 25), ("thorough", 200)):
    settings.register_profile(
        _name, max_examples=_examples, deadline=None, derandomize=True, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("gate")


def _csv(value: str, allowed, option: str) -> tuple:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise pytest.UsageError(f"{option}: expected a comma-separated subset of "
                                f"{','.join(allowed)}, got {value!r}")
    return items


def pytest_addoption(parser):
    g = parser.getgroup("parity", "article parity suite")
    g.addoption("--parity-frameworks", default=",".join(FRAMEWORKS),
                help="frameworks to check against, comma-separated (default: torch,tensorflow)")
    g.addoption("--parity-dtypes", default=",".join(DTYPES),
                help="dtypes to check, comma-separated (default: float64,float32)")
    g.addoption("--parity-seed", type=int, default=0, help="seed of the shared initial weights")
    g.addoption("--parity-data", default=None,
                help="MNIST source: a .npz (x_train/y_train) or an IDX folder, or 'synthetic' "
                     "(default: $PARITY_MNIST, then the keras cache, then a download)")
    g.addoption("--parity-n-images", type=int, default=200, help="images in the batch (200)")
    g.addoption("--parity-init", default="informative", choices=("informative", "article"),
                help="initialisation scheme: informative (default) or the article's exact one")
    g.addoption("--parity-reduction", default="sum", choices=("sum", "mean"),
                help="batch reduction of the loss E7 (default sum)")
    g.addoption("--parity-impl", default="reference",
                help="implementation under test: 'reference' or an importable module with "
                     "train_step (see README 'Bring your own')")
    g.addoption("--parity-report-dir", default=str(ROOT / "reports" / "latest"),
                help="where the reports are written (default reports/latest)")
    g.addoption("--parity-no-report", action="store_true", help="write no report files")
    g.addoption("--parity-baseline", default=None,
                help="a committed report directory: fail the session on a regression against it")
    g.addoption("--parity-baseline-factor", type=float, default=10.0,
                help="budget growth that counts as a regression (default 10)")


def _settings(config):
    o = config.getoption
    return dict(frameworks=_csv(o("--parity-frameworks"), FRAMEWORKS, "--parity-frameworks"),
                dtypes=_csv(o("--parity-dtypes"), DTYPES, "--parity-dtypes"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long checks (many seeds); deselect with -m 'not slow'")
    config.addinivalue_line("markers", "parity: compares the reference with a framework")
    global _IS_WORKER
    _IS_WORKER = hasattr(config, "workerinput")
    config._parity = _settings(config)
    config._parity_records = []
    config._parity_start = time.time()
    config._parity_framework_errors = {}
    if _distributing(config):
        return  # the xdist controller runs no test: only the workers import the frameworks
    # Thread counts must be set before TensorFlow's first op; one thread keeps every
    # reduction order, and so comparisons.csv, identical from run to run.
    if "tensorflow" in config._parity["frameworks"]:
        try:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except Exception as exc:  # reported by every tensorflow check, never skipped
            config._parity_framework_errors["tensorflow"] = f"{type(exc).__name__}: {exc}"
    if "torch" in config._parity["frameworks"]:
        try:
            import torch

            torch.set_num_threads(1)
        except Exception as exc:
            config._parity_framework_errors["torch"] = f"{type(exc).__name__}: {exc}"


@pytest.hookimpl(trylast=True)
def pytest_generate_tests(metafunc):
    settings = metafunc.config._parity
    # Tests that parametrise these themselves keep their own values.
    own = {name.strip() for mark in metafunc.definition.iter_markers("parametrize")
           for name in (mark.args[0].split(",") if isinstance(mark.args[0], str) else mark.args[0])}
    for name, values in (("framework", settings["frameworks"]), ("dtype", settings["dtypes"])):
        if name in metafunc.fixturenames and name not in own:
            metafunc.parametrize(name, values)


def _distributing(config) -> bool:
    """True in the xdist controller of a `pytest -n N` run (N > 0)."""
    return (not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", 0))
            and getattr(config.option, "dist", "no") != "no")


def _versions(config) -> str:
    if _distributing(config):  # the workers' versions, as their records carry them
        return next((r["versions"] for r in _CONTROLLER_RECORDS if r.get("versions")),
                    "(imported by the xdist workers)")
    parts = [f"numpy={np.__version__}", f"python={sys.version.split()[0]}"]
    for name in config._parity["frameworks"]:
        module = sys.modules.get(name)
        parts.append(f"{name}={getattr(module, '__version__', 'unavailable')}")
    parts.append(f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '')}")
    parts.append(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '')}")
    return " ".join(parts)


def pytest_report_header(config):
    s = config._parity
    o = config.getoption
    lines = [f"parity: frameworks={','.join(s['frameworks'])} dtypes={','.join(s['dtypes'])} "
             f"seed={o('--parity-seed')} init={o('--parity-init')} impl={o('--parity-impl')} "
             f"reduction={o('--parity-reduction')}",
             f"parity versions: {_versions(config)}"]
    for name, err in config._parity_framework_errors.items():
        lines.append(f"parity: {name} FAILED TO LOAD: {err}")
    return lines


@pytest.fixture(scope="session")
def run_config(pytestconfig) -> RunConfig:
    o = pytestconfig.getoption
    return RunConfig(seed=o("--parity-seed"), n_images=o("--parity-n-images"),
                     reduction=o("--parity-reduction"), init_scheme=o("--parity-init"),
                     impl=o("--parity-impl"))


@pytest.fixture(scope="session")
def article_data(pytestconfig, run_config):
    from reference.data import load_article_data

    data = load_article_data(run_config.n_images, source=pytestconfig.getoption("--parity-data"))
    pytestconfig._parity_data_source = data.source
    return data


@pytest.fixture(scope="session")
def harness(run_config, article_data) -> Harness:
    return Harness(run_config, article_data, resolve_impl(run_config.impl))


def _reproduce_options(config) -> str:
    o = config.getoption
    opts = [f"--parity-seed {o('--parity-seed')}"]
    for name, default in (("--parity-init", "informative"), ("--parity-reduction", "sum"),
                          ("--parity-impl", "reference"), ("--parity-n-images", 200)):
        if o(name) != default:
            opts.append(f"{name} {o(name)}")
    data = o("--parity-data") or os.environ.get("PARITY_MNIST")
    if data:
        opts.append(f"--parity-data {data}")
    return " ".join(opts)


@pytest.fixture
def parity(request, run_config, article_data) -> ParityRecorder:
    """The comparison helper bound to this test: `parity.check(...)` records and asserts."""
    config = request.config
    context = RunContext(seed=run_config.seed, data_source=article_data.source,
                         versions=_versions(config), init_scheme=run_config.init_scheme,
                         reduction=run_config.reduction, impl=run_config.impl,
                         reproduce_options=_reproduce_options(config))
    return ParityRecorder(request.node, context)


_CONTROLLER_RECORDS: list[dict] = []
_IS_WORKER = False


def pytest_runtest_logreport(report):
    # Teardown reports carry the item's complete user_properties (setup and call included).
    if report.when == "teardown" and not _IS_WORKER:
        _CONTROLLER_RECORDS.extend(records_from_report(report))


def _meta(config) -> dict:
    o = config.getoption
    s = config._parity
    return {"seed": o("--parity-seed"), "init_scheme": o("--parity-init"),
            "reduction": o("--parity-reduction"), "impl": o("--parity-impl"),
            "frameworks": list(s["frameworks"]), "dtypes": list(s["dtypes"]),
            "data_source": getattr(config, "_parity_data_source", "") or
            next((r["data_source"] for r in _CONTROLLER_RECORDS if r.get("data_source")), ""),
            "versions": _versions(config), "n_images": o("--parity-n-images"),
            "lr": RunConfig.lr, "wall_time_s": round(time.time() - config._parity_start, 2),
            "tensor_order": [s.tensor for s in STAGES],   # the heat map's rows
            "command": " ".join(["pytest", *config.invocation_params.args])}


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput"):
        return
    config._parity_report = None
    if not _CONTROLLER_RECORDS or config.getoption("--parity-no-report"):
        return
    from reports import write_report

    out = Path(config.getoption("--parity-report-dir"))
    extra = {}
    try:
        from parity_tests.audit_hook import audit_files  # issue 4: derivation audit

        extra = audit_files(_CONTROLLER_RECORDS, _meta(config))
    except ImportError:
        pass
    write_report(_CONTROLLER_RECORDS, out, _meta(config), extra_files=extra)
    config._parity_report = out
    baseline = config.getoption("--parity-baseline")
    if baseline:
        from reports import diff_reports, is_regression, load_report

        base_df, _ = load_report(baseline)
        cur_df, _ = load_report(out)
        diff = diff_reports(base_df, cur_df, factor=config.getoption("--parity-baseline-factor"))
        config._parity_diff = diff
        if is_regression(diff) and session.exitstatus == 0:
            session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput") or not _CONTROLLER_RECORDS:
        return
    from reports import records_frame, terminal_lines

    tr = terminalreporter
    tr.section("parity: worst comparisons")
    for line in terminal_lines(records_frame(_CONTROLLER_RECORDS), n=10):
        tr.write_line(line)
    out = getattr(config, "_parity_report", None)
    if out:
        tr.write_line(f"{len(_CONTROLLER_RECORDS)} comparisons recorded; report: {out}/summary.md "
                      f"(also summary.html, comparisons.csv)")
    diff = getattr(config, "_parity_diff", None)
    if diff is not None:
        from reports import format_diff, is_regression

        tr.section("parity: regression gate")
        tr.write_line(format_diff(diff) if len(diff) else "no change against the baseline")
        if is_regression(diff):
            tr.write_line(f"REGRESSION against {config.getoption('--parity-baseline')}", red=True)

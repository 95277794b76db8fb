"""Path options outside the project, space-separated as the README writes them, work from the
project root and from another directory.

pytest takes its rootdir from the path-like words of the command line before any plugin
declares its options; the parity plugin (pytest11 entry point) re-roots such a run at the
project (plugin.pytest_load_initial_conftests), so the test ids, the configuration and the
report are those of a plain run.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reference.data import synthetic_digits
from reports import load_report

ROOT = Path(__file__).resolve().parents[2]
NARROW = ["-k", "test_forward and Z1", "--parity-frameworks", "torch", "--parity-dtypes", "float64"]


def _pytest(cwd, *args):
    env = {**os.environ, "PARITY_NO_DOWNLOAD": "1"}
    env.pop("PARITY_MNIST", None)
    env.pop("GITHUB_STEP_SUMMARY", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *NARROW, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert f"rootdir: {ROOT}" in run.stdout and "configfile: pyproject.toml" in run.stdout
    return run.stdout


@pytest.mark.slow  # three pytest sessions that import torch (~20 s)
def test_path_options_outside_the_project(tmp_path):
    x, labels = synthetic_digits(200)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=labels)
    base, cur, again = tmp_path / "base", tmp_path / "cur", tmp_path / "again"

    _pytest(ROOT, "--parity-data", str(tmp_path / "mnist.npz"), "--parity-report-dir", str(base))
    df, _ = load_report(base)
    assert set(df["check"]) == {"parity_tests/test_parity.py::test_forward[Z1-stage-torch-float64]"}

    # From the project root, a relative baseline outside it.
    out = _pytest(
        ROOT,
        "--parity-data",
        str(tmp_path / "mnist.npz"),
        "--parity-baseline",
        os.path.relpath(base, ROOT),
        "--parity-report-dir",
        str(cur),
    )
    assert "No changes" in out

    # From another directory, naming the tests and relative paths there.
    out = _pytest(
        tmp_path,
        str(ROOT / "parity_tests" / "test_parity.py"),
        "--parity-data",
        "mnist.npz",
        "--parity-baseline",
        "base",
        "--parity-report-dir",
        "again",
    )
    assert "No changes" in out
    assert set(load_report(again)[0]["check"]) == set(df["check"])


def test_garbage_collector_is_on_and_start_up_frozen_during_the_tests():
    # The plugin turns the collector off for start-up; left off, the cyclic garbage of a
    # long sweep (harness caches) would never be freed.
    import gc

    assert gc.isenabled()
    assert gc.get_freeze_count() > 100_000  # pytest, pandas and the frameworks' objects


def test_a_refused_in_process_run_leaves_the_garbage_collector_on():
    # pytest.main() from a notebook: a usage error ends the run before the frameworks load,
    # and the interpreter must keep its collector.
    code = (
        "import gc, pytest; rc = pytest.main(['--parity-n-images=0', '-p', 'no:cacheprovider',"
        " '-q']); print(int(rc), gc.isenabled())"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.stdout.strip().splitlines()[-1] == "4 True", run.stdout[-2000:] + run.stderr[-2000:]


def test_plugin_loads_without_xdist_or_autoloaded_plugins():
    # NOTE: conftest.py loads the plugin when entry points are off; its xdist hook must then
    # be optional, or pytest stops with "unknown hook 'pytest_testnodedown'" (INTERNALERROR).
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "parity_tests/test_layout.py"],
        cwd=ROOT,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PARITY_NO_DOWNLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "INTERNALERROR" not in run.stdout + run.stderr

"""`pytest -n 2` (pytest-xdist) writes the same comparisons.csv as a serial run (docs/design.md:
same seed, data and versions give byte-identical files), and its report carries the
workers' framework versions although the controller never imports the frameworks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Both frameworks, one dtype, forward and gradient stages: records from several tests and
# both frameworks, spread over two workers.
ARGS = [
    "parity_tests/test_parity.py",
    "-k",
    "test_forward or test_gradient",
    "--parity-dtypes",
    "float32",
    "-q",
    "-p",
    "no:cacheprovider",
]
# Run inside the controller (and only there: workers have `workerinput`) at session end.
PROBE = """
import sys
def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        seen = sorted(m for m in ("torch", "tensorflow") if m in sys.modules)
        print("controller imported:", seen or "none")
"""


def _pytest(tmp_path, name, *extra):
    env = {**os.environ, "PARITY_NO_DOWNLOAD": "1"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *ARGS,
            "-p",
            "xdist_probe",
            "--parity-report-dir",
            str(tmp_path / name),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return run.stdout, tmp_path / name


@pytest.mark.slow  # two pytest sessions that import torch and TensorFlow (~40 s)
def test_two_workers_write_the_serial_report(tmp_path):
    (tmp_path / "xdist_probe.py").write_text(PROBE)
    serial_out, serial = _pytest(tmp_path, "serial")
    xdist_out, xdist = _pytest(tmp_path, "xdist", "-n", "2")
    assert "controller imported: ['tensorflow', 'torch']" in serial_out
    assert "controller imported: none" in xdist_out, xdist_out[-2000:]
    assert (xdist / "comparisons.csv").read_bytes() == (serial / "comparisons.csv").read_bytes()
    versions = json.loads((xdist / "run.json").read_text())["versions"]
    assert "torch=" in versions and "tensorflow=" in versions and "unavailable" not in versions

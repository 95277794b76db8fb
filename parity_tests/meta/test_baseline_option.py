"""`pytest --parity-baseline DIR` end to end: the same run passes the gate, a run whose
baseline was tighter (a planted regression) fails it with a table of what changed."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
# One framework, one dtype, forward stages only: enough to exercise the gate quickly.
ARGS = [
    "parity_tests/test_parity.py",
    "-k",
    "test_forward",
    "--parity-frameworks",
    "torch",
    "--parity-dtypes",
    "float64",
    "-q",
    "-p",
    "no:cacheprovider",
]


def _pytest(*extra):
    env = {**os.environ, "PARITY_NO_DOWNLOAD": "1"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", *ARGS, *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # three pytest subprocesses, ~40 s
def test_baseline_gate(tmp_path):
    base, cur = tmp_path / "base", tmp_path / "cur"
    first = _pytest("--parity-report-dir", str(base))
    assert first.returncode == 0, first.stdout[-2000:]

    same = _pytest("--parity-report-dir", str(cur), "--parity-baseline", str(base))
    assert same.returncode == 0, same.stdout[-2000:]
    assert "no change against the baseline" in same.stdout or "No changes" in same.stdout

    # NOTE: plant a regression: the baseline's largest budget made 1000x smaller. It must be
    # the largest: a budget below 1/factor of its allowance is never a regression.
    csv = base / "comparisons.csv"
    df = pd.read_csv(csv, keep_default_na=False)
    worst = df["budget_used"].astype(float).idxmax()
    tensor, budget = df.loc[worst, "tensor"], float(df.loc[worst, "budget_used"])
    assert budget > 0.1, budget
    df.loc[worst, "budget_used"] = budget / 1000
    df.to_csv(csv, index=False, lineterminator="\n")
    worse = _pytest("--parity-report-dir", str(cur), "--parity-baseline", str(base))
    assert worse.returncode == 1, worse.stdout[-2000:]
    assert "REGRESSION" in worse.stdout and tensor in worse.stdout

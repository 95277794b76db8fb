"""How long the gate takes, in units of "import torch, tensorflow", and whether pytest-xdist
changes the report.

    PARITY_MNIST=/path/to/mnist.npz .venv/bin/python benchmarks/gate_time.py [--runs 3]
        [--workers 2] [--dist loadfile|load] [--json PATH] [--bytecode cached|env]

Runs, interleaved and `--runs` times each:

  import   python -c "import torch, tensorflow"       (the floor any gate run pays)
  serial   python -m pytest -q -p no:cacheprovider   (plain pytest: pyproject's gate)
  xdist    the same with -n WORKERS --dist DIST

and prints each wall time's median and its ratio to the import's. `--bytecode cached`
(the default) measures what a user's second run costs: Python writes and reuses the
bytecode of the suite's modules and pytest its rewritten test modules, as it does unless
PYTHONDONTWRITEBYTECODE is set (this machine sets it; the installed torch and TensorFlow
carry their bytecode from pip either way), after one untimed gate run that writes it.
`--bytecode env` keeps the environment's setting: with PYTHONDONTWRITEBYTECODE=1 every run
compiles them again. Each pytest run writes
its report to its own temporary directory (--parity-report-dir), and every serial and
xdist comparisons.csv is compared byte for byte with the first serial one (docs/design.md:
same seed, data and versions give a byte-identical comparisons.csv).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GATE = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]  # plain `pytest`: the testpaths


def _run(cmd, env) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    return time.perf_counter() - t0, proc.returncode, tail[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs of each command (default 3)")
    p.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (default 2)")
    p.add_argument(
        "--dist",
        choices=("loadfile", "load"),
        default="loadfile",
        help="pytest-xdist's distribution (default loadfile: each test file on one worker, so "
        "a network's harness, its reference steps, truths and framework runs, is computed by "
        "one worker; load: test by test, each worker computing every harness it meets)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument(
        "--bytecode",
        choices=("cached", "env"),
        default="cached",
        help="cached: bytecode written and reused, as a user's second run (default); "
        "env: as the environment says (PYTHONDONTWRITEBYTECODE)",
    )
    args = p.parse_args(argv)
    if not os.environ.get("PARITY_MNIST"):
        print("note: PARITY_MNIST is not set; the gate will look for MNIST itself", file=sys.stderr)
    py = sys.executable
    env = dict(os.environ)
    if args.bytecode == "cached":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        with tempfile.TemporaryDirectory(prefix="gate_time_warm_") as warm:
            wall, rc, tail = _run([py, *GATE, "--parity-report-dir", warm + "/r"], env)
        print(f"warm-up (writes the bytecode, not timed): {wall:6.1f} s  rc={rc}  {tail}", flush=True)
    times = {"import": [], "serial": [], "xdist": []}
    csvs = {"serial": [], "xdist": []}
    failures = []
    with tempfile.TemporaryDirectory(prefix="gate_time_") as tmp:
        for r in range(args.runs):
            for name in ("import", "serial", "xdist"):
                if name == "import":
                    cmd = [py, "-c", "import torch, tensorflow"]
                else:
                    out = Path(tmp) / f"{name}{r}"
                    cmd = [py, *GATE, "--parity-report-dir", str(out)]
                    if name == "xdist":
                        cmd += ["-n", str(args.workers), "--dist", args.dist]
                wall, rc, tail = _run(cmd, env)
                times[name].append(wall)
                print(f"{name:<7} run {r + 1}: {wall:6.1f} s  rc={rc}  {tail}", flush=True)
                if rc != 0:
                    failures.append(f"{name} run {r + 1}: exit {rc}: {tail}")
                elif name != "import":
                    csvs[name].append(out / "comparisons.csv")
        first = csvs["serial"][0] if csvs["serial"] else None
        identical = {
            name: [bool(first and filecmp.cmp(first, f, shallow=False)) for f in files]
            for name, files in csvs.items()
        }
    med = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "runs": args.runs,
        "workers": args.workers,
        "dist": args.dist,
        "python": py,
        "bytecode": args.bytecode,
        "median_s": {k: round(v, 2) for k, v in med.items()},
        "all_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "ratio_to_import": {k: round(med[k] / med["import"], 2) for k in ("serial", "xdist")},
        "comparisons_csv_identical_to_first_serial": identical,
        "failures": failures,
    }
    print(f"\nimport torch, tensorflow: {med['import']:.1f} s (median of {args.runs})")
    for name in ("serial", "xdist"):
        label = "pytest" if name == "serial" else f"pytest -n {args.workers} --dist {args.dist}"
        print(
            f"{label:<14} {med[name]:6.1f} s = {result['ratio_to_import'][name]:.2f} x import;"
            f" comparisons.csv identical to the first serial run: {identical[name]}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if failures or not all(all(v) for v in identical.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

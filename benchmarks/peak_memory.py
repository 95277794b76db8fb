"""Peak resident memory and wall time of the three pytest commands of the Quick start.

    PARITY_MNIST=/path/to/mnist.npz .venv/bin/python benchmarks/peak_memory.py
        [--which report,gate,test] [--json PATH]

Runs each command as a child process, one after the other, exactly as ./parity runs it
(the same pytest arguments, read from the ./parity script's file lists):

  report   ./parity report   the parity checks and their evidence (10 test files)
  gate     pytest            plain pytest: pyproject's testpaths, the fast gate
  test     ./parity test     everything, slow checks included, --hypothesis-profile=thorough

and prints a table of its peak resident set size (the child's ru_maxrss from os.wait4, the
kernel's high-water mark of the pytest process: no sampling gaps) and its wall time.
Each run writes its report into a temporary folder (--parity-report-dir; --report-dir DIR
keeps them, with each run's pytest output in DIR/report.log, ...), so reports/latest is
left alone. A pytest exit status other than 0 is shown in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]


def _parity_report_files() -> list[str]:
    """The test files `./parity report` runs, read from the script itself (one list, which
    test_workflow.py holds equal to tox's report env)."""
    script = (ROOT / "parity").read_text(encoding="utf-8")
    block = script[script.index("    report)") : script.index("    test)")]
    return list(dict.fromkeys(re.findall(r"parity_tests/test_\w+\.py", block)))


REPORT_FILES = _parity_report_files()
COMMANDS = {
    "report": ("./parity report", REPORT_FILES),
    "gate": ("pytest", []),
    "test": (
        "./parity test",
        ["parity_tests", "-m", "slow or not slow", "--hypothesis-profile=thorough"],
    ),
}


def measure(name: str, report_dir: Path) -> dict:
    """Run one command; its peak RSS (GB, 1e9 bytes), wall time (s) and exit status."""
    cmd = [sys.executable, *PYTEST, *COMMANDS[name][1], "--parity-report-dir", str(report_dir)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.decode(errors="replace")
    report_dir.parent.mkdir(parents=True, exist_ok=True)
    (report_dir.parent / f"{name}.log").write_text(text)  # pytest's whole output
    for line in text.splitlines():  # pytest -ra's summary: which tests failed
        if line.startswith(("FAILED ", "ERROR ")):
            print(f"{name}: {line}", file=sys.stderr)
    tail = text.strip().splitlines()[-1:] or [""]
    return {
        "command": COMMANDS[name][0],
        "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,  # Linux: ru_maxrss is in KiB
        "wall_s": wall,
        "exit": proc.returncode,
        "last_line": tail[0],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--which",
        default="report,gate,test",
        help="comma-separated commands among report, gate, test (default all three)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="keep each run's report in DIR/report, DIR/gate, DIR/test (default: a temporary "
        "folder, removed)",
    )
    args = p.parse_args(argv)
    names = [n.strip() for n in args.which.split(",") if n.strip()]
    bad = [n for n in names if n not in COMMANDS]
    if bad or not names:
        p.error(f"--which: unknown {bad}; choose among {', '.join(COMMANDS)}")
    if not os.environ.get("PARITY_MNIST"):
        print("note: PARITY_MNIST is not set; the runs look for MNIST themselves", file=sys.stderr)
    results = {}
    with tempfile.TemporaryDirectory(prefix="peak_memory_") as tmp:
        for name in names:
            results[name] = measure(name, (args.report_dir or Path(tmp)) / name)
            r = results[name]
            print(
                f"{name}: {r['peak_rss_gb']:.2f} GB, {r['wall_s']:.0f} s, exit {r['exit']}: "
                f"{r['last_line']}",
                file=sys.stderr,
            )
    print(f"{'command':<16} {'peak RSS':>9} {'wall':>8} {'exit':>5}")
    for r in results.values():
        print(f"{r['command']:<16} {r['peak_rss_gb']:>6.2f} GB {r['wall_s']:>6.0f} s {r['exit']:>5}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["exit"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

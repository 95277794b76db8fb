"""`python -m reports approve RUN_DIR BASELINE_DIR`: make a run the new baseline.

After an intended change (a framework upgrade, a fixed derivation) the run's report becomes
the baseline the gate compares with. approve prints what changes against the previous
baseline (environment, checks added and removed, statuses changed, budgets moved, and the
gate's verdict) and then replaces the report files in BASELINE_DIR with copies of RUN_DIR's,
atomically (reports.writer.replace_folder): only the files the suite wrote there are
replaced, anything else in BASELINE_DIR (a README.md) is kept, and only RUN_DIR's own report
files (those its marker lists, plain files, never a symlink's target) are copied.

Refused (ValueError, exit 2), with nothing written:
- a run that is not complete (partial, interrupted, or recording no completeness), or that
  holds no comparisons: a baseline must hold every check;
- a run of another experiment than the previous baseline (seed, images, init, reduction,
  data, implementation, lr): approve into a new or empty folder to start another one;
- a BASELINE_DIR this suite did not write (reports.writer.check_report_dir: only a missing
  path, an empty folder or a folder holding the suite's marker is ever written), or one
  that overlaps RUN_DIR;
- a report file of RUN_DIR that is a symlink.

A baseline that cannot be written (disk full) is an OSError: the CLI says so in one line,
exit 2, and the previous baseline is kept.

The copy holds the run's report files, not its regression.md (the run's verdict against
the previous baseline says nothing about the new one).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from reports.diff import _index, diff_headline, diff_reports, environment_changes, experiment_mismatches
from reports.escape import terminal_text
from reports.fields import number_text
from reports.writer import (
    MARKER,
    STANDARD_FILES,
    check_report_dir,
    load_report,
    read_report_file,
    replace_folder,
    suite_files,
)

NOT_COPIED = (MARKER, "regression.md")  # the marker is written by replace_folder
BUDGETS_SHOWN = 10  # budgets moved: this many listed, largest move first


def _run(run_dir) -> tuple[pd.DataFrame, dict]:
    df, meta = load_report(run_dir)
    if df.empty:
        raise ValueError(f"{run_dir} holds no comparisons: it cannot be a baseline")
    c = meta.get("completeness")
    status = str(c["status"]) if isinstance(c, dict) and c.get("status") else None
    if status != "complete":
        detail = f" ({c.get('detail')})" if isinstance(c, dict) and c.get("detail") else ""
        article = "an" if status and status[0] in "aeiou" else "a"
        why = (
            f"is {article} {status} run{detail}" if status else "does not record that it ran completely"
        )
        raise ValueError(
            f"{run_dir} {why}: a baseline must hold every check; run the whole parity "
            "suite (./parity report) and approve that report"
        )
    return df, meta


def _previous(baseline_dir: Path) -> tuple[pd.DataFrame, dict] | None:
    """The baseline being replaced, or None when there is none yet (missing or empty)."""
    if not (baseline_dir / "comparisons.csv").exists():
        return None
    return load_report(baseline_dir)


def _key_text(k: tuple) -> str:
    check, tensor, mode, against, dtype, _impl = k
    return f"{check} ({tensor}, {mode}, {against or '-'}, {dtype or '-'})"


def _moved(before: float, after: float) -> float:
    """How far a budget moved, as |log ratio| (0 -> x counts as the largest moves)."""
    if math.isnan(before) or math.isnan(after):
        return math.inf
    tiny = 1e-300
    return abs(math.log(max(after, tiny) / max(before, tiny)))


def changes(base_df, base_meta, run_df, run_meta) -> list[str]:
    """What approving the run changes in the baseline, as terminal lines."""
    base, run = _index(base_df), _index(run_df)
    lines = [f"environment changed: {c}" for c in environment_changes(base_meta, run_meta)]
    added = sorted(set(run) - set(base))
    removed = sorted(set(base) - set(run))
    both = sorted(set(base) & set(run))
    status = [k for k in both if base[k][1] != run[k][1]]
    moved = [
        k
        for k in both
        if base[k][1] == run[k][1]
        and not (base[k][2] == run[k][2] or (math.isnan(base[k][2]) and math.isnan(run[k][2])))
    ]
    for title, keys in (("checks added", added), ("checks removed", removed)):
        lines.append(f"{title}: {len(keys)}")
        lines += [f"  {_key_text(k)}" for k in keys]
    lines.append(f"status changed: {len(status)}")
    lines += [f"  {_key_text(k)}: {base[k][1]} -> {run[k][1]}" for k in status]
    moved.sort(key=lambda k: -_moved(base[k][2], run[k][2]))
    lines.append(
        f"budgets moved: {len(moved)} of {len(both)} checks"
        + (f" (largest {BUDGETS_SHOWN} first)" if len(moved) > BUDGETS_SHOWN else "")
    )
    for k in moved[:BUDGETS_SHOWN]:
        b0, b1 = base[k][2], run[k][2]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(np.divide(b1, b0))
        lines.append(f"  {_key_text(k)}: {number_text(b0)} -> {number_text(b1)} (x{number_text(ratio)})")
    lines.append(
        "the gate against the previous baseline says: " + diff_headline(diff_reports(base_df, run_df))
    )
    return [terminal_text(line) for line in lines]


def _run_files(run_dir: Path) -> dict[str, bytes]:
    """RUN_DIR's report files (name -> bytes) to copy: those its marker lists (a marker
    without a list, or none: the standard report names present), less NOT_COPIED. Only
    plain files: a symlink among them is refused, never followed. Anything else in RUN_DIR
    (a user's notes, plots/) is not the run's report and is left out."""
    names = suite_files(run_dir)
    if names is None:
        names = STANDARD_FILES
    files = {}
    for name in sorted(names):
        if name in NOT_COPIED:
            continue
        data = read_report_file(run_dir, name)
        if data is not None:
            files[name] = data
    return files


def approve(run_dir, baseline_dir, dry_run: bool = False) -> list[str]:
    """Check, describe and (unless dry_run) do the approval; the lines to print.
    ValueError (nothing written) when the run or the baseline folder is refused."""
    run_dir, baseline_dir = Path(run_dir), Path(baseline_dir)
    run_df, run_meta = _run(run_dir)
    files = _run_files(run_dir)
    out = check_report_dir(baseline_dir, files)
    a, b = run_dir.resolve(), out.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise ValueError(f"{run_dir} and {baseline_dir} are or contain one another: nothing to approve")
    previous = _previous(out)
    if previous is None:
        lines = [f"{baseline_dir} holds no baseline yet: the run's {len(run_df)} comparisons become it"]
    else:
        base_df, base_meta = previous
        mismatches = experiment_mismatches(base_meta, run_meta)
        if mismatches:
            raise ValueError(
                f"{run_dir} is a different experiment from the baseline {baseline_dir}:\n  "
                + "\n  ".join(mismatches)
                + "\napprove it into a new or empty folder to start a baseline of that experiment"
            )
        lines = [
            f"approving {run_dir} ({len(run_df)} comparisons) over the baseline {baseline_dir} "
            f"({len(base_df)} comparisons):",
            *changes(base_df, base_meta, run_df, run_meta),
        ]
    if dry_run:
        return [*lines, f"dry run: {baseline_dir} is unchanged"]
    replace_folder(out, files)
    return [*lines, f"{baseline_dir} now holds the run's report ({', '.join(files)})"]


def add_parser(sub) -> None:
    """The `approve` subcommand of python -m reports (reports.cli)."""
    p = sub.add_parser(
        "approve",
        help="make a complete run the new baseline, printing what changes",
        description="Replace BASELINE_DIR with a copy of the report RUN_DIR after an "
        "intended change, printing what changes against the previous baseline (checks "
        "added and removed, statuses changed, budgets moved, the gate's verdict). Refused "
        "(exit 2, nothing written): a partial or interrupted run, a run of another experiment "
        "than the previous baseline, a BASELINE_DIR holding files this suite did not write.",
    )
    p.add_argument("run", help="the report directory of the run to approve, e.g. reports/latest")
    p.add_argument("baseline", help="the baseline directory to (re)place")
    p.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")


def main(args) -> int:
    print("\n".join(approve(args.run, args.baseline, dry_run=args.dry_run)))
    return 0

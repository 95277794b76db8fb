"""What a run leaves behind: the report folder written at session end and the terminal's
parity sections.

The report (reports.write_report: comparisons.csv, run.json, summary.md/summary.html,
audit.md, and regression.md when a baseline was given) is written only into a folder the
suite wrote before (see reports.writer), and not at all with --parity-no-report, without
records, after an interrupted run or when it cannot be written (disk full: the previous
report is kept); the terminal's last line says which. A job summary
($GITHUB_STEP_SUMMARY) that cannot be appended to is one line, not a traceback. The terminal
summary ends the output: the worst comparisons, the verdict (reports.headline), the
regression gate and the completeness line (completeness.py).
"""

import os
import sys
from pathlib import Path

import pytest

from parity_tests.gate import gate_state
from parity_tests.records import run_meta
from parity_tests.settings import SETTINGS, STATE
from reports.escape import terminal_text

# What went wrong with a report that was written (the job summary could not be appended
# to): shown before the completeness line.
REPORT_NOTES = pytest.StashKey[list]()


def write_run_report(config) -> None:
    """The report into --parity-report-dir, or why none was written (state.no_report_why)."""
    from parity_tests.audit_hook import audit_files
    from reports import write_report
    from reports.writer import StepSummaryError

    s, state = config.stash[SETTINGS], config.stash[STATE]
    if s.report_dir is None:
        state.no_report_why = "--parity-no-report"
    elif not state.records:
        state.no_report_why = "no comparisons were recorded"
    elif state.completeness["status"] == "interrupted":
        state.no_report_why = f"the run was {state.completeness['detail']}"
    else:
        meta = run_meta(config)
        extra = audit_files(state.records, meta, s.network)  # the run's network, not re-parsed
        if gate_state(config).markdown:  # the gate's verdict, whenever a baseline was given
            extra["regression.md"] = gate_state(config).markdown
        try:
            write_report(state.records, s.report_dir, meta, extra_files=extra)
            state.report = s.report_dir
        except StepSummaryError as exc:  # the report is there; the job summary is not
            state.report = s.report_dir
            config.stash.setdefault(REPORT_NOTES, []).append(str(exc))
        except (OSError, ValueError) as exc:  # disk full; a folder changed since start-up
            state.no_report_why = f"the report could not be written: {exc}"
    note = os.environ.get("PARITY_REPORT_NOTE")  # ./parity report: which report to show
    if note:
        Path(note).write_text(str(state.report or ""), encoding="utf-8")


def append_step_summary(text: str) -> None:
    """GitHub Actions' job summary gets regression.md after the report's summary.md."""
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary and text:
        try:
            with open(step_summary, "a", encoding="utf-8") as fh:
                fh.write("\n" + text)
        except OSError as exc:  # one line, not a traceback that hides the verdict
            why = terminal_text(exc.strerror or exc)
            sys.stderr.write(
                f"parity: the regression gate's verdict could not be appended to "
                f"$GITHUB_STEP_SUMMARY ({terminal_text(step_summary)}): {why}\n"
            )


def terminal_summary(tr, config) -> None:
    """The parity sections, after pytest's own summary: the worst comparisons, where the
    report's files are, the verdict, the gate's verdict and the completeness line, last."""
    from reports import format_diff, headline, is_regression, records_frame, terminal_lines
    from reports.tables import SYNTHETIC_NOTE, comparisons_text, is_synthetic
    from reports.writer import suite_files

    s, state = config.stash[SETTINGS], config.stash[STATE]
    df = records_frame(state.records) if state.records else None
    if df is not None:
        tr.section("parity: worst comparisons")
        for line in terminal_lines(df, n=10):
            tr.write_line(line)
    if state.report:  # where each file is, before the verdict (which ends the output)
        files = sorted(suite_files(Path(state.report)) or ())  # not a user's own files there
        tr.write_line(
            terminal_text(
                f"report files in {state.report}: {', '.join(files)} "
                "(summary.html: open it in a browser)"
            )
        )
    if df is not None:
        tr.section("parity: verdict")
        meta = run_meta(config)
        for line in headline(df, meta["tensor_order"], meta["data_source"]):
            fine = line.startswith("verdict: every comparison passed")
            synthetic = fine and line.endswith(SYNTHETIC_NOTE)  # green only on MNIST
            tr.write_line(
                line,
                bold=line.startswith("verdict:"),
                green=fine and not synthetic,
                yellow=synthetic,
                red=not fine,
            )
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
    for note in config.stash.get(REPORT_NOTES, []):
        tr.write_line(terminal_text(f"parity: {note}"), yellow=True)
    if not state.completeness:
        return
    status = state.completeness["status"]
    line = f"parity run {status.upper()}: {state.completeness['detail']}"
    if state.data is not None and is_synthetic(state.data.source):
        line = f"parity run {status.upper()} {SYNTHETIC_NOTE}: {state.completeness['detail']}"
    if state.report:
        # Counted as the verdict counts them: a tensor not provided is no comparison.
        line += f"; {comparisons_text(df)}; report: {state.report}/summary.md"
    else:
        kept = f"; {s.report_dir} is untouched" if s.report_dir else ""
        line += f"; no report written ({state.no_report_why}){kept}"
    tr.write_line(terminal_text(line), red=status != "complete", bold=True)

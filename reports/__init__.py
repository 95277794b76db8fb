"""Parity records -> tables, pictures and report files. Imports numpy, pandas, matplotlib only."""

from reports.diff import (
    diff_reports,
    environment_changes,
    experiment_mismatches,
    format_diff,
    is_regression,
)
from reports.fields import RECORD_FIELDS, normalise_record
from reports.merge import merge_reports
from reports.render import summary_html, summary_markdown
from reports.tables import fill_outliers, headline, records_frame, summary_frame, terminal_lines
from reports.writer import check_report_dir, load_report, write_report

__all__ = [
    "RECORD_FIELDS", "check_report_dir", "diff_reports", "environment_changes",
    "experiment_mismatches", "fill_outliers", "format_diff", "headline", "is_regression",
    "load_report", "merge_reports", "normalise_record", "records_frame", "summary_frame",
    "summary_html", "summary_markdown", "terminal_lines", "write_report",
]  # fmt: skip

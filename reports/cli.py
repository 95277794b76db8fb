"""`python -m reports show DIR` and `python -m reports diff BASELINE CURRENT`."""

from __future__ import annotations

import argparse
import sys

from reports.diff import diff_reports, format_diff, is_regression
from reports.render import display_frame, status_counts
from reports.tables import summary_frame, terminal_lines
from reports.writer import load_report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Read parity report directories written by the test suite.",
        epilog="Exit status: 0 fine, 1 regression (diff), 2 unreadable input or bad usage.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print the worst comparisons and the summary table")
    show.add_argument("dir", help="a report directory, e.g. reports/latest")
    show.add_argument("-n", type=int, default=10, help="how many worst comparisons to list (10)")
    diff = sub.add_parser(
        "diff",
        help="compare a run with a baseline; exit 1 on a regression",
        description="Regressions: a check that passed and no longer does, a check that "
        "vanished, or a budget that grew more than FACTOR times max(baseline, FLOOR).",
    )
    diff.add_argument("baseline", help="the baseline report directory")
    diff.add_argument("current", help="the report directory to judge")
    diff.add_argument("--factor", type=float, default=10.0, help="allowed budget growth (10)")
    diff.add_argument(
        "--floor",
        type=float,
        default=1e-3,
        help="smallest baseline budget used as base (1e-3)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "show":
            df, meta = load_report(args.dir)
            print(f"{args.dir}: {status_counts(df)}")
            if meta.get("versions"):
                print(f"versions: {meta['versions']}")
            print("\nWorst comparisons:")
            print("\n".join(terminal_lines(df, args.n)) or "(none)")
            summary = summary_frame(df)
            if not summary.empty:
                print()
                print(
                    display_frame(summary).to_markdown(
                        index=False, tablefmt="simple", disable_numparse=True
                    )
                )
            return 0
        baseline, _ = load_report(args.baseline)
        current, _ = load_report(args.current)
        diff = diff_reports(baseline, current, factor=args.factor, floor=args.floor)
    except ValueError as exc:
        print(f"python -m reports: error: {exc}", file=sys.stderr)
        return 2
    print(format_diff(diff))
    return 1 if is_regression(diff) else 0

"""`python -m reports show DIR`, `python -m reports diff BASELINE CURRENT` and
`python -m reports approve RUN_DIR BASELINE_DIR` (reports/approve.py)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from reports import approve
from reports import merge as merge_cmd
from reports.diff import (
    DEFAULT_FACTOR,
    DEFAULT_WITHIN,
    diff_reports,
    environment_changes,
    experiment_mismatches,
    format_diff,
    gate_verdict,
    is_regression,
)
from reports.escape import terminal_text
from reports.render import display_frame, status_counts
from reports.tables import (
    SYNTHETIC_NOTE,
    detection_frame,
    headline,
    is_synthetic,
    summary_frame,
    tensor_order,
    terminal_lines,
)
from reports.writer import ReportWriteError, StepSummaryError, load_report

COMPLETENESS = ("complete", "partial", "interrupted")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _factor(text: str) -> float:
    x = _number(text)
    if not math.isfinite(x) or not x > 1:
        raise argparse.ArgumentTypeError(f"must be a finite number > 1, got {text!r}")
    return x


def _floor(text: str) -> float:
    x = _number(text)
    if not math.isfinite(x) or not x >= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return x


def _within(text: str) -> float:
    x = _number(text)
    if not 0 <= x <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in 0..1, got {text!r}")
    return x


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return n


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Read parity report directories written by the test suite.",
        epilog="Exit status: 0 fine, 1 regression (diff; show of a report whose regression "
        "gate found one), 2 unreadable input, a refused "
        "approval or merge, a report that could not be written (disk full) or bad usage.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print the verdict, the worst comparisons and the summary table")
    show.add_argument("dir", help="a report directory, e.g. reports/latest")
    show.add_argument("-n", type=_count, default=10, help="how many worst comparisons to list (10)")
    diff = sub.add_parser(
        "diff",
        help="compare a run with a baseline; exit 1 on a regression",
        description="Regressions: a check that passed and no longer does, a check that "
        "vanished, a side's precision (impl_bits, against_bits) that dropped more than the "
        "precision check allows, or a budget that grew more than FACTOR times max(baseline, "
        "FLOOR) to past WITHIN of its allowance (growth that ends at or below WITHIN is "
        "listed, 'grew within the error model', and is no regression). "
        "Both runs must be the same experiment (seed, images, init, reduction, data, "
        "implementation, lr), else exit 2; an interrupted current run is refused (exit 2), "
        "a partial one is compared on the checks it ran.",
    )
    diff.add_argument("baseline", help="the baseline report directory")
    diff.add_argument("current", help="the report directory to judge")
    diff.add_argument(
        "--factor",
        type=_factor,
        default=DEFAULT_FACTOR,
        help=f"allowed budget growth, > 1 ({DEFAULT_FACTOR:g})",
    )
    diff.add_argument(
        "--floor",
        type=_floor,
        default=None,
        help="smallest baseline budget used as base (default 1 / FACTOR**2: a budget that "
        "stays below 1 / FACTOR never counts as grown)",
    )
    diff.add_argument(
        "--within",
        type=_within,
        default=DEFAULT_WITHIN,
        help="growth that ends at or below this fraction of the allowance is listed but is "
        f"no regression, 0..1 ({DEFAULT_WITHIN:g}; 0: every growth regresses)",
    )
    approve.add_parser(sub)
    merge_cmd.add_parser(sub)
    return parser


def _completeness(meta: dict, where: str) -> tuple[str, str]:
    """(status, detail) of a run's meta; ("", "") when it did not record one."""
    c = meta.get("completeness")
    if c is None:
        return "", ""
    status = c.get("status") if isinstance(c, dict) else None
    if status not in COMPLETENESS:
        raise ValueError(
            f"{where}/run.json: completeness {c!r} has no status among {', '.join(COMPLETENESS)}"
        )
    return status, str(c.get("detail", ""))


def _show(args) -> int:
    df, meta = load_report(args.dir)
    print("\n".join(headline(df, tensor_order(meta), meta.get("data_source", ""))))
    regression = _gate(Path(args.dir))
    print()
    print(terminal_text(f"{args.dir}: {status_counts(df)}"))
    c = meta.get("completeness")
    if isinstance(c, dict) and c.get("status"):
        detail = f" ({c['detail']})" if c.get("detail") else ""
        note = f" {SYNTHETIC_NOTE}" if is_synthetic(meta.get("data_source")) else ""
        print(terminal_text(f"run: {c['status']}{note}{detail}"))
    if meta.get("versions"):
        print(terminal_text(f"versions: {meta['versions']}"))
    print("\nWorst comparisons:")
    print("\n".join(terminal_lines(df, args.n)) or "(none)")
    # Detection rows (variants, mutants) in their own table, with their own measure.
    for title, table in (
        ("", summary_frame(df[df["mode"] != "detection"])),
        ("Detections (margin > 1: caught):", detection_frame(df)),
    ):
        if not table.empty:
            print(f"\n{title}".rstrip())
            shown = display_frame(table).map(terminal_text)
            print(shown.to_markdown(index=False, tablefmt="simple", disable_numparse=True))
    return 1 if regression else 0


def _gate(folder: Path) -> bool:
    """The regression gate's verdict when the folder holds regression.md (a run gated with
    --parity-baseline; approve never copies it into a baseline), printed under the run's
    verdict; True on a regression, which show exits 1 on, as the gate did."""
    where = folder / "regression.md"
    if not where.is_file():
        return False
    try:
        regression, text = gate_verdict(where.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{where}: not a regression gate's verdict ({exc})") from None
    print(terminal_text(f"regression gate: {text}; {where}"))
    return regression


def _diff(args) -> int:
    if Path(args.baseline).resolve() == Path(args.current).resolve():
        # Through a respelled path or a symlink too: a report never regresses against itself.
        raise ValueError(
            f"{args.current} is the baseline itself ({Path(args.baseline).resolve()}): "
            "compare a new run with it"
        )
    baseline, base_meta = load_report(args.baseline)
    current, cur_meta = load_report(args.current)
    problems = []
    if baseline.empty:
        problems.append(f"baseline {args.baseline} holds no comparisons")
    status, detail = _completeness(cur_meta, args.current)
    if status == "interrupted":
        problems.append(
            f"{args.current} is an interrupted run ({detail}): it cannot be judged against a baseline"
        )
    mismatches = experiment_mismatches(base_meta, cur_meta)
    if mismatches:
        problems.append(
            f"{args.current} is a different experiment from the baseline {args.baseline}:\n  "
            + "\n  ".join(mismatches)
        )
    if problems:
        raise ValueError("\n".join(problems))
    changes = environment_changes(base_meta, cur_meta)
    if changes:
        print(terminal_text("environment changed: " + "; ".join(changes)) + "\n")
    diff = diff_reports(
        baseline,
        current,
        factor=args.factor,
        floor=args.floor,
        partial=status == "partial",
        within=args.within,
    )
    print(format_diff(diff))
    return 1 if is_regression(diff) else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "approve":
            return approve.main(args)
        if args.command == "merge":
            return merge_cmd.main(args)
        return _show(args) if args.command == "show" else _diff(args)
    except ValueError as exc:
        text = "\n".join(map(terminal_text, str(exc).split("\n")))
        print(f"python -m reports: error: {text}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head`: reports/__main__.py makes it quiet
        raise
    except OSError as exc:  # a file that cannot be read or written (disk full): one line
        print(f"python -m reports: error: {terminal_text(_io_error(exc))}", file=sys.stderr)
        return 2


def _io_error(exc: OSError) -> str:
    if isinstance(exc, (ReportWriteError, StepSummaryError)):
        return str(exc)
    why = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {why}" if exc.filename else why

"""Write a report directory atomically; read one back."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from reports.escape import csv_neutralise, csv_restore
from reports.fields import (
    BOOL_FIELDS,
    MISMATCH_KINDS,
    NUMERIC_FIELDS,
    OPTIONAL_FIELDS,
    RECORD_FIELDS,
    RENAMED_FIELDS,
    STATUSES,
)
from reports.render import summary_html, summary_markdown
from reports.tables import fill_outliers, records_frame, typed_frame

REPORT_FILES = ("comparisons.csv", "summary.md", "summary.html", "run.json")
# Written into every report directory (first, into the temporary one): only a folder that
# holds it, or an empty one, is ever replaced or cleaned up by write_report.
MARKER = ".parity-report"
MARKER_TEXT = (
    "This folder was written by the article-cnn-parity suite (reports.write_report) "
    "and may be replaced by it.\n"
)
# A report written before the marker existed: only these plain files, comparisons.csv among them.
_UNMARKED_REPORT_FILES = frozenset({*REPORT_FILES, "audit.md"})
TEXT_FIELDS = tuple(f for f in RECORD_FIELDS if f not in NUMERIC_FIELDS)


def _float_text(x) -> str:
    # Shortest text that reads back as the same float: exact and deterministic.
    return repr(float(x))


def comparisons_csv(df: pd.DataFrame) -> str:
    df = df[RECORD_FIELDS].copy()
    for col in TEXT_FIELDS:  # no cell a spreadsheet would run as a formula
        df[col] = df[col].map(lambda v: csv_neutralise(v) if isinstance(v, str) else v)
    # csv (Python < 3.13) quotes a field holding \r only when \r is in the line terminator:
    # write with \r\n, so such fields are quoted, then end rows with \n. Quotes toggle
    # (a doubled "" toggles twice), so the even parts of a split on " are outside fields.
    text = df.to_csv(index=False, float_format=_float_text, lineterminator="\r\n")
    parts = text.split('"')
    parts[::2] = [part.replace("\r\n", "\n") for part in parts[::2]]
    return '"'.join(parts)


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (set, frozenset)):
        return sorted(x, key=str)
    return str(x)


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def _is_unmarked_report(d: Path) -> bool:
    entries = list(d.iterdir())
    names = {e.name for e in entries}
    return (
        "comparisons.csv" in names
        and names <= _UNMARKED_REPORT_FILES
        and all(e.is_file() and not e.is_symlink() for e in entries)
    )


def check_report_dir(path) -> Path:
    """The report directory `path` if write_report may (re)place it; ValueError if not.

    Fine: a missing path, an empty directory, a directory holding MARKER (a report this suite
    wrote), or a report written before the marker existed (only report files in it).
    Refused: a file, any other non-empty directory (a user's folder, a package, a git
    checkout), or a place whose nearest existing ancestor cannot be written.
    """
    out = Path(path)
    if out.name in ("", ".", ".."):
        out = out.resolve()  # "." has no name to put a temporary sibling next to
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ValueError(f"{out} is a file, not a report directory: refusing to replace it")
        if any(out.iterdir()) and not (out / MARKER).is_file() and not _is_unmarked_report(out):
            raise ValueError(
                f"refusing to replace {out}: it holds files this suite did not write (no "
                f"{MARKER} marker); choose an empty or new folder"
            )
    # The report is written next to `out` and renamed into place: its parent must be writable.
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot write the report {out}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the report {out}: {ancestor} is not writable")
    return out


def _remove_leftovers(out: Path) -> None:
    """Remove `.{out.name}.tmp-*` siblings a killed run left, only those holding MARKER
    (or empty); never any other file or folder."""
    prefix = f".{out.name}.tmp-"
    if not out.parent.is_dir():
        return
    for sibling in out.parent.iterdir():
        if not sibling.name.startswith(prefix) or sibling.is_symlink() or not sibling.is_dir():
            continue
        if (sibling / MARKER).is_file() or not any(sibling.iterdir()):
            shutil.rmtree(sibling, ignore_errors=True)


def replace_folder(out: Path, fill) -> None:
    """Build a folder in a temporary sibling (MARKER first, then `fill(tmp)`) and swap it in
    for `out` with two renames: a failure anywhere leaves `out` as it was. The caller has
    checked `out` with check_report_dir."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # The name matches the ".*tmp*" pattern in .gitignore.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = tmp.with_name(tmp.name + "-old")
    try:
        _write(tmp / MARKER, MARKER_TEXT)  # first: a killed run leaves a removable leftover
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a report is for reading
        fill(tmp)
        if out.exists():
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            if old.exists():
                os.rename(old, out)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_report(
    records,
    out_dir,
    meta: dict,
    extra_files: dict[str, str] | None = None,
    *,
    heat_map: bool = True,
) -> dict[str, Path]:
    """Write comparisons.csv, summary.md, summary.html, run.json and extra_files to out_dir.

    heat_map=False leaves the picture out of summary.html (drawing it is most of the cost
    of a small report).

    out_dir must pass check_report_dir: a folder this suite did not write is never replaced.
    Everything goes to a temporary sibling first (MARKER its first file) and is then
    swapped in, so a failure leaves the previous report as it was; marked temporaries a
    killed run left behind are removed first. Returns file name -> final path.
    """
    out = check_report_dir(out_dir)
    extra = dict(extra_files or {})
    for name in extra:
        if name in REPORT_FILES or Path(name).name != name or name.startswith("."):
            raise ValueError(
                f"extra_files: {name!r} must be a plain file name other than {REPORT_FILES}"
            )
    _remove_leftovers(out)

    df = fill_outliers(records_frame(records))
    summary = summary_markdown(df, meta)
    contents = {
        "comparisons.csv": comparisons_csv(df),
        "summary.md": summary,
        "summary.html": summary_html(df, meta, extra_sections=extra, heat_map=heat_map),
        "run.json": json.dumps(meta, sort_keys=True, indent=2, default=_json_default) + "\n",
        **extra,
    }

    def fill(tmp: Path) -> None:
        for name, text in contents.items():
            _write(tmp / name, text)

    replace_folder(out, fill)

    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(summary)
    return {name: out / name for name in contents}


def _read_rows(table: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows and each row's first line number; csv, not pd.read_csv: pandas
    silently pads a torn (short) row."""
    try:
        with open(table, encoding="utf-8-sig", newline="") as fh:  # -sig: a BOM is fine
            reader = csv.reader(fh)
            header = next(reader, [])
            rows, lines = [], []
            start = reader.line_num + 1
            for row in reader:
                rows.append(row)
                lines.append(start)
                start = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{table}: not a readable CSV ({exc})") from None
    return header, rows, lines


def _check_values(table: Path, raw: pd.DataFrame, lines: list[int]) -> None:
    """Refuse values no writer of this suite produces: ValueError naming line and column."""

    def refuse(i: int, col: str, what: str):
        raise ValueError(f"{table}: line {lines[i]}, column {col}: {what}")

    for col in sorted(NUMERIC_FIELDS):
        text = raw[col].astype(str).str.strip()
        bad = (text != "") & (text.str.lower() != "nan") & pd.to_numeric(text, errors="coerce").isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            refuse(i, col, f"holds a non-number, {text.iat[i]!r}")
    for col in sorted(BOOL_FIELDS):
        for i, v in enumerate(raw[col]):
            if v not in ("True", "False"):
                refuse(i, col, f"{v!r} is neither True nor False")
    for i, kind in enumerate(raw["mismatch_kind"]):
        if kind not in ("", *MISMATCH_KINDS):
            refuse(i, "mismatch_kind", f"{kind!r} is not one of {', '.join(MISMATCH_KINDS)} or empty")
    budgets = pd.to_numeric(raw["budget_used"].astype(str).str.strip(), errors="coerce")
    for i, (status, passed, vacuous, mode, budget) in enumerate(
        zip(raw["status"], raw["passed"], raw["vacuous"], raw["mode"], budgets)
    ):
        if status not in STATUSES:
            refuse(i, "status", f"{status!r} is not one of {', '.join(STATUSES)}")
        if (passed == "True") != (status == "pass"):
            refuse(i, "passed", f"{passed} contradicts status {status!r} (True exactly for pass)")
        if budget < 0:
            refuse(i, "budget_used", f"{budget!r} is negative")
        # Detection records (parity_tests/detection.py) store tolerance / error, not
        # error / tolerance: any value >= 0 is theirs. Zeros expected (vacuous pass): both
        # sides lie within the tolerance of zero, so the error within twice it.
        limit = 2.0 if vacuous == "True" else 1.0
        if status == "pass" and mode != "detection" and not budget <= limit and not math.isnan(budget):
            refuse(i, "budget_used", f"{budget!r} is over {limit:g} in a pass row")


def _renamed(table: Path, raw: pd.DataFrame) -> pd.DataFrame:
    """An older comparisons.csv in today's names: the one place old names are read.

    Columns of RENAMED_FIELDS (actual_* / expected_*) get their new names (against_* /
    impl_*), and in such a file closer_to_truth "actual" becomes the row's `against` and
    "expected" becomes "impl". A header with both an old and its new name is refused.
    """
    old = [c for c in RENAMED_FIELDS if c in raw.columns]
    if not old:
        return raw
    for col in old:
        if RENAMED_FIELDS[col] in raw.columns:
            raise ValueError(
                f"{table}: line 1, column {col}: an old name of {RENAMED_FIELDS[col]}, "
                "which the header also holds"
            )
    raw = raw.rename(columns={c: RENAMED_FIELDS[c] for c in old})
    if "closer_to_truth" in raw.columns and "against" in raw.columns:
        closer = raw["closer_to_truth"]
        other = raw["against"].where(raw["against"] != "", "against")
        raw["closer_to_truth"] = closer.where(closer != "actual", other).where(
            closer != "expected", "impl"
        )
    return raw


def load_report(report_dir) -> tuple[pd.DataFrame, dict]:
    """Read a report directory back: (records frame, meta). ValueError names the bad file,
    and for a bad value in comparisons.csv its line and column.

    A comparisons.csv with a header and no rows gives an empty frame: whether that is
    acceptable is the caller's decision. Columns of OPTIONAL_FIELDS (added after the first
    reports were written) may be missing: they read as "". A comparisons.csv written before
    the fields named whose is whose (actual_at_worst, ...; fields.RENAMED_FIELDS) reads
    in today's names.
    """
    d = Path(report_dir)
    if d.exists() and not d.is_dir():
        raise ValueError(f"{d} is a file, not a report directory")
    if not d.is_dir():
        raise ValueError(f"{d}: not a report directory (no such directory)")
    table = d / "comparisons.csv"
    if not table.is_file():
        raise ValueError(f"{table}: missing, so {d} is not a report directory")
    if table.stat().st_size == 0:
        raise ValueError(f"{table}: empty file")
    header, rows, lines = _read_rows(table)
    seen = set()
    for col in header:
        if col in seen:
            raise ValueError(f"{table}: line 1, column {col}: named twice in the header")
        seen.add(col)
    for row, line in zip(rows, lines):
        if len(row) != len(header):
            raise ValueError(f"{table}: line {line} has {len(row)} fields, the header {len(header)}")
    raw = _renamed(table, pd.DataFrame(rows, columns=header, dtype=object))
    missing = [c for c in RECORD_FIELDS if c not in raw.columns and c not in OPTIONAL_FIELDS]
    if missing:
        raise ValueError(f"{table}: missing column(s) {', '.join(missing)}")
    for col in OPTIONAL_FIELDS:  # a report written before the field existed
        if col not in raw.columns:
            raw[col] = ""
    raw = raw[RECORD_FIELDS].copy()
    for col in TEXT_FIELDS:  # undo the writer's formula guard: exactly one quote
        raw[col] = raw[col].map(csv_restore)
    _check_values(table, raw, lines)
    meta = {}
    run = d / "run.json"
    if run.is_file():
        try:
            meta = json.loads(run.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{run}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            # Every reader does meta.get(...): a list, string or number must not reach them.
            raise ValueError(f"{run}: expected a JSON object of run facts, got {type(meta).__name__}")
    return typed_frame(raw), meta

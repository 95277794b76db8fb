"""Write a report directory atomically; read one back."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

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
# Written into every report directory (first, into the temporary one), listing the files
# the suite wrote there: only those are ever replaced or removed; anything else in the
# folder (a user's NOTES.md, plots/) is kept as it is. A folder without it is replaced only
# when it is empty.
MARKER = ".parity-report"
MARKER_TEXT = (
    "This folder was written by the article-cnn-parity suite (reports.write_report) "
    "and may be replaced by it.\n"
)
MARKER_FILES = "Files the suite wrote here (the next report replaces them; anything else is kept):\n"
# What a marker without a file list (written before the list existed) stands for: the
# standard names of the files a report of the suite holds; anything else is kept.
STANDARD_FILES = frozenset({*REPORT_FILES, "audit.md", "regression.md", "runs.md"})
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


class ReportWriteError(OSError):
    """The report could not be written (disk full, a folder made read-only meanwhile): the
    previous report, and everything else in the folder, is as it was."""


class StepSummaryError(OSError):
    """The report was written, but $GITHUB_STEP_SUMMARY could not be appended to."""


def _write(path: Path, data: str | bytes) -> None:
    if isinstance(data, bytes):
        with open(path, "wb") as fh:
            fh.write(data)
        return
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(data)


def _io_text(exc: OSError) -> str:
    """An OSError in one line: its reason, and the file when it names one."""
    why = exc.strerror or str(exc)
    return f"{why} ({exc.filename})" if exc.filename else why


def marker_text(names) -> str:
    """The marker of a folder holding the suite's files `names`."""
    return MARKER_TEXT + MARKER_FILES + "".join(f"  {n}\n" for n in sorted(names))


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..", MARKER) and Path(name).name == name and "\\" not in name


def suite_files(d: Path) -> frozenset[str] | None:
    """The names of the files the suite wrote in `d`, as its marker lists them (a marker
    without a list: STANDARD_FILES); None when `d` holds no marker (a regular file)."""
    marker = d / MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        text = marker.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset(STANDARD_FILES)
    if MARKER_FILES not in text:
        return frozenset(STANDARD_FILES)  # an older marker: the standard names only
    listed = text.split(MARKER_FILES, 1)[1].splitlines()
    return frozenset(n.strip() for n in listed if _plain_name(n.strip()))


def _ours(entry: Path, names) -> bool:
    """A listed name that is a file (or a link, which removing does not follow): a folder of
    that name is someone else's."""
    return entry.name in names and (entry.is_symlink() or entry.is_file())


def report_file(d, name: str) -> Path | None:
    """`d/name` when it is a regular file, None when it is missing; ValueError when it is a
    symlink or anything else (a report's own files are plain files: never followed)."""
    p = Path(d) / name
    if p.is_symlink():
        raise ValueError(f"{p} is a symlink: a report's files are plain files; refusing to read it")
    if not p.exists():
        return None
    if not p.is_file():
        raise ValueError(f"{p} is not a regular file: refusing to read it")
    return p


def read_report_file(d, name: str) -> bytes | None:
    """The bytes of report_file(d, name) (None when missing), opened without following a
    symlink put there meanwhile."""
    p = report_file(d, name)
    if p is None:
        return None
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ValueError(f"{p} is not a regular file: refusing to read it")
        return fh.read()


def _target(path) -> Path:
    """Where the report goes: a symlinked folder is written through to its target (the
    link stays as it is); "." and ".." by their full path (a temporary sibling needs a name)."""
    out = Path(path)
    if out.is_symlink():
        return Path(os.path.realpath(out))
    if out.name in ("", ".", ".."):
        return out.resolve()
    return out


def check_report_dir(path, names=()) -> Path:
    """The report directory `path` if the suite may write its files `names` there;
    ValueError if not. Returns `path` (a symlink: its target is written, see _target).

    Fine: a missing path, an empty directory, or a directory holding MARKER (the suite
    wrote it) where no file the marker does not list has one of `names` (those are replaced;
    every other file is kept). Refused: a file; a non-empty directory without the marker (a
    user's folder, a package, a git checkout, and also a report written before the marker
    existed: its comparisons.csv cannot be told from a user's own); a place whose nearest
    existing ancestor cannot be written.
    """
    out = _target(path)
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{out} is a file, not a report directory: refusing to replace it")
        entries = sorted(out.iterdir())
        ours = suite_files(out)
        if entries and ours is None:
            named = [e.name for e in entries if e.name in STANDARD_FILES]
            if named:  # a user's own, or a report from before the marker: not told apart
                raise ValueError(
                    f"refusing to replace {out}: it holds {', '.join(named)}, which this suite "
                    f"did not mark as its own (no {MARKER} marker: a user's files, or a report "
                    "written before the marker existed, to delete by hand); choose an empty "
                    "or new folder"
                )
            raise ValueError(
                f"refusing to replace {out}: it holds files this suite did not write (no "
                f"{MARKER} marker); choose an empty or new folder"
            )
        theirs = [e.name for e in entries if e.name in names and not _ours(e, ours or ())]
        if theirs:
            raise ValueError(
                f"refusing to replace {', '.join(theirs)} in {out}: {MARKER} does not list "
                "it as the suite's; move it away or choose another folder"
            )
    # The report is written next to `out` and renamed into place: its parent must be writable.
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot write the report {out}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the report {out}: {ancestor} is not writable")
    return Path(path)


def _remove_ours(d: Path) -> bool:
    """Remove the files d's marker lists, then the marker and `d` itself if nothing else is
    left (a user's file moved there by a swap that was cut short stays, with its folder).
    Tolerant: what another process removed first is fine. True when `d` is gone."""
    names = suite_files(d) or ()
    try:
        for e in list(d.iterdir()):
            if _ours(e, names):
                with contextlib.suppress(FileNotFoundError):
                    e.unlink()
        if any(e.name != MARKER for e in d.iterdir()):
            return False
        with contextlib.suppress(FileNotFoundError):
            (d / MARKER).unlink()
        d.rmdir()
    except FileNotFoundError:  # removed meanwhile
        return True
    except OSError:  # something appeared meanwhile: it is kept
        return False
    return True


def _remove_leftovers(out: Path) -> None:
    """Remove `.{out.name}.tmp-*` siblings a killed run left, only those holding MARKER
    (their listed files) or empty; never any other file or folder."""
    prefix = f".{out.name}.tmp-"
    if not out.parent.is_dir():
        return
    for sibling in out.parent.iterdir():
        if not sibling.name.startswith(prefix) or sibling.is_symlink() or not sibling.is_dir():
            continue
        with contextlib.suppress(FileNotFoundError):
            if suite_files(sibling) is not None or not any(sibling.iterdir()):
                _remove_ours(sibling)


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive flock on `folder` (the report's parent): one writer at a time swaps a
    report there, and no writer takes another's temporary folder for a leftover."""
    if fcntl is None:  # no flock (Windows): writers are not serialised
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def replace_folder(out, files: dict[str, str | bytes]) -> None:
    """Put `files` (name -> contents) in the report folder `out` in place of the files the
    suite wrote there before; everything else in it is kept.

    The new folder is built in a temporary sibling (MARKER first, listing `files`), the
    folder's other entries are moved into it, and it is swapped in with two renames, under
    a lock on the parent: a failure anywhere leaves `out` as it was (the moved entries are
    moved back). Marked temporaries a killed run left are removed first (their listed files
    only). A symlinked `out` is written through to its target. ReportWriteError (an OSError)
    when something cannot be written; ValueError when `out` is refused (check_report_dir)."""
    out = _target(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with _locked(out.parent):
            check_report_dir(out, files)  # again, under the lock: what is there now
            _remove_leftovers(out)
            _swap(out, files)
    except OSError as exc:
        if isinstance(exc, ReportWriteError):
            raise
        raise ReportWriteError(f"cannot write the report {out}: {_io_text(exc)}") from exc


def _swap(out: Path, files: dict[str, str | bytes]) -> None:
    keep = []
    if out.is_dir():
        ours = suite_files(out) or ()
        keep = sorted(e.name for e in out.iterdir() if e.name != MARKER and not _ours(e, ours))
    # The name matches the ".*tmp*" pattern in .gitignore.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = tmp.with_name(tmp.name + "-old")
    moved = []
    try:
        _write(tmp / MARKER, marker_text(files))  # first: a killed run leaves a removable leftover
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a report is for reading
        for name, data in files.items():
            _write(tmp / name, data)
        for name in keep:  # the user's: they go with the folder
            os.rename(out / name, tmp / name)
            moved.append(name)
        if out.exists():
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            if old.exists():
                os.rename(old, out)
            raise
    except BaseException:
        for name in moved:  # back where they were
            with contextlib.suppress(OSError):
                os.rename(tmp / name, out / name)
        _remove_ours(tmp)
        raise
    _remove_ours(old)


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

    out_dir must pass check_report_dir: a folder this suite did not write is never replaced,
    and in one it wrote only the files its marker lists are (replace_folder: atomically, the
    rest of the folder kept; concurrent writers take turns). Returns file name -> path.
    ReportWriteError (an OSError) when the report could not be written (the previous one is
    kept); StepSummaryError (an OSError) when it was, but $GITHUB_STEP_SUMMARY could not be
    appended to.
    """
    extra = dict(extra_files or {})
    for name in extra:
        if name in REPORT_FILES or not _plain_name(name) or name.startswith("."):
            raise ValueError(
                f"extra_files: {name!r} must be a plain file name other than {REPORT_FILES}"
            )
    out = check_report_dir(out_dir, [*REPORT_FILES, *extra])

    df = fill_outliers(records_frame(records))
    summary = summary_markdown(df, meta)
    contents = {
        "comparisons.csv": comparisons_csv(df),
        "summary.md": summary,
        "summary.html": summary_html(df, meta, extra_sections=extra, heat_map=heat_map),
        "run.json": json.dumps(meta, sort_keys=True, indent=2, default=_json_default) + "\n",
        **extra,
    }
    replace_folder(out, contents)

    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        try:
            with open(step_summary, "a", encoding="utf-8") as fh:
                fh.write(summary)
        except OSError as exc:
            raise StepSummaryError(
                f"the report {out} was written, but the job summary $GITHUB_STEP_SUMMARY "
                f"({step_summary}) could not be appended to: {_io_text(exc)}"
            ) from exc
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
    table = report_file(d, "comparisons.csv")  # a symlink is refused, never followed
    if table is None:
        raise ValueError(f"{d / 'comparisons.csv'}: missing, so {d} is not a report directory")
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
    run = report_file(d, "run.json")
    if run is not None:
        try:
            meta = json.loads(run.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{run}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            # Every reader does meta.get(...): a list, string or number must not reach them.
            raise ValueError(f"{run}: expected a JSON object of run facts, got {type(meta).__name__}")
    return typed_frame(raw), meta

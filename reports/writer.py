"""Write a report directory atomically; read one back."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from reports.fields import NUMERIC_FIELDS, RECORD_FIELDS
from reports.render import summary_html, summary_markdown
from reports.tables import fill_outliers, records_frame, typed_frame

REPORT_FILES = ("comparisons.csv", "summary.md", "summary.html", "run.json")


def _float_text(x) -> str:
    # Shortest text that reads back as the same float: exact and deterministic.
    return repr(float(x))


def comparisons_csv(df: pd.DataFrame) -> str:
    return df[RECORD_FIELDS].to_csv(index=False, float_format=_float_text, lineterminator="\n")


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (set, frozenset)):
        return sorted(x, key=str)
    return str(x)


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


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

    Everything goes to a temporary sibling first and is then swapped in, so a failure
    leaves the previous report as it was. Returns file name -> final path.
    """
    out = Path(out_dir)
    extra = dict(extra_files or {})
    for name in extra:
        if name in REPORT_FILES or Path(name).name != name or name.startswith("."):
            raise ValueError(
                f"extra_files: {name!r} must be a plain file name other than {REPORT_FILES}"
            )
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a directory")

    df = fill_outliers(records_frame(records))
    summary = summary_markdown(df, meta)
    contents = {
        "comparisons.csv": comparisons_csv(df),
        "summary.md": summary,
        "summary.html": summary_html(df, meta, extra_sections=extra, heat_map=heat_map),
        "run.json": json.dumps(meta, sort_keys=True, indent=2, default=_json_default) + "\n",
        **extra,
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    # The name matches the ".*tmp*" pattern in .gitignore.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = tmp.with_name(tmp.name + "-old")
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a report is for reading
        for name, text in contents.items():
            _write(tmp / name, text)
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

    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(summary)
    return {name: out / name for name in contents}


def load_report(report_dir) -> tuple[pd.DataFrame, dict]:
    """Read a report directory back: (records frame, meta). ValueError names the bad file."""
    d = Path(report_dir)
    if not d.is_dir():
        raise ValueError(f"{d}: not a report directory (no such directory)")
    table = d / "comparisons.csv"
    if not table.is_file():
        raise ValueError(f"{table}: missing, so {d} is not a report directory")
    if table.stat().st_size == 0:
        raise ValueError(f"{table}: empty file")
    try:
        # csv, not pd.read_csv: pandas silently pads a torn (short) row.
        with open(table, encoding="utf-8", newline="") as fh:
            header, *rows = list(csv.reader(fh))
    except (csv.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{table}: not a readable CSV ({exc})") from None
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(f"{table}: line {i} has {len(row)} fields, the header {len(header)}")
    raw = pd.DataFrame(rows, columns=header, dtype=object)
    missing = [c for c in RECORD_FIELDS if c not in raw.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {', '.join(missing)}")
    raw = raw[RECORD_FIELDS]
    for col in sorted(NUMERIC_FIELDS):
        text = raw[col].astype(str).str.strip()
        bad = (text != "") & (text.str.lower() != "nan") & pd.to_numeric(text, errors="coerce").isna()
        if bad.any():
            raise ValueError(f"{table}: column {col} holds non-numbers, e.g. {text[bad].iloc[0]!r}")
    meta = {}
    run = d / "run.json"
    if run.is_file():
        try:
            meta = json.loads(run.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{run}: not valid JSON ({exc})") from None
    return typed_frame(raw), meta

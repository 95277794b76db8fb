"""`python -m reports merge RUN_DIR... -o OUT`: one report from many runs or shards.

The runs may be shards of one run (the same run split with -k), the jobs of a CI matrix
(the same experiment under other torch / TensorFlow versions), or different experiments.
Every record keeps what its run recorded in it (versions, seed, data_source, init_scheme,
reduction), so records of different framework versions stay apart in comparisons.csv;
run.json lists the runs (`runs`), and `runs.md` (also shown in summary.html) has a table of
the runs and, when they ran under more than one configuration, the largest budget used per
tensor with one column per configuration.

Two records are the same comparison when they agree on the check (KEY: check, tensor, mode,
against, dtype, impl) and on the configuration they carry (RECORD_CONFIG). The same
comparison from two runs must hold the same values (every field but `outlier`, which the
writer recomputes): then it is kept once; otherwise the merge is refused, naming both runs.
Runs that differ only in facts the records do not carry (RUN_CONFIG: lr, n_images, ...)
could not be told apart once merged, so the same comparison from both is refused too.

Only the runs' own report files are read (comparisons.csv, run.json, audit.md), and only
as plain files: a symlink among them is refused, never followed. The output may not be,
hold or lie inside one of the runs.

The audit: reports/ does not import the equation registry (reference/), so by default
audit.md is built from the runs' own audit.md files (one when they are identical, each
under its run's heading otherwise). `audit_hook` (the CLI's --audit-hook, e.g.
parity_tests.audit_hook:audit_files) rebuilds it from the merged records instead, once
per configuration.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports.diff import EXPERIMENT_KEYS, KEY
from reports.escape import markdown_cell, terminal_text
from reports.fields import NUMERIC_FIELDS, RECORD_FIELDS, STATUSES, number_text
from reports.render import status_counts
from reports.tables import headline, tensor_order
from reports.writer import check_report_dir, load_report, read_report_file, write_report

# What a record carries of its run's configuration: with KEY, the identity of a comparison.
RECORD_CONFIG = ("versions", "seed", "data_source", "init_scheme", "reduction")
# The run's facts (run.json) that its records do not carry.
RUN_CONFIG = tuple(k for k in EXPERIMENT_KEYS if k not in RECORD_CONFIG)
# Recomputed by the writer from all the merged records.
IGNORED_FIELDS = ("outlier",)
COMPARED_FIELDS = tuple(f for f in RECORD_FIELDS if f not in IGNORED_FIELDS)
# Facts of run.json that the merged run.json keeps: the common value, or the list of the
# distinct values when the runs differ (the gate then refuses the merge as a baseline's
# "same experiment", naming the fact).
SHARED_FACTS = (*EXPERIMENT_KEYS, "data_source", "reference_kernels")
CONFLICTS_SHOWN = 10
AUDIT = "audit.md"
RUNS_FILE = "runs.md"

AuditHook = Callable[[list, dict], dict]


@dataclass
class Run:
    """One input report directory, read back."""

    number: int  # 1-based, in the order given
    path: str  # as given
    df: pd.DataFrame
    meta: dict
    audit: str | None
    duplicates: int = 0  # its records dropped as another run's duplicates

    @property
    def name(self) -> str:
        return f"run {self.number} ({self.path})"


# --- reading -------------------------------------------------------------------------------


def _fact(value) -> str:
    """A run.json value as comparable text: 0.0625 == 0.0625, 0 == 0.0, dicts by content."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(float(value))
    return json.dumps(value, sort_keys=True, default=str)


def run_config(meta: dict) -> tuple:
    """The configuration a run's meta describes: RECORD_CONFIG and RUN_CONFIG facts."""
    return tuple((k, _fact(meta.get(k))) for k in (*RECORD_CONFIG, *RUN_CONFIG))


def load_runs(run_dirs: Sequence) -> list[Run]:
    """Read every run directory (load_report); ValueError names the bad one."""
    if not run_dirs:
        raise ValueError("merge: no run directories given")
    runs, seen = [], {}
    for number, d in enumerate(run_dirs, 1):
        real = Path(d).resolve()
        if real in seen:
            raise ValueError(f"merge: {d} is given twice (as {seen[real]} too)")
        seen[real] = d
        df, meta = load_report(d)
        data = read_report_file(d, AUDIT)  # a plain file only: a symlink is refused
        try:
            text = None if data is None else data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{Path(d) / AUDIT}: not UTF-8 text ({exc})") from None
        runs.append(Run(number, str(d), df, meta, text))
    return runs


# --- records ---------------------------------------------------------------------------------


def _value(col: str, v):
    if col in NUMERIC_FIELDS:
        x = float(v) if not pd.isna(v) else math.nan
        return "nan" if math.isnan(x) else repr(x)
    return str(v)


_FIRST = ("status", "budget_used")  # named first when they differ
DIFFERENCES_SHOWN = 4


def _differs(theirs: list, mine: list) -> str:
    """How two runs' records of one comparison differ: the fields of the first differing
    record (status and budget_used first) with both values; or their counts."""
    if len(theirs) != len(mine):
        return f"{len(theirs)} record(s) vs {len(mine)}"
    for a, b in zip(theirs, mine):
        cols = [c for c, x, y in zip(COMPARED_FIELDS, a, b) if x != y]
        if cols:
            cols.sort(key=lambda c: _FIRST.index(c) if c in _FIRST else len(_FIRST))
            at = {c: i for i, c in enumerate(COMPARED_FIELDS)}
            shown = [f"{c} {a[at[c]]} vs {b[at[c]]}" for c in cols[:DIFFERENCES_SHOWN]]
            more = len(cols) - len(shown)
            return "; ".join(shown) + (f"; and {more} more field(s)" if more else "")
    return "no difference found"


def merge_records(runs: list[Run]) -> pd.DataFrame:
    """The runs' records, each comparison once (see the module docstring); ValueError on
    a comparison two runs disagree on, listing the first CONFLICTS_SHOWN with both runs."""
    ident_cols = [*KEY, *RECORD_CONFIG]
    first: dict[tuple, tuple[Run, list]] = {}
    kept, conflicts = [], []
    for run in runs:
        df = run.df.reset_index(drop=True)
        groups: dict[tuple, list] = {}
        for i, row in enumerate(df[ident_cols].astype(str).itertuples(index=False, name=None)):
            groups.setdefault(row, []).append(i)
        values = df[list(COMPARED_FIELDS)]
        for ident, rows in groups.items():
            mine = sorted(tuple(_value(c, values[c].iat[i]) for c in COMPARED_FIELDS) for i in rows)
            if ident not in first:
                first[ident] = (run, mine)
                kept.append(df.iloc[rows])
                continue
            other, theirs = first[ident]
            what = f"{ident[0]} ({', '.join(x for x in ident[1 : len(KEY)] if x)})"
            if run_config(other.meta) != run_config(run.meta):
                facts = [
                    f"{k} {a} vs {b}"
                    for (k, a), (_, b) in zip(run_config(other.meta), run_config(run.meta))
                    if a != b
                ]
                conflicts.append(
                    f"{what}: {other.name} and {run.name} differ in {'; '.join(facts)}, which "
                    "their records do not carry: merged, they could not be told apart"
                )
            elif mine == theirs:
                run.duplicates += len(rows)
            else:
                conflicts.append(
                    f"{what} under the same configuration disagrees between {other.name} "
                    f"and {run.name}: {_differs(theirs, mine)}"
                )
    if conflicts:
        shown = conflicts[:CONFLICTS_SHOWN]
        more = len(conflicts) - len(shown)
        raise ValueError(
            f"merge: {len(conflicts)} comparison(s) recorded differently by two runs; refusing "
            "to merge:\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more else "")
        )
    if not kept:
        return runs[0].df.iloc[:0] if runs else pd.DataFrame(columns=RECORD_FIELDS)
    merged = pd.concat(kept, ignore_index=True)
    # Independent of the order the runs were given in: ties of the writer's row order
    # (check, tensor, mode, against, dtype, impl) go by configuration.
    order = sorted(
        range(len(merged)),
        key=lambda i: tuple(str(merged[c].iat[i]) for c in RECORD_CONFIG),
    )
    return merged.iloc[order].reset_index(drop=True)


def as_records(df: pd.DataFrame) -> list[dict]:
    """A records frame as plain record dicts for write_report (missing values as None)."""
    plain = df[RECORD_FIELDS].astype(object)
    plain = plain.where(plain.notna(), None)
    return plain.to_dict("records")


# --- meta ------------------------------------------------------------------------------------


def _distinct(values) -> list:
    out, seen = [], set()
    for v in values:
        k = _fact(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def _union(lists) -> list:
    out = []
    for items in lists:
        for x in items if isinstance(items, (list, tuple)) else ():
            if x not in out:
                out.append(x)
    return out


def _sub_runs(run: Run) -> list[dict]:
    """The run's entries for the merged run.json's `runs` (a merged input: its own runs)."""
    inner = run.meta.get("runs")
    if isinstance(inner, list) and inner and all(isinstance(r, dict) for r in inner):
        return [{**r, "dir": f"{run.path} > {r.get('dir', '?')}"} for r in inner]
    m = run.meta
    entry = {"dir": run.path, "records": len(run.df), "duplicates_dropped": run.duplicates}
    for k in (
        "versions",
        "environment",
        *SHARED_FACTS,
        "frameworks",
        "dtypes",
        "completeness",
        "wall_time_s",
        "command",
    ):
        if k in m:
            entry[k] = m[k]
    return [entry]


def _environment(runs: list[Run]) -> dict:
    """meta["environment"] of the merge: each variable's value, or its distinct values
    joined with " | " ("(absent)" where a run did not have it)."""
    envs = [r.meta.get("environment") for r in runs]
    envs = [e for e in envs if isinstance(e, dict)]
    out = {}
    for key in _union([sorted(e, key=str) for e in envs]):
        vals = _distinct(str(e[key]) if key in e else "(absent)" for e in envs)
        out[key] = " | ".join(vals)
    return out


def configurations(runs: list[Run]) -> list[list[Run]]:
    """The runs grouped by run_config, in the order first seen."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run_config(run.meta), []).append(run)
    return list(groups.values())


def _status(run: Run) -> str:
    c = run.meta.get("completeness")
    return str(c.get("status", "")) if isinstance(c, dict) else ""


def _completeness(runs: list[Run]) -> dict:
    """interrupted if any run was; complete if each configuration has a complete run;
    partial otherwise (shards are partial runs: whether together they ran everything is
    recorded nowhere). Each run's own completeness is in `runs` and runs.md."""
    bad = [r.name for r in runs if _status(r) == "interrupted"]
    if bad:
        return dict(status="interrupted", detail=f"interrupted: {', '.join(bad)}")
    groups = configurations(runs)
    n = f"merged from {len(runs)} run(s) of {len(groups)} configuration(s)"
    short = [g for g in groups if not any(_status(r) == "complete" for r in g)]
    if short:

        def runs_of(g):
            return ", ".join(f"run {r.number} {_status(r) or 'unknown'}" for r in g)

        which = "; ".join(f"{_label(g, groups)} ({runs_of(g)})" for g in short)
        return dict(status="partial", detail=f"{n}; no complete run of {which}")
    return dict(status="complete", detail=f"{n}, each with a complete run")


def merged_meta(runs: list[Run], command: str = "") -> dict:
    """run.json of the merge: the facts the runs share (or the list of their distinct
    values), the union of frameworks, dtypes and tensor order, the environment (distinct
    values joined), the completeness and `runs`, one entry per run."""
    meta: dict = {}
    for key in SHARED_FACTS:
        have = [r.meta[key] for r in runs if key in r.meta]
        if not have:
            continue
        values = _distinct(have + ([None] if len(have) < len(runs) else []))
        meta[key] = values[0] if len(values) == 1 else values
    versions = _distinct(str(r.meta["versions"]) for r in runs if r.meta.get("versions"))
    if versions:
        meta["versions"] = " | ".join(versions)
    meta["environment"] = _environment(runs)
    for key in ("frameworks", "dtypes", "tensor_order"):
        meta[key] = _union(r.meta.get(key, ()) for r in runs)
    meta["completeness"] = _completeness(runs)
    meta["runs"] = [entry for r in runs for entry in _sub_runs(r)]
    meta["duplicates_dropped"] = sum(r.duplicates for r in runs)
    if command:
        meta["command"] = command
    return meta


# --- extra files -----------------------------------------------------------------------------


def _label(group: list[Run], groups: list[list[Run]]) -> str:
    """What sets this configuration apart from the others: the environment variables and
    facts whose values differ between configurations, e.g. "torch 2.12.0, tensorflow 2.20.0"."""
    metas = [g[0].meta for g in groups]
    m = group[0].meta
    parts = []
    envs = [x.get("environment") if isinstance(x.get("environment"), dict) else {} for x in metas]
    env = m.get("environment") if isinstance(m.get("environment"), dict) else {}
    for key in _union([sorted(e, key=str) for e in envs]):
        if len({str(e.get(key, "(absent)")) for e in envs}) > 1:
            parts.append(f"{key} {env.get(key, '(absent)')}")
    for key in (*RECORD_CONFIG, *RUN_CONFIG):
        if key != "versions" and len({_fact(x.get(key)) for x in metas}) > 1:
            parts.append(f"{key} {m.get(key)}")
    if not parts and len({_fact(x.get("versions")) for x in metas}) > 1:
        parts.append(str(m.get("versions")))
    return ", ".join(parts) or f"configuration {groups.index(group) + 1}"


def _md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(map(markdown_cell, header)) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows]


def _by_run(merged: pd.DataFrame, runs: list[Run]) -> dict[int, pd.DataFrame]:
    """Each run's records as they are in the merge (a duplicate stands for both runs)."""
    ident_cols = [*KEY, *RECORD_CONFIG]
    index = {}
    for i, row in enumerate(merged[ident_cols].astype(str).itertuples(index=False, name=None)):
        index.setdefault(row, []).append(i)
    out = {}
    for run in runs:
        rows = set()
        for row in run.df[ident_cols].astype(str).itertuples(index=False, name=None):
            rows.update(index.get(row, ()))
        out[run.number] = merged.iloc[sorted(rows)]
    return out


def _cell(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    worst = min(df["status"], key=lambda s: STATUSES.index(s) if s in STATUSES else 0)
    budget = number_text(df["budget_used"].max())
    return f"{budget} {worst}".strip() if worst != "pass" else budget or "pass"


def _row_names(df: pd.DataFrame) -> pd.Series:
    """A grid row: tensor (with its impl when not the reference) and the other side."""
    tensor = df["tensor"].where(
        df["impl"].isin(["", "reference"]), df["tensor"] + " (" + df["impl"] + ")"
    )
    return tensor + "\t" + df["against"]


def _grid(merged, groups, labels, per_run, meta) -> list[str]:
    """Largest budget per tensor x other side (rows, forward/backward order) and
    configuration (columns)."""
    frames = []
    for g in groups:
        f = pd.concat([per_run[r.number] for r in g])
        frames.append(f[f["mode"] != "detection"])  # detection budgets are tolerance / error
    every = pd.concat(frames)
    names = _row_names(every)
    rank = {t: i for i, t in enumerate(tensor_order(meta))}
    seen = list(pd.unique(names))
    tensor_of = dict(zip(names, every["tensor"]))
    order = sorted(seen, key=lambda n: (rank.get(tensor_of[n], len(rank)), seen.index(n)))
    keyed = [(f, _row_names(f)) for f in frames]
    rows = [[*n.split("\t", 1), *(_cell(f[k == n]) for f, k in keyed)] for n in order]
    head = [
        "## Largest budget used by tensor and configuration",
        "",
        "One column per configuration; over every dtype and mode (error / tolerance, <= 1 "
        "passes; the worst status follows when it is not a pass).",
        "",
    ]
    return head + _md_table(["tensor", "against", *(labels[id(g)] for g in groups)], rows)


def runs_markdown(merged: pd.DataFrame, runs: list[Run], meta: dict) -> str:
    """runs.md: which runs went in, and with more than one configuration the largest
    budget used per tensor (rows, forward/backward order) and configuration (columns)."""
    groups = configurations(runs)
    labels = {id(g): _label(g, groups) for g in groups}
    per_run = _by_run(merged, runs)
    lines = ["# Runs merged into this report", ""]
    rows = []
    for g in groups:
        for r in g:
            c = r.meta.get("completeness")
            status = _status(r)
            if isinstance(c, dict) and c.get("detail"):
                status += f": {c['detail']}"
            rows.append(
                [
                    r.number,
                    r.path,
                    labels[id(g)],
                    r.meta.get("versions", ""),
                    status,
                    len(r.df),
                    r.duplicates,
                    status_counts(per_run[r.number]) if len(r.df) else "",
                ]
            )
    lines += _md_table(
        [
            "run",
            "directory",
            "configuration",
            "versions",
            "completeness",
            "records",
            "duplicates dropped",
            "statuses",
        ],
        rows,
    )
    if len(groups) > 1:
        lines += ["", *_grid(merged, groups, labels, per_run, meta)]
    return "\n".join(lines) + "\n"


def _demoted(text: str) -> str:
    """An audit's text under a heading of the merged one: its title dropped, its headings
    one level down."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("#" + x if x.startswith("#") else x for x in lines).strip()


def _audit_from_runs(runs: list[Run]) -> dict[str, str]:
    texts: dict[str, list[Run]] = {}
    for r in runs:
        if r.audit is not None:
            texts.setdefault(r.audit, []).append(r)
    if not texts:
        return {}
    if len(texts) == 1:
        return {AUDIT: next(iter(texts))}
    parts = [
        "# Derivation audit (merged)",
        "",
        "Each run's own audit.md follows (identical ones once). To rebuild one audit from "
        "the merged records, merge with `--audit-hook parity_tests.audit_hook:audit_files`.",
    ]
    for text, rs in texts.items():
        who = ", ".join(markdown_cell(r.name) for r in rs)
        parts += ["", f"## {who}", "", _demoted(text)]
    return {AUDIT: "\n".join(parts) + "\n"}


def _audit_from_hook(
    hook: AuditHook, merged: pd.DataFrame, runs: list[Run], meta: dict
) -> dict[str, str]:
    groups = configurations(runs)
    per_run = _by_run(merged, runs)
    built = []
    for g in groups:
        idx = sorted({i for r in g for i in per_run[r.number].index})
        group_meta = merged_meta(g)
        group_meta["tensor_order"] = meta.get("tensor_order", [])
        files = hook(as_records(merged.loc[idx]), group_meta)
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise ValueError("merge: the audit hook must return a dict of file name -> text")
        built.append((g, files))
    if len(built) == 1:
        return dict(built[0][1])
    out: dict[str, str] = {}
    for name in _union([sorted(files) for _, files in built]):
        title = "Derivation audit" if name == AUDIT else Path(name).stem
        parts = [f"# {title} (merged: {len(built)} configurations)"]
        for g, files in built:
            if name in files:
                label = markdown_cell(_label(g, groups))
                parts += ["", f"## {label}", "", _demoted(files[name])]
        out[name] = "\n".join(parts) + "\n"
    return out


def load_hook(spec: str) -> AuditHook:
    """ "module:function" -> the function; ValueError when it cannot be found."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--audit-hook: {spec!r} is not MODULE:FUNCTION")
    try:
        hook = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--audit-hook: cannot load {spec!r} ({exc})") from None
    if not callable(hook):
        raise ValueError(f"--audit-hook: {spec!r} is not callable")
    return hook


# --- the whole merge -------------------------------------------------------------------------


def merge_reports(
    run_dirs: Sequence,
    out_dir,
    *,
    audit_hook: AuditHook | None = None,
    command: str = "",
    heat_map: bool = True,
) -> dict[str, Path]:
    """Merge the report directories `run_dirs` into the new report `out_dir` (written by
    write_report: never over a folder this suite did not write, nor over one of the runs).
    Returns write_report's file name -> path. ValueError: an unreadable run, a comparison
    two runs disagree on, a bad output folder."""
    out = check_report_dir(out_dir).resolve()
    for d in run_dirs:
        real = Path(d).resolve()
        if real == out or out in real.parents or real in out.parents:
            raise ValueError(
                f"merge: the output {out_dir} would replace the run {d} or lie inside it "
                "(they are or contain one another)"
            )
    runs = load_runs(run_dirs)
    merged = merge_records(runs)
    if merged.empty:
        raise ValueError("merge: the runs hold no comparisons")
    meta = merged_meta(runs, command)
    extra = {RUNS_FILE: runs_markdown(merged, runs, meta)}
    extra.update(
        _audit_from_hook(audit_hook, merged, runs, meta) if audit_hook else _audit_from_runs(runs)
    )
    return write_report(as_records(merged), out_dir, meta, extra_files=extra, heat_map=heat_map)


# --- the CLI ---------------------------------------------------------------------------------


def add_parser(sub) -> argparse.ArgumentParser:
    """The `merge` subcommand of `python -m reports` (reports/cli.py)."""
    merge = sub.add_parser(
        "merge",
        help="merge report directories (shards, a CI matrix) into one report",
        description="One report from many runs: every record keeps its run's versions and "
        "settings; a comparison two runs recorded identically is kept once, one they "
        "recorded differently is refused (exit 2, naming both runs). OUT must be new, empty "
        "or a report this suite wrote.",
    )
    merge.add_argument("runs", nargs="+", metavar="RUN_DIR", help="report directories to merge")
    merge.add_argument("-o", "--out", required=True, help="the merged report directory")
    merge.add_argument(
        "--audit-hook",
        metavar="MODULE:FUNCTION",
        help="rebuild audit.md from the merged records with this function (records, meta) "
        "-> {file: text}, e.g. parity_tests.audit_hook:audit_files (imports the reference's "
        "registry); default: the runs' own audit.md files",
    )
    return merge


def main(args) -> int:
    """`python -m reports merge`: write the merge, print what went in and the verdict."""
    hook = load_hook(args.audit_hook) if args.audit_hook else None
    hook_args = ["--audit-hook", args.audit_hook] if args.audit_hook else []
    command = shlex.join(["python", "-m", "reports", "merge", *args.runs, "-o", args.out, *hook_args])
    written = merge_reports(args.runs, args.out, audit_hook=hook, command=command)
    df, meta = load_report(args.out)
    runs = meta.get("runs", [])
    c = meta.get("completeness", {})
    dropped = meta.get("duplicates_dropped", 0)
    print(
        terminal_text(
            f"merged {len(args.runs)} report(s) ({len(runs)} run(s)) into {args.out}: "
            f"{len(df)} comparisons, {dropped} duplicate(s) dropped"
        )
    )
    print(terminal_text(f"run: {c.get('status', '')} ({c.get('detail', '')})"))
    print("\n".join(headline(df, tensor_order(meta))))
    print(terminal_text(f"{args.out}: {status_counts(df)}; files: {', '.join(sorted(written))}"))
    return 0

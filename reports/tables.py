"""Records as pandas tables: the full frame, outliers, the summary, the worst lines."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from reports.escape import terminal_text
from reports.fields import (
    BOOL_FIELDS,
    NUMERIC_FIELDS,
    RECORD_FIELDS,
    STATUSES,
    normalise_record,
    number_text,
)

SORT_KEYS = ("check", "tensor", "mode", "against", "dtype", "impl")
GROUP_KEYS = ["tensor", "against", "dtype", "mode", "impl"]
SUMMARY_COLUMNS = [
    "tensor",
    "equation",
    "against",
    "dtype",
    "mode",
    "impl",
    "status",
    "checks",
    "budget_used",
    "max_abs_err",
    "max_rel_err",
    "max_ulp",
    "impl_bits",
    "against_bits",
    "outlier",
    "worst_check",
]
# The worst element of a group's worst comparison (summary_frame(..., worst_element=True)):
# its index in the article layout and both values there; shown after max_ulp.
WORST_ELEMENT_COLUMNS = ["worst_index", "impl_at_worst", "against_at_worst"]
# One row per detection record (mode "detection": a published variant or a mutant).
DETECTION_COLUMNS = [
    "impl",
    "against",
    "dtype",
    "status",
    "first_diverging",
    "margin",
    "disagreeing",
    "suspect",
    "note",
    "check",
    "explanation",
]
_COUNTS = (
    "n",
    "n_bad",
    "max_ulp",
)  # integers unless NaN-free ints are impossible (inf)


def typed_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Give the record columns stable dtypes, so a frame read back from CSV equals the original."""
    df = df.copy()
    for col in NUMERIC_FIELDS:
        values = pd.to_numeric(df[col], errors="coerce").astype("float64")
        finite = values.dropna()
        if (
            col in _COUNTS
            and np.isfinite(finite).all()
            and (finite.abs() < 2**53).all()
            and (finite == finite.round()).all()
        ):
            values = values.astype("Int64")  # 576, not 576.0, in the CSV
        df[col] = values
    for col in BOOL_FIELDS:
        df[col] = df[col].map(lambda v: v is True or v == "True" or v == 1).astype(bool)
    for col in set(RECORD_FIELDS) - NUMERIC_FIELDS - BOOL_FIELDS - {"seed"}:
        df[col] = df[col].fillna("").astype(str)
    return df


def records_frame(records) -> pd.DataFrame:
    """All records, normalised, columns in RECORD_FIELDS order, rows in a stable order."""
    rows = [normalise_record(r) for r in records]
    rows.sort(key=lambda r: tuple(str(r[k]) for k in SORT_KEYS))  # sort() is stable
    return typed_frame(pd.DataFrame(rows, columns=RECORD_FIELDS))


def _farthest(errs: dict) -> str:
    name = max(errs, key=errs.get)
    others = max(v for k, v in errs.items() if k != name)
    return name if errs[name] > 2 * others else "none"


def fill_outliers(df: pd.DataFrame) -> pd.DataFrame:
    """Name, per tensor and dtype, which of the implementation under test (by its `impl`
    name, e.g. reference) / torch / tensorflow strays from the truth (float64 for a float32
    check, extended precision for a float64 one).

    Only where both frameworks were compared with truth errors (a float64 check has none
    where NumPy's longdouble is float64); "none" when no side is more than twice as far
    from the truth as each of the others, "" when undecidable.
    """
    df = df.copy()
    df["outlier"] = ""
    usable = (
        df["against"].isin(["torch", "tensorflow"])
        & df["against_err_vs_truth"].notna()
        & df["impl_err_vs_truth"].notna()
    )
    keys = ["impl", "tensor", "mode", "dtype", "seed"]
    rows = df.loc[usable, [*keys, "against", "impl_err_vs_truth", "against_err_vs_truth"]]
    rows = rows.astype(dict.fromkeys(keys, str))  # a missing seed groups, and is found, as "nan"
    # One row per group (whole-column maxima; a report has hundreds of groups): both rows
    # of a group compare against the same output of the implementation, so its larger.
    errs = pd.concat(
        {
            "impl": rows.groupby(keys, sort=False, dropna=False)["impl_err_vs_truth"].max(),
            **{
                name: rows[rows["against"] == name]
                .groupby(keys, sort=False, dropna=False)["against_err_vs_truth"]
                .max()
                for name in ("torch", "tensorflow")
            },
        },
        axis=1,
    ).dropna(subset=["torch", "tensorflow"])  # both frameworks compared, or undecidable
    verdicts = {
        key: _farthest({str(key[0]) or "impl": e.impl, "torch": e.torch, "tensorflow": e.tensorflow})
        for key, e in zip(errs.index, errs.itertuples(index=False))
    }
    if verdicts:
        at = pd.MultiIndex.from_frame(rows[keys])
        df.loc[rows.index, "outlier"] = [verdicts.get(k, "") for k in at]
    return df


def by_severity(df: pd.DataFrame) -> pd.DataFrame:
    """Rows worst first: error, fail, vacuous, absent, pass (STATUSES); then the largest
    budget; stable."""
    rank = [STATUSES.index(s) if s in STATUSES else 0 for s in df["status"]]
    budget = [-b if not pd.isna(b) else math.inf for b in df["budget_used"]]
    order = sorted(range(len(df)), key=lambda i: (rank[i], budget[i]))
    return df.iloc[order]


def summary_frame(df: pd.DataFrame, *, worst_element: bool = False) -> pd.DataFrame:
    """One row per tensor x against x dtype x mode x impl, worst first.

    worst_element=True adds WORST_ELEMENT_COLUMNS (after max_ulp), from the group's worst
    comparison (the one whose status and budget put it first).
    """
    columns = SUMMARY_COLUMNS
    if worst_element:
        at = SUMMARY_COLUMNS.index("max_ulp") + 1
        columns = [*SUMMARY_COLUMNS[:at], *WORST_ELEMENT_COLUMNS, *SUMMARY_COLUMNS[at:]]
    if df.empty:
        return pd.DataFrame(columns=columns)
    ordered = by_severity(df)
    groups = ordered.groupby(GROUP_KEYS, sort=False, dropna=False)
    # Whole-column operations over the groups, not one Python step per group (a report has
    # hundreds): the worst row is each group's first, the group order its first appearance.
    worst = ordered.drop_duplicates(GROUP_KEYS).reset_index(drop=True)
    most = groups[["budget_used", "max_abs_err", "max_rel_err", "max_ulp"]].max()
    fewest = groups[["impl_bits", "against_bits"]].min()  # effective precision: the worst
    out = worst[[*GROUP_KEYS, *WORST_ELEMENT_COLUMNS, "status"]].assign(
        equation=groups["equation"].agg(_listed).to_numpy(),
        checks=groups.size().to_numpy(),
        outlier=groups["outlier"].agg(_listed).to_numpy(),
        worst_check=worst["check"],
        **{c: most[c].to_numpy() for c in most.columns},
        **{c: fewest[c].to_numpy() for c in fewest.columns},
    )
    return out[columns]


def _listed(values: pd.Series) -> str:
    """A group's distinct non-empty values, sorted, comma-separated."""
    return ", ".join(sorted(set(values) - {""}))


def _natural(text) -> tuple:
    """A sort key that puts D2 before D10."""
    return tuple(int(x) if x.isdigit() else x for x in re.split(r"(\d+)", str(text)))


def _margin(r: pd.Series) -> str:
    """How far a detection record's first diverging tensor is off, in tolerances (its
    disagreeing_budgets entry: a number, "inf" under an exact rule, or shape / dtype /
    error); "" when nothing was caught."""
    if not r["first_diverging"]:
        return ""
    names = [x.strip() for x in str(r["disagreeing"]).split(",")]
    budgets = [x.strip() for x in str(r["disagreeing_budgets"]).split(",")]
    found = dict(zip(names, budgets)).get(r["first_diverging"], "")
    if found:
        return found
    b = r["budget_used"]  # tolerance / error (parity_tests/detection.py)
    return number_text(1 / b) if not pd.isna(b) and b > 0 else ""


def detection_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The detection records (mode "detection"), one row each, DETECTION_COLUMNS: failures
    first, then variants before mutants in their natural order, then framework and dtype.

    Their own measure, `margin`: error / tolerance at the first diverging tensor (> 1:
    caught), not their budget_used (tolerance / error, inverted); `disagreeing` names every
    tensor that disagrees with its budget.
    """
    det = df[df["mode"] == "detection"]
    if det.empty:
        return pd.DataFrame(columns=DETECTION_COLUMNS)

    def listed(r):
        names = [x.strip() for x in str(r["disagreeing"]).split(",") if x.strip()]
        budgets = [x.strip() for x in str(r["disagreeing_budgets"]).split(",")]
        budgets += [""] * (len(names) - len(budgets))
        return ", ".join(f"{t} ({b})" if b else t for t, b in zip(names, budgets))

    rows = [
        {
            **{c: r[c] for c in DETECTION_COLUMNS if c in r.index},
            "margin": _margin(r),
            "disagreeing": listed(r),
            "note": r["note"] or r["error"],
        }
        for _, r in det.iterrows()
    ]
    rank = {s: i for i, s in enumerate(STATUSES)}
    rows.sort(
        key=lambda r: (
            rank.get(r["status"], 0),
            not str(r["impl"]).startswith("published:"),
            _natural(r["impl"]),
            r["against"],
            r["dtype"],
        )
    )
    return pd.DataFrame(rows, columns=DETECTION_COLUMNS)


def terminal_lines(df: pd.DataFrame, n: int = 10) -> list[str]:
    """The worst n comparisons, one line each (control characters shown as \\xNN). Names a
    partial implementation did not return are not comparisons: the headline lists them
    ("not provided"), so they never push the real budgets out of this list."""
    lines = []
    for _, r in by_severity(df[df["status"] != "absent"]).head(n).iterrows():
        line = (
            f"{(r['status'] or 'error').upper()} {r['tensor']} {r['against']} {r['dtype']} "
            f"{r['mode']} budget {number_text(r['budget_used'], 'n/a')} at {r['worst_index'] or 'n/a'} "
            f"abs {number_text(r['max_abs_err'], 'n/a')} rel {number_text(r['max_rel_err'], 'n/a')}"
        )
        if r["impl"] not in ("", "reference"):
            line += f" [{r['impl']}]"
        if r["status"] != "pass" and (r["error"] or r["note"]):
            line += f" | {r['error'] or r['note']}"
        lines.append(terminal_text(line))  # record strings: no escape sequences, one line
    return lines


# --- the headline: the run's verdict, first --------------------------------------------------

DISAGREE = ("fail", "vacuous")  # the two sides disagree, or the comparison proves nothing
MODE_RANK = {"stage": 0, "end_to_end": 1}  # within a tensor: the localising check first
LISTED = 12  # the most tensors or implementations one headline line names


def _short(text, limit: int = 160) -> str:
    """The first line of `text`, at most `limit` characters."""
    line = next((x.strip() for x in str(text).splitlines() if x.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def tensor_order(meta: dict) -> tuple[str, ...]:
    """The run's forward/backward order of tensor names (meta["tensor_order"], written by
    the plugin); () when the meta has none or something else."""
    order = meta.get("tensor_order") if isinstance(meta, dict) else None
    return tuple(map(str, order)) if isinstance(order, (list, tuple)) else ()


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def compared_count(df: pd.DataFrame) -> int:
    """The run's comparisons: its records but those of a tensor not provided (status
    "absent"). The verdict, the status counts and the terminal's last line all count these."""
    return int((df["status"] != "absent").sum())


def comparisons_text(df: pd.DataFrame) -> str:
    """ "50 comparisons", then the records of tensors not provided when there are some:
    "50 comparisons, 24 not provided"."""
    absent = len(df) - compared_count(df)
    return _count(compared_count(df), "comparison") + (f", {absent} not provided" if absent else "")


def _names(names) -> str:
    names = list(names)
    shown = ", ".join(map(str, names[:LISTED]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > LISTED else "")


def _in_order(df: pd.DataFrame, order) -> pd.DataFrame:
    """Rows by tensor in forward/backward `order` (other names after, first seen first);
    within a tensor the worst status, then stage before end_to_end before the rest, then
    the largest budget; stable."""
    rank = {t: i for i, t in enumerate(order)}
    seen = {t: i for i, t in enumerate(pd.unique(df["tensor"]))}
    keys = [
        (
            rank.get(t, len(rank) + seen[t]),
            STATUSES.index(s) if s in STATUSES else 0,
            MODE_RANK.get(m, len(MODE_RANK)),
            -b if not pd.isna(b) else math.inf,
        )
        for t, s, m, b in zip(df["tensor"], df["status"], df["mode"], df["budget_used"])
    ]
    return df.iloc[sorted(range(len(df)), key=keys.__getitem__)]


def _how(r: pd.Series) -> str:
    """How one record disagrees, in a few words."""
    detail = _short(r["error"] or r["note"])
    if r["status"] == "error":
        return "could not be compared" + (f": {detail}" if detail else "")
    if r["status"] == "vacuous":
        return f"proves nothing (vacuous): {detail or 'both sides within the tolerance of zero'}"
    if r["mismatch_kind"] in ("shape", "dtype"):
        return f"{r['mismatch_kind']} mismatch" + (f": {detail}" if detail else "")
    if pd.isna(r["budget_used"]):
        return f"{r['status']}" + (f": {detail}" if detail else "")
    return f"budget used {number_text(r['budget_used'])} (error / tolerance)"


def _tag(rows: pd.DataFrame) -> str:
    """One tensor's disagreement in a word or two: its largest budget, vacuous, shape..."""
    worst = rows.iloc[0]  # _in_order: the worst status first
    if worst["status"] == "vacuous":
        return "vacuous"
    same = rows[rows["status"] == worst["status"]]
    budget = same["budget_used"].max()
    if not pd.isna(budget):
        return f"budget {number_text(budget)}"
    return worst["mismatch_kind"] or worst["status"]


def headline_parts(df: pd.DataFrame, order=()) -> list[tuple[str, str]]:
    """The run's verdict as (label, text) pairs, plain text (the caller escapes it).

    verdict: the first diverging tensor in forward/backward `order` (the run's
    meta["tensor_order"]; other names after), among the records that fail or are vacuous,
    or, when none does, that could not be compared (error): its equation, mode, impl vs
    framework, dtype, budget and the explainer's guess (`explanation`); or "every
    comparison passed (N comparisons)". Then, each only when there is something to say:
    also disagree (the other tensors that fail or are vacuous, with their largest budget),
    errors (tensors with comparisons that could not be made, after the disagreements so
    they never hide the first real failure), not provided (status "absent") and the
    variant/mutant detection checks that failed (mode "detection").
    """
    if df.empty:
        return [("verdict", "no comparisons were recorded")]
    detection = df["mode"] == "detection"
    ranked = _in_order(df[~detection], order)
    # A record of no tensor (a test that failed outside its comparisons) goes by its test.
    named = [
        t or (f"(test {c})" if c else "(unnamed)") for t, c in zip(ranked["tensor"], ranked["check"])
    ]
    ranked = ranked.assign(_name=named)
    disagree = ranked[ranked["status"].isin(DISAGREE)]
    errors = ranked[ranked["status"] == "error"]
    absent = ranked[ranked["status"] == "absent"]
    missed = df[detection & (df["status"] != "pass")]
    compared = compared_count(df)
    # Errors come after the disagreements: the first of them only when nothing disagrees.
    first = disagree.iloc[0] if len(disagree) else errors.iloc[0] if len(errors) else None
    parts = []
    if first is not None:
        r = first
        against = f"impl {r['impl'] or '?'}" + (f" vs {r['against']}" if r["against"] else "")
        where = ", ".join(x for x in (r["equation"], r["mode"], against, r["dtype"]) if x)
        text = f"first diverging tensor {r['_name']} ({where}): {_how(r)}"
        if r["explanation"]:
            text += f"; explainer: {_short(r['explanation'], 300)}"
        parts.append(("verdict", text))
    elif len(absent) or len(missed):
        passed = int((df["status"] == "pass").sum())
        text = f"no tensor disagrees ({passed} of {_count(compared, 'comparison')} passed)"
        parts.append(("verdict", text))
    else:
        parts.append(("verdict", f"every comparison passed ({_count(compared, 'comparison')})"))
    if first is not None:
        others = disagree[disagree["_name"] != first["_name"]]
        if len(others):
            groups = others.groupby("_name", sort=False)
            parts.append(("also disagree", _names(f"{t} ({_tag(g)})" for t, g in groups)))
        others = errors if len(disagree) else errors[errors["_name"] != first["_name"]]
        if len(others):
            why = _short(others["error"].iat[0] or others["note"].iat[0], 120)
            names = _names(pd.unique(others["_name"]))
            parts.append(
                (
                    "errors",
                    f"{names} could not be compared ({_count(len(others), 'comparison')}"
                    + (f"; first: {why})" if why else ")"),
                )
            )
    if len(absent):
        parts.append(("not provided", _names(pd.unique(absent["_name"]))))
    if len(missed):
        impls = _names(pd.unique(missed["impl"]))
        parts.append(
            (
                "detection",
                f"{len(missed)} of {_count(int(detection.sum()), 'variant/mutant check')} failed "
                f"(not caught, or caught at another tensor): {impls}",
            )
        )
    return parts


# What the verdict and the terminal's last line add when the run's data were synthetic: a
# run on synthetic digits must not end exactly like one on MNIST.
SYNTHETIC_NOTE = "on SYNTHETIC digits, not MNIST: set PARITY_MNIST"


def is_synthetic(source) -> bool:
    """Whether a data source (run.json's data_source) is the synthetic digits."""
    return str(source or "").strip().lower().startswith("synthetic")


def headline(df: pd.DataFrame, order=(), data_source: str = "") -> list[str]:
    """The headline as plain lines, "label: text" (control characters shown as \\xNN): what
    every run shows first in summary.md / summary.html and last on the terminal. The verdict
    line ends with SYNTHETIC_NOTE when `data_source` is synthetic."""
    lines = [terminal_text(f"{label}: {text}") for label, text in headline_parts(df, order)]
    if is_synthetic(data_source):
        lines[0] += f" {SYNTHETIC_NOTE}"
    return lines

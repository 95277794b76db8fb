"""audit.md: the derivation audit, from the equation registry and the run's records.

Four tables:

1. one row per article equation (E1..E17): its statement, the reference function(s), the
   checks this run made of it (records matched by their `equation` field: torch/tensorflow
   stage and end_to_end, finite differences, hand examples...), the largest budget used per
   kind of check, the verdict (holds / holds under a stated convention / does not hold as
   written, with the corrected form) and the note on the text;
2. the same for the layers beyond the article (X1..X19, docs/extensions.md and
   docs/normalisation.md), when the registry has them: checked alone
   (parity_tests/test_layers.py) and inside the checked network (parity_tests/test_model.py);
   and, in a run that checked an optimiser, for its rules (O1..O11, docs/optimisers.md);
3. one row per published-code variant (D1..D13): from its detection record (mode
   "detection", written by parity_tests/test_variants.py) or, in a run of the variant
   itself (`--parity-impl published:D3`), from that run's records: which tensors disagree,
   by how much, the first in forward/backward order, the explainer's verdict;
4. the mutation catalogue: the same per mutant, the check that caught it, and the
   detection rate.

In the first two, a row lists its own checks, then apart ("through E1: ...") those of the
equations that exercise it (`via`); for X1 (padding) and X2 (stride) only those on the
checked model's layers that pad or stride (`via_layers`, matched by the records' `model`
and `step`), named in the row.

The registry arrives as plain dicts (reports/ imports neither reference/ nor the
frameworks); parity_tests/audit_hook.py builds them. Detection records carry their finding
in fields of their own (first_diverging, disagreeing, disagreeing_budgets, explanation,
suspect: reports/fields.py), read here by name; no note is parsed.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from reports.escape import markdown_cell
from reports.fields import STATUSES, number_text
from reports.tables import records_frame

FRAMEWORKS = ("torch", "tensorflow")
# The equation ids in a record's `equation` field ("E8*E9", "X1,X2,X4", "O10,O2"): E, X or
# O and digits, a whole word (X10 is not X1; a lone "X" or a word is none).
_EQ = re.compile(r"\b[EXO]\d+\b")
_SETTING_WORDS = {"pad": "padding", "stride": "a stride above 1"}


def _cell(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return markdown_cell(x)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _worst_budget(records: pd.DataFrame, tensor: str) -> str:
    return number_text(records[records["tensor"] == tensor]["budget_used"].max())


def check_kind(against: str, mode: str) -> str:
    """The kind of check a record is: 'torch stage', 'hand', 'finite_difference (taylor)'..."""
    if against in FRAMEWORKS:
        return f"{against} {mode}".strip()
    if mode in ("", against, "self"):
        return against or mode or "other"
    return f"{against} ({mode})"


def _frame(records) -> pd.DataFrame:
    if isinstance(records, pd.DataFrame):
        return records
    return records_frame(list(records))


def _run_impl(df: pd.DataFrame, meta: dict) -> str:
    if meta.get("impl"):
        return str(meta["impl"])
    plain = df[df["mode"] != "detection"]["impl"]
    return str(plain.mode().iat[0]) if len(plain) else "reference"


# --- equations ----------------------------------------------------------------------------

EQUATION_HEADER = [
    "eq",
    "statement",
    "reference",
    "checks run (count)",
    "largest budget used",
    "result",
    "verdict",
    "note",
]


def _kinds(records: pd.DataFrame) -> tuple[str, str]:
    """(checks, budgets) of some records, per kind of check: "torch stage (4), hand (1)"."""
    kinds = records.assign(kind=[check_kind(a, m) for a, m in zip(records["against"], records["mode"])])
    groups = kinds.groupby("kind", sort=True)
    checks = ", ".join(f"{k} ({len(g)})" for k, g in groups)
    budgets = "; ".join(f"{k} {number_text(g['budget_used'].max())}" for k, g in groups)
    return checks, budgets


def _via_scope(df: pd.DataFrame, eq: dict, via: list[str]) -> tuple[np.ndarray, str, str, str]:
    """Which records may count as `via` checks of `eq`: (their mask, the words naming where
    (checks column), the same in short (budgets column), the words when none may). Unscoped:
    every record; scoped (X1, X2): those on the checked model's layers that use the setting,
    matched by the records' `model` and `step`."""
    setting = eq.get("via_setting", "")
    if not setting:
        return np.ones(len(df), dtype=bool), "", "", ""
    model, layers = str(eq.get("via_model", "")), _items(eq.get("via_layers"))
    models = df["model"].astype(str) if "model" in df else pd.Series("", index=df.index)
    mask = ((models == model) & df["step"].astype(str).isin(layers)).to_numpy() & bool(model)
    if not model:
        return mask, "", "", ""
    # A preset by its name; a spec string is named once, in the section's text.
    net = model if re.fullmatch(r"\w+", model) else "the checked network"
    if not layers:
        none = f"through {', '.join(via)}: none ({net} has no layer with {_SETTING_WORDS[setting]})"
        return mask, "", "", none
    where = eq.get("via_where") or ", ".join(layers)
    return mask, f" on {net}'s {where}", f" on {', '.join(layers)}", ""


# The functions cell of an equation no traced function computed: it acts inside others
# (its `via` equations), or the checked network has no such layer.
_NO_FUNCTION = "none of its own ran in the checked step"


def _equation_rows(df: pd.DataFrame, equations: list[dict]) -> list[list]:
    eq_sets = [set(_EQ.findall(str(e))) for e in df["equation"]]
    rows = []
    for eq in equations:
        via = _items(eq.get("via", ""))
        direct = np.array([eq["id"] in s for s in eq_sets], dtype=bool)
        through = np.array([bool(s & set(via)) for s in eq_sets], dtype=bool) & ~direct
        scope, where, short, none_text = _via_scope(df, eq, via)
        through &= scope
        checks, budgets = [], []
        if direct.any():
            c, b = _kinds(df.loc[direct])
            checks.append(c)
            budgets.append(b)
        if through.any():
            # Named: the equations whose records count here, in `via` order.
            seen = set().union(*(s for s, t in zip(eq_sets, through) if t))
            label = f"through {', '.join(v for v in via if v in seen)}"
            c, b = _kinds(df.loc[through])
            checks.append(f"{label}{where}: {c}")
            budgets.append(f"{label}{short}: {b}")
        elif none_text:
            checks.append(none_text)
        mine = df.loc[direct | through]
        if len(mine):
            counts = mine["status"].value_counts()
            result = ", ".join(f"{int(counts[s])} {s}" for s in STATUSES if s in counts)
        else:
            checks.insert(0, "none recorded in this run")
            result = ""
        verdict = eq["verdict"]
        if eq.get("correction"):
            verdict += f"; corrected: {eq['correction']}"
        elif eq.get("convention"):
            verdict += f": {eq['convention']}"
        note = eq.get("note", "")
        if eq.get("variants"):
            note = f"{note} (published code departs: {eq['variants']})".strip()
        rows.append(
            [
                eq["id"],
                eq["statement"],
                eq.get("functions") or _NO_FUNCTION,
                "; ".join(checks),
                "; ".join(budgets),
                result,
                verdict,
                note,
            ]
        )
    return rows


# --- variants and mutants -----------------------------------------------------------------


def _items(field) -> list[str]:
    """The entries of a comma-separated list field (disagreeing, disagreeing_budgets)."""
    return [x.strip() for x in str(field or "").split(",") if x.strip()]


def _how_much(budget: str) -> str:
    """A disagreeing_budgets entry ("3.2e+12", "inf", "shape", "dtype", "precision",
    "error") in words."""
    words = {
        "inf": "any difference fails (exact rule, tolerance 0)",
        "shape": "shape mismatch",
        "dtype": "dtype mismatch",
        "error": "the comparison raised (see the record's error)",
        "precision": "within the allowance, computed at markedly fewer bits (see its note)",
        "": "",
    }
    return words.get(budget, f"{budget} x tolerance")


def _from_detection(det: pd.DataFrame) -> dict:
    """Summary of the detection record(s) of one implementation (one per framework run)."""
    det = det.sort_values(
        ["against", "dtype"],
        key=lambda s: s.map(lambda v: (FRAMEWORKS.index(v) if v in FRAMEWORKS else 9, v)),
    )
    main = det.iloc[0]
    by = "; ".join(
        f"{r['against']} {r['dtype']} stage: "
        + (f"caught at {r['first_diverging']}" if r["first_diverging"] else "NOT detected")
        for _, r in det.iterrows()
    )
    margin = main["budget_used"]
    first = main["first_diverging"] or "none"
    names, budgets = _items(main["disagreeing"]), _items(main["disagreeing_budgets"])
    budgets += [""] * (len(names) - len(budgets))  # the two lists are aligned
    how = ""
    if main["first_diverging"]:
        how = _how_much(dict(zip(names, budgets)).get(first, ""))
        if not math.isnan(float(main["max_rel_err"])):
            how += f", max rel err {number_text(main['max_rel_err'])}"
    disagree = ", ".join(f"{t} ({b})" if b else t for t, b in zip(names, budgets))
    return dict(
        detected=bool(main["first_diverging"]),
        localised=bool(main["passed"]),
        by=by,
        first=first,
        how=how,
        disagree=disagree or "none",
        explainer=main["explanation"] or "none",
        margin=margin,
        check=(
            f"{main['against']} {main['dtype']} stage-isolated check of {first}"
            if first != "none"
            else ""
        ),
    )


def _from_run(runs: pd.DataFrame, order: list[str]) -> dict:
    """Summary of a whole run of one implementation (`--parity-impl published:D3`)."""
    rank = {t: i for i, t in enumerate(order)}
    bad = runs[runs["status"].isin(["fail", "error"])]
    bad = bad.assign(
        _mode=(bad["mode"] != "stage").astype(int),
        _rank=bad["tensor"].map(lambda t: rank.get(t, len(rank))),
    )
    bad = bad.sort_values(["_mode", "_rank", "against", "dtype"])
    if bad.empty:
        return dict(
            detected=False,
            localised=False,
            by="the run's checks all agree",
            first="none",
            how="",
            disagree="none",
            explainer="",
            check="",
        )
    first = bad.iloc[0]
    tensors = bad.drop_duplicates("tensor").sort_values("_rank")
    disagree = ", ".join(
        f"{r['tensor']} ({_worst_budget(bad, r['tensor']) or r['status']})"
        for _, r in tensors.iterrows()
    )
    return dict(
        detected=True,
        localised=None,
        first=first["tensor"],
        by=f"this run ({len(bad)} of {len(runs)} comparisons disagree)",
        how=f"{number_text(first['budget_used']) or first['status']} x tolerance "
        f"({first['against']} {first['dtype']} {first['mode']})",
        disagree=disagree,
        explainer=first["explanation"],
        check=f"{first['against']} {first['dtype']} {first['mode']} check of {first['tensor']}",
    )


def _impl_summaries(df, steps, prefix, run_impl, order):
    out = []
    for s in steps:
        name = f"{prefix}:{s['id']}"
        det = df[(df["impl"] == name) & (df["mode"] == "detection")]
        if len(det):
            out.append((s, _from_detection(det)))
        elif run_impl == name and len(df[df["impl"] == name]):
            out.append((s, _from_run(df[df["impl"] == name], order)))
        else:
            out.append((s, None))
    return out


def _yes(flag) -> str:
    return "n/a" if flag is None else "yes" if flag else "NO"


def _rate(summaries, what: str) -> str:
    run = [x for _, x in summaries if x is not None]
    if not run:
        return (
            f"No {what} was run in this session (plain `pytest` leaves them out: "
            "`./parity report` runs them)."
        )
    caught = sum(bool(x["detected"]) for x in run)
    localised = sum(bool(x["localised"]) for x in run)
    return (
        f"**Detection rate: {caught} / {len(run)} {what}s detected "
        f"({100 * caught / len(run):.0f}%), {localised} / {len(run)} localised to the tensor "
        f"they change.** ({len(summaries) - len(run)} of {len(summaries)} not run here.)"
    )


def _impl_rows(summaries, with_check: bool) -> list[list]:
    rows = []
    for s, x in summaries:
        if x is None:
            row = [
                s["id"],
                s["title"],
                s.get("equation", ""),
                s.get("first", ""),
                "not run",
                "",
                "",
                "",
                "",
            ]
        else:
            row = [
                s["id"],
                s["title"],
                s.get("equation", ""),
                s.get("first", ""),
                _yes(x["detected"]) + (f" ({x['by']})" if x["by"] else ""),
                x["first"] + ("" if x["localised"] in (None, True) else " (NOT the expected tensor)")
                if x["detected"]
                else "none",
                x["how"],
                x["disagree"],
                x["explainer"],
            ]
        if with_check:
            row.insert(6, x["check"] if x else "")
        rows.append(row)
    return rows


def audit_markdown(
    records,
    *,
    equations: list[dict],
    variants: list[dict],
    mutants: list[dict],
    order: list[str],
    meta: dict | None = None,
    optimiser_equations: list[dict] | None = None,
) -> str:
    """The text of audit.md (see the module docstring). `optimiser_equations` (O1..O11, in
    a run that checked an optimiser): their section, after the layers'."""
    meta = dict(meta or {})
    df = _frame(records)
    run_impl = _run_impl(df, meta)
    plain = df[(df["mode"] != "detection") & (df["impl"] == run_impl)]
    lines = [
        "# Derivation audit",
        "",
        f"Implementation under test: `{_cell(run_impl)}`; seed {_cell(meta.get('seed', ''))}; "
        f"data: {_cell(meta.get('data_source', '')) or 'n/a'}.",
        "",
        "## Article equations",
        "",
        "Checks matched by the records' `equation` field; budget used = largest "
        "error / tolerance (<= 1 passes).",
        "",
    ]
    article = [e for e in equations if not str(e["id"]).startswith("X")]
    beyond = [e for e in equations if str(e["id"]).startswith("X")]
    lines += _table(EQUATION_HEADER, _equation_rows(plain, article))
    if beyond:
        model = _cell(meta.get("model", ""))
        on = f" ({model})" if model else ""
        lines += [
            "",
            f"## Beyond the article ({beyond[0]['id']}..{beyond[-1]['id']})",
            "",
            "The layers the suite checks beyond the article (docs/extensions.md): alone in "
            "parity_tests/test_layers.py (hand examples, finite differences, torch) and "
            f"inside the checked network{on} in parity_tests/test_model.py (torch and "
            "TensorFlow, stage and end_to_end). Padding (X1) and stride (X2) act inside the "
            "convolutions and pools: besides their own checks, their rows count those of the "
            "network's layers that pad or stride. Max-pool ties go to the first maximum in "
            "row-major order of the window, as torch and TensorFlow on the CPU.",
            "",
        ]
        lines += _table(EQUATION_HEADER, _equation_rows(plain, beyond))
    if optimiser_equations:
        optimiser = _cell(meta.get("optim", ""))
        lines += [
            "",
            "## Optimisers (O1..O11)",
            "",
            "The optimiser rules (docs/optimisers.md), each framework held to its own "
            "convention's: checked alone (parity_tests/test_optim.py, stage) and along the "
            "training run"
            + (f" of {optimiser}" if optimiser else "")
            + " (parity_tests/test_trajectory.py, end_to_end, every step). The functions "
            "are traced from the optimisers and conventions the records name; the decay "
            "equations (O2, O3) count only where weight_decay was not 0.",
            "",
        ]
        lines += _table(EQUATION_HEADER, _equation_rows(plain, optimiser_equations))
    var = _impl_summaries(df, variants, "published", run_impl, order)
    lines += [
        "",
        "## Published-code variants",
        "",
        "Each variant is the reference with one departure of the published code "
        "(reference/published.py). Stage-isolated checks feed every framework operation "
        "the variant's own inputs, so only the changed operation disagrees: the first "
        "diverging tensor localises the departure.",
        "",
        _rate(var, "variant"),
        "",
    ]
    lines += _table(
        [
            "D",
            "what the published code does",
            "departs from",
            "expected first",
            "detected",
            "first diverging",
            "by how much",
            "tensors that disagree",
            "explainer",
        ],
        _impl_rows(var, False),
    )
    mut = _impl_summaries(df, mutants, "mutant", run_impl, order)
    lines += [
        "",
        "## Mutation catalogue",
        "",
        "Typical derivation mistakes (parity_tests/mutants.py), each caught by the suite's own checks.",
        "",
        _rate(mut, "mutant"),
        "",
    ]
    lines += _table(
        [
            "mutant",
            "mistake",
            "breaks",
            "expected first",
            "detected",
            "first diverging",
            "detecting check",
            "by how much",
            "tensors that disagree",
            "explainer",
        ],
        _impl_rows(mut, True),
    )
    return "\n".join(lines) + "\n"

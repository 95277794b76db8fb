"""The derivation audit: the equation registry (reference/equations.py) is complete and
consistent, and reports/audit.py turns registry + records into audit.md (also shown in
summary.html)."""

import importlib
import re

import pytest

from parity_tests import mutants
from parity_tests.audit_hook import audit_files
from parity_tests.stages import STAGES
from reference import equations, published
from reports import normalise_record, write_report
from reports.audit import audit_markdown

AMBIGUOUS = ("E7", "E11", "E13", "E15", "E16")  # where the text is ambiguous or mistyped


def test_registry_covers_every_equation_in_order():
    assert [e.id for e in equations.EQUATIONS] == [f"E{i}" for i in range(1, 18)]


@pytest.mark.parametrize("eq", equations.EQUATIONS, ids=[e.id for e in equations.EQUATIONS])
def test_registry_entry_is_complete(eq):
    assert eq.statement and eq.verdict in equations.VERDICTS
    assert eq.functions and all(fn.__module__.startswith("reference.") for fn in eq.functions)
    for name in eq.function_names:  # names resolve to the same callables
        module, _, attr = name.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr))
    assert bool(eq.convention) == (eq.verdict == equations.CONVENTION)
    assert bool(eq.correction) == (eq.verdict == equations.CORRECTED)
    assert bool(eq.note) or eq.id not in AMBIGUOUS
    assert set(eq.variants) <= set(published.VARIANTS)
    assert set(eq.via) <= set(equations.BY_ID) - {eq.id}


def test_every_variant_is_attached_to_an_equation():
    attached = {v for e in equations.EQUATIONS for v in e.variants}
    assert attached == set(published.VARIANTS)


def _rec(**fields):
    base = dict(
        check="t::x",
        impl="reference",
        against="torch",
        mode="stage",
        dtype="float64",
        status="pass",
        passed=True,
        budget_used=0.5,
        seed=0,
        equation="E1",
        tensor="Z1",
    )
    return normalise_record({**base, **fields})


def _detection(impl, tensor, passed=True):
    return _rec(
        impl=impl,
        mode="detection",
        tensor=tensor,
        equation="E16",
        budget_used=3e-13,
        max_rel_err=0.9,
        passed=passed,
        status="pass" if passed else "fail",
        note=f"caught at {tensor}, the tensor it changes",
        first_diverging=tensor,
        disagreeing=tensor,
        disagreeing_budgets="3.2e+12",
        explanation="torch's x is 200 x ours",
        suspect="factor",
        mismatch_kind="value",
    )


def _audit(records, **meta):
    return audit_markdown(
        records,
        equations=equations.as_dicts(),
        variants=published.as_dicts(),
        mutants=mutants.as_dicts(),
        order=[s.tensor for s in STAGES],
        meta={"impl": "reference", **meta},
    )


def test_audit_has_a_row_per_equation_variant_and_mutant():
    text = _audit(
        [
            _rec(),
            _rec(against="hand", mode="hand", budget_used=0.1),
            _rec(equation="E8*E9", tensor="dE_dZ2", budget_used=2.0, status="fail", passed=False),
            _detection("published:D12", "dE_df"),
            _detection("mutant:flipped_dE_df", "dE_df"),
        ]
    )
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert sum(bool(re.match(r"\| E\d+ \|", r)) for r in rows) == 17
    assert sum(bool(re.match(r"\| D\d+ \|", r)) for r in rows) == len(published.VARIANTS)
    assert sum(any(r.startswith(f"| {m} |") for m in mutants.MUTANTS) for r in rows) == len(
        mutants.MUTANTS
    )
    e1 = next(r for r in rows if r.startswith("| E1 |"))
    assert "torch stage (1)" in e1 and "hand (1)" in e1 and "torch stage 0.5" in e1
    assert "1 fail" in next(r for r in rows if r.startswith("| E9 |"))
    assert "through E1: hand (1), torch stage (1)" in next(r for r in rows if r.startswith("| E2 |"))
    d12 = next(r for r in rows if r.startswith("| D12 |"))
    assert "caught at dE_df" in d12 and "200 x ours" in d12 and "3.2e+12 x tolerance" in d12
    assert "1 / 1 variants detected" in text and "1 / 1 mutants detected" in text
    assert "| D3 |" in text and "not run" in next(r for r in rows if r.startswith("| D3 |"))


def test_audit_reads_a_whole_run_of_a_variant():
    # `pytest --parity-impl published:D3`: the run's own records say what disagrees.
    recs = [
        _rec(
            impl="published:D3",
            tensor=t,
            equation=e,
            status=s,
            passed=s == "pass",
            budget_used=b,
            note="explainer: no simple fit" if s == "fail" else "",
            explanation="no simple fit" if s == "fail" else "",
        )
        for t, e, s, b in (
            ("Z1", "E1", "pass", 0.3),
            ("dE_df", "E16", "fail", 5e10),
            ("f_new", "E17", "pass", 0.2),
        )
    ]
    row = next(r for r in _audit(recs, impl="published:D3").splitlines() if r.startswith("| D3 |"))
    assert "dE_df" in row and "5e+10" in row and "no simple fit" in row


def test_undetected_mutant_shows_as_not_detected():
    rec = _detection("mutant:sign_dE_dO", "dE_dO", passed=False)
    rec.update(
        note="not detected: expected at dE_dO",
        first_diverging="",
        disagreeing="",
        disagreeing_budgets="",
        explanation="",
        suspect="",
        mismatch_kind="",
    )
    text = _audit([rec])
    assert "0 / 1 mutants detected" in text
    row = next(r for r in text.splitlines() if r.startswith("| sign_dE_dO |"))
    assert "NO (torch float64 stage: NOT detected)" in row
    assert row.endswith("| none |  |  | none | none |")  # first, check, how much, disagree, explainer


def test_detection_is_read_from_fields_not_from_the_note():
    # The note is for people: text in it that looks like a finding changes nothing.
    rec = _detection("published:D13", "patches")
    rec.update(
        note="first: Z1 | disagree: Z1 (shape) | explainer: a decoy",
        disagreeing="patches, Z1, dE_df",
        disagreeing_budgets="inf, 4.58e+16, 1.3e+14",
    )
    row = next(r for r in _audit([rec]).splitlines() if r.startswith("| D13 |"))
    assert "caught at patches" in row and "decoy" not in row
    assert "| patches | any difference fails (exact rule, tolerance 0), max rel err 0.9 |" in row
    assert "| patches (inf), Z1 (4.58e+16), dE_df (1.3e+14) | torch's x is 200 x ours |" in row


@pytest.mark.parametrize(("kind", "words"), [("shape", "shape mismatch"), ("error", "raised")])
def test_how_much_names_a_mismatch_without_a_budget(kind, words):
    rec = _detection("mutant:dE_dW_transposed", "dE_dW")
    rec.update(disagreeing="dE_dW, f_new", disagreeing_budgets=f"{kind}, error", mismatch_kind=kind)
    row = next(r for r in _audit([rec]).splitlines() if r.startswith("| dE_dW_transposed |"))
    assert words in row and f"| dE_dW ({kind}), f_new (error) |" in row


def test_audit_files_never_raises():
    assert "Derivation audit" in audit_files([], {})["audit.md"]
    broken = audit_files([{"no such field": 1}], {})["audit.md"]
    assert "could not be built" in broken and "no such field" in broken


def test_audit_is_written_and_shown_in_summary_html(tmp_path):
    records = [_rec(), _detection("published:D12", "dE_df")]
    paths = write_report(
        records,
        tmp_path / "r",
        {"impl": "reference"},
        extra_files=audit_files(records, {"impl": "reference"}),
        heat_map=False,
    )
    assert paths["audit.md"].read_text().startswith("# Derivation audit")
    assert "Derivation audit" in paths["summary.html"].read_text()

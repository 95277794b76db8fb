"""Bridge to reports/audit.py: hands it the registry (reference.equations, the published
variants, the mutation catalogue) as plain data, since reports/ may not import reference/.

parity_tests/session_report.py calls `audit_files(records, meta)` at session end and writes what
it returns into the report directory (the writer also shows it in summary.html).
"""

from __future__ import annotations


def checked_model(records, meta) -> str:
    """The network parity_tests/test_model.py checked: the run's `model` (an experiment
    fact), else the one its records name most often (a merge without it), else ""."""
    if meta.get("model"):
        return str(meta["model"])
    names = [r.get("model") for r in records if isinstance(r, dict) and r.get("model")]
    return max(set(names), key=names.count) if names else ""


def audit_files(records, meta) -> dict[str, str]:
    """{"audit.md": text}. Never raises: a broken audit must not cost the run its report."""
    try:
        from parity_tests import model_mutants, mutants
        from parity_tests.stages import STAGES
        from reference import equations, published
        from reports.audit import audit_markdown

        text = audit_markdown(
            records,
            # The functions that ran: the fast path's kernels when the run checked it; the
            # checked network's padded and strided layers for X1's and X2's rows.
            equations=equations.as_dicts(
                fast_path=meta.get("impl") == "reference", model=checked_model(records, meta)
            ),
            variants=published.as_dicts(),
            mutants=mutants.as_dicts() + model_mutants.as_dicts(),
            order=[s.tensor for s in STAGES],
            meta=meta,
        )
    except Exception as exc:  # reported in the file itself, where the reader looks for it
        text = f"# Derivation audit\n\nThe audit could not be built: {type(exc).__name__}: {exc}\n"
    return {"audit.md": text}

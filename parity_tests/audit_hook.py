"""Bridge to reports/audit.py: hands it the registry (reference.equations, the published
variants, the mutation catalogue) as plain data, since reports/ may not import reference/.

parity_tests/plugin.py's pytest_sessionfinish calls `audit_files(records, meta)` and writes what it
returns into the report directory (the writer also shows it in summary.html).
"""

from __future__ import annotations


def audit_files(records, meta) -> dict[str, str]:
    """{"audit.md": text}. Never raises: a broken audit must not cost the run its report."""
    try:
        from parity_tests import mutants
        from parity_tests.stages import STAGES
        from reference import equations, published
        from reports.audit import audit_markdown

        text = audit_markdown(
            records,
            # The functions that ran: the fast path's kernels when the run checked it.
            equations=equations.as_dicts(fast_path=meta.get("impl") == "reference"),
            variants=published.as_dicts(),
            mutants=mutants.as_dicts(),
            order=[s.tensor for s in STAGES],
            meta=meta,
        )
    except Exception as exc:  # reported in the file itself, where the reader looks for it
        text = f"# Derivation audit\n\nThe audit could not be built: {type(exc).__name__}: {exc}\n"
    return {"audit.md": text}

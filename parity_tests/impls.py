"""Which implementation the parity checks verify (`--parity-impl`).

An implementation is any object with the reference's model API:

    train_step(params, X, y, lr, reduction) -> mapping with the article's names
        (patches, Z1, A1, Z2, O, E, dE_dO, dO_dZ2, dE_dZ2, dE_dW, dE_db, dE_dA1, dE_dZ1,
         dE_df, f_new, W_new, b_new) in the article layout (README "Bring your own"),
        and its inputs X, f, W, b too: the stage checks feed them to the frameworks.
        Example: examples/byo_impl/batch_first_cnn.py.

"reference" is the project's NumPy reference; "published:D3" a published-code variant
(reference/published.py: D1..D8, D12, D13); "mutant:sign_dE_dO" a mistake of the mutation
catalogue (parity_tests/mutants.py); any other name is imported as a module
(`mypackage.mymodule`) that provides `train_step`.
"""

from __future__ import annotations

import importlib

from reference import model


def _named(name: str, table: dict):
    key = name.split(":", 1)[1]
    if key not in table:
        raise ValueError(f"--parity-impl {name!r}: {key!r} must be one of {', '.join(table)}")
    return table[key]


def resolve_impl(name: str):
    if name == "reference":
        return model
    if name.startswith("published:"):
        from reference.published import VARIANTS

        return _named(name, VARIANTS)
    if name.startswith("mutant:"):
        from parity_tests.mutants import MUTANTS

        return _named(name, MUTANTS)
    try:
        impl = importlib.import_module(name)
    except ImportError as exc:
        raise ValueError(f"--parity-impl {name!r}: not 'reference' and not an importable module "
                         f"({exc})") from exc
    if not callable(getattr(impl, "train_step", None)):
        raise ValueError(f"--parity-impl {name!r}: module {impl.__name__} has no train_step("
                         f"params, X, y, lr, reduction); see README 'Bring your own'")
    return impl

"""A CS231n optim.py rule against keras.optimizers, measured (parity_tests/own_optim.py,
against_keras; docs/optimisers.md "Against Keras").

Per rule of the given module (default the bundled examples/optim/optim.py): the worst
budget of (U - K) - (R_cs - R_keras) under tol_cs + tol_keras over the hyper-parameter sets
(CS231n's defaults, float32-exact values), both dtypes and three steps; the named
difference's size in allowances, its form (Keras' equations) and its float32 casting
apart, and relative to the reference; and the budget of U against K with the named
difference left in ("direct": above 1, the convention is visible).

    .venv/bin/python benchmarks/own_optim_keras.py [--module examples/optim/optim.py] [--markdown]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from parity_tests import own_optim

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", default=str(ROOT / "examples" / "optim" / "optim.py"))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    head = ["rule", "worst budget", "form (allowances)", "float32 hyper (allowances)",
            "relative", "direct (allowances)", "verdict"]  # fmt: skip
    print(
        ("| " + " | ".join(head) + " |\n| " + " | ".join("---" for _ in head) + " |")
        if args.markdown
        else "\t".join(head)
    )
    for rule in own_optim.RULES:
        try:
            user = own_optim.parse(f"{rule}={args.module}:{rule}")
        except pytest.UsageError:  # the module has no such rule
            continue
        rows = own_optim.against_keras(user)
        failure, _ = own_optim.keras_verdict(user)
        cells = [
            rule,
            f"{max(r.budget for r in rows):.3g}",
            f"{max(r.form for r in rows):.3g}",
            f"{max(r.cast for r in rows):.3g}",
            f"{max(r.relative for r in rows):.3g}",
            f"{max(r.direct for r in rows):.3g}",
            failure or "agrees up to the named difference",
        ]
        print(("| " + " | ".join(cells) + " |") if args.markdown else "\t".join(cells))


if __name__ == "__main__":
    main()

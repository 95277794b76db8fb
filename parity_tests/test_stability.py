"""The default checks hold for many initial weights, not only seed 0 (slow; not in the gate).

Every stage-isolated and end-to-end check of test_parity.py (both frameworks, both dtypes,
the same tolerance policy, unchanged) is repeated for 20 seeds of the shared initial
weights. The comparisons are made directly (Harness + parity_tests.metrics.compare_arrays),
not through the `parity` fixture, so the 20 x 132 comparisons do not flood the report; the
largest budget used over all of them is printed and attached to the test with
record_property (`max_budget_used`, and per seed `max_budget_used_seed_<n>`), so a reader
sees how much headroom the tolerances have across seeds.

    PARITY_MNIST=/path/to/mnist.npz \
        .venv/bin/python -m pytest parity_tests/test_stability.py -m slow -q -s

(`-m slow` overrides the default `-m 'not slow'`; `-s` shows the printed summary;
--parity-frameworks / --parity-dtypes / --parity-data apply as usual.)
"""

from __future__ import annotations

import dataclasses

import pytest

from parity_tests.harness import Harness
from parity_tests.impls import resolve_impl

SEEDS = tuple(range(20))


@pytest.mark.slow
def test_default_checks_hold_for_20_seeds(parity_settings, run_config, article_data, record_property):
    settings = parity_settings
    worst = {"budget": -1.0, "where": ""}
    failures = []
    for seed in SEEDS:
        config = dataclasses.replace(run_config, seed=seed)
        harness = Harness(config, article_data, resolve_impl(config.impl, settings.timeout))
        seed_max = 0.0
        for budget, where, failure in harness.budgets(
            settings.frameworks, settings.dtypes, label=f"seed {seed}"
        ):
            seed_max = max(seed_max, budget)
            if budget > worst["budget"]:
                worst = {"budget": budget, "where": where}
            if failure:
                failures.append(failure)
        record_property(f"max_budget_used_seed_{seed}", round(seed_max, 4))
    record_property("max_budget_used", round(worst["budget"], 4))
    record_property("max_budget_used_at", worst["where"])
    print(
        f"\nstability: {len(SEEDS)} seeds, largest budget used {worst['budget']:.3f} ({worst['where']})"
    )
    assert not failures, f"{len(failures)} check(s) failed:\n" + "\n".join(failures[:20])

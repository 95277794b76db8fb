"""The spec-built networks' checks hold for many initial weights, not only seed 0 (slow).

Every check of test_model.py (every tensor of the network, stage-isolated and end to end,
each framework and dtype of the run, the same tolerance policy and kink handling,
unchanged) is repeated for several seeds of the initial weights:

* test_lenet_checks_hold_for_20_seeds: the lenet preset, seeds 0..19;
* test_small_conv_checks_hold_for_5_seeds: a strided-conv/tanh/avg-pool network, seeds 0..4.

As test_stability.py does for the article, the comparisons are made directly
(ModelHarness + parity_tests.metrics.compare_arrays), not through the `parity` fixture, so the
thousands of comparisons do not flood the report. No false alarm is allowed. The largest
budget used and the kinks the end-to-end checks found (ReLU inputs and max-pool windows
within rounding of their kink, and how many a framework took the other way;
parity_tests/kinks.py) are printed, attached with record_property (`max_budget_used`,
`max_budget_used_at`, `kinks`, `kinks_taken`, and per seed) and named in the failure
message.

    PARITY_MNIST=/path/to/mnist.npz \\
        .venv/bin/python -m pytest parity_tests/test_model_seeds.py -m slow -q -s
"""

from __future__ import annotations

import dataclasses

import pytest

from parity_tests.model_harness import ModelHarness
from reference.network import Network

LENET_SEEDS = tuple(range(20))
SMALL_CONV = "conv(4,3,stride=2,pad=1)-tanh-avgpool(2)-dense(10)-softmax_ce"
SMALL_CONV_SEEDS = tuple(range(5))


def kinks(harness: ModelHarness, frameworks, dtypes) -> tuple[int, int]:
    """(kinks found, of those taken the other way) over frameworks, dtypes, kinked layers."""
    found = [k for f in frameworks for d in dtypes for k in harness.kinks(f, d)[1]]
    return sum(k.ambiguous for k in found), sum(k.taken for k in found)


def _sweep(spec, seeds, parity_settings, run_config, article_data, record_property):
    net = Network(spec)
    frameworks, dtypes = parity_settings.frameworks, parity_settings.dtypes
    worst = {"budget": -1.0, "where": ""}
    failures, checks, total_kinks, total_taken = [], 0, 0, 0
    per_seed = []
    for seed in seeds:
        config = dataclasses.replace(run_config, seed=seed)
        harness = ModelHarness(net, config, article_data)
        seed_max = 0.0
        for budget, where, failure in harness.budgets(frameworks, dtypes, f"seed {seed}"):
            checks += 1
            seed_max = max(seed_max, budget)
            if budget > worst["budget"]:
                worst = {"budget": budget, "where": where}
            if failure:
                failures.append(failure)
        found, taken = kinks(harness, frameworks, dtypes)
        total_kinks, total_taken = total_kinks + found, total_taken + taken
        per_seed.append(f"seed {seed}: {found}/{taken}")
        record_property(f"max_budget_used_seed_{seed}", round(seed_max, 4))
        record_property(f"kinks_seed_{seed}", found)
        record_property(f"kinks_taken_seed_{seed}", taken)
    record_property("max_budget_used", round(worst["budget"], 4))
    record_property("max_budget_used_at", worst["where"])
    record_property("kinks", total_kinks)
    record_property("kinks_taken", total_taken)
    summary = (
        f"{net.label}: {len(seeds)} seeds, {checks} checks ({','.join(frameworks)}; "
        f"{','.join(dtypes)}; stage, end_to_end), largest budget used {worst['budget']:.3f} "
        f"({worst['where']}); kinks within rounding {total_kinks}, taken the other way "
        f"{total_taken} (kinks/taken per seed, over frameworks and dtypes: {', '.join(per_seed)})"
    )
    print(f"\n{summary}")
    assert not failures, f"{len(failures)} check(s) failed; {summary}:\n" + "\n".join(failures[:20])
    return total_kinks


@pytest.mark.slow
def test_lenet_checks_hold_for_20_seeds(parity_settings, run_config, article_data, record_property):
    _sweep("lenet", LENET_SEEDS, parity_settings, run_config, article_data, record_property)


@pytest.mark.slow
def test_small_conv_checks_hold_for_5_seeds(parity_settings, run_config, article_data, record_property):
    found = _sweep(
        SMALL_CONV, SMALL_CONV_SEEDS, parity_settings, run_config, article_data, record_property
    )
    assert found == 0, f"{SMALL_CONV} has no ReLU or max-pool, yet {found} kinks were counted"

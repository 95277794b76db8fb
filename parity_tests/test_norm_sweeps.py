"""The issue's two normalisation networks hold every check for many seeds and batch sizes.

Every check of test_model.py (each tensor, stage-isolated and end to end, each framework
and dtype of the run) through ModelHarness.budgets, as test_model_seeds.py does:

* test_norm_networks_small_batch (gate): both networks at 4 images, seed 0;
* test_norm_networks_hold_for_seeds (slow): seeds 0..4 (initial weights and dropout masks),
  one test each;
* test_norm_networks_hold_at_batch_size (slow): 2, 3, 5, 8, 13 and 32 images (batch norm's
  hard case: a statistic over few values, a variance near zero).

No false alarm is allowed; the largest budget used is printed and attached with
record_property (`max_budget_used`, `max_budget_used_at`).

    PARITY_MNIST=/path/to/mnist.npz \\
        .venv/bin/python -m pytest parity_tests/test_norm_sweeps.py -m slow -q -s
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from parity_tests.model_harness import ModelHarness
from parity_tests.test_norm import CONV_SPEC, DENSE_SPEC
from reference.network import Network

SPECS = {"conv_bn_gn_gap": CONV_SPEC, "dense_ln_dropout": DENSE_SPEC}
SEEDS = tuple(range(5))
BATCHES = (2, 3, 5, 8, 13, 32)


def _subset(data, n):
    return SimpleNamespace(X=data.X[:, :, :n], labels=data.labels[:n])


def _sweep(spec, runs, parity_settings, run_config, article_data, record_property):
    """runs: (label, seed, n_images) each."""
    worst, failures, checks = (-1.0, ""), [], 0
    for label, seed, n in runs:
        config = dataclasses.replace(run_config, seed=seed, n_images=n)
        harness = ModelHarness(Network(spec, seed=seed), config, _subset(article_data, n))
        for budget, where, failure in harness.budgets(
            parity_settings.frameworks, parity_settings.dtypes, label
        ):
            checks += 1
            worst = max(worst, (budget, where))
            if failure:
                failures.append(failure)
    record_property("max_budget_used", round(worst[0], 4))
    record_property("max_budget_used_at", worst[1])
    summary = f"{spec}: {checks} checks, largest budget used {worst[0]:.3f} ({worst[1]})"
    print(f"\n{summary}")
    assert not failures, f"{len(failures)} check(s) failed; {summary}:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_norm_networks_small_batch(spec, parity_settings, run_config, article_data, record_property):
    _sweep(spec, [("n_images=4", 0, 4)], parity_settings, run_config, article_data, record_property)


# Seed 3 of the conv network was a known precision false alarm (conv3.db / conv3.dF, sums
# of 28,800 products behind a group norm: torch and TensorFlow float32 17-26x the
# reference's pairwise sums) until the verdict's floor grew with the sum's length
# (parity_tests/metrics.py precision_floor: sqrt(28,800) / 8 = 21 roundings, excess 9.7).
@pytest.mark.slow
@pytest.mark.parametrize(
    "spec,seed",
    [pytest.param(spec, s, id=f"{name}-seed={s}") for name, spec in SPECS.items() for s in SEEDS],
)
def test_norm_networks_hold_for_seeds(
    spec, seed, parity_settings, run_config, article_data, record_property
):
    runs = [(f"seed {seed}", seed, run_config.n_images)]
    _sweep(spec, runs, parity_settings, run_config, article_data, record_property)


@pytest.mark.slow
@pytest.mark.parametrize("n_images", BATCHES, ids=[f"n_images={n}" for n in BATCHES])
@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_norm_networks_hold_at_batch_size(
    spec, n_images, parity_settings, run_config, article_data, record_property
):
    runs = [(f"n_images={n_images}", run_config.seed, n_images)]
    _sweep(spec, runs, parity_settings, run_config, article_data, record_property)

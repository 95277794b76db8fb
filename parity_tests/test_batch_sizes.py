"""No false alarm at small batches: every check of test_parity.py holds from one image up.

--parity-n-images accepts any batch from 1, but the default run checks the article's 200
images only. Small batches are where the end-to-end rule is weakest: its rounding spread
(the reference's float32 run against its float64 run) is one sample, and at one or two
images E, dE_db and the scale of dE_dA1 and dE_dW rest on the rounding of one or two
numbers, so the spread can be near zero by luck (tolerance.end_to_end floors it at the
stage allowance). At MNIST, seed 0, the end-to-end checks of dE_db against TensorFlow
(float64 at one image, budget 1.04) failed before that floor.

* test_small_batch_end_to_end_float64 (gate): the end-to-end checks at 1 and 2 images,
  float64, each framework: the ones that failed.
* test_all_checks_hold_at_batch_size (slow): the whole matrix of test_parity.py, every
  stage-isolated and end-to-end check, each framework and dtype, at 1..8, 13 and 32 images.

The comparisons are made directly (Harness + parity_tests.metrics.compare_arrays, as
test_stability.py does for seeds), not through the `parity` fixture, so they do not enter
the report; the largest budget used is printed and attached with record_property
(`max_budget_used`, `max_budget_used_at`). Seed, data, init, reduction, impl, frameworks and
dtypes are the run's (--parity-*), except that the gate test checks float64 whatever
--parity-dtypes says.

    PARITY_MNIST=/path/to/mnist.npz \\
        .venv/bin/python -m pytest parity_tests/test_batch_sizes.py -m slow -q -s
"""

from __future__ import annotations

import dataclasses

import pytest

from parity_tests.harness import Harness
from parity_tests.impls import resolve_impl
from reference.data import load_article_data

SMALL_BATCHES = (1, 2)  # the batch sizes whose end-to-end checks failed
BATCH_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 13, 32)


def _ids(sizes):
    return [f"n_images={n}" for n in sizes]


@pytest.fixture(scope="module")
def harness_for(parity_settings, run_config):
    """n -> a Harness on the run's configuration with the first n images (one per n)."""
    made = {}

    def get(n: int) -> Harness:
        if n not in made:
            data = load_article_data(n, source=parity_settings.data)
            config = dataclasses.replace(run_config, n_images=n)
            made[n] = Harness(config, data, resolve_impl(config.impl, parity_settings.timeout))
        return made[n]

    return get


def _assert_all_pass(results, record_property, what: str):
    results = list(results)
    budget, where, _ = max(results, key=lambda r: r[0])
    failures = [f for _, _, f in results if f]
    record_property("max_budget_used", round(budget, 4))
    record_property("max_budget_used_at", where)
    print(f"\n{what}: {len(results)} checks, largest budget used {budget:.3f} ({where})")
    assert not failures, f"{len(failures)} check(s) failed:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("n_images", SMALL_BATCHES, ids=_ids(SMALL_BATCHES))
def test_small_batch_end_to_end_float64(harness_for, n_images, framework, record_property):
    harness = harness_for(n_images)
    results = harness.budgets([framework], ["float64"], ["end_to_end"], f"n_images={n_images}")
    _assert_all_pass(results, record_property, f"n_images={n_images} {framework} end_to_end")


@pytest.mark.slow
@pytest.mark.parametrize("n_images", BATCH_SIZES, ids=_ids(BATCH_SIZES))
def test_all_checks_hold_at_batch_size(harness_for, parity_settings, n_images, record_property):
    harness = harness_for(n_images)
    results = harness.budgets(
        parity_settings.frameworks, parity_settings.dtypes, label=f"n_images={n_images}"
    )
    _assert_all_pass(results, record_property, f"n_images={n_images} all checks")

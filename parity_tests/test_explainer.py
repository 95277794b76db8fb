"""The mismatch explainer (parity_tests/explain.py) names real mistakes and nothing else.

- It names most published-code variants and catalogue mistakes: the registries'
  `explains` (asserted per variant by test_variants.py and per mutant by test_mutants.py,
  at the first diverging tensor) are counted here.
- It names nothing on a correct implementation (slow): the reference's stage-isolated and
  end-to-end checks against torch, for 20 seeds and every dtype of the run. A passing check
  calls no explainer, so the explainer is called here on every (framework output,
  reference output) pair, passed or not, with the context the suite gives it, and must
  return None for all of them. The comparisons are made directly (Harness +
  compare_arrays + explain, as test_stability.py does), not recorded.

    PARITY_MNIST=/path/to/mnist.npz \\
        .venv/bin/python -m pytest parity_tests/test_explainer.py -m slow -q
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from parity_tests import mutants
from parity_tests.explain import explain
from parity_tests.harness import Harness
from parity_tests.metrics import compare_arrays
from parity_tests.stages import END_TO_END, STAGES
from reference.published import VARIANTS

SEEDS = tuple(range(20))
NAMED_VARIANTS, NAMED_MUTANTS = 9, 17  # of the 10 published variants, the 19 catalogue ones


def _named(steps) -> list[str]:
    return [s.id for s in steps if s.explains]


def test_explainer_names_most_variants_and_catalogue_mistakes():
    variants, catalogue = list(VARIANTS.values()), list(mutants.MUTANTS.values())
    named_v, named_m = _named(variants), _named(catalogue)
    unnamed = sorted({s.id for s in variants + catalogue} - set(named_v) - set(named_m))
    assert len(named_v) >= NAMED_VARIANTS and len(named_v) * 10 >= 9 * len(variants), unnamed
    assert len(named_m) >= NAMED_MUTANTS and len(named_m) * 19 >= 17 * len(catalogue), unnamed


@pytest.mark.slow
def test_no_explanation_on_the_reference_for_20_seeds(
    parity_settings, run_config, article_data, record_property
):
    if "torch" not in parity_settings.frameworks:
        pytest.skip("torch deselected by --parity-frameworks")
    claims, failed, pairs = [], [], 0
    for seed in SEEDS:
        config = dataclasses.replace(run_config, seed=seed, impl="reference")
        harness = Harness(config, article_data)  # the reference itself
        for dtype in parity_settings.dtypes:
            for stage in STAGES:
                checks = [("stage", harness.stage_check)]
                if stage in END_TO_END:
                    checks.append(("end_to_end", harness.end_to_end_check))
                for mode, make in checks:
                    c = make(stage, "torch", dtype)
                    status = compare_arrays(
                        c.actual,
                        c.expected,
                        c.tolerance.array,
                        truth=c.truth,
                        brief=True,
                        roundings=c.tolerance.roundings,
                    )["status"]
                    found = explain(
                        c.actual, c.expected, tensor=stage.tensor, against="torch", context=c.context
                    )
                    pairs += 1
                    where = f"seed {seed} {dtype} {mode} {stage.tensor} ({status})"
                    if found is not None:
                        claims.append(f"{where}: {found}")
                    if status == "fail":
                        failed.append(where)
    record_property("explained_pairs", pairs)
    print(f"\nexplainer: {pairs} correct (framework, reference) pairs, {len(claims)} explained")
    assert pairs and not claims, f"{len(claims)} false explanation(s):\n" + "\n".join(claims[:20])
    # NOTE: the premise: these are correct results (test_stability.py owns the tolerances).
    assert not failed, f"the reference disagrees with torch: {failed[:10]}"


def test_no_suspect_from_one_informative_element():
    """A max-pool backward with `=` for `+=` at a 3 x 3 input whose four windows chose the
    centre: one nonzero number on each side, which "a constant factor" fits exactly. Zeros on
    both sides are no evidence, so nothing is named; with four informative elements the
    factor is named again."""
    ours, theirs = np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3))
    ours[0, 0, 1, 1], theirs[0, 0, 1, 1] = -0.736454087, 0.132813638
    assert explain(theirs, ours, tensor="maxpool.dX", against="reference") is None
    ours[0, 0, 0, :], theirs[0, 0, 0, :] = (1.0, 2.0, 3.0), (-0.180342 * np.array([1.0, 2.0, 3.0]))
    theirs[0, 0, 1, 1] = -0.180342 * ours[0, 0, 1, 1]
    fit = explain(theirs, ours, tensor="maxpool.dX", against="reference")
    assert fit is not None and fit.suspect == "factor", fit

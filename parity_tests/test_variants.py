"""The published-code variants (reference/published.py) are caught by the suite, each at the
tensor its departure changes.

Each variant runs through the suite's own machinery (a Harness on the variant, the
stage-isolated checks in forward/backward order). Variants are expected to disagree: these
tests pass when the first failing stage check is the tensor the published code changes.
Each test records one "detection" record (impl published:Dn) that audit.md shows.
"""

import numpy as np
import pytest

from parity_tests import mutants
from parity_tests.impls import resolve_impl
from parity_tests.stages import STAGES
from reference.published import ORDER, VARIANTS

CROSS_CHECKED = ("D2", "D12")  # also caught through TensorFlow's stage operations


@pytest.fixture
def detector(parity_settings) -> str:
    frameworks = parity_settings.frameworks
    return "torch" if "torch" in frameworks else frameworks[0]


def detect(parity, run_config, article_batch, step, framework):
    """Localise `step` through `framework`'s stage checks; record and return the finding."""
    harness = mutants.detection_harness(run_config, article_batch, step)
    recorder = mutants.quiet_recorder(parity, mutants.label(step))
    finding = mutants.localise(harness, recorder, framework, step.dtype)
    parity.add(mutants.detection_record(finding, step))
    return finding


def assert_caught(finding, step):
    assert finding.detected and finding.first_tensor == step.first, mutants.message(finding, step)
    assert finding.first_suspect == (step.explains or ""), (
        f"{mutants.label(step)}: explainer verdict on {step.first} changed: expected suspect "
        f"{step.explains!r}, got {finding.first_explanation!r}"
    )


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=list(VARIANTS))
def test_variant_detected(parity, run_config, article_batch, detector, variant):
    assert_caught(detect(parity, run_config, article_batch, variant, detector), variant)


@pytest.mark.parametrize("variant", [VARIANTS[v] for v in CROSS_CHECKED], ids=CROSS_CHECKED)
def test_variant_detected_by_tensorflow(parity, parity_settings, run_config, article_batch, variant):
    if "tensorflow" not in parity_settings.frameworks:
        pytest.skip("tensorflow deselected by --parity-frameworks")
    assert_caught(detect(parity, run_config, article_batch, variant, "tensorflow"), variant)


def test_unmodified_step_is_not_flagged(parity, run_config, article_batch, detector):
    # NOTE: the control: without a departure, no stage check may fail, or "detected" is free.
    harness = mutants.detection_harness(run_config, article_batch, mutants.STEPPER)
    finding = mutants.localise(harness, mutants.quiet_recorder(parity, "stepper"), detector, "float64")
    assert not finding.disagree, mutants.message(finding, mutants.STEPPER)


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=list(VARIANTS))
def test_variant_keeps_names_layout_and_dtype(run_config, article_batch, variant):
    out = mutants.detection_harness(run_config, article_batch, variant).implementation("float64")
    reference = mutants.detection_harness(run_config, article_batch, mutants.STEPPER).implementation(
        "float64"
    )
    shapes = {k: np.shape(out[k]) for k in reference}
    assert shapes == {k: np.shape(v) for k, v in reference.items()}
    assert {k: str(np.asarray(out[k]).dtype) for k in reference} == {k: "float64" for k in reference}


def test_order_is_the_stage_order():
    assert ORDER == tuple(s.tensor for s in STAGES)


@pytest.mark.parametrize("name", ["published:D3", "mutant:sign_dE_dO"])
def test_selectable_by_name(name):
    kind, key = name.split(":")
    table = VARIANTS if kind == "published" else mutants.MUTANTS
    assert resolve_impl(name) is table[key]


@pytest.mark.parametrize("name", ["published:D9", "mutant:nope"])
def test_unknown_variant_names_the_choices(name):
    with pytest.raises(ValueError, match="one of"):
        resolve_impl(name)

"""The published-code variants (reference/published.py) are caught by the suite, each at the
tensor its departure changes.

Each variant runs through the suite's own machinery (a Harness on the variant, the
stage-isolated checks in forward/backward order). Variants are expected to disagree: these
tests pass when the first failing stage check is the tensor the published code changes.
Each test records one "detection" record (impl published:Dn) that audit.md shows.
"""

import numpy as np
import pytest

from parity_tests import detection, mutants
from parity_tests.impls import resolve_impl
from parity_tests.stages import STAGES
from reference.published import ORDER, VARIANTS
from reports import normalise_record

CROSS_CHECKED = ("D2", "D12")  # also caught through TensorFlow's stage operations


@pytest.fixture
def detector(parity_settings) -> str:
    frameworks = parity_settings.frameworks
    return "torch" if "torch" in frameworks else frameworks[0]


def find(harnesses, parity, run_config, article_batch, step, framework):
    """Localise `step` through `framework`'s stage checks; return the finding."""
    harness = harnesses(run_config, article_batch, step)
    recorder = detection.quiet_recorder(parity, detection.label(step))
    return detection.localise(harness, recorder, framework, step.dtype, harnesses)


def detect(harnesses, parity, run_config, article_batch, step, framework):
    """find(), and record the finding's detection record."""
    finding = find(harnesses, parity, run_config, article_batch, step, framework)
    parity.add(detection.detection_record(finding, step))
    return finding


def assert_caught(finding, step):
    assert finding.detected and finding.first_tensor == step.first, detection.message(finding, step)
    assert finding.first_suspect == (step.explains or ""), (
        f"{detection.label(step)}: explainer verdict on {step.first} changed: expected suspect "
        f"{step.explains!r}, got {finding.first_explanation!r}"
    )


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=list(VARIANTS))
def test_variant_detected(detection_harness_for, parity, run_config, article_batch, detector, variant):
    finding = detect(detection_harness_for, parity, run_config, article_batch, variant, detector)
    assert_caught(finding, variant)


@pytest.mark.parametrize("variant", [VARIANTS[v] for v in CROSS_CHECKED], ids=CROSS_CHECKED)
def test_variant_detected_by_tensorflow(
    detection_harness_for, parity, parity_settings, run_config, article_batch, variant
):
    if "tensorflow" not in parity_settings.frameworks:
        pytest.skip("tensorflow deselected by --parity-frameworks")
    finding = detect(detection_harness_for, parity, run_config, article_batch, variant, "tensorflow")
    assert_caught(finding, variant)


def test_unmodified_step_is_not_flagged(
    detection_harness_for, parity, run_config, article_batch, detector
):
    # NOTE: the control: without a departure, no stage check may fail, or "detected" is free.
    harness = detection_harness_for(run_config, article_batch, detection.STEPPER)
    recorder = detection.quiet_recorder(parity, "stepper")
    finding = detection.localise(harness, recorder, detector, "float64", detection_harness_for)
    assert not finding.disagree, detection.message(finding, detection.STEPPER)


@pytest.mark.parametrize(
    ("step", "first", "disagreeing", "budgets", "kind", "suspect"),
    [
        (VARIANTS["D12"], "dE_df", "dE_df", None, "value", "factor"),
        # An update check is fed its own gradient only: the wrong dE_db reaches b_new alone.
        (mutants.MUTANTS["bias_grad_not_summed"], "dE_db", "dE_db, b_new",
         "shape, error", "shape", "unreduced"),
        (mutants.MUTANTS["float64_accumulation"], "dE_df", "dE_df, f_new",
         "dtype, dtype", "dtype", "dtype"),
    ],
    ids=["D12", "bias_grad_not_summed", "float64_accumulation"],
)  # fmt: skip
def test_detection_record_carries_the_finding_in_fields(
    detection_harness_for, parity, run_config, article_batch, detector,
    step, first, disagreeing, budgets, kind, suspect,
):  # fmt: skip
    finding = find(detection_harness_for, parity, run_config, article_batch, step, detector)
    rec = normalise_record(detection.detection_record(finding, step))
    assert (rec["first_diverging"], rec["disagreeing"]) == (first, disagreeing)
    names, texts = rec["disagreeing"].split(", "), rec["disagreeing_budgets"].split(", ")
    assert len(texts) == len(names)
    if budgets is None:  # numbers: each the budget of that tensor's stage record
        by_tensor = {r["tensor"]: r["budget_used"] for r in finding.records}
        assert texts == [f"{by_tensor[n]:.3g}" for n in names]
    else:
        assert rec["disagreeing_budgets"] == budgets
    assert (rec["mismatch_kind"], rec["suspect"]) == (kind, suspect)
    assert rec["explanation"] == finding.first["explanation"] and rec["explanation"]
    assert rec["passed"] and rec["note"] == f"caught at {first}, the tensor it changes"


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=list(VARIANTS))
def test_variant_keeps_names_layout_and_dtype(detection_harness_for, run_config, article_batch, variant):
    out = detection_harness_for(run_config, article_batch, variant).implementation("float64")
    reference = detection_harness_for(run_config, article_batch, detection.STEPPER).implementation(
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

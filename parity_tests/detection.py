"""The localiser: catches a published-code variant or a mutant at the tensor it changes.

`in_order(recorder, framework, dtype, checks)` is the one localiser: it runs stage-isolated
checks in forward/backward order and returns a `Finding`: every comparison, the tensors
that disagree and the first of them. Stage isolation is what localises: every operation is
fed the implementation's own inputs, so only the changed operation disagrees (downstream
tensors computed correctly from a wrong input agree). Two callers build its checks:
`localise(harness, ...)` for an implementation of the article's train_step (the article
view's stages against a framework), and parity_tests/model_mutants.py for a network with a
broken layer kind (each tensor of Network.order against the float64 truth,
ModelHarness.stage_check with model_harness.TRUTH).

`detection_record(finding, step)` turns a finding into the report's detection record
(mode "detection"): the finding goes into fields of its own (first_diverging, disagreeing,
disagreeing_budgets, explanation, suspect, mismatch_kind), which reports/audit.py reads by
name.

Harnesses and the unmodified step's stage records are cached per session by a
`HarnessCache`, the `detection_harness_for` fixture (parity_tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from parity_tests.compare import ParityRecorder, explain_check
from parity_tests.harness import Harness, RunConfig
from parity_tests.mutants import Mutant
from parity_tests.stages import STAGES
from reference.data import ARTICLE_IMAGES
from reference.published import VARIANTS, ArticleStep
from reports import normalise_record

DISAGREE = ("fail", "error")
STEPPER = ArticleStep()  # the unmodified step: the control every detection is relative to
REUSED = "inputs and output identical to the unmodified step's: its comparison reused"


def label(step: ArticleStep) -> str:
    """The `--parity-impl` name of a variant or mutant (published:D3, mutant:sign_dE_dO)."""
    if isinstance(step, Mutant):
        return f"mutant:{step.id}"
    if VARIANTS.get(step.id) is step:
        return f"published:{step.id}"
    return "stepper"


class QuietRecorder(ParityRecorder):
    """ParityRecorder.check's measurement, message and explainer, without storing a record:
    the caller decides what goes into the report. Its comparisons only localise, so they
    skip the metrics no verdict uses (ULP distance, q99 budget, truth)."""

    brief = True

    def add(self, record: dict) -> dict:
        return normalise_record(record)


@dataclass(frozen=True)
class Finding:
    impl: str
    framework: str
    dtype: str
    records: tuple  # one record per stage, forward/backward order

    @property
    def disagree(self) -> list[dict]:
        return [r for r in self.records if r["status"] in DISAGREE]

    @property
    def first(self) -> dict | None:
        return self.disagree[0] if self.disagree else None

    @property
    def detected(self) -> bool:
        return self.first is not None

    @property
    def first_tensor(self) -> str:
        return self.first["tensor"] if self.first else ""

    @property
    def first_explanation(self) -> str:
        """The explainer's verdict on the first diverging tensor ("" if none was made)."""
        return self.first["explanation"] if self.first else ""

    @property
    def first_suspect(self) -> str:
        """Its suspect's short name ("" when nothing fits)."""
        return self.first["suspect"] if self.first else ""


def detection_config(run_config: RunConfig, impl_label: str) -> RunConfig:
    # NOTE: detection needs informative gradients (the article's init zeroes them, F1) and
    # the declared sum reduction that the mean-for-sum mutant departs from, and the article's
    # 200 images (at one image a mean is a sum and a reshape a transpose: nothing to catch).
    return dataclasses.replace(
        run_config,
        init_scheme="informative",
        reduction="sum",
        impl=impl_label,
        n_images=ARTICLE_IMAGES,
    )


class HarnessCache:
    """A test module's detection harnesses and control records (the `detection_harness_for`
    fixture): `cache(run_config, data, step)` is the Harness of `step` under the detection
    configuration of `run_config` (one per configuration and step label; a Harness caches
    the step's run and the framework runs), and `control(...)` the unmodified step's tensors
    and stage records, which `localise` reuses. It serves one data set: the session's.

    The unmodified step's harnesses stay; of the others only the `keep` last used do (each
    holds every tensor of its step and the stage runs, ~70 MB at 200 images: 30 variants
    and mutants held together were ~2 GB). One asked for again after that is made again:
    the same step on the same data and weights, so the same tensors and records."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._harnesses: dict = {}  # detection config (impl: the step's label) -> Harness
        self._made: dict = {}  # detection config -> (data, step): one of each per label
        self._controls: dict = {}  # (the control's config, framework, dtype) -> (tensors, records)

    def __call__(self, run_config: RunConfig, data, step: ArticleStep) -> Harness:
        config = detection_config(run_config, label(step))
        made = self._made.setdefault(config, (data, step))
        if made[0] is not data or made[1] is not step:
            raise ValueError(
                f"detection harness {config.impl!r} was made for another "
                f"{'data set' if made[0] is not data else 'step of that name'}: "
                "a HarnessCache serves one session's data and one step per label"
            )
        harness = self._harnesses.pop(config, None)  # put back last: the most recent
        if harness is None:
            harness = Harness(config, data, impl=step)
        self._harnesses[config] = harness
        others = [k for k, h in self._harnesses.items() if type(h.impl) is not ArticleStep]
        for k in others[: max(0, len(others) - self.keep)]:
            del self._harnesses[k]
        return harness

    def control(self, harness: Harness, recorder: ParityRecorder, framework: str, dtype: str):
        """The unmodified step's tensors and stage records under `harness`'s run, or
        (None, None) when `harness` runs the unmodified step itself."""
        if type(harness.impl) is ArticleStep:
            return None, None
        base = self(harness.config, harness.data, STEPPER)
        key = (base.config, framework, dtype)
        if key not in self._controls:
            quiet = QuietRecorder(recorder.node, dataclasses.replace(recorder.context, impl="stepper"))
            records = {s.tensor: _stage_record(base, quiet, s, framework, dtype) for s in STAGES}
            self._controls[key] = (base.implementation(dtype), records)
        return self._controls[key]


def quiet_recorder(parity: ParityRecorder, impl_label: str) -> QuietRecorder:
    context = dataclasses.replace(
        parity.context, impl=impl_label, init_scheme="informative", reduction="sum"
    )
    return QuietRecorder(parity.node, context)


def localise(
    harness: Harness,
    recorder: ParityRecorder,
    framework: str,
    dtype: str,
    harnesses: HarnessCache | None = None,
) -> Finding:
    """Every stage-isolated check of `harness`'s implementation (an article train_step),
    forward/backward order, through `in_order`.

    With `harnesses`, a stage whose inputs and output are bitwise those of the unmodified
    step (the same operation fed the same arrays, so the same comparison) reuses that
    step's record; the reused record says so in its note. Only the stages a change reaches
    are recomputed.
    """
    base_tensors, base_records = (
        harnesses.control(harness, recorder, framework, dtype) if harnesses else (None, None)
    )
    mine = harness.implementation(dtype)

    def reused(stage) -> dict | None:
        names = (*stage.inputs, stage.tensor)
        if base_tensors is None or not all(_same(mine.get(n), base_tensors.get(n)) for n in names):
            return None
        rec = dict(
            base_records[stage.tensor], **recorder._base(**_stage_fields(stage, framework, dtype))
        )
        rec["note"] = "; ".join(p for p in (rec["note"], REUSED) if p)
        return rec

    checks = [
        (
            _stage_fields(stage, framework, dtype),
            lambda stage=stage: harness.stage_check(stage, framework, dtype),
            reused(stage),
        )
        for stage in STAGES
    ]
    return in_order(recorder, framework, dtype, checks)


def in_order(recorder: ParityRecorder, framework: str, dtype: str, checks) -> Finding:
    """The localiser: `checks` is (record fields, compute, reused) per stage in forward /
    backward order, compute() -> harness.Check, reused a record to take as it is (or None).
    Each is compared through `recorder` without failing; the Finding holds them all."""
    records = tuple(
        reused if reused is not None else _checked(recorder, fields, compute)
        for fields, compute, reused in checks
    )
    return Finding(recorder.context.impl, framework, dtype, records)


def _same(a, b) -> bool:
    if a is None or b is None:
        return False
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _stage_fields(stage, framework, dtype) -> dict:
    """The record fields that name one stage-isolated check of the article view."""
    return dict(
        tensor=stage.tensor,
        equation=stage.equation,
        step=stage.step,
        quantity=stage.quantity,
        mode="stage",
        against=framework,
        dtype=dtype,
    )


def _stage_record(harness, recorder, stage, framework, dtype) -> dict:
    fields = _stage_fields(stage, framework, dtype)
    return _checked(recorder, fields, lambda: harness.stage_check(stage, framework, dtype))


def _checked(recorder, fields: dict, compute) -> dict:
    try:
        c, err = compute(), None
    except Exception as exc:  # a crash in a stage is a detection too (an error record)
        c, err = None, exc
    if c is not None:
        try:
            return recorder.check(**fields, compute=lambda: c, fail=False)
        except Exception as exc:  # compare_arrays refuses it, e.g. a tolerance of W's shape
            err = exc  # for an array of W^T's shape
    verdict, note = explain_check(c, fields["tensor"], fields["against"]) if c is not None else ({}, "")
    return recorder.add(
        recorder._base(
            **fields,
            **verdict,
            status="error",
            passed=False,
            mismatch_kind="error",
            error=f"{type(err).__name__}: {err}",
            note=note,
        )
    )


def _budget_text(rec: dict) -> str:
    """A stage record's budget used (3 digits), or how it disagrees where it has none (or,
    failed on precision within its allowance, where the budget does not say it)."""
    if rec["status"] == "error":
        return "error"
    if rec["mismatch_kind"] in ("shape", "dtype", "precision"):
        return rec["mismatch_kind"]
    return f"{rec['budget_used']:.3g}"


def detection_record(finding: Finding, step: ArticleStep) -> dict:
    """One record for the report: the detection check of `step` (mode "detection").

    Its comparison fields are those of the first diverging tensor. budget_used is the
    detection margin, tolerance / error at the worst element of that tensor (<= 1: caught;
    0 for a shape or dtype mismatch or an error), status pass when the step was caught at
    the tensor it changes. The finding itself is in fields: first_diverging, disagreeing and
    disagreeing_budgets (every disagreeing tensor and its budget, forward/backward order),
    explanation and suspect (the explainer's verdict on the first), mismatch_kind (the
    first's). The note is for people.
    """
    first = finding.first
    localised = finding.first_tensor == step.first
    # Not detected: the (agreeing) stage record of the tensor the step changes carries the
    # run fields; the verdict fields below replace its comparison verdict.
    rec = dict(
        first or next((r for r in finding.records if r["tensor"] == step.first), finding.records[0])
    )
    budget = first["budget_used"] if first else math.nan
    margin = (
        0.0
        if first and (math.isnan(budget) or first["status"] == "error")
        else 1.0 / budget
        if first and budget > 0
        else math.nan
    )
    if not first:
        note = f"not detected: expected at {step.first}"
    elif localised:
        note = f"caught at {first['tensor']}, the tensor it changes"
    else:
        note = f"caught at {first['tensor']}, expected at {step.first}"
    rec.update(
        mode="detection",
        impl=finding.impl,
        against=finding.framework,
        dtype=finding.dtype,
        budget_used=margin,
        budget_q99=math.nan,
        status="pass" if first and localised else "fail",
        passed=bool(first and localised),
        vacuous=False,
        note=note,
        tolerance_rule="detection: caught when its first diverging tensor exceeds the "
        "stage tolerance, or is computed at markedly fewer bits (mismatch_kind precision); "
        "budget = tolerance / error there (<= 1: caught beyond the tolerance)",
        first_diverging=finding.first_tensor,
        disagreeing=", ".join(r["tensor"] for r in finding.disagree),
        disagreeing_budgets=", ".join(_budget_text(r) for r in finding.disagree),
        explanation=finding.first_explanation,
        suspect=finding.first_suspect,
        mismatch_kind=first["mismatch_kind"] if first else "",
    )
    if first is None:
        rec["error"] = "not detected: every stage check agrees"
    return rec


def message(finding: Finding, step: ArticleStep) -> str:
    lines = [
        f"{label(step)} ({step.title}) vs {finding.framework} [{finding.dtype}]: "
        f"expected the first diverging tensor to be {step.first}, "
        f"got {finding.first_tensor or 'none (not detected)'}"
    ]
    for r in finding.records:
        lines.append(
            f"  {r['tensor']:8s} {r['status']:6s} budget {_budget_text(r)} {r.get('note', '')}".rstrip()
        )
    return "\n".join(lines)

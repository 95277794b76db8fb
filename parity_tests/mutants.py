"""The mutation catalogue and the localiser that catches each mutant at its tensor.

A mutant is a typical derivation mistake (beyond the published-code variants D1..D13 of
reference.published): the reference step (`ArticleStep`) with one method changed, so it
has the model's `train_step` API (`--parity-impl mutant:sign_dE_dO` runs the whole suite on
it). Each carries the tensor it must be caught at (`first`, in forward/backward order), the
equation it breaks, the dtype in which it shows, and the explainer suspect expected for it.

`localise(harness, recorder, framework, dtype)` runs the suite's own stage-isolated checks,
in forward/backward order, and returns a `Finding`: every comparison, the tensors that
disagree and the first of them. Stage isolation is what localises: every framework
operation is fed the implementation's own inputs, so only the changed operation disagrees
(downstream tensors computed correctly from a wrong input agree).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from parity_tests.compare import ParityRecorder, explanation_note
from parity_tests.harness import Harness, RunConfig
from parity_tests.stages import STAGES
from reference import conv, dense, flatten, patches
from reference.data import ARTICLE_IMAGES
from reference.published import VARIANTS, ArticleStep
from reports import normalise_record
from reports.audit import format_detection_note
from reports.explain import suspect_of

DISAGREE = ("fail", "error")


class Mutant(ArticleStep):
    """A derivation mistake: the reference step with one method changed."""


class SignDEdO(Mutant):
    id, equation, first, explains = "sign_dE_dO", "E8", "dE_dO", "factor"
    title = "dE/dO = y - O: the sign of E8 flipped"

    def dE_dO(self, t, lr, reduction):
        return -super().dE_dO(t, lr, reduction)


class SigmoidGradOfZ2(Mutant):
    id, equation, first, explains = "sigmoid_grad_of_Z2", "E9", "dO_dZ2", None
    title = "dO/dZ2 = Z2 (1 - Z2): the sigmoid derivative from the pre-activation, not from O"

    def dO_dZ2(self, t, lr, reduction):
        return t.Z2 * (1 - t.Z2)


class SigmoidGradOfZ1(Mutant):
    id, equation, first, explains = "sigmoid_grad_of_Z1", "E14", "dE_dZ1", None
    title = "dA1/dZ1 = Z1 (1 - Z1): the conv sigmoid derivative from the pre-activation"

    def dE_dZ1(self, t, lr, reduction):
        return t.dE_dA1 * (t.Z1 * (1 - t.Z1))


class MissingTranspose(Mutant):
    id, equation, first, explains = "missing_transpose_dE_dA1", "E13", "dE_dA1", "reshape_for_transpose"
    title = (
        "dE/dA1 = (dE/dZ2^T . W^T).reshape(F, N): a reshape where a transpose belongs, so "
        "images and W's rows mix"
    )

    def dE_dA1(self, t, lr, reduction):
        rows = t.dE_dZ2.T @ t.W.T  # (N, F): right values
        return flatten.unflatten(rows.reshape(t.W.shape[0], -1), t.f.shape[2])


class TrueConvolution(Mutant):
    id, equation, first, explains = "true_convolution", "E1", "Z1", None
    title = "Z1 with the filter flipped (a true convolution, not the cross-correlation)"

    def Z1(self, t, lr, reduction):
        return conv.conv_forward(t.patches, np.ascontiguousarray(t.f[::-1, ::-1]))


class FlippedFilterGradient(Mutant):
    id, equation, first, explains = "flipped_dE_df", "E16", "dE_df", "flipped_kernel"
    title = "dE/df computed as a true convolution: the filter gradient rotated 180 degrees"

    def dE_df(self, t, lr, reduction):
        return np.ascontiguousarray(super().dE_df(t, lr, reduction)[::-1, ::-1])


def _flatten_position_major(A1):
    N, K, P = A1.shape
    return A1.transpose(0, 2, 1).reshape(N, P * K).T  # row p * K + k


class FlattenPositionMajor(Mutant):
    id, equation, first, explains = "flatten_position_major", "E4", "Z2", None
    title = (
        "features flattened position-major (p * K + k) instead of the article's filter-major "
        "order, consistently in Z2, dE/dW and dE/dA1"
    )

    def Z2(self, t, lr, reduction):
        return dense.dense_forward(_flatten_position_major(t.A1), t.W, t.b)

    def dE_dW(self, t, lr, reduction):
        return dense.dense_grad_weights(_flatten_position_major(t.A1), t.dE_dZ2)

    def dE_dA1(self, t, lr, reduction):
        N, K, P = t.A1.shape
        flat = dense.dense_grad_input(t.W, t.dE_dZ2)  # (P * K, N)
        return np.ascontiguousarray(flat.T.reshape(N, P, K).transpose(0, 2, 1))


class LossMeanForSum(Mutant):
    id, equation, first, explains = "batch_mean_for_sum", "E7,E8", "E", "factor"
    title = "E and dE/dO averaged over the batch where the run declares a sum"

    def E(self, t, lr, reduction):
        return super().E(t, lr, "mean")

    def dE_dO(self, t, lr, reduction):
        return super().dE_dO(t, lr, "mean")


class BiasGradNotSummed(Mutant):
    id, equation, first, explains = "bias_grad_not_summed", "E12", "dE_db", "unreduced"
    title = "dE/db = dE/dZ2 per image: the batch sum of E12 not taken (b_new broadcasts to (1, N))"

    def dE_db(self, t, lr, reduction):
        return t.dE_dZ2.copy()


class OffByOneWindow(Mutant):
    id, equation, first, explains = "off_by_one_window", "E1,E2", "patches", "shift"
    title = "windows start one pixel late (1-based window loop over a zero-padded image)"

    def patches(self, t, lr, reduction):
        n, _, N = t.X.shape
        padded = np.zeros((n + 1, n + 1, N), dtype=t.X.dtype)
        padded[:n, :n] = t.X
        return patches.extract_patches(np.ascontiguousarray(padded[1:, 1:]), t.f.shape[0])


class UntransposedImages(Mutant):
    id, equation, first, explains = "untransposed_images", "E1", "patches", "image_transpose"
    title = "windows cut from the untransposed images (the article's X = x_train.T forgotten)"

    def patches(self, t, lr, reduction):
        return patches.extract_patches(np.ascontiguousarray(t.X.transpose(1, 0, 2)), t.f.shape[0])


class LrWrongSign(Mutant):
    id, equation, first, explains = "lr_wrong_sign", "E17", "f_new", "update_sign"
    title = "new = old + lr * gradient: gradient ascent"

    def f_new(self, t, lr, reduction):
        return t.f + lr * t.dE_df

    def W_new(self, t, lr, reduction):
        return t.W + lr * t.dE_dW

    def b_new(self, t, lr, reduction):
        return t.b + lr * t.dE_db


class UpdateTwice(Mutant):
    id, equation, first, explains = "update_applied_twice", "E17", "W_new", "update_twice"
    title = "the W update line runs twice: W - 2 lr dE/dW"

    def W_new(self, t, lr, reduction):
        return t.W - lr * t.dE_dW - lr * t.dE_dW


class UpdateMissing(Mutant):
    id, equation, first, explains = "update_not_applied", "E17", "b_new", "update_missing"
    title = "b is never updated"

    def b_new(self, t, lr, reduction):
        return t.b.copy()


class LrInGradient(Mutant):
    id, equation, first, explains = "lr_applied_twice", "E11,E17", "dE_dW", "factor"
    title = "dE/dW stored already multiplied by lr, then the update multiplies by lr again (lr^2)"

    def dE_dW(self, t, lr, reduction):
        return lr * super().dE_dW(t, lr, reduction)


class HalfFactorDropped(Mutant):
    id, equation, first, explains = "half_factor_dropped", "E7,E8", "E", "factor"
    title = "E = (y - O)^2 without the 1/2 (and dE/dO = -2 (y - O) to match)"

    def E(self, t, lr, reduction):
        return 2 * super().E(t, lr, reduction)

    def dE_dO(self, t, lr, reduction):
        return 2 * super().dE_dO(t, lr, reduction)


class SigmoidFactorDropped(Mutant):
    id, equation, first, explains = "sigmoid_factor_dropped", "E9,E11", "dE_dZ2", None
    title = "dE/dZ2 = dE/dO: the factor O (1 - O) of E11 dropped"

    def dE_dZ2(self, t, lr, reduction):
        return t.dE_dO.copy()


class TransposedDEdW(Mutant):
    id, equation, first, explains = "dE_dW_transposed", "E11", "dE_dW", "transpose"
    title = "dE/dW = dE/dZ2 . A1^T: W^T's shape (1, F) instead of W's (F, 1)"

    def dE_dW(self, t, lr, reduction):
        return t.dE_dZ2 @ flatten.flatten(t.A1).T

    def W_new(self, t, lr, reduction):
        return t.W - lr * t.dE_dW.T


class Float64Accumulation(Mutant):
    id, equation, first, explains, dtype = ("float64_accumulation", "E16", "dE_df", "dtype", "float32")
    title = (
        "dE/df accumulated in float64 and returned as float64 in a float32 run (a silent "
        "upcast; the values are fine, the dtype is not)"
    )

    def dE_df(self, t, lr, reduction):
        return conv.conv_grad_filter(t.patches.astype(np.float64), t.dE_dZ1.astype(np.float64))


MUTANTS = {
    m.id: m
    for m in (
        SignDEdO(),
        SigmoidGradOfZ2(),
        SigmoidGradOfZ1(),
        MissingTranspose(),
        TrueConvolution(),
        FlippedFilterGradient(),
        FlattenPositionMajor(),
        LossMeanForSum(),
        BiasGradNotSummed(),
        OffByOneWindow(),
        UntransposedImages(),
        LrWrongSign(),
        UpdateTwice(),
        UpdateMissing(),
        LrInGradient(),
        HalfFactorDropped(),
        SigmoidFactorDropped(),
        TransposedDEdW(),
        Float64Accumulation(),
    )
}


def as_dicts() -> list[dict]:
    """Plain-data catalogue for reports/audit.py."""
    return [
        dict(
            id=m.id,
            title=m.title,
            equation=m.equation,
            first=m.first,
            dtype=m.dtype,
            explains=m.explains or "",
        )
        for m in MUTANTS.values()
    ]


STEPPER = ArticleStep()  # the unmodified step: the control every detection is relative to


def label(step: ArticleStep) -> str:
    """The `--parity-impl` name of a variant or mutant (published:D3, mutant:sign_dE_dO)."""
    if isinstance(step, Mutant):
        return f"mutant:{step.id}"
    if VARIANTS.get(step.id) is step:
        return f"published:{step.id}"
    return "stepper"


# --- localisation -------------------------------------------------------------------------


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
        """The explainer's verdict on the first diverging tensor (from its record's note)."""
        note = self.first["note"] if self.first else ""
        i = note.find("explainer: ")
        return note[i + len("explainer: ") :] if i >= 0 else ""

    @property
    def first_suspect(self) -> str:
        return suspect_of(self.first_explanation)


_HARNESSES: dict = {}


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


def detection_harness(run_config: RunConfig, data, step: ArticleStep) -> Harness:
    """One Harness per implementation and run (it caches the step and the framework runs)."""
    config = detection_config(run_config, label(step))
    key = (config, id(data), id(step))
    if key not in _HARNESSES:
        _HARNESSES[key] = Harness(config, data, impl=step)
    return _HARNESSES[key]


def quiet_recorder(parity: ParityRecorder, impl_label: str) -> QuietRecorder:
    context = dataclasses.replace(
        parity.context, impl=impl_label, init_scheme="informative", reduction="sum"
    )
    return QuietRecorder(parity.node, context)


def localise(harness: Harness, recorder: ParityRecorder, framework: str, dtype: str) -> Finding:
    """Every stage-isolated check of `harness`'s implementation, forward/backward order.

    A stage whose inputs and output are bitwise those of the unmodified step (the same
    operation fed the same arrays, so the same comparison) reuses that step's record; the
    reused record says so in its note. Only the stages a change reaches are recomputed.
    """
    base_tensors, base_records = _baseline(harness, recorder, framework, dtype)
    mine = harness.implementation(dtype)
    records = []
    for stage in STAGES:
        names = (*stage.inputs, stage.tensor)
        if base_tensors is not None and all(_same(mine.get(n), base_tensors.get(n)) for n in names):
            fields = dict(
                tensor=stage.tensor,
                equation=stage.equation,
                step=stage.step,
                quantity=stage.quantity,
                mode="stage",
                against=framework,
                dtype=dtype,
            )
            rec = dict(base_records[stage.tensor], **recorder._base(**fields))
            rec["note"] = "; ".join(p for p in (rec["note"], REUSED) if p)
            records.append(rec)
        else:
            records.append(_stage_record(harness, recorder, stage, framework, dtype))
    return Finding(recorder.context.impl, framework, dtype, tuple(records))


REUSED = "inputs and output identical to the unmodified step's: its comparison reused"
_BASELINES: dict = {}


def _same(a, b) -> bool:
    if a is None or b is None:
        return False
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _baseline(harness, recorder, framework, dtype):
    """The unmodified step's tensors and stage records under the same run (cached)."""
    if type(harness.impl) is ArticleStep:
        return None, None
    key = (dataclasses.replace(harness.config, impl=""), id(harness.data), framework, dtype)
    if key not in _BASELINES:
        base = detection_harness(harness.config, harness.data, STEPPER)
        quiet = QuietRecorder(recorder.node, dataclasses.replace(recorder.context, impl="stepper"))
        records = {s.tensor: _stage_record(base, quiet, s, framework, dtype) for s in STAGES}
        _BASELINES[key] = (base.implementation(dtype), records)
    return _BASELINES[key]


def _stage_record(harness, recorder, stage, framework, dtype) -> dict:
    fields = dict(
        tensor=stage.tensor,
        equation=stage.equation,
        step=stage.step,
        quantity=stage.quantity,
        mode="stage",
        against=framework,
        dtype=dtype,
    )
    try:
        c, err = harness.stage_check(stage, framework, dtype), None
    except Exception as exc:  # a crash in a stage is a detection too (an error record)
        c, err = None, exc
    if c is not None:
        try:
            return recorder.check(**fields, compute=lambda: c, fail=False)
        except Exception as exc:  # compare_arrays refuses it, e.g. a tolerance of W's shape
            err = exc  # for an array of W^T's shape
    return recorder.add(
        recorder._base(
            **fields,
            status="error",
            passed=False,
            error=f"{type(err).__name__}: {err}",
            note=explanation_note(c, stage.tensor, framework) if c is not None else "",
        )
    )


def _budget_text(rec: dict) -> str:
    if rec["status"] == "error":
        return "error"
    note = rec.get("note", "")
    for kind in ("shape", "dtype"):
        if f"{kind} mismatch" in note:
            return kind
    return f"{rec['budget_used']:.3g}"


def detection_record(finding: Finding, step: ArticleStep) -> dict:
    """One record for the report: the detection check of `step` (mode "detection").

    Its comparison fields are those of the first diverging tensor. budget_used is the
    detection margin, tolerance / error at the worst element of that tensor (<= 1: caught;
    0 for a shape or dtype mismatch or an error), status pass when the step was caught at
    the tensor it changes. The note lists every disagreeing tensor with its budget and the
    explainer's verdict (reports.audit.parse_detection_note reads it back).
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
    note = format_detection_note(
        {
            "expected first": step.first,
            "first": finding.first_tensor or "none",
            "disagree": ", ".join(f"{r['tensor']} ({_budget_text(r)})" for r in finding.disagree)
            or "none",
            "explainer": finding.first_explanation or "none",
            "explainer suspect": finding.first_suspect or "none",
        }
    )
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
        "stage tolerance; budget = tolerance / error there (<= 1: caught)",
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

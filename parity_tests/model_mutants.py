"""The mutation catalogue of the spec-built networks: classic mistakes in the new layers.

parity_tests/mutants.py breaks the article's network; this catalogue breaks the layers of
reference/layers/ (X1..X12) as reference/network.py runs them. The mistakes themselves are
the layer kinds' own (each registry entry's `mistakes`, reference/layers/registry.py, beside
the maths they get wrong); this module runs and localises them. A `ModelMutant` is one layer
kind's functions replaced (`Network(spec, ops={kind: Ops(...)})`: every layer of that kind
in the spec gets them), with

- `first`: the layer-qualified tensor where it must be caught ("pool2.dX"),
- `case`: where it is checked: the spec, the loss reduction and the pixel scale of the
  images (most mistakes show on any input; some only where they apply: a stride, a
  padding, a tied window, logits large enough to overflow),
- `blind`: where it is NOT detectable, when there is such a place worth stating (the
  mistake computes the right numbers there, or numbers within rounding of them),
- `explains`: the mismatch explainer's suspect expected for it (parity_tests/explain.py).

Localisation (`localise`) is the suite's stage isolation applied to a Network: the mutant
runs one train_step in float32 on real images (a `ModelHarness` with the mutant network as
the network under test); then for every tensor of `Network.order` the stage truth is the
DEFAULT reference layer function in float64, fed the mutant network's own inputs to that
layer (its own input, upstream gradient, parameters), so only the broken layer disagrees
(`ModelHarness.stage_check` against `model_harness.TRUTH`, the stage rule of
parity_tests/model_stages.py, the one test_model.py uses). `detection.in_order`, the
suite's one localiser, compares them in order; the first disagreeing tensor is where the
mutant is caught; `detection.detection_record` turns the finding into the report's
detection record (impl "mutant:<id>", against "reference").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from parity_tests import model_stages
from parity_tests.detection import Finding, QuietRecorder, in_order
from parity_tests.model_harness import TRUTH, ModelHarness
from reference.layers import KINDS
from reference.layers.loss import LARGE_LOGITS_SCALE  # noqa: F401  (where the softmax case's images come from)
from reference.layers.registry import Case, LayerKind, Mistake
from reference.network import DEFAULT_OPS, Network, Ops

N_IMAGES = 32  # enough images for a batch reduction and for tied pooling windows
SEED = 0  # Network.init_params seed
LR = 0.1  # the update's learning rate: steps well above float32 rounding of the parameters
DTYPE = "float32"  # the mutants run in the frameworks' training dtype; truths in float64
AGAINST = TRUTH  # the other side of every stage check: the default layer in float64
INIT = "torch_default"  # Network.init_params: U(-1/sqrt(fan_in), 1/sqrt(fan_in))


@dataclass(frozen=True)
class ModelMutant:
    id: str
    kind: str  # the layer kind whose functions it replaces (a DEFAULT_OPS key)
    equation: str  # the X ids it breaks
    first: str  # the layer-qualified tensor where it must be caught, in `case`
    case: Case
    title: str  # the mistake, in words
    explains: str  # the explainer's suspect for it
    ops: Ops
    caught_on: str = "any input"  # the inputs on which it shows
    blind: Case | None = None  # a case where it is (honestly) not detectable
    dtype: str = DTYPE

    @property
    def spec(self) -> str:
        return self.case.spec

    @property
    def reduction(self) -> str:
        return self.case.reduction

    @property
    def label(self) -> str:
        return f"mutant:{self.id}"


# --- the catalogue: every layer kind's mistakes, from its registry entry ----------------


def _mutant(kind: LayerKind, m: Mistake) -> ModelMutant:
    base = DEFAULT_OPS[kind.name]
    return ModelMutant(
        id=m.id,
        kind=kind.name,
        equation=m.equation,
        first=m.first,
        case=m.case,
        title=m.title,
        explains=m.explains,
        ops=Ops(m.forward or base.forward, m.backward or base.backward),
        caught_on=m.caught_on,
        blind=m.blind,
    )


CATALOGUE = tuple(_mutant(kind, m) for kind in KINDS.values() for m in kind.mistakes)
MODEL_MUTANTS = {m.id: m for m in CATALOGUE}


def as_dicts() -> list[dict]:
    """Plain-data catalogue for reports/audit.py (the fields of mutants.as_dicts())."""
    return [
        dict(
            id=m.id,
            title=f"{m.title} [{m.case}]",
            equation=m.equation,
            first=m.first,
            dtype=m.dtype,
            explains=m.explains,
        )
        for m in CATALOGUE
    ]


# --- running and localising -------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """What a ModelHarness reads of a run's configuration, for the catalogue's runs."""

    seed: int = SEED
    lr: float = LR
    reduction: str = "sum"


@dataclass(frozen=True)
class Run:
    """One train_step of a network (the case's spec, a layer kind's functions replaced by
    `ops`) in `dtype`, and the harness that checks it."""

    harness: ModelHarness
    dtype: str

    @property
    def net(self) -> Network:
        return self.harness.impl

    @property
    def X(self) -> np.ndarray:
        return self.harness.inputs(self.dtype)[0]

    @property
    def tensors(self) -> dict:
        """Every tensor the step made (those before a layer that raised, if one did)."""
        return self.harness.implementation(self.dtype)

    @property
    def crash(self) -> str:
        """The failure that stopped the step ("" when it completed)."""
        failure = self.harness.failure(self.dtype)
        return "" if failure is None else str(failure)


def batch(data, case: Case, n_images: int = N_IMAGES):
    """The first n_images of `data` (reference.data.ArticleData: X (28, 28, n)), pixels times
    case.pixel_scale, with their labels."""
    return SimpleNamespace(
        X=data.X[:, :, :n_images] * case.pixel_scale, labels=np.asarray(data.labels[:n_images])
    )


def run(case: Case, data, ops: Mapping | None = None, dtype: str = DTYPE) -> Run:
    """One train_step of Network(case.spec, ops) on `data`'s first N_IMAGES images, checked
    against Network(case.spec). A step that raises keeps what it made before the layer that
    raised (ModelHarness._partial_step); checks of the rest are errors naming that layer."""
    net = Network(case.spec)
    impl = Network(case.spec, ops=ops) if ops else None
    harness = ModelHarness(net, Config(reduction=case.reduction), batch(data, case), impl=impl)
    return Run(harness, dtype)


def stage_inputs(r: Run, tensor: str) -> dict:
    """What the layer of `tensor` was fed in `r`, by the names of its calling form, with its
    kind (ModelHarness.layer_arguments)."""
    return r.harness.layer_arguments(tensor, r.dtype)


def stage_check(r: Run, tensor: str):
    """The stage-isolated check of `tensor` against the float64 truth (a harness.Check)."""
    return r.harness.stage_check(tensor, AGAINST, r.dtype)


def _fields(r: Run, tensor: str, dtype: str) -> dict:
    node = r.net.node_of(tensor)
    quantity, equation = model_stages.quantity(r.net, tensor), model_stages.equation(r.net, tensor)
    return dict(
        tensor=tensor,
        equation=equation,
        step=node.kind,
        quantity=quantity,
        mode="stage",
        against=AGAINST,
        dtype=dtype,
    )


def recorder(parity, label: str, case: Case) -> QuietRecorder:
    """A recorder that measures like `parity` (the test's) without storing records."""
    context = dataclasses.replace(parity.context, impl=label, init_scheme=INIT, reduction=case.reduction)
    return QuietRecorder(parity.node, context)


def localise(r: Run, quiet: QuietRecorder) -> Finding:
    """Every tensor of r.net.order against its stage truth, in order (detection.in_order)."""
    checks = [(_fields(r, t, r.dtype), lambda t=t: stage_check(r, t), None) for t in r.net.order]
    return in_order(quiet, AGAINST, r.dtype, checks)


def detect(mutant: ModelMutant, data, parity, case: Case | None = None) -> Finding:
    """Run `mutant` on `case` (its own by default) and localise it."""
    case = case or mutant.case
    r = run(case, data, {mutant.kind: mutant.ops}, mutant.dtype)
    return localise(r, recorder(parity, mutant.label, case))


def message(finding: Finding, mutant: ModelMutant) -> str:
    lines = [
        f"{mutant.label} ({mutant.title}) on {mutant.case} [{finding.dtype}]: expected the "
        f"first diverging tensor to be {mutant.first}, got {finding.first_tensor or 'none'}; "
        f"explainer: {finding.first_explanation or 'none'}"
    ]
    for rec in finding.records:
        extra = rec.get("error") or rec.get("note") or ""
        lines.append(
            f"  {rec['tensor']:16s} {rec['status']:7s} budget {rec['budget_used']:.3g} {extra}".rstrip()
        )
    return "\n".join(lines)

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
runs one train_step in float32 on real images; then for every tensor of `Network.order`
the stage truth is the DEFAULT reference layer function (reference.network.DEFAULT_OPS)
in float64, fed the mutant network's own inputs to that layer (its own input, upstream
gradient, parameters), so only the broken layer disagrees. Each tensor is compared through
the suite's comparison (`ParityRecorder.check`: parity_tests.metrics.compare_arrays, the
explainer on a failure) under the stage rule of parity_tests/model_stages.py, the one
test_model.py uses (2 gamma(k, u) M: M the same expression on absolute values, k the
roundings of the operation). The first disagreeing tensor in `Network.order`
is where the mutant is caught; `detection.detection_record` turns the finding into the
report's detection record (impl "mutant:<id>", against "reference").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from parity_tests import model_stages, tolerance
from parity_tests.detection import Finding, QuietRecorder
from reference.layers import KINDS
from reference.layers.loss import LARGE_LOGITS_SCALE  # noqa: F401  (where the softmax case's images come from)
from reference.layers.registry import Case, LayerKind, Mistake, call_arguments
from reference.network import DEFAULT_OPS, Network, Ops, images_nchw

N_IMAGES = 32  # enough images for a batch reduction and for tied pooling windows
SEED = 0  # Network.init_params seed
LR = 0.1  # the update's learning rate: steps well above float32 rounding of the parameters
DTYPE = "float32"  # the mutants run in the frameworks' training dtype; truths in float64
AGAINST = "reference"  # the other side of every stage check: the default layer in float64
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


class NotComputed(RuntimeError):
    """A tensor the step never produced (it raised before)."""


@dataclass(frozen=True)
class Run:
    """One train_step of a network: its inputs and every tensor it produced."""

    net: Network
    params: dict
    X: np.ndarray
    labels: np.ndarray
    case: Case
    tensors: dict
    crash: str = ""  # the exception that stopped the step ("" when it completed)
    cache: dict = dataclasses.field(default_factory=dict, repr=False)  # stage truths

    @property
    def target(self):
        return self.net.targets(self.labels, self.X.dtype)


def batch(data, case: Case, dtype: str = DTYPE, n_images: int = N_IMAGES):
    """The first n_images of `data` (reference.data.ArticleData) as (N, 1, 28, 28) images
    of `dtype`, pixels times case.pixel_scale, and their labels."""
    X = images_nchw(data.X[:, :, :n_images]) * case.pixel_scale
    return X.astype(dtype), np.asarray(data.labels[:n_images])


def run(case: Case, data, ops: Mapping | None = None, dtype: str = DTYPE) -> Run:
    """One train_step of Network(case.spec, ops) on `data`'s first N_IMAGES images.

    A step that raises (a NaN a validating layer refuses) keeps what its forward pass
    produced; the rest are missing, and the crash is recorded.
    """
    net = Network(case.spec, ops=ops)
    params = net.init_params(SEED, dtype)
    X, labels = batch(data, case, dtype)
    try:
        tensors, crash = net.train_step(params, X, labels, LR, case.reduction), ""
    except Exception as exc:  # noqa: BLE001  (a crash of the step is part of the finding)
        crash = f"{type(exc).__name__}: {exc}"
        try:
            tensors = net.forward(params, X, net.targets(labels, X.dtype), case.reduction)
        except Exception:  # noqa: BLE001
            tensors = {}
    return Run(net, params, X, labels, case, tensors, crash)


def _get(r: Run, name: str) -> np.ndarray:
    if name not in r.tensors:
        raise NotComputed(f"not computed: the step raised before it ({r.crash})")
    return r.tensors[name]


def stage_inputs(r: Run, tensor: str) -> dict:
    """What the layer of `tensor` was fed in `r` (the mutant network's own arrays), by the
    names of its calling form (reference/layers/registry.py, call_arguments), with its kind."""
    net = r.net
    node = net.node_of(tensor)
    short = tensor.split(".", 1)[1]
    backward = short.startswith("d") and short not in node.outputs
    x = net.inputs_of(node, r.X, _Computed(r))
    up = net.upstream_of(node, _Computed(r)) if backward and not node.layer.is_loss else None
    p = {**{s: r.params[node.q(s)] for s in node.params}, **net.drawn(node, np.shape(x))}
    fwd = {s: _get(r, node.q(s)) for s in node.outputs if backward and node.q(s) in r.tensors}
    args = call_arguments(node.entry, node.layer, x, p, fwd, r.target, r.case.reduction, up, backward)
    if backward and node.entry.family == "activation":
        _get(r, node.q("A"))  # NotComputed when the step raised before it
    return {"kind": node.kind, **args}


class _Computed(Mapping):
    """r.tensors, raising NotComputed (with the crash) for a tensor the step never made."""

    def __init__(self, r: Run):
        self.r = r

    def __getitem__(self, name):
        return _get(self.r, name)

    def __iter__(self):
        return iter(self.r.tensors)

    def __len__(self):
        return len(self.r.tensors)


@dataclass(frozen=True)
class StageCheck:
    """What ParityRecorder.check compares: the float64 truth rounded to the run's dtype
    (actual, the other side), the mutant's tensor (expected), the stage tolerance, the
    float64 truth, the explainer's context."""

    actual: np.ndarray
    expected: np.ndarray
    tolerance: tolerance.Tolerance
    truth: np.ndarray
    context: dict


def _f64(a):
    return a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a


def stage_check(r: Run, tensor: str) -> StageCheck:
    """The stage-isolated check of `tensor`: the default layer (Network.node_step of the
    spec without the mutant's ops) in float64 on the run's own inputs of that layer, under
    the stage rule of parity_tests/model_stages.py. Raises NotComputed for a tensor the
    step did not produce."""
    ours = _get(r, tensor)
    dtype = ours.dtype if isinstance(ours, np.ndarray) else r.X.dtype
    context = {"lr": LR, "n_images": r.X.shape[0]}
    if tensor.endswith("_new"):  # the update of one parameter: p - lr g, g the run's own
        param = tensor[: -len("_new")]
        layer, short = param.split(".")
        old, grad = r.params[param], _get(r, f"{layer}.d{short}")
        truth = _f64(old) - LR * _f64(grad)
        tol = model_stages.update_tolerance(_f64(old), _f64(grad), LR, dtype)
        context.update(old=old, grad=grad)
    else:
        inputs = stage_inputs(r, tensor)
        net, short = r.net, tensor.split(".", 1)[1]
        node = net.node_of(tensor)
        i = net.nodes.index(node)
        x = r.X if i == 0 else _get(r, net.nodes[i - 1].q(net.nodes[i - 1].outputs[0]))
        up = None
        if short not in node.outputs and not node.layer.is_loss:
            nxt = net.nodes[i + 1]
            up = _f64(_get(r, nxt.q(nxt.input_grad)))
        p64 = {k: _f64(v) for k, v in r.params.items()}
        target = _f64(r.target)
        key = (node.name, up is not None)
        if key not in r.cache:  # one call per layer and direction (conv's dX, dF, db at once)
            r.cache[key] = Network(net.spec).node_step(node, _f64(x), p64, up, target, r.case.reduction)
        truth_all = r.cache[key]
        truth = np.asarray(truth_all[tensor], dtype=np.float64)
        tol = model_stages.stage_tolerance(
            node, short, _f64(x), p64, up, truth_all, r.case.reduction, dtype, target
        )
        context["layer"] = inputs
    # The truth is compared in the run's dtype: rounding it there errs by u |truth|.
    u = tolerance.unit_roundoff(dtype)
    tol = tolerance.Tolerance(tol.array + u * np.abs(truth), f"{tol.rule} + u|truth| (rounded)")
    return StageCheck(truth.astype(dtype), np.asarray(ours), tol, truth, context)


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
    """Every tensor of r.net.order compared with its stage truth, in order."""
    dtype = str(r.X.dtype)
    records = [
        quiet.check(**_fields(r, t, dtype), compute=lambda t=t: stage_check(r, t), fail=False)
        for t in r.net.order
    ]
    return Finding(quiet.context.impl, AGAINST, dtype, tuple(records))


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

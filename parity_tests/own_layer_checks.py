"""The checks of a user's own layer (parity_tests/own_layers.py): property-based, localised,
and a sweep that says which hyper-parameters trigger a mismatch.

`check_layer(recorder, layer, dtype, frameworks, max_examples)` lets Hypothesis draw a
layer's hyper-parameters (conv: N, C, F, H, W, k, stride, pad; pools: k, stride and ties in
the windows; activations: exact zeros at the input, large inputs; dense: N, D, M, an
(N, d1, d2) input; softmax_ce: N, K, logits past exp's overflow) and a seed for the values (inputs,
weights, upstream gradient, labels; the normalisations: their shape and inputs scaled to a
variance near eps; dropout: its shape and CS231n's keep probability p). For each draw it
runs the user's forward and backward
and compares the output and every gradient with

- the reference's layer (reference/layers/, through reference.network.DEFAULT_OPS), and
- each framework's layer (the model mirrors' `stage`: torch and TensorFlow autograd with
  the same upstream gradient),

in `dtype`, each under the stage rule of parity_tests/model_stages.py (the layer's own
rounding count: both sides round the same expression of the same inputs). The user's
mistakes show against the reference first, so a failing draw is shrunk against the
reference alone (cheap); the frameworks are asked once the reference agrees.

Records (mode "layer", tensors conv.Z, conv.dX, maxpool.dX, softmax_ce.dZ, ...): when every
draw passes, one record per tensor and side for the draw that used most of its budget;
when one fails, the comparisons of the minimal failing draw (Hypothesis shrinks it). The
failure message (`Outcome.message`) gives that draw with its hyper-parameters, the mismatch
in the suite's words with the explainer's verdict (parity_tests.explain, fed the layer's inputs),
and a sweep: the user's layer rerun over a small grid of hyper-parameters on fixed inputs,
summarised as "fails for stride >= 2 (stride=2, 3), at every pad and k; passes for stride=1".

Where the training-mode outputs agree, `_contract` checks what they cannot show: a batch
norm's running statistics (X15, CS231n's momentum and biased variance) and test mode, a
dropout's test mode and keep rate. A dropout's mask is read from its output (its cache
stays in the user's process) and handed to the reference and both frameworks.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import given, note
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from parity_tests import model_stages, own_layers
from parity_tests.harness import Check
from parity_tests.metrics import compare_arrays, format_mismatch
from parity_tests.own_layers import OUTPUTS, OwnLayerError, UserLayer
from reference import rounding
from reference.layers import KINDS
from reference.layers import norm as ref_norm
from reference.layers.registry import Bound
from reference.network import DEFAULT_OPS, Node
from reference.spec import KINDS as SPEC_LAYERS
from reference.spec import Conv, Dense, SoftmaxCE

MODE = "layer"
REDUCTION = "mean"  # the CS231n softmax_loss's; the other kinds do not depend on it
REFERENCE = "reference"
# The kinds a user may bring, by family (reference/layers/registry.py).
ACTIVATIONS = tuple(k for k in own_layers.KINDS if own_layers.entry(k).family == "activation")
POOLS = tuple(k for k in own_layers.KINDS if own_layers.entry(k).family == "pool")
# The normalisations (spatial_batchnorm: the registry's batchnorm on (N, C, H, W) maps).
NORMS = tuple(k for k in own_layers.KINDS if own_layers.entry(k).family == "norm")
BATCHNORMS = ("batchnorm", "spatial_batchnorm")  # with running statistics in bn_param
# A kinked pool (max pooling) is also drawn with tied windows.
_POOL_HYPER = ("N", "C", "H", "W", "k", "stride")
FAILED = ("fail", "error")

# The hyper-parameters of each kind, in the order a case is written.
HYPER = {
    "conv": ("N", "C", "F", "H", "W", "k", "stride", "pad"),
    **{kind: _POOL_HYPER + ("ties",) * KINDS[kind].kinked for kind in POOLS},
    "dense": ("N", "d1", "d2", "M", "x_nd"),
    "softmax_ce": ("N", "K", "big"),
    **{kind: ("N", "dims", "D", "C", "H", "W", "zeros", "big") for kind in ACTIVATIONS},
    "batchnorm": ("N", "D", "tiny"),
    "spatial_batchnorm": ("N", "C", "H", "W", "tiny"),
    "layernorm": ("N", "D", "tiny"),
    # cpg: channels per group, C = G cpg
    "groupnorm": ("N", "G", "cpg", "H", "W", "tiny"),
    # p: CS231n's, the probability of KEEPING a value
    "dropout": ("N", "dims", "D", "C", "H", "W", "p"),
}
# What a flag means, for the messages.
FLAGS = {
    "ties": "integer-valued inputs in 0..2: windows with tied maxima",
    "zeros": "about a third of the inputs exactly 0",
    "big": (
        "inputs scaled up (logits x 30 and shifted so that the largest is 1.2 log(max float) "
        "of the dtype, past exp's overflow; activations x 10)"
    ),
    "x_nd": "x given as (N, d1, d2) instead of (N, d1 d2)",
    "tiny": "inputs x 1e-3: variances of about 1e-6, near eps = 1e-5",
}


def _show(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@dataclass(frozen=True)
class Case:
    """One draw: a layer kind, its hyper-parameters and the seed of its values."""

    kind: str
    hyper: tuple  # ((name, value), ...) in HYPER order
    seed: int = 0

    @classmethod
    def make(cls, kind: str, seed: int = 0, **hyper) -> Case:
        return cls(kind, tuple((n, hyper[n]) for n in HYPER[kind] if n in hyper), seed)

    def __getitem__(self, name):
        return dict(self.hyper)[name]

    def get(self, name, default=None):
        return dict(self.hyper).get(name, default)

    def text(self) -> str:
        args = ", ".join(f"{n}={_show(v)}" for n, v in self.hyper)
        return f"{self.kind}({args}, seed={self.seed})"

    __repr__ = text  # Hypothesis writes the falsifying example with it


# --- drawing cases ------------------------------------------------------------------------------


def _ints(lo, hi):
    return st.integers(lo, hi)


@st.composite
def _conv_case(draw):
    k, stride, pad = draw(_ints(1, 4)), draw(_ints(1, 3)), draw(_ints(0, 2))
    lo = max(3, k - 2 * pad)  # the window fits the padded input
    N, C, F = draw(_ints(1, 3)), draw(_ints(1, 3)), draw(_ints(1, 3))
    H, W = draw(_ints(lo, 9)), draw(_ints(lo, 9))
    seed = draw(_ints(0, 2**31 - 1))
    return Case.make("conv", seed, N=N, C=C, F=F, H=H, W=W, k=k, stride=stride, pad=pad)


@st.composite
def _pool_case(draw, kind):
    k, stride = draw(_ints(1, 3)), draw(_ints(1, 3))
    N, C, H, W = draw(_ints(1, 3)), draw(_ints(1, 3)), draw(_ints(3, 9)), draw(_ints(3, 9))
    extra = {"ties": draw(st.booleans())} if KINDS[kind].kinked else {}
    seed = draw(_ints(0, 2**31 - 1))
    return Case.make(kind, seed, N=N, C=C, H=H, W=W, k=k, stride=stride, **extra)


@st.composite
def _activation_case(draw, kind):
    N, dims = draw(_ints(1, 3)), draw(st.sampled_from([2, 4]))
    shape = {"D": draw(_ints(1, 8))} if dims == 2 else {"C": draw(_ints(1, 3)), "H": draw(_ints(1, 4))}
    if dims == 4:
        shape["W"] = draw(_ints(1, 4))
    zeros, big, seed = draw(st.booleans()), draw(st.booleans()), draw(_ints(0, 2**31 - 1))
    return Case.make(kind, seed, N=N, dims=dims, zeros=zeros, big=big, **shape)


@st.composite
def _dense_case(draw):
    N, d1, d2, M = draw(_ints(1, 4)), draw(_ints(1, 4)), draw(_ints(1, 3)), draw(_ints(1, 6))
    x_nd, seed = draw(st.booleans()), draw(_ints(0, 2**31 - 1))
    return Case.make("dense", seed, N=N, d1=d1, d2=d2, M=M, x_nd=x_nd)


@st.composite
def _softmax_case(draw):
    N, K, big = draw(_ints(1, 5)), draw(_ints(2, 10)), draw(st.booleans())
    return Case.make("softmax_ce", draw(_ints(0, 2**31 - 1)), N=N, K=K, big=big)


@st.composite
def _norm_case(draw, kind):
    """Shapes with more than one value per statistic (a batch norm's N H W, a group's
    channels and positions)."""
    if kind == "batchnorm":
        shape = {"N": draw(_ints(2, 5)), "D": draw(_ints(1, 6))}
    elif kind == "layernorm":
        shape = {"N": draw(_ints(1, 4)), "D": draw(_ints(2, 8))}
    else:
        shape = {"N": draw(_ints(1, 3))}
        if kind == "groupnorm":
            shape.update(G=draw(_ints(1, 3)), cpg=draw(_ints(1, 3)))
        shape.update(H=draw(_ints(1, 4)), W=draw(_ints(1, 4)))
        if kind == "spatial_batchnorm":
            shape["C"] = draw(_ints(1, 3))
        if _per_statistic(kind, shape) < 2:
            shape["H"] = 2
    tiny, seed = draw(st.booleans()), draw(_ints(0, 2**31 - 1))
    return Case.make(kind, seed, tiny=tiny, **shape)


def _per_statistic(kind: str, h) -> int:
    """The values each statistic of a normalisation case is taken over."""
    if kind == "spatial_batchnorm":
        return h["N"] * h["H"] * h["W"]
    if kind == "groupnorm":
        return h["cpg"] * h["H"] * h["W"]
    return h["N"] if kind == "batchnorm" else h["D"]


# CS231n's p (the probability of keeping a value): two that no binary fraction holds, and 1
# (nothing dropped: a dropout without the 1 / p scaling is right there and only there).
KEEP = (0.3, 0.5, 0.75, 1.0)


@st.composite
def _dropout_case(draw):
    N, dims = draw(_ints(1, 3)), draw(st.sampled_from([2, 4]))
    shape = {"D": draw(_ints(1, 8))} if dims == 2 else {"C": draw(_ints(1, 3)), "H": draw(_ints(1, 4))}
    if dims == 4:
        shape["W"] = draw(_ints(1, 4))
    p, seed = draw(st.sampled_from(KEEP)), draw(_ints(0, 2**31 - 1))
    return Case.make("dropout", seed, N=N, dims=dims, p=p, **shape)


def cases(kind: str):
    """The Hypothesis strategy of `kind`'s draws."""
    if kind == "conv":
        return _conv_case()
    if kind in POOLS:
        return _pool_case(kind)
    if kind in ACTIVATIONS:
        return _activation_case(kind)
    if kind == "dense":
        return _dense_case()
    if kind == "softmax_ce":
        return _softmax_case()
    if kind in NORMS:
        return _norm_case(kind)
    if kind == "dropout":
        return _dropout_case()
    raise KeyError(kind)


# --- one case's inputs and the reference's outputs --------------------------------------------


@dataclass(frozen=True)
class LayerInputs:
    case: Case
    node: Node  # a layer standing alone; its name is the kind: tensors conv.Z, conv.dX
    a: dict  # the user's inputs, by the names of the Network's calling form
    x: np.ndarray  # the layer's input as the frameworks take it (dense: (N, D))
    params: dict  # by qualified name: conv.F, conv.b
    upstream: np.ndarray | None
    target: np.ndarray  # the labels (softmax_ce), else a placeholder


# How far past log(max float) of the dtype the largest 'big' logit goes.
OVERFLOW_MARGIN = 1.2


def overflow_logit(dtype) -> float:
    """The largest logit of a 'big' softmax_ce case: OVERFLOW_MARGIN x log(max float) of
    `dtype` (852 in float64, 106 in float32), where exp overflows: x 30 alone reached about
    +-150, so a softmax without the max shift passed every float64 draw."""
    return OVERFLOW_MARGIN * float(np.log(np.finfo(dtype).max))


def make_inputs(case: Case, dtype: str) -> LayerInputs:
    """The case's arrays from its seed, drawn in float64 and then cast to `dtype` (so the
    float32 and float64 inputs of a case are the same numbers, rounded; except the 'big'
    softmax_ce logits, shifted past the dtype's own exp overflow, overflow_logit)."""
    rng, c, kind = np.random.default_rng(case.seed), case, case.kind
    normal = rng.standard_normal
    if kind == "conv":
        N, C, F, H, W, k, s, p = (c[n] for n in HYPER["conv"])
        layer = Conv(channels=F, kernel=k, stride=s, pad=p, bias=True)
        out = layer.output_shape((C, H, W))
        a = dict(X=normal((N, C, H, W)), F=normal((F, C, k, k)), b=normal(F), stride=s, pad=p)
        a["dZ"] = normal((N, *out))
        params = {"conv.F": a["F"], "conv.b": a["b"]}
        x, upstream, shape = a["X"], a["dZ"], (C, H, W)
    elif kind in POOLS:
        N, C, H, W, k, s = (c[n] for n in _POOL_HYPER)
        layer = SPEC_LAYERS[kind](size=k, stride=s)
        out = layer.output_shape((C, H, W))
        X = rng.integers(0, 3, (N, C, H, W)).astype(float) if c.get("ties") else normal((N, C, H, W))
        a = dict(X=X, dA=normal((N, *out)), k=k, stride=s)
        params, x, upstream, shape = {}, X, a["dA"], (C, H, W)
    elif kind in ACTIVATIONS:
        layer = SPEC_LAYERS[kind]()
        shape = (c["D"],) if c["dims"] == 2 else (c["C"], c["H"], c["W"])
        Z = normal((c["N"], *shape)) * (10.0 if c["big"] else 1.0)
        if c["zeros"]:
            Z[rng.random(Z.shape) < 1 / 3] = 0.0
        a = dict(Z=Z, dA=normal(Z.shape))
        params, x, upstream, out = {}, Z, a["dA"], shape
    elif kind == "dense":
        N, d1, d2, M = c["N"], c["d1"], c["d2"], c["M"]
        D = d1 * d2
        layer = Dense(units=M, bias=True)
        A = normal((N, d1, d2) if c["x_nd"] else (N, D))
        a = dict(A=A, W=normal((D, M)) / np.sqrt(D), b=normal(M), dZ=normal((N, M)))
        params = {"dense.W": a["W"], "dense.b": a["b"]}
        x, upstream, shape, out = A.reshape(N, D), a["dZ"], (D,), (M,)
    elif kind == "softmax_ce":
        N, K = c["N"], c["K"]
        layer = SoftmaxCE()
        Z = normal((N, K)) * (30.0 if c["big"] else 1.0)
        if c["big"]:  # past the dtype's exp overflow: an unshifted softmax gives inf / inf
            Z += overflow_logit(dtype) - Z.max()
        a = dict(Z=Z, labels=rng.integers(0, K, N))
        params, x, upstream, shape, out = {}, Z, None, (K,), ()
    elif kind in NORMS:
        name = own_layers.entry(kind).name
        if kind in ("batchnorm", "layernorm"):
            shape = (c["D"],)
        else:
            shape = (c["C"] if kind == "spatial_batchnorm" else c["G"] * c["cpg"], c["H"], c["W"])
        layer = SPEC_LAYERS[name](groups=c["G"]) if kind == "groupnorm" else SPEC_LAYERS[name]()
        X = normal((c["N"], *shape)) * (1e-3 if c["tiny"] else 1.0)
        pshape = shape if kind == "layernorm" else shape[:1]
        a = dict(X=X, gamma=normal(pshape), beta=normal(pshape), dA=normal(X.shape))
        a["groups"] = c["G"] if kind == "groupnorm" else None
        if kind in BATCHNORMS:  # the running statistics the forward must update
            a.update(running_mean=normal(pshape), running_var=rng.uniform(0.5, 1.5, pshape))
        params = {f"{kind}.gamma": a["gamma"], f"{kind}.beta": a["beta"]}
        x, upstream, out = X, a["dA"], shape
    elif kind == "dropout":
        shape = (c["D"],) if c["dims"] == 2 else (c["C"], c["H"], c["W"])
        layer = SPEC_LAYERS["dropout"](p=1 - c["p"])  # the spec's p drops
        X = normal((c["N"], *shape))
        a = dict(X=X, dA=normal(X.shape), p=c["p"], seed=int(rng.integers(0, 2**31 - 1)))
        params, x, upstream, out = {}, X, a["dA"], shape
    else:
        raise KeyError(kind)

    def cast(v):
        return v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v

    a = {k: cast(v) for k, v in a.items()}
    target = a["labels"] if kind == "softmax_ce" else np.zeros(1, dtype)
    return LayerInputs(
        case=case,
        node=Node(kind, layer, shape, out, True),
        a=a,
        x=cast(x),
        params={k: cast(v) for k, v in params.items()},
        upstream=cast(upstream),
        target=target,
    )


def as_float64(inp: LayerInputs) -> LayerInputs:
    """The same inputs (already rounded to their dtype) in float64: the truth's."""

    def up(v):
        return v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v

    return LayerInputs(
        inp.case,
        inp.node,
        {k: up(v) for k, v in inp.a.items()},
        up(inp.x),
        {k: up(v) for k, v in inp.params.items()},
        up(inp.upstream),
        up(inp.target),
    )


def reference_outputs(inp: LayerInputs, mask=None) -> dict:
    """The reference's layer (reference.network.DEFAULT_OPS) on these inputs: every tensor
    of the layer by qualified name (softmax_ce: P too). `mask`: a dropout's keep-mask (the
    user's own, read from its output)."""
    node, a, kind = inp.node, inp.a, inp.case.kind
    ops, layer = DEFAULT_OPS[node.kind], node.layer
    if kind == "conv":
        out = {"Z": ops.forward(a["X"], a["F"], a["b"], layer.stride, layer.pad)}
        out.update(ops.backward(a["X"], a["F"], a["dZ"], layer.stride, layer.pad, True))
    elif kind in POOLS:
        out = {"A": ops.forward(a["X"], layer.size, layer.stride)}
        out["dX"] = ops.backward(a["X"], a["dA"], layer.size, layer.stride)
    elif kind in ACTIVATIONS:
        A = ops.forward(a["Z"])
        out = {"A": A, "dZ": ops.backward(a["dA"], a["Z"], A)}
    elif kind == "dense":
        out = {"Z": ops.forward(inp.x, a["W"], a["b"])}
        out.update(ops.backward(inp.x, a["W"], a["dZ"], True))
    elif kind in NORMS:
        out = {"A": ops.forward(a["X"], a["gamma"], a["beta"], a["groups"])}
        out.update(ops.backward(a["X"], a["gamma"], a["dA"], a["groups"]))
    elif kind == "dropout":
        out = {"A": ops.forward(a["X"], mask, layer.p), "dX": ops.backward(a["dA"], mask, layer.p)}
    else:  # softmax_ce
        P, E = ops.forward(a["Z"], a["labels"], REDUCTION)
        out = {"P": P, "E": E, "dZ": ops.backward(P, a["labels"], REDUCTION)}
    return {node.q(k): v for k, v in out.items()}


def _explain_context(inp: LayerInputs, ref: dict, mask=None) -> dict:
    """What parity_tests.explain reads of a layer (its section "layers of the spec-built
    networks"), under its registry kind (spatial_batchnorm: batchnorm)."""
    a, kind = inp.a, inp.case.kind
    if kind == "conv":
        layer = {n: a[n] for n in ("X", "F", "b", "dZ", "stride", "pad")}
    elif kind in POOLS:
        layer = {n: a[n] for n in ("X", "dA", "k", "stride")}
    elif kind in ACTIVATIONS:
        layer = {"Z": a["Z"], "A": ref[f"{kind}.A"], "dA": a["dA"]}
    elif kind == "dense":
        layer = {"A": inp.x, "W": a["W"], "b": a["b"], "dZ": a["dZ"]}
    elif kind in NORMS:
        layer = {n: a[n] for n in ("X", "gamma", "beta", "groups", "dA")}
    elif kind == "dropout":
        layer = {"X": a["X"], "mask": mask, "p": inp.node.layer.p, "dA": a["dA"]}
    else:
        layer = {"Z": a["Z"], "P": ref["softmax_ce.P"], "labels": a["labels"], "reduction": REDUCTION}
    return {"layer": {"kind": inp.node.kind, **layer}}


# --- one case, compared ------------------------------------------------------------------------


class UserFailure(Exception):
    """The user's layer raised, or returned something unusable, on `case`."""

    def __init__(self, case: Case, error: BaseException):
        super().__init__(f"{case.text()}: {type(error).__name__}: {error}")
        self.case, self.error = case, error


class LayerMismatch(Exception):
    """A comparison failed on `case` (Hypothesis shrinks the case)."""

    def __init__(self, case: Case, tensor: str, against: str):
        super().__init__(f"{tensor} vs {against} on {case.text()}")
        self.case, self.tensor, self.against = case, tensor, against


class CaseRun:
    """One case in one dtype: the user's tensors, the reference's and each framework's, and
    a Check per (tensor, side); all computed on first use."""

    def __init__(self, layer: UserLayer, case: Case, dtype: str, mirrors: dict):
        self.layer, self.case, self.dtype, self.mirrors = layer, case, dtype, mirrors
        self.inputs = make_inputs(case, dtype)
        self._theirs: dict = {}
        self._tolerances: dict = {}

    @functools.cached_property
    def user(self) -> dict:
        self.state: dict = {}  # a batch norm's bn_param after its forward
        return own_layers.run(self.layer, self.inputs.a, self.state)

    def contract(self) -> None:
        """What the outputs do not show (_contract), checked once they agree: OwnLayerError."""
        _contract(self, self.user, self.state)

    @property
    def mask(self) -> np.ndarray | None:
        """A dropout's keep-mask: where its forward's output is not 0 (the inputs hold no
        exact 0). Its cache stays in the user's process; the output shows the mask as well,
        and the backward must then use that very mask."""
        if self.layer.kind != "dropout":
            return None
        return self.user["A"] != 0

    @functools.cached_property
    def reference(self) -> dict:
        return reference_outputs(self.inputs, self.mask)

    @functools.cached_property
    def truth(self) -> dict | None:
        if self.dtype == "float64":
            return None
        return reference_outputs(as_float64(self.inputs), self.mask)

    def theirs(self, against: str) -> dict:
        if against == REFERENCE:
            return self.reference
        if against not in self._theirs:
            mirror = self.mirrors[against]
            if isinstance(mirror, BaseException):
                raise mirror
            i = self.inputs
            net = None if self.mask is None else _Drawn(self.mask.astype(self.dtype))
            self._theirs[against] = mirror.stage(
                net, i.node, i.x, i.params, i.upstream, i.target, REDUCTION
            )
        return self._theirs[against]

    def tolerance(self, short: str):
        if short not in self._tolerances:
            i = self.inputs
            self._tolerances[short] = model_stages.stage_tolerance(
                i.node, short, i.x, i.params, i.upstream, self.reference, REDUCTION, self.dtype, i.target
            )
        return self._tolerances[short]

    def ours(self, short: str) -> np.ndarray:
        value = self.user[short]
        return value.reshape(self.inputs.x.shape) if short == "dA" else value  # (N, d1, d2) -> (N, D)

    def check(self, short: str, against: str) -> Check:
        q = self.inputs.node.q(short)
        truth = None if self.truth is None else self.truth[q]
        exact = self.reference[q] if truth is None else truth  # float64: the reference's
        return Check(
            np.asarray(self.theirs(against)[q]),
            self.ours(short),
            self.tolerance(short),
            truth,
            _explain_context(self.inputs, self.reference, self.mask),
            not np.any(exact),
        )

    def measure(self, short: str, against: str) -> dict:
        c = self.check(short, against)
        return compare_arrays(
            c.actual, c.expected, c.tolerance.array, truth_zero=c.truth_zero, brief=True, against=against
        )


def _failed(result: dict) -> bool:
    return result["status"] in FAILED


class _Drawn:
    """What a framework's stage asks a network for a dropout's keep-mask (Network.drawn):
    the user's own mask (0 and 1 in the layer's dtype, as TensorFlow's mirror takes it), so
    that both frameworks drop the values the user's layer dropped."""

    def __init__(self, mask: np.ndarray):
        self.mask = mask

    def drawn(self, node, x_shape) -> dict:
        return {"mask": self.mask}


# --- what the outputs alone do not show: the test mode, the running statistics, the keep rate

# The keep-rate check's input: 2000 values, so that a rate of 1 - p for p = 0.3 or 0.75 is
# tens of standard deviations away from p, and a false alarm (KEEP_SIGMAS) is below 1e-8.
KEEP_SHAPE = (40, 50)
KEEP_SIGMAS = 6
# X15 in evaluation mode, gamma (X - mean) / sqrt(var + eps) + beta: the subtraction, the
# sum with eps, the square root, the division, the product and the sum.
EVAL_ROUNDINGS = 6
# X15's update keep * old + (1 - keep) * statistic after the statistic's own chain: the two
# products and the sum.
UPDATE_ROUNDINGS = 3


def _contract(run: CaseRun, got: dict, state: dict) -> None:
    """OwnLayerError where the layer breaks what its outputs in training mode cannot show:
    a dropout's test mode and keep rate, a batch norm's running statistics and test mode."""
    if run.layer.kind == "dropout":
        _dropout_contract(run)
    elif run.layer.kind in BATCHNORMS:
        _running_statistics(run, state)
        _batchnorm_test_mode(run)


def _broken(message: str, short: str, equation: str) -> OwnLayerError:
    """A contract's OwnLayerError, naming the quantity it is about (`parity_tensor`: the
    short name and equation of the error record _user_failure adds)."""
    exc = OwnLayerError(message)
    exc.parity_tensor = (short, equation)
    return exc


def _float64(*arrays):
    return [np.asarray(v, np.float64) for v in arrays]


def _allowed(M, k, dtype) -> np.ndarray:
    """The stage rule's allowance 2 gamma_det(k) M (model_stages.tolerance_of)."""
    return model_stages.tolerance_of(Bound(M, k, deterministic=True), np.shape(M), dtype).array


def _dropout_contract(run: CaseRun) -> None:
    layer, a, fn = run.layer, run.inputs.a, run.layer.functions[0]
    test, _ = own_layers.forward(layer, a, mode="test")
    if not np.array_equal(test["A"], a["X"]):
        worst = float(np.max(np.abs(test["A"].astype(np.float64) - a["X"])))
        raise _broken(
            f"{fn.label} in mode 'test' did not return x (greatest |out - x| {worst:.3g}): "
            "inverted dropout scales the kept values by 1 / p in training, so that at test "
            "time x passes as it is, unscaled",
            "A_test",
            "X18",
        )
    p = float(a["p"])
    big = np.random.default_rng(run.case.seed).standard_normal(KEEP_SHAPE).astype(a["X"].dtype)
    out, _ = own_layers.forward(layer, {**a, "X": big})
    n = big.size
    kept = np.count_nonzero(out["A"]) / n
    margin = KEEP_SIGMAS * np.sqrt(p * (1 - p) / n) + 0.5 / n
    if abs(kept - p) > margin:
        flipped = abs(kept - (1 - p)) <= margin
        raise _broken(
            f"{fn.label} kept {kept:.1%} of {n} values at p = {p:g}: CS231n's p is the "
            f"probability of KEEPING a value, so {p:.0%} +- {margin:.1%} "
            f"({KEEP_SIGMAS} standard deviations) should be kept"
            + ("; it keeps 1 - p: p taken as the probability of dropping" if flipped else ""),
            "A",
            "X18",
        )


def _running_statistics(run: CaseRun, state: dict) -> None:
    """X15 as CS231n writes it: running = momentum running + (1 - momentum) batch statistic,
    momentum the weight of the OLD value, the batch's BIASED variance (the one it normalised
    with). Compared in float64 under 2 gamma_det(k) M: k the statistic's chain and the
    update's, M the update on absolute values (the variance's terms (|X| + |mu|)^2)."""
    a, fn, dtype = run.inputs.a, run.layer.functions[0], run.dtype
    X, rm, rv = _float64(a["X"], a["running_mean"], a["running_var"])
    axes = ref_norm.batch_axes(X)
    m = int(np.prod([X.shape[i] for i in axes]))
    keep = own_layers.MOMENTUM
    mu = X.mean(axis=axes)
    wanted = ref_norm.running_update(rm, rv, X, keep, unbiased=False)
    spread = (np.abs(X) + np.abs(np.expand_dims(mu, axes))) ** 2
    M = (
        keep * np.abs(rm) + (1 - keep) * np.abs(X).mean(axis=axes),
        keep * np.abs(rv) + (1 - keep) * spread.mean(axis=axes),
    )
    k = rounding.norm_roundings(m, m) + UPDATE_ROUNDINGS
    others = {
        "the UNBIASED batch variance (m / (m - 1), torch's running_var)": ref_norm.running_update(
            rm, rv, X, keep, unbiased=True
        ),
        "momentum as the weight of the NEW statistic (torch's momentum)": ref_norm.running_update(
            rm, rv, X, 1 - keep, unbiased=False
        ),
        "the running statistics left as they were": (rm, rv),
    }
    for i, name in enumerate(("running_mean", "running_var")):
        got = state.get(name)
        C = np.shape(rm)
        if not isinstance(got, np.ndarray) or got.shape != C or got.dtype.kind != "f":
            what = type(got).__name__ if not isinstance(got, np.ndarray) else f"shape {got.shape}"
            raise _broken(
                f"{fn.label} left bn_param[{name!r}] as {what}, expected an array of shape {C}",
                name,
                "X15",
            )
        allowed = _allowed(M[i], k, dtype)
        diff = np.abs(got.astype(np.float64) - wanted[i])
        if np.all(diff <= allowed):
            continue
        like = [w for w, v in others.items() if np.all(np.abs(got - v[i]) <= allowed)]
        raise _broken(
            f"{fn.label} left bn_param[{name!r}] off by {float(diff.max()):.3g} (allowed "
            f"{float(allowed.max()):.3g}): X15, CS231n's running = momentum * running + "
            f"(1 - momentum) * batch {'mean' if i == 0 else 'BIASED variance'}, momentum "
            f"{keep} the weight of the old value" + (f"; it matches {like[0]}" if like else ""),
            name,
            "X15",
        )


def _batchnorm_test_mode(run: CaseRun) -> None:
    """X15 in evaluation mode: bn_param's running statistics in place of the batch's."""
    layer, a, fn = run.layer, run.inputs.a, run.layer.functions[0]
    got, _ = own_layers.forward(layer, a, mode="test")
    X, gamma, beta, rm, rv = _float64(a["X"], a["gamma"], a["beta"], a["running_mean"], a["running_var"])
    wanted = ref_norm.batchnorm_eval(X, gamma, beta, rm, rv)
    M = ref_norm.batchnorm_eval(np.abs(X), np.abs(gamma), np.abs(beta), -np.abs(rm), rv)
    allowed = _allowed(M, EVAL_ROUNDINGS, run.dtype)
    diff = np.abs(got["A"].astype(np.float64) - wanted)
    if np.all(diff <= allowed):
        return
    train = run.reference[run.inputs.node.q("A")]
    same = np.all(np.abs(got["A"] - train) <= allowed)
    raise _broken(
        f"{fn.label} in mode 'test' is off by {float(diff.max()):.3g} (allowed "
        f"{float(allowed.max()):.3g}): X15, out = gamma (x - running_mean) / "
        "sqrt(running_var + eps) + beta with bn_param's running statistics"
        + ("; it normalises with the batch's own statistics, as in training" if same else ""),
        "A_test",
        "X15",
    )


# --- the sweep ---------------------------------------------------------------------------------

# kind -> (fixed hyper-parameters, the grid: (name, values) ...). Seed 0. `size` is H = W.
SWEEPS = {
    "conv": (
        dict(N=2, C=2, F=2),
        (("stride", (1, 2, 3)), ("pad", (0, 1, 2)), ("k", (1, 2, 3, 4)), ("size", (8, 9))),
    ),
    **{
        kind: (
            dict(N=2, C=2, H=6, W=6),
            (("ties", (False, True)),) * KINDS[kind].kinked + (("k", (1, 2, 3)), ("stride", (1, 2, 3))),
        )
        for kind in POOLS
    },
    "dense": (dict(d1=2, d2=3), (("N", (1, 2, 3)), ("M", (1, 3)), ("x_nd", (False, True)))),
    "softmax_ce": ({}, (("N", (1, 2, 3, 4)), ("K", (2, 5, 10)), ("big", (False, True)))),
    **{
        kind: (
            dict(D=6, C=2, H=3, W=3),
            (("N", (1, 2)), ("dims", (2, 4)), ("zeros", (False, True)), ("big", (False, True))),
        )
        for kind in ACTIVATIONS
    },
    "batchnorm": (dict(D=4), (("N", (2, 3, 4)), ("tiny", (False, True)))),
    "spatial_batchnorm": (dict(C=2), (("N", (2, 3)), ("size", (1, 2, 3)), ("tiny", (False, True)))),
    "layernorm": (dict(D=5), (("N", (1, 2, 3)), ("tiny", (False, True)))),
    "groupnorm": (
        dict(N=2, H=3, W=3),
        (("G", (1, 2, 3)), ("cpg", (1, 2, 3)), ("tiny", (False, True))),
    ),
    "dropout": (dict(D=6, C=2, H=3, W=3), (("p", KEEP), ("dims", (2, 4)), ("N", (1, 2)))),
}


def _values_text(name, values) -> str:
    if all(isinstance(v, bool) for v in values):
        return f"{name} no/yes"
    if name == "size":
        return "H = W " + "/".join(_show(v) for v in values)
    ints = [v for v in values if isinstance(v, int)]
    if len(ints) == len(values) and ints == list(range(ints[0], ints[-1] + 1)) and len(ints) > 2:
        return f"{name} {ints[0]}..{ints[-1]}"
    return f"{name} " + "/".join(_show(v) for v in values)


def _condition(name, chosen, values) -> str:
    """'stride >= 2 (stride=2, 3)', 'ties=yes', 'k=1', 'K in {2, 10}'."""
    if len(chosen) == 1:
        return f"{name}={_show(chosen[0])}"
    listed = f"{name}=" + ", ".join(_show(v) for v in chosen)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if list(chosen) == [v for v in values if v >= min(chosen)]:
            return f"{name} >= {min(chosen)} ({listed})"
        if list(chosen) == [v for v in values if v <= max(chosen)]:
            return f"{name} <= {max(chosen)} ({listed})"
    return f"{name} in {{{', '.join(_show(v) for v in chosen)}}}"


def _every(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True)
class Relation:
    """A condition on two or more hyper-parameters that no product of single values can
    state: the window geometry's (stride < k: overlapping windows; H + 2p - k not a multiple
    of the stride: the last windows stop short of the input's end). `text(pad)` writes it
    with or without the padding term."""

    needs: tuple  # the hyper-parameters it reads (H is the size: `size`, or the fixed H)
    words: str  # the condition, with {span} for "H + 2p - k" or "H - k"
    meaning: str
    holds: object  # (values by name) -> bool
    refines: str = ""  # the wider relation it implies, named beside it: "({span}) % stride != 0"

    def text(self, padded: bool) -> str:
        return self.words.format(span="H + 2p - k" if padded else "H - k")


def _span(p) -> int:
    return p["H"] + 2 * p.get("pad", 0) - p["k"]


# The candidates, most specific first where two could both separate a grid's points: a
# description is the first one that separates failing from passing points exactly.
RELATIONS = (
    Relation(("k", "stride"), "stride < k", "the windows overlap", lambda p: p["stride"] < p["k"]),
    Relation(
        ("k", "stride"), "stride > k", "the windows skip inputs", lambda p: p["stride"] > p["k"]
    ),
    Relation(
        ("k", "stride"), "stride = k", "the windows tile the input", lambda p: p["stride"] == p["k"]
    ),
    Relation(
        ("k", "stride"), "stride >= k", "the windows do not overlap", lambda p: p["stride"] >= p["k"]
    ),
    Relation(
        ("k", "stride"), "stride <= k", "no input is skipped", lambda p: p["stride"] <= p["k"]
    ),
    Relation(
        ("k", "stride"), "stride != k", "the windows do not tile the input",
        lambda p: p["stride"] != p["k"],
    ),
    Relation(
        ("H", "k", "stride"),
        "round(({span}) / stride) > ({span}) // stride",
        "an output size rounded, not floored, is one too large",
        lambda p: round(_span(p) / p["stride"]) > _span(p) // p["stride"],
        "({span}) % stride != 0",
    ),
    Relation(
        ("H", "k", "stride"),
        "({span}) % stride != 0",
        "{span} is not a multiple of the stride: the last windows stop short of the input's end",
        lambda p: _span(p) % p["stride"] != 0,
    ),
    Relation(
        ("H", "k", "stride"),
        "({span}) % stride = 0",
        "the windows reach the input's end exactly",
        lambda p: _span(p) % p["stride"] == 0,
    ),
)  # fmt: skip


def _product(names, values_of, points):
    """(the deciding names and their failing values, the rest) if the failing points are
    exactly a product of values (each name's failing values, every combination), else None."""
    failing = [p for p, f in points if f]
    chosen = {n: [v for v in values_of[n] if any(p[n] == v for p in failing)] for n in names}
    if not all(f == all(p[n] in chosen[n] for n in names) for p, f in points):
        return None
    deciding = [n for n in names if len(chosen[n]) < len(values_of[n])]
    return deciding, chosen, [n for n in names if n not in deciding]


def _relations(names, fixed, points):
    """Every candidate relation these points can evaluate (one of its hyper-parameters
    swept): (its text, its meaning, the names it reads, its truth at each point, the text of
    the wider relation it refines or "")."""
    found = []
    at = [{**fixed, **_sized(p)} for p, _ in points]
    swept = {"H" if n == "size" else n for n in names}
    padded = "pad" in at[0]
    span = "H + 2p - k" if padded else "H - k"
    for rel in RELATIONS:
        if all(n in at[0] for n in rel.needs) and swept & set(rel.needs):
            needs = rel.needs + ("pad",) * (padded and "{span}" in rel.words)
            truth = [bool(rel.holds(p)) for p in at]
            wider = rel.refines.format(span=span)
            found.append((rel.text(padded), rel.meaning.format(span=span), needs, truth, wider))
    return found


def _implied(wider, relations) -> str:
    """', all of them where R (its meaning)' for the wider relation R, if any."""
    meaning = next((m for text, m, *_ in relations if text == wider), "")
    return f", all of them where {wider}" + (f" ({meaning})" if meaning else "") if wider else ""


def describe_sweep(grid, points, fixed=None) -> str:
    """points: [(values by name, failed)] over the whole grid -> which values trigger it:
    a product of single values (stride >= 2 and pad=1), else a relation of the window
    geometry (stride < k) alone or with single values, else the counts per value with the
    relation every failing point satisfies, if one does. `fixed`: the hyper-parameters the
    grid holds fixed (the pools' H), which a relation may read."""
    names = [n for n, _ in grid]
    values_of = dict(grid)
    failing = [p for p, f in points if f]
    if not failing:
        return f"passes at all {len(points)} points"
    if len(failing) == len(points):
        return f"fails at all {len(points)} points (every {_every(names)})"
    product = _product(names, values_of, points)
    if product:
        deciding, chosen, rest = product
        text = "fails for " + " and ".join(_condition(n, chosen[n], values_of[n]) for n in deciding)
        if rest:
            text += f", at every {_every(rest)}"
        if len(deciding) == 1:
            n = deciding[0]
            others = [v for v in values_of[n] if v not in chosen[n]]
            return f"{text}; passes for {_condition(n, others, values_of[n])}"
        return f"{text}; passes otherwise"

    relations = _relations(names, fixed or {}, points)
    for text, meaning, needs, truth, wider in relations:
        if any(f and not t for t, (_, f) in zip(truth, points)):
            continue  # a failing point where the relation does not hold
        inside = [(p, f) for t, (p, f) in zip(truth, points) if t]
        others = [n for n in names if ("H" if n == "size" else n) not in needs]
        within = _product(others, values_of, inside) if others else ([], {}, [])
        if within is None:
            continue
        deciding, chosen, rest = within
        if not deciding and not all(f for _, f in inside):
            continue
        also = "".join(f" and {_condition(n, chosen[n], values_of[n])}" for n in deciding)
        summary = f"fails when {text} ({meaning}){also}"
        if rest:
            summary += f", at every {_every(rest)}"
        summary += f": {len(failing)} of {len(points)} points{_implied(wider, relations)}"
        return f"{summary}; passes otherwise"

    def count(n, v):
        at = [f for p, f in points if p[n] == v]
        return f"{n}={_show(v)}: {sum(at)}/{len(at)}"

    per_value = "; ".join(", ".join(count(n, v) for v in values_of[n]) for n in names)
    text = f"fails at {len(failing)} of {len(points)} points"
    necessary = [
        (sum(truth), rel_text, meaning)
        for rel_text, meaning, _, truth, _ in relations
        if all(t for t, (_, f) in zip(truth, points) if f) and sum(truth) < len(points)
    ]
    if necessary:
        held, rel_text, meaning = min(necessary)
        text += f", only where {rel_text} ({meaning}; {len(failing)} of its {held} points)"
    return f"{text} (failing/all per value: {per_value})"


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _fails(layer: UserLayer, case: Case, dtype: str, shorts) -> str:
    """'' where the layer passes at `case`, else why it fails there: the error it raised
    ('OwnLayerError: ...') or 'mismatch'."""
    run = CaseRun(layer, case, dtype, {})
    try:
        _ = run.user
    except Exception as exc:  # noqa: BLE001  (a crash at a point of the grid is a failure there)
        return _error_text(exc)
    if any(_failed(run.measure(s, REFERENCE)) for s in shorts):
        return "mismatch"
    try:
        run.contract()
    except Exception as exc:  # noqa: BLE001
        return _error_text(exc)
    return ""


def sweep(layer: UserLayer, dtype: str, shorts=None, error: str = "") -> str | None:
    """Rerun the user's layer over its kind's grid on fixed inputs (seed 0) against the
    reference, watching the tensors `shorts` (default: every one): which values fail.
    None where every point raised `error` (the minimal case's, 'Type: message'): said once
    already, and no hyper-parameter bears on it (a float64 result in a float32 run)."""
    kind = layer.kind
    shorts = tuple(shorts or OUTPUTS[kind])
    base, grid = SWEEPS[kind]
    points, why = [], set()
    for values in itertools.product(*(v for _, v in grid)):
        at = dict(zip((n for n, _ in grid), values))
        failed = _fails(layer, Case.make(kind, 0, **_sized({**base, **at})), dtype, shorts)
        points.append((at, bool(failed)))
        why.add(failed)
    if error and why == {error}:
        return None
    watched = ", ".join(f"{kind}.{s}" for s in shorts)
    fixed = ", ".join(f"{n}={v}" for n, v in base.items())
    grid_text = " x ".join(_values_text(n, v) for n, v in grid)
    flags = "; ".join(f"{n}: {FLAGS[n]}" for n, _ in grid if n in FLAGS)
    return (
        f"sweep of {watched} against the reference [{dtype}] over {grid_text} on fixed inputs "
        f"({fixed + ', ' if fixed else ''}seed 0){' (' + flags + ')' if flags else ''}: "
        + describe_sweep(grid, points, _sized(base))
    )


def _sized(hyper: dict) -> dict:
    """`size` -> H = W."""
    hyper = dict(hyper)
    if "size" in hyper:
        hyper["H"] = hyper["W"] = hyper.pop("size")
    return hyper


# --- the covering grid ---------------------------------------------------------------------------
#
# Hypothesis' 25 draws of the default profile leave most combinations of the hyper-parameters
# untried: a conv wrong only at stride 3 with pad 2, at k 4 with pad 2 or at 9 x 9 inputs
# passed the default run. So every run also checks, against the reference, a deterministic
# grid: the product of the values a mistake usually hangs on (conv: stride x pad x k at one
# even and one odd size H = W, 8 and 9; pools: k x stride (x ties) at 8 and 9), and a
# pairwise covering of every kind's drawn ranges (each value of each hyper-parameter meets
# each value of every other one in some point: the odd and even H and W, N, C, F, ...).

# kind -> the drawn ranges, as the strategies above draw them.
RANGES = {
    "conv": dict(
        N=range(1, 4), C=range(1, 4), F=range(1, 4), H=range(3, 10), W=range(3, 10),
        k=range(1, 5), stride=range(1, 4), pad=range(3),
    ),
    **{
        kind: dict(
            N=range(1, 4), C=range(1, 4), H=range(3, 10), W=range(3, 10), k=range(1, 4),
            stride=range(1, 4), **({"ties": (False, True)} if KINDS[kind].kinked else {}),
        )
        for kind in POOLS
    },
    "dense": dict(N=range(1, 5), d1=range(1, 5), d2=range(1, 4), M=range(1, 7), x_nd=(False, True)),
    "softmax_ce": dict(N=range(1, 6), K=range(2, 11), big=(False, True)),
    **{
        kind: dict(
            N=range(1, 4), dims=(2, 4), D=range(1, 9), C=range(1, 4), H=range(1, 5),
            W=range(1, 5), zeros=(False, True), big=(False, True),
        )
        for kind in ACTIVATIONS
    },
    "batchnorm": dict(N=range(2, 6), D=range(1, 7), tiny=(False, True)),
    "spatial_batchnorm": dict(
        N=range(1, 4), C=range(1, 4), H=range(1, 5), W=range(1, 5), tiny=(False, True),
    ),
    "layernorm": dict(N=range(1, 5), D=range(2, 9), tiny=(False, True)),
    "groupnorm": dict(
        N=range(1, 4), G=range(1, 4), cpg=range(1, 4), H=range(1, 5), W=range(1, 5),
        tiny=(False, True),
    ),
    "dropout": dict(
        N=range(1, 4), dims=(2, 4), D=range(1, 9), C=range(1, 4), H=range(1, 5), W=range(1, 5),
        p=KEEP,
    ),
}  # fmt: skip
# kind -> the product every run covers whole: (name, values) ...
PRODUCTS = {
    "conv": (("stride", (1, 2, 3)), ("pad", (0, 1, 2)), ("k", (1, 2, 3, 4)), ("size", (8, 9))),
    **{
        kind: (("k", (1, 2, 3)), ("stride", (1, 2, 3)), ("size", (8, 9)))
        + (("ties", (False, True)),) * KINDS[kind].kinked
        for kind in POOLS
    },
}


def _valid(kind: str, row: dict) -> bool:
    if kind == "conv":  # the window fits the padded input, as the strategy draws it
        return min(row["H"], row["W"]) >= row["k"] - 2 * row["pad"]
    if kind in NORMS:  # a variance over more than one value
        return _per_statistic(kind, row) >= 2
    return True


def _pairwise(kind: str) -> list[dict]:
    """A greedy covering array of strength 2 over RANGES[kind]: rows (valid ones only) that
    hold every pair of values of two hyper-parameters some valid row holds. Deterministic."""
    names = list(RANGES[kind])
    values = [list(RANGES[kind][n]) for n in names]
    rows = np.array(
        [r for r in itertools.product(*(range(len(v)) for v in values))
         if _valid(kind, {n: v[i] for n, v, i in zip(names, values, r)})]
    )  # fmt: skip
    # pair id of each row's (axis i, axis j) values: one flat space over every pair of axes
    pairs, offset = [], 0
    for i, j in itertools.combinations(range(len(names)), 2):
        pairs.append(offset + rows[:, i] * len(values[j]) + rows[:, j])
        offset += len(values[i]) * len(values[j])
    pair_ids = np.stack(pairs, axis=1)
    uncovered = np.zeros(offset, bool)
    uncovered[np.unique(pair_ids)] = True  # only what some valid row holds
    chosen = []
    while uncovered.any():
        best = int(np.argmax(uncovered[pair_ids].sum(axis=1)))
        chosen.append(best)
        uncovered[pair_ids[best]] = False
    return [{n: v[i] for n, v, i in zip(names, values, rows[c])} for c in chosen]


def _case_of(kind: str, hyper: dict, seed: int) -> Case:
    hyper = _sized(hyper)
    if kind in (*ACTIVATIONS, "dropout"):  # the shape's names of the other rank play no part
        drop = ("C", "H", "W") if hyper["dims"] == 2 else ("D",)
        hyper = {n: v for n, v in hyper.items() if n not in drop}
    return Case.make(kind, seed, **hyper)


@functools.cache
def covering_grid(kind: str) -> tuple[Case, ...]:
    """The deterministic cases every run checks beside the Hypothesis draws: the product of
    PRODUCTS[kind] (the other hyper-parameters at N = C = F = 2), then a pairwise covering
    of RANGES[kind]. Case i has seed i."""
    fixed = {"conv": dict(N=2, C=2, F=2), **{k: dict(N=2, C=2) for k in POOLS}}.get(kind, {})
    product = PRODUCTS.get(kind, ())
    rows = [
        {**fixed, **dict(zip((n for n, _ in product), values))}
        for values in itertools.product(*(v for _, v in product))
    ] if product else []  # fmt: skip
    rows += _pairwise(kind)
    cases = dict.fromkeys(_case_of(kind, row, 0) for row in rows)  # in order, once each
    return tuple(dataclasses.replace(case, seed=i) for i, case in enumerate(cases))


# --- the check -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    records: list
    message: str | None  # None: every comparison passed
    case: Case | None = None  # the minimal failing case


def load_mirrors(frameworks) -> dict:
    """{framework: its mirror module, or the exception importing it raised (every comparison
    against it is then an error record)}."""
    from parity_tests.model_harness import load_model_mirror

    found = {}
    for name in frameworks:
        try:
            found[name] = load_model_mirror(name)
        except Exception as exc:  # noqa: BLE001  (recorded as an error of every comparison)
            found[name] = exc
    return found


def _quantity(short: str) -> str:
    return "forward" if short in ("Z", "A", "P", "E") else "gradient"


def _record(recorder, run: CaseRun, short: str, against: str, note: str) -> dict:
    kind = run.layer.kind
    return recorder.check(
        tensor=f"{kind}.{short}",
        equation=own_layers.entry(kind).equations[short],
        step=kind,
        quantity=_quantity(short),
        mode=MODE,
        against=against,
        dtype=run.dtype,
        compute=lambda: run.check(short, against),
        note=note,
        fail=False,
    )


def check_layer(
    recorder, layer: UserLayer, dtype: str, frameworks=(), max_examples: int = 25
) -> Outcome:
    """Draw `max_examples` cases of the layer's kind and compare (see the module docstring).
    `recorder`: a ParityRecorder (its records go to the report) or a QuietRecorder."""
    kind, shorts = layer.kind, OUTPUTS[layer.kind]
    mirrors = load_mirrors(frameworks)
    worst: dict = {}  # (short, side) -> (budget used, case)
    seen: list = []  # the draws, for a tensor no draw could check (every one vacuous)

    @hyp_settings(max_examples=max_examples, report_multiple_bugs=False, database=None)
    @given(case=cases(kind))
    def draws(case):
        note(f"hyper-parameters: {case.text()}")
        seen[:] = [case]
        measure_case(layer, case, dtype, mirrors, worst)

    def grid():
        """The covering grid, against the reference: after the draws, so that a mistake
        they find is shown on Hypothesis' shrunk example."""
        for case in covering_grid(kind):
            run = CaseRun(layer, case, dtype, mirrors)
            try:
                _ = run.user
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001
                raise UserFailure(case, exc) from None
            for short in shorts:
                if _failed(run.measure(short, REFERENCE)):
                    raise LayerMismatch(case, f"{kind}.{short}", REFERENCE)
            _contract_of(run, case)

    found_by = HYPOTHESIS
    try:
        draws()
        found_by = GRID
        grid()
    except UserFailure as exc:
        return _user_failure(recorder, layer, dtype, mirrors, exc, found_by)
    except LayerMismatch as exc:
        return _mismatch(recorder, layer, dtype, mirrors, exc.case, found_by)
    # Every draw passed: one record per tensor and side, the draw that used most of its budget.
    return worst_outcome(
        recorder, layer, dtype, mirrors, worst, seen[0], f"{max_examples} draws", "no draw"
    )


def grid_outcome(recorder, layer: UserLayer, dtype: str, mirrors: dict) -> Outcome:
    """check_layer over the covering grid alone, no Hypothesis draws (the notebook API's
    check_layers): the first failing case's records and message, else one record per tensor
    and side at the case that used most of its budget."""
    grid = covering_grid(layer.kind)
    worst: dict = {}
    try:
        for case in grid:
            measure_case(layer, case, dtype, mirrors, worst)
    except UserFailure as exc:
        return _user_failure(recorder, layer, dtype, mirrors, exc, GRID)
    except LayerMismatch as exc:
        return _mismatch(recorder, layer, dtype, mirrors, exc.case, GRID)
    return worst_outcome(
        recorder, layer, dtype, mirrors, worst, grid[0], f"{len(grid)} grid cases", "no case"
    )


def _contract_of(run: CaseRun, case) -> None:
    """run.contract(), its OwnLayerError as the case's UserFailure."""
    try:
        run.contract()
    except OwnLayerError as exc:
        raise UserFailure(case, exc) from None


def measure_case(layer: UserLayer, case, dtype: str, mirrors: dict, worst: dict) -> None:
    """One case against the reference, then each loaded framework: raises UserFailure when
    the user's code fails, LayerMismatch at the first tensor and side that disagrees; else
    keeps in `worst` ((short, side) -> (budget used, case)) the case that used most budget."""
    run = CaseRun(layer, case, dtype, mirrors)
    try:
        _ = run.user
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  (SystemExit from user code included)
        raise UserFailure(case, exc) from None
    for side in (
        REFERENCE,
        *mirrors,
    ):  # the reference first: a user's mistake shrinks without frameworks
        if isinstance(mirrors.get(side), BaseException):
            continue
        for short in OUTPUTS[layer.kind]:
            try:
                result = run.measure(short, side)
            except Exception:  # noqa: BLE001  (a framework that cannot run this case)
                raise LayerMismatch(case, f"{layer.kind}.{short}", side) from None
            if _failed(result):
                raise LayerMismatch(case, f"{layer.kind}.{short}", side)
            if result["status"] == "pass":
                budget = float(result["budget_used"])
                if budget >= worst.get((short, side), (-1.0,))[0]:
                    worst[(short, side)] = (budget, case)
        if side == REFERENCE:
            _contract_of(run, case)


def worst_outcome(
    recorder, layer: UserLayer, dtype: str, mirrors: dict, worst: dict, fallback, of: str, none: str
):
    """Every case passed: one record per tensor and side, at the case that used most of its
    budget (`fallback` where none measured it); `of` and `none` word the record's note."""
    runs: dict = {}
    records = []
    for side in (REFERENCE, *mirrors):
        for short in OUTPUTS[layer.kind]:
            budget, case = worst.get((short, side), (None, fallback))
            if case not in runs:
                runs[case] = CaseRun(layer, case, dtype, mirrors)
            what = f"the largest budget used of {of}" if budget is not None else none
            records.append(_record(recorder, runs[case], short, side, f"{what}: {case.text()}"))
    bad = [r for r in records if r["status"] in FAILED]
    if bad:  # a framework that could not be loaded: every comparison with it is an error
        return Outcome(records, _message(recorder, layer, dtype, None, bad, None))
    return Outcome(records, None)


# How a failing case was found: the words of its message line and of its records' note.
HYPOTHESIS = ("minimal failing example (hypothesis, shrunk)", "minimal failing draw")
GRID = ("failing point of the covering grid (deterministic, first of the grid)", "failing grid point")


def _mismatch(recorder, layer, dtype, mirrors, case: Case, found_by=HYPOTHESIS) -> Outcome:
    run = CaseRun(layer, case, dtype, mirrors)
    note = f"{found_by[1]}: {case.text()}"
    records = [
        _record(recorder, run, s, side, note)
        for side in (REFERENCE, *mirrors)
        for s in OUTPUTS[layer.kind]
    ]
    bad = [r for r in records if r["status"] in FAILED]
    shorts = [r["tensor"].split(".", 1)[1] for r in bad if r["against"] == REFERENCE]
    text = sweep(layer, dtype, dict.fromkeys(shorts) or None)
    return Outcome(records, _message(recorder, layer, dtype, case, bad, text, found_by), case)


def _user_failure(recorder, layer, dtype, mirrors, exc: UserFailure, found_by=HYPOTHESIS) -> Outcome:
    case, error = exc.case, exc.error
    run = CaseRun(layer, case, dtype, mirrors)
    note = f"{found_by[1]}: {case.text()}"
    records = [_record(recorder, run, s, REFERENCE, note) for s in OUTPUTS[layer.kind]]
    if hasattr(error, "parity_tensor"):  # a contract broken: its own error record
        records.append(_contract_record(recorder, run, error, note))
    swept = sweep(layer, dtype, error=_error_text(error))
    everywhere = (
        ""
        if swept
        else " (the same at every point of the sweep: it does not depend on the hyper-parameters)"
    )
    head = [
        f"own layer {layer.kind} [{dtype}] ({layer.where}) "
        f"{'breaks its convention' if hasattr(error, 'parity_tensor') else 'failed to run'}: "
        f"{_error_text(error)}{everywhere}",
        f"{found_by[0]}: {case.text()}",
        *_user_traceback(error),
        *([swept] if swept else []),
        f"reproduce: {recorder.reproduce()}",
    ]
    return Outcome(records, "\n".join(head), case)


def _contract_record(recorder, run: CaseRun, error: OwnLayerError, note: str) -> dict:
    """The error record of a broken contract: dropout.A_test, batchnorm.running_var, ..."""
    short, equation = error.parity_tensor
    kind = run.layer.kind

    def compute():
        raise error

    return recorder.check(
        tensor=f"{kind}.{short}",
        equation=equation,
        step=kind,
        quantity="forward",
        mode=MODE,
        against=REFERENCE,
        dtype=run.dtype,
        compute=compute,
        note=note,
        fail=False,
    )


def _user_traceback(error: BaseException) -> list[str]:
    """The frames of the user's code (none for what the suite found wrong in a result)."""
    if isinstance(error, own_layers.OwnLayerError):
        return []
    suite = str(Path(__file__).resolve().parent)
    # Raised in the user's process (own_layers' isolation "process"): that process's frames.
    frames = getattr(error, "parity_frames", None) or traceback.extract_tb(error.__traceback__)
    calls = [i for i, f in enumerate(frames) if f.filename.startswith(suite)]
    frames = frames[calls[-1] + 1 :] if calls else frames  # below the suite's last call
    if not frames:
        return []
    return ["Traceback (your code, most recent call last):", *traceback.format_list(frames[-6:])]


def _message(recorder, layer, dtype, case, bad, sweep_text, found_by=HYPOTHESIS) -> str:
    listed = ", ".join(f"{r['tensor']} vs {r['against']}" for r in bad)
    lines = [f"own layer {layer.kind} [{dtype}] ({layer.where}) differs: {listed}"]
    if case is not None:
        lines.append(f"{found_by[0]}: {case.text()}")
        flags = [n for n, v in case.hyper if n in FLAGS and v is True]
        lines += [f"  {n}=yes: {FLAGS[n]}" for n in flags]
    first = bad[0]
    lines += ["", format_mismatch(first, recorder.reproduce())]
    if sweep_text:
        lines += ["", sweep_text]
    return "\n".join(lines)

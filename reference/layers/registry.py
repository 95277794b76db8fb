"""The layer registry: one declarative entry per layer kind, read by everything that needs it.

An entry (`LayerKind`) says, for one spec token (reference/spec.py's layer class):

- its tensors' short names (`outputs`, the input gradient `input_grad`, its `params`) and
  the equation id of each (`equations`);
- its readable forward and backward (`forward`, `backward`, and `params_only` for a
  convolution that needs no image gradient), in the calling form of its `family`;
- its stage bound (`bound`: the expression on absolute values and the rounding count, with
  the reason in reference/rounding.py);
- whether its backward takes a branch (`kinked`: ReLU's mask, max-pool's maximum), which
  lets a framework legitimately take the other branch within rounding of the kink;
- how its parameters are drawn (`init`);
- its catalogue of classic mistakes (`mistakes`), each the mutant that makes it, where it
  must be caught and the explainer's name for it;
- the CS231n-style functions a user may bring for it with --parity-layer (`user`).

Each layer module defines its entries beside its maths (`ENTRIES`, reference/layers/pool.py
holds the pools') and its equations' audit records (`EQUATIONS`, the `Equation` below);
`reference.layers.KINDS` and `reference.layers.EQUATIONS` collect them. reference/network.py, the
stage rule (parity_tests/model_stages.py), the kinks, the generated networks
(parity_tests/strategies.py), the mutation catalogue (parity_tests/model_mutants.py) and the
user-layer adapters (parity_tests/own_layers.py, own_layer_checks.py) read the entries; each
framework's mirror is a table from kind to function whose keys a test holds equal to
`KINDS`. The explainer (parity_tests/explain.py) names a catalogue mistake by replaying its
mutant on the stage's own inputs (`replay`); a few mistakes also have a hand-written
recogniser there where it says more (how many windows were tied).

A family is a calling form shared by several kinds (`FAMILIES`): the Network calls every
kind of one family the same way, so a new kind of an existing family is its entry, one row
per mirror table and its spec token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

# An equation's audit record (reference/equations.py): the article's E1..E17 there, each layer
# module's X ids beside its maths (its `EQUATIONS`).
HOLDS = "holds"
CONVENTION = "holds under a stated convention"
CORRECTED = "does not hold as written"
VERDICTS = (HOLDS, CONVENTION, CORRECTED)


@dataclass(frozen=True)
class Equation:
    id: str
    statement: str  # as docs/article.md states it
    verdict: str  # one of VERDICTS
    convention: str = ""  # CONVENTION: the convention adopted
    correction: str = ""  # CORRECTED: the form that holds
    note: str = ""  # where the text is ambiguous or mistyped
    variants: tuple = ()  # published-code departures (reference.published) that break it
    via: tuple = ()  # equations whose checks exercise this one (no record of its own)
    # The layer setting ("pad", "stride") that makes a layer of the checked model exercise
    # this equation: its `via` checks then count only on those layers (X1, X2).
    via_setting: str = ""


@dataclass(frozen=True)
class Bound:
    """The stage rule's ingredients for one tensor: `magnitude` M (the expression on absolute
    values; None: the exact rule, a selection or re-indexing), `roundings` k, `what` M is,
    in words, for the report's rule column, and whether k's roundings are charged at their
    worst case (`deterministic`)."""

    magnitude: np.ndarray | None
    roundings: int
    what: str = ""
    # The worst case k u, not the probabilistic estimate: the frameworks' running sums of
    # many equal values (a batch statistic over mostly-blank images) round coherently.
    deterministic: bool = False
    # A second part charged at the worst case k u whatever `deterministic` says (a
    # normalisation: its statistics' coherent error and its few-rounding terms, while its
    # long sums of products keep the probabilistic estimate); None: no such part.
    coherent: np.ndarray | None = None


@dataclass(frozen=True)
class Site:
    """What a bound is computed from, for one layer of one network (all arrays are the
    reference's own): `x` the layer's input, `params` its parameters by short name, `upstream`
    dE/d(its output) (None for the loss), `ours` its own forward outputs by short name,
    `target` the loss's target, `reduction` sum or mean."""

    layer: object
    x: np.ndarray
    params: Mapping[str, np.ndarray] = field(default_factory=dict)
    upstream: np.ndarray | None = None
    ours: Mapping[str, np.ndarray] = field(default_factory=dict)
    target: object = None
    reduction: str = "sum"


@dataclass(frozen=True)
class Case:
    """Where a mistake is run: a spec, the loss reduction, the images' pixel scale (1: the
    suite's [0, 1] pixels; larger: images scaled up until logits overflow a softmax without
    the max shift)."""

    spec: str
    reduction: str = "sum"
    pixel_scale: float = 1.0

    def __str__(self) -> str:
        extra = [f"reduction={self.reduction}"] if self.reduction != "sum" else []
        if self.pixel_scale != 1:
            extra.append(f"pixels x {self.pixel_scale:g}")
        return self.spec + (f" [{', '.join(extra)}]" if extra else "")


@dataclass(frozen=True)
class Mistake:
    """A classic derivation mistake in one layer kind: its replacement `forward` and/or
    `backward` (the family's calling form; None keeps the kind's own), the layer-qualified
    tensor `first` where it must be caught in `case`, the explainer's name for it
    (`explains`), and where it is honestly not detectable (`blind`), if worth stating.
    parity_tests/model_mutants.py runs and localises every kind's mistakes."""

    id: str
    equation: str  # the ids it breaks
    first: str
    case: Case
    title: str  # the mistake, in words
    explains: str
    forward: Callable | None = None
    backward: Callable | None = None
    caught_on: str = "any input"
    blind: Case | None = None


@dataclass(frozen=True)
class LayerKind:
    name: str  # the spec token's kind: conv, maxpool, ...
    family: str  # one of FAMILIES: how Network calls forward and backward
    outputs: tuple[str, ...]  # forward tensors, short names
    input_grad: str  # dE/d(the layer's input), short name
    equations: Mapping[str, str]  # short tensor name -> equation id
    forward: Callable
    backward: Callable
    bound: Callable[[Site, str], Bound]  # (site, short tensor name) -> Bound
    params: tuple[str, ...] = ()  # parameter short names; "b" only when the layer has a bias
    params_only: Callable | None = None  # conv: the backward without the image gradient
    kinked: bool = False
    init: Callable | None = None  # (layer, in_shape) -> (fan_in, {short: shape})
    mistakes: tuple[Mistake, ...] = ()  # its mutation catalogue
    # The CS231n-style functions --parity-layer takes for this kind (parity_tests/own_layers.py),
    # "name(args) -> result" each, forward first; () where a user's own layer is not taken.
    user: tuple[str, ...] = ()
    # Inputs drawn per step from the run's seed, not trained (dropout's keep-mask):
    # (layer, x_shape, rng) -> {short name: array}; reference/network.py draws them
    # (Network.drawn) and hands the same arrays to its forward, backward and every mirror.
    draws: Callable | None = None
    # Its output does not change when a per-channel constant is added to its input: the bias
    # gradient of the layer before it is 0 (Network.exact_zeros). True (batch norm), or
    # (layer, in_shape without the batch) -> bool where it depends on the layer: a layer norm
    # over one channel, a group norm of one channel a group.
    shift_invariant: bool | Callable = False
    # Its forward moves, selects, averages or exactly scales its input's values (ReLU, the
    # pools, flatten, dropout, gap): an input off by up to d (elementwise) gives an output
    # off by at most the forward applied to d, so the end-to-end allowance of its output
    # carries its input's (parity_tests/model_harness.py, ModelHarness._carried_forward).
    passes_on: bool = False

    def removes_channel_constant(self, layer, in_shape) -> bool:
        """shift_invariant for this layer and its input's shape (batch left out)."""
        s = self.shift_invariant
        return bool(s(layer, tuple(in_shape)) if callable(s) else s)

    def params_of(self, layer) -> tuple[str, ...]:
        if getattr(layer, "bias", True):
            return self.params
        return tuple(filter("b".__ne__, self.params))


# The calling forms, one per family (reference/network.py uses them; docs: Ops):
#   conv:       forward(X, F, b, stride, pad) -> Z;  backward(X, F, dZ, stride, pad, bias) ->
#               {"dX", "dF", "db"?}
#   pool:       forward(X, k, stride) -> A;  backward(X, dA, k, stride) -> dX
#   activation: forward(Z) -> A;  backward(dA, Z, A) -> dZ
#   flatten:    forward(X) -> A;  backward(dA, x_shape) -> dX
#   dense:      forward(A, W, b) -> Z;  backward(A, W, dZ, bias) -> {"dA", "dW", "db"?}
#   softmax_ce: forward(Z, labels, reduction) -> (P, E);  backward(P, labels, reduction) -> dZ
#   mse:        forward(O, Y, reduction) -> E;  backward(O, Y, reduction) -> dO
#   norm:       forward(X, gamma, beta, groups) -> A;  backward(X, gamma, dA, groups) ->
#               {"dX", "dgamma", "dbeta"}  (groups: group norm's G, None for the others)
#   dropout:    forward(X, mask, p) -> A;  backward(dA, mask, p) -> dX  (mask: drawn)
FAMILIES = ("conv", "pool", "activation", "flatten", "dense", "softmax_ce", "mse", "norm", "dropout")


def call_forward(kind: LayerKind, forward, layer, h, p: Mapping, target, reduction) -> dict:
    """One layer's forward in its family's calling form: {short name: array}."""
    fam = kind.family
    if fam == "conv":
        return {"Z": forward(h, p["F"], p.get("b"), layer.stride, layer.pad)}
    if fam == "pool":
        return {"A": forward(h, layer.size, layer.stride)}
    if fam == "dense":
        return {"Z": forward(h, p["W"], p.get("b"))}
    if fam == "softmax_ce":
        P, E = forward(h, target, reduction)
        return {"P": P, "E": E}
    if fam == "mse":
        return {"E": forward(h, target, reduction)}
    if fam == "norm":
        return {"A": forward(h, p["gamma"], p["beta"], getattr(layer, "groups", None))}
    if fam == "dropout":
        return {"A": forward(h, p["mask"], layer.p)}
    return {kind.outputs[0]: forward(h)}  # activation, flatten


def call_backward(
    kind: LayerKind, backward, layer, x, p: Mapping, fwd: Mapping, up, target, reduction, decide
):
    """One layer's backward in its family's calling form: {short name: array}. `fwd`: its own
    forward outputs by short name; `decide`: the array a kinked layer takes its branch from
    (its input unless the end-to-end kink rule says otherwise)."""
    fam = kind.family
    if fam == "softmax_ce":
        return {"dZ": backward(fwd["P"], target, reduction)}
    if fam == "mse":
        return {"dO": backward(x, target, reduction)}
    if fam == "conv":
        return backward(x, p["F"], up, layer.stride, layer.pad, layer.bias)
    if fam == "dense":
        return backward(x, p["W"], up, layer.bias)
    if fam == "pool":
        return {"dX": backward(decide, up, layer.size, layer.stride)}
    if fam == "flatten":
        return {"dX": backward(up, x.shape)}
    if fam == "norm":
        return backward(x, p["gamma"], up, getattr(layer, "groups", None))
    if fam == "dropout":
        return {"dX": backward(up, p["mask"], layer.p)}
    return {"dZ": backward(up, decide, fwd["A"])}  # activation: ReLU reads Z, others A


def call_arguments(
    kind: LayerKind, layer, x, p: Mapping, fwd: Mapping, target, reduction, up=None, backward=False
) -> dict:
    """What one layer's forward (and with `backward`, its backward) is fed, by the names of
    its family's calling form ({"X": ..., "F": ..., "dZ": ...}): `x` its input, `p` its
    parameters by short name, `fwd` its own forward outputs, `up` dE/d(its output) (None for
    a loss). What the explainer reads to recompute a mistake the way it was made."""
    fam = kind.family
    if fam == "conv":
        out = dict(X=x, F=p["F"], b=p.get("b"), stride=layer.stride, pad=layer.pad, bias=layer.bias)
        grad = {"dZ": up}
    elif fam == "pool":
        out, grad = dict(X=x, k=layer.size, stride=layer.stride), {"dA": up}
    elif fam == "activation":
        out, grad = dict(Z=x), {"A": fwd.get("A"), "dA": up}
    elif fam == "flatten":
        out, grad = dict(X=x), {"dA": up}
    elif fam == "dense":
        out, grad = dict(A=x, W=p["W"], b=p.get("b"), bias=layer.bias), {"dZ": up}
    elif fam == "softmax_ce":
        out, grad = dict(Z=x, labels=target, reduction=reduction), {"P": fwd.get("P")}
    elif fam == "norm":
        groups = getattr(layer, "groups", None)
        out, grad = dict(X=x, gamma=p["gamma"], beta=p["beta"], groups=groups), {"dA": up}
    elif fam == "dropout":
        out, grad = dict(X=x, mask=p.get("mask"), p=layer.p), {"dA": up}
    else:  # mse
        out, grad = dict(O=x, Y=target, reduction=reduction), {}
    return {**out, **grad} if backward else out


# The calling form's name for a layer's input, per family (call_arguments' keys).
_INPUT = {
    "conv": "X",
    "pool": "X",
    "activation": "Z",
    "flatten": "X",
    "dense": "A",
    "softmax_ce": "Z",
    "mse": "O",
    "norm": "X",
    "dropout": "X",
}


@dataclass(frozen=True)
class _Settings:
    """A layer's settings as call_forward / call_backward read them, from call_arguments."""

    stride: int | None = None
    pad: int | None = None
    size: int | None = None
    bias: bool = True
    groups: int | None = None  # group norm's G
    p: float | None = None  # dropout's probability


def replay(kind: LayerKind, fn: Callable, args: Mapping, backward: bool) -> dict:
    """`fn` (the kind's forward, or with `backward` its backward, or a mistake's) called on
    `args`, what call_arguments says the layer was fed: {short name: array}. How the
    explainer recomputes a catalogue mistake from a stage's own inputs."""
    layer = _Settings(
        args.get("stride"),
        args.get("pad"),
        args.get("k"),
        bool(args.get("bias", True)),
        args.get("groups"),
        args.get("p"),
    )
    x = args[_INPUT[kind.family]]
    p = {  # None: the layer has none
        "F": args.get("F"),
        "W": args.get("W"),
        "b": args.get("b"),
        "gamma": args.get("gamma"),
        "beta": args.get("beta"),
        "mask": args.get("mask"),
    }
    target = args.get("labels", args.get("Y"))
    reduction = args.get("reduction", "sum")
    if not backward:
        return call_forward(kind, fn, layer, x, p, target, reduction)
    up = args.get("dZ", args.get("dA"))
    fwd = {"A": args.get("A"), "P": args.get("P")}
    return call_backward(kind, fn, layer, x, p, fwd, up, target, reduction, x)


def numbered(kind: LayerKind) -> bool:
    """Layers named by the weighted layer count: conv1, dense3, batchnorm2 (weighted), relu1,
    pool1, dropout3."""
    return kind.family in ("conv", "dense", "pool", "activation", "norm", "dropout")


def name_prefix(kind: LayerKind) -> str:
    return "pool" if kind.family == "pool" else kind.name

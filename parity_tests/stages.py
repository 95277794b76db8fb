"""The article as a view onto the article network (`Network("article")`, reference/network.py).

The article's 17 checked tensors (`patches`, `Z1`, ..., `b_new`) and its equation ids E1..E17
are names for tensors of the one engine: `Z1` is `conv1.Z`, `dE_dZ2` is `sigmoid2.dZ`,
`dE_dA1` is `flatten.dX`, `f_new` is `conv1.F_new` (in the article's layout,
reference.layout). Two are the article's own intermediates, which no layer outputs:
`patches` (E1's windows, a re-indexing of X) and `dO_dZ2` (E9, the output sigmoid's
derivative alone: its backward fed ones).

A stage-isolated check feeds a run of consecutive layers of the network (`nodes`) the
implementation's own article tensors (`inputs`, converted to the network's layout): the
reference runs them through `Network.node_step`, a framework through its mirror's `stage`
(parity_tests/mirrors), the same layers either way. The tolerance is the registry's bound of
each layer (parity_tests/model_stages.py), composed along the run: a backward through two
layers carries the first's magnitude into the second and adds the roundings; a re-indexing
(flatten) carries its upstream's bound through. Nothing here computes maths of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from parity_tests import model_stages, tolerance
from reference import patches as article_patches
from reference.layers.registry import Bound
from reference.layout import from_layout, to_layout
from reference.network import Network
from reference.update import _sgd_update

NETWORK = Network("article")

# Article name -> the network's tensor it is. `sigmoid2.dA_dZ` is the view's own name for
# dO_dZ2 (no layer outputs it; the network harness derives it from each step, DERIVED).
AS_NETWORK = {
    "X": "X",
    "f": "conv1.F",
    "W": "dense2.W",
    "b": "dense2.b",
    "Z1": "conv1.Z",
    "A1": "sigmoid1.A",
    "Z2": "dense2.Z",
    "O": "sigmoid2.A",
    "E": "mse.E",
    "dE_dO": "mse.dO",
    "dO_dZ2": "sigmoid2.dA_dZ",
    "dE_dZ2": "sigmoid2.dZ",
    "dE_dW": "dense2.dW",
    "dE_db": "dense2.db",
    "dE_dA1": "flatten.dX",
    "dE_dZ1": "sigmoid1.dZ",
    "dE_df": "conv1.dF",
    "f_new": "conv1.F_new",
    "W_new": "dense2.W_new",
    "b_new": "dense2.b_new",
}
AS_ARTICLE = {v: k for k, v in AS_NETWORK.items()}
# torch's Linear weight (U, F), reference.layout's "nchw" W, is the network's W (F, U) transposed.
_DENSE_WEIGHTS = ("W", "dE_dW", "W_new")


def shape_of(params) -> tuple[int, int]:
    """(K filters, s) of the article's parameters, what its layout conversions need."""
    f = params["f"]
    return int(f.shape[2]), int(f.shape[0])


def to_network(tensors, shape) -> dict:
    """Article tensors (article names and layout) under the network's names, in its layout;
    `y` becomes the mse target Y (N, 1)."""
    out = to_layout(dict(tensors), "nchw", *shape)
    names = {**AS_NETWORK, "y": "y"}
    return {names[k]: (v.T if k in _DENSE_WEIGHTS else v) for k, v in out.items()}


def to_article(name: str, array, shape) -> np.ndarray:
    """One tensor of the network (its article `name`, the network's layout) in the article's."""
    array = np.asarray(array)
    array = array.T if name in _DENSE_WEIGHTS else array
    out, failed = from_layout({name: array}, "nchw", *shape)
    if failed:
        raise ValueError(f"{name} of shape {array.shape} is not the article network's")
    return out[name]


def article_step(step, shape) -> dict:
    """Every article tensor of a network step (patches excepted: an input re-indexing)."""
    return {a: to_article(a, step[n], shape) for a, n in AS_NETWORK.items() if n in step}


def network_params(params) -> dict:
    """The article's f, W, b as the network's conv1.F, dense2.W, dense2.b."""
    net = to_network({k: params[k] for k in ("f", "W", "b")}, shape_of(params))
    return {AS_NETWORK[k]: net[AS_NETWORK[k]] for k in ("f", "W", "b")}


def _node(name: str):
    return next(n for n in NETWORK.nodes if n.name == name)


def _dO_dZ2(step: dict) -> np.ndarray:
    """E9 from a network step: the output sigmoid's backward fed ones at its own input."""
    z2 = step["dense2.Z"]
    return NETWORK.node_step(_node("sigmoid2"), z2, {}, np.ones_like(z2), None)["sigmoid2.dZ"]


# The view's tensors the network harness derives from every whole step.
DERIVED: dict[str, Callable[[dict], np.ndarray]] = {"sigmoid2.dA_dZ": _dO_dZ2}


@dataclass(frozen=True, kw_only=True)
class Stage:
    tensor: str
    equation: str
    step: str
    quantity: str  # forward | gradient | update
    inputs: tuple  # the article tensors the stage is fed (the implementation's own)
    nodes: tuple = ()  # the network's layers run, in order ((): patches, updates)
    source: str = ""  # the article input the first of them takes
    # dE/d(the last layer's output): an input's name, "ones" (E9 alone), None (a forward, or a
    # run ending at the loss, whose gradient is its own)
    upstream: str | None = None
    gradient: str | None = None  # update stages: the gradient the parameter moves along (E17)

    @property
    def id(self) -> str:
        return self.tensor

    @property
    def network(self) -> str:
        """The network's name for the tensor ("" for patches)."""
        return AS_NETWORK.get(self.tensor, "")


def _stage(tensor, equation, step, quantity, inputs, nodes=(), source="", upstream=None, gradient=None):
    return Stage(
        tensor=tensor,
        equation=equation,
        step=step,
        quantity=quantity,
        inputs=inputs,
        nodes=nodes,
        source=source,
        upstream=upstream,
        gradient=gradient,
    )


_DENSE = ("flatten", "dense2")
_DENSE_BACKWARD = ("A1", "W", "b", "dE_dZ2")
# An update needs the parameters (the suite's own, always there) and its own gradient only:
# an implementation that lacks one gradient still has the other two updates checked.
_PARAMS = ("f", "W", "b")

STAGES = (
    _stage("patches", "E1", "patches", "forward", ("X", "f")),
    _stage("Z1", "E1", "conv", "forward", ("X", "f"), ("conv1",), "X"),
    _stage("A1", "E3", "activation", "forward", ("Z1",), ("sigmoid1",), "Z1"),
    _stage("Z2", "E5", "dense", "forward", ("A1", "W", "b"), _DENSE, "A1"),
    _stage("O", "E6", "output", "forward", ("Z2",), ("sigmoid2",), "Z2"),
    _stage("E", "E7", "loss", "forward", ("O", "y"), ("mse",), "O"),
    _stage("dE_dO", "E8", "loss", "gradient", ("O", "y"), ("mse",), "O"),
    _stage("dO_dZ2", "E9", "output", "gradient", ("Z2",), ("sigmoid2",), "Z2", "ones"),
    _stage("dE_dZ2", "E8*E9", "output", "gradient", ("Z2", "y"), ("sigmoid2", "mse"), "Z2"),
    _stage("dE_dW", "E11", "dense", "gradient", _DENSE_BACKWARD, _DENSE, "A1", "dE_dZ2"),
    _stage("dE_db", "E12", "dense", "gradient", _DENSE_BACKWARD, _DENSE, "A1", "dE_dZ2"),
    _stage("dE_dA1", "E13", "dense", "gradient", _DENSE_BACKWARD, _DENSE, "A1", "dE_dZ2"),
    _stage("dE_dZ1", "E14", "activation", "gradient", ("Z1", "dE_dA1"), ("sigmoid1",), "Z1", "dE_dA1"),
    _stage("dE_df", "E16", "conv", "gradient", ("X", "f", "dE_dZ1"), ("conv1",), "X", "dE_dZ1"),
    _stage("f_new", "E17", "update", "update", (*_PARAMS, "dE_df"), gradient="dE_df"),
    _stage("W_new", "E17", "update", "update", (*_PARAMS, "dE_dW"), gradient="dE_dW"),
    _stage("b_new", "E17", "update", "update", (*_PARAMS, "dE_db"), gradient="dE_db"),
)

BY_TENSOR = {s.tensor: s for s in STAGES}
# The gradient each updated parameter moves along (E17).
UPDATE_GRADIENT = {s.tensor: s.gradient for s in STAGES if s.gradient is not None}
FORWARD = tuple(s for s in STAGES if s.quantity == "forward")
GRADIENT = tuple(s for s in STAGES if s.quantity == "gradient")
UPDATE = tuple(s for s in STAGES if s.quantity == "update")
# Everything a whole-model run produces (patches are an input re-indexing, not a model output).
END_TO_END = tuple(s for s in STAGES if s.tensor != "patches")


# --- running a stage -----------------------------------------------------------------------


@dataclass(frozen=True)
class Fed:
    """A stage's inputs in the network's terms: the first layer's input `x`, the parameters
    (network names), dE/d(the last layer's output) (None: none) and the loss's target."""

    x: np.ndarray
    params: dict
    upstream: np.ndarray | None
    target: np.ndarray | None


def fed(stage: Stage, inputs, shape) -> Fed:
    net = to_network(inputs, shape)
    params = {n: net[n] for n in (AS_NETWORK[p] for p in _PARAMS) if n in net}
    x = net[AS_NETWORK[stage.source]]
    upstream = None
    if stage.upstream == "ones":
        upstream = np.ones_like(x)  # an elementwise layer: its output has its input's shape
    elif stage.upstream is not None:
        upstream = net[AS_NETWORK[stage.upstream]]
    return Fed(x, params, upstream, net.get("y"))


def reference_layer(node, x, params, upstream, target, reduction) -> dict:
    """The reference's layer (the network's own functions): Network.node_step."""
    return NETWORK.node_step(node, x, params, upstream, target, reduction)


def mirror_layer(mirror) -> Callable:
    """A framework's layer (its mirror's stage) in reference_layer's calling form."""

    def run(node, x, params, upstream, target, reduction):
        return mirror.stage(NETWORK, node, x, params, upstream, target, reduction)

    return run


def run_layers(layer: Callable, stage: Stage, f: Fed, reduction: str) -> tuple[dict, list]:
    """(every tensor the stage's layers compute, each layer's input): forward through them,
    then, for a gradient, backward from the last (fed f.upstream, or its own loss gradient)."""
    nodes = [_node(n) for n in stage.nodes]
    backward = stage.quantity == "gradient"
    got, xs, h = {}, [], f.x
    for i, node in enumerate(nodes):
        xs.append(h)
        up = f.upstream if backward and i == len(nodes) - 1 else None
        got.update(layer(node, h, f.params, up, f.target, reduction))
        if not node.layer.is_loss:
            h = got[node.q(node.outputs[0])]
    if backward:
        for i in range(len(nodes) - 2, -1, -1):
            nxt = nodes[i + 1]
            got.update(layer(nodes[i], xs[i], f.params, got[nxt.q(nxt.input_grad)], f.target, reduction))
    return got, xs


def _network_name(stage: Stage) -> str:
    return "sigmoid2.dZ" if stage.tensor == "dO_dZ2" else stage.network


def _bound(stage: Stage, f: Fed, ours: dict, xs: list, reduction: str) -> Bound:
    """The stage rule's Bound for the stage's tensor: the registry's bound of the layer that
    computes it; backward through several layers, each layer's bound fed the magnitude of
    the one after it (its roundings added), a re-indexing carrying it through."""
    nodes = [_node(n) for n in stage.nodes]
    name = _network_name(stage)
    short = name.split(".", 1)[1]
    if stage.quantity == "forward":
        i = next(i for i, n in enumerate(nodes) if n.q(short) == name)
        return model_stages.bound(nodes[i], short, xs[i], f.params, None, ours, reduction, f.target)
    up_bound = None
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        mine = short if node.q(short) == name else node.input_grad
        if i == len(nodes) - 1:
            up = f.upstream
        else:
            nxt = nodes[i + 1]
            has_up = up_bound is not None and up_bound.magnitude is not None
            up = up_bound.magnitude if has_up else ours[nxt.q(nxt.input_grad)]
        b = model_stages.bound(node, mine, xs[i], f.params, up, ours, reduction, f.target)
        if up_bound is not None and up_bound.magnitude is not None:
            if b.magnitude is None:  # a re-indexing: the upstream's bound, moved
                moved = reference_layer(node, xs[i], f.params, up_bound.magnitude, f.target, reduction)
                b = dataclasses.replace(up_bound, magnitude=moved[node.q(mine)])
            else:
                k, what = b.roundings + up_bound.roundings, f"{b.what} with |dA| <= {up_bound.what}"
                b = dataclasses.replace(b, roundings=k, what=what)
        if node.q(mine) == name:
            return b
        up_bound = b
    raise AssertionError(f"{name} is not computed by {stage.nodes}")


def patches(X, shape) -> np.ndarray:
    """E1's windows of the article images X (28, 28, N): the article's own function."""
    return article_patches.extract_patches(X, shape[1])


def reference_stage(
    stage: Stage, inputs, lr: float, reduction: str, shape
) -> tuple[np.ndarray, tolerance.Tolerance]:
    """(the reference's value, the stage rule) of `stage` fed `inputs` (article names and
    layout, the run's dtype): the network's layers, the result in the article's layout."""
    dtype = np.asarray(inputs[stage.inputs[0]]).dtype
    if stage.tensor == "patches":
        out = patches(inputs["X"], shape)
        return out, tolerance.exact(out.shape)
    if stage.quantity == "update":
        p, g = inputs[stage.tensor[: -len("_new")]], inputs[stage.gradient]
        return _sgd_update(p, g, lr), model_stages.update_tolerance(p, g, lr, dtype)
    f, ours, xs, value = _reference_run(stage, inputs, reduction, shape)
    b = _bound(stage, f, ours, xs, reduction)
    if b.magnitude is not None:  # the rule on the article's layout, element for element
        b = dataclasses.replace(b, magnitude=to_article(stage.tensor, b.magnitude, shape))
    return value, model_stages.tolerance_of(b, value.shape, dtype)


def reference_value(stage: Stage, inputs, lr: float, reduction: str, shape) -> np.ndarray:
    """reference_stage's value alone, in the inputs' dtype (a truth's extended precision
    included: no rule is computed for it)."""
    if stage.tensor == "patches":
        return patches(inputs["X"], shape)
    if stage.quantity == "update":
        return _sgd_update(inputs[stage.tensor[: -len("_new")]], inputs[stage.gradient], lr)
    return _reference_run(stage, inputs, reduction, shape)[3]


def _reference_run(stage: Stage, inputs, reduction: str, shape) -> tuple:
    """(the layers' inputs, their outputs, what the bound reads, the value in the article's
    layout) of a layer stage."""
    f = fed(stage, inputs, shape)
    ours, xs = run_layers(reference_layer, stage, f, reduction)
    return f, ours, xs, to_article(stage.tensor, ours[_network_name(stage)], shape)


def framework_stage(stage: Stage, mirror, inputs, lr: float, reduction: str, shape) -> np.ndarray:
    """The framework's value of `stage` fed `inputs`: its layers (mirror.stage), its
    optimiser (mirror.update), its window extraction (mirror.patches), article layout out."""
    if stage.tensor == "patches":
        net = to_network({"X": inputs["X"]}, shape)
        windows, layout = mirror.patches(net["X"], shape[1])
        return from_layout({"patches": windows}, layout, *shape)[0]["patches"]
    if stage.quantity == "update":
        param = stage.tensor[: -len("_new")]
        net = to_network({param: inputs[param], stage.gradient: inputs[stage.gradient]}, shape)
        new = mirror.update(net[AS_NETWORK[param]], net[AS_NETWORK[stage.gradient]], lr)
        return to_article(stage.tensor, new, shape)
    got, _ = run_layers(mirror_layer(mirror), stage, fed(stage, inputs, shape), reduction)
    return to_article(stage.tensor, got[_network_name(stage)], shape)


def framework_dO_dZ2(mirror, step: dict, reduction: str, shape) -> np.ndarray:
    """A framework's E9 end to end: its output sigmoid's backward fed ones at its own Z2."""
    z2 = step["dense2.Z"]
    got = mirror.stage(NETWORK, _node("sigmoid2"), z2, {}, np.ones_like(z2), None, reduction)
    return to_article("dO_dZ2", got["sigmoid2.dZ"], shape)

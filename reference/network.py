"""Any network a spec string describes, built from the layer modules (reference/layers/).

`Network(spec)` reads a `ModelSpec` (reference/spec.py) and gives every layer a name and
every tensor a layer-qualified name (docs/extensions.md, "Names"):

- weighted layers are numbered in order: conv1, conv2, dense3, dense4, dense5 (LeNet);
- an activation or a pool takes the number of the weighted layer before it: relu1, pool1;
- the implied flatten is `flatten`, the loss `softmax_ce` or `mse`.

Per layer, forward tensors are its outputs, backward tensors what its backward step
computes: the gradient with respect to its input (`relu1.dZ` is dE/d conv1.Z, `pool1.dX`,
`conv2.dX`, `dense3.dA`, `flatten.dX`, `softmax_ce.dZ`, `mse.dO`) and its parameters
(`conv1.dF`, `conv1.db`, `dense3.dW`, `dense3.db`). Updates are `conv1.F_new` and so on.
An input gradient nobody upstream needs (the image's) is not computed.

Batch-first NCHW throughout: images (N, 1, 28, 28). What you read here is what runs: each
step is one call of a layer function, so a mutant or a user's own layer (parity_tests) is
a different `ops` entry for one kind, nothing else.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from reference._validate import choice, float_array, positive_int
from reference.layers import KINDS, loss
from reference.layers.registry import LayerKind, call_backward, call_forward, name_prefix, numbered
from reference.spec import Layer, ModelSpec, parse_spec
from reference.update import _learning_rate, _sgd_update

REDUCTIONS = loss.REDUCTIONS
# The kinds whose backward takes a branch (a mask, a window's maximum): end to end, a
# framework may legitimately take the other branch where the input is within rounding of
# the kink (parity_tests/kinks.py). Read from the registry entries.
KINKED = tuple(name for name, kind in KINDS.items() if kind.kinked)


@dataclass(frozen=True)
class Ops:
    """One layer kind's forward and backward functions, in the calling form of its family
    (reference/layers/registry.py, FAMILIES): what a mutant or a user's own layer replaces."""

    forward: Callable
    backward: Callable
    # conv only, optional: backward without the input gradient, for a first layer (the
    # reference's skips X5 there, as the frameworks do; a mutant's or a user's runs whole).
    params_only: Callable | None = None


# The reference's own functions, from the registry.
DEFAULT_OPS: Mapping[str, Ops] = {
    name: Ops(kind.forward, kind.backward, kind.params_only) for name, kind in KINDS.items()
}


@dataclass(frozen=True)
class Node:
    """One layer of a built network: its name, its spec layer, its shapes (per image)."""

    name: str
    layer: Layer
    in_shape: tuple
    out_shape: tuple
    needs_input_grad: bool  # some layer before it has parameters

    @functools.cached_property  # a Node never changes: each is read once per step
    def kind(self) -> str:
        return self.layer.kind

    @functools.cached_property
    def entry(self) -> LayerKind:
        """The layer kind's registry entry."""
        return KINDS[self.layer.kind]

    @functools.cached_property
    def params(self) -> tuple[str, ...]:
        """Its parameters' short names: conv F (and b), dense W (and b)."""
        return self.entry.params_of(self.layer)

    @functools.cached_property
    def outputs(self) -> tuple[str, ...]:
        """Forward tensors, short names."""
        return self.entry.outputs

    @functools.cached_property
    def input_grad(self) -> str:
        """The short name of dE/d(this layer's input), as its backward computes it."""
        return self.entry.input_grad

    @functools.cached_property
    def grads(self) -> tuple[str, ...]:
        """Backward tensors, short names: the input gradient (when needed), then the
        parameters' gradients."""
        own = (self.input_grad,) if self.needs_input_grad or self.layer.is_loss else ()
        return own + tuple(f"d{p}" for p in self.params)

    def q(self, short: str) -> str:
        """The qualified name: conv1.Z."""
        return f"{self.name}.{short}"


def _names(layers) -> list[str]:
    names, number, seen = [], 0, set()
    for layer in layers:
        kind = KINDS[layer.kind]
        number += bool(kind.params)  # weighted layers count; the others take the count before
        name = f"{name_prefix(kind)}{number}" if numbered(kind) else kind.name
        base, extra = name, 2
        while name in seen:  # conv-relu-relu: relu1, relu1_2
            name, extra = f"{base}_{extra}", extra + 1
        seen.add(name)
        names.append(name)
    return names


class Network:
    """The reference for one spec: init_params, forward, backward, sgd_step, train_step."""

    def __init__(self, spec: ModelSpec | str, ops: Mapping[str, Ops] | None = None, seed: int = 0):
        # `seed`: the run's seed, from which the drawn inputs (dropout's masks) come.
        self.seed = positive_int("seed", seed, minimum=0)
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        if not isinstance(self.spec, ModelSpec):
            raise TypeError(f"spec must be a spec string or a ModelSpec, got {type(spec).__name__}")
        self.ops = {**DEFAULT_OPS, **(ops or {})}
        unknown = set(self.ops) - set(DEFAULT_OPS)
        if unknown:
            raise ValueError(
                f"ops has unknown layer kinds {sorted(unknown)}; known: {list(DEFAULT_OPS)}"
            )
        layers, shapes = self.spec.layers, self.spec.shapes
        names = _names(layers)
        weighted_before, nodes = False, []
        for i, layer in enumerate(layers):
            nodes.append(Node(names[i], layer, shapes[i], shapes[i + 1], weighted_before))
            weighted_before = weighted_before or bool(KINDS[layer.kind].params)
        self.nodes: tuple[Node, ...] = tuple(nodes)

    # --- names ------------------------------------------------------------------------

    @functools.cached_property
    def label(self) -> str:
        """The preset's name, else the canonical spec string."""
        return self.spec.preset or self.spec.text

    @functools.cached_property
    def param_names(self) -> tuple[str, ...]:
        return tuple(n.q(p) for n in self.nodes for p in n.params)

    @functools.cached_property
    def forward_names(self) -> tuple[str, ...]:
        return tuple(n.q(o) for n in self.nodes for o in n.outputs)

    @functools.cached_property
    def backward_names(self) -> tuple[str, ...]:
        """In the order backward computes them: from the loss back to the first layer."""
        return tuple(n.q(g) for n in reversed(self.nodes) for g in n.grads)

    @functools.cached_property
    def exact_zeros(self) -> frozenset[str]:
        """Gradients that are 0 in exact arithmetic whatever the inputs: the bias gradient of
        a layer directly before one that removes any per-channel constant of its input (its
        kind's `shift_invariant`: batch norm with the batch mean, a layer norm over one
        channel, a group norm of one channel a group), so dE/db = the sum of its dX over each
        statistic's values = 0. Both sides then round a zero: their checks declare it."""
        return frozenset(
            prev.q("db")
            for prev, node in zip(self.nodes, self.nodes[1:])
            if "b" in prev.params and node.entry.removes_channel_constant(node.layer, node.in_shape)
        )

    @functools.cached_property
    def update_names(self) -> tuple[str, ...]:
        return tuple(f"{p}_new" for p in self.param_names)

    @functools.cached_property
    def order(self) -> tuple[str, ...]:
        """Every tensor, forward then backward then updates (the report's row order)."""
        return (*self.forward_names, *self.backward_names, *self.update_names)

    def step_bytes(self, n_images: int, dtype="float64") -> int:
        """A lower bound on the memory one train_step of `n_images` holds at its peak: every
        forward output and input gradient (N x the per-image shape), each parameter three
        times (itself, its gradient, its update) and, per convolution, the im2col matrix of
        its windows (C_in k^2 x N H_out W_out, the step's largest array)."""
        item = np.dtype(dtype).itemsize
        total = 0
        for n in self.nodes:
            total += 2 * n_images * (math.prod(n.out_shape) + math.prod(n.in_shape))
            if n.entry.init is not None:
                _, shapes = n.entry.init(n.layer, n.in_shape)
                total += 3 * sum(math.prod(shape) for shape in shapes.values())
            if n.entry.family == "conv":  # the im2col windows: C_in k^2 x N H_out W_out
                total += n.in_shape[0] * n.layer.kernel**2 * n_images * math.prod(n.out_shape[1:])
        return total * item

    def node_of(self, tensor: str) -> Node:
        name = tensor.split(".", 1)[0]
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(
            f"no layer named {name!r} in {self.label}; layers: {[n.name for n in self.nodes]}"
        )

    # --- parameters -------------------------------------------------------------------

    def init_params(self, seed: int = 0, dtype="float64") -> dict:
        """Every parameter drawn U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's default range
        for conv and linear layers), biases too, in float64 from default_rng(seed), layer by
        layer in order, then cast once: float32 and float64 runs start from the same values.

        conv F (C_out, C_in, k, k), b (C_out,); dense W (F, U) (X10's shape), b (U,).
        """
        seed = positive_int("seed", seed, minimum=0)
        dtype = np.dtype(choice("dtype", str(np.dtype(dtype)), ("float64", "float32")))
        rng = np.random.default_rng(seed)
        params = {}
        for node in self.nodes:
            if node.entry.init is None:
                continue
            fan_in, shapes = node.entry.init(node.layer, node.in_shape)
            bound = 1 / math.sqrt(fan_in)
            for p in node.params:
                params[node.q(p)] = rng.uniform(-bound, bound, shapes[p]).astype(dtype)
        return params

    def check_params(self, params, X=None) -> tuple[dict, np.ndarray | None]:
        if not isinstance(params, Mapping):
            raise TypeError(
                f"params must be a mapping of {list(self.param_names)}, got {type(params).__name__}"
            )
        missing = [p for p in self.param_names if p not in params]
        if missing:
            raise ValueError(f"params is missing {missing} (has {sorted(map(str, params))})")
        dtype = np.asarray(params[self.param_names[0]]).dtype if self.param_names else None
        if X is not None:
            X = float_array("X", X, (None, *self.spec.shapes[0]), dtype=dtype)
        return {p: float_array(p, params[p], dtype=dtype) for p in self.param_names}, X

    def targets(self, labels: np.ndarray, dtype) -> np.ndarray:
        """What the loss compares with: the digits 0..9 for softmax_ce; for mse, as the
        article (E7): (N, 1) of dtype, 1.0 where the digit is > 4."""
        labels = np.asarray(labels)
        if self.spec.loss.kind == "mse":
            return (labels > 4).astype(dtype).reshape(-1, 1)
        return labels

    # --- the step ---------------------------------------------------------------------

    def forward(self, params, X: np.ndarray, target, reduction: str = "sum") -> dict:
        """Every forward tensor: {"conv1.Z": ..., ..., "softmax_ce.E": ...}.

        X: (N, 1, 28, 28); target: what `targets` gives (labels (N,) or Y (N, 1)).
        """
        params, X = self.check_params(params, X)
        return self._forward(params, X, target, choice("reduction", reduction, REDUCTIONS))

    def _forward(self, params, X, target, reduction) -> dict:
        # Validated inputs (forward or train_step checked them once).
        out, h = {}, X
        for node in self.nodes:
            h = self._forward_node(node, params, h, target, reduction, out)
        return out

    def drawn(self, node: Node, x_shape: tuple) -> dict:
        """The inputs `node` draws per step (its kind's `draws`: dropout's keep-mask) for an
        input of x_shape (N, ...), from default_rng((seed, the node's position)): the same
        arrays for the forward, the backward and every framework's mirror; {} for others."""
        if node.entry.draws is None:
            return {}
        rng = np.random.default_rng((self.seed, self.nodes.index(node)))
        return node.entry.draws(node.layer, tuple(x_shape), rng)

    def _layer_inputs(self, node, params, x) -> dict:
        """Its parameters by short name, and what it draws (drawn)."""
        return {**{s: params[node.q(s)] for s in node.params}, **self.drawn(node, np.shape(x))}

    def _forward_node(self, node, params, h, target, reduction, out):
        p = self._layer_inputs(node, params, h)
        got = call_forward(node.entry, self.ops[node.kind].forward, node.layer, h, p, target, reduction)
        out.update({node.q(s): got[s] for s in node.outputs})
        return None if node.layer.is_loss else got[node.outputs[0]]

    def inputs_of(self, node: Node, X: np.ndarray, tensors: Mapping) -> np.ndarray:
        """The input a layer got: the image for the first, else the previous layer's output."""
        i = self.nodes.index(node)
        if i == 0:
            return X
        prev = self.nodes[i - 1]
        return tensors[prev.q(prev.outputs[0])]

    def upstream_of(self, node: Node, tensors: Mapping) -> np.ndarray | None:
        """dE/d(this layer's output): the next layer's input gradient (None for the loss, and
        where no gradient is needed this far back)."""
        i = self.nodes.index(node)
        if i == len(self.nodes) - 1:
            return None
        nxt = self.nodes[i + 1]
        if nxt.input_grad not in nxt.grads:
            return None  # nothing before `nxt` has parameters: no gradient flows back here
        return tensors[nxt.q(nxt.input_grad)]

    def backward(self, params, X, forward: Mapping, target, reduction: str = "sum", decide=None) -> dict:
        """Every backward tensor, from the loss back to the first layer.

        `decide` (optional) maps a kinked layer's name (relu1, pool1) to the array its
        backward takes its branch from, in place of its own input: end to end, at inputs
        within rounding of a kink the suite lets the reference take the framework's branch
        (parity_tests/kinks.py). Nothing else changes.
        """
        params, X = self.check_params(params, X)
        reduction = choice("reduction", reduction, REDUCTIONS)
        return self._backward(params, X, forward, target, reduction, decide)

    def _backward(self, params, X, forward, target, reduction, decide) -> dict:
        # Validated inputs (backward or train_step checked them once).
        decide = decide or {}
        grads: dict = {}
        for node in reversed(self.nodes):
            if not node.grads:
                continue  # nothing before it has parameters: its gradient is not needed
            x = self.inputs_of(node, X, forward)
            grads.update(self._backward_node(node, params, x, forward, grads, target, reduction, decide))
        return grads

    def _backward_node(self, node, params, x, fwd, grads, target, reduction, decide):
        ops = self.ops[node.kind]
        b = ops.backward
        if ops.params_only is not None and node.input_grad not in node.grads:
            b = ops.params_only
        p = self._layer_inputs(node, params, x)
        mine = {s: fwd[node.q(s)] for s in node.outputs if node.q(s) in fwd}
        up = self.upstream_of(node, grads)
        branch = decide.get(node.name, x)  # a kinked layer's branch (kinks.py), else its input
        got = call_backward(node.entry, b, node.layer, x, p, mine, up, target, reduction, branch)
        return {node.q(g): got[g] for g in node.grads}

    def node_step(self, node: Node, x, params, upstream, target, reduction="sum") -> dict:
        """One layer alone: its forward outputs and backward tensors (qualified names) from
        its input `x`, the parameters and `upstream` = dE/d(its output) (None: the loss's
        own gradient for the loss layer, the forward only for any other).
        What a stage-isolated check feeds a framework's layer, computed by ours."""
        fwd: dict = {}
        self._forward_node(node, params, x, target, reduction, fwd)
        if upstream is None and not node.layer.is_loss:
            return fwd  # forward only: nothing came back from the layers after it
        i = self.nodes.index(node)
        grads = {}
        if upstream is not None:
            nxt = self.nodes[i + 1]
            grads[nxt.q(nxt.input_grad)] = upstream
        own = self._backward_node(node, params, x, fwd, grads, target, reduction, {})
        return {**fwd, **own}

    def sgd_step(self, params, grads: Mapping, lr: float) -> dict:
        """X17 / E17 for every parameter: p_new = p - lr * dE/dp."""
        lr = _learning_rate(lr)
        params, _ = self.check_params(params)
        return self._sgd(params, grads, lr)

    def _sgd(self, params, grads, lr) -> dict:
        return {f"{p}_new": _sgd_update(params[p], grads[_grad_name(p)], lr) for p in self.param_names}

    def train_step(self, params, X, labels, lr: float, reduction: str = "sum", decide=None) -> dict:
        """One step: forward, backward, update; every tensor by its qualified name."""
        # X, the parameters, lr and reduction validated once here, not again by forward,
        # backward and sgd_step (a fixed ~0.3 ms a step; issue 25).
        params, X = self.check_params(params, X)
        lr = _learning_rate(lr)
        reduction = choice("reduction", reduction, REDUCTIONS)
        target = self.targets(labels, X.dtype)
        fwd = self._forward(params, X, target, reduction)
        grads = self._backward(params, X, fwd, target, reduction, decide)
        return {**fwd, **grads, **self._sgd(params, grads, lr)}


def _grad_name(param: str) -> str:
    """conv1.F -> conv1.dF."""
    layer, short = param.split(".")
    return f"{layer}.d{short}"


def update_pairs(net: Network) -> tuple[tuple[str, str], ...]:
    """(parameter, its gradient) for every parameter: ("conv1.F", "conv1.dF")."""
    return tuple((p, _grad_name(p)) for p in net.param_names)


def images_nchw(X_article: np.ndarray) -> np.ndarray:
    """The data's images (reference.data: article layout (28, 28, N)) as (N, 1, 28, 28)."""
    from reference.layout import images_to_nchw

    return images_to_nchw(X_article)

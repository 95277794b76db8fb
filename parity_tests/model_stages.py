"""The stage rule for every tensor of a spec-built network (reference/network.py).

A stage-isolated check feeds one framework layer the reference's input to that layer, its
parameters and the reference's upstream gradient; both sides then round the same
expression. As for the article's stages (parity_tests/stages.py), the allowance is
2 gamma(k) M: M the expression evaluated on absolute values (our own layer functions fed
|x|, |F|, |dZ|, ...), k the roundings of its longest chain, counted in
reference/rounding.py with its reason. Re-indexing and selection (flatten, ReLU,
max-pool's forward) get the exact rule.

Each layer kind's bound and the equation id of each of its tensors are in its registry
entry (reference/layers/registry.py); this module applies them.
"""

from __future__ import annotations

import numpy as np

from parity_tests import tolerance
from reference.layers.registry import Bound, Site
from reference.network import Network, Node

UPDATE_EQUATION = "E17"


def equation(net: Network, tensor: str) -> str:
    node, short = net.node_of(tensor), tensor.split(".", 1)[1]
    if short.endswith("_new"):
        return UPDATE_EQUATION
    return node.entry.equations[short]


def quantity(net: Network, tensor: str) -> str:
    if tensor in net.forward_names:
        return "forward"
    return "update" if tensor.endswith("_new") else "gradient"


def bound(node: Node, short: str, x, params, upstream, ours: dict, reduction: str, target=None):
    """The stage rule's Bound (M, k, what, deterministic) for `node`'s tensor `short`, from
    its kind's registry entry (reference/layers/registry.py); M None: exact.

    x: the layer's input; params: every parameter (qualified names); upstream: dE/d(output);
    ours: the reference's own outputs of this layer (node.q names); target: the loss's.
    """
    site = Site(
        node.layer,
        x,
        params={s: params[node.q(s)] for s in node.params},
        upstream=upstream,
        ours={s: ours[node.q(s)] for s in node.outputs if node.q(s) in ours},
        target=target,
        reduction=reduction,
    )
    return node.entry.bound(site, short)


def stage_tolerance(node, short, x, params, upstream, ours, reduction, dtype, target=None):
    """The stage rule's Tolerance for `node`'s tensor `short` (see `bound`)."""
    b = bound(node, short, x, params, upstream, ours, reduction, target)
    return tolerance_of(b, np.shape(ours[node.q(short)]), dtype)


def tolerance_of(b: Bound, shape, dtype) -> tolerance.Tolerance:
    """The stage rule's Tolerance for a Bound (of a tensor of `shape`): 2 gamma(k) M, the
    coherent part at the worst case, the underflow term; exact where M is None."""
    if b.magnitude is None:
        return tolerance.exact(shape)
    stage = tolerance.stage(b.magnitude, b.roundings, dtype, b.what, deterministic=b.deterministic)
    if b.coherent is not None:
        worst = tolerance.stage(b.coherent, b.roundings, dtype, "", deterministic=True)
        rule = stage.rule + " + " + worst.rule.replace("stage: ", "").rstrip("*") + "*(coherent part)"
        stage = tolerance.Tolerance(stage.array + worst.array, rule, stage.roundings)
    return tolerance.with_underflow(stage, b.roundings, dtype)


def update_tolerance(param, grad, lr, dtype) -> tolerance.Tolerance:
    M = np.abs(param) + lr * np.abs(grad)
    return tolerance.stage(M, tolerance.SGD_ROUNDINGS, dtype, "(|p|+lr|g|)")

"""PyTorch mirror of any spec network (reference/network.py): one layer, the update, the step.

torch is NCHW with OIHW filters, the reference's own layout, so nothing is re-indexed; the
dense weight W (F, U) is X10's, used as F.linear's weight W.T. Gradients come from autograd
(vector-Jacobian products with the reference's upstream delta for one layer, E.backward()
end to end) and the update from torch's SGD (torch.optim.sgd.sgd, what SGD.step runs).
Tensors are created from the reference's
NumPy arrays and keep their dtype (float32 or float64); thread counts are set by
parity_tests/pins.py (from the plugin's pytest_configure).

    stage(net, node, x, params, upstream, target, reduction) -> {qualified name: array}
                       (upstream None: the forward only, except for the loss)
    patches(x, size) -> (windows, their reference.layout name)  # the article's E1 windows
    update(param, grad, lr) -> array
    end_to_end(net, params, X, target, reduction, lr) -> {every name of net.order: array}
    version() -> str
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.sgd import sgd as torch_sgd

from reference.layers.norm import EPS
from reference.network import Network, Node, update_pairs


def version() -> str:
    return torch.__version__


def _t(a, requires_grad=False):
    return torch.tensor(np.asarray(a), requires_grad=requires_grad)


def _np(t):
    return t.detach().numpy().copy()


def _mse(layer, h, p, target, reduction):
    E = ((target - h) ** 2).sum() / 2
    return {"E": E / h.shape[0] if reduction == "mean" else E}


# One row per layer kind of the registry (reference.layers.KINDS; test_model_mirrors.py
# holds the keys equal): (layer, h, p, target, reduction) -> its forward outputs by short
# name, p mapping short names to tensors.
LAYERS = {
    "conv": lambda layer, h, p, t, r: {
        "Z": F.conv2d(h, p["F"], p.get("b"), stride=layer.stride, padding=layer.pad)
    },
    "maxpool": lambda layer, h, p, t, r: {"A": F.max_pool2d(h, layer.size, layer.stride)},
    "avgpool": lambda layer, h, p, t, r: {"A": F.avg_pool2d(h, layer.size, layer.stride)},
    "relu": lambda layer, h, p, t, r: {"A": torch.relu(h)},
    "tanh": lambda layer, h, p, t, r: {"A": torch.tanh(h)},
    "sigmoid": lambda layer, h, p, t, r: {"A": torch.sigmoid(h)},
    "flatten": lambda layer, h, p, t, r: {"A": h.flatten(1)},  # NCHW order, the reference's
    "dense": lambda layer, h, p, t, r: {"Z": F.linear(h, p["W"].T, p.get("b"))},
    # Named reduction: F.cross_entropy defaults to the mean.
    "softmax_ce": lambda layer, h, p, t, r: {
        "P": torch.softmax(h, dim=1),
        "E": F.cross_entropy(h, t, reduction=r),
    },
    "mse": _mse,
    # Training mode (batch statistics); running statistics are not asked for (None): they
    # are state, checked on their own (X15, test_norm.py). eps: the reference's, explicitly
    # (torch's default is the same 1e-5).
    "batchnorm": lambda layer, h, p, t, r: {
        "A": F.batch_norm(h, None, None, p["gamma"], p["beta"], training=True, eps=EPS)
    },
    "layernorm": lambda layer, h, p, t, r: {
        "A": F.layer_norm(h, h.shape[1:], p["gamma"], p["beta"], eps=EPS)
    },
    "groupnorm": lambda layer, h, p, t, r: {
        "A": F.group_norm(h, layer.groups, p["gamma"], p["beta"], eps=EPS)
    },
    "dropout": lambda layer, h, p, t, r: _dropout(layer, h, p),
    "gap": lambda layer, h, p, t, r: {"A": F.adaptive_avg_pool2d(h, 1).flatten(1)},
}


def _dropout(layer, h, p) -> dict:
    if not layer.train:  # evaluation mode: torch's own dropout, told it is not training
        return {"A": F.dropout(h, layer.p, training=False)}
    # The reference's mask (drawn from the run's seed), applied as torch's own dropout kernel
    # does: the input times the mask scaled by 1 / (1 - p).
    return {"A": h * (p["mask"] / (1 - layer.p))}


def _target(node: Node, target):
    """Labels as int64 for softmax_ce; Y (N, 1) as a float tensor for mse."""
    if not node.layer.is_loss:
        return None  # only a loss reads the target (a stage of another layer passes none)
    if node.kind == "softmax_ce":
        return torch.tensor(np.array(target, dtype=np.int64))  # a copy: ours are read-only
    return _t(target)


def _drawn(net: Network, node: Node, h) -> dict:
    """What the layer draws (dropout's mask, reference/network.py Network.drawn) as tensors
    of h's dtype."""
    if node.entry.draws is None:  # (own_layer_checks calls stage without a network)
        return {}
    # In evaluation mode a dropout draws no mask (None): nothing to hand over.
    drawn = net.drawn(node, tuple(h.shape)).items()
    return {s: torch.tensor(a, dtype=h.dtype) for s, a in drawn if a is not None}


def _apply(node: Node, h, p: dict, target, reduction: str) -> dict:
    """One layer in torch: its forward outputs by short name. p: short name -> tensor."""
    return LAYERS[node.kind](node.layer, h, p, target, reduction)


def stage(net: Network, node: Node, x, params, upstream, target, reduction) -> dict:
    """One layer run by torch on the reference's input `x`: its forward outputs and, by
    autograd, its backward tensors (the vector-Jacobian product with `upstream`, or the
    gradient of E itself for the loss layer), under the qualified names."""
    leaves = {node.input_grad: _t(x, requires_grad=True)}
    leaves.update({f"d{s}": _t(params[node.q(s)], requires_grad=True) for s in node.params})
    p = {s: leaves[f"d{s}"] for s in node.params}
    p.update(_drawn(net, node, leaves[node.input_grad]))
    out = _apply(node, leaves[node.input_grad], p, _target(node, target), reduction)
    got = {node.q(s): _np(out[s]) for s in node.outputs}
    if node.grads and (upstream is not None or node.layer.is_loss):
        result = out["E"] if node.layer.is_loss else out[node.outputs[0]]
        seed = None if node.layer.is_loss else _t(upstream)
        wrt = [leaves[g] for g in node.grads]
        grads = torch.autograd.grad(result, wrt, seed)
        got.update({node.q(g): _np(d) for g, d in zip(node.grads, grads)})
    return got


def patches(x, size: int) -> tuple[np.ndarray, str]:
    """The s x s windows of images x (N, 1, H, W) by F.unfold, in its own layout (N, s*s, L):
    the article's E1 `patches` (reference.layout converts)."""
    return _np(F.unfold(_t(x), size)), "nchw"


def _sgd_step(params: list, lr: float) -> None:
    """torch's plain SGD step on `params` (each with its .grad), in place: the function
    torch.optim.SGD.step calls, with SGD's defaults (no momentum, no weight decay, foreach
    and fused left to torch). Not the class: its first step imports torch._dynamo (~4.5 s,
    842 modules), what the whole gate's own work takes a fifth of."""
    with torch.no_grad():
        torch_sgd(
            params,
            [p.grad for p in params],
            [None] * len(params),
            weight_decay=0.0,
            momentum=0.0,
            lr=lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )


def update(param, grad, lr) -> np.ndarray:
    """param - lr * grad by torch's SGD step (plain: no momentum, no weight decay)."""
    p = torch.nn.Parameter(_t(param))
    p.grad = _t(grad)
    _sgd_step([p], lr)
    return _np(p)


def forward(net: Network, weights: dict, X, target, reduction) -> tuple[dict, dict]:
    """The whole network's forward and loss in torch from `weights` (qualified name ->
    parameter), each layer with what it draws: ({qualified name: tensor}, {dE/d(a layer's
    input) name: that input, its gradient retained}), for the layers node.grads asks it of.
    What end_to_end and the optimisers' training loop (optim_torch.train) both run."""
    tensors, inputs = {}, {}
    h = _t(X)
    for node in net.nodes:
        if node.input_grad in node.grads:
            h.retain_grad()
            inputs[node.q(node.input_grad)] = h
        p = {s: weights[node.q(s)] for s in node.params}
        p.update(_drawn(net, node, h))
        out = _apply(node, h, p, _target(node, target), reduction)
        tensors.update({node.q(s): t for s, t in out.items()})
        h = out[node.outputs[0]]
    return tensors, inputs


def end_to_end(net: Network, params, X, target, reduction, lr) -> dict:
    """The whole network in torch from `params`: forward, loss, E.backward(), SGD step.
    Every name of net.order: forward outputs, the gradient of E w.r.t. each layer input
    node.grads lists (retained on the intermediates) and each parameter, "<param>_new"."""
    weights = {name: torch.nn.Parameter(_t(params[name])) for name in net.param_names}
    tensors, inputs = forward(net, weights, X, target, reduction)
    E = tensors[net.nodes[-1].q("E")]
    E.backward()
    got = {name: _np(t) for name, t in tensors.items()}
    got.update({name: _np(t.grad) for name, t in inputs.items()})
    got.update({grad: _np(weights[name].grad) for name, grad in update_pairs(net)})
    _sgd_step(list(weights.values()), lr)
    got.update({f"{name}_new": _np(w) for name, w in weights.items()})
    return {name: got[name] for name in net.order}

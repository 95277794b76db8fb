"""TensorFlow mirror of any spec network (reference/network.py): one layer, the update, the step.

TensorFlow runs in its natural layout, NHWC maps and HWIO filters; the reference's NCHW
arrays and OIHW filters are converted at the boundary by reference.layout only. Inside the
graph the flatten transposes NHWC to NCHW before the reshape, so its features are in the
reference's NCHW order and the dense weight W (F, U) is used as it is (a Keras Dense kernel).
Explicit padding is tf.pad then 'VALID' ('SAME' pads asymmetrically). Gradients come from
tf.GradientTape, the update from Keras SGD on tf.Variables (Keras keeps the learning rate in
float32: the suite's 2**-4 is exact). oneDNN is pinned by conftest.py and thread counts by
parity_tests/pins.py (from the plugin's pytest_configure), before TensorFlow's first op.

    stage(net, node, x, params, upstream, target, reduction) -> {qualified name: array}
                       (upstream None: the forward only, except for the loss)
    patches(x, size) -> (windows, their reference.layout name)  # the article's E1 windows
    update(param, grad, lr) -> array
    end_to_end(net, params, X, target, reduction, lr) -> {every name of net.order: array}
    version() -> str
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from reference import layout  # noqa: E402
from reference.layers.norm import EPS  # noqa: E402
from reference.network import Network, Node, update_pairs  # noqa: E402


def version() -> str:
    return tf.__version__


def _np(t):
    return np.array(t.numpy(), copy=True)


def _to_tf(a):
    """A reference array as TensorFlow takes it: 4-D maps NCHW -> NHWC, others as they are."""
    a = np.asarray(a)
    return tf.constant(layout.nchw_to_nhwc(a) if a.ndim == 4 else a)


def _from_tf(t):
    """Back to the reference's layout: 4-D maps NHWC -> NCHW."""
    a = _np(t)
    return layout.nhwc_to_nchw(a) if a.ndim == 4 else a


def _param_to_tf(short: str, a) -> np.ndarray:
    """Conv filters OIHW -> HWIO; a layer norm's per-image gamma, beta (C, H, W) -> (H, W, C);
    biases, dense weights (F, U) and per-channel gamma, beta as they are."""
    a = np.asarray(a)
    if short == "F":
        return layout.oihw_to_hwio(a)
    return a.transpose(1, 2, 0) if a.ndim == 3 else a


def _param_from_tf(short: str, a) -> np.ndarray:
    if short == "F":
        return layout.hwio_to_oihw(a)
    return a.transpose(2, 0, 1) if np.ndim(a) == 3 else a


def _target(node: Node, target):
    """Labels as int64 for softmax_ce; Y (N, 1) as a float tensor for mse."""
    if not node.layer.is_loss:
        return None  # only a loss reads the target (a stage of another layer passes none)
    if node.kind == "softmax_ce":
        return tf.constant(np.asarray(target).astype(np.int64))
    return tf.constant(np.asarray(target))


def _reduce(per_item, reduction: str):
    return tf.reduce_sum(per_item) if reduction == "sum" else tf.reduce_mean(per_item)


def _conv(layer, h, p, target, reduction):
    if layer.pad:
        pad = layer.pad
        h = tf.pad(h, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    z = tf.nn.conv2d(h, p["F"], strides=layer.stride, padding="VALID")
    return {"Z": tf.nn.bias_add(z, p["b"]) if "b" in p else z}


def _flatten(layer, h, p, target, reduction):
    # NHWC -> NCHW first: the reference's (and torch's) feature order.
    return {"A": tf.reshape(tf.transpose(h, [0, 3, 1, 2]), (tf.shape(h)[0], -1))}


def _dense(layer, h, p, target, reduction):
    z = tf.matmul(h, p["W"])
    return {"Z": z + p["b"] if "b" in p else z}


def _softmax_ce(layer, h, p, target, reduction):
    per_image = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=h)
    return {"P": tf.nn.softmax(h, axis=-1), "E": _reduce(per_image, reduction)}


def _mse(layer, h, p, target, reduction):
    E = tf.reduce_sum((target - h) ** 2) / 2
    return {"E": E / h.shape[0] if reduction == "mean" else E}


def _normalised(h, axes, gamma, beta):
    """tf.nn.moments (the biased variance) and tf.nn.batch_normalization with the
    reference's eps (Keras's default is 1e-3), as Keras 3's normalisation layers call them
    on the TensorFlow backend."""
    mean, var = tf.nn.moments(h, axes, keepdims=True)
    return tf.nn.batch_normalization(h, mean, var, beta, gamma, EPS)


def _batchnorm(layer, h, p, target, reduction):
    # Channel-last: per channel over N, H, W of NHWC; per feature over N of (N, D).
    axes = [0, 1, 2] if len(h.shape) == 4 else [0]
    return {"A": _normalised(h, axes, p["gamma"], p["beta"])}


def _layernorm(layer, h, p, target, reduction):
    return {"A": _normalised(h, list(range(1, len(h.shape))), p["gamma"], p["beta"])}


def _groupnorm(layer, h, p, target, reduction):
    # As Keras's GroupNormalization on channel-last input: the channel axis split into
    # (G, C / G), consecutive channels per group, statistics over the group and H, W.
    G, shape = layer.groups, tf.shape(h)
    C = h.shape[-1]
    grouped = tf.reshape(h, tf.concat([shape[:-1], [G, C // G]], 0))
    axes = [1, 2, 4] if len(h.shape) == 4 else [2]
    mean, var = tf.nn.moments(grouped, axes, keepdims=True)
    xhat = tf.reshape(tf.nn.batch_normalization(grouped, mean, var, None, None, EPS), shape)
    return {"A": xhat * p["gamma"] + p["beta"]}


def _dropout(layer, h, p, target, reduction):
    if not layer.train:  # evaluation mode: Keras's own Dropout layer called with training=False
        # (in h's dtype: a Keras layer casts its input to its own, float32 by default)
        return {"A": keras.layers.Dropout(layer.p, dtype=h.dtype.name)(h, training=False)}
    # The reference's mask, applied as tf.nn.dropout does: (x * 1 / (1 - rate)) * keep_mask.
    return {"A": h * (1 / (1 - layer.p)) * p["mask"]}


# One row per layer kind of the registry (reference.layers.KINDS; test_model_mirrors.py
# holds the keys equal): (layer, h, p, target, reduction) -> its forward outputs by short
# name, in TensorFlow's layout (NHWC maps, HWIO filters).
LAYERS = {
    "conv": _conv,
    "maxpool": lambda layer, h, p, t, r: {"A": tf.nn.max_pool2d(h, layer.size, layer.stride, "VALID")},
    "avgpool": lambda layer, h, p, t, r: {"A": tf.nn.avg_pool2d(h, layer.size, layer.stride, "VALID")},
    "relu": lambda layer, h, p, t, r: {"A": tf.nn.relu(h)},
    "tanh": lambda layer, h, p, t, r: {"A": tf.tanh(h)},
    "sigmoid": lambda layer, h, p, t, r: {"A": tf.sigmoid(h)},
    "flatten": _flatten,
    "dense": _dense,
    "softmax_ce": _softmax_ce,
    "mse": _mse,
    "batchnorm": _batchnorm,
    "layernorm": _layernorm,
    "groupnorm": _groupnorm,
    "dropout": _dropout,
    "gap": lambda layer, h, p, t, r: {"A": tf.reduce_mean(h, axis=[1, 2])},  # NHWC's H, W
}


def _drawn(net: Network, node: Node, shape) -> dict:
    """What the layer draws (dropout's mask, Network.drawn) for an input of the reference's
    shape (N, C, H, W or N, D), in TensorFlow's layout and `dtype`."""
    if node.entry.draws is None:  # (own_layer_checks calls stage without a network)
        return {}
    # In evaluation mode a dropout draws no mask (None): nothing to hand over.
    return {s: _to_tf(a) for s, a in net.drawn(node, tuple(shape)).items() if a is not None}


def _apply(node: Node, h, p: dict, target, reduction: str) -> dict:
    """One layer in TensorFlow (NHWC): its forward outputs by short name. p: short name ->
    tensor or variable in TensorFlow's layout (HWIO filters)."""
    return LAYERS[node.kind](node.layer, h, p, target, reduction)


def stage(net: Network, node: Node, x, params, upstream, target, reduction) -> dict:
    """One layer run by TensorFlow on the reference's input `x`: its forward outputs and,
    by GradientTape, its backward tensors (the vector-Jacobian product with `upstream`, or
    the gradient of E itself for the loss layer), under the qualified names."""
    leaves = {node.input_grad: _to_tf(x)}
    leaves.update({f"d{s}": tf.constant(_param_to_tf(s, params[node.q(s)])) for s in node.params})
    p = {s: leaves[f"d{s}"] for s in node.params}
    p.update({s: tf.cast(a, x.dtype) for s, a in _drawn(net, node, np.shape(x)).items()})
    with tf.GradientTape() as tape:
        for t in leaves.values():
            tape.watch(t)
        out = _apply(node, leaves[node.input_grad], p, _target(node, target), reduction)
    got = {node.q(s): _from_tf(out[s]) for s in node.outputs}
    if node.grads and (upstream is not None or node.layer.is_loss):
        result = out["E"] if node.layer.is_loss else out[node.outputs[0]]
        seed = None if node.layer.is_loss else _to_tf(upstream)
        grads = tape.gradient(result, [leaves[g] for g in node.grads], output_gradients=seed)
        for g, d in zip(node.grads, grads):
            got[node.q(g)] = _param_from_tf(g[1:], _np(d)) if g[1:] in node.params else _from_tf(d)
    return got


def patches(x, size: int) -> tuple[np.ndarray, str]:
    """The s x s windows of images x (N, 1, H, W) by tf.image.extract_patches, in its own
    layout (N, m, m, s*s): the article's E1 `patches` (reference.layout converts)."""
    windows = tf.image.extract_patches(
        _to_tf(x), sizes=[1, size, size, 1], strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding="VALID"
    )
    return _np(windows), "nhwc"


def _sgd(pairs, lr) -> None:
    # Keras keeps the learning rate as a float32 variable: an lr that float32 cannot hold
    # exactly would shift float64 updates (the suite's 2**-4 is exact).
    keras.optimizers.SGD(learning_rate=lr).apply_gradients(pairs)


def update(param, grad, lr) -> np.ndarray:
    """param - lr * grad by Keras SGD on a tf.Variable (plain: no momentum)."""
    v = tf.Variable(np.asarray(param))
    _sgd([(tf.constant(np.asarray(grad)), v)], lr)
    return _np(v)


def forward(net: Network, variables: dict, X, target, reduction, tape) -> tuple[dict, dict]:
    """The whole network's forward and loss in TensorFlow (NHWC) from `variables`
    (qualified name -> tf.Variable in TensorFlow's layout), each layer with what it draws,
    recorded on `tape`: ({qualified name: tensor}, {dE/d(a layer's input) name: that input,
    watched}), for the layers node.grads asks it of. What end_to_end and the optimisers'
    training loop (optim_tf.train) both run; call it inside `with tape`."""
    tensors, inputs = {}, {}
    h = _to_tf(X)
    for node in net.nodes:
        if node.input_grad in node.grads:
            tape.watch(h)
            inputs[node.q(node.input_grad)] = h
        p = {s: variables[node.q(s)] for s in node.params}
        shape = np.shape(X)[:1] + node.in_shape
        p.update({s: tf.cast(a, X.dtype) for s, a in _drawn(net, node, shape).items()})
        out = _apply(node, h, p, _target(node, target), reduction)
        tensors.update({node.q(s): t for s, t in out.items()})
        h = out[node.outputs[0]]
    return tensors, inputs


def end_to_end(net: Network, params, X, target, reduction, lr) -> dict:
    """The whole network in TensorFlow (NHWC) from `params`: forward and loss under a
    GradientTape, the gradient of E w.r.t. each layer input node.grads lists and each
    variable, then Keras SGD. Every name of net.order, in the reference's layout."""
    short = {name: name.split(".")[1] for name in net.param_names}
    variables = {name: tf.Variable(_param_to_tf(short[name], params[name])) for name in net.param_names}
    with tf.GradientTape() as tape:
        tensors, inputs = forward(net, variables, X, target, reduction, tape)
        E = tensors[net.nodes[-1].q("E")]
    grads = tape.gradient(E, [*inputs.values(), *variables.values()])
    g_inputs, g_vars = grads[: len(inputs)], grads[len(inputs) :]
    got = {name: _from_tf(t) for name, t in tensors.items()}
    got.update({name: _from_tf(g) for name, g in zip(inputs, g_inputs)})
    g_by_param = dict(zip(variables, g_vars))
    got.update(
        {grad: _param_from_tf(short[name], _np(g_by_param[name])) for name, grad in update_pairs(net)}
    )
    _sgd(list(zip(g_vars, variables.values())), lr)
    got.update({f"{name}_new": _param_from_tf(short[name], _np(v)) for name, v in variables.items()})
    return {name: got[name] for name in net.order}

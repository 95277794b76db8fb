"""keras.optimizers for the optimiser registry (reference/optim_registry.py): one update fed
our state, and K training steps of any spec network with Keras' own optimiser.

State is exchanged under the reference's names, in Keras' own convention
(reference.optim.KERAS): SGD's `momentums` hold the velocity of O5/O7 (parameter units),
RMSprop's `_velocities` the cache of O9, Adam's `_momentums`/`_velocities` m and v, and the
optimiser's `iterations` t. Keras' float32 hyper-parameters are its own doing: the reference's
Keras variant rounds them as it does.

    make(name, h) -> keras.optimizers.Optimizer
    step(name, p, g, state, h) -> (p', state')            # stage-isolated, one parameter
    train(net, params, batches, reduction, name, h) -> [per step {name: array}]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def make(name: str, h: dict):
    """The Keras optimiser of registry entry `name` with hyper-parameters `h`."""
    wd = h.get("weight_decay") or None  # Keras: None is no decay (0.0 would be decay by 0)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=h["lr"], weight_decay=wd)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(
            learning_rate=h["lr"], momentum=h["momentum"], nesterov=name == "nesterov", weight_decay=wd
        )
    if name == "rmsprop":
        return keras.optimizers.RMSprop(
            learning_rate=h["lr"], rho=h["rho"], epsilon=h["eps"], weight_decay=wd
        )
    if name in ("adam", "adamw"):
        kind = keras.optimizers.Adam if name == "adam" else keras.optimizers.AdamW
        extra = {"weight_decay": wd} if name == "adam" else {"weight_decay": h["weight_decay"]}
        return kind(
            learning_rate=h["lr"], beta_1=h["beta1"], beta_2=h["beta2"], epsilon=h["eps"], **extra
        )
    raise ValueError(f"no Keras optimiser for {name!r}")


def _slots(opt, name: str) -> dict:
    """Our state names -> the optimiser's lists of variables (index: the variable's)."""
    if name in ("momentum", "nesterov"):
        return {"velocity": opt.momentums}
    if name == "rmsprop":
        return {"cache": opt._velocities}
    if name in ("adam", "adamw"):
        return {"m": opt._momentums, "v": opt._velocities}
    return {}


def _load(opt, name, variables, states) -> None:
    opt.build(variables)
    for k, slot in _slots(opt, name).items():
        for i, state in enumerate(states):
            slot[i].assign(np.asarray(state[k]))
    t = states[0].get("t") if states else None
    if t is not None:
        opt.iterations.assign(int(t))


def _read(opt, name, i: int) -> dict:
    out = {k: np.array(slot[i].numpy(), copy=True) for k, slot in _slots(opt, name).items()}
    if name in ("adam", "adamw"):
        out["t"] = int(opt.iterations.numpy())
    return out


def step(name: str, p, g, state: dict, h: dict):
    """One update of Keras' optimiser fed our parameter, gradient and state: (p', state')."""
    v = tf.Variable(np.asarray(p))
    opt = make(name, h)
    _load(opt, name, [v], [state])
    opt.apply_gradients([(tf.constant(np.asarray(g)), v)])
    return np.array(v.numpy(), copy=True), _read(opt, name, 0)


def train(net, params, batches, reduction, name: str, h: dict) -> list:
    """K steps of Keras' optimiser from `params`: per batch, forward and loss under a
    GradientTape, the gradients, apply_gradients. Per step as optim_torch.train."""
    from parity_tests.mirrors.model_tf import _param_from_tf, _param_to_tf, forward

    short = {n: n.split(".")[1] for n in net.param_names}
    variables = {n: tf.Variable(_param_to_tf(short[n], params[n])) for n in net.param_names}
    opt = make(name, h)
    opt.build(list(variables.values()))
    out = []
    for X, target in batches:
        with tf.GradientTape() as tape:
            tensors, _ = forward(net, variables, X, target, reduction, tape)
            E = tensors[net.nodes[-1].q("E")]
        grads = tape.gradient(E, list(variables.values()))
        opt.apply_gradients(zip(grads, variables.values()))
        row = {"E": float(E.numpy())}
        for i, (n, v) in enumerate(variables.items()):
            row[f"{n}_new"] = _param_from_tf(short[n], np.array(v.numpy(), copy=True))
            for k, s in _read(opt, name, i).items():
                row[f"{n}.{k}"] = s if k == "t" else _param_from_tf(short[n], s)
        out.append(row)
    return out


def version() -> str:
    return tf.__version__

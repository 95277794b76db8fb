"""TensorFlow mirror: Keras Conv2D (no bias) -> sigmoid -> Flatten -> Dense -> sigmoid.

Built from the reference's parameters through `reference.layout` (NHWC / HWIO, keras
flatten order); gradients come from `tf.GradientTape` and the update from Keras `SGD`.
oneDNN is pinned by conftest.py and thread counts by parity_tests/pins.py (from the plugin's
pytest_configure), before TensorFlow's first op.
"""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from reference import layout  # noqa: E402
from reference.tensors import UPDATE_PAIRS, Tensors  # noqa: E402


def version() -> str:
    return tf.__version__


def _c(a):
    return tf.constant(np.asarray(a))


def _np(t):
    return np.array(t.numpy(), copy=True)


class ArticleNet:
    """Keras layers holding the reference's weights; called layer by layer under a tape."""

    def __init__(self, f, W, b):
        s, K = f.shape[0], f.shape[2]
        n = int(np.sqrt(W.shape[0] // K)) + s - 1
        dtype = str(f.dtype)
        self.n_filters = K
        self.conv = keras.layers.Conv2D(K, s, use_bias=False, dtype=dtype)
        self.flatten = keras.layers.Flatten(dtype=dtype)
        self.dense = keras.layers.Dense(1, dtype=dtype)
        self.conv.build((None, n, n, 1))
        self.dense.build((None, W.shape[0]))
        self.conv.kernel.assign(layout.filters_to_hwio(f))
        self.dense.kernel.assign(layout.dense_weights_to_keras(W, K))
        self.dense.bias.assign(b)
        assert tuple(self.conv.kernel.shape) == (s, s, 1, K)
        assert tuple(self.dense.kernel.shape) == (W.shape[0], 1)

    @property
    def variables(self):
        return [self.conv.kernel, self.dense.kernel, self.dense.bias]

    def __call__(self, x):
        z1 = self.conv(x)
        a1 = tf.sigmoid(z1)
        z2 = self.dense(self.flatten(a1))
        o = tf.sigmoid(z2)
        return {"Z1": z1, "A1": a1, "Z2": z2, "O": o}

    def params(self):
        return Tensors(
            f=layout.hwio_to_filters(_np(self.conv.kernel)),
            W=layout.keras_to_dense_weights(_np(self.dense.kernel), self.n_filters),
            b=_np(self.dense.bias),
        )


def _loss(o, y, reduction):
    per_image = (y - o) ** 2 / 2
    return tf.reduce_sum(per_image) if reduction == "sum" else tf.reduce_mean(per_image)


def _sgd(net, grads, lr):
    # Keras keeps the learning rate as a float32 variable: an lr that float32 cannot hold
    # exactly shifts float64 updates (see docs/checks.md, "Configuration worth knowing").
    keras.optimizers.SGD(learning_rate=lr).apply_gradients(zip(grads, net.variables))


def train_step(params, X, y, lr, reduction="sum") -> Tensors:
    """Whole model from `params`: every named forward tensor, gradient and new parameter."""
    net = ArticleNet(params["f"], params["W"], params["b"])
    x = _c(layout.images_to_nhwc(X))
    with tf.GradientTape(persistent=True) as tape:
        out = net(x)
        E = _loss(out["O"], _c(layout.row_to_column(y)), reduction)
    inner = [out["O"], out["Z2"], out["A1"], out["Z1"]]
    gO, gZ2, gA1, gZ1, gf, gW, gb = tape.gradient(E, inner + net.variables)
    dO_dZ2 = tape.gradient(out["O"], out["Z2"])
    del tape
    K = net.n_filters
    grads = Tensors(
        dE_dO=layout.column_to_row(_np(gO)),
        dO_dZ2=layout.column_to_row(_np(dO_dZ2)),
        dE_dZ2=layout.column_to_row(_np(gZ2)),
        dE_dW=layout.keras_to_dense_weights(_np(gW), K),
        dE_db=_np(gb),
        dE_dA1=layout.nhwc_to_conv_map(_np(gA1)),
        dE_dZ1=layout.nhwc_to_conv_map(_np(gZ1)),
        dE_df=layout.hwio_to_filters(_np(gf)),
    )
    _sgd(net, [gf, gW, gb], lr)
    new = net.params()
    return Tensors(
        Z1=layout.nhwc_to_conv_map(_np(out["Z1"])),
        A1=layout.nhwc_to_conv_map(_np(out["A1"])),
        Z2=layout.column_to_row(_np(out["Z2"])),
        O=layout.column_to_row(_np(out["O"])),
        E=_np(E),
        **grads,
        f_new=new.f,
        W_new=new.W,
        b_new=new.b,
    )


def _grad(fn, wrt, upstream=None):
    """Gradient of fn(*wrt) w.r.t. each of `wrt` (tf constants), weighted by `upstream`."""
    with tf.GradientTape() as tape:
        for t in wrt:
            tape.watch(t)
        out = fn(*wrt)
    return tape.gradient(out, list(wrt), output_gradients=upstream)


# One framework operation per checked tensor, fed the reference's exact inputs (article
# layout in and out): tensor name -> function(inputs, lr, reduction). The keys are the
# tensors of parity_tests.stages.STAGES (parity_tests/test_registry.py).


def _patches(i, lr, reduction):
    s = i["f"].shape[0]
    cols = tf.image.extract_patches(
        _c(layout.images_to_nhwc(i["X"])), [1, s, s, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID"
    )
    return layout.extract_patches_to_patches(_np(cols), s)


def _z1(i, lr, reduction):
    z = tf.nn.conv2d(_c(layout.images_to_nhwc(i["X"])), _c(layout.filters_to_hwio(i["f"])), 1, "VALID")
    return layout.nhwc_to_conv_map(_np(z))


def _a1(i, lr, reduction):
    return _np(tf.sigmoid(_c(i["Z1"])))


def _z2(i, lr, reduction):
    K = i["A1"].shape[1]
    a1 = tf.reshape(_c(layout.conv_map_to_nhwc(i["A1"])), (i["A1"].shape[0], -1))
    z2 = tf.matmul(a1, _c(layout.dense_weights_to_keras(i["W"], K))) + _c(i["b"])
    return layout.column_to_row(_np(z2))


def _out(i, lr, reduction):
    return _np(tf.sigmoid(_c(i["Z2"])))


def _e(i, lr, reduction):
    return _np(_loss(_c(i["O"]), _c(i["y"]), reduction))


def _de_do(i, lr, reduction):
    y = _c(i["y"])
    return _np(_grad(lambda o: _loss(o, y, reduction), [_c(i["O"])])[0])


def _do_dz2(i, lr, reduction):
    return _np(_grad(tf.sigmoid, [_c(i["Z2"])])[0])


def _de_dz2(i, lr, reduction):
    y = _c(i["y"])
    return _np(_grad(lambda z: _loss(tf.sigmoid(z), y, reduction), [_c(i["Z2"])])[0])


def _dense_backward(i):
    """GradientTape of the dense layer fed dE_dZ2: (dE/dA1, dE/dW, dE/db) in keras layout."""
    K, N = i["A1"].shape[1], i["A1"].shape[0]
    return _grad(
        lambda a, w, b: tf.matmul(tf.reshape(a, (N, -1)), w) + b,
        [
            _c(layout.conv_map_to_nhwc(i["A1"])),
            _c(layout.dense_weights_to_keras(i["W"], K)),
            _c(i["b"]),
        ],
        _c(layout.row_to_column(i["dE_dZ2"])),
    )


def _de_dw(i, lr, reduction):
    _, gw, _ = _dense_backward(i)
    return layout.keras_to_dense_weights(_np(gw), i["A1"].shape[1])


def _de_db(i, lr, reduction):
    _, _, gb = _dense_backward(i)
    return _np(gb)


def _de_da1(i, lr, reduction):
    ga, _, _ = _dense_backward(i)
    return layout.nhwc_to_conv_map(_np(ga))


def _de_dz1(i, lr, reduction):
    return _np(_grad(tf.sigmoid, [_c(i["Z1"])], _c(i["dE_dA1"]))[0])


def _de_df(i, lr, reduction):
    x = _c(layout.images_to_nhwc(i["X"]))
    (g,) = _grad(
        lambda k: tf.nn.conv2d(x, k, 1, "VALID"),
        [_c(layout.filters_to_hwio(i["f"]))],
        _c(layout.conv_map_to_nhwc(i["dE_dZ1"])),
    )
    return layout.hwio_to_filters(_np(g))


def _gradients(i) -> dict:
    """dE_df, dE_dW, dE_db from `i`; zeros for one it lacks (an update check fed its own
    gradient only), which the optimiser then leaves where it is."""
    return {g: i[g] if g in i else np.zeros_like(i[p]) for p, g in UPDATE_PAIRS}


def update(i, lr) -> Tensors:
    """One Keras SGD step over f, W, b, each moved by its own gradient in `i`
    (zeros for one not given: that parameter stays): f_new, W_new, b_new."""
    g = _gradients(i)
    net = ArticleNet(i["f"], i["W"], i["b"])
    K = i["f"].shape[2]
    _sgd(
        net,
        [
            _c(layout.filters_to_hwio(g["dE_df"])),
            _c(layout.dense_weights_to_keras(g["dE_dW"], K)),
            _c(g["dE_db"]),
        ],
        lr,
    )
    new = net.params()
    return Tensors(f_new=new.f, W_new=new.W, b_new=new.b)


# The update checks: Harness.stage_check calls `update` once per framework and dtype with
# every gradient the implementation returned and hands out each parameter from that one
# step; these are the same step fed one check's inputs (`stage`).


def _f_new(i, lr, reduction):
    return update(i, lr)["f_new"]


def _w_new(i, lr, reduction):
    return update(i, lr)["W_new"]


def _b_new(i, lr, reduction):
    return update(i, lr)["b_new"]


STAGE_OPS: dict[str, Callable[..., np.ndarray]] = {
    "patches": _patches,
    "Z1": _z1,
    "A1": _a1,
    "Z2": _z2,
    "O": _out,
    "E": _e,
    "dE_dO": _de_do,
    "dO_dZ2": _do_dz2,
    "dE_dZ2": _de_dz2,
    "dE_dW": _de_dw,
    "dE_db": _de_db,
    "dE_dA1": _de_da1,
    "dE_dZ1": _de_dz1,
    "dE_df": _de_df,
    "f_new": _f_new,
    "W_new": _w_new,
    "b_new": _b_new,
}


def stage(tensor, inputs, lr, reduction="sum") -> np.ndarray:
    """One framework operation fed the reference's exact inputs (article layout in/out)."""
    try:
        op = STAGE_OPS[tensor]
    except KeyError:
        raise ValueError(
            f"tensorflow mirror has no stage for tensor {tensor!r}; known: {', '.join(STAGE_OPS)}"
        ) from None
    return op(inputs, lr, reduction)

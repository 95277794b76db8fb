"""PyTorch mirror: Conv2d (no bias) -> sigmoid -> flatten -> Linear -> sigmoid.

Built from the reference's parameters through `reference.layout`; gradients come from
autograd and the update from `torch.optim.SGD`. Everything returned is article layout.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from reference import layout
from reference.tensors import UPDATE_PAIRS, Tensors


def version() -> str:
    return torch.__version__


def _t(a, requires_grad=False):
    return torch.tensor(np.asarray(a), requires_grad=requires_grad)


def _np(t):
    return t.detach().numpy().copy()


class ArticleNet(torch.nn.Module):
    """The article's network with the reference's weights (f, W, b in article layout)."""

    def __init__(self, f, W, b):
        super().__init__()
        K, s = f.shape[2], f.shape[0]
        dtype = getattr(torch, str(f.dtype))
        self.n_filters = K
        self.conv = torch.nn.Conv2d(1, K, s, bias=False, dtype=dtype)
        self.linear = torch.nn.Linear(W.shape[0], 1, dtype=dtype)
        with torch.no_grad():
            self.conv.weight.copy_(_t(layout.filters_to_oihw(f)))
            self.linear.weight.copy_(_t(layout.dense_weights_to_torch(W, K)))
            self.linear.bias.copy_(_t(b))
        assert self.conv.weight.shape == (K, 1, s, s)
        assert self.linear.weight.shape == (1, W.shape[0])

    def forward(self, x):
        z1 = self.conv(x)
        a1 = torch.sigmoid(z1)
        z2 = self.linear(a1.flatten(1))
        o = torch.sigmoid(z2)
        return {"Z1": z1, "A1": a1, "Z2": z2, "O": o}

    def params(self):
        K = self.n_filters
        return Tensors(
            f=layout.oihw_to_filters(_np(self.conv.weight)),
            W=layout.torch_to_dense_weights(_np(self.linear.weight), K),
            b=_np(self.linear.bias),
        )


def _loss(o, y, reduction):
    per_image = (y - o) ** 2 / 2
    return per_image.sum() if reduction == "sum" else per_image.mean()


def train_step(params, X, y, lr, reduction="sum") -> Tensors:
    """Whole model from `params`: every named forward tensor, gradient and new parameter."""
    net = ArticleNet(params["f"], params["W"], params["b"])
    x = _t(layout.images_to_nchw(X))
    out = net(x)
    # Before retain_grad: retained tensors would also collect this call's gradient.
    (dO_dZ2,) = torch.autograd.grad(out["O"], out["Z2"], torch.ones_like(out["O"]), retain_graph=True)
    for t in out.values():
        t.retain_grad()
    E = _loss(out["O"], _t(layout.row_to_column(y)), reduction)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    opt.zero_grad()
    E.backward()
    grads = Tensors(
        dE_dO=layout.column_to_row(_np(out["O"].grad)),
        dO_dZ2=layout.column_to_row(_np(dO_dZ2)),
        dE_dZ2=layout.column_to_row(_np(out["Z2"].grad)),
        dE_dW=layout.torch_to_dense_weights(_np(net.linear.weight.grad), net.n_filters),
        dE_db=_np(net.linear.bias.grad),
        dE_dA1=layout.nchw_to_conv_map(_np(out["A1"].grad)),
        dE_dZ1=layout.nchw_to_conv_map(_np(out["Z1"].grad)),
        dE_df=layout.oihw_to_filters(_np(net.conv.weight.grad)),
    )
    opt.step()
    new = net.params()
    return Tensors(
        Z1=layout.nchw_to_conv_map(_np(out["Z1"])),
        A1=layout.nchw_to_conv_map(_np(out["A1"])),
        Z2=layout.column_to_row(_np(out["Z2"])),
        O=layout.column_to_row(_np(out["O"])),
        E=_np(E),
        **grads,
        f_new=new.f,
        W_new=new.W,
        b_new=new.b,
    )


# One framework operation per checked tensor, fed the reference's exact inputs (article
# layout in and out): tensor name -> function(inputs, lr, reduction). The keys are the
# tensors of parity_tests.stages.STAGES (parity_tests/test_registry.py).


def _patches(i, lr, reduction):
    cols = F.unfold(_t(layout.images_to_nchw(i["X"])), i["f"].shape[0])
    return layout.unfold_to_patches(_np(cols), i["f"].shape[0])


def _z1(i, lr, reduction):
    z = F.conv2d(_t(layout.images_to_nchw(i["X"])), _t(layout.filters_to_oihw(i["f"])))
    return layout.nchw_to_conv_map(_np(z))


def _a1(i, lr, reduction):
    return _np(torch.sigmoid(_t(i["Z1"])))


def _z2(i, lr, reduction):
    a1 = _t(layout.conv_map_to_nchw(i["A1"])).flatten(1)
    K = i["A1"].shape[1]
    z2 = F.linear(a1, _t(layout.dense_weights_to_torch(i["W"], K)), _t(i["b"]))
    return layout.column_to_row(_np(z2))


def _out(i, lr, reduction):
    return _np(torch.sigmoid(_t(i["Z2"])))


def _e(i, lr, reduction):
    o = _t(i["O"], requires_grad=True)
    return _np(_loss(o, _t(i["y"]), reduction))


def _de_do(i, lr, reduction):
    o = _t(i["O"], requires_grad=True)
    E = _loss(o, _t(i["y"]), reduction)
    return _np(torch.autograd.grad(E, o)[0])


def _do_dz2(i, lr, reduction):
    z2 = _t(i["Z2"], requires_grad=True)
    o = torch.sigmoid(z2)
    return _np(torch.autograd.grad(o, z2, torch.ones_like(o))[0])


def _de_dz2(i, lr, reduction):
    z2 = _t(i["Z2"], requires_grad=True)
    o = torch.sigmoid(z2)
    return _np(torch.autograd.grad(_loss(o, _t(i["y"]), reduction), z2)[0])


def _dense_backward(i):
    """Autograd of the dense layer fed dE_dZ2: (dE/dW, dE/db, dE/dA1) in torch layout."""
    K = i["A1"].shape[1]
    a1 = _t(layout.conv_map_to_nchw(i["A1"]), requires_grad=True)
    w = _t(layout.dense_weights_to_torch(i["W"], K), requires_grad=True)
    b = _t(i["b"], requires_grad=True)
    z2 = F.linear(a1.flatten(1), w, b)
    return torch.autograd.grad(z2, (w, b, a1), _t(layout.row_to_column(i["dE_dZ2"])))


def _de_dw(i, lr, reduction):
    gw, _, _ = _dense_backward(i)
    return layout.torch_to_dense_weights(_np(gw), i["A1"].shape[1])


def _de_db(i, lr, reduction):
    _, gb, _ = _dense_backward(i)
    return _np(gb)


def _de_da1(i, lr, reduction):
    _, _, ga = _dense_backward(i)
    return layout.nchw_to_conv_map(_np(ga))


def _de_dz1(i, lr, reduction):
    z1 = _t(i["Z1"], requires_grad=True)
    return _np(torch.autograd.grad(torch.sigmoid(z1), z1, _t(i["dE_dA1"]))[0])


def _de_df(i, lr, reduction):
    w = _t(layout.filters_to_oihw(i["f"]), requires_grad=True)
    z = F.conv2d(_t(layout.images_to_nchw(i["X"])), w)
    (gw,) = torch.autograd.grad(z, w, _t(layout.conv_map_to_nchw(i["dE_dZ1"])))
    return layout.oihw_to_filters(_np(gw))


def _gradients(i) -> dict:
    """dE_df, dE_dW, dE_db from `i`; zeros for one it lacks (an update check fed its own
    gradient only), which the optimiser then leaves where it is."""
    return {g: i[g] if g in i else np.zeros_like(i[p]) for p, g in UPDATE_PAIRS}


def update(i, lr) -> Tensors:
    """One torch.optim.SGD step over f, W, b, each moved by its own gradient in `i`
    (zeros for one not given: that parameter stays): f_new, W_new, b_new."""
    g = _gradients(i)
    net = ArticleNet(i["f"], i["W"], i["b"])
    net.conv.weight.grad = _t(layout.filters_to_oihw(g["dE_df"]))
    net.linear.weight.grad = _t(layout.dense_weights_to_torch(g["dE_dW"], i["f"].shape[2]))
    net.linear.bias.grad = _t(g["dE_db"])
    torch.optim.SGD(net.parameters(), lr=lr).step()
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
            f"torch mirror has no stage for tensor {tensor!r}; known: {', '.join(STAGE_OPS)}"
        ) from None
    return op(inputs, lr, reduction)

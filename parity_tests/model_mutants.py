"""The mutation catalogue of the spec-built networks: classic mistakes in the new layers.

parity_tests/mutants.py breaks the article's network; this catalogue breaks the layers of
reference/layers/ (X1..X12) as reference/network.py runs them. A `ModelMutant` is one layer
kind's functions replaced (`Network(spec, ops={kind: Ops(...)})`: every layer of that kind
in the spec gets them), with

- `first`: the layer-qualified tensor where it must be caught ("pool2.dX"),
- `case`: where it is checked: the spec, the loss reduction and the pixel scale of the
  images (most mistakes show on any input; some only where they apply: a stride, a
  padding, a tied window, logits large enough to overflow),
- `blind`: where it is NOT detectable, when there is such a place worth stating (the
  mistake computes the right numbers there, or numbers within rounding of them),
- `explains`: the mismatch explainer's suspect expected for it (parity_tests/explain.py).

Localisation (`localise`) is the suite's stage isolation applied to a Network: the mutant
runs one train_step in float32 on real images; then for every tensor of `Network.order`
the stage truth is the DEFAULT reference layer function (reference.network.DEFAULT_OPS)
in float64, fed the mutant network's own inputs to that layer (its own input, upstream
gradient, parameters), so only the broken layer disagrees. Each tensor is compared through
the suite's comparison (`ParityRecorder.check`: parity_tests.metrics.compare_arrays, the
explainer on a failure) under the stage rule of parity_tests/model_stages.py, the one
test_model.py uses (2 gamma(k, u) M: M the same expression on absolute values, k the
roundings of the operation). The first disagreeing tensor in `Network.order`
is where the mutant is caught; `detection.detection_record` turns the finding into the
report's detection record (impl "mutant:<id>", against "reference").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from parity_tests import model_stages, tolerance
from parity_tests.detection import Finding, QuietRecorder
from reference.layers import conv2d, dense, loss, pool
from reference.layers.registry import call_arguments
from reference.network import DEFAULT_OPS, Network, Ops, images_nchw

N_IMAGES = 32  # enough images for a batch reduction and for tied pooling windows
SEED = 0  # Network.init_params seed
LR = 0.1  # the update's learning rate: steps well above float32 rounding of the parameters
DTYPE = "float32"  # the mutants run in the frameworks' training dtype; truths in float64
AGAINST = "reference"  # the other side of every stage check: the default layer in float64
INIT = "torch_default"  # Network.init_params: U(-1/sqrt(fan_in), 1/sqrt(fan_in))


@dataclass(frozen=True)
class Case:
    """Where a mutant is run: a spec, the loss reduction, the images' pixel scale (1: the
    suite's [0, 1] pixels; LARGE_LOGITS_SCALE: images scaled up until logits overflow a
    softmax without the max shift)."""

    spec: str
    reduction: str = "sum"
    pixel_scale: float = 1.0

    def __str__(self) -> str:
        extra = [f"reduction={self.reduction}"] if self.reduction != "sum" else []
        if self.pixel_scale != 1:
            extra.append(f"pixels x {self.pixel_scale:g}")
        return self.spec + (f" [{', '.join(extra)}]" if extra else "")


@dataclass(frozen=True)
class ModelMutant:
    id: str
    kind: str  # the layer kind whose functions it replaces (a DEFAULT_OPS key)
    equation: str  # the X ids it breaks
    first: str  # the layer-qualified tensor where it must be caught, in `case`
    case: Case
    title: str  # the mistake, in words
    explains: str  # the explainer's suspect for it
    ops: Ops
    caught_on: str = "any input"  # the inputs on which it shows
    blind: Case | None = None  # a case where it is (honestly) not detectable
    dtype: str = DTYPE

    @property
    def spec(self) -> str:
        return self.case.spec

    @property
    def reduction(self) -> str:
        return self.case.reduction

    @property
    def label(self) -> str:
        return f"mutant:{self.id}"


# --- the broken layer functions ---------------------------------------------------------


def _windows(X, k, stride):
    """(N, C, H, W) -> (N, C, H_out, W_out, k, k), window (i, j) at (s i, s j)."""
    return sliding_window_view(X, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def _scatter(x_shape, share, k, stride, dtype):
    """Add share (N, C, H_out, W_out, k, k) into the window positions of a zero x_shape."""
    _, _, H_out, W_out = share.shape[:4]
    u = np.arange(k)
    rows = (stride * np.arange(H_out))[:, None, None, None] + u[None, None, :, None]
    cols = (stride * np.arange(W_out))[None, :, None, None] + u[None, None, None, :]
    dX = np.zeros(x_shape, dtype=dtype)
    np.add.at(dX, (slice(None), slice(None), rows, cols), share)
    return dX


def _pad_end(X, pad):
    """X with 2 pad zeros after its last row and column only: the padded input's size with
    the image at the top-left corner (the padding offset forgotten)."""
    return np.pad(X, ((0, 0), (0, 0), (0, 2 * pad), (0, 2 * pad)))


def max_pool_backward_all_maxima(X, dA, k, stride):
    """Every maximum of a window gets the window's whole delta (a tie sends it to each)."""
    win = _windows(X, k, stride)
    hit = win == win.max(axis=(4, 5), keepdims=True)
    share = np.where(hit, dA[..., None, None], np.zeros((), X.dtype))
    return _scatter(X.shape, share, k, stride, X.dtype)


def max_pool_backward_spread(X, dA, k, stride):
    """The max-pool delta spread evenly over the window, as average pooling's."""
    return pool.avg_pool_backward(dA, X.shape, k, stride)


def avg_pool_backward_undivided(X, dA, k, stride):
    """Every element of the window gets the whole delta: the 1 / k^2 forgotten."""
    return pool.avg_pool_backward(dA, X.shape, k, stride) * X.dtype.type(k * k)


def _conv_backward(X, F, dZ, stride, pad, bias, dX=None, dF=None, db=None):
    grads = conv2d.conv2d_backward(X, F, dZ, stride, pad, bias)
    for name, value in (("dX", dX), ("dF", dF), ("db", db)):
        if value is not None:
            grads[name] = value(X, F, dZ, stride, pad)
    return grads


def _grad_input_undilated(X, F, dZ, stride, pad):
    """X5 with the deltas placed side by side (no zeros between them): the stride's
    dilation forgotten. The same as X5 when stride = 1."""
    N, _, H, W = X.shape
    k, (H_out, W_out) = F.shape[2], dZ.shape[2:]
    Hp, Wp = H + 2 * pad, W + 2 * pad
    placed = np.zeros((N, F.shape[0], Hp + k - 1, Wp + k - 1), dtype=dZ.dtype)
    placed[:, :, k - 1 : k - 1 + H_out, k - 1 : k - 1 + W_out] = dZ
    dXp = np.einsum("nohwuv,ocuv->nchw", _windows(placed, k, 1), F[:, :, ::-1, ::-1], optimize=True)
    return np.ascontiguousarray(dXp[:, :, pad : pad + H, pad : pad + W])


def _grad_input_corner_crop(X, F, dZ, stride, pad):
    """X5's gradient of the padded input, cropped at its top-left corner instead of the
    pad border on every side."""
    N, C, H, W = X.shape
    dXp = conv2d.conv2d_grad_input(dZ, F, (N, C, H + 2 * pad, W + 2 * pad), stride, 0)
    return np.ascontiguousarray(dXp[:, :, :H, :W])


def _grad_filter_unpadded(X, F, dZ, stride, pad):
    """X4 from the unpadded input indexed as if padded: X[s i + u], not Xp[s i + u]."""
    return conv2d.conv2d_grad_filter(_pad_end(X, pad), dZ, F.shape[2], stride, 0)


def _grad_bias_mean_positions(X, F, dZ, stride, pad):
    """X3 summed over the images but averaged over the positions."""
    return dZ.sum(axis=0).mean(axis=(1, 2))


def _grad_bias_one_position(X, F, dZ, stride, pad):
    """X3 summed over the images at position (0, 0) only."""
    return dZ[:, :, 0, 0].sum(axis=0)


def conv_forward_pad_end(X, F, b, stride, pad):
    """X1 with all 2p zeros after the image (bottom/right), none before it."""
    return conv2d.conv2d_forward(_pad_end(X, pad), F, b, stride, 0)


def conv_backward_pad_end(X, F, dZ, stride, pad, bias):
    """The backward of conv_forward_pad_end, consistent with it."""
    N, C, H, W = X.shape
    Xe = _pad_end(X, pad)
    grads = conv2d.conv2d_backward(Xe, F, dZ, stride, 0, bias)
    grads["dX"] = np.ascontiguousarray(grads["dX"][:, :, :H, :W])
    return grads


def softmax_ce_unshifted(Z, y, reduction):
    """X11 + X12 without subtracting the row maximum: exp(Z) overflows to inf once a logit
    exceeds log(max float) (88.7 in float32, 709.8 in float64); below that it is the same
    function, within rounding."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(Z)
        total = e.sum(axis=1, keepdims=True)
        P = e / total
        logP = Z - np.log(total)
    picked = np.take_along_axis(logP, np.asarray(y, dtype=np.intp)[:, None], axis=1)
    E = -(picked.sum() if reduction == "sum" else picked.mean())
    return P, np.asarray(E, dtype=Z.dtype)


def ce_backward_without_1_over_N(P, y, reduction):
    """p - onehot(y) whatever the reduction: the mean's 1/N forgotten."""
    return loss.softmax_cross_entropy_backward(P, y, "sum")


def relu_backward_upstream_sign(dA, Z, A):
    """The ReLU mask taken from the sign of the upstream delta, not from Z."""
    return np.where(dA > 0, dA, np.zeros((), dA.dtype))


def tanh_backward_of_input(dA, Z, A):
    """1 - Z^2 (the layer's input) where the derivative is 1 - A^2 (its output)."""
    return dA * (1 - Z * Z)


def sigmoid_backward_of_input(dA, Z, A):
    """Z (1 - Z) (the layer's input) where the derivative is A (1 - A) (its output)."""
    return dA * (Z * (1 - Z))


def dense_backward_bias_mean(A, W, dZ, bias):
    """X10 with dE/db averaged over the images instead of summed."""
    grads = dense.dense_backward(A, W, dZ, bias)
    if bias:
        grads["db"] = dZ.mean(axis=0)
    return grads


def flatten_channel_last(X):
    """(N, C, H, W) -> (N, H W C): TensorFlow's NHWC feature order, not NCHW's c H W + h W + w."""
    return np.ascontiguousarray(X.transpose(0, 2, 3, 1)).reshape(X.shape[0], -1)


def flatten_channel_last_backward(dA, x_shape):
    N, C, H, W = x_shape
    return np.ascontiguousarray(dA.reshape(N, H, W, C).transpose(0, 3, 1, 2))


def mse_without_half(O, Y, reduction):
    """E = sum (y - O)^2: torch's mse_loss form, without the article's 1/2 (E7)."""
    total = ((Y - O) ** 2).sum()
    return total if reduction == "sum" else total / O.shape[0]


def mse_backward_without_half(O, Y, reduction):
    dO = 2 * (O - Y)
    return dO / O.shape[0] if reduction == "mean" else dO


def _conv_ops(**backward) -> Ops:
    return Ops(
        conv2d.conv2d_forward,
        lambda X, F, dZ, stride, pad, bias: _conv_backward(X, F, dZ, stride, pad, bias, **backward),
    )


def _replace(kind, forward=None, backward=None) -> Ops:
    base = DEFAULT_OPS[kind]
    return Ops(forward or base.forward, backward or base.backward)


# --- the catalogue ----------------------------------------------------------------------

TANH_NET = "conv(4,5)-tanh-maxpool(2)-dense(10)-softmax_ce"
POOL_NET = "conv(4,3)-relu-maxpool(2)-dense(10)-softmax_ce"
PADDED_NET = "conv(4,3,pad=1)-relu-maxpool(2)-dense(10)-softmax_ce"
STRIDED_NET = "conv(4,5,stride=2)-relu-dense(10)-softmax_ce"
TWO_CONV = "conv(2,3)-relu-conv(3,3{})-relu-dense(10)-softmax_ce"
LOGITS_NET = "conv(4,3)-relu-dense(10)-softmax_ce"
# Images times this make LOGITS_NET's logits exceed log(max float32) = 88.7 (up to ~190 at
# seed 0): the inputs on which a softmax without the max shift overflows. (Pixels not
# divided by 255 are not enough for this conv net: its logits stay below ~90.)
LARGE_LOGITS_SCALE = 1000.0

CATALOGUE = (
    ModelMutant(
        id="pool_grad_all_maxima",
        kind="maxpool",
        equation="X6",
        first="pool2.dX",
        case=Case("lenet"),
        title="max-pool gradient sent to every maximum of a tied window (ties go to the "
        "first maximum in row-major order)",
        explains="pool_grad_all_maxima",
        ops=_replace("maxpool", backward=max_pool_backward_all_maxima),
        caught_on="inputs with a tied window: after a ReLU, all-zero windows (LeNet's pool2 "
        "here; pool1 is reached later in backward order)",
    ),
    ModelMutant(
        id="pool_grad_spread_evenly",
        kind="maxpool",
        equation="X6",
        first="pool1.dX",
        case=Case(TANH_NET),
        title="max-pool gradient spread evenly over the window (delta / k^2 each), as if "
        "it were average pooling",
        explains="pool_grad_spread_evenly",
        ops=_replace("maxpool", backward=max_pool_backward_spread),
    ),
    ModelMutant(
        id="avgpool_grad_not_divided",
        kind="avgpool",
        equation="X7",
        first="pool1.dX",
        case=Case("conv(4,3)-relu-avgpool(2)-dense(10)-softmax_ce"),
        title="avg-pool gradient not divided by k^2: every element gets the whole delta",
        explains="avgpool_grad_not_divided",
        ops=_replace("avgpool", backward=avg_pool_backward_undivided),
    ),
    ModelMutant(
        id="conv_grad_input_no_dilation",
        kind="conv",
        equation="X5,X2",
        first="conv2.dX",
        case=Case(TWO_CONV.format(",stride=2,pad=1")),
        title="conv input gradient without the stride dilation: the deltas placed side by "
        "side instead of every s pixels",
        explains="conv_grad_input_no_dilation",
        ops=_conv_ops(dX=_grad_input_undilated),
        caught_on="a conv with stride > 1 that needs its input gradient (not the first layer)",
        blind=Case(TWO_CONV.format(",pad=1")),
    ),
    ModelMutant(
        id="conv_grad_input_corner_crop",
        kind="conv",
        equation="X5,X1",
        first="conv2.dX",
        case=Case(TWO_CONV.format(",pad=1")),
        title="conv input gradient cropped at the top-left corner of the padded gradient "
        "instead of removing the pad border on every side",
        explains="conv_grad_input_crop",
        ops=_conv_ops(dX=_grad_input_corner_crop),
        caught_on="a padded conv (pad > 0) that needs its input gradient",
        blind=Case(TWO_CONV.format("")),
    ),
    ModelMutant(
        id="conv_grad_filter_unpadded",
        kind="conv",
        equation="X4,X1",
        first="conv1.dF",
        case=Case(PADDED_NET),
        title="conv filter gradient taken from the unpadded input (indexed as if padded: "
        "X[s i + u] for Xp[s i + u])",
        explains="conv_grad_filter_unpadded",
        ops=_conv_ops(dF=_grad_filter_unpadded),
        caught_on="a padded conv (pad > 0)",
        blind=Case(POOL_NET),
    ),
    ModelMutant(
        id="conv_bias_grad_mean_positions",
        kind="conv",
        equation="X3",
        first="conv1.db",
        case=Case(STRIDED_NET),
        title="conv bias gradient summed over the images but averaged over the positions",
        explains="conv_bias_grad_mean_over_positions",
        ops=_conv_ops(db=_grad_bias_mean_positions),
        caught_on="any conv output larger than 1 x 1",
    ),
    ModelMutant(
        id="conv_bias_grad_one_position",
        kind="conv",
        equation="X3",
        first="conv1.db",
        case=Case(STRIDED_NET),
        title="conv bias gradient summed over the images at position (0, 0) only",
        explains="conv_bias_grad_one_position",
        ops=_conv_ops(db=_grad_bias_one_position),
        caught_on="any conv output larger than 1 x 1",
    ),
    ModelMutant(
        id="conv_pad_one_side",
        kind="conv",
        equation="X1",
        first="conv1.Z",
        case=Case(PADDED_NET),
        title="conv padding all after the image (2p zeros bottom/right, none top/left, "
        "like TensorFlow's 'SAME' with an odd total) instead of p on every side",
        explains="conv_pad_one_side",
        ops=Ops(conv_forward_pad_end, conv_backward_pad_end),
        caught_on="a padded conv (pad > 0)",
        blind=Case(POOL_NET),
    ),
    ModelMutant(
        id="relu_grad_from_upstream_sign",
        kind="relu",
        equation="X8",
        first="relu4.dZ",
        case=Case("lenet"),
        title="ReLU derivative taken from the sign of the upstream delta instead of z",
        explains="relu_grad_from_upstream_sign",
        ops=_replace("relu", backward=relu_backward_upstream_sign),
    ),
    ModelMutant(
        id="tanh_grad_of_input",
        kind="tanh",
        equation="X9",
        first="tanh1.dZ",
        case=Case(TANH_NET),
        title="tanh derivative 1 - Z^2 from the layer's input instead of 1 - A^2 from its output",
        explains="tanh_grad_of_preactivation",
        ops=_replace("tanh", backward=tanh_backward_of_input),
    ),
    ModelMutant(
        id="sigmoid_grad_of_input",
        kind="sigmoid",
        equation="E9,E14",
        first="sigmoid2.dZ",
        case=Case("article"),
        title="sigmoid derivative Z (1 - Z) from the layer's input instead of A (1 - A)",
        explains="sigmoid_grad_of_preactivation",
        ops=_replace("sigmoid", backward=sigmoid_backward_of_input),
    ),
    ModelMutant(
        id="flatten_channel_last",
        kind="flatten",
        equation="E4",
        first="flatten.A",
        case=Case(POOL_NET),
        title="features flattened channel-last (NHWC: h W C + w C + c) instead of NCHW, "
        "forward and backward alike",
        explains="flatten_channel_last",
        ops=Ops(flatten_channel_last, flatten_channel_last_backward),
        caught_on="any input with more than one channel before the flatten",
    ),
    ModelMutant(
        id="dense_bias_grad_mean",
        kind="dense",
        equation="X10",
        first="dense3.db",
        case=Case("conv(4,5,stride=2)-relu-dense(32)-relu-dense(10)-softmax_ce"),
        title="dense bias gradient averaged over the images instead of summed",
        explains="dense_bias_grad_mean",
        ops=_replace("dense", backward=dense_backward_bias_mean),
        caught_on="any batch of more than one image",
    ),
    ModelMutant(
        id="softmax_no_max_shift",
        kind="softmax_ce",
        equation="X11",
        first="softmax_ce.P",
        case=Case(LOGITS_NET, pixel_scale=LARGE_LOGITS_SCALE),
        title="softmax without subtracting the row maximum: exp overflows (float32: logits above 88.7)",
        explains="softmax_no_max_shift",
        ops=_replace("softmax_ce", forward=softmax_ce_unshifted),
        caught_on="logits above log(max float32) = 88.7 only: here images scaled x1000 "
        "(logits up to ~190). On the suite's [0, 1] pixels the logits stay far below (and at "
        "float64's 709.8 further still) and the shift-less softmax is the same function "
        "within rounding: NOT detectable there",
        blind=Case(LOGITS_NET),
    ),
    ModelMutant(
        id="ce_grad_mean_without_1_over_N",
        kind="softmax_ce",
        equation="X12",
        first="softmax_ce.dZ",
        case=Case(POOL_NET, reduction="mean"),
        title="dE/dZ = p - onehot(y) under the mean reduction: the 1/N forgotten",
        explains="ce_grad_missing_1_over_N",
        ops=_replace("softmax_ce", backward=ce_backward_without_1_over_N),
        caught_on="reduction 'mean' with more than one image (under 'sum' it is right)",
        blind=Case(POOL_NET),
    ),
    ModelMutant(
        id="mse_without_half",
        kind="mse",
        equation="E7,E8",
        first="mse.E",
        case=Case("conv(4,5,stride=2)-relu-dense(1)-sigmoid-mse"),
        title="E = sum (y - O)^2 without the 1/2 of E7 (torch's mse_loss form), and dE/dO = "
        "2 (O - y) to match",
        explains="mse_without_half",
        ops=Ops(mse_without_half, mse_backward_without_half),
    ),
)
MODEL_MUTANTS = {m.id: m for m in CATALOGUE}


def as_dicts() -> list[dict]:
    """Plain-data catalogue for reports/audit.py (the fields of mutants.as_dicts())."""
    return [
        dict(
            id=m.id,
            title=f"{m.title} [{m.case}]",
            equation=m.equation,
            first=m.first,
            dtype=m.dtype,
            explains=m.explains,
        )
        for m in CATALOGUE
    ]


# --- running and localising -------------------------------------------------------------


class NotComputed(RuntimeError):
    """A tensor the step never produced (it raised before)."""


@dataclass(frozen=True)
class Run:
    """One train_step of a network: its inputs and every tensor it produced."""

    net: Network
    params: dict
    X: np.ndarray
    labels: np.ndarray
    case: Case
    tensors: dict
    crash: str = ""  # the exception that stopped the step ("" when it completed)
    cache: dict = dataclasses.field(default_factory=dict, repr=False)  # stage truths

    @property
    def target(self):
        return self.net.targets(self.labels, self.X.dtype)


def batch(data, case: Case, dtype: str = DTYPE, n_images: int = N_IMAGES):
    """The first n_images of `data` (reference.data.ArticleData) as (N, 1, 28, 28) images
    of `dtype`, pixels times case.pixel_scale, and their labels."""
    X = images_nchw(data.X[:, :, :n_images]) * case.pixel_scale
    return X.astype(dtype), np.asarray(data.labels[:n_images])


def run(case: Case, data, ops: Mapping | None = None, dtype: str = DTYPE) -> Run:
    """One train_step of Network(case.spec, ops) on `data`'s first N_IMAGES images.

    A step that raises (a NaN a validating layer refuses) keeps what its forward pass
    produced; the rest are missing, and the crash is recorded.
    """
    net = Network(case.spec, ops=ops)
    params = net.init_params(SEED, dtype)
    X, labels = batch(data, case, dtype)
    try:
        tensors, crash = net.train_step(params, X, labels, LR, case.reduction), ""
    except Exception as exc:  # noqa: BLE001  (a crash of the step is part of the finding)
        crash = f"{type(exc).__name__}: {exc}"
        try:
            tensors = net.forward(params, X, net.targets(labels, X.dtype), case.reduction)
        except Exception:  # noqa: BLE001
            tensors = {}
    return Run(net, params, X, labels, case, tensors, crash)


def _get(r: Run, name: str) -> np.ndarray:
    if name not in r.tensors:
        raise NotComputed(f"not computed: the step raised before it ({r.crash})")
    return r.tensors[name]


def stage_inputs(r: Run, tensor: str) -> dict:
    """What the layer of `tensor` was fed in `r` (the mutant network's own arrays), by the
    names of its calling form (reference/layers/registry.py, call_arguments), with its kind."""
    net = r.net
    node = net.node_of(tensor)
    short = tensor.split(".", 1)[1]
    backward = short.startswith("d") and short not in node.outputs
    x = net.inputs_of(node, r.X, _Computed(r))
    up = net.upstream_of(node, _Computed(r)) if backward and not node.layer.is_loss else None
    p = {s: r.params[node.q(s)] for s in node.params}
    fwd = {s: _get(r, node.q(s)) for s in node.outputs if backward and node.q(s) in r.tensors}
    args = call_arguments(node.entry, node.layer, x, p, fwd, r.target, r.case.reduction, up, backward)
    if backward and node.entry.family == "activation":
        _get(r, node.q("A"))  # NotComputed when the step raised before it
    return {"kind": node.kind, **args}


class _Computed(Mapping):
    """r.tensors, raising NotComputed (with the crash) for a tensor the step never made."""

    def __init__(self, r: Run):
        self.r = r

    def __getitem__(self, name):
        return _get(self.r, name)

    def __iter__(self):
        return iter(self.r.tensors)

    def __len__(self):
        return len(self.r.tensors)


@dataclass(frozen=True)
class StageCheck:
    """What ParityRecorder.check compares: the float64 truth rounded to the run's dtype
    (actual, the other side), the mutant's tensor (expected), the stage tolerance, the
    float64 truth, the explainer's context."""

    actual: np.ndarray
    expected: np.ndarray
    tolerance: tolerance.Tolerance
    truth: np.ndarray
    context: dict


def _f64(a):
    return a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a


def stage_check(r: Run, tensor: str) -> StageCheck:
    """The stage-isolated check of `tensor`: the default layer (Network.node_step of the
    spec without the mutant's ops) in float64 on the run's own inputs of that layer, under
    the stage rule of parity_tests/model_stages.py. Raises NotComputed for a tensor the
    step did not produce."""
    ours = _get(r, tensor)
    dtype = ours.dtype if isinstance(ours, np.ndarray) else r.X.dtype
    context = {"lr": LR, "n_images": r.X.shape[0]}
    if tensor.endswith("_new"):  # the update of one parameter: p - lr g, g the run's own
        param = tensor[: -len("_new")]
        layer, short = param.split(".")
        old, grad = r.params[param], _get(r, f"{layer}.d{short}")
        truth = _f64(old) - LR * _f64(grad)
        tol = model_stages.update_tolerance(_f64(old), _f64(grad), LR, dtype)
        context.update(old=old, grad=grad)
    else:
        inputs = stage_inputs(r, tensor)
        net, short = r.net, tensor.split(".", 1)[1]
        node = net.node_of(tensor)
        i = net.nodes.index(node)
        x = r.X if i == 0 else _get(r, net.nodes[i - 1].q(net.nodes[i - 1].outputs[0]))
        up = None
        if short not in node.outputs and not node.layer.is_loss:
            nxt = net.nodes[i + 1]
            up = _f64(_get(r, nxt.q(nxt.input_grad)))
        p64 = {k: _f64(v) for k, v in r.params.items()}
        target = _f64(r.target)
        key = (node.name, up is not None)
        if key not in r.cache:  # one call per layer and direction (conv's dX, dF, db at once)
            r.cache[key] = Network(net.spec).node_step(node, _f64(x), p64, up, target, r.case.reduction)
        truth_all = r.cache[key]
        truth = np.asarray(truth_all[tensor], dtype=np.float64)
        tol = model_stages.stage_tolerance(
            node, short, _f64(x), p64, up, truth_all, r.case.reduction, dtype, target
        )
        context["layer"] = inputs
    # The truth is compared in the run's dtype: rounding it there errs by u |truth|.
    u = tolerance.unit_roundoff(dtype)
    tol = tolerance.Tolerance(tol.array + u * np.abs(truth), f"{tol.rule} + u|truth| (rounded)")
    return StageCheck(truth.astype(dtype), np.asarray(ours), tol, truth, context)


def _fields(r: Run, tensor: str, dtype: str) -> dict:
    node = r.net.node_of(tensor)
    quantity, equation = model_stages.quantity(r.net, tensor), model_stages.equation(r.net, tensor)
    return dict(
        tensor=tensor,
        equation=equation,
        step=node.kind,
        quantity=quantity,
        mode="stage",
        against=AGAINST,
        dtype=dtype,
    )


def recorder(parity, label: str, case: Case) -> QuietRecorder:
    """A recorder that measures like `parity` (the test's) without storing records."""
    context = dataclasses.replace(parity.context, impl=label, init_scheme=INIT, reduction=case.reduction)
    return QuietRecorder(parity.node, context)


def localise(r: Run, quiet: QuietRecorder) -> Finding:
    """Every tensor of r.net.order compared with its stage truth, in order."""
    dtype = str(r.X.dtype)
    records = [
        quiet.check(**_fields(r, t, dtype), compute=lambda t=t: stage_check(r, t), fail=False)
        for t in r.net.order
    ]
    return Finding(quiet.context.impl, AGAINST, dtype, tuple(records))


def detect(mutant: ModelMutant, data, parity, case: Case | None = None) -> Finding:
    """Run `mutant` on `case` (its own by default) and localise it."""
    case = case or mutant.case
    r = run(case, data, {mutant.kind: mutant.ops}, mutant.dtype)
    return localise(r, recorder(parity, mutant.label, case))


def message(finding: Finding, mutant: ModelMutant) -> str:
    lines = [
        f"{mutant.label} ({mutant.title}) on {mutant.case} [{finding.dtype}]: expected the "
        f"first diverging tensor to be {mutant.first}, got {finding.first_tensor or 'none'}; "
        f"explainer: {finding.first_explanation or 'none'}"
    ]
    for rec in finding.records:
        extra = rec.get("error") or rec.get("note") or ""
        lines.append(
            f"  {rec['tensor']:16s} {rec['status']:7s} budget {rec['budget_used']:.3g} {extra}".rstrip()
        )
    return "\n".join(lines)

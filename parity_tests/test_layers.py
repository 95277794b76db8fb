"""The layers beyond the article (reference/layers/, X1..X12): hand-worked examples (values
written out here), every backward against central finite differences in float64, forward
and autograd backward against torch.nn.functional, the max-pool tie rule, argument checks,
and the modules' imports (numpy only) and loops (none)."""

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from parity_tests import tolerance
from parity_tests.harness import Check
from reference.layers import activations, conv2d, dense, loss, pool

LAYERS_DIR = Path(__file__).resolve().parents[1] / "reference" / "layers"
RTOL_TORCH = 1e-12  # the brief's tight float64 agreement, relative to the magnitude M


def _record(parity, tensor, equation, step, quantity, mode, against, ours, theirs, tol):
    parity.check(
        tensor=tensor,
        equation=equation,
        step=step,
        quantity=quantity,
        mode=mode,
        against=against,
        dtype="float64",
        compute=lambda: Check(np.asarray(theirs), np.asarray(ours), tol, None),  # against: theirs
    )


def _quantity(tensor):
    return "forward" if tensor.split(".")[1] in ("Z", "A", "P", "E") else "gradient"


# --- hand-worked examples ---------------------------------------------------------------

# 1x1x4x4 input 1..16; padded by 1 it is 6x6 with X at rows/cols 1..4.
X44 = np.arange(1.0, 17).reshape(1, 1, 4, 4)
F22 = np.array([[[[1.0, 0], [0, 2]]]])  # window [[a, b], [c, d]] -> a + 2d
DZ_DIAG = np.array([[[[1.0, 0, 0], [0, 2, 0], [0, 0, -1]]]])
X33 = np.arange(1.0, 10).reshape(1, 1, 3, 3)
X2C = np.array([[[[1.0, 2], [3, 4]], [[1, 1], [1, 1]]]])  # channel 0: 1..4, channel 1: ones
F1x1 = np.array([[1.0, 10], [-1, 0]]).reshape(2, 2, 1, 1)  # Z0 = X0 + 10 X1, Z1 = -X0
XP = np.array([[[[1.0, 3, 2, 0], [4, 2, 0, 0], [5, 6, 7, 8], [6, 5, 8, 7]]]])
DA22 = np.array([[[[1.0, 2], [3, 4]]]])
X_PEAK = np.array([[[[1.0, 2, 3], [4, 9, 5], [6, 7, 8]]]])
A_HAND, W_HAND, DZ_HAND = np.array([[1.0, 2], [3, 4]]), np.array([[2.0], [-1]]), np.array([[0.5], [-1]])
Z_CE = np.zeros((2, 10))
Z_CE[0, 3] = np.log(7.0)  # row 0: exp = 1 (x9) and 7: sum 16
Z_CE[1] = 5.0  # row 1: ten equal logits: 1/10 each, whatever the shift
Y_CE = np.array([3, 9])
P_CE = np.full((2, 10), [[1 / 16], [0.1]])
P_CE[0, 3] = 7 / 16
ONEHOT_CE = np.zeros((2, 10))
ONEHOT_CE[0, 3] = ONEHOT_CE[1, 9] = 1
O_HAND, Y_HAND = np.array([[0.5], [0.75]]), np.array([[1.0], [0.0]])
LN3 = np.log(3.0)


@dataclass(frozen=True)
class Hand:
    id: str
    tensor: str
    equation: str
    step: str
    compute: object
    expected: object
    k: int = 0  # roundings charged to the hand value's evaluation


HAND = [
    # Xp windows start at (2i, 2j); a + 2d with a = Xp[2i, 2j], d = Xp[2i+1, 2j+1], + 0.5:
    # row 0: 0+2*1, 0+2*3, 0+0; row 1: 0+2*9, 6+2*11, 8+0; row 2: 0, 14, 16
    Hand(
        "conv2d_forward-1x1x4x4-k2-s2-p1-bias",
        "conv2d.Z",
        "X1,X2,X3,X4",
        "conv",
        lambda: conv2d.conv2d_forward(X44, F22, np.array([0.5]), stride=2, pad=1),
        [[[[2.5, 6.5, 0.5], [18.5, 28.5, 8.5], [0.5, 14.5, 16.5]]]],
        k=5,
    ),
    # dXp gets dZ[i, j] F at rows 2i.., cols 2j..: 1F at (0,0), 2F at (2,2), -F at (4,4);
    # cropping the 1-pixel border leaves dXp[1,1]=2, dXp[2,2]=2, dXp[3,3]=4, dXp[4,4]=-1
    Hand(
        "conv2d_grad_input-1x1x4x4-k2-s2-p1",
        "conv2d.dX",
        "X5",
        "conv",
        lambda: conv2d.conv2d_grad_input(DZ_DIAG, F22, (1, 1, 4, 4), stride=2, pad=1),
        [[np.diag([2.0, 2, 4, -1])]],
        k=1,
    ),
    # dF[u, v] = Xp[u, v] + 2 Xp[2+u, 2+v] - Xp[4+u, 4+v]: 0+12-16, 0+14-0, 0+20-0, 1+22-0
    Hand(
        "conv2d_grad_filter-1x1x4x4-k2-s2-p1",
        "conv2d.dF",
        "X4",
        "conv",
        lambda: conv2d.conv2d_grad_filter(X44, DZ_DIAG, 2, stride=2, pad=1),
        [[[[-4.0, 14], [20, 23]]]],
        k=9,
    ),
    Hand(
        "conv2d_grad_bias-3x3-delta",
        "conv2d.db",
        "X3",
        "conv",
        lambda: conv2d.conv2d_grad_bias(DZ_DIAG),
        [2.0],  # 1 + 2 - 1
        k=9,
    ),
    # floor((3 - 2) / 2) + 1 = 1 window: 1 + 2 + 4 + 5; the last row and column are dropped
    Hand(
        "conv2d_forward-1x1x3x3-k2-s2-remainder",
        "conv2d.Z",
        "X2,X4",
        "conv",
        lambda: conv2d.conv2d_forward(X33, np.ones((1, 1, 2, 2)), stride=2),
        [[[[12.0]]]],
        k=4,
    ),
    Hand(
        "conv2d_grad_input-1x1x3x3-k2-s2-remainder",
        "conv2d.dX",
        "X2,X5",
        "conv",
        lambda: conv2d.conv2d_grad_input(np.ones((1, 1, 1, 1)), np.ones((1, 1, 2, 2)), (1, 1, 3, 3), 2),
        [[[[1.0, 1, 0], [1, 1, 0], [0, 0, 0]]]],
    ),
    Hand(
        "conv2d_grad_filter-1x1x3x3-k2-s2-remainder",
        "conv2d.dF",
        "X2,X4",
        "conv",
        lambda: conv2d.conv2d_grad_filter(X33, np.ones((1, 1, 1, 1)), 2, stride=2),
        [[[[1.0, 2], [4, 5]]]],
    ),
    # 1x1 filters mixing 2 channels: Z0 = X0 + 10 X1, Z1 = -X0
    Hand(
        "conv2d_forward-1x2x2x2-k1-channels",
        "conv2d.Z",
        "X4",
        "conv",
        lambda: conv2d.conv2d_forward(X2C, F1x1),
        [[[[11.0, 12], [13, 14]], [[-1, -2], [-3, -4]]]],
        k=2,
    ),
    # dZ = 1: dX[c] = sum over o of F[o, c]: 1 - 1 = 0 and 10 + 0 = 10
    Hand(
        "conv2d_grad_input-1x2x2x2-k1-channels",
        "conv2d.dX",
        "X5",
        "conv",
        lambda: conv2d.conv2d_grad_input(np.ones((1, 2, 2, 2)), F1x1, (1, 2, 2, 2)),
        [[np.zeros((2, 2)), np.full((2, 2), 10.0)]],
        k=2,
    ),
    # dZ = 1: dF[o, c] = sum of X[c]: 1+2+3+4 = 10, 4 ones = 4, for both filters
    Hand(
        "conv2d_grad_filter-1x2x2x2-k1-channels",
        "conv2d.dF",
        "X4",
        "conv",
        lambda: conv2d.conv2d_grad_filter(X2C, np.ones((1, 2, 2, 2)), 1),
        [[[[10.0]], [[4.0]]], [[[10.0]], [[4.0]]]],
        k=4,
    ),
    # windows [[1,3],[4,2]] -> 4; [[2,0],[0,0]] -> 2; [[5,6],[6,5]] -> 6; [[7,8],[8,7]] -> 8
    Hand(
        "max_pool_forward-1x1x4x4-k2-s2",
        "max_pool.A",
        "X6",
        "pool",
        lambda: pool.max_pool_forward(XP, 2),
        [[[[4.0, 2], [6, 8]]]],
    ),
    # the two tied windows send their delta to the first maximum: (2, 1) and (2, 3)
    Hand(
        "max_pool_backward-1x1x4x4-k2-s2-ties",
        "max_pool.dX",
        "X6",
        "pool",
        lambda: pool.max_pool_backward(XP, DA22, 2),
        [[[[0.0, 0, 2, 0], [1, 0, 0, 0], [0, 3, 0, 4], [0, 0, 0, 0]]]],
    ),
    # every 2x2 window of the 3x3 input holds the 9: it collects 1 + 2 + 3 + 4
    Hand(
        "max_pool_backward-1x1x3x3-k2-s1-overlap",
        "max_pool.dX",
        "X6",
        "pool",
        lambda: pool.max_pool_backward(X_PEAK, DA22, 2, stride=1),
        [[[[0.0, 0, 0], [0, 10, 0], [0, 0, 0]]]],
        k=3,
    ),
    # (1+3+4+2)/4, (2+0+0+0)/4, (5+6+6+5)/4, (7+8+8+7)/4
    Hand(
        "avg_pool_forward-1x1x4x4-k2-s2",
        "avg_pool.A",
        "X7",
        "pool",
        lambda: pool.avg_pool_forward(XP, 2),
        [[[[2.5, 0.5], [5.5, 7.5]]]],
        k=4,
    ),
    Hand(
        "avg_pool_backward-1x1x4x4-k2-s2",
        "avg_pool.dX",
        "X7",
        "pool",
        lambda: pool.avg_pool_backward(DA22, (1, 1, 4, 4), 2),
        [[np.kron([[0.25, 0.5], [0.75, 1]], np.ones((2, 2)))]],
        k=1,
    ),
    # each element gets 1/4 per window covering it: corners 1, edges 2, centre 4
    Hand(
        "avg_pool_backward-1x1x3x3-k2-s1-overlap",
        "avg_pool.dX",
        "X7",
        "pool",
        lambda: pool.avg_pool_backward(np.ones((1, 1, 2, 2)), (1, 1, 3, 3), 2, stride=1),
        [[[[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]]]],
        k=4,
    ),
    Hand(
        "relu-at-0",
        "relu.A",
        "X8",
        "activation",
        lambda: activations.relu(np.array([-1.0, 0, 2])),
        [0.0, 0, 2],
    ),
    # the derivative at z = 0 is 0, as in both frameworks
    Hand(
        "relu_backward-at-0",
        "relu.dZ",
        "X8",
        "activation",
        lambda: activations.relu_backward(np.array([5.0, 5, 5]), np.array([-1.0, 0, 2])),
        [0.0, 0, 5],
    ),
    # tanh(ln 3) = (3 - 1/3) / (3 + 1/3) = 0.8
    Hand(
        "tanh",
        "tanh.A",
        "X9",
        "activation",
        lambda: activations.tanh(np.array([0.0, LN3, -LN3])),
        [0.0, 0.8, -0.8],
        k=tolerance.SIGMOID_ROUNDINGS,
    ),
    # dA (1 - A^2): 1 * 1, 2 * 0.36, -1 * 0.75
    Hand(
        "tanh_backward",
        "tanh.dZ",
        "X9",
        "activation",
        lambda: activations.tanh_backward(np.array([1.0, 2, -1]), np.array([0.0, 0.8, -0.5])),
        [1.0, 0.72, -0.75],
        k=3,
    ),
    # dA A (1 - A): 2 * 0.75 * 0.25, 1 * 0.5 * 0.5
    Hand(
        "sigmoid_backward",
        "sigmoid.dZ",
        "E9",
        "activation",
        lambda: activations.sigmoid_backward(np.array([2.0, 1]), np.array([0.75, 0.5])),
        [0.375, 0.25],
        k=3,
    ),
    # X[0, c, h, w] = 100 c + 10 h + w: the NCHW order reads c, then h, then w
    Hand(
        "flatten-1x2x2x2-nchw",
        "dense.A",
        "X10",
        "flatten",
        lambda: dense.flatten(np.array([[[[0.0, 1], [10, 11]], [[100, 101], [110, 111]]]])),
        [[0.0, 1, 10, 11, 100, 101, 110, 111]],
    ),
    Hand(
        "flatten_backward-1x2x2x2-nchw",
        "dense.dX",
        "X10",
        "flatten",
        lambda: dense.flatten_backward(np.array([[0.0, 1, 10, 11, 100, 101, 110, 111]]), (1, 2, 2, 2)),
        [[[[0.0, 1], [10, 11]], [[100, 101], [110, 111]]]],
    ),
    # A W + b per row: 1*2 - 2*1 + 0.5, 3*2 - 4*1 + 0.5
    Hand(
        "dense_forward",
        "dense.Z",
        "X10",
        "dense",
        lambda: dense.dense_forward(A_HAND, W_HAND, np.array([0.5])),
        [[0.5], [2.5]],
        k=3,
    ),
    # A^T dZ: 1*0.5 + 3*(-1), 2*0.5 + 4*(-1)
    Hand(
        "dense_grad_weights",
        "dense.dW",
        "X10",
        "dense",
        lambda: dense.dense_grad_weights(A_HAND, DZ_HAND),
        [[-2.5], [-3.0]],
        k=2,
    ),
    Hand(
        "dense_grad_bias",
        "dense.db",
        "X10",
        "dense",
        lambda: dense.dense_grad_bias(DZ_HAND),
        [-0.5],
        k=1,
    ),
    # dZ W^T: [0.5*2, 0.5*(-1)], [-1*2, -1*(-1)]
    Hand(
        "dense_grad_input",
        "dense.dA",
        "X10",
        "dense",
        lambda: dense.dense_grad_input(W_HAND, DZ_HAND),
        [[1.0, -0.5], [-2, 1]],
        k=1,
    ),
    # row 0: nine exp(0) = 1 and exp(ln 7) = 7 -> 1/16 and 7/16; row 1: ten equal -> 1/10
    Hand("softmax-10-classes", "softmax_ce.P", "X11", "loss", lambda: loss.softmax(Z_CE), P_CE, k=8),
    # -log(7/16) - log(1/10) = log(160/7)
    Hand(
        "softmax_cross_entropy-sum",
        "softmax_ce.E",
        "X12",
        "loss",
        lambda: loss.softmax_cross_entropy(Z_CE, Y_CE, "sum")[1],
        np.log(160 / 7),
        k=8,
    ),
    Hand(
        "softmax_cross_entropy-mean",
        "softmax_ce.E",
        "X12",
        "loss",
        lambda: loss.softmax_cross_entropy(Z_CE, Y_CE, "mean")[1],
        np.log(160 / 7) / 2,
        k=8,
    ),
    # logits 1000 and 0: without the max shift exp(1000) overflows; E = 1000 exactly
    Hand(
        "softmax_cross_entropy-logit-1000",
        "softmax_ce.E",
        "X11,X12",
        "loss",
        lambda: loss.softmax_cross_entropy(np.array([[1000.0] + [0] * 9]), np.array([1]), "sum")[1],
        1000.0,
        k=2,
    ),
    # P - onehot: row 0 1/16 everywhere but 7/16 - 1 = -9/16 at 3; row 1 0.1, and -0.9 at 9
    Hand(
        "softmax_cross_entropy_backward-sum",
        "softmax_ce.dZ",
        "X12",
        "loss",
        lambda: loss.softmax_cross_entropy_backward(P_CE, Y_CE, "sum"),
        P_CE - ONEHOT_CE,
        k=1,
    ),
    Hand(
        "softmax_cross_entropy_backward-mean",
        "softmax_ce.dZ",
        "X12",
        "loss",
        lambda: loss.softmax_cross_entropy_backward(P_CE, Y_CE, "mean"),
        (P_CE - ONEHOT_CE) / 2,
        k=2,
    ),
    # ((1 - 0.5)^2 + (0 - 0.75)^2) / 2 = (0.25 + 0.5625) / 2; the mean halves it (N = 2)
    Hand("mse-sum", "mse.E", "E7", "loss", lambda: loss.mse(O_HAND, Y_HAND, "sum"), 0.40625, k=5),
    Hand("mse-mean", "mse.E", "E7", "loss", lambda: loss.mse(O_HAND, Y_HAND, "mean"), 0.203125, k=6),
    Hand(
        "mse_backward-sum",
        "mse.dO",
        "E8",
        "loss",
        lambda: loss.mse_backward(O_HAND, Y_HAND, "sum"),
        [[-0.5], [0.75]],
        k=1,
    ),
    Hand(
        "mse_backward-mean",
        "mse.dO",
        "E8",
        "loss",
        lambda: loss.mse_backward(O_HAND, Y_HAND, "mean"),
        [[-0.25], [0.375]],
        k=2,
    ),
]


@pytest.mark.parametrize("case", HAND, ids=lambda c: c.id)
def test_hand(parity, case):
    expected = np.asarray(case.expected, dtype=np.float64)
    actual = np.asarray(case.compute())
    assert actual.shape == expected.shape, f"{case.id}: shape {actual.shape}, by hand {expected.shape}"
    tol = tolerance.stage(np.abs(expected), case.k, "float64", what="|hand value|")
    _record(
        parity,
        case.tensor,
        case.equation,
        case.step,
        _quantity(case.tensor),
        "hand",
        "hand",
        actual,
        expected,
        tol,
    )


# --- central finite differences ---------------------------------------------------------


@dataclass(frozen=True)
class FD:
    """L(inputs) = sum(G * forward(inputs)), G a fixed random upstream delta (1 for a
    scalar loss); `grad(inputs, G)` is the hand-derived dL/d inputs[wrt]."""

    id: str
    tensor: str
    equation: str
    step: str
    inputs: object  # rng -> dict of float64 arrays
    wrt: str
    forward: object
    grad: object


def _distinct(rng, shape, gap=0.1):
    """Values at least `gap` apart (no ties, no max swap within a step h)."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * gap + rng.uniform(0, gap / 4, shape)


def _away_from_0(rng, shape):
    return rng.uniform(0.1, 1.0, shape) * rng.choice([-1.0, 1.0], shape)


def _conv_inputs(rng):
    return {
        "X": rng.standard_normal((2, 2, 6, 5)),  # 6 + 2 - 3 = 5: a stride-2 remainder row
        "F": rng.standard_normal((3, 2, 3, 3)),
        "b": rng.standard_normal(3),
    }


def _conv_fd(grad, wrt, equation, stride, pad):
    fwd = lambda i: conv2d.conv2d_forward(i["X"], i["F"], i["b"], stride, pad)
    back = lambda i, G: conv2d.conv2d_backward(i["X"], i["F"], G, stride, pad)[grad]
    return FD(
        f"conv2d-{grad}-s{stride}-p{pad}",
        f"conv2d.{grad}",
        equation,
        "conv",
        _conv_inputs,
        wrt,
        fwd,
        back,
    )


def _dense_inputs(rng):
    return {
        "A": rng.standard_normal((3, 5)),
        "W": rng.standard_normal((5, 4)),
        "b": rng.standard_normal(4),
    }


def _dense_fd(grad, wrt):
    fwd = lambda i: dense.dense_forward(i["A"], i["W"], i["b"])
    back = lambda i, G: dense.dense_backward(i["A"], i["W"], G)[grad]
    return FD(f"dense-{grad}", f"dense.{grad}", "X10", "dense", _dense_inputs, wrt, fwd, back)


def _ce_fd(reduction):
    fwd = lambda i: loss.softmax_cross_entropy(i["Z"], i["y"], reduction)[1]
    back = lambda i, G: G * loss.softmax_cross_entropy_backward(loss.softmax(i["Z"]), i["y"], reduction)
    inputs = lambda rng: {"Z": 3 * rng.standard_normal((4, 10)), "y": rng.integers(0, 10, 4)}
    return FD(f"softmax_ce-dZ-{reduction}", "softmax_ce.dZ", "X11,X12", "loss", inputs, "Z", fwd, back)


def _pool_fd(kind, k, stride):
    forward = pool.max_pool_forward if kind == "max" else pool.avg_pool_forward
    if kind == "max":
        back = lambda i, G: pool.max_pool_backward(i["X"], G, k, stride)
    else:
        back = lambda i, G: pool.avg_pool_backward(G, i["X"].shape, k, stride)
    return FD(
        f"{kind}_pool-dX-k{k}-s{stride}",
        f"{kind}_pool.dX",
        "X6" if kind == "max" else "X7",
        "pool",
        lambda rng: {"X": _distinct(rng, (2, 2, 5, 5))},
        "X",
        lambda i: forward(i["X"], k, stride),
        back,
    )


def _activation_fd(name, forward, backward, equation, through_output):
    back = lambda i, G: backward(G, forward(i["Z"]) if through_output else i["Z"])
    return FD(
        f"{name}-dZ",
        f"{name}.dZ",
        equation,
        "activation",
        lambda rng: {"Z": 2 * _away_from_0(rng, (2, 3, 4))},
        "Z",
        lambda i: forward(i["Z"]),
        back,
    )


FINITE_DIFFERENCES = [
    _conv_fd("dX", "X", "X5", 2, 1),
    _conv_fd("dF", "F", "X4", 2, 1),
    _conv_fd("db", "b", "X3", 2, 1),
    _conv_fd("dX", "X", "X5", 1, 2),
    _conv_fd("dF", "F", "X4", 1, 2),
    _conv_fd("dX", "X", "X5", 3, 0),
    _pool_fd("max", 2, 2),
    _pool_fd("max", 3, 2),
    _pool_fd("avg", 2, 2),
    _pool_fd("avg", 3, 1),
    _activation_fd("relu", activations.relu, activations.relu_backward, "X8", False),
    _activation_fd("tanh", activations.tanh, activations.tanh_backward, "X9", True),
    _activation_fd("sigmoid", activations.sigmoid, activations.sigmoid_backward, "E9", True),
    _dense_fd("dA", "A"),
    _dense_fd("dW", "W"),
    _dense_fd("db", "b"),
    _ce_fd("sum"),
    _ce_fd("mean"),
    FD(
        "mse-dO-mean",
        "mse.dO",
        "E8",
        "loss",
        lambda rng: {"O": rng.standard_normal((3, 2)), "Y": rng.standard_normal((3, 2))},
        "O",
        lambda i: loss.mse(i["O"], i["Y"], "mean"),
        lambda i, G: G * loss.mse_backward(i["O"], i["Y"], "mean"),
    ),
]


@pytest.mark.parametrize("case", FINITE_DIFFERENCES, ids=lambda c: c.id)
def test_finite_differences(parity, case):
    rng = np.random.default_rng(20)
    inputs = case.inputs(rng)
    out = np.asarray(case.forward(inputs))
    G = rng.standard_normal(out.shape) if out.ndim else np.float64(1.0)
    analytic = np.asarray(case.grad(inputs, G))
    x = inputs[case.wrt]
    assert analytic.shape == x.shape, f"{case.id}: gradient shape {analytic.shape}, input {x.shape}"
    h = 1e-5 * max(1.0, float(np.abs(x).max()))

    def loss_at(xi):
        return float(np.sum(G * case.forward({**inputs, case.wrt: xi})))

    def central(step):
        fd = np.empty(x.shape)
        for i in np.ndindex(x.shape):  # NOTE: a test-side loop over the few input entries
            plus, minus = x.copy(), x.copy()
            plus[i] += step
            minus[i] -= step
            fd[i] = (loss_at(plus) - loss_at(minus)) / (2 * step)
        return fd

    fd_h, fd_2h = central(h), central(2 * h)
    # NOTE: L's rounding scales with sum |G * out|, not |L|: the terms of L may cancel
    tol = tolerance.finite_difference(fd_h, fd_2h, float(np.sum(np.abs(G * out))), h)
    _record(
        parity,
        case.tensor,
        case.equation,
        case.step,
        "gradient",
        "finite_difference",
        "finite_difference",
        analytic,
        fd_h,
        tol,
    )


# --- torch.nn.functional ------------------------------------------------------------------


@pytest.fixture
def torch(parity_settings):
    if "torch" not in parity_settings.frameworks:
        pytest.skip("torch not selected by --parity-frameworks")
    import torch  # a missing torch is an error here, never a skip

    return torch


def _t(torch, a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def _conv_vs_torch(torch, rng, stride=1, pad=0, bias=True):
    X, F, b = (
        rng.standard_normal((2, 3, 7, 6)),
        rng.standard_normal((4, 3, 3, 3)),
        rng.standard_normal(4),
    )
    b = b if bias else None
    tX, tF = _t(torch, X), _t(torch, F)
    tb = _t(torch, b) if bias else None
    tZ = torch.nn.functional.conv2d(tX, tF, tb, stride=stride, padding=pad)
    dZ = rng.standard_normal(tuple(tZ.shape))
    tZ.backward(torch.tensor(dZ))
    g = conv2d.conv2d_backward(X, F, dZ, stride, pad, bias=bias)
    aX, aF, adZ = np.abs(X), np.abs(F), np.abs(dZ)
    out = {
        "conv2d.Z": (
            conv2d.conv2d_forward(X, F, b, stride, pad),
            conv2d.conv2d_forward(aX, aF, None if b is None else np.abs(b), stride, pad),
            tZ,
        ),
        "conv2d.dX": (g["dX"], conv2d.conv2d_grad_input(adZ, aF, X.shape, stride, pad), tX.grad),
        "conv2d.dF": (g["dF"], conv2d.conv2d_grad_filter(aX, adZ, 3, stride, pad), tF.grad),
    }
    if bias:
        out["conv2d.db"] = (g["db"], conv2d.conv2d_grad_bias(adZ), tb.grad)
    return out


def _pool_vs_torch(torch, rng, kind, k, stride, ties=False):
    X = rng.standard_normal((2, 3, 7, 7))
    if ties:  # NOTE: ReLU then rounding to halves: most windows hold tied maxima, many all zero
        X = np.round(np.maximum(X, 0) * 2) / 2
    tX = _t(torch, X)
    if kind == "max":
        tA = torch.nn.functional.max_pool2d(tX, k, stride)
    else:
        tA = torch.nn.functional.avg_pool2d(tX, k, stride)
    dA = rng.standard_normal(tuple(tA.shape))
    tA.backward(torch.tensor(dA))
    if kind == "max":
        A, dX = pool.max_pool_forward(X, k, stride), pool.max_pool_backward(X, dA, k, stride)
        mA, mdX = np.abs(A), pool.max_pool_backward(X, np.abs(dA), k, stride)
    else:
        A, dX = pool.avg_pool_forward(X, k, stride), pool.avg_pool_backward(dA, X.shape, k, stride)
        mA = pool.avg_pool_forward(np.abs(X), k, stride)
        mdX = pool.avg_pool_backward(np.abs(dA), X.shape, k, stride)
    return {f"{kind}_pool.A": (A, mA, tA), f"{kind}_pool.dX": (dX, mdX, tX.grad)}


def _activation_vs_torch(torch, rng, name):
    Z = rng.standard_normal((2, 3, 4, 4)) * 3
    Z[0, 0, 0, :2] = 0.0  # NOTE: ReLU's kink: both sides must take derivative 0 there
    tZ = _t(torch, Z)
    tA = getattr(torch, name)(tZ)
    dA = rng.standard_normal(Z.shape)
    tA.backward(torch.tensor(dA))
    A = getattr(activations, name)(Z)
    if name == "relu":
        dZ, mdZ = activations.relu_backward(dA, Z), np.abs(activations.relu_backward(dA, Z))
    else:
        dZ = getattr(activations, f"{name}_backward")(dA, A)
        mdZ = np.abs(dA) * (1 + A * A)
    return {f"{name}.A": (A, np.abs(A), tA), f"{name}.dZ": (dZ, mdZ, tZ.grad)}


def _dense_vs_torch(torch, rng):
    X = rng.standard_normal((3, 2, 3, 3))
    W, b = rng.standard_normal((18, 5)), rng.standard_normal(5)
    tX, tW, tb = _t(torch, X), _t(torch, W), _t(torch, b)
    tZ = torch.nn.functional.linear(tX.flatten(1), tW.T, tb)  # nn.Linear's weight is W.T
    dZ = rng.standard_normal(tuple(tZ.shape))
    tZ.backward(torch.tensor(dZ))
    A = dense.flatten(X)
    g = dense.dense_backward(A, W, dZ)
    aA, aW, adZ = np.abs(A), np.abs(W), np.abs(dZ)
    return {
        "dense.Z": (dense.dense_forward(A, W, b), dense.dense_forward(aA, aW, np.abs(b)), tZ),
        "dense.dX": (
            dense.flatten_backward(g["dA"], X.shape),
            dense.flatten_backward(dense.dense_grad_input(aW, adZ), X.shape),
            tX.grad,
        ),
        "dense.dW": (g["dW"], dense.dense_grad_weights(aA, adZ), tW.grad),
        "dense.db": (g["db"], dense.dense_grad_bias(adZ), tb.grad),
    }


def _ce_vs_torch(torch, rng, reduction):
    Z, y = rng.standard_normal((5, 10)) * 4, rng.integers(0, 10, 5)
    tZ = _t(torch, Z)
    tE = torch.nn.functional.cross_entropy(tZ, torch.tensor(y), reduction=reduction)
    tE.backward()
    P, E = loss.softmax_cross_entropy(Z, y, reduction)
    scale = 1 / len(y) if reduction == "mean" else 1.0
    onehot = np.arange(10) == y[:, None]
    mE = scale * np.sum(np.abs(Z[np.arange(len(y)), y]) + np.abs(Z).max(axis=1) + np.log(10))
    return {
        "softmax_ce.P": (P, P, torch.softmax(tZ, dim=1)),
        "softmax_ce.E": (E, mE, tE),
        "softmax_ce.dZ": (
            loss.softmax_cross_entropy_backward(P, y, reduction),
            scale * (P + onehot),
            tZ.grad,
        ),
    }


def _mse_vs_torch(torch, rng, reduction):
    O, Y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    tO = _t(torch, O)
    # NOTE: E7's convention in torch's terms: half the summed squares, / N images under mean
    tE = torch.nn.functional.mse_loss(tO, torch.tensor(Y), reduction="sum") / 2
    tE = tE / len(O) if reduction == "mean" else tE
    tE.backward()
    scale = 1 / len(O) if reduction == "mean" else 1.0
    return {
        "mse.E": (loss.mse(O, Y, reduction), loss.mse(np.abs(O) + np.abs(Y), 0 * Y, reduction), tE),
        "mse.dO": (loss.mse_backward(O, Y, reduction), scale * (np.abs(O) + np.abs(Y)), tO.grad),
    }


@dataclass(frozen=True)
class VsTorch:
    id: str
    equation: str
    step: str
    run: object  # (torch, rng) -> {tensor: (ours, magnitude M, torch's value)}
    kwargs: dict = field(default_factory=dict)


VS_TORCH = [
    VsTorch("conv2d-s1-p0", "X4,X5", "conv", _conv_vs_torch),
    VsTorch("conv2d-s2-p1", "X1,X2,X4,X5", "conv", _conv_vs_torch, {"stride": 2, "pad": 1}),
    VsTorch(
        "conv2d-s3-p2-nobias",
        "X1,X2,X4,X5",
        "conv",
        _conv_vs_torch,
        {"stride": 3, "pad": 2, "bias": False},
    ),
    VsTorch("conv2d-s2-p0-bias", "X2,X3,X4,X5", "conv", _conv_vs_torch, {"stride": 2}),
    VsTorch("max_pool2d-k2-s2", "X6", "pool", _pool_vs_torch, {"kind": "max", "k": 2, "stride": 2}),
    VsTorch(
        "max_pool2d-k3-s2-overlap", "X6", "pool", _pool_vs_torch, {"kind": "max", "k": 3, "stride": 2}
    ),
    VsTorch(
        "max_pool2d-k2-s1-ties",
        "X6",
        "pool",
        _pool_vs_torch,
        {"kind": "max", "k": 2, "stride": 1, "ties": True},
    ),
    VsTorch(
        "max_pool2d-k2-s2-ties",
        "X6",
        "pool",
        _pool_vs_torch,
        {"kind": "max", "k": 2, "stride": 2, "ties": True},
    ),
    VsTorch("avg_pool2d-k2-s2", "X7", "pool", _pool_vs_torch, {"kind": "avg", "k": 2, "stride": 2}),
    VsTorch(
        "avg_pool2d-k3-s1-overlap", "X7", "pool", _pool_vs_torch, {"kind": "avg", "k": 3, "stride": 1}
    ),
    VsTorch("relu", "X8", "activation", _activation_vs_torch, {"name": "relu"}),
    VsTorch("tanh", "X9", "activation", _activation_vs_torch, {"name": "tanh"}),
    VsTorch("sigmoid", "E3,E9", "activation", _activation_vs_torch, {"name": "sigmoid"}),
    VsTorch("flatten-linear", "X10", "dense", _dense_vs_torch),
    VsTorch("cross_entropy-sum", "X11,X12", "loss", _ce_vs_torch, {"reduction": "sum"}),
    VsTorch("cross_entropy-mean", "X11,X12", "loss", _ce_vs_torch, {"reduction": "mean"}),
    VsTorch("mse_loss-sum", "E7,E8", "loss", _mse_vs_torch, {"reduction": "sum"}),
    VsTorch("mse_loss-mean", "E7,E8", "loss", _mse_vs_torch, {"reduction": "mean"}),
]


@pytest.mark.parametrize("case", VS_TORCH, ids=lambda c: c.id)
def test_matches_torch(parity, torch, case):
    results = case.run(torch, np.random.default_rng(7), **case.kwargs)
    for tensor, (ours, magnitude, theirs) in results.items():
        theirs = theirs.detach().numpy()
        ours = np.asarray(ours)
        assert ours.shape == theirs.shape, f"{tensor}: ours {ours.shape}, torch {theirs.shape}"
        tol = tolerance.Tolerance(
            RTOL_TORCH * np.maximum(np.abs(np.asarray(magnitude, dtype=np.float64)), np.abs(ours)),
            f"relative: {RTOL_TORCH:g}*M, M the same expression on |inputs|",
        )
        _record(
            parity,
            tensor,
            case.equation,
            case.step,
            _quantity(tensor),
            "stage",
            "torch",
            ours,
            theirs,
            tol,
        )


def test_max_pool_tie_goes_to_first_maximum_as_in_torch(parity, torch):
    # window 0: all four equal (a ReLU's zeros); window 1: 3 at (0, 2) and (1, 3); window 2:
    # 2 at (2, 1) and (3, 0); window 3: 5 at (3, 2) and (3, 3): the delta goes to the first
    X = np.array([[[[0.0, 0, 3, 1], [0, 0, 2, 3], [1, 2, 0, 4], [2, 0, 5, 5]]]])
    dA = np.array([[[[1.0, 2], [3, 4]]]])
    first = np.array([[[[1.0, 0, 2, 0], [0, 0, 0, 0], [0, 3, 0, 0], [0, 0, 4, 0]]]])
    tX = _t(torch, X)
    torch.nn.functional.max_pool2d(tX, 2).backward(torch.tensor(dA))
    ours = pool.max_pool_backward(X, dA, 2)
    exact = tolerance.exact(X.shape)
    _record(parity, "max_pool.dX", "X6", "pool", "gradient", "hand", "hand", ours, first, exact)
    _record(
        parity, "max_pool.dX", "X6", "pool", "gradient", "stage", "torch", ours, tX.grad.numpy(), exact
    )


# --- argument checks, imports, loops ------------------------------------------------------

X_OK, F_OK = np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))

BAD_INPUT = [
    ("conv2d_forward-F-channels", lambda: conv2d.conv2d_forward(X_OK, np.zeros((3, 1, 3, 3))), "F"),
    ("conv2d_forward-F-float32", lambda: conv2d.conv2d_forward(X_OK, F_OK.astype(np.float32)), "F"),
    ("conv2d_forward-b-shape", lambda: conv2d.conv2d_forward(X_OK, F_OK, np.zeros(2)), "b"),
    ("conv2d_forward-X-3d", lambda: conv2d.conv2d_forward(X_OK[0], F_OK), "X"),
    ("conv2d_forward-k-too-big", lambda: conv2d.conv2d_forward(X_OK, np.zeros((3, 2, 6, 6))), "k"),
    ("conv2d_forward-stride-0", lambda: conv2d.conv2d_forward(X_OK, F_OK, stride=0), "stride"),
    ("conv2d_forward-pad-negative", lambda: conv2d.conv2d_forward(X_OK, F_OK, pad=-1), "pad"),
    (
        "conv2d_grad_input-dZ-shape",
        lambda: conv2d.conv2d_grad_input(np.zeros((1, 3, 2, 2)), F_OK, X_OK.shape),
        "dZ",
    ),
    (
        "conv2d_grad_input-x_shape",
        lambda: conv2d.conv2d_grad_input(np.zeros((1, 3, 3, 3)), F_OK, (1, 2, 5)),
        "x_shape",
    ),
    (
        "conv2d_grad_filter-dZ-nan",
        lambda: conv2d.conv2d_grad_filter(X_OK, np.full((1, 3, 3, 3), np.nan), 3),
        "dZ",
    ),
    ("max_pool_forward-k-too-big", lambda: pool.max_pool_forward(X_OK, 6), "k"),
    (
        "max_pool_backward-dA-shape",
        lambda: pool.max_pool_backward(X_OK, np.zeros((1, 2, 3, 3)), 2),
        "dA",
    ),
    ("avg_pool_forward-X-int", lambda: pool.avg_pool_forward(np.zeros((1, 1, 4, 4), int), 2), "X"),
    ("relu_backward-dA-shape", lambda: activations.relu_backward(np.zeros(3), np.zeros(4)), "dA"),
    ("tanh_backward-A-range", lambda: activations.tanh_backward(np.zeros(2), np.array([0.0, 2])), "A"),
    ("dense_forward-W-rows", lambda: dense.dense_forward(np.zeros((2, 3)), np.zeros((4, 1))), "W"),
    ("flatten_backward-dA-size", lambda: dense.flatten_backward(np.zeros((1, 7)), (1, 2, 2, 2)), "dA"),
    (
        "softmax_cross_entropy-y-float",
        lambda: loss.softmax_cross_entropy(np.zeros((2, 10)), np.zeros(2)),
        "y",
    ),
    (
        "softmax_cross_entropy-y-10",
        lambda: loss.softmax_cross_entropy(np.zeros((2, 10)), np.array([0, 10])),
        "y",
    ),
    (
        "softmax_cross_entropy-reduction",
        lambda: loss.softmax_cross_entropy(np.zeros((1, 10)), np.array([0]), "avg"),
        "reduction",
    ),
    (
        "softmax_cross_entropy_backward-P",
        lambda: loss.softmax_cross_entropy_backward(np.full((1, 3), 2.0), np.array([0])),
        "P",
    ),
    ("mse-Y-shape", lambda: loss.mse(np.zeros((2, 1)), np.zeros((1, 2))), "Y"),
]


@pytest.mark.parametrize("call, name", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises((TypeError, ValueError), match=rf"^{name}\b|\b{name}="):
        call()


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("path", sorted(LAYERS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_layers_import_numpy_only_and_never_loop(path):
    tree = ast.parse(path.read_text())
    assert sorted(set(_imports(tree)) - (set(sys.stdlib_module_names) | {"numpy", "reference"})) == []
    loops = (ast.For, ast.While, ast.AsyncFor, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
    found = [f"line {n.lineno}: {type(n).__name__}" for n in ast.walk(tree) if isinstance(n, loops)]
    assert found == [], f"{path.name}: Python loops in the reference: {found}"

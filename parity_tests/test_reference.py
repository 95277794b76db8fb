"""The reference checks itself first: hand-worked examples (values written out here, to be
checked with pencil and paper), the vectorised convolution against a naive loop, analytic
gradients against central finite differences, the article's shapes and finding F1."""

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

from parity_tests import tolerance
from parity_tests.harness import Check
from reference import activations, conv, dense, flatten, loss, model, patches, update

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"

# A 3x3 image (article layout, one image) and a 2x2 filter, as in the article's worked example.
IMG = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])[:, :, None]
FILT = np.array([[2.0, 0], [1, -1]])[:, :, None]  # window [[a, b], [c, d]] -> 2a + c - d


def _hand(parity, tensor, equation, step, quantity, actual, expected, k=2, dtype="float64"):
    expected = np.asarray(expected, dtype=dtype)
    tol = tolerance.stage(np.abs(expected), k, dtype, what="|hand value|")
    parity.check(
        tensor=tensor,
        equation=equation,
        step=step,
        quantity=quantity,
        mode="hand",
        against="hand",
        dtype=dtype,
        compute=lambda: Check(expected, np.asarray(actual), tol, None),  # against: hand
    )


def test_hand_patches(parity):
    # windows p = i*2 + j: X[i:i+2, j:j+2]
    expected = [[[[1, 2], [4, 5]], [[2, 3], [5, 6]], [[4, 5], [7, 8]], [[5, 6], [8, 9]]]]
    _hand(parity, "patches", "E1", "patches", "forward", patches.extract_patches(IMG, 2), expected, k=0)


def test_hand_conv(parity):
    # 2a + c - d per window: 2+4-5, 4+5-6, 8+7-8, 10+8-9
    Z1 = conv.conv_forward(patches.extract_patches(IMG, 2), FILT)
    _hand(parity, "Z1", "E1", "conv", "forward", Z1, [[[1, 3, 7, 9]]])


def test_hand_output_size(parity):
    # (n - f + 1): 28 - 5 + 1 and 3 - 2 + 1
    sides = np.array([patches.output_side(28, 5), patches.output_side(3, 2)], dtype=np.float64)
    _hand(parity, "Z1", "E2", "conv", "forward", sides, [24, 2], k=0)


def test_hand_sigmoid(parity):
    # sigmoid(0) = 1/2, sigmoid(ln 3) = 1/(1 + 1/3) = 3/4, sigmoid(-ln 3) = 1/4
    Z = np.array([[0.0, np.log(3), -np.log(3)]])
    _hand(
        parity,
        "A1",
        "E3",
        "activation",
        "forward",
        activations.sigmoid(Z),
        [[0.5, 0.75, 0.25]],
        k=tolerance.SIGMOID_ROUNDINGS,
    )


def test_hand_flatten(parity):
    A1 = np.arange(12.0).reshape(2, 3, 2)  # (N=2, K=3, P=2)
    # column n holds image n's features in the order k*P + p
    _hand(
        parity,
        "A1",
        "E4",
        "flatten",
        "forward",
        flatten.flatten(A1),
        [[0, 6], [1, 7], [2, 8], [3, 9], [4, 10], [5, 11]],
        k=0,
    )


def test_hand_dense(parity):
    # Z2 = W^T A1 + b = [2*1 - 1*3 + 0.5, 2*2 - 1*4 + 0.5]
    A1, W, b = np.array([[1.0, 2], [3, 4]]), np.array([[2.0], [-1]]), np.array([0.5])
    _hand(parity, "Z2", "E5", "dense", "forward", dense.dense_forward(A1, W, b), [[-0.5, 0.5]])


O_HAND, Y_HAND = np.array([[0.5, 0.75]]), np.array([[1.0, 0.0]])


@pytest.mark.parametrize("reduction, E", [("sum", (0.25 + 0.5625) / 2), ("mean", 0.203125)])
def test_hand_loss(parity, reduction, E):
    _hand(
        parity, "E", "E7", "loss", "forward", loss.half_squared_error(O_HAND, Y_HAND, reduction), E, k=5
    )


@pytest.mark.parametrize("reduction, g", [("sum", [[-0.5, 0.75]]), ("mean", [[-0.25, 0.375]])])
def test_hand_dE_dO(parity, reduction, g):
    _hand(parity, "dE_dO", "E8", "loss", "gradient", loss.loss_grad_output(O_HAND, Y_HAND, reduction), g)


def test_hand_dO_dZ2(parity):
    # O (1 - O): 0.5 * 0.5, 0.75 * 0.25
    _hand(
        parity,
        "dO_dZ2",
        "E9",
        "output",
        "gradient",
        activations.sigmoid_grad_from_output(O_HAND),
        [[0.25, 0.1875]],
    )


A1_HAND, DZ2_HAND, W_HAND = np.array([[1.0, 2], [3, 4]]), np.array([[0.5, -1]]), np.array([[2.0], [-1]])


def test_hand_dE_dW(parity):
    # sum over images of A1[:, n] * dZ2[n]: [1*0.5 + 2*(-1), 3*0.5 + 4*(-1)]
    _hand(
        parity,
        "dE_dW",
        "E11",
        "dense",
        "gradient",
        dense.dense_grad_weights(A1_HAND, DZ2_HAND),
        [[-1.5], [-2.5]],
    )


def test_hand_dE_db(parity):
    _hand(parity, "dE_db", "E12", "dense", "gradient", dense.dense_grad_bias(DZ2_HAND), [-0.5])


def test_hand_dE_dA1(parity):
    # W . dZ2: [[2*0.5, 2*(-1)], [-1*0.5, -1*(-1)]]
    _hand(
        parity,
        "dE_dA1",
        "E13",
        "dense",
        "gradient",
        dense.dense_grad_input(W_HAND, DZ2_HAND),
        [[1.0, -2], [-0.5, 1]],
    )


def test_hand_dE_dZ1(parity):
    # A1 = 1/2 everywhere, so A1 (1 - A1) = 1/4
    _hand(
        parity,
        "dE_dZ1",
        "E14",
        "activation",
        "gradient",
        np.array([[1.0, -2]]) * activations.sigmoid_grad_from_output(np.full((1, 2), 0.5)),
        [[0.25, -0.5]],
    )


def test_hand_dE_df(parity):
    # sum_p dZ1[p] * window_p = w0 + 2 w1 - w3 = [[1+4-5, 2+6-6], [4+10-8, 5+12-9]]
    dZ1 = np.array([[[1.0, 2, 0, -1]]])
    _hand(
        parity,
        "dE_df",
        "E16",
        "conv",
        "gradient",
        conv.conv_grad_filter(patches.extract_patches(IMG, 2), dZ1),
        [[[0.0], [2]], [[6], [8]]],
    )


def test_hand_dZ1_df_is_the_input_window():
    P = patches.extract_patches(IMG, 2)
    assert conv.conv_local_gradient(P) is P  # E15


def test_hand_sgd(parity):
    # W - lr g: 1 - 0.25*0.5, 2 + 0.25*1
    _hand(
        parity,
        "W_new",
        "E17",
        "update",
        "update",
        update.sgd_update(np.array([[1.0], [2.0]]), np.array([[0.5], [-1.0]]), 0.25),
        [[0.875], [2.25]],
    )


def _naive_conv(X, f):
    """The article's loops: every image, every window, every filter."""
    n, _, N = X.shape
    s, _, K = f.shape
    m = n - s + 1
    Z = np.zeros((N, K, m * m))
    for img in range(N):
        for i in range(m):
            for j in range(m):
                for k in range(K):
                    Z[img, k, i * m + j] = np.sum(X[i : i + s, j : j + s, img] * f[:, :, k])
    return Z


def test_vectorised_conv_matches_naive_loops(parity, article_data):
    X = np.ascontiguousarray(article_data.X[:, :, :4])
    f = model.init_params(3).f
    actual = conv.conv_forward(patches.extract_patches(X, 5), f)
    expected = _naive_conv(X, f)
    tol = tolerance.stage(
        conv.conv_forward(patches.extract_patches(X, 5), np.abs(f)), 25, "float64", "|patches|*|f|"
    )
    parity.check(
        tensor="Z1",
        equation="E1",
        step="conv",
        quantity="forward",
        mode="self",
        against="naive_loop",
        dtype="float64",
        compute=lambda: Check(expected, actual, tol, None),  # against: naive loop
    )


def _loss_of(params, X, y):
    return float(loss.half_squared_error(model.forward(params, X).O, y))


@pytest.mark.parametrize(
    "grad, param, equation", [("dE_dW", "W", "E11"), ("dE_db", "b", "E12"), ("dE_df", "f", "E16")]
)
def test_gradient_matches_finite_differences(parity, article_data, grad, param, equation):
    X, y = article_data.X, article_data.y
    params = model.init_params(0)
    analytic = model.backward(params, model.forward(params, X), y)[grad]
    rng = np.random.default_rng(1)
    idx = [tuple(int(rng.integers(d)) for d in analytic.shape) for _ in range(6)]
    h = 1e-4 * max(1.0, float(np.abs(params[param]).max()))

    def central(step):
        out = []
        for i in idx:
            plus, minus = dict(params), dict(params)
            plus[param], minus[param] = params[param].copy(), params[param].copy()
            plus[param][i] += step
            minus[param][i] -= step
            out.append((_loss_of(plus, X, y) - _loss_of(minus, X, y)) / (2 * step))
        return np.array(out)

    fd_h, fd_2h = central(h), central(2 * h)
    tol = tolerance.finite_difference(fd_h, fd_2h, _loss_of(params, X, y), h)
    picked = np.array([analytic[i] for i in idx])
    parity.check(
        tensor=grad,
        equation=equation,
        step="backprop",
        quantity="gradient",
        mode="finite_difference",
        against="finite_difference",
        dtype="float64",
        compute=lambda: Check(fd_h, picked, tol, None),  # against: finite differences
    )


def test_article_shapes(article_batch):
    # The article's own 200 images, whatever --parity-n-images says.
    t = model.train_step(model.init_params(0), article_batch.X, article_batch.y)
    assert t.patches.shape == (200, 576, 5, 5)
    assert t.Z1.shape == t.A1.shape == t.dE_dZ1.shape == (200, 3, 576)
    assert t.W.shape == t.dE_dW.shape == (1728, 1) and t.f.shape == t.dE_df.shape == (5, 5, 3)
    assert t.O.shape == (1, 200)


def test_float32_stays_float32(dtype, article_data):
    t = model.train_step(
        model.init_params(0, dtype), article_data.X.astype(dtype), article_data.y.astype(dtype)
    )
    assert {k: str(v.dtype) for k, v in t.items() if str(v.dtype) != dtype} == {}


def test_article_init_saturates_and_zeroes_gradients(parity, article_data, dtype):
    """F1: with f, W ~ U[0, 1) the output is exactly 1.0 and every gradient exactly zero."""
    X, y = article_data.X.astype(dtype), article_data.y.astype(dtype)
    t = model.train_step(model.init_params(0, dtype, "article"), X, y)
    assert np.all(t.O == 1.0), f"O in [{t.O.min()}, {t.O.max()}], Z2 in [{t.Z2.min()}, {t.Z2.max()}]"
    assert t.Z2.min() > 400, f"F1 expects Z2 around 530..735, got min {t.Z2.min()}"
    for grad in ("dE_dW", "dE_df"):
        parity.check(
            tensor=grad,
            equation="F1",
            step="backprop",
            quantity="gradient",
            mode="self",
            against="hand",
            dtype=dtype,
            expect_zero=True,
            compute=lambda g=grad: Check(np.zeros_like(t[g]), t[g], tolerance.exact(t[g].shape), None),
        )


def test_sigmoid_where_e_to_minus_x_overflows():
    # Below -709.78 (float64) e^-x is inf; sigmoid(x) = e^x there, never 0 from 1 / inf,
    # and a neighbour's value must not depend on sharing a block with such an x.
    x = np.array([-800.0, -720.0, -709.0, 0.3, 1e4])
    got = activations.sigmoid(x)
    assert got[0] == 0.0 and got[1] == np.exp(-720.0) > 0 and got[2] == 1 / (1 + np.exp(709.0))
    assert got[3] == activations.sigmoid(np.array([0.3]))[0] and got[4] == 1.0
    x32 = np.array([-100.0, -88.0, 0.3], dtype=np.float32)
    assert activations.sigmoid(x32)[0] == np.exp(np.float32(-100.0)) > 0


def test_informative_init_keeps_output_informative(article_data):
    for seed in range(20):
        O = model.forward(model.init_params(seed), article_data.X).O
        assert 0.05 < O.min() and O.max() < 0.95, f"seed {seed}: O in [{O.min()}, {O.max()}]"


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("path", sorted(REFERENCE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_reference_imports_numpy_only(path):
    allowed = set(sys.stdlib_module_names) | {"numpy", "reference"}
    assert sorted(set(_imports(path)) - allowed) == []

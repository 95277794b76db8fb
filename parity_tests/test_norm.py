"""The normalisation layers, dropout and global average pooling (reference/layers/norm.py,
X13..X19): hand-worked examples (values written out here from the equations), batch norm's
two backward forms proven equal, every backward (input, gamma, beta) against central finite
differences in float64, the usage error of batch norm over one value, the running
statistics (X15) against each framework in its own convention with the conventions'
measured difference, the dropout mask's seed, and the spec tokens."""

from __future__ import annotations

import math

import numpy as np
import pytest

from parity_tests import tolerance
from parity_tests.test_layers import FD, _record
from reference import rounding
from reference.layers import norm
from reference.layers.registry import Site
from reference.network import Network
from reference.spec import BatchNorm, parse_spec

E = norm.EPS
CONV_SPEC = (
    "conv(8,3,pad=1)-batchnorm-relu-maxpool(2)-conv(16,3)-groupnorm(4)-relu-gap-dense(10)-softmax_ce"
)
DENSE_SPEC = "dense(64)-layernorm-relu-dropout(0.5)-dense(10)-softmax_ce"


def _hand(parity, tensor, equation, actual, expected, k, magnitude=None):
    """`magnitude`: the terms' size where the hand value cancels (default |hand value|)."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (tensor, actual.shape, expected.shape)
    M = np.abs(expected) if magnitude is None else magnitude
    tol = tolerance.stage(M, k, "float64", what="|hand value|" if magnitude is None else "|terms|")
    quantity = "forward" if tensor.endswith(".A") else "gradient"
    _record(parity, tensor, equation, "layer", quantity, "hand", "hand", actual, expected, tol)


# --- hand-worked examples -------------------------------------------------------------------

# batch norm (N, D) = (2, 2): feature 0 is 1, 3 (mu 2, biased var 1), feature 1 is 0, 4
# (mu 2, var 4). gamma (2, -1), beta (0.5, 0).
X_BN = np.array([[1.0, 0.0], [3.0, 4.0]])
G_BN, B_BN = np.array([2.0, -1.0]), np.array([0.5, 0.0])
S1, S4 = math.sqrt(1 + E), math.sqrt(4 + E)
DA_BN = np.array([[1.0, 2.0], [3.0, -2.0]])
# backward: xhat = [[-1/S1, -2/S4], [1/S1, 2/S4]]; dbeta = (4, 0);
# dgamma = (-1 + 3) / S1 = 2/S1, (-4 - 4) / S4 = -8/S4;
# dX = gamma / (m s) (m dA - sum dA - xhat sum(dA xhat)), m = 2:
#   feature 0: sum dA = 4, sum dA xhat = 2/S1: 2/(2 S1) (2 dA - 4 - xhat 2/S1)
#     n=0: (2 - 4 + 2/S1^2)/S1 = (-2 + 2/S1^2)/S1; n=1: (6 - 4 - 2/S1^2)/S1 = (2 - 2/S1^2)/S1
#   feature 1: sum dA = 0, sum dA xhat = -8/S4: -1/(2 S4) (2 dA + xhat 8/S4)
#     n=0: -(4 - 16/S4^2)/(2 S4); n=1: -(-4 + 16/S4^2)/(2 S4)
DX_BN = [
    [(-2 + 2 / S1**2) / S1, -(4 - 16 / S4**2) / (2 * S4)],
    [(2 - 2 / S1**2) / S1, -(-4 + 16 / S4**2) / (2 * S4)],
]
# feature 1 cancels (16 / S4^2 is 4 to within eps): judged on its terms' size
DX_BN_TERMS = np.array([[(6 + 2 / S1**2) / S1, (4 + 16 / S4**2) / (2 * S4)]] * 2)
# layer norm of one image 0, 2, 4, 6: mu 3, var (9 + 1 + 1 + 9) / 4 = 5.
X_LN = np.array([[0.0, 2.0, 4.0, 6.0]])
S5 = math.sqrt(5 + E)
# group norm, one image, 4 channels of 1 x 1, G = 2: groups (0, 2) (mu 1, var 1) and
# (4, 8) (mu 6, var 4); gamma 1, beta 0.
X_GN = np.array([0.0, 2.0, 4.0, 8.0]).reshape(1, 4, 1, 1)


def test_hand_batchnorm(parity):
    _hand(parity, "batchnorm.A", "X13", norm.batchnorm_forward(X_BN, G_BN, B_BN),
          [[-2 / S1 + 0.5, 2 / S4], [2 / S1 + 0.5, -2 / S4]], 8)  # fmt: skip
    got = norm.batchnorm_backward(X_BN, G_BN, DA_BN)
    _hand(parity, "batchnorm.dbeta", "X14", got["dbeta"], [4.0, 0.0], 2)
    _hand(parity, "batchnorm.dgamma", "X14", got["dgamma"], [2 / S1, -8 / S4], 8)
    _hand(parity, "batchnorm.dX", "X14", got["dX"], DX_BN, 16, DX_BN_TERMS)


def test_hand_spatial_batchnorm_folds_h_and_w(parity):
    # One image, one channel, 2 x 2 positions 1, 3 / 3, 1: the statistic is over n, h, w
    # (mu 2, var 1), not per position (where the variance of one value would be 0).
    X = np.array([[[[1.0, 3.0], [3.0, 1.0]]]])
    got = norm.batchnorm_forward(X, np.ones(1), np.zeros(1))
    _hand(parity, "batchnorm.A", "X13", got, np.array([[[[-1, 1], [1, -1]]]]) / S1, 8)


def test_hand_layernorm(parity):
    got = norm.layernorm_forward(X_LN, np.ones(4), np.zeros(4))
    _hand(parity, "layernorm.A", "X16", got, [[-3 / S5, -1 / S5, 1 / S5, 3 / S5]], 8)


def test_hand_groupnorm(parity):
    got = norm.groupnorm_forward(X_GN, np.ones(4), np.zeros(4), 2)
    want = np.array([-1 / S1, 1 / S1, -2 / S4, 2 / S4]).reshape(1, 4, 1, 1)
    _hand(parity, "groupnorm.A", "X17", got, want, 8)


def test_hand_dropout(parity):
    X, mask = np.array([[2.0, 4.0, 6.0]]), np.array([[True, False, True]])
    _hand(parity, "dropout.A", "X18", norm.dropout_forward(X, mask, 0.5), [[4.0, 0.0, 12.0]], 2)
    _hand(parity, "dropout.dX", "X18", norm.dropout_backward(X, mask, 0.75), [[8.0, 0.0, 24.0]], 2)


def test_hand_global_avg_pool(parity):
    X = np.array([[[[1.0, 2.0], [3.0, 6.0]]]])
    _hand(parity, "gap.A", "X19", norm.global_avg_pool(X), [[3.0]], 4)
    _hand(parity, "gap.dX", "X19", norm.global_avg_pool_backward(np.array([[8.0]]), X.shape),
          [[[[2.0, 2.0], [2.0, 2.0]]]], 2)  # fmt: skip


# --- batch norm's backward: the chain of small steps equals the simplified expression -------


BN_SHAPES = [(5, 3), (4, 3, 5, 5), (2, 2, 1, 1)]


@pytest.mark.parametrize("shape", BN_SHAPES, ids=["features", "maps", "N2_1x1"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batchnorm_chain_equals_simplified(shape, dtype):
    rng = np.random.default_rng(3)
    X = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    gamma, dA = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape).astype(dtype)
    chain, simple = norm.batchnorm_backward_chain(X, gamma, dA), norm.batchnorm_backward(X, gamma, dA)
    # Two evaluations of one derivative: within the stage rule of dX (norm_roundings).
    site = Site(BatchNorm(), X, {"gamma": gamma, "beta": gamma}, dA)
    for short in ("dX", "dgamma", "dbeta"):
        b = norm.BATCHNORM.bound(site, short)
        tol = tolerance.stage(b.magnitude, b.roundings, dtype, deterministic=True).array
        assert np.all(np.abs(chain[short] - simple[short]) <= tol), short
    # and the chain is no copy of the simplified form: it differs in the last bits somewhere
    assert not np.array_equal(chain["dX"], simple["dX"])


# --- finite differences for the input, gamma and beta --------------------------------------


def _norm_fd(kind, wrt, shape, groups=None):
    forward, backward = {
        "batchnorm": (norm.batchnorm_forward, norm.batchnorm_backward),
        "layernorm": (norm.layernorm_forward, norm.layernorm_backward),
        "groupnorm": (norm.groupnorm_forward, norm.groupnorm_backward),
    }[kind]
    pshape = shape[1:] if kind == "layernorm" else shape[1:2]

    def inputs(rng):
        return {
            "X": rng.standard_normal(shape),
            "gamma": rng.standard_normal(pshape),
            "beta": rng.standard_normal(pshape),
        }

    short = {"X": "dX", "gamma": "dgamma", "beta": "dbeta"}[wrt]
    eq = {"batchnorm": "X14", "layernorm": "X16", "groupnorm": "X17"}[kind]
    return FD(
        f"{kind}-{short}-{'x'.join(map(str, shape))}",
        f"{kind}.{short}",
        eq,
        "layer",
        inputs,
        wrt,
        lambda i: forward(i["X"], i["gamma"], i["beta"], groups),
        lambda i, G: backward(i["X"], i["gamma"], G, groups)[short],
    )


NORM_FD = [
    _norm_fd(kind, wrt, shape, groups)
    for kind, shape, groups in (
        ("batchnorm", (4, 3), None),
        ("batchnorm", (2, 2, 3, 3), None),
        ("layernorm", (3, 5), None),
        ("layernorm", (2, 2, 2, 3), None),
        ("groupnorm", (2, 4, 2, 3), 2),
    )
    for wrt in ("X", "gamma", "beta")
] + [
    FD(
        "dropout-dX",
        "dropout.dX",
        "X18",
        "layer",
        lambda rng: {"X": rng.standard_normal((3, 4)), "mask": rng.random((3, 4)) > 0.5},
        "X",
        lambda i: norm.dropout_forward(i["X"], i["mask"], 0.3),
        lambda i, G: norm.dropout_backward(G, i["mask"], 0.3),
    ),
    FD(
        "gap-dX",
        "gap.dX",
        "X19",
        "layer",
        lambda rng: {"X": rng.standard_normal((2, 3, 3, 2))},
        "X",
        lambda i: norm.global_avg_pool(i["X"]),
        lambda i, G: norm.global_avg_pool_backward(G, i["X"].shape),
    ),
]


@pytest.mark.parametrize("case", NORM_FD, ids=lambda c: c.id)
def test_finite_differences(parity, case):
    from parity_tests import test_layers

    test_layers.test_finite_differences(parity, case)


# --- usage errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 4), (1, 3, 1, 1)], ids=["N1_features", "N1_1x1_maps"])
def test_batchnorm_over_one_value_is_a_usage_error(shape):
    X = np.ones(shape)
    with pytest.raises(ValueError, match="batch norm needs more than one value per"):
        norm.batchnorm_forward(X, np.ones(shape[1]), np.zeros(shape[1]))


def test_batchnorm_of_one_image_with_positions_is_defined():
    X = np.random.default_rng(0).standard_normal((1, 2, 3, 3))
    assert np.isfinite(norm.batchnorm_forward(X, np.ones(2), np.zeros(2))).all()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("conv(6,3)-groupnorm(4)-dense(10)-softmax_ce", "4 groups do not divide the 6 channels"),
        ("dropout(1)-dense(10)-softmax_ce", r"must be in \[0, 1\), got 1.0"),
        ("dropout(half)-dense(10)-softmax_ce", "p must be a number such as 0.5"),
        ("dense(10)-gap-dense(10)-softmax_ce", "gap needs an image"),
        ("groupnorm(0)-dense(10)-softmax_ce", "groups must be >= 1"),
        ("conv(2,28)-groupnorm(2)-dense(10)-softmax_ce", "would normalise single values"),
        ("dense(1)-layernorm-dense(10)-softmax_ce", "would normalise single values"),
    ],
    ids=["groups_divide", "p_below_1", "p_number", "gap_image", "groups_positive", "gn_one", "ln_one"],
)
def test_bad_spec_tokens(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_spec_tokens_round_trip():
    text = CONV_SPEC
    assert parse_spec(text).text == text
    assert parse_spec("dense(64)-layernorm-relu-dropout(.5)-dense(10)-softmax_ce").text == (
        "dense(64)-layernorm-relu-dropout(0.5)-dense(10)-softmax_ce"
    )


# --- the dropout mask: drawn from the run's seed, the same for forward and backward ---------

DROP = "dense(16)-relu-dropout(0.5)-dense(10)-softmax_ce"


def test_dropout_mask_comes_from_the_seed():
    a, b, c = Network(DROP, seed=1), Network(DROP, seed=1), Network(DROP, seed=2)
    node = a.nodes[3]
    assert node.kind == "dropout"
    m1, m2, m3 = (n.drawn(n.nodes[3], (32, 16))["mask"] for n in (a, b, c))
    assert np.array_equal(m1, m2) and not np.array_equal(m1, m3)
    assert 0.3 < m1.mean() < 0.7  # about 1 - p kept
    X = np.random.default_rng(0).random((32, 1, 28, 28))
    step = a.train_step(a.init_params(0), X, np.arange(32) % 10, 0.1)
    dropped = ~m1
    A, dX = step[node.q("A")], step[node.q("dX")]
    assert np.all(A[dropped] == 0) and np.all(dX[dropped] == 0) and np.any(A[~dropped] != 0)


# --- the running statistics (X15): each framework in its own convention --------------------

X_RUN = np.random.default_rng(5).standard_normal((8, 3, 5, 5)) * 1.5 + 0.5  # the shape
# The update keep old + (1 - keep) statistic: the statistic's roundings (200 values per
# channel), then the two products and the addition.
K_RUN = rounding.norm_roundings(200, 200) + 3


def test_running_statistics_torch_convention(parity):
    import torch
    import torch.nn.functional as F

    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    F.batch_norm(torch.tensor(X_RUN), rm, rv, None, None, training=True, momentum=0.1, eps=1e-5)
    c = norm.RUNNING_CONVENTIONS["torch"]
    mean, var = norm.running_update(np.zeros(3), np.ones(3), X_RUN, c["keep"], c["unbiased"])
    for short, ours, theirs in (("running_mean", mean, rm), ("running_var", var, rv)):
        tol = tolerance.stage(np.abs(ours) + 1, K_RUN, "float64", "|new|+|old|", deterministic=True)
        _record(parity, f"batchnorm.{short}", "X15", "layer", "forward", "stage", "torch",
                ours, theirs.numpy(), tol)  # fmt: skip


def test_running_statistics_keras_convention(parity):
    import keras

    layer = keras.layers.BatchNormalization(axis=1, momentum=0.99, epsilon=1e-3, dtype="float64")
    layer(X_RUN, training=True)
    c = norm.RUNNING_CONVENTIONS["keras"]
    mean, var = norm.running_update(np.zeros(3), np.ones(3), X_RUN, c["keep"], c["unbiased"])
    for short, ours, theirs in (
        ("running_mean", mean, layer.moving_mean),
        ("running_var", var, layer.moving_variance),
    ):
        tol = tolerance.stage(np.abs(ours) + 1, K_RUN, "float64", "|new|+|old|", deterministic=True)
        _record(parity, f"batchnorm.{short}", "X15", "layer", "forward", "stage", "tensorflow",
                ours, np.asarray(theirs), tol)  # fmt: skip


def test_running_variance_conventions_differ_by_the_unbiased_factor(record_property):
    """The same momentum in each framework's terms (torch 0.1 = Keras 0.9 as `keep`), one
    step from (0, 1): torch's running variance takes m / (m - 1) times the batch variance,
    Keras's the batch variance itself. The difference, measured, is (1 - keep) var / (m - 1)."""
    m = X_RUN.shape[0] * X_RUN.shape[2] * X_RUN.shape[3]
    _, torch_var = norm.running_update(np.zeros(3), np.ones(3), X_RUN, 0.9, True)
    _, keras_var = norm.running_update(np.zeros(3), np.ones(3), X_RUN, 0.9, False)
    _, var = norm.moments(X_RUN, (0, 2, 3))
    diff = torch_var - keras_var
    np.testing.assert_allclose(diff, 0.1 * var.reshape(-1) / (m - 1), rtol=1e-12)
    rel = float(np.max(np.abs(diff) / keras_var))
    record_property("running_var_rel_difference_torch_vs_keras", rel)
    print(f"\nrunning_var torch vs keras convention, 8x3x5x5, one step: relative {rel:.3g}")
    assert rel > 1e-4  # the fourth digit: no tolerance of the suite may absorb it


def _torch_running(momentum=0.1):
    import torch
    import torch.nn.functional as F

    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    F.batch_norm(torch.tensor(X_RUN), rm, rv, None, None, training=True, momentum=momentum)
    return rm.numpy(), rv.numpy()


@pytest.mark.parametrize(
    "mistake, keep, unbiased, caught_at",
    [
        ("torch momentum read as keep", 0.1, True, "running_mean"),
        ("Keras-style biased variance against torch", 0.9, False, "running_var"),
    ],
    ids=["momentum_convention", "biased_running_var"],
)
def test_running_statistics_mistakes_are_caught(mistake, keep, unbiased, caught_at):
    """The running-statistics mistakes of X15, each caught against torch at its tensor (the
    right convention passes there: test_running_statistics_torch_convention): the
    momentum's meaning swapped, the running variance's bias swapped."""
    from parity_tests.metrics import compare_arrays

    theirs = dict(zip(("running_mean", "running_var"), _torch_running()))
    got = norm.running_update(np.zeros(3), np.ones(3), X_RUN, keep, unbiased)
    ours = dict(zip(("running_mean", "running_var"), got))[caught_at]
    tol = tolerance.stage(np.abs(ours) + 1, K_RUN, "float64", deterministic=True).array
    r = compare_arrays(theirs[caught_at], ours, tol, brief=True)
    assert r["status"] == "fail", (mistake, caught_at, r["status"], r["budget_used"])


@pytest.mark.parametrize(
    "spec, zero",
    [
        ("conv(3,3)-batchnorm-relu-dense(10)-softmax_ce", True),
        ("conv(1,1)-layernorm-relu-dense(1)-sigmoid-mse", True),  # one channel: the image's mean
        ("conv(2,1)-layernorm-relu-dense(1)-sigmoid-mse", False),  # a bias per channel survives
        ("conv(2,1)-groupnorm(2)-relu-dense(1)-sigmoid-mse", True),  # one channel a group
        ("conv(4,1)-groupnorm(2)-relu-dense(1)-sigmoid-mse", False),
    ],
    ids=[
        "batchnorm",
        "layernorm-1ch",
        "layernorm-2ch",
        "groupnorm-1ch-a-group",
        "groupnorm-2ch-a-group",
    ],
)
def test_a_bias_a_normalisation_removes_is_an_exact_zero(spec, zero):
    """The bias gradient before a normalisation is 0 in exact arithmetic when its mean runs
    over each channel's values: always for batch norm, for a layer norm only over one
    channel (a drawn conv(1,1)-layernorm network's float64 conv1.db was 'vacuous' for the
    correct reference), for a group norm only with one channel a group."""
    net = Network(spec)
    first = net.nodes[0].name
    assert (f"{first}.db" in net.exact_zeros) is zero

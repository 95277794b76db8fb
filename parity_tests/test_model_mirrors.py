"""The spec-network mirrors (parity_tests/mirrors/model_torch.py, model_tf.py): their
contract, not their numbers (the suite's tolerance policy compares those elsewhere).

end_to_end returns exactly net.order's names with the reference's shapes and dtype; stage
returns each node's outputs and backward tensors; update keeps shape and dtype; max-pool's
backward sends a tied window's gradient to its first maximum in row-major order.
"""

from __future__ import annotations

import functools
import importlib
import re
from pathlib import Path

import numpy as np
import pytest

from reference import layout
from reference.network import Network
from reference.update import SUITE_LR

MODULES = {
    "torch": "parity_tests.mirrors.model_torch",
    "tensorflow": "parity_tests.mirrors.model_tf",
}
SPECS = [
    "lenet",
    "conv(4,3,stride=2,pad=1)-tanh-avgpool(2)-dense(10)-softmax_ce",
    "conv(3,5,bias=false)-sigmoid-dense(1)-sigmoid-mse",
    "conv(2,3)-relu-maxpool(3,stride=2)-dense(10)-softmax_ce",  # overlapping windows
    "dense(10)-softmax_ce",  # nothing before the first layer needs a gradient
    "maxpool(2)-relu-dense(10)-softmax_ce",
    # normalisations (NHWC axes and a layer norm's (C, H, W) gamma in TensorFlow), gap, dropout
    "conv(4,3,pad=1)-batchnorm-relu-conv(4,3)-groupnorm(2)-layernorm-relu-gap-dense(10)-softmax_ce",
    "dense(8)-batchnorm-relu-dropout(0.5)-dense(10)-softmax_ce",
]
OVERLAPPING = SPECS[3]
N = 4


def _mirror(framework):
    return importlib.import_module(MODULES[framework])


@functools.cache
def _case(spec: str, dtype: str, reduction: str = "sum"):
    """net, X, params, target and the reference's train_step on a random batch (seed 0)."""
    net = Network(spec)
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 1.0, (N, 1, 28, 28)).astype(dtype)
    labels = rng.integers(0, 10, N)
    params = net.init_params(0, dtype)
    ref = net.train_step(params, X, labels, SUITE_LR, reduction)
    return net, X, params, net.targets(labels, dtype), ref


def _same_form(got: dict, ref: dict, dtype: str) -> None:
    for name, value in got.items():
        assert isinstance(value, np.ndarray), f"{name}: {type(value).__name__}"
        assert value.shape == ref[name].shape, f"{name}: {value.shape} != {ref[name].shape}"
        assert value.dtype == np.dtype(dtype), f"{name}: {value.dtype} != {dtype}"


@pytest.mark.parametrize("spec", SPECS)
def test_end_to_end_returns_every_tensor_of_the_order(framework, dtype, spec):
    net, X, params, target, ref = _case(spec, dtype)
    got = _mirror(framework).end_to_end(net, params, X, target, "sum", SUITE_LR)
    assert list(got) == list(net.order)
    _same_form(got, ref, dtype)


def test_end_to_end_mean_reduction(framework, dtype):
    net, X, params, target, ref = _case(SPECS[2], dtype, "mean")
    got = _mirror(framework).end_to_end(net, params, X, target, "mean", SUITE_LR)
    assert list(got) == list(net.order)
    _same_form(got, ref, dtype)


@pytest.mark.parametrize("spec", SPECS)
def test_stage_returns_each_nodes_outputs_and_grads(framework, dtype, spec):
    net, X, params, target, ref = _case(spec, dtype)
    mirror = _mirror(framework)
    for node in net.nodes:
        x, up = net.inputs_of(node, X, ref), net.upstream_of(node, ref)
        got = mirror.stage(net, node, x, params, up, target, "sum")
        assert list(got) == [node.q(s) for s in (*node.outputs, *node.grads)], node.name
        _same_form(got, ref, dtype)


def test_update_keeps_shape_and_dtype(framework, dtype):
    net, _, params, _, ref = _case(SPECS[0], dtype)
    for name in net.param_names:
        layer, short = name.split(".")
        new = _mirror(framework).update(params[name], ref[f"{layer}.d{short}"], SUITE_LR)
        assert isinstance(new, np.ndarray)
        assert new.shape == params[name].shape and new.dtype == np.dtype(dtype)


def test_max_pool_tie_goes_to_the_first_maximum(framework, dtype):
    """maxpool(3, stride=2) on 26 x 26 (the overlapping spec's pool1), upstream all ones.

    Channel 1 is all zeros (a ReLU's dead map): every window is a tie, so each window's
    delta goes to its top-left element (2i, 2j). Channel 0 is -1 but for 5 at (0, 2),
    (1, 0) and (2, 1): window (0, 0) holds all three and sends to (0, 2), the first in
    row-major order, as does window (0, 1) (whose top-left it is); window (1, 0) holds
    (2, 1) only. So (0, 0) and (2, 0) get nothing, (0, 2) gets 2, (2, 1) gets 1.
    """
    net = Network(OVERLAPPING)
    pool = net.node_of("pool1.A")
    assert pool.kind == "maxpool" and pool.in_shape == (2, 26, 26)
    x = np.zeros((1, 2, 26, 26), dtype=dtype)
    x[0, 0] = -1.0
    x[0, 0, 0, 2] = x[0, 0, 1, 0] = x[0, 0, 2, 1] = 5.0
    up = np.ones((1, 2, 12, 12), dtype=dtype)
    params = net.init_params(0, dtype)
    got = _mirror(framework).stage(net, pool, x, params, up, np.zeros(1, dtype=np.int64), "sum")

    expected = np.zeros_like(x)
    expected[0, :, 0:24:2, 0:24:2] = 1.0  # each window's top-left
    expected[0, 0, 0, 0], expected[0, 0, 0, 2] = 0.0, 2.0
    expected[0, 0, 2, 0], expected[0, 0, 2, 1] = 0.0, 1.0
    np.testing.assert_array_equal(got["pool1.dX"], expected)
    assert got["pool1.A"][0, 0, 0, 0] == 5.0 and got["pool1.A"][0, 1].max() == 0.0


@pytest.mark.parametrize(
    ("there", "back", "shape", "moved"),
    [
        (layout.nchw_to_nhwc, layout.nhwc_to_nchw, (2, 3, 4, 5), (2, 4, 5, 3)),
        (layout.oihw_to_hwio, layout.hwio_to_oihw, (6, 3, 5, 4), (5, 4, 3, 6)),
    ],
)
def test_layout_any_channels_round_trip(there, back, shape, moved):
    a = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    b = there(a)
    assert b.shape == moved
    np.testing.assert_array_equal(back(b), a)
    with pytest.raises(ValueError):
        there(a[0])


@pytest.mark.parametrize("framework", MODULES)
def test_mirror_table_has_one_row_per_registry_kind(framework):
    from reference import spec
    from reference.layers import KINDS

    assert set(_mirror(framework).LAYERS) == set(KINDS)
    # and the registry has one entry per spec token (flatten is implied, never written)
    assert set(KINDS) == set(spec.KINDS) | {"flatten"}


# A layer kind lives in its registry entry's module, its spec token and one row per mirror
# table: every other library module reads the registry. Global average pooling (`gap`,
# X19) is a kind of its own, so its names are not average pooling's.
AVGPOOL_NAMES = re.compile(r"(?<!global_)avg_?pool|(?<!global[ -])average[ -]pool", re.I)
AVGPOOL_HOMES = {
    "reference/layers/pool.py",
    "reference/spec.py",
    "parity_tests/mirrors/model_torch.py",
    "parity_tests/mirrors/model_tf.py",
}


def test_average_pooling_is_named_by_its_entry_token_and_mirror_rows_only():
    root = Path(__file__).resolve().parents[1]
    library = [
        p
        for top in ("reference", "parity_tests", "reports", "benchmarks")
        for p in (root / top).rglob("*.py")
        if not p.name.startswith(("test_", "conftest")) and "meta" not in p.parts
    ]
    naming = {p.relative_to(root).as_posix() for p in library if AVGPOOL_NAMES.search(p.read_text())}
    assert naming == AVGPOOL_HOMES


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_update_is_torch_optim_sgd_bit_for_bit(dtype):
    # The mirror calls the function SGD.step runs (sparing the class's torch._dynamo import);
    # the class itself must give the very same bits, lr 0.1 not being a float.
    import torch

    rng = np.random.default_rng(3)
    p, g = (rng.standard_normal((7, 5)).astype(dtype) for _ in range(2))
    ours = _mirror("torch").update(p, g, 0.1)
    param = torch.nn.Parameter(torch.from_numpy(p.copy()))
    param.grad = torch.from_numpy(g.copy())
    torch.optim.SGD([param], lr=0.1).step()
    assert np.array_equal(ours, param.detach().numpy()) and not np.array_equal(ours, p)


OPTIM_MODULES = {
    "torch": "parity_tests.mirrors.optim_torch",
    "tensorflow": "parity_tests.mirrors.optim_tf",
}


@pytest.mark.parametrize("framework", MODULES)
@pytest.mark.parametrize("spec", [SPECS[-1], SPECS[0]], ids=["dropout", "lenet"])
def test_training_loop_runs_the_end_to_end_forward(framework, spec):
    # The optimisers' loop (a K-step trajectory) and the one-step end-to-end run share one
    # forward, the drawn dropout mask included: the loss before the first update is the same.
    from reference.optim_registry import hyper

    net, X, params, target, _ = _case(spec, "float64")
    rows = importlib.import_module(OPTIM_MODULES[framework]).train(
        net, params, [(X, target)], "sum", "sgd", hyper("sgd")
    )
    loss = net.nodes[-1].q("E")
    one_step = _mirror(framework).end_to_end(net, params, X, target, "sum", SUITE_LR)[loss]
    assert rows[0]["E"] == float(one_step)

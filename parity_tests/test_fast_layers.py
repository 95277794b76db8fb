"""The spec networks' fast kernels (reference/fast_layers.py, what test_model.py's checks run)
are the readable layers (reference/layers/) computed faster: every tensor of every kernel
EQUALS its readable function's on the same inputs, value for value (a zero may differ in
sign only), in both dtypes, for several shapes, strides and paddings, and every tensor of a
fast network's step equals the readable Network's.

Exact, not within a rounding bound: each kernel makes the readable function's own matrix
products (same shapes, so the same BLAS kernels) and adds the same terms in the same order
(docstrings in reference/fast_layers.py); the input
gradient's k^2 additions, adds the same terms per pixel in the same (u, v) order.
"""

from __future__ import annotations

import numpy as np
import pytest

from parity_tests import model_stages
from parity_tests.audit_hook import traced_functions
from reference.fast_layers import FAST_KINDS, Workspace, fast_network, fast_ops
from reference.layers import KINDS
from reference.layers.registry import call_backward, call_forward
from reference.network import DEFAULT_OPS, Network, images_nchw
from reference.trace import implementations

DTYPES = ("float32", "float64")

# (kind, the spec layer, input shape (N, C, H, W) or (N, F)): LeNet's own layers first.
CASES = [
    ("conv", "conv(6,5,pad=2)", (4, 1, 28, 28)),
    ("conv", "conv(16,5)", (4, 6, 14, 14)),
    ("conv", "conv(4,3,stride=2,pad=1)", (3, 3, 9, 7)),  # stride and padding, not square
    ("conv", "conv(3,3,stride=3,bias=false)", (2, 2, 10, 10)),  # a stride remainder
    ("conv", "conv(2,4,stride=2,pad=3)", (2, 2, 8, 8)),  # a padding wider than k / 2
    # One output pixel per image: the readable _im2col's reshape is then a column-major
    # view, which NumPy hands to BLAS transposed (another kernel); fast_layers' cols is
    # row-major. Equal within the stage rule's bound, not exactly (NOT_EXACT).
    ("conv", "conv(2,5)", (3, 1, 5, 5)),
    ("maxpool", "maxpool(2)", (4, 6, 28, 28)),
    ("maxpool", "maxpool(2)", (3, 3, 9, 9)),  # a remainder row and column
    ("maxpool", "maxpool(3,stride=2)", (2, 2, 7, 7)),  # overlapping windows
    ("maxpool", "maxpool(2,stride=1)", (2, 2, 6, 5)),
    ("relu", "relu", (4, 6, 10, 10)),
    ("relu", "relu", (5, 84)),
    ("dense", "dense(120)", (4, 400)),
    ("dense", "dense(10,bias=false)", (3, 7)),
]
NOT_EXACT = {"conv(2,5)-3x1x5x5"}


def _node(token, in_shape):
    """The Network node of layer `token` after an input of `in_shape`: a spec around it."""
    if len(in_shape) == 2:
        net = Network(f"conv(1,28)-relu-dense({in_shape[1]})-{token}-dense(10)-softmax_ce")
        return net, net.nodes[3]
    net = Network(f"{token}-dense(10)-softmax_ce")
    return net, net.nodes[0]


def _inputs(kind, layer, in_shape, dtype, seed=0):
    """Random input, parameters and upstream gradient, with ties and zeros: integers for the
    pools' input (tied windows), ReLU'd values and -0.0 deltas where a branch is taken."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(in_shape)
    if kind in ("maxpool", "relu"):
        x = np.where(rng.random(in_shape) < 0.3, 0.0, np.round(x * 2))
    p = {}
    if kind == "conv":
        c_in, k = in_shape[1], layer.kernel
        p = {"F": rng.standard_normal((layer.channels, c_in, k, k))}
        if layer.bias:
            p["b"] = rng.standard_normal(layer.channels)
    elif kind == "dense":
        p = {"W": rng.standard_normal((in_shape[1], layer.units))}
        if layer.bias:
            p["b"] = rng.standard_normal(layer.units)
    cast = {k: v.astype(dtype) for k, v in p.items()}
    return x.astype(dtype), cast, rng


def _run(ops, kind, layer, x, p, up_of, params_only=False):
    entry = KINDS[kind]
    fwd = call_forward(entry, ops.forward, layer, x, p, None, "sum")
    up = up_of(fwd[entry.outputs[0]].shape)
    backward = ops.params_only if params_only else ops.backward
    bwd = call_backward(entry, backward, layer, x, p, fwd, up, None, "sum", x)
    return {**fwd, **bwd}


def _case_id(case):
    kind, token, shape = case
    return f"{token}-{'x'.join(map(str, shape))}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_fast_kernel_equals_the_readable_layer(case, dtype):
    kind, token, in_shape = case
    net, node = _node(token, in_shape)
    layer = node.layer
    x, p, rng = _inputs(kind, layer, in_shape, dtype)

    readable_up = []

    def upstream(shape):
        up = rng.standard_normal(shape).astype(dtype)
        up[rng.random(shape) < 0.1] = -0.0  # signed zeros through the masks
        readable_up[:] = [up]
        return up

    state = rng.bit_generator.state
    variants = [False, True] if kind == "conv" else [False]
    for params_only in variants:  # conv: with and without the input gradient (a first layer)
        rng.bit_generator.state = state
        readable = _run(DEFAULT_OPS[kind], kind, layer, x, p, upstream, params_only)
        rng.bit_generator.state = state
        fast = _run(fast_ops()[kind], kind, layer, x, p, upstream, params_only)
        assert readable.keys() == fast.keys()
        for name, want in readable.items():
            got = fast[name]
            assert got.dtype == want.dtype == np.dtype(dtype), f"{name}: {got.dtype}, no upcast"
            assert got.shape == want.shape, name
            diff = np.abs(got.astype(np.float64) - want)
            if _case_id(case) not in NOT_EXACT:
                assert np.array_equal(got, want), f"{token} {name} {dtype}: max |diff| {diff.max():.3g}"
                continue
            up = None if name in node.outputs else readable_up[0]  # the same for both runs
            tol = model_stages.stage_tolerance(
                node,
                name,
                x,
                {node.q(k): v for k, v in p.items()},
                up,
                {node.q(k): v for k, v in readable.items()},
                "sum",
                dtype,
            )
            assert np.all(diff <= tol.array), f"{token} {name} {dtype}: {tol.rule}"


def test_every_fast_kernel_is_proven():
    """Each kind with a fast kernel has cases above, and every tagged function of
    reference.fast_layers names the readable function it is proven equal to."""
    assert {case[0] for case in CASES} == set(FAST_KINDS)
    fast = [i for i in implementations() if i.name.startswith("reference.fast_layers.")]
    assert fast and all(i.proven_equal_to for i in fast), [i.name for i in fast]


# --- whole steps -----------------------------------------------------------------------

SPECS = (
    "lenet",
    "conv(4,3,stride=2,pad=1)-tanh-avgpool(2)-dense(10)-softmax_ce",
    "conv(3,5,pad=1)-relu-maxpool(3,stride=2)-conv(2,3,stride=2)-relu-dense(1)-sigmoid-mse",
)


def _batch(article_data, n, dtype):
    return images_nchw(article_data.X[:, :, :n]).astype(dtype), article_data.labels[:n]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", SPECS)
def test_fast_network_step_equals_the_readable_network(article_data, spec, dtype):
    """Every tensor of two steps, the first one's still held while the second runs (its
    buffers must not be reused under it)."""
    readable, fast = Network(spec), fast_network(spec)
    X, labels = _batch(article_data, 6, dtype)
    want = readable.train_step(readable.init_params(0, dtype), X, labels, 0.1, "mean")
    first = fast.train_step(readable.init_params(0, dtype), X, labels, 0.1, "mean")
    second = fast.train_step(readable.init_params(1, dtype), X, labels, 0.1, "mean")
    for tensors in (first, second):
        assert tensors.keys() == want.keys()
    again = readable.train_step(readable.init_params(1, dtype), X, labels, 0.1, "mean")
    for name in readable.order:
        assert np.array_equal(first[name], want[name]), f"{spec} {name}: first step"
        assert np.array_equal(second[name], again[name]), f"{spec} {name}: second step"


def test_the_runs_network_on_the_fast_kernels_equals_the_readable_one(model_network, article_data):
    """The network this run checks (--parity-model), at a few of the run's images."""
    fast = fast_network(model_network.spec)
    for dtype in DTYPES:
        X, labels = _batch(article_data, 5, dtype)
        params = model_network.init_params(0, dtype)
        targets = model_network.targets(labels, dtype)
        want = model_network.train_step(params, X, targets if targets.ndim > 1 else labels, 0.1)
        got = fast.train_step(params, X, targets if targets.ndim > 1 else labels, 0.1)
        bad = [n for n in model_network.order if not np.array_equal(got[n], want[n])]
        assert not bad, f"{model_network.label} {dtype}: fast != readable for {bad}"


def test_a_training_loop_allocates_no_new_buffers(article_data):
    """Steps whose tensors are dropped reuse the Workspace's buffers: after the first step,
    none is added (no memory growth per step)."""
    ws = Workspace()
    net = Network("lenet", ops=fast_ops(ws))
    X, labels = _batch(article_data, 8, "float32")
    params = net.init_params(0, "float32")
    net.train_step(params, X, labels, 0.1)
    held = ws.nbytes()
    for _ in range(3):
        net.train_step(params, X, labels, 0.1)
        assert ws.nbytes() == held


@pytest.mark.parametrize("impl", ["reference", "reference:readable"])
@pytest.mark.parametrize("fast", [True, False], ids=["fast-kernels", "own-layers-run"])
def test_audit_names_the_fast_kernels_that_ran(impl, fast):
    """Whatever --parity-impl (the article's), test_model.py's network runs the fast kernels,
    unless the user's layers are in it (then the readable ones around them)."""
    x4 = traced_functions(impl, "lenet", model_fast=fast)["X4"]
    kernel = (
        "reference.fast_layers.conv_forward (fast path; proven equal to "
        "reference.layers.conv2d.conv2d_forward)"
    )
    assert (kernel in x4) == fast, x4
    assert ("reference.layers.conv2d.conv2d_forward" in x4.replace(kernel, "")) == (not fast)


def test_train_step_is_forward_then_backward_then_update(article_data):
    """train_step validates once and runs the same layers as the public forward, backward
    and sgd_step (which validate each on their own): the same tensors."""
    net = fast_network("lenet")
    X, labels = _batch(article_data, 4, "float32")
    params = net.init_params(0, "float32")
    step = net.train_step(params, X, labels, 0.1, "mean")
    fwd = net.forward(params, X, labels, "mean")
    grads = net.backward(params, X, fwd, labels, "mean")
    parts = {**fwd, **grads, **net.sgd_step(params, grads, 0.1)}
    bad = [n for n in net.order if not np.array_equal(step[n], parts[n])]
    assert step.keys() == parts.keys() and not bad, bad


def test_train_step_validates_x_and_each_parameter_once(article_data, monkeypatch):
    """Issue 25: X and the parameters are checked once a step, not again by each part."""
    import reference.network as network

    seen = []
    checked = network.float_array
    monkeypatch.setattr(
        network, "float_array", lambda name, *a, **k: seen.append(name) or checked(name, *a, **k)
    )
    net = fast_network("lenet")
    X, labels = _batch(article_data, 2, "float64")
    net.train_step(net.init_params(0, "float64"), X, labels, 0.1)
    assert sorted(seen) == sorted(["X", *net.param_names])


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"X": "nan"}, "X must be finite"),
        ({"params": "float32"}, "dense5.b must have dtype float64 like the other operands"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"reduction": "avg"}, "reduction must be one of"),
    ],
    ids=["X-nan", "params-mixed-dtype", "lr-zero", "reduction-unknown"],
)
def test_train_step_still_refuses_bad_input(article_data, bad, message):
    net = fast_network("lenet")
    X, labels = _batch(article_data, 2, "float64")
    params = net.init_params(0, "float64")
    if bad.get("X") == "nan":
        X = X.copy()
        X[0, 0, 3, 3] = np.nan
    if "params" in bad:  # the last parameter float32, the others float64
        params = {**params, "dense5.b": params["dense5.b"].astype("float32")}
    args = dict(lr=bad.get("lr", 0.1), reduction=bad.get("reduction", "sum"))
    with pytest.raises((TypeError, ValueError), match=message):
        net.train_step(params, X, labels, **args)

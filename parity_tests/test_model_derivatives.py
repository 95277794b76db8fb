"""Every parameter gradient of a spec-built network against the loss itself, in float64.

The article's gradients are checked this way in test_taylor.py and test_reference.py; the
layers one by one in test_layers.py (test_finite_differences). Here the whole network's
backward (reference/network.py) is checked against its own forward, on a small batch of
the run's images (the first N_IMAGES), the run's seed and reduction, for every parameter
gradient (conv1.dF, conv1.db, ..., dense5.db) of

* lenet and a small strided-conv/tanh/avg-pool network (NETWORKS), and
* the network --parity-model names, when it is another one;

ids name the network and the gradient: test_model_finite_differences[lenet-conv2.dF].

* test_model_finite_differences: central differences (E(p + h e_i) - E(p - h e_i)) / 2h
  for a handful of entries of the parameter, chosen deterministically (the LARGEST entries
  of |grad|, then RANDOM others), against the hand-derived gradient, with the suite's
  finite_difference rule (parity_tests/tolerance.py: truncation from |fd(2h) - fd(h)|,
  rounding from |E|).
* test_model_taylor: along a random unit direction v in the parameter, the remainder
  r(h) = |E(p + h v) - E(p) - h <g, v>| falls as h^2 exactly when g is the gradient; its
  fitted slope must be 2 within test_taylor.py's band (a wrong gradient gives 1).

ReLU and max-pool kinks. E is only piecewise smooth: a step that moves a ReLU input across
0, or changes which element of a max-pool window is the largest, crosses a kink, and the
difference quotient (and the Taylor remainder) then measures the other branch too, which
the tolerance's truncation estimate would partly absorb. So every evaluation also records
the branches taken (each ReLU's input > 0, each max-pool window's argmax) and compares
them with those at p:

* finite differences: an entry is differenced at the first step h, h/4, h/16, h/64 whose
  four points p +- h, p +- 2h all take p's branches; an entry that crosses a kink at every
  step (a bias of lenet's first layer moves 6 272 ReLU inputs at once, and every later
  one) is differenced on the loss with p's branches held (`Frozen`, below); the record's
  note says which entries took which;
* Taylor: a random unit direction rarely gets far before it crosses a kink (on lenet's
  convolution parameters about h = 2e-4, where the remainder of a network that is
  piecewise linear up to the softmax is still near rounding), so the remainder is taken of
  the loss with every branch held at p's (`Frozen`: each ReLU multiplies by p's mask, each
  max-pool takes p's maximum). That loss is smooth, equals E until the first kink, and its
  gradient at p is exactly what the backward computes, which takes these branches. The
  note says up to which h E itself took p's branches. Networks without kinks: E itself.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from parity_tests import model_stages, tolerance
from parity_tests.harness import Check
from parity_tests.settings import SETTINGS
from parity_tests.test_taylor import ABOVE_ROUNDING, SLOPE_BAND
from reference.network import DEFAULT_OPS, Network, Ops, images_nchw, update_pairs

NETWORKS = ("lenet", "conv(4,3,stride=2,pad=1)-tanh-avgpool(2)-dense(10)-softmax_ce")
N_IMAGES = 8
LARGEST = 3  # entries of largest |grad| checked per parameter
RANDOM = 3  # and this many more, drawn at random among the rest
STEP = 1e-5  # relative central-difference step: h = STEP * max(1, |p_i|)
SHRINK = (1, 4, 16, 64)  # the steps tried, h / shrink, until no kink is crossed
TAYLOR_H = 2.0 ** -np.arange(3, 24.5, 0.5)  # 0.125 down to 6e-8: dense, for kinked networks
MIN_TAYLOR_POINTS = 8  # step sizes above rounding, at least (as test_taylor.py)


@functools.cache
def _fixed_networks() -> tuple[Network, ...]:
    return tuple(Network(spec) for spec in NETWORKS)


def _networks(config) -> list[Network]:
    """NETWORKS, then --parity-model's network (the run's, built when the options were
    validated) when it is another one (by its label)."""
    nets = list(_fixed_networks())
    extra = config.stash[SETTINGS].network
    if extra.label not in {net.label for net in nets}:
        nets.append(extra)
    return nets


def pytest_generate_tests(metafunc):
    if "gradient" not in metafunc.fixturenames:
        return
    cases, ids = [], []
    for net in _networks(metafunc.config):
        for _, grad in update_pairs(net):
            cases.append((net, grad))
            ids.append(f"{net.label}-{grad}")
    metafunc.parametrize("gradient", cases, ids=ids)


# --- the loss, its gradient and the branches taken ------------------------------------------


@dataclass(frozen=True)
class Setup:
    """One network at the run's seed, float64, on the first N_IMAGES images."""

    net: Network
    params: dict
    X: np.ndarray
    target: np.ndarray
    reduction: str
    E0: float
    grads: dict
    branches0: tuple

    def evaluate(self, param: str, value: np.ndarray) -> tuple[float, bool]:
        """(E, whether every kink takes p's branch) with `param` set to `value`, the
        others as at p."""
        params = {**self.params, param: value}
        E, branches = _evaluate(self.net, params, self.X, self.target, self.reduction)
        return E, _same_branches(branches, self.branches0)


def _branches(net: Network, X, fwd) -> tuple:
    """The branch every kinked layer takes: ReLU's input > 0, each max-pool window's
    argmax (first maximum, as the reference's backward)."""
    out = []
    for node in net.nodes:
        if node.kind == "relu":
            out.append(net.inputs_of(node, X, fwd) > 0)
        elif node.kind == "maxpool":
            out.append(_window_argmax(net.inputs_of(node, X, fwd), node.layer))
    return tuple(out)


def _windows(x, k, stride):
    """(N, C, H_out, W_out, k k): every pooling window, row-major (as the reference's)."""
    w = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return w.reshape(*w.shape[:4], k * k)


def _window_argmax(x, layer):
    """Each window's first maximum, as max_pool_backward picks it."""
    return _windows(x, layer.size, layer.stride).argmax(axis=-1)


def _same_branches(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _evaluate(net, params, X, target, reduction) -> tuple[float, tuple]:
    fwd = net.forward(params, X, target, reduction)
    loss = net.nodes[-1]
    return float(fwd[loss.q("E")]), _branches(net, X, fwd)


@pytest.fixture(scope="module")
def setup_for(run_config, article_data, model_network):
    """network -> its Setup, one per network (by label) and module (the run's own network:
    model_network)."""
    made = {}

    def get(net: Network) -> Setup:
        spec = net.label
        if spec not in made:
            if net.label == model_network.label:
                net = model_network
            n = min(N_IMAGES, article_data.X.shape[2])
            X = np.ascontiguousarray(images_nchw(article_data.X)[:n].astype(np.float64))
            target = net.targets(article_data.labels[:n], np.float64)
            params = net.init_params(run_config.seed, "float64")
            step = net.train_step(
                params, X, article_data.labels[:n], run_config.lr, run_config.reduction
            )
            E0, branches0 = _evaluate(net, params, X, target, run_config.reduction)
            grads = {g: step[g] for _, g in update_pairs(net)}
            made[spec] = Setup(net, params, X, target, run_config.reduction, E0, grads, branches0)
        return made[spec]

    return get


def _param_of(grad: str) -> str:
    """conv1.dF -> conv1.F."""
    layer, short = grad.split(".")
    return f"{layer}.{short[1:]}"


def _record(parity, setup, grad, mode, against, actual, expected, tol, note):
    net = setup.net
    parity.check(
        tensor=grad,
        equation=model_stages.equation(net, grad),
        step=grad.split(".", 1)[0],
        quantity="gradient",
        mode=mode,
        against=against,
        dtype="float64",
        # A gradient 0 in exact arithmetic (a bias right before a batch norm,
        # Network.exact_zeros): both sides near zero are the right answer, declared.
        compute=lambda: Check(
            np.asarray(actual), np.asarray(expected), tol, None, truth_zero=grad in net.exact_zeros
        ),
        model=net.label,
        note=note,
    )


# --- the loss with p's branches held ---------------------------------------------------


class Frozen:
    """The loss with every kink's branch held at p's: each ReLU multiplies its input by
    p's mask (input > 0), each max-pool takes the element that was its window's first
    maximum at p. It equals E wherever every branch is p's (so near p), it is smooth in
    the parameters, and its gradient at p is what the backward computes: the backward
    takes exactly these branches. Built from `ops` entries (reference/network.py); a
    network without kinks is its own frozen loss."""

    def __init__(self, setup: Setup):
        net, X = setup.net, setup.X
        fwd0 = net.forward(setup.params, X, setup.target, setup.reduction)
        self.masks, self.argmax = [], []
        for node in net.nodes:
            if node.kind == "relu":
                self.masks.append((net.inputs_of(node, X, fwd0) > 0).astype(X.dtype))
            elif node.kind == "maxpool":
                self.argmax.append(_window_argmax(net.inputs_of(node, X, fwd0), node.layer))
        ops = {
            "relu": Ops(lambda Z: Z * next(self._masks), DEFAULT_OPS["relu"].backward),
            "maxpool": Ops(self._pool, DEFAULT_OPS["maxpool"].backward),
        }
        self.net, self.setup = Network(net.spec, ops), setup

    def _pool(self, X, k, stride):
        w = _windows(X, k, stride)
        return np.take_along_axis(w, next(self._argmax)[..., None], axis=-1)[..., 0]

    def evaluate(self, param: str, value: np.ndarray) -> tuple[float, bool]:
        """(frozen E, whether E itself takes p's branches there, i.e. equals it)."""
        s = self.setup
        self._masks, self._argmax = iter(self.masks), iter(self.argmax)
        fwd = self.net.forward({**s.params, param: value}, s.X, s.target, s.reduction)
        # Layer by layer: while every branch so far is p's, the frozen forward is E's own,
        # so its kinked layers' inputs are E's and say whether E takes p's branches.
        same = _same_branches(_branches(self.net, s.X, fwd), s.branches0)
        return float(fwd[self.net.nodes[-1].q("E")]), same


# --- central finite differences -------------------------------------------------------------


def _candidates(g: np.ndarray, grad: str, seed: int):
    """Flat indices to try: by decreasing |g| first, then a seeded random order of the rest."""
    by_size = np.argsort(-np.abs(g).ravel(), kind="stable")
    rng = np.random.default_rng([seed, zlib.crc32(grad.encode())])
    return by_size, rng.permutation(g.size)


def _central(evaluate, p: np.ndarray, index: tuple, h: float):
    """(fd(h), fd(2h), whether a kink was crossed) for one entry, `evaluate` (param value ->
    (E, p's branches?)) the loss."""
    E, crossed = {}, False
    for step in (h, -h, 2 * h, -2 * h):
        value = p.copy()
        value[index] += step
        E[step], same = evaluate(value)
        crossed = crossed or not same
    return (E[h] - E[-h]) / (2 * h), (E[2 * h] - E[-2 * h]) / (4 * h), crossed


def test_model_finite_differences(parity, setup_for, run_config, gradient):
    net, grad = gradient
    setup = setup_for(net)
    param = _param_of(grad)
    p, g = setup.params[param], setup.grads[grad]
    assert g.shape == p.shape, f"{grad}: gradient shape {g.shape}, parameter {p.shape}"
    frozen = Frozen(setup)
    by_size, shuffled = _candidates(g, grad, run_config.seed)
    largest = min(LARGEST, g.size)
    picked = [int(i) for i in by_size[:largest]]
    picked += [int(i) for i in shuffled if i not in picked][: min(RANDOM, g.size - largest)]
    rows = []  # (index, h, fd(h), fd(2h), how)
    for flat in picked:
        index = np.unravel_index(flat, g.shape)
        base = STEP * max(1.0, abs(float(p[index])))
        for shrink in SHRINK:
            fd_h, fd_2h, crossed = _central(lambda v: setup.evaluate(param, v), p, index, base / shrink)
            if not crossed:
                rows.append(
                    (index, base / shrink, fd_h, fd_2h, "E" if shrink == 1 else "E, smaller step")
                )
                break
        else:  # a kink within 2h/64 of p (or at p: a max-pool tie the step breaks):
            # difference the loss with p's branches held
            fd_h, fd_2h, _ = _central(lambda v: frozen.evaluate(param, v), p, index, base)
            rows.append((index, base, fd_h, fd_2h, "branches held"))

    hs = np.array([r[1] for r in rows])
    fd_h = np.array([r[2] for r in rows])
    fd_2h = np.array([r[3] for r in rows])
    analytic = np.array([g[r[0]] for r in rows])
    # Per entry its own step: the rule's rounding term u |E| / h, taken at each entry's h.
    parts = [tolerance.finite_difference(a, b, setup.E0, h) for a, b, h in zip(fd_h, fd_2h, hs)]
    rule = parts[0].rule
    if len(set(hs)) > 1:
        rule = f"{rule.rsplit(', h=', 1)[0]}, h per entry (note)"
    tol = tolerance.Tolerance(np.array([float(t.array) for t in parts]), rule)
    where = ", ".join(
        f"{grad}{list(map(int, r[0]))} h={r[1]:.2g}" + ("" if r[4] == "E" else f" ({r[4]})")
        for r in rows
    )
    note = (
        f"{len(rows)} entries ({largest} of largest |grad|, the rest random) on "
        f"{setup.X.shape[0]} images, |E|={setup.E0:.4g}: {where}"
    )
    smaller = sum(r[4] == "E, smaller step" for r in rows)
    held = sum(r[4] == "branches held" for r in rows)
    if smaller or held:
        note += (
            f"; ReLU/max-pool kinks: {smaller} entr{'y' if smaller == 1 else 'ies'} took a "
            f"smaller step not to cross one, {held} crossed one at every step down to h/"
            f"{SHRINK[-1]} and were differenced with p's branches held"
        )
    _record(parity, setup, grad, "finite_difference", "finite_difference", fd_h, analytic, tol, note)


# --- the Taylor remainder -------------------------------------------------------------------


def test_model_taylor(parity, setup_for, run_config, gradient):
    net, grad = gradient
    setup = setup_for(net)
    param = _param_of(grad)
    p, g = setup.params[param], setup.grads[grad]
    frozen = Frozen(setup)
    E0, same0 = frozen.evaluate(param, p)
    assert same0 and E0 == setup.E0, f"the frozen loss at p is {E0!r}, E(p) is {setup.E0!r}"
    rng = np.random.default_rng([run_config.seed, zlib.crc32(grad.encode()), 1])
    v = rng.standard_normal(p.shape)
    v /= np.linalg.norm(v)
    gv = float(np.vdot(g, v))
    E = np.empty(TAYLOR_H.size)
    smooth = np.empty(TAYLOR_H.size, dtype=bool)
    for i, h in enumerate(TAYLOR_H):
        E[i], smooth[i] = frozen.evaluate(param, p + h * v)
    first = np.abs(E - E0)
    if grad in net.exact_zeros:  # E does not depend on it: no slope to fit, E stays put
        allowed = ABOVE_ROUNDING * tolerance.UNIT_ROUNDOFF["float64"] * abs(E0)
        tol = tolerance.Tolerance(np.array([allowed]), "taylor: |E(p + h v) - E(p)| at rounding")
        note = (
            f"{grad} is 0 in exact arithmetic (Network.exact_zeros): E moved by at most "
            f"{first.max():.3g} along a random unit direction in {param}, h up to "
            f"{TAYLOR_H.max():.3g}; the gradient is {np.abs(g).max():.3g} at most"
        )
        _record(parity, setup, grad, "taylor", "finite_difference", [first.max()], [0.0], tol, note)
        return
    second = np.abs(E - E0 - TAYLOR_H * gv)
    use = second > ABOVE_ROUNDING * tolerance.UNIT_ROUNDOFF["float64"] * abs(E0)
    h_used = TAYLOR_H[use]
    assert use.sum() >= MIN_TAYLOR_POINTS, (
        f"{setup.net.label} {grad}: only {use.sum()} of {TAYLOR_H.size} step sizes above "
        f"rounding: the Taylor slope cannot be fitted"
    )
    slope2 = float(np.polyfit(np.log(h_used), np.log(second[use]), 1)[0])
    slope1 = float(np.polyfit(np.log(h_used), np.log(first[use]), 1)[0])
    note = (
        f"Taylor remainder slope {slope2:.4f} (2 expected) over {use.sum()} step sizes "
        f"h in [{h_used.min():.1e}, {h_used.max():.3g}] above rounding, along a random unit "
        f"direction in {param}, {setup.X.shape[0]} images; first-order remainder slope "
        f"{slope1:.4f} (1 expected)"
    )
    if frozen.masks or frozen.argmax:
        crossed = np.flatnonzero(~smooth)
        below = TAYLOR_H[crossed.max() + 1 :] if crossed.size else TAYLOR_H
        note += (
            "; E with ReLU/max-pool branches held at p's: E itself takes them (equals it) "
            + (f"for h <= {below.max():.2g}" if below.size else "at none of the step sizes")
            + f", {(~smooth).sum()} of {TAYLOR_H.size} cross a kink"
        )
    tol = tolerance.Tolerance(np.array([SLOPE_BAND]), f"taylor: |slope - 2| <= {SLOPE_BAND}")
    _record(parity, setup, grad, "taylor", "finite_difference", [slope2], [2.0], tol, note)

"""Max pooling (X6) and average pooling (X7), forward and backward, without padding.

Batch-first NCHW: X (N, C, H, W) -> A (N, C, H_out, W_out), each channel pooled on its own,
H_out = floor((H - k) / stride) + 1 (X2 with p = 0), stride k by default. No padding, as
the spec says: with padding the frameworks disagree on average pooling (torch counts the
padded zeros, TensorFlow 'SAME' does not). Windows may overlap (stride < k); an element in
several windows then sums the gradient it receives from each.
"""

from __future__ import annotations

import numpy as np

from reference import rounding
from reference._validate import float_array, positive_int
from reference.layers.conv2d import _col2im, _shape4, _windows, output_side
from reference.layers.registry import CONVENTION, HOLDS, Bound, Case, Equation, LayerKind, Mistake, Site
from reference.trace import implements


@implements("X6")
def max_pool_forward(X: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
    """X6: A[n, c, i, j] = max over u, v < k of X[n, c, s i + u, s j + v].

    X: (N, C, H, W) -> A: (N, C, H_out, W_out), H_out = floor((H - k) / stride) + 1.
    No arithmetic: every A entry is one of X's values.
    """
    X, k, stride = _check(X, k, stride)
    return _planes(X, k, stride).max(axis=0)


@implements("X6")
def max_pool_backward(X: np.ndarray, dA: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
    """X6: dE/dX[n, c, s i + u*, s j + v*] += dA[n, c, i, j], (u*, v*) the position of the
    window's maximum; every other element of the window gets nothing from it.

    Ties go to the FIRST maximum in row-major order of the window (u, then v), as torch and
    TensorFlow do on the CPU: a window of equal values (all zeros after a ReLU) sends its
    whole delta to its top-left element, never shared or copied to every maximum.
    X: (N, C, H, W), the pool's input; dA: (N, C, H_out, W_out) -> dX: (N, C, H, W).
    """
    X, k, stride = _check(X, k, stride)
    N, C, H_out, W_out = _out_shape(X.shape, k, stride)
    dA = float_array("dA", dA, (N, C, H_out, W_out), dtype=X.dtype)
    planes = _planes(X, k, stride)  # planes[u k + v, n, c, i, j] = X[n, c, s i + u, s j + v]
    is_max = planes == planes.max(axis=0)
    # The first maximum in (u, v) row-major order is the maximum with the smallest plane
    # index p: the one with the highest score k^2 - p (0 where not a maximum), exactly one
    # per window. (np.argmax over the planes gives the same index, several times slower.)
    rank = np.arange(k * k, 0, -1, dtype=np.min_scalar_type(k * k)).reshape(-1, 1, 1, 1, 1)
    score = is_max * rank
    first = (score == score.max(axis=0)).reshape(k, k, N, C, H_out, W_out)
    # dX[n, c, s i + u, s j + v] gets dA[n, c, i, j] where (u, v) is the first maximum.
    return _scatter(np.multiply, (first, dA), X.shape, k, stride)


@implements("X7")
def avg_pool_forward(X: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
    """X7: A[n, c, i, j] = (1 / k^2) sum over u, v < k of X[n, c, s i + u, s j + v].

    X: (N, C, H, W) -> A: (N, C, H_out, W_out), H_out = floor((H - k) / stride) + 1.
    Each entry is a sum of k^2 values and one division.
    """
    X, k, stride = _check(X, k, stride)
    return _planes(X, k, stride).sum(axis=0) / (k * k)


@implements("X7")
def avg_pool_backward(dA: np.ndarray, x_shape: tuple, k: int, stride: int | None = None) -> np.ndarray:
    """X7: dE/dX[n, c, s i + u, s j + v] += dA[n, c, i, j] / k^2 for every u, v < k.

    dA: (N, C, H_out, W_out); x_shape: the pool input's shape (N, C, H, W)
    -> dX: (N, C, H, W), dA's dtype. Elements no window covers (stride remainder) get 0.
    """
    x_shape = _shape4("x_shape", x_shape)
    dA = float_array("dA", dA, (None, None, None, None))
    k, stride = _geometry(x_shape, k, stride)
    N, C, H_out, W_out = _out_shape(x_shape, k, stride)
    dA = float_array("dA", dA, (N, C, H_out, W_out))
    share = np.broadcast_to(dA, (k, k, N, C, H_out, W_out))  # a view: no copy
    return _scatter(np.divide, (share, k * k), x_shape, k, stride)


def _planes(X, k, stride):
    """(N, C, H, W) -> (k^2, N, C, H_out, W_out), a copy: planes[u k + v, n, c, i, j] =
    X[n, c, s i + u, s j + v], one plane per window offset in row-major (u, v) order.

    A reduction over a window is then elementwise across k^2 contiguous planes (NumPy
    reduces short trailing axes, the windows view's (k, k), an order of magnitude slower).
    """
    windows = _windows(X, k, stride)  # (N, C, H_out, W_out, k, k), a view
    planes = np.ascontiguousarray(windows.transpose(4, 5, 0, 1, 2, 3))
    return planes.reshape(k * k, *windows.shape[:4])


def _scatter(ufunc, operands, x_shape, k, stride):
    """G = ufunc(*operands) (k, k, N, C, H_out, W_out), the delta each window sends to each
    of its elements (G[u, v, n, c, i, j] to X[n, c, s i + u, s j + v]) -> dX (N, C, H, W),
    every element the sum of what it receives.

    Windows that do not overlap (stride == k) tile X: each element receives from at most
    one window, so the ufunc writes G straight into dX's tiles (elements past the last
    window keep 0); through `out=` it runs in its operands' memory order, an assignment
    would run in dX's, (k, k) innermost and several times slower. Otherwise (stride != k)
    conv2d's _col2im adds the contributions up, as np.add.at would.
    """
    if stride != k:
        dX = _col2im(ufunc(*operands), x_shape, stride)
    else:
        N, C = x_shape[:2]
        H_out, W_out = _out_shape(x_shape, k, stride)[2:]
        dX = np.zeros(x_shape, dtype=np.result_type(*operands))
        tiles = dX[:, :, : H_out * k, : W_out * k].reshape(N, C, H_out, k, W_out, k)
        ufunc(*operands, out=tiles.transpose(3, 5, 0, 1, 2, 4))  # [u, v, n, c, i, j]
    dX += 0  # -0.0 (False times a negative delta, say) -> 0.0, as adding into zeros gives
    return dX


def _check(X, k, stride):
    X = float_array("X", X, (None, None, None, None))
    return (X, *_geometry(X.shape, k, stride))


def _geometry(shape, k, stride):
    """k and stride (default k) checked against an input of `shape` (N, C, H, W)."""
    k = positive_int("k", k)
    stride = k if stride is None else positive_int("stride", stride)
    output_side(shape[2], k, stride)  # raises, naming k, when the window does not fit
    output_side(shape[3], k, stride)
    return k, stride


def _out_shape(shape, k, stride):
    N, C, H, W = shape
    return N, C, (H - k) // stride + 1, (W - k) // stride + 1


# --- the registry entries (reference/layers/registry.py) ----------------------------------


def windows_reaching(flags: np.ndarray, x_shape: tuple, k: int, stride: int) -> np.ndarray:
    """Which input elements lie in a window whose flag is set: flags (N, C, H_out, W_out) of
    bools -> (N, C, H, W) bools (the scatter of the windows' flags back onto their elements)."""
    return avg_pool_backward(flags.astype(np.float64), x_shape, k, stride) > 0


def _windows_per_element(k: int, stride: int) -> int:
    """How many windows can cover one element: ceil(k / s)^2."""
    return ((k + stride - 1) // stride) ** 2


def _max_bound(site: Site, short: str) -> Bound:
    """X6: the forward selects; the backward places each delta, adding only where windows
    overlap (the sum over the windows covering an element)."""
    layer = site.layer
    windows = _windows_per_element(layer.size, layer.stride)
    if short == "A" or windows == 1:
        return Bound(None, rounding.SELECT_ROUNDINGS)
    M = max_pool_backward(site.x, np.abs(site.upstream), layer.size, layer.stride)
    return Bound(M, rounding.roundings_window_sum(windows), "scatter |dA|")


def _avg_roundings(k: int) -> int:
    """An average over a k x k window: the k^2-term sum, then the division by k^2."""
    return rounding.roundings_sum(k * k) + 1


def _avg_bound(site: Site, short: str) -> Bound:
    """X7: a k^2-term mean forward; backward each element sums dA / k^2 over its windows."""
    layer, a = site.layer, np.abs
    if short == "A":
        M = avg_pool_forward(a(site.x), layer.size, layer.stride)
        return Bound(M, _avg_roundings(layer.size), "mean |X|")
    M = avg_pool_backward(a(site.upstream), site.x.shape, layer.size, layer.stride)
    k = rounding.roundings_window_sum(_windows_per_element(layer.size, layer.stride)) + 1
    return Bound(M, k, "scatter |dA|/k^2")


# --- the mistakes (registry entries' catalogues; parity_tests/model_mutants.py runs them) ---


def max_pool_backward_all_maxima(X, dA, k, stride):
    """Every maximum of a window gets the window's whole delta (a tie sends it to each)."""
    win = _windows(X, k, stride)  # (N, C, H_out, W_out, k, k)
    hit = win == win.max(axis=(4, 5), keepdims=True)
    share = np.where(hit, dA[..., None, None], np.zeros((), X.dtype))
    return _col2im(share.transpose(4, 5, 0, 1, 2, 3), X.shape, stride)


def max_pool_backward_spread(X, dA, k, stride):
    """The max-pool delta spread evenly over the window, as average pooling's."""
    return avg_pool_backward(dA, X.shape, k, stride)


def avg_pool_backward_undivided(X, dA, k, stride):
    """Every element of the window gets the whole delta: the 1 / k^2 forgotten."""
    return avg_pool_backward(dA, X.shape, k, stride) * X.dtype.type(k * k)


MAXPOOL = LayerKind(
    passes_on=True,  # |max(x + e) - max(x)| <= max |e| over the window
    name="maxpool",
    family="pool",
    outputs=("A",),
    input_grad="dX",
    equations={"A": "X6", "dX": "X6"},
    forward=max_pool_forward,
    backward=max_pool_backward,
    bound=_max_bound,
    kinked=True,
    user=("max_pool_forward(x, pool_param) -> (out, cache)", "max_pool_backward(dout, cache) -> dx"),
    mistakes=(
        Mistake(
            id="pool_grad_all_maxima",
            equation="X6",
            first="pool2.dX",
            case=Case("lenet"),
            title="max-pool gradient sent to every maximum of a tied window (ties go to the "
            "first maximum in row-major order)",
            explains="pool_grad_all_maxima",
            backward=max_pool_backward_all_maxima,
            caught_on="inputs with a tied window: after a ReLU, all-zero windows (LeNet's pool2 "
            "here; pool1 is reached later in backward order)",
        ),
        Mistake(
            id="pool_grad_spread_evenly",
            equation="X6",
            first="pool1.dX",
            case=Case("conv(4,5)-tanh-maxpool(2)-dense(10)-softmax_ce"),
            title="max-pool gradient spread evenly over the window (delta / k^2 each), as if "
            "it were average pooling",
            explains="pool_grad_spread_evenly",
            backward=max_pool_backward_spread,
        ),
    ),
)
AVGPOOL = LayerKind(
    passes_on=True,
    name="avgpool",
    family="pool",
    outputs=("A",),
    input_grad="dX",
    equations={"A": "X7", "dX": "X7"},
    forward=avg_pool_forward,
    backward=lambda X, dA, k, s: avg_pool_backward(dA, X.shape, k, s),
    bound=_avg_bound,
    user=("avg_pool_forward(x, pool_param) -> (out, cache)", "avg_pool_backward(dout, cache) -> dx"),
    mistakes=(
        Mistake(
            id="avgpool_grad_not_divided",
            equation="X7",
            first="pool1.dX",
            case=Case("conv(4,3)-relu-avgpool(2)-dense(10)-softmax_ce"),
            title="avg-pool gradient not divided by k^2: every element gets the whole delta",
            explains="avgpool_grad_not_divided",
            backward=avg_pool_backward_undivided,
        ),
    ),
)

# Its layer kinds' registry entries, collected in reference.layers.KINDS.
ENTRIES = (
    MAXPOOL,
    AVGPOOL,
)

# Its equations' audit records (reference/equations.py, docs/extensions.md).
EQUATIONS = (
    Equation(
        "X6",
        "max pool: A = the largest value of each k x k window, per channel; the backward "
        "gives the window's delta to its maximum and nothing to the other elements "
        "(overlapping windows add)",
        CONVENTION,
        convention="ties go to the first maximum in row-major order of the window (torch "
        "and TensorFlow on the CPU; GPU kernels may differ)",
        note="a window of equal values (all zeros after a ReLU) sends its whole delta to its "
        "top-left element, never shared among the maxima nor copied to each",
    ),
    Equation(
        "X7",
        "average pool: A = the mean of each k x k window, per channel; the backward gives "
        "every element of the window dA / k^2 (overlapping windows add)",
        HOLDS,
        note="pools have no padding: with padding the frameworks disagree on average pooling "
        "(torch counts the padded zeros by default, TensorFlow 'SAME' does not)",
    ),
)

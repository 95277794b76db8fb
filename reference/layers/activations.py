"""Elementwise activations: ReLU (X8), tanh (X9) and the article's sigmoid (E3, E9).

Any shape (NCHW after a convolution, (N, U) after a dense layer), dtype kept. Each
`*_backward` multiplies the upstream delta dA by the local derivative: through the input Z
for ReLU (its kink is defined by Z), through the output A for tanh and sigmoid, the usual
form (no second exponential).
"""

from __future__ import annotations

import numpy as np

from reference import rounding
from reference._validate import float_array
from reference.activations import sigmoid, sigmoid_grad_from_output
from reference.layers.registry import CONVENTION, HOLDS, Bound, Case, Equation, LayerKind, Mistake, Site
from reference.trace import implements

__all__ = [
    "relu",
    "relu_grad",
    "relu_backward",
    "tanh",
    "tanh_grad_from_output",
    "tanh_backward",
    "sigmoid",
    "sigmoid_grad_from_output",
    "sigmoid_backward",
]


@implements("X8")
def relu(Z: np.ndarray) -> np.ndarray:
    """X8: A = max(0, Z), elementwise; any shape -> Z's shape. No rounding."""
    Z = float_array("Z", Z, ndim=None, allow_empty=True)
    return np.maximum(Z, 0)


@implements("X8")
def relu_grad(Z: np.ndarray) -> np.ndarray:
    """X8: dA/dZ = 1 where Z > 0 and 0 where Z <= 0, read from Z (never from the sign of the
    upstream delta). At Z = 0 both frameworks take 0, and so does this. Z's shape and dtype.
    """
    Z = float_array("Z", Z, ndim=None, allow_empty=True)
    return (Z > 0).astype(Z.dtype)


@implements("X8")
def relu_backward(dA: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """X8: dE/dZ = dA * [Z > 0]. dA, Z: the same shape -> dZ: that shape. No rounding."""
    Z = float_array("Z", Z, ndim=None, allow_empty=True)
    dA = float_array("dA", dA, Z.shape, dtype=Z.dtype, allow_empty=True)
    dZ = np.multiply(dA, Z > 0, out=np.empty_like(dA))  # ~10x faster than np.where here
    dZ += 0  # a negative delta times 0 is -0.0: made 0.0, what np.where(Z > 0, dA, 0) gives
    return dZ


@implements("X9")
def tanh(Z: np.ndarray) -> np.ndarray:
    """X9: A = tanh(Z) = (e^Z - e^-Z) / (e^Z + e^-Z), values in (-1, 1); any shape.
    NumPy's tanh (no overflow for large |Z|: it saturates to +-1)."""
    Z = float_array("Z", Z, ndim=None, allow_empty=True)
    return np.tanh(Z)


@implements("X9")
def tanh_grad_from_output(A: np.ndarray) -> np.ndarray:
    """X9: d tanh(z) / dz = 1 - A^2 with A = tanh(z), through the output like E9; any shape."""
    A = float_array("A", A, ndim=None, allow_empty=True)
    if A.size and (A.min() < -1 or A.max() > 1):
        raise ValueError(f"A must be a tanh output in [-1, 1], got values in [{A.min()}, {A.max()}]")
    return 1 - A * A


@implements("X9")
def tanh_backward(dA: np.ndarray, A: np.ndarray) -> np.ndarray:
    """X9: dE/dZ = dA (1 - A^2), A = tanh(Z). dA, A: the same shape -> dZ: that shape."""
    A = float_array("A", A, ndim=None, allow_empty=True)
    dA = float_array("dA", dA, A.shape, dtype=A.dtype, allow_empty=True)
    return dA * tanh_grad_from_output(A)


@implements("E9", "E14")
def sigmoid_backward(dA: np.ndarray, A: np.ndarray) -> np.ndarray:
    """E9 / E14 applied to a delta: dE/dZ = dA A (1 - A), A = sigmoid(Z) (reference.activations).
    dA, A: the same shape -> dZ: that shape."""
    A = float_array("A", A, ndim=None, allow_empty=True)
    dA = float_array("dA", dA, A.shape, dtype=A.dtype, allow_empty=True)
    return dA * sigmoid_grad_from_output(A)


# --- the registry entries (reference/layers/registry.py) ----------------------------------


def _relu_bound(site: Site, short: str) -> Bound:
    """X8: max(0, z) and its masked delta return an input value exactly."""
    return Bound(None, rounding.SELECT_ROUNDINGS)


def _tanh_bound(site: Site, short: str) -> Bound:
    A = site.ours["A"]
    if short == "A":
        return Bound(np.abs(A), rounding.TANH_ROUNDINGS, "|A|")
    return Bound(np.abs(site.upstream) * (1 + A * A), rounding.TANH_BACKWARD_ROUNDINGS, "|dA|(1+A^2)")


def _sigmoid_bound(site: Site, short: str) -> Bound:
    A = site.ours["A"]
    if short == "A":
        return Bound(np.abs(A), rounding.SIGMOID_ROUNDINGS, "|A|")
    M = np.abs(site.upstream) * rounding.sigmoid_grad_magnitude(A)
    return Bound(M, rounding.SIGMOID_BACKWARD_ROUNDINGS, "|dA|(A(1-A)+A)")


# --- the mistakes (registry entries' catalogues; parity_tests/model_mutants.py runs them) ---


def relu_backward_upstream_sign(dA, Z, A):
    """The ReLU mask taken from the sign of the upstream delta, not from Z."""
    return np.where(dA > 0, dA, np.zeros((), dA.dtype))


def tanh_backward_of_input(dA, Z, A):
    """1 - Z^2 (the layer's input) where the derivative is 1 - A^2 (its output)."""
    return dA * (1 - Z * Z)


def sigmoid_backward_of_input(dA, Z, A):
    """Z (1 - Z) (the layer's input) where the derivative is A (1 - A) (its output)."""
    return dA * (Z * (1 - Z))


RELU_MISTAKES = (
    Mistake(
        id="relu_grad_from_upstream_sign",
        equation="X8",
        first="relu4.dZ",
        case=Case("lenet"),
        title="ReLU derivative taken from the sign of the upstream delta instead of z",
        explains="relu_grad_from_upstream_sign",
        backward=relu_backward_upstream_sign,
    ),
)
TANH_MISTAKES = (
    Mistake(
        id="tanh_grad_of_input",
        equation="X9",
        first="tanh1.dZ",
        case=Case("conv(4,5)-tanh-maxpool(2)-dense(10)-softmax_ce"),
        title="tanh derivative 1 - Z^2 from the layer's input instead of 1 - A^2 from its output",
        explains="tanh_grad_of_preactivation",
        backward=tanh_backward_of_input,
    ),
)
SIGMOID_MISTAKES = (
    Mistake(
        id="sigmoid_grad_of_input",
        equation="E9,E14",
        first="sigmoid2.dZ",
        case=Case("article"),
        title="sigmoid derivative Z (1 - Z) from the layer's input instead of A (1 - A)",
        explains="sigmoid_grad_of_preactivation",
        backward=sigmoid_backward_of_input,
    ),
)


def _activation(name, forward, backward, bound, equations, mistakes, kinked=False) -> LayerKind:
    return LayerKind(
        passes_on=name == "relu",  # |relu(a) - relu(b)| <= |a - b|; tanh, sigmoid rescale
        name=name,
        family="activation",
        outputs=("A",),
        input_grad="dZ",
        equations=dict(zip(("A", "dZ"), equations)),
        forward=forward,
        backward=backward,
        bound=bound,
        kinked=kinked,
        mistakes=mistakes,
        user=(f"{name}_forward(x) -> (out, cache)", f"{name}_backward(dout, cache) -> dx"),
    )


# ReLU's backward reads its input Z (the kink is Z's sign); tanh's and sigmoid's the output A.
RELU = _activation(
    "relu", relu, lambda dA, Z, A: relu_backward(dA, Z), _relu_bound, ("X8", "X8"), RELU_MISTAKES, True
)
TANH = _activation(
    "tanh", tanh, lambda dA, Z, A: tanh_backward(dA, A), _tanh_bound, ("X9", "X9"), TANH_MISTAKES
)
SIGMOID = _activation(
    "sigmoid",
    sigmoid,
    lambda dA, Z, A: sigmoid_backward(dA, A),
    _sigmoid_bound,
    ("E3", "E9"),
    SIGMOID_MISTAKES,
)

# Its layer kinds' registry entries, collected in reference.layers.KINDS.
ENTRIES = (
    RELU,
    SIGMOID,
    TANH,
)

# Its equations' audit records (reference/equations.py, docs/extensions.md).
EQUATIONS = (
    Equation(
        "X8",
        "ReLU: A = max(0, Z); dE/dZ = dA where Z > 0 and 0 where Z <= 0, read from Z",
        CONVENTION,
        convention="derivative 0 at z = 0 (both frameworks)",
    ),
    Equation(
        "X9",
        "tanh: A = tanh(Z); dA/dZ = 1 - A^2, written through the output",
        HOLDS,
    ),
)

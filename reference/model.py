"""The article's whole model, as an auditor reads it: initialisation, and one training step
with one call per article equation (`ArticleStep`, one method per named tensor).

    X (n, n, N) -> patches (N, P, s, s) -> Z1 = patches * f (N, K, P) -> A1 = sigmoid(Z1)
      -> flatten (K*P, N) -> Z2 = W^T A1 + b (1, N) -> O = sigmoid(Z2) -> E (scalar)
      -> dE/dO, dO/dZ2, dE/dZ2 -> dE/dW, dE/db, dE/dA1 -> dE/dZ1 -> dE/df -> f, W, b updated

Every method calls the stage function of its equation (reference.patches, conv,
activations, flatten, dense, loss, update); nothing else computes. reference.fast computes
the same step faster (what `--parity-impl reference` checks by default) and is proven equal
to this model, tensor by tensor, in parity_tests/test_fast_path.py. The published code's
departures (reference.published) and the mutation catalogue subclass ArticleStep.
"""

from __future__ import annotations

import numpy as np

from reference import activations, conv, dense, flatten, loss, patches, update
from reference._validate import choice, float_array, mapping, positive_int
from reference.tensors import BACKWARD_NAMES, FORWARD_NAMES, ORDER, Tensors
from reference.update import sgd_update

SCHEMES = ("informative", "article")
# The dtypes of a run, in the order the suite checks them (the one home of this list).
DTYPES = ("float64", "float32")
# init_params refuses sizes whose parameters would not fit in memory (2^31 float64 = 16 GiB)
# with a ValueError naming them, instead of numpy's MemoryError or dimension overflow.
MAX_PARAMETERS = 2**31


def init_params(
    seed: int = 0,
    dtype="float64",
    scheme: str = "informative",
    *,
    n_filters: int = 3,
    filter_size: int = 5,
    image_side: int = 28,
) -> Tensors:
    """Initial parameters f (s, s, K), W (K * P, 1), b (1,); article: (5, 5, 3), (1728, 1), (1,).

    scheme="article": the published code: f = uniform[0, 1) of shape (K, s, s) then `.T`
      (so every filter is transposed too), W uniform[0, 1), b = 0. With it O is exactly 1.0
      and every gradient is exactly zero (docs/article.md F1): fine for the forward pass, vacuous
      for gradients.
    scheme="informative" (default for parity checks): centred LeCun-uniform draws,
      f ~ U(-sqrt(3/s^2), sqrt(3/s^2)), W ~ U(-sqrt(3/F), sqrt(3/F)) (variance 1/fan_in),
      b ~ U(-0.5, 0.5), so that O stays well inside (0.05, 0.95) and every gradient is
      informative; b != 0 so that a forgotten bias shows in Z2.
    Parameters are drawn in float64 from `np.random.default_rng(seed)` and then cast, so
    float32 and float64 runs start from the same values rounded once.
    """
    seed = positive_int("seed", seed, minimum=0)
    if not _is_dtype(dtype) or str(np.dtype(dtype)) not in DTYPES:
        raise (ValueError if isinstance(dtype, (str, np.dtype, type)) else TypeError)(
            f"dtype must be one of {list(DTYPES)}, got {dtype!r}"
        )
    dtype = np.dtype(dtype)
    scheme = choice("scheme", scheme, SCHEMES)
    K = positive_int("n_filters", n_filters)
    s = positive_int("filter_size", filter_size)
    n = positive_int("image_side", image_side)
    if s > n:
        raise ValueError(f"filter_size must be <= image_side {n}, got {s}")
    F = K * patches.output_side(n, s) ** 2
    if F > MAX_PARAMETERS or K * s * s > MAX_PARAMETERS:
        raise ValueError(
            f"n_filters={K}, filter_size={s}, image_side={n} give {F} dense "
            f"weights and {K * s * s} filter weights; at most {MAX_PARAMETERS} "
            f"of each are drawn"
        )
    rng = np.random.default_rng(seed)
    if scheme == "article":
        f = rng.uniform(size=(K, s, s)).T
        W = rng.uniform(size=(F, 1))
        b = np.zeros(1)
    else:
        f = rng.uniform(-1, 1, size=(K, s, s)).T * np.sqrt(3 / s**2)
        W = rng.uniform(-1, 1, size=(F, 1)) * np.sqrt(3 / F)
        b = rng.uniform(-0.5, 0.5, size=1)
    return Tensors(f=np.ascontiguousarray(f, dtype=dtype), W=W.astype(dtype), b=b.astype(dtype))


def _is_dtype(value) -> bool:
    try:
        np.dtype(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, str) or value in DTYPES


def _required(name, value):
    if value is None:
        raise TypeError(f"{name} must be a numpy array of float32 or float64, got None")
    return value


def check_params(params, X=None):
    """Validate f, W, b (and X against them); returns (f, W, b)."""
    mapping("params", params, ("f", "W", "b"))
    f = float_array("params['f']", params["f"], (None, None, None))
    if f.shape[0] != f.shape[1]:
        raise ValueError(f"params['f'] must have shape (s, s, K), got {f.shape}")
    rows = None
    if X is not None:
        X = float_array("X", X, (None, None, None), dtype=f.dtype)
        if X.shape[0] != X.shape[1]:
            raise ValueError(f"X must hold square images (n, n, N), got shape {X.shape}")
        if X.shape[0] < f.shape[0]:
            raise ValueError(
                f"X must hold images at least as large as the {f.shape[0]}x"
                f"{f.shape[0]} filters params['f'], got shape {X.shape}"
            )
        rows = f.shape[2] * patches.output_side(X.shape[0], f.shape[0]) ** 2
    W = float_array("params['W']", params["W"], (rows, 1), dtype=f.dtype)
    b = float_array("params['b']", params["b"], (1,), dtype=f.dtype)
    return f, W, b


class ArticleStep:
    """One training step of the article's model, one method per named tensor.

    Each method takes the tensors computed so far (`t`, a `Tensors` holding X, y, f, W, b and
    every earlier name), the learning rate and the loss reduction, and returns its tensor
    in the article layout. Subclasses override single methods; the metadata says what:

    id: the name (`D3`, or a mutant's name); title: what it does differently;
    equation: the article equation(s) it departs from; first: the tensor the change shows
    in first, in ORDER (what a stage-isolated check must localise); dtype: the dtype in
    which the change is visible (float64 unless it is a dtype mistake); explains: the
    `parity_tests.explain` suspect expected to explain the first tensor (None: no simple fit).
    """

    id = "reference"
    title = "no departure: the article's derivation"
    equation = ""
    first = ""
    dtype = "float64"
    explains = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}: {self.title}>"

    def train_step(self, params, X, y, lr: float = 0.1, reduction: str = "sum") -> Tensors:
        """Every named tensor of one step (reference.model.train_step's API and names)."""
        f, W, b = check_params(params, _required("X", X))
        y = float_array("y", y, (1, X.shape[2]), dtype=X.dtype)
        reduction = choice("reduction", reduction, loss.REDUCTIONS)
        lr = update._learning_rate(lr)
        t = Tensors(X=X, y=y, f=f, W=W, b=b)
        for name in ORDER:
            t[name] = getattr(self, name)(t, lr, reduction)
        del t["y"]
        return t

    # --- forward: E1..E6 -----------------------------------------------------------------
    def patches(self, t, lr, reduction):
        return patches.extract_patches(t.X, t.f.shape[0])  # E1 operand

    def Z1(self, t, lr, reduction):
        return conv.conv_forward(t.patches, t.f)  # E1

    def A1(self, t, lr, reduction):
        return activations.sigmoid(t.Z1)  # E3

    def Z2(self, t, lr, reduction):
        return dense.dense_forward(flatten.flatten(t.A1), t.W, t.b)  # E4, E5

    def O(self, t, lr, reduction):  # noqa: E743 (the article names its output O)
        return activations.sigmoid(t.Z2)  # E6

    # --- loss and backward: E7..E16 --------------------------------------------------------
    def E(self, t, lr, reduction):
        return loss.half_squared_error(t.O, t.y, reduction)  # E7

    def dE_dO(self, t, lr, reduction):
        return loss.loss_grad_output(t.O, t.y, reduction)  # E8

    def dO_dZ2(self, t, lr, reduction):
        return activations.sigmoid_grad_from_output(t.O)  # E9

    def dE_dZ2(self, t, lr, reduction):
        return t.dE_dO * t.dO_dZ2  # E8 . E9

    def dE_dW(self, t, lr, reduction):
        return dense.dense_grad_weights(flatten.flatten(t.A1), t.dE_dZ2)  # E10, E11

    def dE_db(self, t, lr, reduction):
        return dense.dense_grad_bias(t.dE_dZ2)  # E12

    def dE_dA1(self, t, lr, reduction):
        return flatten.unflatten(dense.dense_grad_input(t.W, t.dE_dZ2), t.f.shape[2])  # E13

    def dE_dZ1(self, t, lr, reduction):
        return t.dE_dA1 * activations.sigmoid_grad_from_output(t.A1)  # E14

    def dE_df(self, t, lr, reduction):
        return conv.conv_grad_filter(t.patches, t.dE_dZ1)  # E15, E16

    # --- update: E17 (update.sgd_update's kernel, without its dtype check, so that a mutant
    # that leaks float64 into a float32 run still runs and the suite sees the dtype) -------
    def f_new(self, t, lr, reduction):
        return update._sgd_update(t.f, t.dE_df, lr)

    def W_new(self, t, lr, reduction):
        return update._sgd_update(t.W, t.dE_dW, lr)

    def b_new(self, t, lr, reduction):
        return update._sgd_update(t.b, t.dE_db, lr)


_STEP = ArticleStep()


def forward(params, X: np.ndarray) -> Tensors:
    """E1..E6: X, patches, Z1, A1, Z2, O (article layout and names), one call per equation."""
    f, W, b = check_params(params, _required("X", X))
    t = Tensors(X=X, f=f, W=W, b=b)
    for name in FORWARD_NAMES:
        t[name] = getattr(_STEP, name)(t, None, None)
    return Tensors({k: t[k] for k in ("X", *FORWARD_NAMES)})


def backward(params, cache, y: np.ndarray, reduction: str = "sum") -> Tensors:
    """E7..E16: the loss E and every derivative, each in the shape of what it differentiates.

    dE_dO, dO_dZ2, dE_dZ2: (1, N); dE_dW: (F, 1); dE_db: (1,); dE_dA1, dE_dZ1: (N, K, P);
    dE_df: (s, s, K). `cache` is forward()'s result: A1, O and patches (or X, from which
    the patches are taken).
    """
    f, W, b = check_params(params)
    mapping("cache", cache, ("A1", "O"))
    O = float_array("cache['O']", cache["O"], (1, None), dtype=f.dtype)
    A1 = float_array("cache['A1']", cache["A1"], (O.shape[1], f.shape[2], None), dtype=f.dtype)
    if "patches" in cache:
        P = cache["patches"]
    elif "X" in cache:
        X = float_array("cache['X']", cache["X"], (None, None, O.shape[1]), dtype=f.dtype)
        P = patches.extract_patches(X, f.shape[0])
    else:
        mapping("cache", cache, ("patches", "A1", "O"))  # names what is missing
    if W.shape[0] != A1.shape[1] * A1.shape[2]:
        raise ValueError(
            f"params['W'] must have {A1.shape[1] * A1.shape[2]} rows for A1 of "
            f"shape {A1.shape}, got {W.shape}"
        )
    P = float_array(
        "cache['patches']", P, (O.shape[1], A1.shape[2], f.shape[0], f.shape[0]), dtype=f.dtype
    )
    y = float_array("y", y, O.shape, dtype=O.dtype)
    reduction = choice("reduction", reduction, loss.REDUCTIONS)
    t = Tensors(f=f, W=W, b=b, y=y, patches=P, A1=A1, O=O)
    for name in BACKWARD_NAMES:
        t[name] = getattr(_STEP, name)(t, None, reduction)
    return Tensors({k: t[k] for k in BACKWARD_NAMES})


def sgd_step(params, grads, lr: float) -> Tensors:
    """E17 for every parameter: returns the new f, W, b (same shapes and dtype)."""
    f, W, b = check_params(params)
    mapping("grads", grads, ("dE_df", "dE_dW", "dE_db"))
    for name, param in (("dE_df", f), ("dE_dW", W), ("dE_db", b)):
        float_array(f"grads[{name!r}]", grads[name], param.shape, dtype=param.dtype)
    return Tensors(
        f=sgd_update(f, grads["dE_df"], lr),
        W=sgd_update(W, grads["dE_dW"], lr),
        b=sgd_update(b, grads["dE_db"], lr),
    )


def train_step(params, X, y, lr: float = 0.1, reduction: str = "sum") -> Tensors:
    """forward + backward + update: every named tensor of one step, incl. f_new, W_new, b_new."""
    return _STEP.train_step(params, X, y, lr, reduction)

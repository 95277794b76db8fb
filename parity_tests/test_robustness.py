"""Every public function of the reference refuses bad input with a ValueError or TypeError
that names the argument (docs/design.md "Quality bar"), and the sigmoid never overflows.

The property test takes each public function with small valid arguments, replaces one
argument (or one entry of a parameter / cache / gradient mapping) by a drawn bad value --
a wrong shape, a wrong dtype (ints, bools, complex, object, float16, strings), NaN/inf,
an empty array, a float32/float64 mix, or no array at all (None, lists, strings, dicts,
numbers) -- and asserts that the call either succeeds (a random shape can be valid) or
raises exactly ValueError or TypeError whose message names an argument: the replaced one
itself when the value is wrong on its own (not an array, not a float dtype, not finite).
Nothing else may escape: no IndexError, AttributeError, broadcasting or BLAS error.
"""

from __future__ import annotations

import inspect
import re
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference import activations, conv, dense, flatten, layout, loss, model, patches, update

N, n, s, K = 2, 6, 3, 2  # images, image side, filter side, filters
m = n - s + 1  # output side (E2)
P, F = m * m, K * m * m  # windows per image, dense features


def _rng():
    return np.random.default_rng(0)


def _valid():
    """Small valid arguments for every public function: {name: (function, kwargs)}."""
    r = _rng()
    X = r.random((n, n, N))
    f = r.uniform(-0.5, 0.5, (s, s, K))
    P_ = patches.extract_patches(X, s)
    A1 = r.uniform(0.1, 0.9, (N, K, P))
    O = r.uniform(0.1, 0.9, (1, N))
    y = np.array([[0.0, 1.0]])
    W = r.uniform(-0.1, 0.1, (F, 1))
    params = model.init_params(0, "float64", n_filters=K, filter_size=s, image_side=n)
    cache = model.forward(params, X)
    grads = model.backward(params, cache, y)
    ok = {
        "patches.output_side": (patches.output_side, dict(image_side=n, size=s)),
        "patches.extract_patches": (patches.extract_patches, dict(X=X, size=s)),
        "conv.conv_forward": (conv.conv_forward, dict(patches=P_, f=f)),
        "conv.conv_local_gradient": (conv.conv_local_gradient, dict(patches=P_)),
        "conv.conv_grad_filter": (
            conv.conv_grad_filter,
            dict(patches=P_, dE_dZ1=r.normal(size=(N, K, P))),
        ),
        "activations.sigmoid": (activations.sigmoid, dict(Z=r.normal(size=(3, 4)))),
        "activations.sigmoid_grad_from_output": (activations.sigmoid_grad_from_output, dict(A=A1)),
        "flatten.flatten": (flatten.flatten, dict(A1=A1)),
        "flatten.unflatten": (flatten.unflatten, dict(features=r.random((F, N)), n_filters=K)),
        "dense.dense_forward": (
            dense.dense_forward,
            dict(A1_flat=r.random((F, N)), W=W, b=np.array([0.1])),
        ),
        "dense.dense_grad_weights": (
            dense.dense_grad_weights,
            dict(A1_flat=r.random((F, N)), dE_dZ2=r.normal(size=(1, N))),
        ),
        "dense.dense_grad_bias": (dense.dense_grad_bias, dict(dE_dZ2=r.normal(size=(1, N)))),
        "dense.dense_grad_input": (dense.dense_grad_input, dict(W=W, dE_dZ2=r.normal(size=(1, N)))),
        "loss.half_squared_error": (loss.half_squared_error, dict(O=O, y=y, reduction="sum")),
        "loss.loss_grad_output": (loss.loss_grad_output, dict(O=O, y=y, reduction="mean")),
        "update.sgd_update": (
            update.sgd_update,
            dict(param=r.random((3, 4)), grad=r.random((3, 4)), lr=0.1),
        ),
        "model.init_params": (
            model.init_params,
            dict(
                seed=0, dtype="float32", scheme="informative", n_filters=K, filter_size=s, image_side=n
            ),
        ),
        "model.check_params": (model.check_params, dict(params=params, X=X)),
        "model.forward": (model.forward, dict(params=params, X=X)),
        "model.backward": (model.backward, dict(params=params, cache=cache, y=y, reduction="sum")),
        "model.sgd_step": (model.sgd_step, dict(params=params, grads=grads, lr=0.1)),
        "model.train_step": (model.train_step, dict(params=params, X=X, y=y, lr=0.1, reduction="sum")),
    }
    Z = r.normal(size=(N, K, P))
    layout_args = {
        "images_to_nchw": dict(X=X),
        "images_to_nhwc": dict(X=X),
        "nchw_to_images": dict(x=layout.images_to_nchw(X)),
        "nhwc_to_images": dict(x=layout.images_to_nhwc(X)),
        "filters_to_oihw": dict(f=f),
        "nchw_to_nhwc": dict(x=layout.images_to_nchw(X)),
        "nhwc_to_nchw": dict(x=layout.images_to_nhwc(X)),
        "oihw_to_hwio": dict(w=layout.filters_to_oihw(f)),
        "hwio_to_oihw": dict(kern=layout.filters_to_hwio(f)),
        "filters_to_hwio": dict(f=f),
        "oihw_to_filters": dict(w=layout.filters_to_oihw(f)),
        "hwio_to_filters": dict(kern=layout.filters_to_hwio(f)),
        "conv_map_to_nchw": dict(Z=Z),
        "conv_map_to_nhwc": dict(Z=Z),
        "nchw_to_conv_map": dict(z=layout.conv_map_to_nchw(Z)),
        "nhwc_to_conv_map": dict(z=layout.conv_map_to_nhwc(Z)),
        "dense_weights_to_torch": dict(W=W, n_filters=K),
        "torch_to_dense_weights": dict(w=layout.dense_weights_to_torch(W, K), n_filters=K),
        "dense_weights_to_keras": dict(W=W, n_filters=K),
        "keras_to_dense_weights": dict(kern=layout.dense_weights_to_keras(W, K), n_filters=K),
        "row_to_column": dict(v=O),
        "column_to_row": dict(v=O.T.copy()),
        "unfold_to_patches": dict(cols=layout.patches_to_unfold(P_), size=s),
        "patches_to_unfold": dict(patches=P_),
        "extract_patches_to_patches": dict(
            cols=np.ascontiguousarray(P_.reshape(N, m, m, s, s).transpose(0, 2, 1, 4, 3)).reshape(
                N, m, m, s * s
            ),
            size=s,
        ),
        "patches_to_extract_patches": dict(patches=P_),
    }
    for name, kwargs in layout_args.items():
        ok[f"layout.{name}"] = (getattr(layout, name), kwargs)
    return ok


VALID = _valid()
NAMES = sorted(VALID)
MODULES = (patches, conv, activations, flatten, dense, loss, update, model, layout)


# Whole-step converters of a dict of named tensors: from_layout hands back what it cannot
# convert (the contract check names it), so the per-argument fuzzing here does not apply;
# parity_tests/test_layout.py checks both.
OWN_CONTRACT = {"layout.to_layout", "layout.from_layout"}


def _public(module):
    return sorted(
        f"{module.__name__.split('.')[-1]}.{name}"
        for name, fn in inspect.getmembers(module, inspect.isfunction)
        if fn.__module__ == module.__name__ and not name.startswith("_")
    )


def test_every_public_function_is_covered():
    public = [name for module in MODULES for name in _public(module) if name not in OWN_CONTRACT]
    assert sorted(set(public) - set(VALID)) == [], "add valid arguments for these to _valid()"


@pytest.mark.parametrize("name", NAMES)
def test_valid_arguments_pass(name):
    fn, kwargs = VALID[name]
    fn(**kwargs)


# --------------------------------------------------------------------------- bad values

NON_ARRAYS = st.sampled_from(
    [
        None,
        "abc",
        "",
        3,
        2.5,
        True,
        b"xy",
        {"a": 1},
        {},
        (),
        [],
        [[1.0, 2.0]],
        np.float64(1.0),
        np.float32(0.5),
        object(),
        float("nan"),
        complex(1, 2),
        {1, 2},
    ]
)
BAD_DTYPES = ["int64", "int32", "uint8", "bool", "complex128", "object", "float16", "U3"]
BAD_INTS = st.sampled_from(
    [
        -5,
        -1,
        0,
        1.0,
        2.5,
        "3",
        None,
        True,
        False,
        np.float64(3.0),
        2**63,
        -(2**63),
        10**30,
        [3],
        float("nan"),
        float("inf"),
    ]
)
BAD_FLOATS = st.sampled_from(
    [
        0.0,
        -0.1,
        float("nan"),
        float("inf"),
        -float("inf"),
        "0.1",
        None,
        True,
        complex(0.1, 0),
        [0.1],
        np.array([0.1]),
        np.array(0.1),
        10**400 if False else 1e308 * 10,
    ]
)
BAD_STRINGS = st.sampled_from(
    [
        "",
        "SUM",
        "max",
        "float16",
        "int32",
        "xavier",
        None,
        1,
        b"sum",
        ["sum"],
        np.float64,
        np.int32,
        object(),
        {},
    ]
)


def _array_variants(draw, value, arg):
    """A bad array derived from the valid `value`; returns (bad, names_itself)."""
    kind = draw(
        st.sampled_from(
            ["dtype", "non_finite", "empty", "shape", "ndim", "float_mix", "zero_d", "list"]
        ),
        label=f"{arg}: kind",
    )
    if kind == "dtype":
        dtype = draw(st.sampled_from(BAD_DTYPES), label=f"{arg}: dtype")
        return value.astype(dtype), True
    if kind == "non_finite":
        bad = value.copy()
        idx = draw(st.integers(0, bad.size - 1), label=f"{arg}: index")
        bad.reshape(-1)[idx] = draw(st.sampled_from([np.nan, np.inf, -np.inf]), label=f"{arg}: value")
        return bad, True
    if kind == "empty":
        shape = list(value.shape)
        axis = draw(st.integers(0, len(shape) - 1), label=f"{arg}: empty axis")
        shape[axis] = 0
        return np.zeros(shape, value.dtype), False
    if kind == "shape":
        shape = draw(
            hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=7), label=f"{arg}: shape"
        )
        return draw(
            hnp.arrays(value.dtype, shape, elements=st.floats(-2, 2, width=value.dtype.itemsize * 8)),
            label=f"{arg}: array",
        ), False
    if kind == "ndim":
        how = draw(st.sampled_from(["add", "drop", "flat"]), label=f"{arg}: ndim")
        if how == "add":
            return value[..., None], False
        return (value.reshape(-1) if how == "flat" or value.ndim == 0 else value[0]), False
    if kind == "float_mix":
        other = np.float32 if value.dtype == np.float64 else np.float64
        return value.astype(other), False
    if kind == "zero_d":
        return np.array(0.5, value.dtype), False
    return value.tolist(), True


def _bad_value(draw, value, arg):
    """A bad replacement for argument `arg` whose valid value is `value`."""
    if isinstance(value, np.ndarray):
        if draw(st.booleans(), label=f"{arg}: non-array?"):
            return draw(NON_ARRAYS, label=f"{arg}: non-array"), True
        return _array_variants(draw, value, arg)
    if isinstance(value, dict):  # params / cache / grads
        how = draw(st.sampled_from(["not_mapping", "missing", "entry"]), label=f"{arg}: how")
        if how == "not_mapping":
            return draw(NON_ARRAYS, label=f"{arg}: non-mapping"), True
        keys = sorted(value)
        key = draw(st.sampled_from(keys), label=f"{arg}: key")
        bad = dict(value)
        if how == "missing":
            del bad[key]
            return bad, True
        bad[key], names_itself = _bad_value(draw, value[key], f"{arg}[{key!r}]")
        return bad, names_itself  # the message then names arg (arg['key'] ...)
    if isinstance(value, bool) or value is None:
        return draw(NON_ARRAYS, label=f"{arg}: value"), True
    if isinstance(value, int):
        return draw(BAD_INTS, label=f"{arg}: int"), False
    if isinstance(value, float):
        return draw(BAD_FLOATS, label=f"{arg}: float"), True
    return draw(BAD_STRINGS, label=f"{arg}: str"), True


def _arg_names(fn):
    return list(inspect.signature(fn).parameters)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_bad_input_is_a_named_value_or_type_error(name, data):
    fn, valid = VALID[name]
    arg = data.draw(st.sampled_from(sorted(valid)), label="argument replaced")
    bad, names_itself = _bad_value(data.draw, valid[arg], arg)
    kwargs = {**valid, arg: bad}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning is an escape too
        with np.errstate(all="warn", under="ignore"):  # underflow to 0 is not an error
            try:
                fn(**kwargs)
            except (ValueError, TypeError) as exc:
                if type(exc) not in (ValueError, TypeError):
                    raise AssertionError(
                        f"{name}({arg}=bad): {type(exc).__name__} is a "
                        f"subclass, raise ValueError/TypeError itself"
                    ) from exc
                message = str(exc)
                wanted = [arg] if names_itself else _arg_names(fn)
                assert any(w in message for w in wanted), (
                    f"{name}({arg}=bad): the message does not name "
                    f"{'the argument' if names_itself else 'any argument'} {wanted}: {message!r}"
                )
                return


# --------------------------------------------------------------------------- ndarray subclasses


def _as_matrix(a):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # "np.matrix is not recommended"
        return np.asmatrix(a)


def _as_masked(a):
    mask = np.zeros(a.shape, dtype=bool)
    mask.reshape(-1)[0] = True  # one masked entry: computing with it would silently use its data
    return np.ma.masked_array(a, mask=mask)


SUBCLASSES = {
    "matrix": (_as_matrix, "got np.matrix (its * is a matrix product); pass np.asarray"),
    "masked": (_as_masked, "got a masked array (the mask would be silently ignored)"),
}


def _replaced(kwargs, arg, wrap):
    """kwargs with `arg` ("X", or "params['W']" for a mapping entry) wrapped by `wrap`."""
    if "[" not in arg:
        return {**kwargs, arg: wrap(kwargs[arg])}
    outer, key = arg.split("[")[0], arg.split("'")[1]
    return {**kwargs, outer: {**kwargs[outer], key: wrap(kwargs[outer][key])}}


# (function, argument, subclass): the article's own entry points, with 2-D arguments for np.matrix
SUBCLASS_CASES = [
    ("activations.sigmoid", "Z", "matrix"),
    ("activations.sigmoid", "Z", "masked"),
    ("dense.dense_forward", "W", "matrix"),
    ("dense.dense_forward", "A1_flat", "masked"),
    ("loss.half_squared_error", "O", "matrix"),
    ("model.forward", "params['W']", "matrix"),
    ("model.forward", "X", "masked"),
    ("model.train_step", "params['W']", "matrix"),
    ("model.train_step", "params['f']", "masked"),
    ("model.train_step", "y", "matrix"),
    ("model.train_step", "X", "masked"),
    ("update.sgd_update", "grad", "masked"),
]


def _case_id(name, arg, kind):
    """ "model.train_step-params.W-matrix" for ("model.train_step", "params['W']", "matrix")."""
    return f"{name}-{arg.replace('[', '.').replace(']', '').replace(chr(39), '')}-{kind}"


@pytest.mark.parametrize(
    "name, arg, kind", SUBCLASS_CASES, ids=[_case_id(*case) for case in SUBCLASS_CASES]
)
def test_matrix_and_masked_arrays_are_refused_naming_the_argument(name, arg, kind):
    fn, valid = VALID[name]
    wrap, why = SUBCLASSES[kind]
    with pytest.raises(TypeError) as err:
        fn(**_replaced(valid, arg, wrap))
    assert str(err.value).startswith(f"{arg} must be a plain numpy array, {why}"), str(err.value)


def _array_arguments(kwargs):
    """Every array argument of kwargs, mapping entries as "params['W']"."""
    for arg, value in sorted(kwargs.items()):
        if isinstance(value, np.ndarray):
            yield arg, value
        elif isinstance(value, dict):
            for key in sorted(value):
                if isinstance(value[key], np.ndarray):
                    yield f"{arg}[{key!r}]", value[key]


def _reads(fn, kwargs, arg) -> bool:
    """Whether fn looks at `arg` at all (a cache or grads mapping may carry unused entries)."""
    try:
        fn(**_replaced(kwargs, arg, lambda a: "not an array"))
    except (TypeError, ValueError):
        return True
    return False


@pytest.mark.parametrize("name", NAMES)
def test_every_array_argument_refuses_matrix_and_masked(name):
    """The sweep behind the cases above: every array argument (2-D ones for np.matrix) of every
    public function, and every mapping entry the function reads."""
    fn, valid = VALID[name]
    arrays, checked = list(_array_arguments(valid)), 0
    for arg, value in arrays:
        if not _reads(fn, valid, arg):
            continue
        for kind, (wrap, why) in SUBCLASSES.items():
            if kind == "matrix" and value.ndim != 2:
                continue
            with pytest.raises(TypeError, match=re.escape(f"{arg} must be a plain numpy array, {why}")):
                fn(**_replaced(valid, arg, wrap))
            checked += 1
    assert checked or not arrays, f"{name}: none of its array arguments was checked"


# --------------------------------------------------------------------------- the sigmoid


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@given(data=st.data())
def test_sigmoid_never_overflows(dtype, data):
    width = np.dtype(dtype).itemsize * 8
    extremes = np.array(
        [0.0, -0.0, 1e4, -1e4, 88.8, -88.8, 104.0, -104.0, 709.9, -709.9, 746.0, -746.0], dtype=dtype
    )
    drawn = data.draw(
        hnp.arrays(
            dtype,
            hnp.array_shapes(min_dims=0, max_dims=3, max_side=6),
            elements=st.floats(-1e4, 1e4, width=width),
        ),
        label="Z",
    )
    for Z in (extremes, drawn):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with np.errstate(all="raise"):
                A = activations.sigmoid(Z)
                dA = activations.sigmoid_grad_from_output(A)
        assert A.dtype == Z.dtype and A.shape == Z.shape and dA.shape == Z.shape
        assert np.all((A >= 0) & (A <= 1)), A
        # sigmoid(-x) = 1 - sigmoid(x): exact to a few ulps where neither side is tiny.
        B = activations.sigmoid(np.negative(Z, out=np.empty_like(Z)))
        big = (A > 0.01) & (B > 0.01)
        eps = np.finfo(dtype).eps
        assert np.all(np.abs(A + B - 1)[big] <= 4 * eps), (Z[big], A[big], B[big])
    assert activations.sigmoid(np.array(0.0, dtype)) == 0.5

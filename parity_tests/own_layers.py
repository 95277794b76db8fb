"""A user's own layers in the CS231n convention, plugged into the suite (`--parity-layer`).

Students write each layer as a pair of functions, NCHW, batch first:

    conv_forward(x, w, b, conv_param) -> (out, cache)   conv_param {"stride": s, "pad": p}
    conv_backward(dout, cache) -> (dx, dw, db)          w (F, C, HH, WW), b (F,)
    max_pool_forward(x, pool_param) -> (out, cache)     pool_param {"pool_height": k,
    max_pool_backward(dout, cache) -> dx                 "pool_width": k, "stride": s}
    (the other pools alike: every kind's signatures are its registry entry's `user`)
    affine_forward(x, w, b) -> (out, cache)             x (N, D) or (N, d1, ...), w (D, M)
    affine_backward(dout, cache) -> (dx, dw, db)
    relu_forward(x) -> (out, cache); relu_backward(dout, cache) -> dx   (sigmoid_, tanh_ too)
    softmax_loss(x, y) -> (loss, dx)                    the MEAN over the N images
    batchnorm_forward(x, gamma, beta, bn_param)         x (N, D); bn_param mode, eps, momentum,
    batchnorm_backward(dout, cache) -> (dx, dgamma, dbeta)   running_mean, running_var
    (batchnorm_backward_alt likewise, optional; spatial_batchnorm_* for (N, C, H, W);
    layernorm_* with ln_param; spatial_groupnorm_forward(x, gamma, beta, G, gn_param) with
    gamma (1, C, 1, 1))
    dropout_forward(x, dropout_param) -> (out, cache)   dropout_param p (KEEP), mode, seed
    dropout_backward(dout, cache) -> dx

`--parity-layer KIND=module:forward,module:backward` names one kind's pair (softmax_ce
takes the one function `module:softmax_loss`); `module` is a dotted importable module or a
path to a .py file. `parse_layers` turns the option's values into `UserLayer`s (every
problem one pytest.UsageError naming the option, the value and what is expected);
`user_ops` turns them into reference.network `Ops`, so that any spec network can be built
with them (`Network(spec, ops=user_ops(layers))`); `forward` / `backward` call a pair on
the Network's inputs and return its tensors by the Network's short names (conv: Z, dX,
dF, db), checking what the user's code returns (a tuple of the right length, arrays of the
right shape and dtype) and that it leaves its arguments alone. Inside a network a user's
normalisation runs at the layers of its registry kind with inputs of its rank (RANKS); a
dropout never (its mask is its own: user_ops).

By default (isolation "process", `--parity-layer-isolation`) each module's functions run
in a child process of their own (parity_tests/user_process.py: one per module, kept for
the session, a timeout per call, `--parity-layer-timeout`): what a layers file does at
import or in a call cannot reach the suite, and a function that exits, crashes or hangs
is an error naming it. Isolation "inline" imports and calls them in the pytest process
(faster; only for code you trust: it can patch the suite).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import os
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from parity_tests import user_process
from reference.layers import KINDS as REGISTRY
from reference.layers import loss as ref_loss
from reference.layers import norm as ref_norm
from reference.network import DEFAULT_OPS, Network, Ops

OPTION = "--parity-layer"
# Where the user's functions run: in a child process per module (the default: what they do
# cannot reach the suite), or inline in this process (trusted code only).
ISOLATIONS = ("process", "inline")
DEFAULT_ISOLATION = "process"

# A user's kind that is no registry kind of its own -> the registry kind it stands for, and
# its signatures. CS231n writes batch norm twice, for (N, D) features (`batchnorm`, the
# registry entry's `user`) and for (N, C, H, W) maps; the registry's batchnorm is both.
ALIASES = {"spatial_batchnorm": "batchnorm"}
_ALIAS_SIGNATURES = {
    "spatial_batchnorm": (
        "spatial_batchnorm_forward(x, gamma, beta, bn_param) -> (out, cache)",
        "spatial_batchnorm_backward(dout, cache) -> (dx, dgamma, dbeta)",
    ),
}
# kind -> the user's functions, in the order the option names them, with their signatures:
# every registry kind that takes a user's own layer (reference/layers/registry.py, `user`),
# each alias after the kind it stands for.
SIGNATURES: dict[str, tuple[str, ...]] = {}
for _name, _kind in REGISTRY.items():
    if _kind.user:
        SIGNATURES[_name] = _kind.user
    SIGNATURES.update({a: _ALIAS_SIGNATURES[a] for a, of in ALIASES.items() if of == _name})
KINDS = tuple(SIGNATURES)
# How many of a kind's last functions may be left out: batch norm's single-expression
# backward (batchnorm_backward_alt), checked as a second backward when it is given.
OPTIONAL = {"batchnorm": 1}
# The input's rank a normalisation's functions take (N, D: 2; N, C, H, W: 4): inside a
# network a user's pair runs at the layers of its kind with inputs of that rank, the
# reference's readable layer at the others.
RANKS = {"batchnorm": 2, "spatial_batchnorm": 4, "layernorm": 2, "groupnorm": 4}
# The epsilon handed to a normalisation (bn_param, ln_param, gn_param "eps"): the reference's.
EPS = ref_norm.EPS
# The momentum in bn_param: CS231n's default, the weight of the OLD running statistic.
MOMENTUM = 0.9


def entry(kind: str):
    """The registry entry of a user's kind (an alias's: the kind it stands for)."""
    return REGISTRY[ALIASES.get(kind, kind)]


# The CS231n names of each kind's functions: conv -> (conv_forward, conv_backward).
FUNCTION_NAMES = {kind: tuple(s.split("(", 1)[0] for s in sigs) for kind, sigs in SIGNATURES.items()}
# The tensors each kind's pair gives, by the Network's short names (reference/network.py):
# its forward outputs (a softmax_loss gives no probabilities), its input gradient, its
# parameters' gradients.
OUTPUTS = {
    kind: (
        *(o for o in entry(kind).outputs if o != "P"),
        entry(kind).input_grad,
        *(f"d{p}" for p in entry(kind).params),
    )
    for kind in KINDS
}


def _family(kind: str) -> str:
    """The kind's calling form (registry.FAMILIES): the user's functions of one family are
    called alike."""
    return entry(kind).family


EXPECTED = (
    "KIND=module:forward,module:backward with KIND one of " + ", ".join(KINDS) + " "
    "(softmax_ce=module:softmax_loss, one function; batchnorm takes a third, optional: "
    "module:batchnorm_backward_alt); module a dotted importable module or a path to a .py file"
)


class OwnLayerError(RuntimeError):
    """A user's layer returned something unusable or changed its arguments."""


class OwnLayerWarning(UserWarning):
    """A user's backward wrote into its upstream gradient inside a network: harmless there
    (it got a copy, and the CS231n network never reads dout again), reported all the same."""


def _blamed(fn):
    """OwnLayerError, blamed on the user's function `fn` (parity_function)."""

    def make(message: str) -> OwnLayerError:
        exc = OwnLayerError(message)
        exc.parity_function = fn.label
        return exc

    return make


def _usage(value, expected: str) -> pytest.UsageError:
    return pytest.UsageError(f"{OPTION} {value!r}: expected {expected}")


def _template(kind: str) -> str:
    return f"{kind}=" + ",".join(f"module:{n}" for n in FUNCTION_NAMES[kind])


def option_value(kind: str, module) -> str:
    """The --parity-layer value naming `kind`'s CS231n functions in one module or file:
    option_value("conv", "layers.py") == "conv=layers.py:conv_forward,layers.py:conv_backward"."""
    return f"{kind}=" + ",".join(f"{module}:{n}" for n in FUNCTION_NAMES[kind])


def _signatures(kind: str) -> str:
    return "; ".join(SIGNATURES[kind])


@dataclass(frozen=True)
class UserFunction:
    label: str  # as given: "examples/cs231n_layers/layers.py:conv_forward"
    fn: Callable

    def __call__(self, *args):
        try:
            with _no_exit(self):
                return self.fn(*args)
        except SystemExit as exc:  # sys.exit / exit() in a layer: a record, never the run's end
            err = OwnLayerError(f"{self.label} called sys.exit({exc.code!r})")
            _blame(err, self)
            raise err from None
        except Exception as exc:
            _blame(exc, self)
            raise


class _no_exit:
    """os._exit and os.abort raise OwnLayerError while a user's function runs: a layer
    calling os._exit(0) ended plain pytest with exit status 0, no verdict and no report.
    In-process code can still get round this (docs/guarantees.md says so); it guards
    against the accident, not against a hostile file."""

    def __init__(self, fn: UserFunction):
        self.fn = fn

    def _refuse(self, what):
        def refuse(*args):
            raise OwnLayerError(f"{self.fn.label} called {what}({', '.join(map(repr, args))})")

        return refuse

    def __enter__(self):
        self.saved = os._exit, os.abort
        os._exit, os.abort = self._refuse("os._exit"), self._refuse("os.abort")

    def __exit__(self, *exc):
        os._exit, os.abort = self.saved
        return False


def _blame(exc: BaseException, fn: UserFunction) -> None:
    """Name on the exception the user's function it came from (parity_function): a network
    of the user's layers says which function raised, not only which layer."""
    if not hasattr(exc, "parity_function"):
        try:
            exc.parity_function = fn.label
        except AttributeError:  # an exception type without a __dict__
            pass


@dataclass(frozen=True)
class UserLayer:
    """One kind's functions as --parity-layer named them."""

    kind: str
    value: str  # the option's value, as given
    functions: tuple[UserFunction, ...]  # (forward, backward[, backward_alt]), or (softmax_loss,)
    variant: str = ""  # "backward_alt": the pair (forward, batchnorm_backward_alt)

    @property
    def label(self) -> str:
        """The implementation's name in the records: own:conv, own:batchnorm[backward_alt]."""
        return f"own:{self.kind}" + (f"[{self.variant}]" if self.variant else "")

    @property
    def where(self) -> str:
        return ", ".join(f.label for f in self.functions)


# --- finding the functions ------------------------------------------------------------------


def _is_path(module: str) -> bool:
    return module.endswith(".py") or "/" in module or os.sep in module


@functools.cache
def _load_path(path: Path):
    """A .py file as a module, once per file: forward and backward of one file share it."""
    name = f"parity_own_layer_{path.stem}_{zlib.crc32(str(path).encode()):08x}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and tracebacks look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import(value: str, module: str, isolation: str = DEFAULT_ISOLATION, timeout: float = 0.0):
    """The module (inline) or the UserProcess that imported it (process): the same
    pytest.UsageError either way when it cannot be imported."""
    if _is_path(module):
        path = Path(module).expanduser()
        if not path.is_file():
            what = "not a regular file" if path.exists() else f"no such file, relative to {os.getcwd()}"
            raise _usage(value, f"{module!r} to be a .py file ({what}) or a dotted module name")
        try:
            if isolation == "process":
                return _process(str(path.resolve()), True, timeout)
            return _load_path(path.resolve())
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001  (anything the user's module raises)
            raise pytest.UsageError(
                f"{OPTION} {value!r}: the file {module!r} could not be imported ({_raised(exc)})"
            ) from None
    if not all(part.isidentifier() for part in module.split(".")):
        raise _usage(value, f"{module!r} to be a dotted module name or a path to a .py file")
    try:
        if isolation == "process":
            return _process(module, False, timeout)
        return importlib.import_module(module)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001  (as --parity-impl: any failure is the same error)
        raise pytest.UsageError(
            f"{OPTION} {value!r}: {module!r} is not an importable module or a path to a .py "
            f"file ({_raised(exc)})"
        ) from None


def _raised(exc: BaseException) -> str:
    if isinstance(exc, user_process.LoadError):  # what the module raised in its process
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _process(source: str, is_path: bool, timeout: float) -> user_process.UserProcess:
    """The child process that imported the module (started now: an import error is a
    usage error at start-up, as inline)."""
    process = user_process.process_for(source, is_path, timeout or user_process.DEFAULT_TIMEOUT_S)
    process.load()
    return process


def _held(signature: str) -> tuple[int, ...]:
    """Positions of the cache in what a function returns ('-> (out, cache)': (1,)): it
    stays in the user's process, whatever it holds."""
    names = signature.rpartition("->")[2].strip().strip("()").split(",")
    return tuple(i for i, n in enumerate(names) if n.strip() == "cache")


def _function(
    value: str,
    kind: str,
    part: str,
    signature: str,
    isolation: str = DEFAULT_ISOLATION,
    timeout: float = 0.0,
) -> UserFunction:
    module, colon, name = part.rpartition(":")  # rpartition: C:\\x\\layers.py:conv_forward
    if not colon or not module.strip() or not name.strip():
        raise _usage(
            value, f"module:function for {signature} (no ':' in {part!r}), as {_template(kind)}"
        )
    module, name = module.strip(), name.strip()
    if not name.isidentifier():
        raise _usage(value, f"a function name after the ':' in {part!r}, as {_template(kind)}")
    source = _import(value, module, isolation, timeout)
    if isinstance(source, user_process.UserProcess):
        try:
            what, file = source.lookup(name)
        except user_process.LoadError as exc:  # its process died or answered garbage
            raise pytest.UsageError(
                f"{OPTION} {value!r}: {module!r} could not be asked for {name!r} ({exc})"
            ) from None
        if what == "function":
            label = f"{module}:{name}"
            found = user_process.RemoteFunction(
                source, name, label, _held(signature), OwnLayerError, file
            )
        else:  # nothing by that name, or the type name of what is there
            found = None if what == "missing" else what
    else:
        found = getattr(source, name, None)
    if found is None:
        raise pytest.UsageError(
            f"{OPTION} {value!r}: {module!r} has no {name!r}; expected a function {signature}"
        )
    if not callable(found):
        kind_name = found if isinstance(found, str) else type(found).__name__
        raise pytest.UsageError(
            f"{OPTION} {value!r}: {module}:{name} is a {kind_name}, not a function; expected {signature}"
        )
    return UserFunction(f"{module}:{name}", found)


def parse_layer(value: str, isolation: str = DEFAULT_ISOLATION, timeout: float = 0.0) -> UserLayer:
    """One --parity-layer value -> its UserLayer; pytest.UsageError on any problem.
    `isolation`: "process" (each module in its child process; `timeout` seconds per call,
    0: user_process.DEFAULT_TIMEOUT_S) or "inline" (in this process)."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation: expected one of {', '.join(ISOLATIONS)}, got {isolation!r}")
    if not isinstance(value, str):
        raise _usage(value, EXPECTED)
    kind, eq, spec = value.partition("=")
    kind = kind.strip()
    if not eq or not kind:
        raise _usage(value, EXPECTED)
    if kind not in SIGNATURES:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f" (closest: {close[0]!r})" if close else ""
        raise _usage(value, f"a layer kind{hint} before the '=', one of {', '.join(KINDS)}")
    parts = [p.strip() for p in spec.split(",")]
    wanted = SIGNATURES[kind]
    fewest = len(wanted) - OPTIONAL.get(kind, 0)
    if not fewest <= len(parts) <= len(wanted) or not all(parts):
        count = "one function" if len(wanted) == 1 else f"{len(wanted)} functions"
        if fewest < len(wanted):
            count = f"{fewest} or {len(wanted)} functions"
        raise _usage(
            value,
            f"{count} for {kind}, comma-separated: {_template(kind)} ({_signatures(kind)}); "
            f"got {len([p for p in parts if p])}",
        )
    functions = tuple(_function(value, kind, p, s, isolation, timeout) for p, s in zip(parts, wanted))
    return UserLayer(kind, value, functions)


def pairs(layer: UserLayer) -> tuple[UserLayer, ...]:
    """The (forward, backward) pairs a layer's check runs: the layer itself, and for a batch
    norm given with its batchnorm_backward_alt, the forward with that backward."""
    if len(layer.functions) <= 2:
        return (layer,)
    main = UserLayer(layer.kind, layer.value, layer.functions[:2])
    alt = UserLayer(layer.kind, layer.value, (layer.functions[0], layer.functions[2]), "backward_alt")
    return main, alt


def parse_layers(
    values: Iterable[str] | None, isolation: str = DEFAULT_ISOLATION, timeout: float = 0.0
) -> dict[str, UserLayer]:
    """Every --parity-layer value, one per kind: {kind: UserLayer} in the order given."""
    layers: dict[str, UserLayer] = {}
    for value in values or ():
        layer = parse_layer(value, isolation, timeout)
        if layer.kind in layers:
            raise _usage(
                value,
                f"each kind at most once, but {layer.kind} is also given as "
                f"{layers[layer.kind].value!r} (one --parity-layer per kind)",
            )
        layers[layer.kind] = layer
    return layers


def check_reduction(layers: Mapping[str, UserLayer], reduction: str) -> None:
    """softmax_loss gives the mean over the images: only --parity-reduction mean can use it."""
    layer = layers.get("softmax_ce")
    if layer is not None and reduction != "mean":
        raise pytest.UsageError(
            f"{OPTION} {layer.value!r}: softmax_loss computes the MEAN over the N images "
            f"(CS231n), so it needs --parity-reduction mean; this run's reduction is {reduction!r}"
        )


@functools.cache
def load(
    values: tuple[str, ...],
    reduction: str = "mean",
    isolation: str = DEFAULT_ISOLATION,
    timeout: float = 0.0,
) -> Mapping[str, UserLayer]:
    """parse_layers + check_reduction, once per session (options are validated with it)."""
    layers = parse_layers(values, isolation, timeout)
    check_reduction(layers, reduction)
    return layers


# --- calling the user's functions -----------------------------------------------------------
#
# `a` holds one layer's inputs by the names of the Network's calling form (reference/network.py
# Ops, by family): conv X, F, b, dZ, stride, pad; pools X, dA, k, stride; activations Z,
# dA; dense A, W, b, dZ; softmax_ce Z, labels; norms X, gamma, beta, groups, dA (gamma and
# beta (C,) or layer norm's (D,); batch norm also running_mean, running_var, momentum,
# optional); dropout X, dA, p (CS231n's: the probability of KEEPING a value), seed.
# Outputs by the Network's short names.


def _conv_sides(a) -> tuple[int, int]:
    _, _, H, W = np.shape(a["X"])
    k, s, p = np.shape(a["F"])[2], a["stride"], a["pad"]
    return (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1


def expected_shapes(kind: str, a: Mapping) -> dict[str, tuple]:
    """The shape of every tensor the pair must give for these inputs."""
    if kind == "conv":
        N, F = np.shape(a["X"])[0], np.shape(a["F"])[0]
        return {"Z": (N, F, *_conv_sides(a)), "dX": np.shape(a["X"]), "dF": np.shape(a["F"]), "db": (F,)}
    if _family(kind) == "pool":
        N, C, H, W = np.shape(a["X"])
        k, s = a["k"], a["stride"]
        return {"A": (N, C, (H - k) // s + 1, (W - k) // s + 1), "dX": (N, C, H, W)}
    if _family(kind) == "activation":
        return {"A": np.shape(a["Z"]), "dZ": np.shape(a["Z"])}
    if kind == "dense":
        N, M = np.shape(a["A"])[0], np.shape(a["W"])[1]
        return {"Z": (N, M), "dA": np.shape(a["A"]), "dW": np.shape(a["W"]), "db": (M,)}
    if kind == "softmax_ce":
        return {"E": (), "dZ": np.shape(a["Z"])}
    if _family(kind) == "norm":
        param = np.shape(_user_param(kind, a["gamma"]))
        return {"A": np.shape(a["X"]), "dX": np.shape(a["X"]), "dgamma": param, "dbeta": param}
    if _family(kind) == "dropout":
        return {"A": np.shape(a["X"]), "dX": np.shape(a["X"])}
    raise KeyError(kind)


def _input_dtype(kind: str, a: Mapping):
    # The layer's input, by its family's name for it.
    names = {"conv": "X", "pool": "X", "dense": "A", "norm": "X", "dropout": "X"}
    return np.asarray(a[names.get(_family(kind), "Z")]).dtype


def _user_param(kind: str, v):
    """gamma or beta as the user's function takes it: CS231n's group norm (1, C, 1, 1), the
    others as the Network holds them ((C,), layer norm's (D,))."""
    return np.reshape(v, (1, -1, 1, 1)) if kind == "groupnorm" else v


def bn_param(a: Mapping, mode: str = "train") -> dict:
    """The bn_param a batch norm is handed: CS231n's keys; the running statistics are a's
    (fresh copies: the user's function updates them in the dict) or zeros and ones."""
    C = np.shape(a["gamma"])[0]
    dtype = np.asarray(a["X"]).dtype
    return {
        "mode": mode,
        "eps": EPS,
        "momentum": float(a.get("momentum", MOMENTUM)),
        "running_mean": np.array(a.get("running_mean", np.zeros(C, dtype)), dtype, copy=True),
        "running_var": np.array(a.get("running_var", np.ones(C, dtype)), dtype, copy=True),
    }


def dropout_param(a: Mapping, mode: str = "train") -> dict:
    """CS231n's dropout_param: p the probability of KEEPING a value, the mode, a seed."""
    return {"p": float(a["p"]), "mode": mode, "seed": int(a.get("seed", 0))}


def _array(value, fn: UserFunction, what: str, shape, dtype) -> np.ndarray:
    if not isinstance(value, np.ndarray | np.generic | float | int) or isinstance(value, bool):
        raise OwnLayerError(
            f"{fn.label} returned {type(value).__name__} as {what}, expected an array of shape {shape}"
        )
    out = np.asarray(value)
    if out.dtype.kind != "f":
        raise OwnLayerError(f"{fn.label} returned {what} of dtype {out.dtype}, expected {dtype}")
    if out.shape != tuple(shape):
        raise OwnLayerError(f"{fn.label} returned {what} of shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise OwnLayerError(
            f"{fn.label} returned {what} as {out.dtype} for {dtype} inputs: a layer must keep its "
            "inputs' dtype (np.zeros_like(x), not np.zeros(x.shape))"
        )
    return out


def _unpack(result, fn: UserFunction, names: tuple[str, ...]):
    if len(names) == 1:
        return (result,)
    if not isinstance(result, tuple | list) or len(result) != len(names):
        got = (
            f"a {type(result).__name__} of {len(result)}"
            if isinstance(result, tuple | list)
            else type(result).__name__
        )
        raise OwnLayerError(f"{fn.label} returned {got}, expected ({', '.join(names)})")
    return tuple(result)


class _Guard:
    """Copies of the arrays handed to a user's function, checked bit for bit afterwards: a
    layer that writes into its input (x[x < 0] = 0) changes what the layer before it gave."""

    def __init__(self, fn: UserFunction, **arrays):
        self.fn, self.arrays = fn, {k: v for k, v in arrays.items() if isinstance(v, np.ndarray)}
        self.copies = {k: v.copy() for k, v in self.arrays.items()}

    def args(self, name):
        return self.copies[name]

    def check(self, tolerate=()):
        """OwnLayerError for an argument changed in place; OwnLayerWarning only for the
        names in `tolerate`."""
        for name, original in self.arrays.items():
            if not np.array_equal(original, self.copies[name], equal_nan=True):
                if name in tolerate:
                    warnings.warn(
                        f"{self.fn.label} changed its argument {name} in place: harmless in "
                        "this network (your function got a copy, and no layer reads it again) "
                        "and in the CS231n one, wrong wherever an upstream gradient is shared; "
                        "the network's other layers are still checked",
                        OwnLayerWarning,
                        stacklevel=4,
                    )
                    continue
                raise _blamed(self.fn)(
                    f"{self.fn.label} changed its argument {name} in place: a layer must leave "
                    "its inputs as they are (the layer before it still holds them)"
                )


def _pool_param(a) -> dict:
    return {"pool_height": int(a["k"]), "pool_width": int(a["k"]), "stride": int(a["stride"])}


def forward(
    layer: UserLayer, a: Mapping, mode: str = "train", state: dict | None = None
) -> tuple[dict, object]:
    """The user's forward on the inputs `a`: ({short name: output}, cache). softmax_ce: its
    one function, ({"E": loss, "dZ": dx}, None). `mode`: a batch norm's and dropout's
    ("train" or "test"); `state`: filled with the bn_param a batch norm was handed, after
    the call (its running statistics as the user's forward left them)."""
    kind, fn = layer.kind, layer.functions[0]
    shapes, dtype = expected_shapes(kind, a), _input_dtype(kind, a)
    if kind == "conv":
        g = _Guard(fn, x=a["X"], w=a["F"], b=a["b"])
        param = {"stride": int(a["stride"]), "pad": int(a["pad"])}
        result = fn(g.args("x"), g.args("w"), g.args("b"), param)
        out_name = "Z"
    elif _family(kind) == "pool":
        g = _Guard(fn, x=a["X"])
        result, out_name = fn(g.args("x"), _pool_param(a)), "A"
    elif _family(kind) == "activation":
        g = _Guard(fn, x=a["Z"])
        result, out_name = fn(g.args("x")), "A"
    elif kind == "dense":
        g = _Guard(fn, x=a["A"], w=a["W"], b=a["b"])
        result, out_name = fn(g.args("x"), g.args("w"), g.args("b")), "Z"
    elif _family(kind) == "norm":
        gamma, beta = _user_param(kind, a["gamma"]), _user_param(kind, a["beta"])
        g = _Guard(fn, x=a["X"], gamma=gamma, beta=beta)
        args = (g.args("x"), g.args("gamma"), g.args("beta"))
        if kind == "groupnorm":
            result = fn(*args, int(a["groups"]), {"eps": EPS})
        elif kind == "layernorm":
            result = fn(*args, {"eps": EPS})
        else:  # batch norm: the running statistics come back in bn_param (`state`)
            param = bn_param(a, mode)
            result = fn(*args, param)
            if state is not None:
                state.update(param)
        out_name = "A"
    elif _family(kind) == "dropout":
        g = _Guard(fn, x=a["X"])
        result, out_name = fn(g.args("x"), dropout_param(a, mode)), "A"
    elif kind == "softmax_ce":
        g = _Guard(fn, x=a["Z"], y=a["labels"])
        loss, dx = _unpack(fn(g.args("x"), g.args("y")), fn, ("loss", "dx"))
        g.check()
        if isinstance(loss, bool) or not isinstance(loss, np.ndarray | np.generic | float):
            raise OwnLayerError(
                f"{fn.label} returned {type(loss).__name__} as the loss, expected a float"
            )
        if np.ndim(loss) != 0 or np.asarray(loss).dtype.kind != "f":
            raise OwnLayerError(
                f"{fn.label} returned a loss of shape {np.shape(loss)} and dtype "
                f"{np.asarray(loss).dtype}, expected one float"
            )
        # A scalar loss may come back as a Python float: it is taken in the inputs' dtype.
        E = np.asarray(loss).astype(dtype)
        return {"E": _frozen(E), "dZ": _frozen(_array(dx, fn, "dx", shapes["dZ"], dtype))}, None
    else:
        raise KeyError(kind)
    out, cache = _unpack(result, fn, ("out", "cache"))
    g.check()
    return {out_name: _frozen(_array(out, fn, "out", shapes[out_name], dtype))}, cache


def _frozen(value: np.ndarray) -> np.ndarray:
    """A read-only copy of what a forward returned, taken before its backward is called: a
    backward may write into its cache, and the cache may be that very array (relu_forward's
    `cache = out`), so the output compared is the one the forward gave, neither repaired nor
    spoiled by the backward."""
    copy = np.array(value, copy=True)
    copy.setflags(write=False)
    return copy


def backward(layer: UserLayer, a: Mapping, cache, strict: bool = True) -> dict:
    """The user's backward with the upstream gradient of `a` and a cache of its forward.
    A backward that writes into its dout raises OwnLayerError; with strict=False (inside a
    network, where it got a copy of dout) an OwnLayerWarning only, so that one ReLU's
    `dout[x <= 0] = 0` does not stop the backward pass before the other layers' gradients."""
    kind, fn = layer.kind, layer.functions[1]
    shapes, dtype = expected_shapes(kind, a), _input_dtype(kind, a)
    upstream = a["dA"] if _family(kind) in ("pool", "activation", "norm", "dropout") else a["dZ"]
    g = _Guard(fn, dout=upstream)
    if kind in ("conv", "dense"):
        names = ("dx", "dw", "db")
        got = _unpack(fn(g.args("dout"), cache), fn, names)
        short = ("dX", "dF", "db") if kind == "conv" else ("dA", "dW", "db")
    elif _family(kind) == "norm":
        names, short = ("dx", "dgamma", "dbeta"), ("dX", "dgamma", "dbeta")
        got = _unpack(fn(g.args("dout"), cache), fn, names)
        g.check(() if strict else ("dout",))
        grads = {s: _array(v, fn, n, shapes[s], dtype) for s, n, v in zip(short, names, got)}
        # group norm's (1, C, 1, 1) as the Network's (C,)
        return {s: v.reshape(np.shape(a["gamma"])) if s != "dX" else v for s, v in grads.items()}
    else:
        got, names = (fn(g.args("dout"), cache),), ("dx",)
        short = (REGISTRY[kind].input_grad,)
    g.check(() if strict else ("dout",))
    return {s: _array(v, fn, n, shapes[s], dtype) for s, n, v in zip(short, names, got)}


def run(layer: UserLayer, a: Mapping, state: dict | None = None) -> dict:
    """Forward, then backward with the forward's own cache: every tensor of OUTPUTS[kind].
    The forward's outputs are copied (read-only) before the backward is called. `state`:
    as forward's."""
    out, cache = forward(layer, a, state=state)
    if layer.kind == "softmax_ce":
        return out
    return {**out, **backward(layer, a, cache)}


# --- as reference.network Ops -----------------------------------------------------------------
#
# The Network's backward gets the layer's input again, not a cache: each backward below calls
# the user's forward on that input for its cache first (so a backward sees the cache of a
# forward on the very input it is asked about, also where the Network's `decide` hands a
# kinked layer another input). The bias of that forward call is zero: the Network's
# backward form does not take b, and no CS231n gradient depends on its value.


def _conv_ops(layer: UserLayer) -> Ops:
    def fwd(X, F, b, stride, pad):
        b = np.zeros(F.shape[0], X.dtype) if b is None else b
        return forward(layer, dict(X=X, F=F, b=b, stride=stride, pad=pad))[0]["Z"]

    def bwd(X, F, dZ, stride, pad, bias=True):
        a = dict(X=X, F=F, b=np.zeros(F.shape[0], X.dtype), dZ=dZ, stride=stride, pad=pad)
        grads = backward(layer, a, forward(layer, a)[1], strict=False)
        return grads if bias else {k: v for k, v in grads.items() if k != "db"}

    return Ops(fwd, bwd)


def _pool_ops(layer: UserLayer) -> Ops:
    def fwd(X, k, stride=None):
        return forward(layer, dict(X=X, k=k, stride=k if stride is None else stride))[0]["A"]

    def bwd(X, dA, k, stride=None):
        a = dict(X=X, dA=dA, k=k, stride=k if stride is None else stride)
        return backward(layer, a, forward(layer, a)[1], strict=False)["dX"]

    return Ops(fwd, bwd)


def _activation_ops(layer: UserLayer) -> Ops:
    def fwd(Z):
        return forward(layer, dict(Z=Z))[0]["A"]

    def bwd(dA, Z, A):
        a = dict(Z=Z, dA=dA)
        return backward(layer, a, forward(layer, a)[1], strict=False)["dZ"]

    return Ops(fwd, bwd)


def _dense_ops(layer: UserLayer) -> Ops:
    def fwd(A, W, b=None):
        b = np.zeros(W.shape[1], A.dtype) if b is None else b
        return forward(layer, dict(A=A, W=W, b=b))[0]["Z"]

    def bwd(A, W, dZ, bias=True):
        a = dict(A=A, W=W, b=np.zeros(W.shape[1], A.dtype), dZ=dZ)
        grads = backward(layer, a, forward(layer, a)[1], strict=False)
        return grads if bias else {k: v for k, v in grads.items() if k != "db"}

    return Ops(fwd, bwd)


def _needs_mean(layer: UserLayer, reduction: str) -> None:
    if reduction != "mean":
        raise ValueError(
            f"{OPTION} {layer.value!r}: softmax_loss gives the MEAN over the N images (CS231n), "
            f"so it cannot stand for reduction {reduction!r}; run with --parity-reduction mean"
        )


def _softmax_ops(layer: UserLayer) -> Ops:
    """softmax_loss gives the loss and dE/dZ, no probabilities: P is the reference's softmax
    (reference.layers.loss), E and dZ the user's. The Network's backward gets P, not Z: the
    dx of the forward call that returned this very P is handed back; for any other P (not
    the Network's own step) softmax_loss is called again on log P, logits with that softmax."""
    last: dict = {}

    def fwd(Z, labels, reduction="sum"):
        _needs_mean(layer, reduction)
        got = forward(layer, dict(Z=Z, labels=np.asarray(labels)))[0]
        P = ref_loss.softmax(Z)
        last.clear()
        last.update(P=P, labels=np.asarray(labels), dZ=got["dZ"])
        return P, got["E"]

    def bwd(P, labels, reduction="sum"):
        _needs_mean(layer, reduction)
        if last.get("P") is P and np.array_equal(last["labels"], labels):
            return last["dZ"]
        with np.errstate(divide="ignore"):
            Z = np.log(np.maximum(P, np.finfo(P.dtype).tiny))
        return forward(layer, dict(Z=Z, labels=np.asarray(labels)))[0]["dZ"]

    return Ops(fwd, bwd)


def _norm_ops(kind: str, by_rank: Mapping[int, UserLayer]) -> Ops:
    """The registry's normalisation `kind` with the user's pair at inputs of its rank
    (RANKS; batch norm: batchnorm at (N, D), spatial_batchnorm at (N, C, H, W)) and the
    reference's readable layer at the others. A batch norm runs in training mode, with
    fresh running statistics each call (the Network's step has no state)."""
    ref = DEFAULT_OPS[kind]

    def fwd(X, gamma, beta, groups=None):
        layer = by_rank.get(np.ndim(X))
        if layer is None:
            return ref.forward(X, gamma, beta, groups)
        return forward(layer, dict(X=X, gamma=gamma, beta=beta, groups=groups))[0]["A"]

    def bwd(X, gamma, dA, groups=None):
        layer = by_rank.get(np.ndim(X))
        if layer is None:
            return ref.backward(X, gamma, dA, groups)
        a = dict(X=X, gamma=gamma, beta=np.zeros_like(gamma), groups=groups, dA=dA)
        return backward(layer, a, forward(layer, a)[1], strict=False)

    return Ops(fwd, bwd)


# family -> the adapter from the user's CS231n-style pair to the family's calling form.
_ADAPTERS = {
    "conv": _conv_ops,
    "pool": _pool_ops,
    "activation": _activation_ops,
    "dense": _dense_ops,
    "softmax_ce": _softmax_ops,
}


def user_ops(layers: Mapping[str, UserLayer]) -> dict[str, Ops]:
    """The user's layers as reference.network Ops: Network(spec, ops=user_ops(layers)).
    A dropout is left out: the Network draws its keep-mask from the run's seed and hands it
    to the reference and to both frameworks, while CS231n's dropout_forward draws its own,
    so a user's dropout is checked alone (test_own_layers.py), never inside a network."""
    ops, norms = {}, {}
    for kind, layer in layers.items():
        family = _family(kind)
        if family == "norm":
            norms.setdefault(entry(kind).name, {})[RANKS[kind]] = layer
        elif family != "dropout":
            ops[kind] = _ADAPTERS[family](layer)
    ops.update({kind: _norm_ops(kind, by_rank) for kind, by_rank in norms.items()})
    return ops


def user_network(
    spec,
    values: Iterable[str],
    reduction: str = "mean",
    isolation: str = DEFAULT_ISOLATION,
    timeout: float = 0.0,
) -> Network:
    """The network `spec` with the --parity-layer values' layers in place of the reference's."""
    return Network(spec, ops=user_ops(load(tuple(values), reduction, isolation, timeout)))


def impl_label(layers: Mapping[str, UserLayer]) -> str:
    """The records' implementation name for a network with these layers: own:conv,maxpool."""
    return "own:" + ",".join(layers)


def _runs_in(kind: str, net: Network) -> bool:
    """Whether a user's pair of `kind` is called inside `net` (user_ops): a layer of its
    registry kind with an input of its rank (RANKS); a dropout never."""
    if _family(kind) == "dropout":
        return False
    name, rank = entry(kind).name, RANKS.get(kind)
    return any(
        node.kind == name and (rank is None or len(node.in_shape) + 1 == rank) for node in net.nodes
    )


def used_layers(layers: Mapping[str, UserLayer], net: Network | None) -> dict[str, UserLayer]:
    """The layers `net` calls: only they run inside it (a pooling pair plugged into a
    network without that pooling is never called there, nor spatial_batchnorm in a network
    whose batch norms follow dense layers, nor a dropout: see user_ops)."""
    if net is None:
        return {}
    return {kind: layer for kind, layer in layers.items() if _runs_in(kind, net)}


def not_in_network(kind: str, net: Network | None, name: str) -> str:
    """Why `net` (called `name`) does not run a user's `kind`, in words for the run's
    completeness: 'lenet has no tanh layer'."""
    if net is None:
        return f"{name} has no {kind} layer"
    if _family(kind) == "dropout" and any(node.kind == "dropout" for node in net.nodes):
        return (
            f"{name}'s dropout layers take the suite's keep-mask (the same for the reference "
            "and both frameworks) and a CS231n dropout_forward draws its own mask"
        )
    rank = RANKS.get(kind)
    if rank and any(node.kind == entry(kind).name for node in net.nodes):
        shape = "(N, D) features" if rank == 2 else "(N, C, H, W) maps"
        return f"{name} has no {entry(kind).name} layer on {shape}, which {kind} takes"
    return f"{name} has no {kind} layer"

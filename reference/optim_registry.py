"""The optimiser registry: one declarative entry per optimiser, read by everything that needs it.

An entry (`Optimiser`) says, for one name of --parity-optim (sgd, momentum, nesterov,
rmsprop, adam, adamw):

- its state's names (`state`: velocity, cache, m, v, t) and their initial values (zeros; t 0);
- its hyper-parameters with their defaults (`hyper`), in the order of the positional form
  `momentum(0.9)`;
- its two conventions (`variants`): torch's and Keras', each a `Variant` with the
  equation ids it runs (reference/optim.py) and its step `(p, g, state, hyper) ->
  (p', state')`, hyper-parameters rounded as that convention holds them;
- its catalogue of classic mistakes (`mistakes`), each a replacement step, the tensor where
  it must show first and the explainer's name for it.

`step(name, convention, p, g, state, hyper)` runs one parameter's update. The frameworks'
optimisers are checked against the variant of their own convention; the difference between
the two variants is measured and stated (docs/optimisers.md), never allowed for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from reference import optim, optim_mistakes
from reference.optim import KERAS, TORCH, Convention
from reference.update import SUITE_LR

# The default learning rate of every rule but plain sgd (the suite's 2^-4): 2^-10, about
# 1e-3, the adaptive rules' usual one, and a power of two, so Keras' float32 learning rate is
# exact. Momentum 0.9 multiplies the step about tenfold: at 2^-4 (or 2^-7) LeNet's loss,
# summed over the 200 images, explodes within ten steps; at 2^-10 it falls.
ADAPTIVE_LR = 2.0**-10


@dataclass(frozen=True)
class Variant:
    """One convention of one optimiser: the equation ids it runs and its step."""

    convention: Convention
    equations: tuple[str, ...]
    step: Callable  # (p, g, state: dict, hyper: dict) -> (p', state': dict)


@dataclass(frozen=True)
class Mistake:
    """A classic optimiser mistake: the replacement `step` (a Variant's calling form), the
    tensor where it must be caught first (`first`: "p_new" or a state name) and at which step
    (`first_step`, counted from 1), the explainer's name for it (`explains`) and the
    hyper-parameters it needs to show (`hyper`, over the entry's defaults)."""

    id: str
    title: str
    explains: str
    step: Callable | None  # None: the optimiser's own step (scope says what goes wrong)
    first: str
    first_step: int = 1
    hyper: Mapping[str, float] = field(default_factory=dict)
    scope: str = "parameter"  # "parameter", "shared" (one state for all), "restart" (not carried)
    keras: Callable | None = None  # the same mistake in Keras' convention (None with step None)

    def step_in(self, convention: str) -> Callable | None:
        """The replacement step in `convention` ("torch" or "keras"); None: the optimiser's own."""
        if self.step is None:
            return None
        return self.step if convention == "torch" else self.keras


@dataclass(frozen=True)
class Optimiser:
    name: str
    state: tuple[str, ...]
    hyper: Mapping[str, float]  # name -> default, positional order
    variants: Mapping[str, Variant]  # convention name -> Variant
    text: str
    mistakes: tuple[Mistake, ...] = ()

    def init_state(self, p: np.ndarray) -> dict:
        """The state before the first step: zeros of p's shape and dtype, t = 0."""
        return {s: 0 if s == "t" else np.zeros_like(p) for s in self.state}

    def equations(self, convention: str, h: Mapping | None = None) -> tuple[str, ...]:
        """The equation ids of the `convention` variant; with hyper-parameters `h`, those
        that run at them: the decay's (O2, O3) only where weight_decay is not 0."""
        ids = self.variants[convention].equations
        if h is not None and not h.get("weight_decay"):
            ids = tuple(i for i in ids if i not in ("O2", "O3"))
        return ids


# --- the steps, per convention ------------------------------------------------------------
# h: the hyper-parameters by name (lr, momentum, rho, eps, beta1, beta2, weight_decay).


def _coupled(p, g, h, c: Convention):
    """torch's weight_decay= (O2): the optimiser sees g + wd p."""
    return optim.l2_decay(p, g, h["weight_decay"]) if h.get("weight_decay") else g


def _decay(p, h, c: Convention):
    """Keras' weight_decay= and AdamW (O3), before the step."""
    if not h.get("weight_decay"):
        return p
    return optim.decoupled_decay(p, c.cast(h["lr"]), c.cast(h["weight_decay"]), c.name)


def _sgd_torch(p, g, state, h):
    return optim.sgd(p, _coupled(p, g, h, TORCH), h["lr"]), {}


def _sgd_keras(p, g, state, h, c: Convention = KERAS):
    return optim.sgd(_decay(p, h, c), g, c.cast(h["lr"])), {}


def _velocity_step(rule, c: Convention):
    def step(p, g, state, h):
        if c.name == "torch":
            g = _coupled(p, g, h, c)
        else:
            p = _decay(p, h, c)
        p_new, v = rule(p, g, state["velocity"], c.cast(h["lr"]), c.cast(h["momentum"]))
        return p_new, {"velocity": v}

    step.__name__ = f"{rule.__name__}_step"
    return step


def _rmsprop_step(c: Convention):
    rule = optim.rmsprop_torch if c.name == "torch" else optim.rmsprop_keras

    def step(p, g, state, h):
        if c.name == "torch":
            g = _coupled(p, g, h, c)
        else:
            p = _decay(p, h, c)
        # Keras multiplies by the Python floats rho and 1 - rho and adds eps as they are.
        p_new, cache = rule(p, g, state["cache"], c.cast(h["lr"]), h["rho"], h["eps"])
        return p_new, {"cache": cache}

    step.__name__ = f"{rule.__name__}_step"
    return step


def _adam_step(c: Convention, decoupled: bool):
    def step(p, g, state, h):
        if c.name == "torch" and not decoupled:
            g = _coupled(p, g, h, c)
        else:
            p = _decay(p, h, c)
        if c.name == "torch":
            out = optim.adam_torch(
                p, g, state["m"], state["v"], state["t"], h["lr"], h["beta1"], h["beta2"], h["eps"]
            )
        else:
            k = c.cast
            out = optim.adam_keras(
                p, g, state["m"], state["v"], state["t"], k(h["lr"]), h["beta1"], h["beta2"],
                h["eps"], k(h["beta1"]), k(h["beta2"]),
            )  # fmt: skip
        p_new, m, v, t = out
        return p_new, {"m": m, "v": v, "t": t}

    step.__name__ = f"adam{'w' if decoupled else ''}_{c.name}_step"
    return step


def _variants(torch_ids, torch_step, keras_ids, keras_step) -> dict:
    return {
        "torch": Variant(TORCH, torch_ids, torch_step),
        "keras": Variant(KERAS, keras_ids, keras_step),
    }


_WD = {"weight_decay": 0.0}

SGD = Optimiser(
    "sgd",
    (),
    {"lr": SUITE_LR, **_WD},
    _variants(("O1", "O2"), _sgd_torch, ("O1", "O3"), _sgd_keras),
    "plain gradient descent",
)
MOMENTUM = Optimiser(
    "momentum",
    ("velocity",),
    {"momentum": 0.9, "lr": ADAPTIVE_LR, **_WD},
    _variants(
        ("O4", "O2"),
        _velocity_step(optim.momentum_torch, TORCH),
        ("O5", "O3"),
        _velocity_step(optim.momentum_keras, KERAS),
    ),  # fmt: skip
    "gradient descent with (heavy-ball) momentum",
)
NESTEROV = Optimiser(
    "nesterov",
    ("velocity",),
    {"momentum": 0.9, "lr": ADAPTIVE_LR, **_WD},
    _variants(
        ("O6", "O2"),
        _velocity_step(optim.nesterov_torch, TORCH),
        ("O7", "O3"),
        _velocity_step(optim.nesterov_keras, KERAS),
    ),  # fmt: skip
    "gradient descent with Nesterov momentum",
)
RMSPROP = Optimiser(
    "rmsprop",
    ("cache",),
    {"lr": ADAPTIVE_LR, "rho": 0.9, "eps": 1e-7, **_WD},
    _variants(("O8", "O2"), _rmsprop_step(TORCH), ("O9", "O3"), _rmsprop_step(KERAS)),
    "RMSprop (uncentred, no momentum)",
)
_ADAM_HYPER = {"lr": ADAPTIVE_LR, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}
ADAM = Optimiser(
    "adam",
    ("m", "v", "t"),
    {**_ADAM_HYPER, **_WD},
    _variants(("O10", "O2"), _adam_step(TORCH, False), ("O11", "O3"), _adam_step(KERAS, False)),
    "Adam (no AMSGrad)",
)
ADAMW = Optimiser(
    "adamw",
    ("m", "v", "t"),
    {**_ADAM_HYPER, "weight_decay": 0.01},
    _variants(("O3", "O10"), _adam_step(TORCH, True), ("O3", "O11"), _adam_step(KERAS, True)),
    "Adam with decoupled weight decay",
)


def _mistake(id, title, step, first, first_step=1, scope="parameter", **hyper) -> Mistake:
    """Its Keras mirror: optim_mistakes' `<step>_keras` (adam_coupled_keras for both decay
    mistakes: in Keras, weight_decay= is decoupled for Adam and AdamW alike)."""
    keras = None
    if step is not None:
        name = (
            "adam_coupled" if step.__name__ in ("adam_l2_decoupled", "adamw_coupled") else step.__name__
        )
        keras = getattr(optim_mistakes, f"{name}_keras")
    return Mistake(id, title, id, step, first, first_step, hyper, scope, keras)


_NOT_CARRIED = "the optimiser state not carried between steps: every step starts from zeros"
_SHARED = "one optimiser state for every parameter (where shapes differ, restarted)"
_CATALOGUE = {
    "momentum": (
        _mistake("momentum_wrong_sign", "the gradient's sign flipped in the velocity",
                 optim_mistakes.momentum_wrong_sign, "velocity"),
        _mistake("state_not_carried", _NOT_CARRIED, None, "velocity", 2, "restart"),
        _mistake("state_shared", _SHARED, None, "velocity", 1, "shared"),
    ),
    "nesterov": (
        _mistake("nesterov_as_momentum", "Nesterov computed as plain momentum (no look-ahead)",
                 optim_mistakes.nesterov_as_momentum, "p_new"),
    ),
    "rmsprop": (
        _mistake("rmsprop_decay_on_gradient", "the running average of g, not of g^2",
                 optim_mistakes.rmsprop_decay_on_gradient, "cache"),
        _mistake("state_not_carried", _NOT_CARRIED, None, "cache", 2, "restart"),
    ),
    "adam": (
        _mistake("adam_no_bias_correction", "Adam without bias correction",
                 optim_mistakes.adam_no_bias_correction, "p_new"),
        _mistake("adam_bias_from_t0", "bias correction counted from t = 0",
                 optim_mistakes.adam_bias_from_t0, "p_new"),
        _mistake("adam_eps_inside_sqrt", "epsilon inside the square root",
                 optim_mistakes.adam_eps_inside_sqrt, "p_new", eps=1e-4),
        _mistake("adam_l2_decoupled", "decoupled decay where L2 (weight_decay=) was asked",
                 optim_mistakes.adam_l2_decoupled, "m", weight_decay=0.01),
        _mistake("state_not_carried", _NOT_CARRIED, None, "m", 2, "restart"),
    ),
    "adamw": (
        _mistake("adamw_coupled", "L2 (added to the gradient) where decoupled decay was asked",
                 optim_mistakes.adamw_coupled, "m"),
    ),
}  # fmt: skip
SGD, MOMENTUM, NESTEROV, RMSPROP, ADAM, ADAMW = (
    replace(o, mistakes=_CATALOGUE.get(o.name, ()))
    for o in (SGD, MOMENTUM, NESTEROV, RMSPROP, ADAM, ADAMW)
)
OPTIMISERS: dict[str, Optimiser] = {o.name: o for o in (SGD, MOMENTUM, NESTEROV, RMSPROP, ADAM, ADAMW)}


def optimiser(name: str) -> Optimiser:
    if name not in OPTIMISERS:
        raise ValueError(f"optimiser must be one of {list(OPTIMISERS)}, got {name!r}")
    return OPTIMISERS[name]


def hyper(name: str, **given) -> dict:
    """The entry's defaults updated with `given`; an unknown name is an error naming it."""
    entry = optimiser(name)
    unknown = set(given) - set(entry.hyper)
    if unknown:
        raise ValueError(f"{name} has no hyper-parameter {sorted(unknown)}; it has {list(entry.hyper)}")
    h = {**entry.hyper, **{k: float(v) for k, v in given.items()}}
    _validate(h)
    return h


_RANGES = {
    "lr": (0.0, np.inf, True),
    "momentum": (0.0, 1.0, False),
    "rho": (0.0, 1.0, False),
    "beta1": (0.0, 1.0, False),
    "beta2": (0.0, 1.0, False),
    "eps": (0.0, np.inf, True),
    "weight_decay": (0.0, np.inf, False),
}


def _validate(h: Mapping) -> None:
    for k, v in h.items():
        low, high, open_low = _RANGES[k]
        optim.check_hyper(k, v, low, high, open_low=open_low)
        if k in ("momentum", "rho", "beta1", "beta2") and v >= 1:
            raise ValueError(f"{k} must be < 1, got {v!r}")


def step(name: str, convention: str, p, g, state: Mapping, h: Mapping):
    """One parameter's update by optimiser `name` in `convention`: (p', state')."""
    return optimiser(name).variants[optim.convention(convention).name].step(p, g, dict(state), h)


def form_step(name: str, convention: Convention):
    """Optimiser `name`'s step in the form of `convention.name` (torch or keras) with the
    hyper-parameter casting of `convention` itself: KERAS_FLOAT64 gives Keras' form with
    exact hyper-parameters, which splits a torch-vs-Keras difference into its two causes
    (benchmarks/optim_conventions.py)."""
    if convention.name == "torch":
        return optimiser(name).variants["torch"].step
    if name == "sgd":
        return lambda p, g, state, h: _sgd_keras(p, g, state, h, convention)
    if name in ("momentum", "nesterov"):
        rule = optim.momentum_keras if name == "momentum" else optim.nesterov_keras
        return _velocity_step(rule, convention)
    if name == "rmsprop":
        return _rmsprop_step(convention)
    return _adam_step(convention, name == "adamw")


# Keras' form with every hyper-parameter exact (no float32 casting): no framework's, a probe.
KERAS_FLOAT64 = Convention("keras", "Keras' form, hyper-parameters exact", cast32=False)


def parse(spec: str) -> tuple[str, dict]:
    """An optimiser spec -> (name, hyper-parameters with defaults filled in).

    Forms: `adam`, `momentum(0.9)` (positional, in the entry's hyper order),
    `adam(lr=1e-3,beta1=0.9,beta2=0.999,eps=1e-8)` and mixes (positional first). A bad spec
    raises ValueError saying what was expected and what came."""
    if not isinstance(spec, str):
        raise TypeError(f"optimiser spec must be a string, got {type(spec).__name__}")
    text = spec.strip().replace(" ", "")
    name, _, rest = text.partition("(")
    if name not in OPTIMISERS:
        raise ValueError(f"unknown optimiser {name!r}; known: {', '.join(OPTIMISERS)}")
    given: dict = {}
    if rest:
        if not rest.endswith(")"):
            raise ValueError(f"{spec!r}: missing the closing ')'")
        order = list(OPTIMISERS[name].hyper)
        args = [a for a in rest[:-1].split(",") if a]
        keyword = False
        for i, arg in enumerate(args):
            key, eq, value = arg.partition("=")
            if not eq:
                if keyword:
                    raise ValueError(f"{spec!r}: a positional value after a keyword one")
                if i >= len(order):
                    raise ValueError(f"{spec!r}: {name} takes at most {len(order)} values ({order})")
                key, value = order[i], arg
            else:
                keyword = True
            if key in given:
                raise ValueError(f"{spec!r}: {key} given twice")
            try:
                given[key] = float(value)
            except ValueError:
                raise ValueError(f"{spec!r}: {key}={value!r} is not a number") from None
    return name, hyper(name, **given)


def canonical(name: str, h: Mapping) -> str:
    """The spec that names (name, h) exactly, keyword form: adam(lr=0.0009765625,...)."""
    return f"{name}({','.join(f'{k}={v!r}' for k, v in h.items())})"

"""torch.optim vs keras.optimizers, measured, and each difference split into its causes.

For each row: the same hyper-parameters, float64, K steps (default 6) on one 5-vector whose
gradients span magnitudes 1e-9 .. 1 (element i of step k's gradient is u * 10^(-9 + 9 i/4),
u uniform in [-1, 1] from default_rng(seed)), starting from the same parameter and from
zero state. The difference is max over steps and elements of |p_torch - p_keras| / |p_torch|
(relative to the parameter); the last column measures it relative to what the optimiser
did, the displacement d_k = p_k - p_0: max |d_torch - d_keras| / |d_torch| over the elements
whose displacement exceeds 2^-20 |p_0| (below that, the rounding of p itself dominates).

Columns:
  torch vs keras       the frameworks' difference;
  form                 torch vs the reference's Keras form with exact hyper-parameters
                       (reference.optim_registry.KERAS_FLOAT64): the equations' difference;
  float32 hyper        Keras' form with exact vs float32-cast hyper-parameters: Keras'
                       float32 learning-rate variable and its ops.cast of Python floats;
  torch vs ref         torch vs the reference's torch variant (each framework in its own
  keras vs ref         convention: 0 or an ulp or two, the rounding of a different order).

    .venv/bin/python benchmarks/optim_conventions.py [--steps 6] [--seed 0] [--markdown]
"""

from __future__ import annotations

import argparse

import numpy as np

from parity_tests.mirrors import optim_tf, optim_torch
from reference import optim_registry as registry
from reference.optim import KERAS, TORCH

# (optimiser, hyper-parameters over its defaults, the reason for the difference)
ROWS = (
    ("sgd", {"lr": 0.1}, "Keras' learning rate is a float32 variable: 0.1 becomes 0.10000000149"),
    ("sgd", {"lr": 2**-4}, "2^-4 is a float32: nothing differs"),
    (
        "sgd",
        {"lr": 2**-4, "weight_decay": 0.01},
        "torch adds wd p to the gradient (O2), Keras decays p first (O3); for plain SGD the "
        "same sum, rounded in another order, plus wd cast to float32 (0.01 -> 0.0099999998)",
    ),
    (
        "momentum",
        {"lr": 2**-4, "momentum": 0.9},
        "Keras casts momentum through float32 (0.9 -> 0.89999998); the velocity forms O4/O5 "
        "agree to rounding",
    ),
    (
        "nesterov",
        {"lr": 2**-4, "momentum": 0.9},
        "as momentum: 0.9 cast through float32; O6/O7 agree to rounding",
    ),
    (
        "rmsprop",
        {"lr": 2**-10, "rho": 0.9, "eps": 1e-7},
        "epsilon inside the root in Keras (O9), outside in torch (O8): where sqrt(c) is "
        "near sqrt(eps) = 3.2e-4 or below, the steps differ by up to sqrt(c)/(sqrt(c+eps)); "
        "both accumulators start at 0",
    ),
    (
        "adam",
        {"lr": 2**-10, "eps": 1e-7},
        "epsilon added before the bias correction in Keras (O11: eps/sqrt(1-b2^t) of O10, "
        "31.6 eps at t = 1); the betas in b^t cast through float32",
    ),
    (
        "adam",
        {"lr": 2**-10, "eps": 1e-7, "beta1": 0.5, "beta2": 0.75},
        "as adam; betas that float32 holds exactly leave the epsilon placement alone",
    ),
    (
        "adamw",
        {"lr": 2**-10, "eps": 1e-7, "weight_decay": 0.01},
        "as adam; the decoupled decay O3 agrees (wd cast through float32)",
    ),
)


def _run(step, name, h, p0, grads):
    p, state, out = p0.copy(), registry.optimiser(name).init_state(p0), []
    for g in grads:
        p, state = step(name, p, g, state, h)
        out.append(p)
    return np.array(out)


def _ref(convention):
    def step(name, p, g, state, h):
        return registry.form_step(name, convention)(p, g, dict(state), h)

    return step


def _rel(a, b) -> float:
    scale = np.abs(b)
    keep = scale > 0
    return float(np.max(np.abs(a - b)[keep] / scale[keep], initial=0.0))


def _rel_step(a, b, p0) -> float:
    da, db = a - p0, b - p0
    keep = np.abs(db) > 2.0**-20 * np.abs(p0)
    return float(np.max(np.abs(da - db)[keep] / np.abs(db)[keep], initial=0.0))


def measure(steps: int = 6, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    mags = 10.0 ** np.linspace(-9, 0, 5)
    p0 = rng.uniform(-1, 1, 5)
    grads = [rng.uniform(-1, 1, 5) * mags for _ in range(steps)]
    rows = []
    for name, given, why in ROWS:
        h = registry.hyper(name, **given)
        t = _run(optim_torch.step, name, h, p0, grads)
        k = _run(optim_tf.step, name, h, p0, grads)
        k64 = _run(_ref(registry.KERAS_FLOAT64), name, h, p0, grads)
        rt, rk = _run(_ref(TORCH), name, h, p0, grads), _run(_ref(KERAS), name, h, p0, grads)
        rows.append(
            dict(
                optimiser=name,
                hyper=", ".join(f"{k_}={v:g}" for k_, v in given.items()),
                torch_vs_keras=_rel(k, t),
                form=_rel(k64, t),
                float32_hyper=_rel(k, k64),
                torch_vs_ref=_rel(t, rt),
                keras_vs_ref=_rel(k, rk),
                of_the_step=_rel_step(k, t, p0),
                why=why,
            )
        )
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = measure(args.steps, args.seed)
    print(
        "| optimiser | hyper-parameters | torch vs Keras | form | float32 hyper | torch vs ref "
        "| Keras vs ref | torch vs Keras, of the step | why |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['optimiser']} | {r['hyper']} | {r['torch_vs_keras']:.2g} | {r['form']:.2g} | "
            f"{r['float32_hyper']:.2g} | {r['torch_vs_ref']:.2g} | {r['keras_vs_ref']:.2g} | "
            f"{r['of_the_step']:.2g} | {r['why']} |"
        )


if __name__ == "__main__":
    main()

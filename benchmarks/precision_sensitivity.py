"""How small a uniform scale error the checks catch: the worst-case allowance alone, the
effective precision verdict with the fixed floor of 8 roundings (before issue 23), and the
verdict with the floor that grows with the sum's length (docs/tolerance.md, "Effective
precision").

For every tensor of the article's step and of lenet, each dtype, stage and end to end,
against each framework, the implementation's result x is replaced by x (1 + e) and the
smallest e that fails is found by bisection over log e:

  allowance:   the worst-case allowance alone (budget used > 1);
  fixed floor: compare_arrays' verdict with the precision verdict floored at 8 roundings;
  k floor:     the verdict as the suite runs it (floor max(8, sqrt(k) / 8) roundings).

A float64 check's truth is the reference in extended precision (docs/tolerance.md, "The
float64 truth"; where the platform's longdouble is float64, all three columns are the
allowance there). A column is the worst over the frameworks (the largest e); `legit` is
the largest relative difference
max|framework - impl| / max|impl| between a framework and the unscaled implementation (the
legitimate error the check must tolerate), and `k/legit` the k-floor column over it.

    PARITY_MNIST=/path/to/mnist.npz .venv/bin/python benchmarks/precision_sensitivity.py \\
        [--models article,lenet] [--frameworks torch,tensorflow] [--dtypes float32,float64] \\
        [--modes stage,end_to_end] [--seed 0] [--planted-seeds 0,1,2]

Also prints, for the planted low-precision steps (parity_tests/mutants.py), the typical
error ratio that the verdict measures, at the given seeds.
"""

from __future__ import annotations  # noqa: I001  (pins first: the suite's environment before NumPy)

import parity_tests.pins

import argparse
import math

import numpy as np

from parity_tests import mutants
from parity_tests.harness import Harness, RunConfig
from parity_tests.metrics import compare_arrays, precision_stats
from parity_tests.model_harness import ModelHarness
from parity_tests.stages import BY_TENSOR, END_TO_END, STAGES
from reference.data import load_article_data
from reference.fast_layers import fast_network
from reference.network import Network
from reference.published import ArticleStep

FIXED, K_FLOOR = 0, None  # roundings passed to the verdict: 0 the fixed floor, None the check's k


def _fails(c, e: float, precision: bool, roundings=K_FLOOR) -> bool:
    scaled = (np.asarray(c.expected, np.float64) * (1 + e)).astype(c.expected.dtype)
    truth = c.truth if precision else None
    k = c.tolerance.roundings if roundings is None else roundings
    r = compare_arrays(
        c.actual,
        scaled,
        c.tolerance.array,
        truth=truth,
        truth_zero=c.truth_zero,
        brief=True,
        roundings=k,
        precision=getattr(c, "precision", True),
        legit=getattr(c, "legit", None),  # as the suite runs it (compare_check)
    )
    return r["status"] != "pass"


def smallest_failing(c, precision: bool, roundings=K_FLOOR, lo=1e-17, hi=1.0, steps=40):
    """The smallest e in [lo, hi] with x (1 + e) failing, to ~2% (bisection on log e); nan
    if even hi passes or the unscaled check already fails, lo if lo already fails."""
    if _fails(c, 0.0, precision, roundings) or not _fails(c, hi, precision, roundings):
        return math.nan
    if _fails(c, lo, precision, roundings):
        return lo
    a, b = math.log(lo), math.log(hi)
    for _ in range(steps):
        m = (a + b) / 2
        a, b = (a, m) if _fails(c, math.exp(m), precision, roundings) else (m, b)
        if b - a < 0.02:
            break
    return math.exp(b)


def _checks(model: str, data, seed: int, modes):
    """(mode, tensor, make(tensor_key, framework, dtype)) of every check of `model`."""
    if model == "article":
        h = Harness(RunConfig(seed=seed), data, impl=ArticleStep())
        stages = {"stage": (STAGES, h.stage_check), "end_to_end": (END_TO_END, h.end_to_end_check)}
        for mode in modes:
            ss, make = stages[mode]
            for s in ss:
                yield mode, s.tensor, (lambda fw, dt, s=s, make=make: make(s, fw, dt))
    else:
        net = Network(model, seed=seed)
        h = ModelHarness(net, RunConfig(seed=seed), data, impl=fast_network(model, keep=0))
        makes = {"stage": h.stage_check, "end_to_end": h.end_to_end_check}
        for mode in modes:
            for tensor in net.order:
                yield mode, tensor, (lambda fw, dt, t=tensor, make=makes[mode]: make(t, fw, dt))


def _worst(values):
    values = [v for v in values if not math.isnan(v)]
    return max(values) if values else math.nan


def sensitivity(model, data, seed, frameworks, dtypes, modes) -> None:
    print(
        f"\n{model}: smallest uniform scale error x(1+e) that fails, worst over {','.join(frameworks)}"
    )
    head = ("tensor", "dtype", "mode", "k", "allowance", "fixed floor", "k floor", "legit", "k/legit")
    print("{:16s} {:8s} {:10s} {:>7s} {:>10s} {:>11s} {:>10s} {:>10s} {:>8s}".format(*head))
    for dtype in dtypes:
        for mode, tensor, make in _checks(model, data, seed, modes):
            cs = [make(fw, dtype) for fw in frameworks]
            before = _worst(smallest_failing(c, False) for c in cs)
            fixed = _worst(
                smallest_failing(c, True, FIXED) if c.truth is not None else math.nan for c in cs
            )
            after = _worst(smallest_failing(c, True) if c.truth is not None else math.nan for c in cs)
            fixed, after = (before if math.isnan(x) else x for x in (fixed, after))
            legit = 0.0
            for c in cs:
                a, e = (np.asarray(x, np.float64) for x in (c.actual, c.expected))
                scale = float(np.max(np.abs(e), initial=0.0))
                if scale > 0:
                    legit = max(legit, float(np.max(np.abs(a - e))) / scale)
            ratio = after / legit if legit > 0 else math.inf
            k = cs[0].tolerance.roundings
            print(
                f"{tensor:16s} {dtype:8s} {mode:10s} {k:7d} {before:10.2g} {fixed:11.2g} "
                f"{after:10.2g} {legit:10.2g} {ratio:8.3g}"
            )


def planted_ratios(data, seeds, frameworks) -> None:
    print("\ntypical-error excess (what the verdict compares with 16), stage")
    head = ("seed", "step", "tensor", "against", "excess", "floor", "impl bits", "fw bits")
    print("{:>4s} {:26s} {:6s} {:10s} {:>8s} {:>6s} {:>9s} {:>8s}".format(*head))
    steps = [
        ArticleStep(),
        *(mutants.MUTANTS[m] for m in ("dE_df_float16_operands", "dE_df_bfloat16_operands", "Z1_tf32")),
    ]
    for seed in seeds:
        for step in steps:
            h = Harness(RunConfig(seed=seed, impl="planted"), data, impl=step)
            for tensor in (step.first,) if isinstance(step, mutants.Mutant) else ("Z1", "dE_df"):
                for fw in frameworks:
                    c = h.stage_check(BY_TENSOR[tensor], fw, "float32")
                    a, e = (np.asarray(x, np.float64) for x in (c.actual, c.expected))
                    k = c.tolerance.roundings
                    p = precision_stats(a, e, c.truth, c.tolerance.array, c.expected.dtype, k)
                    name = getattr(step, "id", "reference (ArticleStep)")
                    print(
                        f"{seed:4d} {name:26s} {tensor:6s} {fw:10s} {p['excess']:8.3g} "
                        f"{p['floor_roundings']:6.3g} {p['impl_bits']:9.1f} {p['against_bits']:8.1f}"
                    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="article,lenet")
    ap.add_argument("--frameworks", default="torch,tensorflow")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--modes", default="stage,end_to_end")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--planted-seeds", default="0,1,2")
    args = ap.parse_args()
    frameworks = args.frameworks.split(",")
    parity_tests.pins.pin_framework_threads(frameworks, {})
    data = load_article_data()
    for model in filter(None, args.models.split(",")):
        sensitivity(model, data, args.seed, frameworks, args.dtypes.split(","), args.modes.split(","))
    seeds = [int(s) for s in args.planted_seeds.split(",") if s]
    if seeds:
        planted_ratios(data, seeds, frameworks)


if __name__ == "__main__":
    main()

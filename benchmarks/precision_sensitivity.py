"""How small a uniform scale error the stage checks catch, before and after the effective
precision verdict (docs/tolerance.md, "Effective precision").

For every tensor of the article's step, each dtype, stage mode against one framework
(torch by default), the implementation's result x is replaced by x (1 + e) and the
smallest e that fails is found by bisection over log e:

  before: the worst-case allowance alone (budget used > 1);
  after:  compare_arrays' verdict, which adds the precision verdict where a float64 truth
          exists (float32 checks; float64 checks have none, so after = before there).

    PARITY_MNIST=/path/to/mnist.npz .venv/bin/python benchmarks/precision_sensitivity.py \\
        [--framework torch] [--dtypes float32,float64] [--seed 0]

Also prints, for the planted low-precision steps (parity_tests/mutants.py), the typical
error ratio that the verdict measures, at the given seeds (--planted-seeds 0,1,2).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from parity_tests import mutants
from parity_tests.harness import Harness, RunConfig
from parity_tests.metrics import compare_arrays, precision_stats
from parity_tests.stages import BY_TENSOR, STAGES
from reference.data import load_article_data
from reference.published import ArticleStep


def _fails(c, e: float, precision: bool) -> bool:
    scaled = (np.asarray(c.expected, np.float64) * (1 + e)).astype(c.expected.dtype)
    truth = c.truth if precision else None
    r = compare_arrays(
        c.actual, scaled, c.tolerance.array, truth=truth, brief=True, roundings=c.tolerance.roundings
    )
    return r["status"] != "pass"


def smallest_failing(c, precision: bool, lo: float = 1e-17, hi: float = 1.0, steps: int = 40):
    """The smallest e in [lo, hi] with x (1 + e) failing, to ~2% (bisection on log e); nan
    if even hi passes, lo if lo already fails."""
    if _fails(c, 0.0, precision):
        return math.nan  # fails unscaled: no sensitivity to speak of
    if not _fails(c, hi, precision):
        return math.nan
    if _fails(c, lo, precision):
        return lo
    a, b = math.log(lo), math.log(hi)
    for _ in range(steps):
        m = (a + b) / 2
        a, b = (a, m) if _fails(c, math.exp(m), precision) else (m, b)
        if b - a < 0.02:
            break
    return math.exp(b)


def sensitivity(harness: Harness, framework: str, dtypes) -> None:
    print(f"smallest uniform scale error x(1+e) that fails, stage vs {framework}")
    print(f"{'tensor':8s} {'dtype':8s} {'before':>10s} {'after':>10s} {'gain':>8s}")
    for dtype in dtypes:
        for stage in STAGES:
            c = harness.stage_check(stage, framework, dtype)
            before = smallest_failing(c, precision=False)
            after = smallest_failing(c, precision=True) if c.truth is not None else before
            gain = before / after if after and not math.isnan(after) else math.nan
            print(f"{stage.tensor:8s} {dtype:8s} {before:10.2g} {after:10.2g} {gain:8.3g}")


def planted_ratios(data, seeds, framework: str) -> None:
    print(f"\ntypical-error excess (what the verdict compares with 16), stage vs {framework}")
    print(f"{'seed':>4s} {'step':26s} {'tensor':6s} {'excess':>8s} {'impl bits':>9s} {'fw bits':>8s}")
    steps = [
        ArticleStep(),
        *(mutants.MUTANTS[m] for m in ("dE_df_float16_operands", "dE_df_bfloat16_operands", "Z1_tf32")),
    ]
    for seed in seeds:
        for step in steps:
            h = Harness(RunConfig(seed=seed, impl="planted"), data, impl=step)
            for tensor in (step.first,) if isinstance(step, mutants.Mutant) else ("Z1", "dE_df"):
                c = h.stage_check(BY_TENSOR[tensor], framework, "float32")
                a, e = (np.asarray(x, np.float64) for x in (c.actual, c.expected))
                k = c.tolerance.roundings
                p = precision_stats(a, e, c.truth, c.tolerance.array, c.expected.dtype, k)
                name = getattr(step, "id", "reference (ArticleStep)")
                print(
                    f"{seed:4d} {name:26s} {tensor:6s} {p['excess']:8.3g} "
                    f"{p['impl_bits']:9.1f} {p['against_bits']:8.1f}"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--framework", default="torch")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--planted-seeds", default="0,1,2")
    args = ap.parse_args()
    data = load_article_data()
    harness = Harness(RunConfig(seed=args.seed), data, impl=ArticleStep())
    sensitivity(harness, args.framework, args.dtypes.split(","))
    seeds = [int(s) for s in args.planted_seeds.split(",") if s]
    if seeds:
        planted_ratios(data, seeds, args.framework)


if __name__ == "__main__":
    main()

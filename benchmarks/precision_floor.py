"""Calibration of the effective-precision verdict's floor (docs/tolerance.md, "Effective
precision"): for every float32 check with a precision measurement, each side's typical
error in single roundings of the exact result and the stage rule's k of the tensor
(Tolerance.roundings), for the legitimate computations (the reference or its fast kernels
against torch and TensorFlow) and for planted low-precision ones.

Populations (--populations, comma-separated):
  article   the article's step, seeds --seeds, stage and end to end, both frameworks;
  lenet     the lenet preset, seeds --seeds (impl: the fast kernels, as the gate runs it);
  norm      the two normalisation networks of test_norm_sweeps.py and the cancelling one
            of docs/normalisation.md, seeds --seeds (--norm-specs picks among them);
  planted   the article's planted mutants (float16 / bfloat16 operands at dE_df, TF32 at
            Z1), seeds --seeds, stage against both frameworks;
  planted-model  every float32 stage tensor of lenet and the two normalisation networks
            recomputed by the reference layer from --formats-rounded operands (its input, its
            parameters and its upstream gradient), products and sums in float32.

One CSV row per check on stdout (or --out): population, network, seed, tensor, framework,
mode, k, n, impl_roundings, against_roundings (the side's PRECISION_QUANTILE-th percentile
error over that of one rounding u |t|, at least 1), excess_fixed (the verdict with the
fixed floor of PRECISION_FLOOR_ROUNDINGS), excess_now (the verdict as metrics.py computes
it with the tensor's k). Summaries per population go to stderr.

    PARITY_MNIST=/path/to/mnist.npz .venv/bin/python benchmarks/precision_floor.py \\
        --populations article,lenet,norm,planted --seeds 0,1,2,3,4 --out floor.csv
"""

from __future__ import annotations  # noqa: I001  (pins first: the suite's environment before NumPy)

import parity_tests.pins

import argparse
import csv
import dataclasses
import sys

import numpy as np

from parity_tests import mutants, tolerance
from parity_tests.harness import Harness, RunConfig
from parity_tests.metrics import PRECISION_FLOOR_ROUNDINGS, precision_stats
from parity_tests.model_harness import ModelHarness
from parity_tests.stages import BY_TENSOR, END_TO_END, STAGES
from reference.data import load_article_data
from reference.fast_layers import fast_network
from reference.network import Network
from reference.published import ArticleStep

FRAMEWORKS = ("torch", "tensorflow")
NORM_SPECS = {
    "conv_bn_gn_gap": "conv(8,3,pad=1)-batchnorm-relu-maxpool(2)-conv(16,3)-groupnorm(4)-relu-gap-"
    "dense(10)-softmax_ce",
    "dense_ln_dropout": "dense(64)-layernorm-relu-dropout(0.5)-dense(10)-softmax_ce",
    # docs/normalisation.md's second cancelling case (conv3.dF, 135,200 terms: 18.9x before)
    "conv_bn_gn_ln": "conv(4,3,pad=1)-batchnorm-relu-conv(4,3)-groupnorm(2)-layernorm-relu-gap-"
    "dense(10)-softmax_ce",
}
PLANTED = ("dE_df_float16_operands", "dE_df_bfloat16_operands", "Z1_tf32")
FIELDS = (
    "population", "network", "seed", "tensor", "framework", "mode", "k", "n",
    "impl_roundings", "against_roundings", "excess_fixed", "excess_now", "impl_m", "against_m",
)  # fmt: skip


def roundings(p: dict, side: str) -> float:
    """A side's typical error in single roundings (>= 1: bits are capped at the mantissa)."""
    return 2.0 ** (p["mantissa"] - p[f"{side}_bits"])


def row(population, network, seed, tensor, framework, mode, c) -> dict | None:
    """The measurement of one Check, or None where the verdict measures nothing."""
    if c.truth is None:
        return None
    a, e = (np.asarray(x, np.float64) for x in (c.actual, c.expected))
    k = int(c.tolerance.roundings)
    p = precision_stats(a, e, c.truth, c.tolerance.array, c.expected.dtype, roundings=k)
    if p is None:
        return None
    ri, ra = roundings(p, "impl"), roundings(p, "against")
    fixed = max(ri, ra) / max(min(ri, ra), PRECISION_FLOOR_ROUNDINGS)
    # The same typical errors in roundings of the magnitude M (tol = 2 gamma(k) M): u M / tol
    # is u / (2 gamma(k)) where the allowance is the stage rule alone.
    keep = (np.broadcast_to(c.tolerance.array, a.shape) > 0) & np.isfinite(a) & np.isfinite(e)
    w = np.broadcast_to(c.tolerance.array, a.shape)[keep]
    unit = 2.0**-24 / (2 * tolerance.gamma(k, 2.0**-24)) if k else np.nan
    m = [np.percentile(np.abs(x[keep] - c.truth[keep]) / w, 90) / unit for x in (e, a)]
    return dict(
        population=population, network=network, seed=seed, tensor=tensor,
        framework=framework, mode=mode, k=k, n=p["n"], impl_roundings=round(ri, 3),
        against_roundings=round(ra, 3), excess_fixed=round(fixed, 3),
        excess_now=round(p["excess"], 3), impl_m=round(m[0], 4), against_m=round(m[1], 4),
    )  # fmt: skip


def article(data, seeds):
    for seed in seeds:
        h = Harness(RunConfig(seed=seed), data, impl=ArticleStep())
        for fw in FRAMEWORKS:
            for mode, stages, make in (
                ("stage", STAGES, h.stage_check),
                ("end_to_end", END_TO_END, h.end_to_end_check),
            ):
                for s in stages:
                    yield row("article", "article", seed, s.tensor, fw, mode, make(s, fw, "float32"))


def _model(population, name, spec, data, seeds, fast):
    for seed in seeds:
        net = Network(spec, seed=seed)
        impl = fast_network(spec, keep=0) if fast else None
        h = ModelHarness(net, RunConfig(seed=seed), data, impl=impl)
        for fw in FRAMEWORKS:
            for mode, make in (("stage", h.stage_check), ("end_to_end", h.end_to_end_check)):
                for tensor in net.order:
                    yield row(population, name, seed, tensor, fw, mode, make(tensor, fw, "float32"))


def planted(data, seeds):
    for seed in seeds:
        for m in PLANTED:
            step = mutants.MUTANTS[m]
            h = Harness(RunConfig(seed=seed, impl="planted"), data, impl=step)
            for fw in FRAMEWORKS:
                c = h.stage_check(BY_TENSOR[step.first], fw, "float32")
                yield row("planted", m, seed, step.first, fw, "stage", c)


def planted_model(data, seeds, formats, specs):
    """Every float32 stage check of `specs`, the implementation's tensor replaced by the
    reference layer on low-precision-rounded operands."""
    for name, spec in specs.items():
        for seed in seeds:
            net = Network(spec, seed=seed)
            h = ModelHarness(net, RunConfig(seed=seed), data)
            for tensor in net.order:
                if tensor.endswith("_new"):
                    continue
                c = h.stage_check(tensor, "torch", "float32")
                if c.truth is None:
                    continue
                node, x, up = h._stage_inputs(tensor, "float32", "reference")
                _, target = h.inputs("float32")
                params = h.params("float32")
                for fmt in formats:
                    rnd = lambda v: None if v is None else mutants.round_operand(v, fmt)  # noqa: E731
                    low = net.node_step(
                        node, rnd(x), {k: rnd(v) for k, v in params.items()}, rnd(up), target,
                        "sum",
                    )[tensor]  # fmt: skip
                    for fw in FRAMEWORKS:
                        cf = h.stage_check(tensor, fw, "float32")
                        if cf.truth is None:
                            continue
                        cf = dataclasses.replace(cf, expected=np.asarray(low))
                        yield row("planted-model", f"{name}:{fmt}", seed, tensor, fw, "stage", cf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--populations", default="article,lenet,norm,planted")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--formats", default="float16,bfloat16,tf32")
    ap.add_argument("--norm-specs", default=",".join(NORM_SPECS), help="names of NORM_SPECS")
    ap.add_argument("--out", default="-")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    data = load_article_data()
    parity_tests.pins.pin_framework_threads(FRAMEWORKS, {})
    gens = {
        "article": lambda: article(data, seeds),
        "lenet": lambda: _model("lenet", "lenet", "lenet", data, seeds, fast=True),
        "norm": lambda: (
            r
            for name, spec in NORM_SPECS.items()
            if name in args.norm_specs.split(",")
            for r in _model("norm", name, spec, data, seeds, fast=False)
        ),
        "planted": lambda: planted(data, seeds),
        "planted-model": lambda: planted_model(
            data, seeds, args.formats.split(","), {"lenet": "lenet", **NORM_SPECS}
        ),
    }
    out = sys.stdout if args.out == "-" else open(args.out, "a", newline="")  # noqa: SIM115
    w = csv.DictWriter(out, FIELDS)
    if out.tell() == 0:
        w.writeheader()
    for pop in args.populations.split(","):
        worst = {"excess_fixed": (0.0, ""), "excess_now": (0.0, "")}
        n = 0
        for r in gens[pop]():
            if r is None:
                continue
            n += 1
            w.writerow(r)
            out.flush()
            where = f"{r['network']} seed {r['seed']} {r['tensor']} {r['framework']} {r['mode']}"
            for key in worst:
                worst[key] = max(worst[key], (r[key], where))
        (fixed, at_fixed), (now, at_now) = worst["excess_fixed"], worst["excess_now"]
        print(
            f"{pop}: {n} measured; largest excess, fixed floor {fixed:.3g} ({at_fixed}); "
            f"k floor {now:.3g} ({at_now})",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()

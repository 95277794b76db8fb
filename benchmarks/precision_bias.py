"""Measures the statistic of the float32 scale verdict: the signed error, which a
scale error moves and rounding hardly does.

For each float32 check with a float64 truth t, each side x (the framework's result and the
implementation's) gets, over the elements the allowance measures (2-norms):

  s_x = <x - t, t> / <t, t>           its least-squares scale error against the truth
  d_x = |x - t| / |t|                 its root-mean-square relative error

A result x = t (1 + e) has s_x = e exactly; rounding moves s_x by a weighted mean of
relative errors, so |s_x| <= d_x always (Cauchy-Schwarz) and, where the elements' errors
are independent, |s_x| is about d_x / sqrt(n). The candidate verdict fails the
implementation where |s_impl| > C max(d_fw, floor): the framework's own dispersion (a
scaled implementation inflates its own d, not the framework's), with a floor that keeps a
legitimate but less accurate implementation green (the suite's: the implementation's
error left after its best scale, sqrt(d_impl^2 - s_impl^2), which a constant factor does
not inflate, and one rounding; three fixed floors for comparison).
For each floor and C the script prints how many correct implementations would fail, and
what the rule would detect: a scale error e fails once |s_impl + e| > C max(d_fw, floor),
about C max(d_fw, floor) + |s_impl|, over `legit` = max|framework - impl| / max|impl|, the
difference the check must tolerate (precision_sensitivity.py's column; the issue's target
is detection within 10x of it).

The suite's scale verdict (parity_tests/metrics.py, SCALE_LIMIT = 5, floored at the
implementation's error left after its best scale and at one rounding) was calibrated on
this (benchmarks/README.md, "The signed error"; docs/tolerance.md, "Scale").

    PARITY_MNIST=/path/to/mnist.npz .venv/bin/python benchmarks/precision_bias.py \\
        [--seeds 0-4] [--models article,lenet] [--C 3,4,5,6] [--csv PATH] [--from-csv PATH]
"""

from __future__ import annotations  # noqa: I001  (pins first: the suite's environment before NumPy)

import parity_tests.pins

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precision_sensitivity import _checks  # noqa: E402  (a sibling script, not a package)

from parity_tests.metrics import PRECISION_MIN_ELEMENTS  # noqa: E402
from reference.data import load_article_data  # noqa: E402

FRAMEWORKS = ("torch", "tensorflow")


def side_stats(x, t):
    """(s, d) of one side x against the truth t (module docstring)."""
    dx = x - t
    tt = float(np.dot(t, t))
    return float(np.dot(dx, t)) / tt, math.sqrt(float(np.dot(dx, dx)) / tt)


def rows(model, data, seed, modes):
    for mode, tensor, make in _checks(model, data, seed, modes):
        for fw in FRAMEWORKS:
            c = make(fw, "float32")
            if c.truth is None:
                continue
            a, e, t = (np.asarray(x, np.float64).ravel() for x in (c.actual, c.expected, c.truth))
            w = np.broadcast_to(c.tolerance.array, np.shape(c.truth)).ravel()
            keep = (w > 0) & np.isfinite(a) & np.isfinite(e)
            if keep.sum() < 2 or not np.any(t[keep]):
                continue
            s_fw, d_fw = side_stats(a[keep], t[keep])
            s_im, d_im = side_stats(e[keep], t[keep])
            scale = float(np.max(np.abs(e)))
            legit = float(np.max(np.abs(a - e))) / scale if scale else 0.0
            yield dict(
                seed=seed, model=model, mode=mode, tensor=tensor, framework=fw, n=int(keep.sum()),
                k=int(c.tolerance.roundings),
                s_fw=s_fw, d_fw=d_fw, s_impl=s_im, d_impl=d_im, legit=legit,
            )  # fmt: skip


def factors(text: str) -> list[float]:
    """--C: positive factors, comma-separated."""
    values = [float(c) for c in text.split(",")]
    if not values or min(values) <= 0:
        raise ValueError(text)
    return values


def new_file(text: str) -> Path:
    """--csv: a path nothing is at yet (an existing file is someone's rows: never replaced)."""
    path = Path(text)
    if path.exists() or path.is_symlink():
        raise argparse.ArgumentTypeError(f"{text!r} exists; name a new file")
    return path


def csv_file(text: str) -> Path:
    """--from-csv: a regular file (not a folder, a FIFO or a device)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a regular file")
    return path


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=seeds, default="0-4", help="a seed or a range LO-HI (default 0-4)")
    ap.add_argument("--models", default="article,lenet")
    ap.add_argument("--modes", default="stage,end_to_end")
    ap.add_argument("--C", type=factors, default=[3, 4, 5, 6],
                    help="the candidate factors, comma-separated (default 3,4,5,6)")  # fmt: skip
    ap.add_argument("--csv", type=new_file, default=None, help="write every row here (a new file)")
    ap.add_argument("--from-csv", type=csv_file, default=None, help="analyse rows written by --csv")
    args = ap.parse_args()
    if args.from_csv:
        df = pd.read_csv(args.from_csv)
    else:
        parity_tests.pins.pin_framework_threads(list(FRAMEWORKS), {})
        data = load_article_data()
        found = [
            r
            for seed in args.seeds
            for model in args.models.split(",")
            for r in rows(model, data, seed, args.modes.split(","))
        ]
        df = pd.DataFrame(found)
    if args.csv:  # beside its target, then renamed: an interrupted run leaves no half file
        part = args.csv.with_name(f".{args.csv.name}.part")
        df.to_csv(part, index=False)
        os.replace(part, args.csv)
    analyse(df, args.C)


def analyse(df: pd.DataFrame, factors) -> None:
    pd.set_option("display.width", 200)
    # The precision verdict's own minimum: a few elements give no distribution to judge.
    df = df[df.n >= PRECISION_MIN_ELEMENTS]
    n = PRECISION_MIN_ELEMENTS
    print(f"{len(df)} float32 checks with a truth and >= {n} elements; seeds {sorted(set(df.seed))}")
    u = 2.0**-24  # one rounding of the exact result, relative (float32)
    # The verdict's own: the implementation's error left after its best scale, one rounding.
    residual = np.sqrt(np.maximum(df.d_impl**2 - df.s_impl**2, 0.0))
    floors = {
        "residual, 1 rounding (the suite's)": np.maximum(residual, u),
        "none": 0.0 * df.k,
        "1 rounding": u + 0.0 * df.k,
        "sqrt(k)/16 roundings": np.sqrt(df.k) / 16 * u,
        "precision_floor(k)": np.maximum(8, np.sqrt(df.k) / 8) * u,
    }
    print("candidate: the implementation fails where |s_impl| > C max(d_fw, floor)")
    print(f"{'floor':34s} largest |s_impl|/max(d_fw, floor) of a correct side")
    for name, floor in floors.items():
        scale = np.maximum(df.d_fw, floor)
        ratio = df.s_impl.abs() / scale
        cells = []
        for C in factors:
            detects = C * scale + df.s_impl.abs()
            sharp = (detects / df.legit).where(df.legit > 0)
            cells.append(
                f"C={C:g}: {int((ratio > C).sum())} false, detects within {sharp.max():.3g}x "
                f"legit (over 10x: {int((sharp > 10).sum())} of {int(sharp.notna().sum())})"
            )
        print(f"{name:34s} {ratio.max():6.3g}   " + "; ".join(cells))
    ratio = df.s_impl.abs() / df.d_fw
    cols = [
        "seed",
        "model",
        "mode",
        "tensor",
        "framework",
        "n",
        "k",
        "s_fw",
        "d_fw",
        "s_impl",
        "d_impl",
        "legit",
    ]
    print("the correct implementations closest to failing (no floor):")
    top = df.assign(ratio=ratio).sort_values("ratio", ascending=False).head(6)
    print(top[cols + ["ratio"]].to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()

"""False alarms of the K-step trajectory checks: seeds x dtypes x frameworks x optimisers.

Every optimiser of the registry at its defaults (sgd at the suite's 2^-4), K steps on the
run's batch, the article's network and LeNet (--models), each framework's own loop against
the reference in its convention, every parameter and state at every step under the
allowance of parity_tests/trajectory.py. Prints, per model and optimiser, the comparisons,
the failures (false alarms: nothing here is wrong), the worst budget under the allowance
and under the drift bound alone, and the steps up to which each run agreed within the
drift bound alone (chaos takes over after).

    PARITY_MNIST=/path/mnist.npz .venv/bin/python benchmarks/trajectory_sweep.py \\
        [--seeds 0-19] [--steps 10] [--models article,lenet] [--optimisers all] [--n-images 200]
"""

from __future__ import annotations

import argparse
import time

from parity_tests.trajectory import sweep
from reference import optim_registry as registry
from reference.data import load_article_data


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0-19")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--models", default="article,lenet")
    ap.add_argument("--optimisers", default="all")
    ap.add_argument("--n-images", type=int, default=200)
    args = ap.parse_args(argv)
    data = load_article_data(args.n_images)
    names = list(registry.OPTIMISERS) if args.optimisers == "all" else args.optimisers.split(",")
    seeds = _seeds(args.seeds)
    total_fails = 0
    print(
        "| model | optimiser | seeds | comparisons | false alarms | worst budget "
        "| worst, drift bound alone | agrees up to step | time |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for model in args.models.split(","):
        for name in names:
            t0 = time.time()
            n, fails, worst, alone, agreed = sweep(model, name, seeds, args.steps, data)
            total_fails += len(fails)
            print(
                f"| {model} | {name} | {args.seeds} | {n} | {len(fails)} | {worst:.3g} | {alone:.3g} | "
                f"{','.join(map(str, agreed))} | {time.time() - t0:.0f} s |",
                flush=True,
            )
            for f in fails[:5]:
                print("    false alarm:", f, flush=True)
    return 1 if total_fails else 0


if __name__ == "__main__":
    raise SystemExit(main())

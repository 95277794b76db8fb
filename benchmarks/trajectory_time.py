"""A K-step training run of a spec network: the reference's loop against torch's own.

Times, per dtype, the same K steps (default 10) of the --model network (default LeNet)
at --n-images images (default 64) with --optim (default adam): the reference's readable
loop (parity_tests/trajectory.py: reference/network.py forward and backward, then
reference/optim_registry.py per parameter) and torch's (parity_tests/mirrors/optim_torch.py:
zero_grad, forward, backward, opt.step), median of --repeats runs, interleaved. The
reference's loop is timed without the drift bound's bookkeeping (training alone).

    PARITY_MNIST=/path/mnist.npz .venv/bin/python benchmarks/trajectory_time.py \\
        [--model lenet] [--n-images 64] [--steps 10] [--optim adam] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from parity_tests.mirrors import optim_torch
from parity_tests.trajectory import Trajectory
from reference import optim_registry as registry
from reference.data import load_article_data
from reference.network import Network

# The reference's own update, run as an "optimiser under test": the loop without the drift
# bound's bookkeeping (each gradient's stage allowance), i.e. training alone.
PLAIN = registry.Mistake("none", "the reference itself", "", None, "p_new")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--optim", default="adam")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    data = load_article_data(args.n_images)
    name, h = registry.parse(args.optim)
    net = Network(args.model)
    print(f"| dtype | reference, {args.steps} steps | torch | ratio |")
    print("| --- | --- | --- | --- |")
    for dtype in ("float32", "float64"):
        times = {"reference": [], "torch": []}
        for repeat in range(args.repeats + 1):  # the first: warm-up, not timed
            tr = Trajectory(net, 0, "sum", data, name, h, args.steps)
            X, target = tr.batch(dtype)
            start = tr._start(dtype)
            t0 = time.perf_counter()
            tr._run("torch", dtype, (), PLAIN)
            times["reference"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            optim_torch.train(net, start, [(X, target)] * args.steps, "sum", name, h)
            times["torch"].append(time.perf_counter() - t0)
            if repeat == 0:
                times = {"reference": [], "torch": []}
        ref, tor = (statistics.median(times[k]) for k in ("reference", "torch"))
        print(f"| {dtype} | {ref * 1e3:.0f} ms | {tor * 1e3:.0f} ms | {ref / tor:.1f} |")


if __name__ == "__main__":
    main()

"""What running the notebook API's function objects in a forked child costs.

    PARITY_MNIST=/path/to/mnist.npz .venv/bin/python benchmarks/notebook_isolation.py [--repeats 2]

Times whole calls of `check` (a reference train_step, the default 200 images, both
frameworks and dtypes), `check_layers` (examples/cs231n_layers/layers.py's relu and conv)
and `check_optimiser` (examples/optim/optim.py's adam, 200 drawn cases) with
isolation="inline" and isolation="process", alternating the two so that background load
hits both alike, and prints the best of `--repeats` for each; then the round trip of one
call of a forked child (parity_tests/user_process.py FunctionProcess) on float64 arrays of
three sizes, and a fork + first answer + stop, in this process with torch and TensorFlow
loaded (as in a notebook's kernel after a first check).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parity_tests import check, check_layers, check_optimiser, user_process  # noqa: E402
from parity_tests.test_api import (  # noqa: E402
    _example_layers,
    _example_optim,
    _reference_step,
)


def calls() -> dict:
    layers = _example_layers("layers")
    adam = _example_optim("optim").adam
    pairs = {
        "relu": (layers.relu_forward, layers.relu_backward),
        "conv": (layers.conv_forward, layers.conv_backward),
    }
    return {
        "check(reference step)": lambda i: check(_reference_step, isolation=i),
        "check_layers(relu, conv)": lambda i: check_layers(pairs, isolation=i),
        "check_optimiser(adam)": lambda i: check_optimiser(adam, "adam", isolation=i),
    }


def round_trips() -> None:
    process = user_process.FunctionProcess({"ident": lambda x: x}, "ident", 20)
    ident = user_process.RemoteFunction(process, "ident", "ident")
    ident(np.zeros(1))
    for n, k in ((10, 300), (100_000, 300), (1_000_000, 30)):
        y = np.zeros(n)
        start = time.perf_counter()
        for _ in range(k):
            ident(y)
        each = (time.perf_counter() - start) / k
        print(f"round trip, {n:>9,}-element float64 array: {each * 1e3:.2f} ms")
    start = time.perf_counter()
    for _ in range(10):
        process.stop()
        process.load()
    print(f"fork + first answer + stop: {(time.perf_counter() - start) / 10 * 1e3:.0f} ms")
    process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for name, run in calls().items():
        run("inline")  # warm: the data, the frameworks, the mirrors
        best: dict = {}
        for _ in range(args.repeats):
            for isolation in ("inline", "process"):
                start = time.perf_counter()
                result = run(isolation)
                best[isolation] = min(best.get(isolation, np.inf), time.perf_counter() - start)
                assert result.passed, result.headline
        print(f"{name}: inline {best['inline']:.2f} s, process {best['process']:.2f} s")
    round_trips()


if __name__ == "__main__":
    main()

"""What running --parity-layer functions in a child process costs, per call.

    .venv/bin/python benchmarks/layer_isolation.py [--repeats 7]

Calls examples/cs231n_layers/layers.py's relu_forward and relu_backward (a forward, then
the backward with its cache) on arrays of three sizes, inline (the functions imported
here) and in a child process (parity_tests/user_process.py, as --parity-layer-isolation
process calls them), and prints the median time of one forward + backward pair in each
mode. Rounds alternate the two modes, so that background load hits both alike. The
biggest size is lenet's first ReLU at 200 images (200 x 6 x 24 x 24 float64, 5.5 MB).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parity_tests import own_layers  # noqa: E402

LAYERS = ROOT / "examples" / "cs231n_layers" / "layers.py"
SHAPES = {
    "hypothesis draw (2x3x6x6)": (2, 3, 6, 6),
    "1 image": (1, 6, 24, 24),
    "200 images": (200, 6, 24, 24),
}


def pair_seconds(layer, x: np.ndarray, calls: int) -> float:
    forward, backward = layer.functions
    start = time.perf_counter()
    for _ in range(calls):
        _, cache = forward(x)
        backward(x, cache)
    return (time.perf_counter() - start) / calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per mode and size")
    args = parser.parse_args(argv)
    value = own_layers.option_value("relu", LAYERS)
    modes = {m: own_layers.parse_layer(value, m) for m in ("inline", "process")}
    rng = np.random.default_rng(0)
    print("| arrays | inline | child process | difference |")
    print("| --- | --- | --- | --- |")
    for label, shape in SHAPES.items():
        x = rng.standard_normal(shape)
        calls = max(1, int(2e6 // x.size))  # about as much work per round at every size
        times: dict = {m: [] for m in modes}
        for layer in modes.values():
            pair_seconds(layer, x, 1)  # warm-up
        for _ in range(args.repeats):
            for mode, layer in modes.items():
                times[mode].append(pair_seconds(layer, x, calls))
        inline, child = (statistics.median(times[m]) * 1e3 for m in ("inline", "process"))
        print(f"| {label} | {inline:.3g} ms | {child:.3g} ms | +{child - inline:.3g} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

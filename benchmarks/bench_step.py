"""Time one training step (forward + backward + update) of the article's model.

    .venv/bin/python benchmarks/bench_step.py [--sizes 200,1000,5000] [--dtypes float32,float64]
        [--repeats 7] [--threads N] [--json PATH] [--data PATH|synthetic]

Implementations (`--impls`, default all):

  reference    reference.fast.train_step (the fast path `--parity-impl reference` checks):
               every named tensor of the step (validated inputs, the article layout), new
               parameters returned
  torch        PyTorch CPU: parity_tests.mirrors.torch_mirror.ArticleNet built once,
               autograd + torch.optim.SGD; timed: zero_grad, forward, loss, backward, step
  tf_eager     TensorFlow eager: parity_tests.mirrors.tf_mirror.ArticleNet (Keras layers)
               built once, GradientTape + keras SGD.apply_gradients
  tf_function  the same step compiled with tf.function (traced during warm-up)
  loop         benchmarks/loop_impl.py, the article's Python loops over images and windows
               (batch 200 only: it is slow by design)

Method: everything runs in one process. For each batch size and dtype, every
implementation is built once and warmed up, then the repeats are interleaved (round
robin, order rotated each round), so background load drifts through all of them alike;
each timed step follows a short sleep (`--settle`), so that worker threads left spinning by
the previous implementation (OpenBLAS spins for ~0.1 s) do not steal a core, and then one
untimed step of the same implementation (`--lead`), so that its own threads are awake and
its caches and allocator warm, as for a step inside a training loop. The reported time
is the median (the minimum is in the JSON). Ratios are to torch at the same batch size and
dtype, twice: the ratio of the two medians, and the median (with quartiles) of the per-round
ratios, each step over torch's step of the same round (paired: steadier on a machine whose
speed drifts by 1.5x over minutes).
Before timing, each implementation's first step (from the same initial weights) must give
the reference's loss E to within 1e-4 (float32) / 1e-9 (float64) relative, so a fast wrong
step cannot be reported.

Threads: by default every library keeps its own default (recorded in the JSON). `--threads
N` sets all alike: NumPy's BLAS (threadpoolctl when installed, else OPENBLAS/OMP/MKL
_NUM_THREADS set before NumPy is imported), torch.set_num_threads, and TensorFlow's
intra- and inter-op pools.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("reference", "torch", "tf_eager", "tf_function", "loop")
LOOP_MAX_BATCH = 200
# reference.update.SUITE_LR, the suite's learning rate; not imported: NumPy must load after the
# thread settings (test_bench_step checks that the two agree).
LR = 2.0**-4
LOSS_RTOL = {"float32": 1e-4, "float64": 1e-9}


def _csv(kind, allowed=None):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            items = [kind(t) for t in items]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        bad = [t for t in items if allowed is not None and t not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not in {list(allowed)}")
        if kind is int and min(items) < 1:
            raise argparse.ArgumentTypeError("sizes must be >= 1")
        return items

    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sizes",
        type=_csv(int),
        default=[200, 1000, 5000],
        help="batch sizes, comma-separated (default 200,1000,5000)",
    )
    p.add_argument(
        "--dtypes",
        type=_csv(str, ("float32", "float64")),
        default=["float32", "float64"],
        help="default float32,float64",
    )
    p.add_argument(
        "--impls", type=_csv(str, IMPLS), default=list(IMPLS), help=f"default {','.join(IMPLS)}"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="timed steps per implementation and size (median reported; default 7)",
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument(
        "--loop-repeats",
        type=int,
        default=3,
        help="timed steps of the (slow) loop implementation (default 3)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=0.2,
        help="seconds of sleep before each timed step, so that worker threads "
        "left spinning by the previous one park (default 0.2)",
    )
    p.add_argument(
        "--lead",
        type=int,
        default=1,
        help="untimed steps of the same implementation right before each timed "
        "one, after the settle (default 1; not for the loop implementation)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for NumPy's BLAS, torch and TensorFlow alike (default: each "
        "library's own default, recorded)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="MNIST .npz / IDX folder, or 'synthetic' (default: $PARITY_MNIST, the "
        "keras cache, ... as reference.data.load_article_data)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the reference's peak-memory measurement (tracemalloc)",
    )
    args = p.parse_args(argv)
    if args.repeats < 1 or args.loop_repeats < 1 or args.warmup < 0 or args.settle < 0 or args.lead < 0:
        p.error("--repeats and --loop-repeats must be >= 1, --warmup, --settle, --lead >= 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def _limit_env_threads(n):
    # Read by OpenBLAS / OpenMP / MKL when NumPy loads them: only effective before import.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


class Setup:
    """Imports the libraries (after the thread settings) and records what is in force."""

    def __init__(self, args):
        self.args = args
        self.blas_limit = None
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if args.threads is not None:
            try:
                import threadpoolctl
            except ImportError:
                threadpoolctl = None
                if "numpy" in sys.modules:
                    raise SystemExit(
                        "--threads without threadpoolctl must be applied before NumPy is imported"
                    ) from None
                _limit_env_threads(args.threads)
            if threadpoolctl is not None:
                import numpy  # noqa: F401  (loads the BLAS that threadpoolctl then limits)

                self.blas_limit = threadpoolctl.threadpool_limits(args.threads)
        sys.path.insert(0, str(ROOT))
        import numpy as np

        self.np = np
        need = set(args.impls)
        self.torch = self.tf = None
        if "torch" in need:
            import torch

            if args.threads is not None:
                torch.set_num_threads(args.threads)
                try:
                    torch.set_num_interop_threads(args.threads)
                except RuntimeError:
                    pass
            self.torch = torch
        if need & {"tf_eager", "tf_function"}:
            import tensorflow as tf

            if args.threads is not None:
                tf.config.threading.set_intra_op_parallelism_threads(args.threads)
                tf.config.threading.set_inter_op_parallelism_threads(args.threads)
            self.tf = tf

    def environment(self) -> dict:
        np = self.np
        env = {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "threads_option": self.args.threads,
            "blas_threads": _blas_threads(),
            "env": {
                k: os.environ[k]
                for k in sorted(os.environ)
                if k.endswith("_NUM_THREADS") or k.startswith("TF_ENABLE_ONEDNN")
            },
        }
        if self.torch is not None:
            env.update(
                torch=self.torch.__version__,
                torch_num_threads=self.torch.get_num_threads(),
                torch_num_interop_threads=self.torch.get_num_interop_threads(),
            )
        if self.tf is not None:
            t = self.tf.config.threading
            env.update(
                tensorflow=self.tf.__version__,
                tf_intra_op_threads=t.get_intra_op_parallelism_threads(),
                tf_inter_op_threads=t.get_inter_op_parallelism_threads(),
                tf_threads_note="0 means TensorFlow's default (one per core)",
            )
        return env


def _blas_threads():
    try:
        import threadpoolctl
    except ImportError:
        return os.environ.get("OPENBLAS_NUM_THREADS") or "library default (threadpoolctl not installed)"
    return [
        {k: info.get(k) for k in ("internal_api", "num_threads", "version")}
        for info in threadpoolctl.threadpool_info()
    ]


# --------------------------------------------------------------------------- the steps
# Each builder returns step() -> float (the loss E of that step, as a Python float), with
# everything that is not part of a training step (building the model, converting the
# data to the framework's layout) done once, outside.


def build_reference(setup, params, X, y):
    from reference import fast

    def step():
        return float(fast.train_step(params, X, y, lr=LR)["E"])

    return step


def build_loop(setup, params, X, y):
    from benchmarks import loop_impl

    def step():
        return float(loop_impl.train_step(params, X, y, lr=LR)["E"])

    return step


def build_torch(setup, params, X, y):
    from parity_tests.mirrors.torch_mirror import ArticleNet
    from reference import layout

    torch = setup.torch
    net = ArticleNet(params["f"], params["W"], params["b"])
    x = torch.from_numpy(layout.images_to_nchw(X))
    t = torch.from_numpy(layout.row_to_column(y))
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def step():
        opt.zero_grad()
        o = net(x)["O"]
        E = ((t - o) ** 2 / 2).sum()
        E.backward()
        opt.step()
        return E.item()

    return step


def _tf_parts(setup, params, X, y):
    import keras

    from parity_tests.mirrors.tf_mirror import ArticleNet
    from reference import layout

    tf = setup.tf
    net = ArticleNet(params["f"], params["W"], params["b"])
    x = tf.constant(layout.images_to_nhwc(X))
    t = tf.constant(layout.row_to_column(y))
    opt = keras.optimizers.SGD(learning_rate=LR)
    opt.build(net.variables)

    def raw_step():
        with tf.GradientTape() as tape:
            o = net(x)["O"]
            E = tf.reduce_sum((t - o) ** 2 / 2)
        grads = tape.gradient(E, net.variables)
        opt.apply_gradients(zip(grads, net.variables))
        return E

    return raw_step


def build_tf_eager(setup, params, X, y):
    raw = _tf_parts(setup, params, X, y)
    return lambda: float(raw().numpy())


def build_tf_function(setup, params, X, y):
    compiled = setup.tf.function(_tf_parts(setup, params, X, y))
    return lambda: float(compiled().numpy())


BUILDERS = {
    "reference": build_reference,
    "torch": build_torch,
    "tf_eager": build_tf_eager,
    "tf_function": build_tf_function,
    "loop": build_loop,
}


# --------------------------------------------------------------------------- measuring


def _extent(a) -> int:
    """Bytes of memory an array spans (a strided view counts what it covers, not its
    logical size: the patches view of 25 * 576 values per image spans 5 * 28 * 24)."""
    import numpy as np

    try:
        from numpy.lib.array_utils import byte_bounds  # numpy >= 2.0
    except ImportError:
        byte_bounds = np.byte_bounds
    low, high = byte_bounds(np.asarray(a))
    return int(high - low)


def reference_peak_memory(params, X, y) -> dict:
    """Peak bytes NumPy allocates during one reference step (tracemalloc sees NumPy's data
    buffers), against the input X and against what the step returns."""
    import tracemalloc

    from reference import fast

    gc.collect()
    tracemalloc.start()
    out = fast.train_step(params, X, y, lr=LR)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    spans = {k: _extent(v) for k, v in out.items() if k not in ("X", "f", "W", "b")}
    largest = max(spans, key=spans.get)
    returned = sum(spans.values())
    return {
        "input_bytes": int(X.nbytes),
        "peak_bytes": int(peak),
        "peak_over_input": round(peak / X.nbytes, 2),
        "returned_bytes": returned,
        "returned_over_input": round(returned / X.nbytes, 2),
        "peak_over_returned": round(peak / returned, 2),
        "largest_tensor": largest,
        "largest_tensor_bytes": spans[largest],
        "largest_over_input": round(spans[largest] / X.nbytes, 2),
    }


def _cpu_counters():
    """(busy jiffies of the whole machine, total jiffies, this process's jiffies) or None."""
    try:
        with open("/proc/stat") as fh:
            cpu = [int(v) for v in fh.readline().split()[1:]]
        with open("/proc/self/stat") as fh:
            mine = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    idle = cpu[3] + cpu[4]
    return sum(cpu) - idle, sum(cpu), int(mine[11]) + int(mine[12])


def foreign_cpu_share(before, after):
    """Share of the machine's CPU time that other processes used between two counters:
    a noisy-neighbour indicator for the timings taken in between (Linux only)."""
    if before is None or after is None or after[1] == before[1]:
        return None
    busy, total, mine = (a - b for a, b in zip(after, before))
    return round(max(0, busy - mine) / total, 3)


def paired_ratios(times, torch_times):
    """Median and quartiles of the per-round ratios time / torch's time in the same round.

    Rounds interleave the implementations, so a round's two steps ran seconds apart under
    the same background load; the ratio of two medians mixes steps minutes apart. On a
    machine whose speed drifts, the paired ratios are the steadier estimate (both are
    reported). None with fewer than two pairs.
    """
    pairs = sorted(t / u for t, u in zip(times, torch_times))
    if len(pairs) < 2:
        return None
    q25, q50, q75 = statistics.quantiles(pairs, n=4, method="inclusive")
    return {"median": round(q50, 3), "q25": round(q25, 3), "q75": round(q75, 3), "pairs": len(pairs)}


def measure(steps: dict, repeats: dict, warmup: int, settle: float, lead: int) -> dict:
    for name, step in steps.items():
        for _ in range(warmup if name != "loop" else min(warmup, 1)):
            step()
    times = {name: [] for name in steps}
    names = list(steps)
    rounds = max(repeats.values())
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                if len(times[name]) >= repeats[name]:
                    continue
                # BLAS / OpenMP worker threads spin for a while after their last job
                # (OpenBLAS ~0.1 s): let the previous implementation's park first, so
                # they do not steal a core from this one; then one untimed step wakes
                # this implementation's own threads and caches, so the timed step runs
                # as a step inside a training loop does (right after another).
                time.sleep(settle)
                for _ in range(lead if name != "loop" else 0):
                    steps[name]()
                t0 = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return times


def run(args) -> dict:
    setup = Setup(args)
    np = setup.np
    from reference import model
    from reference.data import load_article_data

    data = load_article_data(max(args.sizes), source=args.data)
    results = []
    for size in args.sizes:
        for dtype in args.dtypes:
            X = np.asarray(data.X[:, :, :size], dtype=dtype)  # keeps the article's layout
            y = np.asarray(data.y[:, :size], dtype=dtype)
            params = model.init_params(0, dtype)
            impls = [i for i in args.impls if i != "loop" or size <= LOOP_MAX_BATCH]
            steps, checks = {}, {}
            E_ref = float(model.train_step(params, X, y, lr=LR)["E"])
            for name in impls:
                steps[name] = BUILDERS[name](setup, params, X, y)
                E = steps[name]()  # first step: from the shared weights
                rel = abs(E - E_ref) / abs(E_ref)
                checks[name] = rel
                if rel > LOSS_RTOL[dtype]:
                    raise SystemExit(
                        f"{name} {dtype} batch {size}: first-step loss {E!r} "
                        f"differs from the reference's {E_ref!r} (rel {rel:.3g})"
                    )
            repeats = {n: args.loop_repeats if n == "loop" else args.repeats for n in steps}
            before = _cpu_counters()
            times = measure(steps, repeats, args.warmup, args.settle, args.lead)
            foreign = foreign_cpu_share(before, _cpu_counters())
            if foreign is not None and foreign > 0.05:
                print(
                    f"  note: other processes used {foreign:.0%} of the CPU during these "
                    f"timings; ratios may be skewed",
                    flush=True,
                )
            med = {n: statistics.median(t) for n, t in times.items()}
            paired = {
                n: paired_ratios(times[n], times["torch"]) if "torch" in times else None for n in impls
            }
            for name in impls:
                row = {
                    "impl": name,
                    "batch": size,
                    "dtype": dtype,
                    "median_ms": round(med[name] * 1e3, 3),
                    "min_ms": round(min(times[name]) * 1e3, 3),
                    "repeats": len(times[name]),
                    "ratio_to_torch": (round(med[name] / med["torch"], 3) if "torch" in med else None),
                    "paired_ratio_to_torch": paired[name],
                    "first_step_loss_rel_diff": checks[name],
                    "other_processes_cpu_share": foreign,
                }
                if name == "reference" and not args.no_memory:
                    row["memory"] = reference_peak_memory(params, X, y)
                results.append(row)
                _print_row(row)
    return {
        "benchmark": "article model, one training step (forward + backward + SGD update)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "data_source": data.source,
        "lr": LR,
        "environment": setup.environment(),
        "results": results,
    }


def _print_row(row):
    ratio = "" if row["ratio_to_torch"] is None else f"{row['ratio_to_torch']:.2f}"
    pr = row.get("paired_ratio_to_torch")
    paired = (
        ""
        if pr is None or row["impl"] == "torch"
        else (f"  paired {pr['median']:.2f} [{pr['q25']:.2f}-{pr['q75']:.2f}]")
    )
    mem = row.get("memory")
    extra = (
        (
            f"  peak {mem['peak_bytes'] / 2**20:.0f} MiB = {mem['peak_over_input']}x input "
            f"({mem['peak_over_returned']}x what it returns; largest tensor "
            f"{mem['largest_tensor']} {mem['largest_over_input']}x input)"
        )
        if mem
        else ""
    )
    print(
        f"{row['impl']:<12} {row['batch']:>6} {row['dtype']:<8} {row['median_ms']:>10.2f} "
        f"{ratio:>8}{paired}{extra}",
        flush=True,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"{'impl':<12} {'batch':>6} {'dtype':<8} {'median ms':>10} {'/torch':>8}", flush=True)
    report = run(args)
    print(
        "/torch: median over torch's median at the same size and dtype; paired: median "
        "[quartiles] of the per-round ratios (steadier when the machine's speed drifts)"
    )
    env = report["environment"]
    print(
        f"threads: torch {env.get('torch_num_threads')}, blas {env['blas_threads']}, "
        f"tf intra {env.get('tf_intra_op_threads')} (0 = default), cpus {env['cpu_count']}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time one training step (forward + backward + update) of the article's model, or of any spec.

    .venv/bin/python benchmarks/bench_step.py [--sizes 200,1000,5000] [--dtypes float32,float64]
        [--repeats 7] [--threads N] [--json PATH] [--data PATH|synthetic]
    .venv/bin/python benchmarks/bench_step.py --model lenet [--sizes 64,256] [--reduction mean] ...

Implementations (`--impls`, default all):

  reference    reference.fast.train_step (the fast path `--parity-impl reference` checks):
               every named tensor of the step (validated inputs, the article layout), new
               parameters returned
  torch        PyTorch CPU: the article network as the torch mirror runs it (the spec
               builder below), built once, autograd + torch.optim.SGD; timed: zero_grad, forward, loss,
               backward, step
  tf_eager     TensorFlow eager: the same network as the TensorFlow mirror runs it, built
               once, GradientTape + keras SGD.apply_gradients
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

Any other model: `--model SPEC` (a spec string or a preset name, reference/spec.py; the
default `article` is everything above, unchanged) times the spec network's reference step
(`reference`: reference.fast_layers.fast_network(SPEC).train_step, the fast kernels the
checks run, proven equal to the readable layers; `readable`, on request: reference.network
.Network(SPEC).train_step, the layer-by-layer reference/layers/) against the same network in
torch and TensorFlow as the parity mirrors run it (parity_tests/mirrors/model_torch.py and
model_tf.py: one framework function per layer kind, F.conv2d, tf.nn.conv2d, ...) from the
same initial weights (Network.init_params(0)) held as nn.Parameters / tf.Variables: autograd
+ torch.optim.SGD; NHWC with HWIO filters, GradientTape + keras SGD, eager and under
tf.function. (Until 2026-12 the models were nn.Sequential / keras.Sequential; Keras layers
added eager-mode overhead to the tf_eager rows, the kernels are the same.) Batch sizes 64
and 256 by default (`--sizes` overrides), both dtypes, the MNIST images and their digits
(softmax_ce) or the digit > 4 targets (mse). `--reduction` (default mean) is the loss's
reduction over images: the frameworks update their own weights in place step after step,
and with "sum" at batch 256 LeNet's loss explodes (~1e15) within ten steps; the
reference's step is a pure function of the initial weights. Method, interleaving, the
first-step loss check and the JSON are the article's (the loop implementation exists for
the article only).

Memory (`--model` only, not with `--no-memory`): for every implementation, batch size and
dtype, a fresh subprocess (this script with `--memory-probe`) imports only that library,
builds the model and the batch, then measures the resident set (Linux /proc/self/status)
around one step: the kernel's peak counter VmHWM is reset to the current VmRSS
(/proc/self/clear_refs) right before the step, and the peak's rise over the RSS before it
is what the step made resident. `first_step_peak_mib` is the first step (one-time set-up
included: oneDNN primitives, tf.function's tracing), `step_peak_mib` a later step (the
steady state of a training loop). One subprocess each because RSS is per process and the
three libraries allocate through different allocators: tracemalloc sees NumPy's buffers
only, not torch's or TensorFlow's, so it cannot compare them; RSS can, in pages, and it
does not count memory an allocator kept from an earlier step and reuses (glibc returns
blocks above its mmap threshold, <= 32 MiB, to the kernel and gets them back zeroed: those
are counted again every step). For the reference the probe also reports tracemalloc's
exact peak of NumPy allocations during a step (`numpy_tracemalloc_peak_mib`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("reference", "torch", "tf_eager", "tf_function", "loop", "readable")
ARTICLE = "article"  # --model's default: the article path (reference.fast and the mirrors)
ARTICLE_SIZES = [200, 1000, 5000]
SPEC_IMPLS = ("reference", "torch", "tf_eager", "tf_function")
# --model only, on request: the readable Network the fast kernels are proven equal to.
SPEC_ONLY = ("readable",)
SPEC_SIZES = [64, 256]
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
        "--model",
        default=ARTICLE,
        help="'article' (default: the article's model, reference.fast) or any spec string or "
        "preset, e.g. lenet or 'conv(4,3)-relu-maxpool(2)-dense(10)-softmax_ce' "
        "(reference.network.Network)",
    )
    p.add_argument(
        "--sizes",
        type=_csv(int),
        default=None,
        help="batch sizes, comma-separated (default 200,1000,5000; 64,256 with --model)",
    )
    p.add_argument(
        "--dtypes",
        type=_csv(str, ("float32", "float64")),
        default=["float32", "float64"],
        help="default float32,float64",
    )
    p.add_argument(
        "--impls",
        type=_csv(str, IMPLS),
        default=None,
        help=f"default {','.join(IMPLS)} (no loop with --model)",
    )
    p.add_argument(
        "--reduction",
        choices=("sum", "mean"),
        default=None,
        help="the loss's reduction over images, --model only (default mean; the article path uses sum)",
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
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: time.perf_counter (default); cpu: time.process_time, the CPU time of "
        "this process's threads, which other load on the machine barely changes (use it "
        "with --threads 1: with more threads it adds up their spinning too)",
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
        help="skip the peak-memory measurement (article: the reference's, tracemalloc; "
        "--model: every implementation's, one subprocess each)",
    )
    p.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model == ARTICLE:
        if args.reduction is not None:
            p.error("--reduction is for --model other than article (the article path uses sum)")
        args.sizes = ARTICLE_SIZES if args.sizes is None else args.sizes
        args.impls = [i for i in IMPLS if i not in SPEC_ONLY] if args.impls is None else args.impls
        if any(i in SPEC_ONLY for i in args.impls):
            p.error(f"--impls {','.join(SPEC_ONLY)} is for --model other than article")
    else:
        try:
            _check_spec(args.model)
        except (TypeError, ValueError) as exc:
            p.error(f"--model: {exc}")
        if args.impls is not None and "loop" in args.impls:
            p.error("the loop implementation is the article's; not with --model")
        args.sizes = SPEC_SIZES if args.sizes is None else args.sizes
        args.impls = list(SPEC_IMPLS) if args.impls is None else args.impls
        args.reduction = args.reduction or "mean"
    if args.repeats < 1 or args.loop_repeats < 1 or args.warmup < 0 or args.settle < 0 or args.lead < 0:
        p.error("--repeats and --loop-repeats must be >= 1, --warmup, --settle, --lead >= 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def _check_spec(model: str) -> None:
    """ValueError (naming the layer) if --model cannot be built. reference.spec is plain
    Python: NumPy is not imported yet. The article's spec string, as opposed to the name
    `article`, takes the --model path: reference.network's layers, not reference.fast."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from reference.spec import parse_spec

    parse_spec(model)


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


def _article_case(params, X, y):
    """The article's model as the spec network it is (Network("article"), through the
    article view parity_tests/stages.py): its torch and Keras models are the spec's."""
    import numpy as np

    from parity_tests import stages
    from reference import layout

    dtype = str(params["f"].dtype)
    case = SpecCase(stages.NETWORK, layout.images_to_nchw(X), np.zeros(X.shape[2]), dtype, "sum")
    case.params = stages.network_params(params)
    case.target = layout.row_to_column(y)  # the article's binary labels (E7)
    return case


def build_torch(setup, params, X, y):
    return build_spec_torch(setup, _article_case(params, X, y))


def _tf_parts(setup, params, X, y):
    return _spec_tf_parts(setup, _article_case(params, X, y))


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


def _clock(args):
    return time.process_time if args.clock == "cpu" else time.perf_counter


def measure(
    steps: dict, repeats: dict, warmup: int, settle: float, lead: int, clock=time.perf_counter
) -> dict:
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
                t0 = clock()
                steps[name]()
                times[name].append(clock() - t0)
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
            times = measure(steps, repeats, args.warmup, args.settle, args.lead, _clock(args))
            foreign = foreign_cpu_share(before, _cpu_counters())
            if foreign is not None and foreign > 0.05:
                print(
                    f"  note: other processes used {foreign:.0%} of the CPU during these "
                    f"timings; ratios may be skewed",
                    flush=True,
                )
            med = {n: statistics.median(t) for n, t in times.items()}
            for name in impls:
                row = _result_row(name, size, dtype, times, med, checks, foreign)
                if name == "reference" and not args.no_memory:
                    row["memory"] = reference_peak_memory(params, X, y)
                results.append(row)
                _print_row(row)
    return {
        "benchmark": "article model, one training step (forward + backward + SGD update)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "data_source": data.source,
        "lr": LR,
        "clock": args.clock,
        "environment": setup.environment(),
        "results": results,
    }


def _result_row(name, size, dtype, times, med, checks, foreign) -> dict:
    """One implementation's timings at one batch size and dtype, as the JSON and the table
    show them (the article path and --model alike)."""
    return {
        "impl": name,
        "batch": size,
        "dtype": dtype,
        "median_ms": round(med[name] * 1e3, 3),
        "min_ms": round(min(times[name]) * 1e3, 3),
        "repeats": len(times[name]),
        "ratio_to_torch": (round(med[name] / med["torch"], 3) if "torch" in med else None),
        "paired_ratio_to_torch": (
            paired_ratios(times[name], times["torch"]) if "torch" in times else None
        ),
        "first_step_loss_rel_diff": checks[name],
        "other_processes_cpu_share": foreign,
    }


# --------------------------------------------------------------------------- any spec (--model)
# The network reference.network.Network(spec) builds from reference/layers/, and the same
# layers in torch and Keras, built here from its nodes. (The parity mirrors,
# parity_tests/mirrors/model_*.py, compute one step as a function; they keep no model.)


class SpecCase:
    """One spec, batch size and dtype: the network, its initial weights, the batch."""

    def __init__(self, net, images, labels, dtype: str, reduction: str):
        import numpy as np

        self.net = net
        self.dtype = dtype
        self.reduction = reduction
        self.params = net.init_params(0, dtype)
        self.X = np.ascontiguousarray(images, dtype=dtype)  # (N, 1, 28, 28)
        self.labels = np.asarray(labels, dtype=np.int64)  # the digits 0..9
        self.target = net.targets(self.labels, dtype)  # the labels, or Y (N, 1) for mse
        self.loss = net.nodes[-1].q("E")

    @property
    def softmax_ce(self) -> bool:
        return self.net.spec.loss.kind == "softmax_ce"


def build_spec_reference(setup, case):
    """The fast network (reference.fast_layers): what the checks run for a spec network. The
    step's tensors are dropped after each step, as a training loop would, so its Workspace
    reuses their buffers."""
    from reference.fast_layers import fast_network

    return _spec_step(fast_network(case.net.spec), case)


def build_spec_readable(setup, case):
    """The readable Network (reference/layers/), the reference the fast kernels equal."""
    return _spec_step(case.net, case)


def _spec_step(net, case):
    params, X, labels = case.params, case.X, case.labels

    def step():
        return float(net.train_step(params, X, labels, LR, case.reduction)[case.loss])

    return step


def _layers(case):
    """The network's layers before its loss (the step's loss is written out below)."""
    return [node for node in case.net.nodes if not node.layer.is_loss]


def _torch_model(torch, case):
    """The network as the torch mirror runs it (parity_tests/mirrors/model_torch.py: one
    function per registry kind), its weights nn.Parameters from case.params (OIHW filters,
    the reference's layout), case.dtype: the same kernels as nn.Conv2d, nn.Linear..."""
    from parity_tests.mirrors import model_torch

    weights = {name: torch.nn.Parameter(torch.from_numpy(a.copy())) for name, a in case.params.items()}
    layers = _layers(case)

    class Network(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.ParameterList(weights.values())

        def forward(self, h):
            for node in layers:
                p = {s: weights[node.q(s)] for s in node.params}
                h = model_torch.LAYERS[node.kind](node.layer, h, p, None, None)[node.outputs[0]]
            return h

    return Network()


def build_spec_torch(setup, case):
    torch = setup.torch
    model = _torch_model(torch, case)
    x = torch.from_numpy(case.X)
    t = torch.from_numpy(case.labels if case.softmax_ce else case.target)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    n = x.shape[0] if case.reduction == "mean" else 1

    def loss(out):
        if case.softmax_ce:
            return torch.nn.functional.cross_entropy(out, t, reduction=case.reduction)
        return ((t - out) ** 2).sum() / 2 / n  # E7, over images for "mean"

    def step():
        opt.zero_grad()
        E = loss(model(x))
        E.backward()
        opt.step()
        return E.item()

    return step


def _tf_model(tf, case):
    """(forward, variables): the network as the TensorFlow mirror runs it
    (parity_tests/mirrors/model_tf.py: one function per registry kind, NHWC, HWIO filters),
    its weights tf.Variables from case.params, case.dtype."""
    from parity_tests.mirrors import model_tf

    variables = {
        name: tf.Variable(model_tf._param_to_tf(name.split(".", 1)[1], a))
        for name, a in case.params.items()
    }
    layers = _layers(case)

    def forward(h):
        for node in layers:
            p = {s: variables[node.q(s)] for s in node.params}
            h = model_tf.LAYERS[node.kind](node.layer, h, p, None, None)[node.outputs[0]]
        return h

    return forward, list(variables.values())


def _spec_tf_parts(setup, case):
    import keras
    import numpy as np

    from reference import layout

    tf = setup.tf
    model, variables = _tf_model(tf, case)
    x = tf.constant(layout.nchw_to_nhwc(case.X))
    opt = keras.optimizers.SGD(learning_rate=LR)
    opt.build(variables)
    reduce = tf.reduce_sum if case.reduction == "sum" else tf.reduce_mean
    if case.softmax_ce:
        y = tf.constant(case.labels.astype(np.int64))

        def loss(out):
            return reduce(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out))
    else:
        t = tf.constant(case.target)
        n = case.X.shape[0] if case.reduction == "mean" else 1

        def loss(out):
            return tf.reduce_sum((t - out) ** 2) / 2 / n  # E7, over images for "mean"

    def raw_step():
        with tf.GradientTape() as tape:
            E = loss(model(x))
        grads = tape.gradient(E, variables)
        opt.apply_gradients(zip(grads, variables))
        return E

    return raw_step


def build_spec_tf_eager(setup, case):
    raw = _spec_tf_parts(setup, case)
    return lambda: float(raw().numpy())


def build_spec_tf_function(setup, case):
    compiled = setup.tf.function(_spec_tf_parts(setup, case))
    return lambda: float(compiled().numpy())


SPEC_BUILDERS = {
    "reference": build_spec_reference,
    "readable": build_spec_readable,
    "torch": build_spec_torch,
    "tf_eager": build_spec_tf_eager,
    "tf_function": build_spec_tf_function,
}


def _spec_case(args, net, data, size, dtype):
    from reference.network import images_nchw

    return SpecCase(net, images_nchw(data.X[:, :, :size]), data.labels[:size], dtype, args.reduction)


def run_spec(args) -> dict:
    """The article's protocol (run) for Network(args.model): first-step check, interleaved
    timing, ratios to torch; and each implementation's memory (memory_probe)."""
    setup = Setup(args)
    from reference.data import load_article_data
    from reference.network import Network

    net = Network(args.model)
    data = load_article_data(max(args.sizes), source=args.data)
    results = []
    for size in args.sizes:
        for dtype in args.dtypes:
            case = _spec_case(args, net, data, size, dtype)
            E_ref = float(
                net.train_step(case.params, case.X, case.labels, LR, args.reduction)[case.loss]
            )
            steps, checks = {}, {}
            for name in args.impls:
                steps[name] = SPEC_BUILDERS[name](setup, case)
                E = steps[name]()  # first step: from the shared weights
                rel = abs(E - E_ref) / abs(E_ref)
                checks[name] = rel
                if rel > LOSS_RTOL[dtype]:
                    raise SystemExit(
                        f"{name} {dtype} batch {size}: first-step loss {E!r} "
                        f"differs from the reference's {E_ref!r} (rel {rel:.3g})"
                    )
            before = _cpu_counters()
            times = measure(
                steps,
                dict.fromkeys(steps, args.repeats),
                args.warmup,
                args.settle,
                args.lead,
                _clock(args),
            )
            foreign = foreign_cpu_share(before, _cpu_counters())
            if foreign is not None and foreign > 0.05:
                print(
                    f"  note: other processes used {foreign:.0%} of the CPU during these "
                    f"timings; ratios may be skewed",
                    flush=True,
                )
            del steps
            gc.collect()
            med = {n: statistics.median(t) for n, t in times.items()}
            for name in args.impls:
                row = _result_row(name, size, dtype, times, med, checks, foreign)
                if not args.no_memory:
                    row["memory"] = memory_probe(args, name, size, dtype)
                results.append(row)
                _print_row(row)
    return {
        "benchmark": f"{net.label}: reference.network.Network, one training step "
        "(forward + backward + SGD update)",
        "model": net.spec.text,
        "preset": net.spec.preset,
        "reduction": args.reduction,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "data_source": data.source,
        "lr": LR,
        "clock": args.clock,
        "environment": setup.environment(),
        "results": results,
    }


def _proc_status_kib(*keys) -> dict | None:
    try:
        with open("/proc/self/status") as fh:
            lines = dict(line.split(":", 1) for line in fh if ":" in line)
        return {k: int(lines[k].split()[0]) for k in keys}
    except (OSError, KeyError, ValueError):
        return None


def _reset_peak_rss() -> int | None:
    """VmHWM := VmRSS (Linux >= 4.0); the RSS in KiB, or None where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    got = _proc_status_kib("VmRSS")
    return None if got is None else got["VmRSS"]


def _step_peak_mib(step) -> float | None:
    """The rise of the resident set's peak over the RSS right before one step() (MiB)."""
    gc.collect()
    before = _reset_peak_rss()
    step()
    after = _proc_status_kib("VmHWM")
    if before is None or after is None:
        return None
    return round((after["VmHWM"] - before) / 1024, 1)


def probe_memory(args) -> dict:
    """--memory-probe: one implementation, one size and dtype, in this fresh process."""
    import tracemalloc

    (impl,), (size,), (dtype,) = args.impls, args.sizes, args.dtypes
    setup = Setup(args)
    from reference.data import load_article_data
    from reference.network import Network

    case = _spec_case(args, Network(args.model), load_article_data(size, source=args.data), size, dtype)
    step = SPEC_BUILDERS[impl](setup, case)
    start = _proc_status_kib("VmRSS")
    got = {
        "method": "VmHWM - VmRSS around one step, fresh subprocess (see the docstring)",
        "rss_before_mib": None if start is None else round(start["VmRSS"] / 1024, 1),
        "first_step_peak_mib": _step_peak_mib(step),
    }
    step()
    got["step_peak_mib"] = _step_peak_mib(step)
    peak = _proc_status_kib("VmHWM")  # the process's resident peak over that later step
    got["peak_rss_mib"] = None if peak is None else round(peak["VmHWM"] / 1024, 1)
    if impl in ("reference", "readable"):
        gc.collect()
        tracemalloc.start()
        step()
        got["numpy_tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    return got


def memory_probe(args, impl: str, size: int, dtype: str) -> dict:
    """probe_memory in a subprocess (its JSON line), or {"error": ...}."""
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--memory-probe", "--model", args.model,
        "--impls", impl, "--sizes", str(size), "--dtypes", dtype, "--reduction", args.reduction,
    ]  # fmt: skip
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.data is not None:
        cmd += ["--data", args.data]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        tail = locals().get("done")
        why = (tail.stderr.strip().splitlines() or [""])[-1] if tail is not None else str(exc)
        return {"error": f"memory probe failed: {why}"}


def _print_row(row):
    ratio = "" if row["ratio_to_torch"] is None else f"{row['ratio_to_torch']:.2f}"
    pr = row.get("paired_ratio_to_torch")
    paired = (
        ""
        if pr is None or row["impl"] == "torch"
        else (f"  paired {pr['median']:.2f} [{pr['q25']:.2f}-{pr['q75']:.2f}]")
    )
    mem = row.get("memory")
    if mem and "peak_bytes" in mem:  # the article's reference (tracemalloc)
        extra = (
            f"  peak {mem['peak_bytes'] / 2**20:.0f} MiB = {mem['peak_over_input']}x input "
            f"({mem['peak_over_returned']}x what it returns; largest tensor "
            f"{mem['largest_tensor']} {mem['largest_over_input']}x input)"
        )
    elif mem and "step_peak_mib" in mem:  # --model: RSS in a subprocess
        extra = (
            f"  rss peak +{mem['step_peak_mib']} MiB a step (first +{mem['first_step_peak_mib']}),"
            f" {mem.get('peak_rss_mib')} MiB in all"
        )
        if "numpy_tracemalloc_peak_mib" in mem:
            extra += f", numpy {mem['numpy_tracemalloc_peak_mib']} MiB"
    elif mem:
        extra = f"  memory: {mem.get('error', mem)}"
    else:
        extra = ""
    print(
        f"{row['impl']:<12} {row['batch']:>6} {row['dtype']:<8} {row['median_ms']:>10.2f} "
        f"{ratio:>8}{paired}{extra}",
        flush=True,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_probe:
        if (
            args.model == ARTICLE
            or len(args.impls) != 1
            or len(args.sizes) != 1
            or len(args.dtypes) != 1
        ):
            raise SystemExit("--memory-probe: one --model (not article), --impls, --sizes, --dtypes")
        print(json.dumps(probe_memory(args)), flush=True)
        return 0
    print(f"{'impl':<12} {'batch':>6} {'dtype':<8} {'median ms':>10} {'/torch':>8}", flush=True)
    if args.model != ARTICLE:
        print(f"model: {args.model}, reduction {args.reduction}", flush=True)
    report = run(args) if args.model == ARTICLE else run_spec(args)
    print(
        "/torch: median over torch's median at the same size and dtype; paired: median "
        "[quartiles] of the per-round ratios (steadier when the machine's speed drifts)"
    )
    env = report["environment"]
    print(
        f"threads: torch {env.get('torch_num_threads')}, blas {env['blas_threads']}, "
        f"tf intra {env.get('tf_intra_op_threads')} (0 = default), cpus {env['cpu_count']}; "
        f"clock {args.clock}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The --parity-* options: their definitions, their validation and the settings they make.

Every option is checked before any test runs (plugin.pytest_configure calls
`validate_options`): a bad value is one pytest.UsageError (exit 4) naming the option, the
value and what is expected. The data are loaded, the implementation is found (a module is
imported in a child process, parity_tests/impl_call.py), the report folder and the baseline
are checked here too, so a run never fails for an option after its tests have run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from parity_tests.harness import RunConfig
from parity_tests.impl_call import DEFAULT_TIMEOUT_S, ChildProcessImpl, ImplementationError
from parity_tests.impls import resolve_impl
from parity_tests.mirrors import FRAMEWORKS
from parity_tests.user_process import DEFAULT_TIMEOUT_S as LAYER_TIMEOUT_S
from reference.data import ARTICLE_IMAGES
from reference.model import DTYPES
from reports.diff import DEFAULT_FACTOR, DEFAULT_WITHIN

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORT_DIR = ROOT / "reports" / "latest"
# Recorded with every run: the settings that change float32 summation order.
ENVIRONMENT_VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "OPENBLAS_NUM_THREADS")


# --parity-model's default: a network with what the article lacks (a second convolution,
# pooling, ReLU, softmax), so that every plain run checks those layers too.
DEFAULT_MODEL = "lenet"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated --parity-* options of this run."""

    frameworks: tuple
    dtypes: tuple
    seed: int
    n_images: int
    init_scheme: str
    reduction: str
    impl: str
    timeout: float
    data: str | None  # --parity-data, else $PARITY_MNIST, else None (search)
    report_dir: Path | None  # None: --parity-no-report
    baseline: Path | None
    baseline_factor: float
    baseline_floor: float | None  # None: 1 / factor**2 (reports.diff)
    baseline_within: float
    model: str = DEFAULT_MODEL  # --parity-model as given (a preset name or a spec string)
    layers: tuple = ()  # --parity-layer values as given, one per kind (parity_tests/own_layers.py)
    layer_isolation: str = "process"  # --parity-layer-isolation: process (a child) or inline
    layer_timeout: float = LAYER_TIMEOUT_S  # --parity-layer-timeout, per call (process only)
    # Made once, when the options are validated (validate_options); every consumer reads
    # these rather than parsing --parity-model or loading --parity-layer again.
    network: object = dataclasses.field(default=None, repr=False, compare=False)
    # ^ reference.network.Network of `model`
    user_layers: Mapping = dataclasses.field(default_factory=dict, repr=False, compare=False)
    # ^ {kind: own_layers.UserLayer} of `layers`, in the order given
    steps: int = 1  # --parity-steps: training steps of test_trajectory.py
    optim: str = ""  # --parity-optim as given ("": not given, sgd at the suite's lr)
    optim_name: str = "sgd"  # the registry entry (reference/optim_registry.py) it names
    optim_hyper: Mapping = dataclasses.field(default_factory=dict, compare=False)
    # ^ its hyper-parameters, defaults filled in (the suite's lr for the default sgd)
    optim_impls: tuple = ()  # --parity-optim-impl values as given (parity_tests/own_optim.py)

    @property
    def trajectories(self) -> bool:
        """Whether the optimiser and trajectory checks run (test_optim.py,
        test_trajectory.py): when --parity-steps or --parity-optim is given (or one of those
        files is named on the command line; parity_tests/conftest.py)."""
        return self.steps > 1 or bool(self.optim)

    @property
    def model_impl(self) -> str:
        """The implementation test_model.py's records name: own:KIND,... for the
        --parity-layer kinds the checked network has (a kind it lacks never runs in it), else
        "reference"."""
        from parity_tests.own_layers import impl_label, used_layers

        used = used_layers(self.user_layers, self.network)
        return impl_label(used) if used else "reference"

    @property
    def model_checked(self) -> str:
        """The network test_model.py checks: --parity-model's, as given (`article` is the
        article's own network built from its spec; test_parity.py checks it by its article
        names whatever this says)."""
        return self.model

    @property
    def run_config(self) -> RunConfig:
        return RunConfig(
            seed=self.seed,
            n_images=self.n_images,
            reduction=self.reduction,
            init_scheme=self.init_scheme,
            impl=self.impl,
        )

    @property
    def restricted(self) -> list[str]:
        out = []
        if set(self.frameworks) != set(FRAMEWORKS):
            out.append(f"frameworks {','.join(self.frameworks)} only")
        if set(self.dtypes) != set(DTYPES):
            out.append(f"dtypes {','.join(self.dtypes)} only")
        return out


@dataclasses.dataclass
class RunState:
    started: float
    data: object = None  # reference.data.ArticleData
    data_warnings: list = dataclasses.field(default_factory=list)
    impl: object = None
    framework_errors: dict = dataclasses.field(default_factory=dict)
    records: list = dataclasses.field(default_factory=list)
    ran: set = dataclasses.field(default_factory=set)  # nodeids that finished
    environment: dict = dataclasses.field(default_factory=dict)
    baseline_df: object = None
    baseline_meta: dict = dataclasses.field(default_factory=dict)
    completeness: dict = dataclasses.field(default_factory=dict)
    report: Path | None = None
    no_report_why: str = ""
    diff: object = None
    environment_changes: list = dataclasses.field(default_factory=list)


# Where the run keeps them: `config.stash[SETTINGS]`, `config.stash[STATE]` (set by the
# plugin's pytest_configure; tests reach them through the fixtures of fixtures.py).
SETTINGS = pytest.StashKey[Settings]()
STATE = pytest.StashKey[RunState]()


def _usage(option: str, value, expected: str) -> pytest.UsageError:
    return pytest.UsageError(f"{option} {value!r}: expected {expected}")


def _csv(option: str, value: str, allowed) -> tuple:
    items = tuple(v.strip() for v in value.split(","))
    if not value.strip() or any(v not in allowed for v in items):
        raise _usage(option, value, f"a comma-separated subset of {','.join(allowed)}")
    if len(set(items)) != len(items):
        raise _usage(option, value, f"each of {','.join(allowed)} at most once")
    return items


def _integer(option: str, value: str, low: int, high: float = math.inf) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        bound = f"{low}..{high}" if high != math.inf else f">= {low}"
        raise _usage(option, value, f"an integer {bound}")
    return number


def _real(option: str, value: str, above: float) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > above):
        raise _usage(option, value, f"a finite number > {above:g}")
    return number


def _bounded(option: str, value, low: float, high: float = math.inf) -> float | None:
    """A finite number in low..high (None stays None: the option's default)."""
    if value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and low <= number <= high):
        expected = f">= {low:g}" if high == math.inf else f"in {low:g}..{high:g}"
        raise _usage(option, value, f"a finite number {expected}")
    return number


def _settings(config) -> Settings:
    from reference.data import MAX_IMAGES

    o = config.getoption
    no_report = o("--parity-no-report")
    baseline = o("--parity-baseline")
    seed = _integer("--parity-seed", o("--parity-seed"), 0, 2**32 - 1)
    return Settings(
        frameworks=_csv("--parity-frameworks", o("--parity-frameworks"), FRAMEWORKS),
        dtypes=_csv("--parity-dtypes", o("--parity-dtypes"), DTYPES),
        seed=seed,
        n_images=_integer("--parity-n-images", o("--parity-n-images"), 1, MAX_IMAGES),
        init_scheme=o("--parity-init"),
        reduction=o("--parity-reduction"),
        impl=o("--parity-impl"),
        timeout=_real("--parity-timeout", o("--parity-timeout"), 0),
        data=o("--parity-data") or os.environ.get("PARITY_MNIST") or None,
        report_dir=None if no_report else Path(o("--parity-report-dir")).absolute(),
        baseline=Path(baseline).absolute() if baseline else None,
        baseline_factor=_real("--parity-baseline-factor", o("--parity-baseline-factor"), 1),
        baseline_floor=_bounded("--parity-baseline-floor", o("--parity-baseline-floor"), 0),
        baseline_within=_bounded("--parity-baseline-within", o("--parity-baseline-within"), 0, 1),
        **_model("--parity-model", o("--parity-model"), seed),
        layers=tuple(o("--parity-layer") or ()),
        layer_isolation=o("--parity-layer-isolation"),
        layer_timeout=_real("--parity-layer-timeout", o("--parity-layer-timeout"), 0),
        steps=_integer("--parity-steps", o("--parity-steps"), 1, 10_000),
        optim_impls=tuple(o("--parity-optim-impl") or ()),
        **_optim("--parity-optim", o("--parity-optim")),
    )


def _optim(option: str, value) -> dict:
    """--parity-optim parsed once, here: the registry entry and its hyper-parameters (the
    default: sgd at the suite's learning rate)."""
    from reference import optim_registry

    if value is None:
        name, h = optim_registry.parse(f"sgd(lr={RunConfig.lr!r})")
        return dict(optim="", optim_name=name, optim_hyper=h)
    try:
        name, h = optim_registry.parse(value)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(
            f"{option} {value!r}: {exc}; expected e.g. sgd, momentum(0.9), nesterov(0.9), "
            "rmsprop, adam, adamw or adam(lr=1e-3,beta1=0.9,beta2=0.999,eps=1e-8)"
        ) from None
    return dict(optim=value, optim_name=name, optim_hyper=h)


def _model(option: str, value: str, seed: int = 0) -> dict:
    """{model: the preset's name or the canonical spec, network: its Network, drawing its
    dropout masks from the run's seed}: the option parsed once, here."""
    from reference.network import Network
    from reference.spec import parse_spec

    try:
        spec = parse_spec(value)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"{option} {value!r}: {exc}") from None
    return dict(model=spec.preset or spec.text, network=Network(spec, seed=seed))


def available_memory() -> int:
    """Bytes the kernel says a new process can use without swapping (MemAvailable), else
    the physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_model_memory(s: Settings) -> None:
    """A spec whose step cannot fit is refused before any test allocates it (conv(100000000,5)
    would otherwise take 18 GiB per test, then fail or be killed)."""
    need = s.network.step_bytes(s.n_images, "float64")
    have = available_memory()
    if need > have:
        raise pytest.UsageError(
            f"--parity-model {s.model!r}: one step at {s.n_images} images needs at least "
            f"{need / 2**30:.3g} GiB in float64 (every layer's output, gradient and im2col "
            f"windows), more than the {have / 2**30:.3g} GiB available; use a smaller network "
            "or fewer images (--parity-n-images)"
        )


def _check_model_batch(s: Settings) -> None:
    """A batch norm after a dense layer (or on 1 x 1 maps) normalises each feature over the
    batch: one image gives it one value, and no batch variance (torch refuses it too)."""
    for node in s.network.nodes:
        if node.kind == "batchnorm" and s.n_images * math.prod(node.in_shape[1:]) < 2:
            raise pytest.UsageError(
                f"--parity-model {s.model!r} with --parity-n-images {s.n_images}: {node.name} "
                "(batchnorm) would take a batch variance over one value per feature; use at "
                "least 2 images"
            )


def _data_option(config) -> str:
    return "--parity-data" if config.getoption("--parity-data") else "PARITY_MNIST"


def _load_data(config, s: Settings, state: RunState) -> None:
    from reference.data import load_article_data

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # The loader reads PARITY_MNIST itself, and says so in the data source.
            state.data = load_article_data(s.n_images, source=config.getoption("--parity-data"))
        except (OSError, ValueError, TypeError) as exc:
            raise pytest.UsageError(f"{_data_option(config)} {s.data!r}: {exc}") from None
    state.data_warnings = [w.message for w in caught]


def _resolve_impl(s: Settings, state: RunState, worker: bool) -> None:
    try:
        state.impl = resolve_impl(s.impl, s.timeout)
        if isinstance(state.impl, ChildProcessImpl) and not worker:
            state.impl.probe()  # imports it in a child: a crash at import is no crash here
    except (ValueError, ImplementationError) as exc:
        raise pytest.UsageError(str(exc)) from None


def _load_layers(s: Settings) -> Settings:
    """--parity-layer: every module imported and every function found now (own_layers.py);
    the settings with the loaded layers."""
    if not s.layers:
        return s
    from parity_tests.own_layers import load

    loaded = load(s.layers, s.reduction, s.layer_isolation, s.layer_timeout)  # or the one UsageError
    return dataclasses.replace(s, user_layers=loaded)


def _check_report_dir(s: Settings) -> None:
    from reports.writer import check_report_dir

    if s.report_dir is None:
        return
    try:
        check_report_dir(s.report_dir)
    except ValueError as exc:
        raise pytest.UsageError(f"--parity-report-dir {str(s.report_dir)!r}: {exc}") from None


def experiment(s: Settings, data) -> dict:
    """The facts that make two runs the same experiment (the gate compares only such runs)."""
    facts = dict(
        seed=s.seed,
        n_images=s.n_images,
        init_scheme=s.init_scheme,
        reduction=s.reduction,
        data_sha256=data.sha256,
        impl=s.impl,
        lr=RunConfig.lr,
        model=s.model_checked,
    )
    if s.trajectories:  # only when given: a run without them is the same experiment as before
        from reference.optim_registry import canonical

        facts["steps"] = s.steps
        facts["optim"] = canonical(s.optim_name, s.optim_hyper)
    if s.optim_impls:
        facts["optim_impls"] = list(s.optim_impls)
    if s.layers:  # only when given: a run without them is the same experiment as before
        facts["layers"] = {value.partition("=")[0].strip(): value for value in s.layers}
    return facts


def _load_baseline(s: Settings, state: RunState) -> None:
    if s.baseline is None:
        return
    from reports import load_report
    from reports.diff import experiment_mismatches

    option = f"--parity-baseline {str(s.baseline)!r}"
    if s.report_dir is not None:
        base, out = s.baseline.resolve(), s.report_dir.resolve()
        if out == base or base in out.parents or out in base.parents:
            raise pytest.UsageError(
                f"{option}: the report of this run would be written to {out}, which is or "
                "overlaps the baseline it is gated against; pick another --parity-report-dir"
            )
    try:
        state.baseline_df, state.baseline_meta = load_report(s.baseline)
    except ValueError as exc:
        raise pytest.UsageError(f"{option}: {exc}") from None
    if state.baseline_df.empty:
        raise pytest.UsageError(f"{option}: the baseline holds no comparisons")
    mismatches = experiment_mismatches(state.baseline_meta, experiment(s, state.data))
    if mismatches:
        raise pytest.UsageError(
            f"{option} is a different experiment; the gate compares only runs of the same "
            "experiment:\n  " + "\n  ".join(mismatches)
        )


def is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def distributing(config) -> bool:
    """True in the xdist controller of a `pytest -n N` run (N > 0)."""
    return (
        not is_worker(config)
        and bool(getattr(config.option, "numprocesses", 0))
        and getattr(config.option, "dist", "no") != "no"
    )


def _check_optim_impls(config) -> None:
    """--parity-optim-impl: each value parsed and its function found now (own_optim.parse
    raises the one UsageError naming the option)."""
    from parity_tests.own_optim import parse

    for value in config.getoption("--parity-optim-impl") or ():
        parse(value)


def validate_options(config) -> tuple[Settings, RunState]:
    """Every --parity-* option checked, the data loaded and the implementation found; a bad
    value raises pytest.UsageError naming the option, the value and what is expected."""
    s = _settings(config)
    _check_optim_impls(config)
    state = RunState(started=time.time())
    worker = is_worker(config)
    if not worker:
        _check_report_dir(s)
    _resolve_impl(s, state, worker)  # first: a bad name fails before any data is looked for
    s = _load_layers(s)
    _check_model_memory(s)
    _check_model_batch(s)
    _load_data(config, s, state)
    if not worker:
        _load_baseline(s, state)
    return s, state


def environment(s: Settings) -> dict:
    """Library versions and the settings that change float32 summation order."""
    env = {"numpy": np.__version__, "python": sys.version.split()[0]}
    for name in s.frameworks:
        env[name] = str(getattr(sys.modules.get(name), "__version__", "unavailable"))
    env.update({v: os.environ.get(v, "") for v in ENVIRONMENT_VARIABLES})
    return env


def versions_text(env: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items())


def project_path(path) -> str:
    """`path` as a command run in the project folder names it: relative to the project when
    inside it, else absolute."""
    found = Path(path).expanduser().resolve()
    return str(found.relative_to(ROOT)) if found.is_relative_to(ROOT) else str(found)


def _found_on_path(name: str) -> tuple[Path, Path | None] | None:
    """(the sys.path folder, the module's file when it is a single top-level .py file) where
    `import name` finds its top-level package or module, without importing anything; None
    when no folder on sys.path holds it (an installed finder's, or a missing one)."""
    top = name.split(".")[0]
    for entry in sys.path:
        folder = Path(entry or os.curdir).resolve()
        if (folder / top).is_dir():
            return folder, None
        if (folder / f"{top}.py").is_file():
            return folder, (folder / f"{top}.py" if top == name else None)
    return None


def _on_a_clean_path(folder: Path) -> bool:
    """Whether `python -m pytest` run in the project folder from a clean shell (no
    PYTHONPATH) has `folder` on sys.path: the project's and the interpreter's own folders."""
    if folder == ROOT:
        return True
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return any(folder == p or p in folder.parents for p in prefixes)


def reproduce_impl(impl: str) -> list[str]:
    """The options that make a clean shell in the project folder run `impl`: a path as the
    project folder names it; a module importable only through PYTHONPATH (or a sys.path
    entry a test added) as its file when it is one top-level .py file, else its name with
    `-o pythonpath=FOLDER` (pytest's own sys.path setting); "reference" as nothing."""
    from parity_tests.impls import is_builtin, is_path

    if impl == "reference":
        return []
    if is_builtin(impl):
        return ["--parity-impl", impl]
    if is_path(impl):
        return ["--parity-impl", project_path(impl)]
    found = _found_on_path(impl)
    if found is None or _on_a_clean_path(found[0]):
        return ["--parity-impl", impl]
    folder, single_file = found
    if single_file is not None:
        return ["--parity-impl", project_path(single_file)]
    return ["-o", f"pythonpath={project_path(folder)}", "--parity-impl", impl]


def reproduce_options(s: Settings) -> str:
    """The options that rerun this experiment from a clean shell in the project folder,
    each value shell-quoted (paths as the project folder names them, reproduce_impl)."""
    opts = ["--parity-seed", str(s.seed)]
    defaults = {
        "--parity-init": "informative",
        "--parity-reduction": "sum",
        "--parity-n-images": ARTICLE_IMAGES,
    }
    values = {
        "--parity-init": s.init_scheme,
        "--parity-reduction": s.reduction,
        "--parity-n-images": s.n_images,
    }
    for name, value in values.items():
        if value != defaults[name]:
            opts += [name, str(value)]
    opts += reproduce_impl(s.impl)
    if s.model != DEFAULT_MODEL:
        opts += ["--parity-model", s.model]
    if s.data:
        data = s.data
        if data.lower() != "synthetic" and Path(data).expanduser().exists():
            data = project_path(data)
        opts += ["--parity-data", data]
    for value in s.layers:
        opts += ["--parity-layer", value]
    if s.layers and s.layer_isolation != "process":
        opts += ["--parity-layer-isolation", s.layer_isolation]
    if s.steps != 1:
        opts += ["--parity-steps", str(s.steps)]
    if s.optim:
        opts += ["--parity-optim", s.optim]
    for value in s.optim_impls:
        opts += ["--parity-optim-impl", value]
    return shlex.join(opts)


def _user_signatures() -> dict:
    """Every layer kind a user may bring, with its CS231n functions (the registry's `user`)."""
    from reference.layers import KINDS

    return {name: kind.user for name, kind in KINDS.items() if kind.user}


def add_options(parser) -> None:
    g = parser.getgroup("parity", "article parity suite")
    g.addoption(
        "--parity-frameworks",
        default=",".join(FRAMEWORKS),
        help="frameworks to check against, comma-separated (default: torch,tensorflow)",
    )
    g.addoption(
        "--parity-dtypes",
        default=",".join(DTYPES),
        help="dtypes to check, comma-separated (default: float64,float32)",
    )
    g.addoption("--parity-seed", default="0", help="seed of the shared initial weights (>= 0)")
    g.addoption(
        "--parity-data",
        default=None,
        help="MNIST source: a .npz (x_train/y_train) or an IDX folder, or 'synthetic' "
        "(default: $PARITY_MNIST, then the keras cache, then a download)",
    )
    g.addoption(
        "--parity-n-images",
        default=str(ARTICLE_IMAGES),
        help=f"images in the batch ({ARTICLE_IMAGES}, the article's)",
    )
    g.addoption(
        "--parity-init",
        default="informative",
        choices=("informative", "article"),
        help="initialisation scheme: informative (default) or the article's exact one",
    )
    g.addoption(
        "--parity-reduction",
        default="sum",
        choices=("sum", "mean"),
        help="batch reduction of the loss E7 (default sum)",
    )
    g.addoption(
        "--parity-impl",
        default="reference",
        help="implementation under test: 'reference', 'published:Dn', 'mutant:NAME', "
        "an importable module or a path to a .py file with train_step (see docs/byo.md)",
    )
    g.addoption(
        "--parity-timeout",
        default=str(DEFAULT_TIMEOUT_S),
        help="seconds one train_step of a --parity-impl module may take before it is "
        f"killed and recorded as an error (default {DEFAULT_TIMEOUT_S:g})",
    )
    g.addoption(
        "--parity-report-dir",
        default=str(DEFAULT_REPORT_DIR),
        help="where the reports are written (default reports/latest); an existing "
        "folder is replaced only if the suite wrote it",
    )
    g.addoption(
        "--parity-model",
        default=DEFAULT_MODEL,
        help="the network test_model.py checks beside the article's (test_parity.py): a "
        "preset (lenet, the default: two convolutions, max pooling, ReLU, softmax; "
        "article: the article's own network, as a spec network) or a spec string "
        "such as 'conv(4,3,stride=2,pad=1)-tanh-maxpool(2,stride=1)-dense(10)-softmax_ce' "
        "(docs/extensions.md)",
    )
    g.addoption(
        "--parity-layer",
        action="append",
        default=None,
        metavar="KIND=module:forward,module:backward",
        help="check your own layer (CS231n convention, NCHW; docs/own_layers.md) in "
        "test_own_layers.py and inside the --parity-model network in test_model.py; once per "
        "kind: "
        + "; ".join(f"{kind}: {', '.join(sigs)}" for kind, sigs in _user_signatures().items())
        + " (softmax_ce=module:softmax_loss, the mean over the images: needs "
        "--parity-reduction mean). pool_param {'pool_height','pool_width','stride'}, "
        "conv_param {'stride','pad'}. module: a dotted module name or a path to a .py file",
    )
    g.addoption(
        "--parity-layer-isolation",
        default="process",
        choices=("process", "inline"),
        help="where --parity-layer functions run: process (default: each module in a child "
        "process, so that what it does cannot reach the suite; a timeout per call) or inline "
        "(in the pytest process: faster, for code you trust; docs/own_layers.md)",
    )
    g.addoption(
        "--parity-layer-timeout",
        default=str(LAYER_TIMEOUT_S),
        help="seconds one call of a --parity-layer function may take before its process is "
        f"killed and the call recorded as an error (default {LAYER_TIMEOUT_S:g}; isolation "
        "process only)",
    )
    g.addoption(
        "--parity-steps",
        default="1",
        help="training steps K of test_trajectory.py (default 1: the one-step checks only): "
        "K steps of the --parity-model network from the same weights on the run's batch, "
        "each framework's own training loop, every parameter and optimiser state compared "
        "at every step under the drift bound (docs/optimisers.md)",
    )
    g.addoption(
        "--parity-optim",
        default=None,
        metavar="SPEC",
        help="the optimiser of test_optim.py and test_trajectory.py: sgd, momentum(0.9), "
        "nesterov(0.9), rmsprop, adam, adamw, each also with keyword hyper-parameters "
        "(lr, momentum, rho, eps, beta1, beta2, weight_decay), e.g. "
        "adam(lr=1e-3,beta1=0.9,beta2=0.999,eps=1e-8) (default: sgd at the suite's "
        "learning rate 2^-4; docs/optimisers.md)",
    )
    g.addoption(
        "--parity-optim-impl",
        action="append",
        default=None,
        metavar="RULE=module:function",
        help="check your own CS231n optim.py update rule (next_w, config = update(w, dw, "
        "config)) in test_own_optim.py against the reference, and, for the --parity-optim "
        "optimiser, training the --parity-model network in test_trajectory.py against "
        "torch; RULE one of sgd, sgd_momentum, rmsprop, adam; module a dotted module name "
        "or a path to a .py file (docs/optimisers.md)",
    )
    g.addoption("--parity-no-report", action="store_true", help="write no report files")
    g.addoption(
        "--parity-baseline",
        default=None,
        help="a committed report directory: fail the session on a regression against it",
    )
    g.addoption(
        "--parity-baseline-factor",
        default=str(DEFAULT_FACTOR),
        help=f"budget growth that counts as a regression (a number > 1; default {DEFAULT_FACTOR:g})",
    )
    g.addoption(
        "--parity-baseline-floor",
        default=None,
        help="smallest baseline budget the growth is measured from (a number >= 0; default "
        "1 / factor**2: a budget that stays below 1 / factor never counts as grown), as "
        "`python -m reports diff --floor`",
    )
    g.addoption(
        "--parity-baseline-within",
        default=str(DEFAULT_WITHIN),
        help="growth that ends at or below this fraction of the allowance is listed ('grew "
        "within the error model') but is no regression (0..1; default "
        f"{DEFAULT_WITHIN:g}; 0: every growth regresses), as `python -m reports diff --within`",
    )

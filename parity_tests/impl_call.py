"""Calling an implementation's `train_step` so that it cannot change what the suite sees.

The implementation under test gets copies of the shared parameters and data; the suite
keeps the originals (read-only) for the frameworks. After the call the copies are compared
bit for bit with the originals, so an implementation that writes into its inputs
(`params["b"] += 1`, `X *= 0.5`, an in-place `W -= lr * dW`) is reported as such instead
of silently changing what the frameworks are fed.

Code that is not the suite's own (`--parity-impl some.module`) runs in a child process
(`python parity_tests/impl_call.py REQUEST`): a hang is killed after `--parity-timeout`
seconds, and `os._exit`, `sys.exit` or a crash of the interpreter there becomes an error
record instead of ending the pytest session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reference.layout import LAYOUTS, from_layout, to_layout

INPUT_NAMES = ("X", "y", "f", "W", "b")
PARAM_NAMES = ("f", "W", "b")
DEFAULT_TIMEOUT_S = 300.0  # the article's own loop code takes ~90 s at 5000 images here
_STDERR_TAIL = 1500


class ImplementationError(RuntimeError):
    """train_step raised, returned something unusable, hung, or ended its process."""


class TrainingDiverged(RuntimeError):
    """A K-step training run left the floating-point range (its loss or a parameter
    overflowed): the steps after it cannot be checked (parity_tests/trajectory.py)."""


class Absent(LookupError):
    """A check needs a tensor the implementation did not return (a partial implementation:
    recorded once as "absent" by test_contract; the checks that need it are skipped)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class StepResult:
    outputs: dict  # what train_step returned, name -> ndarray, in the article layout
    inputs_after: dict  # the copies handed to train_step, as they were after the call
    layout: str = "article"  # the implementation's LAYOUT
    unconverted: tuple = ()  # names whose value could not be read in that layout (kept raw)


def _fresh_copies(params: dict, X, y) -> dict:
    given = {"X": np.array(X, copy=True), "y": np.array(y, copy=True)}
    given.update({k: np.array(params[k], copy=True) for k in PARAM_NAMES})
    return given


def _as_arrays(out) -> dict:
    if not hasattr(out, "keys") or not hasattr(out, "__getitem__"):
        raise ImplementationError(
            f"train_step must return a mapping of article names to arrays, got {type(out).__name__}"
        )
    arrays = {}
    for key in out.keys():
        if not isinstance(key, str) or not key.isidentifier():
            raise ImplementationError(f"train_step returned a key that is not a name: {key!r}")
        value = out[key]
        if isinstance(value, np.ma.MaskedArray) or isinstance(value, np.matrix):
            raise ImplementationError(
                f"train_step returned {key} as {type(value).__name__}: return a plain ndarray "
                "(a mask would be dropped; np.matrix changes shapes and products)"
            )
        try:
            arrays[key] = np.asarray(value)
        except Exception as exc:  # noqa: BLE001  (whatever the object is, say so)
            raise ImplementationError(
                f"train_step returned {key} as {type(value).__name__}, not an array: {exc}"
            ) from None
        if arrays[key].dtype == object:
            raise ImplementationError(
                f"train_step returned {key} as {type(value).__name__}, which is not a numeric array"
            )
    return arrays


def implementation_layout(impl) -> str:
    """The implementation's LAYOUT ("article" when it declares none)."""
    found = getattr(impl, "LAYOUT", "article")
    if found not in LAYOUTS:
        raise ImplementationError(
            f"{getattr(impl, '__name__', impl)}.LAYOUT must be one of {list(LAYOUTS)}, got {found!r}"
        )
    return found


def call_in_process(impl, params: dict, X, y, lr: float, reduction: str) -> StepResult:
    """train_step(copies of params, X, y) in this process, in the implementation's LAYOUT
    (reference.layout converts both ways); the originals are never passed."""
    layout = implementation_layout(impl)
    K, s = params["f"].shape[2], params["f"].shape[0]
    given = to_layout(_fresh_copies(params, X, y), layout, K, s)
    given_params = {k: given[k] for k in PARAM_NAMES}
    out = impl.train_step(given_params, given["X"], given["y"], lr=lr, reduction=reduction)
    # A rebinding (params["b"] = ...) is a change of the input too; read back from the dict.
    after = {**given, **{k: given_params.get(k) for k in PARAM_NAMES}}
    after, _ = from_layout(after, layout, K, s)
    outputs, unconverted = from_layout(_as_arrays(out), layout, K, s)
    return StepResult(outputs, after, layout, tuple(unconverted))


def modified_inputs(pristine: dict, after: dict) -> list[str]:
    """Names whose array after the call is not bit-identical to the suite's original."""
    changed = []
    for name in INPUT_NAMES:
        a, p = after.get(name), pristine[name]
        same = (
            isinstance(a, np.ndarray)
            and a.shape == p.shape
            and a.dtype == p.dtype
            and a.tobytes() == np.ascontiguousarray(p).tobytes()
        )
        if not same:
            changed.append(name)
    return changed


class ChildProcessImpl:
    """An importable module's train_step, run in a child Python process per call."""

    def __init__(self, name: str, timeout: float = DEFAULT_TIMEOUT_S):
        self.name, self.timeout = name, float(timeout)
        self.__name__ = name

    def __repr__(self) -> str:
        return f"ChildProcessImpl({self.name!r}, timeout={self.timeout:g})"

    def _run(self, request: dict, workdir: Path) -> subprocess.CompletedProcess:
        (workdir / "request.json").write_text(json.dumps(request), encoding="utf-8")
        cmd = [sys.executable, str(Path(__file__).resolve()), str(workdir / "request.json")]
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, errors="replace", timeout=self.timeout
            )
        except subprocess.TimeoutExpired:
            raise ImplementationError(
                f"train_step of {self.name} did not return within {self.timeout:g} s "
                "(--parity-timeout); its process was killed"
            ) from None

    def _request(self, workdir: Path, action: str, **fields) -> dict:
        return dict(
            action=action, name=self.name, sys_path=list(sys.path), workdir=str(workdir), **fields
        )

    def _outcome(self, proc, workdir: Path) -> None:
        """Raise ImplementationError for anything but a clean return."""
        error = workdir / "error.json"
        if error.is_file():
            raise ImplementationError(json.loads(error.read_text(encoding="utf-8"))["message"])
        if proc.returncode != 0 or not (workdir / "done").is_file():
            tail = (proc.stderr or "").strip()[-_STDERR_TAIL:]
            raise ImplementationError(
                f"the process running {self.name}.train_step ended with exit status "
                f"{proc.returncode} before returning (os._exit, a crash or a signal?)"
                + (f"; its stderr ends: {tail}" if tail else "")
            )

    def probe(self) -> None:
        """Import the module in a child process; raise ImplementationError if it cannot serve."""
        with tempfile.TemporaryDirectory(prefix="parity-impl-") as d:
            workdir = Path(d)
            self._outcome(self._run(self._request(workdir, "probe"), workdir), workdir)

    def call(self, params: dict, X, y, lr: float, reduction: str) -> StepResult:
        with tempfile.TemporaryDirectory(prefix="parity-impl-") as d:
            workdir = Path(d)
            np.savez(workdir / "inputs.npz", X=X, y=y, **{k: params[k] for k in PARAM_NAMES})
            request = self._request(workdir, "train_step", lr=lr, reduction=reduction)
            self._outcome(self._run(request, workdir), workdir)
            with np.load(workdir / "outputs.npz", allow_pickle=False) as z:
                outputs = {k: z[k] for k in z.files}
            with np.load(workdir / "inputs_after.npz", allow_pickle=False) as z:
                after = {k: z[k] for k in z.files}
            found = json.loads((workdir / "layout.json").read_text())
        return StepResult(outputs, after, found["layout"], tuple(found["unconverted"]))


def run_train_step(impl, params: dict, X, y, lr: float, reduction: str) -> StepResult:
    if isinstance(impl, ChildProcessImpl):
        return impl.call(params, X, y, lr, reduction)
    return call_in_process(impl, params, X, y, lr, reduction)


def _child(request_path: str) -> int:
    """The child process: import the module, call train_step once, write the results."""
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    workdir = Path(request["workdir"])
    sys.path[:] = request["sys_path"]
    # Run as a script this module is __main__: use the importable one's classes.
    from parity_tests import impl_call
    from parity_tests.impls import import_impl

    try:
        impl = import_impl(request["name"])
        if request["action"] == "train_step":
            with np.load(workdir / "inputs.npz", allow_pickle=False) as z:
                inputs = {k: z[k] for k in z.files}
            params = {k: inputs[k] for k in PARAM_NAMES}
            result = impl_call.call_in_process(
                impl, params, inputs["X"], inputs["y"], request["lr"], request["reduction"]
            )
            np.savez(workdir / "outputs.npz", **result.outputs)
            (workdir / "layout.json").write_text(
                json.dumps({"layout": result.layout, "unconverted": list(result.unconverted)})
            )
            np.savez(
                workdir / "inputs_after.npz",
                **{k: v for k, v in result.inputs_after.items() if isinstance(v, np.ndarray)},
            )
    except BaseException as exc:  # noqa: BLE001  (SystemExit and KeyboardInterrupt included)
        where = "".join(traceback.format_exception(exc, limit=-3))
        message = (
            exc.args[0]
            if isinstance(exc, impl_call.ImplementationError)
            else (f"{request['name']}.train_step raised {type(exc).__name__}: {exc}\n{where}")
        )
        (workdir / "error.json").write_text(json.dumps({"message": message}), encoding="utf-8")
        return 0
    (workdir / "done").write_text("ok", encoding="utf-8")
    return 0


if __name__ == "__main__":
    # The script's own folder is parity_tests/; the request's sys.path replaces it.
    sys.exit(_child(sys.argv[1]))

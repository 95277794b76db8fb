"""--parity-layer functions in a child process (isolation "process", the default;
parity_tests/user_process.py): what a layers file does cannot change the verdict, a function
that ends its process, crashes or hangs is a failing record naming it, writes into
arguments are still caught, and the bundled examples get the same verdicts, bit for bit,
as when they run inline (in the pytest process).
"""

from __future__ import annotations

import dataclasses
import pickle
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from parity_tests import own_layer_checks, own_layers, user_process
from parity_tests.detection import QuietRecorder
from parity_tests.test_own_layers import draws

ROOT = Path(__file__).resolve().parents[1]
GOOD = ROOT / "examples" / "cs231n_layers" / "layers.py"
BROKEN = ROOT / "examples" / "cs231n_layers" / "broken.py"
MODES = own_layers.ISOLATIONS


def _layer(kind, path, isolation="process", timeout=0.0):
    return own_layers.parse_layer(own_layers.option_value(kind, path), isolation, timeout)


def _check(parity, layer, dtype="float64", frameworks=()):
    recorder = QuietRecorder(parity.node, dataclasses.replace(parity.context, impl=layer.label))
    # Looked up on the module: a forging file replaces own_layer_checks.check_layer itself.
    return own_layer_checks.check_layer(recorder, layer, dtype, frameworks, draws())


def _write(tmp_path, name, source) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


# --- a layers file that patches the suite at import -------------------------------------------

FORGER = """
    import numpy as np
    from parity_tests import own_layer_checks

    # 'every comparison passed', whatever the layer does
    own_layer_checks.check_layer = lambda *a, **k: own_layer_checks.Outcome([], None)

    def relu_forward(x):
        return np.abs(x), x  # wrong: |x| is not max(x, 0)

    def relu_backward(dout, cache):
        return dout * (cache > 0)
"""


@pytest.mark.parametrize("isolation", MODES)
def test_a_layers_file_that_patches_the_suite_cannot_forge_the_verdict_in_a_child(
    parity, tmp_path, monkeypatch, isolation
):
    """Inline, the patch replaces the suite's check (what docs/guarantees.md says in-process
    code can do); in its own process it patches that process's copy, and the wrong ReLU
    fails at relu.A."""
    monkeypatch.setattr(own_layer_checks, "check_layer", own_layer_checks.check_layer)
    layer = _layer("relu", _write(tmp_path, f"forger_{isolation}", FORGER), isolation)
    outcome = _check(parity, layer)
    if isolation == "inline":
        assert outcome.message is None and outcome.records == []  # forged
        return
    assert outcome.message is not None, "the forger's patch reached the suite"
    assert {r["tensor"] for r in outcome.records if r["status"] == "fail"} == {"relu.A"}


# --- functions that end their process, crash or hang --------------------------------------------

# how relu_forward misbehaves -> what the failing record says
ENDINGS = {
    "os-exit": ("os._exit(0)", "relu_forward called os._exit(0)"),
    "sys-exit": ("sys.exit(3)", "relu_forward called sys.exit(3)"),
    "posix-exit": ("posix._exit(0)", "ended with exit status 0 before it returned"),
    "segfault": ("ctypes.string_at(0)", "was killed by signal SIGSEGV"),
    "killed": ("os.kill(os.getpid(), signal.SIGKILL)", "was killed by signal SIGKILL"),
    "hangs": ("while True: pass", "did not return within 1 s (--parity-layer-timeout)"),
    # writes a forged header into the pipe its answers go through (any fd it can write)
    "answers-garbage": (
        "[os.write(fd, b'\\xff' * 64) for fd in range(3, 64) if _writable_pipe(fd)]",
        "answered something that is not an answer",
    ),
    # writes a well-formed message whose answer is not a call's outcome
    "answers-malformed": (
        "[_forge(fd) for fd in range(3, 64) if _writable_pipe(fd)]",
        "answered something that is not an answer (ValueError",
    ),
}


@pytest.mark.parametrize("how", ENDINGS)
def test_a_function_that_ends_crashes_or_hangs_is_a_failing_record(parity, tmp_path, how):
    call, says = ENDINGS[how]
    source = f"""
        import ctypes, fcntl, os, posix, signal, stat, sys
        import numpy as np

        def _forge(fd):
            import pickle, struct
            body = pickle.dumps(("returned",), protocol=5)
            os.write(fd, struct.pack("<QQ", len(body), 0) + body)

        def _writable_pipe(fd):
            try:
                mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
                return stat.S_ISFIFO(os.fstat(fd).st_mode) and mode == os.O_WRONLY
            except OSError:
                return False

        def relu_forward(x):
            {call}

        def relu_backward(dout, cache):
            return dout * (cache > 0)
    """
    layer = _layer("relu", _write(tmp_path, how.replace("-", "_"), source), timeout=1)
    outcome = _check(parity, layer)
    assert outcome.message is not None
    first = outcome.message.splitlines()[0]
    assert first.startswith("own layer relu [float64]") and "failed to run: OwnLayerError" in first
    assert says in outcome.message, outcome.message
    assert outcome.records and all(r["status"] == "error" for r in outcome.records)
    # Ended, crashed or hung, the function's process is started again for the next call:
    # the module's other functions still run.
    backward = layer.functions[1]
    assert np.array_equal(backward(np.ones(3), np.array([1.0, -1.0, 2.0])), [1.0, 0.0, 1.0])


def test_a_function_that_always_ends_its_process_is_not_restarted_for_ever(tmp_path):
    path = _write(
        tmp_path,
        "always_dies",
        """
        import posix
        def relu_forward(x):
            posix._exit(7)
        def relu_backward(dout, cache):
            return dout
        """,
    )
    forward = _layer("relu", path).functions[0]
    for _ in range(user_process.MAX_DEATHS):
        with pytest.raises(own_layers.OwnLayerError, match="ended with exit status 7"):
            forward(np.ones(2))
    with pytest.raises(own_layers.OwnLayerError, match="is not called again in this session"):
        forward(np.ones(2))


def test_an_import_that_ends_its_process_is_one_usage_error(tmp_path):
    path = _write(tmp_path, "exits_at_import", "import sys\nsys.exit(2)\n")
    value = own_layers.option_value("relu", path)
    with pytest.raises(pytest.UsageError, match=r"could not be imported \(SystemExit: 2\)"):
        own_layers.parse_layer(value, "process")


def test_a_raised_exception_keeps_its_name_message_and_the_users_frames(parity, tmp_path):
    path = _write(
        tmp_path,
        "raises",
        """
        class LayerNotWritten(Exception):
            pass

        def relu_forward(x):
            return _helper(x)

        def _helper(x):
            raise LayerNotWritten("todo: relu")

        def relu_backward(dout, cache):
            return dout
        """,
    )
    message = _check(parity, _layer("relu", path)).message
    assert "failed to run: LayerNotWritten: todo: relu" in message, message
    assert "Traceback (your code, most recent call last):" in message
    assert "in _helper" in message and "raises.py" in message, message


# --- what crosses the boundary ------------------------------------------------------------------

CACHE_OF_ITS_OWN_CLASS = """
    import numpy as np

    class Cache:  # a class the suite cannot import
        def __init__(self, x):
            self.mask = x > 0

    def relu_forward(x):
        return np.maximum(x, 0), Cache(x)

    def relu_backward(dout, cache):
        return dout * cache.mask

    def relu_forward_garbage(x):
        return (v for v in x), None
"""


def test_a_cache_of_the_users_own_class_stays_in_its_process(parity, tmp_path):
    path = _write(tmp_path, "own_cache", CACHE_OF_ITS_OWN_CLASS)
    layer = _layer("relu", path)
    out, cache = layer.functions[0](np.array([1.0, -2.0]))
    assert type(cache).__name__ == "Cache" and isinstance(cache, user_process.Opaque)
    assert np.array_equal(layer.functions[1](np.array([5.0, 5.0]), cache), [5.0, 0.0])
    assert _check(parity, layer).message is None
    garbage = own_layers.parse_layer(f"relu={path}:relu_forward_garbage,{path}:relu_backward", "process")
    message = _check(parity, garbage).message
    assert "returned generator as out" in message, message


@pytest.mark.parametrize("isolation", MODES)
def test_writes_into_arguments_are_caught_as_inline(parity, tmp_path, isolation):
    path = _write(
        tmp_path,
        f"writes_{isolation}",
        """
        import numpy as np
        def relu_forward(x):
            x[x < 0] = 0  # into the layer before's output
            return x.copy(), x
        def relu_backward(dout, cache):
            return dout * (cache > 0)
        """,
    )
    message = _check(parity, _layer("relu", path, isolation)).message
    assert "relu_forward changed its argument x in place" in message, message


def test_an_answer_naming_anything_but_arrays_and_plain_values_is_refused():
    """The suite reads a child's answer with a restricted unpickler: an answer cannot make
    it run code."""
    import os

    with pytest.raises(pickle.UnpicklingError, match="may not name"):
        user_process._safe_loads(pickle.dumps(("returned", os.system)))
    plain = ("returned", np.arange(3.0)[::2], np.float32(1), 2 + 1j, {"a": [None, "s"]})
    got = user_process._safe_loads(pickle.dumps(plain, protocol=5))
    assert got[1].tolist() == [0.0, 2.0] and got[2] == np.float32(1) and got[4] == plain[4]


# --- the bundled examples: the same verdicts in both modes ---------------------------------------


def _verdict(parity, kind, path, isolation):
    outcome = _check(parity, _layer(kind, path, isolation))
    records = [(r["tensor"], r["against"], r["status"], r["budget_used"]) for r in outcome.records]
    return outcome.message is None, records


# batchnorm (its bn_param written back from the child) and dropout (its mask drawn there)
# stay in the gate; the other normalisations call alike.
_SLOW_HERE = ("spatial_batchnorm", "layernorm", "groupnorm")


@pytest.mark.parametrize("path", [GOOD, BROKEN], ids=["layers", "broken"])
@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, marks=pytest.mark.slow) if k in _SLOW_HERE else k for k in own_layers.KINDS],
)
def test_the_examples_get_the_same_verdict_in_a_child_as_inline(parity, kind, path):
    process = _verdict(parity, kind, path, "process")
    inline = _verdict(parity, kind, path, "inline")
    assert process == inline
    planted = path == BROKEN and kind not in ("avgpool", "relu", "sigmoid", "tanh", "dense")
    assert process[0] is not planted


# --- a whole pytest run ---------------------------------------------------------------------------

FORGER_AT_IMPORT = """
    import numpy as np
    from parity_tests import own_layer_checks

    own_layer_checks.check_layer = lambda *a, **k: own_layer_checks.Outcome([], None)

    def relu_forward(x):
        return np.abs(x), x

    def relu_backward(dout, cache):
        return dout * (cache > 0)
"""

REALLY_EXITS = """
    import posix

    def relu_forward(x):
        posix._exit(0)  # not os._exit: nothing in the process can intercept it

    def relu_backward(dout, cache):
        return dout
"""

# the layers file, the isolation -> the exit status and what the output says
RUNS = {
    "forger-process": (FORGER_AT_IMPORT, "process", 1, "relu.A vs reference"),
    "forger-inline": (FORGER_AT_IMPORT, "inline", 0, "passed"),  # what inline code can do
    "posix-exit-process": (REALLY_EXITS, "process", 1, "ended with exit status 0"),
}


@pytest.mark.slow  # a pytest session of the own-layer checks each (~10 s)
@pytest.mark.parametrize("name", RUNS)
def test_a_hostile_layers_file_in_a_whole_run(tmp_path, name):
    import os
    import subprocess
    import sys

    source, isolation, status, says = RUNS[name]
    path = _write(tmp_path, name.replace("-", "_"), source)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "parity_tests/test_own_layers.py"]
        + [f"--parity-layer={own_layers.option_value('relu', path)}", "--parity-no-report"]
        + [f"--parity-layer-isolation={isolation}", "--parity-frameworks=torch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PARITY_MNIST": "synthetic"},
    )
    out = run.stdout + run.stderr
    assert run.returncode == status, out[-3000:]
    assert says in out, out[-3000:]


def test_inline_is_in_the_reproduce_line_and_the_header(parity_settings):
    import shlex

    from parity_tests import plugin, settings

    value = own_layers.option_value("relu", "examples/cs231n_layers/layers.py")
    for isolation, extra, where in (
        ("process", [], "a child process per module"),
        ("inline", ["--parity-layer-isolation", "inline"], "inline"),
    ):
        s = dataclasses.replace(parity_settings, layers=(value,), layer_isolation=isolation)
        assert shlex.split(settings.reproduce_options(s))[-2 - len(extra) :] == [
            "--parity-layer",
            value,
            *extra,
        ]
        state = SimpleNamespace(
            data=SimpleNamespace(source="synthetic"), environment={}, framework_errors={}
        )
        config = SimpleNamespace(stash={settings.SETTINGS: s, settings.STATE: state})
        header = plugin.pytest_report_header(config)
        assert f"parity own layers (--parity-layer, {where}): {value}" in header


# --- function objects of this process, served by a forked child (the notebook API) ---------------

GLOBAL_SCALE = 3.0  # read by a served function through its module's globals


def _forked(functions, timeout=20.0):
    return user_process.FunctionProcess(functions, "test", timeout, "timeout=")


def test_a_forked_child_has_the_closures_globals_and_keeps_caches_and_writes(capfd):
    offset = np.float64(0.5)  # a closure's cell: nothing is pickled

    class Cache:  # a local class, which no child could import
        def __init__(self, x):
            self.x = x

    def forward(x):
        print("printed in the child")
        return GLOBAL_SCALE * x + offset, Cache(x)

    def backward(dout, cache):
        cache.x[...] = 0  # the forward's input, written through the cache
        return dout * GLOBAL_SCALE

    def doubles(x):
        x *= 2  # into its argument: copied back here, as inline

    process = _forked({"f": forward, "b": backward, "d": doubles})
    try:
        f = user_process.RemoteFunction(process, "f", "forward", held=(1,))
        b = user_process.RemoteFunction(process, "b", "backward")
        x = np.array([1.0, -2.0])
        out, cache = f(x)
        assert out.tolist() == [3.5, -5.5] and type(cache).__name__ == "Cache"
        assert b(np.ones(2), cache).tolist() == [3.0, 3.0]
        # x itself was not handed to backward: the child's copy of it changed, not ours
        assert x.tolist() == [1.0, -2.0]
        assert user_process.RemoteFunction(process, "d", "doubles")(x) is None
        assert x.tolist() == [2.0, -4.0]
    finally:
        process.stop()
    assert "printed in the child" not in capfd.readouterr().out  # its prints go to its log


def test_a_forked_child_has_none_of_the_parents_other_files():
    """Only its stdin/stdout/stderr and its two pipes: not a pipe of another child (a request
    forged into it would come back as that child's answer), nor a kernel's sockets."""
    import os

    kept = os.pipe()  # an open file of the parent's at the fork

    def open_files():
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                found.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:  # listdir's own, closed by now
                pass
        return found

    process = _forked({"files": open_files})
    try:
        files = user_process.RemoteFunction(process, "files", "files")()
    finally:
        process.stop()
        theirs = f"pipe:[{os.fstat(kept[0]).st_ino}]"
        os.close(kept[0])
        os.close(kept[1])
    pipes = [f for f in files if f.startswith("pipe:")]
    assert len(pipes) == 2 and theirs not in pipes, files  # its requests and its answers
    assert len(files) == 6, files  # and stdin, sys.stdin (/dev/null), stdout = stderr (the log)


def test_a_fork_that_fails_is_a_failure_naming_it(monkeypatch):
    import errno
    import os

    def fails():
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", fails)
    process = _forked({"f": len})
    with pytest.raises(user_process.UserCodeError) as raised:
        user_process.RemoteFunction(process, "f", "f")([1])
    assert str(raised.value) == (
        "f: its process could not be started (fork() failed: [Errno 12] Cannot allocate "
        "memory; isolation='inline' runs the functions in this process)"
    )


def _linear_algebra(a):
    return a @ a.T, np.linalg.inv(a @ a.T + 10 * np.eye(len(a))), np.linalg.svd(a)[1]


def test_a_forked_child_runs_numpy_linear_algebra_as_this_process():
    a = np.random.default_rng(0).standard_normal((64, 64))
    process = _forked({"la": _linear_algebra})
    try:
        remote = user_process.RemoteFunction(process, "la", "la")
        for _ in range(3):
            for mine, theirs in zip(_linear_algebra(a), remote(a)):
                assert np.array_equal(mine, theirs)
    finally:
        process.stop()


FORK_AFTER_FRAMEWORKS = """
import parity_tests.pins  # one thread each, as the suite runs
import numpy as np, tensorflow as tf, torch
from parity_tests import user_process
from parity_tests.test_user_process import _linear_algebra

torch.ones(64, 64) @ torch.ones(64, 64)  # the frameworks' threads and pools started
tf.linalg.matmul(tf.ones((64, 64)), tf.ones((64, 64))).numpy()
a = np.random.default_rng(0).standard_normal((64, 64))
process = user_process.FunctionProcess({"la": _linear_algebra}, "la", 30, "timeout=")
remote = user_process.RemoteFunction(process, "la", "la")
same = all(np.array_equal(m, t) for _ in range(3) for m, t in zip(_linear_algebra(a), remote(a)))
# A function that calls the frameworks itself (docs/notebook.md: not supported by them after
# a fork, but one-thread ops run)
process.functions["torch"] = lambda x: (torch.from_numpy(x) @ torch.from_numpy(x).T).numpy()
process.functions["tf"] = lambda x: tf.linalg.matmul(x, x, transpose_b=True).numpy()
process.stop()  # forked again with them
for name in ("torch", "tf"):
    here = process.functions[name](a)
    same &= np.array_equal(user_process.RemoteFunction(process, name, name)(a), here)
process.stop()
print("same:", same)
"""


@pytest.mark.slow  # imports TensorFlow in a fresh interpreter (~10 s)
def test_a_child_forked_after_torch_and_tensorflow_ran_does_not_deadlock():
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", FORK_AFTER_FRAMEWORKS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.stdout.strip().endswith("same: True"), run.stdout + run.stderr[-3000:]

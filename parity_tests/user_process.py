"""A user's functions run in a child process, called from the suite as if they were local.

`--parity-layer` files (parity_tests/own_layers.py) are imported in a child Python process,
one per module, started once and kept for the session: the suite sends a function's name
and arguments, the child calls it and answers with what it returned and with the
arguments it changed in place. What runs in the child cannot reach the suite's memory: a
layers file that patches the suite at import patches the child's copy, which checks
nothing, and a function that ends its process (`os._exit`, a crash, a signal), hangs
(`timeout` seconds, then killed) or answers what cannot be read becomes an error naming the
function and what happened. The next call starts a fresh child.

What crosses the boundary is plain data: NumPy arrays and scalars, Python numbers, strings,
None, and tuples, lists and dicts of them. Anything else a function returns (a cache that
is an object of the user's own class, a closure, a generator) stays in the child: the
suite gets an `Opaque` handle, named after the object's type, and passing that handle back
(a backward's `cache`) hands the child's object to the function. A return value at a
position named `held` (a forward's cache) always stays in the child, so that a cache that
aliases the forward's output or input is the same object in the backward, as inline.
The suite reads the child's answers with an unpickler that builds NumPy arrays and plain
Python values only, so an answer cannot make the suite run code either.

In place writes: the child keeps a copy of each array argument and answers with those the
call changed; the suite copies them into its own arrays (and dicts and lists updated
alike), so a check that compares its arguments before and after a call sees the same as
if the function had run inline.

Limits (docs/guarantees.md): the child runs as the same user, with the same files,
network and environment; it can write files, read the suite's files, or use all memory or
CPU. It guards the verdict, not the machine.

`python parity_tests/user_process.py` is the child: it imports nothing of the project, so
the suite's modules it could patch are not even loaded there.

Function objects that exist only in this process (a notebook's cells: the notebook API,
parity_tests/api.py) are served by `FunctionProcess`: a child forked from this process,
which has them without pickling, runs the same serving loop with a namespace of them as its
module (it imports nothing, but it holds a copy of the suite's modules: a patch of them
there changes that copy only).

Any loader of user code can use it as own_layers.py does (`_import`, `_function`):

    process = process_for("path/to/file.py", is_path=True, timeout=60, option="--my-timeout")
    process.load()                      # LoadError: the module raised or died at import
    what, file = process.lookup("sgd")  # "function", "missing" or the type name found
    sgd = RemoteFunction(process, "sgd", "file.py:sgd", held=(), error=MyError)
    sgd(w, dw, config)                  # as the function itself; failures raise MyError
"""

from __future__ import annotations

import atexit
import builtins
import io
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import OrderedDict

import numpy as np

# As --parity-timeout's: a loop-per-pixel conv of lenet takes ~5 s a call at 200 images and
# ~25 times that at 5,000; a hang costs it once per function (then it is not called again).
DEFAULT_TIMEOUT_S = 300.0
# Consecutive deaths of one function's calls after which it is not called again this
# session: a function that always kills its process fails fast instead of restarting it
# at every draw and point of a sweep.
MAX_DEATHS = 3
MAX_PROCESSES = 16  # idle children kept; the least recently used one is stopped beyond it
_STDERR_TAIL = 1500
_WARNINGS_PER_CALL = 10
_HEADER = struct.Struct("<QQ")
OPTION = "--parity-layer-timeout"


class UserCodeError(RuntimeError):
    """The user's function could not be called: its process ended, it hung, or its answer
    could not be read. Raised as `error` (RemoteFunction's), so callers raise their own."""


class _Died(UserCodeError):
    """The child ended (or stopped answering) during a call."""


class _Hung(UserCodeError):
    """The call did not return within the timeout; the child was killed."""


class RemoteRaised(Exception):
    """Base of the exceptions raised again here for those the user's function raised in its
    process: a class of the same name (ValueError, the user's own LayerError), the same
    message, and `parity_frames`, the child's traceback (traceback.StackSummary)."""


class _RemoteTraceback(Exception):
    """The child's traceback as text: the __cause__ of a RemoteRaised, so that a formatted
    exception shows where in the user's code it was raised."""

    def __str__(self):
        return "\n" + self.args[0]


class Opaque:
    """A value that stays in the child (a cache of the user's own type): only its type's
    name is known here. Subclassed per type name, so that type(value).__name__ says what
    the user returned ('returned LayerCache as out')."""

    __slots__ = ("_process", "_generation", "_id", "__weakref__")

    def __init__(self, process, generation: int, ident: int):
        self._process, self._generation, self._id = process, generation, ident

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object kept in the user's process>"

    def __del__(self):
        try:
            self._process._release(self._generation, self._id)
        except Exception:  # noqa: BLE001  (interpreter shutdown: nothing left to release)
            pass


_OPAQUE_TYPES: dict = {}


def _opaque_type(name: str) -> type:
    name = name if name.isidentifier() else "object"
    if name not in _OPAQUE_TYPES:
        _OPAQUE_TYPES[name] = type(name, (Opaque,), {"__slots__": (), "__module__": __name__})
    return _OPAQUE_TYPES[name]


_RAISED_TYPES: dict = {}


def _raised_type(name: str, module: str) -> type:
    key = (name if name.isidentifier() else "Exception", module)
    if key not in _RAISED_TYPES:
        _RAISED_TYPES[key] = type(key[0], (RemoteRaised,), {"__module__": module or "builtins"})
    return _RAISED_TYPES[key]


# --- the wire: length-prefixed pickles; the suite reads answers with a restricted unpickler ----

# The only globals an answer may name: what pickling NumPy arrays, scalars and dtypes
# (numpy 1.x and 2.x module names) and complex numbers needs.
_SAFE_GLOBALS = {
    ("builtins", "complex"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    *(
        (f"{core}.{module}", name)
        for core in ("numpy.core", "numpy._core")
        for module, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        )
    ),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"an answer may not name {module}.{name}")
        return super().find_class(module, name)


def _safe_loads(data, buffers=()) -> object:
    return _SafeUnpickler(io.BytesIO(data), buffers=buffers).load()


# A message: a header (the pickle's length, how many buffers), the buffers' lengths, the
# pickle, then each contiguous array's bytes as they are in memory (pickle protocol 5's
# out-of-band buffers: megabytes of a layer's arrays are written and read in place, never
# copied into the pickle).


def _frame(message) -> list:
    """The pieces of one message, to be written in order."""
    buffers: list = []
    body = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raw = [b.raw() for b in buffers]
    sizes = struct.pack(f"<{len(raw)}Q", *(r.nbytes for r in raw))
    return [_HEADER.pack(len(body), len(raw)), sizes, body, *raw]


def _write(fd: int, pieces: list) -> None:
    views = [memoryview(p).cast("B") for p in pieces if len(p)]
    while views:
        done = os.writev(fd, views[:512])
        while done and views:
            if done >= views[0].nbytes:
                done -= views[0].nbytes
                views.pop(0)
            else:
                views[0], done = views[0][done:], 0


def _read(fd: int, n: int, deadline: float | None = None) -> bytearray:
    """Exactly n bytes (into a fresh buffer): EOFError when the other end closed first,
    TimeoutError past `deadline` (time.monotonic(); None: wait)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
        k = os.readv(fd, [view[got:]])
        if not k:
            raise EOFError
        got += k
    return buf


class _Garbage(ValueError):
    """A message header no sender of ours writes."""


_MAX_BUFFERS = 1 << 16
_MAX_BYTES = 1 << 40


def _read_message(fd: int, deadline: float | None = None, loads=pickle.loads):
    body_size, count = _HEADER.unpack(_read(fd, _HEADER.size, deadline))
    if count > _MAX_BUFFERS or body_size > _MAX_BYTES:  # before allocating what it claims
        raise _Garbage(f"a header claiming {count} buffers and a {body_size}-byte pickle")
    sizes = struct.unpack(f"<{count}Q", _read(fd, 8 * count, deadline)) if count else ()
    if sum(sizes) > _MAX_BYTES:
        raise _Garbage(f"a header claiming {sum(sizes)} bytes of arrays")
    body = _read(fd, body_size, deadline)
    buffers = [_read(fd, size, deadline) for size in sizes]
    return loads(body, buffers=buffers)


def _is_plain(value, depth: int = 0) -> bool:
    """Whether `value` crosses as data: NumPy arrays (not of objects) and scalars, Python
    numbers, strings, bytes, None, and shallow containers of them."""
    kind = type(value)
    if kind in (bool, int, float, complex, str, bytes, type(None)):
        return True
    if kind is np.ndarray or isinstance(value, np.generic):
        return kind.__module__.startswith("numpy") and value.dtype != object
    if depth >= 4:
        return False
    if kind in (tuple, list):
        return all(_is_plain(v, depth + 1) for v in value)
    if kind is dict:
        return all(_is_plain(k, depth + 1) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


# --- the suite's side -------------------------------------------------------------------------


class LoadError(Exception):
    """The module could not be imported in the child: `what` (the exception's type name,
    or how the process ended) and `message`."""

    def __init__(self, what: str, message: str):
        super().__init__(f"{what}: {message}" if message else what)
        self.what, self.message = what, message


class UserProcess:
    """One module (a .py file or a dotted name) imported in a child process, serving calls."""

    restart_failed = "its module could not be imported again"  # a LoadError at a restart

    def __init__(
        self, source: str, is_path: bool, timeout: float = DEFAULT_TIMEOUT_S, option: str = OPTION
    ):
        self.source, self.is_path, self.timeout = source, is_path, float(timeout)
        self.option = option  # the option that sets the timeout, named when a call hangs
        self.proc: subprocess.Popen | None = None
        self.generation = 0
        self.log = None
        self.deaths: dict[str, int] = {}
        self.refused: dict[str, str] = {}
        self._released: list = []
        self._lock = threading.Lock()

    @property
    def _import_timeout(self) -> float:
        # A short call timeout (a test's 1 s) must not fail the import, which starts Python
        # and NumPy and may import more (torch) on a busy machine.
        return max(self.timeout, DEFAULT_TIMEOUT_S)

    def __repr__(self) -> str:
        return f"UserProcess({self.source!r}, timeout={self.timeout:g})"

    # -- lifetime

    def _start(self) -> None:
        self.stop()
        self.generation += 1
        self._released = []
        self.log = tempfile.TemporaryFile(prefix="parity-user-")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            close_fds=True,
        )
        _widen(self.proc.stdin, self.proc.stdout)
        _started(self)
        try:
            message = ("load", list(sys.path), self.source, self.is_path)
            answer = self._ask(message, f"the import of {self.source}", self._import_timeout)
        except UserCodeError as exc:  # it died or hung while importing
            raise LoadError("its process failed", str(exc)) from None
        if answer[0] == "load_failed":
            self.stop()
            raise LoadError(answer[1], answer[2])

    def stop(self) -> None:
        """Kill the child (if any): its held objects are gone, the next call starts anew."""
        proc, self.proc = self.proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.log is not None:
            self.log.close()
            self.log = None
        _stopped(self)

    def _ensure(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._start()

    def load(self) -> None:
        """Import the module in a (fresh) child now: LoadError if it cannot be imported."""
        with self._lock:
            self._ensure()

    # -- the wire

    def _stderr_tail(self) -> str:
        if self.log is None:
            return ""
        try:
            self.log.seek(0, os.SEEK_END)
            size = self.log.tell()
            self.log.seek(max(0, size - _STDERR_TAIL))
            return self.log.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def _ended(self, what: str) -> _Died:
        """The error for a child that stopped answering: how it ended, and its stderr."""
        proc = self.proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        tail = self._stderr_tail()
        self.stop()
        if code is None:
            how = "stopped answering"
        elif code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"ended with exit status {code}"
        return _Died(
            f"the process running {what} {how} before it returned (os._exit, a crash, a "
            "signal or running out of memory?)" + (f"; its stderr ends: {tail}" if tail else "")
        )

    def _ask(self, message, what: str, timeout: float | None = None) -> tuple:
        """Send `message`, wait for the answer (at most the timeout): the answer read back
        safely; UserCodeError when the child died, hung or answered garbage (it is stopped)."""
        timeout = self.timeout if timeout is None else timeout
        try:
            _write(self.proc.stdin.fileno(), _frame(message))
            data, buffers = _read_message(
                self.proc.stdout.fileno(), time.monotonic() + timeout, lambda d, buffers: (d, buffers)
            )
        except (BrokenPipeError, EOFError, ConnectionError):
            raise self._ended(what) from None
        except _Garbage as exc:
            self.stop()
            raise UserCodeError(
                f"the process running {what} answered something that is not an answer "
                f"({exc}); it was stopped"
            ) from None
        except TimeoutError:
            self.stop()
            raise _Hung(
                f"{what} did not return within {timeout:g} s ({self.option}); its process was killed"
            ) from None
        except BaseException:  # Ctrl-C while waiting: the child's answer is lost, stop it
            self.stop()
            raise
        try:
            answer = _safe_loads(data, buffers)
            if not isinstance(answer, tuple) or not answer or not isinstance(answer[0], str):
                raise ValueError(f"an answer of type {type(answer).__name__}")
        except Exception as exc:  # noqa: BLE001  (whatever the bytes were)
            self.stop()
            raise UserCodeError(
                f"the process running {what} answered something that is not an answer "
                f"({type(exc).__name__}: {exc}); it was stopped"
            ) from None
        return answer

    # -- what the suite asks

    def lookup(self, name: str) -> tuple[str, str]:
        """("function", file) when the module has a callable `name`, ("missing", "") when it
        has none, (type name, "") when it is not callable; LoadError when the process cannot
        say."""
        with self._lock:
            self._ensure()
            try:
                answer = self._ask(
                    ("lookup", name), f"{self.source} (looking up {name})", self._import_timeout
                )
                _, what, file = answer
                if not (isinstance(what, str) and isinstance(file, str)):
                    raise ValueError(f"an answer {answer!r:.80}")
            except (UserCodeError, ValueError) as exc:
                self.stop()
                raise LoadError("its process failed", str(exc)) from None
        return what, file

    def _release(self, generation: int, ident: int) -> None:
        if generation == self.generation:
            self._released.append(ident)

    def call(self, fn: RemoteFunction, args: tuple):
        with self._lock:
            return self._call(fn, args)

    def _call(self, fn: RemoteFunction, args: tuple):
        encoded, readonly = [], []
        for i, a in enumerate(args):
            if isinstance(a, Opaque):
                if a._process is not self or a._generation != self.generation:
                    raise fn.error(
                        f"{fn.label} was given a {type(a).__name__} kept by a process that "
                        "has since been stopped (an earlier call ended or hung it): the "
                        "forward that made it must run again"
                    )
                encoded.append(("h", a._id))
            else:
                encoded.append(("v", a))
                if isinstance(a, np.ndarray) and not a.flags.writeable:
                    readonly.append(i)
        answer, failure = self._answer(fn, encoded, readonly)
        if failure is None:
            value, failure = self._outcome(fn, args, answer)
        if failure is None:
            self.deaths.pop(fn.name, None)  # the streak of broken calls is over
        else:
            # One raise, outside any handler, whatever the failure: Hypothesis replays a
            # failing draw and takes an error from another line (or with another context)
            # for a flaky test.
            raise fn.error(failure)
        return value

    def _answer(self, fn: RemoteFunction, encoded: list, readonly: list):
        """(the child's answer, None), or (None, what went wrong) when it could not be had:
        the function is refused, its module cannot be imported again, or the call ended
        the child or hung (which may refuse the function from now on)."""
        if fn.name in self.refused:
            return None, self.refused[fn.name]
        if self.proc is None or self.proc.poll() is not None:
            try:
                self._start()
            except LoadError as exc:
                return None, f"{fn.label}: {self.restart_failed} ({exc})"
        released, self._released = self._released, []
        request = ("call", fn.name, encoded, readonly, fn.held, np.geterr(), released)
        try:
            answer = self._ask(request, fn.label)
        except UserCodeError as exc:
            self._strike(fn, exc)
            return None, str(exc)
        return answer, None

    def _strike(self, fn: RemoteFunction, exc: UserCodeError) -> None:
        """A call that hung, or the MAX_DEATHS-th in a row to end or garble its process:
        the function is not called again this session."""
        deaths = self.deaths[fn.name] = self.deaths.get(fn.name, 0) + 1
        hung = isinstance(exc, _Hung)
        if hung or deaths >= MAX_DEATHS:
            why = "hung" if hung else f"ended or garbled its process {deaths} times in a row"
            self.refused[fn.name] = (
                f"{fn.label} is not called again in this session: an earlier call {why} ({exc})"
            )

    def _outcome(self, fn: RemoteFunction, args: tuple, answer: tuple):
        """(what the call returned, None), the user's exception raised again, or (None, what
        was wrong) when the answer is not a call's outcome."""
        try:
            return self._outcome_of(fn, args, answer), None
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            if isinstance(exc, fn.error):  # said already (the caller's error class)
                raise
            self.stop()
            garbled = UserCodeError(
                f"the process running {fn.label} answered something that is not an answer "
                f"({type(exc).__name__}: {exc}); it was stopped"
            )
            self._strike(fn, garbled)
            return None, str(garbled)

    def _outcome_of(self, fn: RemoteFunction, args: tuple, answer: tuple):
        error, status = fn.error, answer[0]
        for category, text in answer[-1] if status in ("returned", "raised") else ():
            # Warnings the call gave, again here (a builtin category as itself).
            cls = vars(builtins).get(category)
            if not (isinstance(cls, type) and issubclass(cls, Warning)):
                cls, text = UserWarning, f"{category}: {text}"
            warnings.warn(f"{fn.label}: {text}", cls, stacklevel=5)
        if status == "returned":
            _, result, changed, _ = answer
            self._write_back(fn, args, changed)
            return self._decode(result)
        if status == "raised":
            _, name, module, message, frames, _ = answer
            exc = _raised_type(name, module)(message)
            exc.parity_frames = traceback.StackSummary.from_list(frames)
            cause = _RemoteTraceback(
                "Traceback (in the user's process, most recent call last):\n"
                + "".join(exc.parity_frames.format())
                + f"{name}: {message}"
            )
            raise exc from cause
        if status == "exit":
            raise error(f"{fn.label} called sys.exit({answer[1]})")
        if status == "os_exit":
            raise error(f"{fn.label} called {answer[1]}({answer[2]})")
        if status == "unsendable":
            raise error(f"{fn.label} returned something its process could not send: {answer[1]}")
        raise error(f"{fn.label}: its process answered {status!r}, not a call's outcome")

    def _write_back(self, fn: RemoteFunction, args: tuple, changed: dict) -> None:
        """Copy what the call changed in place into the suite's own arguments."""
        for i, after in changed.items():
            mine = args[i]
            if isinstance(mine, np.ndarray):
                if (
                    not isinstance(after, np.ndarray)
                    or after.shape != mine.shape
                    or after.dtype != mine.dtype
                ):
                    raise fn.error(
                        f"{fn.label} changed its argument #{i + 1} in place into "
                        f"{getattr(after, 'dtype', type(after).__name__)} "
                        f"{getattr(after, 'shape', '')}: a function must leave its arguments as they are"
                    )
                if not mine.flags.writeable:  # made writable again in the child
                    raise fn.error(f"{fn.label} changed its read-only argument #{i + 1} in place")
                np.copyto(mine, after)
            elif isinstance(mine, dict) and isinstance(after, dict):
                mine.clear()
                mine.update(after)
            elif isinstance(mine, list) and isinstance(after, list):
                mine[:] = after

    def _decode(self, value):
        kind = value[0]
        if kind == "v":
            return value[1]
        if kind == "h":
            return _opaque_type(value[2])(self, self.generation, value[1])
        if kind in ("tuple", "list"):
            items = [self._decode(v) for v in value[1]]
            return tuple(items) if kind == "tuple" else items
        raise UserCodeError(f"an answer holding {kind!r}")


def _widen(*pipes) -> None:
    """Linux: 1 MiB pipes instead of 64 KiB, so that a layer's megabytes cross in a few
    writes rather than hundreds of switches between the two processes."""
    try:
        import fcntl

        for pipe in pipes:
            fcntl.fcntl(pipe.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ
    except (ImportError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size
        pass


class RemoteFunction:
    """The function `name` of a UserProcess's module, called like the function itself.
    `held`: positions of a returned tuple that stay in the child whatever they are (a
    forward's cache); `error`: the exception class of the caller's errors (each names
    `label`)."""

    def __init__(
        self, process: UserProcess, name: str, label: str, held=(), error=UserCodeError, file=""
    ):
        self.process, self.name, self.label = process, name, label
        self.held, self.error, self.file = tuple(held), error, file
        self.__name__ = name

    def __repr__(self) -> str:
        return f"RemoteFunction({self.label!r}, in {self.process!r})"

    def __call__(self, *args):
        return self.process.call(self, args)


_PROCESSES: dict = {}
_LIVE: OrderedDict = OrderedDict()  # started UserProcesses, least recently started first


def process_for(
    source: str, is_path: bool, timeout: float = DEFAULT_TIMEOUT_S, option: str = OPTION
) -> UserProcess:
    """The session's UserProcess of a module (one per module, sys.path, timeout and option)."""
    key = (source, is_path, float(timeout), option, tuple(sys.path))
    if key not in _PROCESSES:
        _PROCESSES[key] = UserProcess(source, is_path, timeout, option)
    return _PROCESSES[key]


def _started(process: UserProcess) -> None:
    _LIVE.pop(id(process), None)
    _LIVE[id(process)] = process
    while len(_LIVE) > MAX_PROCESSES:
        _, oldest = _LIVE.popitem(last=False)
        if oldest is not process:
            oldest.stop()


def _stopped(process: UserProcess) -> None:
    _LIVE.pop(id(process), None)


@atexit.register
def stop_all() -> None:
    """Stop every child this process started (also at the interpreter's exit)."""
    for process in list(_LIVE.values()):
        process.stop()


# --- function objects of this process, served by a forked child (the notebook API) ----------


class _Forked:
    """What UserProcess uses of a subprocess.Popen, for a child forked from this process:
    its two pipes, poll, wait and kill (returncode as Popen's: -N for signal N)."""

    def __init__(self, pid: int, stdin, stdout):
        self.pid, self.stdin, self.stdout = pid, stdin, stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: how it ended is lost
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0005
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"forked child {self.pid}", timeout)
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class FunctionProcess(UserProcess):
    """Function objects of this process (a notebook's), served by a child forked from it.

    The child is a copy of this process made by fork(): it has the functions, their
    closures and the globals they use without pickling anything, and the same serving loop
    as `python user_process.py` with a namespace of `functions` as its module. What a call
    does there (patch the suite's modules, os._exit, crash, hang) cannot reach this
    process. The child runs only the serving loop and the functions: nothing of torch or
    TensorFlow, whose threads do not survive a fork, unless a function itself uses them.

        process = FunctionProcess({"relu_forward": relu_forward}, "relu", timeout=60)
        relu = RemoteFunction(process, "relu_forward", "relu_forward", held=(1,))
        out, cache = relu(x)
        process.stop()            # or let the next start or the interpreter's exit do it

    A fresh child is forked when the previous one ended or hung: it copies this process as
    it is then (a global changed since is changed there too)."""

    def __init__(
        self, functions: dict, label: str, timeout: float = DEFAULT_TIMEOUT_S, option: str = OPTION
    ):
        if not hasattr(os, "fork"):
            raise OSError("this platform has no fork(): run the functions inline (isolation='inline')")
        super().__init__(label, False, timeout, option)
        self.functions = dict(functions)

    restart_failed = "its process could not be started"

    def __repr__(self) -> str:
        return f"FunctionProcess({self.source!r}, timeout={self.timeout:g})"

    def _start(self) -> None:
        self.stop()
        self.generation += 1
        self._released = []
        self.log = tempfile.TemporaryFile(prefix="parity-user-")
        try:
            self.proc = _fork(self.functions, self.log.fileno())
        except OSError as exc:  # no memory to copy this process (strict overcommit), no pids
            self.stop()
            raise LoadError(
                "fork() failed", f"{exc}; isolation='inline' runs the functions in this process"
            ) from None
        _widen(self.proc.stdin, self.proc.stdout)
        _started(self)


def _fork(functions: dict, log_fd: int) -> _Forked:
    """Fork a child serving `functions` on two pipes; its stdout and stderr go to `log_fd`."""
    requests, answers = os.pipe(), os.pipe()  # (read, write) each; not inherited by exec
    parent, on_main_thread = os.getpid(), threading.current_thread() is threading.main_thread()
    with warnings.catch_warnings():
        # Python 3.12+ warns at a fork of a process with threads (torch's, TensorFlow's): the
        # child runs none of their code, only the serving loop and the user's functions.
        warnings.filterwarnings("ignore", r".*fork\(\) may lead to deadlocks", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns, never runs this process's atexit or finalizers
        code = 70
        try:
            os.close(requests[1])
            os.close(answers[0])
            code = _forked_child(functions, requests[0], answers[1], log_fd, parent, on_main_thread)
        except BaseException:  # noqa: BLE001  (whatever happened, said in the log, then gone)
            try:  # on the file, not sys.stderr: a kernel's stream needs a thread not copied
                os.write(2, traceback.format_exc().encode("utf-8", "replace"))
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(requests[0])
    os.close(answers[1])
    return _Forked(
        pid, os.fdopen(requests[1], "wb", buffering=0), os.fdopen(answers[0], "rb", buffering=0)
    )


def _forked_child(functions, inp: int, out: int, log_fd: int, parent: int, on_main_thread: bool):
    import gc
    import random
    import types

    # The parent's objects are never collected here: a cycle that was garbage at the fork
    # would run finalizers of torch or TensorFlow objects, whose locks other threads of the
    # parent may have held at that instant.
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C (a Jupyter interrupt) is the parent's
    # PR_SET_PDEATHSIG fires when the forking *thread* ends: only the main thread lives as
    # long as the process (a child forked from another thread still ends when its pipe closes).
    if on_main_thread:
        _die_with_parent()
    if os.getppid() != parent:  # the parent ended before the death signal was set
        return 0
    # The user's prints go to the log (the tail of which a death's error quotes), not to the
    # parent's streams (a Jupyter kernel's stdout is a socket served by a thread not copied).
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    # Nothing else of the parent's files: not the pipes of its other children (a request
    # forged into one would come back to the parent as that child's answer), nor a
    # Jupyter kernel's sockets.
    import faulthandler

    faulthandler.disable()  # its file (pytest's, a kernel's) is one of those closed here
    keep = sorted({0, 1, 2, inp, out})
    for low, high in zip(keep, [*keep[1:], os.sysconf("SC_OPEN_MAX")]):
        os.closerange(low + 1, high)
    sys.stdin = open(os.devnull)  # noqa: SIM115
    sys.stdout = sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    random.seed(0)  # as the child of a module: its global random streams seeded, reproducible
    np.random.seed(0)
    server = _Server()
    server.module = types.SimpleNamespace(**functions)
    return _serve_loop(server, inp, out)


# --- the child's side ---------------------------------------------------------------------------


class _Exit(BaseException):
    def __init__(self, what: str, args: tuple):
        super().__init__(what)
        self.what, self.call_args = what, args


def _same_kind(a: np.ndarray, b) -> bool:
    return isinstance(b, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype


def _changed(before, after) -> bool:
    if isinstance(before, np.ndarray):
        if (
            not isinstance(after, np.ndarray)
            or before.shape != after.shape
            or before.dtype != after.dtype
        ):
            return True
        bits = before.reshape(-1).view(np.uint8)  # bit for bit: -0.0 is not 0.0, NaN is NaN
        return not np.array_equal(bits, np.ascontiguousarray(after).reshape(-1).view(np.uint8))
    try:
        return pickle.dumps(before, protocol=5) != pickle.dumps(after, protocol=5)
    except Exception:  # noqa: BLE001  (a container holding something unpicklable: say changed)
        return True


def _snapshot(value):
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True)
    if isinstance(value, dict | list) and _is_plain(value):
        return pickle.loads(pickle.dumps(value, protocol=5))
    return None


class _Server:
    def __init__(self):
        self.module = None
        self.held: dict[int, object] = {}
        self.next_id = 0

    def hold(self, value) -> tuple:
        self.next_id += 1
        self.held[self.next_id] = value
        return ("h", self.next_id, type(value).__name__)

    def encode(self, value, held=()) -> tuple:
        if type(value) in (tuple, list):
            kind = "tuple" if type(value) is tuple else "list"
            return (
                kind,
                [self.hold(v) if i in held else self.encode(v) for i, v in enumerate(value)],
            )
        if isinstance(value, np.ndarray) and type(value).__module__.startswith("numpy"):
            value = np.asarray(value)  # a masked array or np.matrix: read as the suite reads it
        return ("v", value) if _is_plain(value) else self.hold(value)

    def load(self, sys_path, source, is_path):
        sys.path[:] = sys_path
        # The global random streams are this process's own (forwarding the suite's at every
        # call would double a call's time): seeded, so that a run is reproducible.
        import random

        random.seed(0)
        np.random.seed(0)
        import importlib
        import importlib.util

        try:
            if is_path:
                import zlib

                stem = os.path.splitext(os.path.basename(source))[0]
                name = f"parity_user_{stem}_{zlib.crc32(source.encode()):08x}"
                spec = importlib.util.spec_from_file_location(name, source)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot load {source} as a Python module")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(source)
        except BaseException as exc:  # noqa: BLE001  (SystemExit at import included)
            return ("load_failed", type(exc).__name__, str(exc))
        self.module = module
        return ("loaded",)

    def lookup(self, name):
        found = getattr(self.module, name, None)
        if found is None:
            return ("found", "missing", "")
        if not callable(found):
            return ("found", type(found).__name__, "")
        code = getattr(found, "__code__", None)
        return ("found", "function", getattr(code, "co_filename", ""))

    def call(self, name, encoded, readonly, held, errstate, released):
        for ident in released:
            self.held.pop(ident, None)
        args = [self.held[v[1]] if v[0] == "h" else v[1] for v in encoded]
        for i in readonly:
            args[i].setflags(write=False)
        before = {i: _snapshot(a) for i, a in enumerate(args) if encoded[i][0] == "v"}
        before = {i: b for i, b in before.items() if b is not None}
        fn = getattr(self.module, name)
        saved = os._exit, os.abort

        def refuse(what):
            def exits(*call_args):
                raise _Exit(what, call_args)

            return exits

        os._exit, os.abort = refuse("os._exit"), refuse("os.abort")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with np.errstate(**errstate):
                    result = fn(*args)
            except _Exit as exc:
                return ("os_exit", exc.what, ", ".join(map(repr, exc.call_args)))
            except SystemExit as exc:
                return ("exit", repr(exc.code))
            except BaseException as exc:  # noqa: BLE001  (KeyboardInterrupt raised by user code too)
                frames = [
                    (f.filename, f.lineno, f.name, f.line)
                    for f in traceback.extract_tb(exc.__traceback__)[1:]
                ]
                return (
                    "raised",
                    type(exc).__name__,
                    type(exc).__module__,
                    str(exc),
                    frames,
                    _warnings(caught),
                )
            finally:
                os._exit, os.abort = saved
        changed = {i: args[i] for i, b in before.items() if _changed(b, args[i])}
        return ("returned", self.encode(result, held), changed, _warnings(caught))


def _warnings(caught) -> list:
    return [(w.category.__name__, str(w.message)) for w in caught[:_WARNINGS_PER_CALL]]


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the thread that started it ends (the suite killed,
    or done), even when it is busy in the user's code and never reads its pipe again."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001
            pass


def _serve() -> int:
    """The child: answer the suite's messages on the original stdin/stdout; the user's
    prints go to stderr (the suite's log of this process), and input() reads nothing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the suite's to handle
    _die_with_parent()
    inp, out = os.dup(0), os.dup(1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    return _serve_loop(_Server(), inp, out)


def _serve_loop(server: _Server, inp: int, out: int) -> int:
    """Answer the messages read from `inp` on `out` until the suite closes `inp`."""
    while True:
        try:
            message = _read_message(inp)
        except EOFError:  # the suite is done with this process
            return 0
        op, *rest = message
        answer = getattr(server, op)(*rest)
        try:
            pieces = _frame(answer)
        except Exception as exc:  # noqa: BLE001  (a plain value that would not pickle after all)
            pieces = _frame(("unsendable", f"{type(exc).__name__}: {exc}"))
        _write(out, pieces)


if __name__ == "__main__":
    sys.exit(_serve())

"""What ran: the reference functions a step actually called, found by tracing it.

The audit (audit.md) names, for every equation, the functions that computed it. Those
names are not written next to the equation: each function says which equations it
computes (`@implements("E5")`), and the audit traces the step the run checked
(`trace(step, ...)`) and names the tagged functions that were called. A function that
exists but did not run is never named; a fast kernel says which readable function it is
proven equal to (`proven_equal_to=`, proven by parity_tests/test_fast_path.py).

`implements` returns the function itself (no wrapper): the tag costs nothing at run time
and the tracer sees the function's own code object.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Implementation:
    """One tagged function: its qualified name, the equation ids it computes and, for a fast
    kernel, the readable functions it is proven equal to."""

    name: str
    ids: tuple[str, ...]
    proven_equal_to: tuple[str, ...] = ()

    def label(self) -> str:
        if not self.proven_equal_to:
            return self.name
        return f"{self.name} (fast path; proven equal to {', '.join(self.proven_equal_to)})"


# code object -> its Implementation; filled at import by the decorator.
_BY_CODE: dict = {}


def qualified_name(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def implements(*ids: str, proven_equal_to: tuple = ()) -> Callable:
    """Tag a function as computing the equations `ids` (E1..E17, X1..X19)."""

    def tag(fn):
        _BY_CODE[fn.__code__] = Implementation(
            qualified_name(fn), tuple(ids), tuple(qualified_name(g) for g in proven_equal_to)
        )
        return fn

    return tag


def implementations() -> tuple[Implementation, ...]:
    """Every tagged function of the modules imported so far."""
    return tuple(_BY_CODE.values())


@dataclass(frozen=True)
class Traced:
    """The tagged functions one call ran, in the order of their first call."""

    ran: tuple[Implementation, ...]

    def names(self) -> set[str]:
        return {i.name for i in self.ran}

    def by_equation(self) -> dict[str, list[Implementation]]:
        out: dict[str, list[Implementation]] = {}
        for impl in self.ran:
            for eq in impl.ids:
                out.setdefault(eq, []).append(impl)
        return out


def trace(fn: Callable, *args, **kwargs) -> tuple[object, Traced]:
    """(fn(*args, **kwargs), the tagged functions it called). Uses the profiler hook, which
    sees every Python call (no wrapper in the way); a profiler already installed (a
    developer's) is put back afterwards: a Python function as it was, cProfile's (which
    sys.getprofile gives as its Profile object, not a function) by its own `enable`. It
    sees nothing of the traced step."""
    seen: dict = {}

    def on_event(frame, event, arg):
        if event == "call":
            impl = _BY_CODE.get(frame.f_code)
            if impl is not None:
                seen.setdefault(impl, None)

    previous = sys.getprofile()
    sys.setprofile(on_event)
    try:
        result = fn(*args, **kwargs)
    finally:
        _reinstall(previous)
    return result, Traced(tuple(seen))


def _reinstall(previous) -> None:
    if previous is None or callable(previous):
        sys.setprofile(previous)
    else:  # a C profiler: only it can put its hook back
        sys.setprofile(None)
        previous.enable()

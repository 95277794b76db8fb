"""Which implementation the parity checks verify (`--parity-impl`).

An implementation is any object with the reference's model API:

    train_step(params, X, y, lr, reduction) -> mapping with the article's names
        (patches, Z1, A1, Z2, O, E, dE_dO, dO_dZ2, dE_dZ2, dE_dW, dE_db, dE_dA1, dE_dZ1,
         dE_df, f_new, W_new, b_new) in the article layout (docs/byo.md).
        Example: examples/byo_impl/batch_first_cnn.py.

"reference" is the project's NumPy reference on its fast path (reference.fast, proven equal
to the readable model by parity_tests/test_fast_path.py in the same run);
"reference:readable" the readable model itself (reference.model, one call per equation);
"published:D3" a published-code variant
(reference/published.py: D1..D8, D12, D13); "mutant:sign_dE_dO" a mistake of the mutation
catalogue (parity_tests/mutants.py). These run in the pytest process. Any other name is a
module (`mypackage.mymodule`) or a path to a .py file (`path/to/my_cnn.py`, relative to the
folder pytest runs in, loaded as --parity-layer loads one) that provides `train_step`; it
runs in a child process (parity_tests/impl_call.py), so that a hang, `os._exit` or a crash
there is an error record.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import zlib
from pathlib import Path

from parity_tests.impl_call import DEFAULT_TIMEOUT_S, ChildProcessImpl, ImplementationError
from reference import fast, model

BUILTIN_PREFIXES = ("published:", "mutant:")
READABLE = "reference:readable"
CHOICES = "'reference', 'reference:readable', 'published:Dn', 'mutant:NAME'"


def is_path(name: str) -> bool:
    """A .py file rather than a module name (as own_layers decides for --parity-layer)."""
    return name.endswith(".py") or "/" in name or os.sep in name


def _load_path(path: Path):
    """A .py file as a module, its folder first on sys.path (as `python path/to/my_cnn.py`
    would have it), so that it can import the modules beside it."""
    name = f"parity_impl_{path.stem}_{zlib.crc32(str(path).encode()):08x}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    sys.path.insert(0, str(path.parent))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and tracebacks look modules up by name
    spec.loader.exec_module(module)
    return module


def _named(name: str, table: dict):
    key = name.split(":", 1)[1]
    if key not in table:
        raise ValueError(f"--parity-impl {name!r}: {key!r} must be one of {', '.join(table)}")
    return table[key]


def is_builtin(name: str) -> bool:
    return name in ("reference", READABLE) or name.startswith(BUILTIN_PREFIXES)


def import_impl(name: str):
    """Import a user's module and check it has train_step (in the process that will run it)."""
    try:
        impl = _load_path(Path(name)) if is_path(name) else importlib.import_module(name)
    except Exception as exc:  # an import that fails for any reason is the same usage error
        what = (
            "the file could not be imported"
            if is_path(name)
            else f"not {CHOICES} or an importable module"
        )
        raise ImplementationError(
            f"--parity-impl {name!r}: {what} ({type(exc).__name__}: {exc})"
        ) from None
    if not callable(getattr(impl, "train_step", None)):
        raise ImplementationError(
            f"--parity-impl {name!r}: module {impl.__name__} has no train_step(params, X, y, lr, "
            "reduction); see docs/byo.md"
        )
    return impl


def resolve_impl(name: str, timeout: float = DEFAULT_TIMEOUT_S):
    """The suite's own implementations as objects; anything else as a ChildProcessImpl."""
    if name == "reference":
        return fast
    if name == READABLE:
        return model
    if name.startswith("published:"):
        from reference.published import VARIANTS

        return _named(name, VARIANTS)
    if name.startswith("mutant:"):
        from parity_tests.mutants import MUTANTS

        return _named(name, MUTANTS)
    if name and is_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            what = "not a regular file" if path.exists() else f"no such file, relative to {os.getcwd()}"
            raise ValueError(
                f"--parity-impl {name!r}: expected a .py file ({what}), {CHOICES} or a dotted "
                "module name"
            )
        return ChildProcessImpl(str(path.resolve()), timeout)
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(
            f"--parity-impl {name!r}: expected {CHOICES}, a dotted module name or a path to a .py file"
        )
    return ChildProcessImpl(name, timeout)

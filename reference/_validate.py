"""Input checks shared by every public function of the reference.

Every public function validates its arguments up front so that a wrong shape, dtype or a
non-finite value fails with a message naming the argument, what was expected and what was
given, instead of an IndexError or a broadcasting error deep inside NumPy.
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# The truth a float64 check is measured against is the reference itself run in extended
# precision (np.longdouble: x86's 80-bit format, 11 bits more than float64). The reference
# admits it only inside `extended()`, which the harness enters for that one computation: a
# user's call with a longdouble array is refused like any other dtype. Where longdouble is
# float64 (ARM macOS, Windows) there is no such truth (HAS_EXTENDED False).
EXTENDED = np.dtype(np.longdouble)
HAS_EXTENDED = np.finfo(EXTENDED).nmant > np.finfo(np.float64).nmant
_ADMIT_EXTENDED = contextvars.ContextVar("admit_extended", default=False)


@contextlib.contextmanager
def extended():
    """Inside this block the reference's functions also take np.longdouble arrays."""
    token = _ADMIT_EXTENDED.set(True)
    try:
        yield
    finally:
        _ADMIT_EXTENDED.reset(token)


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__}"


def float_array(
    name: str, value, shape=None, *, ndim=None, dtype=None, finite=True, allow_empty=False
) -> np.ndarray:
    """Return `value` as a float32/float64 ndarray or raise naming `name`.

    `shape` is a tuple whose entries are ints or None (any size). `dtype`, if given, is the
    dtype the array must already have (no silent casts: a float32 run stays float32).
    np.matrix and masked arrays are refused: their `*` / mask change what the code computes.
    """
    if type(value) is not np.ndarray:
        _refuse_subclass(name, value)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of float32 or float64, got {_describe(value)}")
    if value.dtype not in FLOAT_DTYPES and not (value.dtype == EXTENDED and _ADMIT_EXTENDED.get()):
        raise TypeError(
            f"{name} must have dtype float32 or float64, got {value.dtype} (shape {value.shape})"
        )
    if dtype is not None and value.dtype != np.dtype(dtype):
        raise TypeError(
            f"{name} must have dtype {np.dtype(dtype)} like the other operands, got {value.dtype}"
        )
    if shape is not None:
        ok = value.ndim == len(shape) and all(
            want is None or want == got for want, got in zip(shape, value.shape)
        )
        if not ok:
            pretty = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {pretty}, got {value.shape}")
    elif ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {value.shape}")
    if value.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty, got shape {value.shape}")
    if finite and not np.isfinite(value).all():
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        raise ValueError(f"{name} must be finite, got {bad} NaN/inf value(s) in shape {value.shape}")
    return value


def _refuse_subclass(name: str, value) -> None:
    """Refuse the ndarray subclasses whose arithmetic or meaning differs from a plain array."""
    if isinstance(value, np.matrix):
        raise TypeError(
            f"{name} must be a plain numpy array, got np.matrix (its * is a matrix "
            f"product); pass np.asarray({name})"
        )
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} must be a plain numpy array, got a masked array (the mask would "
            f"be silently ignored); pass {name}.filled(v), v the value the masked "
            "entries should take"
        )


def positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def finite_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def choice(name: str, value, options) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {list(options)}, got {type(value).__name__}")
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def mapping(name: str, value, keys) -> None:
    if not hasattr(value, "keys") or not hasattr(value, "__getitem__"):
        raise TypeError(f"{name} must be a mapping with keys {list(keys)}, got {_describe(value)}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ValueError(f"{name} is missing {missing} (has {sorted(map(str, value.keys()))})")

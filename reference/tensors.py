"""A dict of named tensors that also allows attribute access (`out.Z1 == out["Z1"]`).

The names are the article's (see docs/design.md "Names"); the same names are used by the
framework mirrors, the test ids and the report rows.
"""

from __future__ import annotations

FORWARD_NAMES = ("patches", "Z1", "A1", "Z2", "O")
GRADIENT_NAMES = ("dE_dO", "dO_dZ2", "dE_dZ2", "dE_dW", "dE_db", "dE_dA1", "dE_dZ1", "dE_df")
PARAM_NAMES = ("f", "W", "b")
UPDATE_NAMES = ("f_new", "W_new", "b_new")
BACKWARD_NAMES = ("E", *GRADIENT_NAMES)
# Each parameter and the gradient E17 moves it along.
UPDATE_PAIRS = (("f", "dE_df"), ("W", "dE_dW"), ("b", "dE_db"))
# Forward/backward order of the named tensors of a step: the order in which a change
# propagates, and the order in which the suite looks for the first tensor that disagrees.
ORDER = (*FORWARD_NAMES, *BACKWARD_NAMES, *UPDATE_NAMES)


class Tensors(dict):
    """Mapping of article names to arrays; `tensors.Z1` reads `tensors["Z1"]`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no tensor named {name!r}; have {sorted(self)}") from None

    def __repr__(self):
        inner = ", ".join(f"{k}: {getattr(v, 'shape', v)}" for k, v in self.items())
        return f"Tensors({inner})"

"""Kinks in end-to-end checks: where a framework may legitimately take the other branch.

A stage check feeds a framework our own Z, so the ReLU mask and the max-pool choice are
the same on both sides. End to end, each side computes its own Z: where our z is within
its end-to-end allowance of 0, the framework's z may round to the other side, and where a
max-pool window's top values are within their allowances of each other, they may swap.
That element's gradient then differs by a whole delta, and every gradient computed from it
downstream by that delta's contribution: a difference of branch, not of rounding.

The suite does not widen any tolerance for it. It finds those elements from the
reference's own error bounds (the end-to-end allowance of the kinked layer's input), and
there, and only there, lets our backward take its branch from the framework's value of the
input (reference.network.Network.backward's `decide`); everywhere else our branch is ours.
Every record of a tensor the kinks reach says how many there were (`kinks`) and how many
the framework took the other way (`kinks_taken`). A framework that takes the other branch
anywhere else disagrees by a whole delta and fails.

Exact ties (a max-pool window whose top values are exactly equal on both sides, e.g. all
zeros after a ReLU) are no kink: both sides apply the same first-maximum rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from reference.layers import pool


@dataclass(frozen=True)
class Kinks:
    """One kinked layer's count for one framework and dtype."""

    layer: str
    kind: str
    ambiguous: int  # ReLU inputs / max-pool windows within rounding of the kink
    taken: int  # of those, where the framework took the other branch than ours

    def text(self) -> str:
        unit = "input" if self.kind == "relu" else "window"
        s = "" if self.ambiguous == 1 else "s"
        return (
            f"{self.layer}: {self.ambiguous} {unit}{s} within rounding of the kink, "
            f"{self.taken} taken the other way"
        )


def relu(z_ours, z_theirs, tol, layer: str):
    """(the array ReLU's backward decides from, Kinks): theirs where |z| <= tol, else ours."""
    tol = np.broadcast_to(tol, z_ours.shape)
    near = np.abs(z_ours.astype(np.float64)) <= tol
    near &= ~((z_ours == 0) & (z_theirs == 0))  # both exactly 0: the same branch (0)
    taken = near & ((z_theirs > 0) != (z_ours > 0))
    decide = np.where(near, z_theirs.astype(z_ours.dtype), z_ours)
    return decide, Kinks(layer, "relu", int(near.sum()), int(taken.sum()))


def _windows(x, k, stride):
    n, c = x.shape[:2]
    w = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return w.reshape(n, c, w.shape[2], w.shape[3], k * k)


def maxpool(x_ours, x_theirs, tol, k: int, stride: int, layer: str):
    """(the array max-pool's backward decides from, Kinks).

    A window is a kink when some value other than its maximum lies within the two values'
    allowances of the maximum (x >= max - tol(max) - tol(x)), unless those values are
    exactly equal on both sides (an exact tie: both apply the first-maximum rule). In every
    window with several candidates our backward decides from the framework's values.
    """
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), x_ours.shape)
    ours = _windows(x_ours.astype(np.float64), k, stride)
    theirs = _windows(x_theirs.astype(np.float64), k, stride)
    tolw = _windows(tol, k, stride)
    first = ours.argmax(axis=-1)[..., None]
    top = np.take_along_axis(ours, first, axis=-1)
    close = ours >= top - np.take_along_axis(tolw, first, axis=-1) - tolw
    several = close.sum(axis=-1) > 1
    top_theirs = np.take_along_axis(theirs, first, axis=-1)
    exact_tie = np.all(~close | ((ours == top) & (theirs == top_theirs)), axis=-1)
    kink = several & ~exact_tie
    taken = kink & (theirs.argmax(axis=-1) != first[..., 0])
    # Every element of a window with several candidates decides from the framework's
    # values, exact ties included: with overlapping windows an exact-tie window shares
    # elements with a kink window, and a tie half ours, half theirs would pick neither
    # side's maximum. Where the framework's values tie exactly too, its first maximum is
    # ours. A clear window keeps its maximum whichever of its elements are replaced: its
    # runner-up lies more than the two allowances below it.
    reached = pool.windows_reaching(several, x_ours.shape, k, stride)
    decide = np.where(reached, x_theirs.astype(x_ours.dtype), x_ours)
    return decide, Kinks(layer, "maxpool", int(kink.sum()), int(taken.sum()))

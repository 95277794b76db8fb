"""Loads the parity plugin (parity_tests/plugin.py: options, fixtures, records, reports,
the gate) when its pytest11 entry point has not (the project is not installed), after
pinning the environment (parity_tests/pins.py) before NumPy, torch or TensorFlow load."""

import sys

import parity_tests.pins  # noqa: F401  (first: sets the thread and oneDNN variables)

pytest_plugins = () if "parity_tests.plugin" in sys.modules else ("parity_tests.plugin",)

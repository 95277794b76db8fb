"""The parity suite. Its pytest plugin is parity_tests.plugin; for notebooks and scripts,
`from parity_tests import check, check_layers, check_optimiser` (parity_tests/api.py,
docs/notebook.md).

The API is imported on first use (PEP 562): importing the package, as the plugin does,
loads neither it nor torch or TensorFlow.
"""

__all__ = ["ParityFailure", "Result", "check", "check_layers", "check_optimiser"]


def __getattr__(name: str):
    if name in __all__:
        from parity_tests import api

        return getattr(api, name)
    raise AttributeError(f"module 'parity_tests' has no attribute {name!r}")

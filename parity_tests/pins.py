"""Pins the environment: the variables set before anything imports NumPy, torch or
TensorFlow, and the frameworks' thread counts.

Imported first by the parity plugin (loaded through its pytest11 entry point, before any
conftest) and by conftest.py (when the project is not installed); the plugin's
pytest_configure calls `pin_framework_threads`. Importing this module imports nothing but
`os`.
"""

import os

# TensorFlow reads these at import; set before anything can import it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # pinned: oneDNN changes float32 conv sums
# NumPy's BLAS reads these at import: its thread count changes float32 summation order (256
# fields of comparisons.csv differ between 1 and 2 threads), and one thread per library keeps
# torch, TensorFlow and NumPy from spinning against each other on small machines.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _var in BLAS_THREAD_VARS:
    os.environ.setdefault(_var, "1")


def pin_framework_threads(frameworks, framework_errors: dict) -> None:
    """One thread for each framework checked, set before TensorFlow's first op: one thread
    keeps every reduction order, and so comparisons.csv, identical from run to run. A
    framework that fails to load is recorded in `framework_errors` (reported by every check
    that needs it, never skipped)."""
    if "tensorflow" in frameworks:
        try:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except Exception as exc:  # reported by every tensorflow check, never skipped
            framework_errors["tensorflow"] = f"{type(exc).__name__}: {exc}"
    if "torch" in frameworks:
        try:
            import torch

            torch.set_num_threads(1)
        except Exception as exc:
            framework_errors["torch"] = f"{type(exc).__name__}: {exc}"

"""Pins the environment before anything imports NumPy, torch or TensorFlow.

Imported first by the parity plugin (loaded through its pytest11 entry point, before any
conftest) and by conftest.py (when the project is not installed).
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

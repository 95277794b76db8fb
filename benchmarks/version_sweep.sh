#!/usr/bin/env bash
# The parity checks and the slow sweeps against other framework versions and against the
# legitimate reorderings (oneDNN on, NumPy's BLAS at 2 threads): issue 21's "0 false alarms"
# target. Results: docs/guarantees.md, "Framework versions".
#
#   benchmarks/version_sweep.sh build [NAME...]   # make the virtual environments
#   benchmarks/version_sweep.sh run NAME...       # fast then slow, one NAME at a time
#   benchmarks/version_sweep.sh fast|slow NAME... # only the parity checks / only the sweeps
#   python benchmarks/version_sweep_summary.py /tmp/sweep-NAME /tmp/sweep-NAME-slow.jsonl
#
# NAME: tf220 (tensorflow-cpu 2.20.0, torch 2.13.0), torch212 / torch214 (torch 2.12.1 /
# 2.14.1, tensorflow-cpu 2.21.0), reorder (the project's own venv, $SWEEP_MAIN_PYTHON, default
# .venv/bin/python, with TF_ENABLE_ONEDNN_OPTS=1 and the BLAS at 2 threads;
# parity_tests/pins.py only sets these variables when unset). Venvs go to
# $SWEEP_VENVS/venv-NAME (default: beside the repository), reports and logs to
# $SWEEP_OUT/sweep-NAME* (default /tmp). The data: as for pytest (PARITY_MNIST, ...). requirements*.txt stay untouched: the pins there
# are the ones CI uses. torch other than 2.13.0+cpu comes from PyPI where PyTorch's CPU
# index can't be reached: on Linux x86_64 that is the CUDA build (it runs on the CPU here).
set -euo pipefail
cd "$(dirname "$0")/.."
VENVS=${SWEEP_VENVS:-$(dirname "$PWD")}
OUT=${SWEEP_OUT:-/tmp}
MAIN_PY=${SWEEP_MAIN_PYTHON:-.venv/bin/python}
export PIP_RETRIES=${PIP_RETRIES:-1}

frameworks() {  # NAME -> the two framework requirements
    case $1 in
        tf220) echo "torch==2.13.0+cpu tensorflow-cpu==2.20.0" ;;
        torch212) echo "torch==2.12.1 tensorflow-cpu==2.21.0" ;;
        torch214) echo "torch==2.14.1 tensorflow-cpu==2.21.0" ;;
        *) echo "unknown NAME '$1': expected tf220, torch212, torch214 (build) or reorder (run)" >&2; exit 2 ;;
    esac
}

python_of() {
    if [ "$1" = reorder ]; then echo "$MAIN_PY"; else echo "$VENVS/venv-$1/bin/python"; fi
}

build() {
    local name=$1 venv=$VENVS/venv-$1 fw
    fw=$(frameworks "$name")  # an unknown NAME stops here (set -e), before any venv is made
    # shellcheck disable=SC2086
    python3 -m venv "$venv" && "$venv/bin/pip" install -q -r requirements-base.txt -e . $fw
    # PyPI's Linux torch (the CUDA build) pulls triton; importing triton after TensorFlow
    # segfaults (both bundle LLVM: `import tensorflow; import triton` exits 139), and
    # torch.optim imports it when present. The CPU build has no triton: remove it.
    "$venv/bin/pip" uninstall -q -y triton || true
    "$venv/bin/python" -c 'import torch, tensorflow as tf, numpy; print(torch.__version__, tf.__version__, numpy.__version__)'
}

env_of() {  # NAME -> the variables of its run
    echo "PYTHONPATH=$PWD"
    if [ "$1" = reorder ]; then
        echo "TF_ENABLE_ONEDNN_OPTS=1 OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2"
    fi
}

fast() {  # the parity checks (article and lenet): every comparison in the report
    local name=$1
    # shellcheck disable=SC2046
    env $(env_of "$name") "$(python_of "$name")" -m pytest -q -p no:cacheprovider \
        --parity-report-dir "$OUT/sweep-$name" parity_tests/test_parity.py parity_tests/test_model.py || true
}

slow() {  # the sweeps: they compare directly (no report); benchmarks/sweep_log.py logs them
    local name=$1
    rm -f "$OUT/sweep-$name-slow.jsonl"
    # shellcheck disable=SC2046
    env $(env_of "$name") SWEEP_LOG="$OUT/sweep-$name-slow.jsonl" "$(python_of "$name")" -m pytest -q \
        -p no:cacheprovider -p benchmarks.sweep_log --parity-report-dir "$OUT/sweep-$name-slow" \
        --junitxml "$OUT/sweep-$name-slow.xml" -o junit_family=xunit1 -m "slow or not slow" parity_tests/test_stability.py \
        parity_tests/test_batch_sizes.py parity_tests/test_model_seeds.py \
        parity_tests/test_generated_models.py parity_tests/test_precision.py \
        parity_tests/test_norm_sweeps.py parity_tests/test_found_false_alarms.py || true
}

cmd=${1:-}; shift || true
case $cmd in
    build) for n in "${@:-tf220 torch212 torch214}"; do for m in $n; do build "$m"; done; done ;;
    run | fast | slow)
        for n in "$@"; do
            [ -x "$(python_of "$n")" ] || { echo "NAME '$n': no $(python_of "$n") (build it first, or reorder)" >&2; exit 2; }
        done
        for n in "$@"; do
            if [ "$cmd" = run ]; then fast "$n"; slow "$n"; else "$cmd" "$n"; fi
        done ;;
    *) echo "usage: $0 build [NAME...] | run|fast|slow NAME..." >&2; exit 2 ;;
esac

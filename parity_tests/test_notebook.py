"""examples/notebook/check_your_cnn.ipynb, executed by a real Jupyter kernel (nbclient and
ipykernel): the notebook API works where it is meant to be used, and its outputs say what
the notebook's text says they do.

The kernel is this interpreter's (a kernelspec written for sys.executable), so it sees the
packages of the environment the suite runs in. Slow: it starts a kernel and imports both
frameworks there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebook" / "check_your_cnn.ipynb"


def _kernel_manager(tmp_path: Path):
    """A KernelManager for "python3" that can only find a spec running sys.executable."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (parity suite)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel), encoding="utf-8")
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _text(cell) -> str:
    """Everything a cell showed: its streams, its rich results' text and HTML, its errors."""
    parts = []
    for out in cell.get("outputs", ()):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts += [str(out["data"].get(k, "")) for k in ("text/plain", "text/html")]
        elif out["output_type"] == "error":
            parts.append("\n".join(out["traceback"]))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PARITY_NO_DOWNLOAD", "1")  # no MNIST at hand: synthetic, never the network
        client = nbclient.NotebookClient(
            nb,
            km=_kernel_manager(tmp_path),
            timeout=300,
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # as Jupyter opens it
        )
        client.execute()
    return {tag: cell for cell in nb.cells for tag in cell.get("metadata", {}).get("tags", ())}


@pytest.mark.slow
def test_notebook_is_saved_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(
        not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code"
    )


@pytest.mark.slow
def test_every_cell_ran_without_error(executed):
    for tag, cell in executed.items():
        assert all(o["output_type"] != "error" for o in cell.get("outputs", ())), (tag, _text(cell))


@pytest.mark.slow
def test_correct_implementation_passes_every_comparison(executed):
    shown = executed["correct"]["outputs"]
    html = "".join(o["data"].get("text/html", "") for o in shown if "data" in o)
    assert "every comparison passed" in html
    assert "data:image/png;base64," in html  # the run's heat map
    headline = _text(executed["correct-headline"])
    assert headline.startswith("verdict: every comparison passed (142 comparisons)")
    assert "passed: True" in headline
    assert "budget_used" in _text(executed["records"])


@pytest.mark.slow
def test_broken_implementation_names_the_failing_tensor(executed):
    html = "".join(o["data"].get("text/html", "") for o in executed["broken"]["outputs"] if "data" in o)
    assert "FAILED" in html and "first diverging tensor W_new" in html
    assert "gradient ascent" in html  # the explainer's verdict
    raised = _text(executed["broken-raise"])
    assert raised.startswith("raised: verdict: first diverging tensor W_new")


@pytest.mark.slow
def test_layers_cell_shows_the_conv_mistake_and_its_sweep(executed):
    shown = _text(executed["layers"])
    assert "verdict: every comparison passed" in shown  # relu
    assert "conv.dX" in shown and "fails for stride >= 2" in shown


@pytest.mark.slow
def test_a_step_that_ends_its_process_leaves_the_kernel_running(executed):
    """The cell's os._exit ran in a child forked from the kernel (isolation "process", the
    default): the cell printed its failing Result, so the kernel lived on to print it."""
    shown = _text(executed["isolation"])
    assert "passed: False" in shown, shown
    assert "train_step called os._exit(0)" in shown, shown

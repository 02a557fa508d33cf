"""docs/explore.ipynb, run top to bottom in a real Jupyter kernel, as a reader would run it."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell
from traitlets import default

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "explore.ipynb"


class ThisInterpreterKernel(AsyncKernelManager):
    """The python3 kernel as ipykernel's own kernelspec, which runs sys.executable (the venv's python
    running the tests): a python3 kernelspec installed elsewhere (~/.local/share/jupyter, another
    environment) cannot swap in another interpreter."""

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        return KernelSpecManager(kernel_dirs=[], parent=self)


def cell(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.get("id") == cell_id)


def stdout(code_cell: nbformat.NotebookNode) -> str:
    return "".join(o.text for o in code_cell.outputs if o.output_type == "stream" and o.name == "stdout")


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(new_code_cell("import sys\nprint(sys.executable)", id="interpreter"))
    client = NotebookClient(nb, timeout=120, kernel_name="python3", kernel_manager_class=ThisInterpreterKernel,
                            resources={"metadata": {"path": str(tmp_path_factory.mktemp("notebook"))}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    return nb


def test_notebook_is_saved_valid_and_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.mark.slow
def test_notebook_runs_in_the_interpreter_running_the_tests(executed):
    assert stdout(cell(executed, "interpreter")).strip() == sys.executable


@pytest.mark.slow
def test_notebook_shows_the_live_explorer(executed):
    results = [o for o in cell(executed, "explorer").outputs if o.output_type == "execute_result"]
    assert len(results) == 1 and "application/vnd.holoviews_exec.v0+json" in results[0].data


@pytest.mark.slow
def test_notebook_trains_to_a_finite_kl(executed):
    printed = stdout(cell(executed, "train"))
    kl = float(re.search(r"KL\(p\|\|q\) = (\S+) nats", printed).group(1))
    nll = float(re.search(r"held-out NLL = (\S+) nats", printed).group(1))
    assert math.isfinite(kl) and kl >= -0.05 and math.isfinite(nll)  # a KL estimate on held-out points
    assert "200 steps at" in printed


@pytest.mark.slow
def test_notebook_draws_the_per_layer_views_as_a_png(executed):
    images = [o.data["image/png"] for o in cell(executed, "views").outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and len(images[0]) > 10_000  # base64 of the figure


@pytest.mark.slow
def test_notebook_reloads_a_saved_model_with_the_same_log_density(executed):
    printed = stdout(cell(executed, "reload"))
    assert "same spec and step: True" in printed
    assert "same log-density: True" in printed


@pytest.mark.slow
def test_notebook_closes_the_explorer_without_output(executed):
    assert cell(executed, "cleanup").outputs == []

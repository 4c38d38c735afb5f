"""notebooks/borscht.ipynb runs top to bottom (short training) so it never rots."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_borscht_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("RUDOLPH_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("RUDOLPH_NOTEBOOK_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    notebook = nbformat.read(ROOT / "notebooks" / "borscht.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "блюдо: борщ; белков:" in text  # the first kept row's caption, in the article's template
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    rich = [o for o in outputs if o.output_type in ("display_data", "execute_result")]
    # the loss curve, the dish confusion matrix, predicted vs true kcal and the generated grid
    assert sum("image/png" in o.get("data", {}) for o in rich) >= 4
    assert (tmp_path / "run" / "confusion.png").is_file() and (tmp_path / "run" / "kcal_scatter.png").is_file()
    assert "kcal MAE" in text  # the evaluation's summary
    tables = [o["data"]["text/markdown"] for o in rich if "text/markdown" in o.get("data", {})]
    assert any(t.startswith("| dish | photos | accuracy | kcal MAE |") for t in tables)  # the per-dish table

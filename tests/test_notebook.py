"""notebooks/assignment.ipynb: stored without outputs, and executed end to end with nbclient on the demo set at tiny
sizes (``INAT_CNN_NOTEBOOK_SMALL=1``, read by its first cell), from a folder laid out like a clone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "assignment.ipynb"


def test_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert dirty == [], f"strip the outputs of cells {dirty} before committing (jupyter nbconvert --clear-output)"


@pytest.mark.slow
def test_notebook_runs_end_to_end(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    clone = tmp_path / "clone"
    (clone / "notebooks").mkdir(parents=True)
    for name in ("core", "experiments", "export"):
        (clone / name).symlink_to(ROOT / name)
    if (ROOT.parent / "shared").is_dir():
        (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    monkeypatch.setenv("INAT_CNN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(clone / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "Best trial" in text and "test accuracy" in text, text[-3000:]
    assert images == 3, f"the grid, guided backprop and the Part B curves are shown inline, got {images} images"
    for made in ("runs/assignment/model.onnx", "runs/assignment-partB/comparison.md"):
        assert (clone / made).is_file(), f"the notebook writes {made}"

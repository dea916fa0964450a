"""core.explain.figures: every figure is a real, non-trivial PNG; bad inputs are named; writes are atomic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.explain import figures as plots

NAMES = ["Amphibia", "Aves", "Fungi"]


def _image(seed: int, size: int = 24) -> torch.Tensor:
    return (torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)


def _cells() -> list[plots.GridCell]:
    # class 1 has a single image: its row has two empty slots
    layout = [(0, 0, 0), (0, 1, 2), (0, 2, 0), (1, 0, 1), (2, 0, 2), (2, 1, 2), (2, 2, 0)]
    grey = torch.full((3, 24, 24), 128, dtype=torch.uint8)  # frames are then the only red/green pixels
    return [plots.GridCell(grey, true_label=r, pred_label=p, confidence=0.4 + 0.05 * i, row=r, col=c)
            for i, (r, c, p) in enumerate(layout)]


def assert_png(path, min_side: int = 100) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 1000, f"{path} missing or tiny"
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG", f"{path} is {img.format}, not PNG"
        assert min(img.size) >= min_side, f"{path} is only {img.size} px"
        return img.convert("RGB")


def _has_colour(img: Image.Image, rgb: tuple[int, int, int], tol: int = 20, min_pixels: int = 50) -> bool:
    px = np.asarray(img, dtype=np.int16)
    close = (np.abs(px - np.asarray(rgb, dtype=np.int16)) <= tol).all(axis=-1)
    return int(close.sum()) >= min_pixels


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def test_prediction_grid_marks_right_and_wrong(tmp_path):
    path = plots.plot_prediction_grid(_cells(), NAMES, tmp_path / "grid.png", notes=["Aves has only 1 test image"])
    img = assert_png(path, min_side=300)
    assert img.height > img.width, f"rows are classes: expected a tall figure, got {img.size}"
    assert _has_colour(img, _hex(plots.CORRECT_COLOUR)), "no green frames for correct predictions"
    assert _has_colour(img, _hex(plots.WRONG_COLOUR)), "no red frames for wrong predictions"


def test_grid_with_only_correct_has_no_red(tmp_path):
    grey = torch.full((3, 24, 24), 128, dtype=torch.uint8)  # no red pixels of its own
    cells = [plots.GridCell(grey, r, r, 0.9, r, 0) for r in range(3)]
    img = assert_png(plots.plot_prediction_grid(cells, NAMES, tmp_path / "ok.png"), min_side=200)
    assert not _has_colour(img, _hex(plots.WRONG_COLOUR), min_pixels=20), "red frame drawn for a correct cell"


def test_gradcam_grid(tmp_path):
    cells = _cells()
    heat = torch.rand(len(cells), 24, 24)
    assert_png(plots.plot_gradcam_grid(cells, heat, NAMES, tmp_path / "cam.png"), min_side=300)
    with pytest.raises(ValueError, match="one heatmap per cell needed: 7 cells, 2 heatmaps"):
        plots.plot_gradcam_grid(cells, heat[:2], NAMES, tmp_path / "bad.png")


def test_filters_feature_maps_attributions_confusion(tmp_path):
    assert_png(plots.plot_filters(torch.randn(16, 3, 3, 3), tmp_path / "filters.png"))
    assert_png(plots.plot_filters(torch.randn(5, 1, 5, 5), tmp_path / "filters_grey.png"))
    assert_png(plots.plot_feature_maps(_image(0), torch.randn(16, 24, 24), tmp_path / "maps.png"))
    assert_png(plots.plot_neuron_attributions(
        _image(1), torch.randn(10, 3, 24, 24), [f"ch {i}" for i in range(10)], tmp_path / "gb.png",
        method_label="plain gradient (saliency)", warning="GELU model: not guided backprop"))
    counts = torch.tensor([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    norm = counts / counts.sum(1, keepdim=True).clamp(min=1)
    assert_png(plots.plot_confusion_matrix(counts, norm, NAMES, tmp_path / "cm.png"))


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="outside the 3x3 grid"):
        plots.plot_prediction_grid([plots.GridCell(_image(0), 0, 0, 0.5, 5, 0)], NAMES, tmp_path / "g.png")
    with pytest.raises(ValueError, match="uint8 image"):
        plots.plot_prediction_grid([plots.GridCell(torch.rand(3, 8, 8), 0, 0, 0.5, 0, 0)], NAMES, tmp_path / "g.png")
    with pytest.raises(ValueError, match="no grid cells"):
        plots.plot_prediction_grid([], NAMES, tmp_path / "g.png")
    with pytest.raises(ValueError, match=r"must both be \[3, 3\]"):
        plots.plot_confusion_matrix([[1]], [[1.0]], NAMES, tmp_path / "cm.png")
    with pytest.raises(ValueError, match="one label per neuron needed: 2 maps, 1 labels"):
        plots.plot_neuron_attributions(_image(0), torch.randn(2, 3, 24, 24), ["a"], tmp_path / "gb.png",
                                       method_label="x")
    with pytest.raises(ValueError, match="use a .png name"):
        plots.plot_filters(torch.randn(4, 3, 3, 3), tmp_path / "filters.jpg")
    assert not list(tmp_path.iterdir()), f"failed plots left files: {list(tmp_path.iterdir())}"

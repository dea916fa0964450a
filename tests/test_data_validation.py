"""Every bad-input case of the data issue: stop with a named error, skip with a record, or convert."""

from __future__ import annotations

import io
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import DataConfig, make_loaders, reset_cache_stats, scan_dataset


@pytest.fixture(autouse=True)
def _fresh_cache_memory():
    reset_cache_stats(forget_memory=True)


def _cfg(root, tmp_path) -> DataConfig:
    return DataConfig(data_dir=root, image_size=16, batch_size=8, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- stop: layout errors
def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist.*train/<Class>"):
        make_loaders(_cfg(tmp_path / "nowhere", tmp_path))


@pytest.mark.parametrize("split", ["train", "val"])
def test_missing_split_folder(tiny_imagefolder, tmp_path, split):
    shutil.rmtree(tiny_imagefolder / split)
    with pytest.raises(FileNotFoundError, match=f"no {split}/ folder"):
        make_loaders(_cfg(tiny_imagefolder, tmp_path))


def test_no_class_folders(tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "val").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        scan_dataset(tmp_path / "d")


def test_empty_class_folder(tiny_imagefolder, tmp_path):
    for f in (tiny_imagefolder / "val" / "Aves").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"without image files in .*val.*\['Aves'\]"):
        make_loaders(_cfg(tiny_imagefolder, tmp_path))


def test_class_folders_differ_between_train_and_val(tiny_imagefolder, tmp_path):
    (tiny_imagefolder / "val" / "Fungi").rename(tiny_imagefolder / "val" / "Plantae")
    with pytest.raises(ValueError, match=r"only in train/: \['Fungi'\], only in val/: \['Plantae'\]"):
        make_loaders(_cfg(tiny_imagefolder, tmp_path))


# ---------------------------------------------------------------- skip: recorded, never silent
def test_non_images_hidden_and_stray_files_are_skipped_and_listed(tiny_imagefolder, tmp_path, caplog):
    (tiny_imagefolder / "train" / "Aves" / "notes.txt").write_text("field notes")
    (tiny_imagefolder / "train" / "Aves" / ".DS_Store").write_bytes(b"\0")
    (tiny_imagefolder / "train" / ".ipynb_checkpoints").mkdir()
    (tiny_imagefolder / "val" / "README.md").write_text("readme")
    with caplog.at_level(logging.WARNING):
        loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path))
    assert "4 files" in caplog.text and "not used" in caplog.text, caplog.text
    reasons = {s.path.name: s.reason for s in loaders.skipped}
    assert set(reasons) == {"notes.txt", ".DS_Store", ".ipynb_checkpoints", "README.md"}, reasons
    assert "not an image" in reasons["notes.txt"] and "outside a class folder" in reasons["README.md"]
    loaders.write_split(tmp_path / "run")
    listed = (tmp_path / "run" / "skipped.txt").read_text()
    assert "train/Aves/notes.txt\tnot an image" in listed and listed.startswith("# 4 files"), listed
    assert len(loaders.train.dataset) + len(loaders.val.dataset) == 30, "real images must all be kept"


def test_corrupt_and_truncated_images_are_skipped_and_listed(tiny_imagefolder, tmp_path, caplog):
    (tiny_imagefolder / "train" / "Fungi" / "broken.jpg").write_text("this is not a jpeg")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buf, format="JPEG")
    (tiny_imagefolder / "val" / "Aves" / "cut.jpg").write_bytes(buf.getvalue()[:300])
    with caplog.at_level(logging.WARNING):
        loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path))
    assert "could not be decoded" in caplog.text
    skipped = {s.path.name: s.reason for s in loaders.skipped}
    assert set(skipped) == {"broken.jpg", "cut.jpg"}, skipped
    assert "broken.jpg" in skipped["broken.jpg"], "the reason names the file"
    used = {p.name for name in ("train", "val", "test") for p, _ in getattr(loaders, name).dataset.samples}
    assert not used & {"broken.jpg", "cut.jpg"}, "corrupt files reached a split"
    assert len(loaders.test.dataset) == 12 and len(loaders.train.dataset) + len(loaders.val.dataset) == 30
    loaders.write_split(tmp_path / "run")
    assert "val/Aves/cut.jpg\t" in (tmp_path / "run" / "skipped.txt").read_text()


def test_class_left_without_decodable_images_stops(tiny_imagefolder, tmp_path):
    for f in (tiny_imagefolder / "train" / "Fungi").iterdir():
        f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"no decodable training images left for classes \['Fungi'\]"):
        make_loaders(_cfg(tiny_imagefolder, tmp_path))


# ---------------------------------------------------------------- convert: odd modes become RGB
def test_odd_image_modes_are_converted_not_skipped(tiny_imagefolder, tmp_path):
    folder = tiny_imagefolder / "train" / "Aves"
    Image.new("L", (30, 20), 90).save(folder / "gray.png")
    Image.new("RGBA", (30, 20), (0, 0, 255, 255)).save(folder / "alpha.png")
    Image.new("CMYK", (30, 20), (255, 0, 0, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(folder / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.new("RGB", (40, 20), (200, 0, 0)).save(folder / "rotated.jpg", exif=exif.tobytes())
    Image.new("P", (30, 20), 0).save(folder / "palette.gif")
    loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path))
    assert loaders.skipped == [], f"nothing should be skipped: {loaders.skipped}"
    by_name = {}
    for name in ("train", "val"):
        ds = getattr(loaders, name).dataset
        by_name |= {p.name: ds.uint8(i) for i, (p, _) in enumerate(ds.samples)}
    for name in ("gray.png", "alpha.png", "cmyk.jpg", "deep.png", "rotated.jpg", "palette.gif"):
        assert name in by_name and by_name[name].shape == (3, 16, 16), f"{name} missing or wrong shape"
    assert by_name["gray.png"][:, 8, 8].tolist() == [90, 90, 90]
    assert by_name["deep.png"][:, 8, 8].tolist() == [156, 156, 156], "16-bit 40000 -> 40000/257 = 156"
    assert torch.equal(by_name["alpha.png"][:, 8, 8], torch.tensor([0, 0, 255], dtype=torch.uint8))
    r, g, b = by_name["cmyk.jpg"][:, 8, 8].tolist()
    assert r < 60 and g > 200 and b > 200, f"CMYK cyan decoded as {(r, g, b)}"

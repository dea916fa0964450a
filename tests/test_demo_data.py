"""core.data.demo: layout, determinism, generate-once, safety, and that a small CNN can learn it."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
import torch
from PIL import Image

from core.data import DEMO_CLASSES, ensure_demo_dataset, scan_dataset

INAT_CLASSES = ["Amphibia", "Animalia", "Arachnida", "Aves", "Fungi", "Insecta", "Mammalia", "Mollusca",
                "Plantae", "Reptilia"]


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.jpg")):
        h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_layout_names_counts_and_sizes(tmp_path):
    root = ensure_demo_dataset(tmp_path / "demo", train_per_class=4, val_per_class=2)
    scan = scan_dataset(root)
    assert list(scan.class_names) == INAT_CLASSES == sorted(DEMO_CLASSES)
    per_class = [Counter(label for _, label in samples) for samples in (scan.train, scan.test)]
    assert [set(c.values()) for c in per_class] == [{4}, {2}] and len(per_class[0]) == len(DEMO_CLASSES), per_class
    assert scan.skipped == (), f"the marker file must not count as a skipped file: {scan.skipped}"
    sizes = {Image.open(p).size for p, _ in scan.train + scan.test}
    assert len(sizes) > 10, f"image sizes should vary, got {sizes}"
    assert all(96 <= w <= 200 and 96 <= h <= 200 for w, h in sizes), sizes
    assert all(Image.open(p).format == "JPEG" and Image.open(p).mode == "RGB" for p, _ in scan.train[:5])


def test_generation_is_deterministic_and_happens_once(tmp_path):
    a = ensure_demo_dataset(tmp_path / "a", train_per_class=3, val_per_class=1)
    b = ensure_demo_dataset(tmp_path / "b", train_per_class=3, val_per_class=1)
    assert _digest(a) == _digest(b), "two generations with the same seed differ"
    c = ensure_demo_dataset(tmp_path / "c", train_per_class=3, val_per_class=1, seed=1)
    assert _digest(a) != _digest(c), "another seed gave the same images"
    first = sorted(a.rglob("*.jpg"))[0]
    mtime = first.stat().st_mtime_ns
    assert ensure_demo_dataset(tmp_path / "a", train_per_class=3, val_per_class=1) == a
    assert first.stat().st_mtime_ns == mtime, "an existing demo set must be reused, not regenerated"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_default_root_is_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INAT_CNN_CACHE", str(tmp_path / "cache"))
    root = ensure_demo_dataset(train_per_class=2, val_per_class=1)
    assert root == tmp_path / "cache" / "demo"


def test_other_configuration_regenerates_and_foreign_folders_are_refused(tmp_path):
    root = ensure_demo_dataset(tmp_path / "d", train_per_class=2, val_per_class=1)
    ensure_demo_dataset(root, train_per_class=3, val_per_class=1)
    marker = json.loads((root / ".demo-complete.json").read_text())
    assert marker["train_per_class"] == 3 and len(list((root / "train" / "Aves").iterdir())) == 3
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a generated demo set"):
        ensure_demo_dataset(mine)
    assert (mine / "photos").is_dir(), "a user's folder must never be deleted"
    with pytest.raises(ValueError, match="train_per_class"):
        ensure_demo_dataset(tmp_path / "e", train_per_class=1)


@pytest.mark.slow
def test_a_small_cnn_learns_it_above_chance(tmp_path):
    """5 epochs of a 4-conv net at 32 px on 64 images/class: test accuracy must be >= 2x chance (10%).

    Measured: 36% (20, 21, 28, 34, 36% after epochs 1-5), ~5 s of CPU.
    """
    from core.data import DataConfig, make_loaders

    torch.manual_seed(0)
    root = ensure_demo_dataset(tmp_path / "demo", train_per_class=64, val_per_class=10)
    loaders = make_loaders(DataConfig(data_dir=root, image_size=32, batch_size=16, cache_dir=tmp_path / "c"))
    layers = []
    for c_in, c_out in ((3, 16), (16, 32), (32, 32), (32, 64)):
        layers += [torch.nn.Conv2d(c_in, c_out, 3, padding=1), torch.nn.BatchNorm2d(c_out), torch.nn.ReLU(),
                   torch.nn.MaxPool2d(2)]
    model = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(64 * 2 * 2, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(5):
        model.train()
        for x, y in loaders.train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in loaders.test)
    acc = correct / len(loaders.test.dataset)
    assert acc >= 0.2, f"test accuracy {acc:.1%} after 5 epochs: the demo set is not learnable enough"

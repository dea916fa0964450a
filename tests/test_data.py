"""core.data.loaders.make_loaders and core.data.decode_cache: batches, split records, normalisation, cache
hits/misses.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CachedImageDataset,
    DataConfig,
    Preprocessing,
    cache_stats,
    choose_num_workers,
    decode_images,
    load_uint8,
    make_loaders,
    normalize,
    reset_cache_stats,
)


@pytest.fixture(autouse=True)
def _fresh_stats():
    reset_cache_stats(forget_memory=True)
    yield
    reset_cache_stats(forget_memory=True)


def _cfg(root, tmp_path, **kw) -> DataConfig:
    base = {"data_dir": root, "image_size": 16, "batch_size": 8, "cache_dir": tmp_path / "cache"}
    return DataConfig(**(base | kw))


def test_loaders_yield_normalised_float_batches_and_stratified_split(tiny_imagefolder, tmp_path):
    loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path))
    assert loaders.class_names == ["Amphibia", "Aves", "Fungi"]
    x, y = next(iter(loaders.train))
    assert x.dtype == torch.float32 and x.shape == (8, 3, 16, 16), f"got {x.dtype} {tuple(x.shape)}"
    assert y.dtype == torch.int64
    sizes = {name: len(getattr(loaders, name).dataset) for name in ("train", "val", "test")}
    assert sizes == {"train": 24, "val": 6, "test": 12}, f"10/class at 0.2 -> 8+2 per class; test 4: {sizes}"
    val_labels = sorted(label for _, label in loaders.val.dataset.samples)
    assert val_labels == [0, 0, 1, 1, 2, 2], f"validation is not stratified: {val_labels}"
    train_paths = {p for p, _ in loaders.train.dataset.samples}
    assert not train_paths & {p for p, _ in loaders.val.dataset.samples}, "train/val overlap"
    assert all(p.parent.parent.name == "val" for p, _ in loaders.test.dataset.samples), "test must be val/"
    assert all(p.parent.parent.name == "train" for p in train_paths)


def test_cached_pixels_equal_direct_decode(tiny_imagefolder, tmp_path):
    loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path, resize_size=20))
    ds = loaders.test.dataset
    for i in (0, 5, len(ds) - 1):
        assert torch.equal(ds.uint8(i), load_uint8(ds.samples[i][0], loaders.preprocessing)), f"row {i}"


def test_no_augmentation_on_val_and_test(tiny_imagefolder, tmp_path):
    loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path, augment=True, seed=3))
    for name in ("val", "test"):
        ds = getattr(loaders, name).dataset
        assert ds.transform is None, f"{name} has a transform"
        batches = torch.cat([x for x, _ in getattr(loaders, name)])
        expected = torch.stack([normalize(ds.uint8(i), loaders.preprocessing) for i in range(len(ds))])
        torch.testing.assert_close(batches, expected, msg=f"{name} batches are not the plain cached images")
    train = loaders.train.dataset
    assert train.transform is not None
    torch.manual_seed(0)
    a, b = train[0][0], train[0][0]
    assert not torch.equal(a, b), "training augmentation should differ between two draws"
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32


def test_normalisation_choices(tiny_imagefolder, tmp_path):
    loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path))
    ds = loaders.train.dataset
    pixels = torch.stack([ds.uint8(i) for i in range(len(ds))]).double() / 255
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3), unbiased=False)
    assert np.allclose(loaders.preprocessing.mean, mean.numpy(), atol=1e-5), (loaders.preprocessing.mean, mean)
    assert np.allclose(loaders.preprocessing.std, std.numpy(), atol=1e-5), (loaders.preprocessing.std, std)
    train_x = torch.cat([x for x, _ in loaders.train])
    assert abs(train_x.mean().item()) < 0.05, f"train split should be ~zero mean, got {train_x.mean():.3f}"

    imagenet = make_loaders(_cfg(tiny_imagefolder, tmp_path, normalization="imagenet"))
    assert imagenet.preprocessing.mean == IMAGENET_MEAN and imagenet.preprocessing.std == IMAGENET_STD

    given = Preprocessing(12, 14, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    evaluated = make_loaders(_cfg(tiny_imagefolder, tmp_path), preprocessing=given)
    assert evaluated.preprocessing == given, "a checkpoint's preprocessing must be used as is"
    assert next(iter(evaluated.test))[0].shape[-1] == 12


def test_write_split_records_lists_and_is_reproducible(tiny_imagefolder, tmp_path):
    cfg = _cfg(tiny_imagefolder, tmp_path, seed=5)
    make_loaders(cfg).write_split(tmp_path / "run1")
    make_loaders(cfg).write_split(tmp_path / "run2")
    make_loaders(_cfg(tiny_imagefolder, tmp_path, seed=6)).write_split(tmp_path / "run3")
    s1, s2, s3 = (json.loads((tmp_path / r / "split.json").read_text()) for r in ("run1", "run2", "run3"))
    assert s1 == s2, "same seed must give the same split"
    assert s1["val"] != s3["val"], "another seed gave the same validation set"
    assert s1["preprocessing"]["image_size"] == 16 and s1["class_names"] == ["Amphibia", "Aves", "Fungi"]
    train, val, test = ({p for p, _ in s1[k]} for k in ("train", "val", "test"))
    assert len(train) == 24 and len(val) == 6 and len(test) == 12
    assert not train & val and all(p.startswith("train/") for p in train | val)
    assert all(p.startswith("val/") for p in test)
    assert (tmp_path / "run1" / "skipped.txt").read_text().startswith("# 0 files not used")


def test_decode_cache_hits_across_calls_and_processes_and_invalidates(tiny_imagefolder, tmp_path):
    cfg = _cfg(tiny_imagefolder, tmp_path)
    make_loaders(cfg)
    first = cache_stats()
    assert (first.misses, first.images_decoded) == (2, 42), f"first call decodes train/ and val/: {first}"
    make_loaders(DataConfig(**(cfg.to_dict() | {"seed": 9, "val_fraction": 0.3, "augment": True})))
    assert cache_stats().images_decoded == 42 and cache_stats().memory_hits == 2, (
        f"a second trial (other seed/fraction/augment) must not decode again: {cache_stats()}")

    reset_cache_stats(forget_memory=True)  # what a new process sees
    make_loaders(cfg)
    assert cache_stats().disk_hits == 2 and cache_stats().images_decoded == 0, f"{cache_stats()}"

    changed = sorted((tiny_imagefolder / "train" / "Aves").iterdir())[0]
    Image.new("RGB", (30, 30), (1, 2, 3)).save(changed)
    os.utime(changed, ns=(1, 1))  # even a same-size rewrite changes the mtime
    reset_cache_stats()
    loaders = make_loaders(cfg)
    assert cache_stats().misses == 1 and cache_stats().images_decoded == 30, (
        f"only the changed train/ list must decode again: {cache_stats()}")
    in_train = any(p == changed for p, _ in loaders.train.dataset.samples)
    ds = loaders.train.dataset if in_train else loaders.val.dataset
    row = [p for p, _ in ds.samples].index(changed)
    pixel = ds.uint8(row)[:, 0, 0].tolist()
    assert max(abs(a - b) for a, b in zip(pixel, [1, 2, 3])) <= 3, f"the cache served old pixels: {pixel}"


def test_decode_images_reports_failures_without_raising(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (10, 10), (9, 9, 9)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    entry = decode_images([good, bad], Preprocessing(8), tmp_path / "cache")
    assert entry.images.shape == (2, 3, 8, 8) and list(entry.failed) == [1], entry.failed
    assert "bad.jpg" in entry.failed[1]
    assert (tmp_path / "cache" / "decoded" / f"{entry.key}.npy").is_file()


def test_dataset_pickles_as_a_memory_map_reference(tiny_imagefolder, tmp_path):
    ds = make_loaders(_cfg(tiny_imagefolder, tmp_path)).train.dataset
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000, f"pickled dataset is {len(blob)} bytes: the pixels were copied"
    clone = pickle.loads(blob)
    assert isinstance(clone, CachedImageDataset) and torch.equal(clone.uint8(3), ds.uint8(3))


@pytest.mark.slow
def test_per_sample_loader_with_a_worker_matches_the_batched_path(tiny_imagefolder, tmp_path):
    ref = torch.cat([x for x, _ in make_loaders(_cfg(tiny_imagefolder, tmp_path)).test])  # batched (default)
    with_worker = make_loaders(_cfg(tiny_imagefolder, tmp_path, num_workers=1, pipeline="per_sample"))
    assert with_worker.train.num_workers == 1 and with_worker.train.persistent_workers
    got = torch.cat([x for x, _ in with_worker.test])
    torch.testing.assert_close(got, ref)


def test_a_last_training_batch_of_one_is_dropped(tiny_imagefolder, tmp_path):
    loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path, batch_size=23))  # 24 train images
    sizes = [len(y) for _, y in loaders.train]
    assert sizes == [23], f"a trailing batch of 1 breaks BatchNorm in training: {sizes}"
    assert [len(y) for _, y in make_loaders(_cfg(tiny_imagefolder, tmp_path, batch_size=5)).train] == [5] * 4 + [4]


def test_worker_choice(monkeypatch):
    assert choose_num_workers(None, "cpu", 10_000, 32, augment=True) == 0
    assert choose_num_workers(None, "cuda", 10, 32, augment=False) == 0, "tiny sets stay in-process"
    assert choose_num_workers(3, "cpu", 10, 32, augment=False) == 3, "an explicit value wins"
    # the documented rule on CUDA: 2 workers, 4 with augmentation, never more than the cores minus one
    for cores, plain, augmented in ((16, 2, 4), (4, 2, 3), (2, 1, 1), (1, 0, 0)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        got = (choose_num_workers(None, "cuda", 10_000, 32, augment=False),
               choose_num_workers(None, "cuda", 10_000, 32, augment=True))
        assert got == (plain, augmented), f"{cores} cores: expected {(plain, augmented)}, got {got}"


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 0}, "image_size"), ({"resize_size": 8}, "resize_size"), ({"val_fraction": 1.0}, "val_fraction"),
    ({"batch_size": 0}, "batch_size"), ({"num_workers": -1}, "num_workers"),
    ({"normalization": "minmax"}, "minmax"), ({"max_per_class": 0}, "max_per_class"), ({"device": "tpu"}, "tpu"),
])
def test_data_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(**({"image_size": 16} | kwargs))


def test_max_per_class_caps_train_and_test(tiny_imagefolder, tmp_path):
    loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path, max_per_class=5))
    assert len(loaders.train.dataset) + len(loaders.val.dataset) == 15
    assert len(loaders.test.dataset) == 12, "test has 4 per class, under the cap"

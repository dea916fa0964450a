"""core.data.device_batches / core.data.batching: whole batches gathered from the decode cache, on the CPU and
(where present) a GPU; the per-sample DataLoader path is the oracle for what the pixels must be."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
import torch

from core.data import DataConfig, DeviceBatches, Preprocessing, cache_stats, load_uint8, make_loaders, reset_cache_stats
from core.train import capture_rng_state, restore_rng_state, seed_everything


def _cfg(root, tmp_path, **kw) -> DataConfig:
    base = {"data_dir": root, "image_size": 16, "batch_size": 8, "cache_dir": tmp_path / "cache"}
    return DataConfig(**(base | kw))


def _labels(loader) -> Counter:
    return Counter(int(v) for _, y in loader for v in y)


def test_batched_path_without_augmentation_equals_the_per_sample_path(tiny_imagefolder, tmp_path):
    batched = make_loaders(_cfg(tiny_imagefolder, tmp_path))
    per_sample = make_loaders(_cfg(tiny_imagefolder, tmp_path, pipeline="per_sample"))
    assert isinstance(batched.train, DeviceBatches), f"default pipeline gave {type(batched.train).__name__}"
    for name in ("val", "test"):
        got = [(x, y) for x, y in getattr(batched, name)]
        ref = [(x, y) for x, y in getattr(per_sample, name)]
        assert len(got) == len(ref), f"{name}: {len(got)} batches vs {len(ref)}"
        for (x, y), (rx, ry) in zip(got, ref):
            torch.testing.assert_close(x, rx, atol=1e-6, rtol=0)
            assert torch.equal(y, ry), f"{name}: labels differ from the per-sample loader"
    seed_everything(0, batched)
    seed_everything(0, per_sample)
    assert _labels(batched.train) == _labels(per_sample.train), "one epoch must visit every training image once"


def test_augmented_epochs_are_reproducible_shuffled_and_cover_the_split(tiny_imagefolder, tmp_path):
    loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path, augment=True))
    seed_everything(5, loaders)
    first = [(x.clone(), y.clone()) for x, y in loaders.train]
    state = capture_rng_state(loaders)
    second = [(x.clone(), y.clone()) for x, y in loaders.train]
    restore_rng_state(state, loaders)
    again = [(x.clone(), y.clone()) for x, y in loaders.train]
    assert all(torch.equal(a, b) and torch.equal(ya, yb) for (a, ya), (b, yb) in zip(second, again)), \
        "restoring the RNG snapshot must redraw the same epoch (exact resume)"
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, second)), "two epochs drew the same batches"
    n = len(loaders.train.dataset)
    assert sum(len(y) for _, y in first) == n and first[0][0].shape[1:] == (3, 16, 16), "wrong epoch size/shape"
    assert loaders.train.generator is not None and loaders.val.generator is None, "only training draws"


def test_a_larger_crop_source_is_decoded_for_training_only(tiny_imagefolder, tmp_path):
    loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path, augment=True, train_decode_ratio=1.5))
    assert tuple(loaders.train.images.shape[2:]) == (24, 24), f"train store {tuple(loaders.train.images.shape)}"
    assert tuple(loaders.val.images.shape[2:]) == (16, 16), "validation must stay at the evaluation geometry"
    assert loaders.preprocessing.image_size == 16 and loaders.preprocessing.resize_size is None
    x, _ = next(iter(loaders.train))
    assert x.shape[1:] == (3, 16, 16), f"crops must come out at the model input size, got {tuple(x.shape)}"
    plain = make_loaders(_cfg(tiny_imagefolder, tmp_path, train_decode_ratio=1.5))  # no augmentation: no second decode
    assert tuple(plain.train.images.shape[2:]) == (16, 16)


def test_each_image_is_decoded_once_per_view_it_is_used_in(tiny_imagefolder, tmp_path):
    """The pool at the crop source, the validation split alone again at the model's view (the oracle for its
    pixels: ``load_uint8`` straight from the file), the test set once; nothing else."""
    reset_cache_stats(forget_memory=True)
    loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path, augment=True, train_decode_ratio=1.5))
    pool = len(loaders.train.dataset) + len(loaders.val.dataset)
    stats = cache_stats()
    assert (stats.misses, stats.images_decoded) == (3, pool + len(loaders.val.dataset) + len(loaders.test.dataset))
    val = loaders.val.dataset
    for i, (path, _) in enumerate(val.samples):
        assert torch.equal(val.uint8(i), load_uint8(path, Preprocessing(16))), f"{path.name}: not the model's view"


def _mapped_file(address: int) -> str | None:
    """The file whose memory map holds ``address`` in this process (Linux /proc/self/maps), or None."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(v, 16) for v in parts[0].split("-"))
        if lo <= address < hi:
            return parts[5] if len(parts) == 6 else None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_cpu_store_is_the_decode_caches_memory_map(tiny_imagefolder, tmp_path):
    loaders = make_loaders(_cfg(tiny_imagefolder, tmp_path))
    store = loaders.train.images
    mapped = _mapped_file(store.data_ptr())
    assert mapped is not None and mapped.endswith(".npy") and str(tmp_path / "cache") in mapped, \
        f"the CPU store should be the cache file mapped into memory, not a copy; its pages belong to {mapped!r}"
    assert loaders.val.images.data_ptr() == store.data_ptr(), "train and val share one pool store (no copy)"


def test_augment_device_cuda_needs_a_cuda_training_device(tiny_imagefolder, tmp_path):
    with pytest.raises(ValueError, match="augment_device 'cuda' needs a CUDA training device"):
        make_loaders(_cfg(tiny_imagefolder, tmp_path, augment=True, augment_device="cuda", device="cpu"))


@pytest.mark.parametrize("kwargs,match", [({"pipeline": "fast"}, "unknown pipeline"),
                                          ({"augment_device": "tpu"}, "unknown augment_device"),
                                          ({"crop_scale": (0.0, 1.0)}, "crop_scale must be"),
                                          ({"crop_scale": (0.9, 0.5)}, "crop_scale must be"),
                                          ({"train_decode_ratio": 0.5}, "train_decode_ratio must be")])
def test_bad_pipeline_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)


def test_data_path_is_logged(tiny_imagefolder, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="core.data"):
        make_loaders(_cfg(tiny_imagefolder, tmp_path, augment=True))
    assert "data path: batched (images on cpu, transformed on cpu, fed to cpu)" in caplog.text, caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_resident_batches_match_the_cpu_ones(tiny_imagefolder, tmp_path):
    cpu = make_loaders(_cfg(tiny_imagefolder, tmp_path, augment=True))
    gpu = make_loaders(_cfg(tiny_imagefolder, tmp_path, augment=True, device="cuda"))
    assert gpu.train.images.device.type == "cuda", "images should be resident on the GPU"
    assert torch.cuda.memory_allocated() >= gpu.train.images.numel(), "the upload is held in CUDA memory"
    again = make_loaders(_cfg(tiny_imagefolder, tmp_path, augment=True, device="cuda"))
    assert again.train.images.data_ptr() == gpu.train.images.data_ptr(), "a second trial must reuse the upload"
    seed_everything(1, cpu)
    seed_everything(1, gpu)
    for (x, y), (gx, gy) in zip(cpu.train, gpu.train):  # the same draws: the generator lives on the CPU
        assert gx.device.type == "cuda" and torch.equal(y, gy.cpu())
        torch.testing.assert_close(gx.cpu(), x, atol=1e-4, rtol=0)

"""Batches as index gathers from the decode cache's uint8 tensor, augmented and normalised a batch at a time.

With the images decoded once, what is left per epoch is picking rows, augmenting and normalising; per sample in
DataLoader workers that starves a GPU (issue 16). :class:`DeviceBatches` keeps the ``[N, 3, S, S]`` uint8 tensor
where the batches are made: resident on a CUDA device when it fits in :data:`RESIDENT_FRACTION` of the free
memory (uploaded once, shared by a worker's sweep trials, least recently used dropped first; else gathered on the
host and copied per batch, logged), the decode cache's memory map on the CPU. Every random number comes from the
loader's one CPU generator (which :mod:`core.train.rng` saves and restores), so a resume draws what the
uninterrupted run would have, on any device; per batch nothing is read back from the device. It looks enough
like a ``DataLoader`` (``len``, iteration, ``.dataset``, ``.batch_size``, ``.generator``) for the trainer.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import torch

from core.data.batched_augment import AugmentParams, BatchAugment, BatchTransform, pack_params, sample_params

__all__ = ["RESIDENT_FRACTION", "DeviceBatches", "image_store"]

log = logging.getLogger(__name__)

RESIDENT_FRACTION = 0.5  # largest share of the device's free memory the resident images may take
_UPLOAD_CHUNK = 256 * 2**20  # bytes per pinned staging copy when uploading
_RESIDENT: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()  # (cache key, device) -> uint8 tensor
_HOST: OrderedDict[str, torch.Tensor] = OrderedDict()  # cache key -> CPU tensor over the memory map
_HOST_ENTRIES = 8


def _host_tensor(entry) -> torch.Tensor:
    """A CPU uint8 tensor over the entry's ``.npy`` memory map (copy-on-write: writable, nothing copied)."""
    if entry.key in _HOST:
        _HOST.move_to_end(entry.key)
        return _HOST[entry.key]
    array = np.load(entry.npy_path, mmap_mode="c") if entry.npy_path is not None else np.array(entry.images)
    tensor = torch.from_numpy(array)
    _HOST[entry.key] = tensor
    while len(_HOST) > _HOST_ENTRIES:
        _HOST.popitem(last=False)
    return tensor


def _upload(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    out = torch.empty(host.shape, dtype=torch.uint8, device=device)
    per_row = max(1, host[0].numel()) if len(host) else 1
    step = max(1, _UPLOAD_CHUNK // per_row)
    for start in range(0, len(host), step):
        chunk = host[start:start + step].pin_memory()  # the caching host allocator recycles it after the copy
        out[start:start + step].copy_(chunk, non_blocking=True)
    return out


def image_store(entry, device: torch.device) -> torch.Tensor:
    """The entry's images where batches for ``device`` are gathered: resident on a GPU when they fit, else host."""
    host = _host_tensor(entry)
    if device.type != "cuda":
        return host
    device = _canonical(device)
    key = (entry.key, str(device))
    if key in _RESIDENT:
        _RESIDENT.move_to_end(key)
        return _RESIDENT[key]
    need = host.numel()
    free, _ = torch.cuda.mem_get_info(device)
    for other in [k for k in _RESIDENT if k[1] == str(device)]:  # oldest first: earlier sweep trials' data
        if need <= RESIDENT_FRACTION * free:
            break
        del _RESIDENT[other]
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(device)
    if need > RESIDENT_FRACTION * free:
        log.warning("decoded images do not fit on %s: %.1f MB needed, %.1f MB free (at most %.0f%% is used); "
                    "gathering batches on the host and copying each one instead", device, need / 2**20,
                    free / 2**20, 100 * RESIDENT_FRACTION)
        return host
    _RESIDENT[key] = _upload(host, device)
    log.info("decoded images resident on %s: %d x %s uint8, %.1f MB", device, len(host), list(host.shape[1:]),
             need / 2**20)
    return _RESIDENT[key]


def _canonical(device: torch.device | str) -> torch.device:
    """``cuda`` -> ``cuda:<current>``, so devices compare equal to a tensor's ``.device``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a host tensor to ``device`` without making the host wait (pinned staging for CUDA)."""
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


class DeviceBatches:
    """Iterable of ``(float32 images [B, 3, S, S], int64 labels [B])`` on ``device`` (see the module docstring).

    ``images``: the uint8 store (from :func:`image_store`) whose ``rows`` hold this split; ``labels``: one per
    row. ``augment=None`` only normalises. ``transform_device``: where augmentation runs (default ``device``).
    """

    def __init__(self, dataset, images: torch.Tensor, rows: list[int], labels: list[int], *, batch_size: int,
                 device: torch.device, mean: tuple[float, ...], std: tuple[float, ...],
                 augment: BatchAugment | None = None, shuffle: bool = False, drop_last: bool = False,
                 generator: torch.Generator | None = None, transform_device: torch.device | None = None) -> None:
        if len(rows) != len(labels):
            raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
        if (shuffle or augment is not None) and generator is None:
            raise ValueError("shuffling or augmenting DeviceBatches need a torch.Generator (the run's seed)")
        self.dataset, self.images, self.batch_size = dataset, images, batch_size
        self.device = _canonical(device)
        self.transform_device = _canonical(transform_device) if transform_device is not None else self.device
        if images.device.type == "cuda" and images.device != self.transform_device:
            raise ValueError(f"images resident on {images.device} but augmentation asked for {self.transform_device}")
        self.rows = torch.as_tensor(rows, dtype=torch.int64)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.augment, self.shuffle, self.drop_last, self.generator = augment, shuffle, drop_last, generator
        self.transform = BatchTransform(augment, mean, std, self.transform_device)

    def __len__(self) -> int:
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def where(self) -> str:
        """One line for the log: where images live, where they are transformed, where the model gets them."""
        return f"images on {self.images.device}, transformed on {self.transform_device}, fed to {self.device}"

    def _draws(self) -> Iterator[tuple[torch.Tensor, AugmentParams | None]]:
        """One epoch's dataset positions per batch and their augmentation parameters, drawn from ``.generator``."""
        n, (height, width) = len(self.rows), self.images.shape[2:]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            augment = self.augment is not None
            yield idx, sample_params(len(idx), height, width, self.augment, self.generator) if augment else None

    def batch_order(self) -> Iterator[torch.Tensor]:
        """The positions ``iter()`` would batch, drawing from ``.generator`` exactly what it draws (the order, and
        the augmentation parameters when augmenting), for :mod:`core.finetune.feature_cache`."""
        return (idx for idx, _ in self._draws())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        height, width = self.images.shape[2:]
        for idx, params in self._draws():
            rows, labels = self.rows[idx], self.labels[idx]
            packed = None if params is None else _to(pack_params(params, height, width), self.transform_device)
            batch = self.images.index_select(0, _to(rows, self.images.device))
            x = self.transform(_to(batch, self.transform_device), packed)
            yield _to(x, self.device), _to(labels, self.device)

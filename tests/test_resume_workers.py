"""Exact resume with DataLoader workers: an interrupted, resumed run equals an uninterrupted one, bit for bit (CPU).

The reference is the uninterrupted run with no worker at all; the runs under test use 1 and 2 persistent
workers, are cut after epoch 1 (``KeyboardInterrupt`` from the epoch callback, as Ctrl-C) and resumed from
``last.pt``. Dropout is on, so anything that moves torch's global RNG (a worker base seed drawn from it
when workers start) changes the numbers; augmentation on moves the workers' own RNG.
"""

from __future__ import annotations

import pytest
import torch

from core.data import DataConfig, make_loaders
from core.model import build_cnn, make_spec
from core.train import TrainConfig, fit, load_checkpoint

EPOCHS = 3


def _run(data_dir, run_dir, *, workers: int, augment: bool, cut_after: int | None = None):
    loaders = make_loaders(DataConfig(data_dir=data_dir, image_size=32, batch_size=8, num_workers=workers,
                                      augment=augment, seed=5, cache_dir=run_dir.parent / "cache"))
    torch.manual_seed(0)
    spec = make_spec(filters=4, image_size=32, num_classes=3, dense_units=16, dropout=0.3, batch_norm=True)
    meta = {"model_desc": {"kind": "cnn", "spec": spec.to_dict()}, "class_names": loaders.class_names,
            "preprocessing": loaders.preprocessing.to_dict()}
    cfg = TrainConfig(epochs=EPOCHS, device="cpu", seed=3, lr=3e-3)

    def cut(epoch, stats):
        if epoch == cut_after:
            raise KeyboardInterrupt

    if cut_after is not None:
        with pytest.raises(KeyboardInterrupt):
            fit(build_cnn(spec), loaders, cfg, run_dir=run_dir, checkpoint_meta=meta, on_epoch_end=cut)
        loaders = make_loaders(DataConfig(data_dir=data_dir, image_size=32, batch_size=8, num_workers=workers,
                                          augment=augment, seed=5, cache_dir=run_dir.parent / "cache"))
    result = fit(build_cnn(spec), loaders, cfg, run_dir=run_dir, checkpoint_meta=meta, resume=cut_after is not None)
    history = [{k: v for k, v in h.items() if k not in ("seconds", "images_per_sec")} for h in result.history]
    return history, load_checkpoint(run_dir / "last.pt")["state_dict"]


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_resumed_runs_with_workers_equal_the_uninterrupted_run(tiny_imagefolder, tmp_path, augment):
    ref_history, ref_weights = _run(tiny_imagefolder, tmp_path / "reference", workers=0, augment=augment)
    assert len(ref_history) == EPOCHS
    for workers in (1, 2):
        history, weights = _run(tiny_imagefolder, tmp_path / f"w{workers}", workers=workers, augment=augment,
                                cut_after=1)
        assert history == ref_history, f"{workers} worker(s), cut after epoch 1 and resumed: metrics differ"
        differing = [k for k in ref_weights if not torch.equal(weights[k], ref_weights[k])]
        assert differing == [], f"{workers} worker(s): weights differ from the uninterrupted run in {differing}"


def test_worker_count_does_not_change_what_a_sample_looks_like(tiny_imagefolder, tmp_path):
    """The same epoch, drawn by 0 and by 2 workers from the same generator state: the same augmented batches."""
    batches = []
    for workers in (0, 2):
        loaders = make_loaders(DataConfig(data_dir=tiny_imagefolder, image_size=32, batch_size=8, augment=True,
                                          num_workers=workers, seed=1, cache_dir=tmp_path / "cache"))
        batches.append([(x.clone(), y.clone()) for x, y in loaders.train])
    assert len(batches[0]) == len(batches[1]) > 1
    for (x0, y0), (x2, y2) in zip(*batches):
        assert torch.equal(y0, y2) and torch.equal(x0, x2), "augmentation must depend on the sample, not the worker"
    plain = make_loaders(DataConfig(data_dir=tiny_imagefolder, image_size=32, batch_size=8, augment=False,
                                    seed=1, cache_dir=tmp_path / "cache"))
    x_plain = torch.cat([x for x, _ in plain.train])
    assert not torch.equal(torch.cat([x for x, _ in batches[0]]), x_plain), "augmentation must change the pixels"

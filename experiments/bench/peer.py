"""The peers' Part A pipeline and recipe, rebuilt as the baseline of the ``accuracy`` benchmark section.

What the best published code for this assignment does (issue 15), with the same file lists, spec and seeds as our
rows, so only the pipeline and the recipe differ: PIL full decode every epoch, ``Resize((S, S))``, flip,
rotation and colour jitter, ImageNet normalisation, 2 DataLoader workers; Kaiming/Xavier init, Adam with L2 on
every parameter, ``ReduceLROnPlateau(0.5, patience 2)`` on the validation loss, which also picks the kept
checkpoint. Nothing here is used by the product code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

PEER_PLATEAU_FACTOR = 0.5
PEER_PLATEAU_PATIENCE = 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PILFolderDataset(Dataset):
    """``(path, label)`` pairs opened with PIL on every access, as ``ImageFolder`` does."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")  # torchvision's default_loader
        return self.transform(img), label


def peer_transforms(image_size: int):
    """(train, eval) transforms of the peer pipeline."""
    from torchvision import transforms as T

    tail = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train = T.Compose([T.Resize((image_size, image_size)), T.RandomHorizontalFlip(), T.RandomRotation(10),
                       T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2), *tail])
    return train, T.Compose([T.Resize((image_size, image_size)), *tail])


def peer_loaders(samples: dict[str, list[tuple[Path, int]]], image_size: int, batch_size: int, seed: int,
                 num_workers: int = 2) -> dict[str, DataLoader]:
    """train (shuffled, augmented) / val / test loaders over the given file lists."""
    train_tf, eval_tf = peer_transforms(image_size)
    gen = torch.Generator().manual_seed(seed)
    common = {"batch_size": batch_size, "num_workers": num_workers, "persistent_workers": num_workers > 0}
    return {"train": DataLoader(PILFolderDataset(samples["train"], train_tf), shuffle=True, generator=gen,
                                drop_last=len(samples["train"]) % batch_size == 1, **common),
            "val": DataLoader(PILFolderDataset(samples["val"], eval_tf), **common),
            "test": DataLoader(PILFolderDataset(samples["test"], eval_tf), **common)}


def peer_init(model: nn.Module) -> nn.Module:
    """Kaiming-normal conv weights, Xavier-uniform linear weights, zero biases, unit BN scales."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
        else:
            continue
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    return model


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_images_per_sec: float
    val_loss: float
    val_acc: float
    test_acc: float
    lr: float


def _evaluate(model: nn.Module, loader: DataLoader, criterion: nn.Module) -> tuple[float, float]:
    model.eval()
    loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            loss += float(criterion(out, y)) * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
    return loss / seen, correct / seen


def peer_train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                     criterion: nn.Module) -> tuple[float, int]:
    """One training pass of the peer's loop: (summed loss, images seen)."""
    model.train()
    total, seen = 0.0, 0
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        seen += len(y)
    return total, seen


def peer_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` over every parameter, L2 weight decay included (the peer's)."""
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def train_peer(model: nn.Module, loaders: dict[str, DataLoader], *, epochs: int, lr: float,
               weight_decay: float) -> list[EpochRecord]:
    """The peer's loop (NCHW fp32 eager); returns one record per epoch, test accuracy included for analysis."""
    criterion = nn.CrossEntropyLoss()
    optimizer = peer_optimizer(model, lr, weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=PEER_PLATEAU_FACTOR,
                                                         patience=PEER_PLATEAU_PATIENCE)
    records = []
    for epoch in range(1, epochs + 1):
        start, current_lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        total, seen = peer_train_epoch(model, loaders["train"], optimizer, criterion)
        seconds = time.perf_counter() - start
        val_loss, val_acc = _evaluate(model, loaders["val"], criterion)
        plateau.step(val_loss)
        _, test_acc = _evaluate(model, loaders["test"], criterion)
        records.append(EpochRecord(epoch, total / seen, seen / seconds, val_loss, val_acc, test_acc, current_lr))
    return records

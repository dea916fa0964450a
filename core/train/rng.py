"""One seed for everything random, and the RNG snapshot that makes a resumed run bit-identical.

Python's ``random``, NumPy's global RNG, torch's CPU and CUDA generators and the loaders' own generators:
:func:`capture_rng_state` snapshots them all as weights_only-safe data for ``last.pt``, :func:`restore_rng_state`
puts them back.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "loader_generators", "restore_rng_state", "seed_everything"]

LOADER_NAMES = ("train", "val", "test")


def loader_generators(loaders: Any) -> list[torch.Generator]:
    """The distinct ``torch.Generator`` objects the train/val/test loaders' samplers draw from (a
    DataLoader's own ``generator`` only seeds workers at their start, :mod:`core.data.sampling`, so it is not
    part of the snapshot; a batch source without a sampler draws from its own ``.generator``, which is)."""
    found: dict[int, torch.Generator] = {}
    for name in LOADER_NAMES:
        loader = getattr(loaders, name, None)
        if loader is None:
            continue
        candidates = [getattr(getattr(loader, "sampler", None), "generator", None)]
        batch_sampler = getattr(loader, "batch_sampler", None)
        candidates.append(getattr(getattr(batch_sampler, "sampler", None), "generator", None))
        if not hasattr(loader, "sampler"):  # a batch source of its own (core.data.device_batches): order + augmentation
            candidates.append(getattr(loader, "generator", None))
        for gen in candidates:
            if isinstance(gen, torch.Generator):
                found.setdefault(id(gen), gen)
    return list(found.values())


def seed_everything(seed: int, loaders: Any = None) -> None:
    """Seed Python, NumPy, torch (CPU and all CUDA devices) and the loaders' generators with ``seed``."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    for gen in loader_generators(loaders) if loaders is not None else []:
        gen.manual_seed(seed)


def capture_rng_state(loaders: Any = None) -> dict[str, Any]:
    """A weights_only-safe snapshot of every RNG that affects training."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": [gen.get_state() for gen in loader_generators(loaders)] if loaders is not None else [],
    }
    return state


def restore_rng_state(state: dict[str, Any], loaders: Any = None) -> None:
    """Put back a :func:`capture_rng_state` snapshot; the loaders must be built the same way as when captured."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(("MT19937", nps["keys"].numpy().astype(np.uint32), int(nps["pos"]), int(nps["has_gauss"]),
                         float(nps["cached_gaussian"])))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:  # resumed on a machine with a different GPU count: seed what is there from the saved default
            torch.cuda.set_rng_state(state["cuda"][0])
    gens = loader_generators(loaders) if loaders is not None else []
    saved = state.get("generators", [])
    if len(saved) != len(gens):
        raise ValueError(f"the RNG snapshot has {len(saved)} loader generator(s) but the loaders have {len(gens)}; "
                         "resume with loaders built by the same code and config as the interrupted run")
    for gen, gen_state in zip(gens, saved):
        gen.set_state(gen_state)

"""Shared test fixtures: hypothesis profile, the ../shared folder, tiny generated image folders.

Everything here is CPU-only and network-free. Tests that need ``../shared`` (real weights, real
photos) use the ``shared_dir`` fixture, which skips cleanly when the folder is absent.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

# A suite started in the background (`cmd &`, nohup, some CI runners) inherits SIGINT as SIG_IGN, and so
# would every script a test starts, which then ignores the Ctrl-C the test sends. Python's own default
# (KeyboardInterrupt) here makes children start with SIGINT at its default, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

settings.register_profile(
    "ci",
    deadline=None,  # torch-heavy examples have no stable timing on a shared 2-core box
    derandomize=True,  # a fixed seed: CI failures reproduce
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the clone (CI); INAT_CNN_SHARED_DIR points elsewhere (e.g. from a git worktree)
SHARED_DIR = Path(os.environ.get("INAT_CNN_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep every test's decode cache and demo set out of the user's home folder."""
    cache = tmp_path_factory.getbasetemp() / "inat-cnn-cache"
    monkeypatch.setenv("INAT_CNN_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch-home"))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread per test: tiny tensors gain nothing from two, and on a busy 2-core box
    thread contention made a tiny training step 10x slower (6 ms vs 60 ms). Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fast_tests_start_no_process(request, monkeypatch):
    """The fast tier (``-m "not slow"``) is the edit loop: a test that starts a process (a script run as a user
    runs it, a worker, a server, W&B's service, a browser) is marked ``slow`` (setup.cfg). Enforced here: in a
    test without the mark, starting one fails the test and names the rule."""
    if request.node.get_closest_marker("slow") is None:
        import multiprocessing.process
        import subprocess
        import traceback

        def refusing(original):
            def start(*args, **kwargs):
                # a library that runs a helper while it is first imported (torch's CUDA probe runs `ldconfig -p`)
                # is not the test starting a process
                if any(frame.filename.startswith("<frozen importlib") for frame in traceback.extract_stack()):
                    return original(*args, **kwargs)
                raise AssertionError(f"{request.node.nodeid} starts a process: mark it @pytest.mark.slow (the "
                                     f"fast tier starts none)")
            return start

        monkeypatch.setattr(subprocess.Popen, "__init__", refusing(subprocess.Popen.__init__))
        monkeypatch.setattr(multiprocessing.process.BaseProcess, "start",
                            refusing(multiprocessing.process.BaseProcess.start))
    yield


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository; skips the test when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is absent (real weights and photos live there)")
    return SHARED_DIR


def make_tiny_imagefolder(
    root: Path,
    classes: tuple[str, ...] = ("Amphibia", "Aves", "Fungi"),
    train_per_class: int = 10,
    test_per_class: int = 4,
    size: tuple[int, int] = (40, 30),
    seed: int = 0,
) -> Path:
    """Write ``root/train/<Class>/*.jpg`` and ``root/val/<Class>/*.jpg`` with class-coloured noise.

    Each class has its own dominant colour, so a tiny CNN can learn it in a few steps.
    """
    from PIL import Image

    rng = random.Random(seed)
    palette = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (220, 200, 40), (200, 40, 200),
               (40, 200, 200), (120, 120, 120), (250, 140, 20), (90, 40, 10), (10, 10, 10)]
    for split, count in (("train", train_per_class), ("val", test_per_class)):
        for ci, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            base = palette[ci % len(palette)]
            for i in range(count):
                w = size[0] + rng.randint(-4, 4)
                h = size[1] + rng.randint(-4, 4)
                img = Image.new("RGB", (w, h), base)
                px = img.load()
                for _ in range(w * h // 4):
                    x, y = rng.randrange(w), rng.randrange(h)
                    px[x, y] = tuple(max(0, min(255, c + rng.randint(-60, 60))) for c in base)
                img.save(folder / f"{name.lower()}_{i:03d}.jpg", quality=90)
    return root


@pytest.fixture
def tiny_imagefolder(tmp_path) -> Path:
    """A 3-class, 10+4-images-per-class dataset of ~40x30 JPEGs in the iNaturalist layout."""
    return make_tiny_imagefolder(tmp_path / "tiny_data")


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session: a throwaway cluster in a temp folder on a loopback port,
    started as an unprivileged user (``experiments/bench/pgcluster.py``) and stopped afterwards. Skips only
    when the PostgreSQL binaries are absent (CI installs Debian's ``postgresql`` package)."""
    from experiments.bench.pgcluster import find_pg_bindir, start_cluster

    if find_pg_bindir() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are absent: apt-get install postgresql to run the "
                    "PostgreSQL sweep tests")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """``postgresql://sweeper:<password>@127.0.0.1:<port>/<fresh database>``: one empty database per test."""
    import re

    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + f"_{os.getpid()}"
    postgres_server.create_database(name)
    return postgres_server.url(database=name)

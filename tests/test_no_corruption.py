"""Nothing a user does corrupts a run: refusals write nothing, one process owns a run folder, special files stay.

The sibling of ``tests/test_user_errors.py`` for the cases where the *files* matter as much as the message: each
refusal row runs a script as a user does (a subprocess) against a copy of a real run folder and asserts the exit
code, the message (what is wrong, how to fix it), no traceback, and that every file that existed before is
byte-identical afterwards (sha256) with no file added or removed. One tiny Part A run is trained once for all
rows; it starts over a stale lock of a dead process and a temp file of an interrupted write, which it must take
over and remove.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import make_tiny_imagefolder  # noqa: E402

from core.runfiles import LOCK_NAME, RunFolderBusyError, append_jsonl, own_run_folder, write_text  # noqa: E402

PT, PB, PE, IN = ("experiments/partA_train.py", "experiments/partB_finetune.py", "experiments/partA_evaluate.py",
                  "export/infer.py")
TINY = ("--epochs", "1", "--image-size", "32", "--filters", "4", "--dense", "8", "--wandb-mode", "disabled",
        "--device", "cpu")
HOST = socket.gethostname()


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "INAT_CNN_DEBUG"}
    env.update(PYTHONPATH=str(ROOT), WANDB_MODE="disabled", WANDB_SILENT="true", MPLBACKEND="Agg",
               OMP_NUM_THREADS="1", INAT_CNN_CACHE=str(tmp / "cache"), TORCH_HOME=str(tmp / "torch-home"),
               PYTHONWARNINGS="ignore")
    return env


def _run(tmp: Path, script: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *argv], capture_output=True, text=True, cwd=tmp,
                          env=_env(tmp), timeout=600)


def _checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` but the decode cache (which a refused run may fill: not a run's file)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()
            and p.relative_to(folder).parts[0] != "cache"}


def _dead_pid() -> int:
    """The pid of a process that has finished (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A tiny dataset and one real Part A run, started over a dead owner's lock and an orphaned temp file."""
    tmp = tmp_path_factory.mktemp("no-corruption")
    data = make_tiny_imagefolder(tmp / "data", train_per_class=5, test_per_class=2)
    run = tmp / "runs" / "a"
    run.mkdir(parents=True)
    (run / LOCK_NAME).write_text(f"{HOST} {_dead_pid()}\n")
    (run / ".last.pt.k3j9x2.tmp").write_bytes(b"half a checkpoint")
    got = _run(tmp, PT, "--data-dir", str(data), "--out-dir", str(tmp / "runs"), "--name", "a", *TINY)
    return {"tmp": tmp, "data": data, "run": run, "first": got}


def test_a_dead_owners_lock_is_taken_over_and_temp_files_of_a_killed_write_are_removed(world):
    got, run = world["first"], world["run"]
    assert got.returncode == 0, got.stderr[-3000:]
    assert re.search(r"taking over \S+\.lock: its owner, pid \d+ on \S+, is no longer running", got.stderr), \
        got.stderr[-3000:]
    assert not (run / ".last.pt.k3j9x2.tmp").exists(), "the temp file of an interrupted write must be removed"
    assert not (run / LOCK_NAME).exists(), "a finished run releases its lock"
    assert {"config.yaml", "last.pt", "best.pt", "test_metrics.json"} <= {p.name for p in run.iterdir()}


@dataclass(frozen=True)
class Refusal:
    id: str
    script: str
    argv: tuple[str, ...]  # "{runs}", "{data}", "{tmp}" are filled in; the run under test is "{runs}/r"
    what: str
    fix: str
    prepare: str = ""  # how the copied run folder is damaged first (see _prepare)


REFUSALS = [
    Refusal("same-name-while-running", PT, ("--data-dir", "{data}", "--out-dir", "{runs}", "--name", "fresh", *TINY),
            r"runs/fresh is in use by pid \d+ on " + re.escape(HOST), r"wait for it to finish or choose another "
            r"--name \(if that process is gone, delete \S+\.lock\)", prepare="busy-fresh"),
    Refusal("resume-while-running", PT, ("--data-dir", "{data}", "--out-dir", "{runs}", "--name", "r", "--resume",
                                         *TINY),
            r"runs/r is in use by pid \d+", r"wait for it to finish or choose another --name", prepare="busy"),
    Refusal("partB-resume-on-a-partA-run", PB, ("--arch", "mobilenet_v2", "--weights", "none", "--data-dir", "{data}",
                                                "--out-dir", "{runs}", "--name", "r", "--resume", "--device", "cpu"),
            r"runs/r is a run folder of experiments/partA_train\.py, not of partB_finetune\.py",
            r"continue it with experiments/partA_train\.py, or choose another --name"),
    Refusal("partB-without-resume-on-a-run", PB, ("--arch", "mobilenet_v2", "--weights", "none", "--data-dir",
                                                  "{data}", "--out-dir", "{runs}", "--name", "r", "--device", "cpu"),
            r"runs/r already holds a run", r"pass --resume to continue it or choose another --name"),
    Refusal("partA-resume-on-a-partB-run", PT, ("--out-dir", "{runs}", "--name", "r", "--resume", *TINY),
            r"runs/r is a run folder of experiments/partB_finetune\.py, not of partA_train\.py",
            r"continue it with experiments/partB_finetune\.py", prepare="partB-config"),
    Refusal("resume-damaged-config", PT, ("--out-dir", "{runs}", "--name", "r", "--resume", *TINY),
            r"config\.yaml is not valid YAML \(.*line \d+", r"fix the line it points at", prepare="damaged-config"),
    Refusal("resume-config-without-section", PT, ("--out-dir", "{runs}", "--name", "r", "--resume", *TINY),
            r"config\.yaml is not a run's config\.yaml \(expected the mapping experiments/partA_train\.py writes",
            r"restore it, or choose another --name", prepare="foreign-config"),
    Refusal("name-escapes-out-dir", PT, ("--out-dir", "{runs}", "--name", "../escaped", *TINY),
            r"run name '\.\./escaped' must be letters, digits", r"choose another --name"),
    Refusal("partB-name-escapes-out-dir", PB, ("--out-dir", "{runs}", "--name", "../escaped-b", "--device", "cpu"),
            r"run name '\.\./escaped-b' must be letters, digits", r"choose another --name"),
    Refusal("infer-out-is-a-fifo", IN, ("{tmp}/model.onnx", "{data}/val", "--out", "{runs}/r/fifo"),
            r"fifo is not a regular file \(a FIFO\)", r"pass the path of a regular file", prepare="fifo"),
    Refusal("infer-out-is-a-directory", IN, ("{tmp}/model.onnx", "{data}/val", "--out", "{runs}/r"),
            r"runs/r is a directory, not a file", r"pass a file path"),
    Refusal("evaluate-while-its-folder-is-busy", PE, ("--checkpoint", "{runs}/r/best.pt", "--data-dir", "{data}",
                                                      "--out-dir", "{runs}/r", "--wandb-mode", "disabled",
                                                      "--device", "cpu"),
            r"runs/r is in use by pid \d+", r"wait for it to finish", prepare="busy"),
]


def _prepare(kind: str, runs: Path) -> subprocess.Popen | None:
    """Damage ``runs/r`` as the row says; a busy folder is held by a real live process (returned)."""
    run = runs / "r"
    if kind == "partB-config":
        (run / "config.yaml").write_text("arch: mobilenet_v2\nstrategy: head\n")
    elif kind == "damaged-config":
        (run / "config.yaml").write_text("config: {model: [1, 2\nflat: x\n")
    elif kind == "foreign-config":
        (run / "config.yaml").write_text("- just\n- a list\n")
    elif kind == "fifo":
        os.mkfifo(run / "fifo")
    elif kind.startswith("busy"):
        folder = runs / ("fresh" if kind == "busy-fresh" else "r")
        code = (f"import sys; from core.runfiles import own_run_folder\nwith own_run_folder({str(folder)!r}):\n"
                " print('held', flush=True); sys.stdin.read()")
        holder = subprocess.Popen([sys.executable, "-c", code],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert holder.stdout.readline().strip() == "held"
        return holder
    return None


@pytest.mark.slow
@pytest.mark.parametrize("case", REFUSALS, ids=[c.id for c in REFUSALS])
def test_a_refusal_writes_nothing(case: Refusal, world, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(world["run"], runs / "r")
    if case.script == IN:
        _export_once(world)
    holder = _prepare(case.prepare, runs)
    try:
        before = _checksums(tmp_path)
        got = _run(tmp_path, case.script, *(a.format(runs=runs, data=world["data"], tmp=world["tmp"])
                                            for a in case.argv))
        after = _checksums(tmp_path)
    finally:
        if holder is not None:
            holder.communicate("", timeout=60)
    where = f"{case.script} {' '.join(case.argv)}\n--- stderr\n{got.stderr[-3000:]}"
    assert got.returncode == 2, f"exit {got.returncode}, expected 2\n{where}"
    assert "Traceback" not in got.stdout + got.stderr and "this is a bug" not in got.stderr, where
    error = [ln for ln in got.stderr.splitlines() if "error:" in ln][-1]
    assert re.search(case.what, error), f"the message must say what is wrong ({case.what!r})\n{where}"
    assert re.search(case.fix, error), f"the message must say how to fix it ({case.fix!r})\n{where}"
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}\n{where}"
    assert not list(tmp_path.glob("escaped*")), "a run name left --out-dir"


def _export_once(world: dict[str, Path]) -> None:
    out = world["tmp"] / "model.onnx"
    if not out.exists():
        got = _run(world["tmp"], "export/to_onnx.py", "--checkpoint", str(world["run"] / "best.pt"), "--out",
                   str(out), "--exporter", "torchscript")
        assert got.returncode == 0, got.stderr[-3000:]


@pytest.mark.slow
def test_two_owners_in_one_process_tree_are_refused_and_the_lock_names_host_and_pid(tmp_path):
    with own_run_folder(tmp_path / "run") as run:
        assert (run / LOCK_NAME).read_text().split() == [HOST, str(os.getpid())]
        with own_run_folder(run):  # the same process again (a sweep trial, then its run): re-entrant
            pass
        assert (run / LOCK_NAME).exists(), "a nested hold must not release the outer one"
        code = ("import sys; from core.runfiles import own_run_folder\n"
                f"with own_run_folder({str(run)!r}): pass")
        got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert got.returncode != 0 and "RunFolderBusyError" in got.stderr and f"pid {os.getpid()}" in got.stderr
    assert not (tmp_path / "run").exists(), "a folder the holder created and left empty is removed"


def test_a_lock_of_another_host_is_refused_unless_the_sweep_says_its_owner_is_gone(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("other-host 1\n")
    with pytest.raises(RunFolderBusyError, match=r"pid 1 on other-host"):
        with own_run_folder(run):
            pass
    with own_run_folder(run, take_over_other_hosts=True):
        assert (run / LOCK_NAME).read_text().split() == [HOST, str(os.getpid())]


def test_writes_follow_symlinks_and_refuse_special_files(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new", "the link is followed, never replaced"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path):
        with pytest.raises((ValueError, IsADirectoryError), match=r"is not a regular file|is a directory"):
            write_text(path, "x")
        with pytest.raises((ValueError, IsADirectoryError), match=r"is not a regular file|is a directory"):
            append_jsonl(path, {"a": 1})  # appending to a FIFO would block forever
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and sorted(p.name for p in tmp_path.iterdir()) == \
        ["fifo", "link.txt", "real.txt"], "no temp file or replacement left behind"


def test_any_byte_name_trains_and_every_unused_entry_is_listed_in_skipped_txt(tmp_path, monkeypatch):
    from core.data import DataConfig, make_loaders

    monkeypatch.setenv("INAT_CNN_CACHE", str(tmp_path / "cache"))
    root = make_tiny_imagefolder(tmp_path / "data", train_per_class=4, test_per_class=2)
    aves = root / "train" / "Aves"
    latin1 = os.path.join(os.fsencode(aves), b"caf\xe9.jpg")  # 'café.jpg' written by a Latin-1 system
    os.rename(next(aves.glob("*.jpg")), latin1)
    (aves / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(aves / "pipe.jpg")
    (aves / "linked").symlink_to(root / "val" / "Aves", target_is_directory=True)
    loaders = make_loaders(DataConfig(data_dir=root, image_size=16, batch_size=4, device="cpu"))
    used = [str(p) for p, _ in loaders.train.dataset.samples + loaders.val.dataset.samples]
    assert os.fsdecode(latin1) in used, "a file name in another byte encoding must train like any other"
    loaders.write_split(tmp_path / "run")
    skipped = (tmp_path / "run" / "skipped.txt").read_text(encoding="utf-8", errors="surrogateescape")
    for line in ("train/Aves/dangling.jpg\tbroken symlink", "train/Aves/pipe.jpg\tnot a regular file",
                 "train/Aves/linked\tsymlinked folder"):
        assert line in skipped, f"{line!r} must be listed in skipped.txt:\n{skipped}"


@pytest.mark.slow
def test_a_failed_write_names_the_file_and_the_free_space_and_leaves_nothing_behind(tmp_path):
    """A full disk, made real with RLIMIT_FSIZE (writes past 4000 bytes fail with EFBIG), in a child process."""
    code = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from core.model import build_cnn, make_spec
from core.runfiles import write_text
from core.train import make_payload, save_checkpoint
from core.cli import classify
spec = make_spec(filters=4, image_size=32, num_classes=3, dense_units=8)
payload = make_payload(build_cnn(spec), model_desc={{"kind": "cnn", "spec": spec.to_dict()}}, class_names="abc",
                       preprocessing={{"image_size": 32, "resize_size": None, "mean": (0.5,) * 3, "std": (0.25,) * 3}},
                       train_config={{}}, metrics={{}}, epoch=1)
resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))
for write in (lambda: save_checkpoint({str(tmp_path / "last.pt")!r}, payload),
              lambda: write_text({str(tmp_path / "big.txt")!r}, "x" * 50000)):
    try:
        write()
    except BaseException as exc:
        print(*classify(exc))
"""
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    lines = got.stdout.splitlines()
    assert len(lines) == 2, got.stdout + got.stderr
    for line, name in zip(lines, ("last.pt", "big.txt")):
        assert re.fullmatch(rf"1 OSError: .*{name}.* \([\d,.]+ GB free on that disk\)", line), line
    assert list(tmp_path.iterdir()) == [], "a failed write leaves neither the file nor its temp file"


def test_a_run_that_finished_while_the_second_one_loaded_its_data_is_not_overwritten(world, tmp_path, monkeypatch):
    """The script's early check passed (no last.pt yet); under the lock run_partA looks again before writing."""
    from core.partA import PartAConfig, run_partA

    monkeypatch.setenv("INAT_CNN_CACHE", str(world["tmp"] / "cache"))
    run = tmp_path / "a"
    shutil.copytree(world["run"], run)
    before = _checksums(tmp_path)
    cfg = PartAConfig.from_flat({"data_dir": world["data"], "image_size": 32, "filters": 4, "dense_units": 8,
                                 "epochs": 1, "device": "cpu"})
    with pytest.raises(FileExistsError, match=r"already holds a run; pass --resume to continue it"):
        run_partA(cfg, run, tracker_mode="disabled")
    assert _checksums(tmp_path) == before


@pytest.mark.slow
def test_two_runs_with_the_same_name_at_once_one_trains_the_other_is_refused(world, tmp_path):
    """The issue's first case, with two real partA_train processes: one folder, one run's files in it."""
    import torch
    import yaml

    procs = [subprocess.Popen([sys.executable, str(ROOT / PT), "--data-dir", str(world["data"]), "--out-dir",
                               str(tmp_path / "runs"), "--name", "x", "--seed", str(seed), *TINY],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=_env(world["tmp"])) for seed in (0, 1)]
    outs = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in outs)
    assert codes == [0, 2], outs
    winner = next(seed for seed, (code, _) in enumerate(outs) if code == 0)
    refused = next(err for code, err in outs if code == 2)
    assert re.search(r"runs/x (is in use by pid \d+ on \S+|already holds a run)", refused), refused
    run = tmp_path / "runs" / "x"
    assert yaml.safe_load((run / "config.yaml").read_text())["config"]["train"]["seed"] == winner
    best = torch.load(run / "best.pt", weights_only=True)
    last = torch.load(run / "last.pt", weights_only=True)
    assert best["train_config"]["seed"] == last["train_config"]["seed"] == winner, "both checkpoints of one run"
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1], f"metrics.jsonl of one run, not interleaved: {epochs}"

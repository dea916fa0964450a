r"""Part A hyperparameter sweep: a W&B sweep config, run on W&B or locally with Optuna, then reported.

    python experiments/partA_sweep.py                                   # demo set + demo sweep, local
    python experiments/partA_sweep.py --config experiments/configs/partA_sweep.yaml \
        --data-dir data/inaturalist_12K --count 40 --name partA-inat     # the real sweep
    python experiments/partA_sweep.py --config experiments/configs/partA_sweep.yaml --download --workers 2
    python experiments/partA_sweep.py --backend wandb --config experiments/configs/partA_sweep.yaml \
        --data-dir data/inaturalist_12K                                  # W&B's controller (needs wandb login)

Backends: ``local`` (Optuna on runs/<name>/optuna.db or --storage URL, --workers processes), ``wandb`` (W&B's
controller and agent; docs/wandb.md), ``auto`` = wandb when W&B credentials exist. Rerunning the same command
continues the sweep (--count is the total); more machines: the same command with --storage
postgresql://user@host:5432/db (docs/scaling.md). Writes runs/<name>/: results.csv, best.pt, best_config.yaml,
figures, report.html and trials/<number>-<hash>/ (one run folder per trial).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from core.cli import configure_logging, run_script
from core.partA import PartAConfig
from core.reports import fmt, label, ranked, trial_config
from core.runfiles import masked_argv
from core.sweep import (
    SWEEP_BACKENDS,
    SweepConfig,
    SweepSettings,
    SweepSummary,
    load_sweep_config,
    partA_program,
    run_sweep,
)
from core.train import MONITORS
from experiments.flags import add_tracking_flags

log = logging.getLogger("partA_sweep")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEMO_CONFIG = CONFIG_DIR / "partA_demo.yaml"
TOP_N = 5
TRIAL_PROGRAMS = ("partA_train.py", "partB_finetune.py")  # W&B 'program' -> the in-process trial program


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--config", type=Path, default=DEMO_CONFIG,
                       help=f"W&B sweep YAML (method, metric, parameters, early_terminate, run_cap); "
                            f"default {DEMO_CONFIG.relative_to(CONFIG_DIR.parent.parent)}")
    sweep.add_argument("--name", default=None,
                       help="sweep name = folder runs/<name>/ = Optuna study = W&B group (default: the config's "
                            "name, else its file name)")
    sweep.add_argument("--count", type=int, default=None,
                       help="local: total trials in the sweep, across restarts and workers (default run_cap; "
                            "a grid stops when exhausted); wandb: runs this agent does")
    sweep.add_argument("--backend", default="auto", choices=("auto", *SWEEP_BACKENDS),
                       help="auto = wandb with W&B credentials, else local (Optuna)")
    sweep.add_argument("--resume", nargs="?", const="", default=None, metavar="SWEEP",
                       help="local: require an existing sweep of this --name (rerunning continues anyway); "
                            "wandb: join sweep SWEEP (entity/project/id) as one more agent")
    sweep.add_argument("--storage", default=None,
                       help="local: Optuna storage shared by processes and machines, e.g. "
                            "postgresql://user@host:5432/db (password from PGPASSWORD or ~/.pgpass; needs "
                            "pip install -e '.[postgres]'); default sqlite:///runs/<name>/optuna.db")
    sweep.add_argument("--workers", type=int, default=1,
                       help="local: worker processes on one storage (one GPU each: see docs/scaling.md)")
    sweep.add_argument("--seed", type=int, default=0,
                       help="seed of the search: trial n's draw depends on it and n only (grid order, random/TPE)")
    sweep.add_argument("--max-consecutive-failures", type=int, default=3, metavar="N",
                       help="local: stop the sweep when N trials in a row fail (0 = never)")
    sweep.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                       help="local: a failed trial uses up its slot instead of being retried by the next run")
    data = parser.add_argument_group("data and device")
    data.add_argument("--data-dir", type=Path, default=None,
                      help="iNaturalist-style root with train/ and val/ (default: the generated demo set)")
    data.add_argument("--download", action="store_true",
                      help="download iNaturalist-12K (~3.6 GB, resumable) into --data-dir or the cache first")
    data.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    data.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: chosen per device)")
    out = parser.add_argument_group("outputs and tracking")
    out.add_argument("--out-dir", type=Path, default=Path("runs"), help="parent folder of runs/<name>/")
    add_tracking_flags(out)  # each trial's W&B run
    out.add_argument("--project", default="inat-cnn", help="W&B project (the config's 'project' wins)")
    out.add_argument("--verbose", action="store_true",
                     help="every log line on the terminal too (default: warnings and one line per trial; the rest "
                          "goes to each trial's trial.log)")
    out.add_argument("--quiet", action="store_true", help="log warnings only (no line per trial)")
    return parser


def resolve_data_dir(args: argparse.Namespace) -> Path | None:
    if args.download:
        from core.data import resolve_dataset

        return resolve_dataset(args.data_dir, download=True)
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise FileNotFoundError(f"--data-dir {args.data_dir} does not exist; pass the folder holding train/ and val/ "
                                f"or add --download")
    return args.data_dir


def make_program(cfg: SweepConfig, data_dir: Path | None, device: str, num_workers: int | None):
    """The trial program for the config's ``program``: Part A by default, Part B for partB_finetune.py.

    W&B's ``program`` names the training script a sweep runs; here it picks the in-process trial
    program, so ``experiments/configs/partB_sweep.yaml`` runs through the same machinery.
    """
    program = Path(cfg.raw.get("program") or "partA_train.py").name
    if program not in TRIAL_PROGRAMS:
        raise ValueError(f"program {cfg.raw.get('program')!r} has no trial program; expected one of "
                         f"{sorted(TRIAL_PROGRAMS)} (or no 'program' for Part A)")
    if program == "partB_finetune.py":
        from core.finetune import PartBConfig
        from core.sweep import partB_program

        base = PartBConfig()  # image size and epochs: per trial, as partB_finetune.py's defaults for the device
        data = replace(base.data, data_dir=data_dir, device=device, num_workers=num_workers)
        return partB_program(replace(base, data=data, train=replace(base.train, device=device)), device_defaults=True)
    flat: dict = {"data_dir": data_dir, "device": device}
    if num_workers is not None:
        flat["num_workers"] = num_workers
    return partA_program(PartAConfig.from_flat(flat))


def sweep_name(args: argparse.Namespace, cfg: SweepConfig) -> str:
    return args.name or cfg.name or args.config.stem


def print_summary(summary: SweepSummary, cfg: SweepConfig, data_dir: Path | None = None) -> None:
    metric = cfg.metric.name
    print(f"\nSweep {summary.name}: backend {summary.backend} ({summary.backend_reason})")
    done = ranked(summary.records, cfg)
    print(f"{len(summary.records)} trials, {len(done)} with a {metric}")
    if done:
        names = [p.name for p in cfg.searched]
        header = ["#", metric, *names, "parameters", "state"]
        rows = [[str(r.number), fmt(r.objective), *[label(r.hyperparameters.get(n)) for n in names],
                 f"{r.result.parameter_count:,}" if r.result and r.result.parameter_count else "",
                 r.state.lower()] for r in done[:TOP_N]]
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
        print(f"\nTop {len(rows)} runs by {metric} ({cfg.metric.goal}):")
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    if summary.best is not None:
        b = summary.best
        print(f"\nBest configuration (trial {b.number}, {metric} = {fmt(b.objective)}):")
        for k, v in b.hyperparameters.items():
            print(f"  {k}: {label(v)}")
    print("\nOutputs:")
    for what, path in summary.outputs.items():
        print(f"  {what:<26} {path}")
    if summary.note:
        print(f"\nNote: {summary.note}")
    if summary.sweep_path:
        print(f"\nW&B sweep: {summary.sweep_path}\nAdd agents on other machines with:\n  {summary.agent_command}")
    offline = sorted(Path(summary.sweep_dir).glob("trials/*/wandb/offline-run-*"))
    if offline:
        print(f"\nW&B: {len(offline)} offline run(s); upload them all with:\n  wandb sync "
              f"{shlex.quote(str(summary.sweep_dir))}/trials/*/wandb/offline-run-*")
    if summary.best is not None and "best.pt" in summary.outputs:
        print_next(summary, data_dir, part_a=cfg.raw.get("program") in (None, "partA_train.py"))


def print_next(summary: SweepSummary, data_dir: Path | None, *, part_a: bool) -> None:
    """The best trial's folder and test accuracy, and the commands that take it further, ready to paste."""
    b, sweep_dir = summary.best, shlex.quote(str(summary.sweep_dir))
    test = b.metrics.get("test_acc")
    folder = Path(os.path.relpath(b.run_dir)) if b.run_dir and Path(b.run_dir).is_relative_to(Path.cwd()) else b.run_dir
    rule = MONITORS.get(trial_config(b, "train").get("monitor"))
    rule = f": {rule} (its --monitor)" if rule else ""
    test = "n/a" if test is None else f"{test:.1%}"
    print(f"\nBest trial {b.number}: {folder}\n  {summary.outputs['best.pt']} is its checkpoint{rule}; test accuracy "
          f"{test} (val/, never used for selection)")
    data = f" --data-dir {shlex.quote(str(data_dir))}" if data_dir is not None else ""
    onnx = f"{sweep_dir}/model.onnx"
    print("\nNext:")
    print(f"  python experiments/partA_evaluate.py --checkpoint {sweep_dir}/best.pt{data}")
    if part_a:
        print(f"  python experiments/partB_finetune.py --arch mobilenet_v2 --compare --partA-run {sweep_dir}{data}"
              f"   # ImageNet weights: downloaded once, or --weights-file FILE")
    print(f"  python export/to_onnx.py --checkpoint {sweep_dir}/best.pt --out {onnx}")
    print(f"  python export/infer.py {onnx} IMAGE_OR_FOLDER")


def resume_hint(argv: list[str]) -> str:
    """The command that continues this sweep (password masked: it comes from the environment then)."""
    return " ".join(["python experiments/partA_sweep.py", *masked_argv(argv)])


def main(argv: list[str] | None = None) -> int:
    given = list(argv) if argv is not None else sys.argv[1:]  # parsed from here: the real --storage password
    sys.argv[:] = masked_argv(sys.argv)  # what records the command line (config.yaml, W&B) sees no password
    return run_script("partA_sweep", get_args_parser(), lambda args: sweep(args, given), given)


def sweep(args: argparse.Namespace, argv: list[str]) -> int:
    """Everything after parsing; errors propagate to :func:`core.cli.run_script` (exit codes), except
    Ctrl-C, which ends with the command that resumes, and a sweep with no successful trial (exit 1)."""
    os.environ.setdefault("WANDB_SILENT", "true")  # our log says where each offline W&B run is saved
    configure_logging(logging.WARNING if args.quiet else logging.INFO,
                      "%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S",
                      terminal=None if args.verbose else logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our log lines say which trial runs what
    cfg = load_sweep_config(args.config)
    data_dir = resolve_data_dir(args)
    program = make_program(cfg, data_dir, args.device, args.num_workers)
    settings = SweepSettings(name=sweep_name(args, cfg), out_dir=args.out_dir, backend=args.backend,
                             count=args.count, storage=args.storage, workers=args.workers, resume=args.resume,
                             tracker_mode=args.wandb_mode, project=cfg.project or args.project,
                             entity=cfg.entity, seed=args.seed, retry_failed=args.retry_failed,
                             max_consecutive_failures=args.max_consecutive_failures)
    try:
        summary = run_sweep(cfg, settings, program, argv=argv)
    except KeyboardInterrupt:
        print(f"partA_sweep: interrupted; finished trials are kept and the interrupted ones run again. Resume "
              f"with: {resume_hint(argv)}", file=sys.stderr)
        return 130
    if summary.failure:
        if summary.best is not None:
            print_summary(summary, cfg, data_dir)
        print(f"partA_sweep: error: {summary.failure}", file=sys.stderr)
        return 1
    print_summary(summary, cfg, data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

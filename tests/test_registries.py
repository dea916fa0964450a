"""The seams people extend are registries: a new optimizer, scheduler, fine-tuning strategy, augmentation policy
or sweep backend is a function (or class) and one registration line in the user's own module — here, this test
module — and then runs through the real sweep YAML, trainer and Part B run, with no edit to ``core/``.

The registration lines run in a fixture, which takes the names out again afterwards: other test modules see the
shipped registries only.
"""

from __future__ import annotations

import csv
import itertools

import pytest
import torch
import yaml
from torch import nn

from core.data import AUGMENT_POLICIES, DataConfig, register_augment_policy
from core.data.augment_policies import policy_ops
from core.finetune import STRATEGIES, HeadOnly, PartBConfig, make_strategy, register_strategy, run_partB
from core.partA import PartAConfig
from core.reports import TrialRecord
from core.sweep import (
    SWEEP_BACKENDS,
    BackendRun,
    SweepBackend,
    SweepSettings,
    TrialProgram,
    TrialRequest,
    execute_trial,
    get_backend,
    load_sweep_config,
    partA_program,
    register_backend,
    run_sweep,
)
from core.train import OPTIMIZERS, SCHEDULERS, LRSchedule, TrainConfig, register_optimizer, register_scheduler

BUILT: list[str] = []  # what the registered factories built, in order
LRS: list[float] = []  # the learning rate each plain-sgd optimizer was built with


def plain_sgd(groups, *, lr, weight_decay, **_):
    BUILT.append("plain-sgd")
    LRS.append(lr)
    return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay)


def halving(schedule, step):
    return 0.5 ** (step // schedule.steps_per_epoch)


def head_bn_eval(options, common):
    BUILT.append("head-bn-eval")
    return HeadOnly(**{**common, "bn_eval": True})


def flip_twice():
    from torchvision.transforms import v2

    return [v2.RandomHorizontalFlip(p=1.0), v2.RandomHorizontalFlip(p=1.0)]


class InlineBackend(SweepBackend):
    """Every grid point once, in this process, in order. ``count``: the first ``count`` points; no ``resume``."""

    def run(self, cfg, settings, program, *, argv=None) -> BackendRun:
        records = []
        points = [dict(zip([p.name for p in cfg.parameters], combo))
                  for combo in itertools.product(*[p.grid_values() for p in cfg.parameters])]
        for number, values in enumerate(points[:settings.count]):
            request = TrialRequest(number=number, values=values, run_dir=settings.trials_dir / str(number),
                                   name=f"{settings.name}-{number}", group=settings.name, tracker_mode="disabled")
            result = execute_trial(program, request)
            records.append(TrialRecord(number=number, state="COMPLETE", hyperparameters=values,
                                       objective=result.metrics()[cfg.metric.name], result=result,
                                       run_dir=request.run_dir))
        return BackendRun(records=tuple(records))

    def notes(self, cfg):
        return ["every grid point, in order, in this process"]


@pytest.fixture(autouse=True)
def registered():
    """The one line each seam needs, as a user's module would run it at import."""
    register_optimizer("plain-sgd")(plain_sgd)
    register_scheduler("halving")(halving)
    register_strategy("head-bn-eval")(head_bn_eval)
    register_augment_policy("flip-twice")(flip_twice)
    register_backend("inline")(InlineBackend)
    yield
    for table, name in [(OPTIMIZERS, "plain-sgd"), (SCHEDULERS, "halving"), (STRATEGIES, "head-bn-eval"),
                        (AUGMENT_POLICIES, "flip-twice"), (SWEEP_BACKENDS, "inline")]:
        del table[name]


def _sweep_yaml(tmp_path, parameters: dict, method: str = "grid") -> object:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"method": method, "metric": {"name": "val_acc", "goal": "maximize"},
                                    "parameters": {"epochs": {"value": 1}, **parameters}}))
    return load_sweep_config(path)


def _base(data_dir) -> PartAConfig:
    return PartAConfig.from_flat({"data_dir": data_dir, "device": "cpu", "image_size": 32, "batch_size": 16,
                                  "filters": 4, "dense_units": 8})


def test_every_seam_is_a_registry_with_the_shipped_names():
    assert {"adam", "adamw", "sgd", "nadam", "plain-sgd"} <= set(OPTIMIZERS)
    assert {"constant", "cosine", "onecycle", "step", "plateau", "halving"} <= set(SCHEDULERS)
    assert {"head", "top-k", "full", "gradual", "lp-ft", "layer-decay", "head-bn-eval"} <= set(STRATEGIES)
    assert {"none", "trivialaugment", "randaugment", "flip-twice"} <= set(AUGMENT_POLICIES)
    assert {"local", "wandb", "inline"} <= set(SWEEP_BACKENDS)
    with pytest.raises(ValueError, match=r"unknown backend 'cloud'; expected one of \['auto', .*'inline'"):
        get_backend("cloud")
    with pytest.raises(ValueError, match="already registered"):
        register_optimizer("adam")(plain_sgd)


def test_a_registered_scheduler_and_augment_policy_are_used_by_name():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = LRSchedule(opt, "halving", epochs=3, steps_per_epoch=2)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        schedule.step()
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25], lrs
    assert TrainConfig(scheduler="halving").scheduler == "halving", "the trainer config accepts the new name"
    image = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(1, 3, 2, 4)
    ops = policy_ops("flip-twice")
    assert torch.equal(nn.Sequential(*ops)(image), image), "two flips give the image back"
    assert DataConfig(augment_policy="flip-twice").augment_policy == "flip-twice"


def test_a_registered_optimizer_runs_through_a_sweep_yaml_on_the_local_backend(tiny_imagefolder, tmp_path):
    BUILT.clear()
    LRS.clear()
    # lr as a YAML string: coerced once, by PartAConfig.from_flat, on its way from the sweep to the optimizer
    cfg = _sweep_yaml(tmp_path, {"optimizer": {"value": "plain-sgd"}, "lr": {"value": "0.0125"}}, "random")
    settings = SweepSettings(name="seam", out_dir=tmp_path / "runs", backend="local", count=1,
                             tracker_mode="disabled")
    summary = run_sweep(cfg, settings, partA_program(_base(tiny_imagefolder)))
    assert summary.failure is None, summary.failure
    assert BUILT == ["plain-sgd"], f"the trial's optimizer comes from the registered factory: {BUILT}"
    assert LRS == [0.0125], f"the sweep's lr reaches the optimizer as a float, unchanged: {LRS}"
    rows = list(csv.DictReader((tmp_path / "runs" / "seam" / "results.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE"], rows


def test_a_registered_backend_runs_a_sweep_yaml(tmp_path):
    cfg = _sweep_yaml(tmp_path, {"act": {"values": ["relu", "gelu"]}})
    seen = []

    def run(config, run_dir, **_):  # the backend's contract holds for any trial program, not only the trainer's
        seen.append(config)
        from core.train import RunResult
        return RunResult(best_val_acc=0.5 if config["act"] == "relu" else 0.75, best_epoch=1,
                         history=({"epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "train_loss": 1.0, "train_acc": 0.5},))

    settings = SweepSettings(name="inline", out_dir=tmp_path / "runs", backend="inline", count=2,
                             tracker_mode="disabled")
    summary = run_sweep(cfg, settings, TrialProgram(configure=dict, run=run))
    assert summary.backend == "inline" and [v["act"] for v in seen] == ["relu", "gelu"], seen
    assert summary.best is not None and summary.best.hyperparameters["act"] == "gelu", summary.best
    report = (tmp_path / "runs" / "inline" / "report.html").read_text()
    assert "every grid point, in order, in this process" in report, "the backend's notes reach the report"


def test_a_registered_strategy_runs_a_part_b_run(tiny_imagefolder, tmp_path):
    BUILT.clear()
    assert make_strategy("head-bn-eval").bn_eval is True
    cfg = PartBConfig(arch="mobilenet_v2", weights=None, image_size=32, strategy="head-bn-eval",
                      data=DataConfig(data_dir=tiny_imagefolder, batch_size=16, normalization="imagenet"),
                      train=TrainConfig(epochs=1, lr=3e-3, device="cpu"))
    run = run_partB(cfg, tmp_path / "partB", tracker_mode="disabled")
    assert "head-bn-eval" in BUILT, BUILT
    assert run.result.epochs_run == 1 and run.trainable_params == 1280 * 3 + 3, run

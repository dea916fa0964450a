"""The shipped sweep YAMLs against W&B's own sweep engine (``sweeps``, W&B's open-source controller code).

The oracle is W&B's code: its JSON schema (``sweeps.config.SweepConfig`` validates with it) and its
random search, which must draw a value for every searched key of every shipped config. ``sweeps``
pins ``numpy<2``, so it is not a dependency; CI installs it with ``pip install --no-deps sweeps jsonref``
(its schema and random search need neither numpy 1.x nor scikit-learn). Without it those tests skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.finetune import PARTB_FLAT_KEYS
from core.partA import FLAT_KEYS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml"))


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_use_flat_keys_the_trainer_speaks(path):
    raw = _raw(path)
    nested = sorted(k for k, v in raw["parameters"].items() if isinstance(v, dict) and "parameters" in v)
    assert not nested, f"{path.name}: nested parameter groups {nested}; W&B's open-source engine skips them"
    known = PARTB_FLAT_KEYS if "partB" in (raw.get("program") or "") else FLAT_KEYS
    unknown = sorted(set(raw["parameters"]) - set(known))
    assert not unknown, f"{path.name}: keys {unknown} are not trainer keys {sorted(known)}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_wandb_sweep_engine_accepts_and_draws_every_key(path):
    pytest.importorskip("sweeps", reason="W&B's sweep engine: pip install --no-deps sweeps jsonref")
    from sweeps.config import SweepConfig
    from sweeps.random_search import random_search_next_runs

    raw = _raw(path)
    config = SweepConfig(raw)  # raises jsonschema.ValidationError on anything W&B's schema refuses
    searched = {k for k, v in raw["parameters"].items() if "value" not in v}
    for _ in range(5):
        drawn = random_search_next_runs(SweepConfig({**raw, "method": "random"}))[0].config
        assert searched <= set(drawn), f"{path.name}: W&B's random search drew no {sorted(searched - set(drawn))}"
    assert dict(config)["parameters"].keys() == raw["parameters"].keys()


def test_wandb_sweep_engine_skips_a_nested_group():
    """Why the shipped files are flat: W&B's engine draws nothing inside a nested ``parameters`` group."""
    pytest.importorskip("sweeps", reason="W&B's sweep engine: pip install --no-deps sweeps jsonref")
    from sweeps.config import SweepConfig
    from sweeps.random_search import random_search_next_runs

    raw = {"method": "random", "parameters": {"filters": {"values": [8, 16]},
                                              "optimizer": {"parameters": {"lr": {"min": 0.001, "max": 0.1}}}}}
    drawn = random_search_next_runs(SweepConfig(raw))[0].config
    assert "filters" in drawn and "optimizer" not in drawn and "lr" not in drawn, drawn

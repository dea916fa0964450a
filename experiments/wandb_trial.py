"""One W&B sweep run: the program W&B's agent starts for each run of a ``--backend wandb`` sweep.

Not run by hand: ``python experiments/partA_sweep.py --backend wandb`` registers the sweep with this
program and starts W&B's agent, which runs ``python -m experiments.wandb_trial`` once per run (see
core/sweep/backends/wandb/agent.py and docs/wandb.md). Exit status: 0 = the run finished or was stopped by
W&B (its best epoch is recorded), 1 = it failed, 2 = not started by our agent.
"""

from __future__ import annotations

import argparse
import signal
import sys

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    # a stop can come while torch and wandb are still importing: note it now, act on it once the trial runs
    early: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: early.append(signum)) for s in STOP_SIGNALS}
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    import logging

    try:
        from core.cli import configure_logging
        from core.sweep.backends.wandb import run_agent_trial
        from core.train import StopRequest
    except ModuleNotFoundError as exc:  # W&B's agent found another `python` than the project's
        print(f"wandb_trial: error: {sys.executable} cannot import {exc.name!r}: W&B's agent started the `python` "
              "first on its PATH, not the interpreter this project is installed in; start agents with that "
              "interpreter: /path/to/python experiments/partA_sweep.py --backend wandb --resume ENTITY/PROJECT/ID "
              "(docs/wandb.md)", file=sys.stderr)
        return 2

    configure_logging(logging.INFO, "%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    stop = StopRequest()
    try:
        with stop.on_signals(STOP_SIGNALS):
            for signum in early:
                stop.request(signal.Signals(signum).name)
            run_agent_trial(stop=stop)
    except ValueError as exc:  # not started by our agent, or a sweep/--config mismatch
        print(f"wandb_trial: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the trial failed: trial.json says FAIL with the error; W&B marks the run failed
        logging.getLogger("wandb_trial").error("trial failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())

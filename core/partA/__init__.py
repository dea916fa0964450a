"""One Part A run (CNN from scratch), composed: its config (nested dataclasses and the flat keys sweeps speak) and ``run_partA``."""

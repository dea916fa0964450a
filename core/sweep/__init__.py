"""Hyperparameter sweeps in W&B's sweep format: config parsing, the local (Optuna) and wandb backends, Part A and Part B trials, results, analysis, figures and report."""

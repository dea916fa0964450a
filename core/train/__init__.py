"""The training loop and everything it owns: config, epochs, fit, checkpoints, optimisers and schedules, RNG state, devices, CPU memory policy, W&B tracking."""

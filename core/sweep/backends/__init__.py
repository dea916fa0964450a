"""Sweep backends, each in its own subpackage, registered by name in :data:`core.sweep.backend.SWEEP_BACKENDS`."""

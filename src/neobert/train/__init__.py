"""Pre-training: typed configuration, optimiser and schedule, checkpoints, distributed helpers, metrics."""

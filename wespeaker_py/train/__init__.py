"""Training: the loop (trainer), schedules, checkpoints, averaging and DDP helpers."""

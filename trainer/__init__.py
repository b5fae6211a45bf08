"""Helium's trainer: TinyStories preparation, the training loop, checkpoints and resume."""

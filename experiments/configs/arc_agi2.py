"""ARC-AGI-2 run with the reference hyperparameters (TRM_REFERENCE.md §6)."""

from experiments.configs import arc_agi


def get_config():
  return arc_agi.get_config('2')

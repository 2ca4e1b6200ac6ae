"""Sudoku-Extreme TRM-Att with the reference hyperparameters (TRM_REFERENCE.md §6)."""

from experiments.configs import sudoku_extreme


def get_config():
  return sudoku_extreme.get_config('att')

"""Sudoku-Extreme as a TFDS builder (TRM_REFERENCE.md §2, §7)."""

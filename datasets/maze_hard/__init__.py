"""Maze-Hard (30x30) as a TFDS builder, and the project's own maze generator."""

"""TFDS builder for Maze-Hard 30x30 (TRM_REFERENCE.md §2, §7), numpy-only (no TensorFlow).

Configs:
  hub:       `sapientinc/maze-30x30-hard-1k` train.csv / test.csv (1,000 each).
  generated: the project's own generator (`generator.py`), seeded, 1,000 train / 1,000
             test mazes, no maze shared between the splits.
"""

import os
from typing import Iterator

from absl import logging
import tensorflow_datasets as tfds

from datasets import builder_common
from datasets.maze_hard import generator
from datasets.maze_hard import grid
from datasets.maze_hard import validation
from datasets.sudoku_extreme import hub_csv

HUB_URL = 'https://huggingface.co/datasets/sapientinc/maze-30x30-hard-1k/resolve/main/{split}.csv'
SPLITS = ('train', 'test')
GENERATED_SIZES = {'train': 1000, 'test': 1000}
GENERATED_SEEDS = {'train': 0, 'test': 1}

_MANUAL_INSTRUCTIONS = """\
Put `train.csv` and `test.csv` of the hub data set `sapientinc/maze-30x30-hard-1k`
(columns source,question,answer,rating) in the manual directory, or build without one to
download them from the Hugging Face hub. The `generated` config needs no files.
"""


class MazeHard(builder_common.LocalCodePath, tfds.core.GeneratorBasedBuilder):
  """30x30 mazes as 900 tokens, row-major; the label marks the shortest path."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_INSTRUCTIONS
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='hub', description='sapientinc/maze-30x30-hard-1k.'),
      tfds.core.BuilderConfig(
          name='generated', description='Seeded mazes of datasets/maze_hard/generator.py.'),
  ]
  DEFAULT_CONFIG_NAME = 'hub'

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=('Maze-Hard. inputs: maze tokens (# 1, space 2, S 3, G 4); labels: the '
                     'input with the shortest S-G path marked o (5).'),
        features=builder_common.grid_puzzle_features(grid.NUM_CELLS),
        homepage='https://huggingface.co/datasets/sapientinc/maze-30x30-hard-1k',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    if self.builder_config.name == 'generated':
      mazes = generate_splits(GENERATED_SIZES)
      return {s: self._generate_examples(None, mazes[s]) for s in SPLITS}
    try:
      directory = os.fspath(dl_manager.manual_dir)
      paths = {s: os.path.join(directory, f'{s}.csv') for s in SPLITS}
      for path in paths.values():
        if not os.path.isfile(path):
          raise FileNotFoundError(f'Maze-Hard: expected the file {path}.')
    except AssertionError:
      logging.info('No manual directory: downloading %s', HUB_URL)
      paths = {s: os.fspath(p) for s, p in
               dl_manager.download({s: HUB_URL.format(split=s) for s in SPLITS}).items()}
    return {s: self._generate_examples(paths[s], None) for s in SPLITS}

  def _generate_examples(self, path: str | None,
                         mazes: list[generator.Maze] | None) -> Iterator[tuple[int, dict]]:
    if path is not None:
      yield from generate_hub_examples(path)
    else:
      yield from generated_examples(mazes, self.builder_config.name)


def generate_hub_examples(path: str) -> Iterator[tuple[int, dict]]:
  """Yields `(line, example)` for every validated row of a hub CSV file."""
  for row in hub_csv.read_hub_csv(path):
    inputs, labels = validation.parse_row(row)
    yield row.line, {'inputs': inputs, 'labels': labels, 'rating': row.rating,
                     'source': row.source}


def generate_splits(sizes: dict[str, int]) -> dict[str, list[generator.Maze]]:
  """Generated mazes per split (seeds `GENERATED_SEEDS`); test excludes every train maze."""
  train = list(generator.generate(sizes['train'], GENERATED_SEEDS['train']))
  test = list(generator.generate(sizes['test'], GENERATED_SEEDS['test'],
                                 exclude=frozenset(m.question for m in train)))
  return {'train': train, 'test': test}


def generated_examples(mazes: list[generator.Maze],
                       source: str) -> Iterator[tuple[int, dict]]:
  """Yields `(index, example)`; `rating` is the shortest path's number of steps."""
  for index, maze in enumerate(mazes):
    yield index, {'inputs': grid.to_tokens(maze.question),
                  'labels': grid.to_tokens(maze.answer),
                  'rating': maze.path_steps, 'source': source}

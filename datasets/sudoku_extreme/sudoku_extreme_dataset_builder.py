"""TFDS builder for Sudoku-Extreme (TRM_REFERENCE.md §2, §7), numpy-only (no TensorFlow).

Configs:
  full:   every row of train.csv / test.csv.
  1k:     1,000 train puzzles drawn without replacement with a fixed seed (the reference
          trains on 1,000 puzzles; its draw is unseeded), test = all of test.csv.
  sample: the small committed demo set in `sample/` (easy puzzles: a few blanks each).
"""

import os
from typing import Iterator

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from datasets import builder_common
from datasets.sudoku_extreme import hub_csv
from datasets.sudoku_extreme import validation

HUB_URL = 'https://huggingface.co/datasets/sapientinc/sudoku-extreme/resolve/main/{split}.csv'
SAMPLE_DIR = os.path.join(os.path.dirname(__file__), 'sample')
SUBSAMPLE_SIZE = 1000
SUBSAMPLE_SEED = 0
SPLITS = ('train', 'test')

_MANUAL_INSTRUCTIONS = """\
Put `train.csv` and `test.csv` of the hub data set `sapientinc/sudoku-extreme` (columns
source,question,answer,rating) in the manual directory, or build without one to download
them from the Hugging Face hub.
"""


class SudokuExtreme(builder_common.LocalCodePath, tfds.core.GeneratorBasedBuilder):
  """Sudoku puzzles as 81 tokens per grid, row-major."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_INSTRUCTIONS
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='full', description='All rows of train.csv / test.csv.'),
      tfds.core.BuilderConfig(
          name='1k', description=f'{SUBSAMPLE_SIZE} train puzzles (seed {SUBSAMPLE_SEED}); '
          'all test puzzles.'),
      tfds.core.BuilderConfig(
          name='sample', description='Committed easy demo set (a few blanks per solved grid); '
          'not Sudoku-Extreme.'),
  ]
  DEFAULT_CONFIG_NAME = '1k'

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=('Sudoku-Extreme puzzles. inputs: question tokens (blank = 1, digit d = '
                     'd + 1); labels: solution tokens.'),
        features=builder_common.grid_puzzle_features(validation.NUM_CELLS),
        homepage='https://huggingface.co/datasets/sapientinc/sudoku-extreme',
    )

  def _csv_paths(self, dl_manager: tfds.download.DownloadManager) -> dict[str, str]:
    if self.builder_config.name == 'sample':
      directory = SAMPLE_DIR
    else:
      try:
        directory = os.fspath(dl_manager.manual_dir)
      except AssertionError:
        logging.info('No manual directory: downloading %s', HUB_URL)
        paths = dl_manager.download({s: HUB_URL.format(split=s) for s in SPLITS})
        return {s: os.fspath(p) for s, p in paths.items()}
    paths = {s: os.path.join(directory, f'{s}.csv') for s in SPLITS}
    for path in paths.values():
      if not os.path.isfile(path):
        raise FileNotFoundError(f'Sudoku-Extreme: expected the file {path}.')
    return paths

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    paths = self._csv_paths(dl_manager)
    subsample = SUBSAMPLE_SIZE if self.builder_config.name == '1k' else None
    return {
        'train': self._generate_examples(paths['train'], subsample),
        'test': self._generate_examples(paths['test'], None),
    }

  def _generate_examples(self, path: str, subsample: int | None) -> Iterator[tuple[int, dict]]:
    yield from generate_examples(path, subsample)


def subsample_indices(num_rows: int, size: int, seed: int = SUBSAMPLE_SEED) -> np.ndarray:
  """Sorted row indices of the fixed-seed subsample `[min(size, num_rows)]`."""
  if size >= num_rows:
    return np.arange(num_rows)
  return np.sort(np.random.default_rng(seed).choice(num_rows, size=size, replace=False))


def generate_examples(path: str, subsample: int | None) -> Iterator[tuple[int, dict]]:
  """Yields `(line, example)` for the rows of `path` (a fixed-seed subsample if given)."""
  selected = None
  if subsample is not None:
    selected = set(subsample_indices(hub_csv.count_rows(path), subsample).tolist())
  for index, row in enumerate(hub_csv.read_hub_csv(path)):
    if selected is not None and index not in selected:
      continue
    inputs, labels = validation.parse_row(row)
    yield row.line, {'inputs': inputs, 'labels': labels, 'rating': row.rating,
                     'source': row.source}

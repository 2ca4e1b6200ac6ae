"""Training-iterator throughput of the input pipeline (examples/s on this host).

  python -m experiments.benchmark_pipeline --task=sudoku
  python -m experiments.benchmark_pipeline --task=arc --arc_dir=DIR_WITH_KAGGLE_JSON

Sudoku: 1,000 puzzles x 1,000 on-the-fly augmentations (synthetic tokens: the cost does
not depend on the digits). ARC: the ARC-AGI-1 run's tasks (training + evaluation +
concept, read from the Kaggle JSON files in --arc_dir) with 1,000 versions each; with
--arc_dir empty, synthetic tasks of realistic sizes are used instead.
"""

import dataclasses
import json
import os
import time

from absl import flags
import numpy as np

from experiments import cli
from tiny_recursive.data import packing
from tiny_recursive.data import puzzle_sources

_TASK = flags.DEFINE_enum('task', 'sudoku', ['sudoku', 'arc'], 'Data set to benchmark.')
_BATCH = flags.DEFINE_integer('global_batch_size', 768, 'Global batch size.')
_STEPS = flags.DEFINE_integer('steps', 200, 'Batches to time (after 5 warm-up batches).')
_PREFETCH = flags.DEFINE_integer('prefetch_buffer_size', 4, 'Prefetch buffer (0: none).')
_NUM_AUG = flags.DEFINE_integer('num_augmentations', 1000, 'Augmented versions per puzzle.')
_ARC_DIR = flags.DEFINE_string('arc_dir', '',
                               'Kaggle-layout ARC JSON folder; empty: synthetic tasks.')


@dataclasses.dataclass(frozen=True)
class _Task:
  task_id: str
  subset: str
  pairs: tuple


def _grid(g):
  return np.asarray(g, np.uint8)


def _arc_tasks_from_json(folder):
  """ARC-AGI-1 run split (§7): every train pair to training; evaluation test pairs to test."""
  train, test = [], []
  for subset in ('concept', 'evaluation', 'training'):
    with open(os.path.join(folder, f'arc-agi_{subset}_challenges.json')) as f:
      challenges = json.load(f)
    with open(os.path.join(folder, f'arc-agi_{subset}_solutions.json')) as f:
      solutions = json.load(f)
    for task_id in sorted(challenges):
      task = challenges[task_id]
      pairs = [(_grid(p['input']), _grid(p['output'])) for p in task['train']]
      tests = [(_grid(p['input']), _grid(s)) for p, s in zip(task['test'], solutions[task_id])]
      if subset == 'evaluation':
        test.append(_Task(task_id, subset, tuple(tests)))
      else:
        pairs += tests
      train.append(_Task(task_id, subset, tuple(pairs)))
  return train, test


def _synthetic_arc_tasks(num_tasks=960, seed=0):
  rng = np.random.default_rng(seed)
  train, test = [], []
  for t in range(num_tasks):
    shape = rng.integers(3, 31, 2)
    def grid():
      return rng.integers(0, 10, shape).astype(np.uint8)
    subset = 'evaluation' if t < 400 else 'training'
    train.append(_Task(f'{t:05d}', subset, tuple((grid(), grid()) for _ in range(
        rng.integers(2, 6)))))
    if subset == 'evaluation':
      test.append(_Task(f'{t:05d}', subset, ((grid(), grid()),)))
  return train, test


def main(argv):
  del argv
  if _TASK.value == 'sudoku':
    rng = np.random.default_rng(0)
    labels = rng.integers(2, 11, (1000, 81)).astype(np.int32)
    inputs = np.where(rng.random((1000, 81)) < 0.7, 1, labels).astype(np.int32)
    source = puzzle_sources.SudokuTrainSource(_Split(inputs, labels), _NUM_AUG.value, seed=0)
    described = '1,000 synthetic Sudoku puzzles'
  else:
    start = time.perf_counter()
    if _ARC_DIR.value:
      train, test = _arc_tasks_from_json(_ARC_DIR.value)
      described = f'{len(train)} ARC-AGI-1 tasks from {_ARC_DIR.value}'
    else:
      train, test = _synthetic_arc_tasks()
      described = f'{len(train)} synthetic ARC tasks'
    catalog = puzzle_sources.build_arc_catalog(train, test, _NUM_AUG.value, seed=0)
    print(f'ARC catalogue: {catalog.num_identifiers} identifiers, built in '
          f'{time.perf_counter() - start:.1f} s')
    source = puzzle_sources.ArcTrainSource(train, catalog, seed=0)
  dataset = packing.train_dataset(source, _BATCH.value, seed=0,
                                   prefetch_buffer_size=_PREFETCH.value)
  iterator = iter(dataset)
  for _ in range(5):
    next(iterator)
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    next(iterator)
  elapsed = time.perf_counter() - start
  print(f'{described}: {_STEPS.value * _BATCH.value / elapsed:,.0f} examples/s '
        f'({1e3 * elapsed / _STEPS.value:.1f} ms per batch of {_BATCH.value})')


@dataclasses.dataclass(frozen=True)
class _Split:
  inputs: np.ndarray
  labels: np.ndarray


if __name__ == '__main__':
  cli.run(main)

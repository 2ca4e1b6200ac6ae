"""The data sets as NumPy arrays: the only interface the input pipeline reads data through.

The data sets are TFDS builders under `datasets/` (ArrayRecord files, read without
TensorFlow via `tfds.data_source`). Build them with

  python -m datasets.build NAME/CONFIG --data_dir=DIR [--manual_dir=DIR]

Token formats are those of TRM_REFERENCE.md §2.
"""

import dataclasses
import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

GRID_DATASETS = ('sudoku_extreme', 'maze_hard')
ARC_DATASET = 'arc_agi'


@dataclasses.dataclass(frozen=True)
class GridSplit:
  """A split of a fixed-size grid task (Sudoku, Maze)."""
  inputs: np.ndarray  # int32 [num_examples, seq_len] tokens (§2).
  labels: np.ndarray  # int32 [num_examples, seq_len] tokens.


@dataclasses.dataclass(frozen=True)
class ArcTask:
  """One ARC task with the (input, output) pairs of one split, uint8 grids `[h, w]`."""
  task_id: str
  subset: str
  pairs: tuple[tuple[np.ndarray, np.ndarray], ...]


def _data_dir(data_dir: str | None) -> str:
  if data_dir:
    return os.path.abspath(os.path.expanduser(data_dir))
  return os.fspath(tfds.core.constants.DATA_DIR)


def _build_command(name: str, builder_config: str, data_dir: str) -> str:
  return f'python -m datasets.build {name}/{builder_config} --data_dir={data_dir}'


def _prepared_dir(name: str, builder_config: str, data_dir: str) -> str | None:
  """The newest prepared version directory of `name/builder_config`, or None."""
  config_dir = os.path.join(data_dir, name, builder_config)
  versions = []
  if os.path.isdir(config_dir):
    for entry in os.listdir(config_dir):
      parts = entry.split('.')
      if (len(parts) == 3 and all(p.isdigit() for p in parts)
          and os.path.isfile(os.path.join(config_dir, entry, 'dataset_info.json'))):
        versions.append((tuple(int(p) for p in parts), entry))
  return os.path.join(config_dir, max(versions)[1]) if versions else None


def _open_split(name: str, builder_config: str, split: str, data_dir: str | None):
  """The `tfds.data_source` of one split; a clear error if it is not built."""
  directory = _data_dir(data_dir)
  prepared = _prepared_dir(name, builder_config, directory)
  if prepared is None:
    raise FileNotFoundError(
        f'Data set {name}/{builder_config} is not built in {directory}. '
        f'Build it with: {_build_command(name, builder_config, directory)} '
        '[--manual_dir=DIR with the source files for an offline build].')
  builder = tfds.builder_from_directory(prepared)
  if split not in builder.info.splits:
    raise ValueError(f'{name}/{builder_config} has no split {split!r}; it has '
                     f'{sorted(builder.info.splits)}.')
  return builder.as_data_source(split=split)


def _read_all(source) -> list[dict]:
  """All records of a data source, in storage order."""
  return list(source.__getitems__(range(len(source)))) if len(source) else []


def load_grid_split(name: str, builder_config: str, split: str,
                    data_dir: str | None) -> GridSplit:
  """Loads a Sudoku or Maze split as token arrays `[num_examples, seq_len]`.

  Raises:
    FileNotFoundError: the data set is not built (the message gives the build command).
  """
  if name not in GRID_DATASETS:
    raise ValueError(f'load_grid_split: unknown grid data set {name!r}; expected one of '
                     f'{GRID_DATASETS} (ARC is read with load_arc_split).')
  records = _read_all(_open_split(name, builder_config, split, data_dir))
  if not records:
    raise ValueError(f'{name}/{builder_config} split {split!r} is empty.')
  inputs = np.stack([r['inputs'] for r in records]).astype(np.int32)
  labels = np.stack([r['labels'] for r in records]).astype(np.int32)
  logging.info('Loaded %s/%s %s: %d examples of %d tokens', name, builder_config, split,
               inputs.shape[0], inputs.shape[1])
  return GridSplit(inputs=inputs, labels=labels)


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def load_arc_split(builder_config: str, split: str, data_dir: str | None) -> list[ArcTask]:
  """Loads an ARC split as tasks sorted by (subset, task_id).

  `train`: every task with the pairs that go to training (TRM_REFERENCE.md §7);
  `test`: the evaluation subset's tasks with their test pairs (inputs and solutions).
  """
  tasks = []
  for record in _read_all(_open_split(ARC_DATASET, builder_config, split, data_dir)):
    pairs = tuple(
        (np.array(grid_in[:hi, :wi], np.uint8), np.array(grid_out[:ho, :wo], np.uint8))
        for grid_in, grid_out, (hi, wi), (ho, wo) in zip(
            record['inputs'], record['outputs'], record['input_shapes'],
            record['output_shapes']))
    tasks.append(ArcTask(task_id=_text(record['task_id']), subset=_text(record['subset']),
                         pairs=pairs))
  tasks.sort(key=lambda t: (t.subset, t.task_id))
  logging.info('Loaded arc_agi/%s %s: %d tasks, %d pairs', builder_config, split, len(tasks),
               sum(len(t.pairs) for t in tasks))
  return tasks


def ensure_built(name: str, builder_config: str, data_dir: str | None,
                 manual_dir: str | None = None) -> None:
  """Builds `name/builder_config` into `data_dir` unless it is already there.

  The `sudoku_extreme/sample` config builds from files committed with the code; the other
  configs download their sources, or read them from `manual_dir`.
  """
  directory = _data_dir(data_dir)
  if _prepared_dir(name, builder_config, directory) is not None:
    return
  # Imported here: building needs the builder code, reading does not.
  from datasets import build  # pylint: disable=g-import-not-at-top
  logging.info('Building %s/%s into %s', name, builder_config, directory)
  build.build(name, builder_config, directory, manual_dir)

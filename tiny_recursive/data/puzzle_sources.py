"""Per-benchmark sources: how Sudoku, Maze and ARC rows become tokens (TRM_REFERENCE.md §7).

Training data is a list of groups; a group is a list of puzzles (versions: the original
and its augmentations); a puzzle is a list of (input, label) examples plus one puzzle
identifier. Versions are never stored: a version index is turned into tokens on the fly
(`augmentation`), only for the rows this process feeds. A training source maps
(group, version, example) rows to tokens (`packing` decides which rows); an evaluation
source maps test-example rows to tokens, in order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol, Sequence

from absl import logging
import numpy as np

from tiny_recursive.data import arc_encoding
from tiny_recursive.data import augmentation

Batch = dict[str, np.ndarray]

class GridSplitLike(Protocol):
  inputs: np.ndarray
  labels: np.ndarray


class ArcTaskLike(Protocol):
  task_id: str
  subset: str
  pairs: tuple[tuple[np.ndarray, np.ndarray], ...]


def task_key(task: ArcTaskLike) -> str:
  return f'{task.subset}/{task.task_id}'


# --- ARC version catalogue and identifiers --------------------------------------------


@dataclasses.dataclass(frozen=True)
class ArcCatalog:
  """Kept augmented versions and puzzle identifiers of every ARC task.

  Attributes:
    task_keys: sorted 'subset/task_id' of every task (training and evaluation).
    versions: per task, its kept versions (the identity first).
    first_identifier: int [num_tasks], identifier of each task's version 0; version v
      has identifier first_identifier + v (one identifier per task when fresh).
    num_identifiers: identifiers including the blank id 0.
    fresh: one identifier per task; training draws a new version each epoch.
  """
  task_keys: tuple[str, ...]
  versions: tuple[tuple[augmentation.ArcVersion, ...], ...]
  first_identifier: np.ndarray
  num_identifiers: int
  fresh: bool

  def index(self, key: str) -> int:
    i = int(np.searchsorted(np.asarray(self.task_keys), key))
    if i >= len(self.task_keys) or self.task_keys[i] != key:
      raise KeyError(f'ARC catalogue: unknown task {key!r}.')
    return i

  def identifiers(self, task: np.ndarray, version: np.ndarray) -> np.ndarray:
    """Identifiers int32 [N] of (task index, version index) rows."""
    first = self.first_identifier[np.asarray(task)]
    if self.fresh:
      return first.astype(np.int32)
    return (first + np.asarray(version)).astype(np.int32)


def build_arc_catalog(train_tasks: Sequence[ArcTaskLike], test_tasks: Sequence[ArcTaskLike],
                      num_augmentations: int, seed: int, fresh: bool = False) -> ArcCatalog:
  """Draws every task's versions and assigns identifiers (deterministic in seed and tasks).

  A task's distinctness check covers all its pairs, from both splits, as the reference
  hashes the whole puzzle. Identifiers follow the sorted task list, versions in order,
  starting at 1 (0 is the blank id), so a task version has the same identifier in the
  training and the test split, in every process and every run.
  """
  pairs_by_key: dict[str, list] = {}
  for task in list(train_tasks) + list(test_tasks):
    pairs_by_key.setdefault(task_key(task), []).extend(task.pairs)
  keys = tuple(sorted(pairs_by_key))
  versions = []
  short = 0
  for key in keys:
    kept = augmentation.draw_arc_versions(pairs_by_key[key], num_augmentations, seed, key)
    short += len(kept) < num_augmentations + 1
    versions.append(tuple(kept))
  counts = np.array([1 if fresh else len(v) for v in versions], np.int64)
  first = 1 + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
  num_identifiers = int(1 + counts.sum())
  logging.info('ARC catalogue: %d tasks, %d identifiers (incl. blank); %d tasks with fewer '
               'than %d distinct versions.', len(keys), num_identifiers, short,
               num_augmentations + 1)
  return ArcCatalog(task_keys=keys, versions=tuple(versions), first_identifier=first,
                    num_identifiers=num_identifiers, fresh=fresh)


# --- Training sources: (group, version, example) rows -> tokens ----------------------


class TrainSource(Protocol):
  """What the packer needs from a data set, and how rows become tokens."""
  sizes: np.ndarray  # int [num_groups]: examples per puzzle of each group.
  num_versions: np.ndarray  # int [num_groups]: versions per group.
  fresh: bool

  def materialize(self, group: np.ndarray, version: np.ndarray, example: np.ndarray) -> Batch:
    ...


class SudokuTrainSource:
  """Sudoku: one example per puzzle, identifier 0, versions = on-the-fly augmentations."""

  def __init__(self, split: GridSplitLike, num_augmentations: int, seed: int,
               fresh: bool = False):
    self.inputs = np.asarray(split.inputs, np.int32)
    self.labels = np.asarray(split.labels, np.int32)
    _check_split(self.inputs, self.labels, 'sudoku train split')
    n = self.inputs.shape[0]
    self.sizes = np.ones(n, np.int64)
    self.num_versions = np.full(n, 1 + max(num_augmentations, 0), np.int64)
    self.seed = seed
    self.fresh = fresh

  def materialize(self, group, version, example) -> Batch:
    del example  # One example per puzzle.
    # Fresh mode passes the epoch as the version; +1 keeps it off the identity.
    version = np.asarray(version) + 1 if self.fresh else version
    params = augmentation.sudoku_params(self.seed, group, version)
    return {
        'inputs': augmentation.augment_sudoku(self.inputs[group], params),
        'labels': augmentation.augment_sudoku(self.labels[group], params),
        'puzzle_identifiers': np.zeros(len(group), np.int32),
    }


class MazeTrainSource:
  """Maze: one example per puzzle, identifier 0; identity, or the 8 dihedral transforms."""

  def __init__(self, split: GridSplitLike, dihedral: bool, seed: int, fresh: bool = False):
    self.inputs = np.asarray(split.inputs, np.int32)
    self.labels = np.asarray(split.labels, np.int32)
    _check_split(self.inputs, self.labels, 'maze train split')
    self.size = math.isqrt(self.inputs.shape[1])
    if self.size * self.size != self.inputs.shape[1]:
      raise ValueError(f'maze train split: seq_len {self.inputs.shape[1]} is not square.')
    n = self.inputs.shape[0]
    self.sizes = np.ones(n, np.int64)
    self.num_versions = np.full(n, augmentation.NUM_DIHEDRAL if dihedral else 1, np.int64)
    self.dihedral = dihedral
    self.seed = seed
    self.fresh = fresh and dihedral

  def materialize(self, group, version, example) -> Batch:
    del example
    inputs, labels = self.inputs[group], self.labels[group]
    if self.dihedral:
      if self.fresh:
        bits = augmentation._random_bits(self.seed, group, version, 1, stream=9)  # pylint: disable=protected-access
        version = (bits[:, 0] % np.uint64(augmentation.NUM_DIHEDRAL)).astype(np.int64)
      inputs = augmentation.augment_dihedral(inputs, version, self.size)
      labels = augmentation.augment_dihedral(labels, version, self.size)
    return {'inputs': inputs, 'labels': labels,
            'puzzle_identifiers': np.zeros(len(group), np.int32)}


class ArcTrainSource:
  """ARC: group = task, versions = the task's kept versions, examples = its training pairs.

  Each puzzle version's examples are translated to a random offset that fits both grids,
  except one example chosen at random, fixed per (seed, task, version) as the reference
  bakes them into its data set (per (seed, task, epoch) in fresh mode).
  """

  def __init__(self, tasks: Sequence[ArcTaskLike], catalog: ArcCatalog, seed: int):
    self.tasks = list(tasks)
    self.catalog = catalog
    self.catalog_index = np.array([catalog.index(task_key(t)) for t in self.tasks], np.int64)
    self.sizes = np.array([len(t.pairs) for t in self.tasks], np.int64)
    self.num_versions = np.array([len(catalog.versions[i]) for i in self.catalog_index],
                                 np.int64)
    self.seed = seed
    self.fresh = catalog.fresh

  def _puzzle(self, group: int, version: int):
    """Transformed pairs and offsets int [n, 2] of one puzzle version."""
    key = self.catalog.task_keys[self.catalog_index[group]]
    if self.fresh:
      arc_version = augmentation.fresh_arc_version(self.seed, key, version)
    else:
      arc_version = self.catalog.versions[self.catalog_index[group]][version]
    pairs = [(arc_version.apply(i), arc_version.apply(o)) for i, o in self.tasks[group].pairs]
    rng = np.random.default_rng([self.seed, augmentation.task_seed_key(key), version, 5])
    untranslated = int(rng.integers(0, len(pairs)))
    offsets = np.zeros((len(pairs), 2), np.int64)
    for k, (i, o) in enumerate(pairs):
      if k != untranslated:
        offsets[k] = arc_encoding.random_offset(rng, i.shape, o.shape)
    return pairs, offsets

  def materialize(self, group, version, example) -> Batch:
    n = len(group)
    canvases = np.zeros((2, n, arc_encoding.CANVAS_SIZE, arc_encoding.CANVAS_SIZE), np.int32)
    cache = {}
    for row in range(n):
      g, v, k = int(group[row]), int(version[row]), int(example[row])
      if (g, v) not in cache:
        cache[(g, v)] = self._puzzle(g, v)
      pairs, offsets = cache[(g, v)]
      offset = (int(offsets[k, 0]), int(offsets[k, 1]))
      arc_encoding.write_grid(canvases[0, row], pairs[k][0], offset)
      arc_encoding.write_grid(canvases[1, row], pairs[k][1], offset)
    return {
        'inputs': canvases[0].reshape(n, arc_encoding.SEQ_LEN),
        'labels': canvases[1].reshape(n, arc_encoding.SEQ_LEN),
        'puzzle_identifiers': self.catalog.identifiers(
            self.catalog_index[np.asarray(group, np.int64)],
            np.zeros(n, np.int64) if self.fresh else version),
    }


def _check_split(inputs: np.ndarray, labels: np.ndarray, where: str) -> None:
  if inputs.ndim != 2 or inputs.shape != labels.shape:
    raise ValueError(f'{where}: inputs {inputs.shape} and labels {labels.shape} must be '
                     'equal 2-D shapes [num_examples, seq_len].')
  if inputs.shape[0] == 0:
    raise ValueError(f'{where}: no examples.')


# --- Evaluation sources -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ArcEvalSpec:
  """The evaluation tasks, as the eval pipeline enumerates them.

  Attributes:
    task_ids: Kaggle task id of each evaluation task (task_index order).
    versions: per task, its evaluated versions (version_index order; the identity first).
    solutions: per task, the solution grid of each test input (test_index order), or
      None when the solutions are unknown (then only the submission is produced).
    max_versions: the protocol: the first max_versions kept versions of each task are
      evaluated (0: every kept version, the reference).
  """
  task_ids: tuple[str, ...]
  versions: tuple[tuple[augmentation.ArcVersion, ...], ...]
  solutions: tuple[tuple[np.ndarray, ...], ...] | None
  max_versions: int = 0

  @property
  def num_tests(self) -> tuple[int, ...]:
    if self.solutions is None:
      raise ValueError('ArcEvalSpec without solutions does not know the test counts.')
    return tuple(len(s) for s in self.solutions)


class EvalSource(Protocol):
  num_examples: int
  seq_len: int

  def materialize(self, rows: np.ndarray) -> Batch:
    ...


class GridEvalSource:
  """Sudoku / Maze test split: examples in order, identifier 0."""

  def __init__(self, split: GridSplitLike, max_examples: int = 0):
    self.inputs = np.asarray(split.inputs, np.int32)
    self.labels = np.asarray(split.labels, np.int32)
    _check_split(self.inputs, self.labels, 'test split')
    if max_examples > 0:
      self.inputs, self.labels = self.inputs[:max_examples], self.labels[:max_examples]
    self.num_examples, self.seq_len = self.inputs.shape

  def materialize(self, rows: np.ndarray) -> Batch:
    return {'inputs': self.inputs[rows], 'labels': self.labels[rows],
            'puzzle_identifiers': np.zeros(len(rows), np.int32)}


class ArcEvalSource:
  """ARC test split expanded over the kept versions of each evaluation task.

  Row order: task (sorted), version, test input. `max_versions` > 0 keeps the first
  max_versions versions of each task (version 0, the identity, always among them; a task
  with fewer keeps all); `max_examples` > 0 then keeps a prefix of those rows. Every row
  is encoded at offset 0 with its version's identifier and carries `task_index`,
  `version_index`, `test_index`.
  """

  def __init__(self, tasks: Sequence[ArcTaskLike], catalog: ArcCatalog, max_examples: int = 0,
               max_versions: int = 0):
    self.tasks = list(tasks)
    self.catalog = catalog
    self.catalog_index = np.array([catalog.index(task_key(t)) for t in self.tasks], np.int64)
    if max_versions < 0:
      raise ValueError(f'ArcEvalSource: max_versions must be >= 0, got {max_versions}.')
    self.max_versions = int(max_versions)
    task, version, test = [], [], []
    for t, task_obj in enumerate(self.tasks):
      n_versions = len(self._versions(t))
      n_tests = len(task_obj.pairs)
      task.append(np.full(n_versions * n_tests, t))
      version.append(np.repeat(np.arange(n_versions), n_tests))
      test.append(np.tile(np.arange(n_tests), n_versions))
    self.task_index = np.concatenate(task).astype(np.int64) if task else np.zeros(0, np.int64)
    self.version_index = np.concatenate(version).astype(np.int64) if task else self.task_index
    self.test_index = np.concatenate(test).astype(np.int64) if task else self.task_index
    if max_examples > 0:
      self.task_index = self.task_index[:max_examples]
      self.version_index = self.version_index[:max_examples]
      self.test_index = self.test_index[:max_examples]
    self.num_examples = len(self.task_index)
    self.seq_len = arc_encoding.SEQ_LEN

  def _versions(self, t: int) -> tuple[augmentation.ArcVersion, ...]:
    """The evaluated versions of task t: its kept ones, the first max_versions when > 0."""
    kept = self.catalog.versions[self.catalog_index[t]]
    return kept[:self.max_versions] if self.max_versions > 0 else kept

  def spec(self) -> ArcEvalSpec:
    """What the ARC evaluator needs to map rows back to tasks and undo versions."""
    return ArcEvalSpec(
        task_ids=tuple(t.task_id for t in self.tasks),
        versions=tuple(self._versions(t) for t in range(len(self.tasks))),
        solutions=tuple(tuple(np.asarray(o, np.uint8) for _, o in t.pairs)
                        for t in self.tasks),
        max_versions=self.max_versions)

  def materialize(self, rows: np.ndarray) -> Batch:
    n = len(rows)
    inputs = np.zeros((n, arc_encoding.SEQ_LEN), np.int32)
    labels = np.zeros((n, arc_encoding.SEQ_LEN), np.int32)
    task, version, test = self.task_index[rows], self.version_index[rows], self.test_index[rows]
    for row in range(n):
      t, v, i = int(task[row]), int(version[row]), int(test[row])
      arc_version = self.catalog.versions[self.catalog_index[t]][v]
      inp, out = self.tasks[t].pairs[i]
      inputs[row] = arc_encoding.encode_grid(arc_version.apply(np.asarray(inp, np.uint8)))
      labels[row] = arc_encoding.encode_grid(arc_version.apply(np.asarray(out, np.uint8)))
    ids_version = np.zeros(n, np.int64) if self.catalog.fresh else version
    return {'inputs': inputs, 'labels': labels,
            'puzzle_identifiers': self.catalog.identifiers(self.catalog_index[task], ids_version),
            'task_index': task.astype(np.int32), 'version_index': version.astype(np.int32),
            'test_index': test.astype(np.int32)}

"""Grain input pipeline with the reference's sampling and packing (TRM_REFERENCE.md §7).

Training data is a list of groups; a group is a list of puzzles (versions: the original
and its augmentations); a puzzle is a list of (input, label) examples plus one puzzle
identifier. Versions are never stored: a version index is turned into tokens on the fly
(`augmentation`), only for the rows this process feeds.

Training stream, per epoch e (all randomness keyed by (seed, e)): shuffle the groups,
pick one version per group, and lay out all of that puzzle's examples in random order.
Batches of exactly `global_batch_size` rows are packed from consecutive epochs of one
iteration (`epochs_per_iteration` epochs; the reference packs `eval_interval` epochs at
a time); a puzzle whose examples overflow a batch is cut (its remaining examples are
skipped) and the next batch starts with the next puzzle; the last incomplete batch of an
iteration is dropped. The layout of a global batch is computed by every process; each
process materialises only its rows [p * B / P, (p + 1) * B / P).

Evaluation walks every test example once, in order, padding the last batch with blank
rows (inputs 0, labels 0 = ignored, identifier 0) and a `mask` of real rows.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Protocol, Sequence

from absl import logging
import grain
import ml_collections
import numpy as np

from tiny_recursive.arc_evaluation import ArcEvalSpec
from tiny_recursive.data import arc_encoding
from tiny_recursive.data import augmentation

Batch = dict[str, np.ndarray]

BLANK_IDENTIFIER = 0
IGNORE_LABEL = 0


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


# --- Packing ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EpochPlan:
  """One epoch's example order: flat arrays [examples_per_epoch] and puzzle boundaries."""
  group: np.ndarray
  version: np.ndarray
  example: np.ndarray
  starts: np.ndarray  # int [num_groups + 1]: flat offset of each puzzle, in epoch order.


def epoch_plan(sizes: np.ndarray, num_versions: np.ndarray, seed: int, epoch: int,
               fresh: bool) -> EpochPlan:
  """Shuffles groups, picks a version per group and orders each puzzle's examples."""
  rng = np.random.default_rng([seed, epoch, 17])
  order = rng.permutation(len(sizes))
  if fresh:
    versions = np.full(len(sizes), epoch, np.int64)
  else:
    versions = rng.integers(0, num_versions[order])
  counts = sizes[order]
  starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  segment = np.repeat(np.arange(len(sizes)), counts)
  shuffled = np.lexsort((rng.random(segment.size), segment))
  return EpochPlan(group=np.repeat(order, counts), version=np.repeat(versions, counts),
                   example=shuffled - starts[segment], starts=starts)


class PackingLayout:
  """The global batch layout stream: which (group, version, example) fills each row.

  State is (epoch, offset): the next batch starts at flat position `offset` of epoch
  `epoch`, always at a puzzle boundary.
  """

  def __init__(self, sizes: np.ndarray, num_versions: np.ndarray, global_batch_size: int,
               seed: int, epochs_per_iteration: int = 1, fresh: bool = False):
    self.sizes = np.asarray(sizes, np.int64)
    self.num_versions = np.asarray(num_versions, np.int64)
    if global_batch_size <= 0 or epochs_per_iteration <= 0:
      raise ValueError('global_batch_size and epochs_per_iteration must be positive.')
    if self.sizes.sum() * epochs_per_iteration < global_batch_size:
      raise ValueError(f'{epochs_per_iteration} epoch(s) of {self.sizes.sum()} examples '
                       f'cannot fill one batch of {global_batch_size}.')
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.epochs_per_iteration = epochs_per_iteration
    self.fresh = fresh
    self._plans: dict[int, EpochPlan] = {}
    self.epoch = 0
    self.offset = 0
    self.dropped = False

  def plan(self, epoch: int) -> EpochPlan:
    if epoch not in self._plans:
      if len(self._plans) >= 2:
        self._plans.pop(min(self._plans))
      self._plans[epoch] = epoch_plan(self.sizes, self.num_versions, self.seed, epoch,
                                      self.fresh)
    return self._plans[epoch]

  def get_state(self) -> dict[str, int]:
    return {'epoch': int(self.epoch), 'offset': int(self.offset)}

  def set_state(self, state: dict[str, Any]) -> None:
    self.epoch, self.offset = int(state['epoch']), int(state['offset'])

  def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (group, version, example), each int [global_batch_size]."""
    self.dropped = False  # Whether an incomplete batch was dropped on the way.
    while True:
      pieces, need = [], self.global_batch_size
      epoch, offset = self.epoch, self.offset
      while need > 0:
        plan = self.plan(epoch)
        available = plan.starts[-1] - offset
        if available >= need:
          pieces.append((plan, offset, offset + need))
          # Skip the cut puzzle's remaining examples: continue at the next puzzle.
          puzzle_end = plan.starts[np.searchsorted(plan.starts, offset + need, side='left')]
          offset, need = int(puzzle_end), 0
        else:
          pieces.append((plan, offset, plan.starts[-1]))
          need -= available
          epoch, offset = epoch + 1, 0
          if epoch % self.epochs_per_iteration == 0 and need > 0:
            break  # End of iteration: drop the incomplete batch.
      if need > 0:
        self.epoch, self.offset = epoch, 0
        self.dropped = True
        continue
      if offset == self.plan(epoch).starts[-1]:
        epoch, offset = epoch + 1, 0
      self.epoch, self.offset = epoch, offset
      return tuple(np.concatenate([getattr(p, name)[a:b] for p, a, b in pieces])
                   for name in ('group', 'version', 'example'))


def local_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
  """This process's rows [p * B / P, (p + 1) * B / P) of a global batch."""
  if process_count <= 0 or not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} out of range for {process_count}.')
  if global_batch_size % process_count:
    raise ValueError(f'global batch size {global_batch_size} is not divisible by the '
                     f'process count {process_count}.')
  per_process = global_batch_size // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)


class _LayoutIterator(grain.DatasetIterator):
  """Yields this process's (group, version, example) rows; checkpointable."""

  def __init__(self, layout: PackingLayout, rows: slice):
    super().__init__()
    self._layout = layout
    self._rows = rows
    self._step = 0

  def __next__(self):
    group, version, example = self._layout.next_batch()
    self._step += 1
    return group[self._rows], version[self._rows], example[self._rows]

  def get_state(self) -> dict[str, int]:
    return {**self._layout.get_state(), 'step': self._step}

  def set_state(self, state: dict[str, Any]) -> None:
    self._layout.set_state(state)
    self._step = int(state['step'])


class _LayoutDataset(grain.IterDataset):

  def __init__(self, make_layout: Callable[[], PackingLayout], rows: slice):
    super().__init__()
    self._make_layout = make_layout
    self._rows = rows

  def __iter__(self) -> _LayoutIterator:
    return _LayoutIterator(self._make_layout(), self._rows)


def train_dataset(source: TrainSource, global_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  epochs_per_iteration: int = 1, prefetch_buffer_size: int = 4
                  ) -> grain.IterDataset:
  """An endless grain dataset of this process's training batches.

  Its iterator has `get_state()` (a JSON-serialisable dict) and `set_state(state)`: after
  `set_state` it yields exactly what an uninterrupted iterator would have yielded next.
  Batches: `inputs`, `labels` int32 [B / P, seq_len], `puzzle_identifiers` int32 [B / P].
  """
  rows = local_rows(global_batch_size, process_index, process_count)

  def make_layout():
    return PackingLayout(source.sizes, source.num_versions, global_batch_size, seed,
                         epochs_per_iteration, source.fresh)

  make_layout()  # Validate the arguments now rather than on first use.
  dataset = _LayoutDataset(make_layout, rows).map(lambda r: source.materialize(*r))
  if prefetch_buffer_size > 0:
    dataset = grain.experimental.ThreadPrefetchIterDataset(
        dataset, prefetch_buffer_size=prefetch_buffer_size)
  return dataset


def steps_per_iteration(sizes: np.ndarray, num_versions: np.ndarray, global_batch_size: int,
                        seed: int, epochs_per_iteration: int = 1, iteration: int = 0,
                        fresh: bool = False) -> int:
  """Exact number of batches the training stream yields in iteration `iteration`."""
  layout = PackingLayout(sizes, num_versions, global_batch_size, seed,
                         epochs_per_iteration, fresh)
  start = iteration * epochs_per_iteration
  layout.set_state({'epoch': start, 'offset': 0})
  steps = 0
  while True:
    layout.next_batch()
    if layout.dropped or layout.epoch > start + epochs_per_iteration:
      return steps
    steps += 1
    if layout.epoch == start + epochs_per_iteration:
      return steps


def total_steps(epochs: int, total_groups: int, mean_examples_per_puzzle: float,
                global_batch_size: int) -> int:
  """total_steps = epochs * total_groups * mean_examples_per_puzzle / global_batch_size (§5)."""
  return int(epochs * total_groups * mean_examples_per_puzzle / global_batch_size)


# --- Evaluation ---------------------------------------------------------------------


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
  """ARC test split expanded over every kept version of each evaluation task.

  Row order: task (sorted), version, test input. Every row is encoded at offset 0 with
  its version's identifier and carries `task_index`, `version_index`, `test_index`.
  """

  def __init__(self, tasks: Sequence[ArcTaskLike], catalog: ArcCatalog, max_examples: int = 0):
    self.tasks = list(tasks)
    self.catalog = catalog
    self.catalog_index = np.array([catalog.index(task_key(t)) for t in self.tasks], np.int64)
    task, version, test = [], [], []
    for t, task_obj in enumerate(self.tasks):
      n_versions = len(catalog.versions[self.catalog_index[t]])
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

  def spec(self) -> ArcEvalSpec:
    """What the ARC evaluator needs to map rows back to tasks and undo versions."""
    return ArcEvalSpec(
        task_ids=tuple(t.task_id for t in self.tasks),
        versions=tuple(self.catalog.versions[i] for i in self.catalog_index),
        solutions=tuple(tuple(np.asarray(o, np.uint8) for _, o in t.pairs)
                        for t in self.tasks))

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


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
  return -(-num_examples // global_batch_size)


def eval_batch(source: EvalSource, batch_index: int, global_batch_size: int,
               process_index: int = 0, process_count: int = 1) -> Batch:
  """This process's rows of global eval batch `batch_index`, padded, with `mask` [B / P]."""
  rows = local_rows(global_batch_size, process_index, process_count)
  positions = batch_index * global_batch_size + np.arange(rows.start, rows.stop)
  mask = positions < source.num_examples
  real = source.materialize(positions[mask])
  batch = {}
  for name, values in real.items():
    padded = np.zeros((len(positions),) + values.shape[1:], values.dtype)
    if name in ('task_index', 'version_index', 'test_index'):
      padded[:] = -1
    padded[mask] = values
    batch[name] = padded
  batch['mask'] = mask
  return batch


def eval_dataset(source: EvalSource, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1, prefetch_buffer_size: int = 4) -> grain.IterDataset:
  """A finite grain dataset of this process's eval batches (every process: same count).

  Batches: `inputs`, `labels` int32 [B / P, seq_len], `puzzle_identifiers` int32 [B / P],
  `mask` bool [B / P]; ARC also `task_index`, `version_index`, `test_index` (-1 on pads).
  """
  local_rows(global_batch_size, process_index, process_count)
  count = num_eval_batches(source.num_examples, global_batch_size)
  dataset = grain.MapDataset.range(count).map(
      lambda k: eval_batch(source, int(k), global_batch_size, process_index, process_count))
  return dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=1 if prefetch_buffer_size > 0 else 0,
      prefetch_buffer_size=max(prefetch_buffer_size, 0)))


# --- From the config ------------------------------------------------------------------


@dataclasses.dataclass
class Pipelines:
  """Everything the trainer needs from the input pipeline.

  Attributes:
    train: endless dataset of this process's training batches (iterate it once and keep
      the iterator; checkpoint it with get_state / set_state).
    eval: finite dataset of this process's eval batches (iterate it afresh per evaluation).
    num_puzzle_identifiers: rows of the puzzle-embedding table (blank id 0 included).
    total_groups, mean_examples_per_puzzle: for total_steps (§5).
    steps_per_iteration: exact batches in the first iteration of `epochs_per_iteration`
      epochs.
    arc_spec: evaluation spec for `arc_evaluation.ArcAccumulator` (ARC only).
  """
  train: grain.IterDataset
  eval: grain.IterDataset
  num_puzzle_identifiers: int
  total_groups: int
  mean_examples_per_puzzle: float
  epochs_per_iteration: int
  steps_per_iteration: int
  total_steps: int
  arc_spec: ArcEvalSpec | None = None


def build_pipelines(config: ml_collections.ConfigDict, train_data: Any, test_data: Any,
                    process_index: int = 0, process_count: int = 1,
                    catalog: ArcCatalog | None = None) -> Pipelines:
  """Builds the train and eval datasets of `config.data.name` from loaded splits.

  Args:
    config: experiment config (config.data.*, config.train.*, config.eval.*, config.seed).
    train_data, test_data: GridSplit (Sudoku, Maze) or list[ArcTask] (ARC) from
      `tiny_recursive.data.sources`.
    process_index, process_count: this process and the number of processes.
    catalog: a prebuilt ARC catalogue (built from the splits when None).
  """
  data = config.data
  name = data.name
  aug_seed = int(data.augmentation_seed)
  fresh = bool(data.fresh_augmentation)
  # 0: one evaluation interval, as the reference packs `eval_interval` epochs at a time.
  epochs_per_iteration = int(data.get('epochs_per_iteration', 1)) or int(config.train.eval_interval)
  max_examples = int(config.eval.get('max_examples', 0))
  arc_spec = None
  if name == 'sudoku_extreme':
    source = SudokuTrainSource(train_data, int(data.num_augmentations), aug_seed, fresh)
    eval_source = GridEvalSource(test_data, max_examples)
    num_identifiers = 1
  elif name == 'maze_hard':
    dihedral = data.get('maze_augmentation', 'none') == 'dihedral'
    source = MazeTrainSource(train_data, dihedral, aug_seed, fresh)
    eval_source = GridEvalSource(test_data, max_examples)
    num_identifiers = 1
  elif name == 'arc_agi':
    if catalog is None:
      catalog = build_arc_catalog(train_data, test_data, int(data.num_augmentations),
                                  aug_seed, fresh)
    source = ArcTrainSource(train_data, catalog, aug_seed)
    eval_source = ArcEvalSource(test_data, catalog, max_examples)
    num_identifiers = catalog.num_identifiers
    arc_spec = eval_source.spec()
  else:
    raise ValueError(f"config.data.name: unknown data set {name!r}; expected "
                     "'sudoku_extreme', 'maze_hard' or 'arc_agi'.")
  if eval_source.seq_len != data.seq_len:
    raise ValueError(f'config.data.seq_len is {data.seq_len} but the {name} data has '
                     f'sequences of {eval_source.seq_len} tokens.')
  batch_size = int(config.train.global_batch_size)
  total_groups = len(source.sizes)
  mean_examples = float(source.sizes.mean())
  return Pipelines(
      train=train_dataset(source, batch_size, int(config.seed), process_index, process_count,
                          epochs_per_iteration, int(data.prefetch_buffer_size)),
      eval=eval_dataset(eval_source, int(config.eval.global_batch_size), process_index,
                        process_count, int(data.prefetch_buffer_size)),
      num_puzzle_identifiers=num_identifiers,
      total_groups=total_groups,
      mean_examples_per_puzzle=mean_examples,
      epochs_per_iteration=epochs_per_iteration,
      steps_per_iteration=steps_per_iteration(source.sizes, source.num_versions, batch_size,
                                              int(config.seed), epochs_per_iteration,
                                              fresh=source.fresh),
      total_steps=total_steps(int(config.train.epochs), total_groups, mean_examples,
                              batch_size),
      arc_spec=arc_spec)

"""Packing training batches with the reference's sampling (TRM_REFERENCE.md §7).

Training stream, per epoch e (all randomness keyed by (seed, e)): shuffle the groups,
pick one version per group, and lay out all of that puzzle's examples in random order.
Batches of exactly `global_batch_size` rows are packed from consecutive epochs of one
iteration (`epochs_per_iteration` epochs; the reference packs `eval_interval` epochs at
a time); a puzzle whose examples overflow a batch is cut (its remaining examples are
skipped) and the next batch starts with the next puzzle; the last incomplete batch of an
iteration is dropped. The layout of a global batch is computed by every process; each
process materialises only its rows [p * B / P, (p + 1) * B / P).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import grain
import numpy as np

from tiny_recursive.data import puzzle_sources

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


def train_dataset(source: puzzle_sources.TrainSource, global_batch_size: int, seed: int,
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

"""The input pipeline assembled from the config (TRM_REFERENCE.md §7): grain datasets of
this process's training batches (`packing` over a per-benchmark `puzzle_sources` source) and
evaluation batches.

Evaluation walks every test example once, in order, padding the last batch with blank
rows (inputs 0, labels 0 = ignored, identifier 0) and a `mask` of real rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import ml_collections
import numpy as np

from tiny_recursive.data import packing
from tiny_recursive.data import puzzle_sources


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
  return -(-num_examples // global_batch_size)


def eval_batch(source: puzzle_sources.EvalSource, batch_index: int, global_batch_size: int,
               process_index: int = 0, process_count: int = 1) -> puzzle_sources.Batch:
  """This process's rows of global eval batch `batch_index`, padded, with `mask` [B / P]."""
  rows = packing.local_rows(global_batch_size, process_index, process_count)
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


def eval_dataset(source: puzzle_sources.EvalSource, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1,
                 prefetch_buffer_size: int = 4) -> grain.IterDataset:
  """A finite grain dataset of this process's eval batches (every process: same count).

  Batches: `inputs`, `labels` int32 [B / P, seq_len], `puzzle_identifiers` int32 [B / P],
  `mask` bool [B / P]; ARC also `task_index`, `version_index`, `test_index` (-1 on pads).
  """
  packing.local_rows(global_batch_size, process_index, process_count)
  count = num_eval_batches(source.num_examples, global_batch_size)
  dataset = grain.MapDataset.range(count).map(
      lambda k: eval_batch(source, int(k), global_batch_size, process_index, process_count))
  return dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=1 if prefetch_buffer_size > 0 else 0,
      prefetch_buffer_size=max(prefetch_buffer_size, 0)))


# --- From the config ------------------------------------------------------------------


@dataclasses.dataclass
class EvalPipeline:
  """What evaluation needs from the input pipeline.

  Attributes:
    eval: finite dataset of this process's eval batches (iterate it afresh per evaluation).
    seq_len: tokens per sequence of the test data.
    num_puzzle_identifiers: rows of the puzzle-embedding table (blank id 0 included).
    arc_spec: what ARC voting needs to map rows back to tasks (ARC only).
  """
  eval: grain.IterDataset
  seq_len: int
  num_puzzle_identifiers: int
  arc_spec: puzzle_sources.ArcEvalSpec | None = None


@dataclasses.dataclass
class Pipelines(EvalPipeline):
  """Everything training needs from the input pipeline: evaluation's, plus

  Attributes:
    train: endless dataset of this process's training batches (iterate it once and keep
      the iterator; checkpoint it with get_state / set_state).
    total_groups, mean_examples_per_puzzle: the data's share of the step count (§5).
    epochs_per_iteration: epochs packed back to back before a partial batch is dropped.
  """
  train: grain.IterDataset | None = None
  total_groups: int = 0
  mean_examples_per_puzzle: float = 0.0
  epochs_per_iteration: int = 1


def needs_train_split_for_eval(config: ml_collections.ConfigDict) -> bool:
  """ARC identifiers number the versions of every task, training tasks included."""
  return config.data.name == 'arc_agi'


def arc_catalog(config: ml_collections.ConfigDict, train_data: Any,
                test_data: Any) -> puzzle_sources.ArcCatalog:
  """The ARC version catalogue of `config.data` (deterministic in the seed and tasks)."""
  data = config.data
  return puzzle_sources.build_arc_catalog(train_data, test_data, int(data.num_augmentations),
                                          int(data.augmentation_seed),
                                          bool(data.fresh_augmentation))


def build_eval(config: ml_collections.ConfigDict, test_data: Any, process_index: int = 0,
               process_count: int = 1,
               catalog: puzzle_sources.ArcCatalog | None = None) -> EvalPipeline:
  """The eval dataset of `config.data.name` (ARC needs its `catalog`).

  ARC rows: the first eval.arc_versions versions of each task (0: all kept), then the
  first eval.max_examples of those rows (0: all).
  """
  data = config.data
  max_examples = int(config.eval.get('max_examples', 0))
  arc_spec = None
  num_identifiers = 1
  if data.name in ('sudoku_extreme', 'maze_hard'):
    source = puzzle_sources.GridEvalSource(test_data, max_examples)
  elif data.name == 'arc_agi':
    if catalog is None:
      raise ValueError('build_eval: ARC evaluation needs the catalogue of every task.')
    source = puzzle_sources.ArcEvalSource(test_data, catalog, max_examples,
                                          int(config.eval.get('arc_versions', 0)))
    num_identifiers = catalog.num_identifiers
    arc_spec = source.spec()
  else:
    raise ValueError(f"config.data.name: unknown data set {data.name!r}; expected "
                     "'sudoku_extreme', 'maze_hard' or 'arc_agi'.")
  return EvalPipeline(
      eval=eval_dataset(source, int(config.eval.global_batch_size), process_index,
                        process_count, int(data.prefetch_buffer_size)),
      seq_len=source.seq_len, num_puzzle_identifiers=num_identifiers, arc_spec=arc_spec)


def build_pipelines(config: ml_collections.ConfigDict, train_data: Any, test_data: Any,
                    process_index: int = 0, process_count: int = 1,
                    catalog: puzzle_sources.ArcCatalog | None = None) -> Pipelines:
  """Builds the train and eval datasets of `config.data.name` from loaded splits.

  Args:
    config: experiment config (config.data.*, config.train.*, config.eval.*, config.seed).
    train_data, test_data: GridSplit (Sudoku, Maze) or list[ArcTask] (ARC) from
      `tiny_recursive.data.sources`.
    process_index, process_count: this process and the number of processes.
    catalog: a prebuilt ARC catalogue (built from the splits when None).
  """
  data = config.data
  aug_seed = int(data.augmentation_seed)
  fresh = bool(data.fresh_augmentation)
  # 0: one evaluation interval, as the reference packs `eval_interval` epochs at a time.
  epochs_per_iteration = int(data.get('epochs_per_iteration', 1)) or int(config.train.eval_interval)
  if data.name == 'arc_agi' and catalog is None:
    catalog = arc_catalog(config, train_data, test_data)
  evaluation = build_eval(config, test_data, process_index, process_count, catalog)
  if data.name == 'sudoku_extreme':
    source = puzzle_sources.SudokuTrainSource(train_data, int(data.num_augmentations),
                                              aug_seed, fresh)
  elif data.name == 'maze_hard':
    dihedral = data.get('maze_augmentation', 'none') == 'dihedral'
    source = puzzle_sources.MazeTrainSource(train_data, dihedral, aug_seed, fresh)
  else:
    source = puzzle_sources.ArcTrainSource(train_data, catalog, aug_seed)
  return Pipelines(
      eval=evaluation.eval, seq_len=evaluation.seq_len,
      num_puzzle_identifiers=evaluation.num_puzzle_identifiers, arc_spec=evaluation.arc_spec,
      train=packing.train_dataset(source, int(config.train.global_batch_size),
                                  int(config.seed), process_index, process_count,
                                  epochs_per_iteration, int(data.prefetch_buffer_size)),
      total_groups=len(source.sizes),
      mean_examples_per_puzzle=float(source.sizes.mean()),
      epochs_per_iteration=epochs_per_iteration)

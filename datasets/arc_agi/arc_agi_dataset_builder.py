"""TFDS builder for ARC-AGI-1 / ARC-AGI-2 with ConceptARC (TRM_REFERENCE.md §7).

One example per (task, split). Split assignment follows the reference: `train` holds
every task of every subset with its demonstration pairs, plus its test pairs for the
subsets that are not evaluated; `test` holds the evaluation subset's tasks with their
test pairs (inputs and solutions). Grids are stored padded to 30x30 (uint8, colour 0 in
the padding) with their true `[h, w]` shapes.
"""

import dataclasses
import os
from typing import Iterator

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from datasets import builder_common
from datasets.arc_agi import arc_files

# Public sources (GitHub repository archives; one JSON file per task with solutions).
ARCHIVES = {
    'arc_agi_1': 'https://github.com/fchollet/ARC-AGI/archive/refs/heads/master.zip',
    'arc_agi_2': 'https://github.com/arcprize/ARC-AGI-2/archive/refs/heads/main.zip',
    'concept_arc': 'https://github.com/victorvikram/ConceptARC/archive/refs/heads/main.zip',
}
# subset -> (archive, glob inside the extracted archive, file suffix to skip).
ARCHIVE_SUBSETS = {
    'training': ('arc_agi_1', '*/data/training/*.json', None),
    'evaluation': ('arc_agi_1', '*/data/evaluation/*.json', None),
    'training2': ('arc_agi_2', '*/data/training/*.json', None),
    'evaluation2': ('arc_agi_2', '*/data/evaluation/*.json', None),
    'concept': ('concept_arc', '*/corpus/*/*.json', 'Minimal.json'),
}

_MANUAL_INSTRUCTIONS = """\
Put the Kaggle-layout files `arc-agi_<subset>_challenges.json` and
`arc-agi_<subset>_solutions.json` for the subsets of the config (arc_agi_1: training,
evaluation, concept; arc_agi_2: training2, evaluation2, concept) in the manual directory,
or build without one to download the public GitHub repositories.
"""


@dataclasses.dataclass(eq=False)
class ArcConfig(tfds.core.BuilderConfig):
  subsets: tuple[str, ...] = ()
  evaluation_subset: str = ''


class ArcAgi(builder_common.LocalCodePath, tfds.core.GeneratorBasedBuilder):
  """ARC tasks as padded grids."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_INSTRUCTIONS
  BUILDER_CONFIGS = [
      ArcConfig(name='arc_agi_1', description='ARC-AGI-1 training + evaluation + ConceptARC.',
                subsets=('training', 'evaluation', 'concept'), evaluation_subset='evaluation'),
      ArcConfig(name='arc_agi_2', description='ARC-AGI-2 training + evaluation + ConceptARC.',
                subsets=('training2', 'evaluation2', 'concept'),
                evaluation_subset='evaluation2'),
  ]
  DEFAULT_CONFIG_NAME = 'arc_agi_1'

  def _info(self) -> tfds.core.DatasetInfo:
    side = arc_files.MAX_SIDE
    grids = tfds.features.Tensor(shape=(None, side, side), dtype=np.uint8, encoding='zlib')
    return tfds.core.DatasetInfo(
        builder=self,
        description=('ARC tasks. inputs/outputs: [num_pairs, 30, 30] uint8 colours 0-9, '
                     'zero-padded; input_shapes/output_shapes: [num_pairs, 2] (h, w).'),
        features=tfds.features.FeaturesDict({
            'task_id': tfds.features.Text(),
            'subset': tfds.features.Text(),
            'inputs': grids,
            'outputs': grids,
            'input_shapes': tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
            'output_shapes': tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
        }),
        homepage='https://arcprize.org',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    try:
      directory = os.fspath(dl_manager.manual_dir)
      tasks = {s: arc_files.load_kaggle_subset(directory, s) for s in config.subsets}
    except AssertionError:
      archives = sorted({ARCHIVE_SUBSETS[s][0] for s in config.subsets})
      logging.info('No manual directory: downloading %s', [ARCHIVES[a] for a in archives])
      extracted = dl_manager.download_and_extract({a: ARCHIVES[a] for a in archives})
      tasks = {}
      for subset in config.subsets:
        archive, pattern, skip = ARCHIVE_SUBSETS[subset]
        tasks[subset] = arc_files.load_task_files(
            os.path.join(os.fspath(extracted[archive]), pattern), subset, skip)
    split_tasks = assign_splits(tasks, config.evaluation_subset)
    return {split: self._generate_examples(items) for split, items in split_tasks.items()}

  def _generate_examples(self, items: list[tuple[arc_files.Task, tuple[arc_files.Pair, ...]]]
                         ) -> Iterator[tuple[str, dict]]:
    for task, pairs in items:
      yield f'{task.subset}/{task.task_id}', encode_example(task, pairs)


def assign_splits(tasks: dict[str, dict[str, arc_files.Task]], evaluation_subset: str
                  ) -> dict[str, list[tuple[arc_files.Task, tuple[arc_files.Pair, ...]]]]:
  """(task, pairs) per split, as in TRM_REFERENCE.md §7.

  Raises:
    ValueError: a task id of the evaluation subset also appears in a training subset.
  """
  evaluation_ids = set(tasks[evaluation_subset])
  for subset, subset_tasks in tasks.items():
    shared = sorted(evaluation_ids & set(subset_tasks)) if subset != evaluation_subset else []
    if shared:
      raise ValueError(
          f'ARC: task {shared[0]!r} ({len(shared)} in all) of the evaluation subset '
          f'{evaluation_subset!r} also appears in the training subset {subset!r}; training '
          'on evaluation tasks is not allowed.')
  train, test = [], []
  for subset in sorted(tasks):
    for task_id in sorted(tasks[subset]):
      task = tasks[subset][task_id]
      if subset == evaluation_subset:
        train.append((task, task.train))
        test.append((task, task.test))
      else:
        train.append((task, task.train + task.test))
  return {'train': train, 'test': test}


def encode_example(task: arc_files.Task, pairs: tuple[arc_files.Pair, ...]) -> dict:
  """The TFDS example of `pairs` of `task`: grids zero-padded to 30x30 plus shapes."""
  side = arc_files.MAX_SIDE

  def pad(grids: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(grids), side, side), np.uint8)
    for i, g in enumerate(grids):
      out[i, :g.shape[0], :g.shape[1]] = g
    return out

  inputs = [p[0] for p in pairs]
  outputs = [p[1] for p in pairs]
  return {
      'task_id': task.task_id,
      'subset': task.subset,
      'inputs': pad(inputs),
      'outputs': pad(outputs),
      'input_shapes': np.array([g.shape for g in inputs], np.int32).reshape(-1, 2),
      'output_shapes': np.array([g.shape for g in outputs], np.int32).reshape(-1, 2),
  }

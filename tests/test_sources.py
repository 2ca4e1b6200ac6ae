"""Tests of tiny_recursive.data.sources on builds of the committed fixtures."""

import csv
import json
import os
import sys

import numpy as np
import pytest

from datasets import build
from tiny_recursive.data import sources

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')


def _csv_rows(name: str, split: str) -> list[list[str]]:
  with open(os.path.join(FIXTURES, name, f'{split}.csv'), newline='') as f:
    return list(csv.reader(f))[1:]


def test_load_grid_split_sudoku_matches_source(tmp_path):
  data_dir = str(tmp_path)
  sources.ensure_built('sudoku_extreme', 'full', data_dir, os.path.join(FIXTURES, 'sudoku'))
  for split in ('train', 'test'):
    loaded = sources.load_grid_split('sudoku_extreme', 'full', split, data_dir)
    rows = _csv_rows('sudoku', split)
    assert loaded.inputs.dtype == np.int32 and loaded.labels.dtype == np.int32
    assert loaded.inputs.shape == loaded.labels.shape == (len(rows), 81)
    expected = sorted(
        ([1 if c == '.' else int(c) + 1 for c in q], [int(c) + 1 for c in a])
        for _, q, a, _ in rows)
    got = sorted((i.tolist(), l.tolist()) for i, l in zip(loaded.inputs, loaded.labels))
    assert got == expected
  assert 'tensorflow' not in sys.modules


def test_load_grid_split_maze_matches_source(tmp_path):
  data_dir = str(tmp_path)
  sources.ensure_built('maze_hard', 'hub', data_dir, os.path.join(FIXTURES, 'maze'))
  loaded = sources.load_grid_split('maze_hard', 'hub', 'train', data_dir)
  tokens = {'#': 1, ' ': 2, 'S': 3, 'G': 4, 'o': 5}
  expected = sorted([tokens[c] for c in a] for _, _, a, _ in _csv_rows('maze', 'train'))
  assert loaded.labels.shape == (3, 900)
  assert sorted(l.tolist() for l in loaded.labels) == expected


def test_load_arc_split_sorted_and_exact(tmp_path):
  data_dir = str(tmp_path)
  sources.ensure_built('arc_agi', 'arc_agi_1', data_dir, os.path.join(FIXTURES, 'arc'))
  train = sources.load_arc_split('arc_agi_1', 'train', data_dir)
  test = sources.load_arc_split('arc_agi_1', 'test', data_dir)
  assert [(t.subset, t.task_id) for t in train] == sorted((t.subset, t.task_id) for t in train)
  assert {t.subset for t in train} == {'training', 'evaluation', 'concept'}
  assert {t.subset for t in test} == {'evaluation'}

  def load(subset, kind):
    with open(os.path.join(FIXTURES, 'arc', f'arc-agi_{subset}_{kind}.json')) as f:
      return json.load(f)

  evaluation, solutions = load('evaluation', 'challenges'), load('evaluation', 'solutions')
  for task in test:
    expected = [(p['input'], s) for p, s in zip(evaluation[task.task_id]['test'],
                                                solutions[task.task_id])]
    assert [(i.tolist(), o.tolist()) for i, o in task.pairs] == expected
    assert all(i.dtype == np.uint8 and o.dtype == np.uint8 for i, o in task.pairs)
  by_key = {(t.subset, t.task_id): t for t in train}
  training, training_solutions = load('training', 'challenges'), load('training', 'solutions')
  for task_id, body in training.items():
    expected = [(p['input'], p['output']) for p in body['train']] + [
        (p['input'], s) for p, s in zip(body['test'], training_solutions[task_id])]
    got = by_key[('training', task_id)].pairs
    assert [(i.tolist(), o.tolist()) for i, o in got] == expected
  for task_id, body in evaluation.items():  # Only demonstration pairs go to training.
    assert len(by_key[('evaluation', task_id)].pairs) == len(body['train'])


def test_unbuilt_data_set_error_gives_build_command(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=r'python -m datasets\.build sudoku_extreme/1k --data_dir='):
    sources.load_grid_split('sudoku_extreme', '1k', 'train', str(tmp_path / 'missing'))
  with pytest.raises(FileNotFoundError, match=r'python -m datasets\.build arc_agi/arc_agi_2'):
    sources.load_arc_split('arc_agi_2', 'test', str(tmp_path))


def test_unknown_names_and_splits(tmp_path):
  with pytest.raises(ValueError, match='unknown grid data set'):
    sources.load_grid_split('arc_agi', 'arc_agi_1', 'train', str(tmp_path))
  sources.ensure_built('sudoku_extreme', 'sample', str(tmp_path))
  with pytest.raises(ValueError, match="no split 'validation'"):
    sources.load_grid_split('sudoku_extreme', 'sample', 'validation', str(tmp_path))


def test_ensure_built_sample_works_offline_and_once(tmp_path):
  data_dir = str(tmp_path)
  sources.ensure_built('sudoku_extreme', 'sample', data_dir)
  info = os.path.join(build.prepared_dir('sudoku_extreme', 'sample', data_dir),
                      'dataset_info.json')
  mtime = os.path.getmtime(info)
  sources.ensure_built('sudoku_extreme', 'sample', data_dir)
  assert os.path.getmtime(info) == mtime
  train = sources.load_grid_split('sudoku_extreme', 'sample', 'train', data_dir)
  test = sources.load_grid_split('sudoku_extreme', 'sample', 'test', data_dir)
  assert train.inputs.shape == (2000, 81) and test.inputs.shape == (200, 81)
  assert train.inputs.min() >= 1 and train.labels.min() >= 2 and train.labels.max() <= 10

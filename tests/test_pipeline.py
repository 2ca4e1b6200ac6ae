"""Tests for tiny_recursive.data.pipeline and its per-benchmark sources (in-memory fixtures)."""

import dataclasses
import json

import numpy as np
import pytest

from experiments.configs import base
from tiny_recursive import arc_evaluation
from tiny_recursive.data import arc_encoding
from tiny_recursive.data import pipeline
from tiny_recursive.data import puzzle_sources


@dataclasses.dataclass(frozen=True)
class GridSplit:  # Same fields as tiny_recursive.data.sources.GridSplit.
  inputs: np.ndarray
  labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class ArcTask:  # Same fields as tiny_recursive.data.sources.ArcTask.
  task_id: str
  subset: str
  pairs: tuple


def _grid_split(n, seq_len=81):
  labels = (np.arange(n)[:, None] * 7 + np.arange(seq_len)[None]) % 9 + 2
  return GridSplit(inputs=np.where(np.arange(seq_len) % 3 == 0, 1, labels).astype(np.int32),
                   labels=labels.astype(np.int32))


def _arc_tasks(seed=0):
  rng = np.random.default_rng(seed)

  def grid():
    return rng.integers(0, 10, rng.integers(1, 8, 2)).astype(np.uint8)

  train, test = [], []
  for subset, n in (('evaluation', 3), ('training', 4)):
    for t in range(n):
      pairs = tuple((grid(), grid()) for _ in range(2 + t % 3))
      train.append(ArcTask(f'{subset[0]}{t:03d}', subset, pairs))
      if subset == 'evaluation':
        test.append(ArcTask(f'{subset[0]}{t:03d}', subset,
                            tuple((grid(), grid()) for _ in range(1 + t % 2))))
  key = lambda t: (t.subset, t.task_id)
  return sorted(train, key=key), sorted(test, key=key)


def _take(iterator, k):
  return [next(iterator) for _ in range(k)]


def _sudoku_config(batch=8):
  config = base.get_base_config()
  config.data.name = 'sudoku_extreme'
  config.data.seq_len = 81
  config.data.num_augmentations = 5
  config.train.global_batch_size = batch
  config.eval.global_batch_size = batch
  config.data.prefetch_buffer_size = 2
  return config


def test_sudoku_train_stream_identical_across_process_counts():
  split = _grid_split(20)
  single = iter(pipeline.build_pipelines(_sudoku_config(), split, split).train)
  halves = [iter(pipeline.build_pipelines(_sudoku_config(), split, split, p, 2).train)
            for p in range(2)]
  for _ in range(5):
    whole = next(single)
    parts = [next(h) for h in halves]
    assert whole['inputs'].shape == (8, 81) and whole['inputs'].dtype == np.int32
    assert parts[0]['inputs'].shape == (4, 81)
    for key in ('inputs', 'labels', 'puzzle_identifiers'):
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
    assert (whole['puzzle_identifiers'] == 0).all()


@pytest.mark.parametrize('prefetch', [0, 3])
def test_train_iterator_resumes_exactly(prefetch):
  split = _grid_split(13)
  config = _sudoku_config(batch=4)
  config.data.prefetch_buffer_size = prefetch
  config.data.epochs_per_iteration = 2
  iterator = iter(pipeline.build_pipelines(config, split, split).train)
  _take(iterator, 5)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = _take(iterator, 6)
  resumed = iter(pipeline.build_pipelines(config, split, split).train)
  resumed.set_state(state)
  for a, b in zip(expected, _take(resumed, 6)):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_eval_visits_every_example_once_and_pads():
  split = _grid_split(11)
  config = _sudoku_config(batch=4)
  batches = list(pipeline.build_pipelines(config, split, split).eval)
  assert len(batches) == 3
  inputs = np.concatenate([b['inputs'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(inputs[mask], split.inputs)
  assert mask.sum() == 11 and not mask[11:].any()
  assert (inputs[~mask] == 0).all()
  assert (np.concatenate([b['labels'] for b in batches])[~mask] == 0).all()
  per_process = [list(pipeline.build_pipelines(config, split, split, p, 2).eval)
                 for p in range(2)]
  assert len(per_process[0]) == len(per_process[1]) == 3
  for k in range(3):
    np.testing.assert_array_equal(
        np.concatenate([per_process[p][k]['inputs'] for p in range(2)]), batches[k]['inputs'])


def test_maze_identity_by_default():
  split = _grid_split(9, seq_len=900)
  config = _sudoku_config(batch=3)
  config.data.name = 'maze_hard'
  config.data.seq_len = 900
  pipes = pipeline.build_pipelines(config, split, split)
  batch = next(iter(pipes.train))
  for row in batch['inputs']:
    assert any(np.array_equal(row, x) for x in split.inputs)


def _arc_config(batch=6, num_augmentations=4):
  config = _sudoku_config(batch)
  config.data.name = 'arc_agi'
  config.data.seq_len = 900
  config.data.num_augmentations = num_augmentations
  return config


def test_arc_identifiers_deterministic_and_shared_between_splits():
  train, test = _arc_tasks()
  a = puzzle_sources.build_arc_catalog(train, test, 4, seed=0)
  b = puzzle_sources.build_arc_catalog(list(reversed(train)), test, 4, seed=0)
  assert a.task_keys == b.task_keys and a.versions == b.versions
  np.testing.assert_array_equal(a.first_identifier, b.first_identifier)
  assert a.num_identifiers == 1 + 7 * 5
  np.testing.assert_array_equal(a.first_identifier, 1 + 5 * np.arange(7))
  pipes = pipeline.build_pipelines(_arc_config(), train, test)
  assert pipes.num_puzzle_identifiers == a.num_identifiers
  # The eval rows of a task version carry the same identifier as its training rows.
  train_source = puzzle_sources.ArcTrainSource(train, a, 0)
  eval_batch = next(iter(pipes.eval))
  for row in np.flatnonzero(eval_batch['mask']):
    t, v = eval_batch['task_index'][row], eval_batch['version_index'][row]
    g = [task.task_id for task in train].index(test[t].task_id)
    ident = train_source.materialize(np.array([g]), np.array([v]), np.array([0]))
    assert ident['puzzle_identifiers'][0] == eval_batch['puzzle_identifiers'][row]


def test_arc_train_rows_decode_to_augmented_pairs_and_one_untranslated():
  train, test = _arc_tasks()
  catalog = puzzle_sources.build_arc_catalog(train, test, 4, seed=0)
  source = puzzle_sources.ArcTrainSource(train, catalog, seed=0)
  for g in range(len(train)):
    for v in range(len(catalog.versions[source.catalog_index[g]])):
      n = len(train[g].pairs)
      out = source.materialize(np.full(n, g), np.full(n, v), np.arange(n))
      version = catalog.versions[source.catalog_index[g]][v]
      at_origin = 0
      for k in range(n):
        inp = out['inputs'][k].reshape(30, 30)
        rows, cols = np.nonzero(inp >= 2)
        r, c = rows.min(), cols.min()
        at_origin += (r, c) == (0, 0)
        grid = arc_encoding.decode_grid(np.pad(inp[r:, c:], ((0, r), (0, c))))
        np.testing.assert_array_equal(version.invert(grid), train[g].pairs[k][0])
        label = out['labels'][k].reshape(30, 30)
        assert (label[r, c] >= 2)  # Input and label share the offset.
      assert at_origin >= 1
      assert (out['puzzle_identifiers'] == catalog.first_identifier[source.catalog_index[g]]
              + v).all()


def test_arc_eval_expands_all_versions_at_origin():
  train, test = _arc_tasks()
  pipes = pipeline.build_pipelines(_arc_config(batch=4), train, test)
  batches = list(pipes.eval)
  mask = np.concatenate([b['mask'] for b in batches])
  meta = {k: np.concatenate([b[k] for b in batches])[mask]
          for k in ('task_index', 'version_index', 'test_index', 'inputs')}
  expected = sum(len(t.pairs) * 5 for t in test)
  assert mask.sum() == expected
  triples = set(zip(meta['task_index'], meta['version_index'], meta['test_index']))
  assert len(triples) == expected
  spec = pipes.arc_spec
  for row in range(expected):
    t, v, i = meta['task_index'][row], meta['version_index'][row], meta['test_index'][row]
    grid = arc_encoding.decode_grid(meta['inputs'][row])
    np.testing.assert_array_equal(spec.versions[t][v].invert(grid), test[t].pairs[i][0])


def test_arc_train_stream_packs_exact_batches():
  train, test = _arc_tasks()
  config = _arc_config(batch=6)
  pipes = pipeline.build_pipelines(config, train, test)
  assert pipes.total_groups == 7
  assert pipes.mean_examples_per_puzzle == pytest.approx(np.mean([len(t.pairs) for t in train]))
  iterator = iter(pipes.train)
  for batch in _take(iterator, 4):
    assert batch['inputs'].shape == (6, 900) and batch['labels'].dtype == np.int32
    assert (batch['puzzle_identifiers'] >= 1).all()


def test_unknown_data_set_is_rejected():
  config = _sudoku_config()
  config.data.name = 'chess'
  with pytest.raises(ValueError, match='chess'):
    pipeline.build_pipelines(config, _grid_split(4), _grid_split(4))


def _arc_tasks_with_a_symmetric_one():
  """_arc_tasks plus an evaluation task of blank grids, whose only kept version is the
  identity."""
  train, test = _arc_tasks()
  blank = np.zeros((1, 1), np.uint8)
  train.append(ArcTask('e999', 'evaluation', ((blank, blank), (blank, blank))))
  test.append(ArcTask('e999', 'evaluation', ((blank, blank),)))
  key = lambda t: (t.subset, t.task_id)
  return sorted(train, key=key), sorted(test, key=key)


def _expected_rows(test, catalog, max_versions):
  """(task, version, test) in the documented order: task, version, test input."""
  rows = []
  for t, task in enumerate(test):
    kept = len(catalog.versions[catalog.index(puzzle_sources.task_key(task))])
    n = min(max_versions, kept) if max_versions > 0 else kept
    rows += [(t, v, i) for v in range(n) for i in range(len(task.pairs))]
  return rows


def _rows(source):
  return list(zip(source.task_index.tolist(), source.version_index.tolist(),
                  source.test_index.tolist()))


@pytest.mark.parametrize('max_versions', [1, 2, 4, 50])
def test_arc_eval_first_versions_of_each_task(max_versions):
  train, test = _arc_tasks_with_a_symmetric_one()
  catalog = puzzle_sources.build_arc_catalog(train, test, 4, seed=0)
  kept = [len(catalog.versions[catalog.index(puzzle_sources.task_key(t))]) for t in test]
  assert 1 in kept and 5 in kept  # The blank task keeps only its identity.
  source = puzzle_sources.ArcEvalSource(test, catalog, max_versions=max_versions)
  assert source.num_examples == sum(min(max_versions, k) * len(t.pairs)
                                    for k, t in zip(kept, test))
  assert _rows(source) == _expected_rows(test, catalog, max_versions)
  assert {(t, v) for t, v, _ in _rows(source) if v == 0} == {(t, 0) for t in range(len(test))}
  spec = source.spec()
  assert spec.max_versions == max_versions
  for t, task in enumerate(test):
    full = catalog.versions[catalog.index(puzzle_sources.task_key(task))]
    assert spec.versions[t] == full[:max_versions]
  # A subset's rows are the same rows as in the full expansion.
  full_source = puzzle_sources.ArcEvalSource(test, catalog)
  positions = [_rows(full_source).index(row) for row in _rows(source)]
  subset, full = source.materialize(np.arange(source.num_examples)), full_source.materialize(
      np.asarray(positions))
  for name in subset:
    np.testing.assert_array_equal(subset[name], full[name])


def test_arc_eval_default_is_every_kept_version():
  train, test = _arc_tasks_with_a_symmetric_one()
  catalog = puzzle_sources.build_arc_catalog(train, test, 4, seed=0)
  config = _arc_config(batch=4)
  assert config.eval.arc_versions == 0
  source = puzzle_sources.ArcEvalSource(test, catalog)
  assert _rows(source) == _expected_rows(test, catalog, 0)
  spec = source.spec()
  assert spec.max_versions == 0
  assert spec.versions == tuple(catalog.versions[catalog.index(puzzle_sources.task_key(t))]
                                for t in test)
  evaluation = pipeline.build_eval(config, test, catalog=catalog)
  assert evaluation.arc_spec.versions == spec.versions and evaluation.arc_spec.max_versions == 0
  batches = list(evaluation.eval)
  mask = np.concatenate([b['mask'] for b in batches])
  got = list(zip(*(np.concatenate([b[k] for b in batches])[mask].tolist()
                   for k in ('task_index', 'version_index', 'test_index'))))
  assert got == _expected_rows(test, catalog, 0)


def test_arc_versions_then_max_examples_prefix():
  train, test = _arc_tasks()
  catalog = puzzle_sources.build_arc_catalog(train, test, 4, seed=0)
  config = _arc_config(batch=4)
  config.eval.arc_versions = 2
  config.eval.max_examples = 5
  evaluation = pipeline.build_eval(config, test, catalog=catalog)
  batches = list(evaluation.eval)
  mask = np.concatenate([b['mask'] for b in batches])
  got = list(zip(*(np.concatenate([b[k] for b in batches])[mask].tolist()
                   for k in ('task_index', 'version_index', 'test_index'))))
  assert got == _expected_rows(test, catalog, 2)[:5]
  assert evaluation.arc_spec.max_versions == 2


def test_arc_eval_negative_versions_rejected():
  train, test = _arc_tasks()
  catalog = puzzle_sources.build_arc_catalog(train, test, 4, seed=0)
  with pytest.raises(ValueError, match='max_versions must be >= 0'):
    puzzle_sources.ArcEvalSource(test, catalog, max_versions=-1)


def test_arc_vote_over_a_subset_of_versions_with_true_answers():
  """Every row predicting its own label: each task solved, from the first N versions."""
  train, test = _arc_tasks_with_a_symmetric_one()
  catalog = puzzle_sources.build_arc_catalog(train, test, 4, seed=0)
  source = puzzle_sources.ArcEvalSource(test, catalog, max_versions=3)
  accumulator = arc_evaluation.ArcAccumulator(source.spec())
  batch = source.materialize(np.arange(source.num_examples))
  accumulator.update(batch, batch['labels'], np.zeros(source.num_examples))
  result = accumulator.result()
  assert result['pass@1'] == result['pass@2'] == 1.0
  assert result['arc_versions'] == 3
  kept = [len(v) for v in source.spec().versions]
  assert result['mean_versions_voted'] == pytest.approx(np.mean(kept))
  assert sorted(kept) == [1] + [3] * (len(test) - 1)

"""Tests for tiny_recursive.arc_evaluation."""

import json
import os

import numpy as np
import pytest

from tests import entry_point
from tiny_recursive import arc_evaluation
from tiny_recursive.data import arc_encoding
from tiny_recursive.data import augmentation

_ROT90 = augmentation.ArcVersion(dihedral=1, colour_map=(0, 2, 1, 3, 4, 5, 6, 7, 8, 9))
_IDENTITY = augmentation.IDENTITY_ARC_VERSION

A = np.array([[1, 2], [3, 4]], np.uint8)
B = np.array([[5]], np.uint8)
C = np.array([[6, 6, 6]], np.uint8)
D = np.array([[7], [7]], np.uint8)


def _spec():
  # Task 'a': two test inputs (solutions A and B); task 'b': one (solution C).
  return arc_evaluation.ArcEvalSpec(
      task_ids=('a', 'b'), versions=((_IDENTITY, _ROT90), (_IDENTITY, _ROT90, _ROT90)),
      solutions=((A, B), (C,)))


def _row(task, version, test, grid, q, spec):
  """A predicted canvas for `grid` (given in the original frame) seen by `version`."""
  augmented = spec.versions[task][version].apply(grid)
  return (task, version, test), arc_encoding.encode_grid(augmented), q


def _update(acc, rows):
  meta = np.array([r[0] for r in rows])
  acc.update({'task_index': meta[:, 0], 'version_index': meta[:, 1],
              'test_index': meta[:, 2], 'mask': np.ones(len(rows), bool)},
             np.stack([r[1] for r in rows]), np.array([r[2] for r in rows]))


def _crafted():
  spec = _spec()
  acc = arc_evaluation.ArcAccumulator(spec)
  _update(acc, [
      # Task a, test 0: D twice beats A once -> pass@1 fails, pass@2 holds.
      _row(0, 0, 0, D, 0.0, spec), _row(0, 1, 0, D, 0.0, spec), _row(0, 0, 0, A, 5.0, spec),
      # Task a, test 1: B and C once each; tie broken by mean q (B has higher q).
      _row(0, 0, 1, C, -1.0, spec), _row(0, 1, 1, B, 2.0, spec),
  ])
  _update(acc, [
      # Task b: C, D, A once each, C with the lowest q -> rank 3 (only pass@5 and up).
      _row(1, 0, 0, D, 3.0, spec), _row(1, 1, 0, A, 1.0, spec), _row(1, 2, 0, C, -3.0, spec),
  ])
  return acc


def test_pass_at_k_on_crafted_predictions():
  result = _crafted().result()
  # Task a: pass@1 = (0 + 1) / 2, pass@2 = 1; task b: pass@1 = pass@2 = 0, pass@5 = 1.
  assert result['pass@1'] == pytest.approx(0.25)
  assert result['pass@2'] == pytest.approx(0.5)
  assert result['pass@5'] == pytest.approx(1.0)
  assert result['score'] == result['pass@2']
  assert result['per_task'] == {'a': 1.0, 'b': 0.0}


def test_ranking_counts_then_mean_sigmoid_q():
  ranked = _crafted().ranked(0, 0)
  np.testing.assert_array_equal(ranked[0][0], D)
  assert ranked[0][1] == 2 and ranked[0][2] == pytest.approx(0.5)
  assert ranked[1][2] == pytest.approx(1 / (1 + np.exp(-5.0)))


def test_masked_rows_ignored_and_merge_equals_single():
  spec = _spec()
  rows = [_row(0, 0, 0, A, 1.0, spec), _row(0, 1, 0, D, 0.0, spec), _row(1, 0, 0, C, 0.0, spec)]
  single = arc_evaluation.ArcAccumulator(spec)
  _update(single, rows)
  first, second = arc_evaluation.ArcAccumulator(spec), arc_evaluation.ArcAccumulator(spec)
  _update(first, rows[:1])
  _update(second, rows[1:])
  first.merge(second)
  assert first.result() == single.result()
  masked = arc_evaluation.ArcAccumulator(spec)
  meta = np.array([r[0] for r in rows])
  masked.update({'task_index': meta[:, 0], 'version_index': meta[:, 1],
                 'test_index': meta[:, 2], 'mask': np.array([True, False, False])},
                np.stack([r[1] for r in rows]), np.zeros(3))
  assert masked.result()['per_task'] == {'a': 0.5, 'b': 0.0}


def test_submission_round_trip_through_scorer(tmp_path):
  acc = _crafted()
  submission = acc.submission()
  assert submission['a'][0] == {'attempt_1': D.tolist(), 'attempt_2': A.tolist()}
  assert len(submission['a']) == 2 and len(submission['b']) == 1
  sub_path, sol_path = str(tmp_path / 'sub' / 'submission.json'), str(tmp_path / 'sol.json')
  arc_evaluation.write_submission(acc, sub_path)
  assert os.listdir(tmp_path / 'sub') == ['submission.json']
  with open(sol_path, 'w') as f:
    json.dump({'a': [A.tolist(), B.tolist()], 'b': [C.tolist()]}, f)
  scored = arc_evaluation.score_submission(sub_path, sol_path)
  assert scored['score'] == pytest.approx(acc.result()['pass@2'])
  assert scored['per_task'] == {'a': 1.0, 'b': 0.0}
  out = entry_point.run_module('experiments.score_arc', f'--submission={sub_path}',
                               f'--solutions={sol_path}')
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'score (pass@2, mean over tasks): 0.5000' in out.stdout


def test_single_candidate_is_repeated_and_missing_gets_blank():
  spec = _spec()
  acc = arc_evaluation.ArcAccumulator(spec)
  _update(acc, [_row(1, 1, 0, C, 0.0, spec)])
  sub = acc.submission()
  assert sub['b'] == [{'attempt_1': C.tolist(), 'attempt_2': C.tolist()}]
  assert sub['a'][0] == {'attempt_1': [[0]], 'attempt_2': [[0]]}


def _versions_spec(max_versions=0):
  """Task 'a' (solution A) with 4 versions, task 'b' (solution C) with 5; the first
  max_versions of each when > 0."""
  versions = ((_IDENTITY,) + (_ROT90,) * 3, (_IDENTITY,) + (_ROT90,) * 4)
  if max_versions:
    versions = tuple(v[:max_versions] for v in versions)
  return arc_evaluation.ArcEvalSpec(task_ids=('a', 'b'), versions=versions,
                                    solutions=((A,), (C,)), max_versions=max_versions)


def _versions_rows(spec, max_versions):
  # Task a: A (high q) at the identity, D at every other version.
  # Task b: B at versions 0 and 1, C at versions 2 to 4.
  a = [(0, v, A if v == 0 else D, 2.0 if v == 0 else 0.0) for v in range(4)]
  b = [(1, v, B if v < 2 else C, 0.0) for v in range(5)]
  return [_row(t, v, 0, grid, q, spec) for t, v, grid, q in a + b if v < max_versions]


def test_vote_over_the_first_versions_uses_those_rows_only():
  full_spec, subset_spec = _versions_spec(), _versions_spec(max_versions=2)
  full = arc_evaluation.ArcAccumulator(full_spec)
  _update(full, _versions_rows(full_spec, 5))
  result = full.result()
  # Every version: a ranks D (3 votes) over A (1), b ranks C (3) over B (2).
  assert (result['pass@1'], result['pass@2']) == (0.5, 1.0)
  assert (result['arc_versions'], result['mean_versions_voted']) == (0, 4.5)
  subset = arc_evaluation.ArcAccumulator(subset_spec)
  _update(subset, _versions_rows(subset_spec, 2))
  result = subset.result()
  # Versions 0 and 1: a has A and D once each, A first by its higher q; b has only B.
  assert (result['pass@1'], result['pass@2']) == (0.5, 0.5)
  assert result['per_task'] == {'a': 1.0, 'b': 0.0}
  assert (result['arc_versions'], result['mean_versions_voted']) == (2, 2.0)
  # The same rows voted under the full spec give the same pass@K.
  same_rows = arc_evaluation.ArcAccumulator(full_spec)
  _update(same_rows, _versions_rows(full_spec, 2))
  assert all(same_rows.result()[f'pass@{k}'] == result[f'pass@{k}']
             for k in arc_evaluation.PASS_KS)
  with pytest.raises(ValueError, match='version_index 2 outside the evaluation spec'):
    _update(subset, [_row(0, 2, 0, A, 0.0, full_spec)])


@pytest.mark.parametrize('submission, message', [
    ({'a': [{'attempt_1': [[1]]}]}, "task 'a', test 0: expected an object"),
    ({'a': [{'attempt_1': [[1, 2], [3]], 'attempt_2': [[1]]}]}, "task 'a', test 0, attempt_1"),
    ({'a': []}, "task 'a': expected a list of 1"),
    ({}, "task 'a' is missing"),
    ({'a': [{'attempt_1': [[1]], 'attempt_2': [[10]]}]}, 'cells must be ints 0-9'),
    ({'a': [{'attempt_1': [[1]], 'attempt_2': [[1]]}], 'z': []}, "task 'z' is not in"),
])
def test_scorer_names_the_task_in_errors(tmp_path, submission, message):
  sub_path, sol_path = tmp_path / 's.json', tmp_path / 'l.json'
  sub_path.write_text(json.dumps(submission))
  sol_path.write_text(json.dumps({'a': [[[1]]]}))
  with pytest.raises(ValueError, match=message.replace('(', r'\(')):
    arc_evaluation.score_submission(str(sub_path), str(sol_path))

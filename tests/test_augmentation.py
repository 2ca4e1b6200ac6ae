"""Tests for tiny_recursive.data.augmentation."""

import hashlib

import numpy as np
import pytest

from tiny_recursive.data import augmentation

# A valid Sudoku solution (digits 1-9) and a puzzle with some cells blanked.
_SOLUTION = np.array([
    [5, 3, 4, 6, 7, 8, 9, 1, 2], [6, 7, 2, 1, 9, 5, 3, 4, 8], [1, 9, 8, 3, 4, 2, 5, 6, 7],
    [8, 5, 9, 7, 6, 1, 4, 2, 3], [4, 2, 6, 8, 5, 3, 7, 9, 1], [7, 1, 3, 9, 2, 4, 8, 5, 6],
    [9, 6, 1, 5, 3, 7, 2, 8, 4], [2, 8, 7, 4, 1, 9, 6, 3, 5], [3, 4, 5, 2, 8, 6, 1, 7, 9]])


def _sudoku_tokens(n):
  rng = np.random.default_rng(0)
  labels = np.tile(_SOLUTION.reshape(1, 81) + 1, (n, 1))
  inputs = np.where(rng.random((n, 81)) < 0.6, 1, labels)  # Token 1 = blank.
  return inputs.astype(np.int32), labels.astype(np.int32)


def _is_valid_solution(grid):
  full = set(range(1, 10))
  return (all(set(r) == full for r in grid) and all(set(c) == full for c in grid.T) and
          all(set(grid[r:r + 3, c:c + 3].ravel()) == full
              for r in (0, 3, 6) for c in (0, 3, 6)))


def test_sudoku_augmentation_keeps_validity_and_givens():
  inputs, labels = _sudoku_tokens(64)
  puzzle = np.arange(64) % 5
  version = np.arange(64) + 1
  params = augmentation.sudoku_params(3, puzzle, version)
  aug_in = augmentation.augment_sudoku(inputs, params)
  aug_lab = augmentation.augment_sudoku(labels, params)
  non_permutations = 0
  for i in range(64):
    grid = aug_lab[i].reshape(9, 9) - 1
    assert _is_valid_solution(grid)
    given = aug_in[i] != 1
    np.testing.assert_array_equal(aug_in[i][given], aug_lab[i][given])
    assert given.sum() == (inputs[i] != 1).sum()
    # The transform is a bijection on cells: the same permutation moves the blanks.
    moved = np.take(inputs[i], params.cell_map[i])
    np.testing.assert_array_equal(moved == 1, aug_in[i] == 1)
    non_permutations += not np.array_equal(np.sort(params.cell_map[i]), np.arange(81))
  assert non_permutations == 0
  assert not np.array_equal(aug_lab, labels)


def test_sudoku_version_zero_is_identity_and_deterministic():
  inputs, labels = _sudoku_tokens(4)
  params = augmentation.sudoku_params(0, np.arange(4), np.zeros(4, int))
  np.testing.assert_array_equal(augmentation.augment_sudoku(labels, params), labels)
  a = augmentation.sudoku_params(7, np.array([3, 3]), np.array([5, 6]))
  b = augmentation.sudoku_params(7, np.array([9, 3, 3]), np.array([1, 5, 6]))
  np.testing.assert_array_equal(a.cell_map, b.cell_map[1:])
  np.testing.assert_array_equal(a.token_map, b.token_map[1:])
  assert not np.array_equal(a.cell_map[0], a.cell_map[1])


def test_sudoku_transpose_probability_about_half():
  params = augmentation.sudoku_params(1, np.zeros(2000, int), np.arange(1, 2001))
  # Transposed layouts move cell (0, 1) into a different row than cell (0, 0)'s row.
  transposed = params.cell_map[:, 0] // 9 != params.cell_map[:, 1] // 9
  assert 0.45 < transposed.mean() < 0.55


@pytest.mark.parametrize('transform_id', range(8))
def test_dihedral_inverse_and_index_maps(transform_id):
  grid = np.arange(12).reshape(3, 4)
  out = augmentation.dihedral_transform(grid, transform_id)
  np.testing.assert_array_equal(
      augmentation.inverse_dihedral_transform(out, transform_id), grid)
  square = np.arange(25).reshape(5, 5)
  maps = augmentation.dihedral_index_maps(5)
  np.testing.assert_array_equal(square.ravel()[maps[transform_id]],
                                augmentation.dihedral_transform(square, transform_id).ravel())


def test_dihedral_transforms_are_distinct():
  grid = np.arange(9).reshape(3, 3)
  outs = {augmentation.dihedral_transform(grid, t).tobytes() for t in range(8)}
  assert len(outs) == 8


def _example_set_digest(pairs):
  """Exact order-independent digest of a set of (input, output) grids."""
  items = sorted(bytes(i.shape) + i.tobytes() + b'|' + bytes(o.shape) + o.tobytes()
                 for i, o in pairs)
  return hashlib.sha256(b'#'.join(items)).digest()


def test_arc_versions_invert_exactly_and_are_distinct():
  rng = np.random.default_rng(0)
  pairs = [(rng.integers(0, 10, (3, 5)).astype(np.uint8),
            rng.integers(0, 10, (4, 2)).astype(np.uint8)) for _ in range(3)]
  versions = augmentation.draw_arc_versions(pairs, 20, seed=1, task_key='training/abc')
  assert versions[0] == augmentation.IDENTITY_ARC_VERSION
  assert len(versions) == 21
  fingerprints = set()
  for version in versions:
    assert version.colour_map[0] == 0
    assert sorted(version.colour_map) == list(range(10))
    out = [(version.apply(i), version.apply(o)) for i, o in pairs]
    for (i, o), (ai, ao) in zip(pairs, out):
      np.testing.assert_array_equal(version.invert(ai), i)
      np.testing.assert_array_equal(version.invert(ao), o)
    fingerprints.add(_example_set_digest(out))
  assert len(fingerprints) == 21
  again = augmentation.draw_arc_versions(pairs, 20, seed=1, task_key='training/abc')
  assert again == versions


def test_arc_version_draw_is_pinned():
  """The kept versions (hence every ARC puzzle identifier) must not change between releases:
  checkpoints' puzzle embeddings are indexed by them. Many candidates here are duplicates, so
  this also pins which of them is kept (the first in draw order)."""
  a = np.array([[1, 2]], np.uint8)
  b = np.array([[2, 1]], np.uint8)
  versions = augmentation.draw_arc_versions([(a, a), (b, b)], 200, seed=0, task_key='y')
  drawn = [(v.dihedral, v.colour_map) for v in versions]
  assert drawn[1:3] == [(7, (0, 6, 7, 1, 5, 9, 3, 2, 4, 8)), (0, (0, 6, 5, 8, 9, 1, 2, 4, 7, 3))]
  assert hashlib.sha256(repr(drawn).encode()).hexdigest() == (
      '73fa4ba6ea9eb176120488d1c276ebf9c87d147002e4c31576b2bad71a72b785')


def test_arc_versions_stop_at_the_retry_limit():
  # Only colours 0 and 1 and a fully symmetric grid: 9 distinct colourings exist.
  grid = np.zeros((3, 3), np.uint8)
  grid[1, 1] = 1
  versions = augmentation.draw_arc_versions([(grid, grid)], 50, seed=0, task_key='x')
  assert len(versions) == 9


def test_arc_versions_reject_reordered_duplicates():
  # The two pairs swap under a left-right flip: that version equals the original.
  a = np.array([[1, 2]], np.uint8)
  b = np.array([[2, 1]], np.uint8)
  versions = augmentation.draw_arc_versions([(a, a), (b, b)], 200, seed=0, task_key='y')
  digests = [_example_set_digest([(v.apply(a), v.apply(a)), (v.apply(b), v.apply(b))])
             for v in versions]
  assert len(set(digests)) == len(digests)
  # The set {[x y], [y x]} is symmetric in x and y: 36 unordered colour pairs, times
  # 2 orientations (horizontal, vertical).
  assert len(versions) == 36 * 2

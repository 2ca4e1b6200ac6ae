"""On-the-fly data augmentation (TRM_REFERENCE.md §7).

Every augmentation is a pure function of (seed, puzzle index, version index): version 0
is always the original puzzle, as the reference keeps the original in every group.

- Sudoku: digit relabelling 1-9, transpose with probability 1/2, permutation of the
  bands and of the rows within each band, the same for stacks and columns. The
  per-version parameters come from a counter-based hash (`_random_bits`) so that a
  whole batch is augmented with a handful of vectorised numpy operations.
- Maze: the 8 dihedral transforms (off by default: the reference adds none).
- ARC: one of 8 dihedral transforms plus a permutation of colours 1-9 (colour 0 fixed);
  a task's kept versions are drawn with a numpy Generator and versions whose example
  set equals one already kept are rejected (`draw_arc_versions`).
"""

import dataclasses
import functools
import zlib
from typing import Sequence

import numpy as np

# Dihedral transform ids follow the reference: 0 identity, 1-3 rotations by 90/180/270
# degrees (np.rot90), 4 left-right flip, 5 up-down flip, 6 transpose, 7 anti-transpose.
NUM_DIHEDRAL = 8
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)

# ARC: draws per requested version before giving up on a task (reference: 5x).
ARC_RETRIES_FACTOR = 5

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def dihedral_transform(grid: np.ndarray, transform_id: int) -> np.ndarray:
  """Applies dihedral transform `transform_id` (0-7) to a 2-D array [h, w]."""
  if transform_id == 0:
    return grid
  if transform_id in (1, 2, 3):
    return np.rot90(grid, k=transform_id)
  if transform_id == 4:
    return np.fliplr(grid)
  if transform_id == 5:
    return np.flipud(grid)
  if transform_id == 6:
    return grid.T
  if transform_id == 7:
    return np.fliplr(np.rot90(grid, k=1))
  raise ValueError(f'dihedral transform id must be in 0..7, got {transform_id}.')


def inverse_dihedral_transform(grid: np.ndarray, transform_id: int) -> np.ndarray:
  """Undoes `dihedral_transform(., transform_id)`."""
  return dihedral_transform(grid, DIHEDRAL_INVERSE[transform_id])


def dihedral_index_maps(size: int) -> np.ndarray:
  """Flat gather indices of the 8 dihedral transforms of a square grid.

  Returns int [8, size * size]: `tokens[maps[t]]` is `dihedral_transform` with id t of
  the row-major grid `tokens` [size * size].
  """
  cells = np.arange(size * size).reshape(size, size)
  return np.stack([dihedral_transform(cells, t).reshape(-1) for t in range(NUM_DIHEDRAL)])


# --- Counter-based random bits -------------------------------------------------------


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
  with np.errstate(over='ignore'):
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return x ^ (x >> np.uint64(31))


def _random_bits(seed: int, puzzle: np.ndarray, version: np.ndarray,
                 num_lanes: int, stream: int) -> np.ndarray:
  """Deterministic uint64 bits [N, num_lanes] for each (seed, puzzle, version, stream)."""
  puzzle = np.asarray(puzzle, np.uint64).reshape(-1, 1)
  version = np.asarray(version, np.uint64).reshape(-1, 1)
  with np.errstate(over='ignore'):
    key = _splitmix64(np.full_like(puzzle, np.uint64(seed & 0xFFFFFFFFFFFFFFFF)))
    key = _splitmix64(key ^ puzzle)
    key = _splitmix64(key ^ version)
    key = _splitmix64(key ^ np.uint64(stream))
    lanes = np.arange(num_lanes, dtype=np.uint64).reshape(1, -1)
    return _splitmix64(key ^ (lanes * np.uint64(0xD6E8FEB86659FD93)))


def _random_permutations(bits: np.ndarray) -> np.ndarray:
  """Row-wise random permutations [N, k] from random bits [N, k] (argsort of keys)."""
  return np.argsort(bits, axis=-1, kind='stable')


# --- Sudoku --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SudokuParams:
  """Per-row Sudoku augmentation: token map [N, 11] and cell gather map [N, 81]."""
  token_map: np.ndarray
  cell_map: np.ndarray


def sudoku_params(seed: int, puzzle: np.ndarray, version: np.ndarray) -> SudokuParams:
  """Augmentation parameters of each (puzzle, version); version 0 is the identity.

  Args:
    seed: augmentation seed.
    puzzle: int [N] puzzle indices.
    version: int [N] version indices.
  """
  puzzle = np.asarray(puzzle).reshape(-1)
  version = np.asarray(version).reshape(-1)
  n = puzzle.shape[0]
  digits = _random_permutations(_random_bits(seed, puzzle, version, 9, stream=1)) + 1
  # Tokens: 0 pad, 1 blank, digit d -> d + 1; relabel digits 1-9 only.
  token_map = np.concatenate(
      [np.zeros((n, 1), np.int64), np.ones((n, 1), np.int64), digits + 1], axis=1)
  transpose = (_random_bits(seed, puzzle, version, 1, stream=2)[:, 0] >> np.uint64(63)) == 1
  bands = _random_permutations(_random_bits(seed, puzzle, version, 3, stream=3))
  within_band = _random_permutations(
      _random_bits(seed, puzzle, version, 9, stream=4).reshape(n, 3, 3))
  stacks = _random_permutations(_random_bits(seed, puzzle, version, 3, stream=5))
  within_stack = _random_permutations(
      _random_bits(seed, puzzle, version, 9, stream=6).reshape(n, 3, 3))
  # New row i comes from old row row_perm[i]: band bands[i // 3], row within_band[i // 3, i % 3].
  row_perm = (bands[:, :, None] * 3 + within_band).reshape(n, 9)
  col_perm = (stacks[:, :, None] * 3 + within_stack).reshape(n, 9)
  src_rows = np.repeat(row_perm, 9, axis=1)  # [N, 81], value for cell (i, j) at i * 9 + j
  src_cols = np.tile(col_perm, (1, 9))
  # Transposing first means the source cell (a, b) of the transposed grid is (b, a).
  cell_map = np.where(transpose[:, None], src_cols * 9 + src_rows, src_rows * 9 + src_cols)
  identity = version == 0
  token_map[identity] = np.arange(11)
  cell_map[identity] = np.arange(81)
  return SudokuParams(token_map=token_map, cell_map=cell_map)


def augment_sudoku(tokens: np.ndarray, params: SudokuParams) -> np.ndarray:
  """Applies per-row Sudoku augmentations to tokens int [N, 81]; returns int32 [N, 81]."""
  moved = np.take_along_axis(tokens, params.cell_map, axis=1)
  return np.take_along_axis(params.token_map, moved.astype(np.int64), axis=1).astype(np.int32)


# --- Maze ----------------------------------------------------------------------------


def augment_dihedral(tokens: np.ndarray, transform_ids: np.ndarray, size: int) -> np.ndarray:
  """Applies per-row dihedral transforms to square token grids int [N, size * size]."""
  maps = dihedral_index_maps(size)
  return np.take_along_axis(tokens, maps[np.asarray(transform_ids) % NUM_DIHEDRAL], axis=1)


# --- ARC -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ArcVersion:
  """One ARC augmentation: a dihedral transform and a colour map [10] (0 -> 0)."""
  dihedral: int
  colour_map: tuple[int, ...]

  @property
  def colour_array(self) -> np.ndarray:
    return np.asarray(self.colour_map, np.uint8)

  def apply(self, grid: np.ndarray) -> np.ndarray:
    """Maps colours then applies the dihedral transform; returns uint8 [h', w']."""
    return np.ascontiguousarray(dihedral_transform(self.colour_array[grid], self.dihedral))

  def invert(self, grid: np.ndarray) -> np.ndarray:
    """Undoes `apply`: inverse dihedral, then the inverse colour map."""
    inverse_colours = np.argsort(self.colour_array).astype(np.uint8)
    return np.ascontiguousarray(
        inverse_colours[inverse_dihedral_transform(np.asarray(grid), self.dihedral)])


IDENTITY_ARC_VERSION = ArcVersion(dihedral=0, colour_map=tuple(range(10)))


def random_arc_version(rng: np.random.Generator) -> ArcVersion:
  """Draws a dihedral transform and a permutation of colours 1-9."""
  dihedral = int(rng.integers(0, NUM_DIHEDRAL))
  colours = (0,) + tuple(int(c) for c in rng.permutation(np.arange(1, 10)))
  return ArcVersion(dihedral=dihedral, colour_map=colours)


def task_seed_key(task_key: str) -> int:
  """A stable 32-bit key of a task name (independent of Python's hash salt)."""
  return zlib.crc32(task_key.encode('utf-8'))


@functools.lru_cache(maxsize=4096)
def _position_weights(shape: tuple[int, int], role: int) -> np.ndarray:
  """Random uint64 weights [h * w, 2] of the cells of a grid of `shape` in pair slot `role`.

  Cached (at most 30 x 30 x 2 shapes and roles), so returned read-only.
  """
  cells = np.arange(shape[0] * shape[1], dtype=np.uint64)
  key = (role * 31 + shape[0]) * 31 + shape[1]
  weights = _random_bits(0x5EED, np.full(cells.shape, key), cells, 2, stream=13).reshape(-1, 2)
  weights.flags.writeable = False
  return weights


def _colour_sums(grids: Sequence[np.ndarray]) -> np.ndarray:
  """Per colour, the summed position weights of each pair: uint64 [num_pairs, 10, 2].

  The content hash of a pair under a colour map m is sum_c m[c] * sums[c] (wrapping
  uint64 arithmetic, two independent 64-bit lanes): a function of the mapped grids and
  their shapes only, so identical example sets give identical hashes.
  """
  sums = np.zeros((len(grids) // 2, 10, 2), np.uint64)
  colours = np.arange(10).reshape(10, 1)
  for index, grid in enumerate(grids):
    onehot = (grid.reshape(1, -1) == colours).astype(np.uint64)
    # An integer matrix product: [10, h * w] @ [h * w, 2], wrapping like the sum it is.
    sums[index // 2] += onehot @ _position_weights(tuple(grid.shape), index % 2)
  return sums


def draw_arc_versions(pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                      num_augmentations: int, seed: int, task_key: str) -> list[ArcVersion]:
  """The reference's version set of one task: the original plus distinct augmentations.

  Candidates are drawn until `num_augmentations` versions besides the original are
  kept, at most ARC_RETRIES_FACTOR * num_augmentations draws; a candidate is rejected
  when its transformed example set (all of the task's pairs, as a multiset) equals that
  of a version already kept. Example sets are compared by a 128-bit content hash that is
  linear in the colour map, so all candidates are hashed in a few array operations.
  Deterministic in (seed, task_key).

  Args:
    pairs: all (input, output) uint8 grids of the task (training and test pairs).
    num_augmentations: augmented versions wanted besides the original.
    seed: augmentation seed.
    task_key: stable task name, e.g. 'evaluation/00576224'.

  Returns:
    Kept versions, the identity first.
  """
  kept = [IDENTITY_ARC_VERSION]
  if num_augmentations <= 0 or not pairs:
    return kept
  max_draws = ARC_RETRIES_FACTOR * num_augmentations
  rng = np.random.default_rng([seed, task_seed_key(task_key)])
  dihedral = rng.integers(0, NUM_DIHEDRAL, size=max_draws)
  colour_maps = np.concatenate(
      [np.zeros((max_draws, 1), np.int64),
       rng.permuted(np.tile(np.arange(1, 10), (max_draws, 1)), axis=1)], axis=1)
  # sums[t]: uint64 [num_pairs, 10, 2] of the task under dihedral transform t.
  sums = np.stack([
      _colour_sums([dihedral_transform(np.asarray(g, np.uint8), t)
                    for pair in pairs for g in pair]) for t in range(NUM_DIHEDRAL)])
  # hashes[k, e, lane] = sum_c colour_maps[k, c] * sums[dihedral[k], e, c, lane].
  maps = np.concatenate([np.arange(10).reshape(1, 10), colour_maps]).astype(np.uint64)
  transforms = np.concatenate([[0], dihedral])
  hashes = (sums[transforms] * maps[:, None, :, None]).sum(axis=2, dtype=np.uint64)
  # Example order does not matter: sort each candidate's pairs by their hash.
  order = np.argsort(hashes[:, :, 0], axis=1, kind='stable')
  hashes = np.take_along_axis(hashes, order[:, :, None], axis=1)
  # A candidate is kept if no earlier row (the identity is row 0) has its fingerprint: the
  # first occurrences of each distinct row, in draw order, up to num_augmentations of them.
  rows = np.ascontiguousarray(hashes.reshape(len(hashes), -1))
  fingerprints = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
  _, first = np.unique(fingerprints, return_index=True)
  candidates = np.sort(first)[1:num_augmentations + 1] - 1
  kept.extend(ArcVersion(dihedral=d, colour_map=tuple(m)) for d, m in
              zip(dihedral[candidates].tolist(), colour_maps[candidates].tolist()))
  return kept


def fresh_arc_version(seed: int, task_key: str, epoch: int) -> ArcVersion:
  """A new random version of a task for `epoch` (fresh_augmentation mode)."""
  return random_arc_version(np.random.default_rng([seed, task_seed_key(task_key), epoch, 7]))

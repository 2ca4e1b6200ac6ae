"""Tests for tiny_recursive.data.arc_encoding."""

import numpy as np
import pytest

from tiny_recursive.data import arc_encoding


def test_encode_layout_by_hand():
  grid = np.array([[3, 0], [9, 1], [2, 2]], np.uint8)
  canvas = arc_encoding.encode_grid(grid, (1, 2)).reshape(30, 30)
  expected = np.zeros((30, 30), np.int32)
  expected[1:4, 2:4] = grid + 2
  expected[4, 2:4] = 1  # Row below the grid, within its columns.
  expected[1:4, 4] = 1  # Column right of the grid, within its rows.
  np.testing.assert_array_equal(canvas, expected)


def test_markers_clipped_at_the_canvas_edge():
  grid = np.ones((30, 28), np.uint8)
  canvas = arc_encoding.encode_grid(grid, (0, 2)).reshape(30, 30)
  assert (canvas[:, 2:] == 3).all() and (canvas[:, :2] == 0).all()
  full = arc_encoding.encode_grid(np.zeros((30, 30), np.uint8)).reshape(30, 30)
  assert (full == 2).all()


def test_encode_rejects_grid_that_does_not_fit():
  with pytest.raises(ValueError, match='does not fit'):
    arc_encoding.encode_grid(np.zeros((5, 5), np.uint8), (26, 0))


@pytest.mark.parametrize('shape', [(1, 1), (3, 7), (30, 30), (30, 1), (12, 30)])
def test_decode_inverts_encode_at_origin(shape):
  rng = np.random.default_rng(sum(shape))
  grid = rng.integers(0, 10, shape).astype(np.uint8)
  np.testing.assert_array_equal(arc_encoding.decode_grid(arc_encoding.encode_grid(grid)), grid)


def _reference_crop(canvas):
  """Straightforward loop version of the crop rule, for comparison."""
  canvas = canvas.reshape(30, 30)
  best_area, best = 0, (0, 0)
  width = 30
  for rows in range(1, 31):
    for c in range(width):
      if not 2 <= canvas[rows - 1, c] <= 11:
        width = c
        break
    if rows * width > best_area:
      best_area, best = rows * width, (rows, width)
  return (canvas[:best[0], :best[1]] - 2).astype(np.uint8)


def test_decode_matches_loop_crop_on_noisy_canvases():
  rng = np.random.default_rng(0)
  for _ in range(200):
    canvas = rng.choice([0, 1, 2, 5, 11], size=900, p=[0.02, 0.03, 0.45, 0.45, 0.05])
    np.testing.assert_array_equal(arc_encoding.decode_grid(canvas), _reference_crop(canvas))


def test_decode_empty_when_first_token_is_not_a_colour():
  canvas = np.full(900, 2)
  canvas[0] = 1
  assert arc_encoding.decode_grid(canvas).shape == (0, 0)


def test_random_offset_fits_both_grids():
  rng = np.random.default_rng(0)
  offsets = np.array([arc_encoding.random_offset(rng, (5, 28), (27, 3)) for _ in range(500)])
  assert offsets[:, 0].min() == 0 and offsets[:, 0].max() == 3
  assert offsets[:, 1].min() == 0 and offsets[:, 1].max() == 2


def test_encode_grids_batch_matches_single():
  grids = [np.full((2, 3), 4, np.uint8), np.full((1, 1), 0, np.uint8)]
  offsets = np.array([[0, 0], [5, 6]])
  batch = arc_encoding.encode_grids(grids, offsets)
  for i, grid in enumerate(grids):
    np.testing.assert_array_equal(batch[i], arc_encoding.encode_grid(grid, tuple(offsets[i])))

"""ARC grids <-> 30x30 token canvases (TRM_REFERENCE.md §2).

Token layout of a canvas (900 tokens, row-major): 0 = pad, 1 = end-of-grid marker,
colour c = token c + 2. A grid of shape [h, w] is written at offset (r, c); the marker
is written along the row just below the grid (columns c .. c + w - 1) and the column
just right of it (rows r .. r + h - 1), wherever those lie inside the canvas.
"""

from typing import Sequence

import numpy as np

CANVAS_SIZE = 30
SEQ_LEN = CANVAS_SIZE * CANVAS_SIZE
PAD_TOKEN = 0
EOS_TOKEN = 1
COLOUR_OFFSET = 2
NUM_COLOURS = 10
VOCAB_SIZE = COLOUR_OFFSET + NUM_COLOURS


def check_grid(grid: np.ndarray, where: str = 'grid') -> np.ndarray:
  """Validates an ARC grid (2-D, at most 30x30, colours 0-9); returns it as uint8."""
  grid = np.asarray(grid)
  if grid.ndim != 2:
    raise ValueError(f'{where}: expected a 2-D grid, got shape {grid.shape}.')
  if not (1 <= grid.shape[0] <= CANVAS_SIZE and 1 <= grid.shape[1] <= CANVAS_SIZE):
    raise ValueError(f'{where}: grid shape {grid.shape} outside 1x1 .. 30x30.')
  if grid.size and (grid.min() < 0 or grid.max() >= NUM_COLOURS):
    raise ValueError(f'{where}: colours must lie in 0-9, got {grid.min()}..{grid.max()}.')
  return grid.astype(np.uint8)


def write_grid(canvas: np.ndarray, grid: np.ndarray, offset: tuple[int, int]) -> None:
  """Writes `grid` [h, w] and its end markers into `canvas` [30, 30] in place."""
  rows, cols = grid.shape
  r, c = offset
  if r < 0 or c < 0 or r + rows > CANVAS_SIZE or c + cols > CANVAS_SIZE:
    raise ValueError(f'grid of shape {grid.shape} does not fit at offset {offset}.')
  canvas[r:r + rows, c:c + cols] = grid.astype(canvas.dtype) + COLOUR_OFFSET
  if r + rows < CANVAS_SIZE:
    canvas[r + rows, c:c + cols] = EOS_TOKEN
  if c + cols < CANVAS_SIZE:
    canvas[r:r + rows, c + cols] = EOS_TOKEN


def encode_grid(grid: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
  """Encodes one grid [h, w] at `offset`; returns int32 tokens [900]."""
  canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE), np.int32)
  write_grid(canvas, np.asarray(grid), offset)
  return canvas.reshape(SEQ_LEN)


def encode_grids(grids: Sequence[np.ndarray],
                 offsets: np.ndarray | None = None) -> np.ndarray:
  """Encodes N grids; `offsets` int [N, 2] (None: all at (0, 0)). Returns int32 [N, 900]."""
  canvases = np.zeros((len(grids), CANVAS_SIZE, CANVAS_SIZE), np.int32)
  for i, grid in enumerate(grids):
    offset = (0, 0) if offsets is None else (int(offsets[i, 0]), int(offsets[i, 1]))
    write_grid(canvases[i], grid, offset)
  return canvases.reshape(len(grids), SEQ_LEN)


def random_offset(rng: np.random.Generator, input_shape: tuple[int, int],
                  output_shape: tuple[int, int]) -> tuple[int, int]:
  """Draws a top-left offset at which both the input and the output grid fit."""
  max_r = CANVAS_SIZE - max(input_shape[0], output_shape[0])
  max_c = CANVAS_SIZE - max(input_shape[1], output_shape[1])
  return int(rng.integers(0, max_r + 1)), int(rng.integers(0, max_c + 1))


def decode_grid(tokens: np.ndarray) -> np.ndarray:
  """Crops a predicted canvas back to a grid, as the reference evaluator does.

  Scanning rows from the top, the usable width is the run of colour tokens from the
  left edge, shrinking to the narrowest run seen so far; the crop is the (rows, width)
  rectangle of largest area (the first one on ties). Returns uint8 colours [h, w],
  possibly of shape [0, 0] when the first token is not a colour.

  Args:
    tokens: int [900] (or [30, 30]) predicted tokens.
  """
  canvas = np.asarray(tokens).reshape(CANVAS_SIZE, CANVAS_SIZE)
  is_colour = (canvas >= COLOUR_OFFSET) & (canvas < COLOUR_OFFSET + NUM_COLOURS)
  # Run length of colour tokens from the left edge, per row.
  run = np.where(is_colour.all(axis=1), CANVAS_SIZE, np.argmin(is_colour, axis=1))
  width = np.minimum.accumulate(run)
  area = width * np.arange(1, CANVAS_SIZE + 1)
  best = int(np.argmax(area))
  if area[best] == 0:
    return np.zeros((0, 0), np.uint8)
  rows, cols = best + 1, int(width[best])
  return (canvas[:rows, :cols] - COLOUR_OFFSET).astype(np.uint8)

"""Pictures of Sudoku, maze and ARC grids for notebooks, reports and metric writers.

Inputs are the token sequences of TRM_REFERENCE.md §2 (Sudoku, maze) or plain colour grids
(ARC, already decoded from the 30x30 token canvas). Every renderer returns an RGB image as a
numpy array `uint8 [height, width, 3]`; `to_pil` and `to_float_image` convert it. Both uint8
and float32-in-[0, 1] images are accepted by `clu.metric_writers` `write_images` (its
TensorBoard writer scales by data type), so the arrays can be written as they are.

Only numpy and Pillow are used: no GUI backend is touched, so this works on headless hosts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tiny_recursive import atomic_files

ImageLike = Union[np.ndarray, Image.Image]
Colour = tuple[int, int, int]

# Sudoku tokens (§2): 0 = pad, token = digit + 1, so 1 is a blank cell, 2-10 are digits 1-9.
SUDOKU_SIZE = 9
SUDOKU_VOCAB_SIZE = 11
# Maze tokens (§2): 0 = pad, then `#`, space, `S`, `G`, `o`.
MAZE_SIZE = 30
MAZE_VOCAB_SIZE = 6
MAZE_PAD, MAZE_WALL, MAZE_OPEN, MAZE_START, MAZE_GOAL, MAZE_PATH = range(6)
ARC_MAX_SIZE = 30

WHITE: Colour = (255, 255, 255)
BLACK: Colour = (0, 0, 0)

# The palette of the ARC task viewer, indexed by colour 0-9.
ARC_PALETTE = np.array([
    (0x00, 0x00, 0x00),  # 0 black
    (0x00, 0x74, 0xD9),  # 1 blue
    (0xFF, 0x41, 0x36),  # 2 red
    (0x2E, 0xCC, 0x40),  # 3 green
    (0xFF, 0xDC, 0x00),  # 4 yellow
    (0xAA, 0xAA, 0xAA),  # 5 grey
    (0xF0, 0x12, 0xBE),  # 6 magenta
    (0xFF, 0x85, 0x1B),  # 7 orange
    (0x7F, 0xDB, 0xFF),  # 8 light blue
    (0x87, 0x0C, 0x25),  # 9 maroon
], dtype=np.uint8)
ARC_GRID_LINE: Colour = (0x55, 0x55, 0x55)

# Maze colours indexed by token.
MAZE_PALETTE = np.array([
    (0xC8, 0xC8, 0xC8),  # 0 pad: light grey, so stray pads in a prediction stand out
    (0x33, 0x33, 0x33),  # 1 wall: dark
    (0xFF, 0xFF, 0xFF),  # 2 open: white
    (0x2E, 0xCC, 0x40),  # 3 start: green
    (0xFF, 0x41, 0x36),  # 4 goal: red
    (0x00, 0x74, 0xD9),  # 5 path: blue
], dtype=np.uint8)

SUDOKU_GIVEN_DIGIT: Colour = BLACK
SUDOKU_FILLED_DIGIT: Colour = (0x00, 0x40, 0xE0)  # blue
SUDOKU_CONFLICT_FILL: Colour = (0xFF, 0xB0, 0xB0)  # light red behind a rule-breaking cell
SUDOKU_PAD_FILL: Colour = (0xD8, 0xD8, 0xD8)  # a pad token where a cell should be
SUDOKU_LINE: Colour = BLACK
SUDOKU_THIN_LINE = 1
SUDOKU_THICK_LINE = 3


def _as_int_array(values, name: str) -> np.ndarray:
  """Converts `values` to an integer numpy array, rejecting non-integral input."""
  try:
    array = np.asarray(values)
  except ValueError as error:  # Ragged nested lists.
    raise ValueError(f'{name}: expected a rectangular array of integers ({error}).') from None
  if array.dtype == object:
    raise ValueError(f'{name}: expected a rectangular array of integers, got ragged or '
                     'non-numeric input.')
  if array.size and not np.issubdtype(array.dtype, np.integer):
    if np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0):
      return array.astype(np.int64)
    raise ValueError(f'{name}: expected integer tokens, got dtype {array.dtype}.')
  return array.astype(np.int64)


def _check_tokens(tokens, side: int, vocab_size: int, name: str) -> np.ndarray:
  """Validates a `[side * side]` (or `[side, side]`) token sequence; returns `[side, side]`."""
  array = _as_int_array(tokens, name)
  if array.size != side * side or array.ndim not in (1, 2) or (
      array.ndim == 2 and array.shape != (side, side)):
    raise ValueError(f'{name}: expected {side * side} tokens (or a {side}x{side} grid), got '
                     f'shape {array.shape}.')
  bad = np.flatnonzero((array < 0) | (array >= vocab_size))
  if bad.size:
    index = int(bad[0])
    raise ValueError(f'{name}: token {int(array.reshape(-1)[index])} at position {index} is '
                     f'outside the vocabulary [0, {vocab_size}).')
  return array.reshape(side, side)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
  """Pillow's built-in font at `size` pixels (the fixed bitmap font on old Pillow)."""
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow < 10.1 has no size argument.
    return ImageFont.load_default()


def _draw_centred_text(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str,
                       font, fill: Colour) -> None:
  """Draws `text` centred in `box` = (left, top, right, bottom), right/bottom exclusive."""
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  x = box[0] + (box[2] - box[0] - (right - left)) // 2 - left
  y = box[1] + (box[3] - box[1] - (bottom - top)) // 2 - top
  draw.text((x, y), text, font=font, fill=fill)


def _new_canvas(width: int, height: int,
                colour: Colour = WHITE) -> tuple[Image.Image, ImageDraw.ImageDraw]:
  image = Image.new('RGB', (width, height), colour)
  draw = ImageDraw.Draw(image)
  # No anti-aliasing: every text pixel is exactly its colour (crisp, and testable).
  draw.fontmode = '1'
  return image, draw


def sudoku_digits(tokens) -> np.ndarray:
  """Decodes 81 Sudoku tokens into digits.

  Args:
    tokens: `[81]` or `[9, 9]` integer tokens (§2: 1 = blank, 2-10 = digits 1-9, 0 = pad).

  Returns:
    `[9, 9]` int array: digit 1-9, 0 for a blank cell, -1 for a pad token.
  """
  grid = _check_tokens(tokens, SUDOKU_SIZE, SUDOKU_VOCAB_SIZE, 'sudoku tokens')
  return np.where(grid == 0, -1, grid - 1)


def sudoku_conflicts(digits: np.ndarray) -> np.ndarray:
  """Marks the cells whose digit repeats within their row, column or 3x3 box.

  Args:
    digits: `[9, 9]` digits 1-9; values <= 0 (blank, pad) never conflict.

  Returns:
    `[9, 9]` bool array, True where the cell breaks a Sudoku rule.
  """
  digits = np.asarray(digits)
  if digits.shape != (SUDOKU_SIZE, SUDOKU_SIZE):
    raise ValueError(f'sudoku digits: expected shape (9, 9), got {digits.shape}.')
  conflict = np.zeros(digits.shape, dtype=bool)
  filled = digits > 0
  for r in range(SUDOKU_SIZE):
    for c in range(SUDOKU_SIZE):
      if not filled[r, c]:
        continue
      d = digits[r, c]
      box_r, box_c = 3 * (r // 3), 3 * (c // 3)
      # Each unit contains the cell itself once, so a repeat means a count above one.
      if (np.count_nonzero(digits[r, :] == d) > 1
          or np.count_nonzero(digits[:, c] == d) > 1
          or np.count_nonzero(digits[box_r:box_r + 3, box_c:box_c + 3] == d) > 1):
        conflict[r, c] = True
  return conflict


def sudoku_cell_box(row: int, col: int, cell_size: int) -> tuple[int, int, int, int]:
  """Pixel box (left, top, right, bottom; right/bottom exclusive) inside cell (row, col).

  The box excludes grid lines; it is where `render_sudoku` paints the cell's background.
  """
  def start(i: int) -> int:
    return i * cell_size + (SUDOKU_THICK_LINE if i % 3 == 0 else SUDOKU_THIN_LINE)
  return start(col), start(row), (col + 1) * cell_size, (row + 1) * cell_size


def render_sudoku(tokens, givens=None, *, highlight_conflicts: bool = True,
                  cell_size: int = 32) -> np.ndarray:
  """Draws a Sudoku grid with its digits.

  Args:
    tokens: `[81]` or `[9, 9]` tokens of the grid to show (a puzzle, label or prediction).
    givens: optional `[81]` puzzle tokens; its digits are drawn black and every other digit
      of `tokens` blue. Without it every digit is black.
    highlight_conflicts: paint light red the cells that break a rule: a digit repeated in
      its row, column or box, or a digit different from the given at that cell.
    cell_size: pixels per cell (grid lines included), at least 12.

  Returns:
    `uint8 [9 * cell_size + 3, 9 * cell_size + 3, 3]` RGB image. Pad tokens are grey cells.
  """
  if cell_size < 12:
    raise ValueError(f'render_sudoku: cell_size must be at least 12, got {cell_size}.')
  digits = sudoku_digits(tokens)
  if givens is None:
    is_given = np.ones(digits.shape, dtype=bool)
    contradicts_given = np.zeros(digits.shape, dtype=bool)
  else:
    given_digits = _check_tokens(givens, SUDOKU_SIZE, SUDOKU_VOCAB_SIZE, 'sudoku givens') - 1
    is_given = given_digits > 0
    contradicts_given = is_given & (digits != given_digits)
  conflict = (sudoku_conflicts(digits) | contradicts_given) if highlight_conflicts else (
      np.zeros(digits.shape, dtype=bool))

  side = SUDOKU_SIZE * cell_size + SUDOKU_THICK_LINE
  image, draw = _new_canvas(side, side)
  font = _font(int(cell_size * 0.7))
  for r in range(SUDOKU_SIZE):
    for c in range(SUDOKU_SIZE):
      box = sudoku_cell_box(r, c, cell_size)
      fill = SUDOKU_CONFLICT_FILL if conflict[r, c] else (
          SUDOKU_PAD_FILL if digits[r, c] < 0 else WHITE)
      draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=fill)
      if digits[r, c] > 0:
        colour = SUDOKU_GIVEN_DIGIT if is_given[r, c] else SUDOKU_FILLED_DIGIT
        _draw_centred_text(draw, box, str(digits[r, c]), font, colour)
  for i in range(SUDOKU_SIZE + 1):
    width = SUDOKU_THICK_LINE if i % 3 == 0 else SUDOKU_THIN_LINE
    offset = i * cell_size
    draw.rectangle((offset, 0, offset + width - 1, side - 1), fill=SUDOKU_LINE)
    draw.rectangle((0, offset, side - 1, offset + width - 1), fill=SUDOKU_LINE)
  return np.asarray(image, dtype=np.uint8).copy()


def render_maze(tokens, *, cell_size: int = 8) -> np.ndarray:
  """Draws a 30x30 maze: wall dark, open white, start green, goal red, path blue.

  Args:
    tokens: `[900]` or `[30, 30]` maze tokens (§2: 1 `#`, 2 space, 3 `S`, 4 `G`, 5 `o`,
      0 pad, drawn light grey).
    cell_size: pixels per cell.

  Returns:
    `uint8 [30 * cell_size, 30 * cell_size, 3]` RGB image.
  """
  if cell_size < 1:
    raise ValueError(f'render_maze: cell_size must be positive, got {cell_size}.')
  grid = _check_tokens(tokens, MAZE_SIZE, MAZE_VOCAB_SIZE, 'maze tokens')
  image = MAZE_PALETTE[grid]
  return np.repeat(np.repeat(image, cell_size, axis=0), cell_size, axis=1)


def render_arc_grid(grid, *, cell_size: int = 16) -> np.ndarray:
  """Draws an ARC grid in the standard 10-colour palette with thin grid lines.

  Args:
    grid: `[height, width]` colours 0-9, 1 <= height, width <= 30.
    cell_size: pixels per cell including its 1-pixel line, at least 2.

  Returns:
    `uint8 [height * cell_size + 1, width * cell_size + 1, 3]`; cell (r, c) fills the
    pixels `[r * cell_size + 1, (r + 1) * cell_size)` in each direction.
  """
  if cell_size < 2:
    raise ValueError(f'render_arc_grid: cell_size must be at least 2, got {cell_size}.')
  grid = _as_int_array(grid, 'ARC grid')
  if grid.ndim != 2 or not (1 <= grid.shape[0] <= ARC_MAX_SIZE
                            and 1 <= grid.shape[1] <= ARC_MAX_SIZE):
    raise ValueError(f'ARC grid: expected a [height, width] grid with sides in '
                     f'[1, {ARC_MAX_SIZE}], got shape {grid.shape}.')
  bad = np.argwhere((grid < 0) | (grid > 9))
  if bad.size:
    r, c = (int(v) for v in bad[0])
    raise ValueError(f'ARC grid: colour {int(grid[r, c])} at row {r}, column {c} is outside '
                     '0-9.')
  height, width = grid.shape
  image = np.empty((height * cell_size + 1, width * cell_size + 1, 3), dtype=np.uint8)
  image[...] = ARC_GRID_LINE
  cells = np.repeat(np.repeat(ARC_PALETTE[grid], cell_size, axis=0), cell_size, axis=1)
  image[1:, 1:] = cells
  image[::cell_size, :] = ARC_GRID_LINE
  image[:, ::cell_size] = ARC_GRID_LINE
  return image


def to_pil(image: ImageLike) -> Image.Image:
  """Converts a `uint8 [H, W, 3]` (or float in [0, 1]) array to an RGB PIL image."""
  if isinstance(image, Image.Image):
    return image.convert('RGB')
  return Image.fromarray(to_uint8_image(image))


def to_uint8_image(image: ImageLike) -> np.ndarray:
  """Returns `uint8 [H, W, 3]`; float input is read as [0, 1] and rounded."""
  if isinstance(image, Image.Image):
    return np.asarray(image.convert('RGB'), dtype=np.uint8).copy()
  array = np.asarray(image)
  if array.ndim != 3 or array.shape[2] != 3:
    raise ValueError(f'image: expected an RGB array [height, width, 3], got shape '
                     f'{array.shape}.')
  if array.dtype == np.uint8:
    return array
  if np.issubdtype(array.dtype, np.floating):
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
  raise ValueError(f'image: expected uint8 or float pixels, got dtype {array.dtype}.')


def to_float_image(image: ImageLike) -> np.ndarray:
  """Returns `float32 [H, W, 3]` in [0, 1], the other layout image summaries accept."""
  return to_uint8_image(image).astype(np.float32) / 255.0


def side_by_side(images: Sequence[ImageLike], titles: Sequence[str] | None = None, *,
                 gap: int = 8, title_size: int = 14,
                 background: Colour = WHITE) -> np.ndarray:
  """Places panels left to right, each with its caption above, top-aligned.

  A panel narrower than its caption is centred under it.

  Args:
    images: RGB panels (arrays `[H_i, W_i, 3]` or PIL images), possibly of different sizes.
    titles: one caption per panel, or None for no captions.
    gap: pixels around and between panels.
    title_size: caption font size in pixels.
    background: colour of the margins.

  Returns:
    `uint8 [height, width, 3]` composite image.
  """
  if not images:
    raise ValueError('side_by_side: expected at least one image.')
  if titles is not None and len(titles) != len(images):
    raise ValueError(f'side_by_side: got {len(images)} images but {len(titles)} titles.')
  panels = [to_uint8_image(image) for image in images]
  font = _font(title_size)
  caption_height = title_size + gap if titles is not None else 0
  # A caption wider than its panel widens the panel's slot instead of being clipped.
  measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  slots = [
      max(p.shape[1], 0 if titles is None else
          int(np.ceil(measure.textlength(str(titles[i]), font=font))))
      for i, p in enumerate(panels)]
  height = 2 * gap + caption_height + max(p.shape[0] for p in panels)
  width = gap + sum(slot + gap for slot in slots)
  canvas, draw = _new_canvas(width, height, background)
  x = gap
  for index, panel in enumerate(panels):
    left = x + (slots[index] - panel.shape[1]) // 2
    canvas.paste(Image.fromarray(panel), (left, gap + caption_height))
    if titles is not None:
      _draw_centred_text(draw, (x, gap, x + slots[index], gap + title_size),
                         str(titles[index]), font, BLACK)
    x += slots[index] + gap
  return np.asarray(canvas, dtype=np.uint8).copy()


def add_caption(image: ImageLike, text: str, *, size: int = 14) -> np.ndarray:
  """Returns `image` with a white strip holding `text` above it (e.g. "step 3/16")."""
  return side_by_side([image], [text], gap=0, title_size=size)


def save_png(image: ImageLike, path: str | os.PathLike) -> None:
  """Writes `image` as a PNG at `path` (a local path) atomically."""
  pil = to_pil(image)
  atomic_files.write_atomically(path, lambda temp: pil.save(temp, format='PNG'))


def save_gif(frames: Sequence[ImageLike], path: str | os.PathLike,
             duration_ms: int = 500, *, loop: int = 0) -> None:
  """Writes an animated GIF (e.g. the answer after each supervision step) atomically.

  Frames of different sizes are padded with white to the largest. Pillow merges identical
  consecutive frames into one that lasts their summed duration; caption frames (see
  `add_caption`) to keep one frame per step.

  Args:
    frames: RGB frames, at least one.
    path: local output path.
    duration_ms: display time of each frame in milliseconds.
    loop: number of repetitions, 0 = forever.
  """
  if not frames:
    raise ValueError('save_gif: expected at least one frame.')
  if duration_ms <= 0:
    raise ValueError(f'save_gif: duration_ms must be positive, got {duration_ms}.')
  arrays = [to_uint8_image(frame) for frame in frames]
  height = max(a.shape[0] for a in arrays)
  width = max(a.shape[1] for a in arrays)
  padded = []
  for array in arrays:
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    canvas[:array.shape[0], :array.shape[1]] = array
    padded.append(Image.fromarray(canvas))

  def write(temp_path: str) -> None:
    padded[0].save(temp_path, format='GIF', save_all=True, append_images=padded[1:],
                   duration=duration_ms, loop=loop)

  atomic_files.write_atomically(path, write)


def render_prediction(data_name: str, inputs, prediction, target) -> np.ndarray:
  """Input | prediction | target panels of one example of a benchmark's token format (§2).

  Used for TensorBoard images of evaluation predictions. ARC canvases are cropped to their
  grids as the evaluation decodes them (an empty crop renders as a 1x1 black grid).
  """
  if data_name == 'sudoku_extreme':
    panels = [render_sudoku(inputs), render_sudoku(prediction, givens=inputs),
              render_sudoku(target, givens=inputs)]
  elif data_name == 'maze_hard':
    panels = [render_maze(inputs), render_maze(prediction), render_maze(target)]
  elif data_name == 'arc_agi':
    from tiny_recursive.data import arc_encoding  # pylint: disable=g-import-not-at-top

    def grid(tokens):
      decoded = arc_encoding.decode_grid(np.asarray(tokens))
      return decoded if decoded.size else np.zeros((1, 1), np.uint8)

    panels = [render_arc_grid(grid(t)) for t in (inputs, prediction, target)]
  else:
    raise ValueError(f'render_prediction: unknown data set {data_name!r}.')
  return side_by_side(panels, ['input', 'prediction', 'target'])

"""Tests for tiny_recursive.rendering: exact pixels, sizes, files and input validation."""

import os

import numpy as np
import pytest
from PIL import Image

from tiny_recursive import rendering

# A valid Sudoku solution (digits row-major) and a puzzle made from it.
SOLUTION = ('483921657967345821251876493548132976729564138'
            '136798245372689514814253769695417382')
PUZZLE = ('..3.2.6..9..3.5..1..18.64....81.29..7.......8'
          '..67.82....26.95..8..2.3..9..5.1.3..')


def _tokens(text):
  return np.array([1 if ch == '.' else int(ch) + 1 for ch in text], dtype=np.int32)


def _cell_colours(image, box):
  left, top, right, bottom = box
  return {tuple(p) for p in image[top:bottom, left:right].reshape(-1, 3)}


def _background(image, box):
  # One pixel just inside the cell's top-left corner: never part of a digit.
  return tuple(image[box[1] + 1, box[0] + 1])


class TestSudoku:

  def test_size_and_thick_lines(self):
    image = rendering.render_sudoku(_tokens(SOLUTION), cell_size=20)
    assert image.shape == (9 * 20 + 3, 9 * 20 + 3, 3)
    assert image.dtype == np.uint8
    # Thick box lines at 0, 60, 120, 180 are 3 px wide; thin lines 1 px.
    for offset in (0, 60, 120, 180):
      assert np.all(image[:, offset:offset + 3] == 0)
      assert np.all(image[offset:offset + 3, :] == 0)
    assert np.all(image[:, 20] == 0)
    assert tuple(image[10, 21]) == (255, 255, 255)

  def test_givens_black_filled_blue(self):
    image = rendering.render_sudoku(_tokens(SOLUTION), givens=_tokens(PUZZLE))
    # (0, 2) is a given 3; (0, 0) was blank in the puzzle, filled with 4.
    given = _cell_colours(image, rendering.sudoku_cell_box(0, 2, 32))
    filled = _cell_colours(image, rendering.sudoku_cell_box(0, 0, 32))
    assert given == {(255, 255, 255), rendering.SUDOKU_GIVEN_DIGIT}
    assert filled == {(255, 255, 255), rendering.SUDOKU_FILLED_DIGIT}

  def test_blank_cell_is_empty_and_digits_differ(self):
    image = rendering.render_sudoku(_tokens(PUZZLE))
    assert _cell_colours(image, rendering.sudoku_cell_box(0, 0, 32)) == {(255, 255, 255)}
    box_3 = rendering.sudoku_cell_box(0, 2, 32)
    box_2 = rendering.sudoku_cell_box(0, 4, 32)
    crop = lambda b: image[b[1]:b[3], b[0]:b[2]]
    assert not np.array_equal(crop(box_3), crop(box_2))
    assert np.count_nonzero(np.all(crop(box_3) == 0, axis=-1)) > 10

  def test_conflicts_highlighted(self):
    tokens = _tokens(SOLUTION)
    tokens[1] = tokens[0]  # Row 0 now holds two 4s at columns 0 and 1.
    digits = rendering.sudoku_digits(tokens)
    expected = np.zeros((9, 9), dtype=bool)
    expected[0, 0] = expected[0, 1] = True
    expected[3, 1] = True  # Column 1 already had its 4 in row 3.
    assert digits[3, 1] == 4
    np.testing.assert_array_equal(rendering.sudoku_conflicts(digits), expected)
    image = rendering.render_sudoku(tokens)
    for r in range(9):
      for c in range(9):
        colour = _background(image, rendering.sudoku_cell_box(r, c, 32))
        want = rendering.SUDOKU_CONFLICT_FILL if expected[r, c] else (255, 255, 255)
        assert colour == want, (r, c)
    plain = rendering.render_sudoku(tokens, highlight_conflicts=False)
    assert _background(plain, rendering.sudoku_cell_box(0, 0, 32)) == (255, 255, 255)

  def test_contradicting_a_given_is_highlighted(self):
    puzzle = _tokens(PUZZLE)
    puzzle[2] = 5 + 1  # The given at (0, 2) is now 5; the valid solution there has 3.
    answer = _tokens(SOLUTION)
    assert not rendering.sudoku_conflicts(rendering.sudoku_digits(answer)).any()
    image = rendering.render_sudoku(answer, givens=puzzle)
    for r in range(9):
      for c in range(9):
        want = rendering.SUDOKU_CONFLICT_FILL if (r, c) == (0, 2) else (255, 255, 255)
        assert _background(image, rendering.sudoku_cell_box(r, c, 32)) == want, (r, c)

  def test_pad_cell_grey(self):
    tokens = _tokens(SOLUTION)
    tokens[80] = 0
    image = rendering.render_sudoku(tokens)
    assert _cell_colours(image, rendering.sudoku_cell_box(8, 8, 32)) == {
        rendering.SUDOKU_PAD_FILL}

  @pytest.mark.parametrize('tokens, message', [
      (np.ones(80, dtype=int), '81 tokens'),
      (np.full(81, 11), 'token 11 at position 0'),
      (np.concatenate([np.ones(80, int), [-1]]), 'position 80'),
      (np.full(81, 1.5), 'integer'),
  ])
  def test_invalid_tokens(self, tokens, message):
    with pytest.raises(ValueError, match=message):
      rendering.render_sudoku(tokens)

  def test_invalid_givens(self):
    with pytest.raises(ValueError, match='sudoku givens'):
      rendering.render_sudoku(_tokens(SOLUTION), givens=np.ones(9))


class TestMaze:

  def test_colours_and_size(self):
    grid = np.full((30, 30), rendering.MAZE_WALL)
    grid[1, 1:29] = rendering.MAZE_OPEN
    grid[1, 1] = rendering.MAZE_START
    grid[1, 28] = rendering.MAZE_GOAL
    grid[1, 5:10] = rendering.MAZE_PATH
    grid[29, 29] = rendering.MAZE_PAD
    image = rendering.render_maze(grid.reshape(-1), cell_size=4)
    assert image.shape == (120, 120, 3)
    cell = lambda r, c: image[4 * r:4 * r + 4, 4 * c:4 * c + 4]
    expected = {
        (0, 0): (0x33, 0x33, 0x33), (1, 2): (255, 255, 255), (1, 1): (0x2E, 0xCC, 0x40),
        (1, 28): (0xFF, 0x41, 0x36), (1, 7): (0x00, 0x74, 0xD9), (29, 29): (0xC8, 0xC8, 0xC8)}
    for (r, c), colour in expected.items():
      assert np.all(cell(r, c) == colour), (r, c)

  def test_invalid(self):
    with pytest.raises(ValueError, match='900 tokens'):
      rendering.render_maze(np.ones(899, dtype=int))
    with pytest.raises(ValueError, match='token 6 at position 3'):
      rendering.render_maze(np.array([1, 1, 1, 6] + [1] * 896))


class TestArc:

  def test_palette_and_lines(self):
    grid = np.arange(10).reshape(2, 5)
    image = rendering.render_arc_grid(grid, cell_size=10)
    assert image.shape == (21, 51, 3)
    hex_colours = ['000000', '0074D9', 'FF4136', '2ECC40', 'FFDC00', 'AAAAAA', 'F012BE',
                   'FF851B', '7FDBFF', '870C25']
    for colour in range(10):
      r, c = divmod(colour, 5)
      want = tuple(int(hex_colours[colour][i:i + 2], 16) for i in (0, 2, 4))
      interior = image[10 * r + 1:10 * r + 10, 10 * c + 1:10 * c + 10]
      assert np.all(interior == want), colour
    line = rendering.ARC_GRID_LINE
    assert np.all(image[0] == line) and np.all(image[10] == line) and np.all(image[20] == line)
    assert np.all(image[:, 0] == line) and np.all(image[:, 50] == line)

  def test_accepts_lists(self):
    image = rendering.render_arc_grid([[4]], cell_size=3)
    assert image.shape == (4, 4, 3)
    assert tuple(image[1, 1]) == (0xFF, 0xDC, 0x00)

  @pytest.mark.parametrize('grid, message', [
      ([[1, 2], [3]], 'rectangular'),
      (np.zeros((31, 2), int), 'shape'),
      (np.zeros((0, 2), int), 'shape'),
      (np.zeros(5, int), 'shape'),
      ([[0, 10]], 'colour 10 at row 0, column 1'),
  ])
  def test_invalid(self, grid, message):
    with pytest.raises(ValueError, match=message):
      rendering.render_arc_grid(grid)


class TestComposeAndSave:

  def test_side_by_side_layout(self):
    a = np.zeros((10, 20, 3), np.uint8)
    b = np.full((30, 40, 3), 200, np.uint8)
    out = rendering.side_by_side([a, b], ['in', 'out'], gap=4, title_size=12)
    assert out.shape == (2 * 4 + 12 + 4 + 30, 4 + 20 + 4 + 40 + 4, 3)
    top = 4 + 12 + 4
    np.testing.assert_array_equal(out[top:top + 10, 4:24], a)
    np.testing.assert_array_equal(out[top:top + 30, 28:68], b)
    assert np.all(out[top + 10:, 4:24] == 255)  # Shorter panel padded with background.
    caption = out[4:16, 4:24]
    assert np.any(np.all(caption == 0, axis=-1))  # The caption is drawn in black.
    # A caption wider than its panel widens the slot; the panel is centred under it.
    wide = rendering.side_by_side([a], ['a much longer caption'], gap=4, title_size=12)
    assert wide.shape[1] > 20 + 8
    left = (wide.shape[1] - 8 - 20) // 2 + 4
    np.testing.assert_array_equal(wide[top:top + 10, left:left + 20], a)
    with pytest.raises(ValueError, match='2 images but 1 titles'):
      rendering.side_by_side([a, b], ['x'])

  def test_float_round_trip(self):
    image = rendering.render_arc_grid(np.arange(9).reshape(3, 3))
    as_float = rendering.to_float_image(image)
    assert as_float.dtype == np.float32 and as_float.min() >= 0 and as_float.max() <= 1
    np.testing.assert_array_equal(rendering.to_uint8_image(as_float), image)

  def test_save_png_exact(self, tmp_path):
    image = rendering.render_maze(np.arange(900) % 6)
    path = tmp_path / 'sub' / 'maze.png'
    rendering.save_png(image, path)
    with Image.open(path) as loaded:
      np.testing.assert_array_equal(np.asarray(loaded.convert('RGB')), image)
    assert os.listdir(path.parent) == ['maze.png']  # No temporary file left behind.

  def test_save_gif_frames(self, tmp_path):
    frames = [rendering.add_caption(rendering.render_arc_grid(np.full((3, 3), k)), f'step {k}')
              for k in range(5)]
    path = tmp_path / 'steps.gif'
    rendering.save_gif(frames, path, duration_ms=120)
    with Image.open(path) as gif:
      assert gif.n_frames == 5
      for k in range(5):
        gif.seek(k)
        assert gif.info['duration'] == 120
        np.testing.assert_array_equal(np.asarray(gif.convert('RGB')), frames[k])
    assert os.listdir(tmp_path) == ['steps.gif']

  def test_invalid_images(self, tmp_path):
    with pytest.raises(ValueError, match='RGB array'):
      rendering.save_png(np.zeros((4, 4)), tmp_path / 'x.png')
    with pytest.raises(ValueError, match='at least one frame'):
      rendering.save_gif([], tmp_path / 'x.gif')
    assert not os.listdir(tmp_path)

  def test_failed_write_leaves_nothing(self, tmp_path, monkeypatch):
    rendering.save_png(np.zeros((2, 2, 3), np.uint8), tmp_path / 'x.png')
    before = (tmp_path / 'x.png').read_bytes()

    def broken_save(self, fp, *args, **kwargs):
      with open(fp, 'wb') as f:
        f.write(b'partial')
      raise OSError('disk full')

    monkeypatch.setattr(Image.Image, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'):
      rendering.save_png(np.full((2, 2, 3), 9, np.uint8), tmp_path / 'x.png')
    assert os.listdir(tmp_path) == ['x.png']
    assert (tmp_path / 'x.png').read_bytes() == before  # The old file is intact.


@pytest.mark.parametrize('data_name, seq_len, vocab', [
    ('sudoku_extreme', 81, 11), ('maze_hard', 900, 6), ('arc_agi', 900, 12)])
def test_render_prediction_has_three_panels(data_name, seq_len, vocab):
  rng = np.random.default_rng(0)
  tokens = [rng.integers(1, vocab, seq_len) for _ in range(3)]
  if data_name == 'arc_agi':  # A 2x3 grid at the origin with its end markers.
    canvas = np.zeros((30, 30), np.int64)
    canvas[:2, :3] = rng.integers(2, 12, (2, 3))
    canvas[2, :3] = 1
    canvas[:2, 3] = 1
    tokens = [canvas.reshape(-1)] * 3
  image = rendering.render_prediction(data_name, *tokens)
  single = {'sudoku_extreme': lambda: rendering.render_sudoku(tokens[0]),
            'maze_hard': lambda: rendering.render_maze(tokens[0]),
            'arc_agi': lambda: rendering.render_arc_grid(np.zeros((2, 3), np.int64))}[data_name]()
  assert image.dtype == np.uint8 and image.shape[2] == 3
  assert image.shape[1] >= 3 * single.shape[1]
  with pytest.raises(ValueError, match='unknown data set'):
    rendering.render_prediction('nope', *tokens)

"""Validation of Maze-Hard rows: characters, S/G, and the label's path being shortest."""

import numpy as np

from datasets.maze_hard import grid
from datasets.sudoku_extreme import hub_csv


def parse_row(row: hub_csv.HubRow) -> tuple[np.ndarray, np.ndarray]:
  """Validates one maze row and returns `(inputs, labels)`, int32 tokens `[900]` each.

  Checks: both strings are 900 characters of `# SGo` (no `o` in the question), exactly one
  `S` and one `G`, the answer equals the question except for `o` on open cells, and the
  `o` cells form a shortest 4-connected S-G path (checked with BFS).

  Raises:
    hub_csv.DataFormatError: naming the file, line and what was expected.
  """
  where = row.where()
  for column, text, allowed in (('question', row.question, '# SG'),
                                ('answer', row.answer, grid.CHARS)):
    if len(text) != grid.NUM_CELLS:
      raise hub_csv.DataFormatError(
          f'{where}: {column} must have {grid.NUM_CELLS} characters, got {len(text)}.')
    bad = sorted(set(text) - set(allowed))
    if bad:
      raise hub_csv.DataFormatError(
          f'{where}: {column} has characters {bad!r}; expected only {allowed!r}.')
  question = np.frombuffer(row.question.encode('ascii'), np.uint8).reshape(grid.SIZE, grid.SIZE)
  answer = np.frombuffer(row.answer.encode('ascii'), np.uint8).reshape(grid.SIZE, grid.SIZE)
  for char in 'SG':
    count = int((question == ord(char)).sum())
    if count != 1:
      raise hub_csv.DataFormatError(
          f'{where}: question must have exactly one {char!r}, got {count}.')
  on_path = answer == ord('o')
  changed = question != answer
  if np.any(changed & ~(on_path & (question == ord(' ')))):
    r, c = np.argwhere(changed & ~(on_path & (question == ord(' '))))[0]
    raise hub_csv.DataFormatError(
        f'{where}: answer differs from the question at row {r}, column {c} '
        f'({chr(question[r, c])!r} -> {chr(answer[r, c])!r}); only open cells may become '
        "'o'.")
  start = tuple(int(i) for i in np.argwhere(question == ord('S'))[0])
  goal = tuple(int(i) for i in np.argwhere(question == ord('G'))[0])
  steps = grid.distances(question != ord('#'), start)[goal]
  if steps < 0:
    raise hub_csv.DataFormatError(f'{where}: no path from S to G.')
  path_cells = on_path | (question == ord('S')) | (question == ord('G'))
  path_steps = grid.distances(path_cells, start)[goal]
  if path_steps != steps or int(on_path.sum()) != steps - 1:
    raise hub_csv.DataFormatError(
        f"{where}: the 'o' cells of the answer ({int(on_path.sum())} cells) are not a "
        f'shortest S-G path (shortest path: {steps} steps, {steps - 1} cells between S and '
        'G).')
  return grid.to_tokens(row.question), grid.to_tokens(row.answer)

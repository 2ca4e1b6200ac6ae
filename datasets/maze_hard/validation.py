"""Validation of Maze-Hard rows: characters, S/G, and the label's path being shortest."""

import dataclasses

import numpy as np

from datasets.maze_hard import grid
from datasets.sudoku_extreme import hub_csv


@dataclasses.dataclass(frozen=True)
class PathCheck:
  """How an answer's `o` cells stand against its maze.

  is_path: the answer keeps every wall, S and G, marks `o` on open cells only, and the `o`
    cells connect S to G. is_shortest: besides, they are a shortest S-G path. reason: what
    is wrong, or what the path is.
  """
  is_path: bool
  is_shortest: bool
  reason: str


def check_path(question: np.ndarray, answer: np.ndarray) -> PathCheck:
  """Checks the `o` cells of `answer` against `question`, both `[30, 30]` character codes
  (`np.uint8` of `# SGo`), the question holding exactly one `S` and one `G`."""
  on_path = answer == ord('o')
  changed = (question != answer) & ~(on_path & (question == ord(' ')))
  if np.any(changed):
    r, c = (int(i) for i in np.argwhere(changed)[0])
    return PathCheck(False, False, (
        f'answer differs from the question at row {r + 1}, column {c + 1} '
        f'({chr(question[r, c])!r} -> {chr(answer[r, c])!r}; {int(changed.sum())} such '
        "cell(s)); only open cells may become 'o'"))
  start = tuple(int(i) for i in np.argwhere(question == ord('S'))[0])
  goal = tuple(int(i) for i in np.argwhere(question == ord('G'))[0])
  steps = int(grid.distances(question != ord('#'), start)[goal])
  if steps < 0:
    return PathCheck(False, False, 'no path from S to G')
  path_cells = on_path | (question == ord('S')) | (question == ord('G'))
  path_steps = int(grid.distances(path_cells, start)[goal])
  cells = int(on_path.sum())
  if path_steps == steps and cells == steps - 1:
    return PathCheck(True, True, f"the 'o' cells form a shortest S-G path ({steps} steps)")
  how = ('they do not connect S to G' if path_steps < 0 else
         f'they connect S to G in {path_steps} steps')
  return PathCheck(path_steps >= 0, False, (
      f"the 'o' cells of the answer ({cells} cells) are not a shortest S-G path: {how} "
      f'(shortest path: {steps} steps, {steps - 1} cells between S and G)'))


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
  check = check_path(question, answer)
  if not check.is_shortest:
    raise hub_csv.DataFormatError(f'{where}: {check.reason}.')
  return grid.to_tokens(row.question), grid.to_tokens(row.answer)

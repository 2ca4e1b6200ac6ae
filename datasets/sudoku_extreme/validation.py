"""Parsing and validation of Sudoku rows into tokens (TRM_REFERENCE.md §2).

Tokens: 0 = pad, digit d is token d + 1, so a blank cell (digit 0, written `.` or `0`)
is token 1 and the digits 1-9 are tokens 2-10.
"""

import numpy as np

from datasets.sudoku_extreme import hub_csv

NUM_CELLS = 81
_QUESTION_CHARS = frozenset('.0123456789')
_ANSWER_CHARS = frozenset('123456789')


def _digits(text: str) -> np.ndarray:
  """`[81]` int32 digits, blank = 0."""
  return np.frombuffer(text.replace('.', '0').encode('ascii'), np.uint8).astype(np.int32) - ord('0')


def _unit_violation(grid: np.ndarray) -> str | None:
  """Describes the first row/column/box of a `[9, 9]` solution that is not 1..9."""
  boxes = grid.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)
  units = np.concatenate([grid, grid.T, boxes])  # [27, 9]
  valid = (np.sort(units, axis=1) == np.arange(1, 10)).all(axis=1)
  if valid.all():
    return None
  index = int(np.argmin(valid))
  kind = ('row', 'column', 'box')[index // 9]
  return f'{kind} {index % 9 + 1} repeats a digit ({"".join(map(str, units[index]))})'


def answer_problem(question: np.ndarray, answer: np.ndarray) -> str | None:
  """Why `answer` is not the solution of `question`, or None when it is.

  Args:
    question: int digits [81], 0 for a blank.
    answer: int digits [81], each 1-9.

  Returns:
    'not a valid Sudoku: <first broken unit>' or 'contradicts the given at row R, column C
    (question Q, answer A)', or None.
  """
  violation = _unit_violation(np.asarray(answer).reshape(9, 9))
  if violation:
    return f'not a valid Sudoku: {violation}'
  mismatch = np.flatnonzero((question > 0) & (question != answer))
  if mismatch.size:
    cell = int(mismatch[0])
    return (f'contradicts the given at row {cell // 9 + 1}, column {cell % 9 + 1} '
            f'(question {question[cell]}, answer {answer[cell]})')
  return None


def parse_row(row: hub_csv.HubRow) -> tuple[np.ndarray, np.ndarray]:
  """Validates one Sudoku row and returns `(inputs, labels)`, int32 tokens `[81]` each.

  Raises:
    hub_csv.DataFormatError: naming file and line, if a string is not 81 characters, has a
      character outside `.0-9` (question) / `1-9` (answer), the answer is not a valid
      Sudoku, or the answer contradicts a given of the question.
  """
  for column, text, allowed in (('question', row.question, _QUESTION_CHARS),
                                ('answer', row.answer, _ANSWER_CHARS)):
    if len(text) != NUM_CELLS:
      raise hub_csv.DataFormatError(
          f'{row.where()}: {column} must have {NUM_CELLS} characters, got {len(text)}.')
    bad = sorted(set(text) - allowed)
    if bad:
      raise hub_csv.DataFormatError(
          f'{row.where()}: {column} has characters {bad!r}; expected only '
          f'{"".join(sorted(allowed))!r}.')
  question = _digits(row.question)
  answer = _digits(row.answer)
  problem = answer_problem(question, answer)
  if problem:
    # 'answer is not a valid Sudoku: ...' / 'answer contradicts the given ...'.
    verb = 'is ' if problem.startswith('not ') else ''
    raise hub_csv.DataFormatError(f'{row.where()}: answer {verb}{problem}.')
  return question + 1, answer + 1

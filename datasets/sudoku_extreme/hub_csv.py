"""Reader for the CSV layout of the hub puzzle data sets (Sudoku-Extreme, Maze-Hard).

Both `sapientinc/sudoku-extreme` and `sapientinc/maze-30x30-hard-1k` store one puzzle per
line with the columns `source,question,answer,rating`.
"""

import csv
import dataclasses
import os
from typing import Iterator

EXPECTED_HEADER = ('source', 'question', 'answer', 'rating')


class DataFormatError(ValueError):
  """Bad input data; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class HubRow:
  """One data row of a hub CSV file."""
  path: str
  line: int  # 1-based line number in the file (the header is line 1).
  source: str
  question: str
  answer: str
  rating: int

  def where(self) -> str:
    return f'{self.path}:{self.line}'


def read_hub_csv(path: str | os.PathLike[str]) -> Iterator[HubRow]:
  """Yields the data rows of a hub CSV file, checking the header and field counts.

  Raises:
    DataFormatError: missing/wrong header, wrong number of fields, or a rating that is
      not an integer; the message names the file and line.
  """
  path = os.fspath(path)
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != EXPECTED_HEADER:
      raise DataFormatError(
          f'{path}:1: expected the header {",".join(EXPECTED_HEADER)!r}, got '
          f'{",".join(header) if header else "an empty file"!r}.')
    for fields in reader:
      line = reader.line_num
      if len(fields) != len(EXPECTED_HEADER):
        raise DataFormatError(
            f'{path}:{line}: expected {len(EXPECTED_HEADER)} comma-separated fields '
            f'({",".join(EXPECTED_HEADER)}), got {len(fields)}.')
      source, question, answer, rating = fields
      try:
        rating_value = int(rating)
      except ValueError:
        raise DataFormatError(
            f'{path}:{line}: rating must be an integer, got {rating!r}.') from None
      yield HubRow(path, line, source, question, answer, rating_value)


def count_rows(path: str | os.PathLike[str]) -> int:
  """Number of data rows (header excluded) of a hub CSV file."""
  return sum(1 for _ in read_hub_csv(path))

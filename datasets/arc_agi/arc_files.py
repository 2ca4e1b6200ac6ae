"""Reading and validating ARC task files (TRM_REFERENCE.md §7).

Two layouts are read into the same `Task` records:
  Kaggle:   `arc-agi_<subset>_challenges.json` = {task_id: {"train": [{"input", "output"}],
            "test": [{"input"}]}} and `arc-agi_<subset>_solutions.json` = {task_id:
            [output grid per test input]}.
  GitHub:   one `<task_id>.json` per task, {"train": [...], "test": [{"input", "output"}]}
            (fchollet/ARC-AGI, arcprize/ARC-AGI-2 `data/<split>/`, ConceptARC `corpus/`).
"""

import dataclasses
import glob
import json
import os

import numpy as np

MAX_SIDE = 30
NUM_COLOURS = 10

Pair = tuple[np.ndarray, np.ndarray]


class ArcFormatError(ValueError):
  """Bad ARC data; the message names the file and task id."""


@dataclasses.dataclass(frozen=True)
class Task:
  """One ARC task: demonstration (`train`) and `test` pairs of uint8 grids `[h, w]`."""
  task_id: str
  subset: str
  train: tuple[Pair, ...]
  test: tuple[Pair, ...]


def challenges_path(directory: str, subset: str) -> str:
  return os.path.join(directory, f'arc-agi_{subset}_challenges.json')


def solutions_path(directory: str, subset: str) -> str:
  return os.path.join(directory, f'arc-agi_{subset}_solutions.json')


def to_grid(value: object, where: str) -> np.ndarray:
  """Validates a JSON grid (list of equal-length lists of ints 0-9, sides 1..30).

  Returns:
    uint8 `[h, w]`.
  Raises:
    ArcFormatError: with `where` (file, task id, pair) in the message.
  """
  if not isinstance(value, list) or not value:
    raise ArcFormatError(f'{where}: expected a non-empty list of rows, got {value!r:.80}.')
  height = len(value)
  if not all(isinstance(row, list) for row in value):
    raise ArcFormatError(f'{where}: every row must be a list.')
  width = len(value[0])
  ragged = [i for i, row in enumerate(value) if len(row) != width]
  if ragged:
    raise ArcFormatError(f'{where}: ragged grid: row {ragged[0]} has {len(value[ragged[0]])} '
                         f'cells, row 0 has {width}.')
  if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
    raise ArcFormatError(f'{where}: grid is {height}x{width}; each side must be 1..{MAX_SIDE}.')
  for r, row in enumerate(value):
    for c, cell in enumerate(row):
      if type(cell) is not int or not 0 <= cell < NUM_COLOURS:  # pylint: disable=unidiomatic-typecheck
        raise ArcFormatError(f'{where}: cell ({r}, {c}) is {cell!r}; colours are ints 0-9.')
  return np.asarray(value, np.uint8)


def _parse_json(path: str) -> object:
  """The JSON value in `path`; ArcFormatError naming the file if it is not valid JSON."""
  with open(path, encoding='utf-8') as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ArcFormatError(f'{path}: not valid JSON ({e}).') from None


def load_json_object(path: str, what: str = 'ARC') -> dict:
  """Reads a JSON object (tasks keyed by id, or one task) with errors naming the file.

  Raises:
    FileNotFoundError: no file at `path`.
    ArcFormatError: not valid JSON, or not an object.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{what}: expected the file {path}.')
  data = _parse_json(path)
  if not isinstance(data, dict):
    raise ArcFormatError(f'{path}: expected a JSON object (tasks keyed by id, or one task).')
  return data


def read_pairs(items: object, where: str, need_output: bool) -> list[tuple[np.ndarray, object]]:
  """Validated (input, output or None) grids of a task's `train` or `test` list."""
  if not isinstance(items, list) or not items:
    raise ArcFormatError(f'{where}: expected a non-empty list of pairs.')
  pairs = []
  for i, item in enumerate(items):
    if not isinstance(item, dict) or 'input' not in item:
      raise ArcFormatError(f'{where}[{i}]: expected an object with "input".')
    if need_output and 'output' not in item:
      raise ArcFormatError(f'{where}[{i}]: missing "output".')
    grid_in = to_grid(item['input'], f'{where}[{i}].input')
    grid_out = to_grid(item['output'], f'{where}[{i}].output') if 'output' in item else None
    pairs.append((grid_in, grid_out))
  return pairs


def _task(task_id: str, subset: str, body: object, solutions: object | None,
          where: str, solutions_where: str) -> Task:
  """Builds a validated Task from challenge JSON `body` and optional separate solutions."""
  if not isinstance(body, dict) or 'train' not in body or 'test' not in body:
    raise ArcFormatError(f'{where}: expected an object with "train" and "test".')
  train = read_pairs(body['train'], f'{where}.train', need_output=True)
  test = read_pairs(body['test'], f'{where}.test', need_output=solutions is None)
  if solutions is not None:
    if not isinstance(solutions, list) or len(solutions) != len(test):
      count = len(solutions) if isinstance(solutions, list) else solutions
      raise ArcFormatError(f'{solutions_where}: expected {len(test)} solution grids (one per '
                           f'test input), got {count!r:.80}.')
    test = [(grid_in, to_grid(sol, f'{solutions_where}[{i}]'))
            for i, ((grid_in, _), sol) in enumerate(zip(test, solutions))]
  return Task(task_id, subset, tuple(train), tuple(test))


def load_kaggle_subset(directory: str, subset: str) -> dict[str, Task]:
  """Validated tasks of `subset` from the Kaggle-layout files in `directory`.

  Raises:
    FileNotFoundError: a file is missing; ArcFormatError: bad data (file and task id named),
    including a task without solutions or solutions for an unknown task.
  """
  challenges_file = challenges_path(directory, subset)
  solutions_file = solutions_path(directory, subset)
  challenges = load_json_object(challenges_file)
  solutions = load_json_object(solutions_file)
  missing = sorted(set(challenges) - set(solutions))
  if missing:
    raise ArcFormatError(f'{solutions_file}: no solutions for task {missing[0]!r} '
                         f'({len(missing)} task(s) missing).')
  extra = sorted(set(solutions) - set(challenges))
  if extra:
    raise ArcFormatError(f'{solutions_file}: solutions for task {extra[0]!r}, which is not in '
                         f'{challenges_file}.')
  return {
      task_id: _task(task_id, subset, body, solutions[task_id],
                     f'{challenges_file}: task {task_id}', f'{solutions_file}: task {task_id}')
      for task_id, body in sorted(challenges.items())
  }


def load_task_files(pattern: str, subset: str, exclude_suffix: str | None = None
                    ) -> dict[str, Task]:
  """Validated tasks from one-JSON-per-task files matching the glob `pattern`.

  The task id is the file name without `.json`; files ending in `exclude_suffix` are
  skipped (ConceptARC's `*Minimal.json` are not part of the 160-task corpus).
  """
  tasks = {}
  for path in sorted(glob.glob(pattern)):
    task_id = os.path.splitext(os.path.basename(path))[0]
    if exclude_suffix and path.endswith(exclude_suffix):
      continue
    if task_id in tasks:
      raise ArcFormatError(f'{path}: task id {task_id!r} appears twice under {pattern}.')
    body = _parse_json(path)
    tasks[task_id] = _task(task_id, subset, body, None, f'{path}: task {task_id}', path)
  if not tasks:
    raise FileNotFoundError(f'ARC: no task files match {pattern}.')
  return tasks

"""ARC evaluation: voting over augmented versions, pass@K, Kaggle submission, scorer (§8).

For each test input, the prediction of every augmented version is cropped
(`arc_encoding.decode_grid`), mapped back by the inverse of its version (inverse
dihedral, inverse colour map) and voted: identical grids are counted and their
sigmoid(q_halt) averaged; candidates rank by count, then by mean q (then by first
appearance). pass@K: the solution is among the top K candidates; a task's score is the
fraction of its test inputs solved; the headline is pass@2 averaged over tasks. Voting
uses whatever rows arrive, so a subset of versions (`eval.arc_versions`) votes over those
only; `result()` reports the protocol (`arc_versions`) and the versions that voted.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from tiny_recursive import atomic_files
from tiny_recursive.data import arc_encoding
from tiny_recursive.data import puzzle_sources

PASS_KS = (1, 2, 5, 10, 100, 1000)
HEADLINE_K = 2


# The evaluation tasks as the eval pipeline enumerates them (defined beside that pipeline).
ArcEvalSpec = puzzle_sources.ArcEvalSpec


def _grid_key(grid: np.ndarray) -> bytes:
  return bytes(grid.shape) + grid.tobytes()


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * x))


class ArcAccumulator:
  """Collects predictions across eval batches, then votes.

  Usage: `update(batch, predictions, q_halt)` per eval batch, then `result()` and
  `submission()`. With several processes, `merge` the other processes' accumulators
  (or gather predictions to one process) before `result()`.
  """

  def __init__(self, spec: ArcEvalSpec, pass_ks: Sequence[int] = PASS_KS):
    self.spec = spec
    self.pass_ks = tuple(pass_ks)
    # (task_index, test_index) -> {grid key: [count, sum of q, grid, first-seen order]}.
    self._votes: dict[tuple[int, int], dict[bytes, list]] = {}
    self._seen = 0
    # Per task, which of its versions contributed a vote.
    self._voted_versions = [np.zeros(len(v), bool) for v in spec.versions]

  def update(self, batch_meta: Mapping[str, np.ndarray], predictions: np.ndarray,
             q_halt_logits: np.ndarray) -> None:
    """Adds one batch.

    Args:
      batch_meta: `task_index`, `version_index`, `test_index` int [B] and optionally
        `mask` bool [B] (rows where it is False are ignored).
      predictions: predicted tokens int [B, 900].
      q_halt_logits: float [B] halting logits.
    """
    predictions = np.asarray(predictions)
    q = _sigmoid(np.asarray(q_halt_logits, np.float64).reshape(-1))
    tasks = np.asarray(batch_meta['task_index']).reshape(-1)
    versions = np.asarray(batch_meta['version_index']).reshape(-1)
    tests = np.asarray(batch_meta['test_index']).reshape(-1)
    mask = np.asarray(batch_meta.get('mask', np.ones(len(tasks), bool))).reshape(-1)
    if not (len(predictions) == len(q) == len(tasks) == len(mask)):
      raise ValueError(f'ArcAccumulator.update: {len(predictions)} predictions, {len(q)} q '
                       f'values, {len(tasks)} metadata rows and {len(mask)} mask rows.')
    for row in np.flatnonzero(mask):
      t, v, i = int(tasks[row]), int(versions[row]), int(tests[row])
      if not 0 <= t < len(self.spec.task_ids) or not 0 <= v < len(self.spec.versions[t]):
        raise ValueError(f'ArcAccumulator.update: row {row} has task_index {t}, '
                         f'version_index {v} outside the evaluation spec.')
      grid = self.spec.versions[t][v].invert(arc_encoding.decode_grid(predictions[row]))
      self._add((t, i), grid, 1, float(q[row]))
      self._voted_versions[t][v] = True

  def _add(self, where: tuple[int, int], grid: np.ndarray, count: int, q_sum: float) -> None:
    candidates = self._votes.setdefault(where, {})
    key = _grid_key(grid)
    if key not in candidates:
      candidates[key] = [0, 0.0, grid, self._seen]
      self._seen += 1
    candidates[key][0] += count
    candidates[key][1] += q_sum

  def merge(self, other: 'ArcAccumulator') -> None:
    """Adds another accumulator's votes (e.g. another process's)."""
    for where, candidates in other._votes.items():  # pylint: disable=protected-access
      for count, q_sum, grid, _ in sorted(candidates.values(), key=lambda c: c[3]):
        self._add(where, grid, count, q_sum)
    other_voted = other._voted_versions  # pylint: disable=protected-access
    for mine, theirs in zip(self._voted_versions, other_voted):
      mine |= theirs

  def ranked(self, task_index: int, test_index: int) -> list[tuple[np.ndarray, int, float]]:
    """Candidates of one test input as (grid, count, mean q), best first."""
    candidates = self._votes.get((task_index, test_index), {}).values()
    ordered = sorted(candidates, key=lambda c: (-c[0], -c[1] / c[0], c[3]))
    return [(c[2], c[0], c[1] / c[0]) for c in ordered]

  def result(self) -> dict[str, Any]:
    """pass@K averaged over tasks (`pass@K`), per-task pass@2 and the headline score.

    Also the protocol: `arc_versions` (the spec's max_versions, 0: every kept version) and
    `mean_versions_voted` (distinct versions that voted, averaged over the spec's tasks).
    """
    if self.spec.solutions is None:
      raise ValueError('ArcAccumulator.result: the evaluation spec has no solutions.')
    per_task = np.zeros((len(self.spec.task_ids), len(self.pass_ks)))
    for t, solutions in enumerate(self.spec.solutions):
      for i, solution in enumerate(solutions):
        ranked = [_grid_key(grid) for grid, _, _ in self.ranked(t, i)]
        target = _grid_key(np.asarray(solution, np.uint8))
        rank = ranked.index(target) if target in ranked else None
        for j, k in enumerate(self.pass_ks):
          per_task[t, j] += rank is not None and rank < k
      per_task[t] /= max(len(solutions), 1)
    metrics: dict[str, Any] = {f'pass@{k}': float(per_task[:, j].mean()) if len(per_task)
                               else 0.0 for j, k in enumerate(self.pass_ks)}
    headline = self.pass_ks.index(HEADLINE_K) if HEADLINE_K in self.pass_ks else 0
    metrics['score'] = metrics[f'pass@{self.pass_ks[headline]}']
    metrics['per_task'] = {task_id: float(per_task[t, headline])
                           for t, task_id in enumerate(self.spec.task_ids)}
    metrics['tasks_with_predictions'] = len({t for t, _ in self._votes})
    metrics['arc_versions'] = int(self.spec.max_versions)
    metrics['mean_versions_voted'] = float(np.mean([v.sum() for v in self._voted_versions])
                                           if self._voted_versions else 0.0)
    return metrics

  def submission(self) -> dict[str, list[dict[str, list[list[int]]]]]:
    """Kaggle submission: per task, one {attempt_1, attempt_2} per test input.

    The top grid is repeated when there is a single candidate; empty crops are skipped;
    a test input without any valid prediction gets [[0]] for both attempts.
    """
    out = {}
    for t, task_id in enumerate(self.spec.task_ids):
      if self.spec.solutions is not None:
        num_tests = len(self.spec.solutions[t])
      else:
        num_tests = 1 + max([i for (tt, i) in self._votes if tt == t], default=0)
      entries = []
      for i in range(num_tests):
        # An empty crop is no valid answer: the next candidate takes its place.
        grids = [grid.tolist() for grid, _, _ in self.ranked(t, i) if grid.size][:2]
        grids = grids or [[[0]]]
        entries.append({'attempt_1': grids[0], 'attempt_2': grids[-1] if len(grids) < 2
                        else grids[1]})
      out[task_id] = entries
    return out


def write_json_atomic(obj: Any, path: str) -> None:
  """Writes JSON to a temporary file in the same folder, then renames it over `path`."""

  def write(temp_path: str) -> None:
    with open(temp_path, 'w', encoding='utf-8') as f:
      json.dump(obj, f)

  atomic_files.write_atomically(path, write)


def write_submission(accumulator: ArcAccumulator, path: str) -> None:
  """Writes the Kaggle `submission.json` atomically."""
  write_json_atomic(accumulator.submission(), path)


# --- Scorer ---------------------------------------------------------------------------


def _check_grid(grid: Any, where: str) -> list[list[int]]:
  if (not isinstance(grid, list) or not grid or
      not all(isinstance(row, list) and row for row in grid)):
    raise ValueError(f'{where}: expected a non-empty list of non-empty lists of ints.')
  width = len(grid[0])
  for r, row in enumerate(grid):
    if len(row) != width:
      raise ValueError(f'{where}: row {r} has {len(row)} cells, row 0 has {width}.')
    for value in row:
      if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise ValueError(f'{where}: row {r} holds {value!r}; cells must be ints 0-9.')
  return grid


def _load_json(path: str, what: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{what} {path}: not valid JSON ({e}).') from e


def score_submission(submission_path: str, solutions_path: str) -> dict[str, Any]:
  """Scores a Kaggle submission against a solutions file.

  A test input counts as solved when attempt_1 or attempt_2 equals its solution; a
  task's score is the fraction of its test inputs solved; `score` is the mean over the
  solutions' tasks.

  Returns:
    {'score', 'num_tasks', 'tasks_fully_solved', 'per_task': {task_id: score}}.

  Raises:
    ValueError naming the file, task and test index when a file is malformed or the
    submission misses a task or a test input.
  """
  submission = _load_json(submission_path, 'submission')
  solutions = _load_json(solutions_path, 'solutions')
  for obj, path, what in ((submission, submission_path, 'submission'),
                          (solutions, solutions_path, 'solutions')):
    if not isinstance(obj, dict):
      raise ValueError(f'{what} {path}: expected a JSON object keyed by task id.')
  extra = sorted(set(submission) - set(solutions))
  if extra:
    raise ValueError(f'submission {submission_path}: task {extra[0]!r} is not in the '
                     f'solutions {solutions_path} ({len(extra)} unknown tasks).')
  per_task = {}
  for task_id, task_solutions in solutions.items():
    where = f'solutions {solutions_path}, task {task_id!r}'
    if not isinstance(task_solutions, list) or not task_solutions:
      raise ValueError(f'{where}: expected a non-empty list of output grids.')
    if task_id not in submission:
      raise ValueError(f'submission {submission_path}: task {task_id!r} is missing.')
    entries = submission[task_id]
    sub_where = f'submission {submission_path}, task {task_id!r}'
    if not isinstance(entries, list) or len(entries) != len(task_solutions):
      raise ValueError(f'{sub_where}: expected a list of {len(task_solutions)} attempt '
                       f'objects (one per test input), got {type(entries).__name__} of '
                       f'length {len(entries) if isinstance(entries, list) else "-"}.')
    solved = 0
    for i, (entry, solution) in enumerate(zip(entries, task_solutions)):
      solution = _check_grid(solution, f'{where}, test {i}')
      if not isinstance(entry, dict) or 'attempt_1' not in entry or 'attempt_2' not in entry:
        raise ValueError(f'{sub_where}, test {i}: expected an object with "attempt_1" and '
                         '"attempt_2".')
      attempts = [_check_grid(entry[name], f'{sub_where}, test {i}, {name}')
                  for name in ('attempt_1', 'attempt_2')]
      solved += any(attempt == solution for attempt in attempts)
    per_task[task_id] = solved / len(task_solutions)
  scores = list(per_task.values())
  return {'score': float(np.mean(scores)) if scores else 0.0, 'num_tasks': len(scores),
          'tasks_fully_solved': int(sum(s == 1.0 for s in scores)), 'per_task': per_task}

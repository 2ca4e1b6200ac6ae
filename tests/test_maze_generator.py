"""Tests of the maze generator and grid helpers (datasets/maze_hard)."""

import numpy as np

from datasets.maze_hard import generator
from datasets.maze_hard import grid
from datasets.maze_hard import validation
from datasets.sudoku_extreme import hub_csv


def test_distances_and_path_counts_on_open_grid():
  open_cells = np.ones((3, 4), bool)
  dist = grid.distances(open_cells, (0, 0))
  np.testing.assert_array_equal(dist, np.add.outer(np.arange(3), np.arange(4)))
  # Monotone lattice paths from corner to corner: C(2 + 3, 2) = 10.
  assert grid.count_shortest_paths(open_cells, (0, 0), (2, 3)) == 10
  path = grid.shortest_path(open_cells, (0, 0), (2, 3))
  assert path[0] == (0, 0) and path[-1] == (2, 3) and len(path) == 6
  assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in zip(path, path[1:]))


def test_unreachable_goal():
  open_cells = np.array([[1, 0, 1]], bool)
  assert grid.distances(open_cells, (0, 0))[0, 2] == -1
  assert grid.shortest_path(open_cells, (0, 0), (0, 2)) is None
  assert grid.count_shortest_paths(open_cells, (0, 0), (0, 2)) == 0


def test_generator_is_deterministic_in_seed():
  first = list(generator.generate(3, seed=7))
  assert first == list(generator.generate(3, seed=7))
  assert [m.question for m in generator.generate(3, seed=8)] != [m.question for m in first]


def test_generated_mazes_are_hard_valid_and_unique_path():
  stats = generator.GeneratorStats()
  mazes = list(generator.generate(4, seed=3, stats=stats))
  assert stats.attempts >= 4
  assert stats.attempts == 4 + stats.rejected_too_short + stats.rejected_not_unique
  for index, maze in enumerate(mazes):
    assert maze.path_steps > generator.MIN_PATH_STEPS
    assert len(maze.question) == len(maze.answer) == 900
    assert set(maze.question) <= set('# SG') and set(maze.answer) <= set('# SGo')
    assert maze.answer.count('o') == maze.path_steps - 1
    # Independent check: BFS shortest path equals the marked path (validation module).
    row = hub_csv.HubRow('generated', index, 'g', maze.question, maze.answer, maze.path_steps)
    inputs, labels = validation.parse_row(row)
    assert inputs.shape == labels.shape == (900,)
    question = np.array(list(maze.question)).reshape(30, 30)
    start = tuple(np.argwhere(question == 'S')[0])
    goal = tuple(np.argwhere(question == 'G')[0])
    assert grid.count_shortest_paths(question != '#', start, goal) == 1


def test_exclude_skips_given_mazes():
  first = next(generator.generate(1, seed=11))
  rest = list(generator.generate(2, seed=11, exclude=frozenset({first.question})))
  assert first.question not in {m.question for m in rest}
  assert rest[0] == list(generator.generate(2, seed=11))[1]

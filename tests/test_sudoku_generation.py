"""The Sudoku solver and the hard-puzzle generator (datasets/sudoku_extreme)."""

import csv
import pathlib

import numpy as np
import pytest

from datasets.sudoku_extreme import make_hard
from datasets.sudoku_extreme import solver
from datasets.sudoku_extreme import validation

# A well-known hard puzzle (A. Inkala, 2012).
_HARD = '8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4..'


def _digits(text: str) -> list[int]:
  return [0 if ch == '.' else int(ch) for ch in text]


def test_solver_solves_a_hard_puzzle_uniquely():
  found, guesses, solution = solver.solve(_digits(_HARD), limit=2)
  assert found == 1
  assert guesses > 10  # Not solvable by singles alone.
  assert validation.answer_problem(np.array(_digits(_HARD)), np.array(solution)) is None


def test_solver_counts_several_solutions_and_none():
  assert solver.count_solutions([0] * 81, limit=3) == 3
  assert solver.count_solutions([1, 1] + [0] * 79) == 0  # Two 1s in the first row.
  # Singles alone solve a grid with one blank: no guess.
  _, _, solution = solver.solve(_digits(_HARD))
  assert solver.solve([0] + solution[1:]) == (1, 0, solution)


def test_generated_puzzles_are_unique_minimal_and_hard(tmp_path):
  path = tmp_path / 'hard.csv'
  make_hard.write_csv(str(path), count=2, seed=3, min_guesses=4)
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['source', 'question', 'answer', 'rating']
  assert len(rows) == 3
  for source, question, answer, rating in rows[1:]:
    assert source == 'generated_seed3'
    puzzle, solution = _digits(question), _digits(answer)
    assert validation.answer_problem(np.array(puzzle), np.array(solution)) is None
    assert solver.solve(puzzle, limit=2)[:1] == (1,)
    assert solver.solve(puzzle)[1] == int(rating) >= 4
    for cell in np.flatnonzero(puzzle):  # Minimal: every clue is needed.
      assert solver.count_solutions(puzzle[:cell] + [0] + puzzle[cell + 1:]) == 2
  # The same seed gives the same file.
  make_hard.write_csv(str(tmp_path / 'again.csv'), count=2, seed=3, min_guesses=4)
  assert (tmp_path / 'again.csv').read_bytes() == path.read_bytes()


@pytest.mark.parametrize('seed', [0, 1])
def test_minimal_puzzle_keeps_its_solution(seed):
  puzzle, solution = make_hard.minimal_puzzle(np.random.default_rng(seed))
  assert solver.solve(puzzle, limit=2)[0] == 1
  assert solver.solve(puzzle)[2] == solution
  assert 17 <= sum(d > 0 for d in puzzle) <= 40


def test_committed_generated_set_is_valid_and_reproducible():
  path = pathlib.Path(make_hard.__file__).parent / 'generated' / 'hard_seed1.csv'
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f))[1:]
  assert len(rows) == 200
  for _, question, answer, rating in rows:
    puzzle = _digits(question)
    found, _, solution = solver.solve(puzzle, limit=2)
    assert found == 1 and int(rating) >= 10
    assert ''.join(map(str, solution)) == answer
  # The file is what `make_hard --seed=1` writes: its first puzzle comes out again.
  first = next(make_hard.hard_puzzles(count=1, seed=1, min_guesses=10))
  assert ''.join(str(d) if d else '.' for d in first[0]) == rows[0][1]

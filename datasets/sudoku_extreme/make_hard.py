r"""Generates hard Sudoku puzzles from a seed, independent of any data set (hub CSV layout).

  python -m datasets.sudoku_extreme.make_hard --output=hard.csv [--count=200] [--seed=1] \
      [--min_guesses=10]

Each puzzle is a random solved grid with clues removed in random order for as long as the
solution stays unique, so it is minimal (removing any further clue admits a second
solution). It is kept only if a solver that propagates naked and hidden singles still has to
guess at least `--min_guesses` times (the `rating` column). With the default 10, about one
random minimal puzzle in eight qualifies; by the same count, the median puzzle of the
Sudoku-Extreme-style test file needs 16 guesses and 56 % of them at least 10. Used to check
that a trained model generalises beyond its test file: build a TFDS copy whose test split is
this file (docs/training_log.md, "Puzzles from elsewhere").
"""

import csv
import os
from typing import Sequence

from absl import flags
import numpy as np

from datasets.sudoku_extreme import hub_csv
from datasets.sudoku_extreme import solver
from experiments import cli


def minimal_puzzle(rng: np.random.Generator) -> tuple[list[int], list[int]]:
  """(puzzle, solution): a random solved grid with clues removed while the solution stays
  unique, in random order, until no clue can go."""
  _, _, solution = solver.solve([0] * 81, rng=rng)
  puzzle = list(solution)
  for cell in rng.permutation(81):
    kept = puzzle[cell]
    puzzle[cell] = 0
    if solver.count_solutions(puzzle) != 1:
      puzzle[cell] = kept
  return puzzle, solution


def hard_puzzles(count: int, seed: int, min_guesses: int):
  """Yields `count` (puzzle, solution, guesses) whose singles-propagating search needs at
  least `min_guesses` guesses."""
  rng = np.random.default_rng(seed)
  made = 0
  while made < count:
    puzzle, solution = minimal_puzzle(rng)
    guesses = solver.solve(puzzle)[1]
    if guesses >= min_guesses:
      made += 1
      yield puzzle, solution, guesses


def write_csv(path: str, count: int, seed: int, min_guesses: int) -> None:
  """Writes the puzzles with the hub's header (source, question, answer, rating)."""
  tmp = path + '.tmp'
  with open(tmp, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(hub_csv.EXPECTED_HEADER)
    for puzzle, solution, guesses in hard_puzzles(count, seed, min_guesses):
      writer.writerow([f'generated_seed{seed}', ''.join(str(d) if d else '.' for d in puzzle),
                       ''.join(map(str, solution)), guesses])
  os.replace(tmp, path)


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  if f.count < 1 or f.min_guesses < 0:
    raise ValueError(f'--count must be at least 1 and --min_guesses at least 0, got '
                     f'{f.count} and {f.min_guesses}.')
  directory = os.path.dirname(os.path.abspath(f.output))
  if not os.path.isdir(directory):
    raise ValueError(f'--output={f.output}: there is no directory {directory}.')
  write_csv(f.output, f.count, f.seed, f.min_guesses)
  print(f'wrote {f.count} puzzles to {f.output}')


if __name__ == '__main__':
  flags.DEFINE_string('output', None, 'CSV file to write.', required=True)
  flags.DEFINE_integer('count', 200, 'Puzzles to write.')
  flags.DEFINE_integer('seed', 1, 'Random seed.')
  flags.DEFINE_integer('min_guesses', 10, 'Guesses the singles-propagating search must need.')
  cli.run(main)

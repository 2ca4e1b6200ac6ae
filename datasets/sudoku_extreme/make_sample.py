r"""Writes the committed easy Sudoku demo set `sample/{train,test}.csv`.

  python -m datasets.sudoku_extreme.make_sample --source_dir=DIR [--out_dir=DIR]

Takes real solved puzzles (the `answer` column of DIR/train.csv and DIR/test.csv, same
CSV layout as Sudoku-Extreme), and blanks only 4 to 10 uniformly chosen cells of each, so
that a tiny model reaches visible exact accuracy within minutes on a CPU. Puzzles whose
blanks admit more than one solution are redrawn, so every puzzle has the given answer as
its unique solution. This is an easy demonstration set, not Sudoku-Extreme.
"""

import csv
import os
from typing import Sequence

from absl import flags
import numpy as np

from datasets.sudoku_extreme import hub_csv
from datasets.sudoku_extreme import solver
from datasets.sudoku_extreme import validation
from experiments import cli

SIZES = {'train': 2000, 'test': 200}
SEED = 20261124
MIN_BLANKS, MAX_BLANKS = 4, 10


def make_puzzle(answer: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A `[81]` digit question with 4-10 blanks whose unique solution is `answer`."""
  while True:
    blanks = rng.choice(81, size=int(rng.integers(MIN_BLANKS, MAX_BLANKS + 1)), replace=False)
    question = answer.copy()
    question[blanks] = 0
    if solver.count_solutions(question) == 1:
      return question


def write_split(source_csv: str, out_csv: str, size: int, rng: np.random.Generator) -> None:
  rows = list(hub_csv.read_hub_csv(source_csv))
  chosen = np.sort(rng.choice(len(rows), size=size, replace=False))
  tmp = out_csv + '.tmp'
  with open(tmp, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(hub_csv.EXPECTED_HEADER)
    for index in chosen:
      row = rows[index]
      validation.parse_row(row)  # The source answer must be a valid solution.
      answer = np.frombuffer(row.answer.encode('ascii'), np.uint8).astype(np.int32) - ord('0')
      question = make_puzzle(answer, rng)
      text = ''.join('.' if d == 0 else str(d) for d in question)
      writer.writerow(['sample_' + row.source, text, row.answer, int((question == 0).sum())])
  os.replace(tmp, out_csv)


def main(argv: Sequence[str]) -> None:
  del argv
  out_dir = flags.FLAGS.out_dir or os.path.join(os.path.dirname(__file__), 'sample')
  os.makedirs(out_dir, exist_ok=True)
  rng = np.random.default_rng(SEED)
  for split, size in SIZES.items():
    write_split(os.path.join(flags.FLAGS.source_dir, f'{split}.csv'),
                os.path.join(out_dir, f'{split}.csv'), size, rng)
    print(f'wrote {size} puzzles to {os.path.join(out_dir, split + ".csv")}')


if __name__ == '__main__':
  flags.DEFINE_string('source_dir', None, 'Directory with train.csv and test.csv.',
                      required=True)
  flags.DEFINE_string('out_dir', None, 'Output directory (default: sample/ beside this file).')
  cli.run(main)

"""The shipped model `pretrained/sudoku_extreme_mlp` loads on CPU and solves a hard Sudoku."""

import json
import os

import numpy as np
import pytest

from datasets.sudoku_extreme import solver as sudoku_solver
from experiments import config_loading
from experiments import solve
from tests import entry_point

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(REPO_ROOT, 'pretrained', 'sudoku_extreme_mlp')
# A. Inkala's 2012 puzzle, published as the hardest Sudoku; in neither file of the data set.
HARD_PUZZLE = ('8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4..')


def _unique_solution(puzzle: str) -> np.ndarray:
  digits = [0 if c == '.' else int(c) for c in puzzle]
  found, guesses, solution = sudoku_solver.solve(digits, limit=2)
  assert found == 1 and guesses > 0, (found, guesses)  # One solution, not by singles alone.
  return np.asarray(solution)


def test_export_is_complete_and_describes_itself():
  with open(os.path.join(PRETRAINED, 'model_info.json'), encoding='utf-8') as f:
    info = json.load(f)
  assert info['config_name'] == 'sudoku_extreme_mlp'
  assert info['eval_step'] <= info['source_step']
  assert 0.0 < info['eval']['exact_accuracy'] <= 1.0 and info['eval']['count'] == 20000
  listed = set()
  with open(os.path.join(PRETRAINED, 'SHA256SUMS'), encoding='utf-8') as f:
    for line in f:
      listed.add(line.split(maxsplit=1)[1].strip().lstrip('*'))
  assert {'model_config.json', 'model_info.json'} <= listed
  assert any(name.startswith('arrays/') for name in listed)


@pytest.mark.slow
def test_solve_loads_it_and_solves_a_hard_puzzle(tmp_path):
  config = config_loading.load_config('sudoku_extreme_mlp')
  result = solve.run_solve(config, PRETRAINED, sudoku=HARD_PUZZLE, output_dir=str(tmp_path))
  assert result.valid == [True], result.report
  digits = solve.parse_sudoku(HARD_PUZZLE)
  np.testing.assert_array_equal(np.asarray(result.answers[0]).reshape(-1) - 1,
                                _unique_solution(HARD_PUZZLE))
  assert np.all(np.asarray(result.answers[0]).reshape(-1)[digits > 1] == digits[digits > 1])


@pytest.mark.slow
def test_predict_cli_loads_it(tmp_path):
  inputs = tmp_path / 'in.npz'
  np.savez(inputs, inputs=solve.parse_sudoku(HARD_PUZZLE)[None],
           puzzle_identifiers=np.zeros(1, np.int32))
  output = tmp_path / 'out.npz'
  process = entry_point.run_module('experiments.predict', '--config=sudoku_extreme_mlp',
                                   f'--checkpoint={PRETRAINED}', f'--inputs={inputs}',
                                   f'--output={output}', timeout=300)
  assert process.returncode == 0, process.stderr[-2000:]
  with np.load(output) as outputs:
    np.testing.assert_array_equal(outputs['preds'][0] - 1, _unique_solution(HARD_PUZZLE))
    assert outputs['q_halt_logits'].shape == (16, 1)

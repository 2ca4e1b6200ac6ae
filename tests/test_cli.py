"""Tests of experiments/cli.py through the real entry points (`python -m ...` subprocesses).

Every entry point reports bad input in one line, `error: <where>: <what>`, with exit status 2
and no traceback (`TRM_DEBUG=1` shows it); each bad input here fails before anything is
compiled. Path flags accept relative paths, and the answer is all a run prints by default.
"""

import os
import subprocess

import numpy as np
import pytest

from experiments import cli
from tests import test_solve
from tests.entry_point import run_module

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_CSV = os.path.join(REPO_ROOT, 'datasets', 'sudoku_extreme', 'sample', 'train.csv')


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-3000:]
  for text in expected:
    assert text in lines[0], lines[0]


def relative(path) -> str:
  """`path` relative to the directory the entry points run in."""
  return os.path.relpath(path, REPO_ROOT)


@pytest.fixture(name='bad_sudoku_dir')
def fixture_bad_sudoku_dir(tmp_path):
  """train.csv and test.csv whose line 4 has an 80-character question."""
  with open(SAMPLE_CSV, encoding='utf-8') as f:
    lines = f.read().splitlines()[:5]
  fields = lines[3].split(',')
  fields[1] = fields[1][:-1]
  lines[3] = ','.join(fields)
  for name in ('train.csv', 'test.csv'):
    (tmp_path / name).write_text('\n'.join(lines) + '\n')
  return tmp_path


@pytest.fixture(name='sudoku_export', scope='module')
def fixture_sudoku_export(tmp_path_factory):
  """A model export of the `tiny` config with random weights: (config, directory)."""
  config = test_solve.make_config(81, 11)
  directory = str(tmp_path_factory.mktemp('export') / 'sudoku')
  test_solve.export_random_model(config, directory)
  return config, directory


@pytest.mark.slow
def test_malformed_csv_is_one_line_naming_file_and_line(bad_sudoku_dir, tmp_path):
  data_dir = tmp_path / 'tfds'
  args = ('datasets.build', 'sudoku_extreme/1k', f'--manual_dir={bad_sudoku_dir}',
          f'--data_dir={data_dir}')
  result = run_module(*args)
  assert_one_line_error(result, 'train.csv:4: question must have 81 characters, got 80.')
  assert result.stdout == ''
  assert os.listdir(data_dir) == []
  debug = run_module(*args, env={cli.DEBUG_ENV: '1'})
  assert debug.returncode != 0 and 'Traceback' in debug.stderr
  assert 'Traceback' in run_module(*args, '-v', '1').stderr


@pytest.mark.slow
@pytest.mark.parametrize('args, expected', [
    (('datasets.build', 'sudoku_extreme/nope'), ["Unknown config 'nope' of sudoku_extreme"]),
    (('datasets.build',), ['usage: python -m datasets.build NAME']),
    (('datasets.sudoku_extreme.make_sample', '--source_dir=no_such_dir'), ['no_such_dir']),
    (('datasets.sudoku_extreme.make_hard', '--output=o.csv', '--count=0'),
     ['--count must be at least 1']),
    (('datasets.sudoku_extreme.make_hard', '--output=no_such_dir/o.csv'), ['no_such_dir']),
    (('experiments.main', '--config=nope', '--workdir=w'), ["no config named 'nope'"]),
    (('experiments.main', '--config=tiny'), ['--workdir', 'must have a value']),
    (('experiments.solve', '--config=tiny', '--config.model.hiden=8', '--checkpoint=x',
      '--sudoku=1'), ["--config.model.hiden=8: the config has no key 'hiden'"]),
    (('experiments.solve', '--config=tiny', '--checkpoint=no_such_export', '--sudoku=12x'),
     ['--sudoku: expected 81 characters']),
    (('experiments.solve', '--config=tiny', '--checkpoint=no_such_export',
      '--maze=no_such_maze.txt'), ['--maze: no file at no_such_maze.txt']),
    (('experiments.predict', '--config=tiny', '--checkpoint=no_such_export',
      '--inputs=in.npz', '--output=out.npz'), ['no_such_export', 'is neither a model export']),
    (('experiments.import_torch', '--config=tiny', '--torch_checkpoint=no_such.pt',
      '--output=README.md'), ['--output=README.md exists']),
    (('experiments.score_arc', '--submission=no_such.json', '--solutions=README.md'),
     ['no_such.json: No such file or directory.']),
    (('experiments.transfer_state', 'pack', '--workdir=no_such_run', '--output=o'),
     ['no_such_run: no checkpoints/ directory to pack.']),
    (('experiments.transfer_state', 'copy'), ['usage: python -m experiments.transfer_state']),
    (('experiments.summarize_run', '--workdir=no_such_run'),
     ['--workdir=no_such_run: no metrics.jsonl']),
    (('experiments.plot_learning_curve', '--metrics=README.md', '--output=o.png'),
     ['README.md:1: not a JSON object']),
    (('experiments.benchmark', '--config=tiny', '--unknown_flag=1'),
     ["Unknown command line flag 'unknown_flag'"]),
    (('experiments.benchmark_pipeline', '--task=chess'), ['--task', 'chess']),
    (('experiments.program_fingerprint', '--config=sudoku_extreme',
      '--config.data.builder_config=full'),
     ['sudoku_extreme/full', 'give --num_puzzle_identifiers and --schedule_steps']),
])
def test_bad_input_is_one_line_with_status_2(args, expected):
  assert_one_line_error(run_module(*args), *expected)


@pytest.mark.slow
def test_relative_paths_and_quiet_output(sudoku_export, tmp_path):
  """solve and predict with relative --checkpoint, --inputs, --output, --output_dir."""
  _, directory = sudoku_export
  checkpoint = f'--checkpoint={relative(directory)}'
  solved = run_module('experiments.solve', '--config=tiny', checkpoint,
                      f'--sudoku={test_solve.PUZZLE}', f'--output_dir={relative(tmp_path)}')
  assert solved.returncode == 0, solved.stderr[-3000:]
  assert solved.stderr == ''  # No INFO lines (backend probing, Orbax) without -v.
  assert 'valid: ' in solved.stdout
  assert (tmp_path / 'solve_input_answer.png').is_file()

  rng = np.random.default_rng(0)
  np.savez(tmp_path / 'in.npz', inputs=rng.integers(1, 11, (2, 81)).astype(np.int32),
           puzzle_identifiers=np.zeros(2, np.int32))
  predicted = run_module('experiments.predict', '--config=tiny', checkpoint,
                         f'--inputs={relative(tmp_path / "in.npz")}',
                         f'--output={relative(tmp_path / "out.npz")}')
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  assert predicted.stderr == ''
  with np.load(tmp_path / 'out.npz') as data:
    assert data['preds'].shape == (2, 81)


def test_fail_prints_one_line_and_exits_with_the_status(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.fail(ValueError('train.csv:4: first line\n  second line'))
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == 'error: train.csv:4: first line second line\n'
  with pytest.raises(SystemExit) as exit_info:
    cli.fail(FileNotFoundError(2, 'No such file or directory', 'x.json'), status=1)
  assert exit_info.value.code == 1
  assert capsys.readouterr().err == 'error: x.json: No such file or directory.\n'


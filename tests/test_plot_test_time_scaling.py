"""Tests of experiments/plot_test_time_scaling.py on a small made-up results file."""

import json

import pytest

from experiments import plot_test_time_scaling

# Made-up numbers: only the file format and the plotting are under test.
ROWS = [
    {'num_steps': 16, 'num_trajectories': 1, 'trajectory_noise': 0.0, 'exact_accuracy': 0.5,
     'adaptive_exact_accuracy': 0.45, 'eval_time_s': 10.0},
    {'num_steps': 32, 'num_trajectories': 1, 'trajectory_noise': 0.0, 'exact_accuracy': 0.6,
     'test_time_compute': 32},
    {'num_steps': 16, 'num_trajectories': 4, 'trajectory_noise': 0.1, 'exact_accuracy': 0.7,
     'any_trajectory_exact_accuracy': 0.8},
    {'num_steps': 8, 'num_trajectories': 4, 'trajectory_noise': 0.1, 'exact_accuracy': 0.55},
]


def write_rows(path, rows) -> str:
  path.write_text(''.join(json.dumps(row) + '\n' for row in rows) + '\n')
  return str(path)


def test_series_by_setting_sorted_by_compute(tmp_path):
  rows = plot_test_time_scaling.read_results(write_rows(tmp_path / 'r.jsonl', ROWS))
  assert plot_test_time_scaling.series(rows) == {
      (1, 0.0, 0): [(16, 0.5), (32, 0.6)],
      (4, 0.1, 0): [(32, 0.55), (64, 0.7)],
  }


def test_a_setting_on_fewer_puzzles_is_a_line_of_its_own(tmp_path):
  # The grid on the whole split, one setting again on a prefix of it.
  rows = [dict(row, count=1000) for row in ROWS] + [
      {'num_steps': 16, 'num_trajectories': 4, 'trajectory_noise': 0.1, 'exact_accuracy': 0.75,
       'count': 250}]
  rows = plot_test_time_scaling.read_results(write_rows(tmp_path / 'r.jsonl', rows))
  assert plot_test_time_scaling.series(rows) == {
      (1, 0.0, 1000): [(16, 0.5), (32, 0.6)],
      (4, 0.1, 250): [(64, 0.75)],
      (4, 0.1, 1000): [(32, 0.55), (64, 0.7)],
  }
  lines = plot_test_time_scaling.table(rows).splitlines()
  assert lines[-3] == '| 16 | 4 | 0.1 | 250 | 64 | 0.7500 | - | - | - |'
  assert lines[-1] == '| 16 | 4 | 0.1 | 1,000 | 64 | 0.7000 | - | 0.8000 | - |'
  plot_test_time_scaling.plot(rows, str(tmp_path / 'scaling.png'))
  assert (tmp_path / 'scaling.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_table_lists_every_row():
  rows = [dict(row, test_time_compute=row['num_steps'] * row['num_trajectories'])
          for row in ROWS]
  lines = plot_test_time_scaling.table(rows).splitlines()
  assert len(lines) == 2 + len(ROWS)
  assert lines[2] == '| 16 | 1 | 0 | - | 16 | 0.5000 | 0.4500 | - | 10.0 |'
  assert lines[-1] == '| 16 | 4 | 0.1 | - | 64 | 0.7000 | - | 0.8000 | - |'


def test_plot_writes_a_png(tmp_path):
  rows = plot_test_time_scaling.read_results(write_rows(tmp_path / 'r.jsonl', ROWS))
  output = tmp_path / 'scaling.png'
  plot_test_time_scaling.plot(rows, str(output), title='t')
  assert output.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['r.jsonl', 'scaling.png']


def test_bad_files_name_the_line(tmp_path):
  path = tmp_path / 'bad.jsonl'
  path.write_text('{"num_steps": 16}\n')
  with pytest.raises(ValueError, match=r'bad.jsonl:1: missing'):
    plot_test_time_scaling.read_results(str(path))
  path.write_text('not json\n')
  with pytest.raises(ValueError, match=r'bad.jsonl:1: not a JSON object'):
    plot_test_time_scaling.read_results(str(path))
  path.write_text('')
  with pytest.raises(ValueError, match='no results'):
    plot_test_time_scaling.read_results(str(path))

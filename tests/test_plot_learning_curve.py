"""Tests of experiments/plot_learning_curve.py and experiments/summarize_run.py."""

import json

import pytest

from experiments import plot_learning_curve
from experiments import summarize_run

ROWS = [
    {'step': 100, 'split': 'train', 'exact_accuracy': 0.0, 'accuracy': 0.1, 'lm_loss': 2.5,
     'step_time_ms': 400.0},
    {'step': 200, 'split': 'train', 'exact_accuracy': 0.1, 'accuracy': 0.3, 'lm_loss': 2.0,
     'step_time_ms': 150.0},
    {'step': 200, 'split': 'eval', 'exact_accuracy': 0.05, 'accuracy': 0.4, 'count': 64.0,
     'eval_time_s': 30.0},
    # A restart after step 250: 60 steps logged at 300 with the compilation in their time.
    {'step': 310, 'split': 'train', 'exact_accuracy': 0.2, 'accuracy': 0.5, 'lm_loss': 1.5,
     'step_time_ms': 500.0},
]


def write_rows(path, rows) -> str:
  path.write_text(''.join(json.dumps(row) + '\n' for row in rows))
  return str(path)


def test_training_seconds_adds_step_times_and_evaluations():
  assert plot_learning_curve.training_seconds(ROWS) == pytest.approx([40.0, 55.0, 85.0, 140.0])


def test_plot_writes_a_png(tmp_path):
  rows = plot_learning_curve.read_rows(write_rows(tmp_path / 'metrics.jsonl', ROWS))
  output = tmp_path / 'curve.png'
  plot_learning_curve.plot(rows, str(output), title='t', reference=0.874)
  assert output.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  # Written under a temporary name, then renamed: nothing else is left in the directory.
  assert sorted(p.name for p in tmp_path.iterdir()) == ['curve.png', 'metrics.jsonl']


def test_bad_line_is_named(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text(json.dumps(ROWS[0]) + '\n{"step": \n')
  with pytest.raises(ValueError, match=r'metrics\.jsonl:2: not a JSON object'):
    plot_learning_curve.read_rows(str(path))


def test_run_without_evaluations_plots_its_training_rows(tmp_path):
  rows = plot_learning_curve.read_rows(write_rows(tmp_path / 'metrics.jsonl', ROWS[:2]))
  output = tmp_path / 'curve.png'
  assert plot_learning_curve.plot(rows, str(output)) == pytest.approx(55.0 / 3600)
  assert output.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_file_without_training_or_evaluation_rows_is_refused(tmp_path):
  path = write_rows(tmp_path / 'metrics.jsonl', [dict(ROWS[2], split='eval_only')])
  with pytest.raises(ValueError, match='no training or evaluation rows'):
    plot_learning_curve.read_rows(path)


def test_summary_lines_keep_the_keys_of_each_split():
  lines = summarize_run.format_rows(ROWS[1:3])
  assert lines == [
      '200 train lm_loss=2 accuracy=0.3 exact_accuracy=0.1 step_time_ms=150',
      '200 eval exact_accuracy=0.05 accuracy=0.4 count=64 eval_time_s=30',
  ]

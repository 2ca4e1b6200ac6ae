"""Tests of the metrics file: local appends, remote-style rewrites and tolerant reading."""

import json

from tiny_recursive import metrics_logging


def test_local_lines_append_and_read_back(tmp_path):
  logger = metrics_logging.MetricsLogger(tmp_path)
  logger.write(1, 'train', {'lm_loss': 2.5})
  logger.write(2, 'eval', {'exact_accuracy': 0.25})
  logger.close()
  resumed = metrics_logging.MetricsLogger(tmp_path)  # A resumed run appends.
  resumed.write(3, 'train', {'lm_loss': 2.0})
  resumed.close()
  rows = metrics_logging.read_metrics(tmp_path)
  assert [(r['step'], r['split']) for r in rows] == [(1, 'train'), (2, 'eval'), (3, 'train')]
  assert metrics_logging.read_metrics(tmp_path, 'eval') == [
      {'step': 2, 'split': 'eval', 'exact_accuracy': 0.25}]


def test_incomplete_last_line_is_skipped(tmp_path):
  path = tmp_path / metrics_logging.METRICS_FILE
  path.write_text(json.dumps({'step': 1, 'split': 'train', 'lm_loss': 1.0}) + '\n{"step": 2, "spl')
  assert [r['step'] for r in metrics_logging.read_metrics(tmp_path)] == [1]


def test_remote_mode_rewrites_the_whole_file_atomically(tmp_path, monkeypatch):
  monkeypatch.setattr(metrics_logging, 'is_remote', lambda path: True)
  (tmp_path / metrics_logging.METRICS_FILE).write_text(
      json.dumps({'step': 1, 'split': 'train', 'lm_loss': 3.0}) + '\n')
  logger = metrics_logging.MetricsLogger(tmp_path)
  logger.write(2, 'train', {'lm_loss': 2.0})
  logger.close()
  assert [r['step'] for r in metrics_logging.read_metrics(tmp_path)] == [1, 2]
  assert not [p for p in tmp_path.iterdir() if '.tmp-' in p.name]

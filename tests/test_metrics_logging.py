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


def _write_rows(tmp_path, *steps_and_splits, tail=''):
  (tmp_path / metrics_logging.METRICS_FILE).write_text(''.join(
      json.dumps({'step': step, 'split': split, 'lm_loss': 1.0}) + '\n'
      for step, split in steps_and_splits) + tail)


def test_keep_drops_rows_before_appending_locally_and_remotely(tmp_path, monkeypatch):
  """A run resumed at step 2 drops the rows of steps 3-4 and the incomplete last line."""
  for remote in (False, True):
    monkeypatch.setattr(metrics_logging, 'is_remote', lambda path, remote=remote: remote)
    _write_rows(tmp_path, (1, 'train'), (2, 'train'), (2, 'eval'), (3, 'train'), (4, 'train'),
                tail='{"step": 5, "spl')
    logger = metrics_logging.MetricsLogger(tmp_path, keep=lambda row: row['step'] <= 2)
    logger.write(3, 'train', {'lm_loss': 0.5})
    logger.close()
    rows = metrics_logging.read_metrics(tmp_path)
    assert [(r['step'], r['split']) for r in rows] == [
        (1, 'train'), (2, 'train'), (2, 'eval'), (3, 'train')], remote
    assert rows[-1]['lm_loss'] == 0.5
    assert not [p for p in tmp_path.iterdir() if '.tmp-' in p.name]


def test_an_incomplete_last_line_is_removed_before_the_next_append(tmp_path):
  _write_rows(tmp_path, (1, 'train'), tail='{"step": 2, "spl')
  logger = metrics_logging.MetricsLogger(tmp_path)
  logger.write(2, 'train', {'lm_loss': 0.5})
  logger.close()
  assert [r['step'] for r in metrics_logging.read_metrics(tmp_path)] == [1, 2]

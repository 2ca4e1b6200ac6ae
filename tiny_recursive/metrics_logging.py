"""Where metrics go: a JSON-lines file in the workdir, TensorBoard scalars and absl logging.

Only process 0 writes files. Each JSON line is written with a single `write` and flushed, so
a killed run leaves at most one incomplete last line, which readers skip.
"""

import json
import os
from typing import Any, Mapping

from absl import logging
import jax

METRICS_FILE = 'metrics.jsonl'


class MetricsLogger:
  """Appends `{'step', 'split', ...metrics}` lines and TensorBoard scalars under a workdir."""

  def __init__(self, workdir: str):
    self._enabled = jax.process_index() == 0
    self._file = None
    self._writer = None
    if not self._enabled:
      return
    self._file = open(os.path.join(workdir, METRICS_FILE), 'a', encoding='utf-8')
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(os.path.join(workdir, 'tensorboard'))
    except ImportError:
      logging.warning('tensorboardX is not installed: no TensorBoard scalars.')

  def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
    values = {key: float(value) for key, value in metrics.items()}
    logging.info('step %d %s: %s', step, split,
                 ', '.join(f'{k}={v:.4g}' for k, v in sorted(values.items())))
    if not self._enabled:
      return
    self._file.write(json.dumps({'step': int(step), 'split': split, **values}) + '\n')
    self._file.flush()
    if self._writer is not None:
      for key, value in values.items():
        self._writer.add_scalar(f'{split}/{key}', value, step)
      self._writer.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._writer is not None:
      self._writer.close()


def read_metrics(workdir: str, split: str | None = None) -> list[dict[str, Any]]:
  """Reads metrics.jsonl, skipping an incomplete last line; optionally one split only."""
  path = os.path.join(workdir, METRICS_FILE)
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if split is None or row.get('split') == split:
        rows.append(row)
  return rows

"""Where metrics go: a JSON-lines file in the workdir, TensorBoard scalars and absl logging.

Only process 0 writes files. Workdirs may be local or remote (`gs://...`, through
`etils.epath`). Locally each JSON line is appended with a single `write` and flushed, so a
killed run leaves at most one incomplete last line, which readers skip. Object stores have no
append, so there the whole file is rewritten (to a temporary name, then renamed) at each log.
"""

import json
import os
import uuid
from typing import Any, Mapping

from absl import logging
from etils import epath
import jax

METRICS_FILE = 'metrics.jsonl'


def is_remote(path: str | os.PathLike[str]) -> bool:
  return '://' in os.fspath(path)


def write_text_atomic(path: epath.Path, text: str) -> None:
  """Writes `text` to a temporary sibling, then renames it over `path`."""
  tmp = path.parent / f'.{path.name}.tmp-{uuid.uuid4().hex}'
  tmp.write_text(text)
  tmp.replace(path)


class MetricsLogger:
  """Appends `{'step', 'split', ...metrics}` lines and TensorBoard scalars under a workdir."""

  def __init__(self, workdir: str | os.PathLike[str]):
    self._enabled = jax.process_index() == 0
    self._path = epath.Path(workdir) / METRICS_FILE
    self._remote = is_remote(workdir)
    self._file = None
    self._remote_text = ''
    self._writer = None
    if not self._enabled:
      return
    if self._remote:
      self._remote_text = self._path.read_text() if self._path.exists() else ''
    else:
      self._file = open(self._path, 'a', encoding='utf-8')
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(os.fspath(epath.Path(workdir) / 'tensorboard'))
    except Exception as error:  # pylint: disable=broad-except
      # tensorboardX needs extra packages for remote log dirs; metrics.jsonl still works.
      logging.warning('No TensorBoard scalars (%s: %s).', type(error).__name__, error)

  def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
    values = {key: float(value) for key, value in metrics.items()}
    logging.info('step %d %s: %s', step, split,
                 ', '.join(f'{k}={v:.4g}' for k, v in sorted(values.items())))
    if not self._enabled:
      return
    line = json.dumps({'step': int(step), 'split': split, **values}) + '\n'
    if self._remote:
      self._remote_text += line
      write_text_atomic(self._path, self._remote_text)
    else:
      self._file.write(line)
      self._file.flush()
    if self._writer is not None:
      for key, value in values.items():
        self._writer.add_scalar(f'{split}/{key}', value, step)
      self._writer.flush()

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """TensorBoard images (uint8 [H, W, 3]); nothing without a TensorBoard writer."""
    if self._writer is None:
      return
    for name, image in images.items():
      self._writer.add_image(name, image, step, dataformats='HWC')
    self._writer.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._writer is not None:
      self._writer.close()


def read_metrics(workdir: str | os.PathLike[str], split: str | None = None) -> list[dict[str, Any]]:
  """Reads metrics.jsonl, skipping an incomplete last line; optionally one split only."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if split is None or row.get('split') == split:
      rows.append(row)
  return rows

"""Where metrics go: a JSON-lines file in the workdir, TensorBoard scalars and absl logging.

Only process 0 writes files. Workdirs may be local or remote (`gs://...`, through
`etils.epath`). Locally each JSON line is appended with a single `write` and flushed, so a
killed run leaves at most one incomplete last line, which readers skip. Object stores have no
append, so there the whole file is rewritten (to a temporary name, then renamed) at each log.
A logger opened with `keep` first drops the rows it rejects (a resumed run drops those past
its restored step, which it logs again), so that no (step, split) pair is written twice.
"""

import json
import os
import uuid
from typing import Any, Callable, Iterator, Mapping

from absl import logging
from etils import epath
import jax

METRICS_FILE = 'metrics.jsonl'
TIMINGS_FILE = 'timings.jsonl'


def is_remote(path: str | os.PathLike[str]) -> bool:
  return '://' in os.fspath(path)


def write_text_atomic(path: epath.Path, text: str) -> None:
  """Writes `text` to a temporary sibling, then renames it over `path`."""
  tmp = path.parent / f'.{path.name}.tmp-{uuid.uuid4().hex}'
  tmp.write_text(text)
  tmp.replace(path)


def _parse(line: str) -> dict[str, Any] | None:
  try:
    row = json.loads(line)
  except json.JSONDecodeError:
    return None
  return row if isinstance(row, dict) else None


def _kept_text(path: epath.Path, keep: Callable[[dict[str, Any]], bool] | None) -> str:
  """The lines of `path` that parse and pass `keep`; rewrites `path` (atomically) if that
  drops any, or if its last line is incomplete (the next append would run into it)."""
  if not path.exists():
    return ''
  text = path.read_text()
  lines = text.splitlines()
  kept = [line for line in lines
          if (row := _parse(line)) is not None and (keep is None or keep(row))]
  kept_text = ''.join(line + '\n' for line in kept)
  if len(kept) < len(lines) or (text and not text.endswith('\n')):
    write_text_atomic(path, kept_text)
  return kept_text


def append_json_line(path: epath.Path, row: Mapping[str, Any]) -> None:
  """Appends one JSON line to `path` (process 0 only; rewritten atomically on object
  stores, which cannot append)."""
  if jax.process_index() != 0:
    return
  line = json.dumps(dict(row)) + '\n'
  if is_remote(path):
    write_text_atomic(path, (path.read_text() if path.exists() else '') + line)
  else:
    with open(path, 'a', encoding='utf-8') as f:
      f.write(line)


class MetricsLogger:
  """Appends `{'step', 'split', ...metrics}` lines and TensorBoard scalars under a workdir."""

  def __init__(self, workdir: str | os.PathLike[str],
               keep: Callable[[dict[str, Any]], bool] | None = None):
    """Opens `workdir`'s metrics file for appending.

    Args:
      workdir: the run directory (local or remote).
      keep: if given, the rows already in the file for which it returns False are removed
        first (e.g. `lambda row: row['step'] <= restored_step` on resume).
    """
    self._enabled = jax.process_index() == 0
    self._path = epath.Path(workdir) / METRICS_FILE
    self._remote = is_remote(workdir)
    self._file = None
    self._remote_text = ''
    self._writer = None
    if not self._enabled:
      return
    kept_text = _kept_text(self._path, keep)
    if self._remote:
      self._remote_text = kept_text
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


def read_json_objects(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, object) for each non-blank line of a JSON-lines file, strictly: a line
  that is not a JSON object is a ValueError naming the file and line."""
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f'{path}:{number}: not a JSON object ({error.msg}).') from None
      if not isinstance(row, dict):
        raise ValueError(f'{path}:{number}: not a JSON object.')
      yield number, row


def read_metrics(workdir: str | os.PathLike[str], split: str | None = None) -> list[dict[str, Any]]:
  """Reads metrics.jsonl, skipping an incomplete last line; optionally one split only."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  rows = [_parse(line) for line in path.read_text().splitlines()]
  return [row for row in rows
          if row is not None and (split is None or row.get('split') == split)]

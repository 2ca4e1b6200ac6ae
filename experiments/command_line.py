"""What the training entry point shows around its one call: a progress display with notices,
no Orbax warning for the interval saves, and the exit status of an interrupted run (130). The
conventions every entry point shares (one `error:` line, exit status 2 for bad input) are in
`cli`."""

import os
import sys
import time
from typing import TextIO

from absl import logging
import tqdm


class _DropUntrackedMetricWarning:
  """Interval saves carry no eval metric by design; Orbax warns about that on every save."""

  def filter(self, record) -> bool:
    return 'did not provide metrics' not in record.getMessage()


def drop_untracked_metric_warning() -> None:
  """Interval saves carry no eval metric by design; Orbax would warn on every one."""
  logging.get_absl_logger().addFilter(_DropUntrackedMetricWarning())


EXIT_INTERRUPTED = 130
INTERRUPTED_MESSAGE = ('interrupted without saving; rerunning the same command resumes from '
                       'the latest checkpoint, if any.')


def _terminal_size(stream: TextIO) -> os.terminal_size | None:
  """The size of the terminal behind `stream` (0 where it reports none); None if none."""
  try:
    if not stream.isatty():
      return None
    return os.get_terminal_size(stream.fileno())
  except (AttributeError, OSError, ValueError):
    return None


def _postfix(metrics: dict[str, float]) -> dict[str, str]:
  # Exact accuracy on the training batch is counted over the slots that halted at this step,
  # which are the easy ones, on training puzzles: well above the held-out figure.
  return {'loss': f"{metrics.get('lm_loss', float('nan')):.3f}",
          'train_exact': f"{metrics.get('exact_accuracy', 0.0):.3f}",
          'steps': f"{metrics.get('steps', 0.0):.1f}"}


class ProgressBar:
  """The trainer's `progress(step, total, metrics)` and `notify(message)` on stderr.

  On a terminal, a tqdm bar (FALLBACK_SIZE when the terminal reports a width or height of 0,
  with which tqdm would draw nothing); elsewhere (a pipe, a file) plain lines: at the first
  logged step, then at most one every PLAIN_LINE_INTERVAL_S seconds, and the last one.
  """

  FALLBACK_SIZE = os.terminal_size((100, 24))
  PLAIN_LINE_INTERVAL_S = 30.0

  def __init__(self, stream: TextIO | None = None):
    self._stream = stream or sys.stderr
    self._size = _terminal_size(self._stream)
    self._bar = None
    self._last_line_time = None
    self._unprinted_line = None

  def __call__(self, step: int, total: int, metrics: dict[str, float]) -> None:
    if self._size is None:
      self._plain_line(step, total, metrics)
      return
    if self._bar is None:
      columns, lines = self._size
      # Starts at the first logged step: the rate then covers measured steps only (the
      # first interval includes compilation).
      self._bar = tqdm.tqdm(total=total, initial=step, unit='step', file=self._stream,
                            dynamic_ncols=columns > 0,
                            ncols=None if columns > 0 else self.FALLBACK_SIZE.columns,
                            nrows=None if lines > 0 else self.FALLBACK_SIZE.lines)
    self._bar.update(step - self._bar.n)
    self._bar.set_postfix(_postfix(metrics))

  def _plain_line(self, step: int, total: int, metrics: dict[str, float]) -> None:
    values = ' '.join(f'{key}={value}' for key, value in _postfix(metrics).items())
    line = f'step {step}/{total}: {values}'
    now = time.monotonic()
    if (self._last_line_time is None or step >= total or
        now - self._last_line_time >= self.PLAIN_LINE_INTERVAL_S):
      print(line, file=self._stream, flush=True)
      self._last_line_time, self._unprinted_line = now, None
    else:
      self._unprinted_line = line

  def notify(self, message: str) -> None:
    """Prints `message` on a line of its own (above the bar, if there is one)."""
    self._print_unprinted_line()
    if self._bar is not None:
      self._bar.write(message, file=self._stream)
    else:
      print(message, file=self._stream, flush=True)

  def __enter__(self) -> 'ProgressBar':
    return self

  def _print_unprinted_line(self) -> None:
    if self._unprinted_line is not None:
      print(self._unprinted_line, file=self._stream, flush=True)
      self._unprinted_line = None

  def __exit__(self, *exc_info) -> None:
    self._print_unprinted_line()
    if self._bar is not None:
      self._bar.close()  # Ends the bar's line, so that an error message starts on its own.

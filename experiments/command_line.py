"""What the training entry point does around its one call: flag parsing that reports an
unknown `--config.KEY` in one line, quiet logging, a progress bar, and bad input reported as
one `error:` line with an exit status (2: bad input, 1: the run failed)."""

import re
import sys
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import tqdm


class _DropUntrackedMetricWarning:
  """Interval saves carry no eval metric by design; Orbax warns about that on every save."""

  def filter(self, record) -> bool:
    return 'did not provide metrics' not in record.getMessage()


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with an unknown `--config.KEY` reported in one line (exit status 2).

  ml_collections raises AttributeError/KeyError from inside flag parsing for such a key, which
  absl would otherwise show as a long traceback.
  """
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as error:
    detail = error
    while isinstance(detail, BaseException) and detail.args:
      detail = detail.args[0]
    detail = str(detail)
    match = re.match(r"'([^']+)'", detail)
    overrides = [arg for arg in argv if arg.startswith('--config.')]
    if match:
      named = [arg for arg in overrides
               if match.group(1) in arg.partition('=')[0][len('--config.'):].split('.')]
      overrides = named or overrides
    hint = ' '.join(detail.split('\n')[1:])
    print(f'error: {" ".join(overrides)}: the config has no key '
          f'{match.group(1) if match else detail!r}. {hint}'.rstrip(), file=sys.stderr)
    sys.exit(2)


def quiet_logging() -> None:
  """Keeps the terminal to the progress bar, warnings and the result; -v 0 shows INFO."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  logging.get_absl_logger().addFilter(_DropUntrackedMetricWarning())


def run_or_exit(run: Callable[[], Any]) -> Any:
  """Returns `run()`; bad input or a failed run becomes one `error:` line and an exit."""
  # pylint: disable=g-import-not-at-top
  from tiny_recursive import checkpointing
  from tiny_recursive import config_validation
  from tiny_recursive import trainer
  # pylint: enable=g-import-not-at-top
  try:
    return run()
  except (config_validation.ConfigError, FileNotFoundError,
          checkpointing.WorkdirNotWritableError) as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  except trainer.NonFiniteLossError as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(1)


class ProgressBar:
  """A tqdm bar fed by the trainer's `progress(step, total, metrics)` callback."""

  def __init__(self):
    self._bar = None

  def __call__(self, step: int, total: int, metrics: dict[str, float]) -> None:
    if self._bar is None:
      # Starts at the first logged step: the rate then covers measured steps only (the
      # first interval includes compilation).
      self._bar = tqdm.tqdm(total=total, initial=step, unit='step', dynamic_ncols=True,
                            file=sys.stderr)
    self._bar.update(step - self._bar.n)
    self._bar.set_postfix(loss=f"{metrics.get('lm_loss', float('nan')):.3f}",
                          exact=f"{metrics.get('exact_accuracy', 0.0):.3f}",
                          steps=f"{metrics.get('steps', 0.0):.1f}")

  def __enter__(self) -> 'ProgressBar':
    return self

  def __exit__(self, *exc_info) -> None:
    if self._bar is not None:
      self._bar.close()  # Ends the bar's line, so that an error message starts on its own.

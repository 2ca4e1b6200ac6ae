"""What the training entry point shows around its one call: a progress bar, and no Orbax
warning for the interval saves (the conventions every entry point shares are in `cli`)."""

import sys

from absl import logging
import tqdm


class _DropUntrackedMetricWarning:
  """Interval saves carry no eval metric by design; Orbax warns about that on every save."""

  def filter(self, record) -> bool:
    return 'did not provide metrics' not in record.getMessage()


def drop_untracked_metric_warning() -> None:
  """Interval saves carry no eval metric by design; Orbax would warn on every one."""
  logging.get_absl_logger().addFilter(_DropUntrackedMetricWarning())


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

r"""Prints a run's logged metrics as one line per row, for logs and training notes.

  python -m experiments.summarize_run --workdir=RUN [--since_step=N] [--split=eval]
"""

from collections.abc import Iterable
from typing import Any

from absl import flags
from etils import epath

from experiments import cli
from tiny_recursive import metrics_logging

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory holding metrics.jsonl.',
                               required=True)
_SINCE_STEP = flags.DEFINE_integer('since_step', 0, 'Only rows after this step.')
_SPLIT = flags.DEFINE_enum('split', None, ['train', 'eval', 'eval_only'],
                           'Only this split (default: all; eval_only: --mode=eval).')

TRAIN_KEYS = ('lm_loss', 'accuracy', 'exact_accuracy', 'steps', 'lr', 'step_time_ms')
EVAL_KEYS = ('exact_accuracy', 'accuracy', 'count', 'eval_time_s')


def format_rows(rows: Iterable[dict[str, Any]]) -> list[str]:
  """One 'STEP SPLIT key=value ...' line per row, with the keys that matter for that split."""
  lines = []
  for row in rows:
    keys = TRAIN_KEYS if row['split'] == 'train' else EVAL_KEYS
    values = ' '.join(f'{key}={row[key]:.4g}' for key in keys if key in row)
    lines.append(f"{row['step']} {row['split']} {values}")
  return lines


def main(argv: list[str]) -> None:
  del argv
  if not (epath.Path(_WORKDIR.value) / metrics_logging.METRICS_FILE).exists():
    raise FileNotFoundError(f'--workdir={_WORKDIR.value}: no {metrics_logging.METRICS_FILE} in it.')
  rows = [row for row in metrics_logging.read_metrics(_WORKDIR.value, _SPLIT.value)
          if row['step'] > _SINCE_STEP.value]
  print('\n'.join(format_rows(rows)))


if __name__ == '__main__':
  cli.run(main)

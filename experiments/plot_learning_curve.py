r"""Plots a run's exact accuracy against training steps and training time, as a PNG.

  python -m experiments.plot_learning_curve --metrics=RUN/metrics.jsonl --output=curve.png \
      [--title=...] [--reference=0.874 --reference_label='paper']

Training time (wall clock of the machine, whatever its number of devices) is rebuilt from the
log alone: each train row adds its `step_time_ms` (wall time per step since the previous log,
input pipeline and logging included) times the steps since the previous row, and each eval row
adds its `eval_time_s`. After a restart the first row's step time also holds the compilation,
spread over the steps since the last row before the restart, so the total slightly overstates
the time spent (by under a minute per restart).
"""

import os
from typing import Any

from absl import flags

from experiments import cli
from tiny_recursive import atomic_files
from tiny_recursive import metrics_logging

_METRICS = flags.DEFINE_string('metrics', None, 'A run\'s metrics.jsonl.', required=True)
_OUTPUT = flags.DEFINE_string('output', None, 'PNG to write.', required=True)
_TITLE = flags.DEFINE_string('title', '', 'Figure title.')
_REFERENCE = flags.DEFINE_float('reference', None,
                                'A published exact accuracy to draw as a horizontal line.')
_REFERENCE_LABEL = flags.DEFINE_string('reference_label', 'paper', 'Legend of --reference.')


def read_rows(path: str) -> list[dict[str, Any]]:
  """The rows of a metrics.jsonl; errors name the file and line."""
  rows = []
  for number, row in metrics_logging.read_json_objects(path):
    if 'step' not in row or 'split' not in row:
      raise ValueError(f'{path}:{number}: expected an object with "step" and "split".')
    rows.append(row)
  if not any(row['split'] in ('train', 'eval') for row in rows):
    raise ValueError(f'{path}: no training or evaluation rows to plot.')
  return rows


def training_seconds(rows: list[dict[str, Any]]) -> list[float]:
  """Cumulative training wall time (s) at each row, in file order (see the module docstring)."""
  total, last_step, times = 0.0, 0, []
  for row in rows:
    if row['split'] == 'train':
      total += row.get('step_time_ms', 0.0) / 1e3 * max(row['step'] - last_step, 0)
      last_step = row['step']
    elif row['split'] == 'eval':
      total += row.get('eval_time_s', 0.0)
    times.append(total)
  return times


def plot(rows: list[dict[str, Any]], output: str, title: str = '',
         reference: float | None = None, reference_label: str = 'paper') -> float:
  """Writes a two-panel PNG: exact and token accuracy (test, and training batches) vs steps
  and vs hours; a run without evaluations shows its training batches only. Returns the hours."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  hours = [seconds / 3600 for seconds in training_seconds(rows)]
  series = {}
  for split, key, label in (('eval', 'exact_accuracy', 'test exact accuracy'),
                            ('eval', 'accuracy', 'test token accuracy'),
                            ('train', 'exact_accuracy', 'train exact accuracy (batch)'),
                            ('train', 'accuracy', 'train token accuracy (batch)')):
    points = [(row['step'], hour, row[key]) for row, hour in zip(rows, hours)
              if row['split'] == split and key in row]
    if points:
      series[label] = list(zip(*points))

  figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  for axis, index, xlabel in ((axes[0], 0, 'training step'),
                              (axes[1], 1, 'hours of training (wall clock)')):
    for label, values in series.items():
      style = dict(marker='o', markersize=3) if label.startswith('test') else dict(alpha=0.5)
      axis.plot(values[index], values[2], label=label, **style)
    if reference is not None:
      axis.axhline(reference, color='grey', linestyle='--', label=reference_label)
    axis.set_xlabel(xlabel)
    axis.grid(alpha=0.3)
  axes[0].set_ylabel('accuracy')
  axes[0].set_ylim(0, 1)
  axes[1].legend(loc='best', fontsize=8)
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  atomic_files.write_atomically(output, lambda path: figure.savefig(path, dpi=110))
  plt.close(figure)
  return hours[-1]


def main(argv: list[str]) -> None:
  del argv
  rows = read_rows(_METRICS.value)
  hours = plot(rows, _OUTPUT.value, _TITLE.value, _REFERENCE.value, _REFERENCE_LABEL.value)
  eval_steps = [r['step'] for r in rows if r['split'] == 'eval']
  last_eval = f', the last at step {eval_steps[-1]}' if eval_steps else ''
  print(f'{os.path.abspath(_OUTPUT.value)}: {len(eval_steps)} evaluations{last_eval}; '
        f'{rows[-1]["step"]} steps, {hours:.2f} hours of training.')


if __name__ == '__main__':
  cli.run(main)

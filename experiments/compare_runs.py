r"""Prints the logged train metrics of several runs side by side, as a table.

  python -m experiments.compare_runs --workdirs=RUN_1GPU,RUN_2GPU [--keys=lm_loss,accuracy]

The first run is the baseline: each other run's columns are followed by its relative
difference from the baseline at the same step. The last row is the final evaluation of each.
"""

from absl import app
from absl import flags

from experiments import cli
from tiny_recursive import metrics_logging

_WORKDIRS = flags.DEFINE_list('workdirs', None, 'Run directories (first: baseline).',
                              required=True)
_KEYS = flags.DEFINE_list('keys', ['lm_loss', 'accuracy'], 'Train metrics to compare.')
_EVAL_KEYS = ('exact_accuracy', 'accuracy')


def comparison_table(runs: list[list[dict]], names: list[str], keys: list[str]) -> list[str]:
  """Markdown rows: step, then per run each key (and, after the first run, its relative
  difference from the first run's value at that step)."""
  trains = [{row['step']: row for row in rows if row['split'] == 'train'} for rows in runs]
  header = ['step']
  for i, name in enumerate(names):
    for key in keys:
      header.append(f'{name} {key}')
      if i:
        header.append('rel. diff')
  lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  for step in sorted(set.intersection(*(set(t) for t in trains))):
    cells = [str(step)]
    for i, train in enumerate(trains):
      for key in keys:
        value = train[step].get(key, float('nan'))
        cells.append(f'{value:.4f}')
        if i:
          base = trains[0][step].get(key, float('nan'))
          cells.append(f'{(value - base) / base:+.2%}' if base else 'n/a')
    lines.append('| ' + ' | '.join(cells) + ' |')
  finals = []
  for name, rows in zip(names, runs):
    evals = [row for row in rows if row['split'] == 'eval']
    if evals:
      last = evals[-1]
      finals.append(f"{name}: eval at step {last['step']}: " + ', '.join(
          f'{key} {last[key]:.4f}' for key in _EVAL_KEYS if key in last))
  return lines + [''] + finals


def main(argv: list[str]) -> None:
  del argv
  runs = []
  for workdir in _WORKDIRS.value:
    rows = metrics_logging.read_metrics(workdir)
    if not rows:
      raise app.UsageError(f'{workdir}: no metrics.jsonl rows to compare.')
    runs.append(rows)
  print('\n'.join(comparison_table(runs, list(_WORKDIRS.value), list(_KEYS.value))))


if __name__ == '__main__':
  cli.run(main)

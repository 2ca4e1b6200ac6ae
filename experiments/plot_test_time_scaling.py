r"""Plots exact accuracy against test-time compute from `experiments.evaluate` JSON lines.

  python -m experiments.plot_test_time_scaling --results=OUT/test_time_scaling.jsonl \
      --output=test_time_scaling.png [--title=...]

Test-time compute is supervision steps x trajectories per puzzle (each trajectory runs every
step). One line per (trajectories, noise) setting over the steps, and per number of puzzles
evaluated when the rows differ in it (a setting measured on a prefix of the test split is a
line of its own, labelled with its count); the x axis is logarithmic (base 2). Also prints
the results as a table (scripts/test_time_scaling.sh shows it).
"""

import os
from typing import Any

from absl import flags

from experiments import cli
from tiny_recursive import atomic_files
from tiny_recursive import metrics_logging

REQUIRED_KEYS = ('num_steps', 'num_trajectories', 'trajectory_noise', 'exact_accuracy')


def read_results(path: str) -> list[dict[str, Any]]:
  """The rows of a results file; errors name the file and line."""
  rows = []
  for number, row in metrics_logging.read_json_objects(path):
    missing = [key for key in REQUIRED_KEYS if key not in row]
    if missing:
      raise ValueError(f'{path}:{number}: missing {missing}.')
    row.setdefault('test_time_compute', row['num_steps'] * row['num_trajectories'])
    rows.append(row)
  if not rows:
    raise ValueError(f'{path}: no results.')
  return rows


def puzzle_count(row: dict[str, Any]) -> int:
  """Puzzles a row was measured on (`count`; 0 where the row does not say)."""
  return int(row.get('count', 0))


def series(rows: list[dict[str, Any]]
           ) -> dict[tuple[int, float, int], list[tuple[int, float]]]:
  """{(trajectories, noise, puzzles): [(compute, exact accuracy), ...] sorted by compute}."""
  out: dict[tuple[int, float, int], list[tuple[int, float]]] = {}
  for row in rows:
    key = (int(row['num_trajectories']), float(row['trajectory_noise']), puzzle_count(row))
    out.setdefault(key, []).append((int(row['test_time_compute']),
                                    float(row['exact_accuracy'])))
  return {key: sorted(points) for key, points in sorted(out.items())}


def table(rows: list[dict[str, Any]]) -> str:
  """A Markdown table of the results, by setting then steps."""
  lines = ['| steps | trajectories | noise | puzzles | compute | exact | adaptive exact | '
           'any trajectory exact | eval s |',
           '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  order = lambda r: (r['num_trajectories'], r['trajectory_noise'], puzzle_count(r),
                     r['num_steps'])
  for r in sorted(rows, key=order):
    cells = [str(r['num_steps']), str(r['num_trajectories']), f"{r['trajectory_noise']:g}",
             f'{puzzle_count(r):,}' if 'count' in r else '-',
             str(r['test_time_compute']), f"{r['exact_accuracy']:.4f}"]
    for key, digits in (('adaptive_exact_accuracy', 4), ('any_trajectory_exact_accuracy', 4),
                        ('eval_time_s', 1)):
      cells.append(f'{r[key]:.{digits}f}' if key in r else '-')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot(rows: list[dict[str, Any]], output: str, title: str = '') -> None:
  """Writes the PNG: exact accuracy vs test-time compute, one line per setting."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  figure, axis = plt.subplots(figsize=(6.5, 4.2))
  several_counts = len({puzzle_count(row) for row in rows}) > 1
  for (trajectories, noise, count), points in series(rows).items():
    label = ('1 trajectory, no noise' if trajectories == 1 and noise == 0 else
             f'{trajectories} trajectories, noise {noise:g}')
    if several_counts:
      label += f', {count:,} puzzles' if count else ', puzzles not recorded'
    compute, accuracy = zip(*points)
    axis.plot(compute, accuracy, marker='o', markersize=4, label=label)
  axis.set_xscale('log', base=2)
  axis.set_xlabel('test-time compute (supervision steps x trajectories per puzzle)')
  axis.set_ylabel('test exact accuracy')
  axis.grid(alpha=0.3, which='both')
  axis.legend(loc='best', fontsize=8)
  if title:
    axis.set_title(title)
  figure.tight_layout()
  atomic_files.write_atomically(output, lambda path: figure.savefig(path, dpi=110))
  plt.close(figure)


def define_flags() -> None:
  """Defines the command-line flags (only when run as a program, so the module imports cleanly)."""
  flags.DEFINE_string('results', None, 'JSON lines of experiments.evaluate.', required=True)
  flags.DEFINE_string('output', None, 'PNG to write (none: the table only).')
  flags.DEFINE_string('title', '', 'Figure title.')


def main(argv: list[str]) -> None:
  cli.no_positional_arguments(argv)
  f = flags.FLAGS
  rows = read_results(f.results)
  print(table(rows))
  if f.output:
    plot(rows, f.output, f.title)
    print(f'wrote {os.path.abspath(f.output)}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)

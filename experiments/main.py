r"""Trains (and evaluates) a Tiny Recursive Model.

  python -m experiments.main --config=sudoku_quick --workdir=/tmp/trm_quick
  python -m experiments.main --config=arc_agi1 --workdir=gs://bucket/run \
      --config.data.data_dir=gs://bucket/tfds
  python -m experiments.main --config=sudoku_extreme_mlp --workdir=DIR --mode=eval

Rerunning the same command resumes from the latest checkpoint in --workdir.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging
import tqdm
from ml_collections import config_flags

from experiments import cli


class _DropUntrackedMetricWarning:
  """Interval saves carry no eval metric by design; Orbax warns about that on every save."""

  def filter(self, record) -> bool:
    return 'did not provide metrics' not in record.getMessage()


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'Config name (see experiments/configs) or '
                                  'path[:argument].', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory of the run (checkpoints, metrics).')
  flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                    'train (resuming if possible) or eval (of the latest checkpoint).')
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_logger().addFilter(_DropUntrackedMetricWarning())
  # pylint: disable=g-import-not-at-top
  from tiny_recursive import trainer
  # pylint: enable=g-import-not-at-top
  try:
    _run()
  except trainer.NonFiniteLossError as error:
    cli.fail(error, status=1)


def _run() -> None:
  """Trains or evaluates as the flags say; prints the final evaluation as JSON."""
  from tiny_recursive import trainer  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir
  if flags.FLAGS.mode == 'eval':
    results = trainer.evaluate_checkpoint(config, workdir)
  else:
    bar = None

    def progress(step, total, metrics):
      nonlocal bar
      if bar is None:
        # Starts at the first logged step: the rate then covers measured steps only (the
        # first interval includes compilation).
        bar = tqdm.tqdm(total=total, initial=step,
                        unit='step', dynamic_ncols=True, file=sys.stderr)
      bar.update(step - bar.n)
      bar.set_postfix(loss=f"{metrics.get('lm_loss', float('nan')):.3f}",
                      exact=f"{metrics.get('exact_accuracy', 0.0):.3f}",
                      steps=f"{metrics.get('steps', 0.0):.1f}")

    try:
      results = trainer.train_and_evaluate(config, workdir, progress=progress)
    finally:
      if bar is not None:
        bar.close()  # Ends the bar's line, so that an error message starts on its own.
  print(json.dumps({'final_eval': results}, sort_keys=True), flush=True)


if __name__ == '__main__':
  define_flags()
  cli.run(main)

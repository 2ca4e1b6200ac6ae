r"""Trains (and evaluates) a Tiny Recursive Model.

  python -m experiments.main --config=sudoku_quick --workdir=/tmp/trm_quick
  python -m experiments.main --config=arc_agi1 --workdir=gs://bucket/run \
      --config.data.data_dir=gs://bucket/tfds
  python -m experiments.main --config=sudoku_extreme_mlp --workdir=DIR --mode=eval

Rerunning the same command resumes from the latest checkpoint in --workdir (a finished run
prints its final evaluation again). SIGTERM or Ctrl-C saves the current step and exits; a
second Ctrl-C aborts without saving. Prints the final (or latest) evaluation as JSON.
"""

import json

from absl import flags
from ml_collections import config_flags

from experiments import cli
from experiments import command_line

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config name (see experiments/configs) or path[:argument].',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the run (checkpoints, metrics).')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                          'train (resuming if possible) or eval (of the latest checkpoint).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  cli.no_positional_arguments(argv)
  command_line.drop_untracked_metric_warning()
  from tiny_recursive import trainer  # pylint: disable=g-import-not-at-top
  try:
    if _MODE.value == 'eval':
      results = trainer.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value)
    else:
      with command_line.ProgressBar() as progress:
        results = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value, progress=progress,
                                             notify=progress.notify)
  except trainer.NonFiniteLossError as error:
    cli.fail(error, status=1)
  except KeyboardInterrupt:
    # A Ctrl-C before training starts, or a second one (the first saves and stops).
    cli.fail(command_line.INTERRUPTED_MESSAGE, status=command_line.EXIT_INTERRUPTED)
  print(json.dumps({'final_eval': results}, sort_keys=True), flush=True)


if __name__ == '__main__':
  cli.run(main)

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
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import command_line
from experiments import config_loading

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config name (see experiments/configs) or path[:argument].',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the run (checkpoints, metrics).')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                          'train (resuming if possible) or eval (of the latest checkpoint).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  command_line.quiet_logging()
  from tiny_recursive import trainer  # pylint: disable=g-import-not-at-top

  def run():
    if _MODE.value == 'eval':
      return trainer.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value)
    with command_line.ProgressBar() as progress:
      return trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value, progress=progress,
                                        notify=progress.notify)

  results = command_line.run_or_exit(run)
  print(json.dumps({'final_eval': results}, sort_keys=True), flush=True)


if __name__ == '__main__':
  app.run(main, argv=config_loading.expand_config_argv_or_exit(sys.argv),
          flags_parser=command_line.parse_flags)

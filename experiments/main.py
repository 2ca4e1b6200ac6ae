r"""Trains (and evaluates) a Tiny Recursive Model.

  python -m experiments.main --config=sudoku_quick --workdir=/tmp/trm_quick
  python -m experiments.main --config=arc_agi1 --workdir=gs://bucket/run \
      --config.data.data_dir=gs://bucket/tfds
  python -m experiments.main --config=sudoku_extreme_mlp --workdir=DIR --mode=eval

Rerunning the same command resumes from the latest checkpoint in --workdir.
"""

import json
import re
import sys

from absl import app
from absl import flags
from absl import logging
import tqdm
from ml_collections import config_flags

from experiments import config_loading


class _DropUntrackedMetricWarning:
  """Interval saves carry no eval metric by design; Orbax warns about that on every save."""

  def filter(self, record) -> bool:
    return 'did not provide metrics' not in record.getMessage()


def _parse_flags(argv: list[str]) -> list[str]:
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
  if not flags.FLAGS['verbosity'].present:
    # Keep the terminal to the progress bar, warnings and the result; pass -v 0 for INFO.
    logging.set_verbosity(logging.WARNING)
  logging.get_absl_logger().addFilter(_DropUntrackedMetricWarning())
  # pylint: disable=g-import-not-at-top
  from tiny_recursive import checkpointing
  from tiny_recursive import config_validation
  from tiny_recursive import trainer
  # pylint: enable=g-import-not-at-top
  try:
    _run()
  except (config_validation.ConfigError, FileNotFoundError,
          checkpointing.WorkdirNotWritableError) as error:
    # Bad input: one readable line rather than a traceback.
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  except trainer.NonFiniteLossError as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(1)


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
  app.run(main, argv=config_loading.expand_config_argv_or_exit(sys.argv),
          flags_parser=_parse_flags)

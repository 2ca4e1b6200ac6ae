r"""Exports a trained run as a model to ship: EMA weights, model config, figures, checksums.

  python -m experiments.export_model --workdir=RUN --output=pretrained/sudoku_extreme_mlp \
      [--step=N] [--config_name=sudoku_extreme_mlp]

Writes, to a temporary directory renamed into place at the end:
  arrays/              the weights inference needs (EMA parameters, constants, puzzle table)
  model_config.json    the model configuration (checked by predict and solve)
  model_info.json      source step, the evaluation metrics of that step (or of the last
                       evaluation before it, `eval_step`), the config name
  SHA256SUMS           `sha256sum -c` format, one line per file above; loading verifies it

`experiments.predict` and `experiments.solve` take the directory as `--checkpoint`.
"""

import json
import os
import time

from absl import flags
from etils import epath

from experiments import cli
from tiny_recursive import checkpointing
from tiny_recursive import metrics_logging
from tiny_recursive import model as model_lib

INFO_FILE = 'model_info.json'


def export(workdir: str, output: str, step: int | None = None, config_name: str = '') -> dict:
  """Writes the export of `workdir`'s checkpoint `step` (the latest if None); returns its info."""
  source = workdir
  if step is not None:
    source = epath.Path(workdir) / checkpointing.CHECKPOINTS_SUBDIR / str(step)
    if not source.is_dir():
      raise FileNotFoundError(f'{os.fspath(source)}: no checkpoint of step {step}.')
  source = checkpointing.checkpoint_step_directory(source)
  params, constants, puzzle_table, model_config = checkpointing.load_model(source)
  # Through the typed config: checked, and without keys this version no longer has.
  model_config = model_lib.ModelConfig.from_dict(model_config).to_dict()
  step = int(os.path.basename(source))
  # The evaluation of the exported step, else the last one before it (with its step).
  evals = [row for row in metrics_logging.read_metrics(workdir, 'eval') if row['step'] <= step]
  info = {
      'source_step': step,
      'config_name': config_name,
      'eval_step': evals[-1]['step'] if evals else None,
      'eval': {key: value for key, value in (evals[-1] if evals else {}).items()
               if key not in ('step', 'split')},
      'exported': time.strftime('%Y-%m-%d', time.gmtime()),
  }
  checkpointing.save_model(output, params, constants, puzzle_table, model_config,
                           extra_files={INFO_FILE: json.dumps(info, indent=2, sort_keys=True)},
                           checksums=True)
  return info


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Training run directory.', required=True)
  flags.DEFINE_string('output', None, 'Directory of the export.', required=True)
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_string('config_name', '', 'Config the run used, for the record.')


def main(argv):
  cli.no_positional_arguments(argv)
  f = flags.FLAGS
  info = export(f.workdir, f.output, f.step, f.config_name)
  print(f'Exported step {info["source_step"]} of {f.workdir} to {f.output}.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)

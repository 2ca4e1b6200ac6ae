r"""Evaluates a saved model on the test split, writing nothing next to the checkpoint.

  python -m experiments.evaluate --config=sudoku_extreme_mlp --checkpoint=/tmp/trm_sudoku_mlp \
      --config.eval.num_steps=64 --config.eval.num_trajectories=8 \
      --config.eval.trajectory_noise=0.1 --output=scaling.jsonl

Runs the evaluators of training (`evaluation.build_evaluators`: exact accuracy of the last
step, adaptive halting, ARC voting) with `config.eval`'s test-time scaling
(docs/test_time_scaling.md) and prints one JSON line: the metrics, the settings and the test-
time compute (supervision steps x trajectories per puzzle). `--output` appends the same line
to a JSON-lines file. `--checkpoint` is a training workdir (its latest checkpoint, EMA
weights) or a model export. Unlike `experiments.main --mode=eval`, nothing is added to the
workdir's metrics, so a grid of settings leaves the run's learning curves as they are.
"""

import json
import os
from typing import Any

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags

from experiments import cli
from experiments import predict
from tiny_recursive import config_validation
from tiny_recursive import evaluation
from tiny_recursive import sharding
from tiny_recursive import trainer


class _Weights:
  """What the evaluators read from a train state: eval weights, constants, puzzle table."""

  def __init__(self, params: Any, constants: Any, puzzle_table: Any):
    self._params = params
    self.constants = constants
    self.puzzle_table = puzzle_table

  def eval_params(self) -> Any:
    return self._params


def evaluate_saved_model(config: ml_collections.ConfigDict,
                         checkpoint: str) -> dict[str, Any]:
  """The metrics of `checkpoint` on `config`'s test split, with the eval settings used.

  Returns:
    A JSON-compatible dict: every evaluator metric, `checkpoint`, `num_steps`,
    `num_trajectories`, `trajectory_noise`, `noise_seed` and `test_time_compute`.
  """
  config_validation.validate(config)
  data = trainer.load_eval_data(config)
  model, params, constants, puzzle_table = predict.load_checked_model(config, checkpoint)
  if model.num_puzzle_identifiers != data.num_puzzle_identifiers:
    raise ValueError(f'{checkpoint}: its puzzle table has {model.num_puzzle_identifiers} '
                     f'rows, the {config.data.name} test data numbers '
                     f'{data.num_puzzle_identifiers} identifiers.')
  mesh = sharding.create_mesh()
  weights = _Weights(*jax.device_put((params, constants, puzzle_table),
                                     sharding.replicated(mesh)))
  evaluators = evaluation.build_evaluators(config, model, mesh, data.eval, data.arc_spec)
  results: dict[str, Any] = dict(evaluators.run(weights))
  settings = evaluation.eval_settings(config, model)
  results.update(settings.to_dict(), checkpoint=checkpoint,
                 test_time_compute=settings.num_steps * settings.num_trajectories)
  return results


def define_flags() -> None:
  """Defines the command-line flags (only when run as a program, so the module imports cleanly)."""
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config: a name from experiments/configs or a path.')
  flags.DEFINE_string('checkpoint', None, 'Training workdir or model export directory.')
  flags.DEFINE_string('output', None, 'JSON-lines file to append the result to.')
  flags.mark_flags_as_required(['config', 'checkpoint'])


def main(argv):
  cli.no_positional_arguments(argv)
  f = flags.FLAGS
  line = json.dumps(evaluate_saved_model(f.config, f.checkpoint), sort_keys=True)
  if f.output and jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(f.output)), exist_ok=True)
    with open(f.output, 'a', encoding='utf-8') as out:
      out.write(line + '\n')
  print(line, flush=True)


if __name__ == '__main__':
  define_flags()
  cli.run(main)

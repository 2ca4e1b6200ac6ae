"""Checks a config before anything is compiled; each error names the offending key.

ml_collections already refuses unknown keys and wrongly typed values in `--config.KEY=VALUE`
overrides; this module checks the values themselves (the model's through
`model.ModelConfig`, which checks its own) and their agreement with the devices and the data
set.
"""

import math
from typing import Any

import jax
import ml_collections

from tiny_recursive import losses
from tiny_recursive import model as model_lib
from tiny_recursive import sharding

# (seq_len, vocab_size) of each data set's token format (TRM_REFERENCE.md §2).
DATA_DIMENSIONS = {
    'sudoku_extreme': (81, 11),
    'maze_hard': (900, 6),
    'arc_agi': (900, 12),
}


class ConfigError(ValueError):
  """A config value is invalid; the message names the key."""


def _require(condition: bool, key: str, message: str) -> None:
  if not condition:
    raise ConfigError(f'config.{key}: {message}')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first invalid value found."""
  data, model, train, evaluation = config.data, config.model, config.train, config.eval
  _require(data.name in DATA_DIMENSIONS, 'data.name',
           f'expected one of {sorted(DATA_DIMENSIONS)}, got {data.name!r}.')
  seq_len, vocab_size = DATA_DIMENSIONS[data.name]
  _require(data.seq_len == seq_len, 'data.seq_len',
           f'{data.name} sequences have {seq_len} tokens, got {data.seq_len}.')
  _require(data.vocab_size == vocab_size, 'data.vocab_size',
           f'{data.name} has a vocabulary of {vocab_size} tokens, got {data.vocab_size}.')
  _require(0 <= data.ignore_label_id < vocab_size, 'data.ignore_label_id',
           f'must be a token id in [0, {vocab_size}), got {data.ignore_label_id}.')
  _require(data.num_augmentations >= 1, 'data.num_augmentations',
           f'must be at least 1, got {data.num_augmentations}.')
  _require(data.epochs_per_iteration >= 0, 'data.epochs_per_iteration',
           f'must be >= 0, got {data.epochs_per_iteration}.')

  for key in ('global_batch_size', 'epochs', 'eval_interval', 'log_every_steps',
              'checkpoint_every_steps', 'keep_checkpoints'):
    _require(train[key] >= 1, f'train.{key}', f'must be a positive integer, got {train[key]}.')
  _require(train.max_steps >= 0, 'train.max_steps', f'must be >= 0, got {train.max_steps}.')
  _require(train.eval_every_steps >= 0, 'train.eval_every_steps',
           f'must be >= 0 (0: every eval_interval epochs), got {train.eval_every_steps}.')
  _require(evaluation.global_batch_size >= 1, 'eval.global_batch_size',
           f'must be positive, got {evaluation.global_batch_size}.')
  _require(evaluation.num_steps >= 0, 'eval.num_steps',
           f'must be >= 0 (0: model.halt_max_steps), got {evaluation.num_steps}.')
  _require(evaluation.num_trajectories >= 1, 'eval.num_trajectories',
           f'must be at least 1, got {evaluation.num_trajectories}.')
  _require(math.isfinite(evaluation.trajectory_noise) and evaluation.trajectory_noise >= 0,
           'eval.trajectory_noise',
           f'must be a finite number >= 0, got {evaluation.trajectory_noise}.')
  _require(0 <= evaluation.noise_seed < 2**32, 'eval.noise_seed',
           f'must be in [0, 2**32), got {evaluation.noise_seed}.')
  _require(evaluation.arc_versions >= 0, 'eval.arc_versions',
           f'must be >= 0 (0: every kept version of each ARC task), got '
           f'{evaluation.arc_versions}.')
  # A limit that would change nothing is refused, as the model's no-op options are.
  _require(evaluation.arc_versions == 0 or data.name == 'arc_agi', 'eval.arc_versions',
           f'applies to ARC evaluation only; {data.name} has no versions to limit, got '
           f'{evaluation.arc_versions} (use 0).')
  for key in ('lr', 'puzzle_emb_lr', 'weight_decay', 'puzzle_emb_weight_decay'):
    _require(train[key] >= 0, f'train.{key}', f'must be >= 0, got {train[key]}.')
  _require(0 <= train.lr_min_ratio <= 1, 'train.lr_min_ratio',
           f'must be in [0, 1], got {train.lr_min_ratio}.')
  for key in ('beta1', 'beta2', 'ema_rate'):
    _require(0 <= train[key] < 1, f'train.{key}', f'must be in [0, 1), got {train[key]}.')
  _require(train.loss_type in losses.LOSS_TYPES, 'train.loss_type',
           f'expected one of {losses.LOSS_TYPES}, got {train.loss_type!r}.')
  _require(train.data_parallel in sharding.DATA_PARALLEL_MODES, 'train.data_parallel',
           f'expected one of {sharding.DATA_PARALLEL_MODES}, got {train.data_parallel!r}.')
  _require(train.eval_interval <= train.epochs, 'train.eval_interval',
           f'({train.eval_interval} epochs) exceeds train.epochs ({train.epochs}).')

  for key in ('global_batch_size',):
    try:
      sharding.check_batch_divisible(train[key], f'config.train.{key}')
      sharding.check_batch_divisible(evaluation[key], f'config.eval.{key}')
    except ValueError as error:
      raise ConfigError(str(error)) from None

  if model.attention_impl == 'cudnn':
    _require(jax.default_backend() == 'gpu', 'model.attention_impl',
             f"'cudnn' needs a GPU; this run's backend is {jax.default_backend()!r}.")
  try:
    model_lib.ModelConfig.create(model, seq_len=data.seq_len, vocab_size=data.vocab_size)
  except ValueError as error:
    raise ConfigError(f'config.{error}') from None


def validate_against_data(config: ml_collections.ConfigDict, data: Any,
                          numbers: Any = None) -> None:
  """Checks the config against the loaded data (`pipeline.EvalPipeline` or `Pipelines`) and,
  for training, the run's numbers (`trainer.RunNumbers`)."""
  _require(data.seq_len == config.data.seq_len, 'data.seq_len',
           f'{config.data.seq_len}, but the {config.data.name} data has sequences of '
           f'{data.seq_len} tokens.')
  if numbers is not None:
    _require(numbers.schedule_steps >= 1, 'train.epochs',
             f'{config.train.epochs} epochs of {data.total_groups} puzzle groups give no full '
             f'batch of {config.train.global_batch_size}.')

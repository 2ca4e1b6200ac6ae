r"""Batch prediction with a saved model (TRM_REFERENCE.md §4, evaluation).

  python -m experiments.predict --config=sudoku_extreme_mlp --checkpoint=/tmp/trm_sudoku_mlp \
      --inputs=puzzles.npz --output=predictions.npz [--steps=16] [--batch_size=256]

`--inputs` is an .npz with `inputs` int [N, seq_len] and `puzzle_identifiers` int [N].
Every example runs `--steps` supervision steps (default `config.eval.num_steps`, whose 0
means `config.model.halt_max_steps`) from the reset state with no early halting. `--output`
gets `preds` int32 [N, seq_len] (argmax of the last step), `logits` float32 [steps, N,
seq_len, vocab] and `q_halt_logits` float32 [steps, N]. `--checkpoint` is a model export
(experiments.import_torch, training exports) or a training workdir (its latest checkpoint,
EMA weights).

Test-time scaling (docs/test_time_scaling.md): `--config.eval.num_trajectories=K
--config.eval.trajectory_noise=S` runs K noisy trajectories per example and keeps the one
with the highest last-step q_halt; the outputs above are the kept trajectory's, plus
`trajectory` int32 [N] (its index) and `trajectory_q_halt` float32 [N, K]. Memory grows
K-fold: lower `--batch_size` to fit.
"""

import dataclasses
import os
import zipfile
from typing import Any, Mapping

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from experiments import cli
from tiny_recursive import atomic_files
from tiny_recursive import act
from tiny_recursive import checkpointing
from tiny_recursive import model as model_lib

# Model settings that change parameter shapes or the computed function; a checkpoint's stored
# value must agree with the config's.
ARCHITECTURE_KEYS = ('arch', 'hidden_size', 'num_heads', 'expansion', 'num_layers',
                     'hrm_high_layers', 'hrm_low_layers', 'h_cycles', 'l_cycles', 'mixer',
                     'pos_encodings', 'rope_theta', 'rms_norm_eps', 'puzzle_emb_len',
                     'puzzle_emb_ndim')
# Settings that choose the program for the same function (layers.Block, layers._cudnn_attention).
# In bfloat16 each program rounds differently, and 16 or more recursive supervision steps carry
# a rounding difference far enough to change single answers; so a checkpoint is run, unless a
# flag names the key, with the values it was trained and measured with.
# Keys that go together (the fused kernel needs the sequence-major layout) are taken over, or
# left as configured, together.
PROGRAM_KEYS = (('activation_layout', 'fused_sequence_mlp', 'sequence_mlp_kernel'),
                ('cudnn_seq_multiple', 'pad_sequence_once'), ('fused_swiglu',))


def load_inputs(path: str, *, seq_len: int, vocab_size: int,
                num_puzzle_identifiers: int) -> tuple[np.ndarray, np.ndarray]:
  """Reads and validates an inputs .npz.

  Returns:
    inputs int32 [N, seq_len] and puzzle_identifiers int32 [N].

  Raises:
    ValueError: naming the file, the key and the offending row when the content is wrong.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--inputs: no file at {path}.')
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {key: data[key] for key in data.files}
  except (ValueError, OSError, zipfile.BadZipFile, AttributeError) as e:
    raise ValueError(f'{path}: not a readable .npz of numeric arrays ({e}).') from e
  missing = [k for k in ('inputs', 'puzzle_identifiers') if k not in arrays]
  if missing:
    raise ValueError(f'{path}: missing array(s) {missing}; found {sorted(arrays)}. Expected '
                     f"'inputs' [N, {seq_len}] and 'puzzle_identifiers' [N].")
  checked = {}
  for key, limit, shape_text in (('inputs', vocab_size, f'[N, {seq_len}]'),
                                 ('puzzle_identifiers', num_puzzle_identifiers, '[N]')):
    array = arrays[key]
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
      if not np.issubdtype(array.dtype, np.floating) or not np.all(np.mod(array, 1) == 0):
        raise ValueError(f'{path}: {key!r} has dtype {array.dtype}; expected integers.')
    expected_ndim = 2 if key == 'inputs' else 1
    if array.ndim != expected_ndim or (key == 'inputs' and array.shape[1] != seq_len):
      raise ValueError(f'{path}: {key!r} has shape {array.shape}; expected {shape_text} '
                       f'(config.data.seq_len = {seq_len}).')
    out_of_range = (array < 0) | (array >= limit)
    if out_of_range.any():
      rows = np.nonzero(out_of_range.reshape(array.shape[0], -1).any(axis=1))[0]
      row = int(rows[0])
      values = sorted(set(np.asarray(array[row]).ravel()[out_of_range[row].ravel()].tolist()))
      what = ('config.data.vocab_size' if key == 'inputs' else
              "the number of rows of the checkpoint's puzzle table")
      raise ValueError(f'{path}: {key!r} row {row} has value(s) {values} outside [0, {limit}) '
                       f'({limit} = {what}); {rows.size} row(s) are out of range.')
    checked[key] = array.astype(np.int32)
  if checked['inputs'].shape[0] == 0:
    raise ValueError(f"{path}: 'inputs' has no rows.")
  if checked['inputs'].shape[0] != checked['puzzle_identifiers'].shape[0]:
    raise ValueError(f"{path}: 'inputs' has {checked['inputs'].shape[0]} rows but "
                     f"'puzzle_identifiers' has {checked['puzzle_identifiers'].shape[0]}.")
  return checked['inputs'], checked['puzzle_identifiers']


def check_model_config(config_model: ml_collections.ConfigDict,
                       stored: Mapping[str, Any], checkpoint: str) -> None:
  """Raises ValueError if the checkpoint's stored model config disagrees on architecture."""
  for key in ARCHITECTURE_KEYS:
    if key in stored and key in config_model and stored[key] != config_model[key]:
      raise ValueError(
          f'{checkpoint} was saved with model.{key} = {stored[key]!r} but the config has '
          f'{config_model[key]!r}; pass --config.model.{key}={stored[key]} or the matching '
          '--config.')


def check_params(model: model_lib.RecursiveModel, params: Any, constants: Any,
                 checkpoint: str) -> None:
  """Raises ValueError naming the first parameter whose shape differs from the model's."""
  expected = jax.eval_shape(model.init, jax.random.key(0))
  for name, tree, reference in (('params', params, expected['params']),
                                ('constants', constants, expected['constants'])):
    found = {jax.tree_util.keystr(p): np.shape(v)
             for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
    wanted = {jax.tree_util.keystr(p): v.shape
              for p, v in jax.tree_util.tree_flatten_with_path(reference)[0]}
    if found.keys() != wanted.keys():
      raise ValueError(
          f"{checkpoint}: {name} do not match the config's model: missing "
          f'{sorted(wanted.keys() - found.keys())}, '
          f'unexpected {sorted(found.keys() - wanted.keys())}.')
    for key, shape in wanted.items():
      if tuple(found[key]) != tuple(shape):
        raise ValueError(f'{checkpoint}: {name}{key} has shape {found[key]}, the config\'s '
                         f'model expects {shape}.')


def predict(model: model_lib.RecursiveModel, params: Any, constants: Any, puzzle_table: Any,
            inputs: np.ndarray, puzzle_identifiers: np.ndarray, *, num_steps: int,
            batch_size: int, settings: act.EvalSettings | None = None
            ) -> dict[str, np.ndarray]:
  """Runs `num_steps` evaluation steps on every example, in batches (the last one padded).

  Args:
    settings: test-time scaling; None: `num_steps` deterministic steps. Its num_steps wins.

  Returns:
    preds int32 [N, seq_len], logits float32 [num_steps, N, seq_len, vocab], q_halt_logits
    float32 [num_steps, N]; with several trajectories, those of the kept one and
    trajectory int32 [N], trajectory_q_halt float32 [N, K]. Example i's noise depends on i,
    not on the batch size.
  """
  settings = settings or act.EvalSettings(num_steps=num_steps)
  num_examples = inputs.shape[0]
  batch_size = max(1, min(batch_size, num_examples))
  with_trajectories = settings.num_trajectories > 1

  @jax.jit
  def run(params, constants, puzzle_table, batch_inputs, batch_ids, first_example):
    out = act.run_eval(model, params, constants, model.puzzle_rows(puzzle_table, batch_ids),
                       batch_inputs, settings, first_example=first_example, keep_steps=True)
    result = {'preds': out.preds, 'logits': out.step_logits, 'q_halt_logits': out.step_q_halt}
    if with_trajectories:
      result.update(trajectory=out.trajectory, trajectory_q_halt=out.trajectory_q_halt)
    return result

  params, constants, puzzle_table = jax.device_put((params, constants, puzzle_table))
  # Axis of the example index in each output.
  axes = {'preds': 0, 'logits': 1, 'q_halt_logits': 1}
  if with_trajectories:
    axes.update(trajectory=0, trajectory_q_halt=0)
  outputs = {key: [] for key in axes}
  for start in range(0, num_examples, batch_size):
    stop = min(start + batch_size, num_examples)
    pad = batch_size - (stop - start)
    # Padding rows are blank examples (pad token 0, identifier 0) and are dropped below.
    batch_inputs = np.pad(inputs[start:stop], ((0, pad), (0, 0)))
    batch_ids = np.pad(puzzle_identifiers[start:stop], (0, pad))
    result = jax.device_get(run(params, constants, puzzle_table, batch_inputs, batch_ids,
                                np.int32(start)))
    for key, axis in axes.items():
      kept = np.take(np.asarray(result[key]), np.arange(stop - start), axis=axis)
      outputs[key].append(kept.astype(np.int32 if key in ('preds', 'trajectory')
                                      else np.float32))
    logging.info('Predicted %d / %d examples.', stop, num_examples)
  return {key: np.concatenate(outputs[key], axis=axis) for key, axis in axes.items()}


def write_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
  """Writes `arrays` to `path` through a temporary file in the same directory and a rename."""

  def write(temp_path: str) -> None:
    with open(temp_path, 'wb') as f:
      np.savez(f, **arrays)

  atomic_files.write_atomically(path, write)


def explicit_config_keys(flag_values: flags.FlagValues = flags.FLAGS) -> set[str]:
  """The config keys set on the command line (`--config.a.b=...`), e.g. 'model.mixer';
  empty when the program defines no `--config` flag or has not parsed its flags."""
  if 'config' not in flag_values or not flag_values.is_parsed():
    return set()
  return set(config_flags.get_override_values(flag_values['config']))


def checkpoint_program(config_model: ml_collections.ConfigDict, stored: Mapping[str, Any],
                       checkpoint: str, explicit: set[str]) -> ml_collections.ConfigDict:
  """`config_model` with the checkpoint's stored `PROGRAM_KEYS` values, except for groups
  with a key in `explicit` (flags given as 'model.KEY'); logs every value it takes over.

  A stored config without a program key was saved before the key existed, and ran with
  `ModelConfig`'s default for it (the program of that time); with no stored config at all
  the config's values are kept.
  """
  if stored:
    stored = {**{field.name: field.default for field in dataclasses.fields(model_lib.ModelConfig)
                 if any(field.name in group for group in PROGRAM_KEYS)}, **stored}
  adopted = config_model.copy_and_resolve_references()
  for group in PROGRAM_KEYS:
    if any(f'model.{key}' in explicit for key in group):
      continue
    for key in group:
      if key in stored and key in adopted and stored[key] != adopted[key]:
        logging.info('%s: running with its model.%s = %r (the config has %r; pass '
                     '--config.model.%s to choose).', checkpoint, key, stored[key],
                     adopted[key], key)
        adopted[key] = stored[key]
  return adopted


def load_checked_model(config: ml_collections.ConfigDict, checkpoint: str):
  """Loads a model export or training workdir and checks it against `config.model`.

  The model runs the program the checkpoint was trained with (`PROGRAM_KEYS` from its stored
  config), except where a `--config.model.KEY` flag chooses another.

  Returns:
    (model, params, constants, puzzle_table), the constants cast to the forward dtype and the
    number of puzzle identifiers taken from the checkpoint's table.
  """
  params, constants, puzzle_table, stored_config = checkpointing.load_model(checkpoint)
  check_model_config(config.model, stored_config or {}, checkpoint)
  model_config = checkpoint_program(config.model, stored_config or {}, checkpoint,
                                    explicit_config_keys())
  if config.model.puzzle_emb_ndim > 0:
    if puzzle_table is None or np.ndim(puzzle_table) != 2:
      raise ValueError(f'{checkpoint}: the config uses puzzle embeddings but the checkpoint '
                       'has no 2-D puzzle table.')
    num_ids = int(np.shape(puzzle_table)[0])
  else:
    num_ids = 1
    puzzle_table = np.zeros((1, 0), np.float32)
  model = model_lib.build_model(model_config, seq_len=config.data.seq_len,
                                vocab_size=config.data.vocab_size,
                                num_puzzle_identifiers=num_ids)
  check_params(model, params, constants, checkpoint)
  constants = jax.tree_util.tree_map(lambda c: jnp.asarray(c, model.dtype), constants)
  return model, params, constants, puzzle_table


def eval_settings(config: ml_collections.ConfigDict,
                  steps: int | None = None) -> act.EvalSettings:
  """`config.eval`'s test-time scaling; `steps` (the --steps flag), when given, wins over
  eval.num_steps (0: model.halt_max_steps)."""
  num_steps = int(steps if steps is not None else
                  config.eval.num_steps or config.model.halt_max_steps)
  if num_steps < 1:
    raise ValueError(f'--steps must be at least 1, got {num_steps}.')
  try:
    return act.EvalSettings(num_steps=num_steps,
                            num_trajectories=int(config.eval.num_trajectories),
                            trajectory_noise=float(config.eval.trajectory_noise),
                            noise_seed=int(config.eval.noise_seed))
  except ValueError as error:
    raise ValueError(f'config.eval: {error}') from None


def run_prediction(config: ml_collections.ConfigDict, checkpoint: str, inputs_path: str,
                   output_path: str, *, steps: int | None = None,
                   batch_size: int | None = None) -> dict[str, np.ndarray]:
  """Loads the checkpoint and the inputs, predicts and writes `output_path`."""
  model, params, constants, puzzle_table = load_checked_model(config, checkpoint)
  num_ids = model.num_puzzle_identifiers
  inputs, ids = load_inputs(inputs_path, seq_len=config.data.seq_len,
                            vocab_size=config.data.vocab_size, num_puzzle_identifiers=num_ids)
  settings = eval_settings(config, steps)
  batch_size = config.eval.global_batch_size if batch_size is None else batch_size
  if batch_size < 1:
    raise ValueError(f'--batch_size must be at least 1, got {batch_size}.')
  outputs = predict(model, params, constants, puzzle_table, inputs, ids,
                    num_steps=settings.num_steps, batch_size=batch_size, settings=settings)
  write_npz(output_path, outputs)
  return outputs


def define_flags() -> None:
  """Defines the command-line flags (only when run as a program, so the module imports cleanly)."""
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config: a name from experiments/configs or a path.')
  flags.DEFINE_string('checkpoint', None, 'Model export directory or training workdir.')
  flags.DEFINE_string('inputs', None,
                      '.npz with inputs [N, seq_len] and puzzle_identifiers [N].')
  flags.DEFINE_string('output', None, '.npz to write preds, logits and q_halt_logits to.')
  flags.DEFINE_integer('steps', None, 'Supervision steps per example (default '
                       'config.eval.num_steps; 0 there: config.model.halt_max_steps).')
  flags.DEFINE_integer('batch_size', None,
                       'Examples per forward call (default config.eval.global_batch_size).')
  flags.mark_flags_as_required(['config', 'checkpoint', 'inputs', 'output'])


def main(argv):
  cli.no_positional_arguments(argv)
  f = flags.FLAGS
  outputs = run_prediction(f.config, f.checkpoint, f.inputs, f.output, steps=f.steps,
                           batch_size=f.batch_size)
  print(f'Wrote {f.output}: preds {outputs["preds"].shape}, logits {outputs["logits"].shape}.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)

"""`train_and_evaluate(config, workdir)`: the training loop around the pure steps.

Reads the data, builds the model, restores the latest checkpoint in `workdir` if there is
one (parameters, optimizer, EMA, puzzle table, ACT carry, step, RNG and data-iterator
position: rerunning the same command resumes exactly), trains with the jitted step,
evaluates every `eval_interval` epochs and at the end, and checkpoints every
`checkpoint_every_steps`, at each evaluation and on SIGTERM (then returns normally).
"""

import dataclasses
import functools
import os
import time
from typing import Any, Callable

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections

from tiny_recursive import act
from tiny_recursive import arc_evaluation
from tiny_recursive import checkpointing
from tiny_recursive import config_validation
from tiny_recursive import losses
from tiny_recursive import metrics_logging
from tiny_recursive import model as model_lib
from tiny_recursive import rendering
from tiny_recursive import sharding
from tiny_recursive import train
from tiny_recursive.data import pipeline
from tiny_recursive.data import sources

# progress(step, total_steps, latest_train_metrics) is called at every log step.
ProgressFn = Callable[[int, int, dict[str, float]], None]


class NonFiniteLossError(FloatingPointError):
  """Raised when the training loss or the parameters become NaN or infinite."""


def load_splits(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
  """Loads the train and test splits of `config.data` (building the committed sample)."""
  data = config.data
  data_dir = data.data_dir or None
  if data.name == 'sudoku_extreme' and data.builder_config == 'sample':
    sources.ensure_built(data.name, data.builder_config, data_dir)
  if data.name == 'arc_agi':
    return (sources.load_arc_split(data.builder_config, 'train', data_dir),
            sources.load_arc_split(data.builder_config, 'test', data_dir))
  return (sources.load_grid_split(data.name, data.builder_config, 'train', data_dir),
          sources.load_grid_split(data.name, data.builder_config, 'test', data_dir))


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    metrics_logging.write_text_atomic(epath.Path(workdir) / 'config.json',
                                      config.to_json_best_effort(indent=2, sort_keys=True))


def _best_metric(config: ml_collections.ConfigDict) -> str:
  return 'pass@2' if config.data.name == 'arc_agi' else 'exact_accuracy'


@functools.partial(jax.jit, donate_argnums=(0,))
def _accumulate(totals: dict[str, jax.Array], metrics: dict[str, jax.Array],
                step: jax.Array) -> dict[str, jax.Array]:
  """Adds one step's summed metrics on device; tracks the first step with a non-finite loss."""
  loss = metrics['lm_loss'] + metrics['q_halt_loss']
  first_bad = jnp.where(jnp.isfinite(loss) | (totals['first_nonfinite_step'] >= 0),
                        totals['first_nonfinite_step'], step)
  out = {key: totals[key] + metrics[key] for key in metrics}
  out['first_nonfinite_step'] = first_bad
  out['num_steps'] = totals['num_steps'] + 1
  return out


def _zero_totals(metric_shapes: dict[str, Any]) -> dict[str, jax.Array]:
  totals = {key: jnp.zeros(shape.shape, jnp.float32) for key, shape in metric_shapes.items()}
  totals['first_nonfinite_step'] = jnp.asarray(-1, jnp.int32)
  totals['num_steps'] = jnp.asarray(0, jnp.int32)
  return totals


NUM_PREDICTION_IMAGES = 4


def prediction_images(config: ml_collections.ConfigDict,
                      examples: dict[str, Any]) -> dict[str, Any]:
  """Input | prediction | target pictures of the first evaluation examples."""
  images = {}
  for i in range(min(NUM_PREDICTION_IMAGES, len(examples['inputs']))):
    images[f'eval_predictions/{i}'] = rendering.render_prediction(
        config.data.name, examples['inputs'][i], examples['preds'][i], examples['labels'][i])
  return images


def evaluate(config: ml_collections.ConfigDict, eval_step, state: train.TrainState,
             pipes: pipeline.Pipelines, mesh,
             examples: dict[str, Any] | None = None,
             submission_path: str | None = None) -> dict[str, float]:
  """Runs every test example through halt_max_steps supervision steps; returns the metrics.

  Exact accuracy and token accuracy of the last step, and the same with adaptive halting
  (stop each puzzle at its first step with q_halt > 0) with its mean number of steps. For
  ARC, the voting metrics (pass@K over augmented versions, §8) are added. If `examples` is a
  dict, the first batch's inputs, labels and preds (host arrays) are stored in it. For ARC,
  process 0 writes the Kaggle submission (top-2 voted attempts) to `submission_path`.
  """
  start = time.perf_counter()
  weights = state.eval_params()
  totals = None
  accumulator = None
  if pipes.arc_spec is not None:
    accumulator = arc_evaluation.ArcAccumulator(pipes.arc_spec)
  for local_batch in pipes.eval:
    model_inputs = {key: local_batch[key] for key in
                    ('inputs', 'labels', 'puzzle_identifiers', 'mask')}
    batch = sharding.global_batch_from_local(mesh, model_inputs)
    out = eval_step(weights, state.constants, state.puzzle_table, batch)
    metrics = out['metrics']
    totals = metrics if totals is None else jax.tree_util.tree_map(jnp.add, totals, metrics)
    if examples is not None and not examples:
      examples.update(inputs=local_batch['inputs'], labels=local_batch['labels'],
                      preds=sharding.fetch(out['preds'])[:len(local_batch['inputs'])])
    if accumulator is not None:
      meta = {key: local_batch[key] for key in ('task_index', 'version_index', 'test_index',
                                                 'mask')}
      meta = sharding.fetch(sharding.global_batch_from_local(mesh, meta))
      preds, q_halt = sharding.fetch((out['preds'], out['q_halt']))
      accumulator.update(meta, preds, q_halt)
  sums = {key: float(value) for key, value in sharding.fetch(totals).items()}
  count = max(sums['count'], 1.0)
  results = {
      'count': sums['count'],
      'exact_accuracy': sums['exact_accuracy'] / count,
      'accuracy': sums['accuracy'] / count,
      'adaptive_exact_accuracy': sums['adaptive_exact_accuracy'] / count,
      'adaptive_mean_steps': sums['adaptive_steps'] / count,
      # The fixed halt_max_steps pass, host-side ARC vote collection included.
      'eval_time_s': time.perf_counter() - start,
  }
  if config.eval.adaptive_halting:
    results.update(evaluate_adaptive(config, state, pipes, mesh))
  if accumulator is not None:
    if submission_path and jax.process_index() == 0:
      arc_evaluation.write_submission(accumulator, submission_path)
    arc = accumulator.result()
    results.update({key: float(value) for key, value in arc.items()
                    if isinstance(value, (int, float))})
  return results


@dataclasses.dataclass
class _Run:
  """Everything built from the config before the first step."""
  pipes: pipeline.Pipelines
  model: model_lib.RecursiveModel
  mesh: Any
  schedules: train.Schedules
  tx: Any
  init: Callable[[jax.Array], train.TrainState]
  abstract_state: Any
  state_sharding: Any
  checkpointer: checkpointing.Checkpointer


def _setup(config: ml_collections.ConfigDict, workdir: str) -> _Run:
  """Validates, loads data, builds model/optimizer and opens the checkpoints of `workdir`."""
  sharding.maybe_initialize_distributed()
  config_validation.validate(config)
  # Creates the directory too; failing here names the workdir before anything is loaded.
  checkpointing.check_workdir_writable(workdir)
  train_split, test_split = load_splits(config)
  pipes = pipeline.build_pipelines(config, train_split, test_split, jax.process_index(),
                                   jax.process_count())
  config_validation.validate_against_data(config, pipes)
  config.data.num_puzzle_identifiers = pipes.num_puzzle_identifiers
  mesh = sharding.create_mesh()
  model = model_lib.build_model(config.model, seq_len=config.data.seq_len,
                                vocab_size=config.data.vocab_size,
                                num_puzzle_identifiers=pipes.num_puzzle_identifiers)
  schedules = train.make_schedules(config, pipes.total_steps)
  tx = train.make_optimizer(config, schedules)
  init = functools.partial(train.create_train_state, model, tx, config)
  abstract_state = jax.eval_shape(init, jax.random.key(config.seed))
  state_sharding = train.state_shardings(abstract_state, mesh)
  abstract_state = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
      state_sharding)
  model_config = dict(config.model.to_dict(), seq_len=config.data.seq_len,
                      vocab_size=config.data.vocab_size,
                      num_puzzle_identifiers=pipes.num_puzzle_identifiers)
  checkpointer = checkpointing.Checkpointer(
      workdir, save_interval_steps=config.train.checkpoint_every_steps,
      max_to_keep=config.train.keep_checkpoints, best_metric=_best_metric(config),
      model_config=model_config,
      omit_fields=() if config.train.checkpoint_act_carry else ('carry',))
  return _Run(pipes, model, mesh, schedules, tx, init, abstract_state, state_sharding,
              checkpointer)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Evaluates the latest checkpoint of `workdir` (EMA weights when on); returns metrics."""
  run = _setup(config, workdir)
  try:
    restored = run.checkpointer.restore_latest(run.abstract_state)
    if restored is None:
      raise FileNotFoundError(f'No checkpoint to evaluate in {run.checkpointer.directory}.')
    state, _, step = restored
    eval_step = train.jit_eval_step(run.model, config, run.mesh)
    results = evaluate(config, eval_step, state, run.pipes, run.mesh,
                       submission_path=os.path.join(workdir, 'submission.json'))
    logger = metrics_logging.MetricsLogger(workdir)
    logger.write(step, 'eval', results)
    logger.close()
    return results
  finally:
    run.checkpointer.close()


def evaluate_adaptive(config: ml_collections.ConfigDict, state: train.TrainState,
                      pipes: pipeline.Pipelines, mesh) -> dict[str, float]:
  """A second pass with early exit (`train.adaptive_eval_step`), timed, so that adaptive
  halting's speed is reported beside the fixed-steps evaluation's (`eval_time_s`)."""
  model = model_lib.build_model(config.model, seq_len=config.data.seq_len,
                                vocab_size=config.data.vocab_size,
                                num_puzzle_identifiers=pipes.num_puzzle_identifiers)
  step_fn = train.jit_adaptive_eval_step(model, config, mesh)
  weights = state.eval_params()
  totals = None
  start = time.perf_counter()
  for local_batch in pipes.eval:
    batch = sharding.global_batch_from_local(mesh, {key: local_batch[key] for key in (
        'inputs', 'labels', 'puzzle_identifiers', 'mask')})
    metrics = step_fn(weights, state.constants, state.puzzle_table, batch)
    totals = metrics if totals is None else jax.tree_util.tree_map(jnp.add, totals, metrics)
  sums = {key: float(value) for key, value in sharding.fetch(totals).items()}
  count = max(sums['count'], 1.0)
  return {'early_exit_exact_accuracy': sums['adaptive_exact_accuracy'] / count,
          'early_exit_mean_steps': sums['adaptive_steps'] / count,
          'early_exit_batch_steps': sums['batch_steps'],
          'early_exit_eval_time_s': time.perf_counter() - start}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       progress: ProgressFn | None = None) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the last eval.

  Args:
    config: the experiment config (experiments/configs/*.py).
    workdir: run directory: config.json, metrics.jsonl, tensorboard/, checkpoints/.
    progress: optional callback for a progress display (entry points only).
  """
  run = _setup(config, workdir)
  _write_config(config, workdir)
  pipes, checkpointer, mesh = run.pipes, run.checkpointer, run.mesh
  total_steps = pipes.total_steps
  if config.train.max_steps:
    total_steps = min(total_steps, config.train.max_steps)
  steps_per_eval = config.train.eval_every_steps or max(
      1, round(pipes.total_steps * config.train.eval_interval / max(config.train.epochs, 1)))
  logging.info('%d training steps (%d per evaluation), %d puzzle identifiers.', total_steps,
               steps_per_eval, pipes.num_puzzle_identifiers)
  train_iter = iter(pipes.train)
  restored = checkpointer.restore_latest(run.abstract_state)
  if restored is None:
    state = jax.jit(run.init, out_shardings=run.state_sharding)(jax.random.key(config.seed))
    logging.info('Starting from scratch: %d parameters.', run.model.param_count(state.params))
  else:
    state, iterator_state, restored_step = restored
    if state.carry is None:
      # Saved without the ACT carry: every slot restarts, as at the first step.
      state = state.replace(carry=jax.jit(
          lambda: act.initial_carry(run.model, state.constants, config.train.global_batch_size),
          out_shardings=run.state_sharding.carry)())
    train_iter.set_state(iterator_state)
    logging.info('Resumed from step %d.', restored_step)
  checkpointer.install_sigterm_handler()

  train_step = train.jit_train_step(run.model, run.tx, run.schedules, config, mesh,
                                    run.state_sharding)
  eval_step = train.jit_eval_step(run.model, config, mesh)
  logger = metrics_logging.MetricsLogger(workdir)
  step = int(state.step)
  totals = None
  log_timer = (time.perf_counter(), step)  # Wall time of the steps between two logs.
  last_eval: dict[str, float] = {}

  last_saved_step = -1

  def save(force: bool, metrics: dict[str, float] | None = None) -> None:
    nonlocal last_saved_step
    if checkpointer.save(step, state, train_iter.get_state(), metrics=metrics, force=force):
      last_saved_step = step

  def check_finite() -> None:
    """Raises (before anything is saved) if a step since the last check was not finite."""
    if totals is None:
      return
    first_bad = int(totals['first_nonfinite_step'])
    if first_bad >= 0:
      checkpointer.wait_until_finished()
      raise NonFiniteLossError(
          f'Training loss became NaN or infinite at step {first_bad + 1}; stopping. The last '
          f'good checkpoint is kept in {checkpointer.directory} (steps '
          f'{checkpointer.all_steps()}).')

  try:
    while step < total_steps:
      local_batch = next(train_iter)
      batch = sharding.global_batch_from_local(mesh, local_batch)
      state, metrics = train_step(state, batch)
      lr = metrics.pop('lr')
      if totals is None:
        totals = _zero_totals(jax.eval_shape(lambda m: m, metrics))
      totals = _accumulate(totals, metrics, jnp.asarray(step, jnp.int32))
      step += 1

      if step % config.train.log_every_steps == 0 or step == total_steps:
        check_finite()
        sums = sharding.fetch(totals)
        num_steps = int(sums.pop('num_steps'))
        sums.pop('first_nonfinite_step')
        logged = losses.normalise_metrics(sums, config.train.global_batch_size, num_steps)
        logged['lr'] = float(lr)
        now = time.perf_counter()
        # Includes input and logging time, so it is an upper bound on the jitted step.
        logged['step_time_ms'] = 1e3 * (now - log_timer[0]) / max(step - log_timer[1], 1)
        log_timer = (now, step)
        logger.write(step, 'train', logged)
        if progress is not None:
          progress(step, total_steps, logged)
        totals = None

      if step % steps_per_eval == 0 or step == total_steps:
        check_finite()
        examples = {}
        last_eval = evaluate(config, eval_step, state, pipes, mesh, examples,
                             submission_path=os.path.join(workdir, 'submission.json'))
        logger.write(step, 'eval', last_eval)
        if jax.process_index() == 0:
          logger.write_images(step, prediction_images(config, examples))
        save(force=True, metrics=last_eval)
        log_timer = (time.perf_counter(), step)
      elif checkpointer.should_save(step):
        check_finite()
        save(force=False)

      if checkpointer.should_stop(step):
        check_finite()
        logging.warning('Stop requested: saving step %d and exiting.', step)
        if last_saved_step != step:  # Orbax refuses to save a step twice.
          save(force=True)
        break
  finally:
    checkpointer.wait_until_finished()
    checkpointer.close()
    logger.close()
  return last_eval

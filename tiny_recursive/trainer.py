"""`train_and_evaluate(config, workdir)`: the training loop around the pure steps.

Reads the data, builds the model, restores the latest checkpoint in `workdir` if there is
one (parameters, optimizer, EMA, puzzle table, ACT carry, step, RNG and data-iterator
position: rerunning the same command resumes exactly), trains with the jitted step,
evaluates every `eval_interval` epochs and at the end, and checkpoints every
`checkpoint_every_steps`, at each evaluation and on SIGTERM or the first Ctrl-C (then
returns normally). metrics.jsonl keeps one row per step and split: a resumed run drops the
rows past its restored step before logging them again.
"""

import dataclasses
import functools
import os
import sys
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
from tiny_recursive import evaluation
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
# notify(message) shows a one-line notice to the person running the command (entry points).
NotifyFn = Callable[[str], None]


def _peak_host_memory_gb() -> float | None:
  """This process's peak resident set so far, in GB (None where the OS does not say)."""
  try:
    import resource  # pylint: disable=import-outside-toplevel  # Unix only.
  except ImportError:
    return None
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return round(peak * (1 if sys.platform == 'darwin' else 1024) / 1e9, 2)  # macOS: bytes.


class _Timings:
  """Wall time of this process's stages, appended to the workdir's timings.jsonl when the
  process's training ends (how start-up, compilation and checkpoints scale with a run), with
  the host's peak resident set at the end of each stage (`host_peak_gb`: the peak so far, so
  the stage where it rises is the one that needed the memory)."""

  def __init__(self):
    self._start = self._last = time.perf_counter()
    self.values: dict[str, float] = {}
    self.host_peak_gb: dict[str, float] = {}

  def mark(self, name: str) -> None:
    """Records the seconds since the previous mark as `name`."""
    now = time.perf_counter()
    self.values[name] = round(now - self._last, 3)
    self._last = now
    peak = _peak_host_memory_gb()
    if peak is not None:
      self.host_peak_gb[name] = peak

  def add(self, name: str, seconds: float) -> None:
    """Adds to a running total `name` and counts it in `name`_count."""
    self.values[name] = round(self.values.get(name, 0.0) + seconds, 3)
    self.values[f'{name}_count'] = self.values.get(f'{name}_count', 0) + 1
    self.values[f'{name}_max'] = round(max(self.values.get(f'{name}_max', 0.0), seconds), 3)

  def write(self, workdir: str, **fields: Any) -> None:
    row = dict(fields, **self.values, total_s=round(time.perf_counter() - self._start, 3))
    if self.host_peak_gb:
      row['host_peak_gb'] = self.host_peak_gb
    peak = sharding.peak_device_memory_gb()
    if peak is not None:  # Accelerators only.
      row['peak_device_memory_gb'] = peak
    logging.info('Timings: %s', row)
    metrics_logging.append_json_line(epath.Path(workdir) / metrics_logging.TIMINGS_FILE, row)


class NonFiniteLossError(FloatingPointError):
  """Raised when the training loss or the parameters become NaN or infinite."""


def load_splits(config: ml_collections.ConfigDict,
                with_train: bool = True) -> tuple[Any | None, Any]:
  """Loads the train (unless not `with_train`) and test splits of `config.data`, building
  the committed sample."""
  data = config.data
  data_dir = data.data_dir or None
  if data.name == 'sudoku_extreme' and data.builder_config == 'sample':
    sources.ensure_built(data.name, data.builder_config, data_dir)
  if data.name == 'arc_agi':
    load = lambda split: sources.load_arc_split(data.builder_config, split, data_dir)
  else:
    load = lambda split: sources.load_grid_split(data.name, data.builder_config, split,
                                                 data_dir)
  return (load('train') if with_train else None), load('test')


@dataclasses.dataclass(frozen=True)
class RunNumbers:
  """The numbers a run derives from its config and data, computed once (`run_numbers`).

  Attributes:
    schedule_steps: epochs * total_groups * mean_examples_per_puzzle / global_batch_size
      (§5): the length of the learning-rate schedules.
    total_steps: the steps this run trains: schedule_steps, or train.max_steps if smaller.
    steps_per_eval: train.eval_every_steps, else the steps of eval_interval epochs.
    num_puzzle_identifiers: rows of the puzzle-embedding table (blank id 0 included).
  """
  schedule_steps: int
  total_steps: int
  steps_per_eval: int
  num_puzzle_identifiers: int


def run_numbers(config: ml_collections.ConfigDict, pipes: pipeline.Pipelines) -> RunNumbers:
  """The run's step counts and table size from `config` and the loaded data."""
  t = config.train
  schedule_steps = int(t.epochs * pipes.total_groups * pipes.mean_examples_per_puzzle /
                       t.global_batch_size)
  total_steps = min(schedule_steps, t.max_steps) if t.max_steps else schedule_steps
  steps_per_eval = t.eval_every_steps or max(
      1, round(schedule_steps * t.eval_interval / max(t.epochs, 1)))
  return RunNumbers(schedule_steps=schedule_steps, total_steps=total_steps,
                    steps_per_eval=steps_per_eval,
                    num_puzzle_identifiers=pipes.num_puzzle_identifiers)


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


@dataclasses.dataclass
class _Run:
  """Everything built from the config and the run's numbers before the first step."""
  model: model_lib.RecursiveModel
  mesh: Any
  schedules: train.Schedules
  tx: Any
  init: Callable[[jax.Array], train.TrainState]
  abstract_state: Any
  state_sharding: Any
  checkpointer: checkpointing.Checkpointer


def _build(config: ml_collections.ConfigDict, workdir: str, num_puzzle_identifiers: int,
           schedule_steps: int) -> _Run:
  """Builds model, optimizer and state shardings and opens the checkpoints of `workdir`."""
  mesh = sharding.create_mesh()
  model = model_lib.RecursiveModel(model_lib.ModelConfig.create(
      config.model, seq_len=config.data.seq_len, vocab_size=config.data.vocab_size,
      num_puzzle_identifiers=num_puzzle_identifiers))
  schedules = train.make_schedules(config, schedule_steps)
  tx = train.make_optimizer(config, schedules)
  init = functools.partial(train.create_train_state, model, tx, config)
  abstract_state = jax.eval_shape(init, jax.random.key(config.seed))
  state_sharding = train.state_shardings(abstract_state, mesh)
  abstract_state = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
      state_sharding)
  checkpointer = checkpointing.Checkpointer(
      workdir, save_interval_steps=config.train.checkpoint_every_steps,
      max_to_keep=config.train.keep_checkpoints, best_metric=_best_metric(config),
      model_config=model.config.to_dict(),
      omit_fields=() if config.train.checkpoint_act_carry else ('carry',))
  return _Run(model, mesh, schedules, tx, init, abstract_state, state_sharding, checkpointer)


def _start(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Checks what can be checked before any data is read."""
  sharding.maybe_initialize_distributed()
  config_validation.validate(config)
  # Creates the directory too; failing here names the workdir before anything is loaded.
  checkpointing.check_workdir_writable(workdir)


def _write_submission(evaluators: evaluation.Evaluators, workdir: str) -> None:
  """ARC: process 0 writes the Kaggle submission (top-2 voted attempts, §8)."""
  if evaluators.voting is not None and jax.process_index() == 0:
    arc_evaluation.write_submission(evaluators.voting.accumulator,
                                    os.path.join(workdir, 'submission.json'))


# The metrics.jsonl split of `evaluate_checkpoint` (`--mode=eval`); the training run's
# evaluations are 'eval'.
EVAL_ONLY_SPLIT = 'eval_only'


def latest_evaluation(workdir: str, checkpointer: checkpointing.Checkpointer,
                      step: int) -> dict[str, float]:
  """The run's last evaluation at or before `step`: metrics.jsonl's last 'eval' row, else
  the metrics saved with the newest checkpoint that has some; {} if there is none.

  Every process takes the same path: both live in the workdir that all of them share.
  """
  rows = [row for row in metrics_logging.read_metrics(workdir, 'eval')
          if row.get('step', 0) <= step]
  if rows:
    return {key: value for key, value in rows[-1].items() if key not in ('step', 'split')}
  for saved_step in reversed(checkpointer.all_steps()):
    if saved_step > step:
      continue
    try:
      metrics = checkpointer.metadata(saved_step).get('metrics')
    except Exception:  # pylint: disable=broad-except
      continue  # A damaged checkpoint; restore_latest has already warned of it.
    if metrics:
      return metrics
  return {}


def load_eval_data(config: ml_collections.ConfigDict) -> pipeline.EvalPipeline:
  """The evaluation data of `config`, checked against it (ARC also reads its training tasks:
  they number the puzzle identifiers)."""
  train_split, test_split = load_splits(
      config, with_train=pipeline.needs_train_split_for_eval(config))
  catalog = None
  if train_split is not None:
    catalog = pipeline.arc_catalog(config, train_split, test_split)
  data = pipeline.build_eval(config, test_split, jax.process_index(), jax.process_count(),
                             catalog)
  config_validation.validate_against_data(config, data)
  return data


# The `config.eval` keys that change what `--mode=eval` measures (which rows, and the test-time
# settings `act.EvalSettings` holds); its metrics.jsonl rows record them as `eval.KEY`.
EVAL_PROTOCOL_KEYS = ('arc_versions', 'max_examples',
                      *(field.name for field in dataclasses.fields(act.EvalSettings)))


def eval_protocol(config: ml_collections.ConfigDict) -> dict[str, float]:
  """`{'eval.KEY': value}` of `config.eval`'s protocol keys (EVAL_PROTOCOL_KEYS)."""
  return {f'eval.{key}': float(config.eval[key]) for key in EVAL_PROTOCOL_KEYS}


def _same_evaluation(row: dict[str, Any], step: int, protocol: dict[str, float]) -> bool:
  """Whether `row` is an `--mode=eval` row of `step` under `protocol` (a row written before
  protocols were recorded matches any, as it did then)."""
  if (row.get('split'), row.get('step')) != (EVAL_ONLY_SPLIT, step):
    return False
  return all(row.get(key, value) == value for key, value in protocol.items())


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Evaluates the latest checkpoint of `workdir` (EMA weights when on); returns metrics.

  Logs them to metrics.jsonl under the split `EVAL_ONLY_SPLIT`.

  Builds the evaluation data only (ARC also reads its training tasks: they number the
  puzzle identifiers).
  """
  _start(config, workdir)
  data = load_eval_data(config)
  # The schedules' length does not shape the optimizer state, which is all restoring needs.
  run = _build(config, workdir, data.num_puzzle_identifiers, schedule_steps=1)
  try:
    restored = run.checkpointer.restore_latest(run.abstract_state)
    if restored is None:
      raise FileNotFoundError(f'No checkpoint to evaluate in {run.checkpointer.directory}.')
    state, _, step = restored
    evaluators = evaluation.build_evaluators(config, run.model, run.mesh, data.eval,
                                             data.arc_spec)
    results = evaluators.run(state)
    _write_submission(evaluators, workdir)
    # Its own split, beside the training run's evaluations; evaluating a step again with the
    # same protocol replaces the earlier row, another protocol (fewer ARC versions, more
    # steps) adds one, so protocols can be compared on one checkpoint.
    protocol = eval_protocol(config)
    logger = metrics_logging.MetricsLogger(
        workdir, keep=lambda row: not _same_evaluation(row, step, protocol))
    logger.write(step, EVAL_ONLY_SPLIT, {**results, **protocol})
    logger.close()
    return results
  finally:
    run.checkpointer.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       progress: ProgressFn | None = None,
                       notify: NotifyFn | None = None) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the last eval.

  A run that was already finished trains nothing and returns its last evaluation, read back
  from the workdir; so does a run stopped (SIGTERM, Ctrl-C) before evaluating in this call.

  Args:
    config: the experiment config (experiments/configs/*.py).
    workdir: run directory: config.json, metrics.jsonl, tensorboard/, checkpoints/.
    progress: optional callback for a progress display (entry points only).
    notify: optional callback for one-line notices (compiling, already finished, stopped);
      absl INFO logging without it.
  """
  if notify is None:
    notify = functools.partial(logging.info, '%s')
  timings = _Timings()
  _start(config, workdir)
  train_split, test_split = load_splits(config)
  timings.mark('load_data_s')
  pipes = pipeline.build_pipelines(config, train_split, test_split, jax.process_index(),
                                   jax.process_count())
  numbers = run_numbers(config, pipes)
  config_validation.validate_against_data(config, pipes, numbers)
  timings.mark('pipelines_s')  # The ARC version catalogue included.
  run = _build(config, workdir, numbers.num_puzzle_identifiers, numbers.schedule_steps)
  _write_config(config, workdir)
  timings.mark('build_s')
  checkpointer, mesh = run.checkpointer, run.mesh
  total_steps, steps_per_eval = numbers.total_steps, numbers.steps_per_eval
  logging.info('%d training steps (%d per evaluation), %d puzzle identifiers.', total_steps,
               steps_per_eval, numbers.num_puzzle_identifiers)
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
  jax.block_until_ready(state)
  timings.mark('init_s' if restored is None else 'restore_s')
  checkpointer.install_stop_handlers()

  train_step = train.jit_train_step(run.model, run.tx, run.schedules, config, mesh,
                                    run.state_sharding)
  evaluators = evaluation.build_evaluators(config, run.model, mesh, pipes.eval, pipes.arc_spec)
  step = start_step = int(state.step)
  # Rows past the restored step (or all, from scratch) belong to steps trained again now.
  logger = metrics_logging.MetricsLogger(workdir,
                                         keep=lambda row: row.get('step', 0) <= start_step)
  totals = None
  log_timer = (time.perf_counter(), step)  # Wall time of the steps between two logs.
  last_eval: dict[str, float] = {}

  last_saved_step = -1
  stopped = False

  def save(force: bool, metrics: dict[str, float] | None = None) -> None:
    nonlocal last_saved_step
    started = time.perf_counter()
    if checkpointer.save(step, state, train_iter.get_state(), metrics=metrics, force=force):
      last_saved_step = step
      # The blocking part of an asynchronous save (the write continues in the background).
      timings.add('checkpoint_save_s', time.perf_counter() - started)

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
      if step == start_step:
        notify('Compiling the train step ...')
      state, metrics = train_step(state, batch)
      if step == start_step:
        jax.block_until_ready(state.step)
        timings.mark('first_step_s')  # Compilation and one step.
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
        notify(f'Evaluating at step {step} ...' if last_eval else
               f'Evaluating at step {step} (compiling the evaluation first) ...')
        started = time.perf_counter()
        last_eval = evaluators.run(state)
        timings.add('evaluation_s', time.perf_counter() - started)
        _write_submission(evaluators, workdir)
        logger.write(step, 'eval', last_eval)
        if jax.process_index() == 0:
          logger.write_images(step, prediction_images(config, evaluators.exact.examples))
        save(force=True, metrics=last_eval)
        log_timer = (time.perf_counter(), step)
      elif checkpointer.should_save(step):
        check_finite()
        save(force=False)

      # At the last step the run has just evaluated and saved: it simply finishes.
      if step < total_steps and checkpointer.should_stop(step):
        check_finite()
        logging.warning('Stop requested: saving step %d and exiting.', step)
        if last_saved_step != step:  # Orbax refuses to save a step twice.
          save(force=True)
        stopped = True
        break
    if not last_eval:  # Finished before this call, or stopped before evaluating.
      checkpointer.wait_until_finished()
      last_eval = latest_evaluation(workdir, checkpointer, step)
  finally:
    timings.mark('train_s')  # From the first step's end: steps, logs, evaluations, saves.
    checkpointer.wait_until_finished()
    timings.mark('final_checkpoint_wait_s')
    checkpointer.close()
    logger.close()
    timings.write(workdir, start_step=start_step, end_step=step,
                  devices=jax.device_count())
  if stopped:
    notify(f'Stopped at step {step} of {total_steps}; saved it in {checkpointer.directory}. '
           'Rerun the same command to continue from there.')
  elif step == start_step:
    notify(f'The run in {workdir} was already finished at step {step}; nothing to train. '
           'Its last evaluation follows.')
  return last_eval

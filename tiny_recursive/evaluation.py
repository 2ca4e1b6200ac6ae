"""Evaluation: jitted device passes and host-side evaluators (TRM_REFERENCE.md §4, §8).

Device side, `act.run_eval_steps` owns the halting rule (`act.run_eval` adds test-time
scaling: `config.eval.num_steps`, `num_trajectories`, `trajectory_noise`, `noise_seed`);
`fixed_steps_pass` and `early_exit_pass` turn one batch of its results into summed metrics.
Host side, an evaluator is built once (its pass jitted once) and `run(state)` yields
`(name, value)`:

  ExactAccuracy  eval.num_steps (default halt_max_steps) steps on every test example: exact
                 and token accuracy of the last step, and exact accuracy with adaptive
                 halting (Sudoku, Maze; ARC per version), timed by `eval_time_s`; with
                 several trajectories, those of the kept one, and the share of puzzles
                 that any trajectory solves.
  EarlyExit      the early-exit pass (a batch stops once all its puzzles halted), timed, so
                 adaptive halting's speed is reported beside the fixed pass.
  ArcVoting      ARC pass@K, voting over augmented versions the predictions of the last
                 ExactAccuracy pass; the caller writes the submission from its `accumulator`.
"""

import dataclasses
import functools
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from tiny_recursive import act
from tiny_recursive import arc_evaluation
from tiny_recursive import model as model_lib
from tiny_recursive import sharding

Array = jax.Array
Metrics = Iterator[tuple[str, float]]

MODEL_INPUTS = ('inputs', 'labels', 'puzzle_identifiers', 'mask')
ARC_ROW_META = ('task_index', 'version_index', 'test_index', 'mask')


def _solved(preds: Array, labels: Array, counted: Array, mask: Array) -> Array:
  """bool [batch]: every counted token right, on real rows."""
  return jnp.all((preds == labels) | ~counted, axis=-1) & mask


def fixed_steps_pass(params: Any, constants: Any, puzzle_table: Array,
                     batch: dict[str, Array], batch_number: Array | int = 0, *,
                     model: model_lib.RecursiveModel, ignore_label_id: int,
                     settings: act.EvalSettings | None = None) -> dict[str, Any]:
  """Supervision steps from the reset state, in one call (§4, evaluation).

  Args:
    batch: inputs, labels int32 [batch, seq_len]; puzzle_identifiers int32 [batch]; mask bool
      [batch] (false on padding rows).
    batch_number: int32 [], the batch's position in the evaluation (keys the noise of
      stochastic settings: row r is example batch_number * batch + r).
    settings: steps and trajectories (None: halt_max_steps, deterministic, the reference).

  Returns:
    preds int32 [batch, seq_len] and q_halt float32 [batch] of the last step (of the kept
    trajectory), and summed metrics: count, exact_accuracy, accuracy, adaptive_exact_accuracy
    (the prediction of each row's halting step), adaptive_steps; with several trajectories
    also any_trajectory_exact_accuracy (some trajectory solves the puzzle).
  """
  if settings is None:
    settings = act.EvalSettings(num_steps=model.config.halt_max_steps)
  first_example = 0
  if settings.stochastic:
    first_example = jnp.asarray(batch_number, jnp.int32) * batch['inputs'].shape[0]
  run = act.run_eval(model, params, constants,
                     model.puzzle_rows(puzzle_table, batch['puzzle_identifiers']),
                     batch['inputs'], settings, first_example=first_example)
  labels, mask = batch['labels'], batch['mask']
  counted = labels != ignore_label_id
  num_counted = jnp.maximum(counted.sum(-1), 1)
  metrics = {
      'count': mask.sum(),
      'exact_accuracy': _solved(run.preds, labels, counted, mask).sum(),
      'accuracy': jnp.sum(jnp.where(
          mask, ((run.preds == labels) & counted).sum(-1) / num_counted, 0.0)),
      'adaptive_exact_accuracy': _solved(run.halted_preds, labels, counted, mask).sum(),
      'adaptive_steps': jnp.where(mask, run.halt_step, 0).sum(),
  }
  if settings.num_trajectories > 1:
    solved = _solved(run.trajectory_preds, labels[:, None], counted[:, None], mask[:, None])
    metrics['any_trajectory_exact_accuracy'] = jnp.any(solved, axis=1).sum()
  return {'preds': run.preds, 'q_halt': run.q_halt, 'metrics': metrics}


def early_exit_pass(params: Any, constants: Any, puzzle_table: Array, batch: dict[str, Array],
                    *, model: model_lib.RecursiveModel, ignore_label_id: int,
                    num_steps: int | None = None) -> dict[str, Array]:
  """Evaluation with early exit: stops once every real row of the batch has halted, or after
  `num_steps` steps (None: halt_max_steps). Deterministic: one trajectory, no noise.

  Returns:
    Summed metrics: count, adaptive_exact_accuracy, adaptive_steps, and batch_steps (the
    supervision steps the batch actually ran).
  """
  labels, mask = batch['labels'], batch['mask']
  run = act.run_eval_steps(model, params, constants,
                           model.puzzle_rows(puzzle_table, batch['puzzle_identifiers']),
                           batch['inputs'], num_steps or model.config.halt_max_steps,
                           active=mask, early_exit=True)
  counted = labels != ignore_label_id
  return {'count': mask.sum(),
          'adaptive_exact_accuracy': _solved(run.halted_preds, labels, counted, mask).sum(),
          'adaptive_steps': jnp.where(mask, run.halt_step, 0).sum(),
          'batch_steps': run.steps_run}


def _jit_pass(pass_fn, model: model_lib.RecursiveModel, mesh: Mesh, ignore_label_id: int,
              out_shardings: Any, num_replicated_after: int = 0, **options):
  """A pass jitted over `mesh`: weights replicated, batch split over the batch axis, then
  `num_replicated_after` replicated arguments."""
  fn = functools.partial(pass_fn, model=model, ignore_label_id=ignore_label_id, **options)
  replicated, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  return jax.jit(fn, in_shardings=(replicated, replicated, replicated, batch) +
                 (replicated,) * num_replicated_after,
                 out_shardings=out_shardings(replicated, batch))


def jit_fixed_steps_pass(model: model_lib.RecursiveModel, mesh: Mesh, ignore_label_id: int,
                         settings: act.EvalSettings | None = None):
  """`fixed_steps_pass` jitted over `mesh`; predictions stay split over the batch axis.

  Returns f(params, constants, puzzle_table, batch, batch_number=0). Deterministic settings
  (None: the reference) compile the pass without `batch_number`, which only keys noise.
  """
  out = lambda replicated, batch: {'preds': batch, 'q_halt': batch, 'metrics': replicated}
  if settings is None or not settings.stochastic:
    options = {} if settings is None else {'settings': settings}
    jitted = _jit_pass(fixed_steps_pass, model, mesh, ignore_label_id, out, **options)
    return lambda params, constants, table, batch, batch_number=0: jitted(
        params, constants, table, batch)
  jitted = _jit_pass(fixed_steps_pass, model, mesh, ignore_label_id, out,
                     num_replicated_after=1, settings=settings)
  return lambda params, constants, table, batch, batch_number=0: jitted(
      params, constants, table, batch, jnp.asarray(batch_number, jnp.int32))


def _device_batch(mesh: Mesh, local_batch: dict[str, Any], keys: tuple[str, ...]) -> dict:
  return sharding.global_batch_from_local(mesh, {key: local_batch[key] for key in keys})


def _summed(totals: Any, metrics: Any) -> Any:
  return metrics if totals is None else jax.tree_util.tree_map(jnp.add, totals, metrics)


class ArcVoting:
  """ARC pass@K (§8): votes over augmented versions of the last ExactAccuracy pass."""

  def __init__(self, spec: arc_evaluation.ArcEvalSpec, mesh: Mesh):
    self._spec = spec
    self._mesh = mesh
    self.accumulator = arc_evaluation.ArcAccumulator(spec)

  def reset(self) -> None:
    self.accumulator = arc_evaluation.ArcAccumulator(self._spec)

  def update(self, local_batch: dict[str, Any], out: dict[str, Array]) -> None:
    """Adds one batch: its rows' task, version and test indices and the device outputs."""
    meta = sharding.fetch(_device_batch(self._mesh, local_batch, ARC_ROW_META))
    preds, q_halt = sharding.fetch((out['preds'], out['q_halt']))
    self.accumulator.update(meta, preds, q_halt)

  def run(self, state: Any) -> Metrics:
    del state  # The votes come from the fixed pass that ran before.
    for key, value in self.accumulator.result().items():
      if isinstance(value, (int, float)):
        yield key, float(value)


class ExactAccuracy:
  """Exact and token accuracy after halt_max_steps steps, and with adaptive halting."""

  def __init__(self, model: model_lib.RecursiveModel, mesh: Mesh, dataset: Any, *,
               ignore_label_id: int, voting: ArcVoting | None = None,
               settings: act.EvalSettings | None = None):
    self._settings = settings
    self._step = jit_fixed_steps_pass(model, mesh, ignore_label_id, settings)
    self._mesh = mesh
    self._dataset = dataset
    self._voting = voting
    # inputs, labels, preds of the first batch of the last run (host arrays), for pictures.
    self.examples: dict[str, Any] = {}

  def run(self, state: Any) -> Metrics:
    start = time.perf_counter()
    weights = state.eval_params()
    totals = None
    self.examples = {}
    if self._voting is not None:
      self._voting.reset()
    for batch_number, local_batch in enumerate(self._dataset):
      out = self._step(weights, state.constants, state.puzzle_table,
                       _device_batch(self._mesh, local_batch, MODEL_INPUTS), batch_number)
      totals = _summed(totals, out['metrics'])
      if not self.examples:
        self.examples = {'inputs': local_batch['inputs'], 'labels': local_batch['labels'],
                         'preds': sharding.fetch(out['preds'])[:len(local_batch['inputs'])]}
      if self._voting is not None:
        self._voting.update(local_batch, out)
    sums = {key: float(value) for key, value in sharding.fetch(totals).items()}
    count = max(sums['count'], 1.0)
    yield 'count', sums['count']
    yield 'exact_accuracy', sums['exact_accuracy'] / count
    yield 'accuracy', sums['accuracy'] / count
    yield 'adaptive_exact_accuracy', sums['adaptive_exact_accuracy'] / count
    yield 'adaptive_mean_steps', sums['adaptive_steps'] / count
    if 'any_trajectory_exact_accuracy' in sums:
      yield 'any_trajectory_exact_accuracy', sums['any_trajectory_exact_accuracy'] / count
    # The fixed-steps pass, host-side ARC vote collection included.
    yield 'eval_time_s', time.perf_counter() - start


class EarlyExit:
  """The early-exit pass, timed: adaptive halting's accuracy, steps and speed."""

  def __init__(self, model: model_lib.RecursiveModel, mesh: Mesh, dataset: Any, *,
               ignore_label_id: int, num_steps: int | None = None):
    options = {} if num_steps is None else {'num_steps': num_steps}
    self._step = _jit_pass(early_exit_pass, model, mesh, ignore_label_id,
                           lambda replicated, batch: replicated, **options)
    self._mesh = mesh
    self._dataset = dataset

  def run(self, state: Any) -> Metrics:
    start = time.perf_counter()
    weights = state.eval_params()
    totals = None
    for local_batch in self._dataset:
      totals = _summed(totals, self._step(weights, state.constants, state.puzzle_table,
                                          _device_batch(self._mesh, local_batch, MODEL_INPUTS)))
    sums = {key: float(value) for key, value in sharding.fetch(totals).items()}
    count = max(sums['count'], 1.0)
    yield 'early_exit_exact_accuracy', sums['adaptive_exact_accuracy'] / count
    yield 'early_exit_mean_steps', sums['adaptive_steps'] / count
    yield 'early_exit_batch_steps', sums['batch_steps']
    yield 'early_exit_eval_time_s', time.perf_counter() - start


@dataclasses.dataclass
class Evaluators:
  """The evaluators of a run, built once; `run` gives every metric they yield, in order."""
  exact: ExactAccuracy
  early_exit: EarlyExit | None = None
  voting: ArcVoting | None = None

  def run(self, state: Any) -> dict[str, float]:
    """Metrics of `state`'s evaluation weights (EMA when on, §5)."""
    evaluators = [e for e in (self.exact, self.early_exit, self.voting) if e is not None]
    return {name: value for evaluator in evaluators for name, value in evaluator.run(state)}


def build_evaluators(config: ml_collections.ConfigDict, model: model_lib.RecursiveModel,
                     mesh: Mesh, dataset: Any,
                     arc_spec: arc_evaluation.ArcEvalSpec | None = None) -> Evaluators:
  """Evaluators of `config` over the eval `dataset` (ARC voting when `arc_spec` is given).

  The reference evaluation (eval.num_steps 0, one trajectory, no noise) is built exactly as
  without test-time scaling; the early-exit pass takes eval.num_steps as its limit and stays
  deterministic.
  """
  ignore = config.data.ignore_label_id
  settings = eval_settings(config, model)
  reference = settings == act.EvalSettings(num_steps=model.config.halt_max_steps)
  voting = None if arc_spec is None else ArcVoting(arc_spec, mesh)
  early_exit = None
  if config.eval.adaptive_halting:
    early_exit = EarlyExit(model, mesh, dataset, ignore_label_id=ignore,
                           num_steps=None if reference else settings.num_steps)
  return Evaluators(
      exact=ExactAccuracy(model, mesh, dataset, ignore_label_id=ignore, voting=voting,
                          settings=None if reference else settings),
      early_exit=early_exit, voting=voting)


def eval_settings(config: ml_collections.ConfigDict,
                  model: model_lib.RecursiveModel) -> act.EvalSettings:
  """`config.eval`'s test-time scaling for `model` (num_steps 0: its halt_max_steps)."""
  return act.EvalSettings.from_config(config.eval, model.config.halt_max_steps)

"""Train state and the pure, jitted train step (TRM_REFERENCE.md §4, §5).

`train_step(state, batch) -> (state, metrics)` does one optimizer step of deep supervision:
reset halted slots with the new batch, run one supervision step, decide halting, take the ACT
loss, update the dense parameters with AdamATan2, the used puzzle-embedding rows with
SignSGD, and the EMA. `jit_train_step` jits it over a device mesh with explicit shardings;
the train state is donated. Evaluation is in `evaluation.py`.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, PartitionSpec as P

from tiny_recursive import act
from tiny_recursive import losses
from tiny_recursive import model as model_lib
from tiny_recursive import optimizers
from tiny_recursive import puzzle_embedding
from tiny_recursive import sharding

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly: saved whole in every checkpoint."""
  step: Array  # int32 scalar: optimizer steps taken.
  params: Any  # Dense parameters, float32.
  ema_params: Any  # EMA of params, or None when train.ema is off.
  constants: Any  # {'z_H_init', 'z_L_init'} in the forward dtype; not trained.
  puzzle_table: Array  # float32 [num_puzzle_identifiers, puzzle_emb_ndim].
  opt_state: Any  # AdamATan2 state of the dense parameters.
  carry: act.ACTCarry  # ACT carry across optimizer steps, batch-sharded.
  rng: Array  # uint32 [2] raw key data (checkpointable).

  def eval_params(self) -> Any:
    """The weights evaluation and exports use: EMA when on (§5)."""
    return self.params if self.ema_params is None else self.ema_params


@flax.struct.dataclass
class Schedules:
  """Learning-rate schedules of the two optimizers (same shape, own base rates)."""
  dense: Any = flax.struct.field(pytree_node=False)
  puzzle: Any = flax.struct.field(pytree_node=False)


def make_schedules(config: ml_collections.ConfigDict, total_steps: int) -> Schedules:
  t = config.train
  return Schedules(
      dense=optimizers.warmup_cosine_schedule(t.lr, t.lr_warmup_steps, total_steps,
                                              t.lr_min_ratio),
      puzzle=optimizers.warmup_cosine_schedule(t.puzzle_emb_lr, t.lr_warmup_steps,
                                               total_steps, t.lr_min_ratio))


def make_optimizer(config: ml_collections.ConfigDict,
                   schedules: Schedules) -> optax.GradientTransformation:
  t = config.train
  return optimizers.adam_atan2(schedules.dense, t.beta1, t.beta2, t.weight_decay)


def create_train_state(model: model_lib.RecursiveModel, tx: optax.GradientTransformation,
                       config: ml_collections.ConfigDict, rng: Array) -> TrainState:
  """Fresh state: initialised weights, zero puzzle table, all-halted carry."""
  init_key, state_key = jax.random.split(rng)
  variables = model.init(init_key)
  params = variables['params']
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=optimizers.ema_init(params) if config.train.ema else None,
      constants=variables['constants'],
      puzzle_table=model.init_puzzle_table(),
      opt_state=tx.init(params),
      carry=act.initial_carry(model, variables['constants'], config.train.global_batch_size),
      rng=jax.random.key_data(state_key))


def _supervision_gradients(params: Any, rows: Array | None, carry: act.ACTCarry,
                           min_steps: Array, *, model: model_lib.RecursiveModel,
                           config: ml_collections.ConfigDict, axis_name: str | None):
  """Gradients of one supervision step's ACT loss over the rows of the batch given.

  With `axis_name`, runs per device inside `shard_map` on that device's rows: the summed loss
  is still scaled by 1 / global batch, so the float32 parameter gradients and the summed
  metrics of all devices add up (`psum`) to those of the whole batch. The puzzle-row
  gradients stay per row.

  Returns:
    (param_grads, row_grads, new_carry, metrics).
  """
  model_config = model.config
  scale = 1.0 / config.train.global_batch_size

  def loss_fn(params, rows):
    (z_H, z_L), outputs = model.supervision_step(params, rows, carry.z_H, carry.z_L,
                                                 carry.inputs)
    steps = carry.steps + 1
    halted, is_last_step = act.halting_decision(model_config, steps, outputs.q_halt,
                                                outputs.q_continue, min_steps, training=True)
    target = None
    if not model_config.no_act_continue:
      target = act.continue_target(model, params, rows, z_H, z_L, carry.inputs,
                                   is_last_step)
    loss, metrics = losses.act_loss_and_metrics(
        outputs.logits, outputs.q_halt, outputs.q_continue, carry.labels, halted, steps,
        ignore_label_id=config.data.ignore_label_id, loss_type=config.train.loss_type,
        target_q_continue=target)
    new_carry = carry.replace(z_H=z_H, z_L=z_L, steps=steps, halted=halted)
    return loss * scale, (new_carry, metrics)

  grad_fn = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)
  (param_grads, row_grads), (new_carry, metrics) = grad_fn(params, rows)
  if axis_name is not None:
    param_grads, metrics = jax.lax.psum((param_grads, metrics), axis_name)
  return param_grads, row_grads, new_carry, metrics


def train_step(state: TrainState, batch: dict[str, Array], *,
               model: model_lib.RecursiveModel, tx: optax.GradientTransformation,
               schedules: Schedules, config: ml_collections.ConfigDict,
               mesh: Mesh | None = None) -> tuple[TrainState, dict[str, Array]]:
  """One optimizer step (§4 steps 1-5, §5).

  Args:
    state: the train state.
    batch: inputs, labels int32 [global_batch, seq_len]; puzzle_identifiers int32
      [global_batch].
    mesh: the device mesh the step runs on. With `train.data_parallel = 'shard_map'` each
      device differentiates its own rows and the gradients are summed across devices in
      float32, so a multi-device step computes what one device computes for the whole batch
      (up to the order of that sum). None: no explicit data parallelism.

  Returns:
    The new state and summed metrics of the slots that halted at this step.
  """
  rng, step_key = jax.random.split(jax.random.wrap_key_data(state.rng))
  carry = act.reset_halted(model, state.constants, state.carry, batch)
  rows = model.puzzle_rows(state.puzzle_table, carry.puzzle_identifiers)
  # Drawn for the global batch, so every slot gets the same draw on any number of devices.
  min_steps = act.exploration_min_steps(model.config, step_key, carry.steps.shape)
  gradients = functools.partial(_supervision_gradients, model=model, config=config)
  if mesh is not None and config.train.data_parallel == 'shard_map':
    batch_spec = P(sharding.DATA_AXIS)
    gradients = jax.shard_map(
        functools.partial(gradients, axis_name=sharding.DATA_AXIS), mesh=mesh,
        in_specs=(P(), None if rows is None else batch_spec, batch_spec, batch_spec),
        out_specs=(P(), None if rows is None else batch_spec, batch_spec, P()),
        # Parameter gradients are summed explicitly (in float32) above; the automatic psum
        # that varying-manual-axes typing would insert could sit on bfloat16 cotangents.
        check_vma=False)
  else:
    gradients = functools.partial(gradients, axis_name=None)
  param_grads, row_grads, new_carry, metrics = gradients(state.params, rows, carry, min_steps)

  updates, opt_state = tx.update(param_grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  step = state.step + 1
  puzzle_table = state.puzzle_table
  if rows is not None:
    puzzle_table = puzzle_embedding.sparse_sign_sgd_update(
        puzzle_table, carry.puzzle_identifiers, row_grads, schedules.puzzle(step),
        config.train.puzzle_emb_weight_decay)
  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = optimizers.ema_update(ema_params, params, config.train.ema_rate)
  metrics['lr'] = schedules.dense(step)
  new_state = state.replace(step=step, params=params, ema_params=ema_params,
                            puzzle_table=puzzle_table, opt_state=opt_state, carry=new_carry,
                            rng=jax.random.key_data(rng))
  return new_state, metrics


def state_shardings(state: TrainState, mesh: Mesh) -> TrainState:
  """Replicated everything except the ACT carry, which is split over the batch axis."""
  replicated = sharding.replicated(mesh)
  batch = sharding.batch_sharded(mesh)
  shardings = jax.tree_util.tree_map(lambda _: replicated, state)
  carry = jax.tree_util.tree_map(lambda _: batch, state.carry)
  return shardings.replace(carry=carry)


def jit_train_step(model, tx, schedules, config, mesh: Mesh, state_sharding: TrainState):
  """The train step jitted over `mesh`; the incoming state is donated. On CPU it is compiled
  with the memory-optimised schedule (`sharding.compiler_options`)."""
  step = functools.partial(train_step, model=model, tx=tx, schedules=schedules, config=config,
                           mesh=mesh)
  return jax.jit(step, in_shardings=(state_sharding, sharding.batch_sharded(mesh)),
                 out_shardings=(state_sharding, sharding.replicated(mesh)),
                 donate_argnums=(0,), compiler_options=sharding.compiler_options())

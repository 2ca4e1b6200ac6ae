"""Adaptive computation time: the carry, its masked reset, halting and exploration (§4).

The training loop keeps an `ACTCarry` across optimizer steps. Each step, slots that halted at
the previous step take the new batch's example at the same slot and restart from the init
states; the others keep their example and state (the new batch's entries there are dropped).
Everything is a masked `jnp.where`, so shapes are static and the step jits once.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp

from tiny_recursive import model as model_lib

Array = jax.Array


@flax.struct.dataclass
class ACTCarry:
  """State carried across supervision steps.

  z_H, z_L: [batch, total_len, hidden] forward dtype. steps: int32 [batch]. halted: bool
  [batch]. inputs, labels: int32 [batch, seq_len]. puzzle_identifiers: int32 [batch].
  """
  z_H: Array
  z_L: Array
  steps: Array
  halted: Array
  inputs: Array
  labels: Array
  puzzle_identifiers: Array


def initial_carry(model: model_lib.RecursiveModel, constants: Any, batch_size: int) -> ACTCarry:
  """A carry whose every slot counts as halted, so the first step loads the whole batch."""
  z_H, z_L = model.initial_state(constants, batch_size)
  return ACTCarry(
      z_H=z_H, z_L=z_L,
      steps=jnp.zeros((batch_size,), jnp.int32),
      halted=jnp.ones((batch_size,), bool),
      inputs=jnp.zeros((batch_size, model.seq_len), jnp.int32),
      labels=jnp.zeros((batch_size, model.seq_len), jnp.int32),
      puzzle_identifiers=jnp.zeros((batch_size,), jnp.int32))


def reset_halted(model: model_lib.RecursiveModel, constants: Any, carry: ACTCarry,
                 batch: dict[str, Array]) -> ACTCarry:
  """Step 1 of §4: halted slots take the new batch's data and restart from the init states."""
  halted = carry.halted
  z_H, z_L = model.reset_state(constants, halted, carry.z_H, carry.z_L)

  def take(new, old):
    return jnp.where(halted.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

  return ACTCarry(
      z_H=z_H, z_L=z_L,
      steps=jnp.where(halted, 0, carry.steps),
      halted=halted,
      inputs=take(batch['inputs'], carry.inputs),
      labels=take(batch['labels'], carry.labels),
      puzzle_identifiers=take(batch['puzzle_identifiers'], carry.puzzle_identifiers))


def exploration_min_steps(model_config: Any, rng: Array, shape: tuple[int, ...]) -> Array:
  """Exploration (§4, step 3): int32 minimum steps per slot, 0 for slots that do not explore.

  With probability p a slot draws, anew every step, a minimum number of steps uniform in
  [2, halt_max_steps] and may not halt before it (reference behaviour).
  """
  max_steps = model_config.halt_max_steps
  if max_steps <= 1:
    return jnp.zeros(shape, jnp.int32)
  explore_key, steps_key = jax.random.split(rng)
  explore = jax.random.uniform(explore_key, shape) < model_config.halt_exploration_prob
  min_steps = jax.random.randint(steps_key, shape, 2, max_steps + 1)
  return jnp.where(explore, min_steps, 0)


def halting_decision(model_config: Any, steps: Array, q_halt: Array, q_continue: Array,
                     rng: Array | None, *, training: bool,
                     min_steps: Array | None = None) -> tuple[Array, Array]:
  """Which slots halt after this step (§4, step 3).

  Args:
    steps: int32 [batch], steps taken including this one.
    q_halt, q_continue: float32 [batch].
    rng: key for exploration (training only), used when `min_steps` is None.
    min_steps: int32 [batch] from `exploration_min_steps`, drawn by the caller.

  Returns:
    (halted, is_last_step), bool [batch] each. At evaluation only the step limit halts, so
    every example runs exactly halt_max_steps steps.
  """
  max_steps = model_config.halt_max_steps
  is_last_step = steps >= max_steps
  halted = is_last_step
  if training and max_steps > 1:
    if model_config.no_act_continue:
      halted = halted | (q_halt > 0)
    else:
      halted = halted | (q_halt > q_continue)
    if min_steps is None:
      min_steps = exploration_min_steps(model_config, rng, q_halt.shape)
    halted = halted & (steps >= min_steps)
  return halted, is_last_step


def continue_target(model: model_lib.RecursiveModel, params: Any, constants: Any,
                    puzzle_rows: Array | None, z_H: Array, z_L: Array, inputs: Array,
                    is_last_step: Array) -> Array:
  """Bootstrapped Q-continue target: sigmoid of the next step's q_halt, or of
  max(q_halt, q_continue) before the last step, from a second forward pass of the new carry
  without gradient (§4, step 4; the reference's TRM unpacks this pass wrongly and crashes)."""
  params = jax.lax.stop_gradient(params)
  rows = None if puzzle_rows is None else jax.lax.stop_gradient(puzzle_rows)
  _, next_outputs = model.supervision_step(params, constants, rows, z_H, z_L, inputs)
  next_q = jnp.where(is_last_step, next_outputs.q_halt,
                     jnp.maximum(next_outputs.q_halt, next_outputs.q_continue))
  return jax.nn.sigmoid(next_q)


def run_eval_steps(model: model_lib.RecursiveModel, params: Any, constants: Any,
                   puzzle_table: Array, inputs: Array, puzzle_identifiers: Array,
                   num_steps: int) -> dict[str, Array]:
  """Evaluation mode: `num_steps` supervision steps from the reset state for every example.

  Args:
    inputs: int32 [batch, seq_len]; puzzle_identifiers: int32 [batch].

  Returns:
    logits float32 [num_steps, batch, seq_len, vocab], q_halt_logits float32 [num_steps,
    batch], preds int32 [batch, seq_len] (argmax of the last step's logits).
  """
  z_H, z_L = model.initial_state(constants, inputs.shape[0])
  rows = puzzle_table[puzzle_identifiers] if model.config.puzzle_emb_ndim > 0 else None

  def step(state, _):
    state, outputs = model.supervision_step(params, constants, rows, *state, inputs)
    return state, (outputs.logits, outputs.q_halt)

  _, (logits, q_halt) = jax.lax.scan(step, (z_H, z_L), None, length=num_steps)
  return {'logits': logits, 'q_halt_logits': q_halt,
          'preds': jnp.argmax(logits[-1], axis=-1).astype(jnp.int32)}

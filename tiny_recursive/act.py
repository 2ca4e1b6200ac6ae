"""Adaptive computation time: the carry, its masked reset, halting and exploration (§4).

The training loop keeps an `ACTCarry` across optimizer steps. Each step, slots that halted at
the previous step take the new batch's example at the same slot and restart from the init
states; the others keep their example and state (the new batch's entries there are dropped).
Everything is a masked `jnp.where`, so shapes are static and the step jits once.

At evaluation, `run_eval_steps` runs supervision steps from the reset state; `run_eval` adds
test-time scaling (`EvalSettings`: more steps, several noisy trajectories per puzzle of which
the one with the highest final q_halt is kept; docs/test_time_scaling.md).
"""

import dataclasses
from typing import Any, Callable

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
                     min_steps: Array | None, *, training: bool) -> tuple[Array, Array]:
  """Which slots halt after this step (§4, step 3).

  Args:
    steps: int32 [batch], steps taken including this one.
    q_halt, q_continue: float32 [batch].
    min_steps: int32 [batch] from `exploration_min_steps` (training only): a slot may not
      halt before it. Drawn by the caller, for the global batch.

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
    halted = halted & (steps >= min_steps)
  return halted, is_last_step


def continue_target(model: model_lib.RecursiveModel, params: Any, puzzle_rows: Array | None,
                    z_H: Array, z_L: Array, inputs: Array, is_last_step: Array) -> Array:
  """Bootstrapped Q-continue target: sigmoid of the next step's q_halt, or of
  max(q_halt, q_continue) before the last step, from a second forward pass of the new carry
  without gradient (§4, step 4; the reference's TRM unpacks this pass wrongly and crashes)."""
  params = jax.lax.stop_gradient(params)
  rows = None if puzzle_rows is None else jax.lax.stop_gradient(puzzle_rows)
  _, next_outputs = model.supervision_step(params, rows, z_H, z_L, inputs, differentiated=False)
  next_q = jnp.where(is_last_step, next_outputs.q_halt,
                     jnp.maximum(next_outputs.q_halt, next_outputs.q_continue))
  return jax.nn.sigmoid(next_q)


@flax.struct.dataclass
class EvalRun:
  """Evaluation steps from the reset state (`run_eval_steps`).

  preds int32 [batch, seq_len] and q_halt float32 [batch]: the last step run. halted_preds
  int32 [batch, seq_len]: each row's prediction at its halting step (adaptive halting).
  halt_step int32 [batch]: that step, 1-based (0 for rows inactive from the start).
  steps_run int32 []: supervision steps run. step_logits float32 [num_steps, batch,
  seq_len, vocab] and step_q_halt float32 [num_steps, batch]: every step's outputs, only
  when asked for (else None).
  """
  preds: Array
  q_halt: Array
  halted_preds: Array
  halt_step: Array
  steps_run: Array
  step_logits: Array | None = None
  step_q_halt: Array | None = None
  # With several trajectories (`run_eval_trajectories`): the kept one, int32 [batch], and
  # every trajectory's last-step q_halt float32 [batch, K] and preds int32 [batch, K, seq_len].
  trajectory: Array | None = None
  trajectory_q_halt: Array | None = None
  trajectory_preds: Array | None = None


def halts_at_evaluation(halted: Array, q_halt: Array, index: Array, num_steps: int) -> Array:
  """Rows bool [batch] that halt at step `index` (0-based) of an evaluation: the first step
  with q_halt > 0, or the last step (adaptive halting, §4)."""
  return ~halted & ((q_halt > 0) | (index == num_steps - 1))


def latent_noise(noise_keys: Array, scale: float, step: Array,
                 updates_per_step: int) -> Callable[[Array, Array], Array]:
  """`perturb_latent` for `model.supervision_step`: z_L + scale * N(0, 1), row by row.

  The draw for row r after low update u of supervision step `step` is keyed by
  fold_in(noise_keys[r], step * updates_per_step + u) alone, so it depends neither on the
  batch the row runs in nor on how the batch is split over devices. Added in float32, then
  cast to the state's dtype. z_L leaves every network call through an RMSNorm without
  weights, so its entries have unit RMS per position: `scale` is relative to that RMS.

  Args:
    noise_keys: typed PRNG keys [batch], one per row.
    step: int32 [], the 0-based supervision step.
    updates_per_step: `model.low_updates_per_step`.
  """

  def perturb(z_L: Array, update: Array) -> Array:
    counter = step * updates_per_step + update
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(noise_keys, counter)
    noise = jax.vmap(lambda key: jax.random.normal(key, z_L.shape[1:], jnp.float32))(keys)
    return (z_L.astype(jnp.float32) + scale * noise).astype(z_L.dtype)

  return perturb


def run_eval_steps(model: model_lib.RecursiveModel, params: Any, constants: Any,
                   puzzle_rows: Array | None, inputs: Array, num_steps: int, *,
                   active: Array | None = None, early_exit: bool = False,
                   keep_steps: bool = False, noise_keys: Array | None = None,
                   noise_scale: float = 0.0) -> EvalRun:
  """Evaluation: up to `num_steps` supervision steps from the reset state for every row.

  Every row runs all `num_steps` steps and records the step at which it halts
  (`halts_at_evaluation`); with `early_exit` the loop (`lax.while_loop`) ends instead once
  every row has halted, so a batch whose puzzles halt early costs fewer steps.

  Args:
    puzzle_rows: float32 [batch, puzzle_emb_ndim] (`model.puzzle_rows`), or None.
    inputs: int32 [batch, seq_len].
    active: bool [batch]; inactive rows (padding) count as halted from the start.
    keep_steps: also return every step's logits and q_halt (not with early_exit).
    noise_keys: typed PRNG keys [batch]: Gaussian noise of std `noise_scale` is added to z_L
      after every low update (`latent_noise`). None: no noise, the reference computation.
  """
  if early_exit and keep_steps:
    raise ValueError('run_eval_steps: keep_steps needs every step, early_exit stops early.')
  batch_size = inputs.shape[0]
  z_H, z_L = model.initial_state(constants, batch_size)
  halted = jnp.zeros((batch_size,), bool) if active is None else ~active
  init = (jnp.asarray(0, jnp.int32), (z_H, z_L), jnp.zeros_like(inputs),
          jnp.zeros((batch_size,), jnp.float32), jnp.zeros_like(inputs),
          jnp.zeros((batch_size,), jnp.int32), halted)

  def step(state):
    index, (z_H, z_L), _, _, halted_preds, halt_step, halted = state
    if noise_keys is None:
      (z_H, z_L), outputs = model.supervision_step(params, puzzle_rows, z_H, z_L, inputs,
                                                   differentiated=False)
    else:
      perturb = latent_noise(noise_keys, noise_scale, index, model.low_updates_per_step)
      (z_H, z_L), outputs = model.supervision_step(params, puzzle_rows, z_H, z_L, inputs,
                                                   perturb_latent=perturb,
                                                   differentiated=False)
    preds = jnp.argmax(outputs.logits, axis=-1).astype(jnp.int32)
    newly = halts_at_evaluation(halted, outputs.q_halt, index, num_steps)
    halted_preds = jnp.where(newly[:, None], preds, halted_preds)
    halt_step = jnp.where(newly, index + 1, halt_step)
    state = (index + 1, (z_H, z_L), preds, outputs.q_halt, halted_preds, halt_step,
             halted | newly)
    return state, outputs

  step_logits = step_q_halt = None
  if early_exit:
    keep_going = lambda state: (state[0] < num_steps) & ~jnp.all(state[-1])
    final = jax.lax.while_loop(keep_going, lambda state: step(state)[0], init)
  else:
    def scan_step(state, _):
      state, outputs = step(state)
      return state, (outputs.logits, outputs.q_halt) if keep_steps else None

    final, per_step = jax.lax.scan(scan_step, init, None, length=num_steps)
    if keep_steps:
      step_logits, step_q_halt = per_step
  steps_run, _, preds, q_halt, halted_preds, halt_step, _ = final
  return EvalRun(preds=preds, q_halt=q_halt, halted_preds=halted_preds, halt_step=halt_step,
                 steps_run=steps_run, step_logits=step_logits, step_q_halt=step_q_halt)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """Test-time scaling of an evaluation (`config.eval`, docs/test_time_scaling.md).

  Attributes:
    num_steps: supervision steps from the reset state (the reference: halt_max_steps).
    num_trajectories: K runs per puzzle; per puzzle the one with the highest last-step
      q_halt is kept (the first on ties). 1 with no noise: the reference evaluation.
    trajectory_noise: std of the Gaussian noise added to z_L after every low update,
      relative to z_L's unit per-position RMS (`latent_noise`); 0: none.
    noise_seed: seed of the noise; the draws of a puzzle depend on it, on the puzzle's
      position in the evaluated data and on the trajectory, nothing else.
  """
  num_steps: int
  num_trajectories: int = 1
  trajectory_noise: float = 0.0
  noise_seed: int = 0

  def __post_init__(self):
    if self.num_steps < 1:
      raise ValueError(f'EvalSettings: num_steps must be at least 1, got {self.num_steps}.')
    if self.num_trajectories < 1:
      raise ValueError('EvalSettings: num_trajectories must be at least 1, got '
                       f'{self.num_trajectories}.')
    if not self.trajectory_noise >= 0:
      raise ValueError('EvalSettings: trajectory_noise must be >= 0, got '
                       f'{self.trajectory_noise}.')

  @property
  def stochastic(self) -> bool:
    """Whether trajectories run (several, or one noisy one); else the reference evaluation."""
    return self.num_trajectories > 1 or self.trajectory_noise > 0

  @classmethod
  def from_config(cls, eval_config: Any, halt_max_steps: int) -> 'EvalSettings':
    """From `config.eval` (num_steps 0: halt_max_steps)."""
    return cls(num_steps=int(eval_config.num_steps or halt_max_steps),
               num_trajectories=int(eval_config.num_trajectories),
               trajectory_noise=float(eval_config.trajectory_noise),
               noise_seed=int(eval_config.noise_seed))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def trajectory_noise_keys(noise_seed: int, first_example: Array, batch_size: int,
                          num_trajectories: int) -> Array:
  """Typed keys [batch_size * K] for puzzle-major rows: row r * K + k is trajectory k of
  example `first_example + r` of the evaluated data."""
  base = jax.random.key(noise_seed)
  examples = first_example + jnp.arange(batch_size, dtype=jnp.int32)
  per_example = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base, examples)
  trajectories = jnp.arange(num_trajectories, dtype=jnp.int32)
  keys = jax.vmap(lambda key: jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      key, trajectories))(per_example)
  return keys.reshape(batch_size * num_trajectories)


def select_trajectories(run: EvalRun, num_trajectories: int) -> EvalRun:
  """Per puzzle, the trajectory with the highest last-step q_halt (argmax: the first on ties).

  Args:
    run: an EvalRun of batch * K puzzle-major rows (row r * K + k: trajectory k of puzzle r).

  Returns:
    An EvalRun of `batch` rows: the kept trajectory's fields, with `trajectory`,
    `trajectory_q_halt` and `trajectory_preds` set.
  """
  k = num_trajectories
  q_halt = run.q_halt.reshape(-1, k)
  best = jnp.argmax(q_halt, axis=1).astype(jnp.int32)
  batch_size = q_halt.shape[0]

  def pick(x, axis=0):
    """x with axis `axis` of length batch * K: the kept row of each puzzle."""
    x = x.reshape(x.shape[:axis] + (batch_size, k) + x.shape[axis + 1:])
    index = best.reshape((1,) * axis + (batch_size, 1) + (1,) * (x.ndim - axis - 2))
    return jnp.take_along_axis(x, index, axis=axis + 1).squeeze(axis + 1)

  return EvalRun(
      preds=pick(run.preds), q_halt=pick(run.q_halt), halted_preds=pick(run.halted_preds),
      halt_step=pick(run.halt_step), steps_run=run.steps_run,
      step_logits=None if run.step_logits is None else pick(run.step_logits, axis=1),
      step_q_halt=None if run.step_q_halt is None else pick(run.step_q_halt, axis=1),
      trajectory=best, trajectory_q_halt=q_halt,
      trajectory_preds=run.preds.reshape((batch_size, k) + run.preds.shape[1:]))


def run_eval(model: model_lib.RecursiveModel, params: Any, constants: Any,
             puzzle_rows: Array | None, inputs: Array, settings: EvalSettings, *,
             first_example: Array | int = 0, keep_steps: bool = False) -> EvalRun:
  """`settings.num_steps` evaluation steps with test-time scaling; per-row results [batch].

  Deterministic settings run `run_eval_steps` exactly as the reference evaluation. Otherwise
  each row is repeated K times (puzzle-major, so a device's rows stay on it: memory and
  compute grow K-fold), every copy runs with its own noise (`trajectory_noise_keys`), and
  `select_trajectories` keeps one per puzzle.

  Args:
    puzzle_rows: float32 [batch, puzzle_emb_ndim] or None; inputs: int32 [batch, seq_len].
    first_example: int32 [], the position of row 0 in the evaluated data (noise keys).
  """
  if not settings.stochastic:
    return run_eval_steps(model, params, constants, puzzle_rows, inputs, settings.num_steps,
                          keep_steps=keep_steps)
  k = settings.num_trajectories
  batch_size = inputs.shape[0]
  keys = trajectory_noise_keys(settings.noise_seed, jnp.asarray(first_example, jnp.int32),
                               batch_size, k)
  repeat = lambda x: None if x is None else jnp.repeat(x, k, axis=0)
  run = run_eval_steps(model, params, constants, repeat(puzzle_rows), repeat(inputs),
                       settings.num_steps, keep_steps=keep_steps, noise_keys=keys,
                       noise_scale=settings.trajectory_noise)
  return select_trajectories(run, k)

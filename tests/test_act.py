"""Tests for tiny_recursive.act: carry reset, halting, exploration, Q-continue target, eval."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tiny_recursive import act


def _jit(fn):
  """jax.jit without LLVM optimisation: these graphs run once, so compile time dominates."""
  return jax.jit(fn, compiler_options={'xla_backend_optimization_level': 0})


def _halting_config(max_steps=16, exploration=0.0, no_act_continue=True):
  config = ml_collections.ConfigDict()
  config.halt_max_steps = max_steps
  config.halt_exploration_prob = exploration
  config.no_act_continue = no_act_continue
  return config


def _decide(config, steps, q_halt, q_continue, rng, *, training):
  """Jitted `act.halting_decision` (one compile instead of one per eager op), with the
  exploration minimum drawn from `rng` as the train step draws it."""

  def fn(steps, q_halt, q_continue):
    min_steps = None
    if training:
      min_steps = act.exploration_min_steps(config, rng, q_halt.shape)
    return act.halting_decision(config, steps, q_halt, q_continue, min_steps,
                                training=training)

  return _jit(fn)(steps, q_halt, q_continue)


@pytest.fixture(scope='module')
def model(make_tiny_model):
  return make_tiny_model(h_cycles=2, l_cycles=1, num_layers=1, mixer='mlp',
                         pos_encodings='none', halt_max_steps=3)


# --- Carry ---


def test_initial_carry_has_every_slot_halted(model, make_random_variables):
  constants = make_random_variables(model)['constants']
  carry = act.initial_carry(model, constants, 4)
  np.testing.assert_array_equal(carry.halted, [True] * 4)
  np.testing.assert_array_equal(carry.steps, [0] * 4)
  assert carry.steps.dtype == jnp.int32
  assert carry.inputs.shape == carry.labels.shape == (4, model.seq_len)
  assert carry.puzzle_identifiers.shape == (4,)
  assert carry.z_H.shape == carry.z_L.shape == (4, model.total_len, 16)
  np.testing.assert_array_equal(carry.z_H[2, 5], constants['z_H_init'])
  np.testing.assert_array_equal(carry.z_L[3, 0], constants['z_L_init'])


def test_reset_halted_replaces_exactly_the_halted_slots(model, make_random_variables):
  constants = make_random_variables(model)['constants']
  batch_size, seq, total = 4, model.seq_len, model.total_len
  slot = np.arange(batch_size, dtype=np.float32)[:, None, None]
  carry = act.ACTCarry(
      z_H=jnp.asarray(np.broadcast_to(100.0 + slot, (batch_size, total, 16))),
      z_L=jnp.asarray(np.broadcast_to(200.0 + slot, (batch_size, total, 16))),
      steps=jnp.array([3, 2, 5, 1], jnp.int32),
      halted=jnp.array([True, False, True, False]),
      inputs=jnp.full((batch_size, seq), 1, jnp.int32),
      labels=jnp.full((batch_size, seq), 2, jnp.int32),
      puzzle_identifiers=jnp.array([10, 11, 12, 13], jnp.int32))
  batch = {'inputs': jnp.arange(batch_size * seq, dtype=jnp.int32).reshape(batch_size, seq),
           'labels': -jnp.arange(batch_size * seq, dtype=jnp.int32).reshape(batch_size, seq),
           'puzzle_identifiers': jnp.array([20, 21, 22, 23], jnp.int32)}
  new = act.reset_halted(model, constants, carry, batch)

  np.testing.assert_array_equal(new.steps, [0, 2, 0, 1])
  np.testing.assert_array_equal(new.halted, carry.halted)
  np.testing.assert_array_equal(new.puzzle_identifiers, [20, 11, 22, 13])
  for i, reset in enumerate([True, False, True, False]):
    if reset:
      np.testing.assert_array_equal(new.inputs[i], batch['inputs'][i])
      np.testing.assert_array_equal(new.labels[i], batch['labels'][i])
      np.testing.assert_array_equal(
          new.z_H[i], np.broadcast_to(constants['z_H_init'], (total, 16)))
      np.testing.assert_array_equal(
          new.z_L[i], np.broadcast_to(constants['z_L_init'], (total, 16)))
    else:
      np.testing.assert_array_equal(new.inputs[i], carry.inputs[i])
      np.testing.assert_array_equal(new.labels[i], carry.labels[i])
      np.testing.assert_array_equal(new.z_H[i], carry.z_H[i])
      np.testing.assert_array_equal(new.z_L[i], carry.z_L[i])


# --- Halting (§4, step 3) ---


def test_evaluation_halts_only_at_the_limit():
  config = _halting_config(max_steps=4, exploration=1.0)
  steps = jnp.array([1, 3, 4, 5, 4])
  q_halt = jnp.array([10.0, 10.0, -10.0, 0.0, 10.0])
  q_continue = jnp.array([-10.0, -10.0, 10.0, 0.0, -10.0])
  halted, is_last = _decide(config, steps, q_halt, q_continue, None,
                                  training=False)
  np.testing.assert_array_equal(halted, [False, False, True, True, True])
  np.testing.assert_array_equal(is_last, [False, False, True, True, True])


@pytest.mark.parametrize('no_act_continue, expected', [
    # q_halt > 0 (q_continue ignored); the limit always halts.
    (True, [True, False, False, True, False, True, True]),
    # q_halt > q_continue; the limit always halts.
    (False, [True, True, False, False, True, True, True]),
])
def test_training_halting_rule(no_act_continue, expected):
  config = _halting_config(max_steps=4, exploration=0.0, no_act_continue=no_act_continue)
  steps = jnp.array([1, 2, 2, 3, 3, 4, 4])
  q_halt = jnp.array([1.0, -1.0, 0.0, 0.5, -0.5, -3.0, -3.0])
  q_continue = jnp.array([0.0, -2.0, 0.0, 1.0, -1.0, 5.0, -5.0])
  halted, is_last = _decide(config, steps, q_halt, q_continue,
                                  jax.random.key(0), training=True)
  np.testing.assert_array_equal(halted, expected)
  np.testing.assert_array_equal(is_last, [False] * 5 + [True] * 2)


def test_exploration_minimum_steps():
  """With probability 1 every slot draws a minimum in [2, max]; it halts iff steps >= it."""
  max_steps, num_slots = 16, 6000
  config = _halting_config(max_steps=max_steps, exploration=1.0)
  key = jax.random.key(42)
  # Half the slots want to halt (q_halt > 0), the others never do before the limit.
  wants_halt = np.arange(num_slots) % 2 == 0
  q_halt = jnp.where(jnp.asarray(wants_halt), 1.0, -1.0)
  q_continue = jnp.zeros((num_slots,))
  min_steps = act.exploration_min_steps(config, key, q_halt.shape)
  decide = _jit(lambda steps: act.halting_decision(config, steps, q_halt, q_continue,
                                                   min_steps, training=True)[0])
  halted = np.stack([np.asarray(decide(jnp.full((num_slots,), s, jnp.int32)))
                     for s in range(1, max_steps + 1)])  # [max_steps, slots]

  # Slots that do not want to halt stop exactly at the limit.
  np.testing.assert_array_equal(halted[:-1, ~wants_halt], False)
  np.testing.assert_array_equal(halted[-1], True)
  # The others: with a fixed key the drawn minimum is the first step that halts, and the slot
  # halts at every later step (halts iff steps >= minimum).
  first = halted[:, wants_halt].argmax(axis=0) + 1
  steps = np.arange(1, max_steps + 1)[:, None]
  np.testing.assert_array_equal(halted[:, wants_halt], steps >= first[None, :])
  assert first.min() == 2 and first.max() == max_steps
  counts = np.bincount(first, minlength=max_steps + 1)[2:]
  expected = wants_halt.sum() / (max_steps - 1)  # 200 per value.
  # A uniform count has std ~13.7 here; 5 std of slack.
  assert np.all(np.abs(counts - expected) < 70), counts


def test_exploration_probability_zero_has_no_effect():
  config = _halting_config(max_steps=16, exploration=0.0)
  steps = jnp.asarray(np.tile(np.arange(1, 17), 50), jnp.int32)
  q_halt = jnp.ones(steps.shape)
  halted, _ = _decide(config, steps, q_halt, -q_halt, jax.random.key(1),
                      training=True)
  np.testing.assert_array_equal(halted, True)


def test_exploration_probability_is_respected():
  """With probability 0.5, about half the slots are held back at step 1 (minimum >= 2)."""
  config = _halting_config(max_steps=16, exploration=0.5)
  q_halt = jnp.ones((4000,))
  halted, _ = _decide(config, jnp.ones((4000,), jnp.int32), q_halt, -q_halt,
                      jax.random.key(3), training=True)
  held_back = 1.0 - float(np.mean(halted))
  assert abs(held_back - 0.5) < 0.05


# --- Q-continue target and evaluation ---


def test_continue_target_is_bootstrapped_from_a_second_step(model, make_random_variables):
  variables = make_random_variables(model, seed=1)
  params = variables['params']
  rng = np.random.default_rng(2)
  shape = (3, model.total_len, 16)
  z_H = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  z_L = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  rows = jnp.asarray(rng.standard_normal((3, 16)), jnp.float32)
  inputs = jnp.asarray(rng.integers(0, model.vocab_size, (3, model.seq_len)), jnp.int32)
  is_last = jnp.array([True, False, False])

  @_jit
  def run(params):
    target = act.continue_target(model, params, rows, z_H, z_L, inputs, is_last)
    _, out = model.supervision_step(params, rows, z_H, z_L, inputs)
    grad = jax.grad(lambda p: jnp.sum(act.continue_target(
        model, p, rows, z_H, z_L, inputs, is_last)))(params)
    return target, out, grad

  target, out, grad = run(params)
  q_halt, q_continue = np.asarray(out.q_halt), np.asarray(out.q_continue)
  next_q = np.where(is_last, q_halt, np.maximum(q_halt, q_continue))
  np.testing.assert_allclose(target, 1.0 / (1.0 + np.exp(-next_q)), rtol=1e-6)
  # On some slot before the limit the max picks q_continue, so the where/max is exercised.
  assert np.any(q_continue[1:] > q_halt[1:])
  # The target is a constant of the loss: no gradient flows into the parameters.
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grad)) == 0.0


def test_run_eval_steps_equals_manual_steps(model, make_random_variables):
  variables = make_random_variables(model, seed=3)
  params, constants = variables['params'], variables['constants']
  rng = np.random.default_rng(4)
  table = jnp.asarray(rng.standard_normal((5, 16)), jnp.float32)
  ids = jnp.array([4, 0, 2], jnp.int32)
  inputs = jnp.asarray(rng.integers(0, model.vocab_size, (3, model.seq_len)), jnp.int32)
  num_steps = 3

  @_jit
  def run():
    run = act.run_eval_steps(model, params, constants, model.puzzle_rows(table, ids), inputs,
                             num_steps, keep_steps=True)
    result = {'logits': run.step_logits, 'q_halt_logits': run.step_q_halt, 'preds': run.preds}
    carry = act.initial_carry(model, constants, 3)
    state, manual = (carry.z_H, carry.z_L), []
    for _ in range(num_steps):
      state, out = model.supervision_step(params, table[ids], *state, inputs)
      manual.append(out)
    return result, manual

  result, manual = run()
  assert result['logits'].shape == (num_steps, 3, model.seq_len, model.vocab_size)
  assert result['q_halt_logits'].shape == (num_steps, 3)
  for i, out in enumerate(manual):
    np.testing.assert_allclose(result['logits'][i], out.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result['q_halt_logits'][i], out.q_halt, rtol=1e-5, atol=1e-5)
  # The steps differ, so the count of steps is pinned down.
  assert not np.allclose(manual[-1].logits, manual[-2].logits, atol=1e-3)
  np.testing.assert_array_equal(result['preds'], np.argmax(manual[-1].logits, axis=-1))
  assert result['preds'].dtype == jnp.int32


# --- Test-time scaling ---


def _eval_inputs(model, make_random_variables, batch_size=3, seed=3):
  variables = make_random_variables(model, seed=seed)
  rng = np.random.default_rng(seed + 1)
  table = jnp.asarray(rng.standard_normal((5, 16)), jnp.float32)
  ids = jnp.asarray(rng.integers(0, 5, batch_size), jnp.int32)
  inputs = jnp.asarray(rng.integers(0, model.vocab_size, (batch_size, model.seq_len)),
                       jnp.int32)
  return variables['params'], variables['constants'], model.puzzle_rows(table, ids), inputs


def _run_eval(model, params, constants, rows, inputs, settings, first_example=0):
  fn = lambda p, c, r, x, f: act.run_eval(model, p, c, r, x, settings, first_example=f,
                                          keep_steps=True)
  return jax.device_get(_jit(fn)(params, constants, rows, inputs, jnp.int32(first_example)))


def test_reference_settings_are_exactly_run_eval_steps(model, make_random_variables):
  params, constants, rows, inputs = _eval_inputs(model, make_random_variables)
  settings = act.EvalSettings(num_steps=model.config.halt_max_steps)
  assert not settings.stochastic
  reference = lambda p: act.run_eval_steps(model, p, constants, rows, inputs, 3)
  scaled = lambda p: act.run_eval(model, p, constants, rows, inputs, settings)
  # The same operations, not merely the same numbers.
  assert str(jax.make_jaxpr(scaled)(params)) == str(jax.make_jaxpr(reference)(params))
  expected, got = jax.device_get((_jit(reference)(params), _jit(scaled)(params)))
  for name in ('preds', 'q_halt', 'halted_preds', 'halt_step', 'steps_run'):
    np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
  assert got.trajectory is None


def test_num_steps_runs_that_many_steps(model, make_random_variables):
  params, constants, rows, inputs = _eval_inputs(model, make_random_variables)
  num_steps = 6  # Twice the model's halt_max_steps.
  run = _run_eval(model, params, constants, rows, inputs, act.EvalSettings(num_steps=num_steps))

  @_jit
  def manual():
    state, outputs = model.initial_state(constants, 3), []
    for _ in range(num_steps):
      state, out = model.supervision_step(params, rows, *state, inputs)
      outputs.append(out)
    return outputs

  manual = manual()
  assert int(run.steps_run) == num_steps and run.step_logits.shape[0] == num_steps
  for i, out in enumerate(manual):
    np.testing.assert_allclose(run.step_logits[i], out.logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(run.q_halt, manual[-1].q_halt, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(run.preds, np.argmax(manual[-1].logits, -1))


@pytest.mark.parametrize('gradient_mode', ['last_cycle', 'one_step'])
def test_the_noise_hook_sees_every_low_update_once_in_order(make_tiny_model,
                                                            make_random_variables,
                                                            gradient_mode):
  model = make_tiny_model(h_cycles=3, l_cycles=2, num_layers=1, mixer='mlp',
                          pos_encodings='none', gradient_mode=gradient_mode)
  params, constants, rows, inputs = _eval_inputs(model, make_random_variables)
  seen = []

  def hook(z_L, update):
    jax.debug.callback(lambda u: seen.append(int(u)), update, ordered=True)
    return z_L

  def step(hook):
    return model.supervision_step(params, rows, *model.initial_state(constants, 3), inputs,
                                  perturb_latent=hook)

  with_hook = jax.device_get(_jit(lambda: step(hook))())
  assert seen == list(range(model.low_updates_per_step)) == list(range(6))
  # An identity hook changes nothing; a hook that changes z_L changes the answer.
  without = jax.device_get(_jit(lambda: step(None))())
  np.testing.assert_array_equal(with_hook[1].logits, without[1].logits)
  zeroed = jax.device_get(_jit(lambda: step(lambda z, u: jnp.zeros_like(z)))())
  assert not np.allclose(zeroed[1].logits, without[1].logits, atol=1e-3)


def test_trajectories_without_noise_equal_the_deterministic_run(model, make_random_variables):
  params, constants, rows, inputs = _eval_inputs(model, make_random_variables)
  deterministic = _run_eval(model, params, constants, rows, inputs, act.EvalSettings(3))
  run = _run_eval(model, params, constants, rows, inputs,
                  act.EvalSettings(3, num_trajectories=4, trajectory_noise=0.0))
  assert run.trajectory_preds.shape == (3, 4, model.seq_len)
  for k in range(4):
    np.testing.assert_array_equal(run.trajectory_preds[:, k], deterministic.preds)
    np.testing.assert_allclose(run.trajectory_q_halt[:, k], deterministic.q_halt,
                               rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(run.preds, deterministic.preds)
  np.testing.assert_array_equal(run.halted_preds, deterministic.halted_preds)
  np.testing.assert_array_equal(run.halt_step, deterministic.halt_step)
  np.testing.assert_allclose(run.step_logits, deterministic.step_logits, rtol=1e-6, atol=1e-6)


def test_noisy_trajectories_differ_and_the_highest_q_halt_is_kept(model,
                                                                  make_random_variables):
  params, constants, rows, inputs = _eval_inputs(model, make_random_variables)
  settings = act.EvalSettings(3, num_trajectories=4, trajectory_noise=0.5, noise_seed=7)
  run = _run_eval(model, params, constants, rows, inputs, settings)
  # Every trajectory by hand: the rows repeated puzzle-major, each with its own keys.
  keys = act.trajectory_noise_keys(7, jnp.int32(0), 3, 4)
  every = jax.device_get(_jit(lambda: act.run_eval_steps(
      model, params, constants, jnp.repeat(rows, 4, axis=0), jnp.repeat(inputs, 4, axis=0), 3,
      keep_steps=True, noise_keys=keys, noise_scale=0.5))())
  q_halt = every.q_halt.reshape(3, 4)
  assert len(np.unique(q_halt)) == 12  # Each trajectory ends elsewhere.
  np.testing.assert_array_equal(run.trajectory_q_halt, q_halt)
  best = np.argmax(q_halt, axis=1)
  np.testing.assert_array_equal(run.trajectory, best)
  rows_kept = np.arange(3) * 4 + best
  np.testing.assert_array_equal(run.q_halt, every.q_halt[rows_kept])
  np.testing.assert_array_equal(run.preds, every.preds[rows_kept])
  np.testing.assert_array_equal(run.halted_preds, every.halted_preds[rows_kept])
  np.testing.assert_array_equal(run.halt_step, every.halt_step[rows_kept])
  np.testing.assert_array_equal(run.step_logits, every.step_logits[:, rows_kept])
  np.testing.assert_array_equal(run.step_q_halt, every.step_q_halt[:, rows_kept])
  np.testing.assert_array_equal(run.trajectory_preds, every.preds.reshape(3, 4, -1))


def test_noise_depends_on_the_example_not_on_the_batch(model, make_random_variables):
  params, constants, rows, inputs = _eval_inputs(model, make_random_variables)
  settings = act.EvalSettings(3, num_trajectories=2, trajectory_noise=0.3)
  whole = _run_eval(model, params, constants, rows, inputs, settings)
  again = _run_eval(model, params, constants, rows, inputs, settings)
  tail = _run_eval(model, params, constants, rows[1:], inputs[1:], settings, first_example=1)
  for name in ('preds', 'trajectory', 'trajectory_q_halt', 'step_logits'):
    np.testing.assert_array_equal(getattr(again, name), getattr(whole, name))
  np.testing.assert_allclose(tail.trajectory_q_halt, whole.trajectory_q_halt[1:], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(tail.trajectory_preds, whole.trajectory_preds[1:])
  other_seed = _run_eval(model, params, constants, rows, inputs,
                         dataclasses.replace(settings, noise_seed=1))
  assert not np.allclose(other_seed.trajectory_q_halt, whole.trajectory_q_halt)


def test_select_trajectories_by_hand():
  # 2 puzzles x 3 trajectories; puzzle 1 ties between trajectories 0 and 2.
  q_halt = jnp.array([0.1, 0.7, -1.0, 0.4, 0.2, 0.4], jnp.float32)
  preds = jnp.arange(6 * 2, dtype=jnp.int32).reshape(6, 2)
  run = act.EvalRun(preds=preds, q_halt=q_halt, halted_preds=preds + 100,
                    halt_step=jnp.arange(6, dtype=jnp.int32), steps_run=jnp.int32(5),
                    step_q_halt=jnp.stack([q_halt - 1, q_halt]))
  kept = act.select_trajectories(run, 3)
  np.testing.assert_array_equal(kept.trajectory, [1, 0])
  np.testing.assert_array_equal(kept.preds, [[2, 3], [6, 7]])
  np.testing.assert_array_equal(kept.halted_preds, [[102, 103], [106, 107]])
  np.testing.assert_array_equal(kept.halt_step, [1, 3])
  np.testing.assert_allclose(kept.q_halt, [0.7, 0.4])
  np.testing.assert_allclose(kept.step_q_halt, [[-0.3, -0.6], [0.7, 0.4]])
  assert kept.step_logits is None and int(kept.steps_run) == 5


def test_eval_settings_from_config_and_checks():
  config = ml_collections.ConfigDict({'num_steps': 0, 'num_trajectories': 1,
                                      'trajectory_noise': 0.0, 'noise_seed': 0})
  assert act.EvalSettings.from_config(config, 16) == act.EvalSettings(16)
  config.num_steps, config.num_trajectories, config.trajectory_noise = 64, 8, 0.1
  settings = act.EvalSettings.from_config(config, 16)
  assert (settings.num_steps, settings.num_trajectories, settings.stochastic) == (64, 8, True)
  assert act.EvalSettings(16, 1, 0.2).stochastic
  for bad in (dict(num_steps=0), dict(num_steps=4, num_trajectories=0),
              dict(num_steps=4, trajectory_noise=-1.0)):
    with pytest.raises(ValueError):
      act.EvalSettings(**bad)

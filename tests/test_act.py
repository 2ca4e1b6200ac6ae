"""Tests for tiny_recursive.act: carry reset, halting, exploration, Q-continue target, eval."""

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
  """Jitted `act.halting_decision` (one compile instead of one per eager op)."""
  fn = lambda *args: act.halting_decision(config, *args, training=training)
  return _jit(fn)(steps, q_halt, q_continue, rng)


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
  decide = _jit(lambda steps: act.halting_decision(config, steps, q_halt, q_continue, key,
                                                   training=True)[0])
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
  params, constants = variables['params'], variables['constants']
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

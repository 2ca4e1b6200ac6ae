"""Tests for tiny_recursive.optimizers against NumPy transcriptions of §5."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tiny_recursive import optimizers


def _reference_lr(step, base_lr, warmup, total, min_ratio, num_cycles=0.5):
  """Scalar transcription of the reference's warm-up + cosine rule."""
  if step < warmup:
    return base_lr * step / max(1, warmup)
  progress = (step - warmup) / max(1, total - warmup)
  return base_lr * (min_ratio + max(
      0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 *
                                                   progress))))


def _numpy_adam_atan2(params, grads_per_step, lr_fn, b1, b2, wd):
  """NumPy AdamATan2 (§5), float64, one dict of arrays."""
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v2 = {k: np.zeros_like(v) for k, v in p.items()}
  for t, grads in enumerate(grads_per_step, start=1):
    lr = lr_fn(t)
    for k in p:
      g = grads[k].astype(np.float64)
      p[k] = p[k] * (1 - lr * wd)
      m[k] = m[k] + (1 - b1) * (g - m[k])
      v2[k] = v2[k] + (1 - b2) * (g * g - v2[k])
      p[k] = p[k] - (lr / (1 - b1**t)) * np.arctan2(
          m[k], np.sqrt(v2[k]) / np.sqrt(1 - b2**t))
  return p


def test_adam_atan2_matches_numpy_with_schedule():
  rng = np.random.default_rng(0)
  params = {'w': rng.normal(size=(4, 3)).astype(np.float32),
            'b': rng.normal(size=(3,)).astype(np.float32)}
  num_steps = 7
  grads = [{k: (rng.normal(size=v.shape) * 10.0**rng.integers(-3, 2)).astype(
      np.float32) for k, v in params.items()} for _ in range(num_steps)]
  # Zero gradient coordinates exercise atan2(0, 0) = 0.
  grads[0]['b'][0] = 0.0
  base_lr, warmup, total, min_ratio, wd = 0.05, 3, 6, 0.1, 0.5
  schedule = optimizers.warmup_cosine_schedule(base_lr, warmup, total,
                                               min_ratio)
  tx = optimizers.adam_atan2(schedule, b1=0.9, b2=0.95, weight_decay=wd)

  @jax.jit
  def step(p, state, g):
    updates, state = tx.update(g, state, p)
    return optax.apply_updates(p, updates), state

  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  for g in grads:
    p, state = step(p, state, jax.tree.map(jnp.asarray, g))
  expected = _numpy_adam_atan2(
      params, grads,
      lambda t: _reference_lr(t, base_lr, warmup, total, min_ratio), 0.9, 0.95,
      wd)
  for k in params:
    np.testing.assert_allclose(np.asarray(p[k]), expected[k], rtol=2e-6,
                               atol=2e-7)
  # The parameters actually moved.
  assert not np.allclose(np.asarray(p['w']), params['w'])


def test_first_update_uses_step_one():
  # One update with lr schedule s(t) = t: the first step's lr is 1, not 0.
  tx = optimizers.adam_atan2(lambda t: jnp.asarray(t, jnp.float32), 0.9, 0.95,
                             weight_decay=0.0)
  p = jnp.zeros([1])
  updates, _ = tx.update(jnp.array([2.0]), tx.init(p), p)
  # t = 1: m = 0.1 g, sqrt(v) / sqrt(1 - b2) = |g|, so the direction is
  # atan2(0.1 g, |g|) / (1 - b1) = atan(0.1) / 0.1, times lr = s(1) = 1.
  np.testing.assert_allclose(np.asarray(updates), [-math.atan(0.1) / 0.1],
                             rtol=1e-6)


def test_constant_learning_rate_and_weight_decay_only():
  tx = optimizers.adam_atan2(0.1, weight_decay=2.0)
  p = jnp.array([3.0, -1.0])
  updates, _ = tx.update(jnp.zeros(2), tx.init(p), p)
  np.testing.assert_allclose(np.asarray(optax.apply_updates(p, updates)),
                             np.array([3.0, -1.0]) * (1 - 0.1 * 2.0), rtol=1e-6)


@pytest.mark.parametrize('min_ratio', [1.0, 0.1, 0.0])
def test_warmup_cosine_schedule_matches_reference(min_ratio):
  base_lr, warmup, total = 1e-4, 20, 100
  schedule = jax.jit(
      optimizers.warmup_cosine_schedule(base_lr, warmup, total, min_ratio))
  for step in [0, 1, 5, 19, 20, 21, 50, 99, 100]:
    np.testing.assert_allclose(
        float(schedule(step)),
        _reference_lr(step, base_lr, warmup, total, min_ratio), rtol=1e-5,
        atol=1e-12, err_msg=f'step {step}')
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(total)), base_lr * min_ratio,
                             rtol=1e-5, atol=1e-12)


def test_warmup_zero_steps():
  schedule = optimizers.warmup_cosine_schedule(1.0, 0, 10, 1.0)
  assert float(schedule(0)) == 1.0


def test_ema_matches_numpy():
  rng = np.random.default_rng(1)
  params = {'a': rng.normal(size=(5,)).astype(np.float32)}
  ema = optimizers.ema_init(params)
  expected = params['a'].astype(np.float64)
  rate = 0.9
  for _ in range(4):
    params = {'a': rng.normal(size=(5,)).astype(np.float32)}
    ema = jax.jit(optimizers.ema_update, static_argnums=2)(ema, params, rate)
    expected = rate * expected + (1 - rate) * params['a']
  np.testing.assert_allclose(np.asarray(ema['a']), expected, rtol=1e-6)
  assert ema['a'].dtype == jnp.float32


def test_ema_init_copies():
  params = {'a': jnp.ones(3)}
  ema = optimizers.ema_init(params)
  np.testing.assert_array_equal(np.asarray(ema['a']), np.ones(3))

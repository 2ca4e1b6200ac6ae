"""AdamATan2, learning-rate schedule and EMA (TRM_REFERENCE.md §5).

The reference increments its step counter before computing the learning rate, so
the first update uses the schedule at step 1 (not 0) and the Adam bias correction
uses t = 1. `adam_atan2` reproduces this: it evaluates the schedule at the 1-based
step t of the update it applies.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any


class ScaleByAdamAtan2State(NamedTuple):
  """State of `scale_by_adam_atan2`.

  Attributes:
    count: number of updates applied so far (int32 scalar).
    mu: first moment, same structure as the parameters.
    nu: second moment, same structure as the parameters.
  """
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_adam_atan2(b1: float = 0.9,
                        b2: float = 0.95) -> optax.GradientTransformation:
  """Bias-corrected Adam direction with atan2 in place of the division.

  For the update with 1-based step t:
    m = m + (1 - b1) * (g - m);  v = v + (1 - b2) * (g*g - v)
    u = atan2(m, sqrt(v) / sqrt(1 - b2**t)) / (1 - b1**t)
  There is no epsilon: atan2 bounds each coordinate by (pi/2) / (1 - b1**t).

  Args:
    b1: decay of the first moment.
    b2: decay of the second moment.

  Returns:
    A transformation whose updates are `u` (not yet scaled by -lr).
  """

  def init_fn(params: PyTree) -> ScaleByAdamAtan2State:
    zeros = lambda p: jnp.zeros_like(p, dtype=jnp.float32)
    return ScaleByAdamAtan2State(
        count=jnp.zeros([], jnp.int32),
        mu=jax.tree.map(zeros, params),
        nu=jax.tree.map(zeros, params))

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: m + (1 - b1) * (g.astype(m.dtype) - m),
                      state.mu, updates)
    nu = jax.tree.map(
        lambda v, g: v + (1 - b2) * (jnp.square(g.astype(v.dtype)) - v),
        state.nu, updates)
    count = optax.safe_int32_increment(state.count)
    t = count.astype(jnp.float32)
    bias_correction1 = 1 - b1**t
    sqrt_bias_correction2 = jnp.sqrt(1 - b2**t)
    directions = jax.tree.map(
        lambda m, v, g: (jnp.arctan2(m, jnp.sqrt(v) / sqrt_bias_correction2) /
                         bias_correction1).astype(g.dtype), mu, nu, updates)
    return directions, ScaleByAdamAtan2State(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def adam_atan2(learning_rate: float | optax.Schedule,
               b1: float = 0.9,
               b2: float = 0.95,
               weight_decay: float = 0.0) -> optax.GradientTransformation:
  """AdamATan2 with decoupled weight decay on every parameter (§5).

  Per update with 1-based step t and lr = learning_rate(t):
    p = p * (1 - lr * wd) - lr * u_t
  where u_t is the direction of `scale_by_adam_atan2`.

  Args:
    learning_rate: a constant or a schedule; a schedule is evaluated at the
      1-based step of the update, like the reference's training loop.
    b1: decay of the first moment.
    b2: decay of the second moment.
    weight_decay: decoupled weight decay coefficient (multiplied by lr).

  Returns:
    An optax transformation; apply its updates with `optax.apply_updates`.
  """
  if callable(learning_rate):
    schedule = learning_rate
  else:
    schedule = lambda _: learning_rate
  # optax.scale_by_schedule counts from 0 at the first update; the reference
  # evaluates the learning rate at step 1 for it.
  negative_lr = lambda count: -schedule(count + 1)
  return optax.chain(
      scale_by_adam_atan2(b1, b2),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_schedule(negative_lr),
  )


def warmup_cosine_schedule(base_lr: float,
                           warmup_steps: int,
                           total_steps: int,
                           min_ratio: float = 1.0,
                           num_cycles: float = 0.5) -> optax.Schedule:
  """Linear warm-up from 0, then cosine decay to base_lr * min_ratio (§5).

  lr(s) = base_lr * s / max(1, warmup_steps)                  for s < warmup_steps
  lr(s) = base_lr * (min_ratio + max(0, (1 - min_ratio) * 0.5 *
          (1 + cos(pi * 2 * num_cycles * progress))))          otherwise,
  with progress = (s - warmup_steps) / max(1, total_steps - warmup_steps).
  lr(0) is 0. With num_cycles 0.5 the decay reaches its minimum at total_steps;
  like the reference, steps beyond total_steps are not clamped (training stops
  there). min_ratio 1.0 gives a constant rate after warm-up.

  Args:
    base_lr: peak learning rate.
    warmup_steps: length of the linear warm-up.
    total_steps: step at which the cosine reaches its minimum (num_cycles 0.5).
    min_ratio: final learning rate as a fraction of base_lr.
    num_cycles: number of cosine periods over the decay phase.

  Returns:
    A schedule mapping the (1-based, see `adam_atan2`) step to the rate.
  """
  warmup_denominator = float(max(1, warmup_steps))
  decay_denominator = float(max(1, total_steps - warmup_steps))

  def schedule(step: jax.typing.ArrayLike) -> jax.Array:
    step = jnp.asarray(step, jnp.float32)
    warmup_lr = base_lr * step / warmup_denominator
    progress = (step - warmup_steps) / decay_denominator
    cosine = 0.5 * (1.0 + jnp.cos(math.pi * num_cycles * 2.0 * progress))
    decay_lr = base_lr * (min_ratio + jnp.maximum(0.0,
                                                  (1 - min_ratio) * cosine))
    return jnp.where(step < warmup_steps, warmup_lr, decay_lr)

  return schedule


def ema_init(params: PyTree) -> PyTree:
  """Starts the exponential moving average at a copy of the parameters."""
  return jax.tree.map(jnp.array, params)


def ema_update(ema_params: PyTree, params: PyTree, rate: float) -> PyTree:
  """One EMA step after an optimizer update: ema = rate * ema + (1 - rate) * p.

  Args:
    ema_params: current average, same structure as `params`.
    params: parameters after the optimizer step.
    rate: decay per step (the reference uses 0.999).

  Returns:
    The new average, with the dtypes of `ema_params`.
  """
  return jax.tree.map(
      lambda e, p: (rate * e + (1.0 - rate) * p.astype(e.dtype)).astype(
          e.dtype),
      ema_params, params)

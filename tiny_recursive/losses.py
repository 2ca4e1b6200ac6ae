"""Losses and metrics of deep supervision with halting (TRM_REFERENCE.md §4).

All reductions are sums over the batch; the train step divides by the global batch size, as
the reference scales the summed loss by 1/global_batch_size before the backward pass.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

Array = jax.Array

LOSS_TYPES = ('stablemax', 'softmax')


def log_stablemax(logits: Array) -> Array:
  """log(s(x) / sum s(x)) with s(x) = 1/(1-x) for x < 0 and x + 1 otherwise.

  The reference computes this in float64. Here each log s(x) is formed directly as -log1p(-x)
  or log1p(x), which is accurate in float32, and both branches only see inputs of their own
  sign, so neither the value nor the gradient of the unused branch can be inf or NaN.
  """
  x = logits.astype(jnp.float32)
  # `where`, not min/max: at a tie min/max split the gradient, halving it at x = 0.
  negative = jnp.where(x < 0, x, 0.0)
  positive = jnp.where(x < 0, 0.0, x)
  s = jnp.where(x < 0, 1.0 / (1.0 - negative), positive + 1.0)
  log_s = jnp.where(x < 0, -jnp.log1p(-negative), jnp.log1p(positive))
  return log_s - jnp.log(jnp.sum(s, axis=-1, keepdims=True))


def token_cross_entropy(logits: Array, labels: Array, mask: Array, loss_type: str) -> Array:
  """Per-token cross entropy [batch, seq] (0 where `mask` is false)."""
  safe_labels = jnp.where(mask, labels, 0)
  if loss_type == 'stablemax':
    log_probs = log_stablemax(logits)
    losses = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  elif loss_type == 'softmax':
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), safe_labels)
  else:
    raise ValueError(f'train.loss_type: expected one of {LOSS_TYPES}, got {loss_type!r}.')
  return jnp.where(mask, losses, 0.0)


def act_loss_and_metrics(logits: Array, q_halt: Array, q_continue: Array, labels: Array,
                         halted: Array, steps: Array, *, ignore_label_id: int, loss_type: str,
                         target_q_continue: Array | None = None) -> tuple[Array, dict[str, Any]]:
  """Summed ACT loss and summed metrics of one supervision step.

  Args:
    logits: float32 [batch, seq, vocab]; q_halt, q_continue: float32 [batch].
    labels: int32 [batch, seq]; tokens equal to `ignore_label_id` count for nothing.
    halted: bool [batch], the slots that halted at this step (metrics are taken on them).
    steps: int32 [batch], supervision steps taken by each slot, this one included.
    target_q_continue: float32 [batch] bootstrapped target, when the continue head is used.

  Returns:
    (loss, metrics): loss = sum over the batch of the per-example token loss (averaged over
    its counted tokens) + 0.5 * (BCE(q_halt, exact) [+ BCE(q_continue, target)]). Metrics are
    sums: count, accuracy, exact_accuracy, q_halt_accuracy, steps over the halted slots with
    at least one counted token, and the loss terms.
  """
  mask = labels != ignore_label_id
  loss_counts = mask.sum(-1)
  divisor = jnp.maximum(loss_counts, 1)[:, None].astype(jnp.float32)

  predictions = jnp.argmax(logits, axis=-1)
  is_correct = mask & (predictions == labels)
  seq_is_correct = is_correct.sum(-1) == loss_counts
  valid = halted & (loss_counts > 0)

  lm_loss = jnp.sum(token_cross_entropy(logits, labels, mask, loss_type) / divisor)
  q_halt_loss = jnp.sum(optax.sigmoid_binary_cross_entropy(
      q_halt, seq_is_correct.astype(jnp.float32)))
  total = lm_loss + 0.5 * q_halt_loss
  metrics = {
      'count': valid.sum(),
      'accuracy': jnp.sum(jnp.where(valid, is_correct.sum(-1) / divisor[:, 0], 0.0)),
      'exact_accuracy': jnp.sum(valid & seq_is_correct),
      'q_halt_accuracy': jnp.sum(valid & ((q_halt >= 0) == seq_is_correct)),
      'steps': jnp.sum(jnp.where(valid, steps, 0)),
      'lm_loss': jax.lax.stop_gradient(lm_loss),
      'q_halt_loss': jax.lax.stop_gradient(q_halt_loss),
  }
  if target_q_continue is not None:
    q_continue_loss = jnp.sum(optax.sigmoid_binary_cross_entropy(
        q_continue, jax.lax.stop_gradient(target_q_continue)))
    total = total + 0.5 * q_continue_loss
    metrics['q_continue_loss'] = jax.lax.stop_gradient(q_continue_loss)
  return total, metrics


def normalise_metrics(sums: dict[str, Any], global_batch_size: int,
                      num_steps: int = 1) -> dict[str, float]:
  """Turns metrics summed over `num_steps` steps into means.

  Losses become per-example means (divided by global_batch_size x num_steps, as the reference
  logs them); the other metrics become means over the counted (halted) slots.
  """
  count = max(float(sums.get('count', 0)), 1.0)
  out = {}
  for key, value in sums.items():
    if key == 'count':
      out[key] = float(value)
    elif key.endswith('loss'):
      out[key] = float(value) / (global_batch_size * num_steps)
    else:
      out[key] = float(value) / count
  return out

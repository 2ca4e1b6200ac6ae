"""Tests for tiny_recursive.losses against float64 NumPy and hand-derived values (§4)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny_recursive import losses


def _jit(fn):
  """jax.jit without LLVM optimisation: these graphs run once, so compile time dominates."""
  return jax.jit(fn, compiler_options={'xla_backend_optimization_level': 0})

# Logits spanning both branches of s(x), tiny and huge magnitudes (no exact zero here; the
# gradient at zero has its own test).
_LOGITS = np.array([
    [-1e4, -100.0, -1.0, -1e-3, 1e-3, 1.0, 100.0, 1e4],
    [3.0, -2.5, 0.25, -0.75, 7.0, -1e4, 1e4, 0.5],
    [-5.0, -4.0, -3.0, -2.0, -1.0, -0.5, -0.1, -1e-6],
], np.float32)


def _numpy_s(x):
  return np.where(x < 0, 1.0 / (1.0 - np.minimum(x, 0.0)), x + 1.0)


def _numpy_ds(x):
  """ds/dx: 1/(1-x)^2 for x < 0 and 1 otherwise (s is continuously differentiable at 0)."""
  return np.where(x < 0, 1.0 / (1.0 - np.minimum(x, 0.0)) ** 2, 1.0)


def _numpy_log_stablemax(x):
  s = _numpy_s(np.asarray(x, np.float64))
  return np.log(s / s.sum(-1, keepdims=True))


def _numpy_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _numpy_bce(logit, target):
  logit = np.asarray(logit, np.float64)
  return np.maximum(logit, 0) - logit * target + np.log1p(np.exp(-np.abs(logit)))


def _grad_log_stablemax(x, w):
  """d/dx of sum(w * log_stablemax(x)) in float64."""
  x = np.asarray(x, np.float64)
  s, ds = _numpy_s(x), _numpy_ds(x)
  return w * ds / s - w.sum(-1, keepdims=True) * ds / s.sum(-1, keepdims=True)


# --- log_stablemax ---


def test_log_stablemax_matches_float64():
  out = np.asarray(losses.log_stablemax(jnp.asarray(_LOGITS)))
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, _numpy_log_stablemax(_LOGITS), rtol=1e-5, atol=1e-6)


def test_log_stablemax_hand_values():
  # s = (1/2, 1, 2): log p = log(s / 3.5).
  out = losses.log_stablemax(jnp.array([[-1.0, 0.0, 1.0]]))
  np.testing.assert_allclose(out, np.log(np.array([[0.5, 1.0, 2.0]]) / 3.5), rtol=1e-6)


def test_log_stablemax_gradient_matches_float64():
  w = np.random.default_rng(0).standard_normal(_LOGITS.shape)
  grad = jax.grad(lambda x: jnp.sum(losses.log_stablemax(x) * w))(jnp.asarray(_LOGITS))
  assert np.all(np.isfinite(grad))
  expected = _grad_log_stablemax(_LOGITS, w)
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_log_stablemax_gradient_at_zero():
  """s is C1 at 0 (s'(0) = 1 from both sides), so the gradient there is the same as at 0+."""
  x = np.array([[0.0, 1.0, -1.0, 0.0]], np.float32)
  w = np.array([[1.0, -0.5, 0.25, 2.0]])
  grad = jax.grad(lambda x: jnp.sum(losses.log_stablemax(x) * w))(jnp.asarray(x))
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, _grad_log_stablemax(x, w), rtol=1e-5, atol=1e-7)


# --- Token cross entropy ---


@pytest.mark.parametrize('loss_type, reference', [('stablemax', _numpy_log_stablemax),
                                                  ('softmax', _numpy_log_softmax)])
def test_token_cross_entropy(loss_type, reference):
  rng = np.random.default_rng(1)
  logits = (rng.standard_normal((2, 4, 5)) * 3.0).astype(np.float32)
  labels = np.array([[1, 4, 0, 2], [3, -100, 2, 9]])  # -100 and 9: ignored slots.
  mask = np.array([[True, True, True, True], [True, False, True, False]])
  out = np.asarray(losses.token_cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                              jnp.asarray(mask), loss_type))
  log_p = reference(logits)
  expected = np.zeros((2, 4))
  for b in range(2):
    for t in range(4):
      if mask[b, t]:
        expected[b, t] = -log_p[b, t, labels[b, t]]
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  assert np.all(out[~mask] == 0.0)


def test_token_cross_entropy_rejects_unknown_type():
  with pytest.raises(ValueError, match='train.loss_type'):
    losses.token_cross_entropy(jnp.zeros((1, 1, 2)), jnp.zeros((1, 1), jnp.int32),
                               jnp.ones((1, 1), bool), 'hinge')


# --- ACT loss and metrics ---


def _act_example():
  """4 examples, 3 tokens, vocabulary 4, ignore id 0.

  ex0: all 3 tokens counted and predicted right (exact). ex1: first token ignored, 1 of 2
  right. ex2: no counted token (halted, but not counted in metrics). ex3: exact, not halted.
  """
  big = 5.0
  labels = np.array([[1, 2, 3], [0, 2, 3], [0, 0, 0], [3, 3, 0]])
  predictions = np.array([[1, 2, 3], [1, 2, 1], [2, 2, 2], [3, 3, 1]])
  rng = np.random.default_rng(2)
  logits = rng.uniform(-1.0, 1.0, (4, 3, 4))
  logits += big * np.eye(4)[predictions]  # The argmax is `predictions`.
  return {
      'logits': logits.astype(np.float32),
      'q_halt': np.array([1.0, 0.5, -2.0, -1.0], np.float32),
      'q_continue': np.array([-0.3, 0.2, 1.5, -4.0], np.float32),
      'labels': labels,
      'halted': np.array([True, True, True, False]),
      'steps': np.array([2, 5, 1, 3], np.int32),
  }


def _numpy_act_loss(ex, loss_type, target=None):
  log_p = (_numpy_log_stablemax if loss_type == 'stablemax' else _numpy_log_softmax)(
      ex['logits'])
  mask = ex['labels'] != 0
  token_loss = -np.take_along_axis(log_p, ex['labels'][..., None], -1)[..., 0]
  counts = np.maximum(mask.sum(-1), 1)
  lm_loss = np.sum(np.where(mask, token_loss, 0.0) / counts[:, None])
  exact = np.array([1.0, 0.0, 1.0, 1.0])  # ex2 has no counted token: vacuously exact.
  q_halt_loss = _numpy_bce(ex['q_halt'], exact).sum()
  total = lm_loss + 0.5 * q_halt_loss
  if target is not None:
    total += 0.5 * _numpy_bce(ex['q_continue'], target).sum()
  return total, lm_loss, q_halt_loss


@pytest.mark.parametrize('loss_type', ['stablemax', 'softmax'])
def test_act_loss_and_metrics(loss_type):
  ex = _act_example()
  fn = _jit(functools.partial(losses.act_loss_and_metrics, ignore_label_id=0,
                              loss_type=loss_type))
  loss, metrics = fn(*(jnp.asarray(ex[k]) for k in ('logits', 'q_halt', 'q_continue', 'labels',
                                                    'halted', 'steps')))
  total, lm_loss, q_halt_loss = _numpy_act_loss(ex, loss_type)
  np.testing.assert_allclose(loss, total, rtol=1e-5)
  np.testing.assert_allclose(metrics['lm_loss'], lm_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics['q_halt_loss'], q_halt_loss, rtol=1e-5)
  assert 'q_continue_loss' not in metrics
  # Metrics only over halted slots with counted tokens: ex0 and ex1.
  assert int(metrics['count']) == 2
  np.testing.assert_allclose(metrics['accuracy'], 1.0 + 0.5, rtol=1e-6)
  assert int(metrics['exact_accuracy']) == 1
  # ex0: q_halt >= 0 and exact (right); ex1: q_halt >= 0 but not exact (wrong).
  assert int(metrics['q_halt_accuracy']) == 1
  assert int(metrics['steps']) == 2 + 5


def test_act_loss_with_continue_head():
  ex = _act_example()
  target = np.array([0.9, 0.1, 0.5, 0.3], np.float32)
  args = [jnp.asarray(ex[k]) for k in ('logits', 'q_halt', 'q_continue', 'labels', 'halted',
                                       'steps')]

  def loss_fn(q_continue, target):
    args[2] = q_continue
    return losses.act_loss_and_metrics(*args, ignore_label_id=0, loss_type='stablemax',
                                       target_q_continue=target)

  (loss, metrics), (grad_q_continue, grad_target) = _jit(jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True))(jnp.asarray(ex['q_continue']),
                                             jnp.asarray(target))
  total, _, _ = _numpy_act_loss(ex, 'stablemax', target)
  np.testing.assert_allclose(loss, total, rtol=1e-5)
  np.testing.assert_allclose(metrics['q_continue_loss'],
                             _numpy_bce(ex['q_continue'], target).sum(), rtol=1e-5)
  # d/dq 0.5 * BCE(q, t) = 0.5 * (sigmoid(q) - t); the target is a constant.
  sigmoid = 1.0 / (1.0 + np.exp(-ex['q_continue'].astype(np.float64)))
  np.testing.assert_allclose(grad_q_continue, 0.5 * (sigmoid - target), rtol=1e-5)
  np.testing.assert_array_equal(grad_target, 0.0)


def test_act_loss_ignore_label_id():
  """With ignore id 3, tokens equal to 3 are dropped and 0 counts like any other label."""
  ex = _act_example()
  args = [jnp.asarray(ex[k]) for k in ('logits', 'q_halt', 'q_continue', 'labels', 'halted',
                                       'steps')]
  fn = _jit(functools.partial(losses.act_loss_and_metrics, ignore_label_id=3,
                              loss_type='softmax'))
  _, metrics = fn(*args)
  # Counted: ex0 (1, 2) right, ex1 (0, 2): 1 of 2 right, ex2 (0, 0, 0): none right.
  assert int(metrics['count']) == 3
  np.testing.assert_allclose(metrics['accuracy'], 1.0 + 0.5 + 0.0, rtol=1e-6)
  assert int(metrics['exact_accuracy']) == 1


def test_normalise_metrics():
  sums = {'count': 4, 'accuracy': 3.0, 'exact_accuracy': 2, 'q_halt_accuracy': 1,
          'steps': 10, 'lm_loss': 6.0, 'q_halt_loss': 2.0, 'q_continue_loss': 1.0}
  out = losses.normalise_metrics(sums, global_batch_size=8, num_steps=2)
  assert out == pytest.approx({
      'count': 4.0, 'accuracy': 0.75, 'exact_accuracy': 0.5, 'q_halt_accuracy': 0.25,
      'steps': 2.5, 'lm_loss': 6.0 / 16, 'q_halt_loss': 2.0 / 16,
      'q_continue_loss': 1.0 / 16})
  # No halted slot: the means are 0 rather than NaN.
  empty = losses.normalise_metrics({'count': 0, 'accuracy': 0.0, 'lm_loss': 4.0}, 8)
  assert empty == {'count': 0.0, 'accuracy': 0.0, 'lm_loss': 0.5}

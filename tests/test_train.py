"""Tests of tiny_recursive/train.py: one `train_step` against an update computed by hand.

A tiny float32 model with halt_max_steps = 1, so that every slot halts after its first
supervision step and exploration never applies. The loss is written here from its definition
(softmax cross entropy averaged over each example's counted tokens, plus half the binary
cross entropy of q_halt against exactness, summed and divided by the batch size, §4); its
gradient comes from `jax.grad`, and the step's updates are then applied in NumPy:

  AdamATan2 at t = 1:  u = atan2((1 - b1) g, |g|) / (1 - b1);  p' = p - lr (u + wd p)
  puzzle rows:         row' = row (1 - lr_p wd_p) - lr_p sign(sum of the row's gradients)
  EMA:                 ema' = rate p + (1 - rate) p'
"""

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import base
from tests import conftest
from tiny_recursive import train

BATCH = 4
B1, B2 = 0.9, 0.95
LR, WD = 1e-2, 0.1
PUZZLE_LR, PUZZLE_WD = 0.05, 0.2
EMA_RATE = 0.9


def _config():
  config = base.get_base_config()
  config.model = conftest.tiny_model_config(halt_max_steps=1)
  config.data.seq_len, config.data.vocab_size = conftest.TINY_SEQ_LEN, conftest.TINY_VOCAB
  t = config.train
  t.global_batch_size = BATCH
  t.lr, t.weight_decay, t.beta1, t.beta2 = LR, WD, B1, B2
  t.puzzle_emb_lr, t.puzzle_emb_weight_decay = PUZZLE_LR, PUZZLE_WD
  t.lr_warmup_steps, t.lr_min_ratio = 0, 1.0  # A constant learning rate.
  t.ema_rate = EMA_RATE
  t.loss_type = 'softmax'
  return config


def _loss(model, params, rows, inputs, labels, z_H, z_L):
  """The ACT loss of one supervision step from its definition (§4)."""
  _, out = model.supervision_step(params, rows, z_H, z_L, inputs)
  counted = labels != 0
  log_probs = jax.nn.log_softmax(out.logits, axis=-1)
  token_loss = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
  lm = jnp.sum(jnp.where(counted, token_loss, 0.0), -1) / counted.sum(-1)
  exact = jnp.all((jnp.argmax(out.logits, -1) == labels) | ~counted, -1).astype(jnp.float32)
  q = out.q_halt
  bce = jnp.maximum(q, 0) - q * exact + jnp.log1p(jnp.exp(-jnp.abs(q)))
  return jnp.sum(lm + 0.5 * bce) / BATCH, jnp.sum(lm)


def test_train_step_matches_a_hand_computed_update():
  config = _config()
  model = conftest.tiny_model(num_puzzle_identifiers=5, halt_max_steps=1)
  schedules = train.make_schedules(config, total_steps=10)
  tx = train.make_optimizer(config, schedules)
  state = train.create_train_state(model, tx, config, jax.random.key(0))
  rng = np.random.default_rng(0)
  variables = conftest.random_variables(model, seed=1)
  table = rng.standard_normal((5, 16)).astype(np.float32)
  state = state.replace(params=variables['params'], ema_params=variables['params'],
                        constants=variables['constants'],
                        puzzle_table=jnp.asarray(table))
  inputs = rng.integers(1, 5, (BATCH, 6)).astype(np.int32)
  labels = rng.integers(1, 5, (BATCH, 6)).astype(np.int32)
  labels[:, 0] = 0  # Ignored tokens.
  ids = np.array([3, 1, 3, 4], np.int32)  # Id 3 twice: its gradients add up; 0 and 2 unused.
  batch = {'inputs': jnp.asarray(inputs), 'labels': jnp.asarray(labels),
           'puzzle_identifiers': jnp.asarray(ids)}

  new_state, metrics = jax.jit(
      lambda s, b: train.train_step(s, b, model=model, tx=tx, schedules=schedules,
                                    config=config))(state, batch)

  z_H, z_L = model.initial_state(variables['constants'], BATCH)
  (grads, row_grads), lm_sum = jax.jit(jax.grad(
      lambda p, r: _loss(model, p, r, jnp.asarray(inputs), jnp.asarray(labels), z_H, z_L),
      argnums=(0, 1), has_aux=True))(variables['params'], jnp.asarray(table[ids]))

  def adam_atan2_first_step(p, g):
    p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
    u = np.arctan2((1 - B1) * g, np.abs(g)) / (1 - B1)
    return p - LR * (u + WD * p)

  expected = jax.tree_util.tree_map(adam_atan2_first_step, variables['params'], grads)
  for path, got in jax.tree_util.tree_flatten_with_path(new_state.params)[0]:
    want = _at(expected, path)
    g = np.asarray(_at(grads, path))
    # A gradient within rounding of 0 may take either sign; those entries are not compared.
    sure = np.abs(g) > 1e-6
    np.testing.assert_allclose(np.asarray(got)[sure], want[sure], rtol=1e-5, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  # The update moved every parameter with a clear gradient by about lr.
  moved = np.abs(np.asarray(new_state.params['lm_head']['kernel']) -
                 np.asarray(variables['params']['lm_head']['kernel']))
  assert np.all(moved > 0.5 * LR)

  summed = np.zeros_like(table)
  np.add.at(summed, ids, np.asarray(row_grads))
  expected_table = table.copy()
  for i in set(ids.tolist()):
    expected_table[i] = table[i] * (1 - PUZZLE_LR * PUZZLE_WD) - PUZZLE_LR * np.sign(summed[i])
  np.testing.assert_allclose(new_state.puzzle_table, expected_table, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(new_state.puzzle_table)[[0, 2]], table[[0, 2]])

  expected_ema = jax.tree_util.tree_map(
      lambda p, q: EMA_RATE * np.asarray(p) + (1 - EMA_RATE) * np.asarray(q),
      variables['params'], new_state.params)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                         new_state.ema_params, expected_ema)

  assert int(new_state.step) == 1
  assert np.all(np.asarray(new_state.carry.halted)) and np.all(new_state.carry.steps == 1)
  np.testing.assert_array_equal(new_state.carry.inputs, inputs)
  np.testing.assert_allclose(metrics['lm_loss'], lm_sum, rtol=1e-5)
  assert int(metrics['count']) == BATCH
  np.testing.assert_allclose(metrics['lr'], LR, rtol=1e-6)


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree

"""Tests for tiny_recursive.model (and the blocks of tiny_recursive.layers it applies).

The recursion is checked against hand-written loops that call the same `layers.Network`
(TRM_REFERENCE.md §3): forward values, where the gradient flows, and that it does not flow
through the first H_cycles - 1 cycles nor into the carry.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import config_loading
from tests import kernel_cases
from tiny_recursive import layers
from tiny_recursive import model as model_lib

_TRUNC_STD = 0.87962566103423978  # Std of a standard normal truncated to [-2, 2].


# --- Helpers ---


def _tree_max_abs(tree) -> float:
  return max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(tree))


def _tree_max_diff(a, b) -> float:
  diffs = jax.tree_util.tree_map(lambda x, y: jnp.max(jnp.abs(x - y)), a, b)
  return max(float(d) for d in jax.tree_util.tree_leaves(diffs))


def _assert_trees_close(a, b, tol=1e-5):
  """Leafwise |a - b| <= tol * max|b| (float32 round-off of a few dozen network calls)."""
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_allclose(x, y, rtol=0, atol=tol * max(np.abs(y).max(), 1e-30))


def _jit(fn):
  """jax.jit without LLVM optimisation: these graphs run once, so compile time dominates."""
  return jax.jit(fn, compiler_options={'xla_backend_optimization_level': 0})


def _random_case(model, batch=2, seed=0):
  """Random params of the model's tree, constants, puzzle rows, inputs, carry and weights.

  Drawn with NumPy from the shapes of `model.init`, so no initialiser is compiled; the Q head
  is non-zero so that the gradient path through position 0 of z_H is exercised.
  """
  c = model.config
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0))

  def draw(leaf):
    scale = 1.0 / math.sqrt(leaf.shape[0]) if len(leaf.shape) == 2 else 1.0
    return jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype)

  shape = (batch, model.total_len, c.hidden_size)
  normal = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  return {
      'params': jax.tree_util.tree_map(draw, shapes['params']),
      'constants': jax.tree_util.tree_map(draw, shapes['constants']),
      'rows': normal(batch, c.puzzle_emb_ndim),
      'inputs': jnp.asarray(rng.integers(0, model.vocab_size, (batch, model.seq_len)),
                            jnp.int32),
      'z_H': normal(*shape),
      'z_L': normal(*shape),
      # Weights of a scalar objective that reads every logit and both Q values.
      'weights': (normal(batch, model.seq_len, model.vocab_size), normal(batch),
                  normal(batch)),
  }


def _objective(weights, logits, q_halt, q_continue):
  w_logits, w_halt, w_continue = weights
  return (jnp.sum(logits * w_logits) + jnp.sum(q_halt * w_halt)
          + jnp.sum(q_continue * w_continue))


def _reference_step(model, params, rows, z_H, z_L, inputs, *, gradient: str):
  """One supervision step written out with explicit Python loops.

  gradient: 'last_cycle' (TRM, §3), 'one_step' (only the last low and the high update carry
  gradient) or 'all' (backpropagation through every cycle: what the model must NOT do).
  Returns ((z_H, z_L), logits, q_halt, q_continue).
  """
  c = model.config
  sg = jax.lax.stop_gradient
  rope = None
  if c.pos_encodings == 'rope':
    rope = layers.rope_tables(model.total_len, c.hidden_size // c.num_heads, c.rope_theta)

  def network(name, num_layers):
    net = layers.Network(num_layers, c.hidden_size, c.num_heads, c.expansion, c.mixer,
                         model.total_len, c.rms_norm_eps, jnp.float32)
    return lambda p, h, injection: net.apply({'params': p[name]}, h, injection, rope)

  if c.arch == 'hrm':
    low_net = network('low_net', c.hrm_low_layers)
    high_net = network('high_net', c.hrm_high_layers)
  else:
    low_net = high_net = network('net', c.num_layers)
  x = model.embed(params, inputs, rows)

  def cycle(p, z_H, z_L, frozen_low_steps=0):
    for i in range(c.l_cycles):
      if c.arch == 'trm_single_z':
        update = lambda q, z: low_net(q, z, x)  # z = net(z + x)
      else:
        update = lambda q, z: low_net(q, z, z_H + x)
      if i < frozen_low_steps:
        z_L = sg(update(sg(p), z_L))
      else:
        z_L = update(p, z_L)
    if c.arch == 'trm_single_z':
      z = high_net(p, z_L, None)  # z = net(z)
      return z, z
    return high_net(p, z_H, z_L), z_L

  for _ in range(c.h_cycles - 1):
    z_H, z_L = cycle(params, z_H, z_L)
    if gradient != 'all':
      z_H, z_L = sg(z_H), sg(z_L)
  z_H, z_L = cycle(params, z_H, z_L,
                   frozen_low_steps=c.l_cycles - 1 if gradient == 'one_step' else 0)
  logits = z_H[:, model.puzzle_emb_len:] @ params['lm_head']['kernel']
  q = z_H[:, 0] @ params['q_head']['kernel'] + params['q_head']['bias']
  return (z_H, z_L), logits, q[:, 0], q[:, 1]


def _model_results(model, case):
  """((objective, (carry, logits, q_halt, q_continue)), grads w.r.t. (params, rows)); one jit."""

  def loss(params, rows):
    carry, out = model.supervision_step(params, rows, case['z_H'], case['z_L'],
                                        case['inputs'])
    aux = (carry, out.logits, out.q_halt, out.q_continue)
    return _objective(case['weights'], *aux[1:]), aux

  fn = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  return _jit(fn)(case['params'], case['rows'])


def _reference_results(model, case, gradient):
  """`_model_results` of the hand-written loop `_reference_step`."""

  def loss(params, rows):
    aux = _reference_step(model, params, rows, case['z_H'], case['z_L'], case['inputs'],
                          gradient=gradient)
    return _objective(case['weights'], *aux[1:]), aux

  fn = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  return _jit(fn)(case['params'], case['rows'])


def _assert_results_close(results, expected):
  (value, aux), grads = results
  (expected_value, expected_aux), expected_grads = expected
  np.testing.assert_allclose(value, expected_value, rtol=1e-5)
  _assert_trees_close(aux, expected_aux)
  _assert_trees_close(grads, expected_grads, tol=1e-4)


def _assert_grads_differ(grads, other_grads):
  """The dense-network and puzzle-row gradients differ by more than 1 % of their size."""
  for a, b in [(grads[0]['net'], other_grads[0]['net']), (grads[1], other_grads[1])]:
    assert _tree_max_diff(a, b) > 1e-2 * _tree_max_abs(a)


# The gradient-placement model: H_cycles 3, L_cycles 2, one MLP-mixer block (the placement
# does not depend on the depth or the mixer; this keeps the compile time low).
_GRAD_OVERRIDES = {'h_cycles': 3, 'l_cycles': 2, 'num_layers': 1, 'mixer': 'mlp',
                   'pos_encodings': 'none'}


@pytest.fixture(scope='module')
def trm(make_tiny_model):
  """(model, case, model results) of the gradient-placement TRM, computed once."""
  model = make_tiny_model(**_GRAD_OVERRIDES)
  case = _random_case(model)
  return model, case, _model_results(model, case)


# --- Parameter counts and initialisation ---


@pytest.mark.parametrize('config_name, expected', [
    ('sudoku_extreme_mlp', 5_028_866),
    ('arc_agi1', 6_829_058),
])
def test_reference_parameter_counts(config_name, expected):
  config = config_loading.load_config(config_name)
  model = model_lib.build_model(config.model, seq_len=config.data.seq_len,
                                vocab_size=config.data.vocab_size, num_puzzle_identifiers=7)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  assert model.param_count(shapes['params']) == expected
  # The puzzle table lives outside the dense parameters (§5).
  assert model.init_puzzle_table().shape == (7, 512)
  assert model.total_len == config.data.seq_len + 16
  for leaf in jax.tree_util.tree_leaves(shapes['params']):
    assert leaf.dtype == jnp.float32
  for name in ('z_H_init', 'z_L_init'):
    assert shapes['constants'][name].shape == (512,)
    assert shapes['constants'][name].dtype == jnp.bfloat16


def test_init_statistics(make_tiny_config):
  config = make_tiny_config(hidden_size=64, num_heads=4, expansion=4.0,
                            forward_dtype='bfloat16')
  model = model_lib.build_model(config, seq_len=6, vocab_size=5)
  variables = _jit(model.init)(jax.random.key(3))
  params = variables['params']
  # swiglu_hidden_width(64, 4) = 256: a [64, 512] kernel, 32k draws.
  kernel = np.asarray(params['net']['block_0']['mlp']['gate_up_proj']['kernel'])
  assert kernel.shape == (64, 2 * 256)
  std = 1.0 / math.sqrt(64)
  assert abs(kernel.std() / std - 1.0) < 0.03
  assert abs(kernel.mean()) < 0.03 * std
  assert np.abs(kernel).max() <= 2.0 * std / _TRUNC_STD * (1 + 1e-6)
  # The bound is reached: truncated at two (rescaled) standard deviations, not earlier.
  assert np.abs(kernel).max() > 1.9 * std / _TRUNC_STD
  down = np.asarray(params['net']['block_1']['mlp']['down_proj']['kernel'])
  assert abs(down.std() * math.sqrt(256) - 1.0) < 0.03  # fan_in = 256.
  for name in ('embed_tokens', 'lm_head'):  # std 1/sqrt(D) for both (vocab x D draws).
    leaf = np.asarray(jax.tree_util.tree_leaves(params[name])[0])
    assert abs(leaf.std() * math.sqrt(64) - 1.0) < 0.15
    assert np.abs(leaf).max() <= 2.0 * std / _TRUNC_STD * (1 + 1e-6)
  np.testing.assert_array_equal(params['q_head']['kernel'], np.zeros((64, 2)))
  np.testing.assert_array_equal(params['q_head']['bias'], [-5.0, -5.0])
  for leaf in jax.tree_util.tree_leaves(params):
    assert leaf.dtype == jnp.float32
  constants = variables['constants']
  for name in ('z_H_init', 'z_L_init'):
    assert constants[name].dtype == jnp.bfloat16
    values = np.asarray(constants[name], np.float32)
    assert np.abs(values).max() <= 2.0 / _TRUNC_STD * 1.01
    assert 0.6 < values.std() < 1.4
  assert not np.array_equal(constants['z_H_init'], constants['z_L_init'])
  float_model = model_lib.build_model(make_tiny_config(forward_dtype='float32'), seq_len=6,
                                      vocab_size=5)
  float_constants = jax.eval_shape(float_model.init, jax.random.key(3))['constants']
  assert float_constants['z_H_init'].dtype == jnp.float32


def test_initial_and_reset_state(trm):
  model, case, _ = trm
  constants = case['constants']
  z_H, z_L = model.initial_state(constants, 3)
  assert z_H.shape == z_L.shape == (3, model.total_len, 16)
  np.testing.assert_array_equal(z_H, np.broadcast_to(constants['z_H_init'], z_H.shape))
  np.testing.assert_array_equal(z_L, np.broadcast_to(constants['z_L_init'], z_L.shape))
  old_H, old_L = jnp.full(z_H.shape, 7.0), jnp.full(z_L.shape, -7.0)
  new_H, new_L = model.reset_state(constants, jnp.array([False, True, False]), old_H, old_L)
  np.testing.assert_array_equal(new_H[1], z_H[1])
  np.testing.assert_array_equal(new_L[1], z_L[1])
  np.testing.assert_array_equal(new_H[::2], old_H[::2])
  np.testing.assert_array_equal(new_L[::2], old_L[::2])


# --- Gradient placement (§3) ---


def test_last_cycle_gradient_matches_hand_written_loop(trm):
  model, case, results = trm
  (_, (_, logits, q_halt, _)), _ = results
  assert logits.shape == (2, model.seq_len, model.vocab_size)
  assert logits.dtype == q_halt.dtype == jnp.float32
  _assert_results_close(results, _reference_results(model, case, 'last_cycle'))
  # Backpropagating through every cycle gives a clearly different gradient, so the equality
  # above really pins down where the gradient stops.
  _assert_grads_differ(results[1], _reference_results(model, case, 'all')[1])


def test_one_step_gradient_matches_hand_written_loop(trm, make_tiny_model):
  _, case, last_cycle_results = trm
  model = make_tiny_model(gradient_mode='one_step', **_GRAD_OVERRIDES)
  results = _model_results(model, case)
  _assert_results_close(results, _reference_results(model, case, 'one_step'))
  _assert_grads_differ(results[1], last_cycle_results[1])


def test_no_gradient_into_or_out_of_the_carry(trm):
  model, case, _ = trm
  w = jnp.asarray(np.random.default_rng(9).standard_normal(case['z_H'].shape), jnp.float32)

  def step(params, rows, z_H, z_L):
    return model.supervision_step(params, rows, z_H, z_L, case['inputs'])

  def objective(params, rows, z_H, z_L):
    _, out = step(params, rows, z_H, z_L)
    return _objective(case['weights'], out.logits, out.q_halt, out.q_continue)

  def new_carry_objective(params, rows, z_H, z_L):
    (new_H, new_L), _ = step(params, rows, z_H, z_L)
    return jnp.sum(new_H * w) + jnp.sum(new_L * w)

  @_jit
  def grads(params, rows, z_H, z_L):
    return (jax.grad(objective, argnums=(2, 3))(params, rows, z_H, z_L),
            jax.grad(new_carry_objective, argnums=(0, 1, 2, 3))(params, rows, z_H, z_L))

  into_carry, out_of_carry = grads(case['params'], case['rows'], case['z_H'], case['z_L'])
  assert _tree_max_abs(into_carry) == 0.0
  assert _tree_max_abs(out_of_carry) == 0.0


@pytest.mark.parametrize('overrides', [
    {'remat_policy': 'full'},
    {'remat_policy': 'dots'},
    {'scan_unroll': 2},
    {'activation_layout': 'sequence_major'},
    {'activation_layout': 'sequence_major', 'remat_policy': 'dots'},
])
def test_performance_levers_do_not_change_the_math(trm, make_tiny_model, overrides):
  _, case, results = trm
  lever_model = make_tiny_model(**_GRAD_OVERRIDES, **overrides)
  _assert_results_close(_model_results(lever_model, case), results)


# --- Architecture variants ---


def test_single_z_matches_hand_written_loop(trm, make_tiny_model):
  _, case, _ = trm
  model = make_tiny_model(arch='trm_single_z', **_GRAD_OVERRIDES)
  assert set(case['params']) == {'embed_tokens', 'lm_head', 'q_head', 'net'}
  results = _model_results(model, case)
  _assert_results_close(results, _reference_results(model, case, 'last_cycle'))
  (_, ((new_H, new_L), _, _, _)), _ = results
  np.testing.assert_array_equal(new_H, new_L)  # One state: the answer is read from z.


def test_hrm_has_two_networks_and_matches_hand_written_loop(make_tiny_model):
  model = make_tiny_model(arch='hrm', hrm_high_layers=2, hrm_low_layers=1, h_cycles=2,
                          l_cycles=2, gradient_mode='one_step', mixer='mlp',
                          pos_encodings='none')
  case = _random_case(model)
  params = case['params']
  assert set(params) == {'embed_tokens', 'lm_head', 'q_head', 'high_net', 'low_net'}
  assert set(params['high_net']) == {'block_0', 'block_1'}
  assert set(params['low_net']) == {'block_0'}
  _assert_results_close(_model_results(model, case),
                        _reference_results(model, case, 'one_step'))


@pytest.mark.parametrize('mixer', ['attention', 'mlp'])
@pytest.mark.parametrize('pos_encodings', ['rope', 'learned', 'none'])
def test_variants_parameter_tree(make_tiny_model, mixer, pos_encodings):
  model = make_tiny_model(mixer=mixer, pos_encodings=pos_encodings)
  variables = jax.eval_shape(model.init, jax.random.key(0))
  params = variables['params']
  D, S = 16, model.total_len  # pylint: disable=invalid-name
  hidden = layers.swiglu_hidden_width(D, 2.0)
  expected = {
      'embed_tokens': {'embedding': (model.vocab_size, D)},
      'lm_head': {'kernel': (D, model.vocab_size)},
      'q_head': {'kernel': (D, 2), 'bias': (2,)},
  }
  if pos_encodings == 'learned':
    expected['embed_pos'] = {'embedding': (S, D)}
  block = {'mlp': {'gate_up_proj': {'kernel': (D, 2 * hidden)},
                   'down_proj': {'kernel': (hidden, D)}}}
  if mixer == 'attention':
    block['attention'] = {'qkv_proj': {'kernel': (D, 3 * D)}, 'o_proj': {'kernel': (D, D)}}
  else:
    seq_hidden = layers.swiglu_hidden_width(S, 2.0)
    block['sequence_mlp'] = {'gate_up_proj': {'kernel': (S, 2 * seq_hidden)},
                             'down_proj': {'kernel': (seq_hidden, S)}}
  expected['net'] = {'block_0': block, 'block_1': block}
  assert jax.tree_util.tree_map(lambda x: x.shape, params) == expected
  state = jax.ShapeDtypeStruct((2, S, D), jnp.float32)
  _, out = jax.eval_shape(model.supervision_step, params, jnp.zeros((2, 16)), state, state,
                          jnp.zeros((2, 6), jnp.int32))
  assert out.logits.shape == (2, 6, model.vocab_size)
  assert out.q_halt.shape == out.q_continue.shape == (2,)


@pytest.mark.parametrize('pos_encodings, equivariant', [('none', True), ('rope', False),
                                                        ('learned', False)])
def test_attention_positions(make_tiny_model, make_random_variables, pos_encodings,
                             equivariant):
  """Without positions attention is permutation-equivariant over tokens; RoPE/learned break it."""
  model = make_tiny_model(pos_encodings=pos_encodings, h_cycles=2, l_cycles=1, num_layers=1)
  variables = make_random_variables(model)
  params, constants = variables['params'], variables['constants']
  rng = np.random.default_rng(6)
  rows = jnp.asarray(rng.standard_normal((2, 16)), jnp.float32)
  inputs = jnp.asarray(rng.integers(0, model.vocab_size, (2, model.seq_len)), jnp.int32)
  z_H, z_L = model.initial_state(constants, 4)  # The same vector at every position.
  perm = np.array([3, 0, 5, 1, 4, 2])
  _, out = _jit(model.supervision_step)(params, jnp.concatenate([rows, rows]), z_H, z_L,
                                        jnp.concatenate([inputs, inputs[:, perm]]))
  close = np.allclose(out.logits[:2, perm], out.logits[2:], rtol=1e-4, atol=1e-5)
  assert close == equivariant


# --- The MLP-mixer block (§3) ---


def _numpy_swiglu(x, gate_up, down):
  gate, up = np.split(x @ gate_up, 2, axis=-1)
  return (gate / (1.0 + np.exp(-gate)) * up) @ down


def _numpy_rms(x, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def _numpy_mlp_block(x, p, eps, sequence_norm_axis_is_sequence=True):
  """The block of §3 in float64: the sequence SwiGLU acts on the transposed `[B, D, L]`."""
  t = x.transpose(0, 2, 1)
  mixed = t + _numpy_swiglu(t, p['sequence_mlp']['gate_up_proj']['kernel'],
                            p['sequence_mlp']['down_proj']['kernel'])
  if sequence_norm_axis_is_sequence:
    h = _numpy_rms(mixed, eps).transpose(0, 2, 1)
  else:  # Transposing back before the norm: a norm over the hidden axis (wrong).
    h = _numpy_rms(mixed.transpose(0, 2, 1), eps)
  return _numpy_rms(h + _numpy_swiglu(h, p['mlp']['gate_up_proj']['kernel'],
                                      p['mlp']['down_proj']['kernel']), eps)


def test_mlp_block_matches_numpy():
  batch, seq, hidden, eps = 2, 7, 8, 1e-5
  block = layers.Block(hidden, 1, 2.0, 'mlp', seq, eps, jnp.float32)
  h = jnp.asarray(np.random.default_rng(0).normal(0.5, 2.0, (batch, seq, hidden)), jnp.float32)
  params = _jit(block.init)(jax.random.key(1), h, None)['params']
  out = np.asarray(_jit(block.apply)({'params': params}, h, None), np.float64)
  p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
  x = np.asarray(h, np.float64)
  expected = _numpy_mlp_block(x, p, eps)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
  # The residual norm of the sequence branch is over the sequence axis; over the hidden axis
  # the result would be measurably different.
  assert not np.allclose(out, _numpy_mlp_block(x, p, eps, False), rtol=1e-3, atol=1e-3)

  # The sequence-major layout: the same parameters on the [seq, batch, hidden] tensor.
  sequence_major = layers.Block(hidden, 1, 2.0, 'mlp', seq, eps, jnp.float32,
                                sequence_major=True)
  h_t = jnp.swapaxes(h, 0, 1)
  assert (jax.tree_util.tree_map(jnp.shape, _jit(sequence_major.init)(jax.random.key(1), h_t,
                                                                      None)['params'])
          == jax.tree_util.tree_map(jnp.shape, params))
  out_t = np.asarray(_jit(sequence_major.apply)({'params': params}, h_t, None), np.float64)
  np.testing.assert_allclose(out_t.transpose(1, 0, 2), expected, rtol=1e-4, atol=1e-5)


def test_sequence_major_layout_needs_the_mlp_mixer(make_tiny_config):
  with pytest.raises(ValueError, match="model.activation_layout: 'sequence_major' needs"):
    model_lib.build_model(make_tiny_config(mixer='attention', activation_layout='sequence_major'),
                          seq_len=6, vocab_size=5)


# --- Embedding (§3) ---


@pytest.mark.parametrize('pos_encodings', ['none', 'learned'])
def test_embedding(make_tiny_config, pos_encodings):
  # puzzle_emb_len 0: ceil(20 / 16) = 2 positions; the 20 values are zero-padded to 32.
  config = make_tiny_config(puzzle_emb_ndim=20, puzzle_emb_len=0, pos_encodings=pos_encodings)
  model = model_lib.build_model(config, seq_len=6, vocab_size=5)
  assert model.puzzle_emb_len == 2 and model.total_len == 8
  rng = np.random.default_rng(0)
  params = {'embed_tokens': {'embedding': jnp.asarray(rng.standard_normal((5, 16)), jnp.float32)},
            'embed_pos': {'embedding': jnp.asarray(rng.standard_normal((8, 16)), jnp.float32)}}
  rows = np.asarray(rng.standard_normal((3, 20)), np.float32).astype(np.float64)
  inputs = np.array([[0, 1, 2, 3, 4, 0], [4, 4, 4, 4, 4, 4], [1, 0, 1, 0, 1, 0]])
  x = np.asarray(_jit(model.embed)(params, jnp.asarray(inputs), jnp.asarray(rows, jnp.float32)),
                 np.float64)

  table = np.asarray(params['embed_tokens']['embedding'], np.float64)
  prefix = np.concatenate([rows, np.zeros((3, 12))], axis=1).reshape(3, 2, 16)
  expected = np.concatenate([prefix, table[inputs]], axis=1)
  if pos_encodings == 'learned':
    expected = 0.707106781 * (expected + np.asarray(params['embed_pos']['embedding']))
  expected *= 4.0  # sqrt(D)
  assert x.shape == (3, 8, 16)
  np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6)


def test_embedding_without_puzzle_embeddings(make_tiny_config):
  model = model_lib.build_model(make_tiny_config(puzzle_emb_ndim=0, pos_encodings='none'),
                                seq_len=6, vocab_size=5)
  table = jnp.asarray(np.random.default_rng(0).standard_normal((5, 16)), jnp.float32)
  inputs = jnp.array([[0, 1, 2, 3, 4, 0]])
  x = np.asarray(model.embed({'embed_tokens': {'embedding': table}}, inputs, None))
  np.testing.assert_array_equal(x[:, :model.puzzle_emb_len], 0.0)
  np.testing.assert_allclose(x[0, model.puzzle_emb_len:], 4.0 * np.asarray(table)[inputs[0]],
                             rtol=1e-6)


def test_bad_config_names_the_key(make_tiny_config):
  for key, value in [('arch', 'rnn'), ('gradient_mode', 'bptt'), ('pos_encodings', 'alibi'),
                     ('remat_policy', 'some'), ('forward_dtype', 'float16')]:
    with pytest.raises(ValueError, match=f'model.{key}'):
      model_lib.build_model(make_tiny_config(**{key: value}), seq_len=6, vocab_size=5)


@pytest.mark.parametrize('seq, multiple, padded_len',
                         [(13, 1, 14), (13, 2, 14), (12, 2, 12), (13, 3, 18), (13, 8, 16),
                          (13, 64, 64)])
def test_cudnn_attention_padding_is_invisible(monkeypatch, seq, multiple, padded_len):
  """`_cudnn_attention` pads the sequence to the smallest even multiple of `multiple` (cuDNN
  trains on even lengths only) and masks the padding out: with the fused call replaced by
  JAX's XLA attention (CPU), any multiple gives plain attention."""
  original = jax.nn.dot_product_attention
  seen = []

  def on_xla(query, key, value, *, implementation, **kwargs):
    assert implementation == 'cudnn'
    seen.append((query.shape[1], 'query_seq_lengths' in kwargs))
    return original(query, key, value, implementation='xla', **kwargs)

  monkeypatch.setattr(jax.nn, 'dot_product_attention', on_xla)
  rng = np.random.default_rng(multiple)
  query, key, value = (jnp.asarray(rng.standard_normal((2, seq, 2, 8)), jnp.float32)
                       for _ in range(3))
  out = layers._cudnn_attention(query, key, value, multiple)
  assert seen == [(padded_len, padded_len != seq)]
  np.testing.assert_allclose(out, layers._xla_attention(query, key, value), rtol=1e-5,
                             atol=1e-5)


def _masked_xla_as_cudnn(query, key, value, multiple=2, real_len=None):
  """Stands in for cuDNN on CPU: the same function (padding masked out) in XLA."""
  del multiple
  return layers._xla_attention(query, key, value, real_len)  # pylint: disable=protected-access


@pytest.mark.parametrize('pos_encodings', ['rope', 'learned'])
def test_padding_the_sequence_once_computes_the_same_step(monkeypatch, make_tiny_model,
                                                          make_random_variables,
                                                          pos_encodings):
  monkeypatch.setattr(layers, '_cudnn_attention', _masked_xla_as_cudnn)
  # 6 tokens + 1 puzzle position: 7, padded to 8 for cuDNN.
  options = dict(attention_impl='cudnn', puzzle_emb_len=1, pos_encodings=pos_encodings)
  plain = make_tiny_model(pad_sequence_once=False, **options)
  once = make_tiny_model(pad_sequence_once=True, **options)
  assert (plain.total_len, plain.network_len, once.network_len) == (7, 7, 8)
  # The same parameters, drawn the same: checkpoints move freely between the two.
  for a, b in zip(jax.tree.leaves(plain.init(jax.random.key(1))),
                  jax.tree.leaves(once.init(jax.random.key(1)))):
    np.testing.assert_array_equal(a, b)
  variables = make_random_variables(plain)
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.integers(0, 5, (3, 6)), jnp.int32)
  rows = jnp.asarray(rng.normal(size=(3, 16)), jnp.float32)
  z_H, z_L = (jnp.asarray(rng.normal(size=(3, 7, 16)), jnp.float32) for _ in range(2))
  noise = lambda z, u: z + 0.01 * (u + 1)  # Test-time noise sees the real positions only.

  def step(model, **kwargs):
    return model.supervision_step(variables['params'], rows, z_H, z_L, inputs, **kwargs)

  for kwargs in ({}, {'perturb_latent': noise, 'differentiated': False}):
    (h, l), out = step(plain, **kwargs)
    (h_once, l_once), out_once = step(once, **kwargs)
    assert h_once.shape == h.shape == (3, 7, 16) and l_once.shape == l.shape
    # Same function; float32 rounding differs (reductions over 8 keys instead of 7) and the
    # 9 network calls of a step carry it to about 2e-5. Attending to the padding would
    # differ by 0.1 and more (a single network call: see the next test).
    for got, expected in ((h_once, h), (l_once, l), (out_once.logits, out.logits),
                          (out_once.q_halt, out.q_halt)):
      np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_attention_masks_the_padding_positions():
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.normal(size=(3, 7, 16)), jnp.float32)
  padded = jnp.pad(h, ((0, 0), (0, 1), (0, 0)))
  network = lambda seq, real_len=0: layers.Network(2, 16, 2, 2.0, 'attention', seq, 1e-5,
                                                   jnp.float32, 'xla', real_len=real_len)
  rope = lambda seq: layers.rope_tables(seq, 8, 1e4)
  params = network(7).init(jax.random.key(0), h, None, rope(7))
  expected = network(7).apply(params, h, None, rope(7))
  masked = network(8, real_len=7).apply(params, padded, None, rope(8))[:, :7]
  np.testing.assert_allclose(masked, expected, rtol=1e-5, atol=1e-5)
  unmasked = network(8).apply(params, padded, None, rope(8))[:, :7]
  assert np.abs(unmasked - expected).max() > 0.1


def test_padding_the_sequence_once_only_with_cudnn_on_an_odd_length(make_tiny_model):
  assert make_tiny_model(pad_sequence_once=True).network_len == 8  # XLA on CPU: never padded
  assert make_tiny_model(pad_sequence_once=True, puzzle_emb_len=1).network_len == 7
  assert make_tiny_model(pad_sequence_once=True, puzzle_emb_len=1,
                         attention_impl='cudnn').network_len == 8
  assert make_tiny_model(pad_sequence_once=True, attention_impl='cudnn').network_len == 8
  assert make_tiny_model(pad_sequence_once=True, puzzle_emb_len=1, attention_impl='cudnn',
                         mixer='mlp').network_len == 7


def test_the_mosaic_sequence_mlp_kernel_only_on_hopper(monkeypatch, make_tiny_model):
  model = make_tiny_model(mixer='mlp', activation_layout='sequence_major',
                          fused_sequence_mlp=True, sequence_mlp_kernel='mosaic')
  assert model._sequence_mlp_kernel() == 'triton'  # pylint: disable=protected-access
  monkeypatch.setattr(model_lib.hopper_kernels, 'available', lambda: True)
  assert model._sequence_mlp_kernel() == 'mosaic'  # pylint: disable=protected-access
  triton = make_tiny_model(mixer='mlp', sequence_mlp_kernel='triton')
  assert triton._sequence_mlp_kernel() == 'triton'  # pylint: disable=protected-access


def test_the_swiglu_gradient_kernel_only_in_differentiated_calls_on_gpu(monkeypatch,
                                                                        make_tiny_model):
  calls = kernel_cases.record_swiglu_gradient_calls(monkeypatch)
  model = make_tiny_model(swiglu_gradient_kernel=True, attention_impl='xla')
  plain = make_tiny_model(attention_impl='xla')
  case = _random_case(model, batch=4)
  expected = _model_results(plain, case)
  _assert_results_close(_model_results(model, case), expected)
  assert not calls  # A CPU: autodiff's gradient.
  monkeypatch.setattr(model_lib, 'gpu_backend', lambda: True)
  _assert_results_close(_model_results(model, case), expected)
  # Traced once for the gradient cycle's low update (the body of its scan) and once for its
  # high update, two layers each: four channel MLPs, each batch 4 x (6 + 2 puzzle-embedding)
  # positions x 256 hidden units. The cycles without gradient trace none.
  assert calls == [(4, 8, 256)] * 4

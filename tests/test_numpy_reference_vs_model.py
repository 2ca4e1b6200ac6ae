"""The Flax model against the independent float64 NumPy reference (tests/numpy_reference.py).

Random reference-layout weights are written with `torch.save` (prefixed keys, bfloat16 init
vectors, as a reference checkpoint), imported with `tiny_recursive.torch_import`, and the
model's float32 forward is compared with the float64 reference on the raw tensors.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import config_loading
from experiments.configs import tiny
from tests import numpy_reference as ref
from tiny_recursive import act
from tiny_recursive import layers
from tiny_recursive import model as model_lib
from tiny_recursive import torch_import

NUM_IDS = 5
TOLERANCE = 1e-4  # Relative L2 error of float32 against float64.


def relative_error(actual, expected) -> float:
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def sudoku_mlp_config(h_cycles=2, l_cycles=1):
  """Sudoku TRM-MLP at full width, sequence and vocabulary; fewer cycles for speed."""
  config = config_loading.load_config('sudoku_extreme_mlp')
  config.model.h_cycles, config.model.l_cycles = h_cycles, l_cycles
  return config


def arc_attention_config(h_cycles=1, l_cycles=1):
  """ARC TRM-Att at full width, 900 tokens, 12-token vocabulary, RoPE; fewer cycles."""
  config = config_loading.load_config('arc_agi1')
  config.model.h_cycles, config.model.l_cycles = h_cycles, l_cycles
  return config


def tiny_config(pos_encodings='learned', mixer='attention', arch='trm'):
  config = tiny.get_config(mixer)
  config.model.pos_encodings = pos_encodings
  config.model.arch = arch
  config.model.hrm_high_layers = config.model.hrm_low_layers = 2
  return config


def import_random_checkpoint(config, tmp_path, *, weight_scale=0.5, seed=0):
  """Writes random reference weights with torch.save and imports them.

  Returns:
    (model, params, constants, puzzle_table, reference weights as loaded by torch directly,
    ReferenceConfig).
  """
  torch = pytest.importorskip('torch')
  config.model.forward_dtype = 'float32'
  seq_len, vocab_size = config.data.seq_len, config.data.vocab_size
  ref_config = ref.config_from_model_config(config.model, seq_len=seq_len,
                                            vocab_size=vocab_size)
  weights = ref.random_state_dict(ref_config, NUM_IDS, np.random.default_rng(seed),
                                  weight_scale=weight_scale)
  tensors = {}
  for key, value in weights.items():
    tensor = torch.from_numpy(value)
    if key in ('H_init', 'L_init'):  # Stored in the forward dtype by the reference.
      tensor = tensor.to(torch.bfloat16)
    tensors[torch_import.REFERENCE_PREFIX + key] = tensor
  path = tmp_path / 'reference.pt'
  torch.save(tensors, path)

  raw = torch.load(path, map_location='cpu', weights_only=True)
  reference_weights = ref.strip_prefixes({k: v.float().numpy() for k, v in raw.items()})
  params, constants, puzzle_table = torch_import.state_dict_to_variables(
      torch_import.load_torch_state_dict(str(path)), config.model, seq_len=seq_len,
      vocab_size=vocab_size)
  model = model_lib.build_model(config.model, seq_len=seq_len, vocab_size=vocab_size,
                                   num_puzzle_identifiers=NUM_IDS)
  return model, params, constants, puzzle_table, reference_weights, ref_config


def random_batch(ref_config, batch_size, seed=1):
  rng = np.random.default_rng(seed)
  inputs = rng.integers(0, ref_config.vocab_size, (batch_size, ref_config.seq_len))
  ids = rng.integers(0, NUM_IDS, (batch_size,))
  return inputs.astype(np.int32), ids.astype(np.int32)


# --- The reference's own building blocks, against hand-derived values. ---


def test_reference_rms_norm_and_widths():
  x = np.array([[3.0, 4.0]])
  np.testing.assert_allclose(ref.rms_norm(x, 0.0), x / math.sqrt(12.5))
  assert ref.swiglu_intermediate(512, 4.0) == 1536
  # Sudoku MLP mixer: 81 + 16 positions -> round(258.67) = 259 -> 512.
  assert ref.swiglu_intermediate(97, 4.0) == 512


def test_reference_rope_depends_on_relative_position_only():
  cos, sin = ref.rope_tables(12, 8, 10000.0)
  rng = np.random.default_rng(0)
  q, k = rng.standard_normal((1, 1, 1, 8)), rng.standard_normal((1, 1, 1, 8))

  def score(i, j):
    rq = ref.apply_rope(np.broadcast_to(q, (1, 12, 1, 8)), cos, sin)[0, i, 0]
    rk = ref.apply_rope(np.broadcast_to(k, (1, 12, 1, 8)), cos, sin)[0, j, 0]
    return rq @ rk

  np.testing.assert_allclose(score(5, 2), score(9, 6))
  np.testing.assert_allclose(score(0, 0), q.ravel() @ k.ravel())
  # Position 1 rotates pair (x_i, x_{i+4}) by angle theta^(-2i/8).
  x = np.zeros((1, 12, 1, 8))
  x[0, 1, 0, 0] = 1.0
  np.testing.assert_allclose(ref.apply_rope(x, cos, sin)[0, 1, 0, [0, 4]],
                             [math.cos(1.0), math.sin(1.0)])


def test_reference_attention_with_equal_keys_averages_values():
  d, heads = 4, 2
  x = np.random.default_rng(0).standard_normal((1, 3, d))
  qkv = np.zeros((3 * d, d))
  qkv[2 * d:] = np.eye(d)  # q = k = 0, v = x: uniform weights.
  out = ref.attention(x, qkv, np.eye(d), heads, rope=None)
  np.testing.assert_allclose(out, np.broadcast_to(x.mean(axis=1, keepdims=True), x.shape))


# --- The model against the reference. ---


@pytest.mark.parametrize('make_config', [sudoku_mlp_config, arc_attention_config],
                         ids=['sudoku_mlp', 'arc_attention'])
def test_one_block_matches_reference(make_config, tmp_path):
  config = make_config()
  model, params, _, _, weights, ref_config = import_random_checkpoint(config, tmp_path,
                                                                      weight_scale=1.0)
  c = config.model
  h = np.random.default_rng(2).standard_normal((1, ref_config.num_positions, c.hidden_size))
  network = layers.Network(
      num_layers=1, hidden_size=c.hidden_size, num_heads=c.num_heads, expansion=c.expansion,
      mixer=c.mixer, seq_len=model.total_len, rms_norm_eps=c.rms_norm_eps, dtype=jnp.float32)
  rope = None
  if c.pos_encodings == 'rope':
    rope = layers.rope_tables(model.total_len, c.hidden_size // c.num_heads, c.rope_theta)
  ours = network.apply({'params': {'block_0': params['net']['block_0']}},
                       jnp.asarray(h, jnp.float32), None, rope)
  ref_rope = None
  if c.pos_encodings == 'rope':
    ref_rope = ref.rope_tables(ref_config.num_positions, c.hidden_size // c.num_heads,
                               c.rope_theta)
  expected = ref.block(h, weights, 'L_level.layers.0.', ref_config, ref_rope)
  assert relative_error(ours, expected) < TOLERANCE


def test_supervision_step_from_random_state_matches_reference(tmp_path):
  config = sudoku_mlp_config()
  model, params, constants, table, weights, ref_config = import_random_checkpoint(
      config, tmp_path, weight_scale=1.0)
  inputs, ids = random_batch(ref_config, 1)
  rng = np.random.default_rng(3)
  shape = (1, ref_config.num_positions, ref_config.hidden_size)
  z_h, z_l = rng.standard_normal(shape), rng.standard_normal(shape)
  (new_h, new_l), out = model.supervision_step(
      params, jnp.asarray(table)[ids], jnp.asarray(z_h, jnp.float32),
      jnp.asarray(z_l, jnp.float32), jnp.asarray(inputs))
  exp_h, exp_l, exp_logits, exp_q_halt, exp_q_continue = ref.supervision_step(
      weights, ref_config, z_h, z_l, inputs, ids)
  assert out.logits.dtype == jnp.float32
  assert relative_error(out.logits, exp_logits) < TOLERANCE
  assert relative_error(new_h, exp_h) < TOLERANCE
  assert relative_error(new_l, exp_l) < TOLERANCE
  np.testing.assert_allclose(out.q_halt, exp_q_halt, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.q_continue, exp_q_continue, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    'make_config, batch_size, num_steps',
    [(sudoku_mlp_config, 1, 2),
     (arc_attention_config, 1, 1),
     (lambda: tiny_config('learned'), 3, 3),
     (lambda: tiny_config('none', mixer='mlp'), 3, 3),
     (lambda: tiny_config('rope', arch='hrm'), 3, 3)],
    ids=['sudoku_mlp', 'arc_attention', 'tiny_learned_positions', 'tiny_mlp', 'tiny_hrm'])
def test_eval_steps_match_reference(make_config, batch_size, num_steps, tmp_path):
  config = make_config()
  model, params, constants, table, weights, ref_config = import_random_checkpoint(
      config, tmp_path)
  inputs, ids = random_batch(ref_config, batch_size)
  run = act.run_eval_steps(model, params, constants,
                           model.puzzle_rows(jnp.asarray(table), jnp.asarray(ids)),
                           jnp.asarray(inputs), num_steps, keep_steps=True)
  ours = {'logits': run.step_logits, 'q_halt_logits': run.step_q_halt, 'preds': run.preds}
  expected = ref.run_eval_steps(weights, ref_config, inputs, ids, num_steps)
  assert ours['logits'].shape == (num_steps, batch_size, ref_config.seq_len,
                                  ref_config.vocab_size)
  for step in range(num_steps):
    assert relative_error(ours['logits'][step], expected['logits'][step]) < TOLERANCE, step
  np.testing.assert_allclose(ours['q_halt_logits'], expected['q_halt_logits'], rtol=1e-4,
                             atol=1e-4)
  # q depends on the state, not only on the head's bias.
  assert np.min(np.abs(expected['q_halt_logits'] - weights['q_head.bias'][0])) > 1e-3
  np.testing.assert_array_equal(ours['preds'], np.argmax(np.asarray(ours['logits'][-1]), -1))

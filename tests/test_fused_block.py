"""The fused block kernels (Pallas interpreter on CPU) against their references and the XLA
formulation of `layers.Block`, and the model with `model.fused_block` on and off."""

import functools

import jax
from jax import export
import jax.numpy as jnp
import numpy as np
import pytest

from tests import conftest
from tiny_recursive import fused_block
from tiny_recursive import layers
from tiny_recursive import model as model_lib

_EPS = 1e-5
# Small tiles, so that tiny shapes still span several programs and loop steps.
_INTERPRETED = {
    'matmul_residual_rms_norm': dict(block_m=16, block_k=16, interpret=True),
    'matmul_swiglu': dict(block_m=16, block_n=16, block_k=16, interpret=True),
    'matmul_qkv_rope': dict(block_m=16, block_k=16, interpret=True),
}


def _jit(fn):
  """jax.jit without LLVM optimisation: these graphs run once, so compile time dominates."""
  return jax.jit(fn, compiler_options={'xla_backend_optimization_level': 0})


def _relative_error(x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return np.linalg.norm(x - y) / np.linalg.norm(y)


def _arrays(seed, x_shape, w_shape, residual_shape=None, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(0.2, 1.0, x_shape), dtype)
  w = jnp.asarray(rng.normal(0.0, w_shape[0] ** -0.5, w_shape), jnp.float32)
  if residual_shape is None:
    return x, w
  return x, w, jnp.asarray(rng.normal(0.0, 1.0, residual_shape), dtype)


@pytest.fixture
def interpreted(monkeypatch):
  """The kernels in the Pallas interpreter with small tiles; returns the call counts."""
  calls = {name: 0 for name in _INTERPRETED}
  for name, options in _INTERPRETED.items():
    kernel = getattr(fused_block, name)

    def counted(*args, _kernel=kernel, _name=name, _options=options, **kwargs):
      calls[_name] += 1
      return _kernel(*args, **_options, **kwargs)

    monkeypatch.setattr(fused_block, name, counted)
  return calls


# --- Kernels against their references ---


@pytest.mark.parametrize('x_shape, width, block_m, block_k', [
    ((3, 25, 48), 40, 16, 32),  # 75 rows, in 48 and out 40: a ragged tile on every axis.
    ((2, 16, 64), 64, 32, 16),  # Whole tiles.
])
def test_residual_rms_norm_matches_its_reference_in_float32(x_shape, width, block_m, block_k):
  x, w, residual = _arrays(0, x_shape, (x_shape[-1], width), x_shape[:-1] + (width,))
  out = fused_block.matmul_residual_rms_norm(x, w, residual, _EPS, block_m=block_m,
                                             block_k=block_k, interpret=True)
  expected = fused_block.matmul_residual_rms_norm_reference(x, w, residual, _EPS)
  assert out.shape == expected.shape and out.dtype == jnp.float32
  assert _relative_error(out, expected) < 1e-5
  # Normalised over the real columns only: unit root mean square per row.
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(np.asarray(out)), axis=-1)), 1.0,
                             rtol=1e-4)


@pytest.mark.parametrize('x_shape, hidden, block_m, block_n, block_k', [
    ((3, 25, 48), 40, 16, 16, 32),  # Ragged rows, input features and output columns.
    ((32, 32), 32, 16, 32, 32),  # Whole tiles.
])
def test_swiglu_matches_its_reference_in_float32(x_shape, hidden, block_m, block_n, block_k):
  x, w = _arrays(1, x_shape, (x_shape[-1], 2 * hidden))
  out = fused_block.matmul_swiglu(x, w, block_m=block_m, block_n=block_n, block_k=block_k,
                                  interpret=True)
  expected = fused_block.matmul_swiglu_reference(x, w)
  assert out.shape == x_shape[:-1] + (hidden,) and out.dtype == jnp.float32
  assert _relative_error(out, expected) < 1e-5


@pytest.mark.parametrize('dtype, tolerance', [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)])
def test_qkv_rope_matches_its_reference(dtype, tolerance):
  # 21 rows (ragged for block_m 16), in 48 (ragged for block_k 32), 2 heads of 32.
  x, w = _arrays(12, (3, 7, 48), (48, 3 * 64), dtype=dtype)
  cos, sin = layers.rope_tables(7, 32, 10000.0)
  out = fused_block.matmul_qkv_rope(x, w, cos, sin, block_m=16, block_k=32, interpret=True)
  expected = jax.jit(fused_block.matmul_qkv_rope_reference)(x, w, cos, sin)
  for got, want in zip(out, expected):
    assert got.shape == (3, 7, 2, 32) and got.dtype == dtype
    assert _relative_error(got, want) < tolerance


def test_bfloat16_rounds_like_the_reference():
  x, w, residual = _arrays(2, (3, 25, 48), (48, 40), (3, 25, 40), jnp.bfloat16)
  reference = jax.jit(fused_block.matmul_residual_rms_norm_reference, static_argnums=3)
  out = fused_block.matmul_residual_rms_norm(x, w, residual, _EPS, block_m=16, block_k=32,
                                             interpret=True)
  assert out.dtype == jnp.bfloat16
  # Same rounding points, other summation order: within a few bfloat16 ulps (2^-8).
  assert _relative_error(out, reference(x, w, residual, _EPS)) < 1e-2
  x, w = _arrays(3, (3, 25, 48), (48, 80), dtype=jnp.bfloat16)
  out = fused_block.matmul_swiglu(x, w, block_m=16, block_n=16, block_k=32, interpret=True)
  assert out.dtype == jnp.bfloat16
  assert _relative_error(out, jax.jit(fused_block.matmul_swiglu_reference)(x, w)) < 1e-2


def test_references_are_the_blocks_formulation():
  """The references compute what `layers.Block`'s modules compute (same operations)."""
  x, w, residual = _arrays(4, (2, 5, 16), (16, 16), (2, 5, 16))
  linear = layers.Linear(16, jnp.float32).apply({'params': {'kernel': w}}, x)
  np.testing.assert_array_equal(
      fused_block.matmul_residual_rms_norm_reference(x, w, residual, _EPS),
      layers.rms_norm(residual + linear, _EPS))
  x, w = _arrays(5, (2, 5, 16), (16, 64))
  gate, up = layers.Linear(64, jnp.float32, splits=2).apply({'params': {'kernel': w}}, x)
  np.testing.assert_array_equal(fused_block.matmul_swiglu_reference(x, w),
                                jax.nn.silu(gate) * up)
  x, w = _arrays(13, (2, 5, 16), (16, 3 * 64))
  cos, sin = layers.rope_tables(5, 32, 10000.0)
  qkv = layers.Linear(3 * 64, jnp.float32, splits=3).apply({'params': {'kernel': w}}, x)
  query, key, value = (t.reshape(2, 5, 2, 32) for t in qkv)
  for got, want in zip(fused_block.matmul_qkv_rope_reference(x, w, cos, sin),
                       (layers.apply_rope(query, cos, sin), layers.apply_rope(key, cos, sin),
                        value)):
    np.testing.assert_array_equal(got, want)


def test_bad_shapes_and_tiles_are_refused():
  x, w, residual = _arrays(6, (2, 8, 32), (32, 16), (2, 8, 16))
  norm = functools.partial(fused_block.matmul_residual_rms_norm, eps=_EPS, interpret=True)
  with pytest.raises(ValueError, match=r'matmul_residual_rms_norm: w \(16, 16\) does not fit '
                                       r'x \(2, 8, 32\)'):
    norm(x, w[:16], residual)
  with pytest.raises(ValueError, match=r'residual \(2, 8, 32\) float32 must have .*\(2, 8, 16\)'):
    norm(x, w, x)
  with pytest.raises(ValueError, match=r'residual .* bfloat16 must have'):
    norm(x, w, residual.astype(jnp.bfloat16))
  with pytest.raises(ValueError, match=r'w \(32, 16\) does not fit x \(32,\)'):
    norm(x[0, 0], w, residual[0, 0])
  with pytest.raises(ValueError, match=r'block_m \(24\) must be a power of two'):
    norm(x, w, residual, block_m=24)
  with pytest.raises(ValueError, match=r'block_k \(8\) must be a power of two, at least 16'):
    norm(x, w, residual, block_k=8)
  with pytest.raises(ValueError, match=r'matmul_swiglu: w_gate_up \(32, 33\) must have an even'):
    fused_block.matmul_swiglu(x, jnp.zeros((32, 33)), interpret=True)
  with pytest.raises(ValueError, match=r'matmul_swiglu: w_gate_up \(16, 32\) does not fit'):
    fused_block.matmul_swiglu(x, jnp.zeros((16, 32)), interpret=True)
  with pytest.raises(ValueError, match=r'matmul_swiglu: block_n \(48\) must be a power of two'):
    fused_block.matmul_swiglu(x, jnp.zeros((32, 32)), block_n=48, interpret=True)
  with pytest.raises(ValueError, match=r'x must be floating point, got int32'):
    fused_block.matmul_swiglu(x.astype(jnp.int32), jnp.zeros((32, 32)), interpret=True)
  cos, sin = layers.rope_tables(8, 32, 10000.0)
  qkv = functools.partial(fused_block.matmul_qkv_rope, interpret=True)
  with pytest.raises(ValueError, match=r'matmul_qkv_rope: x \(8, 32\) must be \[batch, seq'):
    qkv(x[0], jnp.zeros((32, 96)), cos, sin)
  with pytest.raises(ValueError, match=r'cos \(7, 32\) and sin \(8, 32\) must both be'):
    qkv(x, jnp.zeros((32, 96)), cos[:7], sin)
  with pytest.raises(ValueError, match=r'w_qkv \(32, 64\) must have 3 x heads x head_dim'):
    qkv(x, jnp.zeros((32, 64)), cos, sin)
  with pytest.raises(ValueError, match=r'head_dim / 2 \(8\) must be a power of two'):
    small_cos, small_sin = layers.rope_tables(8, 16, 10000.0)
    qkv(x, jnp.zeros((32, 96)), small_cos, small_sin)


def test_wrappers_differentiate_like_the_references(interpreted):
  """`layers.fused_*`'s gradients are the references' (never the kernels': forward only)."""
  x, w, residual = _arrays(7, (2, 9, 16), (16, 16), (2, 9, 16))
  _, w_qkv = _arrays(8, (1, 16), (16, 3 * 32))

  def objective(fn):
    """A weighted sum of every output entry (one draw per output shape)."""
    def weighted(*args):
      outs = jax.tree_util.tree_leaves(fn(*args))
      rng = np.random.default_rng(9)
      return sum(jnp.sum(out * jnp.asarray(rng.normal(size=out.shape), jnp.float32))
                 for out in outs)
    return weighted

  for fused, reference, args in [
      (functools.partial(layers.fused_residual_rms_norm, eps=_EPS),
       functools.partial(fused_block.matmul_residual_rms_norm_reference, eps=_EPS),
       (x, w, residual)),
      (layers.fused_swiglu, fused_block.matmul_swiglu_reference, (x, w[:, :32].repeat(2, 1))),
      (layers.fused_qkv_rope, fused_block.matmul_qkv_rope_reference,
       (x, w_qkv, *layers.rope_tables(9, 32, 10000.0))),
  ]:
    argnums = tuple(range(len(args)))
    value, grads = _jit(jax.value_and_grad(objective(fused), argnums))(*args)
    expected_value, expected_grads = _jit(jax.value_and_grad(objective(reference),
                                                             argnums))(*args)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    for grad, expected in zip(grads, expected_grads):
      assert _relative_error(grad, expected) < 1e-5
  assert interpreted == {'matmul_residual_rms_norm': 1, 'matmul_swiglu': 1,
                         'matmul_qkv_rope': 1}


# --- The block and the model ---


def test_block_uses_the_kernels_with_the_same_parameters(interpreted):
  seq, batch, hidden = 6, 3, 64
  h = jnp.asarray(np.random.default_rng(9).normal(size=(batch, seq, hidden)), jnp.float32)
  rope = layers.rope_tables(seq, hidden // 2, 10000.0)
  plain = layers.Block(hidden, 2, 2.0, 'attention', seq, _EPS, jnp.float32, 'xla')
  fused = layers.Block(hidden, 2, 2.0, 'attention', seq, _EPS, jnp.float32, 'xla',
                       fused_block=True)
  params = _jit(plain.init)(jax.random.key(0), h, rope)['params']
  fused_shapes = jax.eval_shape(fused.init, jax.random.key(0), h, rope)['params']
  assert (jax.tree_util.tree_map(jnp.shape, params)
          == jax.tree_util.tree_map(lambda leaf: leaf.shape, fused_shapes))
  interpreted.update(dict.fromkeys(interpreted, 0))
  out = _jit(fused.apply)({'params': params}, h, rope)
  # o_proj and down_proj; gate/up; qkv.
  assert interpreted == {'matmul_residual_rms_norm': 2, 'matmul_swiglu': 1,
                         'matmul_qkv_rope': 1}
  assert _relative_error(out, _jit(plain.apply)({'params': params}, h, rope)) < 1e-5


@pytest.mark.parametrize('sequence_major', [False, True])
def test_mlp_mixer_block_fuses_its_channel_mlp(interpreted, sequence_major):
  """With the MLP mixer only the channel MLP (gate/up, then down_proj with the residual and
  norm) runs as kernels, in either layout; the sequence mixer stays as it was."""
  seq, batch, hidden = 6, 3, 64
  shape = (seq, batch, hidden) if sequence_major else (batch, seq, hidden)
  h = jnp.asarray(np.random.default_rng(8).normal(size=shape), jnp.float32)
  block = functools.partial(layers.Block, hidden, 2, 2.0, 'mlp', seq, _EPS, jnp.float32,
                            sequence_major=sequence_major)
  plain, fused = block(), block(fused_block=True)
  params = _jit(plain.init)(jax.random.key(0), h, None)['params']
  interpreted.update(dict.fromkeys(interpreted, 0))
  out = _jit(fused.apply)({'params': params}, h, None)
  assert interpreted == {'matmul_residual_rms_norm': 1, 'matmul_swiglu': 1,
                         'matmul_qkv_rope': 0}
  assert _relative_error(out, _jit(plain.apply)({'params': params}, h, None)) < 1e-5


def test_config_needs_wide_heads_for_rope(make_tiny_config):
  model_lib.build_model(make_tiny_config(mixer='mlp', fused_block=True, pos_encodings='none'),
                        seq_len=6, vocab_size=5)
  config = make_tiny_config(fused_block=True)  # hidden 16, 2 heads: half a head is 4 wide.
  with pytest.raises(ValueError, match=r'model\.fused_block: with RoPE needs half a head '
                                       r'\(hidden_size / num_heads / 2 = 4\) to be a power'):
    model_lib.build_model(config, seq_len=6, vocab_size=5)
  model_lib.build_model(make_tiny_config(fused_block=True, pos_encodings='learned'), seq_len=6,
                        vocab_size=5)


def _step_results(model, variables, case, differentiated):
  """(logits, q_halt, new carry) and, when differentiated, the gradients of an objective."""
  rows, z_H, z_L, inputs, weights = case

  def loss(params, rows):
    carry, out = model.supervision_step(params, rows, z_H, z_L, inputs,
                                        differentiated=differentiated)
    return jnp.sum(out.logits * weights) + jnp.sum(out.q_halt), (out.logits, out.q_halt, carry)

  fn = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True) if differentiated else loss
  return _jit(fn)(variables['params'], rows)


def _case(model, batch=2):
  rng = np.random.default_rng(10)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  shape = (batch, model.total_len, model.config.hidden_size)
  inputs = jnp.asarray(rng.integers(0, model.vocab_size, (batch, model.seq_len)), jnp.int32)
  return (normal(batch, model.config.puzzle_emb_ndim), normal(*shape), normal(*shape), inputs,
          normal(batch, model.seq_len, model.vocab_size))


def _models(monkeypatch, **overrides):
  """(plain, fused): tiny attention models with the switch off and on, the kernels enabled
  on this backend."""
  monkeypatch.setattr(model_lib, 'FUSED_KERNEL_BACKENDS', (jax.default_backend(),))
  overrides = dict(l_cycles=2, num_layers=1, scan_unroll=1, attention_impl='xla',
                   hidden_size=64, **overrides)
  return conftest.tiny_model(**overrides), conftest.tiny_model(fused_block=True, **overrides)


@pytest.mark.parametrize('variant', [
    {}, {'mixer': 'mlp', 'activation_layout': 'sequence_major', 'pos_encodings': 'learned'}])
def test_model_forward_is_the_same_with_the_switch(interpreted, monkeypatch, variant):
  plain, fused = _models(monkeypatch, h_cycles=2, **variant)
  variables = conftest.random_variables(plain, seed=11)
  case = _case(plain)
  _, forward = _step_results(fused, variables, case, differentiated=False)
  assert interpreted['matmul_residual_rms_norm'] and interpreted['matmul_swiglu']
  assert bool(interpreted['matmul_qkv_rope']) == (plain.config.mixer == 'attention')
  _, expected = _step_results(plain, variables, case, differentiated=False)
  # Logits, q_halt and the new carry (z_H, z_L).
  for got, want in zip(jax.tree_util.tree_leaves(forward), jax.tree_util.tree_leaves(expected)):
    assert _relative_error(got, want) < 1e-5


def test_differentiated_calls_never_use_the_kernels(interpreted, monkeypatch):
  """With one H cycle every network call of a training step is differentiated: the switch
  then changes nothing, bit for bit, in the loss, outputs and gradients."""
  plain, fused = _models(monkeypatch, h_cycles=1)
  variables = conftest.random_variables(plain, seed=11)
  case = _case(plain)
  results = _step_results(fused, variables, case, differentiated=True)
  assert not any(interpreted.values())
  expected = _step_results(plain, variables, case, differentiated=True)
  for got, want in zip(jax.tree_util.tree_leaves(results), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_array_equal(got, want)


def test_switch_off_or_off_gpu_builds_the_xla_program(make_tiny_model):
  """On backends outside FUSED_KERNEL_BACKENDS the switch changes nothing."""
  plain = make_tiny_model(num_layers=1, h_cycles=2, l_cycles=1, hidden_size=64)
  fused = make_tiny_model(num_layers=1, h_cycles=2, l_cycles=1, hidden_size=64,
                          fused_block=True)
  variables = conftest.random_variables(plain, seed=12)
  rows, z_H, z_L, inputs, _ = _case(plain)
  program = lambda model: jax.jit(functools.partial(
      model.supervision_step, differentiated=False)).lower(
          variables['params'], rows, z_H, z_L, inputs).as_text()
  assert model_lib.FUSED_KERNEL_BACKENDS == ('gpu',)
  if jax.default_backend() != 'gpu':
    assert program(fused) == program(plain)


@pytest.mark.parametrize('kernel, args', [
    ('matmul_residual_rms_norm', [(192 * 916, 512), (512, 512), (192 * 916, 512)]),
    ('matmul_swiglu', [(768 * 98, 512), (512, 2 * 1536)]),
    ('matmul_qkv_rope', [(192, 916, 512), (512, 3 * 512), (916, 64), (916, 64)]),
])
def test_lowers_to_a_triton_kernel_for_gpus(kernel, args):
  """Pallas's Triton lowering runs at lowering time, so a CPU can check it for CUDA."""
  dtypes = [jnp.bfloat16, jnp.float32, jnp.bfloat16 if len(args) == 3 else jnp.float32,
            jnp.float32]
  shapes = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in zip(args, dtypes)]
  fn = getattr(fused_block, kernel)
  if kernel == 'matmul_residual_rms_norm':
    fn = functools.partial(fn, eps=_EPS)
  target = '__gpu$xla.gpu.triton'
  exported = export.export(jax.jit(fn), platforms=['cuda'],
                           disabled_checks=[export.DisabledSafetyCheck.custom_call(target)])(
                               *shapes)
  assert target in exported.mlir_module()
  assert all(aval.dtype == jnp.bfloat16 for aval in exported.out_avals)

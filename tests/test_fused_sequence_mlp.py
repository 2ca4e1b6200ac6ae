"""The fused sequence-MLP kernel (Pallas interpreter on CPU) against the XLA formulation."""

import functools

import jax
from jax import export
import jax.numpy as jnp
import numpy as np
import pytest

from tests import kernel_cases
from tiny_recursive import fused_sequence_mlp
from tiny_recursive import layers


_case = kernel_cases.mixer_case
_relative_error = kernel_cases.relative_error


@pytest.mark.parametrize('seq, n, hidden, block_n, block_h', [
    (20, 200, 64, 64, 32),  # Neither seq nor n a multiple of the block: masked rows, columns.
    (97, 256, 128, 128, 64),  # Sudoku's sequence (81 + 16) with a smaller hidden width.
])
def test_matches_the_xla_formulation_in_float32(seq, n, hidden, block_n, block_h):
  t, gate_up, down = _case(seq + n, seq, n, hidden, jnp.float32)
  out = fused_sequence_mlp.fused_forward(t, gate_up, down, 1e-5, block_n=block_n,
                                         block_h=block_h, interpret=True)
  expected = layers.sequence_mixer(t, gate_up, down, 1e-5)
  assert out.shape == expected.shape and out.dtype == expected.dtype
  assert np.isfinite(np.asarray(out)).all()
  assert _relative_error(out, expected) < 1e-5
  # Every column's norm is over the real rows only: unit root mean square per column.
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(np.asarray(out)), axis=0)), 1.0,
                             rtol=1e-3)


def test_bfloat16_rounds_like_xla():
  t, gate_up, down = _case(1, 20, 192, 64, jnp.bfloat16)
  out = fused_sequence_mlp.fused_forward(t, gate_up, down, 1e-5, block_n=64, block_h=32,
                                         interpret=True)
  expected = layers.sequence_mixer(t, gate_up, down, 1e-5)
  assert out.dtype == jnp.bfloat16
  # Same rounding points, other summation order: within a few bfloat16 ulps (2^-8).
  assert _relative_error(out, expected) < 1e-2


def test_bad_shapes_are_refused():
  t, gate_up, down = _case(2, 20, 64, 64, jnp.float32)
  with pytest.raises(ValueError, match='do not fit t'):
    fused_sequence_mlp.fused_forward(t, gate_up[:, :64], down, 1e-5, interpret=True)
  with pytest.raises(ValueError, match=r'block_h \(48\) must divide the hidden width \(64\)'):
    fused_sequence_mlp.fused_forward(t, gate_up, down, 1e-5, block_h=48, interpret=True)


def test_gradient_is_the_xla_formulations(monkeypatch):
  monkeypatch.setattr(fused_sequence_mlp, 'fused_forward',
                      functools.partial(fused_sequence_mlp.fused_forward, block_n=32,
                                        block_h=32, interpret=True))
  t, gate_up, down = _case(3, 20, 96, 64, jnp.float32)
  weights = jnp.asarray(np.random.default_rng(4).normal(size=t.shape), jnp.float32)

  def objective(mixer):
    return lambda *args: jnp.sum(weights * mixer(*args, 1e-5))

  fused = jax.value_and_grad(objective(layers.fused_sequence_mixer), argnums=(0, 1, 2))
  plain = jax.value_and_grad(objective(layers.sequence_mixer), argnums=(0, 1, 2))
  (value, grads), (expected_value, expected_grads) = fused(t, gate_up, down), plain(
      t, gate_up, down)
  np.testing.assert_allclose(value, expected_value, rtol=1e-5)
  for grad, expected in zip(grads, expected_grads):
    assert _relative_error(grad, expected) < 1e-5


def test_block_uses_the_kernel_with_the_same_parameters(monkeypatch):
  monkeypatch.setattr(fused_sequence_mlp, 'fused_forward',
                      functools.partial(fused_sequence_mlp.fused_forward, block_n=32,
                                        block_h=32, interpret=True))
  seq, batch, hidden = 10, 4, 16
  h = jnp.asarray(np.random.default_rng(5).normal(size=(seq, batch, hidden)), jnp.float32)
  plain = layers.Block(hidden, 1, 4.0, 'mlp', seq, 1e-5, jnp.float32, sequence_major=True)
  fused = layers.Block(hidden, 1, 4.0, 'mlp', seq, 1e-5, jnp.float32, sequence_major=True,
                       fused_sequence_mlp=True)
  params = plain.init(jax.random.key(0), h, None)['params']
  calls = []
  real_kernel = fused_sequence_mlp.fused_forward
  monkeypatch.setattr(fused_sequence_mlp, 'fused_forward',
                      lambda *a, **k: calls.append(1) or real_kernel(*a, **k))
  out = fused.apply({'params': params}, h, None)
  assert calls  # The kernel ran.
  assert _relative_error(out, plain.apply({'params': params}, h, None)) < 1e-5


def test_lowers_to_a_triton_kernel_for_gpus():
  """Pallas's Triton lowering runs at lowering time, so a CPU can check it for CUDA."""
  t = jax.ShapeDtypeStruct((97, 768 * 512), jnp.bfloat16)
  gate_up = jax.ShapeDtypeStruct((97, 2 * 512), jnp.float32)
  down = jax.ShapeDtypeStruct((512, 97), jnp.float32)
  target = '__gpu$xla.gpu.triton'
  fn = jax.jit(lambda *args: fused_sequence_mlp.fused_forward(*args, 1e-5))
  exported = export.export(fn, platforms=['cuda'],
                           disabled_checks=[export.DisabledSafetyCheck.custom_call(target)])(
                               t, gate_up, down)
  assert target in exported.mlir_module()
  assert exported.out_avals[0].shape == (97, 768 * 512)

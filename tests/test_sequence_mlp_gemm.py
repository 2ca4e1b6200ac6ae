"""The Hopper sequence-MLP kernel (Mosaic GPU interpreter on CPU) against the XLA formulation."""

import functools

import jax
from jax import export
import jax.numpy as jnp
import numpy as np
import pytest

from tests import kernel_cases
from tiny_recursive import fused_sequence_mlp
from tiny_recursive import layers
from tiny_recursive import sequence_mlp_gemm


_case = kernel_cases.mixer_case
_relative_error = kernel_cases.relative_error


@pytest.mark.parametrize('seq, n, tiling', [
    # Sudoku's 97 positions (staged through the row-major buffer, padded to 128 on chip),
    # two tiles per block: the chained pipeline starts and stops, the warpgroups take turns.
    (97, 512, sequence_mlp_gemm.Tiling()),
    # A whole number of rows, a pipeline per tile, one tile per block.
    (128, 256, sequence_mlp_gemm.Tiling(chained=False)),
])
def test_matches_the_float32_mixer(seq, n, tiling):
  t, gate_up, down = _case(seq, seq, n, 128)
  out = sequence_mlp_gemm.fused_forward(t, gate_up, down, 1e-5, tiling=tiling, num_sms=2,
                                        interpret=True)
  assert out.shape == t.shape and out.dtype == jnp.bfloat16
  assert np.isfinite(np.asarray(out, np.float32)).all()
  expected = layers.sequence_mixer(t.astype(jnp.float32), gate_up, down, 1e-5)
  error = _relative_error(out, expected)
  # bfloat16 rounding (about 4e-3); no farther from float32 than XLA's own bfloat16 path.
  assert error < 5e-3
  assert error <= _relative_error(layers.sequence_mixer(t, gate_up, down, 1e-5), expected)


def test_padded_sequence_sizes():
  assert [sequence_mlp_gemm.padded_seq(s) for s in (20, 64, 97, 128, 916)] == [
      64, 64, 128, 128, 960]
  assert sequence_mlp_gemm.supported(97, 768 * 512, 512)
  assert not sequence_mlp_gemm.supported(97, 768 * 512 + 64, 512)  # Half a block of columns.
  assert not sequence_mlp_gemm.supported(97, 768 * 512, 96)  # Hidden not in chunks of 64.
  assert not sequence_mlp_gemm.supported(916, 192 * 512, 1024)  # ARC's length: too long.


def test_bad_shapes_are_refused():
  t, gate_up, down = _case(0, 97, 512, 128)
  with pytest.raises(ValueError, match='do not fit t'):
    sequence_mlp_gemm.fused_forward(t, gate_up[:, :-2], down, 1e-5, interpret=True)
  with pytest.raises(ValueError, match=r'n 448, hidden 128 do not fit'):
    sequence_mlp_gemm.fused_forward(t[:, :448], gate_up, down, 1e-5, interpret=True)


def test_gradient_is_the_xla_formulations(monkeypatch):
  monkeypatch.setattr(sequence_mlp_gemm, 'fused_forward',
                      functools.partial(sequence_mlp_gemm.fused_forward, num_sms=1,
                                        tiling=sequence_mlp_gemm.Tiling(chained=False),
                                        interpret=True))
  t, gate_up, down = _case(3, 20, 128, 128, jnp.float32)
  weights = jnp.asarray(np.random.default_rng(4).normal(size=t.shape), jnp.float32)

  def objective(mixer):
    return lambda *args: jnp.sum(weights * mixer(*args))

  fused = functools.partial(layers.fused_sequence_mixer, eps=1e-5, kernel='mosaic')
  plain = functools.partial(layers.sequence_mixer, eps=1e-5)
  (value, grads), (expected_value, expected_grads) = (
      jax.value_and_grad(objective(f), argnums=(0, 1, 2))(t, gate_up, down)
      for f in (fused, plain))
  np.testing.assert_allclose(value, expected_value, rtol=1e-5)
  for grad, expected in zip(grads, expected_grads):
    assert _relative_error(grad, expected) < 1e-5
  with pytest.raises(ValueError, match=r"model\.sequence_mlp_kernel: expected one of"):
    layers.fused_sequence_mixer(t, gate_up, down, 1e-5, kernel='cuda')


def test_mixer_uses_the_kernel_it_names_and_falls_back_on_other_shapes(monkeypatch):
  calls = []

  def recording(name, kernel, **options):
    def run(*args, **kwargs):
      calls.append(name)
      return kernel(*args, **kwargs, **options)
    return run

  monkeypatch.setattr(sequence_mlp_gemm, 'fused_forward', recording(
      'mosaic', sequence_mlp_gemm.fused_forward, num_sms=1, interpret=True,
      tiling=sequence_mlp_gemm.Tiling(chained=False)))
  monkeypatch.setattr(fused_sequence_mlp, 'fused_forward', recording(
      'triton', fused_sequence_mlp.fused_forward, interpret=True))
  seq = 20
  mixer = lambda **kw: layers.SequenceMixer(seq, 4.0, 1e-5, **kw)
  t, _, _ = _case(5, seq, 256, 64, jnp.float32)
  params = mixer().init(jax.random.key(0), t)
  expected = mixer().apply(params, t)
  out = mixer(fused=True, kernel='mosaic').apply(params, t)
  assert calls == ['mosaic'] and _relative_error(out, expected) < 1e-5
  calls.clear()
  mixer(fused=True, kernel='mosaic').apply(params, t[:, :192])  # Half a block of columns.
  assert calls == ['triton']


def test_lowers_to_a_mosaic_gpu_kernel_for_gpus():
  """The Mosaic GPU lowering runs at lowering time, so a CPU can check it for CUDA, including
  that the default tiling fits a Hopper block's shared memory at Sudoku's shapes."""
  t = jax.ShapeDtypeStruct((97, 768 * 512), jnp.bfloat16)
  gate_up = jax.ShapeDtypeStruct((97, 2 * 512), jnp.float32)
  down = jax.ShapeDtypeStruct((512, 97), jnp.float32)
  fn = jax.jit(lambda *args: sequence_mlp_gemm.fused_forward(*args, 1e-5, num_sms=132))
  exported = export.export(fn, platforms=['cuda'])(t, gate_up, down)
  # Named, so that profiles tell the two Hopper kernels apart.
  assert 'sequence_mlp_hopper_mosaic_gpu' in exported.mlir_module()
  assert exported.out_avals[0].shape == (97, 768 * 512)

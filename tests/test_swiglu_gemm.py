"""The fused SwiGLU projection kernel (Mosaic GPU interpreter on CPU) against XLA's."""

import os
import pathlib
import subprocess
import sys

import jax
from jax import export
import jax.numpy as jnp
import numpy as np
import pytest

from tests import kernel_cases
from tiny_recursive import hopper_kernels
from tiny_recursive import layers
from tiny_recursive import swiglu_gemm

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _case(seed, rows, width, hidden):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(0.2, 1.3, (rows, width)), jnp.bfloat16)
  gate_up = jnp.asarray(rng.normal(0.0, width ** -0.5, (width, 2 * hidden)), jnp.float32)
  return x, gate_up


def _float32_reference(x, gate_up):
  hidden = gate_up.shape[1] // 2
  x = x.astype(jnp.float32)
  return jax.nn.silu(x @ gate_up[:, :hidden]) * (x @ gate_up[:, hidden:])


_relative_error = kernel_cases.relative_error


@pytest.mark.parametrize('rows, width, hidden, tiling, num_sms', [
    # 4 x 2 tiles over 4 blocks: two per block, the chained pipeline starts and stops.
    (512, 256, 256, swiglu_gemm.Tiling(), 4),
    (512, 256, 256, swiglu_gemm.Tiling(chained=False), 4),
    # 3 x 3 tiles over 4 blocks: uneven tiles per block, two pipeline stages.
    (384, 256, 384, swiglu_gemm.Tiling(stages=2), 4),
    (256, 128, 128, swiglu_gemm.Tiling(block_m=128, block_n=64, stages=2), 3),
])
def test_matches_the_float32_product(rows, width, hidden, tiling, num_sms):
  x, gate_up = _case(rows + hidden, rows, width, hidden)
  out = swiglu_gemm.swiglu_projection(x, gate_up, tiling=tiling, num_sms=num_sms,
                                      interpret=True)
  assert out.shape == (rows, hidden) and out.dtype == jnp.bfloat16
  expected = _float32_reference(x, gate_up)
  # bfloat16 operands and output (about 4e-3); XLA's own path is farther (its rounding of
  # the intermediate products), and every element is written (no NaN, no stale zeros).
  assert np.isfinite(np.asarray(out, np.float32)).all()
  error = _relative_error(out, expected)
  assert error < 6e-3
  assert error <= _relative_error(layers.swiglu_projection(x, gate_up), expected)
  assert np.count_nonzero(np.asarray(out, np.float32) == 0) < out.size // 100


def test_interleaved_weight_layout():
  gate_up = jnp.arange(2 * 8, dtype=jnp.float32).reshape(1, 16)  # gate 0..7, up 8..15
  np.testing.assert_array_equal(swiglu_gemm.interleave_gate_up(gate_up, 4)[0],
                                [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15])


def test_unsupported_shapes():
  tiling = swiglu_gemm.Tiling()
  assert swiglu_gemm.supported(768 * 97, 512, 1536, tiling)  # Sudoku
  assert swiglu_gemm.supported(192 * 916, 512, 1536, tiling)  # ARC, Maze
  assert not swiglu_gemm.supported(100, 512, 1536, tiling)  # rows not a multiple of 128
  assert not swiglu_gemm.supported(256, 96, 1536, tiling)  # width not a multiple of 64
  assert not swiglu_gemm.supported(256, 512, 1600, tiling)  # hidden not a multiple of 128
  assert not swiglu_gemm.supported(128, 512, 128, tiling)  # one tile: a chain needs two
  assert not swiglu_gemm.supported(256, 192, 256, tiling)  # 3 steps, not a multiple of 4
  assert swiglu_gemm.supported(256, 192, 256, swiglu_gemm.Tiling(chained=False, stages=3))
  x, gate_up = _case(0, 100, 128, 128)
  with pytest.raises(ValueError, match=r'rows 100, width 128, hidden 128 do not fit'):
    swiglu_gemm.swiglu_projection(x, gate_up, interpret=True)
  with pytest.raises(ValueError, match=r'kernel \(64, 256\) does not fit x \(100, 128\)'):
    swiglu_gemm.swiglu_projection(x, gate_up[:64], interpret=True)


def test_not_available_on_cpu():
  assert jax.default_backend() == 'cpu' and not hopper_kernels.available()


def _interpreted(monkeypatch):
  real = swiglu_gemm.swiglu_projection
  calls = []

  def kernel(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs, num_sms=2, interpret=True)

  monkeypatch.setattr(swiglu_gemm, 'swiglu_projection', kernel)
  return calls


def test_gradient_is_the_xla_formulations(monkeypatch):
  _interpreted(monkeypatch)
  x, gate_up = _case(3, 256, 256, 128)
  weights = jnp.asarray(np.random.default_rng(4).normal(size=(256, 128)), jnp.float32)

  def objective(projection):
    return lambda *args: jnp.sum(weights * projection(*args).astype(jnp.float32))

  fused = jax.grad(objective(layers.fused_swiglu_projection), argnums=(0, 1))(x, gate_up)
  plain = jax.grad(objective(layers.swiglu_projection), argnums=(0, 1))(x, gate_up)
  for grad, expected in zip(fused, plain):
    assert grad.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(grad, np.float32), np.asarray(expected, np.float32))


def test_swiglu_uses_the_kernel_with_the_same_parameters(monkeypatch):
  calls = _interpreted(monkeypatch)
  x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 64, 256)), jnp.bfloat16)
  plain = layers.SwiGLU(256, 1.5)
  fused = layers.SwiGLU(256, 1.5, fused=True)
  params = plain.init(jax.random.key(0), x)
  assert (jax.tree.map(jnp.shape, fused.init(jax.random.key(0), x))
          == jax.tree.map(jnp.shape, params))
  out = fused.apply(params, x)
  assert calls  # The kernel ran: 128 rows, width 256, hidden 256 fit the default tiling.
  expected = plain.apply(params, x)
  assert out.shape == expected.shape and out.dtype == expected.dtype
  assert _relative_error(out, expected) < 2e-2
  # Shapes the kernel does not take run in XLA: the same program as without the switch.
  calls.clear()
  odd = x[:, :5]
  np.testing.assert_array_equal(np.asarray(fused.apply(params, odd), np.float32),
                                np.asarray(plain.apply(params, odd), np.float32))
  assert not calls


def test_kernels_need_a_recent_jax():
  assert [hopper_kernels.jax_version_supported(v) for v in
          ('0.6.2', '0.9.2', '0.10.2', '0.11.2', '1.0.0', 'dev')] == [
              False, False, True, True, True, False]


def test_lowers_to_a_mosaic_gpu_kernel_for_gpus():
  """The Mosaic GPU lowering runs at lowering time, so a CPU can check it for CUDA, including
  that the default tiling fits a Hopper block's shared memory at Sudoku's shapes."""
  x = jax.ShapeDtypeStruct((768 * 97, 512), jnp.bfloat16)
  gate_up = jax.ShapeDtypeStruct((512, 2 * 1536), jnp.float32)
  fn = jax.jit(lambda *args: swiglu_gemm.swiglu_projection(*args, num_sms=132))
  exported = export.export(fn, platforms=['cuda'])(x, gate_up)
  assert 'swiglu_projection_hopper_mosaic_gpu' in exported.mlir_module()
  assert exported.out_avals[0].shape == (768 * 97, 1536)
  too_large = swiglu_gemm.Tiling(block_m=128, block_n=64)  # 256 KB of shared memory
  fn = jax.jit(lambda *args: swiglu_gemm.swiglu_projection(*args, tiling=too_large,
                                                           num_sms=132))
  with pytest.raises(ValueError, match='exceeds available shared memory'):
    export.export(fn, platforms=['cuda'])(x, gate_up)


_PER_DEVICE_SCRIPT = """
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from tiny_recursive import model
mesh = jax.make_mesh((2,), ('data',))
seen = []
def probe(x):
  seen.append(model.traced_per_device())
  return x
x = jax.device_put(jnp.ones(4), NamedSharding(mesh, P('data')))
jax.jit(probe)(x)
jax.jit(jax.shard_map(probe, mesh=mesh, in_specs=P('data'), out_specs=P('data')))(x)
print(seen)
"""


@pytest.mark.slow
def test_fused_kernels_only_where_the_trace_sees_one_devices_rows():
  assert model_traced_per_device_on_one_device()
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  result = subprocess.run([sys.executable, '-c', _PER_DEVICE_SCRIPT], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  # A jit over two devices: no; inside shard_map (the train step): yes.
  assert result.stdout.strip().splitlines()[-1] == '[False, True]'


def model_traced_per_device_on_one_device():
  from tiny_recursive import model  # pylint: disable=g-import-not-at-top
  return jax.device_count() == 1 and model.traced_per_device()

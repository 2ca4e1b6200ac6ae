r"""Times the step's largest GEMM shapes four ways: XLA in bfloat16, FP8, and Pallas' Mosaic GPU
matmul; the question is which route could make the products themselves faster.

  python -m experiments.benchmark_gemm [--reps=5] [--shapes=M:K:N,...]

Rows per shape (M x K -> N; by default the Sudoku channel MLP's gate/up and down projections
and its attention's qkv projection at batch 768, ARC's gate/up at batch 192):
  xla_bf16           `jnp.dot` of bfloat16 operands (cuBLAS).
  fp8_raw            operands already in float8_e4m3fn, bfloat16 output: the FP8 GEMM alone.
  fp8_quantised      per-tensor scaling of bfloat16 operands to float8_e4m3fn in the same
                     function (written as XLA's FP8 rewrite expects), bfloat16 output.
  fp8_quantised_f32  the same with a float32 FP8 product, scaled afterwards.
  mosaic BM:BN:BK:S:WG  `jax.experimental.pallas.ops.gpu.hopper_matmul_mgpu` (Hopper only).
Time per call as `timing.rotating_median_ms` (three input sets); error: relative L2
distance to the float32 product.
"""

import dataclasses

from absl import flags
import jax
import jax.numpy as jnp

from experiments import cli
from experiments import timing

_REPS = flags.DEFINE_integer('reps', 5, 'Timed runs per variant (median reported).')
_SHAPE_FLAG = flags.DEFINE_list('shapes', [], 'M:K:N products instead of the step\'s shapes.')
_STEP_SHAPES = {  # name: (M, K, N)
    'sudoku_gate_up': (768 * 97, 512, 3072),
    'sudoku_down': (768 * 97, 1536, 512),
    'sudoku_qkv': (768 * 97, 512, 1536),
    'arc_gate_up': (192 * 916, 512, 3072),
}
_FP8 = jnp.float8_e4m3fn
_FP8_MAX = 448.0
_MOSAIC_TILES = ((128, 128, 64, 4, 'N'), (128, 128, 64, 4, 'M'), (64, 128, 64, 4, 'N'),
                 (128, 64, 64, 4, 'M'))


def _quantise(x):
  scale = jnp.max(jnp.abs(x)).astype(jnp.float32) / _FP8_MAX
  return (x.astype(jnp.float32) / scale).astype(_FP8), scale


def fp8_quantised(a, b):
  """Per-tensor FP8 product in the dequantise-then-dot form XLA rewrites to an FP8 GEMM."""
  (a8, a_scale), (b8, b_scale) = _quantise(a), _quantise(b)
  return jnp.dot(a8.astype(jnp.bfloat16) * a_scale.astype(jnp.bfloat16),
                 b8.astype(jnp.bfloat16) * b_scale.astype(jnp.bfloat16))


def fp8_quantised_f32(a, b):
  (a8, a_scale), (b8, b_scale) = _quantise(a), _quantise(b)
  out = jax.lax.dot_general(a8, b8, (((1,), (0,)), ((), ())),
                            preferred_element_type=jnp.float32)
  return (out * (a_scale * b_scale)).astype(jnp.bfloat16)


def _variants():
  variants = {
      'xla_bf16': jax.jit(jnp.dot),
      'fp8_raw': jax.jit(lambda a, b: jax.lax.dot_general(
          a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.bfloat16)),
      'fp8_quantised': jax.jit(fp8_quantised),
      'fp8_quantised_f32': jax.jit(fp8_quantised_f32),
  }
  try:
    from jax.experimental.pallas.ops.gpu import hopper_matmul_mgpu as mosaic  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f'no Mosaic GPU matmul: {e}')
    return variants
  fields = {field.name for field in dataclasses.fields(mosaic.TuningConfig)}
  for tile_m, tile_n, tile_k, stages, wg in _MOSAIC_TILES:
    options = dict(tile_m=tile_m, tile_n=tile_n, tile_k=tile_k, max_concurrent_steps=stages)
    if 'wg_dimension' in fields:
      options['wg_dimension'] = getattr(mosaic.MatmulDimension, wg)
    config = mosaic.TuningConfig(**options)
    variants[f'mosaic {tile_m}:{tile_n}:{tile_k}:{stages}:{wg}'] = jax.jit(
        lambda a, b, config=config: mosaic.matmul(a, b, None, config))
  return variants


def main(argv):
  del argv
  print(jax.devices()[0].device_kind, flush=True)
  variants = _variants()
  shapes = _STEP_SHAPES
  if _SHAPE_FLAG.value:
    try:
      shapes = {text: tuple(int(v) for v in text.split(':')) for text in _SHAPE_FLAG.value}
    except ValueError:
      raise ValueError(f'--shapes: expected M:K:N entries, got {_SHAPE_FLAG.value}.') from None
    if any(len(shape) != 3 for shape in shapes.values()):
      raise ValueError(f'--shapes: expected M:K:N entries, got {_SHAPE_FLAG.value}.')
  rows = []
  for shape_name, (m, k, n) in shapes.items():
    inputs = []
    for i in range(3):
      key_a, key_b = jax.random.split(jax.random.key(i))
      inputs.append((jax.random.normal(key_a, (m, k), jnp.bfloat16),
                     (jax.random.normal(key_b, (k, n)) * k ** -0.5).astype(jnp.bfloat16)))
    reference = jnp.dot(inputs[0][0].astype(jnp.float32), inputs[0][1].astype(jnp.float32),
                        precision='highest')
    for name, fn in variants.items():
      args = [(a.astype(_FP8), b.astype(_FP8)) for a, b in inputs] if name == 'fp8_raw' else inputs
      rows.append(timing.report_calls(shape_name, name, fn, args, reference, 2 * m * k * n,
                                      _REPS.value))
  timing.print_table(rows)


if __name__ == '__main__':
  cli.run(main)

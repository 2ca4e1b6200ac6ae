r"""Times the MLP mixer of one block in XLA and as kernels, and checks each against float32.

  python -m experiments.benchmark_sequence_mlp [--batch=768 --hidden=512 --seq=97] \
      [--tiles=64:64:4:1,32:64:4:1] [--mosaic_tilings=64:64:2:c,64:64:3:u]

Rows: `transposed` (the default layout's branch: transpose, pad, SwiGLU, norm, transpose
back), `sequence_major` (`layers.sequence_mixer` in XLA), `fused BN:BH:W:S` (the Pallas
Triton kernel with block_n, block_h, num_warps, num_stages) and `mosaic BN:BH:S:C` (the Hopper
kernel, `sequence_mlp_gemm.Tiling`: block_n, block_h, stages, and c for a chained pipeline or
u for one per tile). Each is applied 10 times in a chain
inside one jitted function, after a warm-up; the time per application is the median of
--reps runs. The error is the relative L2 distance to `layers.sequence_mixer` in float32
(bfloat16 rounding is about 4e-3). A GPU is needed for the fused rows, a Hopper GPU for the
mosaic rows.
"""

import functools
import json

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import cli
from experiments import timing
from tiny_recursive import fused_sequence_mlp
from tiny_recursive import layers
from tiny_recursive import sequence_mlp_gemm

_BATCH = flags.DEFINE_integer('batch', 768, 'Batch size.')
_HIDDEN = flags.DEFINE_integer('hidden', 512, 'Hidden size of the model.')
_SEQ = flags.DEFINE_integer('seq', 97, 'Sequence length (puzzle positions included).')
_EXPANSION = flags.DEFINE_float('expansion', 4.0, 'SwiGLU expansion.')
_TILES = flags.DEFINE_list('tiles', ['64:64:4:1', '32:64:4:1', '64:32:4:1', '64:128:4:1',
                                     '64:64:2:1', '64:64:4:2', '32:32:2:1'],
                           'Fused-kernel variants, block_n:block_h:num_warps:num_stages.')
_MOSAIC_TILINGS = flags.DEFINE_list('mosaic_tilings', ['64:64:2:c', '64:64:2:u', '64:64:3:u'],
                                    'Hopper-kernel tilings, block_n:block_h:stages:c|u.')
_REPS = flags.DEFINE_integer('reps', 20, 'Timed runs per variant (median reported).')
_CHAIN = 10
_EPS = 1e-5


def _transposed_mixer(t, gate_up, down, seq, expansion):
  """The default layout's branch of layers.Block, on the same [seq, n] tensor."""
  block = layers.SwiGLU(seq, expansion, t.dtype, layers.find_multiple(seq, 16))
  batch_major = t.reshape(seq, _BATCH.value, -1).transpose(1, 2, 0)  # [batch, hidden, seq]
  padded = jnp.pad(batch_major, ((0, 0), (0, 0), (0, block.padded_width - seq)))
  params = {'gate_up_proj': {'kernel': gate_up}, 'down_proj': {'kernel': down}}
  mixed = layers.rms_norm(padded + block.apply({'params': params}, padded), _EPS, count=seq)
  return mixed[..., :seq].transpose(2, 0, 1).reshape(seq, -1)


def main(argv):
  del argv
  seq, hidden = _SEQ.value, layers.swiglu_hidden_width(_SEQ.value, _EXPANSION.value)
  n = _BATCH.value * _HIDDEN.value
  rng = np.random.default_rng(0)
  t32 = jnp.asarray(rng.normal(0.0, 1.0, (seq, n)), jnp.float32)
  t32 = layers.rms_norm(t32, _EPS, axis=0)  # Inputs as a block sees them: unit RMS per column.
  gate_up = jnp.asarray(rng.normal(0.0, seq ** -0.5, (seq, 2 * hidden)), jnp.float32)
  down = jnp.asarray(rng.normal(0.0, hidden ** -0.5, (hidden, seq)), jnp.float32)
  reference = jax.jit(layers.sequence_mixer, static_argnums=3)(t32, gate_up, down, _EPS)
  t = t32.astype(jnp.bfloat16)

  variants = {
      'transposed': lambda x: _transposed_mixer(x, gate_up, down, seq, _EXPANSION.value),
      'sequence_major': lambda x: layers.sequence_mixer(x, gate_up, down, _EPS),
  }
  for tile in _TILES.value:
    block_n, block_h, warps, stages = (int(v) for v in tile.split(':'))
    variants[f'fused {tile}'] = functools.partial(
        lambda x, **kw: fused_sequence_mlp.fused_forward(x, gate_up, down, _EPS, **kw),
        block_n=block_n, block_h=block_h, num_warps=warps, num_stages=stages)

  for text in _MOSAIC_TILINGS.value:
    sizes, chained = timing.parse_tiling(text, 'mosaic_tilings', 'BN:BH:S')
    tiling = sequence_mlp_gemm.Tiling(*sizes, chained)
    variants[f'mosaic {text}'] = functools.partial(
        lambda x, **kw: sequence_mlp_gemm.fused_forward(x, gate_up, down, _EPS, **kw),
        tiling=tiling)

  flop = 2 * 3 * seq * hidden * n
  print(f'seq {seq}, n {n} (batch {_BATCH.value} x hidden {_HIDDEN.value}), hidden {hidden}, '
        f'{jax.devices()[0].device_kind}; {flop / 1e9:.0f} GFLOP per application')
  rows = []
  for name, fn in variants.items():
    rows.append({'variant': name,
                 **timing.measure(fn, t, reference, flop, _CHAIN, _REPS.value)})
    print(json.dumps(rows[-1]), flush=True)
  print('\nvariant | ms per application | TFLOP/s | relative error')
  for row in rows:
    print(f"{row['variant']} | {row.get('ms', row.get('failed'))} | {row.get('tflops', '')} | "
          f"{row.get('rel_error', '')}")


if __name__ == '__main__':
  cli.run(main)

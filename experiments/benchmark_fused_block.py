r"""Times the attention block's projections with their epilogues in XLA and as the fused kernels
(tiny_recursive/fused_block.py), and checks each against a float32 reference.

  python -m experiments.benchmark_fused_block [--shapes=arc,sudoku --hidden=512] \
      [--tiles=32:64:64:8:2,64:64:64:4:3] [--rows=N] [--interpret]

Two parts of `layers.Block`, each mapping `h` `[rows, hidden]` to the same shape, in bfloat16:

- `o_proj`: `rms_norm(h + h @ w_o)` (the attention half's projection, residual and norm; the
  attention itself is not part of it);
- `mlp`: `rms_norm(h + down(silu(h @ w_gate) * (h @ w_up)))` (the MLP half).

Shapes: `arc` is 192 x 916 rows (ARC's batch and sequence), `sudoku` 768 x 98 (Sudoku Att,
97 padded to 98); --rows replaces both row counts. Rows: `xla` (the references, which are
`layers.Block`'s operations) and `fused BM:BN:BK:W:S` (block_m, block_n, block_k, num_warps,
num_stages; block_n applies to matmul_swiglu only, so `o_proj` has one row per distinct
block_m:block_k:W:S, named `fused BM:-:BK:W:S`). Each is applied 10 times in a chain inside
one jitted function, after a warm-up; the time per application is the median of --reps runs.
The error is the relative L2 distance of one application to the reference in float32
(bfloat16 rounding is about 4e-3). A GPU is needed, unless --interpret runs the kernels in
the Pallas interpreter (a check that the script works, not a timing).
"""

import functools
import json

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import cli
from experiments import timing
from tiny_recursive import fused_block
from tiny_recursive import layers

SHAPES = {'arc': 192 * 916, 'sudoku': 768 * 98}

_SHAPES = flags.DEFINE_list('shapes', list(SHAPES), f'Row counts to time, of {list(SHAPES)}.')
_ROWS = flags.DEFINE_integer('rows', 0, '>0: this many rows instead of each shape\'s.')
_HIDDEN = flags.DEFINE_integer('hidden', 512, 'Hidden size of the model.')
_EXPANSION = flags.DEFINE_float('expansion', 4.0, 'SwiGLU expansion.')
_TILES = flags.DEFINE_list('tiles', ['32:64:64:8:2', '64:64:64:4:3', '16:64:64:4:2',
                                     '32:128:32:8:3', '64:128:64:8:3', '32:64:128:8:2'],
                           'Kernel variants, block_m:block_n:block_k:num_warps:num_stages.')
_REPS = flags.DEFINE_integer('reps', 20, 'Timed runs per variant (median reported).')
_INTERPRET = flags.DEFINE_bool('interpret', False,
                               'Run the kernels in the Pallas interpreter (any backend).')
_CHAIN = 10
_EPS = 1e-5


def _variants(w_o, gate_up, down) -> dict[str, dict[str, object]]:
  """{part: {variant: fn(h)}} for the two parts of the block."""
  o_proj = {'xla': lambda h: fused_block.matmul_residual_rms_norm_reference(h, w_o, h, _EPS)}
  mlp = {'xla': lambda h: fused_block.matmul_residual_rms_norm_reference(
      fused_block.matmul_swiglu_reference(h, gate_up), down, h, _EPS)}
  for tile in _TILES.value:
    try:
      block_m, block_n, block_k, warps, stages = (int(v) for v in tile.split(':'))
    except ValueError as e:
      raise ValueError(f'--tiles: {tile!r} is not block_m:block_n:block_k:num_warps:'
                       'num_stages.') from e
    common = dict(block_m=block_m, block_k=block_k, num_warps=warps, num_stages=stages,
                  interpret=_INTERPRET.value)
    norm = functools.partial(fused_block.matmul_residual_rms_norm, eps=_EPS, **common)
    swiglu = functools.partial(fused_block.matmul_swiglu, block_n=block_n, **common)
    o_proj[f'fused {block_m}:-:{block_k}:{warps}:{stages}'] = (
        functools.partial(lambda h, norm: norm(h, w_o, h), norm=norm))
    mlp[f'fused {tile}'] = functools.partial(
        lambda h, norm, swiglu: norm(swiglu(h, gate_up), down, h), norm=norm, swiglu=swiglu)
  return {'o_proj': o_proj, 'mlp': mlp}


def main(argv):
  cli.no_positional_arguments(argv)
  backend = jax.default_backend()
  if backend != 'gpu' and not _INTERPRET.value:
    raise ValueError(f'the fused kernels need a GPU (the backend here is {backend}); '
                     '--interpret runs them in the Pallas interpreter instead (no timing).')
  unknown = set(_SHAPES.value) - set(SHAPES)
  if unknown:
    raise ValueError(f'--shapes: {sorted(unknown)} not among {list(SHAPES)}.')
  width = _HIDDEN.value
  hidden = layers.swiglu_hidden_width(width, _EXPANSION.value)
  rng = np.random.default_rng(0)
  weight = lambda *shape: jnp.asarray(rng.normal(0.0, shape[0] ** -0.5, shape), jnp.float32)
  w_o, gate_up, down = weight(width, width), weight(width, 2 * hidden), weight(hidden, width)
  variants = _variants(w_o, gate_up, down)
  flops = {'o_proj': 2 * width * width, 'mlp': 2 * 3 * width * hidden}  # Per row.
  print(f'hidden {width}, SwiGLU width {hidden}, {jax.devices()[0].device_kind}'
        f'{" (Pallas interpreter: times are not kernel times)" if _INTERPRET.value else ""}')
  rows = []
  for shape in _SHAPES.value:
    count = _ROWS.value or SHAPES[shape]
    h32 = jnp.asarray(rng.normal(0.0, 1.0, (count, width)), jnp.float32)
    h32 = layers.rms_norm(h32, _EPS)  # Inputs as a block sees them: unit RMS per row.
    h = h32.astype(jnp.bfloat16)
    for part, fns in variants.items():
      reference = jax.jit(fns['xla'])(h32)
      flop = flops[part] * count
      for name, fn in fns.items():
        row = {'shape': shape, 'rows': count, 'part': part, 'variant': name,
               **timing.measure(fn, h, reference, flop, _CHAIN, _REPS.value)}
        rows.append(row)
        print(json.dumps(row), flush=True)
  print('\nshape | part | variant | ms per application | TFLOP/s | relative error')
  for row in rows:
    print(f"{row['shape']} ({row['rows']} rows) | {row['part']} | {row['variant']} | "
          f"{row.get('ms', row.get('failed'))} | {row.get('tflops', '')} | "
          f"{row.get('rel_error', '')}")


if __name__ == '__main__':
  cli.run(main)

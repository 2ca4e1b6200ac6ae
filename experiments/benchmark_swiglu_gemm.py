r"""Times the SwiGLU gate/up projection with its product: XLA against the Mosaic GPU kernel.

  python -m experiments.benchmark_swiglu_gemm [--shapes=sudoku,arc] \
      [--tilings=64:128:64:4:c,64:128:64:3:u]

For each shape (rows x width -> hidden; `sudoku`: 768 x 97 rows, `arc`: 192 x 916 rows,
both width 512 and hidden 1536, or `ROWS:WIDTH:HIDDEN`), rows: `xla` (`layers.swiglu_projection`,
`layers.SwiGLU`'s formulation: two products and XLA's elementwise fusion) and `kernel BM:BN:BK:S:C`
(`swiglu_gemm.Tiling`: block_m, block_n, block_k, stages, and c for a chained pipeline or u
for one per tile). Time per call: the median of --reps runs of 30 calls, rotating
over three input sets so that no run reads a cached input. The error is the relative L2
distance to the float32 product. Needs a Hopper GPU for the kernel rows.
"""


from absl import flags
import jax
import jax.numpy as jnp

from experiments import cli
from experiments import timing
from tiny_recursive import layers
from tiny_recursive import swiglu_gemm

_SHAPES = flags.DEFINE_list('shapes', ['sudoku', 'arc'],
                            'sudoku, arc or ROWS:WIDTH:HIDDEN.')
_TILINGS = flags.DEFINE_list('tilings', ['64:128:64:4:c', '64:128:64:2:c', '64:128:64:4:u',
                                         '64:128:64:3:u', '128:64:64:2:c', '128:64:64:3:u'],
                             'Kernel tilings, block_m:block_n:block_k:stages:c|u.')
_REPS = flags.DEFINE_integer('reps', 10, 'Timed runs per variant (median reported).')
_CALLS = 30
_NAMED_SHAPES = {'sudoku': (768 * 97, 512, 1536), 'arc': (192 * 916, 512, 1536)}


def _parse_shape(name: str) -> tuple[int, int, int]:
  if name in _NAMED_SHAPES:
    return _NAMED_SHAPES[name]
  try:
    rows, width, hidden = (int(v) for v in name.split(':'))
  except ValueError:
    raise ValueError(f'--shapes: expected sudoku, arc or ROWS:WIDTH:HIDDEN, got {name!r}.') from None
  return rows, width, hidden


def main(argv):
  del argv
  tilings = {}
  for text in _TILINGS.value:
    sizes, chained = timing.parse_tiling(text, 'tilings', 'BM:BN:BK:S')
    tilings[text] = swiglu_gemm.Tiling(*sizes, chained)
  print(jax.devices()[0].device_kind, flush=True)
  rows_out = []
  for shape_name in _SHAPES.value:
    rows, width, hidden = _parse_shape(shape_name)
    flop = 2 * rows * width * 2 * hidden
    keys = jax.random.split(jax.random.key(0), 4)
    inputs = [(jax.random.normal(k, (rows, width), jnp.bfloat16),) for k in keys[:3]]
    weight = jax.random.normal(keys[3], (width, 2 * hidden), jnp.float32) * width ** -0.5
    x32 = inputs[0][0].astype(jnp.float32)
    reference = jax.nn.silu(x32 @ weight[:, :hidden]) * (x32 @ weight[:, hidden:])
    variants = {'xla': jax.jit(lambda x: layers.swiglu_projection(x, weight))}
    for name, tiling in tilings.items():
      variants[f'kernel {name}'] = jax.jit(
          lambda x, tiling=tiling: swiglu_gemm.swiglu_projection(x, weight, tiling=tiling))
    for name, fn in variants.items():
      rows_out.append(timing.report_calls(shape_name, name, fn, inputs, reference, flop,
                                          _REPS.value, _CALLS))
  timing.print_table(rows_out)


if __name__ == '__main__':
  cli.run(main)

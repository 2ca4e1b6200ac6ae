"""The gradient of the SwiGLU product `silu(gate) * up` as one GPU kernel (Pallas, Triton).

In the calls with gradient the SwiGLU products (the channel MLP's, and the sequence MLP's of
TRM-MLP) run in XLA, and autodiff's backward pass computes the two halves of their gradient in
two elementwise passes that each read the incoming gradient and `gate` again:

    d_gate = d_out * up * silu'(gate),    d_up = d_out * silu(gate).

This kernel reads `d_out`, `gate` and `up` once and writes both halves: five arrays of the
product's size move instead of seven (at Sudoku MLP's shapes, 403 MB each in the sequence
mixer). Arithmetic in float32, rounded once to the compute dtype at the end (autodiff rounds
its intermediates to bfloat16 on the way).
"""

import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

Array = jax.Array

# Elements per program: the block is `[block_rows, block_cols]` with block_cols the largest power
# of two up to `_MAX_BLOCK_COLS` dividing the columns, and rows filling the rest. [16, 512] with
# 8 warps was the fastest of the blocks timed on an H200 at Sudoku's shapes (docs/benchmarks.md).
_BLOCK_ELEMENTS = 8192
_MAX_BLOCK_COLS = 512


def reference_gradient(gate: Array, up: Array, d_out: Array) -> tuple[Array, Array]:
  """(d_gate, d_up) in float32 arithmetic, each in its input's dtype: the kernel's function."""
  gate32, up32 = gate.astype(jnp.float32), up.astype(jnp.float32)
  d_out = d_out.astype(jnp.float32)
  sigmoid = 1.0 / (1.0 + jnp.exp(-gate32))
  # d silu(g) / dg = sigmoid(g) (1 + g (1 - sigmoid(g))).
  d_gate = d_out * up32 * sigmoid * (1.0 + gate32 * (1.0 - sigmoid))
  return d_gate.astype(gate.dtype), (d_out * gate32 * sigmoid).astype(up.dtype)


def block_shape(rows: int, cols: int) -> tuple[int, int] | None:
  """The kernel's block for a `[rows, cols]` product, or None where it takes no block (the
  block's sides are powers of two and divide the array's)."""
  block_cols = _MAX_BLOCK_COLS
  while block_cols > 1 and cols % block_cols:
    block_cols //= 2
  block_rows = _BLOCK_ELEMENTS // block_cols
  while block_rows > 1 and rows % block_rows:
    block_rows //= 2
  if block_cols < 16 or block_rows * block_cols < 1024:
    return None
  return block_rows, block_cols


def supported(shape: tuple[int, ...]) -> bool:
  """Whether the kernel takes a product of this shape (its leading axes are flattened)."""
  return len(shape) >= 2 and block_shape(math.prod(shape[:-1]), shape[-1]) is not None


def _kernel(gate_ref, up_ref, d_out_ref, d_gate_ref, d_up_ref):
  d_gate, d_up = reference_gradient(gate_ref[...], up_ref[...], d_out_ref[...])
  d_gate_ref[...] = d_gate
  d_up_ref[...] = d_up


def fused_gradient(gate: Array, up: Array, d_out: Array, *, num_warps: int = 8,
                   interpret: bool = False) -> tuple[Array, Array]:
  """`reference_gradient` as one Pallas (Triton) kernel; `supported(gate.shape)` must hold.

  Args:
    gate, up, d_out: the SwiGLU product's inputs and incoming gradient, all of one shape.
    num_warps: Triton launch parameter.
    interpret: run the kernel in the Pallas interpreter (any backend; for tests).
  """
  if not gate.shape == up.shape == d_out.shape:
    raise ValueError(f'SwiGLU gradient: gate {gate.shape}, up {up.shape} and gradient '
                     f'{d_out.shape} must have one shape.')
  cols = gate.shape[-1] if gate.ndim else 1
  rows = gate.size // cols
  block = block_shape(rows, cols) if gate.ndim >= 2 else None
  if block is None:
    raise ValueError(f'SwiGLU gradient: no block of the kernel fits the shape {gate.shape}.')
  spec = pl.BlockSpec(block, lambda i, j: (i, j))
  d_gate, d_up = pl.pallas_call(
      _kernel,
      out_shape=(jax.ShapeDtypeStruct((rows, cols), gate.dtype),
                 jax.ShapeDtypeStruct((rows, cols), up.dtype)),
      grid=(rows // block[0], cols // block[1]),
      in_specs=[spec, spec, spec],
      out_specs=[spec, spec],
      compiler_params=pl_triton.CompilerParams(num_warps=num_warps, num_stages=1),
      interpret=interpret,
      name='swiglu_gradient',
  )(*(x.reshape(rows, cols) for x in (gate, up, d_out)))
  return d_gate.reshape(gate.shape), d_up.reshape(up.shape)

"""The sequence-MLP mixer of TRM-MLP as one GPU kernel (Pallas, Triton backend).

In the sequence-major layout (`model.activation_layout = 'sequence_major'`) the mixer of a
block maps `t` `[seq, n]` (n = batch x hidden) to

    rms_norm_over_seq(t + down^T (silu(gate^T t) * (up^T t)))

(`layers.sequence_mixer`, TRM_REFERENCE.md §3, the MLP variant). XLA runs it as three GEMMs,
an elementwise pass and a reduction, writing and re-reading the `[2 hidden', n]` SwiGLU
intermediate (1.6 GB per call at the Sudoku shapes). The kernel keeps a block of columns of
`t` on chip, loops over the hidden units in chunks, accumulates the down projection in
registers and normalises the block before writing it once: the intermediate never reaches
device memory.

Forward only (`layers.fused_sequence_mixer` adds the gradient). Rounding follows the XLA
path: the gate and up products, the SwiGLU product, the down product and the residual sum
are rounded to the compute dtype where XLA rounds them.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

Array = jax.Array


def _kernel(t_ref, gate_ref, up_ref, down_ref, out_ref, *, seq: int, eps: float,
            block_n: int, block_h: int):
  """One block of `block_n` columns: all `seq` rows (padded to a power of two) on chip."""
  padded_seq = gate_ref.shape[1]
  hidden = gate_ref.shape[0]
  dtype = out_ref.dtype
  rows = jnp.arange(padded_seq)
  cols = pl.program_id(0) * block_n + jnp.arange(block_n)
  row_mask = rows < seq
  mask = row_mask[:, None] & (cols < t_ref.shape[1])[None, :]
  t = pl_triton.load(t_ref.at[rows[:, None], cols[None, :]], mask=mask, other=0.0)
  acc = jnp.zeros((padded_seq, block_n), jnp.float32)
  for start in range(0, hidden, block_h):
    chunk = pl.ds(start, block_h)
    # Rounded where XLA's products and elementwise fusion round (module docstring).
    gate = jnp.dot(gate_ref[chunk, :], t, preferred_element_type=jnp.float32)
    up = jnp.dot(up_ref[chunk, :], t, preferred_element_type=jnp.float32)
    gate = gate.astype(dtype).astype(jnp.float32)
    up = up.astype(dtype).astype(jnp.float32)
    swiglu = (gate / (1.0 + jnp.exp(-gate)) * up).astype(dtype)
    acc += jnp.dot(down_ref[:, chunk], swiglu, preferred_element_type=jnp.float32)
  mixed = (t + acc.astype(dtype)).astype(jnp.float32)
  mixed = jnp.where(row_mask[:, None], mixed, 0.0)
  variance = jnp.sum(mixed * mixed, axis=0, keepdims=True) / seq
  out = mixed * jax.lax.rsqrt(variance + eps)
  pl_triton.store(out_ref.at[rows[:, None], cols[None, :]], out.astype(dtype), mask=mask)


def fused_forward(t: Array, gate_up_kernel: Array, down_kernel: Array, eps: float, *,
                  block_n: int = 64, block_h: int = 64, num_warps: int = 4,
                  num_stages: int = 1, interpret: bool = False) -> Array:
  """`reference(t, gate_up_kernel, down_kernel, eps)` as one Pallas (Triton) kernel.

  Args:
    t: `[seq, n]` activations in the compute dtype.
    gate_up_kernel: `[seq, 2 hidden]` (gate columns first), any float dtype.
    down_kernel: `[hidden, seq]`.
    block_n: columns per program (a power of two, at least 16).
    block_h: hidden units per chunk (a power of two dividing hidden, at least 16).
    num_warps, num_stages: Triton launch parameters. The defaults were the fastest of the
      tiles timed on an H200 for Sudoku's shapes (docs/benchmarks.md).
    interpret: run the kernel in the Pallas interpreter (any backend; for tests).
  """
  seq, n = t.shape
  hidden = down_kernel.shape[0]
  if gate_up_kernel.shape != (seq, 2 * hidden) or down_kernel.shape != (hidden, seq):
    raise ValueError(f'fused sequence MLP: kernels {gate_up_kernel.shape} and '
                     f'{down_kernel.shape} do not fit t {t.shape}.')
  if hidden % block_h:
    raise ValueError(f'fused sequence MLP: block_h ({block_h}) must divide the hidden width '
                     f'({hidden}).')
  padded_seq = max(pl.next_power_of_2(seq), 16)
  dtype = t.dtype
  # Small weight arrays, transposed and zero-padded to the padded sequence length once.
  pad_seq = lambda k: jnp.pad(k.astype(dtype), ((0, 0), (0, padded_seq - seq)))
  gate = pad_seq(gate_up_kernel[:, :hidden].T)
  up = pad_seq(gate_up_kernel[:, hidden:].T)
  down = pad_seq(down_kernel).T
  kernel = functools.partial(_kernel, seq=seq, eps=eps, block_n=block_n, block_h=block_h)
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((seq, n), dtype),
      grid=(pl.cdiv(n, block_n),),
      compiler_params=pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name='fused_sequence_mlp',
  )(t, gate, up, down)

"""The projections of a block with their epilogues, as GPU kernels (Pallas, Triton backend),
and pure-JAX references of what they compute.

The block is post-norm (`layers.Block`, TRM_REFERENCE.md §3); with attention:

    h = rms_norm(h + o_proj(attention(qkv_proj(h))))
    h = rms_norm(h + down_proj(silu(h @ w_gate) * (h @ w_up)))

(the MLP mixer replaces the first line; the channel MLP of the second is in every model).
XLA runs each projection as a GEMM followed by a float32 elementwise fusion (RoPE after qkv,
residual and RMSNorm after o_proj and down_proj, SwiGLU after gate/up), each writing the
GEMM's output to device memory and reading it back. Here the epilogue runs on the
accumulator before the one write:

- `matmul_residual_rms_norm`: `rms_norm(residual + x @ w)` with the whole output row (the
  hidden width) in one program, so the norm needs no second pass (o_proj, down_proj).
- `matmul_swiglu`: `silu(x @ w_gate) * (x @ w_up)`, tiled over rows and output columns: the
  `[rows, 2 hidden']` gate/up product never reaches device memory.
- `matmul_qkv_rope`: the qkv projection with RoPE applied to the query and key heads, one
  head's columns per program (rotate-half pairs both halves of a head).

Forward only (`layers.fused_residual_rms_norm`, `layers.fused_swiglu` and
`layers.fused_qkv_rope` add the gradient). Rounding follows the XLA path: each product is
rounded to the compute dtype, the elementwise math (SwiGLU, RoPE, norm) runs in float32 on the
rounded values, and the residual sum is rounded to the compute dtype before the norm, as
`layers.Block` writes them. XLA may keep a bfloat16 intermediate in float32 inside one of its
fusions, so bfloat16 results can differ from XLA's by a rounding step; float32 ones agree to
float32 round-off.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

Array = jax.Array


# --- References: the XLA formulation of `layers.Block` (same operations, same rounding) ---


def matmul_residual_rms_norm_reference(x: Array, w: Array, residual: Array,
                                       eps: float) -> Array:
  """`rms_norm(residual + x @ w)` over the last axis, in x's dtype (`w` cast to it)."""
  dtype = x.dtype
  mixed = (residual + jnp.dot(x, w.astype(dtype))).astype(jnp.float32)
  variance = jnp.sum(jnp.square(mixed), axis=-1, keepdims=True) / mixed.shape[-1]
  return (mixed * jax.lax.rsqrt(variance + eps)).astype(dtype)


def matmul_swiglu_reference(x: Array, w_gate_up: Array) -> Array:
  """`silu(x @ w_gate) * (x @ w_up)`, `w_gate_up` `[in, 2 hidden]` with the gate columns
  first (`layers.SwiGLU`'s `gate_up_proj`), in x's dtype."""
  hidden = w_gate_up.shape[1] // 2
  w = w_gate_up.astype(x.dtype)
  gate, up = jnp.dot(x, w[:, :hidden]), jnp.dot(x, w[:, hidden:])
  return jax.nn.silu(gate) * up


def matmul_qkv_rope_reference(x: Array, w_qkv: Array, cos: Array,
                              sin: Array) -> tuple[Array, Array, Array]:
  """query, key, value `[batch, seq, heads, head_dim]` from x `[batch, seq, in]`:
  `w_qkv` `[in, 3 hidden]` (query, key, value columns, each heads-major), RoPE on query and
  key by halves of each head in float32 (`layers.apply_rope`), tables `[seq, head_dim]`."""
  batch, seq, _ = x.shape
  head_dim = cos.shape[1]
  hidden = w_qkv.shape[1] // 3
  w = w_qkv.astype(x.dtype)
  query, key, value = (jnp.dot(x, w[:, i * hidden:(i + 1) * hidden]).reshape(
      batch, seq, hidden // head_dim, head_dim) for i in range(3))

  def rope(t):
    t32 = t.astype(jnp.float32)
    half = head_dim // 2
    rotated = jnp.concatenate([-t32[..., half:], t32[..., :half]], axis=-1)
    return (t32 * cos[:, None, :] + rotated * sin[:, None, :]).astype(t.dtype)

  return rope(query), rope(key), value


# --- Kernels ---


def is_tile_size(value: int) -> bool:
  """Whether the kernels can take `value` as a tile edge: a power of two, at least 16."""
  return value >= 16 and not value & (value - 1)


def _check_tiles(name: str, **tiles: int) -> None:
  for arg, value in tiles.items():
    if not is_tile_size(value):
      raise ValueError(f'{name}: {arg} ({value}) must be a power of two, at least 16.')


def _check_input(name: str, x: Array, w: Array, w_name: str) -> None:
  if x.ndim < 2 or w.ndim != 2 or w.shape[0] != x.shape[-1]:
    raise ValueError(f'{name}: {w_name} {w.shape} does not fit x {x.shape} (expected x '
                     f'[..., in] with at least one leading axis and {w_name} [in, out]).')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'{name}: x must be floating point, got {x.dtype}.')


def _load_rows(x_ref, rows: Array, row_mask: Array, start: Array, block_k: int) -> Array:
  """Rows `rows` of x, columns [start, start + block_k), zero outside x."""
  ks = start + jnp.arange(block_k)
  mask = row_mask[:, None] & (ks < x_ref.shape[1])[None, :]
  return pl_triton.load(x_ref.at[rows[:, None], ks[None, :]], mask=mask, other=0.0)


def _residual_rms_norm_kernel(x_ref, w_ref, residual_ref, out_ref, *, eps: float,
                              block_m: int, block_k: int):
  """`block_m` rows; the full (power-of-two padded) output row stays in the accumulator."""
  num_rows = x_ref.shape[0]
  padded_k, padded_n = w_ref.shape
  width = residual_ref.shape[1]
  dtype = out_ref.dtype
  rows = pl.program_id(0) * block_m + jnp.arange(block_m)
  row_mask = rows < num_rows
  cols = jnp.arange(padded_n)

  def step(i, acc):
    start = pl.multiple_of(i * block_k, block_k)
    x = _load_rows(x_ref, rows, row_mask, start, block_k)
    return acc + jnp.dot(x, w_ref[pl.ds(start, block_k), :],
                         preferred_element_type=jnp.float32)

  acc = jax.lax.fori_loop(0, padded_k // block_k, step,
                          jnp.zeros((block_m, padded_n), jnp.float32))
  mask = row_mask[:, None] & (cols < width)[None, :]
  residual = pl_triton.load(residual_ref.at[rows[:, None], cols[None, :]], mask=mask,
                            other=0.0)
  # Padded columns are zero in both terms, so they add nothing to the sum of squares.
  mixed = (residual + acc.astype(dtype)).astype(jnp.float32)
  variance = jnp.sum(mixed * mixed, axis=1, keepdims=True) / width
  out = mixed * jax.lax.rsqrt(variance + eps)
  pl_triton.store(out_ref.at[rows[:, None], cols[None, :]], out.astype(dtype), mask=mask)


def matmul_residual_rms_norm(x: Array, w: Array, residual: Array, eps: float, *,
                             block_m: int = 32, block_k: int = 64, num_warps: int = 8,
                             num_stages: int = 2, interpret: bool = False) -> Array:
  """`matmul_residual_rms_norm_reference(x, w, residual, eps)` as one Pallas (Triton) kernel.

  Args:
    x: `[..., in]` activations in the compute dtype.
    w: `[in, out]`, any float dtype (cast to x's).
    residual: `[..., out]`, x's leading axes and dtype.
    block_m: rows per program (a power of two, at least 16).
    block_k: input features per step of the loop over `in` (a power of two, at least 16).
    num_warps, num_stages: Triton launch parameters (not yet tuned on a GPU).
    interpret: run the kernel in the Pallas interpreter (any backend; for tests).
  """
  name = 'matmul_residual_rms_norm'
  _check_input(name, x, w, 'w')
  _check_tiles(name, block_m=block_m, block_k=block_k)
  expected = x.shape[:-1] + w.shape[1:]
  if residual.shape != expected or residual.dtype != x.dtype:
    raise ValueError(f'{name}: residual {residual.shape} {residual.dtype} must have x\'s rows '
                     f'and w\'s columns, {expected}, in x\'s dtype {x.dtype}.')
  k, width = w.shape
  padded_k = -(k // -block_k) * block_k
  padded_n = max(pl.next_power_of_2(width), 16)
  w = jnp.pad(w.astype(x.dtype), ((0, padded_k - k), (0, padded_n - width)))
  x2, residual2 = x.reshape(-1, k), residual.reshape(-1, width)
  kernel = functools.partial(_residual_rms_norm_kernel, eps=eps, block_m=block_m,
                             block_k=block_k)
  out = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct(residual2.shape, x.dtype),
      grid=(pl.cdiv(x2.shape[0], block_m),),
      compiler_params=pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name='matmul_residual_rms_norm',
  )(x2, w, residual2)
  return out.reshape(expected)


def _swiglu_kernel(x_ref, gate_ref, up_ref, out_ref, *, block_m: int, block_n: int,
                   block_k: int):
  """A `block_m` x `block_n` tile of the output; gate and up accumulate side by side."""
  num_rows, hidden = out_ref.shape
  padded_k = gate_ref.shape[0]
  dtype = out_ref.dtype
  rows = pl.program_id(0) * block_m + jnp.arange(block_m)
  row_mask = rows < num_rows
  first_col = pl.multiple_of(pl.program_id(1) * block_n, block_n)
  cols = first_col + jnp.arange(block_n)

  def step(i, carry):
    gate, up = carry
    start = pl.multiple_of(i * block_k, block_k)
    x = _load_rows(x_ref, rows, row_mask, start, block_k)
    tile = (pl.ds(start, block_k), pl.ds(first_col, block_n))
    gate += jnp.dot(x, gate_ref[tile], preferred_element_type=jnp.float32)
    up += jnp.dot(x, up_ref[tile], preferred_element_type=jnp.float32)
    return gate, up

  zeros = jnp.zeros((block_m, block_n), jnp.float32)
  gate, up = jax.lax.fori_loop(0, padded_k // block_k, step, (zeros, zeros))
  gate = gate.astype(dtype).astype(jnp.float32)
  up = up.astype(dtype).astype(jnp.float32)
  out = gate / (1.0 + jnp.exp(-gate)) * up
  mask = row_mask[:, None] & (cols < hidden)[None, :]
  pl_triton.store(out_ref.at[rows[:, None], cols[None, :]], out.astype(dtype), mask=mask)


def matmul_swiglu(x: Array, w_gate_up: Array, *, block_m: int = 64, block_n: int = 64,
                  block_k: int = 64, num_warps: int = 4, num_stages: int = 3,
                  interpret: bool = False) -> Array:
  """`matmul_swiglu_reference(x, w_gate_up)` as one Pallas (Triton) kernel.

  Args:
    x: `[..., in]` activations in the compute dtype.
    w_gate_up: `[in, 2 hidden]`, gate columns first, any float dtype (cast to x's).
    block_m: rows per program (a power of two, at least 16).
    block_n: output columns per program (a power of two, at least 16).
    block_k: input features per step of the loop over `in` (a power of two, at least 16).
    num_warps, num_stages: Triton launch parameters (not yet tuned on a GPU).
    interpret: run the kernel in the Pallas interpreter (any backend; for tests).
  """
  name = 'matmul_swiglu'
  _check_input(name, x, w_gate_up, 'w_gate_up')
  _check_tiles(name, block_m=block_m, block_n=block_n, block_k=block_k)
  k, double = w_gate_up.shape
  if double % 2:
    raise ValueError(f'{name}: w_gate_up {w_gate_up.shape} must have an even number of '
                     'columns (gate columns, then as many up columns).')
  hidden = double // 2
  padded_k = -(k // -block_k) * block_k
  padded_h = -(hidden // -block_n) * block_n
  # Small weight arrays, split and zero-padded to whole tiles once per call.
  pad = lambda w: jnp.pad(w.astype(x.dtype), ((0, padded_k - k), (0, padded_h - hidden)))
  gate, up = pad(w_gate_up[:, :hidden]), pad(w_gate_up[:, hidden:])
  x2 = x.reshape(-1, k)
  kernel = functools.partial(_swiglu_kernel, block_m=block_m, block_n=block_n, block_k=block_k)
  out = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((x2.shape[0], hidden), x.dtype),
      grid=(pl.cdiv(x2.shape[0], block_m), padded_h // block_n),
      compiler_params=pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name='matmul_swiglu',
  )(x2, gate, up)
  return out.reshape(x.shape[:-1] + (hidden,))


def _qkv_rope_kernel(x_ref, w_ref, cos_ref, sin_ref, q_ref, k_ref, v_ref, *, seq: int,
                     block_m: int, block_k: int):
  """`block_m` rows of one head of the query, key or value (grid axes 1 and 2)."""
  num_rows, hidden = q_ref.shape
  padded_k = w_ref.shape[0]
  half = cos_ref.shape[1] // 2
  dtype = q_ref.dtype
  part, head = pl.program_id(1), pl.program_id(2)
  rows = pl.program_id(0) * block_m + jnp.arange(block_m)
  row_mask = rows < num_rows
  first_col = pl.multiple_of(part * hidden + head * 2 * half, half)

  def step(i, carry):
    low, high = carry
    start = pl.multiple_of(i * block_k, block_k)
    x = _load_rows(x_ref, rows, row_mask, start, block_k)
    k_rows = pl.ds(start, block_k)
    low += jnp.dot(x, w_ref[k_rows, pl.ds(first_col, half)],
                   preferred_element_type=jnp.float32)
    high += jnp.dot(x, w_ref[k_rows, pl.ds(first_col + half, half)],
                    preferred_element_type=jnp.float32)
    return low, high

  zeros = jnp.zeros((block_m, half), jnp.float32)
  low, high = jax.lax.fori_loop(0, padded_k // block_k, step, (zeros, zeros))
  low = low.astype(dtype).astype(jnp.float32)
  high = high.astype(dtype).astype(jnp.float32)
  halves = jnp.arange(half)
  mask = row_mask[:, None]
  table = lambda ref, offset: pl_triton.load(
      ref.at[(rows % seq)[:, None], (offset + halves)[None, :]], mask=mask, other=0.0)
  # rotate_half: (low, high) -> (-high, low), as `layers.apply_rope` on the rounded product.
  roped_low = low * table(cos_ref, 0) + (-high) * table(sin_ref, 0)
  roped_high = high * table(cos_ref, half) + low * table(sin_ref, half)
  cols = head * 2 * half + halves
  for index, out_ref in enumerate((q_ref, k_ref, v_ref)):

    @pl.when(part == index)
    def _store(out_ref=out_ref, index=index):
      out_low, out_high = (low, high) if index == 2 else (roped_low, roped_high)
      pl_triton.store(out_ref.at[rows[:, None], cols[None, :]], out_low.astype(dtype),
                      mask=mask)
      pl_triton.store(out_ref.at[rows[:, None], (cols + half)[None, :]],
                      out_high.astype(dtype), mask=mask)


def matmul_qkv_rope(x: Array, w_qkv: Array, cos: Array, sin: Array, *, block_m: int = 64,
                    block_k: int = 64, num_warps: int = 4, num_stages: int = 3,
                    interpret: bool = False) -> tuple[Array, Array, Array]:
  """`matmul_qkv_rope_reference(x, w_qkv, cos, sin)` as one Pallas (Triton) kernel.

  Args:
    x: `[batch, seq, in]` activations in the compute dtype.
    w_qkv: `[in, 3 hidden]` (query, key, value columns), any float dtype (cast to x's).
    cos, sin: float32 `[seq, head_dim]` RoPE tables (`layers.rope_tables`); head_dim / 2
      must be a power of two, at least 16.
    block_m: rows per program (a power of two, at least 16).
    block_k: input features per step of the loop over `in` (a power of two, at least 16).
    num_warps, num_stages: Triton launch parameters (not yet tuned on a GPU).
    interpret: run the kernel in the Pallas interpreter (any backend; for tests).
  """
  name = 'matmul_qkv_rope'
  if x.ndim != 3:
    raise ValueError(f'{name}: x {x.shape} must be [batch, seq, in].')
  _check_input(name, x, w_qkv, 'w_qkv')
  _check_tiles(name, block_m=block_m, block_k=block_k)
  batch, seq, k = x.shape
  head_dim = cos.shape[-1]
  if cos.shape != (seq, head_dim) or sin.shape != cos.shape:
    raise ValueError(f'{name}: cos {cos.shape} and sin {sin.shape} must both be [seq, '
                     f'head_dim] with x\'s seq ({seq}).')
  _check_tiles(name, **{'head_dim / 2': head_dim // 2})
  if w_qkv.shape[1] % (3 * head_dim):
    raise ValueError(f'{name}: w_qkv {w_qkv.shape} must have 3 x heads x head_dim '
                     f'({head_dim}) columns.')
  hidden = w_qkv.shape[1] // 3
  padded_k = -(k // -block_k) * block_k
  w = jnp.pad(w_qkv.astype(x.dtype), ((0, padded_k - k), (0, 0)))
  x2 = x.reshape(-1, k)
  kernel = functools.partial(_qkv_rope_kernel, seq=seq, block_m=block_m, block_k=block_k)
  out = jax.ShapeDtypeStruct((x2.shape[0], hidden), x.dtype)
  outs = pl.pallas_call(
      kernel,
      out_shape=(out, out, out),
      grid=(pl.cdiv(x2.shape[0], block_m), 3, hidden // head_dim),
      compiler_params=pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name='matmul_qkv_rope',
  )(x2, w, cos.astype(jnp.float32), sin.astype(jnp.float32))
  return tuple(t.reshape(batch, seq, hidden // head_dim, head_dim) for t in outs)

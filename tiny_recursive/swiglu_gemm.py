"""The gate/up projection of a SwiGLU with its gated product in the epilogue: one Hopper
kernel (Pallas, Mosaic GPU backend).

`layers.SwiGLU` computes `silu(x @ W_gate) * (x @ W_up)`. XLA runs the projection as a cuBLAS
GEMM writing `[rows, 2 hidden]` and then a separate elementwise pass reading it back and
writing `[rows, hidden]`: at Sudoku's shapes (768 x 97 rows, hidden 1536) that pass moves
0.69 GB and takes 0.17 ms per call, 9.7 ms of a training step (docs/benchmarks.md). Here
each thread block computes matching gate and up tiles of the same rows into two register
accumulators (tensor-core `wgmma`, operands streamed through shared memory by a separate
memory warpgroup) and writes only their product: the `[rows, 2 hidden]` intermediate never
reaches device memory.

Forward only: `layers.SwiGLU` uses it for calls that are not differentiated
(`model.fused_swiglu`), on Hopper GPUs (`hopper_kernels.available`). Rounding
(`hopper_kernels.silu_product`): gate and up are rounded to bfloat16 as XLA's GEMMs round
their outputs, then silu and the product are computed in float32 and rounded once. XLA's path
also rounds the sigmoid and the silu, so the two are not bit-identical; the kernel is the
closer to float32 (relative error 3.9e-3 against 5.0e-3 at Sudoku's shapes).

The weight is consumed in a block-interleaved layout (`interleave_gate_up`): for every block
of `block_n` output columns, its gate columns followed by its up columns, so that one
`[block_k, 2 block_n]` tile feeds both accumulators.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from tiny_recursive import hopper_kernels

Array = jax.Array

# Each of a block's compute warpgroups owns `block_m` rows.
_COMPUTE_WARPGROUPS = hopper_kernels.COMPUTE_WARPGROUPS
# Output columns written per shared-memory store (64 bfloat16 = one 128-byte swizzle row).
_STORE_COLUMNS = 64


@dataclasses.dataclass(frozen=True)
class Tiling:
  """Tile sizes: rows per compute warpgroup, output columns per block, contraction step, and
  pipeline depth (shared-memory buffers in flight)."""
  block_m: int = 64
  block_n: int = 128
  block_k: int = 64
  stages: int = 4
  # True: the memory warpgroup streams the next tile's operands while the compute warpgroups
  # finish the current one (one pipeline across all tiles of a thread block; needs
  # width / block_k divisible by stages). False: each tile fills its own pipeline.
  chained: bool = True


def _tile_grid(rows: int, hidden: int, tiling: Tiling) -> tuple[int, int]:
  """Output tiles (row blocks, column blocks): a thread block's tile is both compute
  warpgroups' rows by `block_n` columns."""
  return rows // (_COMPUTE_WARPGROUPS * tiling.block_m), hidden // tiling.block_n


def supported(rows: int, width: int, hidden: int, tiling: Tiling = Tiling()) -> bool:
  """Whether the kernel takes these shapes (otherwise callers use the XLA path)."""
  tiles = math.prod(_tile_grid(rows, hidden, tiling))
  return (rows % (_COMPUTE_WARPGROUPS * tiling.block_m) == 0 and width % tiling.block_k == 0
          and hidden % tiling.block_n == 0 and tiling.block_n % _STORE_COLUMNS == 0
          and width // tiling.block_k >= tiling.stages
          and (not tiling.chained or (width // tiling.block_k % tiling.stages == 0
                                      and tiles >= 2)))


def interleave_gate_up(gate_up_kernel: Array, block_n: int) -> Array:
  """`[width, 2 hidden]` (gate columns, then up columns) to the kernel's layout: per block of
  `block_n` hidden units, its gate columns then its up columns."""
  width, double = gate_up_kernel.shape
  hidden = double // 2
  gate = gate_up_kernel[:, :hidden].reshape(width, hidden // block_n, 1, block_n)
  up = gate_up_kernel[:, hidden:].reshape(width, hidden // block_n, 1, block_n)
  return jnp.concatenate([gate, up], axis=2).reshape(width, double)


def _kernel(x_gmem, w_gmem, out_gmem, *, tiling: Tiling):
  rows, width = x_gmem.shape
  hidden = out_gmem.shape[1]
  dtype = out_gmem.dtype
  bm, bn, bk = tiling.block_m, tiling.block_n, tiling.block_k
  block_rows = _COMPUTE_WARPGROUPS * bm
  row_blocks, column_blocks = _tile_grid(rows, hidden, tiling)

  def pipeline(body, compute_context, state=None):
    return hopper_kernels.pipeline(
        body, compute_context, state, steps=width // bk, stages=tiling.stages,
        in_specs=[
            plgpu.BlockSpec((block_rows, bk), lambda k: (0, k),
                            transforms=hopper_kernels.swizzled(bk, dtype),
                            memory_space=plgpu.SMEM),
            plgpu.BlockSpec((bk, 2 * bn), lambda k: (k, 0),
                            transforms=hopper_kernels.swizzled(bk, dtype),
                            memory_space=plgpu.SMEM),
        ])

  unused = lambda *_, **__: None

  @functools.partial(
      pl.run_scoped,
      allocations=pipeline(unused, unused).get_allocations(x_gmem, w_gmem),
      out_smem=plgpu.SMEM((_COMPUTE_WARPGROUPS, 2, bm, _STORE_COLUMNS), dtype,
                          transforms=hopper_kernels.swizzled(_STORE_COLUMNS, dtype)),
      collective_axes='wg',
  )
  def _scope(allocations, out_smem):
    wg = jax.lax.axis_index('wg')

    # Persistent loop over output tiles, column blocks fastest: consecutive tiles on an SM
    # reuse the same rows of x from L2, and the whole weight stays resident there.
    @plgpu.nd_loop((row_blocks * column_blocks,), collective_axes='sm')
    def _tile(loop_info):
      (tile,) = loop_info.index
      row_block, column_block = tile // column_blocks, tile % column_blocks
      block_rows_slice = pl.ds(row_block * block_rows, block_rows)
      wg_rows = pl.ds(wg * bm, bm)

      def compute_context(run_pipeline):
        @functools.partial(pl.run_scoped, gate_acc=plgpu.ACC((bm, bn), jnp.float32),
                           up_acc=plgpu.ACC((bm, bn), jnp.float32))
        def _accumulate(gate_acc, up_acc):
          run_pipeline((gate_acc, up_acc))
          product = hopper_kernels.silu_product(gate_acc[...], up_acc[...], dtype)
          plgpu.wait_smem_to_gmem(0, wait_read_only=True)
          for store in range(bn // _STORE_COLUMNS):
            slot = store % 2
            columns = slice(store * _STORE_COLUMNS, (store + 1) * _STORE_COLUMNS)
            plgpu.wait_smem_to_gmem(1, wait_read_only=True)
            out_smem[wg, slot] = product[:, columns]
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(
                out_smem.at[wg, slot],
                out_gmem.at[block_rows_slice, pl.ds(column_block * bn + columns.start,
                                                    _STORE_COLUMNS)].at[wg_rows])

      def mma(_, x_smem, w_smem, accumulators):
        gate_acc, up_acc = accumulators
        plgpu.wgmma(gate_acc, x_smem.at[wg_rows], w_smem.at[:, :bn])
        plgpu.wgmma(up_acc, x_smem.at[wg_rows], w_smem.at[:, bn:])
        plgpu.wgmma_wait(0)
        return accumulators

      state = hopper_kernels.chained_pipeline_state(loop_info) if tiling.chained else None
      pipeline(mma, compute_context, state)(
          x_gmem.at[block_rows_slice, :],
          w_gmem.at[:, pl.ds(column_block * 2 * bn, 2 * bn)],
          allocations=allocations)

  plgpu.wait_smem_to_gmem(0, wait_read_only=True)


def swiglu_projection(x: Array, gate_up_kernel: Array, *, tiling: Tiling = Tiling(),
                      num_sms: int | None = None, interpret: bool = False) -> Array:
  """`silu(x @ gate) * (x @ up)` for `x` `[rows, width]` and `gate_up_kernel`
  `[width, 2 hidden]` (gate columns first), in `x`'s dtype, as one Mosaic GPU kernel.

  Args:
    tiling: tile sizes (`supported` says which shapes they take).
    num_sms: thread blocks of the persistent grid; None: the device's multiprocessors.
    interpret: run in Pallas' Mosaic GPU interpreter (any backend; for tests).
  """
  rows, width = x.shape
  hidden = gate_up_kernel.shape[1] // 2
  if gate_up_kernel.shape != (width, 2 * hidden):
    raise ValueError(f'SwiGLU projection: kernel {gate_up_kernel.shape} does not fit x '
                     f'{x.shape}.')
  if not supported(rows, width, hidden, tiling):
    raise ValueError(f'SwiGLU projection: shapes rows {rows}, width {width}, hidden {hidden} '
                     f'do not fit {tiling}.')
  weight = interleave_gate_up(gate_up_kernel.astype(x.dtype), tiling.block_n)
  call = hopper_kernels.persistent_kernel(
      functools.partial(_kernel, tiling=tiling), jax.ShapeDtypeStruct((rows, hidden), x.dtype),
      name='swiglu_projection_hopper', tiles=math.prod(_tile_grid(rows, hidden, tiling)),
      chained=tiling.chained, num_sms=num_sms, interpret=interpret)
  return call(x, weight)

"""The sequence-MLP mixer of TRM-MLP as one Hopper kernel (Pallas, Mosaic GPU backend).

The same function as `fused_sequence_mlp` (`layers.sequence_mixer`: for `t` `[seq, n]`,
`rms_norm_over_seq(t + down^T (silu(gate^T t) * (up^T t)))`), written for Hopper's tensor
cores (`wgmma`) where that module relies on Triton's code generation: each of two compute
warpgroups keeps a `[seq, block_n]` block of `t`'s columns in shared memory and, for every
chunk of `block_h` hidden units, computes the gate and up products into two register
accumulators, their SwiGLU product into shared memory and the down product into a third
accumulator `[seq, block_n]`; a memory warpgroup streams the weight chunks (they stay in L2).
The residual sum and the normalisation over the sequence run on that accumulator before the
block is written once. On an H200 at Sudoku's shapes: 0.577 ms per call against the Triton
kernel's 0.645 (docs/benchmarks.md).

The sequence is padded to a multiple of 64 on chip only. TMA's tiled copies need the row
count in device memory to be a multiple of 8 (97 is not), so a block goes in and out through
a row-major staging buffer of which TMA moves the first `seq` rows; its padding rows are
zeroed once, the weights are zero-padded (small arrays, once per call), so the padding rows
add nothing and come out zero.

Forward only (`layers.fused_sequence_mixer` adds the gradient). Rounding follows XLA's path
where it rounds to the compute dtype (the gate and up products, the SwiGLU product, the down
product, the residual sum), as `fused_sequence_mlp` does.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from tiny_recursive import hopper_kernels

Array = jax.Array

# Each of a block's two compute warpgroups owns `block_n` columns of `t`; they take turns in
# the normalisation (`_kernel`, written for two).
_COMPUTE_WARPGROUPS = hopper_kernels.COMPUTE_WARPGROUPS
# The padded sequence is the K dimension of the gate/up products and the M dimension of the
# down product: a multiple of the 64 rows of one wgmma and of a 128-byte swizzle row.
_SEQ_MULTIPLE = 64


@dataclasses.dataclass(frozen=True)
class Tiling:
  """Columns of `t` per compute warpgroup, hidden units per pipeline step, pipeline depth,
  and whether one pipeline runs across all tiles of a thread block (see
  `swiglu_gemm.Tiling.chained`)."""
  block_n: int = 64
  block_h: int = 64
  stages: int = 2
  chained: bool = True


def padded_seq(seq: int) -> int:
  """The sequence length the kernel computes on."""
  return -(-seq // _SEQ_MULTIPLE) * _SEQ_MULTIPLE


def supported(seq: int, n: int, hidden: int, tiling: Tiling = Tiling()) -> bool:
  """Whether the kernel takes these shapes (otherwise callers use another path)."""
  tiles = n // (_COMPUTE_WARPGROUPS * tiling.block_n)
  steps = hidden // tiling.block_h
  return (n % (_COMPUTE_WARPGROUPS * tiling.block_n) == 0 and hidden % tiling.block_h == 0
          and tiling.block_n % 64 == 0 and tiling.block_h % 64 == 0
          and padded_seq(seq) <= 256 and steps >= tiling.stages
          and (not tiling.chained or (steps % tiling.stages == 0 and tiles >= 2)))


def _kernel(t_gmem, gate_gmem, up_gmem, down_gmem, out_gmem, *, eps: float, tiling: Tiling,
            interpret: bool):
  seq, n = t_gmem.shape
  hidden, padded = gate_gmem.shape
  dtype = out_gmem.dtype
  bn, bh = tiling.block_n, tiling.block_h
  block_cols = _COMPUTE_WARPGROUPS * bn
  swizzled = lambda columns: hopper_kernels.swizzled(columns, dtype)

  def pipeline(body, compute_context, state=None):
    return hopper_kernels.pipeline(
        body, compute_context, state, steps=hidden // bh, stages=tiling.stages,
        in_specs=[
            plgpu.BlockSpec((bh, padded), lambda h: (h, 0), transforms=swizzled(padded),
                            memory_space=plgpu.SMEM),
            plgpu.BlockSpec((bh, padded), lambda h: (h, 0), transforms=swizzled(padded),
                            memory_space=plgpu.SMEM),
            plgpu.BlockSpec((padded, bh), lambda h: (0, h), transforms=swizzled(bh),
                            memory_space=plgpu.SMEM),
        ])

  unused = lambda *_, **__: None

  @functools.partial(
      pl.run_scoped,
      allocations=pipeline(unused, unused).get_allocations(gate_gmem, up_gmem, down_gmem),
      t_smem=plgpu.SMEM((_COMPUTE_WARPGROUPS, padded, bn), dtype, transforms=swizzled(bn)),
      # Row-major: TMA reads and writes its first `seq` rows (the tiled layout wgmma needs
      # would require `seq` to be a multiple of 8 in device memory).
      staging_smem=plgpu.SMEM((_COMPUTE_WARPGROUPS, padded, bn), dtype),
      swiglu_smem=plgpu.SMEM((_COMPUTE_WARPGROUPS, bh, bn), dtype, transforms=swizzled(bn)),
      t_barrier=plgpu.Barrier(num_barriers=_COMPUTE_WARPGROUPS),
      turn=plgpu.Barrier(num_barriers=_COMPUTE_WARPGROUPS),
      collective_axes='wg',
  )
  def _scope(allocations, t_smem, staging_smem, swiglu_smem, t_barrier, turn):
    wg = jax.lax.axis_index('wg')
    num_tiles = n // block_cols
    # The padding rows of the staging block are never loaded: zero, and kept zero (the
    # padded weights make the output's padding rows zero too). Zeroed before any load.
    @pl.when(wg < _COMPUTE_WARPGROUPS)
    def _zero():
      first = min(seq // 8 * 8, padded - 8)  # Whole rows of 8 (whole 128-element groups).
      staging_smem.at[wg, pl.ds(first, padded - first)][...] = jnp.zeros((padded - first, bn),
                                                                          dtype)
      plgpu.commit_smem()

    @plgpu.nd_loop((num_tiles,), collective_axes='sm')
    def _tile(loop_info):
      (tile,) = loop_info.index
      columns = pl.ds(tile * block_cols + wg * bn, bn)
      block = t_smem.at[wg]
      staging = staging_smem.at[wg]
      real_rows = staging.at[pl.ds(0, seq)]

      def compute_context(run_pipeline):
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # The last tile's output is out.
        plgpu.copy_gmem_to_smem(t_gmem.at[:, columns], real_rows, t_barrier.at[wg])
        plgpu.barrier_wait(t_barrier.at[wg])
        if interpret:  # The interpreter has no `plgpu.load`; the same copy.
          block[...] = staging[...]
        else:  # Layout inference finds none for the plain copy between these two layouts.
          block[...] = plgpu.load(staging, (), layout=plgpu.Layout.WGMMA, optimized=False)
        plgpu.commit_smem()

        @functools.partial(pl.run_scoped, down_acc=plgpu.ACC((padded, bn), jnp.float32))
        def _accumulate(down_acc):
          run_pipeline(down_acc)
          mixed = block[...].astype(jnp.float32) + down_acc[...].astype(dtype).astype(
              jnp.float32)
          mixed = mixed.astype(dtype).astype(jnp.float32)
          squares = mixed * mixed
          # The sum over rows crosses warps through one scratch buffer per thread block,
          # which Pallas does not split between warpgroups: the two take turns (warpgroup 0
          # first on every tile). Without the turns the columns' scales race.
          @pl.when((wg > 0) | (loop_info.local_index > 0))
          def _wait_turn():
            plgpu.barrier_wait(turn.at[wg])
          variance = jnp.sum(squares, axis=0) / seq
          plgpu.commit_smem()  # Every thread of this warpgroup is done with the scratch.
          plgpu.barrier_arrive(turn.at[1 - wg])
          scale = jax.lax.rsqrt(variance + eps)
          staging[...] = (mixed * jax.lax.broadcast_in_dim(scale, mixed.shape, (1,))).astype(
              dtype)
          plgpu.commit_smem()
          plgpu.copy_smem_to_gmem(real_rows, out_gmem.at[:, columns])

      def step(_, gate_smem, up_smem, down_smem, down_acc):
        def gate_up(gate_acc, up_acc):
          plgpu.wgmma(gate_acc, gate_smem, block)
          plgpu.wgmma(up_acc, up_smem, block)
          plgpu.wgmma_wait(0)
          return gate_acc[...], up_acc[...]

        gate, up = pl.run_scoped(gate_up, plgpu.ACC((bh, bn), jnp.float32),
                                 plgpu.ACC((bh, bn), jnp.float32))
        swiglu_smem.at[wg][...] = hopper_kernels.silu_product(gate, up, dtype)
        plgpu.commit_smem()
        plgpu.wgmma(down_acc, down_smem, swiglu_smem.at[wg])
        plgpu.wgmma_wait(0)
        return down_acc

      state = hopper_kernels.chained_pipeline_state(loop_info) if tiling.chained else None
      pipeline(step, compute_context, state)(gate_gmem, up_gmem, down_gmem,
                                             allocations=allocations)

    @pl.when(wg == 0)
    def _last_turn():  # Every turn handed over is taken (each block has at least one tile).
      plgpu.barrier_wait(turn.at[0])

  plgpu.wait_smem_to_gmem(0, wait_read_only=True)


def fused_forward(t: Array, gate_up_kernel: Array, down_kernel: Array, eps: float, *,
                  tiling: Tiling = Tiling(), num_sms: int | None = None,
                  interpret: bool = False) -> Array:
  """`layers.sequence_mixer(t, gate_up_kernel, down_kernel, eps)` as one Mosaic GPU kernel.

  Args:
    t: `[seq, n]` activations in the compute dtype.
    gate_up_kernel: `[seq, 2 hidden]` (gate columns first), any float dtype.
    down_kernel: `[hidden, seq]`.
    tiling: tile sizes (`supported` says which shapes they take).
    num_sms: thread blocks of the persistent grid; None: the device's multiprocessors.
    interpret: run in Pallas' Mosaic GPU interpreter (any backend; for tests).
  """
  seq, n = t.shape
  hidden = down_kernel.shape[0]
  if gate_up_kernel.shape != (seq, 2 * hidden) or down_kernel.shape != (hidden, seq):
    raise ValueError(f'sequence MLP kernel: kernels {gate_up_kernel.shape} and '
                     f'{down_kernel.shape} do not fit t {t.shape}.')
  if not supported(seq, n, hidden, tiling):
    raise ValueError(f'sequence MLP kernel: seq {seq}, n {n}, hidden {hidden} do not fit '
                     f'{tiling}.')
  padded = padded_seq(seq)
  dtype = t.dtype
  pad = lambda k: jnp.pad(k.astype(dtype), ((0, 0), (0, padded - seq)))
  gate = pad(gate_up_kernel[:, :hidden].T)  # [hidden, padded]
  up = pad(gate_up_kernel[:, hidden:].T)
  down = pad(down_kernel).T  # [padded, hidden]
  call = hopper_kernels.persistent_kernel(
      functools.partial(_kernel, eps=eps, tiling=tiling, interpret=interpret),
      jax.ShapeDtypeStruct((seq, n), dtype), name='sequence_mlp_hopper',
      tiles=n // (_COMPUTE_WARPGROUPS * tiling.block_n),
      chained=tiling.chained, num_sms=num_sms, interpret=interpret)
  return call(t, gate, up, down)

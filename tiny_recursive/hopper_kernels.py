"""What the Hopper GPU kernels (Pallas, Mosaic GPU backend) share: where they run, their
shared-memory layouts, the SwiGLU epilogue, persistent thread blocks with warp-specialised
pipelines (chained across a block's tiles), and the interpreter that runs them on a CPU for
tests. The kernels: `swiglu_gemm` and
`sequence_mlp_gemm`."""

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental.pallas import mosaic_gpu as plgpu

Array = jax.Array

# Compute warpgroups per thread block (the kernels' tiles are split between them).
COMPUTE_WARPGROUPS = 2


# The Pallas Mosaic GPU API the kernels are written against (persistent loops, chained
# warp-specialised pipelines, layouts) settled in JAX 0.10; they run on 0.11.2 on an H200 and
# lower with 0.10.2 on a CPU. Older versions take the other paths.
_MIN_JAX = (0, 10)


def jax_version_supported(version: str = jax.__version__) -> bool:
  """Whether this JAX version (`major.minor...`) has the Mosaic GPU API the kernels use."""
  try:
    major, minor = (int(part) for part in version.split('.')[:2])
  except ValueError:
    return False
  return (major, minor) >= _MIN_JAX


def available() -> bool:
  """Whether the default backend's devices run the kernels: Hopper GPUs (compute capability
  9.x; `wgmma` is Hopper's instruction), with a JAX that has the API they use."""
  if jax.default_backend() != 'gpu' or not jax_version_supported():
    return False
  return all(str(getattr(d, 'compute_capability', '')).startswith('9.') for d in jax.devices())


def swizzled(columns: int, dtype) -> tuple:
  """Shared-memory transforms for a tile whose minor dimension has `columns` entries, in the
  layout `wgmma` reads."""
  swizzle = plgpu.find_swizzle(columns * jnp.dtype(dtype).itemsize * 8)
  return (plgpu.TilingTransform((8, swizzle // jnp.dtype(dtype).itemsize)),
          plgpu.SwizzleTransform(swizzle))


def silu_product(gate: Array, up: Array, dtype) -> Array:
  """`silu(gate) * up` on float32 accumulators, in `dtype`: gate and up rounded to `dtype` as
  XLA's GEMMs round their outputs, then silu and the product in float32, rounded once."""
  gate = gate.astype(dtype).astype(jnp.float32)
  up = up.astype(dtype).astype(jnp.float32)
  return (gate / (1.0 + jnp.exp(-gate)) * up).astype(dtype)


def chained_pipeline_state(loop_info) -> Array:
  """For a pipeline chained across the tiles of a persistent thread block
  (`plgpu.emit_pipeline_warp_specialized(pipeline_state=...)`): the first tile starts it,
  the last one drains it."""
  last = loop_info.num_local_steps - 1
  return jnp.where(loop_info.local_index == 0, plgpu.PipelinePipeline.START,
                   jnp.where(loop_info.local_index == last, plgpu.PipelinePipeline.STOP,
                             plgpu.PipelinePipeline.STEADY))


def pipeline(body: Callable[..., Any], compute_context: Callable[..., Any], state, *,
             steps: int, in_specs: list, stages: int):
  """A pipeline of `steps` steps over `in_specs` in a thread block of `persistent_kernel`:
  the memory warpgroup streams the operands through `stages` shared-memory buffers, the
  compute warpgroups run `body` on them (`plgpu.emit_pipeline_warp_specialized`)."""
  return plgpu.emit_pipeline_warp_specialized(
      body,
      grid=(steps,),
      memory_registers=40,
      in_specs=in_specs,
      wg_axis='wg',
      num_compute_wgs=COMPUTE_WARPGROUPS,
      max_concurrent_steps=stages,
      compute_context=compute_context,
      pipeline_state=state,
  )


def persistent_kernel(body: Callable[..., Any], out_type: jax.ShapeDtypeStruct, *, name: str,
                      tiles: int, chained: bool, num_sms: int | None, interpret: bool):
  """`body` as a kernel of persistent thread blocks (grid axis 'sm', looping over `tiles`
  tiles) of `COMPUTE_WARPGROUPS` compute warpgroups and one memory warpgroup (axis 'wg').

  name: the kernel's name, the prefix of what profiles call it ('NAME_mosaic_gpu...'); Pallas
    takes it from the body function's name.

  num_sms: thread blocks; None: the device's multiprocessors (a chained pipeline needs two
    tiles per block: one starts it, one stops it).
  interpret: Pallas' Mosaic GPU interpreter (any backend), for tests.
  """
  if num_sms is None:
    num_sms = jax.devices()[0].core_count if not interpret else 4
  num_sms = max(1, min(num_sms, tiles // 2 if chained else tiles))
  options = {}
  if interpret:
    # Private in the JAX versions this runs on; only tests use it.
    from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams  # pylint: disable=g-import-not-at-top
    options['interpret'] = InterpretGPUParams()
  named_body = lambda *refs: body(*refs)
  named_body.__name__ = named_body.__qualname__ = name
  return plgpu.kernel(
      named_body,
      out_type=out_type,
      grid=(num_sms,),
      grid_names=('sm',),
      num_threads=COMPUTE_WARPGROUPS + 1,
      thread_name='wg',
      compiler_params=plgpu.CompilerParams(
          lowering_semantics=plgpu.LoweringSemantics.Warpgroup),
      **options,
  )

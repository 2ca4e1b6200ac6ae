"""Device mesh, shardings and multi-host setup, in one place.

Training is data parallel over a one-axis `Mesh` ('data') of every device of every process:
batch, ACT carry and metrics are sharded over the batch axis, parameters, optimizer state and
the puzzle-embedding table are replicated. The same code runs on one CPU, N fake CPU devices,
GPUs and TPU pod slices.
"""

import functools
import os
from typing import Any, Sequence

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
# How the train step is spread over the mesh (`train.data_parallel`): 'shard_map' runs the
# forward and backward pass per device and sums float32 gradients explicitly; 'auto' leaves
# the partitioning of the whole step, and so where and in which precision partial gradients
# are reduced, to XLA.
DATA_PARALLEL_MODES = ('shard_map', 'auto')


def maybe_initialize_distributed() -> None:
  """Calls `jax.distributed.initialize()` when launched as one of several processes.

  On TPU pod slices and under SLURM/Open MPI, JAX detects the cluster itself. Elsewhere set
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (used by the multi-process
  tests on CPU).
  """
  if jax.distributed.is_initialized():
    return
  coordinator = os.environ.get('JAX_COORDINATOR_ADDRESS')
  if coordinator:
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=int(os.environ['JAX_NUM_PROCESSES']),
        process_id=int(os.environ['JAX_PROCESS_ID']))
  elif _on_tpu_pod() or 'SLURM_JOB_ID' in os.environ or 'OMPI_COMM_WORLD_SIZE' in os.environ:
    jax.distributed.initialize()
  logging.info('Process %d of %d; %d local of %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _on_tpu_pod() -> bool:
  return 'TPU_WORKER_HOSTNAMES' in os.environ and ',' in os.environ['TPU_WORKER_HOSTNAMES']


def create_mesh(devices: Sequence[Any] | None = None) -> Mesh:
  """A one-axis mesh over `devices` (default: every device of every process)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_divisible(global_batch_size: int, key: str) -> None:
  """The global batch must split evenly over devices and processes."""
  devices, processes = jax.device_count(), jax.process_count()
  if global_batch_size % devices:
    raise ValueError(f'{key} = {global_batch_size} is not divisible by the number of devices '
                     f'({devices}).')
  if global_batch_size % processes:
    raise ValueError(f'{key} = {global_batch_size} is not divisible by the number of processes '
                     f'({processes}).')


def local_batch_size(global_batch_size: int) -> int:
  return global_batch_size // jax.process_count()


def global_batch_from_local(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, Any]:
  """Assembles each process's rows into global arrays sharded over the batch axis."""
  sharding = batch_sharded(mesh)
  processes = jax.process_count()

  def put(x):
    x = np.asarray(x)
    global_shape = (x.shape[0] * processes,) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return {key: put(value) for key, value in local_batch.items()}


def fetch(tree: Any) -> Any:
  """Device values to host NumPy; gathers batch-sharded arrays from every process."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree_util.tree_map(get, tree)


def peak_device_memory_gb() -> float | None:
  """The largest allocator peak (bytes in use at once) over this process's devices, in GB;
  None where devices report no memory statistics (CPUs)."""
  peaks = [(device.memory_stats() or {}).get('peak_bytes_in_use')
           for device in jax.local_devices()]
  if not peaks or any(peak is None for peak in peaks):
    return None
  return round(max(peaks) / 1e9, 2)


# XLA:CPU's default schedule orders a program for concurrency and keeps many more buffers
# alive at once: the ARC train step at batch 8 needs 8.9 GiB of temporaries with it and
# 6.6 GiB with the memory-optimised schedule, which runs the same operations in another
# order (bit-identical results; docs/scale.md). The enum comes first: recent XLA accepts the
# older boolean as a compile option but ignores it.
_CPU_MEMORY_SCHEDULES = (
    {'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'},
    {'xla_cpu_enable_concurrency_optimized_scheduler': False},
)


@functools.cache
def compiler_options() -> dict[str, Any] | None:
  """XLA options of the train step: on CPU the memory-optimised schedule, in the first
  spelling this XLA accepts; None on accelerators."""
  if jax.default_backend() != 'cpu':
    return None
  for options in _CPU_MEMORY_SCHEDULES:
    try:
      jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()
    except Exception:  # pylint: disable=broad-except
      continue  # An XLA without this option.
    return options
  return None

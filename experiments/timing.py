"""Timing of one jitted function on the device, shared by the kernel benchmarks."""

import functools
import statistics
import time
from typing import Callable

import jax


def chained_median_ms(fn: Callable[[jax.Array], jax.Array], x: jax.Array, chain: int,
                      reps: int) -> float:
  """Milliseconds per application of `fn`: `chain` applications in one jitted function
  (each on the previous output, so none can be skipped), timed `reps` times after a warm-up
  run that compiles it; the median divided by `chain`."""
  chained = jax.jit(lambda y: functools.reduce(lambda z, _: fn(z), range(chain), y))
  jax.block_until_ready(chained(x))
  runs = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(chained(x))
    runs.append((time.perf_counter() - start) / chain)
  return statistics.median(runs) * 1e3

"""Timing and checking of one jitted function on the device, for kernel benchmarks, and the
parsing, rows and tables those benchmarks share."""

import functools
import json
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


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


def measure(fn: Callable[[jax.Array], jax.Array], x: jax.Array, reference: jax.Array,
            flop: float, chain: int, reps: int) -> dict[str, Any]:
  """`{'ms', 'tflops', 'rel_error'}` of `fn` on `x` (time per application as
  `chained_median_ms`; error: relative L2 distance of `fn(x)` to the float32 `reference`), or
  `{'failed': 'Error: message'}` when it does not compile or run (a tile a backend rejects)."""
  try:
    out = jax.jit(fn)(x)
    error = float(jnp.linalg.norm(out.astype(jnp.float32) - reference)
                  / jnp.linalg.norm(reference))
    ms = chained_median_ms(fn, x, chain, reps)
  except Exception as e:  # pylint: disable=broad-except
    return {'failed': f'{type(e).__name__}: {str(e)[:200]}'}
  return {'ms': round(ms, 3), 'tflops': round(flop / ms / 1e9, 1),
          'rel_error': float(f'{error:.2e}')}


def rotating_median_ms(fn: Callable[..., jax.Array], inputs: list[tuple[jax.Array, ...]],
                       reps: int, calls: int = 30) -> float:
  """Milliseconds per call of the jitted `fn`: `calls` calls dispatched back to back,
  rotating over the argument tuples in `inputs` (so no call reads an input the previous one
  left in the cache), timed `reps` times after one call per tuple; the median."""
  jax.block_until_ready([fn(*args) for args in inputs])
  runs = []
  for _ in range(reps):
    start = time.perf_counter()
    out = [fn(*inputs[i % len(inputs)]) for i in range(calls)]
    jax.block_until_ready(out)
    runs.append((time.perf_counter() - start) / calls)
  return statistics.median(runs) * 1e3


def measure_calls(fn: Callable[..., jax.Array], inputs: list[tuple[jax.Array, ...]],
                  reference: jax.Array, flop: float, reps: int,
                  calls: int = 30) -> dict[str, Any]:
  """`{'ms', 'tflops', 'rel_error'}` of `fn` (time per call as `rotating_median_ms`; error:
  relative L2 distance of `fn(*inputs[0])` to the float32 `reference`), or
  `{'failed': 'Error: message'}` when it does not compile or run."""
  try:
    out = fn(*inputs[0]).astype(jnp.float32)
    error = float(jnp.linalg.norm(out - reference) / jnp.linalg.norm(reference))
    ms = rotating_median_ms(fn, inputs, reps, calls)
  except Exception as e:  # pylint: disable=broad-except
    return {'failed': f'{type(e).__name__}: {str(e)[:300]}'}
  return {'rel_error': float(f'{error:.2e}'), 'ms': round(ms, 4),
          'tflops': round(flop / ms / 1e9, 1)}


def report_calls(shape: str, variant: str, fn: Callable[..., jax.Array],
                 inputs: list[tuple[jax.Array, ...]], reference: jax.Array, flop: float,
                 reps: int, calls: int = 30) -> dict[str, Any]:
  """`measure_calls`' result as a row `{'shape', 'variant', ...}`, printed as a JSON line."""
  row = {'shape': shape, 'variant': variant,
         **measure_calls(fn, inputs, reference, flop, reps, calls)}
  print(json.dumps(row), flush=True)
  return row


def parse_tiling(text: str, flag: str, fields: str) -> tuple[list[int], bool]:
  """One entry `V1:...:Vk:c|u` of a kernel-tiling flag (`fields` names the integers, e.g.
  'BN:BH:S'): the integers, and whether the pipeline is chained (c) or one per tile (u)."""
  *sizes, chained = text.split(':')
  try:
    values = [int(v) for v in sizes]
  except ValueError:
    values = []
  if len(values) != len(fields.split(':')):
    raise ValueError(f'--{flag}: expected {fields}:c|u, got {text!r}.')
  if chained not in ('c', 'u'):
    raise ValueError(f'--{flag}: the last field of {text!r} must be c or u.')
  return values, chained == 'c'


def print_table(rows: list[dict[str, Any]]) -> None:
  """The rows of `measure_calls` (with 'shape' and 'variant') as a table, failures cut short."""
  print('\nshape | variant | ms per call | TFLOP/s | relative error')
  for row in rows:
    print(f"{row['shape']} | {row['variant']} | {row.get('ms', row.get('failed', '')[:80])} | "
          f"{row.get('tflops', '')} | {row.get('rel_error', '')}")

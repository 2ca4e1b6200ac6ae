r"""Times the real jitted train step and evaluation on random tokens; prints one JSON line.

  python -m experiments.benchmark --config=sudoku_extreme_mlp [--batch=768] [--steps=20] \
      [--config.model.remat_policy=dots ...]

Fields match the reference measurement (TRM_REFERENCE.md §10): task, batch, device,
warmup_s, train_step_ms, train_examples_per_s, train_tflops, eval_puzzles_per_s, peak_mem_gb.
"""

import json
import os
import pathlib
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from experiments import cli
from experiments import profiling
from tiny_recursive import atomic_files
from tiny_recursive import evaluation
from tiny_recursive import flops
from tiny_recursive import model as model_lib
from tiny_recursive import sharding
from tiny_recursive import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config name or path.')
_BATCH = flags.DEFINE_integer('batch', 0, 'Global batch size (default: the config\'s).')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed train steps.')
_EVAL_BATCHES = flags.DEFINE_integer('eval_batches', 3, 'Timed eval batches.')
_NUM_IDS = flags.DEFINE_integer('num_puzzle_identifiers', 1000,
                                'Rows of the puzzle-embedding table to benchmark with.')
_SKIP_EVAL = flags.DEFINE_bool('skip_eval', False, 'Time only the train step.')
_PROFILE_DIR = flags.DEFINE_string(
    'profile_dir', '',
    'If set, also trace 3 train steps there (and write the train step\'s optimized HLO, '
    'train_step.hlo.txt) and print device time per kernel, naming what each fusion computes.')


def random_batch(rng: np.random.Generator, batch: int, seq_len: int, vocab: int,
                 num_ids: int) -> dict[str, np.ndarray]:
  labels = rng.integers(1, vocab, (batch, seq_len)).astype(np.int32)
  return {'inputs': rng.integers(1, vocab, (batch, seq_len)).astype(np.int32),
          'labels': labels,
          'puzzle_identifiers': rng.integers(0, num_ids, (batch,)).astype(np.int32)}


def main(argv):
  del argv
  config = _CONFIG.value
  if _BATCH.value:
    config.train.global_batch_size = _BATCH.value
    config.eval.global_batch_size = _BATCH.value
  batch_size = config.train.global_batch_size
  sharding.check_batch_divisible(batch_size, 'train.global_batch_size')
  seq_len, vocab = config.data.seq_len, config.data.vocab_size
  model = model_lib.build_model(config.model, seq_len=seq_len, vocab_size=vocab,
                                num_puzzle_identifiers=_NUM_IDS.value)
  mesh = sharding.create_mesh()
  schedules = train.make_schedules(config, total_steps=10_000)
  tx = train.make_optimizer(config, schedules)
  state = train.create_train_state(model, tx, config, jax.random.key(config.seed))
  state_sharding = train.state_shardings(state, mesh)
  state = jax.device_put(state, state_sharding)
  train_step = train.jit_train_step(model, tx, schedules, config, mesh, state_sharding)
  rng = np.random.default_rng(0)
  batch = sharding.global_batch_from_local(
      mesh, random_batch(rng, sharding.local_batch_size(batch_size), seq_len, vocab,
                         _NUM_IDS.value))

  start = time.perf_counter()
  for _ in range(2):  # Compile, then one more step so allocation settles.
    state, metrics = train_step(state, batch)
  jax.block_until_ready((state, metrics))
  warmup_s = time.perf_counter() - start

  start = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = train_step(state, batch)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - start) / _STEPS.value
  train_flops = flops.supervision_step_flops(config.model, batch_size, seq_len, vocab,
                                             model.puzzle_emb_len, train=True)
  result = {
      'task': config.data.name + ('/' + config.data.builder_config
                                  if config.data.builder_config else ''),
      'mixer': config.model.mixer,
      'batch': batch_size,
      'device': f'{jax.device_count()}x {jax.devices()[0].device_kind}',
      'warmup_s': round(warmup_s, 1),
      'train_step_ms': round(step_s * 1e3, 1),
      'train_examples_per_s': round(batch_size / step_s),
      'train_tflops': round(train_flops / step_s / 1e12, 1),
  }
  if not _SKIP_EVAL.value:
    eval_step = evaluation.jit_fixed_steps_pass(model, mesh, config.data.ignore_label_id)
    eval_batch = dict(batch, mask=jnp.ones((batch_size,), bool))
    eval_batch['mask'] = sharding.global_batch_from_local(
        mesh, {'mask': np.ones((sharding.local_batch_size(batch_size),), bool)})['mask']
    weights = state.eval_params()
    jax.block_until_ready(eval_step(weights, state.constants, state.puzzle_table, eval_batch))
    start = time.perf_counter()
    for _ in range(_EVAL_BATCHES.value):
      out = eval_step(weights, state.constants, state.puzzle_table, eval_batch)
    jax.block_until_ready(out)
    eval_s = (time.perf_counter() - start) / _EVAL_BATCHES.value
    result['eval_puzzles_per_s'] = round(batch_size / eval_s)
  result['peak_mem_gb'] = sharding.peak_device_memory_gb()
  if _PROFILE_DIR.value:
    trace_dir = os.path.join(_PROFILE_DIR.value, 'trace')
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(3):
        state, metrics = train_step(state, batch)
      jax.block_until_ready((state, metrics))
    # The program just traced, from the compilation cache; its HLO names what each fusion does.
    hlo_text = train_step.lower(state, batch).compile().as_text()
    atomic_files.write_atomically(os.path.join(_PROFILE_DIR.value, 'train_step.hlo.txt'),
                                  lambda path: pathlib.Path(path).write_text(hlo_text))
    print(profiling.kernel_table(trace_dir, steps=3,
                                 descriptions=profiling.fusion_descriptions(hlo_text)),
          flush=True)
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  cli.run(main)

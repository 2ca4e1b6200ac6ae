r"""Trains the same steps from the same state on one device and on several; compares them.

  python -m experiments.compare_devices --config=sudoku_extreme_mlp \
      --config.data.data_dir=.data/tfds --runs=1:shard_map,2:shard_map,2:auto --steps=1,20

Both runs take their batches from the trainer's own input pipeline and batch path, start
from the state `config.seed` gives, and run the real jitted `train_step`. After each step
count in `--steps` it prints, per state field (parameters, EMA, optimizer moments, puzzle
table, ACT carry), the relative L2 difference ||a - b|| / ||a|| of the worst leaf, and the
metrics of both runs. After step 1 the first AdamATan2 moment is (1 - beta1) x the gradient,
so its row compares the gradients themselves. It also lists the cross-device collectives of
each compiled step by element type (a bfloat16 all-reduce sums rounded partial gradients).
"""

import collections
import copy
import re
from typing import Any

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from experiments import cli
from tiny_recursive import model as model_lib
from tiny_recursive import sharding
from tiny_recursive import train
from tiny_recursive import trainer
from tiny_recursive.data import pipeline

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config name or path.')
_RUNS = flags.DEFINE_list(
    'runs', ['1:shard_map', '2:shard_map'],
    'Runs to compare as N:MODE (N first devices, MODE a train.data_parallel value); the '
    'first is the baseline.')
_STEPS = flags.DEFINE_list('steps', ['1', '20'], 'Step counts after which to compare.')
_TOP = flags.DEFINE_integer('top', 8, 'Worst leaves to list at the last comparison.')

COLLECTIVE = re.compile(
    r'^\s*(?:ROOT )?%?\S+ = (.*?) (all-reduce|all-gather|reduce-scatter|all-to-all|'
    r'collective-permute)(?:-start)?\(')


def collectives(compiled_text: str) -> dict[str, int]:
  """Counts the compiled program's collectives by kind and element type ('all-reduce bf16')."""
  counts = collections.Counter()
  for line in compiled_text.splitlines():
    match = COLLECTIVE.search(line)
    if match:
      for dtype in set(re.findall(r'\b(bf16|f16|f32|f64|s32|u32|pred|s8|u8)\[', match.group(1))):
        counts[f'{match.group(2)} {dtype}'] += 1
  return dict(sorted(counts.items()))


def flat_leaves(state: train.TrainState) -> dict[str, np.ndarray]:
  """Host copies of every leaf, keyed by its path ('params/net/...')."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(sharding.fetch(state))[0]:
    key = '/'.join(str(getattr(p, 'key', getattr(p, 'name', getattr(p, 'idx', p))))
                   for p in path)
    out[key] = np.asarray(leaf)
  return out


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
  a64, b64 = a.astype(np.float64), b.astype(np.float64)
  norm = np.linalg.norm(a64)
  diff = np.linalg.norm(a64 - b64)
  return float(diff / norm) if norm > 0 else float(diff)


class Setup:
  """The run's data, model and optimizer, built as the trainer builds them (no mesh)."""

  def __init__(self, config):
    train_split, test_split = trainer.load_splits(config)
    self.pipes = pipeline.build_pipelines(config, train_split, test_split, 0, 1)
    self.model = model_lib.build_model(
        config.model, seq_len=config.data.seq_len, vocab_size=config.data.vocab_size,
        num_puzzle_identifiers=self.pipes.num_puzzle_identifiers)
    self.schedules = train.make_schedules(
        config, trainer.run_numbers(config, self.pipes).schedule_steps)
    self.tx = train.make_optimizer(config, self.schedules)
    self.init = lambda key: train.create_train_state(self.model, self.tx, config, key)


def run(config, num_devices: int, mode: str, steps: list[int], batches: list[dict[str, np.ndarray]],
        setup: Any) -> tuple[dict[int, dict[str, np.ndarray]], list[dict[str, float]], dict]:
  """Trains max(steps) steps on the first `num_devices` devices; returns states and metrics."""
  config = copy.deepcopy(config)
  config.train.data_parallel = mode
  mesh = sharding.create_mesh(jax.devices()[:num_devices])
  abstract = jax.eval_shape(setup.init, jax.random.key(config.seed))
  state_sharding = train.state_shardings(abstract, mesh)
  state = jax.jit(setup.init, out_shardings=state_sharding)(jax.random.key(config.seed))
  step_fn = train.jit_train_step(setup.model, setup.tx, setup.schedules, config, mesh,
                                 state_sharding)
  first = sharding.global_batch_from_local(mesh, batches[0])
  compiled = step_fn.lower(state, first).compile()
  saved, metrics_log = {}, []
  for i in range(max(steps)):
    state, metrics = compiled(state, sharding.global_batch_from_local(mesh, batches[i]))
    metrics = {k: float(v) for k, v in sharding.fetch(metrics).items()}
    metrics_log.append(metrics)
    if i + 1 in steps:
      saved[i + 1] = flat_leaves(state)
  return saved, metrics_log, collectives(compiled.as_text())


def field_of(key: str) -> str:
  parts = key.split('/')
  if parts[0] == 'opt_state':
    moment = next((p for p in parts if p in ('mu', 'nu')), 'other')
    return f'opt_state/{moment}'
  return parts[0]


def main(argv):
  del argv
  config = _CONFIG.value
  runs = []
  for item in _RUNS.value:
    count, _, mode = item.partition(':')
    if not count.isdigit() or mode not in sharding.DATA_PARALLEL_MODES:
      raise app.UsageError(f'--runs: {item!r} is not N:MODE with MODE one of '
                           f'{sharding.DATA_PARALLEL_MODES}.')
    if int(count) > jax.device_count():
      raise app.UsageError(f'--runs: {item!r} asks for {count} devices; '
                           f'{jax.device_count()} are present.')
    runs.append((item, int(count), mode))
  steps = sorted(int(n) for n in _STEPS.value)
  setup = Setup(config)
  train_iter = iter(setup.pipes.train)
  batches = [next(train_iter) for _ in range(max(steps))]
  results = {name: run(config, n, mode, steps, batches, setup) for name, n, mode in runs}
  base = runs[0][0]
  base_states, base_metrics, _ = results[base]
  for name, _, _ in runs:
    print(f'collectives, {name}: {results[name][2]}')
  for name, _, _ in runs[1:]:
    states, metrics, _ = results[name]
    for step in steps:
      worst = collections.defaultdict(lambda: (0.0, ''))
      per_leaf = []
      for key, value in base_states[step].items():
        if not np.issubdtype(value.dtype, np.floating) and value.dtype != np.dtype('bfloat16'):
          diff = float(np.mean(value != states[step][key]))  # Fraction of entries that differ.
        else:
          diff = relative_difference(value, states[step][key])
        per_leaf.append((diff, key))
        field = field_of(key)
        worst[field] = max(worst[field], (diff, key))
      print(f'\n{base} vs {name} after {step} step(s): worst relative L2 difference per field '
            '(integer/bool leaves: fraction of entries that differ)')
      for field, (diff, key) in sorted(worst.items()):
        print(f'  {field:<20} {diff:10.3e}  {key}')
      if step == steps[-1]:
        print(f'  worst {_TOP.value} leaves:')
        for diff, key in sorted(per_leaf, reverse=True)[:_TOP.value]:
          print(f'    {diff:10.3e}  {key}')
    print(f'\nmetrics per step ({base} | {name}): summed lm_loss, q_halt_loss, count, accuracy')
    for i, (a, b) in enumerate(zip(base_metrics, metrics)):
      if i + 1 in steps or i < 3:
        print(f'  step {i + 1:4d}: ' + '  '.join(
            f'{key} {a[key]:.7g} | {b[key]:.7g}' for key in ('lm_loss', 'q_halt_loss', 'count',
                                                            'accuracy')))


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  cli.run(main)

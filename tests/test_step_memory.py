"""The compiled ARC train step's temporaries on CPU stay near what its backward pass keeps.

On a CPU the device is the host: the step's temporaries are most of an ARC run's resident
set at its first step (docs/scale.md). They are float32 attention scores [batch, heads, T, T]
above all, kept for the backward pass of every differentiated attention call. With the
memory-optimised schedule (`sharding.compiler_options`) the step holds 2.9 of them per such
call at batch 1; XLA:CPU's default schedule, which runs independent operations
concurrently, 4.4. Compiled only: nothing is allocated or run.
"""

import jax
import pytest

from experiments import config_loading
from experiments import program_fingerprint

SCORES_PER_DIFFERENTIATED_CALL = 3.5


def _compiled_train_step(config, num_puzzle_identifiers: int):
  """The trainer's train step of `config` on one device, compiled for abstract inputs."""
  run = program_fingerprint.abstract_training(config, program_fingerprint.make_mesh(1),
                                              num_puzzle_identifiers, steps=10)
  return run.model, run.step.lower(run.state, run.batch).compile()


def test_arc_train_step_temporaries_on_cpu_stay_under_a_bound_from_the_attention_sizes():
  if jax.default_backend() != 'cpu':
    pytest.skip('XLA:CPU schedule')
  config = config_loading.load_config('arc_agi1')
  config.train.global_batch_size = 1
  model, compiled = _compiled_train_step(config, num_puzzle_identifiers=16)
  m = config.model
  score_bytes = config.train.global_batch_size * m.num_heads * model.total_len**2 * 4
  differentiated_calls = (m.l_cycles + 1) * m.num_layers  # The last H cycle.
  temporaries = compiled.memory_analysis().temp_size_in_bytes
  scores = temporaries / (differentiated_calls * score_bytes)
  assert scores <= SCORES_PER_DIFFERENTIATED_CALL, (
      f'{temporaries / 2**30:.2f} GiB of temporaries: {scores:.2f} float32 attention score '
      f'matrices per differentiated attention call')

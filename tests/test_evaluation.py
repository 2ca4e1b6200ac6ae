"""Tests of tiny_recursive/evaluation.py: the fixed-steps and early-exit passes agree."""

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import tiny
from tiny_recursive import act
from tiny_recursive import evaluation
from tiny_recursive import model as model_lib


def _setup(q_bias: float):
  config = tiny.get_config()
  config.model.halt_max_steps = 4
  model = model_lib.build_model(config.model, seq_len=81, vocab_size=11,
                                num_puzzle_identifiers=3)
  variables = model.init(jax.random.key(0))
  params = variables['params']
  rng = np.random.default_rng(0)
  # A q head that halts some puzzles early and others never.
  params['q_head']['kernel'] = jnp.asarray(rng.normal(0, 0.5, (32, 2)), jnp.float32)
  params['q_head']['bias'] = jnp.asarray([q_bias, 0.0], jnp.float32)
  table = jnp.asarray(rng.normal(0, 1, (3, 32)), jnp.float32)
  labels = rng.integers(2, 11, (12, 81)).astype(np.int32)
  batch = {'inputs': jnp.asarray(np.where(rng.random((12, 81)) < 0.5, 1, labels)),
           'labels': jnp.asarray(labels),
           'puzzle_identifiers': jnp.asarray(rng.integers(0, 3, 12), jnp.int32),
           'mask': jnp.asarray(np.arange(12) < 10)}  # Two padding rows.
  return config, model, params, variables['constants'], table, batch


def test_early_exit_matches_the_fixed_pass_adaptive_metrics():
  for q_bias in (-0.3, 0.0, 0.3):
    config, model, params, constants, table, batch = _setup(q_bias)
    fixed = evaluation.fixed_steps_pass(params, constants, table, batch, model=model,
                                        ignore_label_id=0)
    early = evaluation.early_exit_pass(params, constants, table, batch, model=model,
                                       ignore_label_id=0)
    assert int(early['count']) == 10
    assert int(early['adaptive_exact_accuracy']) == int(
        fixed['metrics']['adaptive_exact_accuracy'])
    assert int(early['adaptive_steps']) == int(fixed['metrics']['adaptive_steps'])
    # The batch runs until its slowest real puzzle halts, never beyond the limit.
    run = act.run_eval_steps(model, params, constants,
                             model.puzzle_rows(table, batch['puzzle_identifiers']),
                             batch['inputs'], config.model.halt_max_steps)
    halt_steps = np.asarray(run.halt_step)[:10]
    assert int(early['batch_steps']) == halt_steps.max() <= config.model.halt_max_steps


def test_early_exit_stops_when_every_puzzle_halts_at_once():
  config, model, params, constants, table, batch = _setup(10.0)
  params['q_head']['kernel'] = jnp.zeros_like(params['q_head']['kernel'])
  early = evaluation.early_exit_pass(params, constants, table, batch, model=model,
                                     ignore_label_id=0)
  assert int(early['batch_steps']) == 1
  assert int(early['adaptive_steps']) == 10

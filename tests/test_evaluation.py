"""Tests of tiny_recursive/evaluation.py: the fixed-steps and early-exit passes agree; test-time
scaling (steps, trajectories) keeps the reference pass and runs alike on one and two devices."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import tiny
from tiny_recursive import act
from tiny_recursive import evaluation
from tiny_recursive import model as model_lib
from tiny_recursive import sharding

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


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


# --- Test-time scaling ---


def _pass(model, settings, batch_number=0):
  fn = lambda p, c, t, b, n: evaluation.fixed_steps_pass(p, c, t, b, n, model=model,
                                                         ignore_label_id=0, settings=settings)
  return jax.jit(fn), batch_number


def _metrics(out):
  return {key: float(value) for key, value in out['metrics'].items()}


def test_reference_settings_build_the_unchanged_pass():
  config, model, params, constants, table, batch = _setup(0.0)
  default = lambda p: evaluation.fixed_steps_pass(p, constants, table, batch, model=model,
                                                  ignore_label_id=0)
  explicit = lambda p: evaluation.fixed_steps_pass(
      p, constants, table, batch, 5, model=model, ignore_label_id=0,
      settings=act.EvalSettings(num_steps=4))
  assert str(jax.make_jaxpr(default)(params)) == str(jax.make_jaxpr(explicit)(params))
  config.eval.global_batch_size = 12
  mesh = sharding.create_mesh()
  evaluators = evaluation.build_evaluators(config, model, mesh, [])
  assert evaluators.exact._settings is None  # pylint: disable=protected-access
  config.eval.num_steps = 8
  evaluators = evaluation.build_evaluators(config, model, mesh, [])
  assert evaluators.exact._settings == act.EvalSettings(8)  # pylint: disable=protected-access


def test_trajectory_metrics():
  config, model, params, constants, table, batch = _setup(0.0)
  del config
  reference = _metrics(evaluation.fixed_steps_pass(params, constants, table, batch,
                                                   model=model, ignore_label_id=0))
  fn, _ = _pass(model, act.EvalSettings(4, num_trajectories=3))
  no_noise = fn(params, constants, table, batch, jnp.int32(0))
  assert no_noise['preds'].shape == (12, 81)
  no_noise = _metrics(no_noise)
  assert no_noise.pop('any_trajectory_exact_accuracy') == reference['exact_accuracy']
  assert no_noise == pytest.approx(reference, abs=1e-5)

  # Labels equal to the noiseless prediction of rows 0-4: solved without noise; with noise
  # some trajectory or other keeps them, or not; counted among real rows only.
  solved = np.asarray(evaluation.fixed_steps_pass(params, constants, table, batch,
                                                  model=model, ignore_label_id=0)['preds'])
  labels = np.where(np.arange(12)[:, None] < 5, solved, np.asarray(batch['labels']))
  batch = dict(batch, labels=jnp.asarray(labels))
  fn, _ = _pass(model, act.EvalSettings(4, num_trajectories=4, trajectory_noise=0.05))
  first, second = (fn(params, constants, table, batch, jnp.int32(n)) for n in (0, 1))
  metrics = _metrics(first)
  assert metrics['count'] == 10
  assert metrics['exact_accuracy'] <= metrics['any_trajectory_exact_accuracy'] <= 10
  assert metrics['any_trajectory_exact_accuracy'] >= 1
  # The batch number keys the noise: another batch position draws other noise.
  assert not np.array_equal(np.asarray(first['q_halt']), np.asarray(second['q_halt']))
  again = fn(params, constants, table, batch, jnp.int32(0))
  np.testing.assert_array_equal(np.asarray(again['q_halt']), np.asarray(first['q_halt']))


_TWO_DEVICES = r'''
import jax, jax.numpy as jnp, numpy as np
from tests.test_evaluation import _setup
from tiny_recursive import act, evaluation, sharding
assert jax.device_count() == 2
config, model, params, constants, table, batch = _setup(0.0)
settings = act.EvalSettings(5, num_trajectories=3, trajectory_noise=0.2, noise_seed=3)
results = []
for devices in (jax.devices()[:1], jax.devices()):
  mesh = sharding.create_mesh(devices)
  step = evaluation.jit_fixed_steps_pass(model, mesh, 0, settings)
  out = jax.device_get(step(params, constants, table, batch, 2))
  results.append(out)
one, two = results
np.testing.assert_array_equal(one['preds'], two['preds'])
np.testing.assert_allclose(one['q_halt'], two['q_halt'], rtol=1e-5, atol=1e-5)
for key in one['metrics']:
  assert float(one['metrics'][key]) == float(two['metrics'][key]), key
print('TWO_DEVICES_OK')
'''


@pytest.mark.slow
def test_noisy_trajectories_on_two_devices_match_one():
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2',
             PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  result = subprocess.run([sys.executable, '-c', _TWO_DEVICES], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'TWO_DEVICES_OK' in result.stdout

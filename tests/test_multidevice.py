"""1 CPU device vs 8 fake CPU devices: the same global batch gives the same training run.

Each run is a subprocess of the entry point (XLA's device count is fixed at start-up).
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tiny_recursive import metrics_logging

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_STEPS = 6

pytestmark = pytest.mark.slow


def run_tiny(workdir: str, num_devices: int, base: pathlib.Path) -> dict[str, float]:
  """Trains the tiny config for 6 steps on `num_devices` CPU devices; returns the final eval."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}',
             JAX_COMPILATION_CACHE_DIR=str(base / 'jax_compilation_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  command = [sys.executable, '-m', 'experiments.main', '--config=tiny', f'--workdir={workdir}',
             f'--config.data.data_dir={base / "sudoku_sample_data"}',
             f'--config.train.max_steps={MAX_STEPS}', '--config.train.log_every_steps=1',
             '--config.train.checkpoint_every_steps=100', '--config.eval.max_examples=32']
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=240, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return metrics_logging.read_metrics(workdir)


def test_one_and_eight_devices_train_alike(tmp_path, tmp_path_factory):
  """Losses agree to 1e-5 relative; counts and halting agree exactly.

  With 8 devices the per-example sums of the loss and of the gradients are reduced across
  devices in a different order than on one device, so float32 results differ in the last
  bits (~1e-7 relative per step); over 6 steps of Adam-type updates this stays far below
  1e-5. A real sharding bug (a wrong batch split, an unreduced gradient) changes the loss
  at the first or second decimal.
  """
  base = tmp_path_factory.getbasetemp()
  single = run_tiny(str(tmp_path / 'one'), 1, base)
  multi = run_tiny(str(tmp_path / 'eight'), 8, base)
  single_train = [r for r in single if r['split'] == 'train']
  multi_train = [r for r in multi if r['split'] == 'train']
  assert [r['step'] for r in single_train] == list(range(1, MAX_STEPS + 1))
  assert [r['step'] for r in multi_train] == list(range(1, MAX_STEPS + 1))
  for key in ('lm_loss', 'q_halt_loss', 'accuracy', 'lr'):
    np.testing.assert_allclose([r[key] for r in multi_train], [r[key] for r in single_train],
                               rtol=1e-5, atol=1e-7, err_msg=key)
  for key in ('count', 'steps', 'exact_accuracy', 'q_halt_accuracy'):
    assert [r[key] for r in multi_train] == [r[key] for r in single_train], key
  single_eval = [r for r in single if r['split'] == 'eval'][-1]
  multi_eval = [r for r in multi if r['split'] == 'eval'][-1]
  for key in ('count', 'exact_accuracy', 'adaptive_mean_steps'):
    assert multi_eval[key] == single_eval[key], key
  np.testing.assert_allclose(multi_eval['accuracy'], single_eval['accuracy'], atol=1e-6)

"""A 2-process run on CPU (2 fake devices each) trains like a 1-process run on 4 devices.

Both processes are the real entry point, joined by `jax.distributed` through
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (see
`sharding.maybe_initialize_distributed`), and share one workdir, as hosts of a pod share a
bucket. Process 0 writes metrics.jsonl; each process writes its own data-iterator state.
"""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from tiny_recursive import metrics_logging

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_STEPS = 4
TIMEOUT_S = 240

pytestmark = pytest.mark.slow


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _command(workdir: str, base: pathlib.Path) -> list[str]:
  return [sys.executable, '-m', 'experiments.main', '--config=tiny', f'--workdir={workdir}',
          f'--config.data.data_dir={base / "sudoku_sample_data"}',
          f'--config.train.max_steps={MAX_STEPS}', '--config.train.log_every_steps=1',
          '--config.train.checkpoint_every_steps=2', '--config.eval.max_examples=32']


def _env(base: pathlib.Path, devices: int, **extra: str) -> dict[str, str]:
  return dict(os.environ, JAX_PLATFORMS='cpu',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
              JAX_COMPILATION_CACHE_DIR=str(base / 'jax_compilation_cache'),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', **extra)


def test_two_processes_match_one_process_with_four_devices(tmp_path, tmp_path_factory):
  """Same global batch of 16 over 4 devices either way: losses agree to 1e-5 relative.

  The cross-process reduction (gloo) sums in another order than one process does, hence a
  tolerance (float32 rounding, see test_multidevice.py) rather than equality.
  """
  base = tmp_path_factory.getbasetemp()
  # The sample is built once, by the reference run, before the two processes read it.
  reference_dir = str(tmp_path / 'one_process')
  reference = subprocess.run(_command(reference_dir, base), cwd=REPO_ROOT, env=_env(base, 4),
                             capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
  assert reference.returncode == 0, reference.stderr[-3000:]

  workdir = str(tmp_path / 'two_processes')
  address = f'localhost:{_free_port()}'
  logs = [tmp_path / f'process_{i}.log' for i in range(2)]
  processes = []
  for index, log_path in enumerate(logs):
    with open(log_path, 'w', encoding='utf-8') as log:
      processes.append(subprocess.Popen(
          _command(workdir, base), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
          env=_env(base, 2, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES='2',
                   JAX_PROCESS_ID=str(index))))
  try:
    for process in processes:
      process.wait(timeout=TIMEOUT_S)
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  for process, log_path in zip(processes, logs):
    assert process.returncode == 0, log_path.read_text()[-3000:]

  expected = metrics_logging.read_metrics(reference_dir, 'train')
  actual = metrics_logging.read_metrics(workdir, 'train')
  assert [r['step'] for r in actual] == list(range(1, MAX_STEPS + 1))
  for key in ('lm_loss', 'q_halt_loss', 'accuracy'):
    np.testing.assert_allclose([r[key] for r in actual], [r[key] for r in expected],
                               rtol=1e-5, atol=1e-7, err_msg=key)
  for key in ('count', 'steps'):
    assert [r[key] for r in actual] == [r[key] for r in expected], key
  expected_eval = metrics_logging.read_metrics(reference_dir, 'eval')[-1]
  actual_eval = metrics_logging.read_metrics(workdir, 'eval')[-1]
  assert actual_eval['count'] == expected_eval['count'] == 32
  np.testing.assert_allclose(actual_eval['accuracy'], expected_eval['accuracy'], atol=1e-6)
  # Both processes saved their data-iterator position in the shared checkpoint.
  iterator_dir = pathlib.Path(workdir) / 'checkpoints' / str(MAX_STEPS) / 'data_iterator'
  assert sorted(p.name for p in iterator_dir.glob('process_*.json')) == [
      'process_0.json', 'process_1.json']

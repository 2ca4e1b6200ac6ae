"""Faults against the real entry point (`python -m experiments.main`) in subprocesses.

kill -9 mid-run, SIGTERM, a damaged newest checkpoint, a non-finite loss and an unusable
workdir. Every run uses the `tiny` config on the committed Sudoku sample; a shared
persistent compilation cache lets the runs after the first reuse the compiled steps.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tiny_recursive import metrics_logging

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMING_KEYS = ('step_time_ms', 'eval_time_s')
RUN_TIMEOUT_S = 240
MAX_STEPS = 12

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def shared_dirs(tmp_path_factory) -> dict[str, str]:
  """The data dir and compilation cache shared by every run of the session."""
  base = tmp_path_factory.getbasetemp()
  return {'data_dir': str(base / 'sudoku_sample_data'),
          'cache_dir': str(base / 'jax_compilation_cache')}


def main_command(workdir: str, data_dir: str, *overrides: str) -> list[str]:
  """The command line of a short tiny run (12 steps, a checkpoint every 2, 32 eval puzzles)."""
  return [sys.executable, '-m', 'experiments.main', '--config=tiny', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', f'--config.train.max_steps={MAX_STEPS}',
          '--config.train.log_every_steps=1', '--config.train.checkpoint_every_steps=2',
          '--config.eval.max_examples=32', *overrides]


def main_env(cache_dir: str) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  env.pop('XLA_FLAGS', None)  # One CPU device.
  return env


def run_main(shared_dirs: dict[str, str], workdir: str, *overrides: str,
             timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
  return subprocess.run(main_command(workdir, shared_dirs['data_dir'], *overrides),
                        cwd=REPO_ROOT, env=main_env(shared_dirs['cache_dir']),
                        capture_output=True, text=True, timeout=timeout, check=False)


def start_main(shared_dirs: dict[str, str], workdir: str, log_path: pathlib.Path,
               *overrides: str) -> subprocess.Popen:
  """Starts a run in the background, its output going to `log_path`."""
  with open(log_path, 'w', encoding='utf-8') as log:
    return subprocess.Popen(main_command(workdir, shared_dirs['data_dir'], *overrides),
                            cwd=REPO_ROOT, env=main_env(shared_dirs['cache_dir']),
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def committed_steps(workdir: str) -> list[int]:
  """Steps with a finished checkpoint (Orbax renames a step directory into place last)."""
  directory = pathlib.Path(workdir) / 'checkpoints'
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def wait_for_checkpoint(process: subprocess.Popen, workdir: str, log_path: pathlib.Path,
                        timeout: float = RUN_TIMEOUT_S) -> None:
  deadline = time.monotonic() + timeout
  while not committed_steps(workdir):
    if process.poll() is not None:
      pytest.fail(f'Run ended (status {process.returncode}) before its first checkpoint:\n'
                  f'{log_path.read_text()[-3000:]}')
    if time.monotonic() > deadline:
      process.kill()
      process.wait()
      pytest.fail(f'No checkpoint within {timeout} s:\n{log_path.read_text()[-3000:]}')
    time.sleep(0.05)


def final_eval(result: subprocess.CompletedProcess) -> dict[str, float]:
  assert result.returncode == 0, result.stderr[-3000:]
  last_line = result.stdout.strip().splitlines()[-1]
  return without_timing(json.loads(last_line)['final_eval'])


def without_timing(row: dict[str, Any]) -> dict[str, Any]:
  return {key: value for key, value in row.items() if key not in TIMING_KEYS}


def last_rows_by_step(workdir: str, split: str) -> dict[int, dict[str, Any]]:
  """The last logged row of each step (a resumed run logs the replayed steps again)."""
  return {row['step']: without_timing(row)
          for row in metrics_logging.read_metrics(workdir, split)}


@pytest.fixture(scope='module')
def reference(shared_dirs, tmp_path_factory) -> tuple[str, dict[str, float]]:
  """(workdir, final eval) of an uninterrupted 12-step run."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  result = run_main(shared_dirs, workdir)
  return workdir, final_eval(result)


def test_kill_9_then_rerun_resumes_and_matches_the_uninterrupted_run(
    shared_dirs, reference, tmp_path):
  reference_dir, reference_eval = reference
  workdir = str(tmp_path / 'run')
  log_path = tmp_path / 'killed.log'
  process = start_main(shared_dirs, workdir, log_path)
  wait_for_checkpoint(process, workdir, log_path)
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL
  killed_at = max(last_rows_by_step(workdir, 'train'))
  assert killed_at < MAX_STEPS, 'the run ended before it could be killed'
  assert not last_rows_by_step(workdir, 'eval')

  rerun = run_main(shared_dirs, workdir)
  assert final_eval(rerun) == reference_eval
  train_rows = metrics_logging.read_metrics(workdir, 'train')
  # Resumed from a checkpoint, not from scratch: step 1 was logged once.
  assert [row['step'] for row in train_rows].count(1) == 1
  assert last_rows_by_step(workdir, 'train') == last_rows_by_step(reference_dir, 'train')
  assert committed_steps(workdir) == committed_steps(reference_dir)


def test_sigterm_saves_the_current_step_and_exits_cleanly(shared_dirs, tmp_path):
  workdir = str(tmp_path / 'run')
  log_path = tmp_path / 'terminated.log'
  process = start_main(shared_dirs, workdir, log_path, '--config.train.max_steps=200')
  wait_for_checkpoint(process, workdir, log_path)
  process.send_signal(signal.SIGTERM)
  try:
    process.wait(timeout=60)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
    pytest.fail(f'SIGTERM did not stop the run:\n{log_path.read_text()[-3000:]}')
  log = log_path.read_text()
  assert process.returncode == 0, log[-3000:]
  last_step = max(last_rows_by_step(workdir, 'train'))
  assert last_step < 200
  # The step trained when the signal arrived is saved, on or off the interval.
  assert committed_steps(workdir)[-1] == last_step
  assert f'saving step {last_step} and exiting' in log


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    shared_dirs, reference, tmp_path):
  reference_dir, reference_eval = reference
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference_dir, workdir)
  steps = committed_steps(workdir)
  assert steps[-1] == MAX_STEPS and len(steps) >= 2
  data_files = list((pathlib.Path(workdir) / 'checkpoints' / str(MAX_STEPS) / 'state')
                    .rglob('d/*'))
  assert data_files
  for path in data_files:
    with open(path, 'r+b') as f:
      f.truncate(7)

  rerun = run_main(shared_dirs, workdir)
  assert f'Checkpoint at step {MAX_STEPS}' in rerun.stderr
  assert 'falling back to the previous one' in rerun.stderr
  # Resumed from the previous checkpoint and retrained the lost steps to the same result.
  assert final_eval(rerun) == reference_eval
  assert last_rows_by_step(workdir, 'train') == last_rows_by_step(reference_dir, 'train')
  assert list((pathlib.Path(workdir) / 'checkpoints').glob(f'corrupt_{MAX_STEPS}_*'))


def _all_finite(tree: Any) -> bool:
  leaves = [np.asarray(leaf) for leaf in _leaves(tree)]
  return bool(leaves) and all(np.isfinite(leaf).all() for leaf in leaves
                              if np.issubdtype(leaf.dtype, np.floating))


def _leaves(tree: Any):
  if isinstance(tree, dict):
    for value in tree.values():
      yield from _leaves(value)
  elif isinstance(tree, (list, tuple)):
    for value in tree:
      yield from _leaves(value)
  elif tree is not None:
    yield tree


@pytest.mark.filterwarnings('ignore:Sharding info not provided')
def test_non_finite_loss_stops_with_the_step_and_keeps_good_checkpoints(
    shared_dirs, reference, tmp_path):
  """Resuming the reference run with lr 1e30 blows up within a step or two.

  AdamATan2 bounds each update by lr, so the parameters jump to ~1e30 and the next forward
  pass overflows.
  """
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  result = run_main(shared_dirs, workdir, '--config.train.lr=1e30',
                    f'--config.train.max_steps={MAX_STEPS + 8}')
  assert result.returncode == 1, result.stderr[-3000:]
  error_lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert len(error_lines) == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert 'NaN or infinite at step' in error_lines[0]
  bad_step = int(error_lines[0].split('at step ')[1].split(';')[0])
  assert MAX_STEPS < bad_step <= MAX_STEPS + 8
  steps = committed_steps(workdir)
  assert steps[-1] < bad_step
  state = ocp.PyTreeCheckpointer().restore(
      pathlib.Path(workdir) / 'checkpoints' / str(steps[-1]) / 'state')
  assert _all_finite(state['params'])
  assert _all_finite(state['opt_state'])


def test_unwritable_workdir_fails_in_one_line_before_any_work(shared_dirs, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  data_dir = tmp_path / 'untouched_data'
  result = subprocess.run(
      main_command(str(blocker / 'run'), str(data_dir)), cwd=REPO_ROOT,
      env=main_env(shared_dirs['cache_dir']), capture_output=True, text=True, timeout=120,
      check=False)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith('error: Work directory')
  assert str(blocker / 'run') in lines[0]
  # It failed before loading (or building) the data, hence before compiling anything.
  assert not data_dir.exists()

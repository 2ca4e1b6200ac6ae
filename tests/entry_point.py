"""Runs of the real entry points (`python -m experiments.NAME`) for the subprocess tests.

`run_module` runs any entry point on CPU. The `main` runs use the `tiny` config on the
committed Sudoku sample; a compilation cache shared by the session (the `shared_dirs`
fixture of conftest.py) lets the runs after the first reuse the compiled steps.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable

import pytest

from tiny_recursive import metrics_logging

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMING_KEYS = ('step_time_ms', 'eval_time_s')
RUN_TIMEOUT_S = 240
MAX_STEPS = 12


def run_module(*args: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
  """`python -m ARGS` from the repository root on CPU, output captured; never raises on a
  failed command (callers assert on `returncode` and `stderr`)."""
  return subprocess.run([sys.executable, '-m', *args], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=timeout, check=False,
                        env=dict(os.environ, JAX_PLATFORMS='cpu', **(env or {})))


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
  # A test runner started as a background job of a script ignores SIGINT, and a child would
  # inherit that; a handled signal is reset to its default at exec instead.
  previous_sigint = signal.getsignal(signal.SIGINT)
  if previous_sigint == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with open(log_path, 'w', encoding='utf-8') as log:
      return subprocess.Popen(main_command(workdir, shared_dirs['data_dir'], *overrides),
                              cwd=REPO_ROOT, env=main_env(shared_dirs['cache_dir']),
                              stdout=log, stderr=subprocess.STDOUT, text=True)
  finally:
    signal.signal(signal.SIGINT, previous_sigint)


def copy_run(workdir: str, tmp_path: pathlib.Path) -> str:
  """A copy of the run directory `workdir` under `tmp_path`, for a test to change."""
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  return copy


def committed_steps(workdir: str) -> list[int]:
  """Steps with a finished checkpoint (Orbax renames a step directory into place last)."""
  directory = pathlib.Path(workdir) / 'checkpoints'
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def wait_until(done: Callable[[], bool], what: str, process: subprocess.Popen,
               log_path: pathlib.Path, timeout: float = RUN_TIMEOUT_S) -> None:
  """Polls `done()` while the run goes on; fails naming `what` if the run ends first."""
  deadline = time.monotonic() + timeout
  while not done():
    if process.poll() is not None:
      pytest.fail(f'Run ended (status {process.returncode}) before {what}:\n'
                  f'{log_path.read_text()[-3000:]}')
    if time.monotonic() > deadline:
      process.kill()
      process.wait()
      pytest.fail(f'No {what} within {timeout} s:\n{log_path.read_text()[-3000:]}')
    time.sleep(0.05)


def wait_for_exit(process: subprocess.Popen, log_path: pathlib.Path, why: str) -> None:
  try:
    process.wait(timeout=60)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
    pytest.fail(f'{why} did not stop the run:\n{log_path.read_text()[-3000:]}')


def final_eval(result: subprocess.CompletedProcess) -> dict[str, float]:
  assert result.returncode == 0, result.stderr[-3000:]
  last_line = result.stdout.strip().splitlines()[-1]
  return without_timing(json.loads(last_line)['final_eval'])


def without_timing(row: dict[str, Any]) -> dict[str, Any]:
  return {key: value for key, value in row.items() if key not in TIMING_KEYS}


def rows_by_step(workdir: str, split: str) -> dict[int, dict[str, Any]]:
  """The logged rows of `split` by step, timings left out."""
  return {row['step']: without_timing(row)
          for row in metrics_logging.read_metrics(workdir, split)}


def logged_steps(workdir: str, split: str) -> list[int]:
  return [row['step'] for row in metrics_logging.read_metrics(workdir, split)]

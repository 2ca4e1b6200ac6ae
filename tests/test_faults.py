"""Faults against the real entry point (`python -m experiments.main`) in subprocesses.

kill -9 mid-run, SIGTERM, Ctrl-C, a damaged newest checkpoint, a non-finite loss and an
unusable workdir. Every run uses the `tiny` config on the committed Sudoku sample
(tests/entry_point.py); a shared persistent compilation cache lets the runs after the first
reuse the compiled steps.
"""

import pathlib
import signal
import subprocess
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import entry_point
from tiny_recursive import metrics_logging

pytestmark = pytest.mark.slow

MAX_STEPS = entry_point.MAX_STEPS


def _rerun_resumes_and_matches_the_reference(shared_dirs, reference, workdir: str,
                                             resume_step: int) -> None:
  """Reruns the command in `workdir`: it resumes from `resume_step`, leaving the rows up to it
  as they were (their timings too; a restart from scratch would log them again), and ends as
  the uninterrupted reference run, with each step logged once."""
  reference_dir, reference_eval, _ = reference

  def timings_up_to_the_resume():
    return [(row['step'], row['step_time_ms'])
            for row in metrics_logging.read_metrics(workdir, 'train')
            if row['step'] <= resume_step]

  before = timings_up_to_the_resume()
  rerun = entry_point.run_main(shared_dirs, workdir)
  assert entry_point.final_eval(rerun) == reference_eval
  assert timings_up_to_the_resume() == before
  assert entry_point.logged_steps(workdir, 'train') == list(range(1, MAX_STEPS + 1))
  assert (entry_point.rows_by_step(workdir, 'train') ==
          entry_point.rows_by_step(reference_dir, 'train'))


def test_kill_9_then_rerun_resumes_and_matches_the_uninterrupted_run(
    shared_dirs, reference, tmp_path):
  workdir = str(tmp_path / 'run')
  log_path = tmp_path / 'killed.log'
  process = entry_point.start_main(shared_dirs, workdir, log_path)
  entry_point.wait_until(lambda: entry_point.committed_steps(workdir), 'a checkpoint',
                         process, log_path)
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL
  killed_at = max(entry_point.logged_steps(workdir, 'train'))
  assert killed_at < MAX_STEPS, 'the run ended before it could be killed'
  assert not entry_point.logged_steps(workdir, 'eval')
  _rerun_resumes_and_matches_the_reference(shared_dirs, reference, workdir,
                                           entry_point.committed_steps(workdir)[-1])
  assert entry_point.committed_steps(workdir) == entry_point.committed_steps(reference[0])


def _stop_with(signum: int, shared_dirs: dict[str, str], workdir: str,
               log_path: pathlib.Path) -> tuple[int, str]:
  """Starts a 200-step run, sends `signum` once a step is logged; returns (the last logged
  step, the run's output) after checking that it exited with status 0."""
  process = entry_point.start_main(shared_dirs, workdir, log_path,
                                   '--config.train.max_steps=200')
  entry_point.wait_until(lambda: entry_point.logged_steps(workdir, 'train'), 'a logged step',
                         process, log_path)
  process.send_signal(signum)
  entry_point.wait_for_exit(process, log_path, signal.Signals(signum).name)
  log = log_path.read_text()
  assert process.returncode == 0, log[-3000:]
  assert 'Traceback' not in log
  last_step = max(entry_point.logged_steps(workdir, 'train'))
  assert last_step < 200
  # The step trained when the signal arrived is saved, on or off the interval.
  assert entry_point.committed_steps(workdir)[-1] == last_step
  assert f'saving step {last_step} and exiting' in log
  assert (f'Stopped at step {last_step} of 200; saved it in {workdir}/checkpoints. '
          'Rerun the same command to continue from there.') in log
  return last_step, log


def test_sigterm_saves_the_current_step_and_exits_cleanly(shared_dirs, tmp_path):
  _stop_with(signal.SIGTERM, shared_dirs, str(tmp_path / 'run'), tmp_path / 'terminated.log')


def test_ctrl_c_saves_the_current_step_and_a_rerun_continues_from_it(
    shared_dirs, reference, tmp_path):
  workdir = str(tmp_path / 'run')
  stopped_at, log = _stop_with(signal.SIGINT, shared_dirs, workdir, tmp_path / 'ctrl_c.log')
  assert 'press Ctrl-C again to abort without saving' in log
  assert stopped_at < MAX_STEPS
  # Rerun as a 12-step run: the same run, only shorter (the schedules ignore max_steps).
  _rerun_resumes_and_matches_the_reference(shared_dirs, reference, workdir, stopped_at)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    shared_dirs, reference, tmp_path):
  reference_dir, reference_eval, _ = reference
  workdir = entry_point.copy_run(reference_dir, tmp_path)
  steps = entry_point.committed_steps(workdir)
  assert steps[-1] == MAX_STEPS and len(steps) >= 2
  data_files = list((pathlib.Path(workdir) / 'checkpoints' / str(MAX_STEPS) / 'state')
                    .rglob('d/*'))
  assert data_files
  for path in data_files:
    with open(path, 'r+b') as f:
      f.truncate(7)

  rerun = entry_point.run_main(shared_dirs, workdir)
  assert f'Checkpoint at step {MAX_STEPS}' in rerun.stderr
  assert 'falling back to the previous one' in rerun.stderr
  # Resumed from the previous checkpoint and retrained the lost steps to the same result.
  assert entry_point.final_eval(rerun) == reference_eval
  assert entry_point.logged_steps(workdir, 'train') == list(range(1, MAX_STEPS + 1))
  assert (entry_point.rows_by_step(workdir, 'train') ==
          entry_point.rows_by_step(reference_dir, 'train'))
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
  workdir = entry_point.copy_run(reference[0], tmp_path)
  result = entry_point.run_main(shared_dirs, workdir, '--config.train.lr=1e30',
                                f'--config.train.max_steps={MAX_STEPS + 8}')
  assert result.returncode == 1, result.stderr[-3000:]
  error_lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert len(error_lines) == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert 'NaN or infinite at step' in error_lines[0]
  bad_step = int(error_lines[0].split('at step ')[1].split(';')[0])
  assert MAX_STEPS < bad_step <= MAX_STEPS + 8
  steps = entry_point.committed_steps(workdir)
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
      entry_point.main_command(str(blocker / 'run'), str(data_dir)),
      cwd=entry_point.REPO_ROOT, env=entry_point.main_env(shared_dirs['cache_dir']),
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith('error: Work directory')
  assert str(blocker / 'run') in lines[0]
  # It failed before loading (or building) the data, hence before compiling anything.
  assert not data_dir.exists()

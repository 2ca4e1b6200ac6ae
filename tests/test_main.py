"""What `python -m experiments.main` shows and leaves behind, beyond the training itself.

Reruns of a finished run, `--mode=eval`'s rows in metrics.jsonl, the compiling notice and the
progress display (plain lines off a terminal, a bar of fixed width on a terminal of width 0).
Subprocess runs of the tiny config as in tests/entry_point.py.
"""

import fcntl
import io
import json
import os
import pathlib
import pty
import struct
import subprocess
import sys
import termios
import threading

import pytest

from experiments import command_line
from experiments import summarize_run
from tests import entry_point
from tiny_recursive import metrics_logging

MAX_STEPS = entry_point.MAX_STEPS


@pytest.mark.slow
def test_rerun_of_a_finished_run_prints_its_final_evaluation(shared_dirs, reference,
                                                            tmp_path):
  workdir = entry_point.copy_run(reference[0], tmp_path)
  reference_eval = reference[1]
  metrics_path = pathlib.Path(workdir) / metrics_logging.METRICS_FILE
  logged = metrics_path.read_text()

  rerun = entry_point.run_main(shared_dirs, workdir)
  assert entry_point.final_eval(rerun) == reference_eval
  assert (f'The run in {workdir} was already finished at step {MAX_STEPS}; nothing to '
          'train.') in rerun.stderr
  assert 'Compiling' not in rerun.stderr
  assert metrics_path.read_text() == logged

  # Without metrics.jsonl, from the metrics saved with the last checkpoint.
  metrics_path.unlink()
  rerun = entry_point.run_main(shared_dirs, workdir)
  assert entry_point.final_eval(rerun) == reference_eval


@pytest.mark.slow
def test_eval_mode_rows_have_their_own_split_and_are_not_repeated(shared_dirs, reference,
                                                                  tmp_path):
  reference_dir, reference_eval, _ = reference
  workdir = entry_point.copy_run(reference_dir, tmp_path)
  for _ in range(2):
    result = entry_point.run_main(shared_dirs, workdir, '--mode=eval')
    assert entry_point.final_eval(result) == reference_eval
  eval_only = metrics_logging.read_metrics(workdir, 'eval_only')
  assert [row['step'] for row in eval_only] == [MAX_STEPS]
  protocol = {'eval.arc_versions': 0.0, 'eval.max_examples': 32.0, 'eval.num_steps': 0.0,
              'eval.num_trajectories': 1.0, 'eval.trajectory_noise': 0.0,
              'eval.noise_seed': 0.0}
  assert entry_point.without_timing(eval_only[0]) == dict(reference_eval, step=MAX_STEPS,
                                                          split='eval_only', **protocol)
  # The training run's evaluations are left as they were.
  assert (metrics_logging.read_metrics(workdir, 'eval') ==
          metrics_logging.read_metrics(reference_dir, 'eval'))
  lines = summarize_run.format_rows(metrics_logging.read_metrics(workdir))
  assert lines[-1].startswith(f'{MAX_STEPS} eval_only exact_accuracy=')


@pytest.mark.slow
def test_plain_progress_lines_and_one_compiling_notice_off_a_terminal(reference):
  stderr = reference[2]
  assert stderr.count('Compiling the train step ...') == 1
  lines = stderr.splitlines()
  assert lines.index('Compiling the train step ...') < min(
      i for i, line in enumerate(lines) if line.startswith('step '))
  assert '\r' not in stderr  # No bar redrawn in place.
  assert 'step 1/12: loss=' in stderr
  assert f'step {MAX_STEPS}/{MAX_STEPS}: loss=' in stderr
  assert ' train_exact=' in stderr and ' exact=' not in stderr
  evaluating = [line for line in lines if line.startswith('Evaluating at step ')]
  # The first evaluation of the call says it compiles; the last is at the final step.
  assert evaluating[0].endswith(' (compiling the evaluation first) ...')
  assert all(line.endswith(' ...') and 'compiling' not in line for line in evaluating[1:])
  assert evaluating[-1].startswith(f'Evaluating at step {MAX_STEPS} ')


def _read_all(fd: int, chunks: list[bytes]) -> None:
  while True:
    try:
      chunk = os.read(fd, 4096)
    except OSError:  # EIO once the other side is closed.
      return
    if not chunk:
      return
    chunks.append(chunk)


@pytest.mark.slow
def test_a_terminal_of_width_zero_still_shows_the_bar(shared_dirs, tmp_path):
  leader, follower = pty.openpty()
  fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack('HHHH', 0, 0, 0, 0))
  chunks = []
  reader = threading.Thread(target=_read_all, args=(leader, chunks), daemon=True)
  reader.start()
  try:
    result = subprocess.run(
        entry_point.main_command(str(tmp_path / 'run'), shared_dirs['data_dir'],
                                 '--config.train.max_steps=3'),
        cwd=entry_point.REPO_ROOT, env=entry_point.main_env(shared_dirs['cache_dir']),
        stdout=subprocess.PIPE, stderr=follower, text=True,
        timeout=entry_point.RUN_TIMEOUT_S, check=False)
  finally:
    os.close(follower)
  reader.join(timeout=10)
  os.close(leader)
  shown = b''.join(chunks).decode('utf-8', 'replace')
  assert result.returncode == 0, shown[-3000:]
  assert json.loads(result.stdout.splitlines()[-1])['final_eval']
  assert 'Compiling the train step ...' in shown
  assert '3/3 [' in shown and 'train_exact=' in shown


def test_plain_lines_are_spaced_and_the_last_one_is_kept(monkeypatch):
  clock = iter([0.0, 1.0, 2.0, 40.0, 41.0])
  monkeypatch.setattr(command_line.time, 'monotonic', lambda: next(clock))
  stream = io.StringIO()
  metrics = {'lm_loss': 1.0, 'exact_accuracy': 0.5, 'steps': 2.0}
  with command_line.ProgressBar(stream) as progress:
    for step in (1, 2, 3):
      progress(step, 10, metrics)
    progress.notify('a notice')
    progress(4, 10, metrics)
    progress(5, 10, metrics)
  line = 'step {}/10: loss=1.000 train_exact=0.500 steps=2.0'.format
  # Step 2 is never shown; 3 comes out before the notice, 5 at the end.
  assert stream.getvalue().splitlines() == [line(1), line(3), 'a notice', line(4), line(5)]


_INTERRUPT_BEFORE_TRAINING = """
import runpy, sys
from tiny_recursive import trainer

def interrupted(*args, **kwargs):
  raise KeyboardInterrupt

trainer.train_and_evaluate = interrupted
sys.argv = ['experiments.main', '--config=tiny', '--workdir=' + sys.argv[1]]
runpy.run_module('experiments.main', run_name='__main__')
"""


def test_interrupt_without_saving_is_one_error_line(tmp_path):
  """A Ctrl-C that reaches the entry point (before training starts, or a second one)."""
  result = subprocess.run([sys.executable, '-c', _INTERRUPT_BEFORE_TRAINING, str(tmp_path)],
                          cwd=entry_point.REPO_ROOT, capture_output=True, text=True,
                          timeout=120, check=False,
                          env=dict(os.environ, JAX_PLATFORMS='cpu',
                                   PYTHONPATH=str(entry_point.REPO_ROOT)))
  assert result.returncode == 130, result.stderr[-2000:]
  assert result.stderr.startswith('error: interrupted without saving;')
  assert result.stderr.count('\n') == 1

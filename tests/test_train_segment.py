"""Tests of scripts/train_segment.sh: a segment runs, reports, copies the log, and the next
segment continues the run."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / 'scripts' / 'train_segment.sh'


def run_segment(*args: str, out: pathlib.Path) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS='cpu', OUT=str(out),
             PATH=f'{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}',
             PYTHONPATH=str(REPO_ROOT))
  return subprocess.run(['bash', str(SCRIPT), *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


def test_usage_error_exits_2(tmp_path):
  result = run_segment('10', out=tmp_path)
  assert result.returncode == 2
  assert 'usage:' in result.stderr


@pytest.mark.slow
def test_segments_continue_one_run(tmp_path):
  workdir, out = tmp_path / 'run', tmp_path / 'out'
  out.mkdir()
  flags = ['--config=tiny', f'--config.data.data_dir={tmp_path / "data"}',
           '--config.train.log_every_steps=1', '--config.train.checkpoint_every_steps=2',
           '--config.eval.max_examples=16']
  first = run_segment('300', str(workdir), *flags, '--config.train.max_steps=2', out=out)
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'segment: exit 0' in first.stdout and 'from step 0;' in first.stdout
  second = run_segment('300', str(workdir), *flags, '--config.train.max_steps=4', out=out)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'from step 2;' in second.stdout
  # Only this segment's rows are printed: steps 3 and 4, then the final evaluation.
  printed = [line.split()[:2] for line in second.stdout.splitlines()
             if line[:1].isdigit()]
  assert printed == [['3', 'train'], ['4', 'train'], ['4', 'eval']]
  copied = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
  assert [row['step'] for row in copied if row['split'] == 'train'] == [1, 2, 3, 4]

"""Tests for launch_tpu.sh: dry-run output, real-mode control flow with a fake gcloud, errors."""

import json
import os
import pathlib
import re
import shlex
import stat
import subprocess
import sys
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / 'launch_tpu.sh'
CONFIG = 'experiments/configs/sudoku_extreme.py:mlp'
WORKDIR = 'gs://my-bucket/runs/sudoku'
LIBTPU = 'https://storage.googleapis.com/jax-releases/libtpu_releases.html'
SETTINGS_ENV = ('TPU_PROJECT', 'TPU_ZONE', 'TPU_NAME', 'TPU_TYPE', 'TPU_RUNTIME', 'TRM_CONFIG',
                'TRM_WORKDIR', 'TRM_DATA_DIR', 'TRM_GIT_REF', 'TRM_GIT_URL', 'TRM_PYTHON')

# Stands in for gcloud and git: records its argv as one JSON line, prints $FAKE_STATE for
# `describe` (failing when it is empty, as for a TPU that does not exist) and creates the
# `git archive -o FILE` output.
FAKE_TOOL = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ['FAKE_LOG'], 'a') as log:
  log.write(json.dumps([os.path.basename(sys.argv[0])] + args) + '\\n')
if 'describe' in args:
  state = os.environ.get('FAKE_STATE', '')
  if not state:
    sys.exit(1)
  print(state)
if 'archive' in args:
  open(args[args.index('-o') + 1], 'wb').close()
"""


@pytest.fixture
def fake_tools(tmp_path):
  """Puts fake `gcloud` and `git` first on PATH; returns the log path they append to."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name in ('gcloud', 'git'):
    tool = bin_dir / name
    tool.write_text(FAKE_TOOL)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
  return tmp_path / 'calls.jsonl'


def _run(args, fake_log, env=None, state=''):
  environ = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
  environ['PATH'] = f'{fake_log.parent / "bin"}{os.pathsep}{environ["PATH"]}'
  environ['FAKE_LOG'] = str(fake_log)
  environ['FAKE_STATE'] = state
  environ['TMPDIR'] = str(fake_log.parent)
  environ.update(env or {})
  return subprocess.run(['bash', str(SCRIPT), *args], capture_output=True, text=True,
                        env=environ, timeout=60, check=False)


def _calls(fake_log):
  if not fake_log.exists():
    return []
  return [json.loads(line) for line in fake_log.read_text().splitlines()]


def _commands(stdout):
  """Parses dry-run output: (comment lines, list of argv of the command lines)."""
  comments, commands = [], []
  for line in stdout.splitlines():
    (comments if line.startswith('#') else commands).append(line)
  return comments, [shlex.split(line) for line in commands]


def _remote(argv):
  """The remote shell command of a `gcloud ... ssh --command=...` argv."""
  [command] = [a for a in argv if a.startswith('--command=')]
  return command[len('--command='):]


BASE_ARGS = ['--dry-run', '--project=my-proj', '--zone=us-central2-b', f'--config={CONFIG}',
             f'--workdir={WORKDIR}']


def test_dry_run_prints_every_step(fake_tools):
  result = _run(BASE_ARGS + ['--name', 'trm-test', '--data-dir=gs://my-bucket/tfds', '--spot',
                             '--', '--config.train.lr=3e-4', "--config.data.name=it's b"],
                fake_tools)
  assert result.returncode == 0, result.stderr
  assert not _calls(fake_tools)  # Dry run: neither gcloud nor git was called.
  comments, commands = _commands(result.stdout)
  assert any('READY' in c and 'create it if describe fails' in c for c in comments)
  where = ['--zone=us-central2-b', '--project=my-proj']
  tpu = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  describe, delete, create, archive, scp, install, start = commands
  assert describe == tpu + ['describe', 'trm-test'] + where + ['--format=value(state)']
  assert delete == tpu + ['delete', 'trm-test'] + where + ['--quiet']
  assert create == tpu + ['create', 'trm-test'] + where + [
      '--accelerator-type=v4-8', '--version=tpu-ubuntu2204-base', '--spot']
  assert archive[:5] == ['git', '-C', str(REPO_ROOT), 'archive', '--format=tar.gz']
  tarball = archive[archive.index('-o') + 1]
  assert archive[-1] == 'HEAD'
  assert scp == tpu + ['scp', tarball, 'trm-test:tiny_recursive_code.tar.gz', '--worker=all'
                       ] + where
  assert install[:6] == tpu + ['ssh', 'trm-test'] and '--worker=all' in install
  install_script = _remote(install)
  assert 'tar -xzf $HOME/tiny_recursive_code.tar.gz' in install_script
  pip = shlex.split(install_script.split('&&')[-1])
  assert pip == ['python3', '-m', 'pip', 'install', '--quiet', '-e', '.', 'jax[tpu]', '-f',
                 LIBTPU]
  assert start[:6] == tpu + ['ssh', 'trm-test'] and '--worker=all' in start
  start_script = _remote(start)
  assert 'kill -0' in start_script  # Refuses to start a second run on the same workers.
  launch = next(part for part in start_script.split(';') if 'nohup' in part)
  launch_argv = shlex.split(launch)
  assert launch_argv[:9] == [
      'nohup', 'python3', '-m', 'experiments.main', f'--config={CONFIG}', f'--workdir={WORKDIR}',
      '--config.data.data_dir=gs://my-bucket/tfds', '--config.train.lr=3e-4',
      "--config.data.name=it's b"]
  assert launch_argv[9:] == ['>>', '$HOME/tiny_recursive_logs/trm-test.log', '2>&1', '<',
                             '/dev/null', '&', 'echo', '$!', '>',
                             '$HOME/tiny_recursive_logs/trm-test.pid']


def test_settings_from_environment(fake_tools):
  env = {'TPU_PROJECT': 'env-proj', 'TPU_ZONE': 'us-west4-a', 'TPU_TYPE': 'v5litepod-16',
         'TRM_CONFIG': 'experiments/configs/maze_hard.py', 'TRM_WORKDIR': 'gs://b/maze',
         'TRM_PYTHON': 'python3.11'}
  result = _run(['--dry-run', '--preemptible'], fake_tools, env=env)
  assert result.returncode == 0, result.stderr
  _, commands = _commands(result.stdout)
  create = next(c for c in commands if 'create' in c)
  assert create[4:] == ['create', 'trm-v5litepod-16', '--zone=us-west4-a', '--project=env-proj',
                        '--accelerator-type=v5litepod-16', '--version=v2-alpha-tpuv5-lite',
                        '--preemptible']
  assert 'python3.11 -m pip install' in _remote(commands[-2])
  assert ('nohup python3.11 -m experiments.main --config=experiments/configs/maze_hard.py '
          '--workdir=gs://b/maze >>') in _remote(commands[-1])
  # A short config name is checked against experiments/configs/ and passed on unchanged.
  result = _run(['--dry-run', '--config=sudoku_extreme:att'], fake_tools, env=env)
  assert result.returncode == 0, result.stderr
  assert ' --config=sudoku_extreme:att --workdir=gs://b/maze ' in result.stdout
  # Flags win over the environment.
  result = _run(['--dry-run', '--project=flag-proj', '--version=my-runtime'], fake_tools, env=env)
  assert '--project=flag-proj' in result.stdout and 'env-proj' not in result.stdout
  assert '--version=my-runtime' in result.stdout


def test_git_url_and_skip_setup(fake_tools):
  result = _run(BASE_ARGS + ['--git-url=https://example.com/trm.git', '--git-ref=v1.0'],
                fake_tools)
  assert result.returncode == 0, result.stderr
  _, commands = _commands(result.stdout)
  assert not any(c[0] == 'git' or 'scp' in c for c in commands)
  assert ('git clone --quiet https://example.com/trm.git $HOME/tiny_recursive && git -C '
          '$HOME/tiny_recursive checkout --quiet v1.0') in _remote(commands[-2])
  result = _run(BASE_ARGS + ['--skip-setup'], fake_tools)
  _, commands = _commands(result.stdout)
  assert [c[4] for c in commands] == ['describe', 'delete', 'create', 'ssh']
  assert 'experiments.main' in _remote(commands[-1])


@pytest.mark.parametrize('state, expected', [
    ('READY', ['describe', 'scp', 'ssh', 'ssh']),
    ('', ['describe', 'create', 'scp', 'ssh', 'ssh']),
    ('PREEMPTED', ['describe', 'delete', 'create', 'scp', 'ssh', 'ssh']),
])
def test_reuse_or_create_with_fake_gcloud(fake_tools, state, expected):
  args = [a for a in BASE_ARGS if a != '--dry-run']
  result = _run(args, fake_tools, state=state)
  assert result.returncode == 0, result.stderr
  calls = _calls(fake_tools)
  gcloud = [c for c in calls if c[0] == 'gcloud']
  assert [c[4] for c in gcloud] == expected
  assert [c[1:3] for c in calls if c[0] == 'git'] == [['-C', str(REPO_ROOT)]] * 2
  assert 'started.' in result.stderr


def test_busy_tpu_is_an_error(fake_tools):
  result = _run([a for a in BASE_ARGS if a != '--dry-run'], fake_tools, state='CREATING')
  assert result.returncode != 0
  assert "state 'CREATING'" in result.stderr
  assert [c[4] for c in _calls(fake_tools)] == ['describe']


def test_help(fake_tools):
  result = _run(['--help'], fake_tools)
  assert result.returncode == 0
  assert result.stdout.startswith('Usage: launch_tpu.sh')
  for setting in ('TPU_PROJECT', 'TPU_ZONE', 'TPU_NAME', 'TPU_TYPE', 'TPU_RUNTIME', 'TRM_CONFIG',
                  'TRM_WORKDIR', '--data-dir', '--spot', '--preemptible', '--dry-run'):
    assert setting in result.stdout


@pytest.mark.parametrize('args, message', [
    ([a for a in BASE_ARGS if not a.startswith('--project')], 'missing project'),
    ([a for a in BASE_ARGS if not a.startswith('--zone')], 'missing zone'),
    ([a for a in BASE_ARGS if not a.startswith('--config')], 'missing config'),
    ([a for a in BASE_ARGS if not a.startswith('--workdir')], 'missing workdir'),
    (BASE_ARGS + ['--workdir=/tmp/run'], "workdir must be gs://BUCKET/PATH.*'/tmp/run'"),
    (BASE_ARGS + ['--workdir=gs://bucket-only'], 'workdir must be gs://'),
    (BASE_ARGS + ['--spot', '--preemptible'], 'one of --preemptible and --spot'),
    (BASE_ARGS + ['--accelerator-type=v9-8'], "no default runtime for accelerator type 'v9-8'"),
    (BASE_ARGS + ['--config=experiments/configs/nope.py'], "'experiments/configs/nope.py' not "
     'found'),
    (BASE_ARGS + ['--config=no_such_config:x'], "'experiments/configs/no_such_config.py' not "
     'found'),
    (BASE_ARGS + ['--config=experiments/configs/base.txt'], 'must be a .py file'),
    (BASE_ARGS + ['--name=Bad_Name'], "TPU name 'Bad_Name'"),
    (BASE_ARGS + ['--colour=red'], "unknown option '--colour'"),
    (BASE_ARGS + ['stray'], "unexpected argument 'stray'"),
    (BASE_ARGS + ['--zone'], '--zone needs a value'),
])
def test_invalid_settings(fake_tools, args, message):
  result = _run(args, fake_tools)
  assert result.returncode == 2
  assert result.stdout == ''
  assert re.search(message, result.stderr), result.stderr
  assert not _calls(fake_tools)


def test_script_is_executable():
  assert os.access(SCRIPT, os.X_OK)


def test_remote_start_command_runs_and_guards(fake_tools, tmp_path):
  """Runs the printed start command in a local bash with a stand-in interpreter."""
  python = tmp_path / 'fake_python'
  python.write_text('#!/bin/bash\necho "cwd=$PWD args=$*"\nexec sleep 30\n')
  python.chmod(0o755)
  result = _run(BASE_ARGS + ['--name=trm-local', f'--python={python}', '--skip-setup', '--',
                             '--config.seed=3'], fake_tools)
  assert result.returncode == 0, result.stderr
  start = _remote(_commands(result.stdout)[1][-1])
  home = tmp_path / 'home'
  (home / 'tiny_recursive').mkdir(parents=True)
  env = {'HOME': str(home), 'PATH': os.environ['PATH']}
  first = subprocess.run(['bash', '-c', start], env=env, capture_output=True, text=True,
                         timeout=30, check=False)
  assert first.returncode == 0, first.stderr
  pid_file = home / 'tiny_recursive_logs' / 'trm-local.pid'
  pid = int(pid_file.read_text())
  try:
    os.kill(pid, 0)  # The background run is alive and its pid was recorded.
    second = subprocess.run(['bash', '-c', start], env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    assert second.returncode == 1
    assert f'already running (pid {pid})' in second.stderr
    log = home / 'tiny_recursive_logs' / 'trm-local.log'
    for _ in range(100):
      if log.exists() and log.read_text():
        break
      time.sleep(0.05)
    assert log.read_text() == (
        f'cwd={home}/tiny_recursive args=-m experiments.main --config={CONFIG} '
        f'--workdir={WORKDIR} --config.seed=3\n')
  finally:
    os.kill(pid, 15)

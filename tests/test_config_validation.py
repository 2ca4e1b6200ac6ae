"""Tests of tiny_recursive/config_validation.py and of how the entry point reports bad input.

Each bad value must give one error naming the key, raised before anything is compiled or
loaded: `validate` is called directly (fast), and the entry point is run once to check that
the user sees a single readable line.
"""

import os
import pathlib
import subprocess
import sys

import jax
import pytest

from experiments.configs import arc_agi
from experiments.configs import tiny
from tiny_recursive import config_validation
from tiny_recursive import trainer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ConfigError = config_validation.ConfigError


def test_tiny_config_is_valid():
  config_validation.validate(tiny.get_config())


@pytest.mark.parametrize('key, value, expected', [
    ('data.vocab_size', 12, r'config\.data\.vocab_size: sudoku_extreme has a vocabulary of 11'),
    ('data.seq_len', 900, r'config\.data\.seq_len: sudoku_extreme sequences have 81 tokens'),
    ('data.name', 'sudoku', r"config\.data\.name: expected one of .*got 'sudoku'"),
    ('model.mixer', 'conv', r"config\.model\.mixer: expected 'attention' or 'mlp'"),
    ('model.attention_impl', 'flash', r'config\.model\.attention_impl'),
    ('model.activation_layout', 'sequence_major',
     r"config\.model\.activation_layout: 'sequence_major' needs model\.mixer = 'mlp'"),
    ('model.activation_layout', 'column', r'config\.model\.activation_layout: expected one of'),
    ('model.fused_sequence_mlp', True,
     r"config\.model\.fused_sequence_mlp: needs model\.activation_layout = 'sequence_major'"),
    ('model.sequence_mlp_kernel', 'cuda',
     r"config\.model\.sequence_mlp_kernel: expected one of \('triton', 'mosaic'\)"),
    ('model.halt_max_steps', 0, r'config\.model\.halt_max_steps: must be at least 1'),
    ('model.cudnn_seq_multiple', 0, r'config\.model\.cudnn_seq_multiple: must be at least 1'),
    ('train.global_batch_size', 0, r'config\.train\.global_batch_size: must be a positive'),
    ('train.lr', -1e-3, r'config\.train\.lr: must be >= 0'),
    ('train.beta2', 1.0, r'config\.train\.beta2: must be in \[0, 1\)'),
    ('train.loss_type', 'hinge', r'config\.train\.loss_type'),
    ('train.eval_interval', 3, r'config\.train\.eval_interval: \(3 epochs\) exceeds'),
    ('train.max_steps', -1, r'config\.train\.max_steps: must be >= 0'),
    ('train.eval_every_steps', -5, r'config\.train\.eval_every_steps: must be >= 0'),
    ('eval.global_batch_size', 0, r'config\.eval\.global_batch_size: must be positive'),
    ('data.ignore_label_id', 11, r'config\.data\.ignore_label_id'),
    ('eval.num_steps', -1, r'config\.eval\.num_steps: must be >= 0'),
    ('eval.num_trajectories', 0, r'config\.eval\.num_trajectories: must be at least 1'),
    ('eval.trajectory_noise', -0.1, r'config\.eval\.trajectory_noise: must be a finite'),
    ('eval.trajectory_noise', float('nan'), r'config\.eval\.trajectory_noise'),
    ('eval.noise_seed', -1, r'config\.eval\.noise_seed: must be in'),
    ('eval.arc_versions', -1, r'config\.eval\.arc_versions: must be >= 0'),
    ('eval.arc_versions', 8,
     r'config\.eval\.arc_versions: applies to ARC evaluation only; sudoku_extreme'),
])
def test_bad_value_names_its_key(key, value, expected):
  config = tiny.get_config()
  config.update_from_flattened_dict({key: value})
  with pytest.raises(ConfigError, match=expected):
    config_validation.validate(config)


def test_arc_versions_on_arc():
  config = arc_agi.get_config()
  config.eval.arc_versions = 8
  config_validation.validate(config)
  config.eval.arc_versions = -2
  with pytest.raises(ConfigError, match=r'^config\.eval\.arc_versions: must be >= 0 \(0: every '
                                        r'kept version of each ARC task\), got -2\.$'):
    config_validation.validate(config)


def test_batch_not_divisible_by_devices(monkeypatch):
  monkeypatch.setattr(jax, 'device_count', lambda *args: 8)
  config = tiny.get_config()
  config.train.global_batch_size = 12
  with pytest.raises(ConfigError, match=r'config\.train\.global_batch_size = 12 is not '
                                        r'divisible by the number of devices \(8\)'):
    config_validation.validate(config)
  config.train.global_batch_size = 16
  config.eval.global_batch_size = 20
  with pytest.raises(ConfigError, match=r'config\.eval\.global_batch_size = 20'):
    config_validation.validate(config)


def test_unknown_key_and_wrong_type_are_refused_by_the_config():
  """ml_collections refuses these before any of our code runs (see the subprocess test)."""
  config = tiny.get_config()
  config.lock()  # As the entry point's config flag does.
  with pytest.raises(AttributeError, match='lrr'):
    config.train.lrr = 1.0
  with pytest.raises(TypeError):
    config.train.global_batch_size = 'abc'


def test_unbuilt_data_set_names_the_build_command(tmp_path):
  config = tiny.get_config()
  config.data.builder_config = '1k'  # Not the committed sample: nothing builds it implicitly.
  config.data.data_dir = str(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError, match=r'sudoku_extreme/1k is not built in .*empty.*'
                                              r'python -m datasets\.build sudoku_extreme/1k'):
    trainer.load_splits(config)


def _run_main(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'experiments.main', '--config=tiny', *args],
                        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
                        check=False)


@pytest.mark.slow
def test_entry_point_reports_bad_input_in_one_line(tmp_path):
  """Bad override key, bad value and unbuilt data: one `error:` line each, status 2."""
  workdir, data_dir = str(tmp_path / 'run'), str(tmp_path / 'data')
  cases = [
      (['--config.train.lrr=1'],
       ["--config.train.lrr=1: the config has no key 'lrr'", 'Did you mean "lr"']),
      (['--config.data.vocab_size=12'],
       ['config.data.vocab_size: sudoku_extreme has a vocabulary of 11 tokens, got 12.']),
      (['--config.data.builder_config=1k'],
       ['is not built in', 'python -m datasets.build sudoku_extreme/1k']),
  ]
  for overrides, expected in cases:
    result = _run_main(f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', *overrides)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    for text in expected:
      assert text in lines[0]
  # Nothing was trained, so nothing was written.
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))


@pytest.mark.slow
def test_entry_point_wrong_type_names_the_flag(tmp_path):
  result = _run_main(f'--workdir={tmp_path}', '--config.train.global_batch_size=abc')
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert ('flag --config.train.global_batch_size=abc: invalid literal for int()'
          in result.stderr)

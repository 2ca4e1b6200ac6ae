"""Tests of config names on the command line, and of every shipped config building a model."""

import os

import pytest

from experiments import config_loading
from tiny_recursive import config_validation
from tiny_recursive import model as model_lib


def test_names_resolve_to_files_and_paths_pass_through():
  path = config_loading.resolve_config_argument('arc_agi1')
  assert path.endswith(os.path.join('configs', 'arc_agi1.py')) and os.path.exists(path)
  variant = config_loading.resolve_config_argument('sudoku_extreme:att')
  assert variant.endswith('sudoku_extreme.py:att')
  assert config_loading.resolve_config_argument('some/dir/file.py:x') == 'some/dir/file.py:x'


def test_argv_forms_are_expanded():
  argv = ['prog', '--config=tiny', '--workdir=/w']
  assert config_loading.expand_config_argv(argv)[1].endswith('tiny.py')
  assert config_loading.expand_config_argv(['prog', '--config', 'tiny'])[2].endswith('tiny.py')


@pytest.mark.parametrize('name', config_loading.available_config_names())
def test_every_shipped_config_is_valid(name):
  """Each config file (default variant) passes validation and builds its model."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(name, os.path.join(config_loading.CONFIG_DIR,
                                                                   f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config_validation.validate(config)
  model_lib.build_model(config.model, seq_len=config.data.seq_len,
                        vocab_size=config.data.vocab_size)


@pytest.mark.parametrize('variant', ['mlp', 'att', 'hrm', 'one_step_grad', 'four_layers',
                                     'single_z', 'no_ema', 'continue_head'])
def test_sudoku_ablation_variants_are_valid(variant):
  from experiments.configs import sudoku_extreme  # pylint: disable=g-import-not-at-top
  config_validation.validate(sudoku_extreme.get_config(variant))

"""Tests of config names on the command line, and of every shipped config building a model."""

import os

import pytest

from experiments import config_loading
from tiny_recursive import config_validation
from tiny_recursive import model as model_lib


def test_names_resolve_to_files_and_paths_pass_through():
  path = config_loading.resolve_config_argument('tiny')
  assert path.endswith(os.path.join('configs', 'tiny.py')) and os.path.exists(path)
  alias = config_loading.resolve_config_argument('arc_agi1')
  assert alias.endswith(os.path.join('configs', 'arc_agi.py') + ':1')
  variant = config_loading.resolve_config_argument('sudoku_extreme:att')
  assert variant.endswith('sudoku_extreme.py:att')
  assert config_loading.resolve_config_argument('some/dir/file.py:x') == 'some/dir/file.py:x'


def test_argv_forms_are_expanded():
  argv = ['prog', '--config=tiny', '--workdir=/w']
  assert config_loading.expand_config_argv(argv)[1].endswith('tiny.py')
  assert config_loading.expand_config_argv(['prog', '--config', 'tiny'])[2].endswith('tiny.py')


def test_an_alias_takes_no_further_argument():
  with pytest.raises(ValueError, match='names .sudoku_extreme:mlp. already'):
    config_loading.resolve_config_argument('sudoku_extreme_mlp:att')


def test_aliases_load_the_variant_they_name():
  assert (config_loading.load_config('sudoku_extreme_att').to_dict()
          == config_loading.load_config('sudoku_extreme:att').to_dict())
  assert config_loading.load_config('arc_agi2').data.builder_config == 'arc_agi_2'


@pytest.mark.parametrize('name', config_loading.available_config_names())
def test_every_shipped_config_is_valid(name):
  """Each config name (default variant) passes validation and builds its model."""
  config = config_loading.load_config(name)
  config_validation.validate(config)
  model_lib.build_model(config.model, seq_len=config.data.seq_len,
                        vocab_size=config.data.vocab_size)


@pytest.mark.parametrize('variant', ['mlp', 'att', 'hrm', 'one_step_grad', 'four_layers',
                                     'single_z', 'no_ema', 'continue_head'])
def test_sudoku_ablation_variants_are_valid(variant):
  from experiments.configs import sudoku_extreme  # pylint: disable=g-import-not-at-top
  config_validation.validate(sudoku_extreme.get_config(variant))

"""Tests of experiments/evaluate.py and scripts/test_time_scaling.sh on the Sudoku sample,
and of `eval.arc_versions` on the ARC fixture."""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

from datasets import build
from experiments import evaluate
from experiments.configs import tiny
from tests import conftest
from tiny_recursive import checkpointing
from tiny_recursive import model as model_lib
from tiny_recursive.data import pipeline
from tiny_recursive.data import sources

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(name='export', scope='module')
def fixture_export(tmp_path_factory):
  """(config, export directory): random weights (non-zero Q head) for the tiny config."""
  config = tiny.get_config('mlp')
  config.data.data_dir = str(tmp_path_factory.getbasetemp() / 'sudoku_sample_data')
  config.eval.max_examples = 24
  config.eval.global_batch_size = 8
  model = model_lib.build_model(config.model, seq_len=81, vocab_size=11)
  variables = conftest.random_variables(model, 0)
  table = np.zeros((1, config.model.puzzle_emb_ndim), np.float32)
  directory = str(tmp_path_factory.mktemp('export') / 'model')
  checkpointing.save_model(directory, variables['params'], variables['constants'], table,
                           config.model.to_dict())
  return config, directory


def test_evaluate_saved_model_reports_settings_and_compute(export):
  config, directory = export
  before = sorted(os.listdir(directory))
  reference = evaluate.evaluate_saved_model(config, directory)
  assert reference['count'] == 24
  assert (reference['num_steps'], reference['num_trajectories'],
          reference['test_time_compute']) == (3, 1, 3)
  assert 'any_trajectory_exact_accuracy' not in reference
  config = config.copy_and_resolve_references()
  config.eval.num_steps = 4
  config.eval.num_trajectories = 2
  config.eval.trajectory_noise = 0.1
  config.eval.adaptive_halting = True
  scaled = evaluate.evaluate_saved_model(config, directory)
  assert scaled['test_time_compute'] == 8 and scaled['trajectory_noise'] == 0.1
  assert 0 <= scaled['exact_accuracy'] <= scaled['any_trajectory_exact_accuracy'] <= 1
  assert 'early_exit_exact_accuracy' in scaled
  json.dumps(scaled)  # One JSON line.
  assert sorted(os.listdir(directory)) == before  # Nothing written beside the weights.


@pytest.mark.slow
def test_scaling_script_writes_results_table_and_plot(export, tmp_path):
  config, directory = export
  env = dict(os.environ, JAX_PLATFORMS='cpu', OUT=str(tmp_path), STEPS='2 3',
             SETTINGS='1:0 2:0.1', BATCH='8', MAX_EXAMPLES='8')
  before = sorted(os.listdir(directory))
  result = subprocess.run(
      [str(REPO_ROOT / 'scripts' / 'test_time_scaling.sh'), 'tiny:mlp', directory,
       f'--config.data.data_dir={config.data.data_dir}'],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=500, check=False)
  assert result.returncode == 0, result.stderr[-3000:] + (tmp_path / 'test_time_scaling.log'
                                                          ).read_text()[-3000:]
  rows = [json.loads(line) for line in
          (tmp_path / 'test_time_scaling.jsonl').read_text().splitlines()]
  assert [(r['num_trajectories'], r['num_steps']) for r in rows] == [(1, 2), (1, 3), (2, 2),
                                                                      (2, 3)]
  assert all(r['count'] == 8 for r in rows)
  assert '| 3 | 2 | 0.1 | 8 | 6 |' in result.stdout
  assert (tmp_path / 'test_time_scaling.png').read_bytes()[:4] == b'\x89PNG'
  assert sorted(os.listdir(directory)) == before


def test_arc_versions_evaluates_the_first_versions_and_says_so(tmp_path):
  """ARC with eval.arc_versions = 2: 2 test inputs x 2 versions, voted and reported."""
  data_dir = str(tmp_path / 'data')
  build.build('arc_agi', 'arc_agi_1', data_dir, str(REPO_ROOT / 'tests' / 'fixtures' / 'arc'))
  config = tiny.get_config()
  config.data.update(name='arc_agi', builder_config='arc_agi_1', data_dir=data_dir,
                     seq_len=900, vocab_size=12, num_augmentations=3)
  config.model.update(l_cycles=1, halt_max_steps=2)
  config.eval.global_batch_size = 8
  config.eval.arc_versions = 2
  catalog = pipeline.arc_catalog(config, sources.load_arc_split('arc_agi_1', 'train', data_dir),
                                 sources.load_arc_split('arc_agi_1', 'test', data_dir))
  model = model_lib.build_model(config.model, seq_len=900, vocab_size=12,
                                num_puzzle_identifiers=catalog.num_identifiers)
  variables = conftest.random_variables(model, 0)
  table = np.zeros((catalog.num_identifiers, config.model.puzzle_emb_ndim), np.float32)
  directory = str(tmp_path / 'model')
  checkpointing.save_model(directory, variables['params'], variables['constants'], table,
                           config.model.to_dict())
  result = evaluate.evaluate_saved_model(config, directory)
  assert result['count'] == 4
  assert (result['arc_versions'], result['mean_versions_voted']) == (2, 2.0)
  assert 0.0 <= result['pass@2'] <= 1.0

"""Tests of experiments/export_model.py: a trained run becomes a checked, self-describing
export that predict and solve load from a relative path."""

import json
import os
import subprocess

import numpy as np
import pytest

from experiments import export_model
from experiments import predict
from experiments import solve
from experiments.configs import tiny
from tiny_recursive import checkpointing
from tiny_recursive import trainer

PUZZLE = '3961875248514627.32479531.873529.6419246.1835618345972483719.561725.6.8956982431.'


@pytest.fixture(name='trained', scope='module')
def fixture_trained(tmp_path_factory):
  """(config, workdir, final eval) of a 2-step tiny MLP run."""
  config = tiny.get_config('mlp')
  config.data.data_dir = str(tmp_path_factory.getbasetemp() / 'sudoku_sample_data')
  config.train.max_steps = 2
  config.eval.max_examples = 16
  workdir = str(tmp_path_factory.mktemp('run'))
  return config, workdir, trainer.train_and_evaluate(config, workdir)


def test_export_loads_through_predict_and_solve(trained, tmp_path, monkeypatch):
  config, workdir, final_eval = trained
  output = tmp_path / 'pretrained' / 'tiny'
  info = export_model.export(workdir, str(output), config_name='tiny')
  assert info['source_step'] == 2 == info['eval_step'] and info['config_name'] == 'tiny'
  assert info['eval']['exact_accuracy'] == final_eval['exact_accuracy']
  assert sorted(os.listdir(output)) == ['SHA256SUMS', 'arrays', 'model_config.json',
                                        export_model.INFO_FILE]
  # The checksum file is the standard format: `sha256sum -c` accepts it.
  check = subprocess.run(['sha256sum', '--quiet', '-c', 'SHA256SUMS'], cwd=output,
                         capture_output=True, text=True, check=False)
  assert check.returncode == 0, check.stdout + check.stderr
  # Same weights as the run's own (EMA) checkpoint; loaded from a relative path.
  monkeypatch.chdir(tmp_path)
  exported = checkpointing.load_model(os.path.join('pretrained', 'tiny'))
  original = checkpointing.load_model(workdir)
  np.testing.assert_array_equal(exported[0]['lm_head']['kernel'],
                                original[0]['lm_head']['kernel'])
  model, *_ = predict.load_checked_model(config, 'pretrained/tiny')
  assert model.config.hidden_size == 32
  result = solve.run_solve(config, 'pretrained/tiny', sudoku=PUZZLE,
                           output_dir=str(tmp_path / 'solve'))
  assert result.answers[0].shape == (81,) and 'valid: ' in result.report


def test_damaged_export_is_refused_naming_the_file(trained, tmp_path):
  _, workdir, _ = trained
  output = tmp_path / 'export'
  export_model.export(workdir, str(output))
  config_file = output / 'model_config.json'
  config_file.write_text(config_file.read_text().replace('"hidden_size": 32', '"hidden_size": 64'))
  with pytest.raises(ValueError, match=r'model_config.json: SHA-256 .* differs'):
    checkpointing.load_model(str(output))
  config_file.unlink()
  (output / 'extra.txt').write_text('x')
  with pytest.raises(ValueError, match='not listed in SHA256SUMS|missing'):
    checkpointing.verify_checksums(str(output))


def test_unknown_step_is_a_clear_error(trained, tmp_path):
  _, workdir, _ = trained
  with pytest.raises(FileNotFoundError, match='no checkpoint of step 7'):
    export_model.export(workdir, str(tmp_path / 'x'), step=7)
  assert not (tmp_path / 'x').exists()


def test_info_file_is_json(trained, tmp_path):
  _, workdir, _ = trained
  export_model.export(workdir, str(tmp_path / 'e'), step=2)
  with open(tmp_path / 'e' / export_model.INFO_FILE) as f:
    assert json.load(f)['source_step'] == 2

"""Tests of experiments.predict: input validation, batching, outputs against the NumPy reference."""

import os

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np
import pytest

from experiments import import_torch
from experiments import predict
from experiments.configs import tiny
from tests import entry_point
from tests import numpy_reference as ref
from tiny_recursive import model as model_lib
from tiny_recursive import torch_import

SEQ_LEN, VOCAB, NUM_IDS = 81, 11, 4


def tiny_config():
  return tiny.get_config('attention')  # float32 forward, RoPE, 3 halting steps.


def write_reference_checkpoint(tmp_path):
  """A reference-format .pt of random weights: (config, path, weights); skips without torch."""
  pytest.importorskip('torch')
  config = tiny_config()
  ref_config = ref.config_from_model_config(config.model, seq_len=SEQ_LEN, vocab_size=VOCAB)
  weights = ref.random_state_dict(ref_config, NUM_IDS, np.random.default_rng(0),
                                  weight_scale=0.5)
  checkpoint = str(tmp_path / 'reference.pt')
  torch_import.save_torch_state_dict(
      {torch_import.REFERENCE_PREFIX + k: v for k, v in weights.items()}, checkpoint)
  return config, checkpoint, weights


@pytest.fixture(name='exported')
def fixture_exported(tmp_path):
  """A reference checkpoint of random weights and its import: (config, .pt, export, weights)."""
  config, checkpoint, weights = write_reference_checkpoint(tmp_path)
  export = str(tmp_path / 'export')
  import_torch.import_checkpoint(config, checkpoint, export)
  return config, checkpoint, export, weights


def write_inputs(path, num_examples=5, seed=2, **overrides):
  rng = np.random.default_rng(seed)
  arrays = dict(inputs=rng.integers(0, VOCAB, (num_examples, SEQ_LEN)).astype(np.int32),
                puzzle_identifiers=rng.integers(0, NUM_IDS, (num_examples,)).astype(np.int32))
  arrays.update(overrides)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez(path, **arrays)
  return arrays


def test_prediction_matches_reference_with_padded_batches(exported, tmp_path):
  config, _, export, weights = exported
  arrays = write_inputs(tmp_path / 'in.npz')
  output = str(tmp_path / 'out' / 'pred.npz')
  predict.run_prediction(config, export, str(tmp_path / 'in.npz'), output, batch_size=2)

  with np.load(output) as data:
    result = {k: data[k] for k in data.files}
  assert sorted(result) == ['logits', 'preds', 'q_halt_logits']
  assert result['preds'].dtype == np.int32 and result['preds'].shape == (5, SEQ_LEN)
  assert result['logits'].dtype == np.float32
  assert result['logits'].shape == (3, 5, SEQ_LEN, VOCAB)  # halt_max_steps = 3 steps.
  assert result['q_halt_logits'].dtype == np.float32 and result['q_halt_logits'].shape == (3, 5)
  np.testing.assert_array_equal(result['preds'], result['logits'][-1].argmax(-1))

  ref_config = ref.config_from_model_config(config.model, seq_len=SEQ_LEN, vocab_size=VOCAB)
  expected = ref.run_eval_steps(ref.strip_prefixes(weights), ref_config, arrays['inputs'],
                                arrays['puzzle_identifiers'], 3)
  error = (np.linalg.norm(result['logits'] - expected['logits']) /
           np.linalg.norm(expected['logits']))
  assert error < 1e-4
  np.testing.assert_allclose(result['q_halt_logits'], expected['q_halt_logits'], atol=1e-4)
  assert os.listdir(tmp_path / 'out') == ['pred.npz']  # Written atomically.


def test_steps_flag_and_batch_size_do_not_change_results(exported, tmp_path):
  config, _, export, _ = exported
  write_inputs(tmp_path / 'in.npz', num_examples=3)
  one_batch = predict.run_prediction(config, export, str(tmp_path / 'in.npz'),
                                     str(tmp_path / 'a.npz'), steps=2, batch_size=8)
  per_example = predict.run_prediction(config, export, str(tmp_path / 'in.npz'),
                                       str(tmp_path / 'b.npz'), steps=2, batch_size=1)
  assert one_batch['logits'].shape == (2, 3, SEQ_LEN, VOCAB)
  np.testing.assert_allclose(one_batch['logits'], per_example['logits'], rtol=1e-5, atol=1e-5)


def test_architecture_mismatch_with_checkpoint_is_reported(exported, tmp_path):
  config, _, export, _ = exported
  write_inputs(tmp_path / 'in.npz')
  config.model.l_cycles = 5
  with pytest.raises(ValueError, match=r'saved with model.l_cycles = 2 but the config has 5'):
    predict.run_prediction(config, export, str(tmp_path / 'in.npz'), str(tmp_path / 'o.npz'))


@pytest.mark.parametrize('overrides, message', [
    (dict(puzzle_identifiers=None), r"missing array\(s\) \['puzzle_identifiers'\]"),
    (dict(inputs=np.zeros((2, 80), np.int32)),
     r"'inputs' has shape \(2, 80\); expected \[N, 81\]"),
    (dict(inputs=np.full((5, SEQ_LEN), 0.5)), r"'inputs' has dtype float64; expected integers"),
    (dict(inputs=np.pad(np.full((1, SEQ_LEN), 11), ((2, 2), (0, 0)))),
     r"'inputs' row 2 has value\(s\) \[11\] outside \[0, 11\)"),
    (dict(puzzle_identifiers=np.array([0, 1, 2, 3, 4])),
     r"'puzzle_identifiers' row 4 has value\(s\) \[4\] outside \[0, 4\)"),
    (dict(puzzle_identifiers=np.zeros(3, np.int32)),
     r"'inputs' has 5 rows but 'puzzle_identifiers' has 3"),
], ids=['missing_key', 'wrong_seq_len', 'float_tokens', 'token_out_of_vocab',
        'id_out_of_table', 'row_mismatch'])
def test_bad_inputs_are_reported(overrides, message, tmp_path):
  path = str(tmp_path / 'in.npz')
  write_inputs(path, **overrides)
  with pytest.raises(ValueError, match=message) as error:
    predict.load_inputs(path, seq_len=SEQ_LEN, vocab_size=VOCAB, num_puzzle_identifiers=NUM_IDS)
  assert path in str(error.value)


def test_integral_floats_are_accepted_and_not_an_npz_is_reported(tmp_path):
  path = str(tmp_path / 'in.npz')
  arrays = write_inputs(path, inputs=np.ones((5, SEQ_LEN), np.float32))
  inputs, ids = predict.load_inputs(path, seq_len=SEQ_LEN, vocab_size=VOCAB,
                                    num_puzzle_identifiers=NUM_IDS)
  assert inputs.dtype == np.int32 and ids.dtype == np.int32
  np.testing.assert_array_equal(ids, arrays['puzzle_identifiers'])
  (tmp_path / 'text.npz').write_text('not an archive')
  with pytest.raises(ValueError, match='text.npz: not a readable .npz'):
    predict.load_inputs(str(tmp_path / 'text.npz'), seq_len=SEQ_LEN, vocab_size=VOCAB,
                        num_puzzle_identifiers=NUM_IDS)


@pytest.mark.slow
def test_command_lines(tmp_path):
  """Both entry points through their flags, as outside checks call them."""
  config, checkpoint, weights = write_reference_checkpoint(tmp_path)
  ref_config = ref.config_from_model_config(config.model, seq_len=SEQ_LEN, vocab_size=VOCAB)
  arrays = write_inputs(tmp_path / 'in.npz', num_examples=3)
  export = str(tmp_path / 'export')
  result = entry_point.run_module('experiments.import_torch', f'--torch_checkpoint={checkpoint}',
                                  '--config=tiny', f'--output={export}')
  assert result.returncode == 0, result.stderr[-3000:]
  result = entry_point.run_module('experiments.import_torch', f'--torch_checkpoint={checkpoint}',
                                  '--config=tiny', f'--output={export}')
  assert result.returncode != 0 and '--overwrite' in result.stderr

  output = str(tmp_path / 'pred.npz')
  result = entry_point.run_module('experiments.predict', '--config=tiny', f'--checkpoint={export}',
               f'--inputs={tmp_path / "in.npz"}', f'--output={output}', '--steps=2',
               '--batch_size=2', '--config.eval.global_batch_size=7')
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(output) as data:
    logits, preds = data['logits'], data['preds']
  assert logits.shape == (2, 3, SEQ_LEN, VOCAB)
  np.testing.assert_array_equal(preds, logits[-1].argmax(-1))
  expected = ref.run_eval_steps(weights, ref_config, arrays['inputs'],
                                arrays['puzzle_identifiers'], 2)['logits']
  assert np.linalg.norm(logits - expected) / np.linalg.norm(expected) < 1e-4


def test_parameter_shape_mismatch_is_reported():
  config = tiny_config()
  model = model_lib.build_model(config.model, seq_len=SEQ_LEN, vocab_size=VOCAB)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  params, constants = jax.tree_util.tree_map(
      lambda s: np.zeros(s.shape, s.dtype), (shapes['params'], shapes['constants']))
  predict.check_params(model, params, constants, 'ckpt')
  params['lm_head']['kernel'] = np.zeros((32, 12), np.float32)
  with pytest.raises(ValueError, match=r"ckpt: params\['lm_head'\]\['kernel'\] has shape "
                     r"\(32, 12\), the config's model expects \(32, 11\)"):
    predict.check_params(model, params, constants, 'ckpt')


def _random_export(tmp_path, config, num_ids=NUM_IDS):
  """A model export of random weights (non-zero Q head), without torch."""
  from tests import conftest  # pylint: disable=g-import-not-at-top
  from tiny_recursive import checkpointing  # pylint: disable=g-import-not-at-top
  model = model_lib.build_model(config.model, seq_len=SEQ_LEN, vocab_size=VOCAB,
                                num_puzzle_identifiers=num_ids)
  variables = conftest.random_variables(model, 0)
  table = np.random.default_rng(0).standard_normal(
      (num_ids, config.model.puzzle_emb_ndim)).astype(np.float32)
  export = str(tmp_path / 'random_export')
  checkpointing.save_model(export, variables['params'], variables['constants'], table,
                           config.model.to_dict())
  return export


def test_eval_num_steps_and_trajectories(tmp_path):
  config = tiny_config()
  export = _random_export(tmp_path, config)
  write_inputs(tmp_path / 'in.npz', num_examples=5)
  reference = predict.run_prediction(config, export, str(tmp_path / 'in.npz'),
                                     str(tmp_path / 'ref.npz'))
  assert reference['logits'].shape[0] == 3 and 'trajectory' not in reference
  config.eval.num_steps = 5
  longer = predict.run_prediction(config, export, str(tmp_path / 'in.npz'),
                                  str(tmp_path / 'long.npz'))
  assert longer['logits'].shape == (5, 5, SEQ_LEN, VOCAB)
  np.testing.assert_allclose(longer['logits'][:3], reference['logits'], rtol=1e-5, atol=1e-5)
  # --steps wins over eval.num_steps.
  steps = predict.run_prediction(config, export, str(tmp_path / 'in.npz'),
                                 str(tmp_path / 's.npz'), steps=2)
  assert steps['logits'].shape[0] == 2

  config.eval.num_steps = 0
  config.eval.num_trajectories = 3
  config.eval.trajectory_noise = 0.3
  runs = [predict.run_prediction(config, export, str(tmp_path / 'in.npz'),
                                 str(tmp_path / f'noisy{b}.npz'), batch_size=b)
          for b in (2, 5)]
  with np.load(tmp_path / 'noisy2.npz') as data:
    assert sorted(data.files) == ['logits', 'preds', 'q_halt_logits', 'trajectory',
                                  'trajectory_q_halt']
  first, second = runs
  assert first['trajectory_q_halt'].shape == (5, 3) and first['trajectory'].shape == (5,)
  # The kept trajectory has the highest last-step q_halt; its outputs are the ones written.
  np.testing.assert_array_equal(first['trajectory'], first['trajectory_q_halt'].argmax(1))
  np.testing.assert_allclose(first['q_halt_logits'][-1], first['trajectory_q_halt'].max(1))
  np.testing.assert_array_equal(first['preds'], first['logits'][-1].argmax(-1))
  # Noise keyed by the example's index: the batch size does not change the answers.
  np.testing.assert_array_equal(first['preds'], second['preds'])
  np.testing.assert_array_equal(first['trajectory'], second['trajectory'])
  np.testing.assert_allclose(first['trajectory_q_halt'], second['trajectory_q_halt'],
                             rtol=1e-5, atol=1e-5)
  assert not np.allclose(first['q_halt_logits'], reference['q_halt_logits'])
  config.eval.num_trajectories = 0
  with pytest.raises(ValueError, match='config.eval: .*num_trajectories'):
    predict.run_prediction(config, export, str(tmp_path / 'in.npz'), str(tmp_path / 'x.npz'))


def test_a_checkpoint_runs_the_program_it_was_trained_with():
  config = tiny.get_config()
  config.model.activation_layout = 'sequence_major'
  config.model.fused_sequence_mlp = True
  config.model.cudnn_seq_multiple = 2
  stored = {'activation_layout': 'batch_major', 'fused_sequence_mlp': False,
            'cudnn_seq_multiple': 64, 'hidden_size': 999}
  adopted = predict.checkpoint_program(config.model, stored, 'ckpt', explicit=set())
  assert (adopted.activation_layout, adopted.fused_sequence_mlp,
          adopted.cudnn_seq_multiple) == ('batch_major', False, 64)
  assert adopted.hidden_size == config.model.hidden_size  # Only the program keys.
  assert config.model.activation_layout == 'sequence_major'  # The caller's config is kept.
  # A flag naming one key of a group keeps the whole group as configured.
  adopted = predict.checkpoint_program(config.model, stored, 'ckpt',
                                       explicit={'model.fused_sequence_mlp'})
  assert (adopted.activation_layout, adopted.fused_sequence_mlp,
          adopted.cudnn_seq_multiple) == ('sequence_major', True, 64)
  # A config stored before the program keys existed ran the program of that time.
  adopted = predict.checkpoint_program(config.model, {'hidden_size': 999}, 'ckpt',
                                       explicit=set())
  assert (adopted.activation_layout, adopted.fused_sequence_mlp,
          adopted.cudnn_seq_multiple) == ('batch_major', False, 64)
  assert (adopted.fused_swiglu, adopted.pad_sequence_once,
          adopted.sequence_mlp_kernel) == (False, False, 'triton')
  # The shipped model's kind of config (before fused_swiglu): its projections in XLA,
  # unless a flag asks for the kernel.
  config.model.fused_swiglu = True
  adopted = predict.checkpoint_program(config.model, stored, 'ckpt', explicit=set())
  assert not adopted.fused_swiglu
  adopted = predict.checkpoint_program(config.model, stored, 'ckpt',
                                       explicit={'model.fused_swiglu'})
  assert adopted.fused_swiglu and adopted.cudnn_seq_multiple == 64
  # Without any stored config the config's values are kept.
  adopted = predict.checkpoint_program(config.model, {}, 'ckpt', explicit=set())
  assert adopted.to_dict() == config.model.to_dict()
  assert predict.explicit_config_keys() == set()  # No --config flag parsed here.


# ml_collections loads config files with importlib's deprecated load_module().
@pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')
def test_explicit_config_keys_are_the_flags_given():
  argv = ['prog', f'--config={tiny.__file__}', '--config.model.activation_layout=sequence_major',
          '--config.eval.num_steps=3']
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=flag_values,
                                  sys_argv=argv)
  assert predict.explicit_config_keys(flag_values) == set()  # Not parsed yet.
  flag_values(argv)
  assert predict.explicit_config_keys(flag_values) == {'model.activation_layout',
                                                       'eval.num_steps'}

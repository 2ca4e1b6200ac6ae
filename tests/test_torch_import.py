"""Tests of tiny_recursive.torch_import and experiments.import_torch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import import_torch
from experiments.configs import tiny
from tiny_recursive import checkpointing
from tiny_recursive import model as model_lib
from tiny_recursive import torch_import

SEQ_LEN, VOCAB = 81, 11


def make_config(mixer='attention', pos_encodings=None, arch='trm', forward_dtype='float32'):
  config = tiny.get_config(mixer)
  if pos_encodings is not None:
    config.model.pos_encodings = pos_encodings
  config.model.arch = arch
  config.model.hrm_high_layers = config.model.hrm_low_layers = 2
  config.model.forward_dtype = forward_dtype
  return config


def init_variables(config, num_ids=3, seed=0):
  """Random (params, constants, puzzle table) with the model's tree, shapes and dtypes."""
  model = model_lib.build_model(config.model, seq_len=SEQ_LEN, vocab_size=VOCAB,
                                num_puzzle_identifiers=num_ids)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  rng = np.random.default_rng(seed)
  params, constants = jax.tree_util.tree_map(
      lambda s: rng.standard_normal(s.shape).astype(s.dtype),
      (shapes['params'], shapes['constants']))
  table = rng.standard_normal((num_ids, config.model.puzzle_emb_ndim)).astype(np.float32)
  return params, constants, table


def assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('kwargs', [
    dict(mixer='attention'), dict(mixer='mlp'), dict(pos_encodings='learned'),
    dict(arch='hrm'), dict(forward_dtype='bfloat16')], ids=lambda kw: '-'.join(kw.values()))
def test_round_trip_is_identity(kwargs):
  config = make_config(**kwargs)
  params, constants, table = init_variables(config)
  state_dict = torch_import.variables_to_state_dict(params, constants, table)
  params2, constants2, table2 = torch_import.state_dict_to_variables(
      state_dict, config.model, seq_len=SEQ_LEN, vocab_size=VOCAB)
  assert_trees_equal(params2, jax.tree_util.tree_map(np.asarray, params))
  assert_trees_equal(constants2, jax.tree_util.tree_map(np.asarray, constants))
  np.testing.assert_array_equal(table2, np.asarray(table))


def test_reference_layout_is_transposed_and_named():
  config = make_config('mlp', arch='trm')
  params, constants, table = init_variables(config)
  sd = torch_import.variables_to_state_dict(params, constants, table,
                                            prefix=torch_import.REFERENCE_PREFIX)
  p = torch_import.REFERENCE_PREFIX
  d, positions = config.model.hidden_size, SEQ_LEN + config.model.puzzle_emb_len
  # tiny: D = 32, expansion 2 -> round(42.67) = 43 -> 256; 83 positions -> 111 -> 256.
  assert sd[p + 'lm_head.weight'].shape == (VOCAB, d)
  np.testing.assert_array_equal(sd[p + 'lm_head.weight'], np.asarray(params['lm_head']['kernel']).T)
  assert sd[p + 'L_level.layers.1.mlp.gate_up_proj.weight'].shape == (2 * 256, d)
  assert sd[p + 'L_level.layers.0.mlp_t.gate_up_proj.weight'].shape == (2 * 256, positions)
  assert sd[p + 'L_level.layers.0.mlp_t.down_proj.weight'].shape == (positions, 256)
  assert sd[p + 'q_head.weight'].shape == (2, d) and sd[p + 'q_head.bias'].shape == (2,)
  assert sd[p + 'H_init'].shape == (d,) and sd[p + 'puzzle_emb.weights'].shape == (3, d)
  assert not any('self_attn' in k for k in sd)


@pytest.mark.parametrize('prefix', ['', '_orig_mod.', '_orig_mod.model.inner.', 'model.inner.'])
def test_prefixes_are_stripped(prefix):
  config = make_config()
  params, constants, table = init_variables(config)
  sd = torch_import.variables_to_state_dict(params, constants, table, prefix=prefix)
  params2, _, table2 = torch_import.state_dict_to_variables(
      sd, config.model, seq_len=SEQ_LEN, vocab_size=VOCAB)
  assert_trees_equal(params2, jax.tree_util.tree_map(np.asarray, params))
  assert torch_import.num_puzzle_identifiers(sd) == 3


def _state_dict(config):
  return torch_import.variables_to_state_dict(*init_variables(config),
                                              prefix=torch_import.REFERENCE_PREFIX)


def test_missing_key_is_named():
  config = make_config()
  sd = _state_dict(config)
  del sd['_orig_mod.model.inner.L_level.layers.1.self_attn.o_proj.weight']
  with pytest.raises(ValueError, match=r"missing key 'L_level.layers.1.self_attn.o_proj.weight' "
                     r"\(expected shape \(32, 32\)\)"):
    torch_import.state_dict_to_variables(sd, config.model, seq_len=SEQ_LEN, vocab_size=VOCAB)


def test_wrong_shape_names_key_expected_and_found():
  config = make_config()
  sd = _state_dict(config)
  # A checkpoint trained on a 12-token vocabulary, imported with an 11-token config.
  sd['_orig_mod.model.inner.lm_head.weight'] = np.zeros((12, 32), np.float32)
  with pytest.raises(ValueError, match=r"key 'lm_head.weight': expected shape \(11, 32\), "
                     r"found \(12, 32\)"):
    torch_import.state_dict_to_variables(sd, config.model, seq_len=SEQ_LEN, vocab_size=VOCAB)


def test_unexpected_keys_are_listed_with_a_hint():
  sd = _state_dict(make_config('mlp'))
  with pytest.raises(ValueError) as error:
    torch_import.state_dict_to_variables(sd, make_config('attention').model, seq_len=SEQ_LEN,
                                         vocab_size=VOCAB)
  message = str(error.value)
  assert "unexpected keys ['L_level.layers.0.mlp_t.down_proj.weight'" in message
  assert "missing key 'L_level.layers.0.self_attn.qkv_proj.weight'" in message
  assert "model.mixer='mlp'" in message


def test_duplicate_keys_after_stripping_are_rejected():
  config = make_config()
  sd = _state_dict(config)
  sd['q_head.bias'] = sd['_orig_mod.model.inner.q_head.bias']
  with pytest.raises(ValueError, match='duplicates'):
    torch_import.state_dict_to_variables(sd, config.model, seq_len=SEQ_LEN, vocab_size=VOCAB)


def test_bad_puzzle_table_is_named():
  config = make_config()
  sd = _state_dict(config)
  sd['_orig_mod.model.inner.puzzle_emb.weights'] = np.zeros((3, 16), np.float32)
  with pytest.raises(ValueError, match=r"'puzzle_emb.weights': expected shape "
                     r"\(num_ids >= 1, 32\), found \(3, 16\)"):
    torch_import.state_dict_to_variables(sd, config.model, seq_len=SEQ_LEN, vocab_size=VOCAB)


def test_torch_file_round_trip(tmp_path):
  torch = pytest.importorskip('torch')
  config = make_config(forward_dtype='bfloat16')
  params, constants, table = init_variables(config)
  sd = torch_import.variables_to_state_dict(params, constants, table,
                                            prefix=torch_import.REFERENCE_PREFIX)
  path = str(tmp_path / 'model.pt')
  torch_import.save_torch_state_dict(sd, path)
  raw = torch.load(path, map_location='cpu', weights_only=True)
  assert raw['_orig_mod.model.inner.H_init'].dtype == torch.bfloat16  # As the reference.
  assert raw['_orig_mod.model.inner.lm_head.weight'].dtype == torch.float32
  loaded = torch_import.load_torch_state_dict(path)
  params2, constants2, table2 = torch_import.state_dict_to_variables(
      loaded, config.model, seq_len=SEQ_LEN, vocab_size=VOCAB)
  assert_trees_equal(params2, jax.tree_util.tree_map(np.asarray, params))
  assert_trees_equal(constants2, jax.tree_util.tree_map(np.asarray, constants))
  np.testing.assert_array_equal(table2, np.asarray(table))
  assert [p.name for p in tmp_path.iterdir()] == ['model.pt']  # No temporary files left.


def test_load_rejects_missing_file_and_non_state_dict(tmp_path):
  torch = pytest.importorskip('torch')
  with pytest.raises(FileNotFoundError, match='No PyTorch checkpoint'):
    torch_import.load_torch_state_dict(str(tmp_path / 'absent.pt'))
  torch.save([torch.zeros(2)], tmp_path / 'list.pt')
  with pytest.raises(ValueError, match='expected a state dict'):
    torch_import.load_torch_state_dict(str(tmp_path / 'list.pt'))


def test_import_checkpoint_writes_a_loadable_export(tmp_path):
  pytest.importorskip('torch')
  config = make_config(forward_dtype='bfloat16')
  params, constants, table = init_variables(config, num_ids=4)
  checkpoint = str(tmp_path / 'reference.pt')
  torch_import.save_torch_state_dict(
      torch_import.variables_to_state_dict(params, constants, table,
                                           prefix=torch_import.REFERENCE_PREFIX), checkpoint)
  output = str(tmp_path / 'export')
  assert import_torch.import_checkpoint(config, checkpoint, output) == 4
  params2, constants2, table2, stored = checkpointing.load_model(output)
  assert_trees_equal(jax.tree_util.tree_map(np.asarray, params2),
                     jax.tree_util.tree_map(np.asarray, params))
  assert np.asarray(constants2['z_H_init']).dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(table2), np.asarray(table))
  assert stored['mixer'] == 'attention' and stored['hidden_size'] == 32

  with pytest.raises(FileExistsError, match='--overwrite'):
    import_torch.import_checkpoint(config, checkpoint, output)
  import_torch.import_checkpoint(config, checkpoint, output, overwrite=True)
  (tmp_path / 'empty').mkdir()
  import_torch.import_checkpoint(config, checkpoint, str(tmp_path / 'empty'))
  with pytest.raises(ValueError, match=r'reference.pt: .*unexpected keys'):
    import_torch.import_checkpoint(make_config('mlp'), checkpoint, str(tmp_path / 'other'))

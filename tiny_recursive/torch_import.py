"""Conversion between reference PyTorch state dicts and our parameter pytrees (§11).

A reference checkpoint is `torch.save(model.state_dict())` of the compiled ACT model, so its
keys carry the prefixes `_orig_mod.model.inner.`; both prefixed and bare keys are accepted.
Linear weights are stored `[out, in]` and become `[in, out]` kernels here. The expected keys
and shapes are derived from the model's own parameter tree (`jax.eval_shape` of its init), so
the import cannot silently drift from the model's layout.

torch is optional: only `load_torch_state_dict` and `save_torch_state_dict` import it.
"""

import os
import re
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from tiny_recursive import atomic_files
from tiny_recursive import model as model_lib

StateDict = Mapping[str, np.ndarray]
REFERENCE_PREFIX = '_orig_mod.model.inner.'
_STRIPPED_PREFIXES = ('_orig_mod.', 'model.inner.')

# Sub-module names: ours -> reference.
_MODULE_NAMES = {'attention': 'self_attn', 'sequence_mlp': 'mlp_t', 'mlp': 'mlp'}
# Network names: ours -> reference (TRM applies one network, stored as the reference's L_level).
_LEVEL_NAMES = {'net': 'L_level', 'low_net': 'L_level', 'high_net': 'H_level'}
_CONSTANT_NAMES = {'z_H_init': 'H_init', 'z_L_init': 'L_init'}
PUZZLE_KEY = 'puzzle_emb.weights'


def strip_prefix(key: str) -> str:
  """Removes leading `_orig_mod.` and `model.inner.` (in any order, each possibly repeated)."""
  changed = True
  while changed:
    changed = False
    for prefix in _STRIPPED_PREFIXES:
      if key.startswith(prefix):
        key, changed = key[len(prefix):], True
  return key


def _reference_key(path: tuple[str, ...]) -> tuple[str, bool]:
  """Maps a parameter path to (reference key, whether the array is transposed)."""
  if path in (('embed_tokens', 'embedding'), ('embed_pos', 'embedding')):
    return f'{path[0]}.embedding_weight', False
  if path in (('lm_head', 'kernel'), ('q_head', 'kernel')):
    return f'{path[0]}.weight', True
  if path == ('q_head', 'bias'):
    return 'q_head.bias', False
  if (len(path) == 5 and path[0] in _LEVEL_NAMES and re.fullmatch(r'block_\d+', path[1])
      and path[2] in _MODULE_NAMES and path[4] == 'kernel'):
    layer = path[1][len('block_'):]
    return (f'{_LEVEL_NAMES[path[0]]}.layers.{layer}.{_MODULE_NAMES[path[2]]}.{path[3]}.weight',
            True)
  raise ValueError(f'No reference key is known for parameter {"/".join(path)}.')


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, 'key', k)) for k in path)


def _expected_layout(model_config: ml_collections.ConfigDict, seq_len: int,
                     vocab_size: int) -> tuple[Any, dict[str, tuple[tuple[str, ...], bool,
                                                                     tuple[int, ...]]]]:
  """The model's parameter shapes and {reference key: (param path, transposed, torch shape)}."""
  model = model_lib.build_model(model_config, seq_len=seq_len, vocab_size=vocab_size)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  layout = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes['params'])[0]:
    names = _path_names(path)
    key, transposed = _reference_key(names)
    layout[key] = (names, transposed, tuple(reversed(leaf.shape)) if transposed else leaf.shape)
  return shapes, layout


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _mixer_hint(model_config, unexpected: list[str]) -> str:
  if model_config.mixer == 'attention' and any('.mlp_t.' in k for k in unexpected):
    return " The checkpoint has sequence-MLP weights: is it a model.mixer='mlp' model?"
  if model_config.mixer == 'mlp' and any('.self_attn.' in k for k in unexpected):
    return " The checkpoint has attention weights: is it a model.mixer='attention' model?"
  if any(k.startswith('H_level.') for k in unexpected) and model_config.arch != 'hrm':
    return " The checkpoint has H_level weights: is it a model.arch='hrm' model?"
  if any(k.startswith('embed_pos.') for k in unexpected):
    return " The checkpoint has learned positions: is it model.pos_encodings='learned'?"
  return ''


def state_dict_to_variables(
    state_dict: StateDict, model_config: ml_collections.ConfigDict, *, seq_len: int,
    vocab_size: int) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
  """Converts a reference state dict into (params, constants, puzzle_table).

  Args:
    state_dict: {key: array}, keys with or without the `_orig_mod.model.inner.` prefixes;
      float32 or bfloat16 (ml_dtypes) arrays.
    model_config: `config.model` describing the checkpoint's architecture.
    seq_len, vocab_size: data dimensions (`config.data`).

  Returns:
    params (float32 numpy pytree, kernels `[in, out]`), constants {'z_H_init', 'z_L_init'}
    `[hidden]` in the forward dtype, and the puzzle table float32 `[num_ids, puzzle_emb_ndim]`
    (`[1, 0]` when puzzle embeddings are off).

  Raises:
    ValueError: naming every missing key, every shape mismatch and every unexpected key.
  """
  stripped = {}
  for key, value in state_dict.items():
    bare = strip_prefix(key)
    if bare in stripped:
      raise ValueError(f'State dict key {key!r} duplicates {bare!r} once prefixes are removed.')
    stripped[bare] = value

  shapes, layout = _expected_layout(model_config, seq_len, vocab_size)
  hidden = model_config.hidden_size
  expected = {k: shape for k, (_, _, shape) in layout.items()}
  expected.update({name: (hidden,) for name in _CONSTANT_NAMES.values()})
  problems = []
  if model_config.puzzle_emb_ndim > 0:
    ndim = model_config.puzzle_emb_ndim
    if PUZZLE_KEY not in stripped:
      problems.append(f'missing key {PUZZLE_KEY!r} (expected shape (num_ids, {ndim}))')
    else:
      found = tuple(np.shape(stripped[PUZZLE_KEY]))
      if len(found) != 2 or found[1] != ndim or found[0] < 1:
        problems.append(f'key {PUZZLE_KEY!r}: expected shape (num_ids >= 1, {ndim}), '
                        f'found {found}')
    expected[PUZZLE_KEY] = None  # Any number of rows; checked above.

  for key, shape in expected.items():
    if shape is None:
      continue
    if key not in stripped:
      problems.append(f'missing key {key!r} (expected shape {tuple(shape)})')
    elif tuple(np.shape(stripped[key])) != tuple(shape):
      problems.append(f'key {key!r}: expected shape {tuple(shape)}, found '
                      f'{tuple(np.shape(stripped[key]))}')
  unexpected = sorted(set(stripped) - set(expected))
  if unexpected:
    problems.append(f'unexpected keys {unexpected}')
  if problems:
    raise ValueError(
        f'State dict does not match model (arch={model_config.arch!r}, '
        f'mixer={model_config.mixer!r}, pos_encodings={model_config.pos_encodings!r}, '
        f'hidden_size={hidden}, seq_len={seq_len}, vocab_size={vocab_size}): '
        + '; '.join(problems) + '.' + _mixer_hint(model_config, unexpected))

  params: dict[str, Any] = {}
  for key, (path, transposed, _) in layout.items():
    value = np.asarray(stripped[key], dtype=np.float32)
    _set(params, path, np.ascontiguousarray(value.T) if transposed else value)
  constant_dtype = shapes['constants']['z_H_init'].dtype
  constants = {ours: np.asarray(np.asarray(stripped[theirs], np.float32), constant_dtype)
               for ours, theirs in _CONSTANT_NAMES.items()}
  if model_config.puzzle_emb_ndim > 0:
    puzzle_table = np.asarray(stripped[PUZZLE_KEY], dtype=np.float32)
  else:
    puzzle_table = np.zeros((1, 0), np.float32)
  return params, constants, puzzle_table


def variables_to_state_dict(params: Mapping[str, Any], constants: Mapping[str, Any],
                            puzzle_table: Any | None = None, *,
                            prefix: str = '') -> dict[str, np.ndarray]:
  """The inverse of `state_dict_to_variables`: reference keys (with `prefix`), `[out, in]`.

  Parameters come out as float32; the constants keep their dtype (bfloat16 for a bfloat16
  model, as in the reference). An empty or absent puzzle table writes no puzzle key.
  """
  state_dict = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    key, transposed = _reference_key(_path_names(path))
    value = np.asarray(leaf, dtype=np.float32)
    state_dict[prefix + key] = np.ascontiguousarray(value.T) if transposed else value
  for ours, theirs in _CONSTANT_NAMES.items():
    state_dict[prefix + theirs] = np.asarray(constants[ours])
  if puzzle_table is not None and np.size(puzzle_table) > 0:
    state_dict[prefix + PUZZLE_KEY] = np.asarray(puzzle_table, dtype=np.float32)
  return state_dict


def num_puzzle_identifiers(state_dict: StateDict) -> int:
  """Rows of the state dict's puzzle-embedding table (1 when it has none)."""
  for key, value in state_dict.items():
    if strip_prefix(key) == PUZZLE_KEY:
      return int(np.shape(value)[0])
  return 1


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "Reading or writing PyTorch checkpoints needs torch: pip install -e '.[torch]'") from e
  return torch


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a `torch.save`d state dict into NumPy arrays (bfloat16 tensors become float32).

  Raises:
    FileNotFoundError: if `path` does not exist.
    ValueError: if the file does not hold a mapping of tensors.
  """
  torch = _import_torch()
  if not os.path.isfile(path):
    raise FileNotFoundError(f'No PyTorch checkpoint at {path}.')
  loaded = torch.load(path, map_location='cpu', weights_only=True)
  if not isinstance(loaded, Mapping):
    raise ValueError(f'{path}: expected a state dict (a mapping of names to tensors), '
                     f'found {type(loaded).__name__}.')
  state_dict = {}
  for key, value in loaded.items():
    if not isinstance(value, torch.Tensor):
      raise ValueError(f'{path}: entry {key!r} is a {type(value).__name__}, not a tensor.')
    value = value.detach()
    if value.is_floating_point():
      value = value.to(torch.float32)
    state_dict[key] = value.numpy()
  return state_dict


def save_torch_state_dict(state_dict: StateDict, path: str) -> None:
  """Writes a state dict with `torch.save`, atomically; bfloat16 arrays stay bfloat16."""
  torch = _import_torch()
  tensors = {}
  for key, value in state_dict.items():
    value = np.asarray(value)
    if value.dtype.name == 'bfloat16':
      tensors[key] = torch.from_numpy(value.astype(np.float32)).to(torch.bfloat16)
    else:
      tensors[key] = torch.from_numpy(np.array(value, copy=True, order='C'))
  atomic_files.write_atomically(path, lambda temp_path: torch.save(tensors, temp_path))

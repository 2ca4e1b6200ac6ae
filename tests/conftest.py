"""Shared tiny model configurations for the model, ACT and loss tests, and the shared
entry-point runs of the subprocess tests (tests/entry_point.py)."""

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import base
from tiny_recursive import model as model_lib

# A toy problem: 6 tokens of a 5-token vocabulary, 2 puzzle-embedding positions.
TINY_SEQ_LEN = 6
TINY_VOCAB = 5


def tiny_model_config(**overrides: Any) -> ml_collections.ConfigDict:
  """`config.model` of a float32 TRM with hidden size 16, with `overrides` applied."""
  config = base.get_base_config().model
  config.hidden_size = 16
  config.num_heads = 2
  config.expansion = 2.0
  config.num_layers = 2
  config.h_cycles = 3
  config.l_cycles = 2
  config.mixer = 'attention'
  config.pos_encodings = 'rope'
  config.puzzle_emb_len = 2
  config.puzzle_emb_ndim = 16
  config.forward_dtype = 'float32'
  config.halt_max_steps = 4
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def tiny_model(num_puzzle_identifiers: int = 3, **overrides: Any) -> model_lib.RecursiveModel:
  """A tiny RecursiveModel on the toy problem."""
  return model_lib.build_model(tiny_model_config(**overrides), seq_len=TINY_SEQ_LEN,
                               vocab_size=TINY_VOCAB,
                               num_puzzle_identifiers=num_puzzle_identifiers)


@pytest.fixture(scope='session')
def make_tiny_model() -> Callable[..., model_lib.RecursiveModel]:
  """Factory fixture: `make_tiny_model(**model_config_overrides)`."""
  return tiny_model


@pytest.fixture(scope='session')
def make_tiny_config() -> Callable[..., ml_collections.ConfigDict]:
  """Factory fixture: `make_tiny_config(**model_config_overrides)`."""
  return tiny_model_config


def random_variables(model: model_lib.RecursiveModel, seed: int = 0) -> dict[str, Any]:
  """{'params', 'constants'} of the model's tree drawn with NumPy (nothing is compiled).

  2-D leaves get std 1/sqrt(shape[0]), the rest std 1; the Q head is thus non-zero.
  """
  rng = np.random.default_rng(seed)

  def draw(leaf):
    scale = 1.0 / math.sqrt(leaf.shape[0]) if len(leaf.shape) == 2 else 1.0
    return jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map(draw, jax.eval_shape(model.init, jax.random.key(0)))


@pytest.fixture(scope='session')
def make_random_variables() -> Callable[..., dict[str, Any]]:
  """Factory fixture: `make_random_variables(model, seed=0)`."""
  return random_variables


@pytest.fixture(scope='session')
def shared_dirs(tmp_path_factory) -> dict[str, str]:
  """The data dir and compilation cache shared by the entry-point runs of the session."""
  base = tmp_path_factory.getbasetemp()
  return {'data_dir': str(base / 'sudoku_sample_data'),
          'cache_dir': str(base / 'jax_compilation_cache')}


@pytest.fixture(scope='session')
def reference(shared_dirs, tmp_path_factory) -> tuple[str, dict[str, float], str]:
  """(workdir, final eval, stderr) of an uninterrupted 12-step run of the entry point."""
  from tests import entry_point  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('reference'))
  result = entry_point.run_main(shared_dirs, workdir)
  return workdir, entry_point.final_eval(result), result.stderr

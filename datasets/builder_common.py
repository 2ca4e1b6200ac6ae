"""Pieces shared by the project's TFDS builders."""

import sys

from etils import epath
import numpy as np
import tensorflow_datasets as tfds


class LocalCodePath:
  """Mixin for a builder class: TFDS finds the builder's files next to its own module.

  TFDS 4.9.10 locates packaged builders through `importlib_resources`, which it only depends
  on for Python < 3.9; the defining module's file is the same answer without it.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(sys.modules[cls.__module__].__file__)


def grid_puzzle_features(num_cells: int) -> tfds.features.FeaturesDict:
  """Features of a fixed-size grid puzzle: int32 `inputs`/`labels` tokens, rating, source."""
  return tfds.features.FeaturesDict({
      'inputs': tfds.features.Tensor(shape=(num_cells,), dtype=np.int32),
      'labels': tfds.features.Tensor(shape=(num_cells,), dtype=np.int32),
      'rating': tfds.features.Scalar(dtype=np.int32),
      'source': tfds.features.Text(),
  })

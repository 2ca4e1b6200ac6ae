"""ARC-AGI-1 / ARC-AGI-2, TRM-Att (TRM_REFERENCE.md §6, §7, §8)."""

import ml_collections

from experiments.configs import base


def get_config(version: str = '1') -> ml_collections.ConfigDict:
  if version not in ('1', '2'):
    raise ValueError(f"arc_agi config: unknown version {version!r}; expected '1' or '2'.")
  config = base.get_base_config()
  config.data.name = 'arc_agi'
  config.data.builder_config = f'arc_agi_{version}'
  config.data.seq_len = 900
  config.data.vocab_size = 12
  config.data.num_augmentations = 1000
  config.model.l_cycles = 4
  config.model.mixer = 'attention'
  config.model.pos_encodings = 'rope'
  config.train.epochs = 100_000
  config.train.eval_interval = 10_000
  config.train.lr = 1e-4
  config.train.puzzle_emb_lr = 1e-2
  config.train.weight_decay = 0.1
  config.train.puzzle_emb_weight_decay = 0.1
  return config

"""Maze-Hard 30x30, TRM-Att (TRM_REFERENCE.md §6, §7).

`--config=maze_hard` trains on the hub's Maze-Hard files (TFDS config `hub`);
`--config=experiments/configs/maze_hard.py:generated` on the project's generated mazes.
"""

import ml_collections

from experiments.configs import base


def get_config(source: str = 'hub') -> ml_collections.ConfigDict:
  if source not in ('hub', 'generated'):
    raise ValueError(f"maze_hard config: unknown source {source!r}; expected 'hub' or 'generated'.")
  config = base.get_base_config()
  config.data.name = 'maze_hard'
  config.data.builder_config = source
  config.data.seq_len = 900
  config.data.vocab_size = 6
  # The reference builder adds no augmentation by default (§7).
  config.data.num_augmentations = 1
  config.model.l_cycles = 4
  config.model.mixer = 'attention'
  config.model.pos_encodings = 'rope'
  config.train.epochs = 50_000
  config.train.eval_interval = 5_000
  config.train.lr = 1e-4
  config.train.puzzle_emb_lr = 1e-4
  config.train.weight_decay = 1.0
  config.train.puzzle_emb_weight_decay = 1.0
  return config

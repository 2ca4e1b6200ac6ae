"""A toy configuration for tests: a few thousand parameters, a few CPU seconds a step."""

import ml_collections

from experiments.configs import base


def get_config(mixer: str = 'attention') -> ml_collections.ConfigDict:
  config = base.get_base_config()
  config.data.name = 'sudoku_extreme'
  config.data.builder_config = 'sample'
  config.data.seq_len = 81
  config.data.vocab_size = 11
  config.data.num_augmentations = 2
  config.model.hidden_size = 32
  config.model.num_heads = 2
  config.model.expansion = 2.0
  config.model.puzzle_emb_ndim = 32
  config.model.puzzle_emb_len = 2
  config.model.h_cycles = 2
  config.model.l_cycles = 2
  config.model.mixer = mixer
  config.model.pos_encodings = 'rope' if mixer == 'attention' else 'none'
  config.model.halt_max_steps = 3
  config.model.forward_dtype = 'float32'
  config.train.global_batch_size = 16
  config.train.epochs = 2
  config.train.eval_interval = 1
  config.train.lr = 1e-3
  config.train.puzzle_emb_lr = 1e-3
  config.train.lr_warmup_steps = 2
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 2
  config.eval.global_batch_size = 16
  return config

"""A small TRM-MLP that trains on CPU in minutes on the committed Sudoku sample.

The sample (TFDS config `sudoku_extreme/sample`) holds real Sudoku-Extreme-style solutions
with only a few cells blanked, so that exact accuracy visibly rises within minutes on a CPU; it
is a demonstration and smoke test, not a benchmark.
"""

import ml_collections

from experiments.configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_base_config()
  config.data.name = 'sudoku_extreme'
  config.data.builder_config = 'sample'
  config.data.seq_len = 81
  config.data.vocab_size = 11
  config.data.num_augmentations = 8
  config.model.hidden_size = 64
  config.model.num_heads = 4
  config.model.puzzle_emb_ndim = 64
  config.model.puzzle_emb_len = 4
  config.model.h_cycles = 2
  config.model.l_cycles = 2
  config.model.mixer = 'mlp'
  config.model.pos_encodings = 'none'
  config.model.halt_max_steps = 4
  config.model.forward_dtype = 'float32'
  config.train.global_batch_size = 64
  config.train.epochs = 10  # 2,000 puzzles x 10 epochs / 64 = 312 steps.
  config.train.eval_interval = 5
  config.train.lr = 1e-3
  config.train.puzzle_emb_lr = 1e-3
  config.train.lr_warmup_steps = 20
  config.train.weight_decay = 0.1
  # With only ~300 steps, the reference's EMA rate (0.999) would still be ~75 % the initial
  # weights at the end; 0.99 averages over the last ~100 steps.
  config.train.ema_rate = 0.99
  config.train.puzzle_emb_weight_decay = 0.1
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 100
  config.eval.global_batch_size = 128
  return config

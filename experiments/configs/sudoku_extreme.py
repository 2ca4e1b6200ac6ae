"""Sudoku-Extreme, 1k training puzzles x 1000 augmentations (TRM_REFERENCE.md §6, §7).

Variants by argument (`--config=experiments/configs/sudoku_extreme.py:VARIANT`), the rows of
the paper's Sudoku ablation table:
  mlp (default)    TRM-MLP, the headline model (87.4 %).
  att              self-attention with RoPE instead of the sequence MLP (74.7 %).
  hrm              the HRM model: two 4-layer networks, 2x2 cycles, 1-step gradient, continue head.
  one_step_grad    TRM with gradient through the last low and high update only.
  four_layers      4 layers per network with L_cycles = 3.
  single_z         one latent: the answer is re-read from the single state.
  no_ema           EMA off.
  continue_head    the Q-continue head and its bootstrapped target (second forward pass).
"""

import ml_collections

from experiments.configs import base

VARIANTS = ('mlp', 'att', 'hrm', 'one_step_grad', 'four_layers', 'single_z',
            'no_ema', 'continue_head')


def get_config(variant: str = 'mlp') -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(
        f'sudoku_extreme config: unknown variant {variant!r}; expected one of {VARIANTS}.')
  config = base.get_base_config()
  config.data.name = 'sudoku_extreme'
  config.data.builder_config = '1k'
  config.data.seq_len = 81
  config.data.vocab_size = 11
  config.model.l_cycles = 6
  config.model.mixer = 'mlp'
  config.model.pos_encodings = 'none'
  config.train.epochs = 50_000
  config.train.eval_interval = 5_000
  config.train.lr = 1e-4
  config.train.puzzle_emb_lr = 1e-4
  config.train.weight_decay = 1.0
  config.train.puzzle_emb_weight_decay = 1.0

  if variant == 'att':
    config.model.mixer = 'attention'
    config.model.pos_encodings = 'rope'
  elif variant == 'hrm':
    config.model.arch = 'hrm'
    config.model.mixer = 'attention'
    config.model.pos_encodings = 'rope'
    config.model.h_cycles = 2
    config.model.l_cycles = 2
    config.model.gradient_mode = 'one_step'
    config.model.no_act_continue = False
  elif variant == 'one_step_grad':
    config.model.gradient_mode = 'one_step'
  elif variant == 'four_layers':
    config.model.num_layers = 4
    config.model.l_cycles = 3
  elif variant == 'single_z':
    config.model.arch = 'trm_single_z'
  elif variant == 'no_ema':
    config.train.ema = False
  elif variant == 'continue_head':
    config.model.no_act_continue = False
  if config.model.mixer == 'mlp':
    # The same parameters and function in a faster program (docs/benchmarks.md, one H200:
    # 126.9 -> 114.7 ms per step, 638 -> 815 evaluated puzzles/s; 1,000 training steps within
    # the seed spread). The fused kernel is GPU only; elsewhere the same mixer runs in XLA.
    # activation_layout='batch_major' with fused_sequence_mlp=False gives the program before.
    config.model.activation_layout = 'sequence_major'
    config.model.fused_sequence_mlp = True
  return config

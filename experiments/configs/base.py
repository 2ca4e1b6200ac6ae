"""Shared defaults for every experiment (TRM_REFERENCE.md §6, "Common").

Each experiment file builds on `get_base_config()` and overrides what differs.
Every hyperparameter of the reference runs is visible here; none is buried in code.
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  """Returns the reference's common hyperparameters."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  # --- Model (§3) ---
  model = config.model = ml_collections.ConfigDict()
  model.arch = 'trm'  # 'trm' | 'trm_single_z' | 'hrm'
  model.hidden_size = 512
  model.num_heads = 8
  model.expansion = 4.0
  model.num_layers = 2  # L_layers: blocks in the (single) TRM network.
  model.hrm_high_layers = 4  # H_layers of the HRM high-level network.
  model.hrm_low_layers = 4  # L_layers of the HRM low-level network.
  model.h_cycles = 3
  model.l_cycles = 6
  model.mixer = 'attention'  # 'attention' | 'mlp' (SwiGLU over the sequence axis)
  model.pos_encodings = 'rope'  # 'rope' | 'learned' | 'none'
  model.rope_theta = 10000.0
  model.rms_norm_eps = 1e-5
  model.puzzle_emb_len = 16
  model.puzzle_emb_ndim = 512  # 0 disables puzzle embeddings.
  model.forward_dtype = 'bfloat16'  # 'bfloat16' | 'float32'
  # 'last_cycle': gradient through the whole last H cycle (TRM, §3);
  # 'one_step': gradient through the last low and high update only (HRM's 1-step).
  model.gradient_mode = 'last_cycle'
  # ACT (§4).
  model.halt_max_steps = 16
  model.halt_exploration_prob = 0.1
  model.no_act_continue = True  # True: halt on q_halt > 0, no continue head loss.
  # Performance levers (no effect on the math).
  model.remat_policy = 'none'  # 'none' | 'full' | 'dots' | 'dots_no_batch'
  model.scan_unroll = 8  # Unrolls the cycle loops (all of them at the reference's L_cycles <= 8): faster on GPU.
  model.attention_impl = 'auto'  # 'auto' (cuDNN on GPU, else XLA) | 'xla' | 'cudnn'
  # 'batch_major' | 'sequence_major' (mixer='mlp' only: activations [seq, batch, hidden], so
  # the sequence MLP needs no transposes or padding; same parameters, same function).
  model.activation_layout = 'batch_major'
  # With 'sequence_major': the sequence MLP of the calls without gradient as one GPU kernel
  # (tiny_recursive/fused_sequence_mlp.py); other backends run the same function in XLA.
  model.fused_sequence_mlp = False
  # Which kernel that is: 'mosaic' (tiny_recursive/sequence_mlp_gemm.py, Hopper tensor cores;
  # elsewhere 'triton') or 'triton' (tiny_recursive/fused_sequence_mlp.py, any GPU Triton runs
  # on; the program before). On an H200 'mosaic' takes the Sudoku MLP step from 112.4 to
  # 109.2 ms and evaluation from 864 to 940 puzzles/s (docs/benchmarks.md).
  model.sequence_mlp_kernel = 'mosaic'
  # cuDNN attention runs on the sequence zero-padded to the smallest even multiple of this (the
  # padding masked out; cuDNN trains on even lengths only). 2: odd lengths gain one row
  # (Sudoku 97 -> 98, ARC 916 as is); 64 was the setting before (layers._cudnn_attention).
  model.cudnn_seq_multiple = 2
  # The channel MLP's gate/up projection with its SwiGLU product, in the calls without
  # gradient, as one kernel (tiny_recursive/swiglu_gemm.py, Hopper GPUs; 4-6 % faster
  # evaluation, 1-2 % faster training on an H200, docs/benchmarks.md); elsewhere, and for
  # shapes it does not take, the same function runs in XLA. False gives the program before.
  model.fused_swiglu = True
  # With cuDNN attention on a length it pads (Sudoku Att: 97 -> 98): pad the sequence once per
  # supervision step, the extra positions masked out as keys, instead of padding q, k, v and
  # cutting the output in every attention call (model.RecursiveModel.network_len). On an
  # H200 the Sudoku Att step goes from 104.2 to 98.2 ms and evaluation from 817 to 885
  # puzzles/s (docs/benchmarks.md); False gives the program before. No effect on lengths
  # cuDNN takes as they are (ARC, Maze: 916) or without cuDNN.
  model.pad_sequence_once = True
  # The calls with gradient on GPU: the SwiGLU products' gradient (both halves) from one
  # elementwise kernel (tiny_recursive/swiglu_gradient.py) instead of autodiff's two passes;
  # elsewhere, and where the calls see more than one device's rows, autodiff's. On an H200 the
  # Sudoku MLP step goes from 108.0 to 103.6 ms, Sudoku Att 97.1 to 95.7, ARC 199.6 to 198.0
  # (docs/benchmarks.md). False gives the program before.
  model.swiglu_gradient_kernel = True

  # --- Data (§2, §7) ---
  data = config.data = ml_collections.ConfigDict()
  data.name = ''  # TFDS builder: 'sudoku_extreme' | 'maze_hard' | 'arc_agi'
  data.builder_config = ''
  data.data_dir = ''  # Empty: TFDS default (~/tensorflow_datasets).
  data.seq_len = 0
  data.vocab_size = 0
  data.ignore_label_id = 0
  data.num_augmentations = 1000  # Augmented versions per puzzle (§7).
  data.fresh_augmentation = False  # True: new random augmentation every epoch.
  data.augmentation_seed = 0
  # Epochs packed back to back before the last partial batch is dropped; 0 means
  # train.eval_interval, as the reference packs one evaluation interval at a time.
  data.epochs_per_iteration = 0
  data.maze_augmentation = 'none'  # 'none' (reference default) | 'dihedral'
  data.prefetch_buffer_size = 4

  # --- Training (§4, §5) ---
  train = config.train = ml_collections.ConfigDict()
  train.global_batch_size = 768
  train.epochs = 50_000
  train.eval_interval = 5_000  # In epochs, as the reference counts.
  # >0: evaluate every this many steps instead (denser learning curves); the data order,
  # which the reference packs per eval_interval, does not change.
  train.eval_every_steps = 0
  train.lr = 1e-4
  train.lr_min_ratio = 1.0
  train.lr_warmup_steps = 2000
  train.beta1 = 0.9
  train.beta2 = 0.95
  train.weight_decay = 1.0
  train.puzzle_emb_lr = 1e-4
  train.puzzle_emb_weight_decay = 1.0
  train.loss_type = 'stablemax'  # 'stablemax' | 'softmax'
  train.ema = True
  train.ema_rate = 0.999
  train.log_every_steps = 100
  train.checkpoint_every_steps = 1000
  train.keep_checkpoints = 3
  # False leaves the ACT carry (z_H, z_L of every batch slot: 153 MB of 233 MB for
  # Sudoku at batch 768) out of checkpoints; on resume every slot restarts from the init
  # states, as at the first step. Smaller checkpoints to move between machines.
  train.checkpoint_act_carry = True
  train.max_steps = 0  # >0 stops early (smoke tests, benchmarks).
  # 'shard_map': each device differentiates its rows and float32 gradients are summed
  # across devices, so N devices compute what one does (docs/multi_device.md);
  # 'auto': XLA partitions the whole step.
  train.data_parallel = 'shard_map'

  # --- Evaluation ---
  evaluation = config.eval = ml_collections.ConfigDict()
  evaluation.global_batch_size = 768
  # Also run an early-exit pass (stop each batch once all its puzzles have q_halt > 0) and
  # report its accuracy and time beside the fixed halt_max_steps evaluation.
  evaluation.adaptive_halting = False
  evaluation.max_examples = 0  # >0 evaluates on a prefix (quick checks).
  # ARC: >0 evaluates only the first N kept versions of each task (version 0, the identity,
  # always among them), then max_examples takes its prefix of those rows. 0: every kept
  # version, the reference protocol. N>0 is cheaper but approximate: measure its effect on
  # pass@2 on the same checkpoint before trusting it. Other data sets: must stay 0.
  evaluation.arc_versions = 0
  # Test-time scaling (docs/test_time_scaling.md); the defaults are the reference evaluation.
  evaluation.num_steps = 0  # Supervision steps per puzzle; 0: model.halt_max_steps.
  # K trajectories per puzzle, each with Gaussian noise of std trajectory_noise (relative to
  # the latent's unit RMS) added to z_L after every low-level update; per puzzle the one
  # with the highest last-step q_halt is kept. Memory and compute grow K-fold: lower
  # global_batch_size to fit.
  evaluation.num_trajectories = 1
  evaluation.trajectory_noise = 0.0
  evaluation.noise_seed = 0
  return config

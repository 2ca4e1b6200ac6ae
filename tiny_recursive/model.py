"""The recursive reasoning models: TRM, single-z TRM and HRM (TRM_REFERENCE.md §3).

Notation: the answer state `y` of the paper is `z_H`, the latent `z` is `z_L`. One call of
`supervision_step` is one step of deep supervision:

    repeat H_cycles - 1 times, without gradient:
        repeat L_cycles times: z_L = low_net(z_L, z_H + x)
        z_H = high_net(z_H, z_L)
    once, with gradient: the same cycle
    logits = lm_head(z_H)[puzzle_emb_len:];  q_halt, q_continue = q_head(z_H[0])

For TRM `low_net` and `high_net` are the same network. The cycles are `jax.lax.scan` loops, so
compile time does not grow with the number of cycles. Parameters are plain pytrees and every
method is a pure function, so the train step can differentiate with respect to the dense
parameters and the gathered puzzle-embedding rows separately (the rows have their own
optimizer, §5).
"""

import dataclasses
import math
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp

from tiny_recursive import hopper_kernels
from tiny_recursive import layers
from tiny_recursive import puzzle_embedding

Array = jax.Array
Params = Any

ARCHITECTURES = ('trm', 'trm_single_z', 'hrm')
GRADIENT_MODES = ('last_cycle', 'one_step')
POS_ENCODINGS = ('rope', 'learned', 'none')
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.dots_saveable,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def gpu_backend() -> bool:
  """Whether JAX runs on GPUs (where the networks' GPU kernels may be used)."""
  return jax.default_backend() == 'gpu'


def traced_per_device() -> bool:
  """Whether the code being traced computes one device's rows: a single device, or inside
  `shard_map` (the train step). XLA does not partition Pallas kernels: in a jit over several
  devices (the evaluation passes) each device would run them on the whole gathered batch, so
  the fused kernels are used only here."""
  return jax.device_count() == 1 or bool(jax.sharding.get_abstract_mesh().manual_axes)


@flax.struct.dataclass
class StepOutputs:
  """Outputs of one supervision step.

  logits: float32 [batch, seq_len, vocab]; q_halt, q_continue: float32 [batch].
  """
  logits: Array
  q_halt: Array
  q_continue: Array


ATTENTION_IMPLS = ('auto', 'xla', 'cudnn')
MIXERS = ('attention', 'mlp')
ACTIVATION_LAYOUTS = ('batch_major', 'sequence_major')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The model's hyperparameters (`config.model`, TRM_REFERENCE.md §3, §4) and the data
  set's dimensions, checked on construction.

  Built once from the experiment config (`from_experiment_config`) and saved as checkpoint
  metadata (`to_dict`, read back by `from_dict`).
  """
  seq_len: int  # Tokens of a puzzle (81 Sudoku, 900 Maze/ARC).
  vocab_size: int  # Token vocabulary size.
  num_puzzle_identifiers: int  # Rows of the puzzle-embedding table (blank id 0 included).
  arch: str
  hidden_size: int
  num_heads: int
  expansion: float
  num_layers: int
  hrm_high_layers: int
  hrm_low_layers: int
  h_cycles: int
  l_cycles: int
  mixer: str
  pos_encodings: str
  rope_theta: float
  rms_norm_eps: float
  puzzle_emb_len: int  # 0: ceil(puzzle_emb_ndim / hidden_size).
  puzzle_emb_ndim: int  # 0 disables puzzle embeddings.
  forward_dtype: str
  gradient_mode: str
  halt_max_steps: int
  halt_exploration_prob: float
  no_act_continue: bool
  remat_policy: str
  scan_unroll: int
  attention_impl: str
  # Keys added after checkpoints began storing this config have defaults, so that configs
  # stored without them still read back (`from_dict`): the values those checkpoints ran with
  # (the configs' own defaults, set in experiments/configs, may differ).
  activation_layout: str = 'batch_major'
  fused_sequence_mlp: bool = False
  cudnn_seq_multiple: int = 64
  fused_swiglu: bool = False
  pad_sequence_once: bool = False
  sequence_mlp_kernel: str = 'triton'
  swiglu_gradient_kernel: bool = False

  def __post_init__(self):
    """Raises ValueError naming the `model.` key of the first invalid value."""
    checks = (
        (self.arch in ARCHITECTURES, 'arch',
         f'expected one of {ARCHITECTURES}, got {self.arch!r}.'),
        (self.gradient_mode in GRADIENT_MODES, 'gradient_mode',
         f'expected one of {GRADIENT_MODES}, got {self.gradient_mode!r}.'),
        (self.pos_encodings in POS_ENCODINGS, 'pos_encodings',
         f'expected one of {POS_ENCODINGS}, got {self.pos_encodings!r}.'),
        (self.remat_policy in REMAT_POLICIES, 'remat_policy',
         f'expected one of {tuple(REMAT_POLICIES)}, got {self.remat_policy!r}.'),
        (self.forward_dtype in ('bfloat16', 'float32'), 'forward_dtype',
         f"expected 'bfloat16' or 'float32', got {self.forward_dtype!r}."),
        (self.mixer in MIXERS, 'mixer', f"expected 'attention' or 'mlp', got {self.mixer!r}."),
        (self.attention_impl in ATTENTION_IMPLS, 'attention_impl',
         f"expected 'auto', 'xla' or 'cudnn', got {self.attention_impl!r}."),
        (self.activation_layout in ACTIVATION_LAYOUTS, 'activation_layout',
         f'expected one of {ACTIVATION_LAYOUTS}, got {self.activation_layout!r}.'),
        (self.activation_layout == 'batch_major' or self.mixer == 'mlp', 'activation_layout',
         f"'sequence_major' needs model.mixer = 'mlp' (got {self.mixer!r})."),
        (not self.fused_sequence_mlp or self.activation_layout == 'sequence_major',
         'fused_sequence_mlp', "needs model.activation_layout = 'sequence_major'."),
        (self.sequence_mlp_kernel in layers.SEQUENCE_MLP_KERNELS, 'sequence_mlp_kernel',
         f'expected one of {layers.SEQUENCE_MLP_KERNELS}, got {self.sequence_mlp_kernel!r}.'),
        (self.cudnn_seq_multiple >= 1, 'cudnn_seq_multiple',
         f'must be at least 1, got {self.cudnn_seq_multiple}.'),
        (self.hidden_size % self.num_heads == 0, 'hidden_size',
         f'({self.hidden_size}) must be divisible by model.num_heads ({self.num_heads}).'),
        (self.h_cycles >= 1 and self.l_cycles >= 1, 'h_cycles',
         'model.h_cycles and model.l_cycles must be at least 1.'),
        (self.halt_max_steps >= 1, 'halt_max_steps',
         f'must be at least 1, got {self.halt_max_steps}.'),
        (0 <= self.halt_exploration_prob <= 1, 'halt_exploration_prob',
         f'must be in [0, 1], got {self.halt_exploration_prob}.'),
        (self.scan_unroll >= 1, 'scan_unroll', f'must be at least 1, got {self.scan_unroll}.'),
        (self.seq_len >= 1 and self.vocab_size >= 1, 'seq_len',
         f'seq_len ({self.seq_len}) and vocab_size ({self.vocab_size}) must be positive.'),
        (self.num_puzzle_identifiers >= 1, 'num_puzzle_identifiers',
         f'must be at least 1, got {self.num_puzzle_identifiers}.'),
    )
    for ok, key, message in checks:
      if not ok:
        raise ValueError(f'model.{key}: {message}')
    if self.puzzle_emb_ndim > self.prefix_len * self.hidden_size:
      raise ValueError(f'model.puzzle_emb_ndim ({self.puzzle_emb_ndim}) must fit in '
                       f'model.puzzle_emb_len x hidden_size ({self.prefix_len} x '
                       f'{self.hidden_size}).')

  @property
  def prefix_len(self) -> int:
    """Positions prepended for the puzzle embedding (ceil(ndim / D) when puzzle_emb_len is 0)."""
    return self.puzzle_emb_len or -(self.puzzle_emb_ndim // -self.hidden_size)

  @classmethod
  def create(cls, model: Mapping[str, Any], *, seq_len: int, vocab_size: int,
             num_puzzle_identifiers: int = 1) -> 'ModelConfig':
    """From `config.model` (a ConfigDict or dict) and the data set's dimensions."""
    return cls.from_dict(dict(model, seq_len=seq_len, vocab_size=vocab_size,
                              num_puzzle_identifiers=num_puzzle_identifiers))

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> 'ModelConfig':
    """From `to_dict`'s output or checkpoint metadata; unknown keys are ignored.

    Raises:
      ValueError: naming the missing keys, or the first invalid value.
    """
    fields = dataclasses.fields(cls)
    names = [field.name for field in fields]
    missing = [field.name for field in fields
               if field.name not in values and field.default is dataclasses.MISSING]
    if missing:
      raise ValueError(f'model config: missing keys {missing}.')
    return cls(**{name: values[name] for name in names if name in values})

  def to_dict(self) -> dict[str, Any]:
    """JSON-compatible: `config.model`'s keys plus seq_len, vocab_size,
    num_puzzle_identifiers (the checkpoint metadata's `model_config`)."""
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RecursiveModel:
  """A TRM/HRM model bound to its configuration; all methods are pure functions of params.

  Attributes:
    config: the typed model config, dimensions included.
  """
  config: ModelConfig

  @property
  def seq_len(self) -> int:
    return self.config.seq_len

  @property
  def vocab_size(self) -> int:
    return self.config.vocab_size

  @property
  def num_puzzle_identifiers(self) -> int:
    return self.config.num_puzzle_identifiers

  # --- Shapes ---

  @property
  def puzzle_emb_len(self) -> int:
    """Positions prepended for the puzzle embedding (ceil(ndim / D) when the config says 0)."""
    return self.config.prefix_len

  @property
  def total_len(self) -> int:
    """Sequence length seen by the network: seq_len + puzzle_emb_len."""
    return self.seq_len + self.puzzle_emb_len

  @property
  def network_len(self) -> int:
    """Positions the networks run on: `total_len`, or with `model.pad_sequence_once` and
    cuDNN attention the length cuDNN pads to (`layers.cudnn_padded_len`): the sequence is
    then padded once per supervision step instead of in every attention call, the extra
    positions masked out as keys and dropped before the heads."""
    c = self.config
    if (c.pad_sequence_once and c.mixer == 'attention'
        and layers.resolve_attention_impl(c.attention_impl) == 'cudnn'):
      return layers.cudnn_padded_len(self.total_len, c.cudnn_seq_multiple)
    return self.total_len

  @property
  def dtype(self) -> Any:
    return jnp.dtype(self.config.forward_dtype)

  @property
  def sequence_major(self) -> bool:
    """Whether the networks run on `[seq, batch, hidden]` activations (see layers.Block)."""
    return self.config.activation_layout == 'sequence_major'

  def _network(self, num_layers: int, sequence_major: bool = False,
               fused: bool = False, fused_swiglu: bool = False,
               swiglu_gradient_kernel: bool = False) -> layers.Network:
    c = self.config
    real_len = self.total_len if self.network_len != self.total_len else 0
    return layers.Network(num_layers, c.hidden_size, c.num_heads, c.expansion, c.mixer,
                          self.network_len, c.rms_norm_eps, self.dtype, c.attention_impl,
                          sequence_major, fused, c.cudnn_seq_multiple, fused_swiglu,
                          real_len, self._sequence_mlp_kernel(), swiglu_gradient_kernel)

  def _sequence_mlp_kernel(self) -> str:
    """`model.sequence_mlp_kernel`, with 'mosaic' (Hopper only) falling back to 'triton'."""
    kernel = self.config.sequence_mlp_kernel
    return 'triton' if kernel == 'mosaic' and not hopper_kernels.available() else kernel

  @property
  def network_names(self) -> tuple[str, ...]:
    return ('high_net', 'low_net') if self.config.arch == 'hrm' else ('net',)

  def _num_layers(self, name: str) -> int:
    c = self.config
    return {'net': c.num_layers, 'high_net': c.hrm_high_layers,
            'low_net': c.hrm_low_layers}[name]

  # --- Initialisation ---

  def init(self, rng: Array) -> dict[str, Params]:
    """Returns {'params': float32 trainable pytree, 'constants': {'z_H_init', 'z_L_init'}}."""
    c = self.config
    keys = jax.random.split(rng, 8)
    embed_std = 1.0 / math.sqrt(c.hidden_size)
    params = {
        'embed_tokens': {'embedding': layers.truncated_normal(embed_std)(
            keys[0], (self.vocab_size, c.hidden_size))},
        'lm_head': {'kernel': layers.truncated_normal(embed_std)(
            keys[1], (c.hidden_size, self.vocab_size))},
        # Q head starts at (almost) "never halt": weight 0, bias -5 (reference init).
        'q_head': {'kernel': jnp.zeros((c.hidden_size, 2), jnp.float32),
                   'bias': jnp.full((2,), -5.0, jnp.float32)},
    }
    if c.pos_encodings == 'learned':
      params['embed_pos'] = {'embedding': layers.truncated_normal(embed_std)(
          keys[2], (self.total_len, c.hidden_size))}
    dummy = jnp.zeros((1, self.network_len, c.hidden_size), self.dtype)
    for i, name in enumerate(self.network_names):
      # Batch-major: both layouts have the same parameters.
      network = self._network(self._num_layers(name))
      params[name] = network.init(keys[3 + i], dummy, dummy, self._rope())['params']
    constants = {
        'z_H_init': layers.truncated_normal(1.0)(keys[6], (c.hidden_size,)).astype(self.dtype),
        'z_L_init': layers.truncated_normal(1.0)(keys[7], (c.hidden_size,)).astype(self.dtype),
    }
    return {'params': params, 'constants': constants}

  def init_puzzle_table(self) -> Array:
    """Zero-initialised puzzle-embedding table, float32 [num_puzzle_identifiers, ndim]."""
    return jnp.zeros((self.num_puzzle_identifiers, self.config.puzzle_emb_ndim), jnp.float32)

  def initial_state(self, constants: Params, batch_size: int) -> tuple[Array, Array]:
    """(z_H, z_L), each [batch, total_len, hidden] in the forward dtype, at their init vectors."""
    shape = (batch_size, self.total_len, self.config.hidden_size)
    return (jnp.broadcast_to(constants['z_H_init'], shape),
            jnp.broadcast_to(constants['z_L_init'], shape))

  def reset_state(self, constants: Params, reset: Array, z_H: Array,
                  z_L: Array) -> tuple[Array, Array]:
    """Masked reset: rows where `reset` [batch] is true go back to the init vectors."""
    mask = reset[:, None, None]
    return (jnp.where(mask, constants['z_H_init'], z_H),
            jnp.where(mask, constants['z_L_init'], z_L))

  def puzzle_rows(self, table: Array, ids: Array) -> Array | None:
    """Rows float32 [batch, puzzle_emb_ndim] of the puzzle table for ids int32 [batch], or
    None when puzzle embeddings are off."""
    if self.config.puzzle_emb_ndim <= 0:
      return None
    return puzzle_embedding.lookup(table, ids)

  def param_count(self, params: Params) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))

  # --- Forward ---

  def _rope(self) -> tuple[Array, Array] | None:
    c = self.config
    if c.pos_encodings != 'rope':
      return None
    return layers.rope_tables(self.network_len, c.hidden_size // c.num_heads, c.rope_theta)

  def embed(self, params: Params, inputs: Array, puzzle_rows: Array | None) -> Array:
    """Input embedding x [batch, total_len, hidden] in the forward dtype.

    Args:
      inputs: int32 [batch, seq_len] tokens.
      puzzle_rows: float32 [batch, puzzle_emb_ndim] rows of the puzzle table, or None when
        puzzle embeddings are off.
    """
    c = self.config
    dtype = self.dtype
    # A one-hot product rather than a gather: the gather's backward is a scatter-add of
    # every token into a handful of vocabulary rows, serialised on atomics on GPU; the
    # product's backward is a GEMM. Exact: each output is one table entry times 1.
    one_hot = jax.nn.one_hot(inputs, self.vocab_size, dtype=dtype)
    embedding = jnp.dot(one_hot, params['embed_tokens']['embedding'].astype(dtype),
                        precision=jax.lax.Precision.HIGHEST)
    batch = inputs.shape[0]
    if c.puzzle_emb_ndim > 0:
      rows = puzzle_rows.astype(dtype)
      pad = self.puzzle_emb_len * c.hidden_size - rows.shape[-1]
      rows = jnp.pad(rows, ((0, 0), (0, pad)))
      prefix = rows.reshape(batch, self.puzzle_emb_len, c.hidden_size)
    else:
      prefix = jnp.zeros((batch, self.puzzle_emb_len, c.hidden_size), dtype)
    embedding = jnp.concatenate([prefix, embedding], axis=1)
    if c.pos_encodings == 'learned':
      # Scaled by 1/sqrt(2) to keep the forward variance (reference).
      embedding = 0.707106781 * (embedding + params['embed_pos']['embedding'].astype(dtype))
    return (math.sqrt(c.hidden_size) * embedding).astype(dtype)

  def _network_fn(self, params: Params, name: str, differentiated: bool):
    """Returns f(h, injection) applying network `name`.

    Differentiated calls are rematerialised as `model.remat_policy` says; the others may use
    the forward-only kernels: the fused sequence MLP (`model.fused_sequence_mlp`, GPU only;
    `model.sequence_mlp_kernel` picks Triton's or, on Hopper, Mosaic GPU's) and the fused
    SwiGLU projection (`model.fused_swiglu`, Hopper GPUs only), where the
    traced code sees one device's rows (`traced_per_device`); elsewhere the same functions
    run in XLA. Differentiated calls on GPU may take their SwiGLU products' gradient from one
    kernel (`model.swiglu_gradient_kernel`), under the same rule.
    """
    per_device = traced_per_device()
    on_gpu = gpu_backend()
    fused = self.config.fused_sequence_mlp and not differentiated and per_device and on_gpu
    fused_swiglu = (self.config.fused_swiglu and not differentiated and per_device
                    and hopper_kernels.available())
    gradient_kernel = (self.config.swiglu_gradient_kernel and differentiated and per_device
                       and on_gpu)
    network = self._network(self._num_layers(name), self.sequence_major, fused, fused_swiglu,
                            gradient_kernel)
    rope = self._rope()

    def apply(net_params, h, injection):
      return network.apply({'params': net_params}, h, injection, rope)

    policy = REMAT_POLICIES[self.config.remat_policy]
    if differentiated and self.config.remat_policy != 'none':
      apply = jax.checkpoint(apply, policy=policy)
    return lambda h, injection: apply(params[name], h, injection)

  def _cycle(self, params: Params, z_H: Array, z_L: Array, x: Array, *, differentiated: bool,
             grad_low_steps: int | None,
             perturb: Callable[[Array, Array], Array] | None = None) -> tuple[Array, Array]:
    """One H cycle: L_cycles low updates, then one high update.

    `grad_low_steps` None: all updates use `params` as given. Otherwise only the last
    `grad_low_steps` low updates (and the high update) see gradients: the others use
    stop-gradient parameters (HRM's 1-step gradient).

    `perturb(z_L, l)`, when given, is applied to z_L after low update l (int32, 0-based in
    the cycle); None leaves the computation exactly as without it.
    """
    c = self.config
    low_name = 'low_net' if c.arch == 'hrm' else 'net'
    high_name = 'high_net' if c.arch == 'hrm' else 'net'
    single_z = c.arch == 'trm_single_z'

    def low_update(net, z_H, z_L):
      if single_z:  # z = net(z + x): the single state is both latent and answer.
        return net(z_L, x)
      return net(z_L, z_H + x)

    def low_loop(net, z_L, start, length):
      if length == 0:
        return z_L
      if perturb is None:
        body = lambda z, _: (low_update(net, z_H, z), None)
        z_L, _ = jax.lax.scan(body, z_L, None, length=length, unroll=c.scan_unroll)
        return z_L
      body = lambda z, l: (perturb(low_update(net, z_H, z), l), None)
      z_L, _ = jax.lax.scan(body, z_L, jnp.arange(start, start + length, dtype=jnp.int32),
                            unroll=c.scan_unroll)
      return z_L

    low_net = self._network_fn(params, low_name, differentiated)
    if grad_low_steps is None:
      z_L = low_loop(low_net, z_L, 0, c.l_cycles)
    else:
      frozen = self._network_fn(jax.lax.stop_gradient(params), low_name, differentiated=False)
      num_frozen = c.l_cycles - grad_low_steps
      z_L = jax.lax.stop_gradient(low_loop(frozen, z_L, 0, num_frozen))
      z_L = low_loop(low_net, z_L, num_frozen, grad_low_steps)
    high_net = self._network_fn(params, high_name, differentiated)
    if single_z:
      z_L = high_net(z_L, None)
      return z_L, z_L
    return high_net(z_H, z_L), z_L

  def _heads(self, params: Params, z_H: Array) -> tuple[Array, Array]:
    """lm_head on the puzzle positions and q_head on position 0 of `z_H`.

    Returns float32 logits [batch, seq_len, vocab] and q [batch, 2] (halt, continue). Both
    heads run as one product with a kernel [hidden, vocab + 2] zero-padded to a multiple of
    16 columns (vocab is 6-12: unaligned on its own); each output entry is the same dot
    product as with separate heads.
    """
    dtype = self.dtype
    vocab = self.vocab_size
    kernel = jnp.concatenate([params['lm_head']['kernel'], params['q_head']['kernel']],
                             axis=1).astype(dtype)
    width = layers.find_multiple(vocab + 2, 16)
    kernel = jnp.pad(kernel, ((0, 0), (0, width - vocab - 2)))
    out = jnp.dot(z_H, kernel)
    logits = out[:, self.puzzle_emb_len:, :vocab]
    q = out[:, 0, vocab:vocab + 2] + params['q_head']['bias'].astype(dtype)
    return logits.astype(jnp.float32), q.astype(jnp.float32)

  @property
  def low_updates_per_step(self) -> int:
    """Low-level (z_L) updates in one supervision step: H_cycles x L_cycles."""
    return self.config.h_cycles * self.config.l_cycles

  def supervision_step(self, params: Params, puzzle_rows: Array | None, z_H: Array,
                       z_L: Array, inputs: Array, *,
                       perturb_latent: Callable[[Array, Array], Array] | None = None,
                       differentiated: bool = True
                       ) -> tuple[tuple[Array, Array], StepOutputs]:
    """One supervision step (one call of the inner model), §3.

    Args:
      params: dense parameters (float32 pytree).
      puzzle_rows: float32 [batch, puzzle_emb_ndim] gathered puzzle embeddings.
      z_H, z_L: [batch, total_len, hidden] states in the forward dtype.
      inputs: int32 [batch, seq_len].
      perturb_latent: evaluation only (test-time noise, docs/test_time_scaling.md):
        `perturb_latent(z_L, u)` replaces z_L after every low update, u int32 in
        [0, low_updates_per_step) numbering the updates of this step (h * L_cycles + l).
        None (training, default evaluation) builds exactly the graph without it.
      differentiated: False when no gradient of this step is taken (evaluation, the
        bootstrapped Q target): the last cycle is then built like the others, without
        rematerialisation and eligible for `model.fused_sequence_mlp`.

    Returns:
      (new_z_H, new_z_L) with gradients stopped (the carry of the next step), and StepOutputs.
    """
    c = self.config
    x = self.embed(params, inputs, puzzle_rows)
    # The carry never receives gradient (also when h_cycles == 1).
    z_H, z_L = jax.lax.stop_gradient(z_H), jax.lax.stop_gradient(z_L)
    extra = self.network_len - self.total_len
    if extra:
      # model.pad_sequence_once: zero positions appended for the whole step (see network_len).
      x, z_H, z_L = (jnp.pad(a, ((0, 0), (0, extra), (0, 0))) for a in (x, z_H, z_L))
      if perturb_latent is not None:
        real_perturb, real = perturb_latent, self.total_len
        perturb_latent = lambda z, u: jnp.concatenate(
            [real_perturb(z[:, :real], u), z[:, real:]], axis=1)
    if self.sequence_major:
      # The networks run on [seq, batch, hidden]; the carry, the noise draws and the heads
      # stay batch-major, so that only these transposes differ from the default layout.
      x, z_H, z_L = (jnp.swapaxes(a, 0, 1) for a in (x, z_H, z_L))
      if perturb_latent is not None:
        batch_major_perturb = perturb_latent
        perturb_latent = lambda z, u: jnp.swapaxes(
            batch_major_perturb(jnp.swapaxes(z, 0, 1), u), 0, 1)

    def cycle_perturb(h):
      """perturb_latent bound to H cycle `h` (int or int32 scalar), or None."""
      if perturb_latent is None:
        return None
      return lambda z, l: perturb_latent(z, h * c.l_cycles + l)

    if c.h_cycles > 1:
      # H_cycles - 1 cycles without gradient: nothing inside depends on a differentiated
      # value, so autodiff builds no tangents for them.
      frozen_params = jax.lax.stop_gradient(params)
      frozen_x = jax.lax.stop_gradient(x)

      def no_grad_cycle(carry, h):
        z_H, z_L = carry
        return self._cycle(frozen_params, z_H, z_L, frozen_x, differentiated=False,
                           grad_low_steps=None, perturb=cycle_perturb(h)), None

      cycles = None if perturb_latent is None else jnp.arange(c.h_cycles - 1, dtype=jnp.int32)
      (z_H, z_L), _ = jax.lax.scan(no_grad_cycle, (z_H, z_L), cycles, length=c.h_cycles - 1,
                                   unroll=c.scan_unroll)
      z_H, z_L = jax.lax.stop_gradient(z_H), jax.lax.stop_gradient(z_L)

    # The last cycle, with gradient unless `differentiated` is False: through all L_cycles + 1
    # network calls (TRM), or only through the last low and the high update (1-step, HRM).
    grad_low_steps = 1 if c.gradient_mode == 'one_step' else None
    z_H, z_L = self._cycle(params, z_H, z_L, x, differentiated=differentiated,
                           grad_low_steps=grad_low_steps, perturb=cycle_perturb(c.h_cycles - 1))
    if self.sequence_major:
      z_H, z_L = jnp.swapaxes(z_H, 0, 1), jnp.swapaxes(z_L, 0, 1)
    if extra:
      z_H, z_L = z_H[:, :self.total_len], z_L[:, :self.total_len]

    logits, q = self._heads(params, z_H)
    outputs = StepOutputs(logits=logits, q_halt=q[:, 0], q_continue=q[:, 1])
    return (jax.lax.stop_gradient(z_H), jax.lax.stop_gradient(z_L)), outputs


def build_model(model: Mapping[str, Any], *, seq_len: int, vocab_size: int,
                num_puzzle_identifiers: int = 1) -> RecursiveModel:
  """Builds the model described by `config.model` for a data set's dimensions."""
  return RecursiveModel(ModelConfig.create(model, seq_len=seq_len, vocab_size=vocab_size,
                                          num_puzzle_identifiers=num_puzzle_identifiers))

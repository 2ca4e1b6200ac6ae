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
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from tiny_recursive import layers

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


@flax.struct.dataclass
class StepOutputs:
  """Outputs of one supervision step.

  logits: float32 [batch, seq_len, vocab]; q_halt, q_continue: float32 [batch].
  """
  logits: Array
  q_halt: Array
  q_continue: Array


def compute_dtype(name: str) -> Any:
  if name not in ('bfloat16', 'float32'):
    raise ValueError(f"model.forward_dtype: expected 'bfloat16' or 'float32', got {name!r}.")
  return jnp.dtype(name)


@dataclasses.dataclass(frozen=True)
class RecursiveModel:
  """A TRM/HRM model bound to its configuration; all methods are pure functions of params.

  Attributes:
    config: the `config.model` ConfigDict (see experiments/configs/base.py).
    seq_len: number of tokens of a puzzle (81 Sudoku, 900 Maze/ARC).
    vocab_size: token vocabulary size.
    num_puzzle_identifiers: rows of the puzzle-embedding table.
  """
  config: ml_collections.ConfigDict
  seq_len: int
  vocab_size: int
  num_puzzle_identifiers: int = 1

  def __post_init__(self):
    c = self.config
    if c.arch not in ARCHITECTURES:
      raise ValueError(f'model.arch: expected one of {ARCHITECTURES}, got {c.arch!r}.')
    if c.gradient_mode not in GRADIENT_MODES:
      raise ValueError(
          f'model.gradient_mode: expected one of {GRADIENT_MODES}, got {c.gradient_mode!r}.')
    if c.pos_encodings not in POS_ENCODINGS:
      raise ValueError(
          f'model.pos_encodings: expected one of {POS_ENCODINGS}, got {c.pos_encodings!r}.')
    if c.remat_policy not in REMAT_POLICIES:
      raise ValueError(
          f'model.remat_policy: expected one of {tuple(REMAT_POLICIES)}, got {c.remat_policy!r}.')
    if c.hidden_size % c.num_heads:
      raise ValueError(f'model.hidden_size ({c.hidden_size}) must be divisible by '
                       f'model.num_heads ({c.num_heads}).')
    if c.puzzle_emb_ndim > self.puzzle_emb_len * c.hidden_size:
      raise ValueError(f'model.puzzle_emb_ndim ({c.puzzle_emb_ndim}) must fit in '
                       f'model.puzzle_emb_len x hidden_size ({self.puzzle_emb_len} x {c.hidden_size}).')
    if c.h_cycles < 1 or c.l_cycles < 1:
      raise ValueError('model.h_cycles and model.l_cycles must be at least 1.')
    compute_dtype(c.forward_dtype)

  # --- Shapes ---

  @property
  def puzzle_emb_len(self) -> int:
    """Positions prepended for the puzzle embedding (ceil(ndim / D) when the config says 0)."""
    c = self.config
    if c.puzzle_emb_len:
      return c.puzzle_emb_len
    return -(c.puzzle_emb_ndim // -c.hidden_size)

  @property
  def total_len(self) -> int:
    """Sequence length seen by the network: seq_len + puzzle_emb_len."""
    return self.seq_len + self.puzzle_emb_len

  @property
  def dtype(self) -> Any:
    return compute_dtype(self.config.forward_dtype)

  def _network(self, num_layers: int) -> layers.Network:
    c = self.config
    return layers.Network(num_layers, c.hidden_size, c.num_heads, c.expansion, c.mixer,
                          self.total_len, c.rms_norm_eps, self.dtype, c.attention_impl)

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
    dummy = jnp.zeros((1, self.total_len, c.hidden_size), self.dtype)
    for i, name in enumerate(self.network_names):
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

  def param_count(self, params: Params) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))

  # --- Forward ---

  def _rope(self) -> tuple[Array, Array] | None:
    c = self.config
    if c.pos_encodings != 'rope':
      return None
    return layers.rope_tables(self.total_len, c.hidden_size // c.num_heads, c.rope_theta)

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

  def _network_fn(self, params: Params, name: str, remat: bool):
    """Returns f(h, injection) applying network `name`, rematerialised if configured."""
    network = self._network(self._num_layers(name))
    rope = self._rope()

    def apply(net_params, h, injection):
      return network.apply({'params': net_params}, h, injection, rope)

    policy = REMAT_POLICIES[self.config.remat_policy]
    if remat and self.config.remat_policy != 'none':
      apply = jax.checkpoint(apply, policy=policy)
    return lambda h, injection: apply(params[name], h, injection)

  def _cycle(self, params: Params, z_H: Array, z_L: Array, x: Array, *, remat: bool,
             grad_low_steps: int | None) -> tuple[Array, Array]:
    """One H cycle: L_cycles low updates, then one high update.

    `grad_low_steps` None: all updates use `params` as given. Otherwise only the last
    `grad_low_steps` low updates (and the high update) see gradients: the others use
    stop-gradient parameters (HRM's 1-step gradient).
    """
    c = self.config
    low_name = 'low_net' if c.arch == 'hrm' else 'net'
    high_name = 'high_net' if c.arch == 'hrm' else 'net'
    single_z = c.arch == 'trm_single_z'

    def low_update(net, z_H, z_L):
      if single_z:  # z = net(z + x): the single state is both latent and answer.
        return net(z_L, x)
      return net(z_L, z_H + x)

    def low_loop(net, z_L, length):
      if length == 0:
        return z_L
      body = lambda z, _: (low_update(net, z_H, z), None)
      z_L, _ = jax.lax.scan(body, z_L, None, length=length, unroll=c.scan_unroll)
      return z_L

    low_net = self._network_fn(params, low_name, remat)
    if grad_low_steps is None:
      z_L = low_loop(low_net, z_L, c.l_cycles)
    else:
      frozen = self._network_fn(jax.lax.stop_gradient(params), low_name, remat=False)
      z_L = jax.lax.stop_gradient(low_loop(frozen, z_L, c.l_cycles - grad_low_steps))
      z_L = low_loop(low_net, z_L, grad_low_steps)
    high_net = self._network_fn(params, high_name, remat)
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

  def supervision_step(self, params: Params, constants: Params, puzzle_rows: Array | None,
                       z_H: Array, z_L: Array,
                       inputs: Array) -> tuple[tuple[Array, Array], StepOutputs]:
    """One supervision step (one call of the inner model), §3.

    Args:
      params: dense parameters (float32 pytree).
      constants: {'z_H_init', 'z_L_init'} (unused here; kept for a uniform signature).
      puzzle_rows: float32 [batch, puzzle_emb_ndim] gathered puzzle embeddings.
      z_H, z_L: [batch, total_len, hidden] states in the forward dtype.
      inputs: int32 [batch, seq_len].

    Returns:
      (new_z_H, new_z_L) with gradients stopped (the carry of the next step), and StepOutputs.
    """
    del constants
    c = self.config
    x = self.embed(params, inputs, puzzle_rows)
    # The carry never receives gradient (also when h_cycles == 1).
    z_H, z_L = jax.lax.stop_gradient(z_H), jax.lax.stop_gradient(z_L)

    if c.h_cycles > 1:
      # H_cycles - 1 cycles without gradient: nothing inside depends on a differentiated
      # value, so autodiff builds no tangents for them.
      frozen_params = jax.lax.stop_gradient(params)
      frozen_x = jax.lax.stop_gradient(x)

      def no_grad_cycle(carry, _):
        z_H, z_L = carry
        return self._cycle(frozen_params, z_H, z_L, frozen_x, remat=False,
                           grad_low_steps=None), None

      (z_H, z_L), _ = jax.lax.scan(no_grad_cycle, (z_H, z_L), None, length=c.h_cycles - 1,
                                   unroll=c.scan_unroll)
      z_H, z_L = jax.lax.stop_gradient(z_H), jax.lax.stop_gradient(z_L)

    # The last cycle with gradient: through all L_cycles + 1 network calls (TRM), or only
    # through the last low and the high update (1-step gradient, HRM).
    grad_low_steps = 1 if c.gradient_mode == 'one_step' else None
    z_H, z_L = self._cycle(params, z_H, z_L, x, remat=True, grad_low_steps=grad_low_steps)

    logits, q = self._heads(params, z_H)
    outputs = StepOutputs(logits=logits, q_halt=q[:, 0], q_continue=q[:, 1])
    return (jax.lax.stop_gradient(z_H), jax.lax.stop_gradient(z_L)), outputs


def build_model(model_config: ml_collections.ConfigDict, *, seq_len: int, vocab_size: int,
                num_puzzle_identifiers: int = 1) -> RecursiveModel:
  """Builds the model described by `config.model` for a data set's dimensions."""
  return RecursiveModel(model_config, seq_len=seq_len, vocab_size=vocab_size,
                        num_puzzle_identifiers=num_puzzle_identifiers)

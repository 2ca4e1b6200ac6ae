"""An independent float64 NumPy implementation of the TRM forward pass (TRM_REFERENCE.md §3).

It reads the weights straight from a reference-named state dict (NumPy arrays keyed like the
PyTorch reference's `model.inner` keys, §11), so it shares no code and no parameter layout with
the Flax model: agreement between the two is evidence that both follow the specification.
Everything is computed in float64; the only rounding is that of the stored weights.

Shapes: B batch, L seq_len, P puzzle_emb_len, S = P + L positions seen by the network,
D hidden size, V vocabulary.
"""

import dataclasses
import math
from typing import Mapping

import numpy as np

StateDict = Mapping[str, np.ndarray]

_PREFIXES = ('_orig_mod.', 'model.', 'inner.')


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
  """The hyperparameters of §3 that change the forward pass."""
  seq_len: int
  vocab_size: int
  hidden_size: int
  num_heads: int
  expansion: float
  num_layers: int
  h_cycles: int
  l_cycles: int
  mixer: str = 'attention'  # 'attention' | 'mlp'
  pos_encodings: str = 'rope'  # 'rope' | 'learned' | 'none'
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-5
  puzzle_emb_len: int = 16
  puzzle_emb_ndim: int = 512
  arch: str = 'trm'  # 'trm' | 'hrm'
  hrm_high_layers: int = 4
  hrm_low_layers: int = 4

  @property
  def num_positions(self) -> int:
    return self.seq_len + self.puzzle_emb_len


def config_from_model_config(model_config, *, seq_len: int, vocab_size: int) -> ReferenceConfig:
  """Builds a ReferenceConfig from an experiment's `config.model` (an ml_collections dict)."""
  puzzle_emb_len = model_config.puzzle_emb_len
  if not puzzle_emb_len:  # ceil(ndim / D), as the reference does when the length is 0.
    puzzle_emb_len = -(model_config.puzzle_emb_ndim // -model_config.hidden_size)
  return ReferenceConfig(
      seq_len=seq_len, vocab_size=vocab_size, hidden_size=model_config.hidden_size,
      num_heads=model_config.num_heads, expansion=model_config.expansion,
      num_layers=model_config.num_layers, h_cycles=model_config.h_cycles,
      l_cycles=model_config.l_cycles, mixer=model_config.mixer,
      pos_encodings=model_config.pos_encodings, rope_theta=model_config.rope_theta,
      rms_norm_eps=model_config.rms_norm_eps, puzzle_emb_len=puzzle_emb_len,
      puzzle_emb_ndim=model_config.puzzle_emb_ndim, arch=model_config.arch,
      hrm_high_layers=model_config.hrm_high_layers, hrm_low_layers=model_config.hrm_low_layers)


def strip_prefixes(state_dict: StateDict) -> dict[str, np.ndarray]:
  """Drops the `_orig_mod.model.inner.` prefixes and converts every value to float64."""
  out = {}
  for key, value in state_dict.items():
    for prefix in _PREFIXES:
      if key.startswith(prefix):
        key = key[len(prefix):]
    out[key] = np.asarray(value, dtype=np.float64)
  return out


def rms_norm(x: np.ndarray, eps: float) -> np.ndarray:
  """x / sqrt(mean(x^2) + eps) over the last axis (no weight)."""
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
  """`x @ weight.T (+ bias)` with a PyTorch-layout weight `[out, in]`."""
  y = x @ weight.T
  return y if bias is None else y + bias


def silu(x: np.ndarray) -> np.ndarray:
  return x / (1.0 + np.exp(-x))


def swiglu_intermediate(width: int, expansion: float) -> int:
  """round(expansion * width * 2/3) rounded up to a multiple of 256 (§3)."""
  value = round(expansion * width * 2 / 3)
  return int(math.ceil(value / 256) * 256)


def swiglu(x: np.ndarray, gate_up: np.ndarray, down: np.ndarray) -> np.ndarray:
  """down(silu(gate) * up); `gate_up` `[2I, W]` holds the gate rows, then the up rows."""
  intermediate = down.shape[1]
  hidden = linear(x, gate_up)
  gate, up = hidden[..., :intermediate], hidden[..., intermediate:]
  return linear(silu(gate) * up, down)


def rope_tables(num_positions: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
  """cos and sin `[S, head_dim]`: angle p * theta^(-2i/head_dim), the halves repeated."""
  exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
  inv_freq = theta ** -exponents
  angles = np.arange(num_positions, dtype=np.float64)[:, None] * inv_freq[None, :]
  angles = np.concatenate([angles, angles], axis=-1)
  return np.cos(angles), np.sin(angles)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
  """Rotary embedding in the rotate-half layout; x `[B, S, H, head_dim]`."""
  half = x.shape[-1] // 2
  first, second = x[..., :half], x[..., half:]
  rotated = np.concatenate([-second, first], axis=-1)
  return x * cos[None, :, None, :] + rotated * sin[None, :, None, :]


def attention(x: np.ndarray, qkv_weight: np.ndarray, o_weight: np.ndarray, num_heads: int,
              rope: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
  """Non-causal multi-head self-attention; x `[B, S, D]`; q, k, v rows stacked in qkv."""
  batch, positions, hidden = x.shape
  head_dim = hidden // num_heads
  qkv = linear(x, qkv_weight).reshape(batch, positions, 3, num_heads, head_dim)
  query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  if rope is not None:
    query, key = apply_rope(query, *rope), apply_rope(key, *rope)
  # [B, H, S, head_dim]; matmul rather than einsum so that NumPy uses BLAS.
  query, key, value = (np.transpose(t, (0, 2, 1, 3)) for t in (query, key, value))
  scores = (query @ np.swapaxes(key, -1, -2)) / math.sqrt(head_dim)
  scores = scores - scores.max(axis=-1, keepdims=True)
  weights = np.exp(scores)
  weights = weights / weights.sum(axis=-1, keepdims=True)
  out = np.transpose(weights @ value, (0, 2, 1, 3)).reshape(batch, positions, hidden)
  return linear(out, o_weight)


def block(h: np.ndarray, weights: StateDict, prefix: str, config: ReferenceConfig,
          rope: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
  """Post-norm block `h = rms(h + mix(h)); h = rms(h + swiglu(h))`; h `[B, S, D]`."""
  eps = config.rms_norm_eps
  if config.mixer == 'mlp':
    # The sequence MLP acts on [B, D, S]; its residual norm is over S, the last axis there.
    t = np.swapaxes(h, 1, 2)
    t = rms_norm(t + swiglu(t, weights[prefix + 'mlp_t.gate_up_proj.weight'],
                            weights[prefix + 'mlp_t.down_proj.weight']), eps)
    h = np.swapaxes(t, 1, 2)
  else:
    h = rms_norm(h + attention(h, weights[prefix + 'self_attn.qkv_proj.weight'],
                               weights[prefix + 'self_attn.o_proj.weight'], config.num_heads,
                               rope), eps)
  return rms_norm(h + swiglu(h, weights[prefix + 'mlp.gate_up_proj.weight'],
                             weights[prefix + 'mlp.down_proj.weight']), eps)


def network(h: np.ndarray, injection: np.ndarray, weights: StateDict, level: str,
            num_layers: int, config: ReferenceConfig,
            rope: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
  """`blocks(h + injection)` for the blocks `{level}.layers.{i}.`."""
  h = h + injection
  for i in range(num_layers):
    h = block(h, weights, f'{level}.layers.{i}.', config, rope)
  return h


def input_embedding(weights: StateDict, inputs: np.ndarray, puzzle_identifiers: np.ndarray,
                    config: ReferenceConfig) -> np.ndarray:
  """sqrt(D) * [puzzle rows as P x D ; token embeddings] -> `[B, S, D]`.

  The puzzle rows are zero-padded to P * D; without puzzle embeddings the P positions are 0.
  """
  hidden = config.hidden_size
  x = weights['embed_tokens.embedding_weight'][inputs]
  padded = np.zeros((inputs.shape[0], config.puzzle_emb_len * hidden))
  if config.puzzle_emb_ndim > 0:
    padded[:, :config.puzzle_emb_ndim] = weights['puzzle_emb.weights'][puzzle_identifiers]
  x = np.concatenate([padded.reshape(-1, config.puzzle_emb_len, hidden), x], axis=1)
  if config.pos_encodings == 'learned':
    x = 0.707106781 * (x + weights['embed_pos.embedding_weight'])
  return math.sqrt(hidden) * x


def initial_state(weights: StateDict, batch_size: int,
                  config: ReferenceConfig) -> tuple[np.ndarray, np.ndarray]:
  """z_H, z_L `[B, S, D]` broadcast from H_init and L_init."""
  shape = (batch_size, config.num_positions, config.hidden_size)
  return (np.broadcast_to(weights['H_init'], shape).copy(),
          np.broadcast_to(weights['L_init'], shape).copy())


def supervision_step(weights: StateDict, config: ReferenceConfig, z_h: np.ndarray,
                     z_l: np.ndarray, inputs: np.ndarray, puzzle_identifiers: np.ndarray):
  """One call of the inner model.

  Returns:
    (z_H, z_L, logits `[B, L, V]`, q_halt `[B]`, q_continue `[B]`). The gradient-free cycles
    and the last cycle compute the same values, so they are one loop here.
  """
  rope = None
  if config.pos_encodings == 'rope':
    rope = rope_tables(config.num_positions, config.hidden_size // config.num_heads,
                       config.rope_theta)
  x = input_embedding(weights, inputs, puzzle_identifiers, config)
  if config.arch == 'hrm':
    low = ('L_level', config.hrm_low_layers)
    high = ('H_level', config.hrm_high_layers)
  else:
    low = high = ('L_level', config.num_layers)
  for _ in range(config.h_cycles):
    for _ in range(config.l_cycles):
      z_l = network(z_l, z_h + x, weights, *low, config, rope)
    z_h = network(z_h, z_l, weights, *high, config, rope)
  logits = linear(z_h, weights['lm_head.weight'])[:, config.puzzle_emb_len:]
  q = linear(z_h[:, 0], weights['q_head.weight'], weights['q_head.bias'])
  return z_h, z_l, logits, q[:, 0], q[:, 1]


def run_eval_steps(weights: StateDict, config: ReferenceConfig, inputs: np.ndarray,
                   puzzle_identifiers: np.ndarray, num_steps: int) -> dict[str, np.ndarray]:
  """`num_steps` supervision steps from the reset state, no halting (§4, evaluation).

  Returns:
    dict of logits `[steps, B, L, V]`, q_halt_logits `[steps, B]`, preds `[B, L]`.
  """
  z_h, z_l = initial_state(weights, inputs.shape[0], config)
  all_logits, all_q = [], []
  for _ in range(num_steps):
    z_h, z_l, logits, q_halt, _ = supervision_step(weights, config, z_h, z_l, inputs,
                                                     puzzle_identifiers)
    all_logits.append(logits)
    all_q.append(q_halt)
  logits = np.stack(all_logits)
  return dict(logits=logits, q_halt_logits=np.stack(all_q), preds=logits[-1].argmax(-1))


def random_state_dict(config: ReferenceConfig, num_puzzle_identifiers: int,
                      rng: np.random.Generator,
                      weight_scale: float = 1.0) -> dict[str, np.ndarray]:
  """Random float32 weights with the reference's key names and shapes (§11), no prefixes.

  The q head is nonzero so that q carries information, and puzzle rows are random. Linear
  weights have std `weight_scale / sqrt(fan_in)`: random networks at scale 1 amplify rounding
  differences from one supervision step to the next, smaller scales keep them contractive.
  """
  d, v, s = config.hidden_size, config.vocab_size, config.num_positions

  def dense(out_features, in_features):
    return (weight_scale * rng.standard_normal((out_features, in_features)) /
            math.sqrt(in_features)).astype(np.float32)

  sd = {
      'H_init': rng.standard_normal(d).astype(np.float32),
      'L_init': rng.standard_normal(d).astype(np.float32),
      'embed_tokens.embedding_weight': (rng.standard_normal((v, d)) / math.sqrt(d)).astype(
          np.float32),
      'lm_head.weight': dense(v, d),
      'q_head.weight': dense(2, d),
      'q_head.bias': rng.standard_normal(2).astype(np.float32),
  }
  if config.puzzle_emb_ndim > 0:
    sd['puzzle_emb.weights'] = (0.5 * rng.standard_normal(
        (num_puzzle_identifiers, config.puzzle_emb_ndim))).astype(np.float32)
  if config.pos_encodings == 'learned':
    sd['embed_pos.embedding_weight'] = (rng.standard_normal((s, d)) / math.sqrt(d)).astype(
        np.float32)
  if config.arch == 'hrm':
    levels = (('H_level', config.hrm_high_layers), ('L_level', config.hrm_low_layers))
  else:
    levels = (('L_level', config.num_layers),)
  inter = swiglu_intermediate(d, config.expansion)
  for level, num_layers in levels:
    for i in range(num_layers):
      p = f'{level}.layers.{i}.'
      if config.mixer == 'mlp':
        inter_t = swiglu_intermediate(s, config.expansion)
        sd[p + 'mlp_t.gate_up_proj.weight'] = dense(2 * inter_t, s)
        sd[p + 'mlp_t.down_proj.weight'] = dense(s, inter_t)
      else:
        sd[p + 'self_attn.qkv_proj.weight'] = dense(3 * d, d)
        sd[p + 'self_attn.o_proj.weight'] = dense(d, d)
      sd[p + 'mlp.gate_up_proj.weight'] = dense(2 * inter, d)
      sd[p + 'mlp.down_proj.weight'] = dense(d, inter)
  return sd

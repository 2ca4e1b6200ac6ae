"""Model FLOPs of the train and eval steps, counted as the reference measurement does (§10).

Matmul and attention FLOPs only (2 per multiply-add): the forward of every network call of a
supervision step, plus the backward (2x forward) of the calls that carry gradients, plus the
output heads. Rematerialised recomputation is not counted (these are model FLOPs).
"""

import ml_collections

from tiny_recursive import layers


def network_call_flops(model_config: ml_collections.ConfigDict, num_layers: int, batch: int,
                       total_len: int) -> float:
  """FLOPs of one network call `net(h, injection)` on [batch, total_len, hidden]."""
  d = model_config.hidden_size
  tokens = batch * total_len
  hidden = layers.swiglu_hidden_width(d, model_config.expansion)
  per_block = 2 * tokens * d * 2 * hidden + 2 * tokens * hidden * d  # channel SwiGLU
  if model_config.mixer == 'mlp':
    seq_hidden = layers.swiglu_hidden_width(total_len, model_config.expansion)
    per_block += 2 * batch * d * total_len * 2 * seq_hidden + 2 * batch * d * seq_hidden * total_len
  else:
    per_block += 2 * tokens * d * 3 * d + 2 * tokens * d * d  # qkv, o
    per_block += 2 * 2 * batch * total_len * total_len * d  # QK^T and PV over all heads
  return float(num_layers * per_block)


def supervision_step_flops(model_config: ml_collections.ConfigDict, batch: int, seq_len: int,
                           vocab_size: int, puzzle_emb_len: int,
                           train: bool) -> float:
  """FLOPs of one supervision step (forward; with `train`, also the backward of the last cycle)."""
  c = model_config
  total_len = seq_len + puzzle_emb_len
  if c.arch == 'hrm':
    low = network_call_flops(c, c.hrm_low_layers, batch, total_len)
    high = network_call_flops(c, c.hrm_high_layers, batch, total_len)
  else:
    low = high = network_call_flops(c, c.num_layers, batch, total_len)
  cycle = c.l_cycles * low + high
  head = 2 * batch * seq_len * c.hidden_size * vocab_size
  forward = c.h_cycles * cycle + head
  if not train:
    return float(forward)
  grad_calls = (low + high) if c.gradient_mode == 'one_step' else cycle
  backward = 2 * (grad_calls + head)
  continue_pass = 0 if c.no_act_continue else c.h_cycles * cycle + head
  return float(forward + backward + continue_pass)

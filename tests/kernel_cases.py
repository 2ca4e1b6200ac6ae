"""Inputs and the error measure shared by the GPU-kernel tests."""

import jax.numpy as jnp
import numpy as np

from tiny_recursive import swiglu_gradient


def relative_error(x, y) -> float:
  """Relative L2 distance of `x` to `y`, in float64."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return float(np.linalg.norm(x - y) / np.linalg.norm(y))


def mixer_case(seed: int, seq: int, n: int, hidden: int, dtype=jnp.bfloat16):
  """`t` `[seq, n]` and the sequence mixer's kernels (`layers.sequence_mixer`'s arguments)."""
  rng = np.random.default_rng(seed)
  t = jnp.asarray(rng.normal(0.3, 1.5, (seq, n)), dtype)
  gate_up = jnp.asarray(rng.normal(0.0, seq ** -0.5, (seq, 2 * hidden)), jnp.float32)
  down = jnp.asarray(rng.normal(0.0, hidden ** -0.5, (hidden, seq)), jnp.float32)
  return t, gate_up, down


def record_swiglu_gradient_calls(monkeypatch) -> list:
  """Replaces `swiglu_gradient.fused_gradient` by its interpreted run, recording the shape of
  each call's `gate`; returns the list it appends to."""
  calls = []
  kernel = swiglu_gradient.fused_gradient

  def run(*args):
    calls.append(args[0].shape)
    return kernel(*args, interpret=True)

  monkeypatch.setattr(swiglu_gradient, 'fused_gradient', run)
  return calls

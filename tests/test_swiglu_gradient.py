"""The SwiGLU-gradient kernel (Pallas interpreter on CPU) against its formula and autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import kernel_cases
from tiny_recursive import layers
from tiny_recursive import swiglu_gradient

_relative_error = kernel_cases.relative_error


def _case(shape, dtype, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.normal(0.0, 2.0, shape), dtype) for _ in range(3))


def _autodiff(gate, up, d_out):
  _, vjp = jax.vjp(lambda g, u: jax.nn.silu(g) * u, gate, up)
  return vjp(d_out)


@pytest.mark.parametrize('shape', [(64, 256), (4, 8, 512), (8, 1536)])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_kernel_computes_its_formula(shape, dtype):
  gate, up, d_out = _case(shape, dtype)
  d_gate, d_up = swiglu_gradient.fused_gradient(gate, up, d_out, interpret=True)
  expected = swiglu_gradient.reference_gradient(gate, up, d_out)
  for out, want in zip((d_gate, d_up), expected):
    assert out.shape == shape and out.dtype == dtype
    # The same float32 arithmetic compiled twice: apart in the last bits at most (which may
    # round a bfloat16 output one step the other way).
    assert _relative_error(out, want) < (1e-6 if dtype == jnp.float32 else 1e-3)


def test_formula_is_the_gradient_of_the_swiglu_product():
  gate, up, d_out = _case((32, 256), jnp.float32, seed=1)
  for out, want in zip(swiglu_gradient.reference_gradient(gate, up, d_out),
                       _autodiff(gate, up, d_out)):
    assert _relative_error(out, want) < 1e-6
  # In bfloat16 it rounds once at the end, autodiff on the way: apart by bfloat16 rounding.
  bf16 = [x.astype(jnp.bfloat16) for x in (gate, up, d_out)]
  for out, want in zip(swiglu_gradient.reference_gradient(*bf16), _autodiff(*bf16)):
    assert _relative_error(out, want) < 1e-2
  # Both near the float32 gradient of the rounded inputs; the kernel's formula no farther.
  exact = swiglu_gradient.reference_gradient(*(x.astype(jnp.float32) for x in bf16))
  assert all(_relative_error(out, ex) <= _relative_error(want, ex) + 1e-3
             for out, want, ex in zip(swiglu_gradient.reference_gradient(*bf16),
                                      _autodiff(*bf16), exact))


def test_blocks_divide_the_product():
  assert swiglu_gradient.block_shape(768 * 97, 1536) == (16, 512)  # Sudoku's channel MLP.
  assert swiglu_gradient.block_shape(512, 768 * 512) == (16, 512)  # Sudoku's sequence MLP.
  assert swiglu_gradient.block_shape(97, 1536) is None  # No power of two above 1 divides 97.
  assert swiglu_gradient.block_shape(64, 24) is None  # Columns: only 8 would divide.
  assert swiglu_gradient.supported((4, 97, 1536)) and not swiglu_gradient.supported((1536,))
  gate, up, d_out = _case((97, 1536), jnp.float32)
  with pytest.raises(ValueError, match=r'no block of the kernel fits the shape \(97, 1536\)'):
    swiglu_gradient.fused_gradient(gate, up, d_out, interpret=True)
  with pytest.raises(ValueError, match='must have one shape'):
    swiglu_gradient.fused_gradient(gate, up[:64], d_out, interpret=True)


def test_swiglu_product_takes_the_kernels_gradient_where_asked_and_supported(monkeypatch):
  calls = kernel_cases.record_swiglu_gradient_calls(monkeypatch)
  gate, up, d_out = _case((16, 512), jnp.float32, seed=2)

  def gradient(gradient_kernel, g, u):
    value, vjp = jax.vjp(lambda a, b: layers.swiglu_product(a, b, gradient_kernel), g, u)
    return value, vjp(d_out[:len(g)])

  (value, grads), (expected_value, expected_grads) = (gradient(k, gate, up)
                                                        for k in (True, False))
  assert calls == [(16, 512)]
  np.testing.assert_array_equal(value, expected_value)  # The same forward pass.
  for out, want in zip(grads, expected_grads):
    assert _relative_error(out, want) < 1e-6
  calls.clear()
  gradient(True, gate[:15], up[:15])  # 15 rows: no block fits, autodiff's gradient.
  assert not calls


def test_sequence_mixer_and_swiglu_module_pass_it_on(monkeypatch):
  calls = kernel_cases.record_swiglu_gradient_calls(monkeypatch)
  t, gate_up, down = kernel_cases.mixer_case(3, 20, 256, 512, jnp.float32)
  weights = jnp.asarray(np.random.default_rng(4).normal(size=t.shape), jnp.float32)
  grads = [jax.grad(lambda *a, k=k: jnp.sum(weights * layers.sequence_mixer(*a, 1e-5, k)),
                    argnums=(0, 1, 2))(t, gate_up, down) for k in (True, False)]
  assert calls == [(512, 256)]
  for out, want in zip(*grads):
    assert _relative_error(out, want) < 1e-5
  calls.clear()
  x = jnp.asarray(np.random.default_rng(5).normal(size=(4, 8, 32)), jnp.float32)
  module = lambda k: layers.SwiGLU(32, 4.0, jnp.float32, gradient_kernel=k)
  params = module(False).init(jax.random.key(0), x)
  grads = [jax.grad(lambda p, k=k: jnp.sum(module(k).apply(p, x) ** 2))(params)
           for k in (True, False)]
  assert calls == [(4, 8, 256)]
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                         *grads)

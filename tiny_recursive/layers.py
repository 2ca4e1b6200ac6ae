"""Building blocks of the TRM network (TRM_REFERENCE.md §3).

Parameters are created in float32 and cast to the compute dtype at use, as the reference's
`CastedLinear` does. Blocks are post-norm with a weightless RMSNorm computed in float32.
"""

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from tiny_recursive import fused_sequence_mlp
from tiny_recursive import sequence_mlp_gemm
from tiny_recursive import swiglu_gemm
from tiny_recursive import swiglu_gradient

Array = jax.Array
Initializer = Callable[..., Array]

# Standard deviation of a standard normal truncated to [-2, 2]; dividing by it makes the
# truncated draw have the requested "true" standard deviation (as JAX's lecun_normal and the
# reference's trunc_normal_init_ do).
_TRUNCATED_NORMAL_STD = 0.87962566103423978

# The MLP mixer pads the sequence axis to a multiple of this for aligned GEMM shapes.
_SEQUENCE_ALIGNMENT = 16


def truncated_normal(std: float) -> Initializer:
  """Truncated normal within two standard deviations whose true std is `std`."""

  def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    draw = jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
    return (draw * (std / _TRUNCATED_NORMAL_STD)).astype(dtype)

  return init


def find_multiple(value: int, multiple: int) -> int:
  return -(value // -multiple) * multiple


def swiglu_hidden_width(width: int, expansion: float) -> int:
  """round(expansion * width * 2/3) rounded up to a multiple of 256 (1536 for 512 x 4)."""
  return find_multiple(round(expansion * width * 2 / 3), 256)


def rms_norm(x: Array, eps: float, count: int | None = None, axis: int = -1) -> Array:
  """Weightless RMSNorm over `axis` (the last by default), computed in float32, returned in
  x's dtype.

  `count`: number of real entries when the axis carries trailing zero padding (the padding
  adds nothing to the sum of squares); None means the whole axis.
  """
  x32 = x.astype(jnp.float32)
  count = x.shape[axis] if count is None else count
  variance = jnp.sum(jnp.square(x32), axis=axis, keepdims=True) / count
  return (x32 * jax.lax.rsqrt(variance + eps)).astype(x.dtype)


class Linear(nn.Module):
  """Dense layer with a float32 kernel `[in_features, features]` cast to `dtype`.

  Performance options that leave the result unchanged:
    splits: >1 returns that many outputs, each from its own product with a column block of
      the kernel, instead of one product split afterwards. The backward pass then sums
      per-block input gradients instead of concatenating the output gradients into one
      `[..., features]` buffer (a memory-bound copy XLA does not fuse).
    in_features: the kernel's input width when `x`'s last axis is longer because of trailing
      zero padding; the kernel gets matching zero rows.
    padded_features: zero columns are appended up to this width, so the output carries
      trailing zeros (keeps GEMM shapes aligned to the tensor-core tiles).
  """
  features: int
  dtype: Any = jnp.bfloat16
  use_bias: bool = False
  splits: int = 1
  in_features: int = 0
  padded_features: int = 0

  @nn.compact
  def __call__(self, x: Array) -> Array | tuple[Array, ...]:
    fan_in = self.in_features or x.shape[-1]
    kernel = self.param('kernel', truncated_normal(1.0 / math.sqrt(fan_in)),
                        (fan_in, self.features), jnp.float32).astype(self.dtype)
    padded_in = x.shape[-1] - fan_in
    padded_out = max(self.padded_features - self.features, 0)
    if padded_in or padded_out:
      kernel = jnp.pad(kernel, ((0, padded_in), (0, padded_out)))
    x = x.astype(self.dtype)
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    if self.splits == 1:
      y = jnp.dot(x, kernel)
      return y + bias.astype(self.dtype) if self.use_bias else y
    if self.use_bias or padded_out or self.features % self.splits:
      raise ValueError('Linear: splits > 1 needs features divisible by splits, no bias and '
                       'no output padding.')
    width = self.features // self.splits
    return tuple(jnp.dot(x, kernel[:, i * width:(i + 1) * width]) for i in range(self.splits))


class SwiGLU(nn.Module):
  """`down(silu(gate) * up)` with gate and up fused in one projection `[width, 2 * hidden]`.

  `padded_width` > width: `x`'s last axis is `width` real entries followed by zeros up to
  `padded_width`; the output then has the same zero-padded layout.
  `fused`: the gate/up projection and its product run as one GPU kernel
  (`fused_swiglu_projection`) where `swiglu_gemm.supported` takes the shapes; elsewhere the
  same function runs in XLA. The parameters are the same either way. `gradient_kernel`: on
  the XLA path, the product's gradient comes from one GPU kernel (`swiglu_product`).
  """
  width: int
  expansion: float
  dtype: Any = jnp.bfloat16
  padded_width: int = 0
  fused: bool = False
  gradient_kernel: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    hidden = swiglu_hidden_width(self.width, self.expansion)
    rows = math.prod(x.shape[:-1])
    if (self.fused and x.shape[-1] == self.width
        and swiglu_gemm.supported(rows, self.width, hidden)):
      gate_up = _Kernel((self.width, 2 * hidden), name='gate_up_proj')()
      product = fused_swiglu_projection(x.astype(self.dtype).reshape(rows, self.width),
                                        gate_up).reshape(*x.shape[:-1], hidden)
    else:
      gate, up = Linear(2 * hidden, self.dtype, splits=2, in_features=self.width,
                        name='gate_up_proj')(x)
      product = swiglu_product(gate, up, self.gradient_kernel)
    return Linear(self.width, self.dtype, padded_features=self.padded_width,
                  name='down_proj')(product)


def swiglu_projection(x: Array, gate_up_kernel: Array) -> Array:
  """`silu(x @ gate) * (x @ up)` as `SwiGLU` computes it in XLA (`x` in the compute dtype,
  the kernel cast to it)."""
  hidden = gate_up_kernel.shape[1] // 2
  kernel = gate_up_kernel.astype(x.dtype)
  return jax.nn.silu(jnp.dot(x, kernel[:, :hidden])) * jnp.dot(x, kernel[:, hidden:])


def sequence_mixer(t: Array, gate_up_kernel: Array, down_kernel: Array, eps: float,
                   gradient_kernel: bool = False) -> Array:
  """The MLP mixer on sequence-major activations: `t` `[seq, n]` (n = batch x hidden) to
  `rms_norm_over_seq(t + down^T (silu(gate^T t) * (up^T t)))`, in `t`'s dtype.

  The same function as `Block`'s transposed branch (same kernels: gate_up `[seq, 2 hidden]`,
  down `[hidden, seq]`), with the products contracting the leading axis: no transpose, no
  padding of the sequence. `gradient_kernel`: see `swiglu_product`.
  """
  dtype = t.dtype
  hidden = down_kernel.shape[0]
  contract = lambda kernel, x: jax.lax.dot_general(kernel.astype(dtype), x,
                                                   (((0,), (0,)), ((), ())))
  gate = contract(gate_up_kernel[:, :hidden], t)
  up = contract(gate_up_kernel[:, hidden:], t)
  product = swiglu_product(gate, up, gradient_kernel)
  return rms_norm(t + contract(down_kernel, product), eps, axis=0)


def swiglu_product(gate: Array, up: Array, gradient_kernel: bool = False) -> Array:
  """`silu(gate) * up`. `gradient_kernel` (GPU only; where `swiglu_gradient.supported` takes
  the shape): its gradient is computed by `swiglu_gradient`'s kernel, one pass for both
  halves; otherwise by autodiff. The value is the same either way."""
  if gradient_kernel and swiglu_gradient.supported(gate.shape):
    return _swiglu_product_with_kernel_gradient(gate, up)
  return jax.nn.silu(gate) * up


@jax.custom_vjp
def _swiglu_product_with_kernel_gradient(gate: Array, up: Array) -> Array:
  return jax.nn.silu(gate) * up


def _swiglu_product_forward(gate: Array, up: Array) -> tuple[Array, tuple[Array, Array]]:
  return _swiglu_product_with_kernel_gradient(gate, up), (gate, up)


def _swiglu_product_backward(residuals: tuple[Array, Array],
                             d_out: Array) -> tuple[Array, Array]:
  # Looked up when called, so that tests can replace the kernel.
  return swiglu_gradient.fused_gradient(*residuals, d_out)


_swiglu_product_with_kernel_gradient.defvjp(_swiglu_product_forward, _swiglu_product_backward)


def _kernel_with_reference_gradient(kernel: Callable[..., Any],
                                    reference: Callable[..., Any]) -> Callable[..., Any]:
  """A function with `kernel`'s values and `reference`'s gradient, recomputed in XLA from the
  inputs (every argument differentiated). For the forward-only GPU kernels, whose XLA
  formulation `reference` is the same function: they pay off in calls without gradient."""

  @jax.custom_vjp
  def function(*args):
    return kernel(*args)

  def forward(*args):
    return kernel(*args), args

  def backward(args, cotangent):
    _, vjp = jax.vjp(reference, *args)
    return vjp(cotangent)

  function.defvjp(forward, backward)
  return function


# The wrappers below look the kernels up when called, so that tests can replace them.


SEQUENCE_MLP_KERNELS = ('triton', 'mosaic')


def fused_sequence_mixer(t: Array, gate_up_kernel: Array, down_kernel: Array,
                         eps: float, kernel: str = 'triton') -> Array:
  """`sequence_mixer` computed by one GPU kernel: 'triton' (`fused_sequence_mlp`, any GPU
  Triton runs on) or 'mosaic' (`sequence_mlp_gemm`, Hopper); its gradient is
  `sequence_mixer`'s, recomputed in XLA."""
  forward = {'triton': fused_sequence_mlp.fused_forward,
             'mosaic': sequence_mlp_gemm.fused_forward}
  if kernel not in forward:
    raise ValueError(f'model.sequence_mlp_kernel: expected one of {SEQUENCE_MLP_KERNELS}, '
                     f'got {kernel!r}.')
  return _kernel_with_reference_gradient(
      functools.partial(forward[kernel], eps=eps),
      functools.partial(sequence_mixer, eps=eps))(t, gate_up_kernel, down_kernel)


def fused_swiglu_projection(x: Array, gate_up_kernel: Array) -> Array:
  """`swiglu_projection` computed by one GPU kernel (`swiglu_gemm`); its gradient is
  `swiglu_projection`'s, recomputed in XLA."""
  return _kernel_with_reference_gradient(swiglu_gemm.swiglu_projection,
                                         swiglu_projection)(x, gate_up_kernel)


class _Kernel(nn.Module):
  """A bare `kernel` parameter with `Linear`'s initialisation (for kernels used directly)."""
  shape: tuple[int, int]

  @nn.compact
  def __call__(self) -> Array:
    return self.param('kernel', truncated_normal(1.0 / math.sqrt(self.shape[0])), self.shape,
                      jnp.float32)


class SequenceMixer(nn.Module):
  """`sequence_mixer` with the parameters of `SwiGLU(seq_len)` (so the two layouts share
  checkpoints). `fused`: use the GPU kernel `kernel` (forward-only calls; see
  `fused_sequence_mixer`); 'mosaic' on shapes it does not take runs the Triton kernel.
  `gradient_kernel` (XLA path): see `swiglu_product`."""
  seq_len: int
  expansion: float
  rms_norm_eps: float
  fused: bool = False
  kernel: str = 'triton'
  gradient_kernel: bool = False

  @nn.compact
  def __call__(self, t: Array) -> Array:
    hidden = swiglu_hidden_width(self.seq_len, self.expansion)
    gate_up = _Kernel((self.seq_len, 2 * hidden), name='gate_up_proj')()
    down = _Kernel((hidden, self.seq_len), name='down_proj')()
    if self.fused:
      kernel = self.kernel
      if kernel == 'mosaic' and not sequence_mlp_gemm.supported(self.seq_len, t.shape[1],
                                                                hidden):
        kernel = 'triton'
      return fused_sequence_mixer(t, gate_up, down, self.rms_norm_eps, kernel)
    return sequence_mixer(t, gate_up, down, self.rms_norm_eps, self.gradient_kernel)


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[Array, Array]:
  """cos, sin tables `[seq_len, head_dim]` in float32, halves duplicated (rotate_half layout)."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs = jnp.outer(jnp.arange(seq_len, dtype=jnp.float32), inv_freq)
  angles = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates `x` `[batch, seq, heads, head_dim]` by halves, in float32 (the reference's layout)."""
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos[:, None, :] + rotated * sin[:, None, :]
  return out.astype(x.dtype)


def resolve_attention_impl(implementation: str) -> str:
  """'auto' is cuDNN on GPU and XLA elsewhere; other values are returned as given."""
  if implementation == 'auto':
    return 'cudnn' if jax.default_backend() == 'gpu' else 'xla'
  return implementation


def cudnn_padded_len(seq: int, multiple: int) -> int:
  """The length cuDNN attention runs on: the smallest even multiple of `multiple` >= seq."""
  return find_multiple(seq, math.lcm(multiple, 2))


class Attention(nn.Module):
  """Non-causal multi-head self-attention with one fused qkv projection and no biases.

  `real_len` (0: all): `x`'s sequence carries trailing positions that no query may attend to
  (the sequence padded once for cuDNN by the caller, `model.pad_sequence_once`); their own
  outputs are computed but meaningless.
  """
  hidden_size: int
  num_heads: int
  dtype: Any = jnp.bfloat16
  implementation: str = 'auto'  # 'auto' | 'xla' | 'cudnn'
  cudnn_seq_multiple: int = 2  # See `_cudnn_attention`.
  real_len: int = 0

  @nn.compact
  def __call__(self, x: Array, rope: tuple[Array, Array] | None) -> Array:
    batch, seq, _ = x.shape
    head_dim = self.hidden_size // self.num_heads
    qkv = Linear(3 * self.hidden_size, self.dtype, splits=3, name='qkv_proj')(x)
    query, key, value = (t.reshape(batch, seq, self.num_heads, head_dim) for t in qkv)
    if rope is not None:
      query, key = apply_rope(query, *rope), apply_rope(key, *rope)
    real_len = self.real_len if 0 < self.real_len < seq else None
    implementation = resolve_attention_impl(self.implementation)
    if implementation == 'xla':
      out = _xla_attention(query, key, value, real_len)
    elif implementation == 'cudnn':
      out = _cudnn_attention(query, key, value, self.cudnn_seq_multiple, real_len)
    else:
      raise ValueError(f"model.attention_impl: expected 'auto', 'xla' or 'cudnn', got "
                       f'{implementation!r}.')
    out = out.reshape(batch, seq, self.hidden_size)
    return Linear(self.hidden_size, self.dtype, name='o_proj')(out)


def _xla_attention(query: Array, key: Array, value: Array,
                   real_len: int | None = None) -> Array:
  """Softmax attention `[batch, seq, heads, head_dim]`; softmax in float32. `real_len`: keys
  from this position on are masked out."""
  scale = 1.0 / math.sqrt(query.shape[-1])
  logits = jnp.einsum('bqhd,bkhd->bhqk', query, key, preferred_element_type=jnp.float32)
  logits = logits * scale
  if real_len is not None:
    logits = jnp.where(jnp.arange(key.shape[1]) < real_len, logits, -jnp.inf)
  weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, value)


def _cudnn_attention(query: Array, key: Array, value: Array, multiple: int = 2,
                     real_len: int | None = None) -> Array:
  """cuDNN fused (flash) attention on the sequence zero-padded to the smallest even multiple
  of `multiple`, the padded keys masked out by sequence lengths and the padded queries cut
  off.

  cuDNN's training kernels take only even lengths (JAX raises `Unsupported sequence length`
  for 97, Sudoku's length with the puzzle embedding), hence the even multiple. 2 (the
  default) pads only odd lengths, by one row: Sudoku 97 -> 98, ARC 916 unpadded. 64, the
  setting before, padded Sudoku to 128 and ARC to 960, and its padding copies cost 7.5 ms and
  11.1 ms per step on an H200 (`model.cudnn_seq_multiple`, docs/benchmarks.md).

  `real_len`: the caller padded the sequence already (`model.pad_sequence_once`): only the
  first `real_len` positions are real, and nothing is padded or cut here.
  """
  if real_len is not None:
    lengths = jnp.full((query.shape[0],), real_len, jnp.int32)
    return jax.nn.dot_product_attention(query, key, value, query_seq_lengths=lengths,
                                        key_value_seq_lengths=lengths, implementation='cudnn')
  seq = query.shape[1]
  padded = cudnn_padded_len(seq, multiple)
  if padded == seq:
    return jax.nn.dot_product_attention(query, key, value, implementation='cudnn')
  pad = ((0, 0), (0, padded - seq), (0, 0), (0, 0))
  query, key, value = (jnp.pad(t, pad) for t in (query, key, value))
  lengths = jnp.full((query.shape[0],), seq, jnp.int32)
  out = jax.nn.dot_product_attention(query, key, value, query_seq_lengths=lengths,
                                     key_value_seq_lengths=lengths, implementation='cudnn')
  return out[:, :seq]


class Block(nn.Module):
  """Post-norm block: `h = rms(h + mix(h)); h = rms(h + swiglu(h))`.

  `mix` is self-attention, or (mixer='mlp') a SwiGLU along the sequence axis applied to the
  transposed `[batch, hidden, seq]` tensor; as in the reference, that branch's residual norm
  is taken over the sequence axis, before transposing back.

  `sequence_major` (mixer='mlp' only): `h` is laid out `[seq, batch, hidden]` and the mixer
  is `SequenceMixer` on its `[seq, batch x hidden]` view: no transpose, no padding; the same
  parameters and function. `fused_sequence_mlp` (with `sequence_major`): that mixer runs as
  one GPU kernel (`sequence_mlp_kernel`: which one). `fused_swiglu`: the channel MLP's gate/up
  projection with its product runs as one GPU kernel (`SwiGLU.fused`).
  `swiglu_gradient_kernel`: the SwiGLU products computed in XLA get their gradient from one GPU
  kernel (`swiglu_product`).
  """
  hidden_size: int
  num_heads: int
  expansion: float
  mixer: str
  seq_len: int  # Including the puzzle-embedding positions.
  rms_norm_eps: float
  dtype: Any = jnp.bfloat16
  attention_impl: str = 'auto'
  sequence_major: bool = False
  fused_sequence_mlp: bool = False
  cudnn_seq_multiple: int = 2
  fused_swiglu: bool = False
  real_len: int = 0  # Attention only: see `Attention.real_len`.
  sequence_mlp_kernel: str = 'triton'  # With fused_sequence_mlp: see `SequenceMixer.kernel`.
  swiglu_gradient_kernel: bool = False

  @nn.compact
  def __call__(self, h: Array, rope: tuple[Array, Array] | None) -> Array:
    norm = functools.partial(rms_norm, eps=self.rms_norm_eps)
    if self.sequence_major and self.mixer != 'mlp':
      raise ValueError("model.activation_layout: 'sequence_major' needs model.mixer = 'mlp'.")
    if self.sequence_major:
      mixer = SequenceMixer(self.seq_len, self.expansion, self.rms_norm_eps,
                            self.fused_sequence_mlp, self.sequence_mlp_kernel,
                            self.swiglu_gradient_kernel, name='sequence_mlp')
      h = mixer(h.reshape(self.seq_len, -1)).reshape(h.shape)
    elif self.mixer == 'mlp':
      # The sequence axis is zero-padded to a multiple of 16 so the sequence SwiGLU's
      # products have aligned shapes (97 for Sudoku is not); the padded entries stay zero
      # through the branch, are excluded from the norm's mean, and are cut off at the end.
      padded = find_multiple(self.seq_len, _SEQUENCE_ALIGNMENT)
      t = jnp.pad(jnp.swapaxes(h, 1, 2), ((0, 0), (0, 0), (0, padded - self.seq_len)))
      mlp = SwiGLU(self.seq_len, self.expansion, self.dtype, padded,
                   gradient_kernel=self.swiglu_gradient_kernel, name='sequence_mlp')
      t = norm(t + mlp(t), count=self.seq_len)
      h = jnp.swapaxes(t[..., :self.seq_len], 1, 2)
    elif self.mixer == 'attention':
      attention = Attention(self.hidden_size, self.num_heads, self.dtype, self.attention_impl,
                            self.cudnn_seq_multiple, self.real_len, name='attention')
      h = norm(h + attention(h, rope))
    else:
      raise ValueError(f"model.mixer: expected 'attention' or 'mlp', got {self.mixer!r}.")
    mlp = SwiGLU(self.hidden_size, self.expansion, self.dtype, fused=self.fused_swiglu,
                 gradient_kernel=self.swiglu_gradient_kernel, name='mlp')
    return norm(h + mlp(h))


class Network(nn.Module):
  """`net(h, injection) = blocks(h + injection)`: the network that TRM applies recursively."""
  num_layers: int
  hidden_size: int
  num_heads: int
  expansion: float
  mixer: str
  seq_len: int
  rms_norm_eps: float
  dtype: Any = jnp.bfloat16
  attention_impl: str = 'auto'
  sequence_major: bool = False  # h laid out [seq, batch, hidden] (see Block).
  fused_sequence_mlp: bool = False
  cudnn_seq_multiple: int = 2
  fused_swiglu: bool = False
  real_len: int = 0  # Attention only: see `Attention.real_len`.
  sequence_mlp_kernel: str = 'triton'  # See Block.
  swiglu_gradient_kernel: bool = False  # See Block.

  @nn.compact
  def __call__(self, h: Array, injection: Array | None,
               rope: tuple[Array, Array] | None) -> Array:
    if injection is not None:
      h = h + injection
    for i in range(self.num_layers):
      h = Block(self.hidden_size, self.num_heads, self.expansion, self.mixer, self.seq_len,
                self.rms_norm_eps, self.dtype, self.attention_impl, self.sequence_major,
                self.fused_sequence_mlp, self.cudnn_seq_multiple, self.fused_swiglu,
                self.real_len, self.sequence_mlp_kernel, self.swiglu_gradient_kernel,
                name=f'block_{i}')(h, rope)
    return h

"""Tests of experiments/profiling.py on a small synthetic trace and HLO text."""

import gzip
import json

import jax
import jax.numpy as jnp

from experiments import profiling


def _write_trace(directory, durations_us):
  """A trace with one device process and one host process, as the JAX profiler writes it."""
  events = [{'ph': 'M', 'name': 'process_name', 'pid': 1, 'args': {'name': '/device:GPU:0'}},
            {'ph': 'M', 'name': 'process_name', 'pid': 2, 'args': {'name': '/host:CPU'}},
            {'ph': 'X', 'name': 'host_work', 'pid': 2, 'dur': 10_000}]
  for name, dur in durations_us:
    events.append({'ph': 'X', 'name': name, 'pid': 1, 'dur': dur})
  path = directory / 'plugins' / 'profile' / 'run' / 'host.trace.json.gz'
  path.parent.mkdir(parents=True)
  with gzip.open(path, 'wt') as f:
    json.dump({'traceEvents': events}, f)


def test_kernels_are_sorted_into_kinds():
  kinds = {name: profiling.kernel_kind(name) for name in (
      'nvjet_sm90_tst_128x160_64x5_2x1_v_bz_NNT', 'gemm_fusion_dot_669',
      'cudnn_generated_fort_native_sdpa_sm90_flash_fprop', 'fused_sequence_mlp',
      'swiglu_projection_hopper_mosaic_gpu_kernel', 'anonymous_mosaic_gpu_kernel',
      'wrapped_transpose_15', 'input_convert_transpose_fusion_13', 'loop_pad_fusion_73',
      'loop_slice_fusion_39', 'input_add_reduce_fusion', 'loop_multiply_fusion_111',
      'memset32')}
  assert kinds == {
      'nvjet_sm90_tst_128x160_64x5_2x1_v_bz_NNT': 'GEMM (cuBLAS, XLA Triton GEMM)',
      'gemm_fusion_dot_669': 'GEMM (cuBLAS, XLA Triton GEMM)',
      'cudnn_generated_fort_native_sdpa_sm90_flash_fprop': 'attention (cuDNN)',
      'fused_sequence_mlp': 'Pallas kernels',
      'swiglu_projection_hopper_mosaic_gpu_kernel': 'Pallas kernels',
      'anonymous_mosaic_gpu_kernel': 'Pallas kernels',
      'wrapped_transpose_15': 'transposes and layout copies',
      'input_convert_transpose_fusion_13': 'transposes and layout copies',
      'loop_pad_fusion_73': 'padding and slicing',
      'loop_slice_fusion_39': 'padding and slicing',
      'input_add_reduce_fusion': 'reductions (norms, losses)',
      'loop_multiply_fusion_111': 'other XLA fusions (elementwise)',
      'memset32': 'other'}


def test_table_has_device_time_by_kind_and_by_kernel(tmp_path):
  _write_trace(tmp_path, [('nvjet_a', 3_000), ('nvjet_a', 3_000), ('nvjet_b', 2_000),
                          ('loop_multiply_fusion', 1_000), ('loop_multiply_fusion', 1_000)])
  lines = profiling.kernel_table(str(tmp_path), steps=2).splitlines()
  assert lines[0] == 'device time per step: 5.0 ms over 3 distinct kernels'
  assert lines[1:4] == ['by kind:',
                        '    4.00 ms  80.0%  GEMM (cuBLAS, XLA Triton GEMM)',
                        '    1.00 ms  20.0%  other XLA fusions (elementwise)']
  assert lines[4] == 'largest kernels:'
  assert lines[5].split() == ['3.00', 'ms', '60.0%', 'x', '1', 'nvjet_a']  # Once per step.


_HLO = """
  %loop_multiply_fusion.55 = bf16[768,97,1536]{2,1,0} fusion(bf16[768,97,3072]{2,1,0} %p.1), kind=kLoop, calls=%fused_multiply.55, metadata={op_name="jit(train_step)/jvp(block_0)/mlp/mul" source_file="layers.py" source_line=90}
  ROOT %input_reduce-fusion.3 = (f32[768]{0}, f32[768,97]{1,0}) fusion(f32[768,97,512]{2,1,0} %x), kind=kInput, calls=%fused_reduce.3
  %custom-call.7 = bf16[64,64]{1,0} custom-call(bf16[64,64]{1,0} %a), custom_call_target="__cublas$gemm"
"""


def test_fusions_are_described_by_kernel_name_shape_and_operation():
  assert profiling.fusion_descriptions(_HLO) == {
      'loop_multiply_fusion_55': 'bf16[768,97,1536] <- jvp(block_0)/mlp/mul',
      'input_reduce_fusion_3': '(f32[768], f32[768,97]) <- no op_name'}


def test_fusions_of_a_compiled_program_are_found():
  hlo = jax.jit(lambda x: jnp.sin(x) * 2.0 + 1.0).lower(jnp.ones((8, 4))).compile().as_text()
  descriptions = profiling.fusion_descriptions(hlo)
  assert descriptions
  assert all(' <- ' in text for text in descriptions.values())
  assert any(text.startswith('f32[8,4] <- ') for text in descriptions.values())


def test_table_appends_the_description_of_a_kernel(tmp_path):
  _write_trace(tmp_path, [('nvjet_a', 3_000), ('loop_multiply_fusion_55', 1_000)])
  lines = profiling.kernel_table(
      str(tmp_path), steps=1,
      descriptions=profiling.fusion_descriptions(_HLO)).splitlines()
  assert lines[-2].endswith('  nvjet_a')
  assert lines[-1].endswith('loop_multiply_fusion_55  [bf16[768,97,1536] <- jvp(block_0)/mlp/mul]')

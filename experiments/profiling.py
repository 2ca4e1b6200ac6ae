"""Summarises a JAX Perfetto trace: device time per kind of kernel and per kernel, largest first.

With the compiled program's HLO text, each XLA fusion among the largest kernels is named by
what it computes: its output shape and the JAX operation it came from (`fusion_descriptions`).
"""

import collections
import glob
import gzip
import json
import os
import re


# Kinds of GPU kernels, by name: the first pattern a (lower-cased) kernel name contains.
KERNEL_KINDS = (
    ('attention (cuDNN)', ('cudnn', 'sdpa', 'flash')),
    ('GEMM (cuBLAS, XLA Triton GEMM)', ('nvjet', 'gemm', 'cublas', 'sm90_xmma', 'cutlass')),
    ('Pallas kernels', ('fused_sequence_mlp', 'pallas', 'mosaic_gpu')),
    ('transposes and layout copies', ('transpose', 'copy', 'bitcast')),
    ('padding and slicing', ('pad', 'slice', 'concatenate', 'dynamic_update')),
    ('reductions (norms, losses)', ('reduce',)),
    ('other XLA fusions (elementwise)', ('fusion',)),
)


def kernel_kind(name: str) -> str:
  """The `KERNEL_KINDS` entry of a kernel name, or 'other'."""
  lowered = name.lower()
  for kind, patterns in KERNEL_KINDS:
    if any(pattern in lowered for pattern in patterns):
      return kind
  return 'other'


def kind_lines(totals: dict[str, float], steps: int) -> list[str]:
  """'by kind' lines: device milliseconds per step of each kernel kind, largest first."""
  by_kind = collections.Counter()
  for name, dur in totals.items():
    by_kind[kernel_kind(name)] += dur
  total = sum(by_kind.values())
  return [f'{dur / steps / 1e3:8.2f} ms {100 * dur / max(total, 1e-9):5.1f}%  {kind}'
          for kind, dur in by_kind.most_common()]


_FUSION = re.compile(r'^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<shape>.+?)\s+fusion\(')
_OP_NAME = re.compile(r'op_name="(?P<op>[^"]*)"')


def fusion_descriptions(hlo_text: str) -> dict[str, str]:
  """Kernel name -> 'output shape <- JAX operation' for every fusion of an optimized HLO module.

  XLA names a fusion's GPU kernel after the instruction, dots and dashes made underscores
  (`%loop_multiply_fusion.55` runs as `loop_multiply_fusion_55`); the operation is the
  fusion's `op_name` metadata without its leading `jit(...)/`.
  """
  descriptions = {}
  for line in hlo_text.splitlines():
    match = _FUSION.match(line)
    if not match:
      continue
    shape = re.sub(r'\{[^{}]*\}', '', match['shape'])  # Drop layouts: bf16[8,4]{1,0}.
    op = _OP_NAME.search(line)
    what = re.sub(r'^jit\([^)]*\)/', '', op['op']) if op else 'no op_name'
    descriptions[re.sub(r'[.\-]', '_', match['name'])] = f'{shape} <- {what}'
  return descriptions


def kernel_table(trace_dir: str, steps: int, top: int = 25,
                 descriptions: dict[str, str] | None = None) -> str:
  """Reads the newest *.trace.json.gz under `trace_dir`; returns a text table per step.

  `descriptions` (from `fusion_descriptions`) are appended to the kernels they name.
  """
  paths = sorted(glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f'No *.trace.json.gz under {trace_dir}.')
  with gzip.open(paths[-1]) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  process_names = {e['pid']: e['args']['name'] for e in events
                   if e.get('ph') == 'M' and e.get('name') == 'process_name'}
  device_pids = {pid for pid, name in process_names.items()
                 if '/device:' in name or 'gpu' in name.lower()}
  totals, counts = collections.Counter(), collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and 'dur' in e and e['pid'] in device_pids:
      totals[e['name']] += e['dur']
      counts[e['name']] += 1
  total_ms = sum(totals.values()) / steps / 1e3
  lines = [f'device time per step: {total_ms:.1f} ms over {len(totals)} distinct kernels',
           'by kind:', *kind_lines(totals, steps), 'largest kernels:']
  for name, dur in totals.most_common(top):
    ms = dur / steps / 1e3
    line = (f'{ms:8.2f} ms {100 * ms / max(total_ms, 1e-9):5.1f}% '
            f'x{counts[name] // steps:4d}  {name[:120]}')
    if descriptions and name in descriptions:
      line += f'  [{descriptions[name][:160]}]'
    lines.append(line)
  return '\n'.join(lines)

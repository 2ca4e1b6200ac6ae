"""Summarises a JAX Perfetto trace: device time per kernel, largest first."""

import collections
import glob
import gzip
import json
import os


def kernel_table(trace_dir: str, steps: int, top: int = 25) -> str:
  """Reads the newest *.trace.json.gz under `trace_dir`; returns a text table per step."""
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
  lines = [f'device time per step: {total_ms:.1f} ms over {len(totals)} distinct kernels']
  for name, dur in totals.most_common(top):
    ms = dur / steps / 1e3
    lines.append(f'{ms:8.2f} ms {100 * ms / max(total_ms, 1e-9):5.1f}% '
                 f'x{counts[name] // steps:4d}  {name[:120]}')
  return '\n'.join(lines)

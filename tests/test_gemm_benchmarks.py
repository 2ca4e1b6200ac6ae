"""The GEMM and sequence-MLP kernel benchmarks run end to end on CPU (kernel rows report the missing GPU) and reject
malformed flags with a message naming the flag."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=180, check=False)


def test_swiglu_gemm_benchmark_table():
  result = _run('experiments.benchmark_swiglu_gemm', '--shapes=256:128:256',
                '--tilings=64:128:64:2:c', '--reps=1')
  assert result.returncode == 0, result.stderr[-2000:]
  table = result.stdout.split('shape | variant')[1].strip().splitlines()
  xla, kernel = table[1].split(' | '), table[2].split(' | ')
  assert xla[:2] == ['256:128:256', 'xla'] and float(xla[2]) > 0 and float(xla[4]) < 1e-2
  assert kernel[1] == 'kernel 64:128:64:2:c' and 'Error' in kernel[2]  # No GPU here.


def test_sequence_mlp_benchmark_table():
  result = _run('experiments.benchmark_sequence_mlp', '--batch=2', '--hidden=64', '--seq=20',
                '--tiles=64:64:4:1', '--mosaic_tilings=64:64:2:u', '--reps=1')
  assert result.returncode == 0, result.stderr[-2000:]
  rows = {row[0]: row for row in (line.split(' | ') for line in result.stdout.splitlines())
          if len(row) == 4}
  assert float(rows['sequence_major'][3]) < 1e-2
  assert 'Error' in rows['mosaic 64:64:2:u'][1]  # No GPU here.


def test_gemm_benchmark_table():
  result = _run('experiments.benchmark_gemm', '--shapes=64:32:48', '--reps=1')
  assert result.returncode == 0, result.stderr[-2000:]
  rows = [line.split(' | ') for line in result.stdout.split('relative error')[1].splitlines()
          if ' | ' in line]
  by_variant = {row[1]: row for row in rows}
  assert float(by_variant['xla_bf16'][4]) < 1e-2
  assert 1e-2 < float(by_variant['fp8_raw'][4]) < 0.1  # e4m3's 3 mantissa bits


@pytest.mark.parametrize('args, message', [
    (('experiments.benchmark_swiglu_gemm', '--tilings=64:128:64:2:x'), 'the last field'),
    (('experiments.benchmark_swiglu_gemm', '--tilings=a:b:c:d:c'), '--tilings: expected BM:BN:BK:S:c|u'),
    (('experiments.benchmark_swiglu_gemm', '--shapes=big'), '--shapes: expected sudoku, arc'),
    (('experiments.benchmark_gemm', '--shapes=1:2'), '--shapes: expected M:K:N'),
    (('experiments.benchmark_sequence_mlp', '--mosaic_tilings=64:64:2'),
     '--mosaic_tilings: expected BN:BH:S:c|u'),
    (('experiments.benchmark_sequence_mlp', '--mosaic_tilings=64:64:2:z'), 'the last field'),
])
def test_malformed_flags(args, message):
  result = _run(*args)
  assert result.returncode != 0 and message in result.stderr

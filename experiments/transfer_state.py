r"""Moves a run's full state between machines in size-limited pieces, losslessly.

  python -m experiments.transfer_state pack --workdir=RUN --output=DIR [--chunk_mb=16] \
      [--step=N] [--parts=0:4]
  python -m experiments.transfer_state unpack --input=DIR --workdir=RUN

`pack` writes one checkpoint step of RUN (the latest by default) together with metrics.jsonl,
config.json and timings.jsonl as a tar stream cut into chunks of at most --chunk_mb MiB, plus
`manifest.json` (each chunk's size and SHA-256, and the whole stream's). --parts=i:j keeps
only chunks i..j-1 in DIR, so that a transport limited per call (files back from a remote
machine, say) can fetch the pieces in several calls; the manifest is always written.
`unpack` checks every chunk against the manifest, then extracts into RUN (a step directory
that already exists there is left alone), so rerunning the training command resumes exactly
where the packed run stopped.
"""

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile

from absl import app
from absl import flags

from experiments import cli
from tiny_recursive import atomic_files

MANIFEST = 'manifest.json'
RUN_FILES = ('metrics.jsonl', 'config.json', 'timings.jsonl')


def _write_bytes(path: str, data: bytes) -> None:
  with open(path, 'wb') as f:
    f.write(data)


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _step_dirs(workdir: str) -> dict[int, str]:
  checkpoints = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(checkpoints):
    raise FileNotFoundError(f'{workdir}: no checkpoints/ directory to pack.')
  return {int(name): os.path.join(checkpoints, name) for name in os.listdir(checkpoints)
          if name.isdigit()}


def pack(workdir: str, output: str, chunk_mb: float = 16, step: int | None = None,
         parts: tuple[int, int] | None = None) -> dict:
  """Writes chunks and the manifest of one checkpoint step of `workdir` to `output`."""
  steps = _step_dirs(workdir)
  if not steps:
    raise FileNotFoundError(f'{workdir}/checkpoints has no committed step to pack.')
  step = max(steps) if step is None else step
  if step not in steps:
    raise ValueError(f'--step={step}: not in {workdir}/checkpoints (steps {sorted(steps)}).')
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode='w') as tar:
    tar.add(steps[step], arcname=f'checkpoints/{step}')
    for name in RUN_FILES:
      if os.path.exists(os.path.join(workdir, name)):
        tar.add(os.path.join(workdir, name), arcname=name)
  stream = buffer.getvalue()
  chunk = int(chunk_mb * 2**20)
  pieces = [stream[i:i + chunk] for i in range(0, len(stream), chunk)] or [b'']
  manifest = {'step': step, 'total_bytes': len(stream), 'sha256': _sha256(stream),
              'chunks': [{'name': f'state.{i:03d}', 'bytes': len(p), 'sha256': _sha256(p)}
                         for i, p in enumerate(pieces)]}
  os.makedirs(output, exist_ok=True)
  first, last = parts if parts is not None else (0, len(pieces))
  for entry, piece in list(zip(manifest['chunks'], pieces))[first:last]:
    atomic_files.write_atomically(os.path.join(output, entry['name']),
                                  lambda path, piece=piece: _write_bytes(path, piece))
  atomic_files.write_atomically(
      os.path.join(output, MANIFEST),
      lambda path: _write_bytes(path, json.dumps(manifest, indent=1).encode()))
  return manifest


def unpack(input_dir: str, workdir: str) -> int:
  """Verifies the chunks in `input_dir` and extracts them into `workdir`; returns the step."""
  with open(os.path.join(input_dir, MANIFEST), encoding='utf-8') as f:
    manifest = json.load(f)
  data = bytearray()
  for entry in manifest['chunks']:
    path = os.path.join(input_dir, entry['name'])
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path}: missing chunk ({len(manifest["chunks"])} expected).')
    with open(path, 'rb') as f:
      piece = f.read()
    if len(piece) != entry['bytes'] or _sha256(piece) != entry['sha256']:
      raise ValueError(f'{path}: size or SHA-256 differs from {MANIFEST}; fetch it again.')
    data += piece
  if _sha256(bytes(data)) != manifest['sha256']:
    raise ValueError(f'{input_dir}: the assembled stream does not match {MANIFEST}.')
  step = int(manifest['step'])
  os.makedirs(os.path.join(workdir, 'checkpoints'), exist_ok=True)
  target = os.path.join(workdir, 'checkpoints', str(step))
  staging = tempfile.mkdtemp(prefix='.unpack-', dir=workdir)
  try:
    with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode='r') as tar:
      tar.extractall(staging, filter='data')
    if not os.path.exists(target):
      os.replace(os.path.join(staging, 'checkpoints', str(step)), target)
    for name in RUN_FILES:
      if os.path.exists(os.path.join(staging, name)):
        os.replace(os.path.join(staging, name), os.path.join(workdir, name))
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return step


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Run directory (pack: source; unpack: destination).')
  flags.DEFINE_string('output', None, 'pack: directory for the chunks and manifest.')
  flags.DEFINE_string('input', None, 'unpack: directory with the chunks and manifest.')
  flags.DEFINE_float('chunk_mb', 16, 'pack: largest chunk, MiB.')
  flags.DEFINE_integer('step', None, 'pack: checkpoint step (default: the latest).')
  flags.DEFINE_string('parts', None, 'pack: write only chunks i:j (the manifest always).')


def main(argv):
  if len(argv) != 2 or argv[1] not in ('pack', 'unpack'):
    raise app.UsageError('usage: python -m experiments.transfer_state pack|unpack [flags]')
  f = flags.FLAGS
  if argv[1] == 'pack':
    parts = None
    if f.parts:
      first, _, last = f.parts.partition(':')
      parts = (int(first), int(last))
    manifest = pack(f.workdir, f.output, f.chunk_mb, f.step, parts)
    print(f'step {manifest["step"]}: {manifest["total_bytes"]} bytes in '
          f'{len(manifest["chunks"])} chunk(s) -> {f.output}')
  else:
    print(f'unpacked step {unpack(f.input, f.workdir)} into {f.workdir}')


if __name__ == '__main__':
  _define_flags()
  cli.run(main)

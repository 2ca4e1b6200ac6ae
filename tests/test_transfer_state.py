"""Tests of experiments/transfer_state.py: a packed and unpacked run resumes exactly."""

import os

import pytest

from experiments import transfer_state
from experiments.configs import tiny
from tiny_recursive import metrics_logging
from tiny_recursive import trainer

TIMING_KEYS = ('step_time_ms', 'eval_time_s')


def _config(data_dir, max_steps):
  config = tiny.get_config()
  config.data.data_dir = data_dir
  config.train.max_steps = max_steps
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 2
  config.eval.max_examples = 16
  return config


def _rows(workdir):
  return [{k: v for k, v in row.items() if k not in TIMING_KEYS}
          for row in metrics_logging.read_metrics(workdir)]


@pytest.mark.slow
def test_packed_state_resumes_like_the_uninterrupted_run(tmp_path):
  data_dir = str(tmp_path / 'data')
  reference = str(tmp_path / 'reference')
  trainer.train_and_evaluate(_config(data_dir, 6), reference)

  source = str(tmp_path / 'source')
  trainer.train_and_evaluate(_config(data_dir, 4), source)
  chunks = str(tmp_path / 'chunks')
  # Small chunks, fetched in two separate "calls" as a size-limited transport would.
  manifest = transfer_state.pack(source, chunks, chunk_mb=0.02, parts=(0, 2))
  assert len(manifest['chunks']) > 2 and manifest['step'] == 4
  with pytest.raises(FileNotFoundError, match='missing chunk'):
    transfer_state.unpack(chunks, str(tmp_path / 'too_early'))
  transfer_state.pack(source, chunks, chunk_mb=0.02, parts=(2, len(manifest['chunks'])))

  resumed = str(tmp_path / 'resumed')
  assert transfer_state.unpack(chunks, resumed) == 4
  final = trainer.train_and_evaluate(_config(data_dir, 6), resumed)
  # Every training step (the packed run's own and the resumed ones) and the final evaluation
  # equal the uninterrupted run's; the packed run also logged an evaluation at its last step.
  train_rows = lambda rows: [row for row in rows if row['split'] == 'train']
  assert train_rows(_rows(resumed)) == train_rows(_rows(reference))
  assert _rows(resumed)[-1] == _rows(reference)[-1]
  assert final['exact_accuracy'] == _rows(reference)[-1]['exact_accuracy']


def test_a_damaged_chunk_is_refused(tmp_path):
  workdir = tmp_path / 'run'
  (workdir / 'checkpoints' / '2' / 'state').mkdir(parents=True)
  (workdir / 'checkpoints' / '2' / 'state' / 'data').write_bytes(os.urandom(50_000))
  (workdir / 'metrics.jsonl').write_text('{"step": 1}\n')
  chunks = str(tmp_path / 'chunks')
  transfer_state.pack(str(workdir), chunks, chunk_mb=0.01)
  unpacked = tmp_path / 'unpacked'
  assert transfer_state.unpack(chunks, str(unpacked)) == 2
  assert ((unpacked / 'checkpoints' / '2' / 'state' / 'data').read_bytes()
          == (workdir / 'checkpoints' / '2' / 'state' / 'data').read_bytes())
  with open(os.path.join(chunks, 'state.001'), 'r+b') as f:
    f.write(b'x')
  with pytest.raises(ValueError, match='SHA-256'):
    transfer_state.unpack(chunks, str(tmp_path / 'again'))

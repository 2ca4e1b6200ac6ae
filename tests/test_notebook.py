"""Executes notebooks/quickstart.ipynb end to end in its smoke setting (TRM_NOTEBOOK_SMOKE=1)."""

import json
import os
import sys
import time

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO_ROOT, 'notebooks', 'quickstart.ipynb')
TIME_LIMIT_S = 120


def test_committed_notebook_has_no_outputs():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  for index, cell in enumerate(notebook.cells):
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None, f'cell {index} has outputs'
  assert notebook.metadata.kernelspec.name == 'python3'


@pytest.mark.slow
def test_quickstart_runs_in_smoke_mode(tmp_path, monkeypatch):
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # A first cell reporting the kernel's interpreter: it must be the one running the tests.
  notebook.cells.insert(0, nbformat.v4.new_code_cell('import sys\nprint(sys.executable)'))
  monkeypatch.setenv('TRM_NOTEBOOK_SMOKE', '1')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
      [REPO_ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
  client = nbclient.NotebookClient(
      notebook, kernel_name='python3', timeout=TIME_LIMIT_S,
      resources={'metadata': {'path': str(tmp_path)}})
  start = time.monotonic()
  client.execute()
  elapsed = time.monotonic() - start
  assert elapsed < TIME_LIMIT_S, f'the smoke run took {elapsed:.0f} s'

  interpreter = notebook.cells[0].outputs[0]['text'].strip()
  assert os.path.realpath(interpreter) == os.path.realpath(sys.executable), (
      f'the python3 kernel runs {interpreter}, not {sys.executable}')
  workdir = tmp_path / 'trm_quickstart'
  with open(workdir / 'metrics.jsonl', encoding='utf-8') as f:
    records = [json.loads(line) for line in f]
  assert {r['split'] for r in records} == {'train', 'eval'}
  assert max(r['step'] for r in records) == 6  # config.train.max_steps of the smoke setting.
  for name in ('learning_curve.png', 'predictions.png'):
    assert (workdir / name).stat().st_size > 1000
  outputs = '\n'.join(o.get('text', '') for cell in notebook.cells if cell.cell_type == 'code'
                      for o in cell.outputs)
  assert 'CPU device(s)' in outputs
  assert 'shown puzzles solved exactly' in outputs
  images = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs
            if 'image/png' in o.get('data', {})]
  assert len(images) == 2  # The learning curve and the predictions.

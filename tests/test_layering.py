"""The import graph of tiny_recursive/: no module imports from a layer above its own.

Layers, lowest first: utilities, data, model, recursion (ACT), train step and ARC scoring,
evaluation and config checks, the training loop. A new module must be given a layer here.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'tiny_recursive'

LAYERS = (
    ('atomic_files', 'checkpointing', 'fused_sequence_mlp', 'hopper_kernels', 'layers',
     'losses', 'metrics_logging', 'optimizers', 'puzzle_embedding', 'sequence_mlp_gemm',
     'sharding', 'swiglu_gemm', 'swiglu_gradient'),
    ('data.arc_encoding', 'data.augmentation', 'data.sources', 'data.puzzle_sources',
     'data.packing', 'data.pipeline', 'rendering'),
    ('model', 'flops', 'torch_import'),
    ('act',),
    ('train', 'arc_evaluation'),
    ('evaluation', 'config_validation'),
    ('trainer',),
)
LAYER = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _module_name(path: pathlib.Path) -> str:
  return '.'.join(path.relative_to(PACKAGE).with_suffix('').parts)


def _imports(path: pathlib.Path) -> set[str]:
  """Modules of tiny_recursive that `path` imports (at any depth of its code)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
        'tiny_recursive'):
      base = node.module[len('tiny_recursive'):].lstrip('.')
      for alias in node.names:
        name = f'{base}.{alias.name}' if base else alias.name
        found.add(name if name in LAYER else base)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith('tiny_recursive.'):
          found.add(alias.name[len('tiny_recursive.'):])
  return found


def _modules() -> list[pathlib.Path]:
  return [p for p in sorted(PACKAGE.rglob('*.py')) if p.name != '__init__.py']


def test_every_module_has_a_layer():
  assert sorted(_module_name(p) for p in _modules()) == sorted(LAYER)


def test_no_import_from_a_higher_layer():
  upward = []
  for path in _modules():
    module = _module_name(path)
    for imported in _imports(path):
      if LAYER[imported] > LAYER[module]:
        upward.append(f'{module} (layer {LAYER[module]}) imports {imported} '
                      f'(layer {LAYER[imported]})')
  assert not upward, upward


def test_the_checker_sees_imports():
  imports = _imports(PACKAGE / 'trainer.py')
  assert {'train', 'evaluation', 'data.pipeline'} <= imports

"""`--config=NAME[:ARG]` or `--config=PATH[:ARG]`: the one way configs are named.

ml_collections' `config_flags.DEFINE_config_file` takes a file path; the entry points also accept
the short names of the files in `experiments/configs/` (`--config=sudoku_extreme:att`) and the
names of the reference runs (`--config=arc_agi1` is `arc_agi:1`, see `ALIASES`).
`expand_config_argv` rewrites a name into a path before absl parses the flags; `load_config`
gives the same config in Python.
"""

import importlib.util
import os
from typing import Sequence

import ml_collections

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')

# The reference runs by the names the paper and the README use: NAME -> FILE:ARG.
ALIASES = {
    'sudoku_extreme_mlp': 'sudoku_extreme:mlp',
    'sudoku_extreme_att': 'sudoku_extreme:att',
    'arc_agi1': 'arc_agi:1',
    'arc_agi2': 'arc_agi:2',
}


def available_config_names() -> list[str]:
  """Names of the config files shipped in experiments/configs/ and of the aliases."""
  files = [name[:-3] for name in os.listdir(CONFIG_DIR)
           if name.endswith('.py') and name not in ('__init__.py', 'base.py')]
  return sorted(files + list(ALIASES))


def resolve_config_argument(value: str) -> str:
  """Maps 'NAME[:ARG]' to 'experiments/configs/NAME.py[:ARG]' (an alias to its file and
  argument); paths are returned unchanged."""
  name, sep, arg = value.partition(':')
  if name.endswith('.py') or os.sep in name:
    return value
  if name in ALIASES:
    if sep:
      raise ValueError(f'--config={value}: {name!r} names {ALIASES[name]!r} already; give '
                       'no further argument.')
    name, sep, arg = ALIASES[name].partition(':')
  path = os.path.join(CONFIG_DIR, f'{name}.py')
  if not os.path.exists(path):
    raise ValueError(
        f'--config={value}: no config named {name!r}; expected a path to a config file or one '
        f'of {available_config_names()}.')
  return path + sep + arg


def expand_config_argv(argv: Sequence[str], flag: str = 'config') -> list[str]:
  """Returns argv with `--config=NAME` (or `--config NAME`) rewritten to a config path."""
  expanded = list(argv)
  prefix = f'--{flag}='
  for i, arg in enumerate(expanded):
    if arg.startswith(prefix):
      expanded[i] = prefix + resolve_config_argument(arg[len(prefix):])
    elif arg == f'--{flag}' and i + 1 < len(expanded):
      expanded[i + 1] = resolve_config_argument(expanded[i + 1])
  return expanded


def load_config(value: str) -> ml_collections.ConfigDict:
  """The config `--config=value` gives (a name, an alias or a path, with its argument)."""
  path, sep, arg = resolve_config_argument(value).partition(':')
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if sep else module.get_config()

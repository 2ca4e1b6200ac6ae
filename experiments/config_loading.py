"""`--config=NAME` or `--config=PATH[:ARG]`: resolving config names for the entry points.

ml_collections' `config_flags.DEFINE_config_file` takes a file path; the entry points also accept
the short names of the files in `experiments/configs/` (`--config=arc_agi1`,
`--config=sudoku_extreme:att`). `expand_config_argv` rewrites such names into paths before absl
parses the flags.
"""

import os
from typing import Sequence

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')


def available_config_names() -> list[str]:
  """Names of the config files shipped in experiments/configs/."""
  return sorted(
      name[:-3] for name in os.listdir(CONFIG_DIR)
      if name.endswith('.py') and name not in ('__init__.py', 'base.py'))


def resolve_config_argument(value: str) -> str:
  """Maps 'NAME[:ARG]' to 'experiments/configs/NAME.py[:ARG]'; paths are returned unchanged."""
  name, sep, arg = value.partition(':')
  if name.endswith('.py') or os.sep in name:
    return value
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


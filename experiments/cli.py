"""The conventions every `python -m experiments.X` / `datasets.X` entry point shares.

  if __name__ == '__main__':
    define_flags()
    cli.run(main)

- Bad input (a bad flag, an unknown `--config.KEY`, a malformed file, a missing path) is one
  line on stderr, `error: <where>: <what was expected>`, and exit status 2; no traceback.
  Bad input is what the project raises for it: `ValueError` (with `ConfigError`,
  `DataFormatError`, `ArcFormatError`), `OSError` (missing files, unwritable directories) and
  `ImportError` (an optional package, such as torch, not installed).
- `-v 1` (`--verbosity=1`) or the environment variable `TRM_DEBUG=1` shows the traceback.
- Quiet by default: absl INFO (JAX's backend probing, Orbax, TFDS) is hidden unless
  `--verbosity` is given; the terminal shows the answer, warnings and errors.
- `--config=NAME` is resolved to a file of experiments/configs (config_loading) when the
  program defines a `config` flag.
"""

import functools
import os
import re
import sys
from typing import Any, Callable, NoReturn, Sequence

from absl import app
from absl import flags
from absl import logging

from experiments import config_loading

INPUT_ERRORS = (ValueError, OSError, ImportError)
EXIT_BAD_INPUT = 2
DEBUG_ENV = 'TRM_DEBUG'


def fail(message: Any, status: int = EXIT_BAD_INPUT) -> NoReturn:
  """Prints `error: <message>` (a string or an exception) as one line on stderr and exits."""
  if isinstance(message, OSError) and message.filename is not None and message.strerror:
    message = f'{message.filename}: {message.strerror}.'  # Rather than '[Errno 2] ...'.
  text = ' '.join(line.strip() for line in str(message).splitlines() if line.strip())
  print(f'error: {text or type(message).__name__}', file=sys.stderr, flush=True)
  sys.exit(status)


def no_positional_arguments(argv: Sequence[str]) -> None:
  """Refuses words after the program name (for entry points that take flags only)."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {list(argv[1:])}')


def debugging() -> bool:
  """Whether errors should show their traceback (`-v 1` or `TRM_DEBUG=1`)."""
  if os.environ.get(DEBUG_ENV, '') not in ('', '0'):
    return True
  verbosity = flags.FLAGS['verbosity']
  return verbosity.present and verbosity.value >= 1


def _unknown_config_key(error: Exception, argv: Sequence[str]) -> str:
  """The message for an unknown `--config.KEY`, naming the override(s) given.

  ml_collections raises AttributeError/KeyError from inside flag parsing for such a key, which
  absl would otherwise show as a long traceback.
  """
  detail = error
  while isinstance(detail, BaseException) and detail.args:
    detail = detail.args[0]
  detail = str(detail)
  match = re.match(r"'([^']+)'", detail)
  overrides = [arg for arg in argv if arg.startswith('--config.')]
  if match:
    named = [arg for arg in overrides
             if match.group(1) in arg.partition('=')[0][len('--config.'):].split('.')]
    overrides = named or overrides
  hint = ' '.join(detail.split('\n')[1:])
  return (f'{" ".join(overrides)}: the config has no key '
          f'{match.group(1) if match else detail!r}. {hint}').rstrip()


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every flag error (and an unknown `--config.KEY`) one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    fail(f'{error} (--helpshort lists the flags)')
  except (AttributeError, KeyError) as error:
    if not any(arg.startswith('--config.') for arg in argv):
      raise
    fail(_unknown_config_key(error, argv))


def _main_with_conventions(main: Callable[[list[str]], Any], argv: list[str]) -> Any:
  if not flags.FLAGS['verbosity'].present:
    # Keep the terminal to the answer, warnings and errors; pass -v 0 for INFO.
    logging.set_verbosity(logging.WARNING)
  try:
    return main(argv)
  except (app.UsageError, *INPUT_ERRORS) as error:
    if debugging():
      raise
    fail(error)


def run(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> None:
  """`absl.app.run(main)` with the conventions of this module."""
  argv = list(sys.argv if argv is None else argv)
  if 'config' in flags.FLAGS:
    try:
      argv = config_loading.expand_config_argv(argv)
    except ValueError as error:
      fail(error)
  app.run(functools.partial(_main_with_conventions, main), argv=argv, flags_parser=parse_flags)

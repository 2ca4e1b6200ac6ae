r"""Builds the TFDS data sets of this project (ArrayRecord files, no TensorFlow needed).

  python -m datasets.build NAME[/CONFIG] --data_dir=DIR [--manual_dir=DIR]

NAME is one of `sudoku_extreme`, `maze_hard`, `arc_agi`; without /CONFIG every config of
NAME is built. Each config is prepared in a temporary directory inside DIR and moved into
place only when complete, so a failed build leaves nothing behind (downloads, when no
manual directory is given, are cached in DIR/downloads as TFDS does).
"""

import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

from datasets.arc_agi import arc_agi_dataset_builder
from datasets.maze_hard import maze_hard_dataset_builder
from datasets.sudoku_extreme import sudoku_extreme_dataset_builder
from experiments import cli

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    'sudoku_extreme': sudoku_extreme_dataset_builder.SudokuExtreme,
    'maze_hard': maze_hard_dataset_builder.MazeHard,
    'arc_agi': arc_agi_dataset_builder.ArcAgi,
}
FILE_FORMAT = 'array_record'


def default_data_dir() -> str:
  """The TFDS default data directory (`$TFDS_DATA_DIR` or ~/tensorflow_datasets)."""
  return os.fspath(tfds.core.constants.DATA_DIR)


def config_names(name: str) -> list[str]:
  """The builder config names of data set `name`."""
  if name not in BUILDERS:
    raise ValueError(f'Unknown data set {name!r}; expected one of {sorted(BUILDERS)}.')
  return [config.name for config in BUILDERS[name].BUILDER_CONFIGS]


def prepared_dir(name: str, builder_config: str, data_dir: str) -> str:
  """Where the prepared files of `name/builder_config` live inside `data_dir`."""
  version = str(BUILDERS[name].VERSION)
  return os.path.join(data_dir, name, builder_config, version)


def is_built(name: str, builder_config: str, data_dir: str) -> bool:
  return os.path.isfile(os.path.join(prepared_dir(name, builder_config, data_dir),
                                     'dataset_info.json'))


def build(name: str, builder_config: str, data_dir: str | None,
          manual_dir: str | None = None) -> str:
  """Builds `name/builder_config` into `data_dir` unless already built.

  Returns:
    The directory holding the prepared files.
  Raises:
    ValueError: unknown name or config; FileNotFoundError: missing manual directory;
    whatever the builder raises for bad input (nothing is left in `data_dir` then).
  """
  if builder_config not in config_names(name):
    raise ValueError(f'Unknown config {builder_config!r} of {name}; expected one of '
                     f'{config_names(name)}.')
  data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
  target = prepared_dir(name, builder_config, data_dir)
  if is_built(name, builder_config, data_dir):
    logging.info('%s/%s is already built in %s', name, builder_config, target)
    return target
  if manual_dir is not None:
    manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
    if not os.path.isdir(manual_dir):
      raise FileNotFoundError(f'--manual_dir {manual_dir} is not a directory.')
  os.makedirs(data_dir, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f'.incomplete-{name}-{builder_config}-', dir=data_dir)
  try:
    builder = BUILDERS[name](data_dir=staging, config=builder_config, file_format=FILE_FORMAT)
    # Downloads are a cache worth keeping; with a manual directory there are none, and
    # TFDS would still create an empty downloads folder, so keep that in staging.
    download_dir = (os.path.join(staging, 'downloads') if manual_dir is not None
                    else os.path.join(data_dir, 'downloads'))
    with _quiet_tfds():
      builder.download_and_prepare(
          download_dir=download_dir,
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    built = os.path.join(staging, name, builder_config, str(builder.version))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.rename(built, target)
    metadata = os.path.join(staging, name, '.config')
    if os.path.isdir(metadata) and not os.path.exists(os.path.join(data_dir, name, '.config')):
      os.rename(metadata, os.path.join(data_dir, name, '.config'))
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    _remove_empty_tree(os.path.join(data_dir, 'downloads'))
  logging.info('Built %s/%s in %s', name, builder_config, target)
  return target


@contextlib.contextmanager
def _quiet_tfds():
  """Hides TFDS's progress bars and printed notes unless absl logs INFO (`-v 0`).

  The notes name the temporary staging directory, not where the data set ends up, and a
  failed build would leave its progress bars above the one-line error.
  """
  if logging.level_info():
    yield
    return
  tfds.display_progress_bar(False)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tfds.display_progress_bar(True)


def _remove_empty_tree(path: str) -> None:
  """Removes `path` if it holds no files (TFDS creates empty download folders)."""
  if os.path.isdir(path) and not any(files for _, _, files in os.walk(path)):
    shutil.rmtree(path, ignore_errors=True)


def directory_size(path: str) -> int:
  """Total bytes of the files under `path`."""
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


def _define_flags() -> None:
  flags.DEFINE_string('data_dir', None, 'TFDS data directory (default: the TFDS default).')
  flags.DEFINE_string('manual_dir', None,
                      'Directory with the source files for an offline build.')


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError('usage: python -m datasets.build NAME[/CONFIG] --data_dir=DIR '
                         '[--manual_dir=DIR]')
  name, _, config = argv[1].partition('/')
  configs = [config] if config else config_names(name)
  data_dir = flags.FLAGS.data_dir or default_data_dir()
  for builder_config in configs:
    start = time.perf_counter()
    already = is_built(name, builder_config, os.path.abspath(os.path.expanduser(data_dir)))
    target = build(name, builder_config, data_dir, flags.FLAGS.manual_dir)
    elapsed = time.perf_counter() - start
    status = 'already built' if already else f'built in {elapsed:.1f} s'
    print(f'{name}/{builder_config}: {status}; {directory_size(target) / 2**20:.2f} MiB '
          f'in {target}')
    for split, info in tfds.builder_from_directory(target).info.splits.items():
      print(f'  {split}: {info.num_examples} examples, {info.num_bytes / 2**20:.2f} MiB')
  sys.stdout.flush()


if __name__ == '__main__':
  _define_flags()
  cli.run(main)

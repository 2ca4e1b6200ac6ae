"""Training checkpoints with exact resume, preemption handling and model export.

Two formats (see docs/checkpointing.md):

* Training checkpoints (`Checkpointer`): one Orbax step directory per saved step
  under `<workdir>/checkpoints/`, holding the whole train state pytree, the
  data-iterator state of every process (JSON) and a JSON metadata item. The
  reference saves model weights only (TRM_REFERENCE.md §9), so it cannot resume;
  this saves everything the next step depends on.
* Model exports (`save_model` / `load_model`): the arrays inference needs plus the
  model configuration, written to a temporary directory and renamed.

The train state pytree has the keys `params`, `ema_params` (or None), `constants`,
`puzzle_table`, `opt_state`, `carry`, `step`, `rng`; the code here only relies on
`params`, `ema_params`, `constants` and `puzzle_table`, and only in `load_model`.
"""

import contextlib
import hashlib
import json
import os
import signal
import threading
import time
import uuid
from typing import Any, Iterator, Mapping

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

PyTree = Any

STATE_ITEM = 'state'
DATA_ITERATOR_ITEM = 'data_iterator'
METADATA_ITEM = 'metadata'
CHECKPOINTS_SUBDIR = 'checkpoints'
MODEL_CONFIG_FILE = 'model_config.json'
MODEL_ARRAYS_SUBDIR = 'arrays'
CHECKSUMS_FILE = 'SHA256SUMS'
OMITTED_FIELDS_KEY = 'omitted_fields'


class WorkdirNotWritableError(OSError):
  """The work directory cannot be created or written to."""


def absolute_path(path: str | os.PathLike[str]) -> epath.Path:
  """`path` with `~` expanded and made absolute (Orbax refuses relative paths); URLs as given."""
  path = epath.Path(path).expanduser()
  return path if path.is_absolute() else epath.Path(os.path.abspath(path))


def check_workdir_writable(workdir: str | os.PathLike[str]) -> None:
  """Fails early with a clear error when `workdir` cannot hold checkpoints.

  Creates the directory if needed, then writes, renames and deletes a probe file.

  Args:
    workdir: directory that will receive checkpoints and logs.

  Raises:
    WorkdirNotWritableError: naming the directory and the failing operation.
  """
  path = epath.Path(workdir)
  probe = path / f'.write_probe.{os.getpid()}.{uuid.uuid4().hex}'
  operation = 'create the directory'
  try:
    path.mkdir(parents=True, exist_ok=True)
    operation = 'write a file'
    probe_tmp = probe.parent / (probe.name + '.tmp')
    probe_tmp.write_text('ok')
    operation = 'rename a file'
    probe_tmp.rename(probe)
    operation = 'delete a file'
    probe.unlink()
  except OSError as error:
    raise WorkdirNotWritableError(
        f'Work directory {os.fspath(path)!r} is not usable: could not '
        f'{operation} there ({type(error).__name__}: {error}). Choose a '
        'writable --workdir.') from error


def _to_json_compatible(value: Any) -> Any:
  """Converts numpy / jax scalars and arrays inside `value` to JSON types."""
  if isinstance(value, Mapping):
    return {str(k): _to_json_compatible(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_json_compatible(v) for v in value]
  if isinstance(value, (np.ndarray, jax.Array, np.generic)):
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array.tolist()
  return value


class Checkpointer:
  """Saves and restores full training states under `<workdir>/checkpoints`.

  Saves are asynchronous: `save` returns once the arrays are copied off the
  devices; `wait_until_finished` blocks until the files are committed. Retention
  keeps the latest `max_to_keep` steps and, when `best_metric` is set, also the
  single best step by that metric (both policies hold at once; see
  docs/checkpointing.md).
  """

  def __init__(self,
               workdir: str | os.PathLike[str],
               *,
               save_interval_steps: int = 1000,
               max_to_keep: int = 3,
               best_metric: str | None = None,
               best_mode: str = 'max',
               model_config: Mapping[str, Any] | None = None,
               async_save: bool = True,
               omit_fields: tuple[str, ...] = ()):
    """Opens (or creates) the checkpoint directory.

    Args:
      workdir: training work directory; checkpoints go to `workdir/checkpoints`.
      save_interval_steps: `save` without `force` writes only at multiples.
      max_to_keep: number of most recent checkpoints kept.
      best_metric: name of a metric passed to `save(metrics=...)`; the best
        checkpoint by it is kept in addition to the latest ones.
      best_mode: 'max' or 'min': which value of `best_metric` is best.
      model_config: JSON-compatible model configuration stored in every step's
        metadata, so that `load_model` can rebuild the model from a checkpoint.
      async_save: write in a background thread.
      omit_fields: fields of the state dataclass saved as None (e.g. ('carry',) to leave
        the ACT carry out); a restored state has None there, for the caller to fill.
        Each step's metadata records what it left out, so steps saved with and without
        these fields restore alike.
    """
    if best_mode not in ('max', 'min'):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}.")
    if max_to_keep < 1:
      raise ValueError(f'max_to_keep must be >= 1, got {max_to_keep}.')
    self._directory = absolute_path(workdir) / CHECKPOINTS_SUBDIR
    self._best_metric = best_metric
    self._best_mode = best_mode
    self._model_config = _to_json_compatible(dict(model_config or {}))
    self._omit_fields = tuple(omit_fields)
    self._stop_requested = threading.Event()
    self._previous_handlers: dict[int, Any] = {}

    policies = [checkpoint_managers.LatestN(n=max_to_keep)]
    best_fn = None
    if best_metric is not None:
      worst = -float('inf') if best_mode == 'max' else float('inf')
      best_fn = lambda metrics: float(metrics.get(best_metric, worst))
      # Only steps saved with the metric compete for "best"; the others are
      # covered by LatestN alone.
      policies.append(
          checkpoint_managers.BestN(
              get_metric_fn=best_fn,
              reverse=(best_mode == 'min'),
              n=1,
              keep_checkpoints_without_metrics=False))
    # Orbax's default also saves the first step of a fresh run; saves happen
    # here only at the interval, at a preemption sync point, or when forced.
    save_policy = checkpoint_managers.AnySavePolicy([
        checkpoint_managers.FixedIntervalPolicy(save_interval_steps),
        checkpoint_managers.PreemptionCheckpointingPolicy(),
    ])
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=save_policy,
        # best_fn makes Orbax persist the ranking metrics, so that retention
        # after a restart still knows the best step.
        best_fn=best_fn,
        best_mode=best_mode,
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        create=True)
    # Every process writes its own iterator state (grain iterators are
    # per-process); the JSON handler writes only on the primary host otherwise.
    iterator_handler = ocp.JsonCheckpointHandler(
        filename=f'process_{jax.process_index()}.json',
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=None))
    self._manager = ocp.CheckpointManager(
        self._directory,
        options=options,
        item_handlers={
            STATE_ITEM: ocp.StandardCheckpointHandler(),
            DATA_ITERATOR_ITEM: iterator_handler,
            METADATA_ITEM: ocp.JsonCheckpointHandler(),
        })

  @property
  def directory(self) -> epath.Path:
    return self._directory

  def all_steps(self) -> list[int]:
    """Steps with a committed checkpoint, ascending."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """Step with the best `best_metric` among the kept checkpoints, if any."""
    if self._best_metric is None:
      return None
    return self._manager.best_step()

  def should_save(self, step: int) -> bool:
    """True at save intervals and at a preemption sync point."""
    return self._manager.should_save(step)

  def save(self,
           step: int,
           state: PyTree,
           data_iterator_state: Any = None,
           metrics: Mapping[str, Any] | None = None,
           force: bool = False) -> bool:
    """Starts saving `state` at `step` if due or forced; returns if it did.

    Args:
      step: training step the state belongs to (number of updates applied).
      state: pytree of jax arrays (None leaves allowed).
      data_iterator_state: this process's JSON-compatible iterator state.
      metrics: JSON-compatible scalars, e.g. the latest eval metrics; the one
        named `best_metric` ranks checkpoints for keep-best.
      force: save even off the interval (on demand, at the end, on preemption).
    """
    if not force and not self._manager.should_save(step):
      return False
    metrics = _to_json_compatible(dict(metrics or {}))
    ranking_metrics = None
    if self._best_metric is not None and self._best_metric in metrics:
      ranking_metrics = {self._best_metric: float(metrics[self._best_metric])}
    metadata = {
        'step': int(step),
        'metrics': metrics,
        'time': time.time(),
        'process_count': jax.process_count(),
        'model_config': self._model_config,
        OMITTED_FIELDS_KEY: list(self._omit_fields),
    }
    if self._omit_fields:
      state = state.replace(**{field: None for field in self._omit_fields})
    iterator_item = {'state': _to_json_compatible(data_iterator_state)}
    for name, item in (('data_iterator_state', iterator_item),
                       ('metrics', metrics)):
      try:
        json.dumps(item)
      except (TypeError, ValueError) as error:
        raise TypeError(f'Checkpoint step {step}: {name} must be JSON '
                        f'serialisable (decode bytes first): {error}'
                        ) from error
    saved = self._manager.save(
        step,
        args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(state),
            DATA_ITERATOR_ITEM: ocp.args.JsonSave(iterator_item),
            METADATA_ITEM: ocp.args.JsonSave(metadata),
        }),
        metrics=ranking_metrics,
        force=True)
    if saved:
      logging.info('Saving checkpoint for step %d to %s.', step,
                   os.fspath(self._directory))
    return saved

  def metadata(self, step: int) -> dict[str, Any]:
    """What `save` stored beside the state of `step`: step, metrics, time, model_config..."""
    return self._manager.restore(
        step, args=ocp.args.Composite(**{METADATA_ITEM: ocp.args.JsonRestore()}))[METADATA_ITEM]

  def restore(self, step: int,
              abstract_state: PyTree) -> tuple[PyTree, Any, dict[str, Any]]:
    """Restores one step into the shapes, dtypes and shardings given.

    Args:
      step: a step listed by `all_steps`.
      abstract_state: pytree of `jax.ShapeDtypeStruct` (with `sharding`), e.g.
        `jax.eval_shape` of the state initialiser with the train shardings.

    Returns:
      (state, data_iterator_state, metadata); fields the step was saved without are None.
    """
    metadata = self.metadata(step)
    omitted = metadata.get(OMITTED_FIELDS_KEY) or []
    if omitted:
      abstract_state = abstract_state.replace(**{field: None for field in omitted})
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardRestore(abstract_state),
            DATA_ITERATOR_ITEM: ocp.args.JsonRestore(),
            METADATA_ITEM: ocp.args.JsonRestore(),
        }))
    return (restored[STATE_ITEM], restored[DATA_ITERATOR_ITEM]['state'],
            restored[METADATA_ITEM])

  def restore_latest(
      self, abstract_state: PyTree) -> tuple[PyTree, Any, int] | None:
    """Restores the newest readable checkpoint, or returns None if none exists.

    A checkpoint that fails to restore (deleted or truncated files, bad JSON) is
    skipped with a warning and the previous one is tried. Uncommitted
    (temporary) step directories are never considered.

    Args:
      abstract_state: as for `restore`.

    Returns:
      (state, data_iterator_state, step), or None when no checkpoint restores.
    """
    self._manager.reload()
    steps = self.all_steps()
    unreadable = []
    for step in reversed(steps):
      try:
        state, iterator_state, _ = self.restore(step, abstract_state)
      except Exception as error:  # pylint: disable=broad-except
        # Orbax and tensorstore raise many error types for damaged files.
        logging.warning(
            'Checkpoint at step %d in %s could not be restored (%s: %s); '
            'falling back to the previous one.', step,
            os.fspath(self._directory), type(error).__name__, error)
        unreadable.append(step)
        continue
      logging.info('Restored checkpoint for step %d from %s.', step,
                   os.fspath(self._directory))
      self._set_aside(unreadable)
      return state, iterator_state, step
    if steps:
      logging.warning('None of the checkpoints %s in %s could be restored.',
                      steps, os.fspath(self._directory))
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Renames unreadable steps to `corrupt_<step>_<time>` (kept for study).

    Training resumes from an older step and will save these steps again, which
    Orbax refuses while a directory of that name exists.
    """
    if not steps:
      return
    if jax.process_index() == 0:
      for step in steps:
        source = self._directory / str(step)
        target = self._directory / f'corrupt_{step}_{int(time.time())}'
        logging.warning('Moving unreadable checkpoint %s to %s.',
                        os.fspath(source), os.fspath(target))
        source.rename(target)
    _sync('tiny_recursive_set_aside_checkpoints')
    self._manager.reload()

  def install_stop_handlers(self) -> bool:
    """Makes SIGTERM and the first Ctrl-C (SIGINT) request a graceful stop.

    The first Ctrl-C also puts back the SIGINT handler found here (Python's raises
    KeyboardInterrupt), so a second one aborts at once without saving. A SIGINT that the
    process was started ignoring (a background job of a shell script) stays ignored.
    `close` puts back the handlers found here. Only in a single-process run: with several
    processes, `jax.distributed`'s preemption service owns SIGTERM and `should_stop` polls
    its sync point. Must be called from the main thread.

    Returns:
      Whether handlers were installed.
    """
    if jax.process_count() > 1:
      logging.info('Multi-process run: relying on the JAX preemption service.')
      return False

    def on_sigterm(signum, frame):
      del signum, frame
      logging.warning('Received SIGTERM: will save and stop at the next step.')
      self._stop_requested.set()

    def on_sigint(signum, frame):
      del frame
      signal.signal(signum, self._previous_handlers[signum])
      logging.warning('Ctrl-C: will save and stop at the next step; press Ctrl-C again to '
                      'abort without saving.')
      self._stop_requested.set()

    handlers = {signal.SIGTERM: on_sigterm}
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
      handlers[signal.SIGINT] = on_sigint
    for signum, handler in handlers.items():
      previous = signal.signal(signum, handler)
      # None: a handler not installed from Python, which cannot be put back; the default is.
      self._previous_handlers[signum] = signal.SIG_DFL if previous is None else previous
    return True

  def request_stop(self) -> None:
    """Asks the training loop to save and stop (as SIGTERM and Ctrl-C do)."""
    self._stop_requested.set()

  def should_stop(self, step: int) -> bool:
    """Polled by the training loop once per step, on every process.

    True after SIGTERM, Ctrl-C or `request_stop`, or when all processes reach the JAX
    preemption sync point for `step` (`multihost_utils.
    reached_preemption_sync_point`, active after `jax.distributed.initialize`),
    so that every process stops at the same step. The caller then saves with
    `force=True`, calls `wait_until_finished` and exits.
    """
    return self._stop_requested.is_set() or self._manager.reached_preemption(
        step)

  def wait_until_finished(self) -> None:
    """Blocks until pending asynchronous saves are committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, releases the manager and puts back the signal handlers."""
    self._manager.wait_until_finished()
    self._manager.close()
    for signum, previous in self._previous_handlers.items():
      signal.signal(signum, previous)
    self._previous_handlers.clear()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def save_model(directory: str | os.PathLike[str], params: PyTree,
               constants: PyTree, puzzle_table: jax.Array | np.ndarray | None,
               model_config: Mapping[str, Any], *,
               extra_files: Mapping[str, str] | None = None,
               checksums: bool = False) -> None:
  """Writes a model export: arrays (Orbax) and `model_config.json`.

  The export is assembled in a temporary sibling directory and renamed to
  `directory`, replacing an existing export there.

  Args:
    directory: destination directory.
    params: dense parameters (the EMA ones, for evaluation).
    constants: non-trained arrays the model needs (may be empty).
    puzzle_table: `[num_puzzle_identifiers, dim]` table, or None.
    model_config: JSON-compatible model configuration.
    extra_files: more text files of the export, by name.
    checksums: also write `SHA256SUMS` (`sha256sum -c` format) over every file;
      `load_model` then verifies them.
  """
  directory = absolute_path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  tmp = directory.parent / f'.{directory.name}.tmp-{uuid.uuid4().hex}'
  arrays = {'params': params, 'constants': constants,
            'puzzle_table': puzzle_table}
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp / MODEL_ARRAYS_SUBDIR, arrays)
    checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    config_tmp = tmp / (MODEL_CONFIG_FILE + '.tmp')
    config_tmp.write_text(
        json.dumps(_to_json_compatible(dict(model_config)), indent=2,
                   sort_keys=True))
    config_tmp.rename(tmp / MODEL_CONFIG_FILE)
    for name, text in (extra_files or {}).items():
      (tmp / name).write_text(text)
    if checksums:
      lines = [f'{digest}  {name}' for name, digest in _file_digests(tmp).items()]
      (tmp / CHECKSUMS_FILE).write_text('\n'.join(lines) + '\n')
    if directory.exists():
      old = directory.parent / f'.{directory.name}.old-{uuid.uuid4().hex}'
      directory.rename(old)
      tmp.rename(directory)
      old.rmtree()
    else:
      tmp.rename(directory)
  _sync('tiny_recursive_save_model')


def _file_digests(directory: epath.Path) -> dict[str, str]:
  """SHA-256 of every file below `directory` (but a checksum file), by relative path."""
  digests = {}
  for root, _, names in directory.walk():
    for name in names:
      path = root / name
      relative = os.fspath(path.relative_to(directory))
      if relative != CHECKSUMS_FILE:
        digests[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
  return dict(sorted(digests.items()))


def verify_checksums(directory: str | os.PathLike[str]) -> None:
  """Checks an export against its `SHA256SUMS`, if it has one.

  Raises:
    ValueError: naming the first file that is missing, altered or not listed.
  """
  directory = epath.Path(directory)
  sums = directory / CHECKSUMS_FILE
  if not sums.exists():
    return
  expected = {}
  for number, line in enumerate(sums.read_text().splitlines(), start=1):
    digest, sep, name = line.partition('  ')
    if not sep or len(digest) != 64:
      raise ValueError(f'{os.fspath(sums)}:{number}: expected "<sha256>  <file>", got {line!r}.')
    expected[name] = digest
  found = _file_digests(directory)
  for name, digest in expected.items():
    if name not in found:
      raise ValueError(f'{os.fspath(directory / name)}: listed in {CHECKSUMS_FILE} but missing.')
    if found[name] != digest:
      raise ValueError(f'{os.fspath(directory / name)}: SHA-256 {found[name]} differs from '
                       f'{digest} in {CHECKSUMS_FILE}; the export is damaged.')
  unlisted = sorted(set(found) - set(expected))
  if unlisted:
    raise ValueError(f'{os.fspath(directory / unlisted[0])}: not listed in {CHECKSUMS_FILE}.')


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    # pylint: disable-next=g-import-not-at-top
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _is_step_directory(path: epath.Path) -> bool:
  return (path / STATE_ITEM).is_dir() and (path / METADATA_ITEM).is_dir()


def _latest_committed_step_directory(checkpoints: epath.Path) -> epath.Path:
  steps = [p for p in checkpoints.iterdir() if p.name.isdigit() and
           _is_step_directory(p)]
  if not steps:
    raise FileNotFoundError(f'No committed checkpoint steps in {checkpoints}.')
  return max(steps, key=lambda p: int(p.name))


@contextlib.contextmanager
def _without_missing_step_metadata_warning() -> Iterator[None]:
  """Drops Orbax's warning that an item directory has no step metadata file: the item of a
  training step (`state/`) is read on its own here, and that file lives one level up."""
  keep = lambda record: not record.getMessage().startswith('Metadata file does not exist')
  logger = logging.get_absl_logger()
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


def _restore_here(path: epath.Path) -> PyTree:
  """Restores an Orbax pytree onto this process's first device, whatever device layout
  wrote it (a checkpoint saved on two GPUs loads on one CPU)."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with _without_missing_step_metadata_warning(), ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path)
    tree = getattr(metadata, 'item_metadata', metadata)
    target = jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), tree)
    return checkpointer.restore(path, target)


def checkpoint_step_directory(directory: str | os.PathLike[str]) -> str:
  """The training checkpoint step directory `directory` names: itself, or the latest
  committed step of a training workdir or of its `checkpoints` directory.

  Raises:
    FileNotFoundError: naming the directory and what was expected in it.
  """
  path = absolute_path(directory)
  if _is_step_directory(path):
    return os.fspath(path)
  if (path / CHECKPOINTS_SUBDIR).is_dir():
    return os.fspath(_latest_committed_step_directory(path / CHECKPOINTS_SUBDIR))
  if path.is_dir() and any(p.name.isdigit() for p in path.iterdir()):
    return os.fspath(_latest_committed_step_directory(path))
  raise FileNotFoundError(
      f'{os.fspath(path)!r} is neither a model export (with '
      f'{MODEL_CONFIG_FILE}), a training workdir (with '
      f'{CHECKPOINTS_SUBDIR}/) '
      'nor a checkpoint step directory.')


def load_model(
    directory: str | os.PathLike[str]
) -> tuple[PyTree, PyTree, np.ndarray | jax.Array | None, dict[str, Any]]:
  """Loads (params, constants, puzzle_table, model_config).

  `directory` may be a model export, a training workdir (its latest checkpoint
  is used), its `checkpoints` directory, or one training step directory. From a
  training checkpoint the EMA parameters are returned when the state has them.

  Raises:
    FileNotFoundError: naming the directory and what was expected in it.
  """
  path = absolute_path(directory)
  if (path / MODEL_CONFIG_FILE).exists():
    verify_checksums(path)
    arrays = _restore_here(path / MODEL_ARRAYS_SUBDIR)
    config = json.loads((path / MODEL_CONFIG_FILE).read_text())
    return (arrays['params'], arrays.get('constants'),
            arrays.get('puzzle_table'), config)

  step_dir = epath.Path(checkpoint_step_directory(path))
  state = _restore_here(step_dir / STATE_ITEM)
  metadata = json.loads((step_dir / METADATA_ITEM / 'metadata').read_text())
  for key in ('params', 'puzzle_table'):
    if key not in state:
      raise KeyError(f'Checkpoint {os.fspath(step_dir)!r} has no {key!r} in '
                     f'its state (keys: {sorted(state)}).')
  ema_params = state.get('ema_params')
  params = ema_params if ema_params is not None else state['params']
  config = metadata.get('model_config') or {}
  if not config:
    logging.warning('Checkpoint %s stores no model configuration.',
                    os.fspath(step_dir))
  logging.info('Loaded %s parameters from %s.',
               'EMA' if ema_params is not None else 'raw', os.fspath(step_dir))
  return params, state.get('constants'), state['puzzle_table'], config

r"""Fingerprints of the programs that training hands to XLA; has the program changed?

  python -m experiments.program_fingerprint --config=sudoku_extreme_mlp [--batch=768] \
      [--devices=1] [--config.model.rms_norm_eps=1e-6 ...] [--compare=FILE]
  python -m experiments.program_fingerprint --hlo_file=DUMP.mlir [--compare=FILE]

Lowers (neither compiles nor runs, and reads no data) the jitted state initialisation and
train step of the config with abstract inputs of the training run's shapes, dtypes and
shardings, for this machine's platform or `--platform` (`cuda` from a CPU: JAX lowers some
operations per platform, random bits for one), and prints one JSON line per function:

  exact      SHA-256 of the StableHLO text without locations, result paths, module and
             private function names: equal means XLA receives the same program, instruction
             order included. XLA's GPU compilation (fusion, kernel choice) depends on that
             order, so only an equal `exact` promises bit-identical GPU results.
  structure  a hash of the dataflow graph that ignores instruction order: each operation
             is hashed from its name, result types, attributes and its operands' hashes,
             with function calls inlined. Equal means the same computation.
  op_counts  operations by name, calls inlined.

`--compare=FILE` (an earlier output) prints per function `same program`, `same computation,
different order` or `different computation` and exits with status 1 on the last.
`--hlo_file` fingerprints StableHLO text files instead (for example the `*_compile.mlir`
files that `JAX_DUMP_IR_TO=DIR` writes during a run); their lines are named by the module.
Fingerprints depend on the JAX version: compare lines made with the same one.
"""

import collections
import dataclasses
import functools
import hashlib
import json
import os
import re
from typing import Any, Iterable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from experiments import cli
from tiny_recursive import config_validation
from tiny_recursive import model as model_lib
from tiny_recursive import sharding
from tiny_recursive import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config name or path.')
_BATCH = flags.DEFINE_integer('batch', 0, "Global batch size (default: the config's).")
_DEVICES = flags.DEFINE_integer(
    'devices', 1, 'Devices of the mesh: the first N (on a CPU, N host devices are made).')
_NUM_IDS = flags.DEFINE_integer(
    'num_puzzle_identifiers', 0,
    "Rows of the puzzle-embedding table (default: the data set's, see DATA_NUMBERS).")
_SCHEDULE_STEPS = flags.DEFINE_integer(
    'schedule_steps', 0,
    'Length of the learning-rate schedules (default: what the trainer derives from the '
    "config and the data set's training puzzles).")
_PLATFORM = flags.DEFINE_enum(
    'platform', None, ['cpu', 'cuda', 'rocm', 'tpu'],
    "Lower for this platform (default: this machine's). Code that picks an implementation "
    "by the machine's backend (model.attention_impl='auto') still follows this machine.")
_COMPARE = flags.DEFINE_string(
    'compare', None, 'An earlier output of this program: print a verdict per function.')
_HLO_FILES = flags.DEFINE_multi_string(
    'hlo_file', None, 'Fingerprint these StableHLO text files instead of lowering a config.')

# Function attributes that only name things (pytree paths of the results and arguments).
DEBUG_ATTRIBUTES = frozenset({'jax.result_info', 'jax.arg_info'})
VERDICTS = ('same program', 'same computation, different order', 'different computation')
EXIT_DIFFERENT = 1


# --- What the trainer takes from the data set -------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataNumbers:
  """The numbers a run takes from its training data (`trainer.run_numbers`)."""
  num_puzzle_identifiers: int  # Blank id 0 included.
  total_groups: int  # Training puzzles (ARC: tasks).
  mean_examples_per_puzzle: float


# Measured on the built data sets of the shipped configs; ARC's identifiers hold for
# data.num_augmentations = 1000 and data.augmentation_seed = 0 only.
DATA_NUMBERS = {
    ('sudoku_extreme', '1k'): DataNumbers(1, 1000, 1.0),
    ('sudoku_extreme', 'sample'): DataNumbers(1, 2000, 1.0),
    ('maze_hard', 'hub'): DataNumbers(1, 1000, 1.0),
    ('maze_hard', 'generated'): DataNumbers(1, 1000, 1.0),
    ('arc_agi', 'arc_agi_1'): DataNumbers(876_410, 960, 3988 / 960),
}


def _known_data_numbers(config: ml_collections.ConfigDict) -> DataNumbers | None:
  data = config.data
  numbers = DATA_NUMBERS.get((data.name, data.builder_config))
  if numbers is not None and data.name == 'arc_agi' and (
      data.num_augmentations != 1000 or data.augmentation_seed != 0):
    return dataclasses.replace(numbers, num_puzzle_identifiers=0)  # Unknown.
  return numbers


def schedule_steps(config: ml_collections.ConfigDict, numbers: DataNumbers) -> int:
  """`trainer.run_numbers`'s schedule length: epochs * groups * mean examples / batch."""
  t = config.train
  return int(t.epochs * numbers.total_groups * numbers.mean_examples_per_puzzle /
             t.global_batch_size)


def resolve_numbers(config: ml_collections.ConfigDict, num_puzzle_identifiers: int,
                    steps: int) -> tuple[int, int]:
  """(num_puzzle_identifiers, schedule_steps): the values given (> 0), else the data set's."""
  if num_puzzle_identifiers < 0 or steps < 0:
    raise ValueError('--num_puzzle_identifiers and --schedule_steps must be positive.')
  known = _known_data_numbers(config)
  if (not num_puzzle_identifiers and not (known and known.num_puzzle_identifiers)) or (
      not steps and not known):
    raise ValueError(
        f'{config.data.name}/{config.data.builder_config}: the numbers of its data with this '
        'config are not known here; give --num_puzzle_identifiers and --schedule_steps.')
  return (num_puzzle_identifiers or known.num_puzzle_identifiers,
          steps or schedule_steps(config, known))


# --- Lowering ----------------------------------------------------------------------------


def make_mesh(num_devices: int) -> jax.sharding.Mesh:
  """The trainer's one-axis mesh over the first `num_devices` devices (built here rather
  than by sharding.create_mesh, which took no devices before 2026-11-30)."""
  devices = jax.devices()
  if num_devices < 1 or num_devices > len(devices):
    raise ValueError(f'--devices={num_devices}: expected 1 to {len(devices)} '
                     f'({jax.default_backend()} devices here).')
  return jax.sharding.Mesh(np.asarray(devices[:num_devices]), (sharding.DATA_AXIS,))


def _with_shardings(tree: Any, shardings: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def abstract_batch(config: ml_collections.ConfigDict,
                   mesh: jax.sharding.Mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The shapes, dtypes and sharding of a training batch (the pipeline's int32 arrays)."""
  rows, seq_len = config.train.global_batch_size, config.data.seq_len
  batch = sharding.batch_sharded(mesh)
  return {'inputs': jax.ShapeDtypeStruct((rows, seq_len), jnp.int32, sharding=batch),
          'labels': jax.ShapeDtypeStruct((rows, seq_len), jnp.int32, sharding=batch),
          'puzzle_identifiers': jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=batch)}


def _lower(jitted: Any, *args: Any, platform: str | None = None) -> str:
  """StableHLO text of `jitted` on `args`, for `platform` (default: this machine's)."""
  if platform is None:
    return jitted.lower(*args).as_text()
  return jitted.trace(*args).lower(lowering_platforms=(platform,)).as_text()


@dataclasses.dataclass(frozen=True)
class AbstractTraining:
  """The trainer's jitted state initialisation and train step with abstract inputs."""
  model: model_lib.RecursiveModel
  init: Any  # jitted: key -> state
  step: Any  # jitted: (state, batch) -> (state, metrics)
  key: jax.ShapeDtypeStruct
  state: Any  # ShapeDtypeStructs with the state's shardings
  batch: dict[str, jax.ShapeDtypeStruct]


def abstract_training(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                      num_puzzle_identifiers: int, steps: int) -> AbstractTraining:
  """The functions training jits, jitted as the trainer jits them, and abstract inputs of
  the run's shapes, dtypes and shardings (nothing is allocated)."""
  model = model_lib.build_model(config.model, seq_len=config.data.seq_len,
                                vocab_size=config.data.vocab_size,
                                num_puzzle_identifiers=num_puzzle_identifiers)
  schedules = train.make_schedules(config, steps)
  tx = train.make_optimizer(config, schedules)
  init = functools.partial(train.create_train_state, model, tx, config)
  key = jax.eval_shape(jax.random.key, config.seed)
  state = jax.eval_shape(init, key)
  state_sharding = train.state_shardings(state, mesh)
  return AbstractTraining(
      model=model, init=jax.jit(init, out_shardings=state_sharding),
      step=train.jit_train_step(model, tx, schedules, config, mesh, state_sharding), key=key,
      state=_with_shardings(state, state_sharding), batch=abstract_batch(config, mesh))


def lower_training(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                   num_puzzle_identifiers: int, steps: int,
                   platform: str | None = None) -> list[str]:
  """StableHLO text of the state initialisation and of the train step, jitted as the trainer
  jits them (modules jit_create_train_state and jit_train_step)."""
  run = abstract_training(config, mesh, num_puzzle_identifiers, steps)
  return [_lower(run.init, run.key, platform=platform),
          _lower(run.step, run.state, run.batch, platform=platform)]


# --- Hashing StableHLO -------------------------------------------------------------------


def _mlir() -> tuple[Any, Any]:
  """JAX's MLIR bindings and a context with its dialects (JAX has no public API for them)."""
  from jax._src.interpreters import mlir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  return ir, mlir.make_ir_context()


def _digest(*parts: str) -> str:
  return hashlib.sha256('\x1f'.join(parts).encode()).hexdigest()


def _named_attributes(attributes: Any) -> list[Any]:
  """The NamedAttributes of an operation's attributes or of a DictAttr, in order."""
  return [attributes[i] for i in range(len(attributes))]


def _symbol_name(op: Any, ir: Any) -> str:
  return ir.StringAttr(op.attributes['sym_name']).value


def _functions(module: Any, ir: Any) -> dict[str, Any]:
  return {_symbol_name(op, ir): op for op in module.body.operations
          if op.operation.name == 'func.func'}


def _strip_debug_attributes(function: Any, ir: Any) -> None:
  """Drops DEBUG_ATTRIBUTES from the argument and result attributes of `function`."""
  for key in ('arg_attrs', 'res_attrs'):
    if key not in function.attributes:
      continue
    kept = [ir.DictAttr.get({a.name: a.attr for a in _named_attributes(ir.DictAttr(d))
                             if a.name not in DEBUG_ATTRIBUTES})
            for d in ir.ArrayAttr(function.attributes[key])]
    function.attributes[key] = ir.ArrayAttr.get(kept)


def _rename_private_functions(module: Any, ir: Any) -> None:
  """Names the private functions f0, f1, ... in their order in the module (JAX names them
  after the Python function and numbers them in the order of lowering: `_where_13`)."""
  private = [op for op in module.body.operations if op.operation.name == 'func.func'
             and 'sym_visibility' in op.attributes
             and ir.StringAttr(op.attributes['sym_visibility']).value == 'private']
  for prefix in ('fingerprint.tmp.', 'f'):  # Through unused names: no clash on the way.
    for i, function in enumerate(private):
      ir.SymbolTable.replace_all_symbol_uses(_symbol_name(function, ir), f'{prefix}{i}',
                                             module.operation)
      ir.SymbolTable.set_symbol_name(function, f'{prefix}{i}')


def parse_module(text: str, source: str, ir: Any) -> tuple[Any, str]:
  """(module, module name) of StableHLO text (inside JAX's MLIR context), with the names
  that only name things (module, private functions, result paths) dropped or canonical."""
  try:
    module = ir.Module.parse(text)
  except Exception as error:  # pylint: disable=broad-except
    detail = ' '.join(line.strip() for line in str(error).splitlines()[:3])
    raise ValueError(f'{source}: not a StableHLO module ({detail})') from None
  name = ''
  if 'sym_name' in module.operation.attributes:
    name = _symbol_name(module.operation, ir)
    del module.operation.attributes['sym_name']
  for function in _functions(module, ir).values():
    _strip_debug_attributes(function, ir)
  _rename_private_functions(module, ir)
  return module, name


def canonical_text(module: Any) -> str:
  """The module printed without locations (what `exact` hashes)."""
  return module.operation.get_asm(enable_debug_info=False)


class _Summary:
  """An order-insensitive multiset of operation hashes (a sum modulo 2**256) and counts."""

  def __init__(self):
    self.total = 0
    self.counts = collections.Counter()

  def add(self, op_hash: str, name: str) -> None:
    self.total = (self.total + int(op_hash, 16)) % 2**256
    self.counts[name] += 1

  def extend(self, other: '_Summary') -> None:
    self.total = (self.total + other.total) % 2**256
    self.counts.update(other.counts)

  def digest(self) -> str:
    return f'{self.total:064x}'


class StructureHasher:
  """Order-insensitive hashes of a module's dataflow graph, function calls inlined."""

  def __init__(self, module: Any, ir: Any):
    self.module = module
    self.ir = ir
    self.functions = _functions(module, ir)
    self._calls: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], _Summary]] = {}
    self._referenced: dict[str, str] = {}

  def call(self, name: str, arguments: tuple[str, ...]) -> tuple[tuple[str, ...], _Summary]:
    """(result hashes, summary of its operations) of function `name` on `arguments`."""
    key = (name, arguments)
    if key not in self._calls:
      block = self.functions[name].regions[0].blocks[0]
      values = dict(zip(block.arguments, arguments))
      summary = _Summary()
      results = self._block(block, values, summary, depth=0)
      self._calls[key] = (results, summary)
    return self._calls[key]

  def _referenced_function(self, name: str) -> str:
    """A function named in an attribute rather than called: hashed on placeholders."""
    if name not in self._referenced:
      arguments = self.functions[name].regions[0].blocks[0].arguments
      results, summary = self.call(
          name, tuple(_digest('param', str(i), str(a.type)) for i, a in enumerate(arguments)))
      self._referenced[name] = _digest('function', summary.digest(), *results)
    return self._referenced[name]

  def _symbols(self, match: re.Match) -> str:
    name = match.group(1)
    return '@' + self._referenced_function(name) if name in self.functions else match.group(0)

  def attributes(self, op: Any) -> list[str]:
    """'name=value' of the attributes of `op`, sorted, functions named by their hash."""
    parts = []
    for attribute in sorted(_named_attributes(op.attributes), key=lambda a: a.name):
      if attribute.name not in DEBUG_ATTRIBUTES:
        text = str(attribute.attr)
        if '@' in text:
          text = re.sub(r'@([\w.$-]+)', self._symbols, text)
        parts.append(f'{attribute.name}={text}')
    return parts

  def _block(self, block: Any, values: dict[Any, str], summary: _Summary,
             depth: int) -> tuple[str, ...]:
    """Hashes the operations of `block` into `summary`; returns what `func.return` returns."""
    returned: tuple[str, ...] = ()
    for op in block.operations:
      op = op.operation
      operands = tuple(values[v] for v in op.operands)
      if op.name == 'func.return':
        returned = operands
        continue
      if op.name == 'func.call':
        callee = self.ir.FlatSymbolRefAttr(op.attributes['callee']).value
        results, called = self.call(callee, operands)
        summary.extend(called)
      else:
        regions = [self._region(region, values, depth + 1) for region in op.regions]
        op_hash = _digest('op', op.name, *(str(r.type) for r in op.results),
                          *self.attributes(op), 'operands', *operands, 'regions', *regions)
        summary.add(op_hash, op.name)
        results = tuple(_digest(op_hash, str(i)) for i in range(len(op.results)))
      values.update(zip(op.results, results))
    return returned

  def _region(self, region: Any, values: dict[Any, str], depth: int) -> str:
    summary = _Summary()
    for b, block in enumerate(region.blocks):
      for i, argument in enumerate(block.arguments):
        values[argument] = _digest('block-argument', str(depth), str(b), str(i),
                                   str(argument.type))
      self._block(block, values, summary, depth)
    return _digest('region', summary.digest())

  def program(self) -> tuple[str, collections.Counter]:
    """(structure hash, operation counts) of the module's public function `main`."""
    main = self.functions.get('main')
    if main is None:
      raise ValueError('the module has no function main.')
    arguments = main.regions[0].blocks[0].arguments
    arg_attrs = ([str(a) for a in self.ir.ArrayAttr(main.attributes['arg_attrs'])]
                 if 'arg_attrs' in main.attributes else [''] * len(arguments))
    results, summary = self.call('main', tuple(
        _digest('argument', str(i), str(argument.type), attrs)
        for i, (argument, attrs) in enumerate(zip(arguments, arg_attrs))))
    others = sorted(_digest(op.operation.name, *self.attributes(op.operation))
                    for op in self.module.body.operations
                    if op.operation.name != 'func.func')
    res_attrs = str(main.attributes['res_attrs']) if 'res_attrs' in main.attributes else ''
    structure = _digest('program', *self.attributes(self.module.operation), *others,
                        summary.digest(), 'results', *results, res_attrs)
    return structure, summary.counts


def fingerprint(text: str, source: str = 'the StableHLO text') -> dict[str, Any]:
  """The JSON line of a StableHLO module, named by the module (`jit_` dropped)."""
  ir, context = _mlir()
  with context:
    module, module_name = parse_module(text, source, ir)
    structure, counts = StructureHasher(module, ir).program()
    exact = hashlib.sha256(canonical_text(module).encode()).hexdigest()
  return {'name': re.sub(r'^jit_', '', module_name) or source,
          'exact': exact,
          'structure': structure,
          'num_ops': sum(counts.values()),
          'op_counts': dict(sorted(counts.items())),
          'jax': jax.__version__}


def fingerprint_file(path: str) -> dict[str, Any]:
  """The JSON line of a StableHLO text file (a `JAX_DUMP_IR_TO` dump, for example)."""
  with open(path, encoding='utf-8') as f:
    return fingerprint(f.read(), source=path)


# --- Comparing ---------------------------------------------------------------------------


def read_fingerprints(path: str) -> dict[str, dict[str, Any]]:
  """The lines of an earlier output by function name; ValueError names a malformed line."""
  found = {}
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        row = None
      if not isinstance(row, dict) or not all(
          isinstance(row.get(key), str) for key in ('name', 'exact', 'structure')):
        raise ValueError(f'{path}:{number}: expected a JSON object with the strings name, '
                         'exact and structure (a line of this program\'s output).')
      if row['name'] in found:
        raise ValueError(f'{path}:{number}: a second line for {row["name"]!r}.')
      found[row['name']] = row
  if not found:
    raise ValueError(f'{path}: no fingerprint lines.')
  return found


def verdict(previous: dict[str, Any], current: dict[str, Any]) -> str:
  """One of VERDICTS for two lines of the same function."""
  if previous['exact'] == current['exact']:
    return VERDICTS[0]
  if previous['structure'] == current['structure']:
    return VERDICTS[1]
  return VERDICTS[2]


def count_differences(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """'name: before -> after' for the operations whose counts differ."""
  before, after = previous.get('op_counts', {}), current.get('op_counts', {})
  return [f'{name}: {before.get(name, 0)} -> {after.get(name, 0)}'
          for name in sorted(set(before) | set(after))
          if before.get(name, 0) != after.get(name, 0)]


def compare(previous: dict[str, dict[str, Any]], path: str,
            fingerprints: Iterable[dict[str, Any]]) -> tuple[list[str], bool]:
  """(report lines, whether any computation differs) against an earlier output."""
  lines, differs = [], False
  for current in fingerprints:
    name = current['name']
    if name not in previous:
      raise ValueError(f'{path}: no line for {name!r} (it has {sorted(previous)}).')
    before = previous[name]
    result = verdict(before, current)
    lines.append(f'{name}: {result}')
    if result == VERDICTS[2]:
      differs = True
      lines.extend(f'  {line}' for line in count_differences(before, current))
    if before.get('jax', current['jax']) != current['jax']:
      lines.append(f"  (made with jax {before['jax']} and {current['jax']}: not comparable)")
  return lines, differs


# --- Entry point -------------------------------------------------------------------------


def _training_config() -> ml_collections.ConfigDict:
  """The config of the flags, with --batch applied and checked as the trainer checks it."""
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('Give --config=NAME (or --hlo_file=PATH).')
  if _DEVICES.value < 1:
    raise ValueError(f'--devices={_DEVICES.value}: expected at least 1.')
  if _BATCH.value < 0:
    raise ValueError(f'--batch={_BATCH.value}: expected a positive global batch size.')
  if _BATCH.value:
    config.train.global_batch_size = _BATCH.value
  config_validation.validate(config)
  if config.train.global_batch_size % _DEVICES.value:
    raise ValueError(f'config.train.global_batch_size = {config.train.global_batch_size} is '
                     f'not divisible by --devices={_DEVICES.value}.')
  return config


def _request_cpu_devices(count: int) -> None:
  """Lets a CPU backend show `count` devices (before anything initialises it)."""
  if count > 1 and 'xla_force_host_platform_device_count' not in os.environ.get(
      'XLA_FLAGS', ''):
    jax.config.update('jax_num_cpu_devices', count)


def fingerprints_of_config() -> list[dict[str, Any]]:
  """The lines of the config given by the flags."""
  _request_cpu_devices(_DEVICES.value)
  config = _training_config()
  num_ids, steps = resolve_numbers(config, _NUM_IDS.value, _SCHEDULE_STEPS.value)
  texts = lower_training(config, make_mesh(_DEVICES.value), num_ids, steps, _PLATFORM.value)
  return [fingerprint(text) for text in texts]


def main(argv: list[str]) -> int:
  cli.no_positional_arguments(argv)
  if _HLO_FILES.value and _CONFIG.value is not None:
    raise app.UsageError('Give either --config or --hlo_file, not both.')
  previous = read_fingerprints(_COMPARE.value) if _COMPARE.value else None
  if _HLO_FILES.value:
    results = [fingerprint_file(path) for path in _HLO_FILES.value]
  else:
    results = fingerprints_of_config()
  if previous is None:
    for row in results:
      print(json.dumps(row), flush=True)
    return 0
  lines, differs = compare(previous, _COMPARE.value, results)
  print('\n'.join(lines), flush=True)
  return EXIT_DIFFERENT if differs else 0


if __name__ == '__main__':
  cli.run(main)

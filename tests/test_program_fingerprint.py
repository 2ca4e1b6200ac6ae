"""Tests of experiments/program_fingerprint.py: the hashes on hand-written programs, the
lowering of the `tiny` config, the data numbers against the trainer's, and the entry point
(verdicts, exit statuses, a malformed file, and agreement with a real run's program)."""

import json
import pathlib
import subprocess

import jax
import jax.numpy as jnp
import pytest

from experiments import config_loading
from experiments import program_fingerprint as fp
from tests import entry_point
from tests import test_cli
from tiny_recursive import trainer
from tiny_recursive.data import pipeline

X = jax.ShapeDtypeStruct((4, 8), jnp.float32)


def lowered(function, *args: jax.ShapeDtypeStruct, debug_info: bool = False) -> str:
  return jax.jit(function).lower(*args).as_text(debug_info=debug_info)


def sin_then_cos(x, y):
  a = jnp.sin(x)
  b = jnp.cos(y)
  return a * b


def cos_then_sin(x, y):
  b = jnp.cos(y)
  a = jnp.sin(x)
  return a * b


def sin_called(x, y):
  return jax.jit(jnp.sin)(x) * jnp.cos(y)


def sin_plus_cos(x, y):
  return jnp.sin(x) + jnp.cos(y)


def minus(x, y):
  return x - y


def fingerprint_of(function, *args: jax.ShapeDtypeStruct, **kwargs) -> dict:
  return fp.fingerprint(lowered(function, *args, **kwargs))


# --- The hashes --------------------------------------------------------------------------


def test_reordered_independent_operations_keep_structure_and_change_exact():
  first, second = lowered(sin_then_cos, X, X), lowered(cos_then_sin, X, X)
  assert first.index('stablehlo.sine') < first.index('stablehlo.cosine')
  assert second.index('stablehlo.cosine') < second.index('stablehlo.sine')
  a, b = fp.fingerprint(first), fp.fingerprint(second)
  assert a['structure'] == b['structure']
  assert a['exact'] != b['exact']
  assert a['op_counts'] == b['op_counts']
  assert fp.verdict(a, b) == 'same computation, different order'


def test_calls_are_inlined_in_the_structure():
  called = lowered(sin_called, X, X)
  assert 'call @' in called
  a, b = fingerprint_of(sin_then_cos, X, X), fp.fingerprint(called)
  assert a['structure'] == b['structure'] and a['exact'] != b['exact']
  assert 'func.call' not in b['op_counts']


def test_a_different_computation_changes_both_hashes():
  a, b = fingerprint_of(sin_then_cos, X, X), fingerprint_of(sin_plus_cos, X, X)
  assert a['structure'] != b['structure'] and a['exact'] != b['exact']
  assert fp.verdict(a, b) == 'different computation'
  assert fp.count_differences(a, b) == ['stablehlo.add: 0 -> 1', 'stablehlo.multiply: 1 -> 0']


def test_operand_order_and_shapes_count():
  assert fingerprint_of(minus, X, X)['structure'] != fingerprint_of(
      lambda x, y: y - x, X, X)['structure']
  wide = jax.ShapeDtypeStruct((4, 9), jnp.float32)
  assert fingerprint_of(minus, X, X)['structure'] != fingerprint_of(minus, wide, wide)[
      'structure']


def test_names_and_locations_are_left_out():
  plain = fingerprint_of(sin_then_cos, X, X)
  assert fingerprint_of(sin_then_cos, X, X, debug_info=True) == plain
  renamed = fingerprint_of(lambda x, y: jnp.sin(x) * jnp.cos(y), X, X)
  assert (renamed['exact'], renamed['structure']) == (plain['exact'], plain['structure'])
  assert plain['name'] == 'sin_then_cos'


def test_a_file_is_fingerprinted_like_its_text(tmp_path):
  text = lowered(sin_then_cos, X, X, debug_info=True)
  path = tmp_path / 'dump.mlir'
  path.write_text(text)
  assert fp.fingerprint_file(str(path)) == fp.fingerprint(text)
  path.write_text('not a module\n')
  with pytest.raises(ValueError, match='dump.mlir: not a StableHLO module'):
    fp.fingerprint_file(str(path))


# --- Lowering the training functions -----------------------------------------------------


def tiny_fingerprints(**overrides) -> dict[str, dict]:
  """{name: line} of the tiny config lowered on one device, with `overrides` applied."""
  config = config_loading.load_config('tiny')
  config.update_from_flattened_dict(overrides)
  num_ids, steps = fp.resolve_numbers(config, 0, 0)
  texts = fp.lower_training(config, fp.make_mesh(1), num_ids, steps)
  return {row['name']: row for row in map(fp.fingerprint, texts)}


@pytest.fixture(name='tiny_lines', scope='module')
def fixture_tiny_lines() -> dict[str, dict]:
  return tiny_fingerprints()


def test_the_same_config_gives_the_same_program(tiny_lines):
  assert sorted(tiny_lines) == ['create_train_state', 'train_step']
  again = tiny_fingerprints()
  assert {name: row['exact'] for name, row in again.items()} == {
      name: row['exact'] for name, row in tiny_lines.items()}


@pytest.mark.parametrize('override', [{'model.rms_norm_eps': 1e-6}, {'model.hidden_size': 48}])
def test_a_change_of_numerics_changes_the_structure(tiny_lines, override):
  changed = tiny_fingerprints(**override)
  assert changed['train_step']['structure'] != tiny_lines['train_step']['structure']
  assert fp.verdict(tiny_lines['train_step'], changed['train_step']) == 'different computation'


def test_batch_schedule_and_table_size_reach_the_program(tiny_lines):
  assert tiny_fingerprints(**{'train.global_batch_size': 8})['train_step'][
      'structure'] != tiny_lines['train_step']['structure']
  config = config_loading.load_config('tiny')
  for num_ids, steps in ((2, 0), (0, 251)):
    numbers = fp.resolve_numbers(config, num_ids, steps)
    texts = fp.lower_training(config, fp.make_mesh(1), *numbers)
    assert fp.fingerprint(texts[1])['structure'] != tiny_lines['train_step']['structure']


def test_lowering_for_another_platform(tiny_lines):
  config = config_loading.load_config('tiny')
  texts = fp.lower_training(config, fp.make_mesh(1), *fp.resolve_numbers(config, 0, 0),
                            platform='cuda')
  cuda = {row['name']: row for row in map(fp.fingerprint, texts)}
  # JAX lowers random-bit generation per platform: the initialisation draws weights.
  assert cuda['create_train_state']['exact'] != tiny_lines['create_train_state']['exact']


# --- The data numbers --------------------------------------------------------------------


def test_the_sample_numbers_are_the_trainers(shared_dirs):
  config = config_loading.load_config('tiny')
  config.data.data_dir = shared_dirs['data_dir']
  train_split, test_split = trainer.load_splits(config)
  pipes = pipeline.build_pipelines(config, train_split, test_split)
  numbers = trainer.run_numbers(config, pipes)
  assert fp.resolve_numbers(config, 0, 0) == (numbers.num_puzzle_identifiers,
                                              numbers.schedule_steps)


@pytest.mark.parametrize('name', ['sudoku_extreme_mlp', 'maze_hard', 'arc_agi1'])
def test_the_schedule_formula_is_the_trainers(name):
  config = config_loading.load_config(name)
  known = fp.DATA_NUMBERS[(config.data.name, config.data.builder_config)]
  pipes = pipeline.Pipelines(eval=None, seq_len=config.data.seq_len,
                             num_puzzle_identifiers=known.num_puzzle_identifiers,
                             total_groups=known.total_groups,
                             mean_examples_per_puzzle=known.mean_examples_per_puzzle)
  assert fp.schedule_steps(config, known) == trainer.run_numbers(config, pipes).schedule_steps


def test_unknown_data_numbers_ask_for_the_flags():
  config = config_loading.load_config('arc_agi2')
  with pytest.raises(ValueError, match='give --num_puzzle_identifiers and --schedule_steps'):
    fp.resolve_numbers(config, 0, 0)
  assert fp.resolve_numbers(config, 7, 9) == (7, 9)
  config = config_loading.load_config('arc_agi1')
  assert fp.resolve_numbers(config, 0, 0) == (876_410, 519_270)
  config.data.num_augmentations = 10
  with pytest.raises(ValueError, match='not known here'):
    fp.resolve_numbers(config, 0, 0)


# --- The entry point ---------------------------------------------------------------------


def run_tool(*args: str) -> subprocess.CompletedProcess:
  return entry_point.run_module('experiments.program_fingerprint', *args)


def lines_of(result: subprocess.CompletedProcess) -> list[dict]:
  assert result.returncode == 0, result.stderr[-3000:]
  return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(name='tiny_output', scope='module')
def fixture_tiny_output(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp('fingerprints') / 'tiny.jsonl'
  result = run_tool('--config=tiny')
  assert [row['name'] for row in lines_of(result)] == ['create_train_state', 'train_step']
  path.write_text(result.stdout)
  return path


@pytest.mark.slow
def test_compare_same_program(tiny_output):
  result = run_tool('--config=tiny', f'--compare={tiny_output}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.splitlines() == ['create_train_state: same program',
                                        'train_step: same program']


@pytest.mark.slow
def test_compare_different_computation_exits_1(tiny_output):
  result = run_tool('--config=tiny', '--config.model.rms_norm_eps=1e-6',
                    f'--compare={tiny_output}')
  assert result.returncode == 1, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert lines[:2] == ['create_train_state: same program', 'train_step: different computation']


@pytest.mark.slow
def test_compare_files_of_reordered_programs(tmp_path):
  for name, function in (('a', sin_then_cos), ('b', cos_then_sin)):
    (tmp_path / f'{name}.mlir').write_text(
        lowered(function, X, X).replace('@jit_cos_then_sin', '@jit_sin_then_cos'))
  first = run_tool(f'--hlo_file={tmp_path / "a.mlir"}')
  assert [row['name'] for row in lines_of(first)] == ['sin_then_cos']
  (tmp_path / 'a.jsonl').write_text(first.stdout)
  result = run_tool(f'--hlo_file={tmp_path / "b.mlir"}', f'--compare={tmp_path / "a.jsonl"}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.splitlines() == ['sin_then_cos: same computation, different order']


@pytest.mark.slow
def test_a_malformed_file_is_one_error_line_naming_it(tiny_output, tmp_path):
  lines = tiny_output.read_text().splitlines()
  bad = tmp_path / 'bad.jsonl'
  bad.write_text(lines[0] + '\n{"name": "train_step"}\n')
  result = run_tool('--config=tiny', f'--compare={bad}')
  test_cli.assert_one_line_error(result, f'{bad}:2: expected a JSON object')
  bad.write_text(lines[0] + '\n')
  test_cli.assert_one_line_error(run_tool('--config=tiny', f'--compare={bad}'),
                                 f"{bad}: no line for 'train_step'")
  bad.write_text('\n'.join(lines + lines[1:]) + '\n')
  test_cli.assert_one_line_error(run_tool('--config=tiny', f'--compare={bad}'),
                                 f"{bad}:3: a second line for 'train_step'")


@pytest.mark.slow
def test_the_lowered_program_is_the_one_training_compiles(shared_dirs, tiny_output, tmp_path):
  """A real run of the trainer, its programs dumped as JAX hands them to XLA."""
  dump = tmp_path / 'dump'
  env = dict(entry_point.main_env(shared_dirs['cache_dir']), JAX_DUMP_IR_TO=str(dump))
  command = entry_point.main_command(str(tmp_path / 'run'), shared_dirs['data_dir'],
                                     '--config.train.max_steps=1', '--config.eval.max_examples=16')
  result = subprocess.run(command, cwd=entry_point.REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=entry_point.RUN_TIMEOUT_S, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  files = [next(dump.glob(f'*_jit_{name}_compile.mlir'))
           for name in ('create_train_state', 'train_step')]
  compared = run_tool(*(f'--hlo_file={path}' for path in files), f'--compare={tiny_output}')
  assert compared.stdout.splitlines() == ['create_train_state: same program',
                                          'train_step: same program'], compared.stderr[-3000:]

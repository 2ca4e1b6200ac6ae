"""Tests of experiments.solve: input parsing, validity checks, predictions, pictures, the CLI."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest

from experiments import solve
from experiments.configs import tiny
from tests import conftest
from tests import entry_point
from tiny_recursive import act
from tiny_recursive import arc_evaluation
from tiny_recursive import checkpointing
from tiny_recursive import model as model_lib
from tiny_recursive.data import arc_encoding
from tiny_recursive.data import puzzle_sources
from tiny_recursive.data import sources

# A Sudoku-Extreme-style puzzle and its solution.
PUZZLE = ('53..7....6..195....98....6.8...6...34..8.3..17...2...6'
          '.6....28....419..5....8..79')
SOLUTION = ('534678912672195348198342567859761423426853791713924856'
            '961537284287419635345286179')
MAZE_LINES = ['#' * 30] + ['#' + ' ' * 28 + '#' for _ in range(28)] + ['#' * 30]
MAZE_LINES[1] = '#S' + ' ' * 27 + '#'
MAZE_LINES[3] = '#' + ' ' * 4 + 'G' + ' ' * 23 + '#'
ARC_TASK = {'train': [{'input': [[1, 0], [0, 0]], 'output': [[0, 1], [0, 0]]},
                      {'input': [[0, 0], [2, 0]], 'output': [[0, 0], [0, 2]]}],
            'test': [{'input': [[3, 0], [0, 0]], 'output': [[0, 3], [0, 0]]},
                     {'input': [[0, 0, 0], [4, 0, 0]]}]}


def make_config(seq_len: int, vocab_size: int, num_augmentations: int = 2
                ) -> ml_collections.ConfigDict:
  config = tiny.get_config('attention')  # Hidden size 32, float32, 3 steps.
  config.data.seq_len = seq_len
  config.data.vocab_size = vocab_size
  config.data.num_augmentations = num_augmentations
  config.eval.global_batch_size = 4
  return config


def export_random_model(config, directory, num_ids: int = 3, seed: int = 0):
  """Writes a model export with random weights (non-zero Q head); returns the model."""
  model = model_lib.build_model(config.model, seq_len=config.data.seq_len,
                                vocab_size=config.data.vocab_size, num_puzzle_identifiers=num_ids)
  variables = conftest.random_variables(model, seed)
  table = np.random.default_rng(seed).standard_normal(
      (num_ids, config.model.puzzle_emb_ndim)).astype(np.float32)
  checkpointing.save_model(directory, variables['params'], variables['constants'], table,
                           config.model.to_dict())
  return model, variables, table


@pytest.fixture(name='sudoku_export', scope='module')
def fixture_sudoku_export(tmp_path_factory):
  config = make_config(81, 11)
  directory = str(tmp_path_factory.mktemp('export') / 'sudoku')
  return (config, directory) + export_random_model(config, directory)


@pytest.fixture(name='grid900_export', scope='module')
def fixture_grid900_export(tmp_path_factory):
  """Maze (vocab 6) and ARC (vocab 12) exports share one 900-token tiny model each."""
  exports = {}
  for name, vocab in (('maze', 6), ('arc', 12)):
    config = make_config(900, vocab)
    config.model.halt_max_steps = 2
    directory = str(tmp_path_factory.mktemp('export') / name)
    exports[name] = (config, directory) + export_random_model(config, directory, num_ids=5)
  return exports


def reference_run(model, variables, table, inputs, ids, num_steps):
  def run(inputs, ids):
    out = act.run_eval_steps(model, variables['params'], variables['constants'],
                             model.puzzle_rows(jnp.asarray(table), ids), inputs, num_steps,
                             keep_steps=True)
    return {'logits': out.step_logits, 'q_halt_logits': out.step_q_halt, 'preds': out.preds}

  return jax.device_get(jax.jit(run)(inputs, ids))


def gif_frames(path):
  with Image.open(path) as image:
    return image.n_frames


# --- Parsing and validity ------------------------------------------------------------------


def test_parse_sudoku_tokens_and_errors():
  tokens = solve.parse_sudoku(PUZZLE)
  assert tokens.shape == (81,) and tokens.dtype == np.int32
  assert tokens[0] == 6 and tokens[2] == 1  # '5' -> 6; '.' -> blank token 1.
  np.testing.assert_array_equal(solve.parse_sudoku(PUZZLE.replace('.', '0')), tokens)
  with pytest.raises(ValueError, match='expected 81 characters.*got 80'):
    solve.parse_sudoku(PUZZLE[:80])
  with pytest.raises(ValueError, match=r"'x' at position 12 \(row 2, column 3\)"):
    solve.parse_sudoku(PUZZLE[:11] + 'x' + PUZZLE[12:])


def test_sudoku_validity():
  puzzle = solve.parse_sudoku(PUZZLE)
  solution = solve.parse_sudoku(SOLUTION)
  assert solve.sudoku_validity(puzzle, solution)[0]
  # Digits 1 and 2 exchanged: still a valid Sudoku, but the given 1 at (2, 4) is lost.
  relabelled = SOLUTION.translate(str.maketrans('12', '21'))
  valid, reason = solve.sudoku_validity(puzzle, solve.parse_sudoku(relabelled))
  assert not valid and 'contradicts the given at row 2, column 4' in reason
  swapped = SOLUTION[1] + SOLUTION[0] + SOLUTION[2:]
  valid, reason = solve.sudoku_validity(puzzle, solve.parse_sudoku(swapped))
  assert not valid and reason.startswith('not a valid Sudoku: column 1 repeats a digit')
  repeated = '1' + SOLUTION[1:]  # Row 1 holds 1 twice (and a given is contradicted).
  blank_puzzle = solve.parse_sudoku('.' * 81)
  valid, reason = solve.sudoku_validity(blank_puzzle, solve.parse_sudoku(repeated))
  assert not valid and 'repeats a digit' in reason
  valid, reason = solve.sudoku_validity(puzzle, puzzle)
  assert not valid and 'not filled' in reason


def write_maze(path, lines):
  path.write_text('\n'.join(lines) + '\n')
  return str(path)


def test_read_maze_and_errors(tmp_path):
  tokens = solve.read_maze(write_maze(tmp_path / 'm.txt', MAZE_LINES))
  assert tokens.shape == (900,) and tokens[31] == 3 and tokens[0] == 1
  with_path = list(MAZE_LINES)
  with_path[2] = '#o' + ' ' * 27 + '#'  # 'o' reads as open.
  np.testing.assert_array_equal(solve.read_maze(write_maze(tmp_path / 'o.txt', with_path)),
                                tokens)
  short = list(MAZE_LINES)
  short[4] = short[4][:-1]
  with pytest.raises(ValueError, match='line 5 has 29 characters'):
    solve.read_maze(write_maze(tmp_path / 's.txt', short))
  bad = list(MAZE_LINES)
  bad[6] = '#' + ' ' * 9 + 'x' + ' ' * 18 + '#'
  with pytest.raises(ValueError, match="line 7, column 11: character 'x'"):
    solve.read_maze(write_maze(tmp_path / 'b.txt', bad))
  with pytest.raises(ValueError, match='expected 30 lines.*got 29'):
    solve.read_maze(write_maze(tmp_path / 'l.txt', MAZE_LINES[:29]))
  no_goal = [line.replace('G', ' ') for line in MAZE_LINES]
  with pytest.raises(ValueError, match="exactly one 'G', found 0"):
    solve.read_maze(write_maze(tmp_path / 'g.txt', no_goal))


def test_maze_validity(tmp_path):
  maze = solve.read_maze(write_maze(tmp_path / 'm.txt', MAZE_LINES))
  grid = maze.reshape(30, 30).copy()
  # S at (1, 1), G at (3, 5): shortest path has 6 steps, 5 cells between.
  shortest = grid.copy()
  for r, c in ((2, 1), (3, 1), (3, 2), (3, 3), (3, 4)):
    shortest[r, c] = 5
  assert solve.maze_validity(maze, shortest.reshape(-1))[:2] == (True, True)
  detour = shortest.copy()
  detour[3, 2:5] = 2
  for r, c in ((4, 1), (4, 2), (4, 3), (4, 4), (4, 5)):
    detour[r, c] = 5
  is_path, is_shortest, reason = solve.maze_validity(maze, detour.reshape(-1))
  assert is_path and not is_shortest and 'shortest path: 6 steps' in reason
  broken = shortest.copy()
  broken[3, 3] = 2
  assert solve.maze_validity(maze, broken.reshape(-1))[:2] == (False, False)
  wall_moved = shortest.copy()
  wall_moved[0, 0] = 2
  is_path, _, reason = solve.maze_validity(maze, wall_moved.reshape(-1))
  assert not is_path and 'row 1, column 1' in reason


def test_halting_step():
  assert solve.halting_step(np.array([-1.0, 0.0, 0.5, 2.0])) == 3
  assert solve.halting_step(np.array([-1.0, -2.0])) is None
  assert 'did not halt' in solve.halting_line(np.array([-1.0, -2.0]))
  assert '1/2' in solve.halting_line(np.array([1.0, -2.0]))


def test_read_arc_task_forms_and_errors(tmp_path):
  single = tmp_path / 'abc123.json'
  single.write_text(json.dumps(ARC_TASK))
  task = solve.read_arc_task(str(single))
  assert task.task_id == 'abc123' and len(task.train) == 2 and len(task.test_inputs) == 2
  assert task.test_outputs is None  # The second test input has no output.
  kaggle = tmp_path / 'challenges.json'
  kaggle.write_text(json.dumps({'t1': ARC_TASK, 't2': ARC_TASK}))
  assert solve.read_arc_task(str(kaggle), 't2').task_id == 't2'
  with pytest.raises(ValueError, match='pass --task_id'):
    solve.read_arc_task(str(kaggle))
  with pytest.raises(ValueError, match="no task 'zz'"):
    solve.read_arc_task(str(kaggle), 'zz')
  bad = dict(ARC_TASK, train=[{'input': [[1, 11]], 'output': [[0]]}])
  single.write_text(json.dumps(bad))
  with pytest.raises(ValueError, match=r'task abc123.train\[0\].input: cell \(0, 1\) is 11'):
    solve.read_arc_task(str(single))


# --- Solving -------------------------------------------------------------------------------


def test_solve_sudoku_matches_run_eval_steps(sudoku_export, tmp_path):
  config, directory, model, variables, table = sudoku_export
  result = solve.run_solve(config, directory, sudoku=PUZZLE, output_dir=str(tmp_path))
  tokens = solve.parse_sudoku(PUZZLE)
  expected = reference_run(model, variables, table, tokens[None], np.zeros(1, np.int32), 3)
  np.testing.assert_array_equal(result.answers[0], expected['preds'][0])
  np.testing.assert_array_equal(result.step_preds[-1, 0], expected['preds'][0])
  np.testing.assert_array_equal(result.step_preds[:, 0],
                                expected['logits'][:, 0].argmax(-1))
  assert result.halting_steps == [solve.halting_step(expected['q_halt_logits'][:, 0])]
  assert solve.sudoku_text(expected['preds'][0]) in result.report
  assert 'valid: ' in result.report and 'halting step: ' in result.report
  assert result.valid == [solve.sudoku_validity(tokens, expected['preds'][0])[0]]
  assert sorted(os.listdir(tmp_path)) == [solve.PNG_NAME, solve.GIF_NAME]
  assert gif_frames(result.gif_path) == 3
  with Image.open(result.png_path) as image:
    assert image.size[0] > 2 * image.size[1] * 0.8  # Two boards side by side.


def test_solve_steps_flag_and_config_checks(sudoku_export, tmp_path):
  config, directory, *_ = sudoku_export
  result = solve.run_solve(config, directory, sudoku=PUZZLE, steps=5, output_dir=str(tmp_path))
  assert result.step_preds.shape == (5, 1, 81) and gif_frames(result.gif_path) == 5
  with pytest.raises(ValueError, match='--steps must be at least 1'):
    solve.run_solve(config, directory, sudoku=PUZZLE, steps=0, output_dir=str(tmp_path))
  with pytest.raises(ValueError, match='exactly one of'):
    solve.run_solve(config, directory, output_dir=str(tmp_path))
  with pytest.raises(ValueError, match='--vote applies to --arc_task only'):
    solve.run_solve(config, directory, sudoku=PUZZLE, vote=True, output_dir=str(tmp_path))
  other = make_config(81, 11)
  other.model.hidden_size = 64
  with pytest.raises(ValueError, match='model.hidden_size = 32'):
    solve.run_solve(other, directory, sudoku=PUZZLE, output_dir=str(tmp_path))
  with pytest.raises(ValueError, match='--maze needs a config with data.seq_len = 900'):
    solve.solve_maze(config, solve.load_solver(config, directory),
                     write_maze(tmp_path / 'm.txt', MAZE_LINES), str(tmp_path))


def test_solve_maze(grid900_export, tmp_path):
  config, directory, model, variables, table = grid900_export['maze']
  path = write_maze(tmp_path / 'maze.txt', MAZE_LINES)
  out_dir = str(tmp_path / 'out')
  result = solve.run_solve(config, directory, maze=path, output_dir=out_dir)
  tokens = solve.read_maze(path)
  expected = reference_run(model, variables, table, tokens[None], np.zeros(1, np.int32), 2)
  np.testing.assert_array_equal(result.answers[0], expected['preds'][0])
  assert solve.maze_text(expected['preds'][0]) in result.report
  assert 'valid S-G path: ' in result.report
  assert gif_frames(result.gif_path) == 2
  assert sorted(os.listdir(out_dir)) == [solve.PNG_NAME, solve.GIF_NAME]


def test_solve_arc_without_vote_matches_run_eval_steps(grid900_export, tmp_path):
  config, directory, model, variables, table = grid900_export['arc']
  config = config.copy_and_resolve_references()
  config.data.data_dir = str(tmp_path / 'no_data')  # No data set: blank identifiers.
  path = tmp_path / 'task.json'
  path.write_text(json.dumps(ARC_TASK))
  result = solve.run_solve(config, directory, arc_task=str(path), output_dir=str(tmp_path))
  inputs = arc_encoding.encode_grids([np.asarray(t['input']) for t in ARC_TASK['test']])
  expected = reference_run(model, variables, table, inputs, np.zeros(2, np.int32), 2)
  for i in range(2):
    decoded = arc_encoding.decode_grid(expected['preds'][i])
    np.testing.assert_array_equal(result.answers[i], decoded)
    assert solve.arc_text(decoded) in result.report
  assert 'blank puzzle identifier 0' in result.report and 'is not built' in result.report
  assert 'correct: unknown' in result.report  # Test input 2 has no output in the file.
  assert gif_frames(result.gif_path) == 2


def test_solve_arc_vote_equals_accumulator(grid900_export, tmp_path):
  config, directory, model, variables, table = grid900_export['arc']
  config = config.copy_and_resolve_references()
  config.data.num_augmentations = 3
  task_dict = dict(ARC_TASK, test=ARC_TASK['test'][:1])  # Known output: correctness shown.
  path = tmp_path / 'task.json'
  path.write_text(json.dumps(task_dict))
  task = solve.read_arc_task(str(path))
  # A catalogue in which this task is known: identifiers of its versions, not the blank one.
  arc_task = sources.ArcTask(task_id='task', subset='evaluation',
                             pairs=task.train + ((task.test_inputs[0], task.test_outputs[0]),))
  catalog = puzzle_sources.build_arc_catalog([arc_task], [], 3, 0)
  assert catalog.num_identifiers == 5  # Matches the export's 5-row puzzle table.
  result = solve.solve_arc(config, solve.load_solver(config, directory), str(path),
                           str(tmp_path), vote=True, catalog=(catalog, [arc_task]))
  versions = catalog.versions[0]
  assert "identifiers 1.. of the training run" in result.report
  inputs = np.stack([arc_encoding.encode_grid(v.apply(task.test_inputs[0])) for v in versions])
  ids = np.arange(1, 1 + len(versions), dtype=np.int32)
  expected = reference_run(model, variables, table, inputs, ids, 2)
  spec = arc_evaluation.ArcEvalSpec(task_ids=('task',), versions=(versions,), solutions=None)
  accumulator = arc_evaluation.ArcAccumulator(spec)
  n = len(versions)
  accumulator.update({'task_index': np.zeros(n), 'version_index': np.arange(n),
                      'test_index': np.zeros(n)}, expected['preds'],
                     expected['q_halt_logits'][-1])
  top = [grid for grid, _, _ in accumulator.ranked(0, 0) if grid.size][:2]
  assert len(result.attempts[0]) == len(top)
  for got, want in zip(result.attempts[0], top):
    np.testing.assert_array_equal(got, want)
  assert 'attempt 1: ' in result.report and 'correct: ' in result.report
  assert result.valid[0] == any(
      g.shape == (2, 2) and np.array_equal(g, [[0, 3], [0, 0]]) for g in top)


def test_arc_catalog_mismatch_falls_back_to_blank_identifier(tmp_path):
  config = make_config(900, 12, num_augmentations=3)
  path = tmp_path / 'task.json'
  path.write_text(json.dumps(ARC_TASK))
  task = solve.read_arc_task(str(path))
  other = sources.ArcTask(task_id='other', subset='training', pairs=task.train)
  catalog = puzzle_sources.build_arc_catalog([other], [], 3, 0)
  plan = solve.arc_versions(config, task, catalog.num_identifiers, True, (catalog, [other]))
  assert 'not in the data set' in plan.explanation
  assert set(plan.identifiers().tolist()) == {0} and len(plan.versions) == 4
  same_id = sources.ArcTask(task_id='task', subset='training', pairs=task.train[:1] + (
      (task.train[1][0], task.train[0][1]),))  # Same id, one demonstration differs.
  catalog_same_id = puzzle_sources.build_arc_catalog([same_id], [], 3, 0)
  plan = solve.arc_versions(config, task, catalog_same_id.num_identifiers, True,
                            (catalog_same_id, [same_id]))
  assert 'do not hold the demonstration pairs' in plan.explanation
  assert set(plan.identifiers().tolist()) == {0}
  plan = solve.arc_versions(config, task, 99, False, (catalog, [other]))
  assert 'puzzle table has 99 rows' in plan.explanation and len(plan.versions) == 1


@pytest.mark.slow
def test_cli_sudoku(sudoku_export, tmp_path):
  _, directory, model, variables, table = sudoku_export
  out_dir = tmp_path / 'cli'
  command = ['experiments.solve', '--config=tiny', f'--checkpoint={directory}',
             f'--sudoku={PUZZLE}', f'--output_dir={out_dir}']
  process = entry_point.run_module(*command)
  assert process.returncode == 0, process.stderr[-2000:]
  expected = reference_run(model, variables, table, solve.parse_sudoku(PUZZLE)[None],
                           np.zeros(1, np.int32), 3)
  assert solve.sudoku_text(expected['preds'][0]) in process.stdout
  assert 'valid: ' in process.stdout and 'halting step: ' in process.stdout
  assert gif_frames(out_dir / solve.GIF_NAME) == 3
  assert (out_dir / solve.PNG_NAME).is_file()
  bad = entry_point.run_module(*command[:-2], '--sudoku=12x')
  assert bad.returncode != 0 and 'expected 81 characters' in bad.stderr


def test_solve_sudoku_with_trajectories(sudoku_export, tmp_path):
  config, directory, model, variables, table = sudoku_export
  config = make_config(81, 11)
  config.eval.num_steps = 4
  config.eval.num_trajectories = 3
  config.eval.trajectory_noise = 0.2
  result = solve.run_solve(config, directory, sudoku=PUZZLE, output_dir=str(tmp_path))
  assert 'answer after 4 steps, best of 3 trajectories (noise 0.2, seed 0):' in result.report
  assert result.step_preds.shape == (4, 1, 81)
  tokens = solve.parse_sudoku(PUZZLE)
  settings = act.EvalSettings(4, num_trajectories=3, trajectory_noise=0.2)
  expected = jax.device_get(jax.jit(lambda: act.run_eval(
      model, variables['params'], variables['constants'],
      model.puzzle_rows(jnp.asarray(table), jnp.zeros(1, jnp.int32)), jnp.asarray(tokens[None]),
      settings, keep_steps=True))())
  np.testing.assert_array_equal(result.answers[0], expected.preds[0])
  np.testing.assert_array_equal(result.step_preds[:, 0], expected.step_logits[:, 0].argmax(-1))
  # With --steps: the flag wins over eval.num_steps.
  result = solve.run_solve(config, directory, sudoku=PUZZLE, steps=2, output_dir=str(tmp_path))
  assert result.step_preds.shape == (2, 1, 81)

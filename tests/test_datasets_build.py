"""Tests of the TFDS builders (datasets/) and the build command, on committed fixtures."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets import build
from datasets.arc_agi import arc_agi_dataset_builder
from datasets.arc_agi import arc_files
from datasets.maze_hard import maze_hard_dataset_builder
from datasets.sudoku_extreme import hub_csv
from datasets.sudoku_extreme import sudoku_extreme_dataset_builder

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _copy_fixture(name: str, tmp_path) -> str:
  target = os.path.join(tmp_path, f'manual_{name}')
  shutil.copytree(os.path.join(FIXTURES, name), target)
  return target


def _read_csv(path: str) -> list[list[str]]:
  with open(path, newline='') as f:
    return list(csv.reader(f))


def _write_csv(path: str, rows: list[list[str]]) -> None:
  with open(path, 'w', newline='') as f:
    csv.writer(f, lineterminator='\n').writerows(rows)


def _records(name: str, data_dir: str, split: str) -> list[dict]:
  source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  return [source[i] for i in range(len(source))]


# --- Sudoku ---------------------------------------------------------------------------

def _sudoku_tokens(text: str) -> list[int]:
  return [1 if ch == '.' else int(ch) + 1 for ch in text]


def test_sudoku_full_round_trip(tmp_path):
  manual = _copy_fixture('sudoku', tmp_path)
  data_dir = str(tmp_path / 'data')
  build.build('sudoku_extreme', 'full', data_dir, manual)
  for split in ('train', 'test'):
    rows = _read_csv(os.path.join(manual, f'{split}.csv'))[1:]
    expected = sorted((tuple(_sudoku_tokens(q)), tuple(_sudoku_tokens(a)), int(r), s)
                      for s, q, a, r in rows)
    records = _records('sudoku_extreme/full', data_dir, split)
    for r in records:
      assert r['inputs'].dtype == np.int32 and r['inputs'].shape == (81,)
    got = sorted((tuple(r['inputs'].tolist()), tuple(r['labels'].tolist()), int(r['rating']),
                  r['source'].decode()) for r in records)
    assert got == expected
  assert 'tensorflow' not in sys.modules


def test_sudoku_subsample_is_seeded_and_without_replacement():
  first = sudoku_extreme_dataset_builder.subsample_indices(5000, 1000)
  assert np.array_equal(first, sudoku_extreme_dataset_builder.subsample_indices(5000, 1000))
  assert len(np.unique(first)) == 1000 and first.min() >= 0 and first.max() < 5000
  assert np.all(np.diff(first) > 0)
  assert not np.array_equal(first, sudoku_extreme_dataset_builder.subsample_indices(
      5000, 1000, seed=1))
  np.testing.assert_array_equal(sudoku_extreme_dataset_builder.subsample_indices(7, 1000),
                                np.arange(7))


def test_sudoku_1k_takes_subsample_of_train(tmp_path, monkeypatch):
  monkeypatch.setattr(sudoku_extreme_dataset_builder, 'SUBSAMPLE_SIZE', 3)
  manual = _copy_fixture('sudoku', tmp_path)
  data_dir = str(tmp_path / 'data')
  build.build('sudoku_extreme', '1k', data_dir, manual)
  rows = _read_csv(os.path.join(manual, 'train.csv'))[1:]
  chosen = sudoku_extreme_dataset_builder.subsample_indices(len(rows), 3)
  expected = sorted(tuple(_sudoku_tokens(rows[i][2])) for i in chosen)
  got = sorted(tuple(r['labels'].tolist()) for r in _records('sudoku_extreme/1k', data_dir,
                                                              'train'))
  assert got == expected
  assert len(_records('sudoku_extreme/1k', data_dir, 'test')) == 3


def test_sudoku_sample_config_is_easy_and_consistent(tmp_path):
  data_dir = str(tmp_path / 'data')
  build.build('sudoku_extreme', 'sample', data_dir)
  sizes = {'train': 2000, 'test': 200}
  for split, size in sizes.items():
    records = _records('sudoku_extreme/sample', data_dir, split)
    assert len(records) == size
    inputs = np.stack([r['inputs'] for r in records])
    labels = np.stack([r['labels'] for r in records])
    blanks = (inputs == 1).sum(axis=1)
    assert blanks.min() >= 4 and blanks.max() <= 10
    given = inputs != 1
    assert np.all(inputs[given] == labels[given])
    digits = labels.reshape(-1, 9, 9) - 1
    assert np.all(np.sort(digits, axis=2) == np.arange(1, 10))
    assert np.all(np.sort(digits.transpose(0, 2, 1), axis=2) == np.arange(1, 10))


def _sudoku_case(rows: list[list[str]], case: str) -> tuple[list[list[str]], str]:
  """Corrupts data row 2 (file line 3) of a Sudoku CSV; returns rows and expected text."""
  source, question, answer, rating = rows[2]
  if case == 'header':
    rows[0] = ['source', 'puzzle', 'answer', 'rating']
    return rows, r'train\.csv:1: expected the header'
  if case == 'fields':
    rows[2] = [source, question, answer]
  elif case == 'length':
    rows[2] = [source, question[:80], answer, rating]
  elif case == 'char':
    rows[2] = [source, 'x' + question[1:], answer, rating]
  elif case == 'answer_char':
    rows[2] = [source, question, '0' + answer[1:], rating]
  elif case == 'rating':
    rows[2] = [source, question, answer, 'hard']
  elif case == 'rule':
    # Swapping two cells of one row keeps the row valid but breaks two columns.
    a = list(answer)
    a[0], a[1] = a[1], a[0]
    rows[2] = [source, '.' * 81, ''.join(a), rating]
  elif case == 'given':
    given = next(i for i, ch in enumerate(question) if ch != '.')
    q = list(question)
    q[given] = str(int(answer[given]) % 9 + 1)
    rows[2] = [source, ''.join(q), answer, rating]
  messages = {'fields': 'expected 4 comma-separated fields',
              'length': 'question must have 81 characters, got 80',
              'char': "question has characters \\['x'\\]",
              'answer_char': "answer has characters \\['0'\\]",
              'rating': 'rating must be an integer', 'rule': 'answer is not a valid Sudoku: column',
              'given': 'answer contradicts the given'}
  return rows, r'train\.csv:3: ' + messages[case]


@pytest.mark.parametrize(
    'case', ['header', 'fields', 'length', 'char', 'answer_char', 'rating', 'rule', 'given'])
def test_sudoku_bad_input_names_file_and_line_and_leaves_nothing(tmp_path, case):
  manual = _copy_fixture('sudoku', tmp_path)
  path = os.path.join(manual, 'train.csv')
  rows, expected = _sudoku_case(_read_csv(path), case)
  _write_csv(path, rows)
  data_dir = tmp_path / 'data'
  with pytest.raises(hub_csv.DataFormatError, match=expected):
    build.build('sudoku_extreme', 'full', str(data_dir), manual)
  assert os.listdir(data_dir) == []


# --- Maze -----------------------------------------------------------------------------

_MAZE_TOKENS = {'#': 1, ' ': 2, 'S': 3, 'G': 4, 'o': 5}


def test_maze_hub_round_trip(tmp_path):
  manual = _copy_fixture('maze', tmp_path)
  data_dir = str(tmp_path / 'data')
  build.build('maze_hard', 'hub', data_dir, manual)
  for split in ('train', 'test'):
    rows = _read_csv(os.path.join(manual, f'{split}.csv'))[1:]
    expected = sorted((tuple(_MAZE_TOKENS[c] for c in q), tuple(_MAZE_TOKENS[c] for c in a),
                       int(r)) for _, q, a, r in rows)
    got = sorted((tuple(r['inputs'].tolist()), tuple(r['labels'].tolist()), int(r['rating']))
                 for r in _records('maze_hard/hub', data_dir, split))
    assert got == expected


def test_maze_generated_config(tmp_path, monkeypatch):
  monkeypatch.setattr(maze_hard_dataset_builder, 'GENERATED_SIZES', {'train': 3, 'test': 2})
  data_dir = str(tmp_path / 'data')
  build.build('maze_hard', 'generated', data_dir)
  train = _records('maze_hard/generated', data_dir, 'train')
  test = _records('maze_hard/generated', data_dir, 'test')
  assert len(train) == 3 and len(test) == 2
  train_inputs = {r['inputs'].tobytes() for r in train}
  assert not train_inputs & {r['inputs'].tobytes() for r in test}
  for r in train + test:
    path_cells = int((r['labels'] == 5).sum())
    assert int(r['rating']) == path_cells + 1 > 110
    assert np.all(r['inputs'] != 5)


def _maze_case(rows: list[list[str]], case: str) -> tuple[list[list[str]], str]:
  source, question, answer, rating = rows[2]
  q, a = list(question), list(answer)
  if case == 'length':
    rows[2] = [source, question + ' ', answer, rating]
    return rows, 'question must have 900 characters'
  if case == 'char':
    q[q.index(' ')] = '.'
    rows[2] = [source, ''.join(q), answer, rating]
    return rows, "question has characters \\['.'\\]"
  if case == 'two_starts':
    i = next(i for i, ch in enumerate(a) if ch == ' ')
    q[i] = a[i] = 'S'
    rows[2] = [source, ''.join(q), ''.join(a), rating]
    return rows, "question must have exactly one 'S', got 2"
  if case == 'no_path':
    s = q.index('S')
    for n in (s - 30, s + 30, s - 1, s + 1):
      if 0 <= n < 900 and abs(n % 30 - s % 30) <= 1:
        q[n] = a[n] = '#'
    rows[2] = [source, ''.join(q), ''.join(a), rating]
    return rows, 'no path from S to G'
  if case == 'extra_o':
    i = next(i for i, ch in enumerate(a) if ch == ' ')
    a[i] = 'o'
    rows[2] = [source, question, ''.join(a), rating]
    return rows, "the 'o' cells of the answer .* are not a shortest S-G path"
  if case == 'missing_o':
    a[a.index('o')] = ' '
    rows[2] = [source, question, ''.join(a), rating]
    return rows, "the 'o' cells of the answer .* are not a shortest S-G path"
  if case == 'wall_changed':
    a[a.index('#')] = 'o'
    rows[2] = [source, question, ''.join(a), rating]
    return rows, 'answer differs from the question at row .*only open cells may become'
  raise ValueError(case)


@pytest.mark.parametrize(
    'case', ['length', 'char', 'two_starts', 'no_path', 'extra_o', 'missing_o', 'wall_changed'])
def test_maze_bad_input_names_file_and_line(tmp_path, case):
  manual = _copy_fixture('maze', tmp_path)
  path = os.path.join(manual, 'train.csv')
  rows, expected = _maze_case(_read_csv(path), case)
  _write_csv(path, rows)
  data_dir = tmp_path / 'data'
  with pytest.raises(hub_csv.DataFormatError, match=r'train\.csv:3: ' + expected):
    build.build('maze_hard', 'hub', str(data_dir), manual)
  assert os.listdir(data_dir) == []


def test_maze_longer_valid_path_is_rejected(tmp_path):
  """A label path that is a real S-G path but not a shortest one is refused."""
  question = ['#'] * 900
  # Open a 3x5 block with S and G on the middle row: shortest path is straight (4 steps).
  for r in range(1, 4):
    for c in range(1, 6):
      question[r * 30 + c] = ' '
  question[2 * 30 + 1], question[2 * 30 + 5] = 'S', 'G'
  answer = list(question)
  for c in range(1, 6):  # Detour along row 1: S up, right 4, down to G.
    answer[1 * 30 + c] = 'o'
  path = os.path.join(tmp_path, 'train.csv')
  _write_csv(path, [list(hub_csv.EXPECTED_HEADER), ['x', ''.join(question), ''.join(answer), '6']])
  from datasets.maze_hard import validation  # pylint: disable=g-import-not-at-top
  row = next(hub_csv.read_hub_csv(path))
  with pytest.raises(hub_csv.DataFormatError, match=r'train\.csv:2: .*shortest path: 4 steps'):
    validation.parse_row(row)
  straight = list(question)
  for c in range(2, 5):
    straight[2 * 30 + c] = 'o'
  inputs, labels = validation.parse_row(hub_csv.HubRow(path, 2, 'x', ''.join(question),
                                                       ''.join(straight), 4))
  assert int((labels == 5).sum()) == 3 and int((inputs == 5).sum()) == 0


# --- ARC ------------------------------------------------------------------------------

def _load_fixture_json(subset: str, kind: str) -> dict:
  with open(os.path.join(FIXTURES, 'arc', f'arc-agi_{subset}_{kind}.json')) as f:
    return json.load(f)


def _decode(record: dict, key: str) -> list[np.ndarray]:
  shapes = record[f'{key[:-1]}_shapes']  # 'inputs' -> 'input_shapes'.
  return [g[:h, :w] for g, (h, w) in zip(record[key], shapes)]


def test_arc_round_trip_and_split_assignment(tmp_path):
  manual = _copy_fixture('arc', tmp_path)
  data_dir = str(tmp_path / 'data')
  build.build('arc_agi', 'arc_agi_1', data_dir, manual)
  train = {(r['subset'].decode(), r['task_id'].decode()): r
           for r in _records('arc_agi/arc_agi_1', data_dir, 'train')}
  test = {(r['subset'].decode(), r['task_id'].decode()): r
          for r in _records('arc_agi/arc_agi_1', data_dir, 'test')}
  expected_train, expected_test = {}, {}
  for subset in ('training', 'evaluation', 'concept'):
    challenges = _load_fixture_json(subset, 'challenges')
    solutions = _load_fixture_json(subset, 'solutions')
    for task_id, task in challenges.items():
      pairs = [(p['input'], p['output']) for p in task['train']]
      tests = [(p['input'], s) for p, s in zip(task['test'], solutions[task_id])]
      if subset == 'evaluation':
        expected_train[(subset, task_id)] = pairs
        expected_test[(subset, task_id)] = tests
      else:
        expected_train[(subset, task_id)] = pairs + tests
  for got, expected in ((train, expected_train), (test, expected_test)):
    assert sorted(got) == sorted(expected)
    for key, pairs in expected.items():
      inputs, outputs = _decode(got[key], 'inputs'), _decode(got[key], 'outputs')
      assert [g.tolist() for g in inputs] == [p[0] for p in pairs]
      assert [g.tolist() for g in outputs] == [p[1] for p in pairs]
      assert got[key]['inputs'].dtype == np.uint8


def test_arc_agi_2_config_builds(tmp_path):
  data_dir = str(tmp_path / 'data')
  build.build('arc_agi', 'arc_agi_2', data_dir, _copy_fixture('arc', tmp_path))
  assert len(_records('arc_agi/arc_agi_2', data_dir, 'train')) == 2 + 1 + 1
  assert [r['subset'] for r in _records('arc_agi/arc_agi_2', data_dir, 'test')] == [
      b'evaluation2']


def _arc_case(manual: str, case: str) -> str:
  """Corrupts the fixture's training subset; returns the expected message pattern."""
  ch_path = arc_files.challenges_path(manual, 'training')
  so_path = arc_files.solutions_path(manual, 'training')
  challenges, solutions = json.load(open(ch_path)), json.load(open(so_path))
  task_id = sorted(challenges)[1]
  pair = challenges[task_id]['train'][0]
  where = r'arc-agi_training_challenges\.json: task ' + task_id
  if case == 'too_big':
    pair['input'] = [[0] * 31 for _ in range(3)]
    expected = where + r'\.train\[0\]\.input: grid is 3x31'
  elif case == 'colour':
    pair['output'][0][0] = 10
    expected = where + r'\.train\[0\]\.output: cell \(0, 0\) is 10'
  elif case == 'colour_type':
    pair['input'][0][0] = 1.0
    expected = where + r'\.train\[0\]\.input: cell \(0, 0\) is 1\.0'
  elif case == 'ragged':
    pair['input'][1] = pair['input'][1][:-1]
    expected = where + r'\.train\[0\]\.input: ragged grid'
  elif case == 'empty':
    pair['input'] = []
    expected = where + r'\.train\[0\]\.input: expected a non-empty list'
  elif case == 'missing_solution':
    del solutions[task_id]
    expected = r"arc-agi_training_solutions\.json: no solutions for task '" + task_id
  elif case == 'solution_count':
    solutions[task_id] = solutions[task_id] + solutions[task_id]
    expected = r'arc-agi_training_solutions\.json: task ' + task_id + ': expected 1 solution'
  elif case == 'bad_solution':
    solutions[task_id][0] = [[1, 2], [3]]
    expected = r'arc-agi_training_solutions\.json: task ' + task_id + r'\[0\]: ragged grid'
  elif case == 'missing_output':
    del pair['output']
    expected = where + r'\.train\[0\]: missing "output"'
  elif case == 'evaluation_leak':
    evaluation = _load_fixture_json('evaluation', 'challenges')
    eval_id = sorted(evaluation)[0]
    challenges[eval_id] = evaluation[eval_id]
    solutions[eval_id] = _load_fixture_json('evaluation', 'solutions')[eval_id]
    expected = f"task '{eval_id}'.*evaluation subset 'evaluation' also appears in the " \
               "training subset 'training'"
  json.dump(challenges, open(ch_path, 'w'))
  json.dump(solutions, open(so_path, 'w'))
  return expected


@pytest.mark.parametrize('case', ['too_big', 'colour', 'colour_type', 'ragged', 'empty',
                                  'missing_solution', 'solution_count', 'bad_solution',
                                  'missing_output', 'evaluation_leak'])
def test_arc_bad_input_names_file_and_task(tmp_path, case):
  manual = _copy_fixture('arc', tmp_path)
  expected = _arc_case(manual, case)
  data_dir = tmp_path / 'data'
  with pytest.raises(ValueError, match=expected):
    build.build('arc_agi', 'arc_agi_1', str(data_dir), manual)
  assert os.listdir(data_dir) == []


def test_arc_missing_file_is_named(tmp_path):
  manual = _copy_fixture('arc', tmp_path)
  os.remove(arc_files.solutions_path(manual, 'concept'))
  with pytest.raises(FileNotFoundError, match='arc-agi_concept_solutions.json'):
    build.build('arc_agi', 'arc_agi_1', str(tmp_path / 'data'), manual)


def test_arc_github_layout_matches_kaggle_layout(tmp_path):
  """The per-task files of the public repositories read into the same tasks."""
  kaggle = arc_files.load_kaggle_subset(os.path.join(FIXTURES, 'arc'), 'training')
  challenges = _load_fixture_json('training', 'challenges')
  solutions = _load_fixture_json('training', 'solutions')
  directory = tmp_path / 'ARC-AGI-master' / 'data' / 'training'
  directory.mkdir(parents=True)
  for task_id, task in challenges.items():
    body = {'train': task['train'],
            'test': [{'input': p['input'], 'output': s}
                     for p, s in zip(task['test'], solutions[task_id])]}
    (directory / f'{task_id}.json').write_text(json.dumps(body))
  (directory / 'SomethingMinimal.json').write_text('not json')
  _, pattern, _ = arc_agi_dataset_builder.ARCHIVE_SUBSETS['training']
  github = arc_files.load_task_files(str(tmp_path / pattern), 'training', 'Minimal.json')
  assert sorted(github) == sorted(kaggle)
  for task_id, task in kaggle.items():
    for ours, theirs in ((github[task_id].train, task.train), (github[task_id].test, task.test)):
      assert len(ours) == len(theirs)
      for (a_in, a_out), (b_in, b_out) in zip(ours, theirs):
        np.testing.assert_array_equal(a_in, b_in)
        np.testing.assert_array_equal(a_out, b_out)


# --- Build command --------------------------------------------------------------------

def test_build_rejects_unknown_names(tmp_path):
  with pytest.raises(ValueError, match='Unknown data set'):
    build.build('sudoku', 'full', str(tmp_path))
  with pytest.raises(ValueError, match="Unknown config 'huge' of sudoku_extreme"):
    build.build('sudoku_extreme', 'huge', str(tmp_path))
  with pytest.raises(FileNotFoundError, match='is not a directory'):
    build.build('sudoku_extreme', 'full', str(tmp_path), str(tmp_path / 'nowhere'))


def test_build_is_idempotent(tmp_path):
  data_dir = str(tmp_path / 'data')
  target = build.build('sudoku_extreme', 'sample', data_dir)
  info = os.path.join(target, 'dataset_info.json')
  mtime = os.path.getmtime(info)
  assert build.build('sudoku_extreme', 'sample', data_dir) == target
  assert os.path.getmtime(info) == mtime
  assert sorted(os.listdir(data_dir)) == ['sudoku_extreme']


@pytest.mark.slow
def test_build_command_line(tmp_path):
  data_dir = tmp_path / 'data'
  command = [sys.executable, '-m', 'datasets.build', 'maze_hard/hub', f'--data_dir={data_dir}',
             f'--manual_dir={os.path.join(FIXTURES, "maze")}']
  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert 'maze_hard/hub: built in' in result.stdout
  assert 'train: 3 examples' in result.stdout and 'test: 2 examples' in result.stdout
  bad = _copy_fixture('maze', tmp_path)
  rows = _read_csv(os.path.join(bad, 'test.csv'))
  rows[1][1] = rows[1][1][:-1]
  _write_csv(os.path.join(bad, 'test.csv'), rows)
  command[4] = f'--data_dir={tmp_path / "data2"}'
  command[5] = f'--manual_dir={bad}'
  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
  assert result.returncode != 0
  assert 'test.csv:2: question must have 900 characters' in result.stderr
  assert os.listdir(tmp_path / 'data2') == []

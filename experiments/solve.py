r"""Solve one puzzle with a saved model and picture the answer (TRM_REFERENCE.md §2, §4, §8).

  python -m experiments.solve --config=sudoku_quick --checkpoint=/tmp/trm_quick \
      --sudoku=53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79
  python -m experiments.solve --config=maze_hard --checkpoint=DIR --maze=maze.txt
  python -m experiments.solve --config=arc_agi1 --checkpoint=DIR --arc_task=task.json --vote
  python -m experiments.solve --config=arc_agi1 --checkpoint=DIR \
      --arc_task=arc-agi_evaluation_challenges.json --task_id=00576224 --vote

The model runs `--steps` supervision steps (default `config.eval.num_steps`, whose 0 means
`config.model.halt_max_steps`) in evaluation mode from the reset state, with no early halting
(§4); the answer is the argmax of the last step. With `--config.eval.num_trajectories=K` and
`--config.eval.trajectory_noise=S`, K noisy trajectories run and the one with the highest
last-step q_halt is shown (docs/test_time_scaling.md). Printed: the answer as a text grid,
whether it is valid (Sudoku: rules and givens; maze: an S-G path of `o` cells, and whether it
is a shortest one; ARC: equal to the test output when the file has it) and the halting step
(the first step whose q_halt > 0).
Written to `--output_dir`: `solve_input_answer.png` (input and answer side by side) and
`solve_steps.gif` (the answer after each supervision step, captioned "step k/N").

ARC with `--vote` runs every augmented version of the task (§7) and votes over the
predictions mapped back to the original orientation and colours (§8). The puzzle embedding of
a version is looked up by its identifier; the identifiers are those of the training run when
its identifier space can be rebuilt (the data set of the config is built locally, its task list
gives as many identifiers as the checkpoint's puzzle table has rows, and the task is in it);
otherwise every version uses the blank identifier 0, as for a task never seen in training.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from datasets.arc_agi import arc_files
from datasets.maze_hard import grid as maze_grid
from datasets.maze_hard import validation as maze_validation
from datasets.sudoku_extreme import validation as sudoku_validation
from experiments import cli
from experiments import predict
from tiny_recursive import act
from tiny_recursive import arc_evaluation
from tiny_recursive import model as model_lib
from tiny_recursive import rendering
from tiny_recursive.data import arc_encoding
from tiny_recursive.data import augmentation
from tiny_recursive.data import puzzle_sources

PNG_NAME = 'solve_input_answer.png'
GIF_NAME = 'solve_steps.gif'
SUDOKU_SEQ_LEN, SUDOKU_VOCAB = 81, 11
MAZE_SEQ_LEN, MAZE_VOCAB = maze_grid.NUM_CELLS, 6
ARC_VOCAB = arc_encoding.VOCAB_SIZE
_SUDOKU_CHARS = frozenset('.0123456789')
_MAZE_INPUT_CHARS = '# SGo'
# Shown in place of an ARC answer whose crop is empty (the first token is not a colour).
_EMPTY_PANEL = np.full((33, 33, 3), 216, np.uint8)


# --- The model -----------------------------------------------------------------------------


@dataclasses.dataclass
class Solver:
  """A loaded model, ready to run evaluation steps."""
  model: model_lib.RecursiveModel
  params: Any
  constants: Any
  puzzle_table: Any  # [num_identifiers, dim]
  num_identifiers: int
  checkpoint: str

  def __post_init__(self):
    self._jitted = {}

  def _compiled(self, settings: act.EvalSettings):
    if settings not in self._jitted:
      model = self.model

      def run(params, constants, puzzle_table, inputs, ids, first_example):
        outputs = act.run_eval(model, params, constants, model.puzzle_rows(puzzle_table, ids),
                               inputs, settings, first_example=first_example, keep_steps=True)
        step_preds = jnp.argmax(outputs.step_logits, axis=-1).astype(jnp.int32)
        trajectory = (jnp.zeros(inputs.shape[:1], jnp.int32) if outputs.trajectory is None
                      else outputs.trajectory)
        return {'step_preds': step_preds, 'q_halt_logits': outputs.step_q_halt,
                'preds': outputs.preds, 'trajectory': trajectory}

      self._jitted[settings] = jax.jit(run)
    return self._jitted[settings]

  def run(self, inputs: np.ndarray, puzzle_identifiers: np.ndarray,
          steps: int | act.EvalSettings, batch_size: int) -> dict[str, np.ndarray]:
    """Runs evaluation steps on every row, in padded batches.

    Args:
      inputs: int32 [N, seq_len]; puzzle_identifiers: int32 [N].
      steps: the number of steps, or test-time scaling settings (several trajectories: the
        outputs are those of each row's kept trajectory).

    Returns:
      step_preds int32 [num_steps, N, seq_len] (argmax after each step), q_halt_logits
      float32 [num_steps, N], preds int32 [N, seq_len] (the last step's argmax), trajectory
      int32 [N] (the kept trajectory, 0 with one).
    """
    settings = (steps if isinstance(steps, act.EvalSettings)
                else act.EvalSettings(num_steps=int(steps)))
    run = self._compiled(settings)
    n = inputs.shape[0]
    batch_size = max(1, min(batch_size, n))
    parts = []
    for start in range(0, n, batch_size):
      stop = min(start + batch_size, n)
      pad = batch_size - (stop - start)
      # Padding rows are blank examples (pad tokens, identifier 0), dropped below.
      out = jax.device_get(run(self.params, self.constants, self.puzzle_table,
                               np.pad(inputs[start:stop], ((0, pad), (0, 0))),
                               np.pad(puzzle_identifiers[start:stop], (0, pad)),
                               np.int32(start)))
      parts.append({'step_preds': np.asarray(out['step_preds'][:, :stop - start]),
                    'q_halt_logits': np.asarray(out['q_halt_logits'][:, :stop - start],
                                                np.float32),
                    'preds': np.asarray(out['preds'][:stop - start]),
                    'trajectory': np.asarray(out['trajectory'][:stop - start])})
    return {'step_preds': np.concatenate([p['step_preds'] for p in parts], axis=1),
            'q_halt_logits': np.concatenate([p['q_halt_logits'] for p in parts], axis=1),
            'preds': np.concatenate([p['preds'] for p in parts], axis=0),
            'trajectory': np.concatenate([p['trajectory'] for p in parts], axis=0)}


def load_solver(config: ml_collections.ConfigDict, checkpoint: str) -> Solver:
  """Loads a model export or training workdir and checks it against `config.model`."""
  model, params, constants, puzzle_table = predict.load_checked_model(config, checkpoint)
  num_ids = model.num_puzzle_identifiers
  params, constants, puzzle_table = jax.device_put((params, constants, puzzle_table))
  return Solver(model=model, params=params, constants=constants, puzzle_table=puzzle_table,
                num_identifiers=num_ids, checkpoint=checkpoint)


def check_data_shape(config: ml_collections.ConfigDict, what: str, seq_len: int,
                     vocab_size: int) -> None:
  """Raises ValueError when the config's token format is not the puzzle kind's (§2)."""
  if config.data.seq_len != seq_len or config.data.vocab_size != vocab_size:
    raise ValueError(
        f'{what} needs a config with data.seq_len = {seq_len} and data.vocab_size = '
        f'{vocab_size}; the config has {config.data.seq_len} and {config.data.vocab_size} '
        f'(data set {config.data.name!r}).')


def halting_step(q_halt_logits: np.ndarray) -> int | None:
  """First step (1-based) whose q_halt logit is positive, or None. q_halt_logits: [steps]."""
  positive = np.flatnonzero(np.asarray(q_halt_logits) > 0)
  return int(positive[0]) + 1 if positive.size else None


def halting_line(q_halt_logits: np.ndarray) -> str:
  step = halting_step(q_halt_logits)
  total = len(q_halt_logits)
  if step is None:
    return f'halting step: did not halt (q_halt <= 0 at all {total} steps)'
  return f'halting step: {step}/{total} (first step with q_halt > 0)'


# --- Sudoku --------------------------------------------------------------------------------


def parse_sudoku(text: str) -> np.ndarray:
  """Parses 81 characters (`.` or `0` blank, `1`-`9` given) row-major into tokens int32 [81].

  Raises:
    ValueError: naming the length, or the first bad character's position (row, column).
  """
  if len(text) != SUDOKU_SEQ_LEN:
    raise ValueError(f'--sudoku: expected {SUDOKU_SEQ_LEN} characters (row-major, "." or "0" '
                     f'for a blank), got {len(text)}.')
  for index, char in enumerate(text):
    if char not in _SUDOKU_CHARS:
      raise ValueError(f'--sudoku: character {char!r} at position {index + 1} (row '
                       f'{index // 9 + 1}, column {index % 9 + 1}) is not a digit 1-9, "." or '
                       '"0".')
  digits = np.frombuffer(text.replace('.', '0').encode('ascii'), np.uint8).astype(np.int32)
  return digits - ord('0') + 1


def sudoku_text(tokens: np.ndarray) -> str:
  """9 lines of digits with box separators; `.` blank, `?` pad."""
  digits = rendering.sudoku_digits(tokens)
  lines = []
  for r in range(9):
    if r and r % 3 == 0:
      lines.append('------+-------+------')
    cells = ['.' if d == 0 else '?' if d < 0 else str(d) for d in digits[r]]
    lines.append(' | '.join(' '.join(cells[c:c + 3]) for c in (0, 3, 6)))
  return '\n'.join(lines)


def sudoku_validity(puzzle: np.ndarray, answer: np.ndarray) -> tuple[bool, str]:
  """Whether `answer` [81] is a complete Sudoku that agrees with the givens of `puzzle` [81].

  Returns:
    (valid, reason): the reason names the first broken rule or contradicted given.
  """
  digits = rendering.sudoku_digits(answer).reshape(-1)
  unfilled = np.flatnonzero(digits <= 0)
  if unfilled.size:
    cell = int(unfilled[0])
    return False, (f'{unfilled.size} cell(s) not filled with a digit, first at row '
                   f'{cell // 9 + 1}, column {cell % 9 + 1}')
  question = rendering.sudoku_digits(puzzle).reshape(-1).clip(0)
  problem = sudoku_validation.answer_problem(question, digits)
  if problem:
    return False, problem
  return True, 'every row, column and box holds 1-9 and the givens are kept'


# --- Maze ----------------------------------------------------------------------------------


def read_maze(path: str) -> np.ndarray:
  """Reads a 30-line, 30-column maze in `# SG` characters (`o` read as open); tokens [900].

  Raises:
    ValueError: naming the file and the offending line / column.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--maze: no file at {path}.')
  with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines()
  while lines and not lines[-1]:
    lines.pop()
  size = maze_grid.SIZE
  if len(lines) != size:
    raise ValueError(f'{path}: expected {size} lines of {size} characters, got {len(lines)} '
                     'lines.')
  for number, line in enumerate(lines, start=1):
    if len(line) != size:
      raise ValueError(f'{path}: line {number} has {len(line)} characters; expected {size} '
                       f'(from {_MAZE_INPUT_CHARS!r}; a space is an open cell).')
    for column, char in enumerate(line, start=1):
      if char not in _MAZE_INPUT_CHARS:
        raise ValueError(f'{path}: line {number}, column {column}: character {char!r} is not '
                         f'one of {_MAZE_INPUT_CHARS!r}.')
  text = ''.join(lines).replace('o', ' ')
  for char in 'SG':
    count = text.count(char)
    if count != 1:
      where = ', '.join(f'line {i // size + 1} column {i % size + 1}'
                        for i in range(len(text)) if text[i] == char)
      raise ValueError(f'{path}: expected exactly one {char!r}, found {count}'
                       f'{" (" + where + ")" if where else ""}.')
  return maze_grid.to_tokens(text)


def maze_text(tokens: np.ndarray) -> str:
  """30 lines of `# SGo` characters (`?` for a pad token)."""
  chars = np.array(list('?' + maze_grid.CHARS))
  grid = chars[np.asarray(tokens).reshape(maze_grid.SIZE, maze_grid.SIZE)]
  return '\n'.join(''.join(row) for row in grid)


def maze_validity(maze: np.ndarray, answer: np.ndarray) -> tuple[bool, bool, str]:
  """Checks a predicted maze answer [900] against the maze [900] (tokens of §2) with the
  data set's own validator (`datasets.maze_hard.validation.check_path`).

  Returns:
    (is_path, is_shortest, reason): is_path when the answer keeps every wall, S and G of the
    maze, marks `o` only on open cells, and the `o` cells connect S to G; is_shortest when
    they are, besides, a shortest S-G path.
  """
  def codes(tokens):
    text = maze_text(np.asarray(tokens).reshape(-1)).replace('\n', '')
    return np.frombuffer(text.encode('ascii'), np.uint8).reshape(maze_grid.SIZE, maze_grid.SIZE)

  check = maze_validation.check_path(codes(maze), codes(answer))
  return check.is_path, check.is_shortest, check.reason


# --- ARC -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ArcTaskFile:
  """A task read from a file: demonstration pairs and test inputs (outputs when given)."""
  task_id: str
  train: tuple[tuple[np.ndarray, np.ndarray], ...]
  test_inputs: tuple[np.ndarray, ...]
  test_outputs: tuple[np.ndarray, ...] | None


def read_arc_task(path: str, task_id: str | None = None) -> ArcTaskFile:
  """Reads one task: a `{"train", "test"}` file, or a Kaggle challenges file with `task_id`.

  Raises:
    ValueError: naming the file, task and pair when the content is wrong.
  """
  data = arc_files.load_json_object(path, what='--arc_task')
  if 'train' in data and 'test' in data:
    body = data
    name = task_id or os.path.splitext(os.path.basename(path))[0]
  else:
    if task_id is None:
      raise ValueError(f'{path}: a challenges file of {len(data)} task(s); pass --task_id '
                       f'(e.g. {sorted(data)[:3]}).')
    if task_id not in data:
      raise ValueError(f'{path}: no task {task_id!r}; the file has {len(data)} task(s), e.g. '
                       f'{sorted(data)[:3]}.')
    body, name = data[task_id], task_id
  where = f'{path}: task {name}'
  if not isinstance(body, dict) or 'train' not in body or 'test' not in body:
    raise ValueError(f'{where}: expected an object with "train" and "test".')
  train = arc_files.read_pairs(body['train'], f'{where}.train', need_output=True)
  test = arc_files.read_pairs(body['test'], f'{where}.test', need_output=False)
  outputs = [o for _, o in test]
  return ArcTaskFile(task_id=name, train=tuple(train),
                     test_inputs=tuple(i for i, _ in test),
                     test_outputs=tuple(outputs) if all(o is not None for o in outputs)
                     else None)


def arc_text(grid: np.ndarray) -> str:
  """Rows of colour digits; `(empty)` for an empty crop."""
  grid = np.asarray(grid)
  if grid.size == 0:
    return '(empty)'
  return '\n'.join(''.join(str(int(v)) for v in row) for row in grid)


@dataclasses.dataclass(frozen=True)
class ArcVersions:
  """The versions of a task to run, their identifiers and how they were obtained."""
  versions: tuple[augmentation.ArcVersion, ...]
  first_identifier: int  # version v uses first_identifier + v (0 for all: blank id)
  per_version_ids: bool
  explanation: str

  def identifiers(self) -> np.ndarray:
    if not self.per_version_ids:
      return np.full(len(self.versions), self.first_identifier, np.int32)
    return (self.first_identifier + np.arange(len(self.versions))).astype(np.int32)


def _same_grid(a: np.ndarray, b: np.ndarray) -> bool:
  return a.shape == b.shape and bool(np.all(a == b))


def versions_from_catalog(catalog: puzzle_sources.ArcCatalog,
                          tasks: Sequence[puzzle_sources.ArcTaskLike], task: ArcTaskFile,
                          num_identifiers: int) -> ArcVersions | str:
  """The task's versions and identifiers in a rebuilt training identifier space.

  Args:
    catalog: the catalogue rebuilt from the data set of the config.
    tasks: the data set's tasks (both splits), to confirm the task's content.
    task: the task being solved.
    num_identifiers: rows of the checkpoint's puzzle table.

  Returns:
    ArcVersions, or a string saying why the space does not apply.
  """
  if catalog.num_identifiers != num_identifiers:
    return (f"the rebuilt identifier space has {catalog.num_identifiers} identifiers but the "
            f"checkpoint's puzzle table has {num_identifiers} rows (a different data set, "
            'num_augmentations or augmentation_seed)')
  keys = [k for k in catalog.task_keys if k.rsplit('/', 1)[-1] == task.task_id]
  if not keys:
    return f'task {task.task_id!r} is not in the data set the model was trained on'
  # Several subsets may use one id: take the task whose pairs hold the file's demonstrations.
  key = None
  for candidate in keys:
    known = [pair for t in tasks if puzzle_sources.task_key(t) == candidate for pair in t.pairs]
    if all(any(_same_grid(grid_in, a) and _same_grid(grid_out, b) for a, b in known)
           for grid_in, grid_out in task.train):
      key = candidate
      break
  if key is None:
    return (f'the data set\'s task(s) {keys} do not hold the demonstration pairs of the file '
            '(a different task under the same id)')
  index = catalog.index(key)
  first = int(catalog.first_identifier[index])
  return ArcVersions(versions=catalog.versions[index], first_identifier=first,
                     per_version_ids=not catalog.fresh,
                     explanation=f'task {key!r}: identifiers {first}.. of the training run')


def load_arc_catalog(config: ml_collections.ConfigDict
                     ) -> tuple[puzzle_sources.ArcCatalog, list[Any]] | str:
  """Rebuilds the training run's ARC catalogue from the locally built data set, or says why not."""
  # Imported here: reading a data set pulls in TFDS, which the other puzzle kinds never need.
  from tiny_recursive.data import sources  # pylint: disable=g-import-not-at-top
  data = config.data
  try:
    train = sources.load_arc_split(data.builder_config, 'train', data.data_dir or None)
    test = sources.load_arc_split(data.builder_config, 'test', data.data_dir or None)
  except (FileNotFoundError, ValueError) as error:
    reason = str(error).rstrip('.')
    return f'the data set arc_agi/{data.builder_config} cannot be read ({reason})'
  catalog = puzzle_sources.build_arc_catalog(train, test, int(data.num_augmentations),
                                       int(data.augmentation_seed), bool(data.fresh_augmentation))
  return catalog, list(train) + list(test)


def arc_versions(config: ml_collections.ConfigDict, task: ArcTaskFile, num_identifiers: int,
                 vote: bool,
                 catalog: tuple[puzzle_sources.ArcCatalog, list[Any]] | str | None = None
                 ) -> ArcVersions:
  """The versions to run: the identity (no vote) or every augmented version (vote).

  Uses the training identifier space when it can be rebuilt (`catalog`, loaded from the data
  set when None and the model has puzzle embeddings); otherwise the blank identifier 0 for
  every version, with versions drawn as the data set would for this task's pairs.
  """
  reason = None
  if config.model.puzzle_emb_ndim <= 0:
    reason = 'the model has no puzzle embeddings'
  else:
    if catalog is None:
      catalog = load_arc_catalog(config)
    if isinstance(catalog, str):
      reason = catalog
    else:
      found = versions_from_catalog(catalog[0], catalog[1], task, num_identifiers)
      if isinstance(found, str):
        reason = found
      else:
        versions = found.versions if vote else found.versions[:1]
        return dataclasses.replace(found, versions=versions)
  explanation = (f'blank puzzle identifier 0 for every version: {reason}. The puzzle '
                 'embedding of a task the model was not trained on is the blank one.')
  if not vote:
    return ArcVersions(versions=(augmentation.IDENTITY_ARC_VERSION,), first_identifier=0,
                       per_version_ids=False, explanation=explanation)
  pairs = list(task.train)
  if task.test_outputs is not None:
    pairs += list(zip(task.test_inputs, task.test_outputs))
  versions = augmentation.draw_arc_versions(pairs, int(config.data.num_augmentations),
                                            int(config.data.augmentation_seed),
                                            f'solve/{task.task_id}')
  return ArcVersions(versions=tuple(versions), first_identifier=0, per_version_ids=False,
                     explanation=explanation)


# --- Pictures ------------------------------------------------------------------------------


def _stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
  """Stacks images vertically, padding each on the right with white to the widest."""
  width = max(r.shape[1] for r in rows)
  return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)),
                                constant_values=255) for r in rows], axis=0)


def _arc_panel(grid: np.ndarray) -> np.ndarray:
  return rendering.render_arc_grid(grid) if np.asarray(grid).size else _EMPTY_PANEL


def write_pictures(output_dir: str, input_panels: Sequence[np.ndarray],
                   answer_panels: Sequence[np.ndarray],
                   step_panels: Sequence[Sequence[np.ndarray]],
                   extra_titles: Sequence[str] = ()) -> tuple[str, str]:
  """Writes the input/answer PNG and the per-step GIF.

  Args:
    input_panels, answer_panels: one image per test input (one for Sudoku and maze).
    step_panels: per supervision step, one image per test input.
    extra_titles: per test input, a suffix for its answer title.

  Returns:
    (png_path, gif_path).
  """
  rows = []
  for i, (inp, ans) in enumerate(zip(input_panels, answer_panels)):
    suffix = f' {i + 1}' if len(input_panels) > 1 else ''
    note = extra_titles[i] if i < len(extra_titles) else ''
    rows.append(rendering.side_by_side([inp, ans], [f'input{suffix}', f'answer{suffix}{note}']))
  png = os.path.join(output_dir, PNG_NAME)
  gif = os.path.join(output_dir, GIF_NAME)
  rendering.save_png(_stack_rows(rows), png)
  total = len(step_panels)
  frames = [rendering.add_caption(rendering.side_by_side(list(panels)), f'step {k}/{total}')
            for k, panels in enumerate(step_panels, start=1)]
  rendering.save_gif(frames, gif)
  return png, gif


# --- Solving -------------------------------------------------------------------------------


@dataclasses.dataclass
class SolveResult:
  """What `solve_*` found: the report printed by the entry point and the raw outputs."""
  report: str
  answers: list[np.ndarray]  # Sudoku / maze: tokens [seq_len]; ARC: grids [h, w] per test.
  valid: list[bool | None]
  halting_steps: list[int | None]
  step_preds: np.ndarray  # [steps, num_rows, seq_len] of the rows pictured
  png_path: str
  gif_path: str
  attempts: list[list[np.ndarray]] = dataclasses.field(default_factory=list)


def _steps_text(settings: act.EvalSettings) -> str:
  """'16 steps', or '16 steps, best of 8 trajectories (noise 0.1)'."""
  text = f'{settings.num_steps} steps'
  if settings.stochastic:
    text += (f', best of {settings.num_trajectories} trajectories (noise '
             f'{settings.trajectory_noise:g}, seed {settings.noise_seed})')
  return text


def solve_sudoku(config: ml_collections.ConfigDict, solver: Solver, puzzle: str,
                 output_dir: str, steps: int | None = None) -> SolveResult:
  """Solves an 81-character Sudoku string; writes the PNG and GIF to `output_dir`."""
  check_data_shape(config, '--sudoku', SUDOKU_SEQ_LEN, SUDOKU_VOCAB)
  tokens = parse_sudoku(puzzle)
  settings = predict.eval_settings(config, steps)
  out = solver.run(tokens[None], np.zeros(1, np.int32), settings, 1)
  answer = out['preds'][0]
  valid, reason = sudoku_validity(tokens, answer)
  png, gif = write_pictures(
      output_dir, [rendering.render_sudoku(tokens)],
      [rendering.render_sudoku(answer, givens=tokens)],
      [[rendering.render_sudoku(p[0], givens=tokens)] for p in out['step_preds']])
  report = '\n'.join([
      'puzzle:', sudoku_text(tokens), '', f'answer after {_steps_text(settings)}:',
      sudoku_text(answer), '', f'valid: {"yes" if valid else "no"} ({reason})',
      halting_line(out['q_halt_logits'][:, 0]), f'wrote {png} and {gif}'])
  return SolveResult(report=report, answers=[answer], valid=[valid],
                     halting_steps=[halting_step(out['q_halt_logits'][:, 0])],
                     step_preds=out['step_preds'], png_path=png, gif_path=gif)


def solve_maze(config: ml_collections.ConfigDict, solver: Solver, path: str, output_dir: str,
               steps: int | None = None) -> SolveResult:
  """Solves the maze in text file `path`; writes the PNG and GIF to `output_dir`."""
  check_data_shape(config, '--maze', MAZE_SEQ_LEN, MAZE_VOCAB)
  tokens = read_maze(path)
  settings = predict.eval_settings(config, steps)
  out = solver.run(tokens[None], np.zeros(1, np.int32), settings, 1)
  answer = out['preds'][0]
  is_path, is_shortest, reason = maze_validity(tokens, answer)
  png, gif = write_pictures(output_dir, [rendering.render_maze(tokens)],
                            [rendering.render_maze(answer)],
                            [[rendering.render_maze(p[0])] for p in out['step_preds']])
  verdict = 'yes, a shortest path' if is_shortest else (
      'yes, but not a shortest path' if is_path else 'no')
  report = '\n'.join([
      f'answer after {_steps_text(settings)}:', maze_text(answer), '',
      f'valid S-G path: {verdict} ({reason})',
      halting_line(out['q_halt_logits'][:, 0]), f'wrote {png} and {gif}'])
  return SolveResult(report=report, answers=[answer], valid=[is_path],
                     halting_steps=[halting_step(out['q_halt_logits'][:, 0])],
                     step_preds=out['step_preds'], png_path=png, gif_path=gif)


def solve_arc(config: ml_collections.ConfigDict, solver: Solver, path: str, output_dir: str,
              *, task_id: str | None = None, vote: bool = False, steps: int | None = None,
              catalog: tuple[puzzle_sources.ArcCatalog, list[Any]] | str | None = None
              ) -> SolveResult:
  """Solves every test input of an ARC task file (with `vote`, over all versions, §8)."""
  check_data_shape(config, '--arc_task', arc_encoding.SEQ_LEN, ARC_VOCAB)
  task = read_arc_task(path, task_id)
  settings = predict.eval_settings(config, steps)
  plan = arc_versions(config, task, solver.num_identifiers, vote, catalog)
  ids = plan.identifiers()
  num_tests = len(task.test_inputs)
  # Rows: version-major, test input minor; version 0 is the identity.
  inputs, meta_version, meta_test, row_ids = [], [], [], []
  for v, version in enumerate(plan.versions):
    for i, grid in enumerate(task.test_inputs):
      inputs.append(arc_encoding.encode_grid(version.apply(grid)))
      meta_version.append(v)
      meta_test.append(i)
      row_ids.append(ids[v])
  out = solver.run(np.stack(inputs).astype(np.int32), np.asarray(row_ids, np.int32), settings,
                   int(config.eval.global_batch_size))
  spec = arc_evaluation.ArcEvalSpec(task_ids=(task.task_id,), versions=(plan.versions,),
                                    solutions=None)
  accumulator = arc_evaluation.ArcAccumulator(spec)
  accumulator.update({'task_index': np.zeros(len(inputs), np.int32),
                      'version_index': np.asarray(meta_version),
                      'test_index': np.asarray(meta_test)},
                     out['preds'], out['q_halt_logits'][-1])
  identity_preds = out['step_preds'][:, :num_tests]  # [steps, num_tests, 900]
  lines = [f'task {task.task_id}: {num_tests} test input(s), {len(plan.versions)} version(s), '
           f'{_steps_text(settings)}', f'puzzle identifiers: {plan.explanation}']
  answers, valid, halts, attempts, notes = [], [], [], [], []
  for i in range(num_tests):
    direct = arc_encoding.decode_grid(identity_preds[-1, i])
    # As in the submission (§8), an empty crop is no answer: the next candidate takes its place.
    ranked = [c for c in accumulator.ranked(0, i) if c[0].size]
    top = [grid for grid, _, _ in ranked[:2]] if vote else [direct]
    answer = top[0] if top else direct
    answers.append(answer)
    attempts.append(top)
    halts.append(halting_step(out['q_halt_logits'][:, i]))
    lines += ['', f'test input {i + 1}:', arc_text(task.test_inputs[i])]
    if vote:
      for k, (grid, count, mean_q) in enumerate(ranked[:2], start=1):
        lines += [f'attempt {k}: {count} vote(s) of {len(plan.versions)}, mean '
                  f'sigmoid(q_halt) {mean_q:.3f}', arc_text(grid)]
      if not ranked:
        lines.append('no candidate: every version predicted an empty grid')
    else:
      lines += ['answer:', arc_text(answer)]
    if task.test_outputs is None:
      valid.append(None)
      lines.append('correct: unknown (the file has no test output)')
      notes.append('')
    else:
      solution = task.test_outputs[i]
      hits = [k for k, grid in enumerate(top, start=1) if _same_grid(grid, solution)]
      valid.append(bool(hits))
      lines.append(f'correct: {"yes (attempt " + str(hits[0]) + ")" if hits else "no"}')
      notes.append(' (correct)' if hits and hits[0] == 1 else ' (wrong)')
    lines.append(halting_line(out['q_halt_logits'][:, i]) + ' [identity version]')
  png, gif = write_pictures(
      output_dir, [rendering.render_arc_grid(g) for g in task.test_inputs],
      [_arc_panel(a) for a in answers],
      [[_arc_panel(arc_encoding.decode_grid(p)) for p in step] for step in identity_preds],
      notes)
  lines.append(f'wrote {png} and {gif}')
  return SolveResult(report='\n'.join(lines), answers=answers, valid=valid, halting_steps=halts,
                     step_preds=identity_preds, png_path=png, gif_path=gif, attempts=attempts)


def run_solve(config: ml_collections.ConfigDict, checkpoint: str, *, sudoku: str | None = None,
              maze: str | None = None, arc_task: str | None = None, task_id: str | None = None,
              vote: bool = False, steps: int | None = None,
              output_dir: str = '.') -> SolveResult:
  """Loads the model and solves the one puzzle given."""
  given = [name for name, value in (('--sudoku', sudoku), ('--maze', maze),
                                    ('--arc_task', arc_task)) if value is not None]
  if len(given) != 1:
    raise ValueError(f'Pass exactly one of --sudoku, --maze, --arc_task (got {given or "none"}).')
  if vote and arc_task is None:
    raise ValueError('--vote applies to --arc_task only.')
  if task_id is not None and arc_task is None:
    raise ValueError('--task_id applies to --arc_task only.')
  # Parse the puzzle before the (slower) model load, so that bad input fails at once.
  if sudoku is not None:
    parse_sudoku(sudoku)
  elif maze is not None:
    read_maze(maze)
  else:
    read_arc_task(arc_task, task_id)
  solver = load_solver(config, checkpoint)
  logging.info('Loaded %s (%d puzzle identifiers).', checkpoint, solver.num_identifiers)
  if sudoku is not None:
    return solve_sudoku(config, solver, sudoku, output_dir, steps)
  if maze is not None:
    return solve_maze(config, solver, maze, output_dir, steps)
  return solve_arc(config, solver, arc_task, output_dir, task_id=task_id, vote=vote, steps=steps)


def define_flags() -> None:
  """Defines the command-line flags (only when run as a program, so the module imports cleanly)."""
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config: a name from experiments/configs or a path.')
  flags.DEFINE_string('checkpoint', None, 'Model export directory or training workdir.')
  flags.DEFINE_string('sudoku', None, '81 characters, row-major; "." or "0" for a blank.')
  flags.DEFINE_string('maze', None, 'Text file of 30 lines x 30 characters of "# SG".')
  flags.DEFINE_string('arc_task', None,
                      'ARC task JSON ({"train", "test"}) or Kaggle challenges file.')
  flags.DEFINE_string('task_id', None, 'Task id inside a Kaggle challenges file.')
  flags.DEFINE_bool('vote', False, 'ARC: vote over every augmented version (pass@2).')
  flags.DEFINE_integer('steps', None, 'Supervision steps (default config.eval.num_steps; 0 '
                       'there: config.model.halt_max_steps).')
  flags.DEFINE_string('output_dir', '.', 'Where solve_input_answer.png and solve_steps.gif go.')
  flags.mark_flags_as_required(['config', 'checkpoint'])


def main(argv):
  cli.no_positional_arguments(argv)
  f = flags.FLAGS
  result = run_solve(f.config, f.checkpoint, sudoku=f.sudoku, maze=f.maze, arc_task=f.arc_task,
                     task_id=f.task_id, vote=f.vote, steps=f.steps, output_dir=f.output_dir)
  print(result.report)


if __name__ == '__main__':
  define_flags()
  cli.run(main)

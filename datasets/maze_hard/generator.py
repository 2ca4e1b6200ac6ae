"""Deterministic generator of hard 30x30 mazes in the Maze-Hard character format.

Procedure (one attempt, all randomness from one `np.random.Generator`):
  1. Lay a 15x15 lattice of room cells on the 30x30 grid at coordinates `offset + 2k`,
     with the offset drawn from {0, 1} per axis (so the border wall is on a random side).
  2. Carve a perfect maze with a randomized depth-first search (recursive backtracker):
     opening the wall cell between two lattice cells joins them.
  3. Braid: open each still-closed wall between two adjacent lattice cells with
     probability `braid_prob`, creating loops so that a solver must compare routes.
  4. Draw the start S uniformly among lattice cells, then the goal G uniformly among
     lattice cells whose BFS distance from S exceeds `min_path_steps`.
  5. Reject the attempt if no such goal exists or if the shortest S-G path is not unique
     (the label must follow from the input); otherwise the label marks that path with `o`.
"""

import dataclasses
from typing import Iterator

import numpy as np

from datasets.maze_hard import grid

LATTICE = 15
MIN_PATH_STEPS = 110
BRAID_PROB = 0.08
_WALL, _OPEN, _START, _GOAL, _PATH = (ord(c) for c in grid.CHARS)


@dataclasses.dataclass(frozen=True)
class Maze:
  question: str  # 900 characters of `# SG`.
  answer: str  # The question with the shortest S-G path marked `o`.
  path_steps: int  # Steps of the shortest S-G path.


@dataclasses.dataclass
class GeneratorStats:
  attempts: int = 0
  rejected_too_short: int = 0
  rejected_not_unique: int = 0


def _carve(rng: np.random.Generator,
           braid_prob: float) -> tuple[np.ndarray, tuple[int, int]]:
  """A `[30, 30]` uint8 character grid of walls and open cells, and the lattice offset."""
  maze = np.full((grid.SIZE, grid.SIZE), _WALL, np.uint8)
  row_offset, col_offset = (int(x) for x in rng.integers(0, 2, size=2))

  def at(i: int, j: int) -> tuple[int, int]:
    return row_offset + 2 * i, col_offset + 2 * j

  visited = np.zeros((LATTICE, LATTICE), bool)
  start = (int(rng.integers(LATTICE)), int(rng.integers(LATTICE)))
  visited[start] = True
  maze[at(*start)] = _OPEN
  stack = [start]
  steps = ((-1, 0), (1, 0), (0, -1), (0, 1))
  while stack:
    i, j = stack[-1]
    options = [(i + di, j + dj) for di, dj in steps
               if 0 <= i + di < LATTICE and 0 <= j + dj < LATTICE and not visited[i + di, j + dj]]
    if not options:
      stack.pop()
      continue
    ni, nj = options[int(rng.integers(len(options)))]
    visited[ni, nj] = True
    r, c = at(ni, nj)
    maze[r, c] = _OPEN
    maze[r - (ni - i), c - (nj - j)] = _OPEN  # The wall cell between the two rooms.
    stack.append((ni, nj))
  # Braid: walls between horizontally / vertically adjacent rooms.
  for i in range(LATTICE):
    for j in range(LATTICE):
      r, c = at(i, j)
      for di, dj in ((1, 0), (0, 1)):
        if i + di < LATTICE and j + dj < LATTICE and maze[r + di, c + dj] == _WALL:
          if rng.random() < braid_prob:
            maze[r + di, c + dj] = _OPEN
  return maze, (row_offset, col_offset)


def attempt(rng: np.random.Generator, stats: GeneratorStats,
            min_path_steps: int = MIN_PATH_STEPS, braid_prob: float = BRAID_PROB) -> Maze | None:
  """One generation attempt; None if rejected (counted in `stats`)."""
  stats.attempts += 1
  maze, (row_offset, col_offset) = _carve(rng, braid_prob)
  rooms = [(row_offset + 2 * i, col_offset + 2 * j)
           for i in range(LATTICE) for j in range(LATTICE)]
  start = rooms[int(rng.integers(len(rooms)))]
  open_cells = maze != _WALL
  dist = grid.distances(open_cells, start)
  far = [room for room in rooms if dist[room] > min_path_steps]
  if not far:
    stats.rejected_too_short += 1
    return None
  goal = far[int(rng.integers(len(far)))]
  if grid.count_shortest_paths(open_cells, start, goal) != 1:
    stats.rejected_not_unique += 1
    return None
  path = grid.shortest_path(open_cells, start, goal)
  maze[start] = _START
  maze[goal] = _GOAL
  answer = maze.copy()
  for cell in path[1:-1]:
    answer[cell] = _PATH
  return Maze(grid.to_text(maze), grid.to_text(answer), len(path) - 1)


def generate(num_mazes: int, seed: int, exclude: frozenset[str] = frozenset(),
             stats: GeneratorStats | None = None) -> Iterator[Maze]:
  """Yields `num_mazes` distinct accepted mazes, deterministic in `seed`.

  Mazes whose question is in `exclude` (e.g. the train split's) or already yielded are
  skipped, so splits drawn with different seeds never share a maze.
  """
  rng = np.random.default_rng(seed)
  stats = stats if stats is not None else GeneratorStats()
  seen = set(exclude)
  produced = 0
  while produced < num_mazes:
    maze = attempt(rng, stats)
    if maze is None or maze.question in seen:
      continue
    seen.add(maze.question)
    produced += 1
    yield maze

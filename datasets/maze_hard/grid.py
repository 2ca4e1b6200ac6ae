"""Maze grids: character format, tokens and shortest paths (TRM_REFERENCE.md §2).

A maze is a 30x30 grid written row-major as 900 characters: `#` wall, space open, `S`
start, `G` goal, `o` a cell of the marked path. Tokens: 0 pad, then `#`, space, `S`, `G`,
`o` are 1-5.
"""

import collections

import numpy as np

SIZE = 30
NUM_CELLS = SIZE * SIZE
CHARS = '# SGo'
_TOKEN_OF_BYTE = np.zeros(256, np.int32)
for _token, _char in enumerate(CHARS, start=1):
  _TOKEN_OF_BYTE[ord(_char)] = _token
_NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def to_tokens(text: str) -> np.ndarray:
  """`[900]` int32 tokens of a maze string (characters assumed valid)."""
  return _TOKEN_OF_BYTE[np.frombuffer(text.encode('ascii'), np.uint8)]


def to_text(grid: np.ndarray) -> str:
  """The 900-character string of a `[30, 30]` character-code (`np.uint8`) grid."""
  return grid.astype(np.uint8).tobytes().decode('ascii')


def distances(open_cells: np.ndarray, start: tuple[int, int]) -> np.ndarray:
  """BFS step counts from `start` over 4-connected `open_cells` `[h, w]` bool; -1 unreached."""
  height, width = open_cells.shape
  dist = np.full((height, width), -1, np.int32)
  dist[start] = 0
  queue = collections.deque([start])
  while queue:
    r, c = queue.popleft()
    for dr, dc in _NEIGHBOURS:
      nr, nc = r + dr, c + dc
      if 0 <= nr < height and 0 <= nc < width and open_cells[nr, nc] and dist[nr, nc] < 0:
        dist[nr, nc] = dist[r, c] + 1
        queue.append((nr, nc))
  return dist


def shortest_path(open_cells: np.ndarray, start: tuple[int, int],
                  goal: tuple[int, int]) -> list[tuple[int, int]] | None:
  """One shortest 4-connected path from start to goal (both included), or None.

  Ties are broken deterministically: walking back from the goal, the first neighbour in
  the order up, down, left, right that is one step closer to the start is taken.
  """
  dist = distances(open_cells, start)
  if dist[goal] < 0:
    return None
  path = [goal]
  r, c = goal
  while (r, c) != start:
    for dr, dc in _NEIGHBOURS:
      nr, nc = r + dr, c + dc
      if (0 <= nr < dist.shape[0] and 0 <= nc < dist.shape[1]
          and dist[nr, nc] == dist[r, c] - 1):
        r, c = nr, nc
        break
    path.append((r, c))
  return path[::-1]


def count_shortest_paths(open_cells: np.ndarray, start: tuple[int, int],
                         goal: tuple[int, int]) -> int:
  """Number of distinct shortest start-goal paths (0 if the goal is unreachable)."""
  dist = distances(open_cells, start)
  if dist[goal] < 0:
    return 0
  counts = np.zeros(dist.shape, np.int64)
  counts[start] = 1
  order = np.argsort(dist, axis=None, kind='stable')
  for flat in order:
    r, c = divmod(int(flat), dist.shape[1])
    if dist[r, c] <= 0:
      continue
    counts[r, c] = sum(
        counts[r + dr, c + dc] for dr, dc in _NEIGHBOURS
        if 0 <= r + dr < dist.shape[0] and 0 <= c + dc < dist.shape[1]
        and dist[r + dr, c + dc] == dist[r, c] - 1)
  return int(counts[goal])

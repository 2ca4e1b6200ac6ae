"""A Sudoku solver with constraint propagation (naked and hidden singles) and search.

Used to check uniqueness when making puzzles (`make_sample`, `make_hard`) and to rate how
much guessing a puzzle needs beyond singles.
"""

from typing import Sequence

import numpy as np

ALL_DIGITS = 0b1111111110  # Bit d set: digit d (1-9) is still possible.
_ROWS = [[9 * r + c for c in range(9)] for r in range(9)]
_COLUMNS = [[9 * r + c for r in range(9)] for c in range(9)]
_BOXES = [[9 * (br + r) + bc + c for r in range(3) for c in range(3)]
          for br in (0, 3, 6) for bc in (0, 3, 6)]
UNITS_OF = [[unit for unit in _ROWS + _COLUMNS + _BOXES if cell in unit] for cell in range(81)]
PEERS = [sorted({p for unit in UNITS_OF[cell] for p in unit} - {cell}) for cell in range(81)]


def _single_digit(mask: int) -> int:
  return mask.bit_length() - 1


def _eliminate(masks: list[int], cell: int, digit: int) -> bool:
  """Removes `digit` from `cell` and propagates naked and hidden singles; False on conflict."""
  bit = 1 << digit
  if not masks[cell] & bit:
    return True
  masks[cell] &= ~bit
  remaining = masks[cell]
  if not remaining:
    return False
  if remaining & (remaining - 1) == 0:  # Naked single: clear it from the peers.
    last = _single_digit(remaining)
    if not all(_eliminate(masks, peer, last) for peer in PEERS[cell]):
      return False
  for unit in UNITS_OF[cell]:  # Hidden single: `digit` has one place left in the unit.
    places = [c for c in unit if masks[c] & bit]
    if not places:
      return False
    if len(places) == 1 and not _assign(masks, places[0], digit):
      return False
  return True


def _assign(masks: list[int], cell: int, digit: int) -> bool:
  others = masks[cell] & ~(1 << digit)
  return all(_eliminate(masks, cell, d) for d in range(1, 10) if others & (1 << d))


def _propagated(digits: Sequence[int]) -> list[int] | None:
  """Candidate masks of a grid (0 = blank) after propagation, or None if it has no solution."""
  masks = [ALL_DIGITS] * 81
  for cell, digit in enumerate(digits):
    if digit and not _assign(masks, cell, int(digit)):
      return None
  return masks


def solve(digits: Sequence[int], limit: int = 1,
          rng: np.random.Generator | None = None) -> tuple[int, int, list[int] | None]:
  """Searches a grid (81 digits, 0 = blank) with singles propagation.

  Returns (solutions found, counted up to `limit`; guesses, i.e. digits tried at cells with
  several candidates; the first solution found or None). `rng` shuffles the order in which
  digits are tried (for random grids); without it the order is ascending.
  """
  masks = _propagated(digits)
  if masks is None:
    return 0, 0, None
  found, guesses, first = 0, 0, None
  stack = [masks]
  while stack and found < limit:
    masks = stack.pop()
    open_cells = [c for c in range(81) if masks[c] & (masks[c] - 1)]
    if not open_cells:
      found += 1
      first = first or [_single_digit(m) for m in masks]
      continue
    cell = min(open_cells, key=lambda c: bin(masks[c]).count('1'))
    options = [d for d in range(1, 10) if masks[cell] & (1 << d)]
    if rng is not None:
      options = list(rng.permutation(options))
    for digit in reversed(options):  # The stack pops the first option first.
      child = list(masks)
      guesses += 1
      if _assign(child, cell, int(digit)):
        stack.append(child)
  return found, guesses, first


def count_solutions(digits: Sequence[int], limit: int = 2) -> int:
  """Solutions of an 81-digit grid (0 = blank), counted up to `limit`."""
  return solve(digits, limit=limit)[0]

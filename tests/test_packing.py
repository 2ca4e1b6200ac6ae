"""Tests for tiny_recursive.data.packing: the reference's batch layout (§7)."""

import numpy as np

from tiny_recursive.data import packing


def test_packing_exact_batches_contiguous_puzzles_and_each_group_once():
  sizes = np.array([3, 1, 4, 2, 5, 2, 3])
  layout = packing.PackingLayout(sizes, np.full(7, 4), global_batch_size=6, seed=0)
  batches = []
  while True:
    batch = layout.next_batch()
    if layout.dropped:  # This batch already comes from the next epoch.
      break
    batches.append(batch)
  # 20 examples: at most 3 full batches; the rest of the epoch is dropped.
  assert 1 <= len(batches) <= 3
  seen_groups = []
  for group, version, example in batches:
    assert len(group) == 6
    # A puzzle's rows are contiguous, with one version and distinct examples.
    boundaries = np.flatnonzero(np.diff(group)) + 1
    for run in np.split(np.arange(6), boundaries):
      assert len(set(version[run])) == 1
      assert len(set(example[run])) == len(run)
      assert (example[run] < sizes[group[run[0]]]).all()
    seen_groups.extend(group[np.r_[0, boundaries]])
  assert len(seen_groups) == len(set(seen_groups))  # No group twice in an epoch.
  plan = packing.epoch_plan(sizes, np.full(7, 4), 0, 0, False)
  order = plan.group[plan.starts[:-1]]
  # Groups are visited in the epoch's order; a cut puzzle's remainder is skipped.
  np.testing.assert_array_equal(seen_groups, order[:len(seen_groups)])


def test_iteration_drops_only_the_last_incomplete_batch():
  sizes = np.ones(10, int)
  steps = packing.steps_per_iteration(sizes, np.ones(10, int), 4, seed=0,
                                       epochs_per_iteration=3)
  assert steps == 7  # 30 examples, 7 batches of 4, 2 dropped.
  layout = packing.PackingLayout(sizes, np.ones(10, int), 4, 0, epochs_per_iteration=3)
  groups = np.concatenate([layout.next_batch()[0] for _ in range(7)])
  for e in range(2):  # Epochs 0 and 1 are seen whole.
    assert sorted(groups[10 * e:10 * (e + 1)]) == list(range(10))
  layout.next_batch()
  assert layout.epoch == 3 and layout.offset == 4  # Restarted at the next iteration.


def test_every_group_visited_once_per_epoch_when_batches_divide():
  sizes = np.full(12, 2)
  layout = packing.PackingLayout(sizes, np.full(12, 3), 8, seed=5)
  groups = np.concatenate([layout.next_batch()[0] for _ in range(3)])
  assert sorted(groups[::2]) == list(range(12))
  assert layout.get_state() == {'epoch': 1, 'offset': 0}

"""Tests for tiny_recursive.puzzle_embedding against a NumPy transcription."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny_recursive import puzzle_embedding

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _numpy_update(table, ids, grads, lr, wd):
  """Reference rule: unique ids, summed gradients, SignSGD + decay (§5)."""
  table = table.astype(np.float64).copy()
  for i in np.unique(ids):
    g = grads[ids == i].astype(np.float64).sum(axis=0)
    table[i] = table[i] * (1 - lr * wd) - lr * np.sign(g)
  return table


def _example(seed=0, num_ids=10, dim=6, batch=12):
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(num_ids, dim)).astype(np.float32)
  # Duplicates, id 0, and rows never used.
  ids = np.array([0, 3, 3, 0, 7, 3, 1, 0, 7, 9, 9, 2], np.int32)[:batch]
  grads = rng.normal(size=(batch, dim)).astype(np.float32)
  return table, ids, grads


def test_lookup():
  table, ids, _ = _example()
  np.testing.assert_array_equal(
      np.asarray(puzzle_embedding.lookup(jnp.asarray(table), jnp.asarray(ids))),
      table[ids])


def test_update_matches_numpy_with_duplicates():
  table, ids, grads = _example()
  # A duplicate pair whose gradients cancel exactly: sign(0) = 0, decay only.
  grads[4] = -grads[8]
  lr, wd = 0.01, 0.5
  new = jax.jit(puzzle_embedding.sparse_sign_sgd_update,
                static_argnums=4)(jnp.asarray(table), jnp.asarray(ids),
                                  jnp.asarray(grads), lr, wd)
  expected = _numpy_update(table, ids, grads, lr, wd)
  np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(new)[7], table[7] * (1 - lr * wd),
                             rtol=1e-6)
  # Unused rows are untouched (no weight decay).
  unused = sorted(set(range(table.shape[0])) - set(ids.tolist()))
  assert unused
  np.testing.assert_array_equal(np.asarray(new)[unused], table[unused])


def test_summed_gradients_equal_for_equal_ids():
  _, ids, grads = _example()
  summed = np.asarray(
      puzzle_embedding.sum_gradients_by_id(jnp.asarray(ids),
                                           jnp.asarray(grads)))
  for i, identifier in enumerate(ids):
    np.testing.assert_allclose(summed[i], grads[ids == identifier].sum(0),
                               rtol=1e-5, atol=1e-6)


def test_shape_errors():
  table, ids, grads = _example()
  with pytest.raises(ValueError, match='row_grads'):
    puzzle_embedding.sparse_sign_sgd_update(table, ids, grads[:, :3], 0.1, 0.0)
  with pytest.raises(ValueError, match='ids'):
    puzzle_embedding.lookup(table, ids[:, None])


_SHARDED_CHECK = textwrap.dedent("""
    import jax, numpy as np, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from tiny_recursive import puzzle_embedding
    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(3)
    num_ids, dim, batch = 37, 16, 64
    table = rng.normal(size=(num_ids, dim)).astype(np.float32)
    ids = rng.integers(0, 12, size=batch).astype(np.int32)
    ids[::5] = 0
    grads = rng.normal(size=(batch, dim)).astype(np.float32)
    single = np.asarray(puzzle_embedding.sparse_sign_sgd_update(
        jnp.asarray(table), jnp.asarray(ids), jnp.asarray(grads), 0.01, 0.1))
    mesh = Mesh(np.array(jax.devices()), ('data',))
    batch_sharding = NamedSharding(mesh, P('data'))
    for table_spec in (P(), P('data')):
      table_sharding = NamedSharding(mesh, table_spec)
      update = jax.jit(
          lambda t, i, g: puzzle_embedding.sparse_sign_sgd_update(
              t, i, g, 0.01, 0.1),
          in_shardings=(table_sharding, batch_sharding, batch_sharding),
          out_shardings=table_sharding, donate_argnums=0)
      t = jax.device_put(np.pad(table, ((0, 3), (0, 0))) if table_spec
                         else table, table_sharding)
      new = np.asarray(update(t, jax.device_put(ids, batch_sharding),
                              jax.device_put(grads, batch_sharding)))
      np.testing.assert_allclose(new[:num_ids], single, rtol=1e-6, atol=1e-7)
    print('SHARDED_OK')
""")


def test_sharded_update_equals_single_device():
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      ' --xla_force_host_platform_device_count=8').strip()
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = _REPO_ROOT + os.pathsep + env.get('PYTHONPATH', '')
  result = subprocess.run([sys.executable, '-c', _SHARDED_CHECK], env=env,
                          capture_output=True, text=True, timeout=120,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'SHARDED_OK' in result.stdout

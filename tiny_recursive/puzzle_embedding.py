"""Puzzle-embedding table and its sparse SignSGD update (TRM_REFERENCE.md §5).

The table `[num_puzzle_identifiers, dim]` (float32) lives outside the dense
optimizer. The model receives the looked-up rows `[batch, dim]`; the train step
differentiates the loss with respect to those rows and passes that gradient here.
Identifier 0 is the blank id (padding, and the only id for Sudoku and Maze).

Everything is written over the global batch, so under `jax.jit` with the batch
sharded over devices XLA inserts the collectives that the reference performs with
an all-gather; no dense `[num_puzzle_identifiers, dim]` gradient is built.
"""

import jax
import jax.numpy as jnp


def lookup(table: jax.Array, ids: jax.Array) -> jax.Array:
  """Rows of the table for a batch of identifiers.

  Args:
    table: `[num_ids, dim]` embedding table.
    ids: `[batch]` integer identifiers in [0, num_ids). Out-of-range ids are
      clamped by XLA's gather; validate ids where the data is read.

  Returns:
    `[batch, dim]` rows, dtype of the table.
  """
  if ids.ndim != 1:
    raise ValueError(f'ids must have shape [batch], got {ids.shape}.')
  return jnp.take(table, ids, axis=0, mode='clip')


def sum_gradients_by_id(ids: jax.Array, row_grads: jax.Array) -> jax.Array:
  """For every batch entry, the sum of the gradients of all entries with its id.

  Computed as an equality-mask matmul `[batch, batch] @ [batch, dim]`, which is
  cheap at the batch sizes used (768 x 768 x 512) and shards naturally.

  Args:
    ids: `[batch]` identifiers.
    row_grads: `[batch, dim]` gradients with respect to the looked-up rows.

  Returns:
    `[batch, dim]` float32; entries with equal ids get identical rows.
  """
  same_id = (ids[:, None] == ids[None, :]).astype(jnp.float32)
  return jnp.matmul(same_id, row_grads.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)


def sparse_sign_sgd_update(table: jax.Array, ids: jax.Array,
                           row_grads: jax.Array, lr: jax.typing.ArrayLike,
                           weight_decay: float) -> jax.Array:
  """SignSGD with decoupled weight decay on the rows used in the batch.

  For each id in the batch, with g the sum of its entries' gradients:
    row = row * (1 - lr * weight_decay) - lr * sign(g)
  Rows not in the batch are unchanged (no decay), as in the reference.

  Args:
    table: `[num_ids, dim]` float32 table (may be donated).
    ids: `[batch]` identifiers of the global batch.
    row_grads: `[batch, dim]` gradients of the loss with respect to
      `lookup(table, ids)`.
    lr: learning rate for this step (scalar, may be traced).
    weight_decay: decoupled weight decay coefficient.

  Returns:
    The updated `[num_ids, dim]` table.
  """
  if ids.ndim != 1 or row_grads.ndim != 2 or row_grads.shape[0] != ids.shape[0]:
    raise ValueError('Expected ids [batch] and row_grads [batch, dim], got '
                     f'{ids.shape} and {row_grads.shape}.')
  if row_grads.shape[1] != table.shape[1]:
    raise ValueError(f'row_grads dim {row_grads.shape[1]} does not match the '
                     f'table dim {table.shape[1]}.')
  summed = sum_gradients_by_id(ids, row_grads)
  lr = jnp.asarray(lr, jnp.float32)
  rows = lookup(table, ids).astype(jnp.float32)
  new_rows = rows * (1 - lr * weight_decay) - lr * jnp.sign(summed)
  # Duplicate ids write identical values, so the scatter order does not matter.
  return table.at[ids].set(new_rows.astype(table.dtype), mode='drop')

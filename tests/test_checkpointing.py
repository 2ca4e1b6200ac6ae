"""Tests for tiny_recursive.checkpointing (Orbax train state and model export)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny_recursive import checkpointing

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_state(value: float, with_ema: bool = True):
  """A small pytree shaped like the trainer's state."""
  params = {'w': jnp.full((4, 3), value, jnp.float32),
            'b': jnp.arange(3, dtype=jnp.float32) + value}
  return {
      'params': params,
      'ema_params': (jax.tree.map(lambda x: x * 0.5, params)
                     if with_ema else None),
      'constants': {'h_init': jnp.full((3,), value, jnp.bfloat16)},
      'puzzle_table': jnp.full((5, 3), value, jnp.float32),
      'opt_state': ({'mu': jnp.full((4, 3), -value)}, jnp.array(7, jnp.int32)),
      'carry': {'z': jnp.full((2, 3), value, jnp.bfloat16),
                'halted': jnp.array([True, False])},
      'step': jnp.array(int(value), jnp.int32),
      'rng': jax.random.key_data(jax.random.key(int(value))),
  }


def _assert_trees_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert a.dtype == e.dtype and a.shape == e.shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def _abstract(state):
  return jax.eval_shape(lambda: state)


def test_round_trip_restores_state_iterator_and_step(tmp_path):
  state = _train_state(3.0)
  iterator_state = {'epoch': 2, 'position': 123, 'seed': [1, 2]}
  with checkpointing.Checkpointer(tmp_path, save_interval_steps=10) as ckpt:
    assert ckpt.restore_latest(_abstract(state)) is None
    assert not ckpt.save(5, state, iterator_state)  # Off the interval.
    assert ckpt.save(10, state, iterator_state, {'eval/acc': np.float32(0.5)})
    assert ckpt.save(13, state, iterator_state, force=True)
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [10, 13]
    with pytest.raises(TypeError, match='data_iterator_state must be JSON'):
      ckpt.save(20, state, b'raw bytes')
  # A fresh instance (as after a restart) finds the checkpoint.
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    restored, restored_iterator, step = ckpt.restore_latest(_abstract(state))
    _, _, metadata = ckpt.restore(10, _abstract(state))
  assert step == 13
  assert restored_iterator == iterator_state
  _assert_trees_equal(restored, state)
  assert restored['constants']['h_init'].dtype == jnp.bfloat16
  assert metadata['step'] == 10
  assert metadata['metrics'] == {'eval/acc': 0.5}


def test_keeps_latest_k_and_best(tmp_path):
  state = _train_state(1.0, with_ema=False)
  accuracies = {1: 0.1, 2: 0.9, 3: 0.3, 4: 0.2, 5: None, 6: 0.4}
  with checkpointing.Checkpointer(tmp_path, save_interval_steps=1,
                                  max_to_keep=2,
                                  best_metric='eval/acc') as ckpt:
    for step, accuracy in accuracies.items():
      metrics = {'train/loss': 1.0}
      if accuracy is not None:
        metrics['eval/acc'] = accuracy
      ckpt.save(step, state, {'step': step}, metrics)
      ckpt.wait_until_finished()
    assert ckpt.all_steps() == [2, 5, 6]
    assert ckpt.best_step() == 2
  # Retention still knows the best step after a restart.
  with checkpointing.Checkpointer(tmp_path, save_interval_steps=1,
                                  max_to_keep=2,
                                  best_metric='eval/acc') as ckpt:
    ckpt.save(7, state, None, {'eval/acc': 0.5})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [2, 6, 7]
    assert ckpt.best_step() == 2


def test_keep_best_min_mode(tmp_path):
  state = _train_state(1.0, with_ema=False)
  with checkpointing.Checkpointer(tmp_path, save_interval_steps=1,
                                  max_to_keep=1, best_metric='loss',
                                  best_mode='min') as ckpt:
    for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 5.0)]:
      ckpt.save(step, state, None, {'loss': loss})
      ckpt.wait_until_finished()
    assert ckpt.all_steps() == [2, 4]


# Tensorstore may report a failed read from its own thread after the event
# loop of the failed restore has closed; that message is not an error here.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('damage', ['delete_data', 'truncate_data',
                                    'delete_metadata', 'bad_iterator_json'])
def test_corrupt_latest_falls_back_with_warning(tmp_path, monkeypatch,
                                                damage):
  with checkpointing.Checkpointer(tmp_path, save_interval_steps=1) as ckpt:
    for step in (1, 2):
      ckpt.save(step, _train_state(float(step)), {'position': step})
  step_dir = tmp_path / 'checkpoints' / '2'
  data_files = [p for p in (step_dir / 'state').rglob('*')
                if p.is_file() and p.parent.name == 'd']
  assert data_files
  if damage == 'delete_data':
    for path in data_files:
      path.unlink()
  elif damage == 'truncate_data':
    for path in data_files:
      with open(path, 'r+b') as f:
        f.truncate(7)
  elif damage == 'delete_metadata':
    (step_dir / 'state' / '_METADATA').unlink()
  else:
    (step_dir / 'data_iterator' / 'process_0.json').write_text('{"sta')
  # An uncommitted save of a newer step is ignored as well.
  partial = tmp_path / 'checkpoints' / '3.orbax-checkpoint-tmp-99'
  partial.mkdir()
  (partial / 'state').mkdir()

  warnings = []
  original_warning = checkpointing.logging.warning

  def record_warning(msg, *args, **kwargs):
    warnings.append(msg % args)
    original_warning(msg, *args, **kwargs)

  monkeypatch.setattr(checkpointing.logging, 'warning', record_warning)
  with checkpointing.Checkpointer(tmp_path, save_interval_steps=1) as ckpt:
    restored, iterator_state, step = ckpt.restore_latest(
        _abstract(_train_state(0.0)))
    assert step == 1 and iterator_state == {'position': 1}
    _assert_trees_equal(restored, _train_state(1.0))
    # The damaged step is set aside, so training can save step 2 again.
    assert ckpt.all_steps() == [1]
    assert ckpt.save(2, _train_state(5.0), None, force=True)
  assert any('step 2' in w and 'falling back' in w for w in warnings), warnings


_SHARDED_RESTORE = textwrap.dedent('''
    import sys
    import jax, numpy as np, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from tiny_recursive import checkpointing
    assert jax.device_count() == 8
    workdir = sys.argv[1]
    state = {'params': {'w': jnp.arange(384, dtype=jnp.float32).reshape(64, 6)},
             'puzzle_table': jnp.arange(64, dtype=jnp.float32).reshape(16, 4),
             'carry': jnp.arange(32, dtype=jnp.bfloat16).reshape(8, 4)}
    with checkpointing.Checkpointer(workdir, save_interval_steps=1) as ckpt:
      ckpt.save(1, state, {'i': 1})
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('data', 'model'))
    shardings = {'params': {'w': NamedSharding(mesh, P('data', 'model'))},
                 'puzzle_table': NamedSharding(mesh, P()),
                 'carry': NamedSharding(mesh, P('data'))}
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        state, shardings)
    with checkpointing.Checkpointer(workdir) as ckpt:
      restored, iterator_state, step = ckpt.restore_latest(abstract)
    assert step == 1 and iterator_state == {'i': 1}
    for key in state:
      a, e = restored[key], state[key]
      if isinstance(a, dict):
        a, e = a['w'], e['w']
      assert a.sharding.is_equivalent_to(
          jax.tree.leaves(shardings[key])[0], a.ndim), (key, a.sharding)
      assert a.dtype == e.dtype
      np.testing.assert_array_equal(np.asarray(a), np.asarray(e))
    assert len(restored['params']['w'].addressable_shards) == 8
    print('SHARDED_RESTORE_OK')
''')


def test_restore_into_sharding_on_8_devices(tmp_path):
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      ' --xla_force_host_platform_device_count=8').strip()
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = _REPO_ROOT + os.pathsep + env.get('PYTHONPATH', '')
  result = subprocess.run(
      [sys.executable, '-c', _SHARDED_RESTORE, str(tmp_path)], env=env,
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'SHARDED_RESTORE_OK' in result.stdout


def test_save_model_load_model_round_trip(tmp_path):
  state = _train_state(2.0)
  config = {'hidden_size': 3, 'arch': 'trm', 'forward_dtype': 'bfloat16'}
  export = tmp_path / 'export'
  checkpointing.save_model(export, state['params'], state['constants'],
                           state['puzzle_table'], config)
  params, constants, table, loaded_config = checkpointing.load_model(export)
  _assert_trees_equal(params, state['params'])
  _assert_trees_equal(constants, state['constants'])
  np.testing.assert_array_equal(np.asarray(table),
                                np.asarray(state['puzzle_table']))
  assert loaded_config == config
  # Overwriting replaces the export and leaves no temporary directories.
  checkpointing.save_model(export, state['ema_params'], state['constants'],
                           state['puzzle_table'], {'hidden_size': 4})
  params, _, _, loaded_config = checkpointing.load_model(export)
  _assert_trees_equal(params, state['ema_params'])
  assert loaded_config == {'hidden_size': 4}
  assert sorted(p.name for p in tmp_path.iterdir()) == ['export']
  assert json.loads((export / 'model_config.json').read_text()) == {
      'hidden_size': 4}


@pytest.mark.parametrize('with_ema', [True, False])
def test_load_model_from_training_checkpoint(tmp_path, with_ema, caplog):
  config = {'hidden_size': 3}
  with checkpointing.Checkpointer(tmp_path, save_interval_steps=1,
                                  model_config=config) as ckpt:
    ckpt.save(1, _train_state(1.0, with_ema), None)
    ckpt.save(2, _train_state(2.0, with_ema), None)
  expected = _train_state(2.0, with_ema)
  expected_params = expected['ema_params'] if with_ema else expected['params']
  for location in (tmp_path, tmp_path / 'checkpoints',
                   tmp_path / 'checkpoints' / '2'):
    params, constants, table, loaded_config = checkpointing.load_model(
        location)
    _assert_trees_equal(params, expected_params)
    _assert_trees_equal(constants, expected['constants'])
    np.testing.assert_array_equal(np.asarray(table),
                                  np.asarray(expected['puzzle_table']))
    assert loaded_config == config
  params, *_ = checkpointing.load_model(tmp_path / 'checkpoints' / '1')
  _assert_trees_equal(
      params, _train_state(1.0, with_ema)['ema_params' if with_ema else
                                          'params'])
  # No warning about the step metadata that lives beside the item, not in it.
  assert not [r for r in caplog.records if 'Metadata file' in r.getMessage()]


def test_load_model_rejects_unknown_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match='neither a model export'):
    checkpointing.load_model(tmp_path)


def test_check_workdir_writable(tmp_path):
  checkpointing.check_workdir_writable(tmp_path / 'new' / 'workdir')
  assert (tmp_path / 'new' / 'workdir').is_dir()
  assert not list((tmp_path / 'new' / 'workdir').iterdir())
  blocker = tmp_path / 'file.txt'
  blocker.write_text('not a directory')
  with pytest.raises(checkpointing.WorkdirNotWritableError,
                     match='file.txt/sub'):
    checkpointing.check_workdir_writable(blocker / 'sub')


@pytest.mark.skipif(os.geteuid() == 0,
                    reason='root ignores directory permissions')
def test_check_workdir_read_only(tmp_path):
  read_only = tmp_path / 'ro'
  read_only.mkdir()
  read_only.chmod(0o500)
  try:
    with pytest.raises(checkpointing.WorkdirNotWritableError,
                       match='write a file'):
      checkpointing.check_workdir_writable(read_only)
  finally:
    read_only.chmod(0o700)


def test_sigterm_and_request_stop(tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    previous = signal.getsignal(signal.SIGTERM)
    try:
      assert ckpt.install_stop_handlers()
      assert not ckpt.should_stop(1)
      os.kill(os.getpid(), signal.SIGTERM)
      assert ckpt.should_stop(2)
    finally:
      signal.signal(signal.SIGTERM, previous)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    assert not ckpt.should_stop(1)
    ckpt.request_stop()
    assert ckpt.should_stop(1)


def test_close_restores_the_previous_signal_handlers(tmp_path):
  previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
  checkpointer = checkpointing.Checkpointer(tmp_path)
  assert checkpointer.install_stop_handlers()
  for signum, handler in previous.items():
    assert signal.getsignal(signum) is not handler
  checkpointer.close()
  for signum, handler in previous.items():
    assert signal.getsignal(signum) is handler


def test_first_ctrl_c_requests_a_stop_and_the_second_interrupts(tmp_path):
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with checkpointing.Checkpointer(tmp_path) as ckpt:
      assert ckpt.install_stop_handlers()
      os.kill(os.getpid(), signal.SIGINT)
      assert ckpt.should_stop(1)
      assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # The handler runs between bytecodes, at the latest here.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, previous)


def test_an_ignored_ctrl_c_stays_ignored(tmp_path):
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    with checkpointing.Checkpointer(tmp_path) as ckpt:
      assert ckpt.install_stop_handlers()
      assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
      os.kill(os.getpid(), signal.SIGINT)
      assert not ckpt.should_stop(1)
  finally:
    signal.signal(signal.SIGINT, previous)


def test_model_config_of_checkpoints_written_before_the_typed_config(tmp_path):
  """Checkpoints store `model_config` as `config.model`'s keys plus seq_len, vocab_size and
  num_puzzle_identifiers, as the trainer wrote it before `ModelConfig` existed; the typed
  config reads it back and writes the same dict."""
  # pylint: disable=g-import-not-at-top
  from experiments.configs import tiny
  from tiny_recursive import model as model_lib
  # pylint: enable=g-import-not-at-top
  config = tiny.get_config()
  old_metadata = dict(config.model.to_dict(), seq_len=config.data.seq_len,
                      vocab_size=config.data.vocab_size, num_puzzle_identifiers=7)
  with checkpointing.Checkpointer(tmp_path, model_config=old_metadata) as ckpt:
    ckpt.save(1, _train_state(1.0), None, force=True)
  _, _, _, stored = checkpointing.load_model(tmp_path)
  typed = model_lib.ModelConfig.from_dict(stored)
  assert typed == model_lib.ModelConfig.create(
      config.model, seq_len=81, vocab_size=11, num_puzzle_identifiers=7)
  assert typed.to_dict() == old_metadata
  assert model_lib.RecursiveModel(typed).num_puzzle_identifiers == 7
  with pytest.raises(ValueError, match=r"missing keys \['halt_max_steps'\]"):
    model_lib.ModelConfig.from_dict({k: v for k, v in stored.items() if k != 'halt_max_steps'})
  # Keys added later read back as the program such checkpoints ran, not as today's defaults.
  older = {k: v for k, v in stored.items()
           if k not in ('activation_layout', 'fused_sequence_mlp', 'cudnn_seq_multiple',
                        'fused_swiglu', 'pad_sequence_once', 'sequence_mlp_kernel',
                        'swiglu_gradient_kernel')}
  typed = model_lib.ModelConfig.from_dict(older)
  assert (typed.activation_layout, typed.fused_sequence_mlp, typed.cudnn_seq_multiple,
          typed.fused_swiglu, typed.pad_sequence_once, typed.sequence_mlp_kernel,
          typed.swiglu_gradient_kernel) == ('batch_major', False, 64, False, False, 'triton',
                                            False)


_SAVE_ON_TWO_DEVICES = r"""
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tiny_recursive import checkpointing
mesh = Mesh(np.asarray(jax.devices()), ('data',))
put = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
state = {'params': {'w': put(jnp.arange(8.0).reshape(4, 2), P())},
         'ema_params': {'w': put(jnp.arange(8.0).reshape(4, 2) + 1, P())},
         'constants': {'z': put(jnp.ones(3, jnp.bfloat16), P())},
         'puzzle_table': put(jnp.full((5, 2), 0.5), P()),
         'carry': {'z_H': put(jnp.zeros((4, 3)), P('data'))}}
with checkpointing.Checkpointer(sys.argv[1], async_save=False) as checkpointer:
  checkpointer.save(3, state, force=True)
print('SAVED')
"""


def test_a_checkpoint_saved_on_two_devices_loads_on_one(tmp_path):
  """`load_model` (predict, solve, export) reads a multi-device checkpoint on one device."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2',
             PYTHONPATH=_REPO_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  result = subprocess.run([sys.executable, '-c', _SAVE_ON_TWO_DEVICES, str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0 and 'SAVED' in result.stdout, result.stderr[-3000:]
  params, constants, table, _ = checkpointing.load_model(str(tmp_path))
  np.testing.assert_array_equal(params['w'], np.arange(8.0).reshape(4, 2) + 1)  # EMA.
  assert constants['z'].dtype == jnp.bfloat16
  np.testing.assert_array_equal(table, np.full((5, 2), 0.5))

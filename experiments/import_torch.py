r"""Imports a reference PyTorch checkpoint as a model export (TRM_REFERENCE.md §11).

  python -m experiments.import_torch --torch_checkpoint=step_100000.pt \
      --config=sudoku_extreme_mlp --output=/tmp/trm_sudoku_mlp

The config names the architecture (`config.model`) and the data dimensions
(`config.data.seq_len`, `config.data.vocab_size`); the number of puzzle identifiers is read
from the checkpoint's `puzzle_emb.weights`. The export is read back by `experiments.predict`
and by `checkpointing.load_model`.
"""

import os

from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from experiments import cli
from tiny_recursive import checkpointing
from tiny_recursive import torch_import

def import_checkpoint(config: ml_collections.ConfigDict, torch_checkpoint: str, output: str,
                      overwrite: bool = False) -> int:
  """Converts `torch_checkpoint` and writes a model export to `output`.

  Returns:
    The number of puzzle identifiers of the imported table.

  Raises:
    FileExistsError: if `output` is a non-empty directory (or a file) and not `overwrite`.
    ValueError: if the state dict does not match `config.model` (see torch_import).
  """
  if os.path.exists(output) and not overwrite:
    if not os.path.isdir(output) or os.listdir(output):
      raise FileExistsError(
          f'--output={output} exists and is not empty; pass --overwrite to replace it.')
  state_dict = torch_import.load_torch_state_dict(torch_checkpoint)
  num_ids = torch_import.num_puzzle_identifiers(state_dict)
  try:
    params, constants, puzzle_table = torch_import.state_dict_to_variables(
        state_dict, config.model, seq_len=config.data.seq_len,
        vocab_size=config.data.vocab_size)
  except ValueError as e:
    raise ValueError(f'{torch_checkpoint}: {e}') from e
  if os.path.isdir(output) and not os.listdir(output):
    os.rmdir(output)  # save_model renames its finished directory into place.
  checkpointing.save_model(output, params, constants, puzzle_table, config.model.to_dict())
  logging.info('Imported %s (%d puzzle identifiers) to %s.', torch_checkpoint, num_ids, output)
  return num_ids


def define_flags() -> None:
  """Defines the command-line flags (only when run as a program, so the module imports cleanly)."""
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config: a name from experiments/configs or a path.')
  flags.DEFINE_string('torch_checkpoint', None, 'Reference state dict written by torch.save.')
  flags.DEFINE_string('output', None, 'Directory of the model export to write.')
  flags.DEFINE_bool('overwrite', False, 'Replace a non-empty --output directory.')
  flags.mark_flags_as_required(['config', 'torch_checkpoint', 'output'])


def main(argv):
  cli.no_positional_arguments(argv)
  f = flags.FLAGS
  num_ids = import_checkpoint(f.config, f.torch_checkpoint, f.output, f.overwrite)
  print(f'Wrote {f.output} ({num_ids} puzzle identifiers).')


if __name__ == '__main__':
  define_flags()
  cli.run(main)

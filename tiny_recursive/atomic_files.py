"""Writing local files so that a crash never leaves a half-written one behind."""

import os
import tempfile
from typing import Callable


def write_atomically(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
  """Calls `write(temporary_path)` in `path`'s directory, then renames it onto `path`.

  The temporary file gets the usual permissions (0666 less the umask) rather than mkstemp's
  0600, and is removed if `write` fails.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temp_path = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.tmp-',
                                       suffix=os.path.splitext(path)[1], dir=directory)
  os.close(handle)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(temp_path, 0o666 & ~umask)
  try:
    write(temp_path)
    os.replace(temp_path, path)
  except BaseException:
    if os.path.exists(temp_path):
      os.remove(temp_path)
    raise

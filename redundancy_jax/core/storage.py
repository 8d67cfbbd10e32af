"""Results files: atomic JSON and CSV writes, JSON lines, and parameter pytrees as flat `.npz` files. In a
multi-process run only process 0 writes (`parallel.is_writer`); the others' writes are no-ops."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import zipfile
import zlib
from typing import Any, Iterable, Sequence

import numpy as np

from redundancy_jax.core.errors import BadOption, DamagedFile, MissingFile

REWRITE = "delete it and rerun the command that wrote it"  # the fix for a damaged file that is an output


def _read_umask() -> int:
  """This process's umask, read without changing it (os.umask sets it process-wide, racing other threads);
  0o022 where /proc cannot tell."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  return 0o022


def _writer() -> bool:
  import jax  # the process index of a multi-process run

  return jax.process_index() == 0


def atomic_write(path: str, write) -> None:
  """Calls `write(file)` on a temporary file beside `path`, then renames it onto `path` (process 0 only)."""
  if not _writer():
    return
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.chmod(tmp, 0o666 & ~_read_umask())  # mkstemp creates 0600; results are meant to be shared
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON, atomically (a reader never sees half a file)."""
  atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, default=_jsonable).encode()))


def jsonable(tree: Any, decimals: int | None = None) -> Any:
  """`tree` with arrays as lists and NumPy scalars as Python numbers, floating arrays rounded to
  `decimals` when given (scalars, such as thresholds and config values, are kept exactly)."""
  if isinstance(tree, dict):
    return {k: jsonable(v, decimals) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [jsonable(v, decimals) for v in tree]
  if isinstance(tree, np.generic):
    return tree.item()
  if hasattr(tree, "__array__"):  # NumPy and JAX arrays
    a = np.asarray(tree)
    if decimals is not None and np.issubdtype(a.dtype, np.floating):
      a = np.round(a, decimals)
    return a.tolist()
  return tree


def csv_value(value: Any, digits: int = 6) -> Any:
  """A CSV cell: floats to `digits` significant digits, and magnitudes below 1e-12 (rounding noise, such
  as the std of equal accuracies) as 0; other values as they are."""
  if isinstance(value, (float, np.floating)):
    return 0 if abs(value) < 1e-12 else f"{value:.{digits}g}"
  return value


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
  """Writes a CSV file with `header` and `rows`, numbers rounded by `csv_value`, atomically."""
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(header)
  writer.writerows([csv_value(v) for v in row] for row in rows)
  atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def read_json(path: str, fix: str = REWRITE) -> Any:
  """The JSON in `path`; `DamagedFile` naming it and `fix` when it cannot be parsed (a truncated write of
  another program, a disk error)."""
  try:
    with open(path, "rb") as f:
      return json.loads(f.read())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DamagedFile(path, fix, e) from None


def append_jsonl(path: str, obj: Any) -> None:
  """Appends one JSON object as a line (process 0 only)."""
  if not _writer():
    return
  with open(path, "a") as f:
    f.write(json.dumps(obj, default=_jsonable) + "\n")


def _jsonable(x):
  if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "__array__"):
    return jsonable(x)
  raise TypeError(f"not JSON serialisable: {type(x)}")


def flatten(tree: dict) -> dict[str, np.ndarray]:
  """{"fc1": {"kernel": a}} -> {"fc1/kernel": a}."""
  return {k: np.asarray(v) for k, v in flatten_keys(tree).items()}


def unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def save_tree(path: str, tree: dict) -> None:
  """Saves a nested dict of arrays as an uncompressed `.npz`, atomically."""
  atomic_write(path, lambda f: np.savez(f, **flatten(tree)))


def load_tree(path: str, fix: str = REWRITE) -> dict:
  """Loads what `save_tree` wrote (never unpickles); `DamagedFile` naming it and `fix` when it cannot be
  read."""
  try:
    with np.load(path, allow_pickle=False) as z:
      return unflatten({k: z[k] for k in z.files})
  except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError) as e:
    raise DamagedFile(path, fix, e) from None


# ----------------------------------------------------------------------------- a user's trained variables

VARIABLE_FORMATS = "an orbax checkpoint folder, a flax.serialization msgpack file (.msgpack) or an .npz of '/'-joined paths"


def load_variables(path: str, like: dict) -> dict:
  """Trained variables ({"params", "batch_stats"?}) for a network whose own have the structure and shapes
  of `like` (e.g. `jax.eval_shape` of its init), from `path`: an orbax checkpoint folder (of the variables,
  of their "params" alone, or a training state holding "params" and "batch_stats"), a flax.serialization
  msgpack file or an .npz of "/"-joined paths (`save_tree`). Anything else, or another structure, is a
  `BadOption` naming what differs."""
  import jax

  if not os.path.exists(path):
    raise MissingFile(f"--variables={path}: no such file or folder; give {VARIABLE_FORMATS}")
  if os.path.isdir(path):
    import orbax.checkpoint as ocp

    try:
      tree = ocp.StandardCheckpointer().restore(os.path.abspath(path))
    except Exception as e:
      raise DamagedFile(path, f"it is not an orbax checkpoint folder that can be read; give {VARIABLE_FORMATS}",
                        e) from None
  elif path.endswith(".npz"):
    tree = load_tree(path, f"give {VARIABLE_FORMATS}")
  else:
    from flax import serialization

    try:
      with open(path, "rb") as f:
        tree = serialization.msgpack_restore(f.read())
    except Exception as e:
      raise DamagedFile(path, f"it is not a flax.serialization msgpack file; give {VARIABLE_FORMATS}", e) from None
  tree = jax.tree.map(np.asarray, _string_keys(tree))
  expected = _string_keys(jax.tree.map(lambda a: tuple(a.shape), like))
  if "params" not in tree or not isinstance(tree["params"], dict):
    tree = {"params": tree}
  tree = {k: tree[k] for k in expected if k in tree}
  got = jax.tree.map(lambda a: tuple(a.shape), tree)
  if got != expected:
    missing = sorted(set(flatten_keys(expected)) - set(flatten_keys(got)))
    extra = sorted(set(flatten_keys(got)) - set(flatten_keys(expected)))
    wrong = sorted(k for k, v in flatten_keys(got).items() if k in flatten_keys(expected) and
                   flatten_keys(expected)[k] != v)
    raise BadOption(f"--variables={path} does not hold this network's variables: missing {missing[:5] or 'none'}, "
                    f"unexpected {extra[:5] or 'none'}, other shapes {wrong[:5] or 'none'}; they must be the "
                    f"variables of the --model given ({VARIABLE_FORMATS})")
  return tree


def _string_keys(tree):
  if isinstance(tree, dict):
    return {str(k): _string_keys(v) for k, v in tree.items()}
  return tree


def flatten_keys(tree: dict, prefix: str = "") -> dict:
  """{"a/b": leaf} of a nested dict (leaves of any type)."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten_keys(value, f"{prefix}{key}/"))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def checksum(path: str) -> str:
  """The SHA-256 of a file, or of a folder's files (names and contents, in sorted order)."""
  import hashlib

  h = hashlib.sha256()
  files = [path] if os.path.isfile(path) else sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
  for name in files:
    h.update(os.path.relpath(name, path).encode())
    with open(name, "rb") as f:
      h.update(f.read())
  return h.hexdigest()

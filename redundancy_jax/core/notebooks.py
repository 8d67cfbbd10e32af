"""Executing the notebooks of `notebooks/`: in the tests, and to refresh their committed outputs.

  python -m redundancy_jax.core.notebooks [colab_tpu.ipynb api_tour.ipynb]

re-executes the notebooks in place on this machine's CPU with `CPU_ENV` (4 fake XLA devices), so GitHub
and Colab show their figures before anyone runs them. A notebook's parameters cell (tagged
`parameters`) can be overridden papermill-style: a cell tagged `injected-parameters` with the new values
goes right after it. An executed notebook records in its metadata the digest of its code cells (the
injected one excluded) and the parameters it ran with: `stale` tells committed outputs that no longer
belong to the code.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import re
import sys
import time
from redundancy_jax.core.errors import BadOption

FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "notebooks")
NOTEBOOKS = ("colab_tpu.ipynb", "api_tour.ipynb")
# How the tests and the committed outputs run them: the CPU, with 4 fake devices to shard over.
CPU_ENV = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
METADATA = "redundancy_jax"


def code_digest(nb) -> str:
  """SHA-256 of the notebook's code cells (injected parameters excluded), in order."""
  h = hashlib.sha256()
  for cell in nb.cells:
    if cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", []):
      h.update(cell.source.encode("utf-8") + b"\0")
  return h.hexdigest()


def with_parameters(nb, parameters: dict):
  """A copy of `nb` with a cell setting `parameters` right after its `parameters`-tagged cell."""
  import nbformat

  nb = copy.deepcopy(nb)
  index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
  if index is None:
    raise BadOption("the notebook has no cell tagged 'parameters' to override")
  unknown = [k for k in parameters if f"{k} =" not in nb.cells[index].source]
  if unknown:
    raise BadOption(f"{', '.join(unknown)} not set in the parameters cell:\n{nb.cells[index].source}")
  source = "# Parameters injected by redundancy_jax.core.notebooks\n" + "".join(
    f"{k} = {v!r}\n" for k, v in parameters.items())
  cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
  nb.cells.insert(index + 1, cell)
  return nb


@contextlib.contextmanager
def _environment(env: dict):
  """`os.environ` updated by `env` (the kernel inherits it) while inside."""
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def execute(nb, *, cwd: str, parameters: dict | None = None, env: dict | None = None, timeout: int = 900):
  """Runs `nb` top to bottom in a fresh python3 kernel started in `cwd`; returns the executed notebook
  (nbclient raises `CellExecutionError` at the first failing cell)."""
  import nbclient

  if parameters:
    nb = with_parameters(nb, parameters)
  with _environment({**CPU_ENV, **(env or {})}):
    begin = time.time()
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
  nb.metadata[METADATA] = {"code_sha256": code_digest(nb), "parameters": parameters or {},
                           "environment": {**CPU_ENV, **(env or {})}, "seconds": round(time.time() - begin, 1)}
  return nb


def errors(nb) -> list[str]:
  """Every error output of `nb`, as 'cell N: ename: evalue'."""
  return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, cell in enumerate(nb.cells)
          if cell.cell_type == "code" for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def stale(nb) -> str | None:
  """Why `nb`'s outputs do not belong to its code (None when they do)."""
  recorded = nb.metadata.get(METADATA, {}).get("code_sha256")
  if recorded is None:
    return "it was never executed by `python -m redundancy_jax.core.notebooks`"
  if recorded != code_digest(nb):
    return "a code cell changed after its outputs were computed; rerun `python -m redundancy_jax.core.notebooks`"
  unrun = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count") is None]
  if unrun:
    return f"code cells {unrun} carry no execution count"
  failed = errors(nb)
  return f"its outputs hold errors: {failed}" if failed else None


def with_repository(nb):
  """`nb` with its install cell's `REPO = "..."` line naming `redundancy_jax.REPOSITORY` (the one place the
  project's address is written)."""
  from redundancy_jax import REPOSITORY

  for cell in nb.cells:
    if cell.cell_type == "code" and "REPO = " in cell.source:
      cell.source = re.sub(r'REPO = "[^"]*"', f'REPO = "{REPOSITORY}"', cell.source)
  return nb


def main(names: list[str]) -> None:
  import nbformat

  for name in names or NOTEBOOKS:
    path = os.path.join(FOLDER, name)
    print(f"executing {path} ...", flush=True)
    nb = execute(with_repository(nbformat.read(path, as_version=4)), cwd=FOLDER)
    nbformat.write(nb, path)
    print(f"  done in {nb.metadata[METADATA]['seconds']:.0f}s; outputs written into {path}")


if __name__ == "__main__":
  main(sys.argv[1:])

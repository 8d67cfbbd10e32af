"""The notebooks: executed top to bottom on CPU with 4 fake devices (QUICK, bundled data), their committed
outputs current and error-free, and the README's badge pointing at them."""

import json
import os
import re

import nbformat
import numpy as np
import pytest

from redundancy_jax.core import notebooks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name):
  return nbformat.read(os.path.join(notebooks.FOLDER, name), as_version=4)


def _tagged(nb, tag):
  return next(c for c in nb.cells if tag in c.metadata.get("tags", []))


def _mimes(cell):
  return [m for o in cell.outputs if o.output_type in ("display_data", "execute_result") for m in o.data]


def _text(nb):
  return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.e2e
def test_colab_notebook_runs_on_cpu_with_four_devices(tmp_path):
  params = {"QUICK": True, "MODEL": "lenet", "NUM_SEEDS": 2, "WORKDIR": "runs/nb"}
  nb = notebooks.execute(_read("colab_tpu.ipynb"), cwd=str(tmp_path), parameters=params)
  assert notebooks.errors(nb) == []
  text = _text(nb)
  assert "CpuDevice(id=3)" in text  # XLA_FLAGS reached the kernel
  assert "2 replica(s), 4 device(s)" in text  # the replicas' batch sharded over the 4 devices
  root = tmp_path / "runs" / "nb"
  train = json.loads((root / "stages" / "lenet.train.json").read_text())
  trained = train["config"]["config"]  # the stage's config: the training run's TrainConfig
  assert trained["num_devices"] == 4 and trained["num_seeds"] == 2 and trained["data_source"] == "bundled"
  printed = re.search(r"test accuracy per seed: (.*)", text).group(1)
  assert printed == ", ".join(f"{100 * a:.2f}%" for a in train["result"]["test_accuracy"])
  assert "image/png" in _mimes(_tagged(nb, "figure2"))
  assert "text/html" in _mimes(_tagged(nb, "dynamics"))
  spectra = _tagged(nb, "spectra")
  assert _mimes(spectra).count("image/png") == 2  # ESD against MP, residuals with the elbow
  markdown = next(o.data["text/markdown"] for o in spectra.outputs if "text/markdown" in o.get("data", {}))
  assert "| lenet" in markdown  # the Figure 8 row
  for stage in ("prune", "dynamics", "subspace"):
    assert (root / "stages" / f"lenet.{stage}.json").exists()
  assert nb.metadata[notebooks.METADATA]["code_sha256"] == notebooks.code_digest(_read("colab_tpu.ipynb"))


@pytest.mark.e2e
def test_api_tour_prints_the_values_worked_out_by_hand(tmp_path):
  nb = notebooks.execute(_read("api_tour.ipynb"), cwd=str(tmp_path))
  assert notebooks.errors(nb) == []
  text = _text(nb)
  assert "max_mag  [3 1 2 0]" in text and "min_mag  [0 2 1 3]" in text  # by norm: 0.5, 1, 2, 3
  assert "max_l1   [3 1 2 0]" in text  # L1 norms 3, 1, 2, 0.5
  assert "max_first [1 3 2 0]" in text  # the notebook's own criterion: first weights 3, 0, 2, 0 (ties: lower index)
  assert "edges (i, j, weight): [[0.0, 2.0, 1.0]]" in text  # only the parallel pair
  residuals = [float(v) for v in re.search(r"residuals: \[([^\]]*)\]", text).group(1).split()]
  np.testing.assert_allclose(residuals, [1, 1.25 / 14.25, 0.25 / 14.25, 0], atol=6e-4)  # printed to 3 decimals
  assert "lambda- = 0.250, lambda+ = 2.250" in text  # (1 -+ sqrt(1/4))^2


@pytest.mark.parametrize("name", notebooks.NOTEBOOKS)
def test_committed_outputs_belong_to_the_code(name):
  nb = _read(name)
  assert notebooks.stale(nb) is None, f"notebooks/{name}: {notebooks.stale(nb)}"
  assert "Traceback" not in _text(nb)
  if name == "colab_tpu.ipynb":  # GitHub and Colab show the figures before anyone runs it
    assert "image/png" in _mimes(_tagged(nb, "figure2"))
    assert _mimes(_tagged(nb, "spectra")).count("image/png") == 2


def test_stale_outputs_and_unknown_parameters_are_caught():
  nb = _read("api_tour.ipynb")
  edited = nbformat.from_dict(json.loads(json.dumps(nb)))
  next(c for c in edited.cells if c.cell_type == "code").source += "\nprint('changed')"
  assert "changed after its outputs" in notebooks.stale(edited)
  with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
    notebooks.with_parameters(nb, {"QUICK": True})
  with pytest.raises(ValueError, match="MODLE not set in the parameters cell"):
    notebooks.with_parameters(_read("colab_tpu.ipynb"), {"MODLE": "lenet"})


def test_readme_badge_only_for_a_published_repository_the_notebook_installs_from():
  from redundancy_jax import REPOSITORY

  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  badges = re.findall(r"\(https://colab\.research\.google\.com/github/([^/<>]+/[^/<>]+)/blob/main/notebooks/"
                      r"colab_tpu\.ipynb\)", readme)
  if REPOSITORY:  # published: the badge opens the notebook from where its install cell installs
    assert [f"https://github.com/{b}" for b in badges] == [REPOSITORY]
  else:  # not published: no badge leading nowhere, and the README says how to open it
    assert badges == [] and "File > Upload notebook" in readme and "pip wheel --no-deps" in readme
  install = _read("colab_tpu.ipynb").cells[1].source
  assert f'REPO = "{REPOSITORY}"' in install and install == notebooks.with_repository(_read("colab_tpu.ipynb")).cells[1].source
"""The subspace analysis on data: the rank sweep against an explicit loop, the rank grid, the figures'
titles, and the two commands (`experiments.subspace`, `experiments.subspace_table`) in-process."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import subspace as subspace_script, subspace_table as table_script
from redundancy_jax.analyses import spectral, subspace, subspace_table
from redundancy_jax.analyses.units import kernel_from_units, unit_matrix
from redundancy_jax.core import data
from redundancy_jax.core.config import override
from redundancy_jax.models import create_model, init_variables


_init = jax.jit(init_variables, static_argnums=(0, 2))  # one compilation instead of one per op


# ----------------------------------------------------------------------------- batched accuracy


def _explicit_accuracy(apply, variables, layer, W_new, x, y):
  kernel = variables["params"][layer]["kernel"]
  params = {**variables["params"], layer: {**variables["params"][layer],
                                           "kernel": kernel_from_units(W_new, kernel.shape)}}
  return int(np.sum(np.argmax(apply({**variables, "params": params}, x), -1) == y))


@pytest.mark.parametrize("model_name, layer, shape, factorized", [
  ("lenet", "fc1", (28, 28, 1), None),  # first layer, dense: factorized, from the raw input
  ("lenet", "fc1", (28, 28, 1), False),  # the same, W_k formed and the whole network run
  ("conv2", "conv1", (12, 12, 3), None),  # a first convolution: the whole network per k
  ("conv2", "conv2", (12, 12, 3), None),  # a convolution after a convolution
  ("conv2", "fc1", (12, 12, 3), None),  # dense after conv + pool + flatten
  ("conv2", "fc1", (12, 12, 3), False),
])
def test_rank_sweep_equals_explicit_loop(model_name, layer, shape, factorized):
  ds = data.random_images(0, shape=shape, n_train=8, n_val=8, n_test=150)
  model = create_model(model_name, width=0.25 if model_name == "conv2" else 1.0, mean=ds.mean, std=ds.std)
  variables = _init(model, jax.random.key(1), shape)
  init_params = _init(model, jax.random.key(2), shape)["params"]
  ks = [1, 3, 9]
  got = subspace.rank_sweep(model, variables, layer, ds.test_x, ds.test_y, ks, init_params=init_params,
                            data_chunk=64, k_chunk=2, factorized=factorized)
  x, n = ds.test_x, len(ds.test_y)  # the model standardises its uint8 input itself
  W, W0 = unit_matrix(variables, layer), unit_matrix(init_params, layer)
  apply = jax.jit(model.apply)
  full = int(np.sum(np.argmax(apply(variables, x), -1) == ds.test_y))
  assert round(got["full"] * n) == full
  for i, k in enumerate(ks):
    assert round(got["low_rank"][i] * n) == _explicit_accuracy(apply, variables, layer, spectral.low_rank(W, k),
                                                               x, ds.test_y)
    assert round(got["project_update"][i] * n) == _explicit_accuracy(
      apply, variables, layer, spectral.project_update(W, W0, k), x, ds.test_y)


def test_rank_sweep_rejects_bad_requests():
  model = create_model("lenet", width=0.05)
  variables = _init(model, jax.random.key(0), (4, 4, 1))
  x, y = np.zeros((3, 4, 4, 1), np.uint8), np.zeros(3, np.int32)
  with pytest.raises(spectral.SpectralError, match="layers: fc1, fc2, fc3"):
    subspace.rank_sweep(model, variables, "conv1", x, y, [1])
  with pytest.raises(spectral.SpectralError, match=r"outside 1\.\.14"):
    subspace.rank_sweep(model, variables, "fc1", x, y, [1, 15])  # fc1 is (15, 16)


def test_rank_grid():
  assert subspace.rank_grid(6).tolist() == [1, 2, 3, 4, 5]
  grid = subspace.rank_grid(512, num=20, include=[130])
  assert grid[0] == 1 and grid[-1] == 511 and 130 in grid and np.all(np.diff(grid) > 0)


def test_figures_are_titled_with_the_model_and_data():
  from redundancy_jax.plots import spectral as plots

  title = "lenet (replica 0) on mnist, bundled MNIST test set (8,000/1,000/1,000)"
  fig = plots.accuracy_figure([("fc1", {"ks": [1, 2, 4], "low_rank": [0.2, 0.5, 0.9], "full": 0.948}, 2)], 2, title)
  assert fig.get_suptitle() == title and fig.axes[0].get_title() == "fc1"
  assert "unchanged 94.80%" in fig.axes[0].get_legend_handles_labels()[1]
  plots.plt.close(fig)


# ----------------------------------------------------------------------------- the commands, in-process


@pytest.fixture(scope="module")
def lenet_seeds2(tmp_path_factory):
  """Two LeNet replicas trained 20 steps by `experiments.subspace`'s main, in the workdir the table
  command names for those settings (so the table reuses them)."""
  root = tmp_path_factory.mktemp("subspace")
  workdir = root / "lenet_seeds2_steps20"
  cfg = override(subspace.SubspaceConfig(), model="lenet", steps=20, eval_every=20, num_seeds=2, num_ranks=4,
                 workdir=str(workdir))
  subspace_script.main(cfg)
  return root, workdir


def test_subspace_experiment_smoke(lenet_seeds2):
  _, workdir = lenet_seeds2
  out = workdir / "subspace" / "fc1"
  results = json.loads((out / "results.json").read_text())
  fc1 = results["layers"]["fc1"]
  assert fc1["trained"]["m"] == 300 and len(fc1["trained"]["eigenvalues"]) == 300
  assert 1 <= fc1["trained"]["elbow"] <= 299 and fc1["trained"]["elbow"] in fc1["sweep"]["ks"]
  assert fc1["update"]["elbow"] in fc1["sweep"]["ks"]
  for name in ("esd", "residuals", "accuracy"):
    assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").exists()
  assert json.loads((out / "config.json").read_text())["training"]["num_seeds"] == 2


def test_subspace_experiment_names_valid_layers_before_training(tmp_path):
  with pytest.raises(spectral.SpectralError, match="unknown layer 'fc9' of lenet; Dense and Conv layers: fc1, fc2, fc3"):
    subspace_script.main(override(subspace.SubspaceConfig(), model="lenet", layer="fc9",
                                  workdir=str(tmp_path / "never")))
  assert not (tmp_path / "never").exists()


def test_subspace_table_smoke_lenet_mnist(lenet_seeds2, capsys):
  root, _ = lenet_seeds2
  table_script.main(override(subspace_table.SubspaceTableConfig(), models="lenet", steps=20, eval_every=20, num_seeds=2,
                             workdir_root=str(root)))
  stdout = capsys.readouterr().out
  assert "reusing the lenet trained in" in stdout  # the subspace command's run, found by its settings
  rows = json.loads((root / "subspace_table.json").read_text())["rows"]
  assert [r["model"] for r in rows] == ["lenet"] and len(rows[0]["seeds"]) == 2
  assert rows[0]["neurons"] == 300 and rows[0]["Q"] == pytest.approx(784 / 300)
  assert rows[0]["dataset"] == "mnist, bundled MNIST test set (8,000/1,000/1,000)"
  table = (root / "subspace_table.md").read_text()
  assert "| Number of neurons m | 300 |" in table and "a − a_proj" in table and table in stdout
  csv_text = (root / "subspace_table.csv").read_text()
  assert csv_text.startswith("model,") and ",2.61333," in csv_text  # Q = 784/300 to 6 significant digits


@pytest.mark.e2e
def test_subspace_table_smoke_cifar_model_on_generated_data(tmp_path):
  cfg = override(subspace_table.SubspaceTableConfig(), models="conv2", dataset="random_images", width=0.25, steps=10,
                 eval_every=10, num_seeds=2, workdir_root=str(tmp_path))
  table_script.main(cfg)
  rows = json.loads((tmp_path / "subspace_table.json").read_text())["rows"]
  assert rows[0]["model"] == "conv2" and rows[0]["neurons"] == 64 and len(rows[0]["seeds"]) == 2
  assert rows[0]["Q"] == pytest.approx(16 * 16 * 16 / 64)  # 16 channels of 16x16 after the pool
  assert os.path.isdir(tmp_path / "conv2_seeds2_w0.25_random_images_steps10")

"""Runs that cannot mislead: a reused model must match the options given (nothing written otherwise), a
failed first attempt does not lock its workdir, every results file names its experiment."""

import os

import pytest

from experiments import dynamics as dynamics_script, prune_sweep as prune_script, subspace as subspace_script
from experiments import subspace_table as table_script
from helpers import mtimes, quiet
from redundancy_jax.analyses import dynamics_run, prune_sweep, subspace, subspace_table
from redundancy_jax.core import config, data, storage, train
from redundancy_jax.core.config import TrainConfig, override
from redundancy_jax.core.runs import ConfigMismatch, Run


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
  """A small LeNet trained on the bundled MNIST through the quick-start command's main, and its log."""
  workdir = str(tmp_path_factory.mktemp("provenance") / "lenet")
  lines = []
  cfg = override(prune_sweep.PruneSweepConfig(), model="lenet", workdir=workdir, steps=250, level_step=50)
  prune_sweep.run(cfg, log=lines.append)
  return workdir, lines


@pytest.mark.parametrize("main, cfg_cls, extra", [
  (prune_script.main, prune_sweep.PruneSweepConfig, {"level_step": 50}),
  (subspace_script.main, subspace.SubspaceConfig, {"num_ranks": 4}),
  (dynamics_script.main, dynamics_run.DynamicsRunConfig, {"ticks": 5}),
])
def test_every_analysis_refuses_a_model_trained_on_other_data(lenet_run, main, cfg_cls, extra):
  workdir, _ = lenet_run
  before = mtimes(workdir)
  cfg = override(cfg_cls(), model="lenet", workdir=workdir, dataset="fashion_mnist", steps=250, **extra)
  with pytest.raises(ConfigMismatch) as error:
    main(cfg)
  message = str(error.value)
  assert "--dataset: the trained model used 'mnist', the flags ask 'fashion_mnist'" in message
  assert "--workdir=NEW" in message and "--dataset=mnist" in message  # the two fixes
  assert "--steps" not in message.split("\n")[1]  # only the differing option is listed
  assert mtimes(workdir) == before  # nothing written, nothing overwritten


def test_options_that_agree_reuse_the_model_and_outputs_record_it(lenet_run):
  workdir, _ = lenet_run
  lines = []
  subspace.run(override(subspace.SubspaceConfig(), model="lenet", workdir=workdir, dataset="mnist", num_ranks=4),
               log=lines.append)
  assert any(line.startswith("reusing the lenet trained in") for line in lines)
  out = storage.read_json(os.path.join(workdir, "subspace", "fc1", "config.json"))
  assert out["training"]["dataset"] == "mnist" and out["training"]["steps"] == 250
  assert out["training"]["val_size"] == 1000  # the bundled split's real validation size
  assert storage.read_json(os.path.join(workdir, "subspace", "fc1", "results.json"))["experiment"] == "subspace"
  assert storage.read_json(os.path.join(workdir, "prune_sweep", "results.json"))["experiment"] == "prune_sweep"
  assert storage.read_json(os.path.join(workdir, "results.json"))["experiment"] == "train"


def test_subspace_table_refuses_a_model_trained_with_another_seed(tmp_path):
  cfg = override(subspace_table.SubspaceTableConfig(), models=("lenet",), workdir_root=str(tmp_path), num_seeds=1, steps=100)
  table_script.main(cfg)
  with pytest.raises(ConfigMismatch, match="--seed: the trained model used 0, the flags ask 3"):
    table_script.main(override(cfg, seed=3))  # the workdir's name does not hold the seed
  with pytest.raises(ValueError, match="--models, not --model"):
    table_script.main(override(cfg, model="lenet"))


def _tiny_mnist():
  full = data.load_bundled_mnist(0)
  return data.Dataset("mnist", full.source, full.train_x[:320], full.train_y[:320], full.val_x[:100],
                      full.val_y[:100], full.test_x[:100], full.test_y[:100], 10, full.mean, full.std)


def test_a_failed_first_attempt_does_not_lock_the_workdir(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
  workdir = str(tmp_path / "run")
  with pytest.raises(data.DataError, match="no source for cifar10"):
    train.train(config.TrainConfig(model="lenet", dataset="cifar10"), workdir, log=quiet)
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  # a config.json left by an older attempt that never reached a checkpoint or a metrics line is fresh too
  storage.write_json(os.path.join(workdir, "config.json"), {"model": "lenet", "dataset": "cifar10"})
  cfg = config.TrainConfig(model="lenet", steps=20, batch_size=32, eval_every=10)
  results = train.train(cfg, workdir, dataset=_tiny_mnist(), log=quiet)
  assert results["config"]["steps"] == 20
  assert storage.read_json(os.path.join(workdir, "config.json"))["dataset"] == "mnist"
  # once a run has started, another config is an error listing the difference
  with pytest.raises(ConfigMismatch, match="--steps: the trained model used 20, the flags ask 30"):
    train.train(config.TrainConfig(model="lenet", steps=30, batch_size=32, eval_every=10), workdir,
                dataset=_tiny_mnist(), log=quiet)


def test_the_reuse_check_compares_only_the_options_given(tmp_path):
  """An unset option takes the run's value; a set one must equal it (the stored config is resolved)."""
  run = Run(str(tmp_path))
  storage.write_json(run.config_path, TrainConfig(model="conv2", steps=30, width=0.5).resolve().to_json())
  assert run.check_reuse(TrainConfig()).model == "conv2"  # nothing given: whatever is there
  assert run.check_reuse(TrainConfig(model="conv2", width=0.5, optimizer="adam")).steps == 30
  with pytest.raises(ConfigMismatch, match=r"--width: the trained model used 0.5, the flags ask 1.0"):
    run.check_reuse(TrainConfig(width=1.0))
  with pytest.raises(ConfigMismatch, match=r"--lr_drops: the trained model used \[\], the flags ask \[0.5\]"):
    run.check_reuse(TrainConfig(lr_drops=(0.5,)))
  assert run.check_reuse(TrainConfig(num_devices=4)).num_devices is None  # how a run is carried out: not compared

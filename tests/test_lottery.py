"""Lottery tickets: per-layer rates and masks on a hand-sized pytree, masked weights staying exactly zero
through training, reset and rewind values, the controls, and the script."""

import json

import jax
import numpy as np
import pytest

from experiments import lottery as script
from redundancy_jax.core import config, storage, train
from redundancy_jax.core.config import override, preset
from redundancy_jax.core.runs import ConfigMismatch, Run
from redundancy_jax.related import lottery
from redundancy_jax.models import create_model


def test_layer_rates_follow_spec():
  assert lottery.layer_rates("lenet", create_model("lenet")) == {"fc1": 0.2, "fc2": 0.2, "fc3": 0.1}
  rates = lottery.layer_rates("conv6", create_model("conv6"))
  assert rates["conv1"] == rates["conv6"] == 0.15 and rates["fc1"] == 0.2 and rates["fc3"] == 0.1
  assert lottery.layer_rates("conv2", create_model("conv2"))["conv2"] == 0.1


def test_prune_round_by_hand():
  params = {"fc1": {"kernel": np.array([[0.5, -0.1, 0.3, 2.0, -0.2], [0.05, 1.0, -0.7, 0.4, 0.6]]), "bias": np.ones(2)},
            "fc2": {"kernel": np.arange(1.0, 11.0).reshape(10, 1), "bias": np.ones(1)}}
  masks = lottery.full_masks(params)
  assert set(masks) == {"fc1", "fc2"} and masks["fc1"].all()
  out = lottery.prune_round(params, masks, {"fc1": 0.2, "fc2": 0.1})
  # fc1: 20% of 10 survivors = 2: |0.05| and |-0.1| go; fc2: 10% of 10 = 1: the value 1 goes
  assert (~out["fc1"]).sum() == 2 and not out["fc1"][1, 0] and not out["fc1"][0, 1]
  assert (~out["fc2"]).sum() == 1 and not out["fc2"][0, 0]
  again = lottery.prune_round(params, out, {"fc1": 0.2, "fc2": 0.1})
  # 8 survivors: round(1.6) = 2 more (|-0.2| and |0.3|); already-pruned weights stay pruned
  assert (~again["fc1"]).sum() == 4 and not again["fc1"][0, 4] and not again["fc1"][0, 2]
  assert lottery.remaining(again) == pytest.approx((6 + 8) / 20)


def test_random_masks_keep_each_layers_count():
  masks = {"a": np.array([[True, False, True], [False, False, True]]), "b": np.ones((4, 4), bool)}
  out = lottery.random_masks(jax.random.key(0), masks)
  assert out["a"].sum() == 3 and out["b"].all() and out["a"].shape == (2, 3)
  assert not np.array_equal(lottery.random_masks(jax.random.key(1), {"c": np.eye(8, dtype=bool)})["c"], np.eye(8, dtype=bool))


def test_masked_weights_stay_exactly_zero_through_training(tmp_path):
  cfg = config.TrainConfig(model="lenet", steps=150, num_seeds=2, eval_every=50)
  model = create_model("lenet")
  from redundancy_jax.models import init_variables

  inits = [init_variables(model, jax.random.key(s), (28, 28, 1))["params"] for s in range(2)]
  masks = [lottery.random_masks(jax.random.key(10 + s), lottery.prune_round(p, lottery.full_masks(p),
                                                                            {"fc1": 0.5, "fc2": 0.5, "fc3": 0.5}))
           for s, p in enumerate(inits)]
  stack = lambda trees: jax.tree.map(lambda *a: np.stack(a), *trees)
  train.train(cfg, str(tmp_path), start=(stack(inits), stack(masks)), log=lambda s: None)
  for s in range(2):
    start = Run(str(tmp_path)).snapshot(0, replica=s)
    trained = Run(str(tmp_path)).trained_variables(s)["params"]
    for name in ("fc1", "fc2", "fc3"):
      m = masks[s][name]
      np.testing.assert_array_equal(start[name]["kernel"], np.where(m, inits[s][name]["kernel"], 0.0))  # reset
      assert np.all(trained[name]["kernel"][~m] == 0.0)
      assert np.mean(trained[name]["kernel"][m] != start[name]["kernel"][m]) > 0.9  # the survivors trained
  # a resumed run must bring the same masks
  other = stack([lottery.full_masks(p) for p in inits])
  (tmp_path / "results.json").unlink()
  with pytest.raises(ConfigMismatch, match="other masks"):
    train.train(cfg, str(tmp_path), start=(stack(inits), other), log=lambda s: None)


@pytest.mark.e2e
@pytest.mark.parametrize("rewind", [0, 250])
def test_script_resets_or_rewinds_the_ticket(tmp_path, rewind):
  cfg = override(preset(lottery.LotteryConfig()), rounds=1, steps=300, rewind=rewind, workdir=str(tmp_path))
  script.main(cfg)
  results = json.loads((tmp_path / "results.json").read_text())
  assert [r["round"] for r in results["rounds"]] == [0, 1] and results["rounds"][1]["remaining"] < 1
  assert results["experiment"] == "lottery" and results["headlines"][0]["verdict"] == "not testable"  # 80% left
  masks = storage.load_tree(str(tmp_path / "round_01" / "masks.npz"))
  start = Run(str(tmp_path / "round_01")).snapshot(0, replica=0)  # the ticket, seed 0
  if rewind:
    source = Run(str(tmp_path / f"rewind_{rewind}"))
    expected = source.snapshot(source.snapshot_epochs()[-1], replica=0)
  else:
    expected = Run(str(tmp_path / "round_00")).snapshot(0, replica=0)
  for name in ("fc1", "fc2", "fc3"):
    np.testing.assert_array_equal(start[name]["kernel"], np.where(masks[name][0], expected[name]["kernel"], 0.0))
  reinit = Run(str(tmp_path / "round_01")).snapshot(0, replica=1)
  assert not np.array_equal(reinit["fc1"]["kernel"], start["fc1"]["kernel"])
  np.testing.assert_array_equal(reinit["fc1"]["kernel"] == 0, ~masks["fc1"][0])  # the ticket's mask
  assert masks["fc1"][2].sum() == masks["fc1"][0].sum() and not np.array_equal(masks["fc1"][2], masks["fc1"][0])
  assert (tmp_path / "figure.png").stat().st_size > 0


def test_script_rejects_a_bad_model(tmp_path):
  with pytest.raises(ValueError, match="valid: lenet, conv2"):
    script.main(override(lottery.LotteryConfig(), model="mlp", workdir=str(tmp_path)))
  assert not (tmp_path / "round_00").exists()

"""Lottery tickets by iterative magnitude pruning (Frankle and Carbin 2019; report section 2, SPEC section 5).

  python -m experiments.lottery [--quick] [--model=lenet] [--dataset=fashion_mnist] [--steps=N] \
      [--rounds=15] [--rewind=0] [--num_seeds=3] [--width=1] [--workdir=runs/lottery/<model>]

Round 0 trains the dense network (--num_seeds replicas). Each later round prunes, per layer, the
smallest surviving weights of the ticket's minimum-validation-loss parameters (dense 20%, output 10%,
conv 10/10/15% for Conv-2/4/6), resets the survivors to their initial values (or, with --rewind=k, to
their values at iteration k), and trains three arms together as replicas of one vmapped program, each
with every seed: the ticket, the same mask re-initialised, and a random mask of the same layer-wise
sparsity on the ticket's initial values. Masked weights stay exactly zero inside the compiled step.
Every round is a training run in <workdir>/round_XX (a finished round is reused, a killed one resumes).
Writes results.json (per round and arm: weights remaining, test accuracy and early-stop iteration over
seeds; the headline's verdict) and figure.png/.pdf.
"""

import os
import time

import jax
import numpy as np
from absl import flags

from experiments import app
from redundancy_jax import checkpoint, config, lottery, storage, train
from redundancy_jax.models import MODELS, init_variables
from redundancy_jax.plots import lottery as plots
from redundancy_jax.plots import spectral as spectral_plots

flags.DEFINE_bool("quick", False, "LeNet on the bundled MNIST, 1,500 steps, 4 rounds, 1 seed: about a minute.")
flags.DEFINE_string("model", "lenet", f"One of {', '.join(m for m in MODELS if m != 'mlp')}.")
flags.DEFINE_string("dataset", None, "Dataset (default: the model's).")
flags.DEFINE_string("data_dir", None, "Folder with the dataset's binary files.")
flags.DEFINE_integer("steps", None, "Training steps per round (default: the recipe's).")
flags.DEFINE_float("width", 1.0, "Width multiplier of the hidden layers (reduced runs on CPU).")
flags.DEFINE_integer("rounds", 15, "Pruning rounds after the dense run (LeNet: 15 rounds leave about 3.5%).")
flags.DEFINE_integer("rewind", 0, "Reset survivors to their values at this iteration (0: the initialisation).")
flags.DEFINE_integer("num_seeds", 3, "Seeds per arm.")
flags.DEFINE_integer("seed", 0, "Seed of the data order, the initialisation and the controls.")
flags.DEFINE_string("workdir", None, "Output folder (default: runs/lottery/<model>).")
FLAGS = flags.FLAGS

QUICK = {"steps": 1500, "rounds": 4, "num_seeds": 1}
ARMS = ("ticket", "reinit", "random_mask")
TARGET = 0.07  # the headline's sparsity: about 7% of the weights remaining


def settings() -> dict:
  values = app.flag_values(("steps", "rounds", "num_seeds"), FLAGS.quick and QUICK)
  if FLAGS.model not in MODELS or FLAGS.model == "mlp":
    raise ValueError(f"unknown model {FLAGS.model!r}; valid: {', '.join(m for m in MODELS if m != 'mlp')}")
  if values["rounds"] < 1 or values["num_seeds"] < 1 or FLAGS.rewind < 0:
    raise ValueError("--rounds and --num_seeds must be positive, --rewind non-negative")
  return {**values, "model": FLAGS.model, "dataset": FLAGS.dataset, "data_dir": FLAGS.data_dir, "width": FLAGS.width,
          "rewind": FLAGS.rewind, "seed": FLAGS.seed, "quick": FLAGS.quick}


def _config(cfg: dict, replicas: int, steps=None) -> train.TrainConfig:
  return train.TrainConfig(model=cfg["model"], dataset=cfg["dataset"], data_dir=cfg["data_dir"], width=cfg["width"],
                           steps=steps or cfg["steps"], num_seeds=replicas, seed=cfg["seed"]).resolve()


def _stack(trees):
  return jax.tree.map(lambda *a: np.stack(a), *trees)


def _summary(results: dict, arm_slices: dict, remaining: float, round_index: int) -> dict:
  acc, best = np.asarray(results["test_accuracy"]), np.asarray(results["best_step"])
  out = {"round": round_index, "remaining": remaining}
  for arm, sl in arm_slices.items():
    out[arm] = {"test_accuracy": acc[sl].tolist(), "accuracy_mean": float(acc[sl].mean()),
                "accuracy_std": float(acc[sl].std()), "best_step": best[sl].tolist(),
                "best_step_mean": float(best[sl].mean()), "best_step_std": float(best[sl].std())}
  return out


def headline(rounds: list[dict]) -> dict:
  dense = rounds[0]["dense"]
  near = [r for r in rounds[1:] if TARGET / 2 <= r["remaining"] <= 2 * TARGET]
  claim = ("the reset ticket at about 7% of weights remaining keeps the dense test accuracy within 1 point, beats "
           "the re-initialised control by at least 1 point, and stops no later than the dense network")
  if not near:
    return {"claim": claim, "verdict": "not testable (no round between 3.5% and 14% remaining)"}
  r = min(near, key=lambda r: abs(r["remaining"] - TARGET))
  t, c = r["ticket"], r["reinit"]
  checks = {
    "within_1_point_of_dense": t["accuracy_mean"] >= dense["accuracy_mean"] - 0.01,
    "beats_reinit_by_1_point": t["accuracy_mean"] >= c["accuracy_mean"] + 0.01,
    "stops_no_later": t["best_step_mean"] <= dense["best_step_mean"],
  }
  return {"claim": claim, "verdict": "holds" if all(checks.values()) else "does not hold", "round": r["round"],
          "remaining": r["remaining"], "checks": checks, "dense_accuracy": dense["accuracy_mean"],
          "ticket_accuracy": t["accuracy_mean"], "reinit_accuracy": c["accuracy_mean"],
          "random_mask_accuracy": r["random_mask"]["accuracy_mean"], "ticket_best_step": t["best_step_mean"],
          "dense_best_step": dense["best_step_mean"]}


def run() -> None:
  cfg = settings()
  root = FLAGS.workdir or os.path.join("runs", "lottery", cfg["model"])
  S = cfg["num_seeds"]
  dense_cfg = _config(cfg, S)
  cfg["steps"] = dense_cfg.steps
  ds = config.load_data(dense_cfg)
  log = lambda s: None if s.startswith(("no checkpoint", "training ")) else print(s)
  begin = time.time()
  dense_dir = os.path.join(root, "round_00")
  dense = train.train(dense_cfg, dense_dir, dataset=ds, log=log)
  model = train.make_setup(dense_cfg, ds).model
  rates = lottery.layer_rates(cfg["model"], model)
  init = [checkpoint.load_snapshot(dense_dir, 0, replica=s) for s in range(S)]
  start = init
  if cfg["rewind"]:
    rewind_dir = os.path.join(root, f"rewind_{cfg['rewind']}")
    train.train(_config(cfg, S, steps=cfg["rewind"]), rewind_dir, dataset=ds, log=log)
    last = checkpoint.snapshot_epochs(rewind_dir)[-1]
    start = [checkpoint.load_snapshot(rewind_dir, last, replica=s) for s in range(S)]
  rows = [{"round": 0, "remaining": 1.0, "dense": _summary(dense, {"dense": slice(0, S)}, 1.0, 0)["dense"]}]
  print(f"round 0 (dense): test accuracy {100 * rows[0]['dense']['accuracy_mean']:.2f}%, early stop at "
        f"{rows[0]['dense']['best_step_mean']:,.0f} ({time.time() - begin:.0f}s)")
  masks = [lottery.full_masks(p) for p in init]
  previous = [checkpoint.load_trained(dense_dir, replica=s)["params"] for s in range(S)]
  key = jax.random.key(cfg["seed"])
  for r in range(1, cfg["rounds"] + 1):
    begin = time.time()
    masks = [lottery.prune_round(p, m, rates) for p, m in zip(previous, masks)]
    random = [lottery.random_masks(jax.random.fold_in(key, 1000 * r + s), m) for s, m in enumerate(masks)]
    fresh = [init_variables(model, jax.random.fold_in(key, 10_000 + s), ds.image_shape)["params"] for s in range(S)]
    params = _stack(start + fresh + start)
    all_masks = _stack(masks + masks + random)
    round_dir = os.path.join(root, f"round_{r:02d}")
    results = train.train(_config(cfg, 3 * S), round_dir, dataset=ds, log=log, start=(params, all_masks))
    row = _summary(results, {a: slice(i * S, (i + 1) * S) for i, a in enumerate(ARMS)}, lottery.remaining(masks[0]), r)
    rows.append(row)
    previous = [checkpoint.load_trained(round_dir, replica=s)["params"] for s in range(S)]
    print(f"round {r}: {100 * row['remaining']:.1f}% remaining; test accuracy ticket "
          f"{100 * row['ticket']['accuracy_mean']:.2f}%, reinit {100 * row['reinit']['accuracy_mean']:.2f}%, random "
          f"mask {100 * row['random_mask']['accuracy_mean']:.2f}%; early stop ticket {row['ticket']['best_step_mean']:,.0f} "
          f"({time.time() - begin:.0f}s)")
  results = {"config": {**cfg, "rates": rates, "dataset_described": ds.describe()}, "rounds": rows,
             "headline": headline(rows)}
  storage.write_json(os.path.join(root, "results.json"), results)
  paths = spectral_plots.save(plots.figure(results), os.path.join(root, "figure"))
  print(f"headline: {results['headline']['claim']}: {results['headline']['verdict'].upper()}")
  print(f"wrote {root}/results.json, {', '.join(os.path.basename(p) for p in paths)}")


if __name__ == "__main__":
  app.run_app(run)

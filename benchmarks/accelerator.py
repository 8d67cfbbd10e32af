"""What a first session on a GPU or TPU should measure, in one run (under 8 minutes on one H100).

  python -m benchmarks.accelerator [--out=runs/benchmarks/accelerator] [--small]

1. Sweeps, first (so the device's peak-memory counter holds the VGG19 sweep, not training): VGG19 fc1
   and conv16 (every level, 9 orders, `--images` images) with the peak device memory measured by the
   runtime (`memory_stats()["peak_bytes_in_use"]`; on CPU, which has no such counter, the process's peak
   resident memory), then LeNet fc1 and Conv-2 fc1.
2. The ESD of every VGG19 layer against Marchenko-Pastur (`spectral.summarize`): spikes above the
   initialisation's edge, the fitted edge, the elbow; an initialised VGG19, or the trained one in
   `--vgg19_workdir`.
3. Training of each model at its recipe batch: steps/s and images/s (median of `--epochs` epochs of
   `--steps_per_epoch` steps after a compiling one, in the epoch form `epochs.run_epoch` picks), and the
   projected time of the full recipe's training steps (validation not included).

Writes <out>.json and <out>.md (the tables), prints the tables and appends a line to
benchmarks/results.jsonl. `--small` shrinks everything (width 1/8, 4-step epochs, 128 images) so the
tests run it on CPU; its figures say nothing about speed.
"""

from __future__ import annotations

import resource
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks.common import (
  RESULTS, median_seconds, record, removal_orders, seconds_per_step, table, training_run, write_outputs,
)
from redundancy_jax.analyses import pruning, spectral, units
from redundancy_jax.core import config, console, data
from redundancy_jax.core.runs import Run
from redundancy_jax.models import create_model, topology

MODELS = ("lenet", "conv2", "conv4", "conv6", "vgg19")
SMALL = {"width": 0.125, "steps_per_epoch": 4, "epochs": 1, "images": 128, "repeats": 1}
FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_list("models", list(MODELS), f"Models to train, of {', '.join(MODELS)}.")
  flags.DEFINE_string("out", "runs/benchmarks/accelerator", "Output stem: <out>.json and <out>.md.")
  flags.DEFINE_bool("small", False, "Tiny sizes (width 1/8, 4-step epochs, 128 images): a CPU check of the script.")
  flags.DEFINE_integer("steps_per_epoch", 100, "Training steps per timed epoch.", lower_bound=1)
  flags.DEFINE_integer("epochs", 3, "Timed epochs per model after a compiling one (median).", lower_bound=1)
  flags.DEFINE_integer("images", 10_000, "Images each sweep evaluates on (a test split's size).", lower_bound=1)
  flags.DEFINE_string("results", RESULTS, "The results log a line is appended to.")
  flags.DEFINE_string("vgg19_workdir", "runs/vgg19", "A trained VGG19 whose spectra to take, if there is one.")
  flags.register_validator("models", lambda names: set(names) <= set(MODELS),
                           f"--models takes names of {', '.join(MODELS)}")


def peak_memory() -> tuple[int, str]:
  """(bytes, what they are): the first device's peak allocation, or the process's peak resident memory."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS (no device counter)"


def width(model_name: str, s: dict) -> float:
  """LeNet always at its own width (it is small); the others at `s["width"]`."""
  return 1.0 if model_name == "lenet" else s["width"]


def sweep_case(model_name: str, layer: str, s: dict) -> dict:
  """One layer's sweep (9 orders, every level) on `s["images"]` images: first call and median seconds."""
  if model_name == "lenet":
    ds = data.load_bundled_mnist(0)  # all 10,000 bundled images, repeated beyond that
    x, y = np.concatenate([ds.test_x, ds.val_x, ds.train_x]), np.concatenate([ds.test_y, ds.val_y, ds.train_y])
    x, y = np.resize(x, (s["images"], *x.shape[1:])), np.resize(y, s["images"])
  else:
    ds = data.random_images(seed=0, n_train=8, n_val=8, n_test=s["images"])
    x, y = ds.test_x, ds.test_y
  model = create_model(model_name, mean=ds.mean, std=ds.std, image_shape=ds.image_shape, width=width(model_name, s))
  variables = model.init(jax.random.key(0), ds.image_shape)
  orders = removal_orders(variables, layer)
  run = lambda: pruning.sweep(model, variables, layer, x, y, orders)
  begin = time.perf_counter()
  jax.block_until_ready(run())
  first = time.perf_counter() - begin
  median = median_seconds(run, repeats=s["repeats"], warmup=0)
  units = topology.check(model, layer).units
  return {"case": f"{model_name} {layer}", "units": units, "orders": len(orders), "images": len(y),
          "first_call_s": first, "median_s": median, "evaluations_per_s": len(orders) * (units + 1) / median}


def esd_rows(s: dict, vgg19_workdir: str | None) -> tuple[list[dict], float, str]:
  """`spectral.summarize` of every VGG19 layer (trained if `vgg19_workdir` holds one)."""
  model = create_model("vgg19", mean=(0.5,) * 3, std=(0.25,) * 3, image_shape=(32, 32, 3), width=s["width"])
  variables, source = model.init(jax.random.key(0), (32, 32, 3)), "initialised"
  if vgg19_workdir and Run(vgg19_workdir).is_trained():
    variables, source = Run(vgg19_workdir).trained_variables(), f"trained ({vgg19_workdir})"
  rows, begin = [], time.perf_counter()
  for layer in topology.names(model):
    kernel = topology.kernel(variables, layer)
    summary = spectral.summarize(units.unit_matrix(variables, layer), init_var=spectral.glorot_variance(kernel.shape),
                                 layer=layer)
    rows.append({"layer": layer, "m": summary["m"], "n": summary["n"], "spikes_above_init_edge": summary["init_spikes"],
                 "fitted_lambda_plus": summary["fit"]["lambda_plus"], "elbow": summary.get("elbow")})
  return rows, time.perf_counter() - begin, source


def training_rows(s: dict, models) -> list[dict]:
  rows = []
  for name in models:
    batch = config.recipe(name).batch_size
    setup, ds = training_run(name, batch * s["steps_per_epoch"], width=width(name, s))
    per_step = seconds_per_step(setup, ds, "auto", s["epochs"])
    recipe = config.RECIPES[name].steps
    rows.append({"model": name, "batch": batch, "devices": setup.mesh.size, "steps_per_s": 1 / per_step,
                 "images_per_s": batch / per_step, "recipe_steps": recipe, "projected_recipe_s": recipe * per_step})
    print(f"  {name}: {1 / per_step:,.1f} steps/s", flush=True)
  return rows


def markdown(out: dict) -> str:
  sweep = table([[r["case"], f"{r['units'] + 1} x {r['orders']}", r["images"], f"{r['first_call_s']:.2f}",
                  f"{r['median_s']:.3f}", f"{r['evaluations_per_s']:,.0f}"] for r in out["sweeps"]],
                ["sweep", "levels x orders", "images", "first call s", "median s", "evaluations/s"])
  mem = out["vgg19_sweep_memory"]
  esd = table([[r["layer"], f"{r['m']} x {r['n']}", r["spikes_above_init_edge"], f"{r['fitted_lambda_plus']:.4g}",
                r["elbow"]] for r in out["esd"]["layers"]],
              ["VGG19 layer", "m x n", "eigenvalues above the init MP edge", "fitted lambda+", "elbow k"])
  train = table([[r["model"], r["batch"], r["devices"], f"{r['steps_per_s']:,.1f}", f"{r['images_per_s']:,.0f}",
                  f"{r['recipe_steps']:,}", console.duration(r["projected_recipe_s"])] for r in out["training"]],
                ["model", "batch", "devices", "steps/s", "images/s", "recipe steps", "projected recipe time"])
  return "\n\n".join([
    f"Accelerator benchmark on {out['device']} ({out['sizes']})",
    sweep,
    f"VGG19 sweeps (fc1, conv16): {mem['bytes'] / 2**30:.2f} GiB ({mem['what']})",
    f"ESD of every VGG19 layer ({out['esd']['source']}): {out['esd']['seconds']:.1f} s for all "
    f"{len(out['esd']['layers'])} layers\n\n{esd}",
    train,
  ]) + "\n"


def run(s: dict, models, out_stem: str, results: str = RESULTS, vgg19_workdir: str | None = None) -> dict:
  """Every measurement at the sizes `s`; writes <out_stem>.json and .md and a line of `results`."""
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})"
  print(f"devices: {jax.devices()}", flush=True)
  print("sweeps ...", flush=True)
  sweeps = [sweep_case("vgg19", "fc1", s), sweep_case("vgg19", "conv16", s)]
  memory, what = peak_memory()
  sweeps += [sweep_case("lenet", "fc1", s), sweep_case("conv2", "fc1", s)]
  print("ESD of every VGG19 layer ...", flush=True)
  layers, esd_seconds, source = esd_rows(s, vgg19_workdir)
  print("training ...", flush=True)
  out = {"device": device, "sizes": s, "sweeps": sweeps, "vgg19_sweep_memory": {"bytes": memory, "what": what},
         "esd": {"source": source, "seconds": esd_seconds, "layers": layers}, "training": training_rows(s, models)}
  text = markdown(out)
  print("\n" + text)
  paths = write_outputs(out_stem, out, text)
  print(f"wrote {', '.join(paths)}")
  record("accelerator", out, results)
  return out


def main(argv):
  del argv
  s = SMALL if FLAGS.small else {"width": 1.0, "steps_per_epoch": FLAGS.steps_per_epoch, "epochs": FLAGS.epochs,
                                 "images": FLAGS.images, "repeats": 3}
  run(s, FLAGS.models, FLAGS.out, FLAGS.results, None if FLAGS.small else FLAGS.vgg19_workdir)


if __name__ == "__main__":
  define_flags()
  app.run(main)

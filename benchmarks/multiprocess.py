"""What a multi-process run costs on one machine: the same commands as 2 processes x 2 CPU devices
(linked by `jax.distributed` over loopback, gloo collectives) against 1 process x 4 devices (the anchor:
the same devices, no runtime between processes) and 1 process x 1 device.

  python -m benchmarks.multiprocess [--steps=2000] [--rounds=3]

LeNet with 4 seeds (each device trains one), then `experiments.prune_sweep` of its fc1. Each round runs
the layouts one after another (alternating, so a change of load on a shared machine hits each); medians
over rounds. Figures: training steps/s after the compiling epoch (results.json) and each command's wall
time (start-up and compilation included); the largest difference of any test or sweep accuracy from the
anchor's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks.common import machine, record, table
from redundancy_jax.core import storage

flags.DEFINE_integer("steps", 2000, "LeNet training steps.", lower_bound=100)
flags.DEFINE_integer("rounds", 3, "Alternating rounds (medians reported).", lower_bound=1)
FLAGS = flags.FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = {"1 process x 4 devices": (1, 4), "2 processes x 2 devices": (2, 2), "1 process x 1 device": (1, 1)}


def _command(script: str, args: list[str], processes: int, devices: int) -> float:
  """Runs `python -m experiments.<script>` as `processes` processes; its wall time in seconds."""
  port = socket.socket()
  port.bind(("127.0.0.1", 0))
  address = f"127.0.0.1:{port.getsockname()[1]}"
  port.close()
  cluster = lambda i: ([f"--coordinator_address={address}", f"--num_processes={processes}", f"--process_id={i}"]
                       if processes > 1 else [])
  begin = time.perf_counter()
  procs = [subprocess.Popen([sys.executable, "-m", f"experiments.{script}", *args, f"--cpu_devices={devices}",
                             *cluster(i)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(processes)]
  for p in procs:
    out, err = p.communicate()
    if p.returncode:
      raise RuntimeError(f"{script} failed ({p.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
  return time.perf_counter() - begin


def main(argv):
  del argv
  info = machine()
  print(f"{info['cpu']} (AVX-512: {info['avx512']}), {info['cores']} cores, jax {info['jax']}")
  train_args = ["--model=lenet", "--num_seeds=4", f"--steps={FLAGS.steps}", "--eval_every=500"]
  sweep_args = ["--layer=fc1", "--level_step=10"]
  times = {name: {"train_wall": [], "steps_per_second": [], "sweep_wall": []} for name in LAYOUTS}
  accuracies = {}
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(FLAGS.rounds):
      for name, (processes, devices) in LAYOUTS.items():
        workdir = os.path.join(tmp, f"{r}-{processes}x{devices}")
        times[name]["train_wall"].append(_command("train", [*train_args, f"--workdir={workdir}"], processes, devices))
        result = storage.read_json(os.path.join(workdir, "results.json"))
        times[name]["steps_per_second"].append(result["steps_per_second"])
        times[name]["sweep_wall"].append(_command("prune_sweep", [*sweep_args, f"--workdir={workdir}",
                                                                 *train_args], processes, devices))
        sweep = storage.read_json(os.path.join(workdir, "prune_sweep", "results.json"))["layers"]["fc1"]
        accuracies[name] = (result["test_accuracy"], sweep["criteria"]["max_fp"]["accuracy"])
        print(f"round {r + 1}: {name}: {times[name]['steps_per_second'][-1]:.0f} steps/s, train "
              f"{times[name]['train_wall'][-1]:.1f} s, sweep {times[name]['sweep_wall'][-1]:.1f} s", flush=True)
  anchor = "1 process x 4 devices"
  differences = {name: max(float(np.max(np.abs(np.subtract(a, b)))) for a, b in zip(accuracies[name], accuracies[anchor]))
                 for name in LAYOUTS}  # test accuracies and the sweep's, against the anchor's
  medians = {name: {k: float(np.median(v)) for k, v in t.items()} for name, t in times.items()}
  rows = [[name, f"{m['steps_per_second']:.0f}", f"{m['steps_per_second'] / medians[anchor]['steps_per_second']:.2f}",
           f"{m['train_wall']:.1f}", f"{m['sweep_wall']:.1f}",
           f"{m['sweep_wall'] / medians[anchor]['sweep_wall']:.2f}", f"{differences[name]:.1e}"]
          for name, m in medians.items()]
  print(f"\nLeNet, 4 seeds, {FLAGS.steps} steps; sweep of fc1 (every 10th level); medians of {FLAGS.rounds} rounds")
  print(table(rows, ["layout", "steps/s", "ratio", "train wall s", "sweep wall s", "sweep ratio",
                     "max accuracy difference"]))
  record("multiprocess", {"steps": FLAGS.steps, "rounds": FLAGS.rounds, "medians": medians,
                          "max_accuracy_difference": differences})


if __name__ == "__main__":
  app.run(main)

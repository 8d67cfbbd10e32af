"""The models' 3x3 convolutions on CPU: every formulation of each part, timed on the machine at hand, and
the one `redundancy_jax.models.conv`'s rule picks.

  python -m benchmarks.conv [--batch=64] [--repeats=5]

For each convolution shape of Conv-2, Conv-6 and VGG19 (at 32x32x3, batch 64): the forward (XLA's
convolution, one im2col matmul), the input gradient (XLA's, nine shifted matmuls) and the weight gradient
(XLA's backward-filter convolution, nine shifted products x_shift^T @ g, one im2col matmul), medians in
ms, the fastest marked, and the rule's choice; beside them PyTorch's convolution of the same part (oneDNN
on CPU, the better of NCHW and channels_last, timed right after ours; `torch_anchor.conv_part_runs`) and
our speed relative to it. Where oneDNN builds here (`models/onednn.py`), its part is timed too ("onednn")
and the opt-in `REDUNDANCY_JAX_CONV=onednn`'s choice set against PyTorch in a column of its own; the rule
picks among the others. Prints the CPU model and its AVX-512 flag; appends to
benchmarks/results.jsonl. `lax.conv_general_dilated` here is XLA:CPU's Eigen convolution when
`redundancy_jax` has set its XLA flag (`models/conv.py: configure_xla_cpu`), YNNPACK's otherwise.
"""

from __future__ import annotations

import jax
from absl import app, flags

from benchmarks import torch_anchor
from benchmarks.common import machine, median_seconds, record, table
from benchmarks.conv_parts import formulations, onednn_choice, rule
from redundancy_jax.models import conv

flags.DEFINE_integer("batch", 64, "Batch size.", lower_bound=1)
flags.DEFINE_integer("repeats", 5, "Timed runs per formulation (median).", lower_bound=1)
FLAGS = flags.FLAGS

# (input channels, output channels, side) of the models' convolutions on 32x32x3 inputs
SHAPES = ((3, 64, 32), (64, 64, 32), (64, 128, 16), (128, 128, 16), (128, 256, 8), (256, 256, 8), (256, 512, 4),
          (512, 512, 4), (512, 512, 2))


def main(argv):
  del argv
  m = machine()
  print(f"CPU: {m['cpu']} ({m['cores']} cores, AVX-512: {'yes' if m['avx512'] else 'no'}); XLA_FLAGS: {m['xla_flags']}")
  rows, figures, agree = [], [], 0
  for c, o, side in SHAPES:
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k1, (FLAGS.batch, side, side, c))
    w = jax.random.normal(k2, (3, 3, c, o)) * 0.05
    g = jax.random.normal(k3, (FLAGS.batch, side, side, o))
    for part, options in formulations(c, o).items():
      if part == "input gradient" and c <= conv.FEW_CHANNELS:
        continue  # the first layer's input gradient is never computed
      ms = {name: 1e3 * median_seconds(lambda f=jax.jit(f): f(x, w, g), FLAGS.repeats) for name, f in options.items()}
      fastest = min((n for n in ms if n != "onednn"), key=ms.get)  # the rule's candidates
      chosen, opted = rule(part, c, side), onednn_choice(part, c)
      agree += fastest == chosen
      theirs = torch_anchor.conv_part_seconds(part, x, w, g, FLAGS.repeats)  # right after ours: the same load
      best = None if theirs is None else 1e3 * min(theirs.values())
      figures.append({"shape": [FLAGS.batch, side, side, c, o], "part": part, "ms": ms, "fastest": fastest,
                      "rule": chosen, "pytorch_ms": theirs and {k: 1e3 * v for k, v in theirs.items()}})
      rows.append([f"{side}x{side} {c}->{o}", part, ", ".join(f"{n} {t:.1f}" for n, t in ms.items()), fastest, chosen,
                   f"{ms[chosen] / ms[fastest]:.2f}", "-" if best is None else f"{best:.1f}",
                   "-" if best is None else f"{best / ms[chosen]:.2f}x",
                   "-" if best is None or opted not in ms else f"{best / ms[opted]:.2f}x"])
      print(rows[-1], flush=True)
  print()
  print(table(rows, ["shape", "part", "ms per formulation (median)", "fastest", "rule", "rule / fastest",
                     "PyTorch ms (oneDNN, better layout)", "ours (rule) / PyTorch, speed",
                     "ours (REDUNDANCY_JAX_CONV=onednn) / PyTorch, speed"]))
  print(f"\nthe rule picks the fastest formulation in {agree} of {len(rows)} cases")
  if torch_anchor.torch_or_none() is None:
    print(torch_anchor.MISSING)
  record("conv", {"batch": FLAGS.batch, "rows": figures})


if __name__ == "__main__":
  app.run(main)

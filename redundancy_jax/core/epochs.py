"""An epoch of training in the form that suits the backend (`run_epoch` chooses, `epoch_form` says
which): one compiled `lax.scan` of `steps.scan_steps` (`scan_epoch`); on CPU for models with
convolutions the same step driven from Python (`host_epoch`: XLA:CPU runs convolutions far slower inside
loops; BUILD_NOTES.md); on CPU devices that hold several seeds each, the scan of one seed per device at a
time (`waves_epoch`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from redundancy_jax.core import parallel, steps
from redundancy_jax.core.errors import BadOption
from redundancy_jax.core.steps import Setup, TrainState
from redundancy_jax.models import conv


def scan_epoch(setup: Setup, state: TrainState, train_data, val_split) -> tuple[TrainState, dict]:
  """One epoch of every replica as one compiled scan (`steps.scan_steps`), then the epoch's counters."""
  first_step = state.step
  state, metrics = steps.scan_steps(setup, state, train_data, val_split)
  return steps.note_non_finite(state.replace(epoch=state.epoch + 1), first_step, metrics), metrics


# ----------------------------------------------------------------------------- waves of replicas

def waves(setup: Setup) -> int:
  """How many waves `wave_epoch` steps an epoch's replicas in: on CPU devices holding several replicas
  each (seeds spread with `--cpu_devices`), one replica per device at a time, each wave a scan of its
  own (one replica's parameters and optimizer state stay in the caches: 10 LeNet seeds on 2 devices
  ran 1.2x faster, BUILD_NOTES.md); else 1 (one program). The waves compute bit for bit what one replica
  per device computes (the parameters also what the vmapped replicas of one program do; their losses
  may differ in the last bit)."""
  r = setup.mesh.shape["replicas"]
  per_device = setup.cfg.num_seeds // r
  cpu = setup.mesh.devices.flat[0].platform == "cpu"
  return per_device if cpu and r > 1 and per_device > 1 and setup.label_maps is None else 1


def _wave_setup(setup: Setup) -> Setup:
  """The setup of one wave: one replica per "replicas" device, on the same mesh."""
  return setup._replace(cfg=dataclasses.replace(setup.cfg, num_seeds=setup.mesh.shape["replicas"]))


def _of_wave(a: jax.Array, r: int, wave) -> jax.Array:
  """The wave's replicas of a leaf stacked over K = r x waves replicas (device i holds the i-th block)."""
  return jax.lax.dynamic_index_in_dim(a.reshape(r, -1, *a.shape[1:]), wave, axis=1, keepdims=False)


def wave_epoch(setup: Setup, state: TrainState, wave, train_data, val_split) -> tuple[TrainState, dict]:
  """`scan_steps` of wave `wave`'s replicas (the `wave`-th of each device's, `waves`), written back into
  `state`; the counters (the 0-d leaves) are left at the epoch's start for the next wave (`end_waves`).
  Metrics (S, r)."""
  r = setup.mesh.shape["replicas"]
  take = lambda a: _of_wave(a, r, wave) if a.ndim else a
  part, metrics = steps.scan_steps(_wave_setup(setup), jax.tree.map(take, state), train_data, val_split,
                                   _of_wave(steps.replica_keys(setup.cfg), r, wave))
  put = lambda a, p: jax.lax.dynamic_update_index_in_dim(a.reshape(r, -1, *a.shape[1:]), p, wave, 1).reshape(a.shape)
  return jax.tree.map(lambda a, p: put(a, p) if a.ndim else a, state, part), metrics


def end_waves(state: TrainState, parts: list[dict]) -> tuple[TrainState, dict]:
  """The epoch's counters after its waves, and the metrics of all replicas, (S, K), from the waves' (S, r):
  device i's replicas i*W .. i*W+W-1, so wave w's i-th is replica i*W + w."""
  interleave = lambda *m: jnp.stack(m, axis=-1).reshape(*m[0].shape[:-1], -1) if m[0].ndim > 1 else m[0]
  metrics = jax.tree.map(interleave, *parts)
  first_step = state.step
  state = state.replace(step=state.step + jnp.sum(metrics["active"]).astype(state.step.dtype), epoch=state.epoch + 1)
  return steps.note_non_finite(state, first_step, metrics), metrics


def waves_epoch(setup: Setup, state: TrainState, train_data, val_split) -> tuple[TrainState, dict]:
  """`scan_epoch` stepped in `waves(setup)` waves from Python (`wave_epoch`), one program at a time."""
  parts = [None] * waves(setup)
  for w in range(len(parts)):
    state, parts[w] = parallel.one_at_a_time(_wave_epoch_jit(setup, state, jnp.int32(w), train_data, val_split),
                                             setup.mesh)
  return _end_waves_jit(state, parts)


def host_epoch(setup: Setup, state: TrainState, train_data, val_split, pause=None) -> tuple[TrainState, dict, bool]:
  """`scan_epoch` stepped from Python through the same compiled `train_step` and `track_best`: XLA:CPU
  runs convolutions inside loop bodies and conditionals far slower (BUILD_NOTES.md). Starts where
  `state.step` is within the epoch (a checkpoint saved mid-epoch), and when `pause()` turns true after a
  step, returns early with the epoch unfinished (the caller saves a checkpoint and calls again).
  Returns (state, metrics of the steps run, whether the epoch finished)."""
  cfg, nan_K = setup.cfg, np.full(setup.cfg.num_seeds, np.nan, np.float32)
  metrics = {"active": [], "loss": [], "accuracy": [], "val_loss": []}
  first_step = step = int(state.step)
  offset = step - int(state.epoch) * setup.steps_per_epoch
  indices = _epoch_indices_jit(setup, state.epoch, train_data[1])
  finished = True
  for position in range(offset, setup.steps_per_epoch):
    active = step < cfg.steps
    loss = acc = val = nan_K
    if active:
      state, (loss, acc) = parallel.one_at_a_time(_train_step_jit(setup, state, indices[position], train_data),
                                                  setup.mesh)
      step += 1
      if steps.is_due(cfg, step):
        val = steps.evaluate(setup, state.params, state.batch_stats, val_split)[0]
        state = _track_best_jit(state, val)
    for k, v in zip(metrics, (active, loss, acc, val)):
      metrics[k].append(v)
    if pause is not None and position + 1 < setup.steps_per_epoch and step < cfg.steps and pause():
      finished = False
      break
  metrics = {k: jnp.stack([jnp.asarray(v) for v in vs]) for k, vs in metrics.items()}
  state = _note_non_finite_jit(state.replace(epoch=state.epoch + finished), first_step, metrics)
  return state, metrics, finished


def epoch_form(setup: Setup) -> str:
  """"python loop" (`host_epoch`) under the backend policy `variants.host_loop`, else "lax.scan"
  (`scan_epoch`). With oneDNN's convolutions (`REDUNDANCY_JAX_CONV=onednn`) the step's convolutions are
  FFI calls, which run inside a scan as fast as outside it: there the scan is the faster form (Conv-2 on
  an AMD EPYC: 7.3-8.4 against 6.0-7.4 steps/s, BUILD_NOTES.md), unless the step still holds an XLA
  convolution (oneDNN serves stride-1 SAME 3x3 ones only: a network's own strided or 1x1 layers stay XLA's)."""
  scan = not setup.host_loop or (conv.conv_choice() == "onednn" and not steps.xla_convolutions_in_step(setup))
  return "lax.scan" if scan else "python loop"


def run_epoch(setup: Setup, state: TrainState, train_data, val_split, loop: str = "auto", pause=None):
  """One epoch: `scan_epoch` compiled whole (in `waves_epoch`'s waves where `waves` says so), or
  `host_epoch` where the backend policy says so (which may stop early when `pause()` turns true).
  Returns (state, metrics, whether the epoch finished)."""
  if loop not in ("auto", "scan", "python"):
    raise BadOption(f"unknown loop {loop!r}; valid: auto, scan, python")
  python = epoch_form(setup) == "python loop" if loop == "auto" else loop == "python"
  if python:
    return host_epoch(setup, state, train_data, val_split, pause)
  if waves(setup) > 1:
    return (*waves_epoch(setup, state, train_data, val_split), True)
  return (*_scan_epoch_jit(setup, state, train_data, val_split), True)


_train_step_jit = jax.jit(steps.train_step, static_argnames="setup", donate_argnames="state")
_track_best_jit = jax.jit(steps.track_best, donate_argnames="state")
_note_non_finite_jit = jax.jit(steps.note_non_finite, donate_argnames="state")
_scan_epoch_jit = jax.jit(scan_epoch, static_argnames="setup", donate_argnames="state")
_wave_epoch_jit = jax.jit(wave_epoch, static_argnames="setup", donate_argnames="state")
_end_waves_jit = jax.jit(end_waves, donate_argnames="state")
_epoch_indices_jit = jax.jit(steps.epoch_indices, static_argnames="setup")

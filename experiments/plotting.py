# Copyright 2026 The haiku_etp Authors. All Rights Reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
# ==============================================================================
"""Plots of training runs (matplotlib): learning curves and spike rasters.

``plot_curves`` overlays several runs' loss and metric against step and
wall time, labelled by learner; ``plot_raster`` draws the hidden layer's
spikes, the inputs and the readout of one held-out example of a spiking
model. Files are PNGs in the run's directory.
"""

import json
import os
from typing import Optional, Sequence

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from experiments import metrics as metrics_lib
from experiments import models
from experiments import tasks as tasks_lib

CURVES_FILE = "curves.png"
RASTER_FILE = "raster.png"


def run_label(workdir: str) -> str:
  """The learner of a run (from its newest checkpoint's config), or its dir."""
  config = run_config(workdir)
  if config is None:
    return os.path.basename(os.path.normpath(workdir))
  label = config.get("learner", "?")
  if label == "es_d_rtrl":
    label += f"({config.get('decay')})"
  return label


def run_config(workdir: str) -> Optional[dict]:
  """The config dict saved with the newest checkpoint of ``workdir``."""
  root = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(root):
    return None
  steps = sorted(int(d) for d in os.listdir(root) if d.isdigit())
  for step in reversed(steps):
    path = os.path.join(root, str(step), "meta", "metadata")
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f).get("config")
  return None


def plot_curves(
    workdirs: Sequence[str],
    path: str,
    metric: Optional[str] = None,
    dpi: int = 100,
) -> str:
  """Loss and metric of several runs against step and wall time.

  Args:
    workdirs: run directories holding ``metrics.jsonl``.
    path: the PNG to write.
    metric: the metric key; by default the first non-loss key found.
    dpi: the PNG's resolution.

  Returns:
    ``path``.
  """
  records = {w: metrics_lib.read(w) for w in workdirs}
  if metric is None:
    metric = _metric_key(records)
  fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
  for w, recs in records.items():
    label = run_label(w)
    for row, key in enumerate(("loss", metric)):
      for split, style in (("train", "-"), ("eval", "o--")):
        pts = [
            (r["step"], r["wall_time"], r[key])
            for r in recs
            if r["split"] == split and isinstance(r.get(key), (int, float))
        ]
        if not pts:
          continue
        step, wall, value = np.asarray(pts, np.float64).T
        axes[row, 0].plot(step, value, style, label=f"{label} {split}")
        axes[row, 1].plot(wall, value, style, label=f"{label} {split}")
  for row, key in enumerate(("loss", metric)):
    axes[row, 0].set_ylabel(key)
    for col, xlabel in enumerate(("step", "wall time (s)")):
      axes[row, col].set_xlabel(xlabel)
      axes[row, col].grid(alpha=0.3)
  axes[0, 0].legend(fontsize=8)
  fig.suptitle(", ".join(sorted({run_label(w) for w in workdirs})))
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def _metric_key(records: dict) -> str:
  skip = {
      "step",
      "split",
      "wall_time",
      "loss",
      "count",
      "steps_per_sec",
      "objective",
  }  # pyformat: disable
  for recs in records.values():
    for r in recs:
      for k in r:
        if k not in skip:
          return k
  return "loss"


def plot_raster(config, setup, params, path: str, example: int = 0) -> str:
  """Inputs, hidden spikes and readout of one held-out example.

  Args:
    config: the run's config (model and task).
    setup: the run's :class:`~experiments.training.Setup`.
    params: trained parameters.
    path: the PNG to write.
    example: which sample of the first held-out batch.

  Returns:
    ``path``.
  """
  task = setup.task
  batch = tasks_lib.evaluation_batches(
      task,
      1 if task.eval_batches is None else config.batch_size,
      seed=config.seed,
      num_batches=1,
  )
  batch = next(iter(batch))  # pyformat: disable
  xs = np.asarray(batch.xs)[:, example : example + 1]
  model = models.make_model(config.model, task.output_size, with_spikes=True)
  _, state = model.init(jax.random.PRNGKey(0), xs[0])

  def body(st, x_t):
    (out, s), st = model.apply(params, st, None, x_t)
    return st, (out, s)

  _, (outs, spikes) = jax.lax.scan(body, state, xs)
  outs, spikes = np.asarray(outs)[:, 0], np.asarray(spikes)[:, 0]
  spikes = spikes.reshape(spikes.shape[0], -1)
  inputs = xs[:, 0].reshape(xs.shape[0], -1)
  fig, axes = plt.subplots(
      3, 1, figsize=(9, 8), sharex=True, constrained_layout=True
  )  # pyformat: disable
  for ax, data, title in (
      (axes[0], inputs, "inputs"),
      (axes[1], spikes, "hidden spikes"),
  ):  # pyformat: disable
    t, unit = np.nonzero(data > 0)
    ax.scatter(t, unit, s=2, marker="|", color="black")
    ax.set_ylabel("unit")
    ax.set_title(title)
  for k in range(outs.shape[-1]):
    axes[2].plot(outs[:, k], label=f"readout {k}")
  mask = np.asarray(batch.mask)[:, example]
  if mask.any():
    axes[2].axvspan(
        np.argmax(mask > 0), len(mask) - 1, alpha=0.15, label="loss read"
    )  # pyformat: disable
  label = np.asarray(batch.ys)[:, example]
  axes[2].set_title(f"readout (target {label[-1]})")
  axes[2].set_xlabel("step")
  axes[2].legend(fontsize=8)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_run(workdir: str, config, setup, host_state) -> tuple:
  """The plots drawn at the end of ``train``: curves, and a raster for
  spiking models."""
  paths = [
      plot_curves(
          [workdir], os.path.join(workdir, CURVES_FILE), setup.task.metric_name
      )
  ]  # pyformat: disable
  if config.model.kind in ("snn", "conv_snn"):
    paths.append(
        plot_raster(
            config, setup, host_state.params, os.path.join(workdir, RASTER_FILE)
        )  # pyformat: disable
    )
  return tuple(paths)

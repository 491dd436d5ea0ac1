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
r"""Figures for the results pages from the JSON the binaries write.

  python -m experiments.figures --compare=runs/cmp \
      --benchmark=bench.json --length_table=length_table.json \
      --output_dir=docs/results/figures

* ``--compare``: directories written by ``experiments.compare`` (each holds
  ``compare.json`` and one run directory per learner). For each, the
  learning curves of every learner (``<name>_curves.png``, from the runs'
  ``metrics.jsonl``) and the cosine of every parameter's gradient with the
  exact one at the first update (``<name>_cosine.png``).
* ``--benchmark``: ``experiments.benchmarks.benchmark``'s
  ``--bench_output``. Time per step of every learner, model and window at
  the longest ``T`` (``benchmark_time.png``) and compiled memory against
  ``T`` (``benchmark_memory.png``).
* ``--length_table``: ``experiments.benchmarks.length_table``'s JSON.
  Compiled memory and time per step against ``T`` (``length_memory.png``,
  ``length_time.png``).

Each figure is a small PNG with labelled axes and units; the paths written
are printed.
"""

import json
import os
from typing import Optional, Sequence

from absl import app
from absl import flags

from experiments import plotting

import matplotlib  # pylint: disable=g-import-not-at-top

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

_COMPARE = flags.DEFINE_list(
    "compare", [], "Directories written by experiments.compare."
)
_BENCHMARK = flags.DEFINE_string(
    "benchmark", None, "JSON written by experiments.benchmarks.benchmark."
)
_LENGTH_TABLE = flags.DEFINE_string(
    "length_table", None, "JSON written by experiments.benchmarks.length_table."
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "figures", "Where the PNGs are written (created)."
)

_DPI = 80


def _read_json(path: str, what: str):
  if not os.path.exists(path):
    raise app.UsageError(f"--{what}: no file {path!r}.")
  with open(path) as f:
    return json.load(f)


def _run_dir(compare_dir: str, row: dict) -> Optional[str]:
  """The learner's run directory, also when ``compare_dir`` was moved."""
  candidates = [row.get("workdir") or ""]
  candidates.append(os.path.join(compare_dir, os.path.basename(candidates[0])))
  for path in candidates:
    if path and os.path.exists(os.path.join(path, "metrics.jsonl")):
      return path
  return None


def compare_figures(compare_dir: str, output_dir: str) -> list[str]:
  """Learning curves and per-parameter cosines of one compare run."""
  rows = _read_json(os.path.join(compare_dir, "compare.json"), "compare")
  name = os.path.basename(os.path.normpath(compare_dir))
  written = []
  runs = [r for r in (_run_dir(compare_dir, row) for row in rows) if r]
  if runs:
    written.append(
        plotting.plot_curves(
            runs, os.path.join(output_dir, f"{name}_curves.png"), dpi=60
        )
    )
  params = sorted(
      {p for row in rows for p in row.get("per_parameter_vs_exact") or {}}
  )
  if params:
    fig, ax = plt.subplots(
        figsize=(7, 0.9 + 0.28 * len(params)), constrained_layout=True
    )
    height = 0.8 / len(rows)
    for i, row in enumerate(rows):
      values = row.get("per_parameter_vs_exact") or {}
      cosines = [values.get(p, [np.nan])[0] for p in params]
      ax.barh(
          np.arange(len(params)) + i * height,
          cosines,
          height=height,
          label=row["learner"],
      )
    ax.set_yticks(np.arange(len(params)) + 0.4 - height / 2)
    ax.set_yticklabels(params, fontsize=7)
    ax.set_xlim(min(0.0, np.nanmin([_min_cos(r) for r in rows])), 1.0)
    ax.set_xlabel(
        f"cosine of the gradient with {rows[0].get('exact', 'the exact')}'s"
        " at the first update"
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(name)
    path = os.path.join(output_dir, f"{name}_cosine.png")
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    written.append(path)
  return written


def _min_cos(row: dict) -> float:
  values = [v[0] for v in (row.get("per_parameter_vs_exact") or {}).values()]
  return min(values) if values else 1.0


def _series_label(row: dict) -> str:
  window = row.get("window")
  return row["learner"] + ("" if window is None else f", window {window}")


def benchmark_figures(path: str, output_dir: str) -> list[str]:
  """Time per step at the longest ``T`` and memory against ``T``."""
  data = _read_json(path, "benchmark")
  rows = data["rows"]
  models = list(dict.fromkeys(r["model"] for r in rows))
  longest = max(r["steps"] for r in rows)
  fig, axes = plt.subplots(
      1,
      len(models),
      figsize=(3.2 * len(models), 3.6),
      squeeze=False,
      constrained_layout=True,
  )
  for ax, model in zip(axes[0], models):
    mine = [r for r in rows if r["model"] == model and r["steps"] == longest]
    labels = [_series_label(r) for r in mine]
    ax.barh(np.arange(len(mine)), [r["ms_per_step"] for r in mine])
    ax.set_yticks(np.arange(len(mine)))
    ax.set_yticklabels(labels, fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("ms per step (log)")
    ax.set_title(f"{model}, T = {longest}", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
  written = [os.path.join(output_dir, "benchmark_time.png")]
  fig.savefig(written[-1], dpi=_DPI)
  plt.close(fig)

  fig, axes = plt.subplots(
      1,
      len(models),
      figsize=(3.2 * len(models), 3.2),
      squeeze=False,
      constrained_layout=True,
  )
  for ax, model in zip(axes[0], models):
    series = {}
    for r in rows:
      if r["model"] == model:
        series.setdefault(_series_label(r), []).append(
            (r["steps"], r["compiled_mib"])
        )
    for label, points in series.items():
      steps, mib = np.asarray(sorted(points)).T
      ax.plot(steps, mib, "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (steps)")
    ax.set_ylabel("compiled MiB")
    ax.set_title(model, fontsize=9)
    ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=5)
  written.append(os.path.join(output_dir, "benchmark_memory.png"))
  fig.savefig(written[-1], dpi=_DPI)
  plt.close(fig)
  return written


def length_figures(path: str, output_dir: str) -> list[str]:
  """Memory and time per step against ``T`` from the length table."""
  data = _read_json(path, "length_table")
  written = []
  for key, unit, name in (
      ("mib", "compiled MiB", "length_memory.png"),
      ("ms_per_step", "ms per step", "length_time.png"),
  ):
    fig, axes = plt.subplots(
        1,
        len(data),
        figsize=(4.2 * len(data), 3.4),
        squeeze=False,
        constrained_layout=True,
    )
    for ax, (model, learners) in zip(axes[0], data.items()):
      for learner, by_t in learners.items():
        points = [
            (int(t), v[key])
            for t, v in by_t.items()
            if isinstance(v.get(key), (int, float))
        ]
        if points:
          steps, values = np.asarray(sorted(points)).T
          ax.plot(steps, values, "o-", label=learner)
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xlabel("sequence length T (steps)")
      ax.set_ylabel(unit)
      ax.set_title(model, fontsize=9)
      ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6)
    written.append(os.path.join(output_dir, name))
    fig.savefig(written[-1], dpi=_DPI)
    plt.close(fig)
  return written


def make_figures(
    compare_dirs: Sequence[str],
    benchmark: Optional[str],
    length_table: Optional[str],
    output_dir: str,
) -> list[str]:
  """Writes every figure the inputs allow; returns their paths."""
  os.makedirs(output_dir, exist_ok=True)
  written = []
  for compare_dir in compare_dirs:
    written += compare_figures(compare_dir, output_dir)
  if benchmark:
    written += benchmark_figures(benchmark, output_dir)
  if length_table:
    written += length_figures(length_table, output_dir)
  return written


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not (_COMPARE.value or _BENCHMARK.value or _LENGTH_TABLE.value):
    raise app.UsageError(
        "Nothing to plot: give --compare, --benchmark or --length_table."
    )
  for path in make_figures(
      _COMPARE.value, _BENCHMARK.value, _LENGTH_TABLE.value, _OUTPUT_DIR.value
  ):
    print(path)


if __name__ == "__main__":
  app.run(main)

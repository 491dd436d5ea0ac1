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
r"""Trains one task under each learner and tabulates the results.

    python -m experiments.compare \
        --config=experiments/configs/cue_accumulation.py --workdir=runs/cmp

Same task, model, seed and data for every learner. For each: the final test
metric, the training wall time, the milliseconds per update and the
compiled memory of one update (``memory_analysis``: temporaries plus
outputs) on one device, and the cosine and norm ratio of its first gradient
(at the initial parameters, on the first training batch) with the exact
one, overall and per parameter (the worst parameter in the table, every one
in ``compare.json``); the exact gradient is RTRL's where its influence fits
``max_trace_bytes``, else BPTT's (the column says which). At the learner's
final parameters: the cosine with BPTT's gradient there and the worst
per-parameter relative error (a quiet network at initialisation can hide
what a rule cuts). ``--learners=all`` runs every registered learner; one
that cannot take the config's model (RTRL's influence over its budget,
e-prop without an ETP readout) gets a row saying why instead of a result.
Writes ``compare.md``, ``compare.json`` and the overlaid learning curves
(``curves.png``, with matplotlib) in the work directory.
"""

import copy
import inspect
import os
import re

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from experiments import common
from experiments import tasks as tasks_lib
from experiments import training
from experiments.benchmarks import timing
import haiku_etp

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/cue_accumulation.py", "Training config."
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/compare", "Output directory.")
DEFAULT_LEARNERS = (
    "d_rtrl",
    "es_d_rtrl:decay=0.9",
    "es_d_rtrl:decay=0.9:form=fused",
    "rtrl",
    "bptt",
    "tbptt:window=10",
)
_LEARNERS = flags.DEFINE_list(
    "learners",
    list(DEFAULT_LEARNERS),
    "Learners to compare: registered names (haiku_etp.learner_names()), "
    "each with options as name:option=value:...; an option overrides the "
    "config field it is read from. 'all' is every registered learner with "
    "the config's options.",
)
_REPEATS = flags.DEFINE_integer(
    "repeats",
    11,
    "Timed calls of one update per learner (median); 0 measures neither "
    "time nor memory (the table shows '-').",
)


def expand(learners) -> list[str]:
  """``learners`` with ``"all"`` replaced by every registered name."""
  out = []
  for text in learners:
    out.extend(haiku_etp.learner_names() if text == "all" else [text])
  return out


def learner_config(config, learner: str):
  """``config`` with the learner ``name:option=value:...`` and its options
  written into the config fields the pipeline reads them from."""
  name, options = haiku_etp.parse_learner(learner)
  config = copy.deepcopy(config)
  with config.unlocked():
    config.learner = name
    for option, value in options.items():
      config[training.option_field(option)] = value
  return config


def learner_label(config) -> str:
  """The row label: the learner and the options its config sets to other
  values than the learner's defaults."""
  spec = haiku_etp.learner_spec(config.learner)
  defaults = {
      k: p.default
      for k, p in inspect.signature(spec.factory).parameters.items()
      if p.default is not inspect.Parameter.empty
  }
  shown = {
      k: v
      for k, v in training.learner_options(config).items()
      if k not in defaults or defaults[k] != v
  }
  return haiku_etp.learner_label(config.learner, shown)


def _first_batch(config, setup):
  b = setup.task.batch(tasks_lib.train_seed(config.seed, 0), config.batch_size)
  return tuple(np.asarray(v) for v in (b.xs, b.ys, b.mask))


# Jitted sequence gradients per setup, so that the initial and final
# gradients of one learner share a compilation.
_GRAD_FNS: dict = {}


def first_gradient(config, setup, ts, params=None):
  """The learner's gradient on the first batch, at the initial parameters
  (or at ``params``)."""
  xs, ys, mask = _first_batch(config, setup)
  hit = _GRAD_FNS.get(id(setup))
  fn = hit[1] if hit is not None and hit[0] is setup else None
  if fn is None:
    fn = jax.jit(
        setup.learner.sequence_grad(
            setup.task.loss, window=training.learner_window(config)
        )
    )
    _GRAD_FNS[id(setup)] = (setup, fn)
  params = ts.params if params is None else params
  # The run's key: rules that draw random numbers (UORO) need one.
  rng = jax.random.fold_in(jnp.asarray(ts.rng), 0)
  return fn(params, ts.learner_state, rng, xs, ys, mask).grads


def per_parameter_agreement(grads, reference) -> dict:
  """``{"module/name": (cosine, norm ratio)}`` of ``grads`` against
  ``reference``."""
  out = {}
  for m in reference:
    for n in reference[m]:
      a = np.ravel(np.asarray(grads[m][n], np.float64))
      b = np.ravel(np.asarray(reference[m][n], np.float64))
      na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
      cos = float(a @ b / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
      out[f"{m}/{n}"] = (cos, na / nb if nb > 0 else float("inf"))
  return out


def exact_reference(config):
  """``(name, first gradient)``: RTRL's where it fits, else BPTT's."""
  for name in ("rtrl", "bptt"):
    cfg = learner_config(config, name)
    try:
      setup, ts = _initial(cfg)
      return name, first_gradient(cfg, setup, ts)
    except ValueError as e:  # RTRL's influence over max_trace_bytes.
      logging.info("compare: no %s reference: %s", name, e)
  raise AssertionError("unreachable: BPTT takes every model")


def per_parameter_error(grads, reference) -> dict:
  """``{"module/name": relative error}`` of ``grads`` against ``reference``."""
  return {
      f"{m}/{n}": haiku_etp.testing.relative_error(grads[m][n], reference[m][n])
      for m in reference
      for n in reference[m]
  }


def measure_update(config, setup, ts, repeats: int) -> dict:
  """Compiled memory and median time of one update on one device."""
  batch = _first_batch(config, setup)
  update = training.make_update_fn(config, setup, None)
  compiled = jax.jit(update).lower(ts, batch).compile()
  mem = compiled.memory_analysis()
  # On the device before the clock starts, as in the training loop.
  ts, batch = jax.device_put((ts, batch))
  seconds = timing.median_seconds(compiled, (ts, batch), repeats)
  return {
      "ms_per_update": 1e3 * seconds,
      "update_mib": (mem.temp_size_in_bytes + mem.output_size_in_bytes) / 2**20,
  }


def _initial(config):
  setup = training.build(config)
  return setup, training.init_train_state(config, setup, config.batch_size)


def _norm(tree) -> float:
  return float(
      np.sqrt(
          sum(np.sum(np.square(l)) for l in jax.tree_util.tree_leaves(tree))
      )
  )


def compare(config, workdir: str, learners, repeats: int = 5) -> list[dict]:
  """Trains and measures each learner; returns one row per learner."""
  bptt = learner_config(config, "bptt")
  bptt_setup, bptt_ts = _initial(bptt)
  exact_name, reference = exact_reference(config)
  rows = []
  for name in expand(learners):
    cfg = learner_config(config, name)
    run_dir = os.path.join(workdir, re.sub(r"[^\w.=-]+", "_", name))
    try:
      setup, ts = _initial(cfg)
      first_gradient(cfg, setup, ts)
    except (ValueError, haiku_etp.CompileError) as e:
      reason = str(e).splitlines()[0]
      rows.append({"learner": learner_label(cfg), "skipped": reason})
      logging.warning("compare: %s cannot train this model: %s", name, reason)
      continue
    result = training.train(cfg, run_dir, plot=False)
    grads = first_gradient(cfg, setup, ts)
    # Where the network has learned: the learner's and BPTT's gradients at
    # the learner's final parameters.
    final = result.state.params
    final_grads = first_gradient(cfg, setup, ts, final)
    final_reference = first_gradient(bptt, bptt_setup, bptt_ts, final)
    row = {
        "learner": learner_label(cfg),
        "metric": result.metric_name,
        "test": float(result.eval_metrics[result.metric_name]),
        "train_s": result.seconds,
        "exact": exact_name,
        "cosine_vs_exact": haiku_etp.testing.cosine_similarity(
            grads, reference
        ),
        "norm_ratio_vs_exact": _norm(grads) / _norm(reference),
        "per_parameter_vs_exact": per_parameter_agreement(grads, reference),
        "final_cosine_vs_bptt": haiku_etp.testing.cosine_similarity(
            final_grads, final_reference
        ),
        "final_relative_error": per_parameter_error(
            final_grads, final_reference
        ),
        "workdir": run_dir,
    }
    if repeats > 0:
      row.update(measure_update(cfg, setup, ts, repeats))
    rows.append(row)
    logging.info("compare: %s", row)
  return rows


def _cell(row: dict, key: str) -> str:
  """A measured number to one decimal, ``-`` where it was not measured."""
  return f"{row[key]:.1f}" if key in row else "-"


def markdown(rows: list[dict], title: str) -> str:
  """The table of ``rows`` in Markdown."""
  trained = [r for r in rows if "skipped" not in r]
  metric = trained[0]["metric"] if trained else "metric"
  exact = trained[0]["exact"].upper() if trained else "exact"
  lines = [
      f"{title}",
      "",
      f"| learner | test {metric} | train s | ms / update | MiB / update |"
      f" cosine vs {exact} | norm ratio | worst parameter (cosine, norm"
      " ratio) | final cosine vs BPTT | final worst rel. err |",
      "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
  ]
  for r in rows:
    if "skipped" in r:
      lines.append(f"| {r['learner']} | not run: {r['skipped']} |||||||||")
      continue
    worst = max(r["final_relative_error"].items(), key=lambda kv: kv[1])
    name, (cos, ratio) = min(
        r["per_parameter_vs_exact"].items(), key=lambda kv: kv[1][0]
    )
    lines.append(
        f"| {r['learner']} | {r['test']:.4f} | {r['train_s']:.0f} | "
        f"{_cell(r, 'ms_per_update')} | {_cell(r, 'update_mib')} | "
        f"{r['cosine_vs_exact']:.4f} | {r['norm_ratio_vs_exact']:.3f} | "
        f"{name} ({cos:.3f}, {ratio:.2f}) | "
        f"{r['final_cosine_vs_bptt']:.4f} | {worst[1]:.1e} ({worst[0]}) |"
    )
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = common.flag_config(_CONFIG)  # an unreadable file: one line
  common.quiet_library_logs()
  common.keep_freed_memory()
  workdir = _WORKDIR.value
  rows = compare(config, workdir, _LEARNERS.value, _REPEATS.value)
  title = (
      f"{config.task.name}, {config.model.kind} {config.model.hidden_size}, "
      f"batch {config.batch_size}, {config.train_steps} steps, seed "
      f"{config.seed}, {jax.device_count()} {jax.default_backend()} device(s)"
  )
  text = markdown(rows, title)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "compare.md"), "w") as f:
    f.write(text)
  common.write_json(os.path.join(workdir, "compare.json"), rows)
  try:
    from experiments import plotting  # pylint: disable=g-import-not-at-top

    plotting.plot_curves(
        [r["workdir"] for r in rows], os.path.join(workdir, "curves.png")
    )
  except ImportError:
    pass
  print(text)


if __name__ == "__main__":
  app.run(main)

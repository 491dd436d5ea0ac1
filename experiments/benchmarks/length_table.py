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
r"""Memory and time of one sequence gradient against the sequence length.

    python -m experiments.benchmarks.length_table --workdir=runs/length_table

For each model (the pipeline's LRU stack and e-prop's ALIF network) and
each ``T`` in ``--lengths``, every learner's ``sequence_grad`` over one
batch of ``T`` steps is compiled, the online learners and ``tbptt`` with
``--window`` (their traces cross each window once; a fused form steps by
one) and BPTT over the whole sequence; its memory is the compiled program's
temporaries plus outputs (``memory_analysis``; the input arrays, the same
for every learner, are left out). A program whose memory fits in
``--memory_limit_gib`` and whose ``T`` is at most ``--run_max_steps`` is
run ``--repeats`` times after a warm-up and timed (ms per step, the median
run over ``T``); the others are reported from the compiled memory, not run.
Writes ``length_table.md`` and ``length_table.json`` in the work directory.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments import models
from experiments.benchmarks import timing
import haiku_etp

_WORKDIR = flags.DEFINE_string(
    "workdir", "runs/length_table", "Output directory."
)
_LENGTHS = flags.DEFINE_list(
    "lengths", ["1024", "4096", "16384", "65536", "262144"], "Sequence lengths."
)
_LEARNERS = flags.DEFINE_list(
    "learners",
    [
        "d_rtrl",
        "d_rtrl:max_cross_bytes=0",
        "es_d_rtrl:decay=0.9:form=fused",
        "rtrl",
        "bptt",
        "bptt:remat=sqrt",
        "tbptt:window=64",
    ],
    "Registered learners, 'name' or 'name:option=value:...'.",
)
_WINDOW = flags.DEFINE_integer(
    "window",
    32,
    "sequence_grad's window for the online learners (the pipeline's "
    "default, experiments.training.AUTO_WINDOW).",
)
_MODELS = flags.DEFINE_list("models", ["lru_stack", "alif"], "Models.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Batch size.")
_RUN_MAX_STEPS = flags.DEFINE_integer(
    "run_max_steps", 16384, "Longest T that is run and timed."
)
_MEMORY_LIMIT = flags.DEFINE_float(
    "memory_limit_gib", 20.0, "Largest compiled memory that is run."
)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per entry.")

MODELS = {
    # The pipeline's LRU stack: encoder, 2 x (LRU 16 -> gelu MLP, residual),
    # readout; inputs of 5 features, 4 outputs.
    "lru_stack": (
        dict(
            kind="lru",
            num_layers=2,
            hidden_size=16,
            width=8,
            r_min=0.9,
            r_max=0.999,
        ),
        5,
        4,
    ),
    # e-prop's network: Linear -> RecurrentALIF 32 -> LeakyReadout, 40 spike
    # inputs.
    "alif": (
        dict(
            kind="snn",
            hidden_size=32,
            neuron="alif",
            recurrent=True,
            tau=20.0,
            tau_adapt=2000.0,
            beta_adapt=1.8,
            readout="leaky",
            readout_tau=20.0,
        ),
        40,
        2,
    ),
}


def _loss(out, y):
  return jnp.mean((out - y) ** 2, axis=-1)


def window_of(learner_text: str):
  """The window a learner runs at: ``None`` (its own: BPTT's whole
  sequence, ``tbptt``'s truncation), 1 for a fused form, else
  ``--window``."""
  name, options = haiku_etp.parse_learner(learner_text)
  if haiku_etp.learner_spec(name).whole_sequence or "window" in options:
    return None
  if options.get("form") == "fused":
    return 1
  return _WINDOW.value


def measure(model_name: str, learner_text: str, num_steps: int, batch: int):
  """One entry: ``{"mib", "ms_per_step", "run", "why"}``."""
  cfg, inputs, outputs = MODELS[model_name]
  model = models.make_model(cfg, outputs)
  name, options = haiku_etp.parse_learner(learner_text)
  learner = haiku_etp.make_learner(name, model, **options)
  x0 = jnp.zeros((batch, inputs))
  params, state = learner.init(jax.random.PRNGKey(0), x0)
  xs = jax.ShapeDtypeStruct((num_steps, batch, inputs), jnp.float32)
  ys = jax.ShapeDtypeStruct((num_steps, batch, outputs), jnp.float32)
  fn = jax.jit(learner.sequence_grad(_loss, window=window_of(learner_text)))
  key = jax.random.PRNGKey(0)  # rules that draw random numbers need one
  try:
    compiled = fn.lower(params, state, key, xs, ys).compile()
  except ValueError as e:  # over a learner's byte budget (RTRL)
    return dict(mib=None, ms_per_step=None, run=False, why=str(e)[:120])
  memory = compiled.memory_analysis()
  nbytes = memory.temp_size_in_bytes + memory.output_size_in_bytes
  entry = dict(mib=nbytes / 2**20, ms_per_step=None, run=False, why="")
  if nbytes > _MEMORY_LIMIT.value * 2**30:
    entry["why"] = f"over {_MEMORY_LIMIT.value:g} GiB"
    return entry
  if num_steps > _RUN_MAX_STEPS.value:
    entry["why"] = f"T > {_RUN_MAX_STEPS.value}"
    return entry
  rng = np.random.default_rng(0)
  data = (
      jnp.asarray(rng.random(xs.shape) < 0.05, jnp.float32) * 2.0,
      jnp.asarray(rng.normal(size=ys.shape), jnp.float32),
  )
  seconds = timing.median_seconds(
      compiled, (params, state, key, *data), _REPEATS.value
  )
  entry.update(run=True, ms_per_step=1e3 * seconds / num_steps)
  return entry


def _cell(entry) -> str:
  if entry["mib"] is None:
    return "over budget"
  mib = f"{entry['mib']:.1f} MiB"
  if entry["run"]:
    return f"{mib}, {entry['ms_per_step']:.3f} ms"
  return f"{mib} ({entry['why']}; not run)"


def table(results, lengths, learners) -> str:
  lines = []
  for model_name, rows in results.items():
    lines.append(f"**{model_name}**, batch {_BATCH.value}\n")
    lines.append("| learner | " + " | ".join(f"T={t}" for t in lengths) + " |")
    lines.append("|---|" + "---:|" * len(lengths))
    for learner in learners:
      cells = [_cell(rows[learner][str(t)]) for t in lengths]
      window = window_of(learner)
      label = learner if window is None else f"{learner}, window {window}"
      lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def main(argv):
  del argv
  common.keep_freed_memory()
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  lengths = [int(t) for t in _LENGTHS.value]
  results = {}
  load = os.getloadavg()[0]
  for model_name in _MODELS.value:
    if model_name not in MODELS:
      raise app.UsageError(
          f"--models: unknown model {model_name!r}; known: {list(MODELS)}."
      )
    results[model_name] = {}
    for learner in _LEARNERS.value:
      row = results[model_name][learner] = {}
      for t in lengths:
        logging.info("length_table: %s %s T=%d", model_name, learner, t)
        row[str(t)] = measure(model_name, learner, t, _BATCH.value)
        logging.info("  %s", _cell(row[str(t)]))
  text = (
      f"Compiled memory (temporaries + outputs) and ms per step of one "
      f"sequence gradient; {jax.device_count()} {jax.default_backend()} "
      f"device(s), load {load:.1f} at the start.\n\n"
      + table(results, lengths, _LEARNERS.value)
  )
  with open(os.path.join(workdir, "length_table.md"), "w") as f:
    f.write(text)
  with open(os.path.join(workdir, "length_table.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(text)
  print(f"wrote {os.path.join(workdir, 'length_table.md')}")


if __name__ == "__main__":
  app.run(main)

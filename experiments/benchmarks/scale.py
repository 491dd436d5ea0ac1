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
r"""Benchmarks what large and sparse networks need: three parts.

``events``: the event-driven forward pass (``max_events``) against the plain
product, for the dense and the sparse op, over input sizes and spike rates
(``B`` samples of Bernoulli spikes; ``max_events`` is the batch's largest
count). The table gives both times and the rate below which the event sum
wins at each size.

``precision``: the reference models of ``experiments.benchmarks.benchmark``
at ``--scale_steps`` steps with each learner's traces stored in float32,
bfloat16 and float16 (``trace_dtype``): compiled memory, ms per step, and
the gradient's cosine and norm ratio against the float32 traces' (same
parameters and data).

``network``: a recurrent spiking network of ``N`` LIF neurons (each
``--scale_neurons``) with random connectivity ``--scale_density``
(``haiku_etp.SparseLinear`` on the previous step's spikes), an input layer
and a leaky readout, on a simple task (tell which of two
Poisson input patterns is shown). Per learner, the compiled memory and ms
per step of one gradient over ``--scale_steps`` steps, the loss before and
after ``--scale_updates`` Adam updates, and the compiled memory the same
network with a dense recurrent matrix would need (from XLA's memory
analysis of the abstract program: never allocated).

    python -m experiments.benchmarks.scale \
        --scale_parts=events,precision,network
"""

import functools
import math
import time
from typing import Any
import warnings

from absl import app
from absl import flags
from absl import logging
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from experiments.benchmarks import benchmark
from experiments.benchmarks import timing
import haiku_etp

_PARTS = ("events", "precision", "network")

SCALE_PARTS = flags.DEFINE_list("scale_parts", list(_PARTS), f"From {_PARTS}.")
SCALE_REPEATS = flags.DEFINE_integer(
    "scale_repeats", 5, "Timed calls per measurement (median)."
)
SCALE_EVENT_SIZES = flags.DEFINE_list(
    "scale_event_sizes", ["256", "1024", "4096"], "Input sizes I (O = I)."
)
SCALE_EVENT_RATES = flags.DEFINE_list(
    "scale_event_rates",
    ["0.005", "0.01", "0.02", "0.05", "0.1", "0.2"],
    "Spike rates.",
)
SCALE_EVENT_DENSITY = flags.DEFINE_float(
    "scale_event_density", 0.1, "Connectivity of the sparse op's weight."
)
SCALE_BATCH = flags.DEFINE_integer("scale_batch", 32, "Batch of the events.")
SCALE_STEPS = flags.DEFINE_integer(
    "scale_steps", 1024, "Sequence length of the precision and network parts."
)
SCALE_MODELS = flags.DEFINE_list(
    "scale_models",
    ["gru", "lif", "conv_lif", "eprop"],
    "Models of the precision part (experiments.benchmarks.benchmark's).",
)
SCALE_LEARNERS = flags.DEFINE_list(
    "scale_learners",
    ["d_rtrl", "es_d_rtrl"],
    "Learners of the precision and network parts.",
)
SCALE_MODEL_SCALE = flags.DEFINE_float(
    "scale_model_scale",
    1.0,
    "experiments.benchmarks.benchmark's --bench_scale.",
)
SCALE_NEURONS = flags.DEFINE_list(
    "scale_neurons", ["10000", "100000"], "Network sizes N."
)
SCALE_DENSITY = flags.DEFINE_float(
    "scale_density", 0.01, "Recurrent connectivity of the network."
)
SCALE_NET_BATCH = flags.DEFINE_integer(
    "scale_net_batch", 2, "Batch of the network part."
)
SCALE_UPDATES = flags.DEFINE_integer(
    "scale_updates", 5, "Adam updates of the network part (0: none)."
)
SCALE_OUTPUT = flags.DEFINE_string(
    "scale_output", None, "Optional path of a JSON file with the results."
)

_DTYPES = ("float32", "bfloat16", "float16")


def _flat(tree) -> np.ndarray:
  return np.concatenate(
      [
          np.ravel(np.asarray(v, np.float64))
          for v in jax.tree_util.tree_leaves(tree)
      ]
  )


def cosine_and_ratio(got, want) -> tuple[float, float]:
  a, b = _flat(got), _flat(want)
  na, nb = np.linalg.norm(a), np.linalg.norm(b)
  return float(a @ b / (na * nb)), float(na / nb)


def events(sizes, rates, density, batch, repeats) -> list[dict]:
  """Times the plain and event-driven forward passes of both ops."""
  rows = []
  for size in sizes:
    rng = np.random.default_rng(size)
    w = jnp.asarray(
        rng.normal(size=(size, size)) / math.sqrt(size), jnp.float32
    )
    conn = haiku_etp.Connectivity.random((size, size), density, seed=size)
    values = jnp.asarray(rng.normal(size=conn.nnz), jnp.float32)
    for rate in rates:
      x = jnp.asarray(rng.random((batch, size)) < rate, jnp.float32)
      count = max(1, int(jnp.max(jnp.sum(x, -1))))
      row = {"size": size, "rate": rate, "max_events": count}
      for op, fn in (
          ("dense", lambda x, e: haiku_etp.dense(x, w, max_events=e)),
          (
              "sparse",
              lambda x, e: haiku_etp.sparse(x, values, conn, max_events=e),
          ),
      ):
        plain = jax.jit(functools.partial(fn, e=None))
        event = jax.jit(functools.partial(fn, e=count))
        np.testing.assert_allclose(plain(x), event(x), rtol=1e-4, atol=1e-4)
        row[f"{op}_ms"] = 1e3 * timing.median_seconds(plain, (x,), repeats)
        row[f"{op}_event_ms"] = 1e3 * timing.median_seconds(
            event, (x,), repeats
        )
      rows.append(row)
      logging.info("events %s", row)
  return rows


def crossover(rows: list[dict], op: str) -> dict:
  """Per size, the largest rate at which the event sum was faster."""
  out = {}
  for size in sorted({r["size"] for r in rows}):
    wins = [
        r["rate"]
        for r in rows
        if r["size"] == size and r[f"{op}_event_ms"] < r[f"{op}_ms"]
    ]
    out[size] = max(wins) if wins else None
  return out


def precision(models, learners, steps, scale, repeats) -> list[dict]:
  """Each learner with float32, bfloat16 and float16 traces."""
  rows = []
  for model_name in models:
    spec = benchmark.make_model(model_name, scale)
    model = hk.transform_with_state(spec.step)
    x0 = jnp.zeros(spec.x_shape, jnp.float32)
    params, model_state = jax.jit(model.init)(jax.random.key(0), x0)
    xs, ys = benchmark.make_sequence(spec, steps, 0)
    for learner_name in learners:
      reference = None
      for dtype in _DTYPES:
        text = learner_name + (
            "" if dtype == "float32" else f":trace_dtype={dtype}"
        )
        with warnings.catch_warnings():
          warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
          learner = benchmark.make_learner(text, model, 0.9)
          state = learner.init_state(params, model_state, None, x0)
        fn = jax.jit(learner.sequence_grad(benchmark.loss_fn))
        key = jax.random.PRNGKey(0)
        compiled = fn.lower(params, state, key, xs, ys).compile()
        mem = compiled.memory_analysis()
        grads = fn(params, state, key, xs, ys).grads
        row = {
            "model": model_name,
            "learner": learner_name,
            "trace_dtype": dtype,
            "trace_mib": timing.nbytes(learner.traces(state)) / 2**20,
            "compiled_mib": (mem.temp_size_in_bytes + mem.output_size_in_bytes)
            / 2**20,
            "ms_per_step": 1e3
            * timing.median_seconds(
                compiled, (params, state, key, xs, ys), repeats
            )
            / steps,
        }
        if reference is None:
          reference = grads
        row["cosine"], row["norm_ratio"] = cosine_and_ratio(grads, reference)
        rows.append(row)
        logging.info("precision %s", row)
  return rows


def network_step(num_neurons: int, connectivity):
  """The recurrent spiking network's step: inputs and the previous step's
  spikes (event-driven, through the sparse recurrent weights) drive LIF
  neurons read out by a leaky readout of 2."""

  def step(x_t):
    batch = x_t.shape[0]
    z_tm1 = haiku_etp.get_hidden_state(
        "z", (batch, num_neurons), x_t.dtype, hk.initializers.Constant(0.0)
    )
    # The sparse product is proportional to the synapses already; its
    # event-driven sum does not win on XLA:CPU (the events part).
    if connectivity is None:
      recurrent = haiku_etp.Linear(
          num_neurons, with_bias=False, name="recurrent"
      )(z_tm1)
    else:
      recurrent = haiku_etp.SparseLinear(
          connectivity, with_bias=False, name="recurrent"
      )(z_tm1)
    current = haiku_etp.Linear(num_neurons, name="input")(x_t) + recurrent
    z_t = haiku_etp.LIF(tau=10.0)(current)
    haiku_etp.set_hidden_state("z", z_t)
    return haiku_etp.LeakyReadout(2, tau=10.0)(z_t)

  return step


def _poisson_task(batch: int, steps: int, num_inputs: int, seed: int):
  """Two fixed rate patterns over the inputs; the label says which."""
  rng = np.random.default_rng(seed)
  patterns = rng.uniform(0.0, 0.2, size=(2, num_inputs))
  labels = rng.integers(0, 2, size=batch)
  rates = patterns[labels]
  xs = rng.random((steps, batch, num_inputs)) < rates[None]
  ys = np.broadcast_to(labels, (steps, batch))
  return jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.int32)


def _abstract(tree):
  return jax.tree_util.tree_map(
      lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), tree
  )


def network(sizes, density, learners, batch, steps, updates, repeats):
  """The large sparse network per size and learner, and its dense twin's
  compiled memory."""
  rows = []
  num_inputs = 100
  for size in sizes:
    start = time.perf_counter()
    conn = haiku_etp.Connectivity.random((size, size), density, seed=0)
    logging.info(
        "network N=%d: %d synapses (%.3g%%), drawn in %.1f s",
        size,
        conn.nnz,
        100 * conn.density,
        time.perf_counter() - start,
    )
    xs, ys = _poisson_task(batch, steps, num_inputs, seed=size)
    for learner_name in learners:
      for kind, c in (("sparse", conn), ("dense", None)):
        model = hk.transform_with_state(network_step(size, c))
        with warnings.catch_warnings():
          warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
          learner = benchmark.make_learner(learner_name, model, 0.9)
          shapes = jax.eval_shape(
              lambda: learner.init(jax.random.PRNGKey(0), xs[0])
          )
        fn = jax.jit(learner.sequence_grad(benchmark.loss_fn))
        lowered = fn.lower(*_abstract(shapes), None, xs, ys)
        compiled = lowered.compile()
        mem = compiled.memory_analysis()
        row = {
            "neurons": size,
            "synapses": conn.nnz if kind == "sparse" else size * size,
            "kind": kind,
            "learner": learner_name,
            "param_mib": timing.nbytes(shapes[0]) / 2**20,
            "trace_mib": timing.nbytes(learner.traces(shapes[1])) / 2**20,
            "compiled_mib": (
                mem.argument_size_in_bytes
                + mem.temp_size_in_bytes
                + mem.output_size_in_bytes
            )
            / 2**20,
        }
        if kind == "sparse":
          params, state = learner.init(jax.random.PRNGKey(0), xs[0])
          row["ms_per_step"] = (
              1e3
              * timing.median_seconds(
                  compiled, (params, state, None, xs, ys), repeats
              )
              / steps
          )
          row["losses"] = _train(learner, fn, params, state, xs, ys, updates)
        rows.append(row)
        logging.info("network %s", row)
  return rows


def _train(learner, fn, params, state, xs, ys, updates) -> list[float]:
  """The mean loss of the batch before each of ``updates`` Adam updates and
  after the last."""
  opt = optax.adam(1e-2)
  opt_state = opt.init(params)
  losses = []
  for _ in range(updates + 1):
    result = fn(params, learner.reset(state), None, xs, ys)
    losses.append(float(jnp.mean(result.losses)))
    step, opt_state = opt.update(result.grads, opt_state)
    params = optax.apply_updates(params, step)
  return losses


def print_events(rows):
  print(
      "Forward pass, ms (B=%d): plain product vs event-driven sum"
      % SCALE_BATCH.value
  )
  print(
      f"{'I=O':>6} {'rate':>6} {'events':>6} {'dense':>9} {'dense ev':>9} "
      f"{'sparse':>9} {'sparse ev':>9}"
  )
  for r in rows:
    print(
        f"{r['size']:>6} {r['rate']:>6.3f} {r['max_events']:>6} "
        f"{r['dense_ms']:>9.3f} {r['dense_event_ms']:>9.3f} "
        f"{r['sparse_ms']:>9.3f} {r['sparse_event_ms']:>9.3f}"
    )
  for op in ("dense", "sparse"):
    print(
        f"{op}: the event sum wins up to rate {crossover(rows, op)} (by size)"
    )


def print_precision(rows):
  print("Traces stored in bfloat16 / float16 against float32")
  print(
      f"{'model':<9} {'learner':<10} {'dtype':<9} {'trace MiB':>9} "
      f"{'compiled':>9} {'ms/step':>8} {'cosine':>8} {'norm':>7}"
  )
  for r in rows:
    print(
        f"{r['model']:<9} {r['learner']:<10} {r['trace_dtype']:<9} "
        f"{r['trace_mib']:>9.2f} {r['compiled_mib']:>9.2f} "
        f"{r['ms_per_step']:>8.3f} {r['cosine']:>8.5f} {r['norm_ratio']:>7.4f}"
    )


def print_network(rows):
  print("Recurrent LIF network, random sparse recurrent weights")
  print(
      f"{'N':>7} {'synapses':>11} {'kind':<7} {'learner':<10} "
      f"{'params MiB':>10} {'traces MiB':>10} {'compiled MiB':>12} "
      f"{'ms/step':>9}  loss"
  )
  for r in rows:
    ms = f"{r['ms_per_step']:>9.2f}" if "ms_per_step" in r else f"{'-':>9}"
    losses = r.get("losses")
    loss = f"{losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "not run"
    print(
        f"{r['neurons']:>7} {r['synapses']:>11} {r['kind']:<7} "
        f"{r['learner']:<10} {r['param_mib']:>10.1f} {r['trace_mib']:>10.1f} "
        f"{r['compiled_mib']:>12.1f} {ms}  {loss}"
    )


def _ints(values, what):
  try:
    out = [int(v) for v in values]
  except ValueError as e:
    raise app.UsageError(f"{what} takes integers: {e}") from None
  if any(v < 1 for v in out):
    raise app.UsageError(f"{what} must be >= 1, got {out}.")
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  parts = SCALE_PARTS.value
  unknown = sorted(set(parts) - set(_PARTS))
  if unknown:
    raise app.UsageError(f"--scale_parts: unknown {unknown}; known {_PARTS}.")
  device = jax.devices()[0]
  results: dict[str, Any] = {
      "device": f"{device.platform} {device.device_kind}"
  }

  def write():
    if SCALE_OUTPUT.value:
      common.write_json(SCALE_OUTPUT.value, results)

  if "events" in parts:
    rates = [float(r) for r in SCALE_EVENT_RATES.value]
    results["events"] = events(
        _ints(SCALE_EVENT_SIZES.value, "--scale_event_sizes"),
        rates,
        SCALE_EVENT_DENSITY.value,
        SCALE_BATCH.value,
        SCALE_REPEATS.value,
    )
    write()
    print_events(results["events"])
  if "precision" in parts:
    results["precision"] = precision(
        SCALE_MODELS.value,
        SCALE_LEARNERS.value,
        SCALE_STEPS.value,
        SCALE_MODEL_SCALE.value,
        SCALE_REPEATS.value,
    )
    write()
    print_precision(results["precision"])
  if "network" in parts:
    results["network"] = network(
        _ints(SCALE_NEURONS.value, "--scale_neurons"),
        SCALE_DENSITY.value,
        SCALE_LEARNERS.value,
        SCALE_NET_BATCH.value,
        SCALE_STEPS.value,
        SCALE_UPDATES.value,
        SCALE_REPEATS.value,
    )
    write()
    print_network(results["network"])


if __name__ == "__main__":
  app.run(main)

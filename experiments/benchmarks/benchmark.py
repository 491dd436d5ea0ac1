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
r"""Benchmarks D-RTRL, ES-D-RTRL and BPTT on the reference models.

Four models built from the library's modules:

* ``gru``: ``haiku_etp.GRU`` 32 -> 256 (``hk.GRU``'s parameters, one relation
  per gate and side) and a ``Linear`` readout 256 -> 10, B=32;
* ``lif``: ``Linear`` 100 -> 512 into ``LIF`` neurons (leak 0.9, soft reset,
  fast-sigmoid surrogate) and a ``LeakyReadout`` ``r_t = 0.9 r_{t-1} + s_t
  W``, B=32;
* ``conv_lif``: a 3x3 SAME ``Conv2D`` 32x32x2 -> 16 channels into
  per-position ``LIF`` neurons, and a ``LeakyReadout`` of the spatially
  mean-pooled spikes, B=8;
* ``eprop``: e-prop's network, ``Linear`` 20 -> 64 into a
  ``RecurrentALIF`` layer and a ``LeakyReadout`` of 2, B=32;
* ``gru_small``: ``GRU`` 32 -> 64 and a ``Linear`` readout, B=32 (a size
  at which RTRL runs; not in the default list);
* ``lru_stack``: a ``Linear`` encoder 16 -> 32, two blocks ``u <- u +
  gelu(Linear(LRU 64(u)))`` and a ``Linear`` readout, B=32 (exact under
  D-RTRL with cross-group fields; ``d_rtrl:max_cross_bytes=0`` is
  Online-LRU's cut).

The learners are registered names with options (``name:option=value``):
``d_rtrl``, ``d_rtrl:max_cross_bytes=0`` (no cross-group traces),
``es_d_rtrl`` and ``es_d_rtrl:form=fused`` (its window and fused forms,
decay ``--bench_es_decay`` unless given), ``rtrl`` (a configuration over
its ``max_trace_bytes`` is reported, not run) and ``bptt``.

For every model, learner, window and sequence length ``T`` one call of
``learner.sequence_grad`` (each window of ``--bench_windows`` for the
online learners and truncated BPTT, the whole sequence for BPTT) is
compiled under ``jit``. The table gives XLA's memory
analysis of that call ("compiled" = temp + output bytes; the input sequence
is an argument and counted apart, since generating it inside the call would
put ``O(T)`` input bytes into temp memory and hide whether the learner's own
memory is flat), and the median time of one call divided by ``T``. For every
learner with traces, the copy bound is one read plus one write of all traces
per step at the copy bandwidth measured in the same run, and the floor of
its one-step windows is BPTT's time per step plus that bound (``xfloor``:
time over floor). The process keeps freed memory in malloc's heap
(:func:`experiments.common.keep_freed_memory`: XLA:CPU allocates a program's
temporaries at every call, and fresh mappings fault their pages in again),
the same for every learner. A second table gives, per model
and learner, the compiled memory at the largest ``T`` over the smallest and
its growth per step beside the input bytes of one step.

    python -m experiments.benchmarks.benchmark --bench_steps=64,256,1024 \
        --bench_windows=1,32 --bench_output=/tmp/bench.json
"""

import functools
import itertools
import math
import time
from typing import Callable, NamedTuple

from absl import app
from absl import flags
from absl import logging
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments import models
from experiments.benchmarks import timing
import haiku_etp

_MODEL_NAMES = ("gru", "lif", "conv_lif", "eprop", "gru_small", "lru_stack")
# D-RTRL without cross-group traces (max_cross_bytes=0): the cost and the
# error of cutting a readout's or a next layer's path.
_LEARNER_NAMES = (
    "d_rtrl",
    "d_rtrl:max_cross_bytes=0",
    "es_d_rtrl",
    "es_d_rtrl:form=fused",
    "bptt",
)

# rules_benchmark defines flags of the same names; allowing the override lets
# both binaries be imported into one process (the test runner).
BENCH_STEPS = flags.DEFINE_list(
    "bench_steps", ["64", "256", "1024"], "Sequence lengths T."
)
BENCH_MODELS = flags.DEFINE_list(
    "bench_models", list(_MODEL_NAMES), f"Models, from {_MODEL_NAMES}."
)
BENCH_LEARNERS = flags.DEFINE_list(
    "bench_learners",
    list(_LEARNER_NAMES),
    "Learners: registered names with options, name:option=value:... "
    f"(haiku_etp.learner_names()); default {_LEARNER_NAMES}.",
)
BENCH_WINDOWS = flags.DEFINE_list(
    "bench_windows",
    ["1", "32"],
    "Windows of the online learners and truncated BPTT (BPTT covers the "
    "whole sequence).",
)
BENCH_REPEATS = flags.DEFINE_integer(
    "bench_repeats",
    5,
    "Timed calls per measurement, after one warm-up call (median reported).",
    allow_override=True,
)
BENCH_SCALE = flags.DEFINE_float(
    "bench_scale",
    1.0,
    "Multiplies batch sizes, widths and image sizes (use <1 for smoke runs).",
    allow_override=True,
)
BENCH_ES_DECAY = flags.DEFINE_float(
    "bench_es_decay", 0.9, "Decay of ES-D-RTRL's input and output traces."
)
BENCH_COPY_MIB = flags.DEFINE_integer(
    "bench_copy_mib", 64, "Size of the array timed for the copy bandwidth."
)
BENCH_OUTPUT = flags.DEFINE_string(
    "bench_output",
    None,
    "Optional path of a JSON file with the results.",
    allow_override=True,
)

_NUM_CLASSES = 10
# Leak 0.9 per step for the neurons and the readout.
_LIF_TAU = -1.0 / math.log(0.9)
_SPIKE = functools.partial(haiku_etp.surrogate.fast_sigmoid, scale=10.0)


def _conv_lif_step(x_t: jax.Array, channels: int) -> jax.Array:
  i_t = haiku_etp.Conv2D(channels, 3, name="conv")(x_t)
  s_t = haiku_etp.LIF(tau=_LIF_TAU, surrogate=_SPIKE)(i_t)
  return _readout(jnp.mean(s_t, axis=(1, 2)))


def _readout(s_t: jax.Array) -> jax.Array:
  return haiku_etp.LeakyReadout(_NUM_CLASSES, tau=_LIF_TAU, with_bias=False)(
      s_t
  )


class ModelSpec(NamedTuple):
  """One benchmark model.

  Attributes:
    name: the model's flag name.
    description: sizes, for the log and the JSON.
    step: the untransformed Haiku step ``x_t -> logits_t``.
    x_shape: one step's input shape, batch first.
  """

  name: str
  description: str
  step: Callable[[jax.Array], jax.Array]
  x_shape: tuple[int, ...]


def _scaled(n: int, scale: float) -> int:
  return max(1, round(n * scale))


def make_model(name: str, scale: float) -> ModelSpec:
  """The model ``name`` with batch, widths and image size times ``scale``."""
  s = functools.partial(_scaled, scale=scale)
  if name in ("gru", "gru_small"):
    batch, num_in = s(32), s(32)
    hidden = s(256 if name == "gru" else 64)
    step = lambda x_t: haiku_etp.Linear(_NUM_CLASSES, name="readout")(
        haiku_etp.GRU(hidden)(x_t)
    )
    desc = f"GRU {num_in}->{hidden}, readout ->{_NUM_CLASSES}, B={batch}"
    return ModelSpec(name, desc, step, (batch, num_in))
  if name == "lif":
    batch, num_in, hidden = s(32), s(100), s(512)
    step = lambda x_t: _readout(
        haiku_etp.LIF(tau=_LIF_TAU, surrogate=_SPIKE)(
            haiku_etp.Linear(hidden)(x_t)
        )
    )
    desc = f"LIF {num_in}->{hidden}, leaky readout ->{_NUM_CLASSES}, B={batch}"
    return ModelSpec(name, desc, step, (batch, num_in))
  if name == "conv_lif":
    batch, size, channels = s(8), s(32), s(16)
    step = functools.partial(_conv_lif_step, channels=channels)
    desc = (
        f"conv LIF {size}x{size}x2->{channels} 3x3, leaky readout "
        f"->{_NUM_CLASSES}, B={batch}"
    )
    return ModelSpec(name, desc, step, (batch, size, size, 2))
  if name == "eprop":
    batch, num_in, hidden = s(32), s(20), s(64)

    def step(x_t):
      alif = haiku_etp.RecurrentALIF(
          tau=20.0, tau_adapt=200.0, beta_adapt=1.0, surrogate=_SPIKE
      )
      return haiku_etp.LeakyReadout(2, tau=20.0)(
          alif(haiku_etp.Linear(hidden)(x_t))
      )

    desc = f"e-prop: recurrent ALIF {num_in}->{hidden}, leaky readout ->2, B={batch}"
    return ModelSpec(name, desc, step, (batch, num_in))
  if name == "lru_stack":
    batch, num_in, width, hidden = s(32), s(16), s(32), s(64)
    step = models.make_step(
        dict(
            kind="lru",
            num_layers=2,
            hidden_size=hidden,
            width=width,
            r_min=0.9,
            r_max=0.999,
        ),
        _NUM_CLASSES,
    )
    desc = (
        f"LRU stack: encoder {num_in}->{width}, 2 x (LRU {hidden}, gelu "
        f"mixer), readout ->{_NUM_CLASSES}, B={batch}"
    )
    return ModelSpec(name, desc, step, (batch, num_in))
  raise ValueError(f"Unknown model {name!r}; known models are {_MODEL_NAMES}.")


def make_learner(text: str, model: hk.TransformedWithState, es_decay: float):
  """The registered learner ``name:option=value:...`` for ``model``; a
  learner with a ``decay`` option gets ``es_decay`` unless ``text`` sets it.
  """
  name, options = haiku_etp.parse_learner(text)
  if "decay" in haiku_etp.learner_spec(name).options:
    options.setdefault("decay", es_decay)
  return haiku_etp.make_learner(name, model, **options)


def loss_fn(logits_t: jax.Array, y_t: jax.Array) -> jax.Array:
  """Softmax cross-entropy against integer labels, mean over the batch."""
  log_p = jax.nn.log_softmax(logits_t)
  y_t = y_t % logits_t.shape[-1]  # the same labels for every readout size
  return -jnp.mean(jnp.take_along_axis(log_p, y_t[:, None], axis=-1))


def copy_bandwidth(num_bytes: int, repeats: int) -> float:
  """Bytes/s of ``a -> 0.5 a`` (one read, one write) on a float32 array.

  The argument is donated so the product is written in place: a fresh output
  buffer per call would add the cost of first-touch page faults, which the
  traces, updated in place inside the compiled loop, do not pay.
  """
  scale = jax.jit(lambda a: a * 0.5, donate_argnums=0)
  # 0.5 ** 30 is still a normal float32: no denormal slow-down.
  repeats = min(max(1, repeats), 30)
  seconds, a = timing.median_chained_seconds(
      scale, jnp.ones((max(1, num_bytes // 4),)), repeats
  )
  return 2 * timing.nbytes(a) / seconds


def influence_shapes(traces: dict) -> list:
  """The ``(B, H, n)`` shapes of RTRL's influence traces."""
  return [
      tuple(v.shape) for k, v in traces.items() if k.startswith("influence:")
  ]


def matmul_gflops(batch: int, num_h: int, num_p: int, repeats: int) -> float:
  """GFLOP/s of the batched product ``(B, H, H) x (B, H, P)``, float32: RTRL's
  ``J_t M_{t-1}`` for ``P`` influence columns."""
  prod = jax.jit(lambda j, m: jnp.einsum("bij,bjn->bin", j, m))
  j = jnp.ones((batch, num_h, num_h), jnp.float32) / num_h
  m = jnp.ones((batch, num_h, num_p), jnp.float32)
  seconds = timing.median_seconds(prod, (j, m), max(3, repeats))
  return 2.0 * batch * num_h * num_h * num_p / seconds / 1e9


def make_sequence(spec: ModelSpec, num_steps: int, seed: int):
  """Inputs and targets of ``num_steps`` steps for ``spec``, from ``seed``."""
  # NumPy rather than jax.random: eager JAX would compile once per shape.
  rng = np.random.default_rng(seed)
  xs = rng.standard_normal((num_steps,) + spec.x_shape, np.float32)
  ys = rng.integers(0, _NUM_CLASSES, (num_steps, spec.x_shape[0]), np.int32)
  return jnp.asarray(xs), jnp.asarray(ys)


def measure(learner, params, state, xs, ys, repeats: int, window=None) -> dict:
  """Compiles one ``sequence_grad`` call (with ``window``: ``None`` is the
  learner's default); returns its memory and timing."""
  grad_fn = learner.sequence_grad(loss_fn, window=window)

  def call(params, state, xs, ys):
    # A fixed key: rules that draw random numbers (UORO) need one.
    key = jax.random.PRNGKey(0)
    losses, grads, state, _ = grad_fn(params, state, key, xs, ys)
    # The mean keeps the output's size independent of T.
    return grads, state, jnp.mean(losses)

  start = time.perf_counter()
  compiled = jax.jit(call).lower(params, state, xs, ys).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  num_steps = xs.shape[0]
  seconds = timing.median_seconds(compiled, (params, state, xs, ys), repeats)
  row = {
      "temp_bytes": int(mem.temp_size_in_bytes),
      "argument_bytes": int(mem.argument_size_in_bytes),
      "output_bytes": int(mem.output_size_in_bytes),
      "alias_bytes": int(mem.alias_size_in_bytes),
      "input_bytes": timing.nbytes((xs, ys)),
      "compile_s": compile_s,
      "ms_per_step": 1e3 * seconds / num_steps,
  }
  row["compiled_bytes"] = row["temp_bytes"] + row["output_bytes"]
  row["compiled_mib"] = row["compiled_bytes"] / 2**20
  return row


def _windows(learner_text: str, windows) -> list:
  """The windows a learner is measured at: ``[None]`` (the whole sequence)
  for BPTT, ``[1]`` for a fused form (step by step only), ``windows`` for
  the others."""
  name, options = haiku_etp.parse_learner(learner_text)
  if haiku_etp.learner_spec(name).whole_sequence:
    return [None]
  if options.get("form") == "fused":
    return [1]
  return list(windows)


def run(
    model_names,
    learner_names,
    steps,
    scale: float,
    repeats: int,
    es_decay: float,
    bandwidth: float,
    on_row: Callable[[list[dict]], None] = lambda rows: None,
    windows=(1,),
) -> list[dict]:
  """One row per (model, learner, window, T); ``on_row`` sees the rows so
  far."""
  rows = []
  for model_name in model_names:
    spec = make_model(model_name, scale)
    logging.info("Model %s: %s", model_name, spec.description)
    model = hk.transform_with_state(spec.step)
    x0 = jnp.zeros(spec.x_shape, jnp.float32)
    # One set of parameters for all learners; jit avoids compiling every
    # initialiser eagerly.
    params, model_state = jax.jit(model.init)(jax.random.key(0), x0)
    for learner_name in learner_names:
      learner = make_learner(learner_name, model, es_decay)
      try:
        state = learner.init_state(params, model_state, None, x0)
      except ValueError as e:
        if "max_trace_bytes" not in str(e):
          raise
        # Over the learner's own budget: reported, not run.
        logging.warning("%s %s: %s", model_name, learner_name, e)
        rows.append(
            {
                "model": model_name,
                "description": spec.description,
                "learner": learner_name,
                "over_budget": str(e),
            }
        )
        on_row(rows)
        continue
      trace_bytes = timing.nbytes(learner.traces(state))
      for window, num_steps in itertools.product(
          _windows(learner_name, windows), steps
      ):
        xs, ys = make_sequence(spec, num_steps, seed=num_steps)
        row = {
            "model": model_name,
            "description": spec.description,
            "learner": learner_name,
            "window": window,
            "steps": num_steps,
            "batch": spec.x_shape[0],
            "param_bytes": timing.nbytes(params),
            "trace_bytes": trace_bytes,
        }
        row.update(measure(learner, params, state, xs, ys, repeats, window))
        shapes = influence_shapes(learner.traces(state))
        if shapes:
          # J M: 2 B H^2 n flops per influence trace, once a step under the
          # per-step roll and once a window under the closed-form one.
          batch, num_h = shapes[0][:2]
          num_p = sum(n for _, _, n in shapes)
          closed = (window or 1) > 1 and "window_roll=per_step" not in (
              learner_name
          )
          flops = (
              2.0 * batch * num_h * num_h * num_p / (window if closed else 1)
          )
          row["jm_gflop_per_step"] = flops / 1e9
          row["jm_gflops_in_step"] = flops / row["ms_per_step"] / 1e6
          row["matmul_gflops"] = matmul_gflops(batch, num_h, num_p, repeats)
          row["jm_ms_at_matmul_rate"] = flops / row["matmul_gflops"] / 1e6
        if trace_bytes:
          row["copy_bound_ms"] = 1e3 * 2 * trace_bytes / bandwidth
          row["x_bound"] = row["ms_per_step"] / row["copy_bound_ms"]
          # Trace bytes read and written per second of a whole step.
          row["trace_gb_per_s"] = 2 * trace_bytes / row["ms_per_step"] / 1e6
        logging.info(
            "%s %s window %s T=%d: %.2f MiB, %.3f ms/step (compiled in %.1f s)",
            model_name,
            learner_name,
            window,
            num_steps,
            row["compiled_mib"],
            row["ms_per_step"],
            row["compile_s"],
        )
        rows.append(row)
        on_row(rows)
  _add_bptt_ratios(rows)
  return rows


def _add_bptt_ratios(rows: list[dict]) -> None:
  bptt = {
      (r["model"], r["steps"]): r["ms_per_step"]
      for r in rows
      if r["learner"] == "bptt"
  }
  for r in rows:
    if "over_budget" in r:
      continue
    ref = bptt.get((r["model"], r["steps"]))
    r["x_bptt"] = None if ref is None else r["ms_per_step"] / ref
    if ref is not None and "copy_bound_ms" in r:
      # One-step windows cannot amortise: the step's own forward and
      # backward pass plus one read and write of every trace.
      r["floor_ms"] = ref + r["copy_bound_ms"]
      r["x_floor"] = r["ms_per_step"] / r["floor_ms"]


def memory_growth(rows: list[dict]) -> list[dict]:
  """Compiled memory at the largest over the smallest T, per model/learner."""
  out = []
  rows = [r for r in rows if "over_budget" not in r]
  keys = dict.fromkeys((r["model"], r["learner"], r["window"]) for r in rows)
  for model_name, learner_name, window in keys:
    mine = [
        r
        for r in rows
        if r["model"] == model_name
        and r["learner"] == learner_name
        and r["window"] == window
    ]
    lo = min(mine, key=lambda r: r["steps"])
    hi = max(mine, key=lambda r: r["steps"])
    ratio = hi["compiled_bytes"] / lo["compiled_bytes"]
    extra_steps = max(1, hi["steps"] - lo["steps"])
    out.append(
        {
            "model": model_name,
            "learner": learner_name,
            "window": window,
            "t_min": lo["steps"],
            "t_max": hi["steps"],
            "ratio": ratio,
            # Growth per extra step, beside the input bytes of one step: equal
            # numbers mean the call holds a copy of the input sequence.
            "bytes_per_step": (
                (hi["compiled_bytes"] - lo["compiled_bytes"]) / extra_steps
            ),
            "input_bytes_per_step": hi["input_bytes"] / hi["steps"],
            # Online memory must not depend on T (docs/design.md, "Memory").
            "flat": abs(ratio - 1.0) <= 0.05,
        }
    )
  return out


def _fmt(value, spec: str, width: int) -> str:
  return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def print_table(rows, growth, bandwidth: float) -> None:
  cols = (
      ("compiled_mib", "compiled MiB", ".2f"),
      ("ms_per_step", "ms/step", ".3f"),
      ("x_bptt", "xBPTT", ".2f"),
      ("copy_bound_ms", "bound ms", ".3f"),
      ("x_bound", "xbound", ".2f"),
      ("x_floor", "xfloor", ".2f"),
  )
  print(
      "Gradient over a sequence, float32, "
      f"{jax.devices()[0].platform}; compiled = temp + output bytes; "
      "bound = one read + one write of the learner's traces per step at "
      f"{bandwidth / 1e9:.2f} GB/s (copy bandwidth measured in this run); "
      "floor = BPTT's ms/step + bound (what one-step windows cannot go "
      "below); window - = the whole sequence"
  )
  print(
      f"{'model':<10}{'learner':<26}{'window':>7}{'T':>7}"
      + "".join(f"{title:>14}" for _, title, _ in cols)
  )
  for r in rows:
    if "over_budget" in r:
      print(f"{r['model']:<10}{r['learner']:<26}  not run: {r['over_budget']}")
      continue
    window = "-" if r["window"] is None else r["window"]
    print(
        f"{r['model']:<10}{r['learner']:<26}{window:>7}{r['steps']:>7}"
        + "".join(_fmt(r.get(key), spec, 14) for key, _, spec in cols)
    )
  jm = [r for r in rows if "jm_gflop_per_step" in r]
  if jm:
    print(
        "RTRL's J M product (2 B H^2 P flops, once a step, or once a window "
        "under the closed-form roll): its GFLOP per step, their rate over the "
        "whole step, and the batched matmul's own GFLOP/s on those shapes"
    )
    print(
        f"{'model':<10}{'learner':<26}{'window':>7}{'T':>6}{'GFLOP/step':>12}"
        f"{'GFLOP/s step':>14}{'matmul GFLOP/s':>16}{'JM ms':>9}"
    )
    for r in jm:
      print(
          f"{r['model']:<10}{r['learner']:<26}{r['window'] or '-':>7}"
          f"{r['steps']:>6}{r['jm_gflop_per_step']:>12.3f}{r['jm_gflops_in_step']:>14.1f}"
          f"{r['matmul_gflops']:>16.1f}{r['jm_ms_at_matmul_rate']:>9.3f}"
      )
  print(
      "Compiled memory at T=max over T=min (online learners: flat within 5%), "
      "its growth per step and the input bytes per step"
  )
  print(
      f"{'model':<10}{'learner':<26}{'window':>7}{'T ratio':>13}{'ratio':>8}"
      f"{'KiB/step':>10}{'input KiB':>10}"
  )
  for g in growth:
    window = "-" if g["window"] is None else g["window"]
    print(
        f"{g['model']:<10}{g['learner']:<26}{window:>7}"
        f"{g['t_max']:>6}/{g['t_min']:<6}{g['ratio']:>8.3f}"
        f"{g['bytes_per_step'] / 2**10:>10.1f}"
        f"{g['input_bytes_per_step'] / 2**10:>10.1f}"
    )


def _parse_names(values, known, what):
  unknown = [v for v in values if v not in known]
  if unknown or not values:
    raise app.UsageError(f"Unknown {what} {unknown}; choose from {known}.")
  return list(values)


def _parse_learners(values):
  if not values:
    raise app.UsageError("--bench_learners is empty.")
  for v in values:
    try:
      haiku_etp.parse_learner(v)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  return list(values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  model_names = _parse_names(BENCH_MODELS.value, _MODEL_NAMES, "models")
  learner_names = _parse_learners(BENCH_LEARNERS.value)
  try:
    steps = sorted({int(t) for t in BENCH_STEPS.value})
  except ValueError as e:
    raise app.UsageError(f"--bench_steps takes integers: {e}") from None
  if not steps or steps[0] < 1:
    raise app.UsageError(f"--bench_steps must be >= 1, got {steps}.")
  try:
    windows = sorted({int(k) for k in BENCH_WINDOWS.value})
  except ValueError as e:
    raise app.UsageError(f"--bench_windows takes integers: {e}") from None
  if not windows or windows[0] < 1:
    raise app.UsageError(f"--bench_windows must be >= 1, got {windows}.")
  common.keep_freed_memory()
  device = jax.devices()[0]
  logging.info("Benchmarking on %s (%s)", device.platform, device.device_kind)
  bandwidth = copy_bandwidth(BENCH_COPY_MIB.value * 2**20, 20)
  logging.info("Copy bandwidth: %.2f GB/s", bandwidth / 1e9)
  config = {
      "device": f"{device.platform} {device.device_kind}",
      "steps": steps,
      "windows": windows,
      "scale": BENCH_SCALE.value,
      "repeats": BENCH_REPEATS.value,
      "es_decay": BENCH_ES_DECAY.value,
      "copy_mib": BENCH_COPY_MIB.value,
      "copy_gb_per_s": bandwidth / 1e9,
  }

  def write(rows, growth=None):
    if BENCH_OUTPUT.value:
      payload = dict(config, rows=rows)
      if growth is not None:
        payload["memory_growth"] = growth
      common.write_json(BENCH_OUTPUT.value, payload)

  rows = run(
      model_names,
      learner_names,
      steps,
      BENCH_SCALE.value,
      BENCH_REPEATS.value,
      BENCH_ES_DECAY.value,
      bandwidth,
      on_row=write,
      windows=windows,
  )
  growth = memory_growth(rows)
  for g in growth:
    if g["window"] is not None and not g["flat"]:
      logging.warning(
          "%s %s window %s: compiled memory grows %.3fx from T=%d to T=%d.",
          g["model"],
          g["learner"],
          g["window"],
          g["ratio"],
          g["t_min"],
          g["t_max"],
      )
  write(rows, growth)
  print_table(rows, growth, bandwidth)


if __name__ == "__main__":
  app.run(main)

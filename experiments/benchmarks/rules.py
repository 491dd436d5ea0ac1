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
r"""Benchmarks the D-RTRL trace roll of each ETP primitive.

For one relation per primitive (the sizes of the project's reference models)
it times, under ``jit``, one trace update ``eps' = D eps + D_f (x) x`` and one
solve, through the closed-form fast path and through the generic rules. The
update reads and writes the whole trace, so it is memory-bound: the table
gives the achieved bytes/s and the time one read plus one write of the trace
takes at the copy bandwidth measured in the same run.

In the same run it compares the backend forms (``haiku_etp._src.core.backend``):

* the fast update and solve traced with the CPU-tuned forms of
  ``mix_states``, ``weighted_state_sum`` and ``sum_leading``
  (``backend.tuning(True)``) against the plain ``einsum`` / ``jnp.sum``
  forms (``backend.tuning(False)``), per primitive;
* one jitted D-RTRL step (``learner.value_and_grad``) of a dense-LIF, a
  conv-LIF and a GRU model (D-RTRL approximates the GRU; only the time
  matters here) with the per-step Jacobians behind ``backend.materialize``'s
  optimisation barrier against the same step traced without it (the barrier
  replaced by an identity while tracing).

The variants of a comparison are compiled first and then called in turn, so
they see the same machine load.

    python -m experiments.benchmarks.rules --bench_repeats=50
"""

import contextlib
import warnings

from absl import app
from absl import flags
from absl import logging
import haiku as hk
import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.benchmarks import timing
import haiku_etp
from haiku_etp import extend
from haiku_etp._src.core import backend

BENCH_REPEATS = flags.DEFINE_integer(
    "bench_repeats", 30, "Timed calls per measurement (median reported)."
)
BENCH_NUM_STATES = flags.DEFINE_integer(
    "bench_num_states", 2, "States per position S."
)
BENCH_SCALE = flags.DEFINE_float(
    "bench_scale", 1.0, "Multiplies the batch sizes (use <1 for smoke runs)."
)
BENCH_OUTPUT = flags.DEFINE_string(
    "bench_output", None, "Optional path of a JSON file with the results."
)
BENCH_FORMS = flags.DEFINE_bool(
    "bench_forms",
    True,
    "Also time the fast paths with the CPU-tuned and the plain backend forms.",
)
_BARRIER_MODELS = ("dense_lif", "conv_lif", "gru")
BENCH_BARRIER_MODELS = flags.DEFINE_list(
    "bench_barrier_models",
    list(_BARRIER_MODELS),
    "Models whose D-RTRL step is timed with and without the materialize "
    f"barrier, from {_BARRIER_MODELS} (empty: none).",
)


def _relations(scale):
  """``(name, prim, weights, x, params, y_shape)`` at the reference sizes."""
  rng = np.random.default_rng(0)
  normal = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  b_dense = max(1, int(32 * scale))
  b_conv = max(1, int(8 * scale))
  out = [
      (
          "dense 100->512, B=%d" % b_dense,
          extend.etp_batched_dense_p,
          {"weight": normal(100, 512), "bias": normal(512)},
          normal(b_dense, 100),
          {"has_bias": True},
      )
  ]
  x = normal(b_conv, 32, 32, 2)
  kernel = normal(3, 3, 2, 16)
  bias = normal(16)
  jaxpr = jax.make_jaxpr(
      lambda x, k, b: haiku_etp.conv(
          x, k, b, padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
  )(x, kernel, bias)
  params = jaxpr.eqns[-1].params
  out.append(
      (
          "conv 32x32x2->16 3x3, B=%d" % b_conv,
          extend.etp_conv_p,
          {"weight": kernel, "bias": bias},
          x,
          params,
      )
  )
  out.append(
      (
          "elementwise 512, B=%d" % b_dense,
          extend.etp_elementwise_p,
          {"weight": normal(512)},
          None,
          {"fn": jax.nn.sigmoid},
      )
  )
  return out, b_dense


def _copy_bandwidth(num_bytes, repeats):
  """Bytes/s of ``a -> a + 1`` (one read, one write) on an array this size."""
  a = jnp.zeros((max(1, num_bytes // 4),), jnp.float32)
  seconds = timing.median_seconds(jax.jit(lambda a: a + 1.0), (a,), repeats)
  return 2 * a.size * 4 / seconds


def _primitive_count(jaxpr, names):
  """How many equations of ``jaxpr`` (nested ones included) are in ``names``."""
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name in names
    for sub in jex_core.jaxprs_in_params(eqn.params):
      count += _primitive_count(sub, names)
  return count


_PLAIN_OPS = ("dot_general", "reduce_sum")


def _time_forms(prim, params, trace, d, d_f, x, g, weights, repeats):
  """Fast update and solve traced with the CPU-tuned and the plain forms."""
  out = {}
  calls = []
  update_args = (trace, d, d_f, x, weights)
  solve_args = (trace, g, weights)
  for cpu in (True, False):
    tag = "tuned" if cpu else "plain"
    # New functions per form: JAX caches a function's trace, and the form is
    # chosen while tracing; each is compiled (called once) under its switch.
    update = lambda t, d, f, x, w: extend.drtrl_update(
        prim, t, d, f, x, w, params
    )
    solve = lambda t, g, w: extend.drtrl_solve(prim, t, g, w, params)
    with backend.tuning(cpu):
      out[f"plain_ops_{tag}"] = _primitive_count(
          jax.make_jaxpr(update)(*update_args).jaxpr, _PLAIN_OPS
      ) + _primitive_count(jax.make_jaxpr(solve)(*solve_args).jaxpr, _PLAIN_OPS)
      update, solve = jax.jit(update), jax.jit(solve)
      jax.block_until_ready((update(*update_args), solve(*solve_args)))
    calls += [(update, update_args), (solve, solve_args)]
  seconds = timing.interleaved_median_seconds(calls, repeats)
  for (tag, key), sec in zip(
      [(t, k) for t in ("tuned", "plain") for k in ("update", "solve")],
      seconds,
  ):
    out[f"{key}_ms_{tag}"] = 1e3 * sec
  out["update_plain_over_tuned"] = (
      out["update_ms_plain"] / out["update_ms_tuned"]
  )
  out["solve_plain_over_tuned"] = out["solve_ms_plain"] / out["solve_ms_tuned"]
  return out


def run(num_states, repeats, scale, forms=True):
  """Returns one result row per relation."""
  relations, b_dense = _relations(scale)
  rows = []
  for name, prim, weights, x, params in relations:
    y = jax.eval_shape(
        lambda x, w: prim.bind_operands(x, w, params),
        x,
        weights,
    )
    y_shape = tuple(y.shape)
    if prim.x_invar_index is None:
      y_shape = (b_dense,) + y_shape
    s = num_states
    y_aval = jax.ShapeDtypeStruct(y_shape, jnp.float32)
    avals = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in weights.items()
    }
    x_aval = None if x is None else jax.ShapeDtypeStruct(x.shape, x.dtype)
    trace = extend.drtrl_init(prim, x_aval, y_aval, avals, s, params)
    rng = np.random.default_rng(1)
    d = jnp.asarray(rng.uniform(-0.5, 0.5, y_shape + (s, s)), jnp.float32)
    d_f = jnp.asarray(rng.standard_normal(y_shape + (s,)), jnp.float32)
    g = jnp.asarray(rng.standard_normal(y_shape + (s,)), jnp.float32)
    trace_bytes = timing.nbytes(trace)
    row = {"relation": name, "trace_mib": trace_bytes / 2**20}
    # With the forms timed, the fast path's time is that of the default form.
    for fast in (False,) if forms else (True, False):
      update = jax.jit(
          lambda t, d, f, x, w, fast=fast: extend.drtrl_update(
              prim, t, d, f, x, w, params, fast=fast
          )
      )
      solve = jax.jit(
          lambda t, g, w, fast=fast: extend.drtrl_solve(
              prim, t, g, w, params, fast=fast
          )
      )
      tag = "fast" if fast else "generic"
      row[f"update_ms_{tag}"] = 1e3 * timing.median_seconds(
          update, (trace, d, d_f, x, weights), repeats
      )
      row[f"solve_ms_{tag}"] = 1e3 * timing.median_seconds(
          solve, (trace, g, weights), repeats
      )
    if forms:
      row.update(
          _time_forms(prim, params, trace, d, d_f, x, g, weights, repeats)
      )
      default = "tuned" if backend.cpu_tuned() else "plain"
      row["update_ms_fast"] = row[f"update_ms_{default}"]
      row["solve_ms_fast"] = row[f"solve_ms_{default}"]
    bandwidth = _copy_bandwidth(trace_bytes, repeats)
    row["copy_gb_per_s"] = bandwidth / 1e9
    row["bound_ms"] = 1e3 * 2 * trace_bytes / bandwidth
    row["update_gb_per_s_fast"] = 2 * trace_bytes / row["update_ms_fast"] / 1e6
    row["update_over_bound"] = row["update_ms_fast"] / row["bound_ms"]
    rows.append(row)
  return rows


@contextlib.contextmanager
def _without_barrier():
  """Traces the learners' steps with ``backend.materialize`` as a no-op."""
  barrier = backend.materialize
  backend.materialize = lambda x: x
  try:
    yield
  finally:
    backend.materialize = barrier


def _barrier_models(scale):
  """``{name: (description, step, x_shape)}``: reference steps (no readout)."""
  b_dense = max(1, int(32 * scale))
  b_conv = max(1, int(8 * scale))
  dense = lambda x: haiku_etp.LIF(tau=10.0)(haiku_etp.Linear(512)(x))
  conv = lambda x: haiku_etp.LIF(tau=10.0)(
      haiku_etp.Conv2D(16, 3, name="conv")(x)
  )
  gru = lambda x: haiku_etp.GRU(256)(x)
  return {
      "dense_lif": (
          f"dense-LIF 100->512, B={b_dense}",
          dense,
          (b_dense, 100),
      ),
      "conv_lif": (
          f"conv-LIF 32x32x2->16 3x3, B={b_conv}",
          conv,
          (b_conv, 32, 32, 2),
      ),
      "gru": (f"GRU 32->256, B={b_dense}", gru, (b_dense, 32)),
  }


def run_barrier(repeats, scale, models=_BARRIER_MODELS):
  """One D-RTRL step per model, with and without the materialize barrier."""
  rows = []
  loss = lambda out, y: jnp.mean((out - y) ** 2)
  available = _barrier_models(scale)
  for model in models:
    name, step, x_shape = available[model]
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    row = {"model": name}
    calls = []
    for barrier in (True, False):
      tag = "barrier" if barrier else "no_barrier"
      scope = contextlib.nullcontext() if barrier else _without_barrier()
      with scope, warnings.catch_warnings():
        warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
        learner = haiku_etp.d_rtrl(hk.transform_with_state(step))
        params, state = learner.init(jax.random.PRNGKey(0), x)
        y = jnp.zeros(
            jax.eval_shape(learner.apply, params, state, None, x)[0].shape
        )
        fn = learner.value_and_grad(loss)
        args = (params, state, None, x, y)
        row[f"barriers_{tag}"] = _primitive_count(
            jax.make_jaxpr(fn)(*args).jaxpr, ("optimization_barrier",)
        )
        fn = jax.jit(fn)
        jax.block_until_ready(fn(*args))  # Compiled with this scope's form.
      calls.append((fn, args))
    with_barrier, without = timing.interleaved_median_seconds(calls, repeats)
    row["step_ms_barrier"] = 1e3 * with_barrier
    row["step_ms_no_barrier"] = 1e3 * without
    row["no_barrier_over_barrier"] = (
        row["step_ms_no_barrier"] / row["step_ms_barrier"]
    )
    rows.append(row)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  unknown = sorted(set(BENCH_BARRIER_MODELS.value) - set(_BARRIER_MODELS))
  if unknown:
    raise app.UsageError(
        f"Unknown barrier models {unknown}; known: {list(_BARRIER_MODELS)}."
    )
  device = jax.devices()[0]
  logging.info("Benchmarking on %s (%s)", device.platform, device.device_kind)
  rows = run(
      BENCH_NUM_STATES.value,
      BENCH_REPEATS.value,
      BENCH_SCALE.value,
      forms=BENCH_FORMS.value,
  )
  barrier_rows = run_barrier(
      BENCH_REPEATS.value, BENCH_SCALE.value, BENCH_BARRIER_MODELS.value
  )
  cols = (
      ("trace_mib", "trace MiB"),
      ("update_ms_fast", "update ms"),
      ("update_ms_generic", "generic ms"),
      ("solve_ms_fast", "solve ms"),
      ("solve_ms_generic", "gen. solve"),
      ("bound_ms", "copy bound"),
      ("update_over_bound", "x bound"),
      ("update_gb_per_s_fast", "GB/s"),
  )
  print(
      f"D-RTRL trace roll, float32, S={BENCH_NUM_STATES.value}, "
      f"{device.platform}; 'copy bound' = one read + one write of the trace "
      "at the copy bandwidth measured in this run"
  )
  print(f"{'relation':<28}" + "".join(f"{title:>11}" for _, title in cols))
  for row in rows:
    print(
        f"{row['relation']:<28}"
        + "".join(f"{row[key]:>11.3f}" for key, _ in cols)
    )
  if BENCH_FORMS.value:
    print(
        "\nBackend forms of the fast paths: CPU-tuned (loops, pairwise tree) "
        "vs plain (einsum, jnp.sum); 'plain ops' counts dot_general and "
        f"reduce_sum in the traced update + solve; default here: "
        f"{'tuned' if backend.cpu_tuned() else 'plain'}"
    )
    form_cols = (
        ("update_ms_tuned", "upd tuned"),
        ("update_ms_plain", "upd plain"),
        ("update_plain_over_tuned", "p/t ratio"),
        ("solve_ms_tuned", "slv tuned"),
        ("solve_ms_plain", "slv plain"),
        ("solve_plain_over_tuned", "p/t ratio"),
    )
    print(
        f"{'relation':<28}"
        + "".join(f"{title:>11}" for _, title in form_cols)
        + f"{'plain ops':>11}"
    )
    for row in rows:
      print(
          f"{row['relation']:<28}"
          + "".join(f"{row[key]:>11.3f}" for key, _ in form_cols)
          + f"{row['plain_ops_tuned']:>5d} /{row['plain_ops_plain']:>3d}"
      )
  if barrier_rows:
    print(
        "\nOne jitted D-RTRL step (value_and_grad): per-step Jacobians behind "
        "backend.materialize's optimisation barrier vs no barrier"
    )
    print(
        f"{'model':<30}{'barrier ms':>12}{'none ms':>12}{'none/barr':>10}"
        f"{'barriers':>10}"
    )
    for row in barrier_rows:
      print(
          f"{row['model']:<30}{row['step_ms_barrier']:>12.3f}"
          f"{row['step_ms_no_barrier']:>12.3f}"
          f"{row['no_barrier_over_barrier']:>10.2f}"
          f"{row['barriers_barrier']:>6d} /{row['barriers_no_barrier']:>2d}"
      )
  if BENCH_OUTPUT.value:
    common.write_json(
        BENCH_OUTPUT.value,
        {
            "device": f"{device.platform} {device.device_kind}",
            "num_states": BENCH_NUM_STATES.value,
            "cpu_tuned_default": backend.cpu_tuned(),
            "rows": rows,
            "barrier_rows": barrier_rows,
        },
    )


if __name__ == "__main__":
  app.run(main)

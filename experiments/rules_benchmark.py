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

    python -m experiments.rules_benchmark --bench_repeats=50
"""

import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
import haiku_etp

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


def _relations(scale):
  """``(name, prim, weights, x, params, y_shape)`` at the reference sizes."""
  rng = np.random.default_rng(0)
  normal = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  b_dense = max(1, int(32 * scale))
  b_conv = max(1, int(8 * scale))
  out = [
      (
          "dense 100->512, B=%d" % b_dense,
          haiku_etp.etp_batched_dense_p,
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
          haiku_etp.etp_conv_p,
          {"weight": kernel, "bias": bias},
          x,
          params,
      )
  )
  out.append(
      (
          "elementwise 512, B=%d" % b_dense,
          haiku_etp.etp_elementwise_p,
          {"weight": normal(512)},
          None,
          {"fn": jax.nn.sigmoid},
      )
  )
  return out, b_dense


def _median_seconds(fn, args, repeats):
  out = fn(*args)
  jax.block_until_ready(out)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _nbytes(tree):
  return sum(l.size * l.dtype.itemsize for l in jax.tree_util.tree_leaves(tree))


def _copy_bandwidth(num_bytes, repeats):
  """Bytes/s of ``a -> a + 1`` (one read, one write) on an array this size."""
  a = jnp.zeros((max(1, num_bytes // 4),), jnp.float32)
  seconds = _median_seconds(jax.jit(lambda a: a + 1.0), (a,), repeats)
  return 2 * a.size * 4 / seconds


def run(num_states, repeats, scale):
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
    trace = haiku_etp.drtrl_init(prim, x_aval, y_aval, avals, s, params)
    rng = np.random.default_rng(1)
    d = jnp.asarray(rng.uniform(-0.5, 0.5, y_shape + (s, s)), jnp.float32)
    d_f = jnp.asarray(rng.standard_normal(y_shape + (s,)), jnp.float32)
    g = jnp.asarray(rng.standard_normal(y_shape + (s,)), jnp.float32)
    trace_bytes = _nbytes(trace)
    row = {"relation": name, "trace_mib": trace_bytes / 2**20}
    for fast in (True, False):
      update = jax.jit(
          lambda t, d, f, x, w, fast=fast: haiku_etp.drtrl_update(
              prim, t, d, f, x, w, params, fast=fast
          )
      )
      solve = jax.jit(
          lambda t, g, w, fast=fast: haiku_etp.drtrl_solve(
              prim, t, g, w, params, fast=fast
          )
      )
      tag = "fast" if fast else "generic"
      row[f"update_ms_{tag}"] = 1e3 * _median_seconds(
          update, (trace, d, d_f, x, weights), repeats
      )
      row[f"solve_ms_{tag}"] = 1e3 * _median_seconds(
          solve, (trace, g, weights), repeats
      )
    bandwidth = _copy_bandwidth(trace_bytes, repeats)
    row["copy_gb_per_s"] = bandwidth / 1e9
    row["bound_ms"] = 1e3 * 2 * trace_bytes / bandwidth
    row["update_gb_per_s_fast"] = 2 * trace_bytes / row["update_ms_fast"] / 1e6
    row["update_over_bound"] = row["update_ms_fast"] / row["bound_ms"]
    rows.append(row)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  device = jax.devices()[0]
  logging.info("Benchmarking on %s (%s)", device.platform, device.device_kind)
  rows = run(BENCH_NUM_STATES.value, BENCH_REPEATS.value, BENCH_SCALE.value)
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
  if BENCH_OUTPUT.value:
    common.write_json(
        BENCH_OUTPUT.value,
        {
            "device": f"{device.platform} {device.device_kind}",
            "num_states": BENCH_NUM_STATES.value,
            "rows": rows,
        },
    )


if __name__ == "__main__":
  app.run(main)

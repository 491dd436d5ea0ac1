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
r"""Demonstrates the ETP ops and checks their trace rules against ``jax.grad``.

For each primitive (dense, conv in several layouts, elementwise) it runs the
op under ``jit`` and ``pmap`` over all local devices, then rolls D-RTRL and
ES-D-RTRL traces with the primitive's rules on a leaky system
``h_t = D_t h_{t-1} + D_f,t * op(x_t, theta)`` and prints the largest relative
error against the exact gradient, in float64. Each oracle runs under ``jit``.

    python -m experiments.ops_demo --demo_num_steps=7 --demo_num_states=2
    python -m experiments.ops_demo --demo_relations=dense,conv2d_nhwc
"""

import functools

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
import haiku_etp
from haiku_etp import extend
from haiku_etp import testing

DEMO_NUM_STEPS = flags.DEFINE_integer(
    "demo_num_steps", 7, "Sequence length T of the oracle systems."
)
DEMO_NUM_STATES = flags.DEFINE_integer(
    "demo_num_states", 2, "States per position S of the oracle systems."
)
DEMO_LEAK = flags.DEFINE_float(
    "demo_leak", 0.8, "Uniform leak for the exact ES-D-RTRL case."
)
DEMO_SEED = flags.DEFINE_integer("demo_seed", 0, "Random seed.")
DEMO_OUTPUT = flags.DEFINE_string(
    "demo_output", None, "Optional path of a JSON file with the results."
)
RELATION_NAMES = (
    "dense",
    "conv1d_nch",
    "conv2d_nhwc",
    "conv2d_nchw_groups",
    "conv3d_ndhwc",
    "elementwise",
)
DEMO_RELATIONS = flags.DEFINE_list(
    "demo_relations",
    None,
    "Relations to check (default: all): " + ", ".join(RELATION_NAMES) + ".",
)


# Each oracle program runs once: compiled without XLA:CPU's backend
# optimisations and with the classic fusion emitters, it compiles several
# times faster.
_ORACLE_COMPILER_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
}


def _conv_params(x, kernel, bias, **kwargs):
  jaxpr = jax.make_jaxpr(lambda x, k, b: haiku_etp.conv(x, k, b, **kwargs))(
      x, kernel, bias
  )
  return [e for e in jaxpr.eqns if e.primitive is extend.etp_conv_p][0].params


def _relations(num_steps, seed):
  """``(name, prim, weights, xs, params, oracle_kwargs)`` per relation."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.standard_normal(shape))
  out = [
      (
          "dense",
          extend.etp_batched_dense_p,
          {"weight": normal(16, 8), "bias": normal(8)},
          normal(num_steps, 4, 16),
          {"has_bias": True},
          {},
      )
  ]
  conv_cases = (
      (
          "conv1d_nch",
          (4, 3, 12),
          (5, 3, 3),
          dict(strides=(2,), rhs_dilation=(2,)),
      ),
      (
          "conv2d_nhwc",
          (4, 8, 8, 3),
          (3, 3, 3, 6),
          dict(dimension_numbers=("NHWC", "HWIO", "NHWC"), padding="SAME"),
      ),
      (
          "conv2d_nchw_groups",
          (4, 4, 7, 7),
          (6, 2, 3, 3),
          dict(feature_group_count=2, padding="VALID"),
      ),
      (
          "conv3d_ndhwc",
          (2, 4, 5, 4, 2),
          (2, 2, 2, 2, 3),
          dict(dimension_numbers=("NDHWC", "DHWIO", "NDHWC")),
      ),
  )
  for name, x_shape, k_shape, kwargs in conv_cases:
    xs = normal(num_steps, *x_shape)
    kernel = normal(*k_shape)
    dn = extend.conv_dimension_numbers(
        kwargs.get("dimension_numbers"), len(x_shape) - 2
    )
    bias = normal(k_shape[dn.rhs_spec[0]])
    out.append(
        (
            name,
            extend.etp_conv_p,
            {"weight": kernel, "bias": bias},
            xs,
            _conv_params(xs[0], kernel, bias, **kwargs),
            {},
        )
    )
  out.append(
      (
          "elementwise",
          extend.etp_elementwise_p,
          {"weight": normal(10)},
          None,
          {"fn": jax.nn.sigmoid},
          dict(num_steps=num_steps, batch_size=4),
      )
  )
  return out


def _show_transformations():
  """Runs each op under jit and under pmap over all local devices."""
  devices = jax.local_devices()
  n = len(devices)
  x = jnp.ones((n, 2, 3, 8, 8))
  kernel = jnp.ones((4, 3, 3, 3)) / 27.0
  conv = lambda x: haiku_etp.conv(x, kernel, jnp.zeros(4), padding="SAME")
  y_jit = jax.jit(jax.vmap(conv))(x)
  y_pmap = jax.pmap(conv)(x)
  np.testing.assert_allclose(y_jit, y_pmap, rtol=1e-5)
  logging.info(
      "conv under jit and pmap over %d %s device(s): output %s",
      n,
      devices[0].platform,
      y_pmap.shape,
  )
  jaxpr = str(
      jax.make_jaxpr(
          jax.grad(lambda k: jnp.sum(haiku_etp.conv(x[0], k, padding="SAME")))
      )(kernel)
  )
  logging.info("etp_conv visible in the jaxpr of grad: %s", "etp_conv" in jaxpr)


def _jit_oracle(oracle, prim, weights, xs, params, **kwargs):
  """Runs a rule oracle under ``jit``: one compilation, no per-op dispatch.

  The oracle's random system is drawn with the non-partitionable threefry:
  JAX's default, partitionable one takes seconds to compile on XLA:CPU for
  the multi-axis shapes of a conv system, and the system is random either
  way. Each program runs once, so it is compiled with
  ``_ORACLE_COMPILER_OPTIONS``.
  """
  run_oracle = jax.jit(lambda w, xs: oracle(prim, w, xs, params, **kwargs))
  with jax.threefry_partitionable(False):
    lowered = run_oracle.lower(weights, xs)
  return lowered.compile(_ORACLE_COMPILER_OPTIONS)(weights, xs)


def run(num_steps, num_states, leak, seed, names=None):
  """Returns ``{relation: {check: relative error}}`` (``names``: a subset)."""
  results = {}
  for name, prim, weights, xs, params, kwargs in _relations(num_steps, seed):
    if names and name not in names:
      continue
    oracle = functools.partial(
        _jit_oracle,
        prim=prim,
        weights=weights,
        xs=xs,
        params=params,
        seed=seed,
        **kwargs,
    )
    row = {}
    for strip in (False, True):
      row["drtrl_batch_stripped" if strip else "drtrl_batch_kept"] = oracle(
          testing.drtrl_rule_oracle,
          num_hidden_state=num_states,
          strip_batch=strip,
      ).relative_error
    row["drtrl_generic_rules"] = oracle(
        testing.drtrl_rule_oracle, num_hidden_state=num_states, fast=False
    ).relative_error
    row["es_drtrl_uniform_leak"] = oracle(
        testing.pp_rule_oracle, decay=(leak, 0.0), leak=leak
    ).relative_error
    row["es_drtrl_random_D_cosine"] = oracle(
        testing.pp_rule_oracle, decay=(0.5, 0.5), num_hidden_state=num_states
    ).cosine
    results[name] = row
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  unknown = sorted(set(DEMO_RELATIONS.value or ()) - set(RELATION_NAMES))
  if unknown:
    raise app.UsageError(
        f"Unknown relations {unknown}; known: {list(RELATION_NAMES)}."
    )
  _show_transformations()
  with jax.enable_x64(True):
    results = run(
        DEMO_NUM_STEPS.value,
        DEMO_NUM_STATES.value,
        DEMO_LEAK.value,
        DEMO_SEED.value,
        DEMO_RELATIONS.value,
    )
  columns = list(next(iter(results.values())))
  header = f"{'relation':<20}" + "".join(f"{c:>26}" for c in columns)
  print(
      f"Rule oracles, float64, T={DEMO_NUM_STEPS.value}, "
      f"S={DEMO_NUM_STATES.value} (relative error vs jax.grad; the last "
      "column is the cosine of the ES-D-RTRL approximation)"
  )
  print(header)
  for name, row in results.items():
    print(f"{name:<20}" + "".join(f"{row[c]:>26.3e}" for c in columns))
  exact = [
      v for row in results.values() for k, v in row.items() if "cosine" not in k
  ]
  print(f"max relative error of the exact cases: {max(exact):.3e}")
  if DEMO_OUTPUT.value:
    common.write_json(
        DEMO_OUTPUT.value,
        {
            "flags": {
                "num_steps": DEMO_NUM_STEPS.value,
                "num_states": DEMO_NUM_STATES.value,
                "leak": DEMO_LEAK.value,
                "seed": DEMO_SEED.value,
                "relations": DEMO_RELATIONS.value,
            },
            "results": results,
        },
    )
  if max(exact) > 1e-10:
    raise SystemExit("A rule oracle exceeded relative error 1e-10.")


if __name__ == "__main__":
  app.run(main)

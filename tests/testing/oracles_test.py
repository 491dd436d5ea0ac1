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
"""Rule oracles: traces rolled with each primitive's rules vs ``jax.grad``.

The hidden system is ``h_t = D_t h_{t-1} + D_f,t * op(x_t, theta)`` with random
per-position ``S x S`` blocks (see ``haiku_etp.testing``). D-RTRL is exact on
it, so every case must match to 1e-10 in float64; ES-D-RTRL is exact at
``T = 1`` and for decays ``(lam, 0)`` on a uniform leak ``lam``.

The oracles run under ``jit`` on ``T = 2`` steps (``T = 1`` only where it is a
distinct case, ES-D-RTRL's exactness at one step). Options that take the
same code path for every layout (batch kept or stripped, ``S``, fast or
generic rules, CPU-tuned or plain reduction forms) are combined pairwise with
the layouts: every layout meets every value of every option, and every two
options meet in every pair of values.
"""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import extend
from haiku_etp import testing
from haiku_etp._src.core import backend
from haiku_etp._src.testing import oracles
from tests import test_util

_TOL = 1e-10
# One step after the first: the trace is rolled through D once. The oracles
# unroll their steps, so compile time grows with T; more steps take no other
# code path.
_NUM_STEPS = 2

# name, x shape (batch first in memory order), kernel shape, conv kwargs.
_CONV_CASES = (
    (
        "1d_nch_stride_dilation",
        (2, 3, 9),
        (4, 3, 3),
        dict(strides=(2,), rhs_dilation=(2,)),
    ),
    (
        "1d_nwc_lhs_dilation",
        (2, 7, 3),
        (3, 3, 4),
        dict(
            dimension_numbers=("NWC", "WIO", "NWC"),
            padding=((1, 2),),
            lhs_dilation=(2,),
        ),
    ),
    (
        "2d_nchw_groups",
        (2, 4, 6, 5),
        (6, 2, 3, 3),
        dict(feature_group_count=2, padding=((1, 0), (2, 1))),
    ),
    (
        "2d_nhwc_stride_valid",
        (2, 7, 6, 3),
        (3, 2, 3, 4),
        dict(
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            strides=(2, 1),
            padding="VALID",
        ),
    ),
    (
        "2d_custom_permutation",
        (2, 5, 3, 6),
        (3, 3, 2, 4),
        dict(
            dimension_numbers=("NHCW", "HIWO", "CNHW"),
            strides=(1, 2),
            rhs_dilation=(2, 1),
        ),
    ),
    (
        "2d_conv_dimension_numbers",
        (2, 6, 5, 3),
        (2, 3, 3, 4),
        dict(
            dimension_numbers=lax.conv_dimension_numbers(
                (2, 6, 5, 3), (2, 3, 3, 4), ("NHWC", "HWIO", "NHWC")
            )
        ),
    ),
    (
        "3d_ndhwc",
        (2, 4, 5, 4, 2),
        (2, 3, 2, 2, 3),
        dict(dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), strides=(1, 2, 1)),
    ),
)


def _keys(n, seed=0):
  return [1000 * seed + i for i in range(n)]


def _normal(key, shape):
  """Float64 standard normal values from an integer seed, drawn by numpy.

  ``jax.random`` would compile a sampler per shape, and the partitionable
  threefry takes seconds to compile on XLA:CPU for multi-axis shapes.
  """
  return jnp.asarray(
      np.random.RandomState(key).standard_normal(shape), jnp.float64
  )


def _drtrl(prim, weights, xs, params, tuned=None, **static):
  """``testing.drtrl_rule_oracle`` under jit.

  ``tuned`` forces the CPU-tuned (``True``) or the plain (``False``) forms of
  the rules' reductions (``backend.tuning``); ``None`` keeps the default.
  """
  with backend.tuning(tuned):
    return test_util.jit_oracle(
        testing.drtrl_rule_oracle, prim, params, **static
    )(weights, xs)


def _conv_problem(x_shape, k_shape, kwargs, num_steps, with_bias=True, seed=0):
  """Returns ``(weights, xs, params)`` of one conv relation."""
  kx, kk, kb = _keys(3, seed)
  xs = _normal(kx, (num_steps,) + x_shape)
  kernel = _normal(kk, k_shape)
  dn = extend.conv_dimension_numbers(
      kwargs.get("dimension_numbers"), len(x_shape) - 2
  )
  bias = _normal(kb, (k_shape[dn.rhs_spec[0]],))
  weights = {"weight": kernel}
  if with_bias:
    weights["bias"] = bias
  jaxpr = jax.make_jaxpr(
      lambda x, w: haiku_etp.conv(x, w["weight"], w.get("bias"), **kwargs)
  )(xs[0], weights)
  (eqn,) = [e for e in jaxpr.eqns if e.primitive is extend.etp_conv_p]
  return weights, xs, eqn.params


def _dense_problem(batched, with_bias, num_steps, seed=0):
  kx, kw, kb = _keys(3, seed)
  x_shape = (3, 5) if batched else (5,)
  xs = _normal(kx, (num_steps,) + x_shape)
  weights = {"weight": _normal(kw, (5, 4))}
  if with_bias:
    weights["bias"] = _normal(kb, (4,))
  prim = extend.etp_batched_dense_p if batched else extend.etp_dense_p
  return prim, weights, xs, {"has_bias": with_bias}


def _option_name(strip, num_states, fast, tuned):
  batch = {None: "nobatch", False: "kept", True: "stripped"}[strip]
  path = "fast" if fast else "generic"
  return f"{batch}_S{num_states}_{path}_{'tuned' if tuned else 'plain'}"


# Every row also picks the backend forms of the reductions: the CPU-tuned ones
# (the default on CPU) or the plain ones (the default elsewhere), pairwise
# with the other options like them; ``backend_test`` checks the forms agree.
_TUNED = (True, False)


# Dense: batch mode (unbatched dense; batched dense with the batch kept or
# stripped) x bias x S x fast x forms, pairwise.
_DENSE_ROWS = tuple(
    (
        f"{'bias' if bias else 'nobias'}_"
        + _option_name(strip, s, fast, tuned),
        strip,
        bias,
        s,
        fast,
        tuned,
    )
    for strip, bias, s, fast, tuned in test_util.pairwise(
        (None, False, True), (True, False), (1, 2), (True, False), _TUNED
    )
)

# Conv: every case x batch kept/stripped x S x fast x forms, pairwise.
_CONV_ROWS = tuple(
    (
        f"{case[0]}_{_option_name(strip, s, fast, tuned)}",
        case,
        strip,
        s,
        fast,
        tuned,
    )
    for case, strip, s, fast, tuned in test_util.pairwise(
        _CONV_CASES, (False, True), (1, 2), (True, False), _TUNED
    )
)

# Elementwise: fn (identity is special-cased; tanh and softplus take the same
# path, the derivative by a JVP, and alternate) x batch mode (no batch; a
# broadcast batch kept or stripped) x S x fast x forms, pairwise.
_NONLINEAR_FNS = (("tanh", jnp.tanh), ("softplus", jax.nn.softplus))
_ELEMENTWISE_ROWS = tuple(
    (
        f"{fn[0]}_{_option_name(strip, s, fast, tuned)}",
        fn[1],
        strip,
        s,
        fast,
        tuned,
    )
    for i, (nonlinear, strip, s, fast, tuned) in enumerate(
        test_util.pairwise(
            (False, True), (None, False, True), (1, 2), (True, False), _TUNED
        )
    )
    for fn in (_NONLINEAR_FNS[i % 2] if nonlinear else ("identity", None),)
)


class DenseDrtrlOracleTest(parameterized.TestCase):

  @parameterized.named_parameters(*_DENSE_ROWS)
  def test_exact(self, strip, with_bias, num_states, fast, tuned):
    with jax.enable_x64(True):
      batched = strip is not None
      prim, weights, xs, params = _dense_problem(batched, with_bias, _NUM_STEPS)
      result = _drtrl(
          prim,
          weights,
          xs,
          params,
          num_hidden_state=num_states,
          strip_batch=bool(strip),
          fast=fast,
          tuned=tuned,
      )
      self.assertLessEqual(result.relative_error, _TOL)
      self.assertEqual(
          jax.tree_util.tree_structure(result.online),
          jax.tree_util.tree_structure(weights),
      )


class ConvDrtrlOracleTest(parameterized.TestCase):

  @parameterized.named_parameters(*_CONV_ROWS)
  def test_exact(self, case, strip, num_states, fast, tuned):
    _, x_shape, k_shape, kwargs = case
    with jax.enable_x64(True):
      weights, xs, params = _conv_problem(x_shape, k_shape, kwargs, _NUM_STEPS)
      result = _drtrl(
          extend.etp_conv_p,
          weights,
          xs,
          params,
          num_hidden_state=num_states,
          strip_batch=strip,
          fast=fast,
          tuned=tuned,
      )
      self.assertLessEqual(result.relative_error, _TOL)

  @parameterized.parameters(True, False)
  def test_exact_batch_groups(self, fast):
    """Batch kept (the only way with batch groups); the generic rules plain."""
    with jax.enable_x64(True):
      weights, xs, params = _conv_problem(
          (4, 3, 7, 5),
          (6, 3, 3, 2),
          dict(batch_group_count=2),
          num_steps=_NUM_STEPS,
      )
      result = _drtrl(
          extend.etp_conv_p,
          weights,
          xs,
          params,
          num_hidden_state=2,
          fast=fast,
          tuned=fast,
      )
      self.assertLessEqual(result.relative_error, _TOL)

  def test_exact_without_bias(self):
    with jax.enable_x64(True):
      name, x_shape, k_shape, kwargs = _CONV_CASES[3]
      del name
      weights, xs, params = _conv_problem(
          x_shape, k_shape, kwargs, _NUM_STEPS, with_bias=False
      )
      result = _drtrl(
          extend.etp_conv_p, weights, xs, params, num_hidden_state=2
      )
      self.assertEqual(set(result.online), {"weight"})
      self.assertLessEqual(result.relative_error, _TOL)

  def test_position_summed_kernel_trace_is_not_exact(self):
    """The kernel-shaped trace summed over positions fails when D varies.

    With ``S = 1`` it rolls ``eps <- eps * sum_s D[s] + VJP_K(x, D_f)``: the
    decay is summed over positions instead of applied per position.
    """
    with jax.enable_x64(True):
      weights, xs, params = _conv_problem(
          (2, 3, 9), (4, 3, 3), {}, _NUM_STEPS, with_bias=False
      )
      rules = extend.get_etp_rules(extend.etp_conv_p)

      def position_summed(weights, xs):
        """The position-summed trace's gradient and the exact one (S = 1)."""
        system = oracles._system(  # pylint: disable=protected-access
            extend.etp_conv_p, weights, xs, params, len(xs), 1, None, None, 0
        )
        exact = oracles._exact_grads(  # pylint: disable=protected-access
            extend.etp_conv_p, weights, xs, params, system
        )
        d, d_f, g = system.d, system.d_f, system.g
        trace = jnp.zeros((2,) + weights["weight"].shape)
        grads = jnp.zeros_like(weights["weight"])
        for t in range(len(xs)):
          d_sum = jnp.sum(d[t][..., 0, 0], axis=2)  # (B, O)
          trace = trace * d_sum[:, :, None, None]
          inst = jax.vmap(
              lambda x, hd: rules.xy_to_dw(x, hd, weights, **params)["weight"]
          )(xs[t], d_f[t][..., 0])
          trace = trace + inst
          g_sum = jnp.sum(g[t][..., 0], axis=2)
          grads = grads + jnp.sum(trace * g_sum[:, :, None, None], axis=0)
        return grads, exact

      grads, exact = test_util.compile_once(position_summed)(weights, xs)
      err = testing.relative_error(grads, exact["weight"])
      print(f"position-summed kernel trace: rel err {err:.3f}")
      self.assertGreater(err, 1e-2)


class ElementwiseDrtrlOracleTest(parameterized.TestCase):

  @parameterized.named_parameters(*_ELEMENTWISE_ROWS)
  def test_exact(self, fn, strip, num_states, fast, tuned):
    with jax.enable_x64(True):
      w = _normal(3, (2, 3))
      result = _drtrl(
          extend.etp_elementwise_p,
          {"weight": w},
          None,
          {"fn": fn},
          num_hidden_state=num_states,
          num_steps=_NUM_STEPS,
          batch_size=None if strip is None else 3,
          strip_batch=bool(strip),
          fast=fast,
          tuned=tuned,
      )
      self.assertLessEqual(result.relative_error, _TOL)


# Closed-form windows: every conv case and the other ops, batch kept or
# stripped, S, fast or generic, pairwise; windows of 2 over 5 steps (the
# last one shorter). The generic form sums xy_to_trace step by step.
_WINDOW_STEPS = 5
_WINDOW_ROWS = tuple(
    (f"{case[0]}_{_option_name(strip, s, fast, True)}", case, strip, s, fast)
    for case, strip, s, fast in test_util.pairwise(
        (("dense_unbatched",), ("dense_batched",), ("elementwise",))
        + _CONV_CASES,
        (False, True),
        (1, 2),
        (True, False),
    )
)


class WindowOracleTest(parameterized.TestCase):
  """``drtrl_window`` in the rule oracle's window form equals BPTT."""

  @parameterized.named_parameters(*_WINDOW_ROWS)
  def test_exact(self, case, strip, num_states, fast):
    name = case[0]
    with jax.enable_x64(True):
      if name.startswith("dense"):
        batched = name == "dense_batched"
        strip = strip and batched
        prim, weights, xs, params = _dense_problem(batched, True, _WINDOW_STEPS)
        extra = {}
      elif name == "elementwise":
        prim, weights, xs, params = (
            extend.etp_elementwise_p,
            {"weight": _normal(5, (3,))},
            None,
            {"fn": jnp.tanh},
        )
        extra = dict(num_steps=_WINDOW_STEPS, batch_size=2)
      else:
        _, x_shape, k_shape, kwargs = case
        weights, xs, params = _conv_problem(
            x_shape, k_shape, kwargs, _WINDOW_STEPS
        )
        prim, extra = extend.etp_conv_p, {}
      result = _drtrl(
          prim,
          weights,
          xs,
          params,
          num_hidden_state=num_states,
          strip_batch=strip,
          fast=fast,
          window=2,
          **extra,
      )
      self.assertLessEqual(result.relative_error, _TOL)

  def test_batch_groups(self):
    """Batch groups keep the batch: the fused product over the steps."""
    with jax.enable_x64(True):
      weights, xs, params = _conv_problem(
          (4, 3, 7, 5), (6, 3, 3, 2), dict(batch_group_count=2), _WINDOW_STEPS
      )
      result = _drtrl(
          extend.etp_conv_p, weights, xs, params, num_hidden_state=2, window=2
      )
      self.assertLessEqual(result.relative_error, _TOL)

  def test_window_must_be_positive(self):
    prim, weights, xs, params = _dense_problem(True, False, 2)
    with self.assertRaisesRegex(ValueError, "window must be an int >= 1"):
      testing.drtrl_rule_oracle(prim, weights, xs, params, window=0)


_RELATIONS = (
    "dense_batched",
    "dense_unbatched",
    "conv_1d_nch_stride_dilation",
    "conv_2d_nhwc_stride_valid",
    "conv_2d_custom_permutation",
    "elementwise",
)


def _relation(name, num_steps):
  """``(prim, weights, xs, params, extra_kwargs)`` of one op kind."""
  if name.startswith("dense_"):
    return _dense_problem(name == "dense_batched", True, num_steps) + ({},)
  if name.startswith("conv_"):
    (case,) = [c for c in _CONV_CASES if c[0] == name[len("conv_") :]]
    _, x_shape, k_shape, kwargs = case
    weights, xs, params = _conv_problem(x_shape, k_shape, kwargs, num_steps)
    return extend.etp_conv_p, weights, xs, params, {}
  assert name == "elementwise", name
  w = _normal(4, (4,))
  return (
      extend.etp_elementwise_p,
      {"weight": w},
      None,
      {"fn": jax.nn.sigmoid},
      dict(num_steps=num_steps, batch_size=2),
  )


def _pp(prim, params, **static):
  """``testing.pp_rule_oracle`` under jit; ``decay`` and ``leak`` traced."""
  return test_util.jit_oracle(testing.pp_rule_oracle, prim, params, **static)


class EsDrtrlOracleTest(parameterized.TestCase):

  @parameterized.parameters(*_RELATIONS)
  def test_exact_at_one_step(self, name):
    """Exact at ``T = 1``; with the plain forms (the leak case: CPU-tuned)."""
    with jax.enable_x64(True), backend.tuning(False):
      prim, weights, xs, params, kw = _relation(name, 1)
      oracle = _pp(prim, params, num_hidden_state=2, **kw)
      for decay in ((0.0, 0.0), (0.5, 0.3), (0.9, 0.9)):
        result = oracle(weights, xs, decay=decay)
        self.assertLessEqual(result.relative_error, _TOL, msg=f"{decay}")

  @parameterized.parameters(*_RELATIONS)
  def test_exact_on_uniform_leak(self, name):
    with jax.enable_x64(True), backend.tuning(True):
      prim, weights, xs, params, kw = _relation(name, _NUM_STEPS)
      oracle = _pp(prim, params, **kw)
      for leak in (0.0, 0.4, 0.9):
        result = oracle(weights, xs, decay=(leak, 0.0), leak=leak)
        self.assertLessEqual(result.relative_error, _TOL, msg=f"leak={leak}")

  def test_bias_uses_filtered_constant(self):
    """With the constant 1 as the bias's input trace the leak case breaks."""
    with jax.enable_x64(True):
      prim, weights, xs, params = _dense_problem(True, True, _NUM_STEPS)
      result = _pp(prim, params)(weights, xs, decay=(0.7, 0.0), leak=0.7)
      self.assertLessEqual(
          testing.relative_error(result.online["bias"], result.exact["bias"]),
          _TOL,
      )
      # The filtered constant after two steps is (1 - 0.7**2) / 0.3 = 1.7, so
      # an unfiltered bias gradient would be visibly smaller.
      self.assertGreater(float(jnp.sum(jnp.abs(result.exact["bias"]))), 0.0)

  @parameterized.parameters(
      "dense_batched", "conv_2d_custom_permutation", "elementwise"
  )
  def test_approximation_is_measured(self, name):
    """Random D and non-zero decays: not exact; report the measured gap.

    Not an exactness case: the gap comes from factorising the trace, the same
    for every layout, so one relation per op kind is measured.
    """
    with jax.enable_x64(True):
      prim, weights, xs, params, kw = _relation(name, _NUM_STEPS)
      oracle = _pp(prim, params, num_hidden_state=2, **kw)
      for decay in ((0.5, 0.5), (0.9, 0.0)):
        result = oracle(weights, xs, decay=decay)
        chex.assert_tree_all_finite(result.online)
        print(
            f"ES-D-RTRL {name} decay={decay}: cosine "
            f"{result.cosine:.3f}, rel err {result.relative_error:.3f}"
        )
        self.assertGreater(result.relative_error, 1e-6, msg=f"{decay}")


class OracleArgumentTest(absltest.TestCase):

  def test_strip_without_batch_raises(self):
    with jax.enable_x64(True):
      prim, weights, xs, params = _dense_problem(False, False, 2)
      with self.assertRaisesRegex(ValueError, "no batch axis"):
        _drtrl(prim, weights, xs, params, strip_batch=True)

  def test_input_free_op_needs_num_steps(self):
    with self.assertRaisesRegex(ValueError, "num_steps"):
      testing.drtrl_rule_oracle(
          extend.etp_elementwise_p,
          {"weight": jnp.ones(2)},
          None,
          {"fn": None},
      )

  def test_relative_error_and_cosine(self):
    a = {"w": np.array([1.0, 0.0])}
    b = {"w": np.array([1.0, 1.0])}
    np.testing.assert_allclose(testing.relative_error(a, b), np.sqrt(0.5))
    np.testing.assert_allclose(testing.cosine_similarity(a, b), np.sqrt(0.5))


if __name__ == "__main__":
  absltest.main()

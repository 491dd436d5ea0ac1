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
"""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import testing

_TOL = 1e-10

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
  return jax.random.split(jax.random.PRNGKey(seed), n)


def _conv_problem(x_shape, k_shape, kwargs, num_steps, with_bias=True, seed=0):
  """Returns ``(weights, xs, params)`` of one conv relation."""
  kx, kk, kb = _keys(3, seed)
  xs = jax.random.normal(kx, (num_steps,) + x_shape, jnp.float64)
  kernel = jax.random.normal(kk, k_shape, jnp.float64)
  dn = haiku_etp.conv_dimension_numbers(
      kwargs.get("dimension_numbers"), len(x_shape) - 2
  )
  bias = jax.random.normal(kb, (k_shape[dn.rhs_spec[0]],), jnp.float64)
  weights = {"weight": kernel}
  if with_bias:
    weights["bias"] = bias
  jaxpr = jax.make_jaxpr(
      lambda x, w: haiku_etp.conv(x, w["weight"], w.get("bias"), **kwargs)
  )(xs[0], weights)
  (eqn,) = [e for e in jaxpr.eqns if e.primitive is haiku_etp.etp_conv_p]
  return weights, xs, eqn.params


def _dense_problem(batched, with_bias, num_steps, seed=0):
  kx, kw, kb = _keys(3, seed)
  x_shape = (3, 5) if batched else (5,)
  xs = jax.random.normal(kx, (num_steps,) + x_shape, jnp.float64)
  weights = {"weight": jax.random.normal(kw, (5, 4), jnp.float64)}
  if with_bias:
    weights["bias"] = jax.random.normal(kb, (4,), jnp.float64)
  prim = haiku_etp.etp_batched_dense_p if batched else haiku_etp.etp_dense_p
  return prim, weights, xs, {"has_bias": with_bias}


class DenseDrtrlOracleTest(parameterized.TestCase):

  @parameterized.parameters(
      itertools.product(
          (1, 4, 7), (True, False), (True, False), (1, 2), (True, False)
      )
  )
  def test_exact(self, num_steps, batched, with_bias, num_states, fast):
    with jax.enable_x64(True):
      prim, weights, xs, params = _dense_problem(batched, with_bias, num_steps)
      contexts = (False, True) if batched else (False,)
      for strip in contexts:
        result = testing.drtrl_rule_oracle(
            prim,
            weights,
            xs,
            params,
            num_hidden_state=num_states,
            strip_batch=strip,
            fast=fast,
        )
        self.assertLessEqual(result.relative_error, _TOL, msg=f"strip={strip}")
        self.assertEqual(
            jax.tree_util.tree_structure(result.online),
            jax.tree_util.tree_structure(weights),
        )


class ConvDrtrlOracleTest(parameterized.TestCase):

  @parameterized.named_parameters(
      (f"{name}_T{t}", x, k, kw, t)
      for (name, x, k, kw), t in itertools.product(_CONV_CASES, (1, 4, 7))
  )
  def test_exact(self, x_shape, k_shape, kwargs, num_steps):
    with jax.enable_x64(True):
      weights, xs, params = _conv_problem(x_shape, k_shape, kwargs, num_steps)
      for strip, num_states, fast in itertools.product(
          (False, True), (1, 2), (True, False)
      ):
        result = testing.drtrl_rule_oracle(
            haiku_etp.etp_conv_p,
            weights,
            xs,
            params,
            num_hidden_state=num_states,
            strip_batch=strip,
            fast=fast,
        )
        self.assertLessEqual(
            result.relative_error,
            _TOL,
            msg=f"strip={strip} S={num_states} fast={fast}",
        )

  @parameterized.parameters(True, False)
  def test_exact_batch_groups(self, fast):
    with jax.enable_x64(True):
      weights, xs, params = _conv_problem(
          (4, 3, 7, 5), (6, 3, 3, 2), dict(batch_group_count=2), num_steps=4
      )
      result = testing.drtrl_rule_oracle(
          haiku_etp.etp_conv_p,
          weights,
          xs,
          params,
          num_hidden_state=2,
          fast=fast,
      )
      self.assertLessEqual(result.relative_error, _TOL)

  def test_exact_without_bias(self):
    with jax.enable_x64(True):
      name, x_shape, k_shape, kwargs = _CONV_CASES[3]
      del name
      weights, xs, params = _conv_problem(
          x_shape, k_shape, kwargs, 5, with_bias=False
      )
      result = testing.drtrl_rule_oracle(
          haiku_etp.etp_conv_p, weights, xs, params, num_hidden_state=2
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
          (2, 3, 9), (4, 3, 3), {}, 5, with_bias=False
      )
      exact = testing.drtrl_rule_oracle(
          haiku_etp.etp_conv_p, weights, xs, params
      ).exact
      system = _oracle_system(weights, xs, params)
      rules = haiku_etp.get_etp_rules(haiku_etp.etp_conv_p)
      trace = jnp.zeros((2,) + weights["weight"].shape)
      grads = jnp.zeros_like(weights["weight"])
      for t in range(len(xs)):
        d_sum = jnp.sum(system.d[t][..., 0, 0], axis=2)  # (B, O)
        trace = trace * d_sum[:, :, None, None]
        inst = jax.vmap(
            lambda x, hd: rules.xy_to_dw(x, hd, weights, **params)["weight"]
        )(xs[t], system.d_f[t][..., 0])
        trace = trace + inst
        g_sum = jnp.sum(system.g[t][..., 0], axis=2)
        grads = grads + jnp.sum(trace * g_sum[:, :, None, None], axis=0)
      err = testing.relative_error(grads, exact["weight"])
      print(f"position-summed kernel trace: rel err {err:.3f}")
      self.assertGreater(err, 1e-2)


def _oracle_system(weights, xs, params):
  """The random system ``drtrl_rule_oracle`` builds for these arguments."""
  from haiku_etp._src import oracles  # pylint: disable=g-import-not-at-top

  return oracles._system(
      haiku_etp.etp_conv_p, weights, xs, params, len(xs), 1, None, None, 0
  )  # pylint: disable=protected-access


class ElementwiseDrtrlOracleTest(parameterized.TestCase):

  @parameterized.parameters(
      itertools.product(
          (1, 4, 7),
          (None, jnp.tanh, jax.nn.softplus),
          (None, 3),
          (1, 2),
          (True, False),
      )
  )
  def test_exact(self, num_steps, fn, batch_size, num_states, fast):
    with jax.enable_x64(True):
      w = jax.random.normal(jax.random.PRNGKey(3), (2, 3), jnp.float64)
      contexts = (False, True) if batch_size else (False,)
      for strip in contexts:
        result = testing.drtrl_rule_oracle(
            haiku_etp.etp_elementwise_p,
            {"weight": w},
            None,
            {"fn": fn},
            num_hidden_state=num_states,
            num_steps=num_steps,
            batch_size=batch_size,
            strip_batch=strip,
            fast=fast,
        )
        self.assertLessEqual(result.relative_error, _TOL)


def _all_relations(num_steps):
  """``(name, prim, weights, xs, params, extra_kwargs)`` for every op kind."""
  out = []
  for batched in (True, False):
    prim, weights, xs, params = _dense_problem(batched, True, num_steps)
    out.append((f"dense_batched_{batched}", prim, weights, xs, params, {}))
  for name, x_shape, k_shape, kwargs in (
      _CONV_CASES[0],
      _CONV_CASES[3],
      _CONV_CASES[4],
  ):
    weights, xs, params = _conv_problem(x_shape, k_shape, kwargs, num_steps)
    out.append((f"conv_{name}", haiku_etp.etp_conv_p, weights, xs, params, {}))
  w = jax.random.normal(jax.random.PRNGKey(4), (4,), jnp.float64)
  out.append(
      (
          "elementwise",
          haiku_etp.etp_elementwise_p,
          {"weight": w},
          None,
          {"fn": jax.nn.sigmoid},
          dict(num_steps=num_steps, batch_size=2),
      )
  )
  return out


class EsDrtrlOracleTest(parameterized.TestCase):

  def test_exact_at_one_step(self):
    with jax.enable_x64(True):
      for name, prim, weights, xs, params, kw in _all_relations(1):
        for decay in ((0.0, 0.0), (0.5, 0.3), (0.9, 0.9)):
          result = testing.pp_rule_oracle(
              prim, weights, xs, params, decay=decay, num_hidden_state=2, **kw
          )
          self.assertLessEqual(
              result.relative_error, _TOL, msg=f"{name} {decay}"
          )

  @parameterized.parameters(0.0, 0.4, 0.9)
  def test_exact_on_uniform_leak(self, leak):
    with jax.enable_x64(True):
      for name, prim, weights, xs, params, kw in _all_relations(7):
        result = testing.pp_rule_oracle(
            prim, weights, xs, params, decay=(leak, 0.0), leak=leak, **kw
        )
        self.assertLessEqual(result.relative_error, _TOL, msg=name)

  def test_bias_uses_filtered_constant(self):
    """With the constant 1 as the bias's input trace the leak case breaks."""
    with jax.enable_x64(True):
      prim, weights, xs, params = _dense_problem(True, True, 5)
      result = testing.pp_rule_oracle(
          prim, weights, xs, params, decay=(0.7, 0.0), leak=0.7
      )
      self.assertLessEqual(
          testing.relative_error(result.online["bias"], result.exact["bias"]),
          _TOL,
      )
      # The filtered constant after five steps is (1 - 0.7**5) / 0.3 > 1, so
      # an unfiltered bias gradient would be visibly smaller.
      self.assertGreater(float(jnp.sum(jnp.abs(result.exact["bias"]))), 0.0)

  def test_approximation_is_measured(self):
    """Random D and non-zero decays: not exact; report the measured gap."""
    with jax.enable_x64(True):
      for name, prim, weights, xs, params, kw in _all_relations(7):
        for decay in ((0.5, 0.5), (0.9, 0.0)):
          result = testing.pp_rule_oracle(
              prim, weights, xs, params, decay=decay, num_hidden_state=2, **kw
          )
          chex.assert_tree_all_finite(result.online)
          print(
              f"ES-D-RTRL {name} decay={decay}: cosine "
              f"{result.cosine:.3f}, rel err {result.relative_error:.3f}"
          )
          self.assertGreater(result.relative_error, 1e-6, msg=name)


class OracleArgumentTest(absltest.TestCase):

  def test_strip_without_batch_raises(self):
    with jax.enable_x64(True):
      prim, weights, xs, params = _dense_problem(False, False, 2)
      with self.assertRaisesRegex(ValueError, "no batch axis"):
        testing.drtrl_rule_oracle(prim, weights, xs, params, strip_batch=True)

  def test_input_free_op_needs_num_steps(self):
    with self.assertRaisesRegex(ValueError, "num_steps"):
      testing.drtrl_rule_oracle(
          haiku_etp.etp_elementwise_p,
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

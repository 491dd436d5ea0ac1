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
"""Tests of the ETP primitive machinery and the module-level rule helpers.

Covers :func:`haiku_etp.extend.register_primitive` for a primitive defined
here (a per-feature scale with hand-written trace rules), the rule registry
and its errors, agreement of the built-in fast paths with the generic rule
path, the shapes of the zero traces, the ES-D-RTRL solve, and ``vmap``
decomposition of the test primitive. The built-in ops' decomposition is in
``ops_test``; the reduction helpers' forms are in ``backend_test``.
"""

import functools
import warnings

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
from tests import test_util

_TOL = 1e-10
_RTOL = 1e-12
_SCALE_NAME = "test_feature_scale"


# A user primitive: a per-feature scale y[b, n] = x[b, n] * w[n].


def _scale_impl(x, w):
  return x * w


def _sum_to_rank(value, rank):
  """Sums the leading axes of ``value`` until it has ``rank`` axes."""
  return jnp.sum(value, axis=tuple(range(value.ndim - rank)))


def _scale_yw_to_w(hidden_dim, trace):
  return {"weight": trace["weight"] * hidden_dim}


def _scale_xy_to_dw(x, hidden_dim, weights):
  return {"weight": _sum_to_rank(x * hidden_dim, weights["weight"].ndim)}


def _scale_xy_to_trace(x, hidden_dim, weights):
  del weights
  return {"weight": x * hidden_dim}


def _scale_trace_to_dw(trace, weights):
  return {"weight": _sum_to_rank(trace["weight"], weights["weight"].ndim)}


def _scale_init_drtrl(x_aval, y_aval, weight_avals, num_hidden_state):
  del x_aval, weight_avals
  return {
      "weight": jnp.zeros(
          tuple(y_aval.shape) + (num_hidden_state,), y_aval.dtype
      )
  }


def _scale_init_pp(x_aval, y_aval, weight_avals, num_hidden_state):
  del x_aval, weight_avals
  return jnp.zeros(tuple(y_aval.shape) + (num_hidden_state,), y_aval.dtype)


_SCALE_RULES = dict(
    yw_to_w=_scale_yw_to_w,
    xy_to_dw=_scale_xy_to_dw,
    xy_to_trace=_scale_xy_to_trace,
    trace_to_dw=_scale_trace_to_dw,
    init_drtrl=_scale_init_drtrl,
    init_pp=_scale_init_pp,
)

scale_p = extend.register_primitive(
    _SCALE_NAME,
    _scale_impl,
    batched=True,
    trainable_invars_fn=lambda p: {"weight": 1},
    x_invar_index=0,
)
scale_rules = scale_p.register_etp_rules(**_SCALE_RULES)

# An ETP primitive that never gets rules.
bare_p = extend.register_primitive(
    "test_bare_scale",
    _scale_impl,
    batched=True,
    trainable_invars_fn=lambda p: {"weight": 1},
    x_invar_index=0,
)


def _scale(x, w):
  return scale_p.bind(x, w)


def _normal(key, shape, dtype=jnp.float32):
  """Standard normal values from an integer seed (numpy: nothing to compile).

  Call inside ``jax.enable_x64`` for float64.
  """
  return jnp.asarray(np.random.RandomState(key).standard_normal(shape), dtype)


def _keys(n, seed=0):
  return [1000 * seed + i for i in range(n)]


def _aval(value):
  return jax.ShapeDtypeStruct(value.shape, value.dtype)


def _assert_trees_close(test, actual, expected, rtol, atol=0.0):
  test.assertEqual(
      jax.tree_util.tree_structure(actual),
      jax.tree_util.tree_structure(expected),
  )
  for a, e in zip(
      jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)
  ):
    test.assertEqual(a.shape, e.shape)
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(e), rtol=rtol, atol=atol
    )


def _conv_params(x, kernel, bias=None, **kwargs):
  """The params ``haiku_etp.conv`` binds for these arguments."""
  if bias is None:
    fn = lambda x, k: haiku_etp.conv(x, k, **kwargs)
    jaxpr = jax.make_jaxpr(fn)(x, kernel)
  else:
    fn = lambda x, k, b: haiku_etp.conv(x, k, b, **kwargs)
    jaxpr = jax.make_jaxpr(fn)(x, kernel, bias)
  eqn = jaxpr.eqns[-1]
  assert eqn.primitive is extend.etp_conv_p, eqn.primitive
  return dict(eqn.params)


def _lax_conv(x, kernel, params):
  """``lax.conv_general_dilated`` with an ETP conv's params."""
  return lax.conv_general_dilated(
      x,
      kernel,
      window_strides=params["strides"],
      padding=params["padding"],
      lhs_dilation=params["lhs_dilation"],
      rhs_dilation=params["rhs_dilation"],
      dimension_numbers=params["dimension_numbers"],
      feature_group_count=params["feature_group_count"],
      batch_group_count=params["batch_group_count"],
      precision=lax.Precision.HIGHEST,
  )


class RegisterPrimitiveTest(chex.TestCase):
  """A primitive registered in the test works with JAX's transformations."""

  @parameterized.parameters((2, 3), (1, 5))
  def test_value(self, batch, features):
    kx, kw = _keys(2)
    x = _normal(kx, (batch, features))
    w = _normal(kw, (features,))
    y = _scale(x, w)
    self.assertEqual(y.shape, (batch, features))
    np.testing.assert_allclose(y, x * w, rtol=1e-6)

  def test_jit(self):
    kx, kw = _keys(2)
    x, w = _normal(kx, (2, 3)), _normal(kw, (3,))
    np.testing.assert_allclose(jax.jit(_scale)(x, w), x * w, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_grad_matches_plain_formula(self):
    kx, kw = _keys(2, seed=1)
    x, w = _normal(kx, (2, 3)), _normal(kw, (3,))
    loss = lambda op: lambda x, w: jnp.sum(jnp.sin(op(x, w)) ** 2)
    grad = self.variant(jax.grad(loss(_scale), argnums=(0, 1)))
    expected = jax.grad(loss(_scale_impl), argnums=(0, 1))(x, w)
    _assert_trees_close(self, grad(x, w), expected, rtol=1e-5, atol=1e-6)

  def test_checkpoint(self):
    kx, kw = _keys(2, seed=2)
    x, w = _normal(kx, (2, 3)), _normal(kw, (3,))
    loss = lambda x, w: jnp.sum(jnp.tanh(_scale(x, w)))
    remat = jax.checkpoint(loss)
    self.assertIn(_SCALE_NAME, str(jax.make_jaxpr(jax.grad(remat))(x, w)))
    np.testing.assert_allclose(
        jax.grad(remat, argnums=1)(x, w),
        jax.grad(lambda x, w: jnp.sum(jnp.tanh(x * w)), argnums=1)(x, w),
        rtol=1e-5,
        atol=1e-6,
    )

  @parameterized.parameters(0, 1)
  def test_vmap_over_x_folds_into_batch(self, in_axis):
    kx, kw = _keys(2, seed=3)
    xs = _normal(kx, (4, 2, 3) if in_axis == 0 else (2, 4, 3))
    w = _normal(kw, (3,))
    fn = jax.vmap(_scale, in_axes=(in_axis, None))
    with warnings.catch_warnings():
      warnings.simplefilter("error", extend.DecomposedPrimitiveWarning)
      jaxpr = jax.make_jaxpr(fn)(xs, w)
      y = fn(xs, w)
    (eqn,) = [e for e in jaxpr.eqns if e.primitive is scale_p]
    # The mapped axis is folded into the primitive's own batch axis.
    self.assertEqual(eqn.invars[0].aval.shape, (8, 3))
    expected = jnp.moveaxis(xs, in_axis, 0) * w
    np.testing.assert_allclose(y, expected, rtol=1e-6)

  def test_name_in_jaxpr(self):
    x, w = jnp.ones((2, 3)), jnp.ones((3,))
    jaxpr = jax.make_jaxpr(_scale)(x, w)
    self.assertIn(_SCALE_NAME, str(jaxpr))
    self.assertIs(jaxpr.eqns[0].primitive, scale_p)
    self.assertIn(_SCALE_NAME, str(jax.make_jaxpr(jax.jit(_scale))(x, w)))

  def test_float64_preserved(self):
    with jax.enable_x64(True):
      kx, kw = _keys(2, seed=4)
      x = _normal(kx, (2, 3), jnp.float64)
      w = _normal(kw, (3,), jnp.float64)
      y = _scale(x, w)
      self.assertEqual(y.dtype, jnp.float64)
      np.testing.assert_allclose(y, x * w, rtol=1e-15)
      dw = jax.grad(lambda x, w: jnp.sum(_scale(x, w)), argnums=1)(x, w)
      self.assertEqual(dw.dtype, jnp.float64)
      np.testing.assert_allclose(dw, jnp.sum(x, axis=0), rtol=1e-14)

  def test_bfloat16_preserved(self):
    kx, kw = _keys(2, seed=5)
    x = _normal(kx, (2, 3)).astype(jnp.bfloat16)
    w = _normal(kw, (3,)).astype(jnp.bfloat16)
    y = _scale(x, w)
    self.assertEqual(y.dtype, jnp.bfloat16)
    np.testing.assert_allclose(
        np.asarray(y, np.float32), np.asarray(x * w, np.float32), rtol=1e-2
    )

  def test_registry(self):
    self.assertIsInstance(scale_p, extend.ETPPrimitive)
    self.assertTrue(extend.is_etp_primitive(scale_p))
    rules = extend.get_etp_rules(scale_p)
    self.assertIsInstance(rules, extend.ETPRules)
    self.assertEqual(rules, scale_rules)
    self.assertIs(scale_p.rules, rules)
    for name, fn in _SCALE_RULES.items():
      self.assertIs(getattr(rules, name), fn)
    self.assertIsNone(rules.drtrl_update)
    self.assertIsNone(rules.drtrl_solve)
    self.assertEqual(scale_p.trainable_invars({}), {"weight": 1})
    self.assertEqual(scale_p.input_free_keys({}), frozenset())

  @parameterized.named_parameters(("kept", False), ("stripped", True))
  def test_drtrl_oracle_exact(self, strip_batch):
    with jax.enable_x64(True):
      kx, kw = _keys(2, seed=6)
      xs = _normal(kx, (2, 3, 4), jnp.float64)
      w = _normal(kw, (4,), jnp.float64)
      oracle = test_util.jit_oracle(
          testing.drtrl_rule_oracle,
          scale_p,
          {},
          num_hidden_state=2,
          strip_batch=strip_batch,
      )
      result = oracle({"weight": w}, xs)
      self.assertEqual(result.online["weight"].dtype, jnp.float64)
      self.assertEqual(result.online["weight"].shape, (4,))
      self.assertLessEqual(result.relative_error, _TOL)

  def test_pp_oracle_exact_on_uniform_leak(self):
    with jax.enable_x64(True):
      kx, kw = _keys(2, seed=7)
      xs = _normal(kx, (2, 3, 4), jnp.float64)
      w = _normal(kw, (4,), jnp.float64)
      oracle = test_util.jit_oracle(testing.pp_rule_oracle, scale_p, {})
      for leak in (0.0, 0.4, 0.9):
        result = oracle({"weight": w}, xs, decay=(leak, 0.0), leak=leak)
        self.assertLessEqual(result.relative_error, _TOL, msg=f"leak={leak}")

  def test_pp_oracle_exact_at_one_step(self):
    with jax.enable_x64(True):
      kx, kw = _keys(2, seed=8)
      xs = _normal(kx, (1, 3, 4), jnp.float64)
      w = _normal(kw, (4,), jnp.float64)
      oracle = test_util.jit_oracle(
          testing.pp_rule_oracle, scale_p, {}, num_hidden_state=2
      )
      result = oracle({"weight": w}, xs, decay=(0.5, 0.3))
      self.assertLessEqual(result.relative_error, _TOL)

  def test_vmap_over_weight_decomposes(self):
    """The default batching rule decomposes a mapped weight, with a warning."""
    kx, kw = _keys(2, seed=9)
    x, ws = _normal(kx, (2, 3)), _normal(kw, (4, 3))
    fn = jax.vmap(_scale, in_axes=(None, 0))
    with testing.expect_warning(extend.DecomposedPrimitiveWarning, _SCALE_NAME):
      jaxpr = jax.make_jaxpr(fn)(x, ws)
    self.assertNotIn(_SCALE_NAME, str(jaxpr))
    with testing.expect_warning(extend.DecomposedPrimitiveWarning):
      y = fn(x, ws)
    np.testing.assert_allclose(y, x[None] * ws[:, None], rtol=1e-6)


class RegistryErrorTest(absltest.TestCase):
  """Rule registration and look-up failures."""

  def test_missing_rule_raises(self):
    rules = dict(_SCALE_RULES)
    del rules["init_pp"]
    with self.assertRaisesRegex(TypeError, r"lack \['init_pp'\]"):
      bare_p.register_etp_rules(**rules)
    self.assertFalse(extend.is_etp_primitive(bare_p))

  def test_missing_rules_are_all_named(self):
    with self.assertRaisesRegex(TypeError, "test_bare_scale.*yw_to_w.*init_pp"):
      bare_p.register_etp_rules(xy_to_dw=_scale_xy_to_dw)

  def test_unknown_rule_raises(self):
    with self.assertRaisesRegex(TypeError, "Unknown rules.*'vjp'"):
      bare_p.register_etp_rules(vjp=lambda *a: a, **_SCALE_RULES)
    self.assertFalse(extend.is_etp_primitive(bare_p))

  def test_get_rules_of_plain_primitive_raises(self):
    with self.assertRaisesRegex(KeyError, "No ETP rules are registered.*add"):
      extend.get_etp_rules(lax.add_p)

  def test_get_rules_of_primitive_without_rules_raises(self):
    with self.assertRaisesRegex(KeyError, "register_etp_rules"):
      extend.get_etp_rules(bare_p)

  def test_is_etp_primitive(self):
    self.assertFalse(extend.is_etp_primitive(lax.add_p))
    self.assertFalse(extend.is_etp_primitive(bare_p))
    self.assertFalse(extend.is_etp_primitive("etp_dense"))
    for prim in (
        extend.etp_dense_p,
        extend.etp_batched_dense_p,
        extend.etp_conv_p,
        extend.etp_elementwise_p,
        scale_p,
    ):
      self.assertTrue(extend.is_etp_primitive(prim), msg=prim.name)


def _fast_path_case(kind):
  """``(prim, weights, x, params, y_shape, x_batch_axis)`` in float64."""
  kx, kw, kb = _keys(3, seed=11)
  if kind == "dense":
    x = _normal(kx, (3, 5), jnp.float64)
    weights = {
        "weight": _normal(kw, (5, 4), jnp.float64),
        "bias": _normal(kb, (4,), jnp.float64),
    }
    return (
        extend.etp_batched_dense_p,
        weights,
        x,
        {"has_bias": True},
        (3, 4),
        0,
    )
  if kind == "conv":
    x = _normal(kx, (2, 5, 4, 3), jnp.float64)
    weights = {
        "weight": _normal(kw, (3, 2, 3, 4), jnp.float64),
        "bias": _normal(kb, (4,), jnp.float64),
    }
    params = _conv_params(
        x,
        weights["weight"],
        weights["bias"],
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        strides=(2, 1),
        padding="SAME",
    )
    y_shape = jax.eval_shape(
        functools.partial(extend.etp_conv_p.bind, **params),
        x,
        weights["weight"],
        weights["bias"],
    ).shape
    return extend.etp_conv_p, weights, x, params, y_shape, 0
  assert kind == "elementwise"
  weights = {"weight": _normal(kw, (2, 3), jnp.float64)}
  return (
      extend.etp_elementwise_p,
      weights,
      None,
      {"fn": jnp.tanh},
      (4, 2, 3),
      None,
  )


class FastPathTest(parameterized.TestCase):
  """Closed-form fast paths agree with the generic rule path."""

  @parameterized.named_parameters(
      (f"{kind}_{'stripped' if strip else 'kept'}", kind, strip)
      for kind in ("dense", "conv", "elementwise")
      for strip in (False, True)
  )
  def test_update_and_solve_agree(self, kind, strip_batch):
    num_states = 2
    with jax.enable_x64(True):
      prim, weights, x, params, y_shape, x_axis = _fast_path_case(kind)
      self.assertIsNotNone(prim.rules.drtrl_update)
      self.assertIsNotNone(prim.rules.drtrl_solve)
      trace = extend.drtrl_init(
          prim,
          None if x is None else _aval(x),
          jax.ShapeDtypeStruct(y_shape, jnp.float64),
          {k: _aval(v) for k, v in weights.items()},
          num_states,
          params,
      )
      keys = _keys(len(trace) + 3, seed=12)
      trace = {
          k: _normal(keys.pop(), v.shape, jnp.float64)
          for k, v in sorted(trace.items())
      }
      d = _normal(keys.pop(), y_shape + (num_states, num_states), jnp.float64)
      d_f = _normal(keys.pop(), y_shape + (num_states,), jnp.float64)
      g = _normal(keys.pop(), y_shape + (num_states,), jnp.float64)

      def update(trace, d, d_f, x, fast):
        return extend.drtrl_update(
            prim, trace, d, d_f, x, weights, params, fast=fast
        )

      def solve(trace, g, fast):
        return extend.drtrl_solve(prim, trace, g, weights, params, fast=fast)

      if strip_batch:
        update = jax.vmap(update, in_axes=(0, 0, 0, x_axis, None))
        per_sample = jax.vmap(solve, in_axes=(0, 0, None))
        solve = lambda trace, g, fast: jax.tree_util.tree_map(
            lambda v: jnp.sum(v, axis=0), per_sample(trace, g, fast)
        )

      @test_util.fast_jit
      def both(trace, d, d_f, x, g):
        new_fast = update(trace, d, d_f, x, True)
        new_slow = update(trace, d, d_f, x, False)
        return (
            new_fast,
            new_slow,
            solve(new_fast, g, True),
            solve(new_fast, g, False),
        )

      new_fast, new_slow, dw_fast, dw_slow = both(trace, d, d_f, x, g)
      _assert_trees_close(self, new_fast, new_slow, rtol=_RTOL)
      jax.tree_util.tree_map(
          lambda a, b: self.assertEqual(a.shape, b.shape), new_fast, trace
      )
      self.assertEqual(
          jax.tree_util.tree_leaves(new_fast)[0].dtype, jnp.float64
      )
      _assert_trees_close(self, dw_fast, dw_slow, rtol=_RTOL)
      for k, v in weights.items():
        self.assertEqual(dw_fast[k].shape, v.shape)


class InitShapeTest(parameterized.TestCase):
  """``drtrl_init`` and ``pp_init`` shapes for every built-in primitive."""

  def _check(self, prim, x_aval, y_aval, weight_avals, params, expected):
    for num_states in (1, 3):
      trace = extend.drtrl_init(
          prim, x_aval, y_aval, weight_avals, num_states, params
      )
      self.assertEqual(
          {k: v.shape for k, v in trace.items()},
          {k: v + (num_states,) for k, v in expected.items()},
      )
      for v in trace.values():
        self.assertEqual(v.dtype, y_aval.dtype)
        self.assertFalse(np.any(np.asarray(v)))
      pp = extend.pp_init(
          prim, x_aval, y_aval, weight_avals, num_states, params
      )
      self.assertEqual(pp.shape, tuple(y_aval.shape) + (num_states,))
      self.assertEqual(pp.dtype, y_aval.dtype)
      self.assertFalse(np.any(np.asarray(pp)))

  def test_dense_batched(self):
    sds = jax.ShapeDtypeStruct
    self._check(
        extend.etp_batched_dense_p,
        sds((2, 5), jnp.float32),
        sds((2, 4), jnp.float32),
        {"weight": sds((5, 4), jnp.float32), "bias": sds((4,), jnp.float32)},
        {"has_bias": True},
        {"weight": (2, 5, 4), "bias": (2, 4)},
    )

  def test_dense_unbatched(self):
    sds = jax.ShapeDtypeStruct
    self._check(
        extend.etp_dense_p,
        sds((5,), jnp.float32),
        sds((4,), jnp.float32),
        {"weight": sds((5, 4), jnp.float32), "bias": sds((4,), jnp.float32)},
        {"has_bias": True},
        {"weight": (5, 4), "bias": (4,)},
    )
    self._check(
        extend.etp_dense_p,
        sds((5,), jnp.float32),
        sds((4,), jnp.float32),
        {"weight": sds((5, 4), jnp.float32)},
        {"has_bias": False},
        {"weight": (5, 4)},
    )

  def test_conv_nchw(self):
    x = jnp.zeros((2, 3, 7, 6))
    kernel = jnp.zeros((4, 3, 3, 2))  # OIHW
    bias = jnp.zeros((4,))
    params = _conv_params(x, kernel, bias, strides=(2, 1), padding="VALID")
    y = jax.eval_shape(
        functools.partial(extend.etp_conv_p.bind, **params), x, kernel, bias
    )
    self.assertEqual(y.shape, (2, 4, 3, 5))
    self._check(
        extend.etp_conv_p,
        _aval(x),
        y,
        {"weight": _aval(kernel), "bias": _aval(bias)},
        params,
        {"weight": (2, 3, 5, 4, 3, 3, 2), "bias": (2, 3, 5, 4)},
    )

  def test_conv_channel_last(self):
    x = jnp.zeros((2, 6, 5, 3))
    kernel = jnp.zeros((3, 2, 3, 4))  # HWIO
    bias = jnp.zeros((4,))
    params = _conv_params(
        x,
        kernel,
        bias,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        padding="SAME",
    )
    y = jax.eval_shape(
        functools.partial(extend.etp_conv_p.bind, **params), x, kernel, bias
    )
    self.assertEqual(y.shape, (2, 6, 5, 4))
    self._check(
        extend.etp_conv_p,
        _aval(x),
        y,
        {"weight": _aval(kernel), "bias": _aval(bias)},
        params,
        {"weight": (2, 6, 5, 3, 2, 3, 4), "bias": (2, 6, 5, 4)},
    )

  def test_conv_channel_first_output_from_channel_last_input(self):
    x = jnp.zeros((2, 6, 5, 3))
    kernel = jnp.zeros((3, 2, 3, 4))  # HWIO
    params = _conv_params(
        x, kernel, dimension_numbers=("NHWC", "HWIO", "NCHW"), padding="VALID"
    )
    y = jax.eval_shape(
        functools.partial(extend.etp_conv_p.bind, **params), x, kernel
    )
    self.assertEqual(y.shape, (2, 4, 4, 4))
    self._check(
        extend.etp_conv_p,
        _aval(x),
        y,
        {"weight": _aval(kernel)},
        params,
        {"weight": (2, 4, 4, 3, 2, 3, 4)},
    )

  @parameterized.parameters(((3,), (3,)), ((2, 3), (4, 2, 3)))
  def test_elementwise(self, w_shape, y_shape):
    sds = jax.ShapeDtypeStruct
    self._check(
        extend.etp_elementwise_p,
        None,
        sds(y_shape, jnp.float32),
        {"weight": sds(w_shape, jnp.float32)},
        {"fn": None},
        {"weight": y_shape},
    )

  def test_dtype_follows_y(self):
    with jax.enable_x64(True):
      sds = jax.ShapeDtypeStruct
      self._check(
          extend.etp_elementwise_p,
          None,
          sds((3,), jnp.float64),
          {"weight": sds((3,), jnp.float64)},
          {"fn": None},
          {"weight": (3,)},
      )


class PpSolveTest(parameterized.TestCase):
  """``pp_solve`` pulls the output-side signal back through the op's VJP."""

  def _signal(self, y_shape, num_states, correction, seed):
    kf, kg = _keys(2, seed=seed)
    f_trace = _normal(kf, y_shape + (num_states,), jnp.float64)
    g = _normal(kg, y_shape + (num_states,), jnp.float64)
    return f_trace, g, jnp.sum(f_trace * g, axis=-1) / correction

  def test_input_free_keys(self):
    self.assertEqual(
        extend.etp_batched_dense_p.input_free_keys({"has_bias": True}),
        frozenset({"bias"}),
    )
    self.assertIn(
        "bias", extend.etp_dense_p.input_free_keys({"has_bias": True})
    )
    x = jnp.zeros((1, 2, 5))
    params = _conv_params(x, jnp.zeros((3, 2, 3)), jnp.zeros((3,)))
    self.assertIn("bias", extend.etp_conv_p.input_free_keys(params))
    self.assertNotIn("weight", extend.etp_conv_p.input_free_keys(params))
    self.assertIn(
        "weight", extend.etp_elementwise_p.input_free_keys({"fn": None})
    )

  @parameterized.parameters(True, False)
  def test_dense(self, batched):
    with jax.enable_x64(True):
      kx, kw, kb = _keys(3, seed=21)
      x_trace = _normal(kx, (3, 5) if batched else (5,), jnp.float64)
      weights = {
          "weight": _normal(kw, (5, 4), jnp.float64),
          "bias": _normal(kb, (4,), jnp.float64),
      }
      y_shape = (3, 4) if batched else (4,)
      correction, one_trace = 0.7, 2.5
      f_trace, g, signal = self._signal(y_shape, 2, correction, seed=22)
      prim = extend.etp_batched_dense_p if batched else extend.etp_dense_p
      grads = extend.pp_solve(
          prim,
          x_trace,
          one_trace,
          f_trace,
          g,
          weights,
          {"has_bias": True},
          correction,
      )
      _, vjp = jax.vjp(lambda w: jnp.matmul(x_trace, w), weights["weight"])
      (expected_w,) = vjp(signal)
      expected_b = one_trace * _sum_to_rank(signal, 1)
      _assert_trees_close(
          self,
          grads,
          {"weight": expected_w, "bias": expected_b},
          rtol=_RTOL,
          atol=1e-14,
      )

  @parameterized.named_parameters(
      (
          "nhwc",
          (2, 6, 5, 3),
          (3, 2, 3, 4),
          dict(dimension_numbers=("NHWC", "HWIO", "NHWC"), strides=(2, 1)),
      ),
      (
          "nchw_groups",
          (2, 4, 5, 6),
          (6, 2, 3, 3),
          dict(
              feature_group_count=2,
              padding=((1, 0), (2, 1)),
              rhs_dilation=(1, 2),
          ),
      ),
  )
  def test_conv(self, x_shape, k_shape, kwargs):
    with jax.enable_x64(True):
      kx, kw, kb = _keys(3, seed=23)
      x_trace = _normal(kx, x_shape, jnp.float64)
      kernel = _normal(kw, k_shape, jnp.float64)
      dn = extend.conv_dimension_numbers(kwargs.get("dimension_numbers"), 2)
      bias = _normal(kb, (k_shape[dn.rhs_spec[0]],), jnp.float64)
      params = _conv_params(x_trace, kernel, bias, **kwargs)
      weights = {"weight": kernel, "bias": bias}
      y_shape = jax.eval_shape(
          lambda k: _lax_conv(x_trace, k, params), kernel
      ).shape
      correction, one_trace = 0.4, 1.75
      f_trace, g, signal = self._signal(y_shape, 2, correction, seed=24)

      @test_util.fast_jit
      def solve_and_vjp(x_trace, f_trace, g, weights, signal):
        grads = extend.pp_solve(
            extend.etp_conv_p,
            x_trace,
            one_trace,
            f_trace,
            g,
            weights,
            params,
            correction,
        )
        _, vjp = jax.vjp(
            lambda k: _lax_conv(x_trace, k, params), weights["weight"]
        )
        return grads, vjp(signal)[0]

      grads, expected_w = solve_and_vjp(x_trace, f_trace, g, weights, signal)
      channel_axis = dn.out_spec[1]
      expected_b = one_trace * jnp.sum(
          signal,
          axis=tuple(a for a in range(len(y_shape)) if a != channel_axis),
      )
      _assert_trees_close(
          self,
          grads,
          {"weight": expected_w, "bias": expected_b},
          rtol=1e-11,
          atol=1e-13,
      )

  def test_elementwise(self):
    with jax.enable_x64(True):
      w = _normal(_keys(1, seed=25)[0], (2, 3), jnp.float64)
      correction, one_trace = 0.9, 3.0
      f_trace, g, signal = self._signal((4, 2, 3), 2, correction, seed=26)
      grads = extend.pp_solve(
          extend.etp_elementwise_p,
          None,
          one_trace,
          f_trace,
          g,
          {"weight": w},
          {"fn": jnp.tanh},
          correction,
      )
      expected = one_trace * (1 - jnp.tanh(w) ** 2) * jnp.sum(signal, axis=0)
      _assert_trees_close(self, grads, {"weight": expected}, rtol=_RTOL)


class OperandsTest(absltest.TestCase):

  def test_split_and_bind_operands_round_trip(self):
    x, w, b = jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.arange(4.0)
    prim = extend.etp_batched_dense_p
    params = {"has_bias": True}
    x_split, weights = prim.split_operands((x, w, b), params)
    self.assertIs(x_split, x)
    self.assertEqual(set(weights), {"weight", "bias"})
    np.testing.assert_allclose(
        prim.bind_operands(x_split, weights, params), x @ w + b
    )
    ew = extend.etp_elementwise_p
    x_none, ew_weights = ew.split_operands((b,), {"fn": None})
    self.assertIsNone(x_none)
    np.testing.assert_allclose(
        ew.bind_operands(None, ew_weights, {"fn": None}), b
    )


if __name__ == "__main__":
  absltest.main()

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
"""Tests of the ETP ops with ``saiunit`` quantities.

The ops bind their primitives on mantissas and put the unit back: ``dense`` and
``conv`` return ``unit(x) * unit(w)``, convert a bias given in a compatible
unit, and reject a bias of another dimension; ``elementwise`` carries the unit
of ``fn(w)``. Unitless inputs give plain JAX arrays.
"""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import saiunit as u

import haiku_etp

_RTOL = 1e-5
_ATOL = 1e-5


def _keys(n, seed=0):
  return [1000 * seed + i for i in range(n)]


def _normal(key, shape):
  """Float32 standard normal values from an integer seed, drawn by numpy."""
  return jnp.asarray(
      np.random.RandomState(key).standard_normal(shape), jnp.float32
  )


def _with(mantissa, unit):
  """``mantissa`` in ``unit``, or unchanged when ``unit`` is None."""
  return mantissa if unit is None else u.Quantity(mantissa, unit=unit)


def _decay(tau):
  return u.math.exp(-1 * u.ms / tau)


def _double(tau):
  return 2 * tau


def _unit_or_one(unit):
  return u.UNITLESS if unit is None else unit


class DenseUnitsTest(chex.TestCase):
  """``haiku_etp.dense`` with unitful operands."""

  @parameterized.named_parameters(
      ("x_and_w", u.mV, u.siemens, (2, 3)),
      ("x_only", u.mV, None, (2, 3)),
      ("w_only", None, u.siemens, (2, 3)),
      ("unbatched", u.volt, u.nS, (3,)),
  )
  def test_unit_is_product(self, x_unit, w_unit, x_shape):
    kx, kw = _keys(2)
    x_m = _normal(kx, x_shape)
    w_m = _normal(kw, (3, 4))
    y = haiku_etp.dense(_with(x_m, x_unit), _with(w_m, w_unit))
    self.assertIsInstance(y, u.Quantity)
    expected_unit = _unit_or_one(x_unit) * _unit_or_one(w_unit)
    self.assertEqual(u.get_unit(y), expected_unit)
    self.assertEqual(u.get_unit(y).dim, expected_unit.dim)
    self.assertEqual(y.shape, x_shape[:-1] + (4,))
    np.testing.assert_allclose(
        u.get_mantissa(y), x_m @ w_m, rtol=_RTOL, atol=_ATOL
    )

  @parameterized.named_parameters(
      # x in mV, unitless w, bias in volt: y is in mV, bias * 1e3.
      ("volt_into_mv", u.mV, None, u.volt, 1e3),
      # mV * S = mA; a bias in uA is 1e-3 of that.
      ("ua_into_ma", u.mV, u.siemens, u.uA, 1e-3),
      ("same_unit", u.mV, None, u.mV, 1.0),
  )
  def test_bias_in_compatible_unit_is_converted(
      self, x_unit, w_unit, bias_unit, factor
  ):
    kx, kw, kb = _keys(3, seed=1)
    x_m = _normal(kx, (2, 3))
    w_m = _normal(kw, (3, 4))
    b_m = _normal(kb, (4,))
    y = haiku_etp.dense(
        _with(x_m, x_unit), _with(w_m, w_unit), _with(b_m, bias_unit)
    )
    self.assertEqual(u.get_unit(y), _unit_or_one(x_unit) * _unit_or_one(w_unit))
    np.testing.assert_allclose(
        u.get_mantissa(y), x_m @ w_m + factor * b_m, rtol=_RTOL, atol=_ATOL
    )

  def test_bias_with_other_dimension_raises(self):
    x = jnp.ones((2, 3)) * u.mV
    with self.assertRaisesRegex(ValueError, "unit"):
      haiku_etp.dense(x, jnp.ones((3, 4)), jnp.ones(4) * u.ms)
    with self.assertRaisesRegex(ValueError, "unit"):
      haiku_etp.dense(x, jnp.ones((3, 4)) * u.siemens, jnp.ones(4) * u.mV)

  def test_plain_bias_with_unitful_product_raises(self):
    with self.assertRaisesRegex(ValueError, "unit"):
      haiku_etp.dense(jnp.ones((2, 3)) * u.mV, jnp.ones((3, 4)), jnp.ones(4))

  def test_unitful_bias_with_unitless_product_raises(self):
    with self.assertRaisesRegex(ValueError, "unit"):
      haiku_etp.dense(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.ones(4) * u.mV)

  def test_unitless_returns_plain_array(self):
    kx, kw, kb = _keys(3, seed=2)
    x = _normal(kx, (2, 3))
    w = _normal(kw, (3, 4))
    b = _normal(kb, (4,))
    for y, expected in (
        (haiku_etp.dense(x, w), x @ w),
        (haiku_etp.dense(x, w, b), x @ w + b),
    ):
      self.assertNotIsInstance(y, u.Quantity)
      self.assertIsInstance(y, jax.Array)
      np.testing.assert_allclose(y, expected, rtol=_RTOL, atol=_ATOL)

  def test_jit_keeps_primitive(self):
    x = jnp.ones((2, 3)) * u.mV
    w = jnp.ones((3, 4)) * u.siemens
    jaxpr = jax.make_jaxpr(haiku_etp.dense)(x, w)
    self.assertIn("etp_batched_dense", str(jaxpr))


class ConvUnitsTest(chex.TestCase):
  """``haiku_etp.conv`` with unitful operands."""

  def _operands(self, seed=3):
    kx, kk, kb = _keys(3, seed=seed)
    x_m = _normal(kx, (2, 3, 6))  # NCH
    k_m = _normal(kk, (4, 3, 3))  # OIH
    b_m = _normal(kb, (4,))
    plain = lax.conv_general_dilated(
        x_m, k_m, (1,), "SAME", precision=lax.Precision.HIGHEST
    )
    return x_m, k_m, b_m, plain

  @parameterized.named_parameters(
      ("x_and_kernel", u.mV, u.siemens),
      ("x_only", u.mV, None),
      ("kernel_only", None, u.nS),
  )
  def test_unit_is_product(self, x_unit, k_unit):
    x_m, k_m, _, plain = self._operands()
    y = haiku_etp.conv(_with(x_m, x_unit), _with(k_m, k_unit))
    self.assertIsInstance(y, u.Quantity)
    self.assertEqual(u.get_unit(y), _unit_or_one(x_unit) * _unit_or_one(k_unit))
    np.testing.assert_allclose(u.get_mantissa(y), plain, rtol=_RTOL, atol=_ATOL)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bias_in_scaled_unit_is_converted(self):
    x_m, k_m, b_m, plain = self._operands(seed=4)
    y = self.variant(haiku_etp.conv)(x_m * u.mV, k_m, b_m * u.volt)
    self.assertEqual(u.get_unit(y), u.mV)
    np.testing.assert_allclose(
        u.get_mantissa(y),
        plain + 1e3 * b_m[None, :, None],
        rtol=_RTOL,
        atol=_ATOL,
    )

  def test_bias_with_other_dimension_raises(self):
    x_m, k_m, b_m, _ = self._operands()
    with self.assertRaisesRegex(ValueError, "unit"):
      haiku_etp.conv(x_m * u.mV, k_m, b_m * u.ms)

  def test_plain_bias_with_unitful_product_raises(self):
    x_m, k_m, b_m, _ = self._operands()
    with self.assertRaisesRegex(ValueError, "unit"):
      haiku_etp.conv(x_m, k_m * u.siemens, b_m)

  def test_unitless_returns_plain_array(self):
    x_m, k_m, b_m, plain = self._operands()
    y = haiku_etp.conv(x_m, k_m, b_m)
    self.assertNotIsInstance(y, u.Quantity)
    self.assertIsInstance(y, jax.Array)
    np.testing.assert_allclose(
        y, plain + b_m[None, :, None], rtol=_RTOL, atol=_ATOL
    )


class ElementwiseUnitsTest(chex.TestCase):
  """``haiku_etp.elementwise`` with unitful parameters."""

  def test_identity_keeps_unit(self):
    w_m = jnp.array([1.0, -2.0, 3.5])
    y = haiku_etp.elementwise(w_m * u.mV)
    self.assertIsInstance(y, u.Quantity)
    self.assertEqual(u.get_unit(y), u.mV)
    np.testing.assert_allclose(u.get_mantissa(y), w_m)

  @parameterized.named_parameters(
      ("ms", u.ms, 1.0),
      ("second", u.second, 1e3),
  )
  def test_decay_is_dimensionless(self, tau_unit, to_ms):
    tau_m = jnp.array([[1.0, 2.0, 5.0], [10.0, 20.0, 0.5]]) / to_ms
    y = haiku_etp.elementwise(tau_m * tau_unit, _decay)
    self.assertNotIsInstance(y, u.Quantity)
    self.assertEqual(u.get_unit(y), u.UNITLESS)
    self.assertEqual(y.shape, tau_m.shape)
    np.testing.assert_allclose(y, np.exp(-1.0 / (tau_m * to_ms)), rtol=_RTOL)

  def test_scaling_keeps_unit(self):
    tau_m = jnp.array([1.0, 2.0, 5.0])
    y = haiku_etp.elementwise(tau_m * u.ms, _double)
    self.assertIsInstance(y, u.Quantity)
    self.assertEqual(u.get_unit(y), u.ms)
    np.testing.assert_allclose(u.get_mantissa(y), 2 * tau_m, rtol=_RTOL)

  def test_lambda_fn_on_quantity(self):
    tau = jnp.array([1.0, 4.0]) * u.ms
    y = haiku_etp.elementwise(tau, lambda t: u.math.exp(-1 * u.ms / t))
    np.testing.assert_allclose(y, np.exp([-1.0, -0.25]), rtol=_RTOL)
    y = haiku_etp.elementwise(tau, lambda t: 2 * t)
    self.assertEqual(u.get_unit(y), u.ms)
    np.testing.assert_allclose(u.get_mantissa(y), [2.0, 8.0], rtol=_RTOL)

  @parameterized.named_parameters(("identity", None), ("tanh", jnp.tanh))
  def test_grad_unitless(self, fn):
    w = jnp.array([0.3, -1.2, 2.0])
    grad = jax.grad(lambda w: jnp.sum(haiku_etp.elementwise(w, fn) ** 2))(w)
    y = w if fn is None else jnp.tanh(w)
    dy = jnp.ones_like(w) if fn is None else 1 - jnp.tanh(w) ** 2
    np.testing.assert_allclose(grad, 2 * y * dy, rtol=_RTOL, atol=1e-6)

  def test_grad_through_unitful_decay(self):
    tau_m = jnp.array([1.0, 2.0, 5.0])
    grad = jax.grad(lambda m: jnp.sum(haiku_etp.elementwise(m * u.ms, _decay)))(
        tau_m
    )
    np.testing.assert_allclose(
        grad, jnp.exp(-1.0 / tau_m) / tau_m**2, rtol=_RTOL
    )

  def test_jit_with_unitful_inputs(self):
    tau = jnp.array([1.0, 2.0]) * u.ms
    y = jax.jit(lambda tau: haiku_etp.elementwise(tau, _decay))(tau)
    np.testing.assert_allclose(y, np.exp([-1.0, -0.5]), rtol=_RTOL)
    self.assertIn(
        "etp_elementwise",
        str(
            jax.make_jaxpr(lambda tau: haiku_etp.elementwise(tau, _decay))(tau)
        ),
    )
    x = jnp.ones((2, 3)) * u.mV
    w = jnp.full((3, 4), 2.0) * u.siemens
    y = jax.jit(lambda x, w: haiku_etp.dense(x, w, jnp.ones(4) * u.uA))(x, w)
    self.assertEqual(u.get_unit(y), u.mA)
    np.testing.assert_allclose(
        u.get_mantissa(y), np.full((2, 4), 6.001), rtol=_RTOL
    )


if __name__ == "__main__":
  absltest.main()

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
"""Tests for the surrogate spike functions: forward step and derivatives.

Everything runs eagerly; ``test_heaviside`` and ``test_partial`` also run
under ``jit``, once per function.
"""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from haiku_etp import surrogate
from tests import test_util

# The derivative each function must have, written out independently in numpy.


def _sigmoid_derivative(x, k):
  e = np.exp(-np.abs(k * x))  # symmetric, and never overflows
  return k * e / (1 + e) ** 2


def _fast_sigmoid_derivative(x, k):
  return 1 / (1 + k * np.abs(x)) ** 2


def _triangle_derivative(x, k):
  return k * np.maximum(0, 1 - k * np.abs(x))


_FUNCTIONS = {
    "sigmoid": (surrogate.sigmoid, _sigmoid_derivative, 4.0),
    "fast_sigmoid": (surrogate.fast_sigmoid, _fast_sigmoid_derivative, 10.0),
    "triangle": (surrogate.triangle, _triangle_derivative, 1.0),
}
_NAMES = tuple(_FUNCTIONS)
_SCALES = (0.5, 1.0, 3.0, 25.0)


def _points(dtype):
  # Both sides of zero, zero itself, the triangle's kinks at |x| = 1 / k for
  # the scales above, and far tails.
  x = np.concatenate([np.linspace(-3.0, 3.0, 61), [-50.0, 1e-4, 50.0]])
  return jnp.asarray(x, dtype)


def _named(**axes):
  out = [{"testcase_name": ""}]
  for key, values in axes.items():
    out = [
        dict(case, **{key: v}, testcase_name=f"{case['testcase_name']}_{v}")
        for case in out
        for v in values
    ]
  for case in out:
    case["testcase_name"] = case["testcase_name"].lstrip("_").replace(".", "p")
  return out


class ForwardTest(parameterized.TestCase):

  @parameterized.named_parameters(_named(name=_NAMES))
  def test_heaviside(self, name):
    fn = _FUNCTIONS[name][0]
    x = jnp.array([-2.0, -1e-7, 0.0, -0.0, 1e-7, 0.5, 3.0])
    for apply in (fn, test_util.fast_jit(fn)):
      y = apply(x)
      np.testing.assert_array_equal(y, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])

  @parameterized.named_parameters(
      _named(name=_NAMES, dtype=("float32", "float64", "bfloat16"))
  )
  def test_dtype_preserved(self, name, dtype):
    fn = _FUNCTIONS[name][0]
    with jax.enable_x64(dtype == "float64"):
      x = jnp.linspace(-1.0, 1.0, 8, dtype=dtype)
      y = fn(x)
      self.assertEqual(y.dtype, jnp.dtype(dtype))
      np.testing.assert_array_equal(
          np.asarray(y, np.float32), np.asarray(x) > 0
      )
      self.assertEqual(jax.grad(lambda v: fn(v).sum())(x).dtype, x.dtype)

  @parameterized.named_parameters(_named(name=_NAMES))
  def test_shape_preserved(self, name):
    fn = _FUNCTIONS[name][0]
    x = jnp.ones((2, 3, 4))
    self.assertEqual(fn(x).shape, (2, 3, 4))
    self.assertEqual(fn(1.0).shape, ())


class DerivativeTest(parameterized.TestCase):

  @parameterized.named_parameters(_named(name=_NAMES, scale=_SCALES))
  def test_formula_float32(self, name, scale):
    fn, derivative, _ = _FUNCTIONS[name]
    x = _points(jnp.float32)
    grad = jax.vmap(jax.grad(lambda v: fn(v, scale=scale)))(x)
    self.assertEqual(grad.dtype, jnp.float32)
    expected = derivative(np.asarray(x, np.float64), scale)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)

  @parameterized.named_parameters(_named(name=_NAMES, scale=_SCALES))
  def test_formula_float64(self, name, scale):
    fn, derivative, _ = _FUNCTIONS[name]
    with jax.enable_x64(True):
      x = _points(jnp.float64)
      grad = jax.vmap(jax.grad(lambda v: fn(v, scale)))(x)
      self.assertEqual(grad.dtype, jnp.float64)
      expected = derivative(np.asarray(x), scale)
      np.testing.assert_allclose(grad, expected, rtol=1e-13, atol=1e-300)

  @parameterized.named_parameters(_named(name=_NAMES))
  def test_default_scale(self, name):
    fn, derivative, default = _FUNCTIONS[name]
    x = _points(jnp.float32)
    grad = jax.vmap(jax.grad(fn))(x)
    np.testing.assert_allclose(
        grad,
        derivative(np.asarray(x, np.float64), default),
        rtol=1e-6,
        atol=1e-7,
    )

  @parameterized.named_parameters(_named(name=_NAMES))
  def test_jvp_and_vjp_agree(self, name):
    fn = _FUNCTIONS[name][0]
    x = _points(jnp.float32)
    t = jnp.linspace(0.5, 1.5, x.shape[0])
    _, jvp = jax.jvp(fn, (x,), (t,))
    _, vjp = jax.vjp(fn, x)
    np.testing.assert_allclose(jvp, vjp(t)[0], rtol=1e-6)
    np.testing.assert_allclose(jvp, jax.vmap(jax.grad(fn))(x) * t, rtol=1e-6)

  @parameterized.named_parameters(_named(name=_NAMES))
  def test_partial(self, name):
    fn, derivative, _ = _FUNCTIONS[name]
    spike = functools.partial(fn, scale=2.0)
    x = _points(jnp.float32)
    grad_fn = jax.grad(lambda v: spike(v).sum())
    # Eagerly and, once per function, under jit.
    for wrap in (lambda f: f, test_util.fast_jit):
      np.testing.assert_array_equal(wrap(spike)(x), np.asarray(x) > 0)
      np.testing.assert_allclose(
          wrap(grad_fn)(x),
          derivative(np.asarray(x, np.float64), 2.0),
          rtol=1e-6,
          atol=1e-7,
      )

  @parameterized.named_parameters(_named(name=_NAMES))
  def test_vmap_over_batch(self, name):
    fn, derivative, default = _FUNCTIONS[name]
    x = _points(jnp.float32).reshape(1, -1) * jnp.array([[1.0], [0.5]])
    grads = jax.vmap(jax.grad(lambda row: jnp.sum(fn(row))))(x)
    np.testing.assert_allclose(
        grads,
        derivative(np.asarray(x, np.float64), default),
        rtol=1e-6,
        atol=1e-7,
    )

  def test_scales_differ(self):
    # The scale is static: two scales under one jit must not share a cache
    # entry that pins the first one.
    g = jax.jit(
        jax.grad(lambda x, k: surrogate.triangle(x, k)), static_argnums=1
    )
    self.assertAlmostEqual(float(g(0.25, 1.0)), 0.75)
    self.assertAlmostEqual(float(g(0.25, 2.0)), 1.0)


class ValidationTest(parameterized.TestCase):

  @parameterized.named_parameters(
      _named(name=_NAMES, scale=(0.0, -1.0, float("nan"), float("inf")))
  )
  def test_bad_scale(self, name, scale):
    fn = _FUNCTIONS[name][0]
    with self.assertRaisesRegex(ValueError, rf"scale of {name} .*{scale!r}"):
      fn(jnp.ones(3), scale)

  @parameterized.named_parameters(_named(name=_NAMES))
  def test_non_number_scale(self, name):
    fn = _FUNCTIONS[name][0]
    for scale in ("2", True, jnp.array(2.0), None):
      with self.assertRaisesRegex(ValueError, "must be a positive finite real"):
        fn(jnp.ones(3), scale)


if __name__ == "__main__":
  absltest.main()

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
"""Tests of the backend-tuned forms and the switch between them.

The CPU-tuned forms of ``mix_states``, ``weighted_state_sum`` and
``sum_leading`` must compute what the plain ``einsum`` / ``jnp.sum`` forms
compute (float64, odd leading sizes included); ``backend.tuning`` must decide
which form is traced; ``materialize`` must be an identity under ``jit``,
``grad``, ``jvp`` and ``vmap``.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from haiku_etp import extend
from haiku_etp._src.core import backend
from tests import test_util

# Tuned and plain forms sum the same terms in another order.
_RTOL = 1e-12


def _rand(shape, seed):
  return jnp.asarray(np.random.RandomState(seed).standard_normal(shape))


def _both(fn, *args):
  """``fn(*args)`` traced with the CPU-tuned forms and with the plain ones."""
  out = {}
  for cpu in (True, False):
    with backend.tuning(cpu):
      out[cpu] = jax.jit(lambda *a: fn(*a))(*args)
  return out[True], out[False]


def _names(fn, *args, cpu):
  """Primitives of ``fn`` traced with the CPU-tuned forms on or off.

  ``fn`` is wrapped in a new function for each trace: JAX caches a traced
  function's jaxpr by the function and its arguments, and the switch is not
  part of that key.
  """
  with backend.tuning(cpu):
    return test_util.primitive_names(jax.make_jaxpr(lambda *a: fn(*a))(*args))


class AgreementTest(parameterized.TestCase):
  """The CPU-tuned forms give the plain forms' values in float64."""

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  @parameterized.named_parameters(
      # name, d shape (broadcasting), trace shape.
      ("s1", (5, 3, 1, 1), (5, 3, 1)),
      ("s2_odd_leading", (7, 3, 2, 2), (7, 3, 2)),
      ("s1_broadcast_d", (4, 1, 5, 1, 1), (4, 3, 5, 1)),
      ("s2_broadcast_d", (4, 1, 5, 2, 2), (4, 3, 5, 2)),
      ("s3_broadcast_d", (4, 1, 5, 3, 3), (4, 3, 5, 3)),
      ("s2_broadcast_leading", (1, 2, 2), (9, 2)),
  )
  def test_mix_states(self, d_shape, trace_shape):
    d, trace = _rand(d_shape, 0), _rand(trace_shape, 1)
    tuned, plain = _both(extend.mix_states, d, trace)
    self.assertEqual(tuned.dtype, jnp.float64)
    self.assertEqual(tuned.shape, trace_shape)
    full = np.broadcast_to(d, trace_shape[:-1] + d_shape[-2:])
    expected = np.einsum("...ab,...b->...a", full, trace)
    np.testing.assert_allclose(tuned, plain, rtol=_RTOL, atol=1e-14)
    np.testing.assert_allclose(tuned, expected, rtol=_RTOL, atol=1e-14)

  @parameterized.named_parameters(
      ("s1", (3, 1), (3, 1)),
      ("s2_odd_leading", (7, 5, 2), (7, 5, 2)),
      ("s1_broadcast_g", (4, 3, 5, 1), (4, 1, 5, 1)),
      ("s2_broadcast_g", (4, 3, 5, 2), (4, 1, 5, 2)),
      ("s3_broadcast_g", (4, 3, 5, 3), (4, 1, 5, 3)),
  )
  def test_weighted_state_sum(self, trace_shape, g_shape):
    trace, g = _rand(trace_shape, 2), _rand(g_shape, 3)
    tuned, plain = _both(extend.weighted_state_sum, trace, g)
    self.assertEqual(tuned.dtype, jnp.float64)
    self.assertEqual(tuned.shape, trace_shape[:-1])
    expected = np.sum(np.asarray(trace) * np.asarray(g), axis=-1)
    np.testing.assert_allclose(tuned, plain, rtol=_RTOL, atol=1e-14)
    np.testing.assert_allclose(tuned, expected, rtol=_RTOL, atol=1e-14)

  @parameterized.named_parameters(
      # name, shape, number of leading axes summed.
      ("none", (5, 3), 0),
      ("none_of_size_1", (1, 3), 0),
      ("one_of_size_1", (1, 3), 1),
      ("one_of_size_2", (2, 3), 1),
      ("one_odd", (7, 3), 1),
      ("two_even", (6, 3, 2), 2),
      ("two_odd", (3, 5, 2), 2),
      ("three_odd", (13, 3, 2, 4), 3),
      ("all_axes", (5, 3), 2),
  )
  def test_sum_leading(self, shape, num_axes):
    x = _rand(shape, 4)
    tuned, plain = _both(lambda x: extend.sum_leading(x, num_axes), x)
    self.assertEqual(tuned.dtype, jnp.float64)
    self.assertEqual(tuned.shape, shape[num_axes:])
    expected = np.sum(np.asarray(x), axis=tuple(range(num_axes)))
    np.testing.assert_allclose(tuned, plain, rtol=_RTOL, atol=1e-14)
    np.testing.assert_allclose(tuned, expected, rtol=_RTOL, atol=1e-14)

  def test_sum_leading_zero_axes_is_the_input(self):
    x = _rand((3, 2), 5)
    for cpu in (True, False):
      with backend.tuning(cpu):
        self.assertIs(extend.sum_leading(x, 0), x)


class TuningTest(absltest.TestCase):
  """``backend.tuning`` decides the traced form."""

  def test_default_follows_the_backend(self):
    self.assertEqual(backend.cpu_tuned(), jax.default_backend() == "cpu")
    with backend.tuning(None):
      self.assertEqual(backend.cpu_tuned(), jax.default_backend() == "cpu")

  def test_nesting_and_restore(self):
    default = backend.cpu_tuned()
    with backend.tuning(False):
      self.assertFalse(backend.cpu_tuned())
      with backend.tuning(True):
        self.assertTrue(backend.cpu_tuned())
        with backend.tuning(None):
          self.assertTrue(backend.cpu_tuned())
      self.assertFalse(backend.cpu_tuned())
    self.assertEqual(backend.cpu_tuned(), default)
    with self.assertRaises(RuntimeError):
      with backend.tuning(not default):
        raise RuntimeError("boom")
    self.assertEqual(backend.cpu_tuned(), default)

  def test_mix_states_form(self):
    d, trace = jnp.ones((4, 3, 2, 2)), jnp.ones((4, 3, 2))
    self.assertIn("dot_general", _names(extend.mix_states, d, trace, cpu=False))
    self.assertNotIn(
        "dot_general", _names(extend.mix_states, d, trace, cpu=True)
    )

  def test_weighted_state_sum_form(self):
    trace, g = jnp.ones((4, 3, 2)), jnp.ones((4, 3, 2))
    plain = _names(extend.weighted_state_sum, trace, g, cpu=False)
    tuned = _names(extend.weighted_state_sum, trace, g, cpu=True)
    self.assertIn("dot_general", plain)
    self.assertNotIn("dot_general", tuned)
    self.assertNotIn("reduce_sum", tuned)

  def test_sum_leading_form(self):
    x = jnp.ones((5, 3, 2))
    fn = lambda x: extend.sum_leading(x, 2)
    self.assertIn("reduce_sum", _names(fn, x, cpu=False))
    self.assertNotIn("reduce_sum", _names(fn, x, cpu=True))

  def test_fast_path_follows_the_switch(self):
    """The dense rule's fast solve is traced with the form that is switched on."""
    prim = extend.etp_batched_dense_p
    weights = {"weight": jnp.ones((5, 4)), "bias": jnp.ones((4,))}
    trace = {"weight": jnp.ones((3, 5, 4, 2)), "bias": jnp.ones((3, 4, 2))}
    g = jnp.ones((3, 4, 2))
    solve = lambda t, g: extend.drtrl_solve(
        prim, t, g, weights, {"has_bias": True}
    )
    plain = _names(solve, trace, g, cpu=False)
    tuned = _names(solve, trace, g, cpu=True)
    self.assertIn("dot_general", plain)
    self.assertIn("reduce_sum", plain)
    self.assertNotIn("dot_general", tuned)
    self.assertNotIn("reduce_sum", tuned)

  def test_switch_applies_at_trace_time(self):
    """The lowered program has the form that was on when it was traced."""
    x = jnp.ones((5, 3))
    with backend.tuning(True):
      tuned = jax.jit(lambda x: extend.sum_leading(x, 1)).lower(x).as_text()
    with backend.tuning(False):
      plain = jax.jit(lambda x: extend.sum_leading(x, 1)).lower(x).as_text()
    self.assertIn("reduce", plain)
    self.assertNotIn("reduce", tuned)


class MaterializeTest(absltest.TestCase):
  """``materialize`` is an identity that stays in the jaxpr as a barrier."""

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))
    self.x = _rand((3, 4), 6)

  def test_identity_under_jit(self):
    np.testing.assert_array_equal(jax.jit(backend.materialize)(self.x), self.x)
    self.assertIn(
        "optimization_barrier",
        test_util.primitive_names(jax.make_jaxpr(backend.materialize)(self.x)),
    )

  def test_identity_under_grad(self):
    loss = lambda x: jnp.sum(jnp.sin(backend.materialize(x)) * x)
    expected = jax.grad(lambda x: jnp.sum(jnp.sin(x) * x))(self.x)
    np.testing.assert_allclose(jax.grad(loss)(self.x), expected, rtol=1e-15)
    np.testing.assert_allclose(
        jax.jit(jax.grad(loss))(self.x), expected, rtol=1e-15
    )

  def test_identity_under_jvp_and_vmap(self):
    t = _rand((3, 4), 7)
    y, ty = jax.jvp(backend.materialize, (self.x,), (t,))
    np.testing.assert_array_equal(y, self.x)
    np.testing.assert_array_equal(ty, t)
    np.testing.assert_array_equal(
        jax.vmap(backend.materialize, in_axes=1, out_axes=1)(self.x), self.x
    )


if __name__ == "__main__":
  absltest.main()

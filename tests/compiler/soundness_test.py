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
"""No silent wrong gradient: each step is exact, or says it is not.

Every case here once gave a D-RTRL gradient far from BPTT while the compiler
called the step exact. Each now either equals the BPTT oracle in float64, or
makes the compiler flag the parameters it affects (``drtrl_exact`` false,
the reason in their status) and the learner emit one
:class:`haiku_etp.ApproximationWarning` naming them. Where a case is flagged,
the test also measures that the gradient really is off, so the flag is not
a false alarm.
"""

import warnings

from absl.testing import absltest
from absl.testing import parameterized
import haiku as hk
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import testing
from tests import test_util

_B, _I, _H = 2, 3, 4


def _param(name, shape, dtype):
  return hk.get_parameter(
      name, shape, dtype, init=hk.initializers.RandomNormal(0.7)
  )


def _recurrent(transition):
  """``v <- transition(v) + x W``: D-RTRL is exact iff ``transition`` keeps
  positions apart."""

  def step(x):
    w = _param("w", (_I, _H), x.dtype)
    v = haiku_etp.get_hidden_state("v", (x.shape[0], _H), x.dtype)
    v = transition(0.9 * v) + haiku_etp.dense(x, w)
    haiku_etp.set_hidden_state("v", v)
    return v

  return step


@jax.custom_jvp
def _centre(v):
  return v - jnp.mean(v, axis=-1, keepdims=True)


_centre.defjvp(
    lambda p, t: (_centre(p[0]), t[0] - jnp.mean(t[0], -1, keepdims=True))
)


@jax.custom_vjp
def _centre_vjp(v):
  return v - jnp.mean(v, axis=-1, keepdims=True)


_centre_vjp.defvjp(
    lambda v: (_centre_vjp(v), None),
    lambda _, g: (g - jnp.mean(g, -1, keepdims=True),),
)


@jax.custom_jvp
def _elementwise_rule_mixing_tangent(v):
  return jnp.tanh(v)


_elementwise_rule_mixing_tangent.defjvp(
    lambda p, t: (jnp.tanh(p[0]), jnp.cumsum(t[0], axis=-1))
)

# Shape-preserving functions that move values between positions.
_MIXING = (
    ("custom_jvp_mean_centre", _centre),
    ("custom_vjp_mean_centre", _centre_vjp),
    ("custom_jvp_rule_mixes", _elementwise_rule_mixing_tangent),
    # Not a projection: the plain mean-centring's missing term cancels
    # exactly (P^k = P), so it would pass as exact by accident.
    (
        "plain_partial_centre",
        lambda v: v - 0.5 * jnp.mean(v, -1, keepdims=True),
    ),
    ("cumsum", lambda v: jnp.cumsum(v, axis=-1)),
    ("sort", lambda v: jnp.sort(v, axis=-1)),
    ("roll", lambda v: jnp.roll(v, 1, axis=-1)),
    ("flip", lambda v: jnp.flip(v, axis=-1)),
    ("softmax", jax.nn.softmax),
    (
        "transpose_square",
        lambda v: v.reshape(_B, 2, 2).swapaxes(1, 2).reshape(_B, _H),
    ),
)  # pyformat: disable

# Position-wise functions, including opaque ones.
_ELEMENTWISE = (
    ("tanh", jnp.tanh),
    ("relu", jax.nn.relu),
    ("softplus", jax.nn.softplus),
    ("gelu", jax.nn.gelu),
    ("where_clip", lambda v: jnp.where(v > 0, jnp.clip(v, -1, 1), 0.5 * v)),
    ("surrogate_jvp", lambda v: v * test_util.spike_jvp(v)),
    ("surrogate_vjp", lambda v: v * test_util.spike_vjp(v)),
    ("optimization_barrier", lax.optimization_barrier),
)


def _run(step, x_shape=(_B, _I), learner="d_rtrl", num_steps=6):
  """``(compiled, grads, reference, warnings)`` for ``step`` in float64."""
  model, params, state, xs, ys = test_util.setup(step, x_shape, num_steps)
  make = dict(d_rtrl=haiku_etp.d_rtrl, es_d_rtrl=haiku_etp.es_d_rtrl)[learner]
  learner = make(model)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    _, lstate = learner.init(jax.random.PRNGKey(0), xs[0])
    result = jax.jit(learner.sequence_grad(test_util.mse))(
        params, lstate, None, xs, ys
    )
  compiled = learner.compile(params, lstate, None, xs[0])
  reference, _ = testing.bptt_grads(
      model, test_util.mse, params, state, None, xs, ys
  )
  approx = [
      w
      for w in caught
      if issubclass(w.category, haiku_etp.ApproximationWarning)
  ]
  return compiled, result.grads, reference, approx


def _errors(grads, reference):
  flat = lambda t: {
      jax.tree_util.keystr(p): v
      for p, v in jax.tree_util.tree_leaves_with_path(t)
  }
  ref = flat(reference)
  return {k: testing.relative_error(v, ref[k]) for k, v in flat(grads).items()}


class PositionsTest(parameterized.TestCase):
  """Shape says nothing about positions; what each primitive is decides."""

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  @parameterized.named_parameters(*_MIXING)
  def test_mixing_transition_is_cut_and_announced(self, fn):
    compiled, grads, reference, caught = _run(_recurrent(fn))
    self.assertFalse(compiled.drtrl_exact)
    (status,) = compiled.parameters
    self.assertEqual(status.path, "~/w")
    self.assertIn("cut_memory_path", status.reasons)
    self.assertLen(caught, 1)
    self.assertIn("~/w: cut_memory_path", str(caught[0].message))
    # Not a false alarm: the gradient is off.
    self.assertGreater(_errors(grads, reference)["['~']['w']"], 1e-3)

  @parameterized.named_parameters(*_ELEMENTWISE)
  def test_elementwise_transition_is_exact(self, fn):
    compiled, grads, reference, caught = _run(_recurrent(fn))
    self.assertTrue(compiled.drtrl_exact, compiled.report())
    self.assertEmpty(caught)
    test_util.assert_trees_close(grads, reference)

  def test_custom_vjp_input_of_another_shape_is_cut(self):
    # A custom_vjp whose Jacobian the learners can only read on its diagonal
    # must not pass a broadcast input's path as if it were diagonal.
    @jax.custom_vjp
    def scale(v, a):
      return v * a

    scale.defvjp(
        lambda v, a: (v * a, (v, a)),
        lambda r, g: (g * r[1], jnp.sum(g * r[0], -1, keepdims=True)),
    )

    def step(x):
      w = _param("w", (_I, _H), x.dtype)
      w_a = _param("w_a", (_I, 1), x.dtype)
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _H), x.dtype)
      a = haiku_etp.get_hidden_state("a", (x.shape[0], 1), x.dtype)
      haiku_etp.set_hidden_state("a", 0.5 * a + haiku_etp.dense(x, w_a))
      v = 0.9 * scale(v, jnp.tanh(a)) + haiku_etp.dense(x, w)
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled, grads, reference, caught = _run(step)
    status = {p.path: p for p in compiled.parameters}
    self.assertTrue(status["~/w"].exact)
    self.assertFalse(status["~/w_a"].exact)
    self.assertLen(caught, 1)
    errors = _errors(grads, reference)
    self.assertLess(errors["['~']['w']"], test_util.EXACT_RTOL)
    self.assertGreater(errors["['~']['w_a']"], 1e-3)


class RelationKeysTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  def test_shared_bias_gets_one_trace_per_relation(self):
    def step(x):
      w1 = _param("w1", (_I, _H), x.dtype)
      w2 = _param("w2", (_I, _H), x.dtype)
      b = _param("b", (_H,), x.dtype)
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _H), x.dtype)
      y = haiku_etp.dense(x, w1, b) + 2 * haiku_etp.dense(x**2, w2, b)
      v = 0.9 * v + jnp.tanh(y)
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled, grads, reference, caught = _run(step)
    self.assertEqual([r.key for r in compiled.relations], ["~/w1", "~/w2"])
    self.assertTrue(compiled.drtrl_exact)
    self.assertEmpty(caught)
    test_util.assert_trees_close(grads, reference)

  def test_keys_stable_when_state_is_added_elsewhere(self):
    def layer(x):
      return test_util.leaky(haiku_etp.Linear(_H, name="proj")(x))

    def one(x):
      return hk.to_module(layer)(name="a")(x)

    def two(x):
      extra = hk.to_module(lambda x: test_util.leaky(haiku_etp.Linear(_H)(x)))
      return hk.to_module(layer)(name="a")(x) + extra(name="b")(x)

    def labels(step):
      learner = haiku_etp.d_rtrl(hk.transform_with_state(step))
      x = jnp.ones((_B, _I))
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, state = learner.init(jax.random.PRNGKey(0), x)
      return set(learner.traces(state))

    first, second = labels(one), labels(two)
    self.assertEqual(first, {"a/proj/w:weight@a", "a/proj/w:bias@a"})
    self.assertTrue(first <= second, (first, second))


class ElementwiseFnTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("softmax", jax.nn.softmax, "reduce_max"),
      ("cumsum", lambda w: jnp.cumsum(w), "cumsum"),
      ("centre", _centre, "reduce_sum"),
  )
  def test_mixing_fn_raises(self, fn, op):
    with self.assertRaisesRegex(
        ValueError, f"fn must act position by position.*{op}"
    ):
      haiku_etp.elementwise(jnp.ones(4), fn)

  @parameterized.named_parameters(
      ("exp", jnp.exp),
      ("sigmoid", jax.nn.sigmoid),
      ("decay", lambda t: jnp.exp(-1.0 / t)),
  )
  def test_elementwise_fn_passes(self, fn):
    np.testing.assert_allclose(
        haiku_etp.elementwise(jnp.full(4, 2.0), fn), fn(jnp.full(4, 2.0))
    )


class MemoryOutsideHiddenStateTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  def test_parameter_dependent_ordinary_state_is_announced(self):
    def step(x):
      w = _param("w", (_I, _H), x.dtype)
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _H), x.dtype)
      m = hk.get_state("m", (x.shape[0], _H), x.dtype, init=jnp.zeros)
      v = 0.9 * v + haiku_etp.dense(x, w)
      m = 0.5 * m + v
      haiku_etp.set_hidden_state("v", v)
      hk.set_state("m", m)
      return m

    compiled, grads, reference, caught = _run(step)
    self.assertFalse(compiled.drtrl_exact)
    (d,) = [d for d in compiled.diagnostics if d.code == "untraced_memory"]
    self.assertEqual(d.level, "warning")
    self.assertEqual(d.parameters, ("~/w",))
    self.assertIn("get_hidden_state", d.message)
    self.assertLen(caught, 1)
    self.assertGreater(_errors(grads, reference)["['~']['w']"], 1e-3)

  def test_counters_are_carried_quietly(self):
    def step(x):
      n = hk.get_state("n", (), jnp.int32, init=jnp.zeros)
      t = hk.get_state("t", (), x.dtype, init=jnp.zeros)
      hk.set_state("n", n + 1)
      hk.set_state("t", t + 1.0)
      return test_util.leaky(haiku_etp.Linear(_H)(x)) * t

    compiled, grads, reference, caught = _run(step)
    self.assertTrue(compiled.drtrl_exact, compiled.report())
    self.assertEqual(
        [d.code for d in compiled.diagnostics], ["carried_state"] * 2
    )
    self.assertEmpty(caught)
    test_util.assert_trees_close(grads, reference)


class SameStepCutTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  def test_relation_feeding_a_group_twice_is_announced(self):
    # y reaches v directly and through a second ETP op in the same step; the
    # trace of w follows only the direct path.
    def step(x):
      w = _param("w", (_I, _H), x.dtype)
      w2 = _param("w2", (_H, _H), x.dtype)
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _H), x.dtype)
      y = haiku_etp.dense(x, w)
      v = 0.9 * v + y + haiku_etp.dense(y, w2)
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled, grads, reference, caught = _run(step)
    status = {p.path: p for p in compiled.parameters}
    self.assertEqual(status["~/w"].reasons, ("relation_through_cut",))
    self.assertTrue(status["~/w2"].exact)
    self.assertLen(caught, 1)
    errors = _errors(grads, reference)
    self.assertGreater(errors["['~']['w']"], 1e-3)
    self.assertLess(errors["['~']['w2']"], test_util.EXACT_RTOL)


class AlignmentTest(absltest.TestCase):
  """A per-channel leak must line up with the trailing axes, or be flagged."""

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  def _step(self, channels_first):
    def step(x):  # x: (B, 4, 4), positions by channels.
      tau = hk.get_parameter(
          "tau", (4,), x.dtype, init=hk.initializers.RandomUniform(0.5, 0.9)
      )
      y = haiku_etp.Linear(4)(x)
      v = haiku_etp.get_hidden_state("v", x.shape, x.dtype)
      leak = haiku_etp.elementwise(tau)
      # Square on purpose: a leak on axis 1 broadcasts as well as one on the
      # trailing axis, but lines up with other positions.
      leak = leak[:, None] if channels_first else leak
      v = leak * v + y
      haiku_etp.set_hidden_state("v", v)
      return v.reshape(x.shape[0], -1)

    return step

  def test_leading_axis_leak_is_flagged(self):
    compiled, grads, reference, caught = _run(self._step(True), (_B, 4, 4))
    status = {p.path: p for p in compiled.parameters}
    self.assertIn("unaligned_relation", status["~/tau"].reasons)
    self.assertLen(caught, 1)
    self.assertGreater(_errors(grads, reference)["['~']['tau']"], 1e-3)

  def test_trailing_axis_leak_is_exact(self):
    compiled, grads, reference, _ = _run(self._step(False), (_B, 4, 4))
    status = {p.path: p for p in compiled.parameters}
    self.assertTrue(status["~/tau"].exact, compiled.report())
    errors = _errors(grads, reference)
    self.assertLess(errors["['~']['tau']"], test_util.EXACT_RTOL)


class ApproximationWarningTest(absltest.TestCase):

  def test_once_per_learner_and_input_shape(self):
    learner = haiku_etp.d_rtrl(hk.transform_with_state(_recurrent(_centre)))
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      params, state = learner.init(jax.random.PRNGKey(0), jnp.ones((_B, _I)))
      fn = jax.jit(learner.sequence_grad(test_util.mse))
      fn(params, state, None, jnp.ones((3, _B, _I)), jnp.ones((3, _B, _H)))
      fn(params, state, None, jnp.ones((5, _B, _I)), jnp.ones((5, _B, _H)))
      _, other = learner.init(jax.random.PRNGKey(0), jnp.ones((5, _I)))
    approx = [w for w in caught if w.category is haiku_etp.ApproximationWarning]
    self.assertLen(approx, 2)  # batch 2, then batch 5
    self.assertIn("1 of 1 parameters", str(approx[0].message))
    self.assertIn("input (2, 3)", str(approx[0].message))
    self.assertIn("input (5, 3)", str(approx[1].message))
    self.assertEqual(approx[0].filename, __file__)

  def test_es_d_rtrl_says_its_trace_is_factorised(self):
    learner = haiku_etp.es_d_rtrl(
        hk.transform_with_state(
            lambda x: test_util.leaky(haiku_etp.Linear(_H)(x))
        ),
        decay=0.5,
    )
    with testing.expect_warning(
        haiku_etp.ApproximationWarning, "es_d_rtrl_factorised_trace"
    ):
      learner.init(jax.random.PRNGKey(0), jnp.ones((_B, _I)))


if __name__ == "__main__":
  absltest.main()

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
"""Tests of the step compiler: groups, relations, diagnostics and the report.

The structure found by :func:`haiku_etp.compiler.compile_step` is checked on small
Haiku steps written here; where it matters for the gradients (weights computed
from parameters, custom derivatives, nested ``jit`` and ``checkpoint``) the
learners' gradients are compared with BPTT in float64 on models where D-RTRL
is exact.
"""

import warnings

from absl.testing import absltest
from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import testing

_B, _I, _O = 2, 4, 3
_T = 5
_RTOL = 1e-10


# Surrogate spike functions: a Heaviside step forward, 1 / (1 + |v|)^2
# backward. Without the custom rule the derivative would be zero.


def _surrogate_grad(v):
  return 1.0 / (1.0 + jnp.abs(v)) ** 2


def _heaviside(v):
  return (v > 0).astype(v.dtype)


@jax.custom_jvp
def _spike_jvp(v):
  return _heaviside(v)


@_spike_jvp.defjvp
def _spike_jvp_rule(primals, tangents):
  (v,), (v_dot,) = primals, tangents
  return _spike_jvp(v), _surrogate_grad(v) * v_dot


@jax.custom_vjp
def _spike_vjp(v):
  return _heaviside(v)


def _spike_vjp_fwd(v):
  return _heaviside(v), v


def _spike_vjp_bwd(v, g):
  return (_surrogate_grad(v) * g,)


_spike_vjp.defvjp(_spike_vjp_fwd, _spike_vjp_bwd)


class _Linear(hk.Module):
  """``x @ w + b`` through the ETP dense op."""

  def __init__(self, output_size, with_bias=True, name=None):
    super().__init__(name=name)
    self.output_size = output_size
    self.with_bias = with_bias

  def __call__(self, x):
    fan_in = x.shape[-1]
    w = hk.get_parameter(
        "w",
        (fan_in, self.output_size),
        x.dtype,
        init=hk.initializers.TruncatedNormal(1.0 / np.sqrt(fan_in)),
    )
    b = None
    if self.with_bias:
      b = hk.get_parameter(
          "b",
          (self.output_size,),
          x.dtype,
          init=hk.initializers.RandomNormal(0.1),
      )
    return haiku_etp.dense(x, w, b)


class _Leaky(hk.Module):
  """``v_t = decay * v_tm1 + linear(x_t)``: the exact D-RTRL case."""

  def __init__(self, size=_O, decay=0.9, name=None):
    super().__init__(name=name)
    self.size = size
    self.decay = decay
    self.linear = _Linear(size, name="linear")

  def __call__(self, x):
    v = haiku_etp.get_hidden_state("v", (x.shape[0], self.size), x.dtype)
    v = self.decay * v + self.linear(x)
    haiku_etp.set_hidden_state("v", v)
    return v


class _LIF(hk.Module):
  """LIF neuron with a current synapse and reset by subtraction."""

  def __init__(self, size=_O, spike=_spike_jvp, name=None):
    super().__init__(name=name)
    self.size = size
    self.spike = spike
    self.linear = _Linear(size, name="linear")

  def __call__(self, x):
    shape = (x.shape[0], self.size)
    # Declared v first: the group's state order must not depend on it.
    v = haiku_etp.get_hidden_state("v", shape, x.dtype)
    i = haiku_etp.get_hidden_state("i", shape, x.dtype)
    i = 0.8 * i + self.linear(x)
    v = 0.9 * v + i
    s = self.spike(v - 0.5)
    haiku_etp.set_hidden_state("i", i)
    haiku_etp.set_hidden_state("v", v - s)
    return s


class _ALIF(hk.Module):
  """Adaptive threshold: v and a interact only through the spike."""

  def __init__(self, name=None):
    super().__init__(name=name)
    self.linear = _Linear(_O, name="linear")

  def __call__(self, x):
    shape = (x.shape[0], _O)
    v = haiku_etp.get_hidden_state("v", shape, x.dtype)
    a = haiku_etp.get_hidden_state("a", shape, x.dtype)
    v = 0.9 * v + self.linear(x)
    s = _spike_jvp(v - 0.5 - a)
    haiku_etp.set_hidden_state("v", v - s)
    haiku_etp.set_hidden_state("a", 0.95 * a + s)
    return s


def _leaky_step(x):
  return _Leaky(name="leaky")(x)


def _leaky_readout_step(x):
  v = _Leaky(name="leaky")(x)
  return _Linear(2, name="readout")(v)


def _lif_step(x):
  return _LIF(name="lif")(x)


def _loss(out, y):
  return jnp.sum(out * y)


def _data(dtype, out_size=_O, num_steps=_T):
  kx, ky = jax.random.split(jax.random.PRNGKey(7))
  xs = jax.random.normal(kx, (num_steps, _B, _I), dtype)
  ys = jax.random.normal(ky, (num_steps, _B, out_size), dtype)
  return xs, ys


def _compile(step, x=None, **kwargs):
  """Inits ``step`` and compiles it on ``x`` (default ``(B, I)`` ones)."""
  model = hk.transform_with_state(step)
  x = jnp.ones((_B, _I)) if x is None else x
  params, state = model.init(jax.random.PRNGKey(0), x)
  return haiku_etp.compiler.compile_step(
      model, params, state, None, x, **kwargs
  )


def _codes(compiled, level=None):
  return [
      d.code for d in compiled.diagnostics if level is None or d.level == level
  ]


def _learner_grads(make_learner, step, xs, ys):
  """Sequence gradients of ``sum_t loss(out_t, y_t)`` and the params."""
  learner = make_learner(hk.transform_with_state(step))
  params, state = learner.init(jax.random.PRNGKey(0), xs[0])
  grads = learner.sequence_grad(_loss)(params, state, None, xs, ys).grads
  return params, grads


def _unrolled_grads(step, params, xs, ys):
  """``jax.grad`` of the same loss through ``model.apply`` in a Python loop."""
  model = hk.transform_with_state(step)
  _, state0 = model.init(jax.random.PRNGKey(0), xs[0])

  def total(p):
    state, loss = state0, 0.0
    for x, y in zip(xs, ys):
      out, state = model.apply(p, state, None, x)
      loss = loss + _loss(out, y)
    return loss

  return jax.grad(total)(params)


def _assert_trees_close(actual, expected):
  chex.assert_trees_all_close(actual, expected, rtol=_RTOL, atol=_RTOL)


def _assert_nonzero(tree):
  for leaf in jax.tree_util.tree_leaves(tree):
    assert np.any(np.asarray(leaf) != 0), "a gradient leaf is all zeros"


class GroupsTest(absltest.TestCase):
  """Hidden states are grouped by per-position interaction and shape."""

  def test_single_leaky_integrator(self):
    compiled = _compile(_leaky_step)
    self.assertLen(compiled.groups, 1)
    group = compiled.groups[0]
    self.assertIsInstance(group, haiku_etp.compiler.HiddenGroup)
    self.assertEqual(group.name, "leaky")
    self.assertEqual(group.states, ("leaky/v",))
    self.assertEqual(group.num_states, 1)
    self.assertEqual(group.shape, (_B, _O))
    self.assertEqual(np.dtype(group.dtype), np.float32)

  def test_lif_with_current_synapse_is_one_group(self):
    compiled = _compile(_lif_step)
    self.assertLen(compiled.groups, 1)
    group = compiled.groups[0]
    self.assertEqual(group.name, "lif")
    self.assertEqual(group.states, ("lif/i", "lif/v"))
    self.assertEqual(group.num_states, 2)
    self.assertEqual(group.shape, (_B, _O))
    self.assertEqual(compiled.group_leaves(0), compiled.hidden)

  def test_same_step_chain_across_modules_joins(self):
    def step(x):
      i = haiku_etp.get_hidden_state("i", (x.shape[0], _O), x.dtype)
      i = 0.8 * i + _Linear(_O)(x)
      haiku_etp.set_hidden_state("i", i)
      return i

    def mem(i):
      v = haiku_etp.get_hidden_state("v", i.shape, i.dtype)
      v = 0.9 * v + i
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled = _compile(
        lambda x: hk.to_module(mem)(name="mem")(
            hk.to_module(step)(name="syn")(x)
        )
    )
    self.assertLen(compiled.groups, 1)
    group = compiled.groups[0]
    self.assertEqual(group.states, ("mem/v", "syn/i"))
    self.assertEqual(group.name, "mem/v+syn/i")
    self.assertEqual(_codes(compiled, "warning"), [])

  def test_spike_reset_chain_joins(self):
    compiled = _compile(lambda x: _ALIF(name="alif")(x))
    self.assertLen(compiled.groups, 1)
    self.assertEqual(compiled.groups[0].states, ("alif/a", "alif/v"))
    self.assertEqual(_codes(compiled, "warning"), [])

  def test_separate_modules_of_different_shapes(self):
    def step(x):
      return (
          _Leaky(size=3, name="a")(x),
          _Leaky(size=5, name="b")(x),
      )

    compiled = _compile(step)
    self.assertLen(compiled.groups, 2)
    by_name = {g.name: g for g in compiled.groups}
    self.assertEqual(set(by_name), {"a", "b"})
    self.assertEqual(by_name["a"].states, ("a/v",))
    self.assertEqual(by_name["a"].shape, (_B, 3))
    self.assertEqual(by_name["b"].states, ("b/v",))
    self.assertEqual(by_name["b"].shape, (_B, 5))

  def test_unrelated_states_of_one_shape_stay_apart(self):
    class Two(hk.Module):

      def __call__(self, x):
        shape = (x.shape[0], _O)
        p = haiku_etp.get_hidden_state("p", shape, x.dtype)
        q = haiku_etp.get_hidden_state("q", shape, x.dtype)
        p = 0.9 * p + _Linear(_O, name="lin_p")(x)
        q = 0.5 * q + _Linear(_O, name="lin_q")(x)
        haiku_etp.set_hidden_state("p", p)
        haiku_etp.set_hidden_state("q", q)
        return p + q

    compiled = _compile(lambda x: Two(name="two")(x))
    self.assertLen(compiled.groups, 2)
    self.assertCountEqual(
        [g.states for g in compiled.groups], [("two/p",), ("two/q",)]
    )
    names = [g.name for g in compiled.groups]
    self.assertLen(set(names), 2, f"group names must be unique: {names}")
    for g in compiled.groups:
      self.assertEqual(g.num_states, 1)
    # Each relation feeds only its own state's group.
    fed = {
        r.key: [compiled.groups[g].states for g in r.groups]
        for r in compiled.relations
    }
    self.assertEqual(fed["two/lin_p/w"], [("two/p",)])
    self.assertEqual(fed["two/lin_q/w"], [("two/q",)])


class RelationsTest(absltest.TestCase):
  """ETP ops, the parameters behind their weights, and the groups they feed."""

  def test_dense_weights_traced_to_nested_parameter_paths(self):
    class Cell(hk.Module):

      def __init__(self, name=None):
        super().__init__(name=name)
        self.linear = _Linear(_O, name="linear")

      def __call__(self, x):
        v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
        v = 0.9 * v + self.linear(x)
        haiku_etp.set_hidden_state("v", v)
        return v

    compiled = _compile(lambda x: Cell(name="lif")(x))
    self.assertLen(compiled.relations, 1)
    rel = compiled.relations[0]
    self.assertIsInstance(rel, haiku_etp.compiler.Relation)
    self.assertEqual(rel.key, "lif/~/linear/w")
    self.assertEqual(
        rel.weights,
        {"weight": ("lif/~/linear/w",), "bias": ("lif/~/linear/b",)},
    )
    self.assertIs(rel.primitive, haiku_etp.extend.etp_batched_dense_p)
    self.assertEqual(rel.x_shape, (_B, _I))
    self.assertEqual(rel.y_shape, (_B, _O))
    self.assertEqual(rel.groups, (0,))
    self.assertEqual(compiled.non_temporal, [])
    self.assertTrue(compiled.drtrl_exact)

  def test_conv_relation(self):
    def step(x):
      w = hk.get_parameter("w", (3, _I, _O), x.dtype, init=jnp.ones)
      b = hk.get_parameter("b", (_O,), x.dtype, init=jnp.zeros)
      y = haiku_etp.conv(
          x, w, b, padding="SAME", dimension_numbers=("NWC", "WIO", "NWC")
      )
      v = haiku_etp.get_hidden_state("v", y.shape, x.dtype)
      v = 0.9 * v + y
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled = _compile(
        lambda x: hk.to_module(step)(name="conv")(x), jnp.ones((_B, 6, _I))
    )
    self.assertLen(compiled.relations, 1)
    rel = compiled.relations[0]
    self.assertIs(rel.primitive, haiku_etp.extend.etp_conv_p)
    self.assertEqual(rel.key, "conv/w")
    self.assertEqual(rel.weights, {"weight": ("conv/w",), "bias": ("conv/b",)})
    self.assertEqual(rel.x_shape, (_B, 6, _I))
    self.assertEqual(rel.y_shape, (_B, 6, _O))
    self.assertEqual(rel.groups, (0,))
    self.assertEqual(compiled.groups[0].shape, (_B, 6, _O))

  def test_elementwise_relation(self):
    def step(x):
      tau = hk.get_parameter("tau", (_O,), x.dtype, init=jnp.ones)
      decay = haiku_etp.elementwise(tau, lambda t: jnp.exp(-1.0 / t))
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      v = decay * v + _Linear(_O, name="linear")(x)
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled = _compile(lambda x: hk.to_module(step)(name="cell")(x))
    rels = {r.key: r for r in compiled.relations}
    self.assertEqual(set(rels), {"cell/tau", "cell/linear/w"})
    tau = rels["cell/tau"]
    self.assertIs(tau.primitive, haiku_etp.extend.etp_elementwise_p)
    self.assertEqual(tau.weights, {"weight": ("cell/tau",)})
    self.assertIsNone(tau.x_shape)
    self.assertEqual(tau.y_shape, (_O,))
    self.assertEqual(tau.groups, (0,))
    self.assertTrue(compiled.drtrl_exact)

  def test_weight_computed_from_parameter(self):
    def step(x):
      p = hk.get_parameter("p", (_O, _I), jnp.float16, init=jnp.ones)
      w = 2.0 * p.astype(x.dtype).T
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      v = 0.9 * v + haiku_etp.dense(x, w)
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled = _compile(step)
    self.assertLen(compiled.relations, 1)
    self.assertEqual(compiled.relations[0].weights, {"weight": ("~/p",)})
    self.assertEqual(compiled.relations[0].key, "~/p")
    self.assertEqual(compiled.non_temporal, [])
    self.assertNotIn("untraced_parameter", _codes(compiled))

  def test_repeated_parameter_gets_unique_relation_names(self):
    def step(x):
      w = hk.get_parameter("w", (_I, _O), x.dtype, init=jnp.ones)
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      v = 0.9 * v + haiku_etp.dense(x, w) + haiku_etp.dense(x, 2.0 * w)
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled = _compile(step)
    self.assertEqual([r.key for r in compiled.relations], ["~/w", "~/w#2"])
    for r in compiled.relations:
      self.assertEqual(r.weights, {"weight": ("~/w",)})

  def test_weight_from_parameter_gradients_match_bptt(self):
    def step(x):
      p = hk.get_parameter(
          "p", (_O, _I), x.dtype, init=hk.initializers.RandomNormal()
      )
      q = hk.get_parameter(
          "q", (_O,), x.dtype, init=hk.initializers.RandomNormal()
      )
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      y = haiku_etp.dense(x, 2.0 * p.T, jnp.tanh(q).astype(x.dtype))
      v = 0.9 * v + y
      haiku_etp.set_hidden_state("v", v)
      return v

    with jax.enable_x64(True):
      xs, ys = _data(jnp.float64)
      compiled = _compile(step, xs[0])
      self.assertEqual(
          compiled.relations[0].weights, {"weight": ("~/p",), "bias": ("~/q",)}
      )
      _, expected = _learner_grads(haiku_etp.bptt, step, xs, ys)
      _, actual = _learner_grads(haiku_etp.d_rtrl, step, xs, ys)
      _assert_nonzero(expected)
      _assert_trees_close(actual, expected)

  def test_readout_is_non_temporal(self):
    compiled = _compile(_leaky_readout_step)
    self.assertCountEqual(compiled.non_temporal, ["readout/b", "readout/w"])
    rels = {r.key: r for r in compiled.relations}
    self.assertEqual(rels["readout/w"].groups, ())
    self.assertEqual(rels["leaky/~/linear/w"].groups, (0,))
    self.assertEqual(_codes(compiled, "warning"), [])
    self.assertTrue(compiled.drtrl_exact)

  def test_readout_gradients_match_bptt(self):
    with jax.enable_x64(True):
      xs, ys = _data(jnp.float64, out_size=2)
      _, expected = _learner_grads(haiku_etp.bptt, _leaky_readout_step, xs, ys)
      _, actual = _learner_grads(haiku_etp.d_rtrl, _leaky_readout_step, xs, ys)
      _assert_nonzero(expected)
      _assert_trees_close(actual, expected)

  def test_untraced_parameter_warns(self):
    def step(x):
      decay = hk.get_parameter("decay", (_O,), x.dtype, init=jnp.ones)
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      v = decay * v + _Linear(_O)(x)
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled = _compile(lambda x: hk.to_module(step)(name="cell")(x))
    found = [d for d in compiled.diagnostics if d.code == "untraced_parameter"]
    self.assertLen(found, 1)
    self.assertEqual(found[0].level, "warning")
    self.assertIn("cell/decay", found[0].message)
    self.assertNotIn("cell/decay", compiled.non_temporal)
    self.assertFalse(compiled.drtrl_exact)

  def test_relation_through_cut_warns(self):
    def step(x):
      h = _Linear(_O, name="first")(x)
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      v = 0.9 * v + _Linear(_O, name="second")(h)
      haiku_etp.set_hidden_state("v", v)
      return v

    # A relation with no group of its own feeding a group through another
    # ETP op: a cross-group trace carries it (exact); without the budget
    # for it, the cut is a warning.
    for budget, level, exact in ((None, "info", True), (0, "warning", False)):
      with self.subTest(max_cross_bytes=budget):
        compiled = _compile(step, max_cross_bytes=budget)
        rels = {r.key: r for r in compiled.relations}
        self.assertEqual(rels["first/w"].groups, ())
        self.assertEqual(rels["second/w"].groups, (0,))
        found = [
            d for d in compiled.diagnostics if d.code == "relation_through_cut"
        ]
        self.assertLen(found, 1)
        self.assertEqual(found[0].level, level)
        self.assertIn("first/w", found[0].message)
        self.assertNotIn("first/w", compiled.non_temporal)
        self.assertEqual(compiled.drtrl_exact, exact)

  def test_recurrent_weight_cuts_memory_path(self):
    def step(x):
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      v = 0.9 * v + _Linear(_O, name="w_in")(x)
      v = v + _Linear(_O, with_bias=False, name="w_rec")(v)
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled = _compile(lambda x: hk.to_module(step)(name="rnn")(x))
    self.assertLen(compiled.groups, 1)
    found = [d for d in compiled.diagnostics if d.code == "cut_memory_path"]
    self.assertLen(found, 1)
    self.assertEqual(found[0].level, "warning")
    self.assertIn("rnn/v", found[0].message)
    self.assertFalse(compiled.drtrl_exact)

  def test_ordinary_state_is_carried(self):
    def step(x):
      count = hk.get_state("count", (), jnp.int32, init=jnp.zeros)
      hk.set_state("count", count + 1)
      return _Leaky(name="leaky")(x)

    compiled = _compile(lambda x: hk.to_module(step)(name="top")(x))
    found = [d for d in compiled.diagnostics if d.code == "carried_state"]
    self.assertLen(found, 1)
    self.assertEqual(found[0].level, "info")
    self.assertIn("top/count", found[0].message)
    self.assertEqual([g.states for g in compiled.groups], [("top/leaky/v",)])
    self.assertTrue(compiled.drtrl_exact)


def _lif_vjp_step(x):
  return _LIF(spike=_spike_vjp, name="lif")(x)


def _jax_nn_step(activation):
  def step(x):
    v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
    v = 0.9 * v + activation(_Linear(_O)(x))
    haiku_etp.set_hidden_state("v", v)
    return v

  return step


def _alif_step(x):
  return _ALIF(name="alif")(x)


def _nested_jit_step(x):
  v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
  w = hk.get_parameter(
      "w", (_I, _O), x.dtype, init=hk.initializers.RandomNormal()
  )
  inner = jax.jit(lambda x, w: jax.jit(haiku_etp.dense)(x, w))
  v = jax.jit(lambda v, y: 0.9 * v + y)(v, inner(x, w))
  haiku_etp.set_hidden_state("v", v)
  return v


def _checkpoint_step(x):
  v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
  w = hk.get_parameter(
      "w", (_I, _O), x.dtype, init=hk.initializers.RandomNormal()
  )
  v = jax.checkpoint(lambda v, x, w: 0.9 * v + haiku_etp.dense(x, w))(v, x, w)
  haiku_etp.set_hidden_state("v", v)
  return v


class UserFunctionsTest(parameterized.TestCase):
  """Custom derivatives, ``jax.nn``, nested ``jit`` and ``checkpoint``."""

  @parameterized.named_parameters(
      ("custom_jvp", _lif_step),
      ("custom_vjp", _lif_vjp_step),
      ("relu", _jax_nn_step(jax.nn.relu)),
      ("sigmoid", _jax_nn_step(jax.nn.sigmoid)),
      ("softplus", _jax_nn_step(jax.nn.softplus)),
      ("nested_jit", _nested_jit_step),
      ("checkpoint", _checkpoint_step),
  )
  def test_compiles_to_one_exact_group(self, step):
    compiled = _compile(step)
    self.assertLen(compiled.groups, 1)
    self.assertLen(compiled.relations, 1)
    self.assertEqual(compiled.relations[0].groups, (0,))
    self.assertTrue(compiled.drtrl_exact, compiled.report())

  @parameterized.named_parameters(
      ("nested_jit", _nested_jit_step),
      ("checkpoint", _checkpoint_step),
  )
  def test_calls_are_inlined(self, step):
    compiled = _compile(step)
    names = {node.prim.name for node in compiled.program.nodes}
    self.assertEmpty(
        names & {"jit", "pjit", "closed_call", "remat", "checkpoint"}
    )
    self.assertTrue(any(node.etp for node in compiled.program.nodes))

  @parameterized.named_parameters(
      ("custom_jvp", haiku_etp.bptt, _spike_jvp),
      ("custom_vjp", haiku_etp.bptt, _spike_vjp),
      ("custom_jvp_d_rtrl", haiku_etp.d_rtrl, _spike_jvp),
      ("custom_vjp_d_rtrl", haiku_etp.d_rtrl, _spike_vjp),
  )
  def test_surrogate_derivative_kept_one_step(self, make_learner, spike):
    # One step, s = H(x @ w + b - 0.5), loss = sum(s * y):
    # dL/dw = x^T (y * sg'(v - 0.5)) with the surrogate sg', never zero.
    def step(x):
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      v = 0.9 * v + _Linear(_O, name="linear")(x)
      s = spike(v - 0.5)
      haiku_etp.set_hidden_state("v", v - s)
      return s

    with jax.enable_x64(True):
      xs, ys = _data(jnp.float64, num_steps=1)
      params, grads = _learner_grads(make_learner, step, xs, ys)
      x, y = xs[0], ys[0]
      pre = x @ params["linear"]["w"] + params["linear"]["b"] - 0.5
      signal = y * _surrogate_grad(pre)
      np.testing.assert_allclose(grads["linear"]["w"], x.T @ signal, rtol=_RTOL)
      np.testing.assert_allclose(
          grads["linear"]["b"], signal.sum(0), rtol=_RTOL
      )
      _assert_nonzero(grads)

  @parameterized.named_parameters(
      ("lif_custom_jvp", _lif_step),
      ("lif_custom_vjp", _lif_vjp_step),
      ("alif_custom_jvp", _alif_step),
      ("relu", _jax_nn_step(jax.nn.relu)),
      ("sigmoid", _jax_nn_step(jax.nn.sigmoid)),
      ("softplus", _jax_nn_step(jax.nn.softplus)),
      ("nested_jit", _nested_jit_step),
      ("checkpoint", _checkpoint_step),
  )
  def test_d_rtrl_equals_bptt(self, step):
    with jax.enable_x64(True):
      xs, ys = _data(jnp.float64)
      params, expected = _learner_grads(haiku_etp.bptt, step, xs, ys)
      _, actual = _learner_grads(haiku_etp.d_rtrl, step, xs, ys)
      unrolled = _unrolled_grads(step, params, xs, ys)
      _assert_nonzero(unrolled)
      _assert_trees_close(expected, unrolled)
      _assert_trees_close(actual, expected)


def _hidden_leaky(weight_fn):
  """A leaky step whose dense weight is ``weight_fn(x)``."""

  def step(x):
    v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
    v = 0.9 * v + haiku_etp.dense(x, weight_fn(x))
    haiku_etp.set_hidden_state("v", v)
    return v

  return step


class ErrorsTest(parameterized.TestCase):
  """Steps the learners cannot train raise CompileError early."""

  def test_no_hidden_state(self):
    def step(x):
      count = hk.get_state("count", (), jnp.int32, init=jnp.zeros)
      hk.set_state("count", count + 1)
      return _Linear(_O)(x)

    with self.assertRaisesRegex(haiku_etp.CompileError, "no hidden state"):
      _compile(step)

  def test_no_state_at_all(self):
    with self.assertRaisesRegex(haiku_etp.CompileError, "no hidden state"):
      _compile(lambda x: _Linear(_O)(x))

  @parameterized.named_parameters(
      ("input", lambda x: jnp.tile(x[0][:, None], (1, _O)), "input"),
      (
          "state",
          lambda x: hk.get_state("w", (_I, _O), x.dtype, init=jnp.ones),
          "state",
      ),
      ("constant", lambda x: jnp.ones((_I, _O), x.dtype), "constant"),
      ("numpy_constant", lambda x: np.ones((_I, _O), np.float32), "constant"),
  )
  def test_weight_not_a_parameter(self, weight_fn, source):
    with self.assertRaisesRegex(
        haiku_etp.CompileError, f"not a parameter.*{source}"
    ):
      _compile(_hidden_leaky(weight_fn))

  def test_weight_from_written_state(self):
    def weight(x):
      w = hk.get_state("w", (_I, _O), x.dtype, init=jnp.ones)
      hk.set_state("w", 0.5 * w)
      return w

    with self.assertRaisesRegex(
        haiku_etp.CompileError, "comes from state '~/w', which the step writes"
    ):
      _compile(_hidden_leaky(weight))

  def test_parameter_and_hidden_state_share_a_name(self):
    # Legal Haiku: parameters and state live in separate trees.
    def step(x):
      v_param = hk.get_parameter("v", (_O,), x.dtype, init=jnp.ones)
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      v = 0.9 * v + haiku_etp.dense(x, jnp.ones((_I, _O), x.dtype) * v_param)
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled = _compile(step)
    self.assertEqual(compiled.groups[0].states, ("~/v",))
    self.assertEqual(compiled.relations[0].weights, {"weight": ("~/v",)})
    self.assertTrue(compiled.drtrl_exact)

  def test_hidden_state_read_but_never_written(self):
    def step(x):
      u = haiku_etp.get_hidden_state("u", (x.shape[0], _O), x.dtype)
      return _Leaky(name="leaky")(x) + u

    with self.assertRaisesRegex(
        haiku_etp.CompileError, "'~/u' is read but never written"
    ):
      _compile(step)

  def test_hidden_state_written_under_a_typo(self):
    # set_hidden_state of an undeclared name fails at the call.
    def step(x):
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      haiku_etp.set_hidden_state("vv", 0.9 * v)
      return v

    with self.assertRaisesRegex(
        ValueError, r"set_hidden_state\('vv'\).*no state 'vv' was declared"
    ):
      _compile(step)

  def test_hidden_state_written_but_never_read(self):
    def step(x):
      haiku_etp.get_hidden_state("w", (x.shape[0], _O), x.dtype)
      haiku_etp.set_hidden_state("w", _Linear(_O, name="lin")(x))
      return _Leaky(name="leaky")(x)

    with self.assertRaisesRegex(
        haiku_etp.CompileError, "'~/w' is written but never read"
    ):
      _compile(step)

  def test_etp_op_inside_scan_is_unrolled(self):
    def weight_user(x, w):
      y, _ = jax.lax.scan(
          lambda c, _: (c + haiku_etp.dense(x, w), None),
          jnp.zeros((x.shape[0], _O), x.dtype),
          None,
          length=2,
      )
      return y

    compiled = _compile(self._with_weight_user(weight_user))
    # One relation per iteration, on the same parameter.
    self.assertEqual([r.key for r in compiled.relations], ["~/w", "~/w#2"])

  def test_etp_op_inside_cond_is_a_relation(self):
    # Every branch runs, a select keeps the taken one (control_flow_test
    # checks the gradients against BPTT).
    def weight_user(x, w):
      return jax.lax.cond(
          x[0, 0] > 0,
          lambda: haiku_etp.dense(x, w),
          lambda: jnp.zeros((x.shape[0], _O), x.dtype),
      )

    compiled = _compile(self._with_weight_user(weight_user))
    self.assertEqual([r.key for r in compiled.relations], ["~/w"])
    self.assertIn("select_n", [n.prim.name for n in compiled.program.nodes])

  def test_etp_op_inside_while_loop(self):
    def weight_user(x, w):
      def body(carry):
        y, n = carry
        return y + haiku_etp.dense(x, w), n + 1

      init = (jnp.zeros((x.shape[0], _O), x.dtype), 0)
      return jax.lax.while_loop(lambda c: c[1] < 2, body, init)[0]

    with self.assertRaisesRegex(haiku_etp.CompileError, "inside 'while'"):
      _compile(self._with_weight_user(weight_user))

  def _with_weight_user(self, weight_user):
    def step(x):
      w = hk.get_parameter("w", (_I, _O), x.dtype, init=jnp.ones)
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      v = 0.9 * v + weight_user(x, w)
      haiku_etp.set_hidden_state("v", v)
      return v

    return step

  @parameterized.named_parameters(
      ("transform", hk.transform(_leaky_step)),
      ("function", _leaky_step),
      ("none", None),
  )
  def test_not_a_transformed_with_state(self, model):
    x = jnp.ones((_B, _I))
    params, state = hk.transform_with_state(_leaky_step).init(
        jax.random.PRNGKey(0), x
    )
    with self.assertRaisesRegex(
        haiku_etp.CompileError, "hk.TransformedWithState"
    ):
      haiku_etp.compiler.compile_step(model, params, state, None, x)

  def test_compile_error_is_a_value_error(self):
    self.assertTrue(issubclass(haiku_etp.CompileError, ValueError))


class ReportTest(parameterized.TestCase):
  """``learner.report(params, state, rng, x)``: the step it is given."""

  def test_dense_leaky_d_rtrl(self):
    learner = haiku_etp.d_rtrl(hk.transform_with_state(_leaky_readout_step))
    x = jnp.ones((_B, _I))
    params, state = learner.init(jax.random.PRNGKey(0), x)
    text = learner.report(params, state, None, x)
    self.assertStartsWith(text, "learner: d_rtrl (exact for every parameter)")
    compiled = learner.compile(params, state, None, x)
    for g in compiled.groups:
      self.assertIn(g.name, text)
      for s in g.states:
        self.assertIn(s, text)
    for r in compiled.relations:
      self.assertIn(r.key, text)
    for p in compiled.non_temporal:
      self.assertRegex(text, f"{p} +non-temporal +exact")
    traces = learner.traces(state)
    w_label, b_label = (
        "leaky/~/linear/w:weight@leaky",
        "leaky/~/linear/w:bias@leaky",
    )
    self.assertEqual(traces[w_label].shape, (_B, _I, _O, 1))
    self.assertEqual(traces[b_label].shape, (_B, _O, 1))
    lines = text.splitlines()
    for label, leaf in traces.items():
      (line,) = [l for l in lines if l.strip().startswith(label + ":")]
      self.assertIn(f"shape={tuple(leaf.shape)}", line)
      self.assertIn(f"{leaf.nbytes} B", line)
    self.assertIn("shape=(2, 4, 3, 1) dtype=float32 96 B", text)
    total = sum(leaf.nbytes for leaf in traces.values())
    self.assertIn(f"total: {total} B", text)
    self.assertIn("D-RTRL on this step: exact", text)
    self.assertNotIn("approximate", text)

  def test_lists_every_diagnostic_and_parameter(self):
    def step(x):
      count = hk.get_state("count", (), jnp.int32, init=jnp.zeros)
      hk.set_state("count", count + 1)
      decay = hk.get_parameter("decay", (_O,), x.dtype, init=jnp.ones)
      h = _Linear(_O, name="first")(x)
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      v = decay * v + _Linear(_O, name="second")(h)
      v = v + _Linear(_O, with_bias=False, name="rec")(v)
      haiku_etp.set_hidden_state("v", v)
      return v

    learner = haiku_etp.d_rtrl(hk.transform_with_state(step))
    x = jnp.ones((_B, _I))
    with testing.expect_warning(haiku_etp.ApproximationWarning):
      params, state = learner.init(jax.random.PRNGKey(0), x)
    compiled = learner.compile(params, state, None, x)
    self.assertCountEqual(
        set(_codes(compiled)),
        {
            "carried_state",
            "untraced_parameter",
            "relation_through_cut",
            "cut_memory_path",
        },
    )
    text = learner.report(params, state, None, x)
    for d in compiled.diagnostics:
      self.assertIn(str(d), text)
    self.assertIn(f"diagnostics ({len(compiled.diagnostics)}):", text)
    self.assertIn("D-RTRL on this step: approximate", text)
    self.assertRegex(text, r"~/decay +untraced +approximate: .*untraced_param")
    self.assertRegex(text, r"first/w +traced +approximate: .*relation_through")
    self.assertRegex(text, r"rec/w +traced +approximate: cut_memory_path")

  @parameterized.named_parameters(
      ("d_rtrl", haiku_etp.d_rtrl, True, "exact for every parameter"),
      ("es_d_rtrl", haiku_etp.es_d_rtrl, True, "approximate for"),
      ("bptt", haiku_etp.bptt, False, "exact for every parameter"),
  )
  def test_report_from_arguments(self, make_learner, has_traces, verdict):
    learner = make_learner(hk.transform_with_state(_lif_step))
    x = jnp.ones((_B, _I))
    params, model_state = hk.transform_with_state(_lif_step).init(
        jax.random.PRNGKey(0), x
    )
    state = learner.init_state(params, model_state, None, x)
    text = learner.report(params, state, None, x)
    self.assertIn(verdict, text.splitlines()[0])
    self.assertIn("lif/i", text)
    self.assertIn("lif/v", text)
    self.assertIn("S=2", text)
    self.assertIn("lif/~/linear/w", text)
    self.assertEqual("traces (" in text, has_traces)
    self.assertIn("D-RTRL on this step: exact", text)


def _conv_lif_step(x):
  """``Conv2D -> LIF -> LeakyReadout`` of the mean spikes: D-RTRL is exact
  with the conv's cross-group traces into the readout."""
  i = haiku_etp.Conv2D(2, 3, name="conv")(x)
  s = haiku_etp.LIF(tau=5.0)(i)
  return haiku_etp.LeakyReadout(2, tau=5.0, with_bias=False)(
      jnp.mean(s, axis=(1, 2))
  )


class ConvReportTest(absltest.TestCase):
  """A learner that keeps no cross-group traces reports its own reasons."""

  def setUp(self):
    super().setUp()
    self.model = hk.transform_with_state(_conv_lif_step)
    self.x = jnp.ones((_B, 4, 4, 1))
    self.params, self.state = self.model.init(jax.random.PRNGKey(0), self.x)

  def test_d_rtrl_is_exact(self):
    text = haiku_etp.d_rtrl(self.model).report(
        self.params, self.state, None, self.x
    )
    self.assertIn("learner: d_rtrl (exact for every parameter)", text)
    self.assertIn("cross_group_trace", text)
    self.assertIn("D-RTRL on this step: exact", text)
    self.assertNotIn("approximate", text)

  def test_es_d_rtrl_gives_its_own_reasons(self):
    learner = haiku_etp.es_d_rtrl(self.model)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always", haiku_etp.ApproximationWarning)
      text = learner.report(self.params, self.state, None, self.x)
    # Neither D-RTRL's budget nor its remedy: ES-D-RTRL has no such budget.
    self.assertNotIn("cross_trace_over_budget", text)
    self.assertNotIn("max_cross_bytes", text)
    self.assertRegex(
        text,
        r"conv/w +traced +approximate: .*es_d_rtrl_no_cross_traces, "
        r"es_d_rtrl_factorised_trace",
    )
    self.assertIn("es_d_rtrl_no_cross_traces: ES-D-RTRL keeps no", text)
    self.assertIn("es_d_rtrl_factorised_trace: ES-D-RTRL factorises", text)
    # D-RTRL's own verdict on this step, not ES-D-RTRL's cut.
    (line,) = [l for l in text.splitlines() if "D-RTRL on this step" in l]
    self.assertTrue(line.startswith("D-RTRL on this step: exact"), line)
    (warning,) = [str(w.message) for w in caught]
    self.assertNotIn("cross_trace_over_budget", warning)
    self.assertIn("conv/w: cut_memory_path", warning)


class DiagnosticTest(absltest.TestCase):

  def test_fields_and_str(self):
    d = haiku_etp.compiler.Diagnostic(
        "warning", "cut_memory_path", "a message", ("a/w",)
    )
    self.assertEqual(d.level, "warning")
    self.assertEqual(d.code, "cut_memory_path")
    self.assertEqual(d.message, "a message")
    self.assertEqual(d.parameters, ("a/w",))
    self.assertEqual(str(d), "[warning] cut_memory_path: a message")

  def test_compiled_diagnostics(self):
    def step(x):
      count = hk.get_state("count", (), jnp.int32, init=jnp.zeros)
      hk.set_state("count", count + 1)
      decay = hk.get_parameter("decay", (_O,), x.dtype, init=jnp.ones)
      v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
      v = decay * v + _Linear(_O)(x)
      haiku_etp.set_hidden_state("v", v)
      return v

    compiled = _compile(step)
    self.assertNotEmpty(compiled.diagnostics)
    for d in compiled.diagnostics:
      self.assertIsInstance(d, haiku_etp.compiler.Diagnostic)
      self.assertIn(d.level, ("info", "warning"))
      self.assertRegex(d.code, r"^[a-z_]+$")
      self.assertNotEmpty(d.message)
      self.assertEqual(str(d), f"[{d.level}] {d.code}: {d.message}")
    self.assertEqual(
        sorted(_codes(compiled)), ["carried_state", "untraced_parameter"]
    )
    self.assertEqual(_codes(compiled, "info"), ["carried_state"])


if __name__ == "__main__":
  absltest.main()

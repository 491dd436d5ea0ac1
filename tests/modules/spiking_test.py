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
"""Tests for the spiking modules: dynamics, units, validation and exactness.

The forward dynamics are checked against plain numpy loops. The online
learners are checked in float64 on feed-forward spiking layers (weights ->
synapse -> neuron, conv -> neuron, a leaky readout), where D-RTRL must equal
whole-sequence BPTT to a relative error of 1e-8 with any window (and emit no
``ApproximationWarning``), and on a recurrent spiking layer, where it is an
approximation that says so and whose cosine to BPTT is only reported.

The largest relative error (or cosine) of each case is printed at the end of
each test class (visible with ``pytest -s``).
"""

import functools
import math
import re
from typing import Callable, NamedTuple, Optional
import warnings
import zlib

from absl.testing import absltest
from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import saiunit as u

import haiku_etp
from haiku_etp import testing
from haiku_etp import surrogate
from tests import test_util

_TOL = 1e-8
_BATCH = 2
_NUM_IN = 3
_NUM_HIDDEN = 4
_NUM_OUT = 2
_IMAGE = 5
_CONV_IN = 2
_CONV_OUT = 3
_STEPS = 7
_WINDOWS = (1, 3)


def _seed(*parts) -> int:
  return zlib.crc32(repr(parts).encode())


def _print_table(title, rows, header="max rel err", fmt=".3e"):
  if not rows:
    return
  width = max(len(k) for k in rows)
  lines = [f"\n{title}", f"{'case':<{width}} | {header}"]
  lines += [f"{k:<{width}} | {v:{fmt}}" for k, v in sorted(rows.items())]
  print("\n".join(lines))


def _unroll(make, xs, rng=None):
  """Runs ``make()(x_t)`` over ``xs``; returns ``(outs, states, params)``."""
  model = hk.transform_with_state(lambda x: make()(x))
  params, state = test_util.fast_jit(model.init)(rng, xs[0])
  apply = test_util.fast_jit(model.apply)
  outs, states = [], []
  for x in xs:
    out, state = apply(params, state, None, x)
    outs.append(np.asarray(out))
    states.append(jax.tree_util.tree_map(np.asarray, state))
  return np.stack(outs), states, params


# Forward references: plain numpy loops over time.


def _neuron_reference(
    i_seq,
    beta,
    threshold=1.0,
    v_reset=0.0,
    reset="soft",
    refractory=0,
    beta_adapt=0.0,
    rho=0.0,
):
  """Spikes and final ``(v, a, counter)`` of an (A)LIF neuron."""
  v = np.zeros(i_seq.shape[1:])
  a = np.zeros_like(v)
  c = np.zeros(v.shape, np.int32)
  spikes = []
  for i in i_seq:
    active = c == 0
    theta = threshold + beta_adapt * a
    u_t = np.where(active, beta * v + i, v)
    s = ((u_t > theta) & active).astype(v.dtype)
    if reset == "soft":
      v = u_t - (threshold - v_reset) * s
    else:
      v = np.where(s > 0, v_reset, u_t)
    c = np.where(s > 0, refractory, np.maximum(c - 1, 0))
    a = rho * a + s
    spikes.append(s)
  return np.stack(spikes), v, a, c


class _X64TestCase(chex.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))


class ForwardTest(_X64TestCase):
  """One module at a time against a numpy loop, in float64."""

  def _inputs(self, shape=(_BATCH, 5), scale=1.5, num_steps=8):
    rs = np.random.RandomState(_seed(self.id()))
    return scale * rs.normal(size=(num_steps,) + shape) + 0.3

  def test_synapse(self):
    xs = self._inputs()
    outs, states, _ = _unroll(lambda: haiku_etp.ExponentialSynapse(tau=3.0), xs)
    alpha, i, expected = math.exp(-1 / 3), np.zeros(xs.shape[1:]), []
    for x in xs:
      i = alpha * i + x
      expected.append(i)
    np.testing.assert_allclose(outs, np.stack(expected), rtol=1e-13)
    self.assertEqual(list(states[-1]), ["exponential_synapse"])
    self.assertEqual(list(states[-1]["exponential_synapse"]), ["i_syn:hidden"])
    np.testing.assert_allclose(
        states[-1]["exponential_synapse"]["i_syn:hidden"], i, rtol=1e-13
    )

  @parameterized.named_parameters(
      dict(testcase_name="soft", reset="soft", v_reset=0.0, refractory=0),
      dict(testcase_name="hard", reset="hard", v_reset=-0.3, refractory=0),
      dict(
          testcase_name="soft_v_reset", reset="soft", v_reset=0.2, refractory=0
      ),
      dict(testcase_name="soft_refr", reset="soft", v_reset=0.0, refractory=2),
      dict(testcase_name="hard_refr", reset="hard", v_reset=0.1, refractory=3),
  )
  def test_lif(self, reset, v_reset, refractory):
    xs = self._inputs()
    make = functools.partial(
        haiku_etp.LIF,
        tau=4.0,
        threshold=1.2,
        v_reset=v_reset,
        reset=reset,
        refractory=refractory,
    )
    outs, states, _ = _unroll(make, xs)
    spikes, v, _, c = _neuron_reference(
        xs, math.exp(-1 / 4), 1.2, v_reset, reset, refractory
    )
    self.assertGreater(spikes.sum(), 0)
    self.assertLess(spikes.mean(), 1)
    np.testing.assert_array_equal(outs, spikes)
    final = states[-1]["lif"]
    np.testing.assert_allclose(final["v:hidden"], v, rtol=1e-12, atol=1e-14)
    if refractory:
      self.assertEqual(sorted(final), ["refractory:sample", "v:hidden"])
      self.assertEqual(final["refractory:sample"].dtype, np.int32)
      np.testing.assert_array_equal(final["refractory:sample"], c)
      # Some neuron must have been held, or the gating went untested.
      held = [s["lif"]["refractory:sample"] for s in states]
      self.assertTrue(np.any(np.stack(held) > 0))
    else:
      self.assertEqual(sorted(final), ["v:hidden"])

  def test_detach_reset_forward_identical(self):
    xs = self._inputs()

    def run(detach):
      model = hk.transform_with_state(
          lambda x: haiku_etp.LIF(tau=4.0, detach_reset=detach)(x)
      )
      params, state = model.init(None, xs[0])
      apply = model.apply
      outs = []
      for x in xs:
        out, state = apply(params, state, None, x)
        outs.append(out)
      return np.stack(outs), state

    (outs, state), (outs_d, state_d) = run(False), run(True)
    self.assertGreater(outs.sum(), 0)
    np.testing.assert_array_equal(outs, outs_d)
    chex.assert_trees_all_equal(state, state_d)

  @parameterized.named_parameters(
      dict(testcase_name="soft", reset="soft", refractory=0),
      dict(testcase_name="hard_refr", reset="hard", refractory=2),
  )
  def test_alif(self, reset, refractory):
    xs = self._inputs()
    make = functools.partial(
        haiku_etp.ALIF,
        tau=4.0,
        tau_adapt=6.0,
        beta_adapt=0.4,
        reset=reset,
        refractory=refractory,
    )
    outs, states, _ = _unroll(make, xs)
    spikes, v, a, _ = _neuron_reference(
        xs,
        math.exp(-1 / 4),
        reset=reset,
        refractory=refractory,
        beta_adapt=0.4,
        rho=math.exp(-1 / 6),
    )
    self.assertGreater(spikes.sum(), 0)
    np.testing.assert_array_equal(outs, spikes)
    final = states[-1]["alif"]
    expected_keys = ["a:hidden", "v:hidden"]
    if refractory:
      expected_keys = ["a:hidden", "refractory:sample", "v:hidden"]
    self.assertEqual(sorted(final), expected_keys)
    np.testing.assert_allclose(final["v:hidden"], v, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(final["a:hidden"], a, rtol=1e-12, atol=1e-14)
    # Adaptation must have changed the spike train, or it went untested.
    plain, *_ = _neuron_reference(
        xs, math.exp(-1 / 4), reset=reset, refractory=refractory
    )
    self.assertFalse(np.array_equal(plain, spikes))

  def test_lif_any_rank(self):
    xs = self._inputs(shape=(_BATCH, 3, 2, 2))
    outs, states, _ = _unroll(lambda: haiku_etp.LIF(tau=4.0), xs)
    spikes, v, _, _ = _neuron_reference(xs, math.exp(-1 / 4))
    np.testing.assert_array_equal(outs, spikes)
    self.assertEqual(states[-1]["lif"]["v:hidden"].shape, (_BATCH, 3, 2, 2))
    np.testing.assert_allclose(states[-1]["lif"]["v:hidden"], v, rtol=1e-12)

  @parameterized.named_parameters(
      dict(testcase_name="bias", with_bias=True, shape=(_BATCH, 5)),
      dict(testcase_name="no_bias", with_bias=False, shape=(_BATCH, 5)),
      dict(testcase_name="unbatched", with_bias=True, shape=(5,)),
  )
  def test_readout(self, with_bias, shape):
    xs = self._inputs(shape=shape)
    make = lambda: haiku_etp.LeakyReadout(
        3, tau=2.5, with_bias=with_bias, b_init=hk.initializers.Constant(0.1)
    )
    outs, states, params = _unroll(make, xs, jax.random.PRNGKey(1))
    p = params["leaky_readout"]
    self.assertEqual(sorted(p), ["b", "w"] if with_bias else ["w"])
    self.assertEqual(p["w"].shape, (5, 3))
    self.assertEqual(p["w"].dtype, np.float64)
    kappa, r, expected = math.exp(-1 / 2.5), 0.0, []
    for x in xs:
      r = kappa * r + x @ np.asarray(p["w"]) + (0.1 if with_bias else 0.0)
      expected.append(r)
    np.testing.assert_allclose(outs, np.stack(expected), rtol=1e-12)
    self.assertEqual(list(states[-1]["leaky_readout"]), ["r:hidden"])

  def test_readout_default_init(self):
    x = jnp.ones((_BATCH, 400))
    model = hk.transform_with_state(lambda x: haiku_etp.LeakyReadout(50)(x))
    params, _ = test_util.fast_jit(model.init)(jax.random.PRNGKey(0), x)
    w, b = params["leaky_readout"]["w"], params["leaky_readout"]["b"]
    np.testing.assert_array_equal(b, np.zeros(50))
    # Truncated normal with stddev 1/sqrt(I): 1/20 here, bounded by 2 sigma.
    # (Truncation at 2 sigma shrinks the empirical std by about 12%.)
    self.assertAlmostEqual(float(jnp.std(w)), 0.88 / 20, delta=0.003)
    self.assertLessEqual(float(jnp.max(jnp.abs(w))), 2 / 20 + 1e-9)

  @parameterized.parameters(jnp.float32, jnp.bfloat16)
  def test_dtype_follows_input(self, dtype):
    x = jnp.ones((_BATCH, 3), dtype)

    def step(x):
      return haiku_etp.ALIF()(haiku_etp.ExponentialSynapse()(x))

    model = hk.transform_with_state(step)
    params, state = model.init(None, x)
    s, state = model.apply(params, state, None, 2 * x)
    self.assertEqual(s.dtype, dtype)
    for leaf in jax.tree_util.tree_leaves(state):
      self.assertEqual(leaf.dtype, dtype)

  def test_bool_input_becomes_float(self):
    x = jnp.array([[True, False]])
    model = hk.transform_with_state(lambda x: haiku_etp.ExponentialSynapse()(x))
    params, state = model.init(None, x)
    i, _ = model.apply(params, state, None, x)
    self.assertTrue(jnp.issubdtype(i.dtype, jnp.floating))
    np.testing.assert_array_equal(i, [[1.0, 0.0]])

  def test_surrogate_partial(self):
    xs = self._inputs()
    spike = functools.partial(surrogate.triangle, scale=2.0)
    outs, _, _ = _unroll(lambda: haiku_etp.LIF(tau=4.0, surrogate=spike), xs)
    spikes, *_ = _neuron_reference(xs, math.exp(-1 / 4))
    np.testing.assert_array_equal(outs, spikes)


def _module(cls, **kwargs):
  """Builds ``cls(**kwargs)``; Haiku modules only exist inside a transform."""
  box = []
  hk.transform(lambda: box.append(cls(**kwargs))).init(None)
  return box[0]


class UnitsTest(_X64TestCase):
  """saiunit time constants give the same floats as plain numbers."""

  def _outputs(self, make):
    rs = np.random.RandomState(3)
    xs = 1.5 * rs.normal(size=(8, _BATCH, 4)) + 0.3
    outs, states, _ = _unroll(make, xs)
    return outs, states[-1]

  @parameterized.named_parameters(
      dict(testcase_name="ms", tau=20 * u.ms, dt=1 * u.ms),
      dict(testcase_name="second_ms", tau=0.02 * u.second, dt=1 * u.ms),
      dict(testcase_name="ms_unit", tau=20.0 * u.ms, dt=u.ms),
  )
  def test_lif(self, tau, dt):
    expected = self._outputs(lambda: haiku_etp.LIF(tau=20.0, dt=1.0))
    got = self._outputs(lambda: haiku_etp.LIF(tau=tau, dt=dt))
    self.assertGreater(expected[0].sum(), 0)
    self.assertEqual(
        _module(haiku_etp.LIF, tau=tau, dt=dt).beta, math.exp(-0.05)
    )
    np.testing.assert_array_equal(got[0], expected[0])
    chex.assert_trees_all_equal(got[1], expected[1])

  def test_synapse_alif_readout(self):
    self.assertEqual(
        _module(
            haiku_etp.ExponentialSynapse, tau=5 * u.ms, dt=0.5 * u.ms
        ).alpha,
        _module(haiku_etp.ExponentialSynapse, tau=10.0).alpha,
    )
    quantity = _module(
        haiku_etp.ALIF, tau=0.02 * u.second, tau_adapt=200 * u.ms, dt=u.ms
    )
    plain = _module(haiku_etp.ALIF, tau=20.0, tau_adapt=200.0)
    self.assertEqual((quantity.beta, quantity.rho), (plain.beta, plain.rho))
    self.assertEqual(
        _module(
            haiku_etp.LeakyReadout, output_size=2, tau=4 * u.ms, dt=u.ms
        ).kappa,
        _module(haiku_etp.LeakyReadout, output_size=2, tau=4.0).kappa,
    )

  def test_refractory_quantity(self):
    for refractory in (2 * u.ms, 2.2 * u.ms, 0.002 * u.second):
      module = _module(
          haiku_etp.LIF, tau=20 * u.ms, dt=1 * u.ms, refractory=refractory
      )
      self.assertEqual(module.refractory, 2)
    expected = self._outputs(lambda: haiku_etp.LIF(tau=3.0, refractory=2))
    got = self._outputs(
        lambda: haiku_etp.LIF(tau=3 * u.ms, dt=1 * u.ms, refractory=2 * u.ms)
    )
    self.assertGreater(expected[0].sum(), 0)
    np.testing.assert_array_equal(got[0], expected[0])
    chex.assert_trees_all_equal(got[1], expected[1])


class ValidationTest(parameterized.TestCase):
  """Bad hyperparameters and inputs raise ValueError with the value."""

  @parameterized.named_parameters(
      dict(
          testcase_name="tau_zero",
          kw=dict(tau=0.0),
          regex=r"tau must be positive, got 0\.0",
      ),
      dict(
          testcase_name="tau_negative",
          kw=dict(tau=-5.0),
          regex=r"tau must be positive, got -5\.0",
      ),
      dict(
          testcase_name="tau_nan",
          kw=dict(tau=float("nan")),
          regex=r"tau must be positive, got nan",
      ),
      dict(
          testcase_name="tau_inf",
          kw=dict(tau=float("inf")),
          regex=r"tau must be positive, got inf",
      ),
      dict(
          testcase_name="dt_zero",
          kw=dict(dt=0.0),
          regex=r"dt must be positive, got 0\.0",
      ),
      dict(
          testcase_name="tau_quantity_negative",
          kw=dict(tau=-5.0 * u.ms, dt=1 * u.ms),
          regex=r"tau must be positive, got -5\.0 ms",
      ),
      dict(
          testcase_name="dt_quantity_negative",
          kw=dict(tau=5.0 * u.ms, dt=-1 * u.ms),
          regex=r"dt must be positive, got -1\.0 ms",
      ),
      dict(
          testcase_name="tau_quantity_float_dt",
          kw=dict(tau=20 * u.ms),
          regex=r"tau and dt must both be .*Quantities",
      ),
      dict(
          testcase_name="float_tau_quantity_dt",
          kw=dict(dt=1 * u.ms),
          regex=r"tau and dt must both be .*Quantities",
      ),
      dict(
          testcase_name="non_time_units",
          kw=dict(tau=20 * u.mV, dt=1 * u.ms),
          regex=r"tau must be a time Quantity, got 20\.0 mV",
      ),
      dict(
          testcase_name="non_time_both",
          kw=dict(tau=20 * u.mV, dt=1 * u.mV),
          regex=r"must be a time Quantity",
      ),
      dict(
          testcase_name="tau_string",
          kw=dict(tau="20"),
          regex=r"tau must be a positive float or a saiunit",
      ),
      dict(
          testcase_name="threshold_equal",
          kw=dict(threshold=0.5, v_reset=0.5),
          regex=(
              r"threshold must be above v_reset, got threshold=0\.5 and "
              r"v_reset=0\.5"
          ),
      ),
      dict(
          testcase_name="threshold_below",
          kw=dict(threshold=-1.0),
          regex=(
              r"threshold must be above v_reset, got threshold=-1\.0 and "
              r"v_reset=0\.0"
          ),
      ),
      dict(
          testcase_name="reset",
          kw=dict(reset="zero"),
          regex=r"reset must be 'soft' or 'hard', got 'zero'",
      ),
      dict(
          testcase_name="refractory_negative",
          kw=dict(refractory=-1),
          regex=r"refractory must be >= 0, got -1",
      ),
      dict(
          testcase_name="refractory_negative_quantity",
          kw=dict(tau=20 * u.ms, dt=1 * u.ms, refractory=-2 * u.ms),
          regex=r"refractory must be >= 0, got -2\.0 ms",
      ),
      dict(
          testcase_name="refractory_float",
          kw=dict(refractory=2.0),
          regex=r"refractory must be an int number of steps .*got 2\.0",
      ),
      dict(
          testcase_name="refractory_quantity_float_dt",
          kw=dict(refractory=2 * u.ms),
          regex=r"needs dt as a time Quantity",
      ),
      dict(
          testcase_name="refractory_not_time",
          kw=dict(tau=20 * u.ms, dt=1 * u.ms, refractory=2 * u.mV),
          regex=r"refractory must be an int number of steps or a time Quantity",
      ),
      dict(
          testcase_name="surrogate",
          kw=dict(surrogate=2.0),
          regex=r"surrogate must be a callable .*got 2\.0",
      ),
  )
  def test_lif(self, kw, regex):
    for cls in (haiku_etp.LIF, haiku_etp.ALIF):
      with self.subTest(cls.__name__):
        with self.assertRaisesRegex(ValueError, regex):
          _module(cls, **kw)

  @parameterized.named_parameters(
      dict(
          testcase_name="beta_adapt",
          kw=dict(beta_adapt=-0.1),
          regex=r"beta_adapt must be >= 0, got -0\.1",
      ),
      dict(
          testcase_name="tau_adapt",
          kw=dict(tau_adapt=-3.0),
          regex=r"tau_adapt must be positive, got -3\.0",
      ),
      dict(
          testcase_name="tau_adapt_units",
          kw=dict(tau=20 * u.ms, tau_adapt=200.0, dt=1 * u.ms),
          regex=r"tau_adapt and dt must both be",
      ),
  )
  def test_alif(self, kw, regex):
    with self.assertRaisesRegex(ValueError, regex):
      _module(haiku_etp.ALIF, **kw)

  @parameterized.named_parameters(
      dict(
          testcase_name="tau",
          cls=haiku_etp.ExponentialSynapse,
          kw=dict(tau=0.0),
          regex=r"tau must be positive, got 0\.0",
      ),
      dict(
          testcase_name="units",
          cls=haiku_etp.ExponentialSynapse,
          kw=dict(tau=5 * u.ms, dt=1.0),
          regex=r"tau and dt must both be",
      ),
      dict(
          testcase_name="readout_size",
          cls=haiku_etp.LeakyReadout,
          kw=dict(output_size=0),
          regex=r"output_size must be a positive int, got 0",
      ),
      dict(
          testcase_name="readout_size_float",
          cls=haiku_etp.LeakyReadout,
          kw=dict(output_size=2.0),
          regex=r"output_size must be a positive int, got 2\.0",
      ),
      dict(
          testcase_name="readout_tau",
          cls=haiku_etp.LeakyReadout,
          kw=dict(output_size=2, tau=-1.0),
          regex=r"tau must be positive, got -1\.0",
      ),
  )
  def test_other_modules(self, cls, kw, regex):
    with self.assertRaisesRegex(ValueError, regex):
      _module(cls, **kw)

  @parameterized.named_parameters(
      dict(
          testcase_name="synapse",
          make=haiku_etp.ExponentialSynapse,
          name="ExponentialSynapse",
      ),
      dict(testcase_name="lif", make=haiku_etp.LIF, name="LIF"),
      dict(testcase_name="alif", make=haiku_etp.ALIF, name="ALIF"),
  )
  def test_rank_zero_input(self, make, name):
    model = hk.transform_with_state(lambda x: make()(x))
    regex = rf"^Input to {name} must have rank >= 1, got shape \(\)\.$"
    with self.assertRaisesRegex(ValueError, regex):
      model.init(None, jnp.float32(1.0))

  @parameterized.named_parameters(("rank0", ()), ("rank3", (_BATCH, 3, 4)))
  def test_readout_rank(self, shape):
    model = hk.transform_with_state(lambda x: haiku_etp.LeakyReadout(2)(x))
    regex = (
        "^Input to LeakyReadout must have rank 1 or 2, got shape "
        + re.escape(f"{shape}.")
        + "$"
    )
    with self.assertRaisesRegex(ValueError, regex):
      model.init(jax.random.PRNGKey(0), jnp.ones(shape))


# Exactness of the online learners. Each step maps x_t (batch first) to out_t;
# trainable weights are hk.get_parameter values routed through
# haiku_etp.dense/conv, as the learners require.


def _param(name, shape, dtype, stddev, mean=0.0):
  return hk.get_parameter(
      name, shape, dtype, init=hk.initializers.RandomNormal(stddev, mean)
  )


def _current(x):
  # Positive on average, so every neuron is driven towards its threshold.
  w = _param("w", (x.shape[-1], _NUM_HIDDEN), x.dtype, 0.6, 0.3)
  b = _param("b", (_NUM_HIDDEN,), x.dtype, 0.3, 0.1)
  return haiku_etp.dense(x, w, b)


def _synapse_neuron(make_neuron):
  def step(x):
    i = haiku_etp.ExponentialSynapse(tau=3.0)(_current(x))
    return make_neuron()(i)

  return step


def _conv_lif(x):
  kernel = _param("w", (3, 3, _CONV_IN, _CONV_OUT), x.dtype, 0.7)
  bias = _param("b", (_CONV_OUT,), x.dtype, 0.5)
  dn = ("NHWC", "HWIO", "NHWC")
  y = haiku_etp.conv(x, kernel, bias, padding="SAME", dimension_numbers=dn)
  return haiku_etp.LIF(tau=4.0)(y)


def _readout(x):
  return haiku_etp.LeakyReadout(_NUM_OUT, tau=4.0)(x)


def _trained_synapse_lif(x):
  i = haiku_etp.ExponentialSynapse(tau=3.0, train_tau=True)(_current(x))
  return haiku_etp.LIF(tau=5.0, refractory=1, train_tau=True)(i)


def _trained_conv_alif(x):
  kernel = _param("w", (3, 3, _CONV_IN, _CONV_OUT), x.dtype, 0.7)
  bias = _param("b", (_CONV_OUT,), x.dtype, 0.5)
  dn = ("NHWC", "HWIO", "NHWC")
  y = haiku_etp.conv(x, kernel, bias, padding="SAME", dimension_numbers=dn)
  return haiku_etp.ALIF(tau=4.0, tau_adapt=8.0, beta_adapt=0.5, train_tau=True)(
      y
  )


def _trained_readout(x):
  return haiku_etp.LeakyReadout(_NUM_OUT, tau=4.0, train_tau=True)(x)


_LIF = functools.partial(haiku_etp.LIF, tau=5.0)
_SIGMOID = functools.partial(surrogate.sigmoid, scale=2.0)
_FAST_SIGMOID = functools.partial(surrogate.fast_sigmoid, scale=3.0)
_TRIANGLE = functools.partial(surrogate.triangle, scale=0.4)


class _Case(NamedTuple):
  step: Callable[[jax.Array], jax.Array]
  x_shape: tuple[int, ...]  # one sample
  num_states: int  # S of the one hidden group
  bptt_learner: bool = False  # also check the BPTT learner
  traces_matter: Optional[bool] = None  # truncated BPTT far (asserted?)
  es_decay: Optional[tuple[float, float]] = None  # an exact ES-D-RTRL


# The surrogates are spread over the reset and refractory variants: each
# surrogate and each (reset, refractory) pair is in some case.
_CASES = {
    "lif_soft": _Case(_synapse_neuron(_LIF), (_NUM_IN,), 2, traces_matter=True),
    "lif_hard_sigmoid": _Case(
        _synapse_neuron(
            lambda: _LIF(reset="hard", v_reset=-0.2, surrogate=_SIGMOID)
        ),
        (_NUM_IN,),
        2,
    ),
    "lif_refractory_fast_sigmoid": _Case(
        _synapse_neuron(lambda: _LIF(refractory=2, surrogate=_FAST_SIGMOID)),
        (_NUM_IN,),
        2,
        bptt_learner=True,
    ),
    "lif_hard_refractory_triangle": _Case(
        _synapse_neuron(
            lambda: _LIF(reset="hard", refractory=1, surrogate=_TRIANGLE)
        ),
        (_NUM_IN,),
        2,
    ),
    "lif_detach_reset": _Case(
        _synapse_neuron(lambda: _LIF(detach_reset=True)), (_NUM_IN,), 2
    ),
    "alif": _Case(
        _synapse_neuron(
            lambda: haiku_etp.ALIF(tau=5.0, tau_adapt=8.0, beta_adapt=0.5)
        ),
        (_NUM_IN,),
        3,
        bptt_learner=True,
        traces_matter=True,
    ),
    "conv_lif": _Case(
        _conv_lif, (_IMAGE, _IMAGE, _CONV_IN), 1, bptt_learner=True
    ),
    "readout": _Case(
        _readout,
        (_NUM_IN,),
        1,
        traces_matter=False,
        es_decay=(math.exp(-1 / 4.0), 0.0),
    ),
    # Trained per-feature time constants (haiku_etp.elementwise relations).
    "lif_train_tau": _Case(_trained_synapse_lif, (_NUM_IN,), 2),
    "conv_alif_train_tau": _Case(
        _trained_conv_alif, (_IMAGE, _IMAGE, _CONV_IN), 2
    ),
    "readout_train_tau": _Case(_trained_readout, (_NUM_IN,), 1),
}


def _problem(name):
  """``(model, xs, ys, seed)`` in float64; call under x64.

  One draw per input shape: the neuron variants differ only in the neuron
  (and share their parameters, drawn from the seed in the program).
  """
  case = _CASES[name]
  model = hk.transform_with_state(case.step)
  seed = _seed(case.x_shape)
  rs = np.random.RandomState(seed)
  xs = jnp.asarray(rs.normal(size=(_STEPS, _BATCH) + case.x_shape))
  params, state = jax.eval_shape(model.init, jax.random.PRNGKey(0), xs[0])
  out = jax.eval_shape(model.apply, params, state, None, xs[0])[0]
  ys = jnp.asarray(rs.uniform(size=(_STEPS,) + out.shape))
  return model, xs, ys, seed


def _no_approximation_warning(test, fn):
  """``fn()``, asserting that it emits no ApproximationWarning."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = fn()
  test.assertEmpty(
      [
          str(w.message)
          for w in caught
          if issubclass(w.category, haiku_etp.ApproximationWarning)
      ]
  )
  return result


class ExactTest(_X64TestCase):
  """D-RTRL equals BPTT on feed-forward spiking layers, any window.

  One program per case computes the oracle, D-RTRL with each window, and
  where the case asks for them the BPTT learner, truncated BPTT and
  ES-D-RTRL; the largest errors are printed at the end.
  """

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.errors = {}

  @classmethod
  def tearDownClass(cls):
    _print_table(cls.__name__, cls.errors)
    super().tearDownClass()

  def assert_exact(self, label, grads, grads_ref):
    chex.assert_trees_all_equal_structs(grads, grads_ref)
    err = testing.relative_error(grads, grads_ref)
    self.errors[label] = err
    self.assertLessEqual(err, _TOL, msg=label)

  @parameterized.named_parameters((n, n) for n in _CASES)
  def test_case(self, name):
    case = _CASES[name]
    model, xs, ys, seed = _problem(name)
    runs = [("d_rtrl", haiku_etp.d_rtrl(model), w) for w in _WINDOWS]
    if case.bptt_learner:
      runs.append(("bptt", haiku_etp.bptt(model), None))
    if case.traces_matter is not None:
      runs.append(("bptt(truncated)", haiku_etp.bptt(model), 1))
    if case.es_decay is not None:
      es = haiku_etp.es_d_rtrl(model, decay=case.es_decay)
      runs += [(f"es_d_rtrl{case.es_decay}", es, w) for w in _WINDOWS]
    # Same weights and inputs, same forward pass: only the gradient through
    # the reset differs, so the detach_reset case is not lif_soft again.
    soft = hk.transform_with_state(_CASES["lif_soft"].step)

    def run(xs, ys):
      # Eager init runs every initialiser op by op; in the program it is
      # compiled with the rest.
      params, state = model.init(jax.random.PRNGKey(seed), xs[0])
      reference = testing.bptt_grads(
          model, test_util.mse, params, state, None, xs, ys
      )
      results = []
      for label, learner, window in runs:
        learner_state = learner.init_state(params, state, None, xs[0])
        fn = learner.sequence_grad(test_util.mse, window=window)
        results.append(fn(params, learner_state, None, xs, ys))

      def body(st, x):
        s, st = model.apply(params, st, None, x)
        held = [e[k] for e in st.values() for k in e if k.endswith(":sample")]
        return st, (s, held)

      spikes = jax.lax.scan(body, state, xs)[1]
      soft_reference = None
      if name == "lif_detach_reset":
        soft_reference = testing.bptt_grads(
            soft, test_util.mse, params, state, None, xs, ys
        )
      return params, state, reference, results, spikes, soft_reference

    with warnings.catch_warnings():
      # ES-D-RTRL always warns; D-RTRL must not (checked below).
      warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
      params, state, (grads_ref, losses_ref), results, spikes, soft = (
          test_util.fast_jit(run)(xs, ys)
      )
    _no_approximation_warning(
        self,
        lambda: haiku_etp.d_rtrl(model).init_state(params, state, None, xs[0]),
    )

    with self.subTest("compiler"):
      compiled = haiku_etp.d_rtrl(model).compile(params, state, None, xs[0])
      self.assertTrue(compiled.drtrl_exact, msg=compiled.report())
      self.assertLen(compiled.groups, 1)
      self.assertEqual(compiled.groups[0].num_states, case.num_states)
      self.assertEqual(compiled.groups[0].dtype, np.float64)

    with self.subTest("spikes"):
      spikes, held = spikes
      if not name.startswith("readout"):
        # Both outcomes must occur, so the reset (and the surrogate around
        # the threshold) are exercised and no neuron is saturated.
        self.assertBetween(float(jnp.mean(spikes)), 0.05, 0.95, msg=name)
      if "refractory" in name:
        self.assertLen(held, 1)
        self.assertTrue(np.any(np.asarray(held[0]) > 0), msg=name)

    for path, leaf in jax.tree_util.tree_leaves_with_path(grads_ref):
      leaf = np.asarray(leaf)
      self.assertEqual(leaf.dtype, np.float64)
      self.assertTrue(
          np.any(leaf != 0),
          msg=f"reference gradient {jax.tree_util.keystr(path)} is all zero",
      )
    for (label, _, window), result in zip(runs, results):
      key = f"{label}/{name}/w={window or 'T'}"
      with self.subTest(key):
        if label == "bptt(truncated)":
          # The in-window term alone must be far from the reference, so
          # the equalities exercise the trace contraction.
          err = testing.relative_error(result.grads, grads_ref)
          self.errors[key] = err
          if case.traces_matter:
            self.assertGreater(err, 1e-3)
          continue
        self.assert_exact(key, result.grads, grads_ref)
        np.testing.assert_allclose(
            result.losses, losses_ref, rtol=1e-12, atol=1e-14
        )

    if name == "lif_train_tau":
      # Every trained time constant gets a gradient.
      grads = results[0].grads
      for module in ("exponential_synapse", "lif"):
        self.assertTrue(np.all(np.asarray(grads[module]["log_tau"]) != 0))
    if name == "lif_detach_reset":
      err = testing.relative_error(grads_ref, soft[0])
      self.errors["lif_detach_reset vs lif_soft (bptt)"] = err
      np.testing.assert_array_equal(losses_ref, soft[1])
      self.assertGreater(err, 1e-3)


class TrainTauTest(_X64TestCase):
  """Trained time constants start at the fixed ones and are traced.

  That they get a gradient is checked on ``lif_train_tau`` in ``ExactTest``.
  """

  @parameterized.named_parameters(
      (
          "synapse",
          lambda t: haiku_etp.ExponentialSynapse(tau=3.0, train_tau=t),
          ["log_tau"],
      ),
      (
          "lif",
          lambda t: haiku_etp.LIF(tau=5.0, refractory=1, train_tau=t),
          ["log_tau"],
      ),
      (
          "alif",
          lambda t: haiku_etp.ALIF(tau=5.0, tau_adapt=8.0, train_tau=t),
          ["log_tau", "log_tau_adapt"],
      ),
      (
          "readout",
          lambda t: haiku_etp.LeakyReadout(2, tau=4.0, train_tau=t),
          ["b", "log_tau", "w"],
      ),
  )
  def test_same_forward_at_init(self, make, names):
    rs = np.random.RandomState(0)
    xs = jnp.asarray(2.0 * rs.normal(size=(6, _BATCH, 4)))
    trained = hk.transform_with_state(lambda x: make(True)(x))
    fixed = hk.transform_with_state(lambda x: make(False)(x))
    params, state = test_util.fast_jit(trained.init)(
        jax.random.PRNGKey(1), xs[0]
    )
    (module_params,) = params.values()
    self.assertEqual(sorted(module_params), names)
    out_features = jax.eval_shape(trained.apply, params, state, None, xs[0])
    for name in names:
      if name.startswith("log_tau"):
        # One time constant per feature of the state (the output).
        self.assertEqual(
            module_params[name].shape, (out_features[0].shape[-1],)
        )
    fixed_params = {
        m: {k: v for k, v in e.items() if not k.startswith("log_tau")}
        for m, e in params.items()
    }
    state_fixed = state
    for x in xs:
      out, state = trained.apply(params, state, None, x)
      expected, state_fixed = fixed.apply(fixed_params, state_fixed, None, x)
      np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def _recurrent(x):
  """A recurrent spiking layer: D-RTRL and ES-D-RTRL are approximate here."""
  s_tm1 = haiku_etp.get_hidden_state("s", (x.shape[0], _NUM_HIDDEN), x.dtype)
  w_rec = _param("w_rec", (_NUM_HIDDEN, _NUM_HIDDEN), x.dtype, 0.5)
  i = _current(x) + haiku_etp.dense(s_tm1, w_rec)
  s = haiku_etp.LIF(tau=5.0)(haiku_etp.ExponentialSynapse(tau=3.0)(i))
  haiku_etp.set_hidden_state("s", s)
  return s


class DataParallelTest(_X64TestCase):
  """The refractory counter is per sample: it is sharded with the batch."""

  def test_pmap_equals_single_device(self):
    n = 4
    chex.assert_devices_available(n, "cpu")
    model = hk.transform_with_state(_synapse_neuron(lambda: _LIF(refractory=2)))
    learner = haiku_etp.d_rtrl(model)
    rs = np.random.RandomState(_seed("pmap"))
    xs = jnp.asarray(rs.normal(size=(_STEPS, 2 * n, _NUM_IN)))
    ys = jnp.asarray(rs.normal(size=(_STEPS, 2 * n, _NUM_HIDDEN)))
    params, state = _no_approximation_warning(
        self,
        lambda: test_util.fast_jit(learner.init)(jax.random.PRNGKey(0), xs[0]),
    )
    sharded = haiku_etp.sharding.shard_state(state, n)
    self.assertEqual(
        sharded["lif"]["refractory:sample"].shape, (n, 2, _NUM_HIDDEN)
    )
    # Compiled with XLA's default options, as pmap compiles: the states
    # compare bit for bit.
    single = jax.jit(learner.sequence_grad(test_util.mse))(
        params, state, None, xs, ys
    )
    parallel = jax.pmap(
        learner.sequence_grad(test_util.mse, axis_name="i"),
        axis_name="i",
        in_axes=(0, 0, None, 0, 0),
    )(
        haiku_etp.sharding.replicate(params, n),
        sharded,
        None,
        haiku_etp.sharding.shard_batch(xs, n, axis=1),
        haiku_etp.sharding.shard_batch(ys, n, axis=1),
    )
    # The counters did run, so sharding them is exercised.
    counters = single.state["lif"]["refractory:sample"]
    self.assertTrue(np.any(np.asarray(counters) > 0))
    first = lambda t: jax.tree_util.tree_map(lambda v: v[0], t)
    chex.assert_trees_all_close(first(parallel.grads), single.grads, rtol=1e-10)
    np.testing.assert_allclose(
        first(parallel.losses), single.losses, rtol=1e-10
    )
    chex.assert_trees_all_equal(
        haiku_etp.sharding.unshard_state(parallel.state)["lif"],
        single.state["lif"],
    )


class RecurrentModulesTest(absltest.TestCase):

  def test_w_rec_lives_in_the_neurons_module(self):
    for module, name, hidden in (
        (haiku_etp.RecurrentLIF, "recurrent_lif", {"v:hidden", "s:hidden"}),
        (
            haiku_etp.RecurrentALIF,
            "recurrent_alif",
            {"v:hidden", "a:hidden", "s:hidden"},
        ),
    ):
      model = hk.transform_with_state(lambda i, m=module: m(tau=10.0)(i))
      params, state = model.init(jax.random.PRNGKey(0), jnp.ones((2, 3)))
      self.assertEqual(set(params), {name})
      self.assertEqual(params[name]["w_rec"].shape, (3, 3))
      self.assertTrue(hidden <= set(state[name]), (name, set(state[name])))


class ApproximateTest(_X64TestCase):
  """Recurrent weights: the online learners only approximate BPTT."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.cosines = {}

  @classmethod
  def tearDownClass(cls):
    _print_table(cls.__name__, cls.cosines, "cosine to BPTT", ".6f")
    super().tearDownClass()

  def test_recurrent_lif(self):
    model = hk.transform_with_state(_recurrent)
    rs = np.random.RandomState(_seed("recurrent"))
    xs = jnp.asarray(rs.normal(size=(_STEPS, _BATCH, _NUM_IN)))
    ys = jnp.asarray(rs.uniform(size=(_STEPS, _BATCH, _NUM_HIDDEN)))
    params, state = test_util.fast_jit(model.init)(
        jax.random.PRNGKey(_seed("recurrent")), xs[0]
    )
    learners = {
        "d_rtrl": haiku_etp.d_rtrl(model),
        "es_d_rtrl(0.9)": haiku_etp.es_d_rtrl(model, decay=0.9),
    }
    states = {}
    for label, learner in learners.items():
      # Both announce that they approximate the recurrent weights.
      with testing.expect_warning(haiku_etp.ApproximationWarning, "w_rec"):
        states[label] = learner.init_state(params, state, None, xs[0])
    compiled = learners["d_rtrl"].compile(params, state, None, xs[0])
    self.assertFalse(compiled.drtrl_exact)

    def run(params, states, xs, ys):
      reference = testing.bptt_grads(
          model, test_util.mse, params, state, None, xs, ys
      )
      results = {
          label: learner.sequence_grad(test_util.mse)(
              params, states[label], None, xs, ys
          )
          for label, learner in learners.items()
      }
      return reference, results

    (grads_ref, _), results = test_util.fast_jit(run)(params, states, xs, ys)
    for label, result in results.items():
      self.assertTrue(np.all(np.isfinite(result.losses)))
      for leaf in jax.tree_util.tree_leaves(result.grads):
        self.assertTrue(np.all(np.isfinite(leaf)), msg=label)
      cosine = testing.cosine_similarity(result.grads, grads_ref)
      self.cosines[f"{label}/recurrent_lif/w=1"] = cosine
      self.assertGreater(cosine, 0.0, msg=label)


if __name__ == "__main__":
  absltest.main()

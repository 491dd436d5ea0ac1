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
"""Tests of the hidden-state helpers.

Hidden-ness must be readable from the state pytree alone, so it is checked
after ``init``, ``apply``, a checkpoint written with ``np.savez`` and read
back, and a ``pmap`` over four host CPU devices. Ordinary ``hk.state`` stays
ordinary and the learners carry it.
"""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp._src.core import state as state_lib

_B, _I, _O = 4, 3, 2
_NUM_DEVICES = 4
_SEP = "|"


class _Inner(hk.Module):
  """A leaky integrator with its weight through the ETP dense op."""

  def __call__(self, x):
    w = hk.get_parameter("w", (x.shape[-1], _O), x.dtype, init=jnp.ones)
    v = haiku_etp.get_hidden_state("v", (x.shape[0], _O), x.dtype)
    v = 0.5 * v + haiku_etp.dense(x, w)
    haiku_etp.set_hidden_state("v", v)
    return v


class _Outer(hk.Module):
  """Hidden state of its own, a nested module, and an ordinary counter."""

  def __init__(self, name=None):
    super().__init__(name=name)
    self.inner = _Inner(name="inner")

  def __call__(self, x):
    count = hk.get_state("count", (), jnp.int32, init=jnp.zeros)
    hk.set_state("count", count + 1)
    v = self.inner(x)
    a = haiku_etp.get_hidden_state("a", v.shape, v.dtype, init=jnp.ones)
    a = 0.9 * a + v
    haiku_etp.set_hidden_state("a", a)
    return a


def _step(x):
  return _Outer(name="outer")(x)


_HIDDEN = ["outer/a", "outer/~/inner/v"]


def _model():
  return hk.transform_with_state(_step)


def _x(seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (_B, _I))


def _names(state):
  return {m: sorted(entries) for m, entries in state.items()}


def _flatten(state):
  """``{"module|name": array}``, the layout of an ``np.savez`` checkpoint."""
  return {
      f"{m}{_SEP}{n}": np.asarray(v)
      for m, entries in state.items()
      for n, v in entries.items()
  }


def _unflatten(flat):
  state = {}
  for key, value in flat.items():
    m, n = key.split(_SEP)
    state.setdefault(m, {})[n] = jnp.asarray(value)
  return state


class HiddenStateTest(absltest.TestCase):
  """get/set inside (nested) modules and the names they leave in the state."""

  def test_init_marks_hidden_entries(self):
    params, state = _model().init(None, _x())
    self.assertEqual(
        _names(state),
        {
            "outer": ["a:hidden", "count"],
            "outer/~/inner": ["v:hidden"],
        },
    )
    self.assertEqual(list(params), ["outer/~/inner"])
    np.testing.assert_array_equal(state["outer/~/inner"]["v:hidden"], 0.0)
    np.testing.assert_array_equal(state["outer"]["a:hidden"], 1.0)
    self.assertEqual(state["outer"]["a:hidden"].shape, (_B, _O))
    self.assertEqual(state["outer"]["a:hidden"].dtype, jnp.float32)

  def test_single_module(self):
    def step(x):
      v = haiku_etp.get_hidden_state("v", x.shape, x.dtype)
      haiku_etp.set_hidden_state("v", v + x)
      return v

    _, state = hk.transform_with_state(
        lambda x: hk.to_module(step)(name="module")(x)
    ).init(None, _x())
    self.assertEqual(_names(state), {"module": ["v:hidden"]})
    self.assertEqual(state_lib.hidden_paths(state), ["module/v"])

  def test_get_returns_previous_value(self):
    model = _model()
    params, state = model.init(None, _x())
    x = _x(1)
    _, state1 = model.apply(params, state, None, x)
    _, state2 = model.apply(params, state1, None, x)
    v1 = state1["outer/~/inner"]["v:hidden"]
    np.testing.assert_allclose(v1, x @ params["outer/~/inner"]["w"], rtol=1e-6)
    np.testing.assert_allclose(
        state2["outer/~/inner"]["v:hidden"],
        0.5 * v1 + x @ params["outer/~/inner"]["w"],
        rtol=1e-6,
    )

  def test_is_hidden_name(self):
    self.assertTrue(state_lib.is_hidden_name("v:hidden"))
    self.assertFalse(state_lib.is_hidden_name("v"))
    self.assertFalse(state_lib.is_hidden_name("count"))
    self.assertFalse(state_lib.is_hidden_name("hidden"))

  def test_hidden_paths_read_from_the_pytree_alone(self):
    state = {
        "b": {"v:hidden": 0.0, "count": 0},
        "a": {"i:hidden": 0.0, "v:hidden": 0.0},
        "~etp/d_rtrl": {"a/w@a:hidden": 0.0},
    }
    self.assertEqual(state_lib.hidden_paths(state), ["a/i", "a/v", "b/v"])

  def test_survives_apply(self):
    model = _model()
    params, state = model.init(None, _x())
    for t in range(3):
      _, state = model.apply(params, state, None, _x(t))
      self.assertEqual(state_lib.hidden_paths(state), _HIDDEN)
    self.assertEqual(int(state["outer"]["count"]), 3)

  def test_survives_jit(self):
    model = _model()
    params, state = model.init(None, _x())
    _, state = jax.jit(model.apply)(params, state, None, _x(1))
    self.assertEqual(state_lib.hidden_paths(state), _HIDDEN)

  def test_survives_checkpoint_round_trip(self):
    model = _model()
    params, state = model.init(None, _x())
    _, state = model.apply(params, state, None, _x(1))
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "state.npz")
      np.savez(path, **_flatten(state))
      with np.load(path) as data:
        loaded = _unflatten({k: data[k] for k in data.files})
    self.assertEqual(_names(loaded), _names(state))
    self.assertEqual(state_lib.hidden_paths(loaded), _HIDDEN)
    chex.assert_trees_all_equal(loaded, state)
    out, next_state = model.apply(params, loaded, None, _x(2))
    expected_out, expected_state = model.apply(params, state, None, _x(2))
    np.testing.assert_array_equal(out, expected_out)
    chex.assert_trees_all_equal(next_state, expected_state)

  def test_learner_state_checkpoint_round_trip(self):
    learner = haiku_etp.d_rtrl(_model())
    params, state = learner.init(None, _x())
    _, state = learner.apply(params, state, None, _x(1))
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "state.npz")
      np.savez(path, **_flatten(state))
      with np.load(path) as data:
        loaded = _unflatten({k: data[k] for k in data.files})
    self.assertEqual(state_lib.hidden_paths(loaded), _HIDDEN)
    model_state, entries = state_lib.split_learner_state(loaded)
    self.assertCountEqual(entries, ["~etp/d_rtrl", "~etp/initial"])
    self.assertEqual(state_lib.hidden_paths(model_state), _HIDDEN)
    chex.assert_trees_all_equal(loaded, state)
    _, resumed = learner.apply(params, loaded, None, _x(2))
    _, expected = learner.apply(params, state, None, _x(2))
    chex.assert_trees_all_close(resumed, expected)

  def test_survives_pmap(self):
    chex.assert_devices_available(_NUM_DEVICES, "cpu")
    model = _model()
    x = jax.random.normal(jax.random.PRNGKey(3), (_NUM_DEVICES * _B, _I))
    params, state = model.init(None, x)
    sharded = haiku_etp.sharding.shard_state(state, _NUM_DEVICES)
    # Hidden state is split over devices, the counter replicated.
    self.assertEqual(sharded["outer"]["a:hidden"].shape, (_NUM_DEVICES, _B, _O))
    self.assertEqual(sharded["outer"]["count"].shape, (_NUM_DEVICES,))
    out, new = jax.pmap(model.apply)(
        haiku_etp.sharding.replicate(params, _NUM_DEVICES),
        sharded,
        None,
        haiku_etp.sharding.shard_batch(x, _NUM_DEVICES),
    )
    self.assertEqual(
        _names(new), dict(_names(state), **{"~etp/shards": ["index"]})
    )
    self.assertEqual(state_lib.hidden_paths(new), _HIDDEN)
    self.assertEqual(out.shape, (_NUM_DEVICES, _B, _O))
    unsharded = haiku_etp.sharding.unshard_state(new)
    self.assertEqual(state_lib.hidden_paths(unsharded), _HIDDEN)
    _, expected = model.apply(params, state, None, x)
    chex.assert_trees_all_close(unsharded, expected, rtol=1e-6)

  def test_map_hidden_touches_only_hidden_entries(self):
    _, state = _model().init(None, _x())
    mapped = state_lib.map_hidden(lambda v: v + 7.0, state)
    np.testing.assert_array_equal(mapped["outer"]["a:hidden"], 8.0)
    np.testing.assert_array_equal(mapped["outer/~/inner"]["v:hidden"], 7.0)
    self.assertEqual(int(mapped["outer"]["count"]), 0)


class NameAndDtypeErrorsTest(parameterized.TestCase):

  def _init(self, fn):
    return hk.transform_with_state(fn).init(None, _x())

  @parameterized.named_parameters(
      ("int32", jnp.int32), ("uint8", jnp.uint8), ("bool", jnp.bool_)
  )
  def test_non_floating_dtype(self, dtype):
    with self.assertRaisesRegex(ValueError, "floating"):
      self._init(lambda x: haiku_etp.get_hidden_state("n", (2,), dtype))

  def test_dtype_from_integer_inputs_names_them(self):
    # The docstring's pattern, get_hidden_state(name, x.shape, x.dtype), fed
    # int32 inputs: the message points at the inputs and the cast.
    with self.assertRaisesRegex(
        ValueError,
        r"Hidden state 'v' must have a floating dtype, got int32\. If the "
        r"module takes it from its inputs .*the inputs are int32: cast them "
        r"to a float dtype \(x\.astype\(jnp\.float32\)\)",
    ):
      hk.transform_with_state(
          lambda x: haiku_etp.get_hidden_state("v", x.shape, x.dtype)
      ).init(None, jnp.ones((2, 3), jnp.int32))

  @parameterized.named_parameters(
      ("float32", jnp.float32), ("bfloat16", jnp.bfloat16)
  )
  def test_floating_dtypes_accepted(self, dtype):
    _, state = self._init(
        lambda x: haiku_etp.get_hidden_state("v", (2,), dtype)
    )
    self.assertEqual(state["~"]["v:hidden"].dtype, dtype)

  def test_empty_name(self):
    with self.assertRaisesRegex(ValueError, "non-empty"):
      self._init(lambda x: haiku_etp.get_hidden_state("", (2,)))
    with self.assertRaisesRegex(ValueError, "non-empty"):
      self._init(lambda x: haiku_etp.set_hidden_state("", jnp.zeros(2)))

  def test_name_with_suffix(self):
    with self.assertRaisesRegex(ValueError, ":hidden"):
      self._init(lambda x: haiku_etp.get_hidden_state("v:hidden", (2,)))
    with self.assertRaisesRegex(ValueError, ":hidden"):
      self._init(lambda x: haiku_etp.set_hidden_state("v:hidden", jnp.zeros(2)))

  def test_name_like_a_layers_entry(self):
    # The learners name hk.layer_stack's per-layer state so.
    with self.assertRaisesRegex(ValueError, "per-layer names"):
      self._init(lambda x: haiku_etp.get_hidden_state("v@layer0", (2,)))
    with self.assertRaisesRegex(ValueError, "per-layer names"):
      self._init(lambda x: haiku_etp.get_sample_state("n@layer12", (2,)))
    # Elsewhere in a name the mark is fine.
    self._init(lambda x: haiku_etp.get_hidden_state("v@layer0x", (2,)))


class WriteErrorsTest(parameterized.TestCase):
  """A write that does not match its declaration fails at the call."""

  def _init(self, fn):
    return hk.transform_with_state(fn).init(None, _x())

  @parameterized.named_parameters(
      (
          "shape",
          jnp.zeros((3,)),
          r"got shape \(3,\) and dtype float32.*" r"declared with shape \(2,\)",
      ),
      ("dtype", jnp.zeros((2,), jnp.float16), "dtype float16.*dtype float32"),
  )  # pyformat: disable
  def test_hidden_write_must_match_declaration(self, value, regex):
    def fn(x):
      haiku_etp.get_hidden_state("v", (2,), jnp.float32)
      haiku_etp.set_hidden_state("v", value)

    with self.assertRaisesRegex(ValueError, regex):
      self._init(fn)

  def test_hidden_write_of_an_undeclared_name(self):
    with self.assertRaisesRegex(
        ValueError, r"set_hidden_state\('vv'\) in module '~'.*typo"
    ):
      self._init(lambda x: haiku_etp.set_hidden_state("vv", jnp.zeros(2)))

  def test_sample_state(self):
    def fn(x):
      c = haiku_etp.get_sample_state("c", (x.shape[0],), jnp.int32)
      haiku_etp.set_sample_state("c", c + 1)
      with self.assertRaisesRegex(ValueError, "declared with shape"):
        haiku_etp.set_sample_state("c", jnp.zeros((1,), jnp.int32))
      return c

    _, state = self._init(fn)
    self.assertEqual(state["~"]["c:sample"].shape, (_B,))
    self.assertTrue(state_lib.is_sample_name("c:sample"))
    self.assertEqual(state_lib.hidden_paths(state), [])
    with self.assertRaisesRegex(ValueError, "leading batch axis"):
      self._init(lambda x: haiku_etp.get_sample_state("c", ()))


class OrdinaryStateTest(parameterized.TestCase):
  """Ordinary hk.state is not hidden and the learners carry it."""

  def test_not_hidden(self):
    _, state = _model().init(None, _x())
    self.assertFalse(state_lib.is_hidden_name("count"))
    self.assertNotIn("outer/count", state_lib.hidden_paths(state))

  @parameterized.named_parameters(
      ("d_rtrl", haiku_etp.d_rtrl),
      ("es_d_rtrl", haiku_etp.es_d_rtrl),
      ("bptt", haiku_etp.bptt),
  )
  def test_learner_apply_carries_counter(self, make_learner):
    learner = make_learner(_model())
    params, state = learner.init(None, _x())
    self.assertEqual(int(state["outer"]["count"]), 0)
    for t in range(3):
      _, state = learner.apply(params, state, None, _x(t))
      self.assertEqual(int(state["outer"]["count"]), t + 1)
      self.assertEqual(state_lib.hidden_paths(state), _HIDDEN)
    apply = jax.jit(learner.apply)
    _, state = apply(params, state, None, _x(4))
    self.assertEqual(int(state["outer"]["count"]), 4)

  @parameterized.named_parameters(
      ("d_rtrl", haiku_etp.d_rtrl),
      ("es_d_rtrl", haiku_etp.es_d_rtrl),
      ("bptt", haiku_etp.bptt),
  )
  def test_sequence_grad_carries_counter(self, make_learner):
    learner = make_learner(_model())
    params, state = learner.init(None, _x())
    xs = jax.random.normal(jax.random.PRNGKey(5), (3, _B, _I))
    ys = jnp.zeros((3, _B, _O))
    loss = lambda out, y: jnp.sum((out - y) ** 2)
    state = learner.sequence_grad(loss)(params, state, None, xs, ys).state
    self.assertEqual(int(state["outer"]["count"]), 3)
    self.assertEqual(state_lib.hidden_paths(state), _HIDDEN)


if __name__ == "__main__":
  absltest.main()

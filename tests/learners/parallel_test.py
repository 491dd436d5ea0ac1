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
"""Data parallelism: pmap and shard_map equal one device; helpers validate.

``conftest.py`` gives pytest four host CPU devices.
"""

import functools
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import chex
import haiku as hk
import jax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np

import haiku_etp
from tests import test_util

_N = 4
_T, _B, _I, _H = 5, 8, 3, 4


def _step(x):
  """Linear -> refractory LIF -> leaky readout, with a shared counter."""
  n = hk.get_state("calls", (), jnp.int32, init=jnp.zeros)
  hk.set_state("calls", n + 1)
  s = haiku_etp.LIF(tau=5.0, refractory=2)(haiku_etp.Linear(_H)(3.0 * x))
  return haiku_etp.LeakyReadout(2, tau=4.0)(s)


_LEARNERS = (
    ("d_rtrl", haiku_etp.d_rtrl),
    ("es_d_rtrl", functools.partial(haiku_etp.es_d_rtrl, decay=0.5)),
    ("bptt", haiku_etp.bptt),
)


def _setup(make):
  xs = test_util.sequence((_B, _I), _T, seed=1)
  ys = test_util.sequence((_B, 2), _T, seed=2)
  learner = make(hk.transform_with_state(_step))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
  return learner, params, state, xs, ys


def _assert_close(actual, expected):
  chex.assert_trees_all_close(actual, expected, rtol=1e-10, atol=1e-12)


class DataParallelTest(parameterized.TestCase):
  """Sharding the batch and averaging gradients equals one device."""

  def setUp(self):
    super().setUp()
    chex.assert_devices_available(_N, "cpu")
    self.enter_context(jax.enable_x64(True))
    self.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)

  @parameterized.named_parameters(*_LEARNERS)
  def test_pmap_equals_one_device(self, make):
    learner, params, state, xs, ys = _setup(make)
    expected = jax.jit(learner.sequence_grad(test_util.mse))(
        params, state, None, xs, ys
    )
    fn = jax.pmap(
        learner.sequence_grad(test_util.mse, axis_name="i"),
        axis_name="i",
        in_axes=(0, 0, None, 0, 0),
    )
    sharded = fn(
        haiku_etp.sharding.replicate(params, _N),
        haiku_etp.sharding.shard_state(state, _N),
        None,
        haiku_etp.sharding.shard_batch(xs, _N, axis=1),
        haiku_etp.sharding.shard_batch(ys, _N, axis=1),
    )
    first = lambda t: jax.tree_util.tree_map(lambda v: v[0], t)
    _assert_close(first(sharded.grads), expected.grads)
    _assert_close(first(sharded.losses), expected.losses)
    end = haiku_etp.sharding.unshard_state(sharded.state)
    _assert_close(end, expected.state)
    # The refractory counter is per sample and came back unsharded.
    np.testing.assert_array_equal(
        end["lif"]["refractory:sample"],
        expected.state["lif"]["refractory:sample"],
    )

  @parameterized.named_parameters(*_LEARNERS)
  def test_shard_map_equals_one_device(self, make):
    learner, params, state, xs, ys = _setup(make)
    expected = jax.jit(learner.sequence_grad(test_util.mse))(
        params, state, None, xs, ys
    )
    mesh = Mesh(np.array(jax.devices()[:_N]), ("data",))
    batched = jax.tree_util.tree_map(lambda _: P(), state)
    for m, entries in state.items():
      for n, v in entries.items():
        if (
            n.endswith(":hidden")
            or n.endswith(":sample")
            or m.startswith("~etp")
            and np.ndim(v)
        ):
          batched[m][n] = P("data")
    grad_fn = learner.sequence_grad(test_util.mse, axis_name="data")
    fn = jax.jit(
        jax.shard_map(
            lambda p, s, x, y: tuple(grad_fn(p, s, None, x, y)),
            mesh=mesh,
            in_specs=(P(), batched, P(None, "data"), P(None, "data")),
            out_specs=(P(), P(), batched, P()),
            check_vma=False,
        )
    )
    losses, grads, end, _ = fn(params, state, xs, ys)
    _assert_close(grads, expected.grads)
    _assert_close(losses, expected.losses)
    _assert_close(end, expected.state)


class HelpersTest(parameterized.TestCase):
  """The helpers say what is wrong and how to fix it."""

  def test_shard_and_unshard_round_trip(self):
    learner, _, state, _, _ = _setup(haiku_etp.d_rtrl)
    sharded = haiku_etp.sharding.shard_state(state, _N)
    self.assertEqual(sharded["lif"]["v:hidden"].shape, (_N, _B // _N, _H))
    self.assertEqual(sharded["lif"]["refractory:sample"].shape[:2], (_N, 2))
    self.assertEqual(sharded["~"]["calls"].shape, (_N,))
    chex.assert_trees_all_equal(
        haiku_etp.sharding.unshard_state(sharded), state
    )
    del learner

  def test_state_batch_mask_matches_shard_state(self):
    _, _, state, _, _ = _setup(haiku_etp.d_rtrl)
    mask = haiku_etp.sharding.state_batch_mask(state)
    self.assertTrue(mask["lif"]["v:hidden"])
    self.assertTrue(mask["lif"]["refractory:sample"])
    self.assertFalse(mask["~"]["calls"])
    sharded = haiku_etp.sharding.shard_state(state, _N)
    for m, entries in mask.items():
      for n, batched in entries.items():
        v, s = state[m][n], sharded[m][n]
        if batched:
          self.assertEqual(s.shape[:2], (_N, v.shape[0] // _N), (m, n))
        else:
          self.assertEqual(s.shape, (_N,) + jnp.shape(v), (m, n))
    self.assertTrue(
        any(mask[m][n] for m in mask if m.startswith("~etp") for n in mask[m])
    )
    with self.assertRaisesRegex(ValueError, "unsharded state"):
      haiku_etp.sharding.state_batch_mask(sharded)

  def test_unshard_of_an_unsharded_state(self):
    _, _, state, _, _ = _setup(haiku_etp.d_rtrl)
    with self.assertRaisesRegex(
        ValueError, "sharded by haiku_etp.sharding.shard_state"
    ):
      haiku_etp.sharding.unshard_state(state)

  def test_shard_twice(self):
    _, _, state, _, _ = _setup(haiku_etp.d_rtrl)
    with self.assertRaisesRegex(ValueError, "already sharded"):
      haiku_etp.sharding.shard_state(
          haiku_etp.sharding.shard_state(state, 2), 2
      )

  @parameterized.named_parameters(
      ("zero", 0), ("negative", -1), ("float", 2.0), ("bool", True)
  )
  def test_bad_device_count(self, n):
    for fn in (haiku_etp.sharding.replicate, haiku_etp.sharding.shard_batch):
      with self.assertRaisesRegex(ValueError, "num_devices must be an int"):
        fn({"x": jnp.ones((4, 2))}, n)

  def test_batch_not_divisible(self):
    with self.assertRaisesRegex(
        ValueError, r"\['x'\] with shape \(6, 2\) over 4 devices.*multiple"
    ):
      haiku_etp.sharding.shard_batch({"x": jnp.ones((6, 2))}, 4)

  def test_unshard_batch_without_device_axis(self):
    with self.assertRaisesRegex(ValueError, "lacks the leading device axis"):
      haiku_etp.sharding.unshard_batch({"x": jnp.ones((4,))})

  def test_forgotten_replicate_names_the_remedy(self):
    learner, params, state, xs, ys = _setup(haiku_etp.d_rtrl)
    fn = jax.pmap(
        learner.sequence_grad(test_util.mse, axis_name="i"),
        axis_name="i",
        in_axes=(None, 0, None, 0, 0),
    )
    # Params with a stray leading axis, as when replicate is applied twice or
    # a sharded tree is passed where a replicated one belongs.
    bad = jax.tree_util.tree_map(lambda v: v[None], params)
    with self.assertRaisesRegex(ValueError, "replicate params"):
      fn(
          bad,
          haiku_etp.sharding.shard_state(state, _N),
          None,
          haiku_etp.sharding.shard_batch(xs, _N, axis=1),
          haiku_etp.sharding.shard_batch(ys, _N, axis=1),
      )


if __name__ == "__main__":
  absltest.main()

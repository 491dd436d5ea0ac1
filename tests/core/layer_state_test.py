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
"""Tests of the per-layer form of the state ``hk.layer_stack`` stacks."""

from absl.testing import absltest
import haiku as hk
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp._src.core import layer_state
from haiku_etp._src.core import program as program_lib

_B, _L = 2, 3


def _layer(h):
  v = haiku_etp.get_hidden_state("v", h.shape, h.dtype)
  n = haiku_etp.get_sample_state("n", h.shape[:1], jnp.int32)
  haiku_etp.set_sample_state("n", n + 1)
  v = 0.5 * v + jnp.tanh(hk.Linear(h.shape[-1])(h))
  haiku_etp.set_hidden_state("v", v)
  return v


def _stacked(x):
  return hk.layer_stack(_L)(_layer)(x)


def _loop(x):
  for _ in range(_L):
    x = _layer(x)
  return x


def _x():
  return jnp.asarray(np.random.RandomState(0).normal(size=(_B, 4)), jnp.float32)


class NamesTest(absltest.TestCase):

  def test_layer_names(self):
    self.assertEqual(layer_state.layer_name("v:hidden", 2), "v@layer2:hidden")
    self.assertEqual(layer_state.layer_name("n:sample", 0), "n@layer0:sample")
    with self.assertRaisesRegex(ValueError, "neither hidden nor per-sample"):
      layer_state.layer_name("count", 0)


class StackedLeavesTest(absltest.TestCase):

  def test_finds_what_a_layer_stack_slices(self):
    model = hk.transform_with_state(_stacked)
    params, state = model.init(jax.random.PRNGKey(0), _x())
    (module,) = state
    self.assertEqual(
        layer_state.stacked_leaves(model, params, state, None, _x()),
        {(module, "v:hidden"): _L, (module, "n:sample"): _L},
    )

  def test_finds_nothing_elsewhere(self):
    model = hk.transform_with_state(_loop)
    params, state = model.init(jax.random.PRNGKey(0), _x())
    self.assertEqual(
        layer_state.stacked_leaves(model, params, state, None, _x()), {}
    )
    # A step that does not trace with these inputs: the compiler says why.
    stacked = hk.transform_with_state(_stacked)
    params, state = stacked.init(jax.random.PRNGKey(0), _x())
    self.assertEqual(
        layer_state.stacked_leaves(stacked, params, state, None, _x()[:, :2]),
        {},
    )


class PerLayerTest(absltest.TestCase):

  def test_init_apply_and_restack(self):
    model = hk.transform_with_state(_stacked)
    wrapped = layer_state.per_layer(model)
    params, own = model.init(jax.random.PRNGKey(0), _x())
    params2, state = wrapped.init(jax.random.PRNGKey(0), _x())
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, params2)
    (module,) = own
    self.assertEqual(
        sorted(state[module]),
        [f"n@layer{i}:sample" for i in range(_L)]
        + [f"v@layer{i}:hidden" for i in range(_L)],
    )
    for i in range(_L):
      np.testing.assert_array_equal(
          state[module][f"v@layer{i}:hidden"], own[module]["v:hidden"][i]
      )
    # split and restack are inverse.
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, layer_state.restack(state), own
    )
    self.assertIs(layer_state.restack(own), own)
    # apply: per-layer state in, per-layer state out, the model's values.
    out, new = jax.jit(wrapped.apply)(params, state, None, _x())
    want, own_new = model.apply(params, own, None, _x())
    np.testing.assert_allclose(out, want, rtol=1e-6)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
        layer_state.restack(new),
        own_new,
    )
    # The model's own form passes through unchanged.
    out2, new2 = wrapped.apply(params, own, None, _x())
    np.testing.assert_array_equal(out2, want)
    self.assertEqual(sorted(new2[module]), ["n:sample", "v:hidden"])

  def test_the_program_reads_each_layer_from_its_own_leaf(self):
    wrapped = layer_state.per_layer(hk.transform_with_state(_stacked))
    params, state = wrapped.init(jax.random.PRNGKey(0), _x())
    leaves, tree = jax.tree_util.tree_flatten((params, state, None, _x()))
    flat = lambda *a: wrapped.apply(*jax.tree_util.tree_unflatten(tree, a))
    flattener = program_lib.Flattener()
    program = flattener.program(jax.make_jaxpr(flat)(*leaves))
    self.assertGreater(flattener.aliased, 0)
    # The stacked parameters are sliced per layer; the state is not.
    num_p = len(jax.tree_util.tree_leaves(params))
    num_s = len(jax.tree_util.tree_leaves(state))
    self.assertLen(set(program.invars[:num_p]) & flattener.sliced, num_p)
    self.assertFalse(
        set(program.invars[num_p : num_p + num_s]) & flattener.sliced
    )
    program_lib.drop_dead(program)
    # The layers read their state leaves directly (no stacking is left).
    state_in = set(program.invars[num_p : num_p + num_s])
    readers = {
        n.prim.name
        for n in program.nodes
        if any(a in state_in for a in n.ins if isinstance(a, int))
    }
    self.assertEqual(readers, {"mul", "add"})
    self.assertNotIn("concatenate", {n.prim.name for n in program.nodes})


class RowReadTest(absltest.TestCase):
  """What the flattener reads through a stack of rows, and what it keeps."""

  def flatten(self, fn, *shapes):
    flattener = program_lib.Flattener()
    avals = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    program = flattener.program(jax.make_jaxpr(fn)(*avals))
    return flattener, program

  def test_reads(self):
    def stack(a, b):
      return lax.concatenate([lax.expand_dims(v, (0,)) for v in (a, b)], 0)

    def rows(a, b):
      s = stack(a, b)
      one = lax.slice_in_dim(s, 1, 2)
      return (
          lax.squeeze(one, (0,)),  # row 1 itself
          lax.reshape(one, a.shape),  # row 1 itself
          lax.reshape(one, (a.size,)),  # another shape: kept
          lax.reshape(one, a.shape, dimensions=(0, 2, 1)),  # a transpose
      )

    flattener, program = self.flatten(rows, (2, 3), (2, 3))
    _, b = program.invars
    self.assertEqual(program.outvars[:2], [b, b])
    self.assertNotIn(b, program.outvars[2:])
    self.assertEqual(flattener.aliased, 2)

    def unit_axes(a, b):
      # Rows with a unit axis of their own: dropping that axis of a row's
      # slice is no row.
      s = stack(a, b)
      return lax.squeeze(lax.slice_in_dim(s, 0, 1), (1,))

    flattener, program = self.flatten(unit_axes, (1, 3), (1, 3))
    self.assertEqual(flattener.aliased, 0)
    self.assertNotIn(program.invars[0], program.outvars)


if __name__ == "__main__":
  absltest.main()

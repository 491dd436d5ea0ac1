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
"""ETP ops and plain Haiku layers inside ``cond`` / ``hk.cond`` /
``hk.switch`` (a branch chosen by the data at every step), ``fori_loop``
and ``hk.layer_stack`` (of layers with and without hidden state): D-RTRL
equals BPTT (float64, windows 1 and 3)."""

import warnings

from absl.testing import absltest
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import compiler as etp_compiler
from tests import test_util

H = haiku_etp
_T, _B = 8, 2


def _leak(y):
  v = H.get_hidden_state("v", y.shape, y.dtype)
  v = 0.8 * v + y
  H.set_hidden_state("v", v)
  return v


def _cond_step(x):
  a, b = H.Linear(4, name="a"), H.Linear(4, name="b")
  if hk.running_init():  # both branches' parameters
    a(x), b(x)
  y = hk.cond(jnp.sum(x) > 0, lambda x: a(x), lambda x: jnp.tanh(b(x)), x)
  return _leak(y)


def _switch_step(x):
  p, q = hk.Linear(4, name="p"), hk.Linear(4, name="q")
  if hk.running_init():
    p(x), q(x)
  branches = [
      lambda x: p(x),
      lambda x: 2.0 * q(x),
      lambda x: jnp.tanh(x @ jnp.ones((3, 4), x.dtype)),
  ]
  index = jnp.argmax(jnp.sum(x, axis=0)) % 3
  return _leak(hk.switch(index, branches, x))


def _fori_step(x):
  # One hk.Linear applied twice (shared weights) in a loop of two.
  lin = hk.Linear(3, name="shared")
  if hk.running_init():
    lin(x)
  return _leak(hk.fori_loop(0, 2, lambda i, h: jnp.tanh(lin(h)), x))


def _stack_step(x):
  # Three plain layers, their parameters stacked along a layer axis.
  layer = lambda h: jnp.tanh(hk.Linear(3)(h))
  return _leak(hk.layer_stack(3)(layer)(x))


def _stack_etp_step(x):
  layer = lambda h: jnp.tanh(H.Linear(3)(h))
  return _leak(hk.layer_stack(3)(layer)(x))


def _leaky_stack_step(x):
  # Three leaky layers (an ETP layer, then plain hk.Linear) in a layer
  # stack: Haiku stacks each one's hidden state along a layer axis.
  def layer(h):
    return _leak(jnp.tanh(H.Linear(3, name="etp")(h) + hk.Linear(3)(h)))

  return hk.layer_stack(3)(layer)(x)


class ControlFlowTest(absltest.TestCase):

  def check(self, step, branch_of=lambda x: None):
    with jax.enable_x64(True):
      model = hk.transform_with_state(step)
      rs = np.random.RandomState(1)  # a draw that takes every branch
      xs = jnp.asarray(rs.normal(size=(_T, _B, 3)))
      learner = H.d_rtrl(model)
      with warnings.catch_warnings():
        warnings.simplefilter("error", H.ApproximationWarning)
        params, state = learner.init(jax.random.PRNGKey(0), xs[0])
      # The reference runs the model as written, on the state its own init
      # builds (the learner's initial state, stacked as the model keeps it).
      _, model_state = model.init(jax.random.PRNGKey(0), xs[0])
      out = jax.eval_shape(model.apply, params, model_state, None, xs[0])[0]
      ys = jnp.asarray(rs.normal(size=(_T,) + out.shape))
      reference, results = test_util.bptt_and_windows(
          model, learner, params, state, model_state, xs, ys, (1, 3)
      )
      for path, leaf in jax.tree_util.tree_leaves_with_path(reference):
        self.assertTrue(np.any(leaf != 0), jax.tree_util.keystr(path))
      for result in results.values():
        test_util.assert_trees_close(result.grads, reference)
      return {branch_of(x) for x in xs}

  def test_cond_of_etp_layers(self):
    taken = self.check(_cond_step, lambda x: bool(jnp.sum(x) > 0))
    self.assertEqual(taken, {True, False})

  def test_switch_of_plain_layers(self):
    branch = lambda x: int(jnp.argmax(jnp.sum(x, axis=0)) % 3)
    self.assertEqual(self.check(_switch_step, branch), {0, 1, 2})

  def test_fori_loop_of_two(self):
    self.check(_fori_step)

  def test_layer_stack_of_three(self):
    for step in (_stack_step, _stack_etp_step):
      self.check(step)

  def test_a_scan_over_constants_is_unrolled(self):
    # hk.scan over a constant sequence (its xs are literals of the step):
    # one relation per iteration, and D-RTRL names none approximate.
    def step(x):
      lin = hk.Linear(3, name="shared")
      if hk.running_init():
        lin(x)
      scale = jnp.asarray([1.0, 0.5], x.dtype)
      y, _ = hk.scan(lambda h, s: (jnp.tanh(lin(h)) * s, None), x, scale)
      return _leak(y)

    learner = H.d_rtrl(hk.transform_with_state(step))
    x = jnp.ones((_B, 3))
    params, state = learner.init(jax.random.PRNGKey(0), x)
    compiled = learner.compile(params, state, None, x)
    self.assertLen(compiled.relations, 2)
    self.assertTrue(
        all(v.exact for v in learner.verdicts(params, state, None, x))
    )

  def test_layer_stack_of_three_leaky_layers(self):
    self.check(_leaky_stack_step)

  def test_a_layer_stacks_state_is_kept_per_layer(self):
    model = hk.transform_with_state(_leaky_stack_step)
    x = jnp.asarray(np.random.RandomState(0).normal(size=(_B, 3)), jnp.float32)
    learner = H.d_rtrl(model)
    params, state = learner.init(jax.random.PRNGKey(0), x)
    _, own = model.init(jax.random.PRNGKey(0), x)
    ((module, entries),) = own.items()
    self.assertEqual(
        jax.tree_util.tree_map(np.shape, entries), {"v:hidden": (3, _B, 3)}
    )
    per_layer = {f"v@layer{i}:hidden": (_B, 3) for i in range(3)}
    self.assertEqual(jax.tree_util.tree_map(np.shape, state[module]), per_layer)
    # Each layer's state is a hidden group of its own.
    compiled = learner.compile(params, state, None, x)
    self.assertEqual(
        sorted(s for g in compiled.groups for s in g.states),
        [f"{module}/v@layer{i}" for i in range(3)],
    )
    # The model's own (stacked) state is split by init_state, and the
    # learner's steps give the model's outputs and new state, per layer.
    self.assertEqual(
        jax.tree_util.tree_map(
            np.shape, learner.init_state(params, own, None, x)[module]
        ),
        per_layer,
    )
    out, stepped = jax.jit(learner.apply)(params, state, None, x)
    want, own_new = model.apply(params, own, None, x)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    for i in range(3):
      np.testing.assert_allclose(
          stepped[module][f"v@layer{i}:hidden"],
          own_new[module]["v:hidden"][i],
          rtol=1e-6,
      )
    # reset restores the initial state per layer (hk.layer_stack's init
    # keeps the values its layers write while it runs).
    reset = learner.reset(stepped)
    for name, value in state[module].items():
      np.testing.assert_array_equal(reset[module][name], value)
      self.assertFalse(np.array_equal(stepped[module][name], value))
    # The compiler alone, given the stacked state, names the remedy.
    with self.assertRaisesRegex(
        H.CompileError, r"is sliced by a scan: it has a leading layer axis"
    ):
      etp_compiler.compile_step(model, params, own, None, x)


if __name__ == "__main__":
  absltest.main()

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
"""Coverage of every public module, in the dm-haiku descriptors spirit.

Each public ``hk.Module`` of ``haiku_etp`` is registered once in
``haiku_etp.testing.MODULE_EXAMPLES`` with a small step that uses it. Every
entry is run automatically through

* ``jit`` (same outputs and state as eager execution);
* each learner over a sequence in float64 (D-RTRL and ES-D-RTRL online,
  the BPTT learner over the whole sequence), against an independent
  whole-sequence BPTT: finite gradients, non-zero for every parameter leaf,
  equal to BPTT (relative error <= 1e-8) for the BPTT learner and the
  learners the entry lists as exact, and a measured cosine otherwise; and
  truncated BPTT far from it (printed as a table at the end);
* a checkpoint round trip of parameters, model state and traces through
  ``np.savez``, after which the learner continues bit for bit.

A public module without an entry, or an entry naming no public module,
fails ``test_every_public_module_is_registered``.
"""

import inspect
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
from haiku_etp import testing

_EXAMPLES = {e.name: e for e in testing.MODULE_EXAMPLES}
_NAMES = [dict(testcase_name=n, name=n) for n in _EXAMPLES]
_TOL = 1e-8
_STEPS = 6
_BATCH = 2


def _public_modules():
  return {
      name
      for name in haiku_etp.__all__
      if inspect.isclass(getattr(haiku_etp, name))
      and issubclass(getattr(haiku_etp, name), hk.Module)
  }


def _inputs(example, num_steps, dtype=jnp.float32):
  rs = np.random.RandomState(len(example.name))
  xs = rs.normal(size=(num_steps, _BATCH) + example.input_shape)
  return jnp.asarray(example.input_scale * xs, dtype)


def _flatten(tree, prefix=""):
  """``{"a/b|c": array}`` from nested dicts of arrays (Haiku's layout)."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(_flatten(value, path + "|"))
    else:
      flat[path] = np.asarray(value)
  return flat


def _unflatten(flat):
  tree = {}
  for path, value in flat.items():
    *parents, leaf = path.split("|")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(value)
  return tree


class RegistryTest(absltest.TestCase):

  def test_every_public_module_is_registered(self):
    public = _public_modules()
    self.assertNotEmpty(public)
    self.assertEqual(
        sorted(public - set(_EXAMPLES)), [], "public modules not registered"
    )
    self.assertEqual(
        sorted(set(_EXAMPLES) - public), [], "entries naming no public module"
    )
    self.assertLen(testing.MODULE_EXAMPLES, len(_EXAMPLES), "duplicates")

  def test_each_step_uses_its_module(self):
    for name, example in _EXAMPLES.items():
      with self.subTest(name):
        used = set()

        def interceptor(next_f, args, kwargs, context):
          used.add(type(context.module).__name__)
          return next_f(*args, **kwargs)

        def step(x, example=example):
          with hk.intercept_methods(interceptor):
            return example.step(x)

        model = hk.transform_with_state(step)
        x0 = _inputs(example, 1)[0]
        jax.eval_shape(model.init, jax.random.PRNGKey(0), x0)
        self.assertIn(name, used)


class JitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(_NAMES)
  def test_apply(self, name):
    example = _EXAMPLES[name]
    model = hk.transform_with_state(example.step)
    xs = _inputs(example, 3)
    params, state = model.init(jax.random.PRNGKey(0), xs[0])
    apply = self.variant(model.apply)
    eager_state = state
    for x in xs:
      out, state = apply(params, state, None, x)
      expected, eager_state = model.apply(params, eager_state, None, x)
      np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state, eager_state, rtol=1e-5, atol=1e-6)
    chex.assert_tree_all_finite(state)


class SequenceTest(parameterized.TestCase):
  """Every learner against whole-sequence BPTT in float64."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.rows = {}

  @classmethod
  def tearDownClass(cls):
    lines = [
        "",
        "module | exact | "
        + " | ".join(testing.MODULE_LEARNERS + (testing.TRUNCATED_BPTT,)),
    ]
    for name, row in sorted(cls.rows.items()):
      exact = ",".join(_EXAMPLES[name].exact) or "-"
      cells = [f"{row[k][0]:.2e} / {row[k][1]:.4f}" for k in row]
      lines.append(f"{name} | {exact} | " + " | ".join(cells))
    if cls.rows:
      print("\n".join(lines + ["(relative error / cosine vs BPTT)"]))
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  @parameterized.named_parameters(_NAMES)
  def test_against_bptt(self, name):
    example = _EXAMPLES[name]
    run = testing.run_module_example(
        example, num_steps=_STEPS, batch_size=_BATCH, dtype=jnp.float64
    )
    for path, leaf in jax.tree_util.tree_leaves_with_path(run.reference):
      self.assertEqual(leaf.dtype, jnp.float64)
      self.assertTrue(
          np.any(np.asarray(leaf) != 0),
          f"BPTT gradient {jax.tree_util.keystr(path)} is all zero",
      )
    row = {}
    for learner_name in testing.MODULE_LEARNERS:
      grads = run.grads[learner_name]
      chex.assert_trees_all_equal_structs(grads, run.params)
      chex.assert_tree_all_finite(grads)
      for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        self.assertTrue(
            np.any(np.asarray(leaf) != 0),
            f"{learner_name} gradient {jax.tree_util.keystr(path)} is all "
            "zero",
        )
      np.testing.assert_allclose(
          run.losses[learner_name], run.reference_losses, rtol=1e-12
      )
      err = testing.relative_error(grads, run.reference)
      cos = testing.cosine_similarity(grads, run.reference)
      row[learner_name] = (err, cos)
      if learner_name == "bptt" or learner_name in example.exact:
        self.assertLessEqual(err, _TOL, f"{learner_name} on {name}")
      else:
        # Measured, not asserted: only a sanity bound.
        self.assertGreater(cos, 0.0, f"{learner_name} on {name}")
    # Truncated BPTT (no traces) is far from the reference, so the traces
    # are what closes the gap. A parameter that acts only on later steps
    # (an adaptation time constant) may get no in-window gradient at all.
    truncated = run.grads[testing.TRUNCATED_BPTT]
    chex.assert_tree_all_finite(truncated)
    err = testing.relative_error(truncated, run.reference)
    row[testing.TRUNCATED_BPTT] = (
        err,
        testing.cosine_similarity(truncated, run.reference),
    )
    self.assertGreater(err, 1e-3)
    self.rows[name] = row

  @parameterized.named_parameters(_NAMES)
  def test_compiler_verdict(self, name):
    example = _EXAMPLES[name]
    model = hk.transform_with_state(example.step)
    learner = haiku_etp.d_rtrl(model)
    x0 = _inputs(example, 1, jnp.float64)[0]
    params, state = learner.init(jax.random.PRNGKey(0), x0)
    compiled = learner.compile(params, state, None, x0)
    self.assertEqual(compiled.drtrl_exact, "d_rtrl" in example.exact)
    codes = {d.code for d in compiled.diagnostics}
    self.assertNotIn("untraced_parameter", codes)


class CheckpointTest(parameterized.TestCase):

  @parameterized.named_parameters(_NAMES)
  def test_round_trip(self, name):
    example = _EXAMPLES[name]
    model = hk.transform_with_state(example.step)
    learner = haiku_etp.d_rtrl(model)
    xs = _inputs(example, 3)
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
    out = jax.eval_shape(learner.apply, params, state, None, xs[0])[0]
    y = jnp.ones(out.shape, out.dtype)
    fn = jax.jit(learner.value_and_grad(testing.mse))
    for x in xs[:2]:
      _, _, state = fn(params, state, None, x, y)

    tmp = self.enter_context(tempfile.TemporaryDirectory())
    path = os.path.join(tmp, "ckpt.npz")
    with open(path, "wb") as f:
      np.savez(
          f,
          **{"params|" + k: v for k, v in _flatten(params).items()},
          **{"state|" + k: v for k, v in _flatten(state).items()},
      )
    with np.load(path) as data:
      loaded = _unflatten({k: data[k] for k in data.files})
    chex.assert_trees_all_equal(loaded["params"], params)
    chex.assert_trees_all_equal(loaded["state"], state)

    expected = fn(params, state, None, xs[2], y)
    actual = fn(loaded["params"], loaded["state"], None, xs[2], y)
    chex.assert_trees_all_equal(actual, expected)


if __name__ == "__main__":
  absltest.main()

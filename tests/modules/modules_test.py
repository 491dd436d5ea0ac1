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

* ``jit``: ``learner.unroll`` under ``jit`` gives the outputs and state of
  the step applied eagerly, step by step;
* each learner over a sequence in float64 (D-RTRL and ES-D-RTRL online,
  the BPTT learner over the whole sequence), against an independent
  whole-sequence BPTT: finite gradients, non-zero for every parameter leaf,
  equal to BPTT (relative error <= 1e-8) for the BPTT learner and the
  learners the entry lists as exact, and a measured cosine otherwise; and
  truncated BPTT far from it (printed as a table at the end);
* a checkpoint round trip of parameters, model state and traces through
  ``np.savez``, after which every learner continues bit for bit;
* the compiler's verdict: a D-RTRL learner emits
  ``haiku_etp.ApproximationWarning`` exactly for the entries whose D-RTRL is
  approximate, and ``compile(...).drtrl_exact`` says the same.

The oracle, the learners and the unroll of one entry are one ``jit``
program, compiled once and run again for the checkpoint. An entry whose step
is another entry's under another module name (the N-D convolutional cells
built with two spatial dimensions) is checked to trace the same program and
runs once, as the other.

A public module without an entry, or an entry naming no public module,
fails ``test_every_public_module_is_registered``.
"""

import inspect
import os
import tempfile
import warnings
import zlib

from absl.testing import absltest
from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import testing
from tests import test_util

_EXAMPLES = {e.name: e for e in testing.MODULE_EXAMPLES}
_NAMES = [dict(testcase_name=n, name=n) for n in _EXAMPLES]
# Entries whose step is another entry's step under another module name:
# ConvNDLSTM(2, (4, 4), 2, 3) is Conv2DLSTM((4, 4), 2, 3) (and the GRUs
# alike), the same jaxpr and parameters (checked by
# RegistryTest.test_same_steps). ModuleTest runs the covering entry only:
# ModuleTest.test_module_Conv2DLSTM / test_module_Conv2DGRU cover these.
_SAME_STEP = {"ConvNDLSTM": "Conv2DLSTM", "ConvNDGRU": "Conv2DGRU"}
_MODULE_NAMES = [n for n in _NAMES if n["name"] not in _SAME_STEP]
_STEPS = 6
_BATCH = 2
_LEARNERS = testing.MODULE_LEARNERS + (testing.TRUNCATED_BPTT,)


def _public_modules():
  return {
      name
      for name in haiku_etp.__all__
      if inspect.isclass(getattr(haiku_etp, name))
      and issubclass(getattr(haiku_etp, name), hk.Module)
  }


def _x0(example):
  return jax.ShapeDtypeStruct((_BATCH,) + example.input_shape, jnp.float32)


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
    # device_put copies the array as it is (jnp.asarray compiles a program
    # per shape to do the same).
    node[leaf] = jax.device_put(value)
  return tree


def _model_state(state):
  return {m: e for m, e in state.items() if not m.startswith("~etp")}


class VariantsTest(chex.TestCase):
  """One step of each kind of module eagerly, under ``jit`` and under
  ``pmap`` on the host devices (chex variants): the same outputs and hidden
  state."""

  # The three variants of a module share its inputs, parameters and
  # expected outputs: ``{name: (model, params, state, x, want)}``.
  _problems = {}

  def setUp(self):
    super().setUp()
    chex.assert_devices_available(4, "cpu", not_less_than=True)

  def problem(self, name):
    if name not in self._problems:
      example = _EXAMPLES[name]
      model = hk.transform_with_state(example.step)
      # Drawn with NumPy and initialised in one program: no per-op
      # programs to compile for the set-up.
      x = jnp.asarray(
          example.input_scale
          * np.random.RandomState(1).normal(
              size=(_BATCH,) + example.input_shape
          ),
          jnp.float32,
      )
      params, state = test_util.fast_jit(model.init)(jax.random.PRNGKey(0), x)
      want = jax.jit(model.apply)(params, state, None, x)
      self._problems[name] = (model, params, state, x, want)
    return self._problems[name]

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  @parameterized.named_parameters(
      *[dict(testcase_name=n, name=n) for n in ("GRU", "LIF", "LRU", "Conv1D")]
  )
  def test_step(self, name):
    model, params, state, x, (want_out, want_state) = self.problem(name)
    out, new_state = self.variant(model.apply)(params, state, None, x)
    chex.assert_trees_all_close((out, new_state), (want_out, want_state))


class RegistryTest(absltest.TestCase):

  def test_every_public_module_is_registered(self):
    public = _public_modules()
    self.assertNotEmpty(public)
    modules = {e.module_name for e in testing.MODULE_EXAMPLES}
    self.assertEqual(
        sorted(public - modules), [], "public modules not registered"
    )
    self.assertEqual(
        sorted(modules - public), [], "entries naming no public module"
    )
    self.assertLen(testing.MODULE_EXAMPLES, len(_EXAMPLES), "duplicates")

  def test_same_steps(self):
    """The entries ModuleTest leaves to another trace that entry's step."""

    def step(name):
      example = _EXAMPLES[name]
      model = hk.transform_with_state(example.step)
      x = _x0(example)
      params, state = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
      jaxpr = jax.make_jaxpr(model.apply)(params, state, None, x)
      creations = test_util.param_creations(example.step, x)
      # Everything but the module's name.
      return (
          example.input_shape,
          example.input_scale,
          example.exact,
          example.es_decay,
          str(jaxpr),
          [c[1:] for c in creations],
          [len(e) for e in state.values()],
      )

    for name, cover in _SAME_STEP.items():
      with self.subTest(name):
        self.assertEqual(step(name), step(cover))

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
        jax.eval_shape(model.init, jax.random.PRNGKey(0), _x0(example))
        self.assertIn(example.module_name, used)


class VerdictTest(parameterized.TestCase):
  """The ApproximationWarning and ``drtrl_exact`` agree with the registry."""

  @parameterized.named_parameters(_NAMES)
  def test_approximation_warning(self, name):
    example = _EXAMPLES[name]
    exact = "d_rtrl" in example.exact
    learner = haiku_etp.d_rtrl(hk.transform_with_state(example.step))
    init = lambda: jax.eval_shape(
        learner.init, jax.random.PRNGKey(0), _x0(example)
    )
    if exact:
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params, state = init()
      emitted = [
          str(w.message)
          for w in caught
          if issubclass(w.category, haiku_etp.ApproximationWarning)
      ]
      self.assertEmpty(emitted, name)
    else:
      with testing.expect_warning(haiku_etp.ApproximationWarning, "d_rtrl"):
        params, state = init()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
      compiled = learner.compile(params, state, None, _x0(example))
    self.assertEqual(compiled.drtrl_exact, exact, compiled.report())
    codes = {d.code for d in compiled.diagnostics}
    self.assertNotIn("untraced_parameter", codes)
    # RTRL is exact on every step, so it never warns.
    rtrl = haiku_etp.rtrl(hk.transform_with_state(example.step))
    with warnings.catch_warnings():
      warnings.simplefilter("error", haiku_etp.ApproximationWarning)
      jax.eval_shape(rtrl.init, jax.random.PRNGKey(0), _x0(example))


class ModuleTest(parameterized.TestCase):
  """jit, every learner against whole-sequence BPTT, checkpoint round trip."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.rows = {}

  @classmethod
  def tearDownClass(cls):
    lines = ["", "module | exact | " + " | ".join(_LEARNERS)]
    for name, row in sorted(cls.rows.items()):
      exact = ",".join(_EXAMPLES[name].exact) or "-"
      cells = [f"{row[k][0]:.2e} / {row[k][1]:.4f}" for k in row]
      lines.append(f"{name} | {exact} | " + " | ".join(cells))
    for name, cover in sorted(_SAME_STEP.items()):
      if cover in cls.rows:
        lines.append(f"{name} | the step of {cover}")
    if cls.rows:
      print("\n".join(lines + ["(relative error / cosine vs BPTT)"]))
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  def problem(self, example, model, learners):
    """``(params, state, states, xs, ys)`` in float64 from the name's seed.

    ``states[n]`` is learner ``n``'s initial state. The model's
    initialisation and the learners' initial states are one program.
    """
    seed = zlib.crc32(example.name.encode())
    rs = np.random.RandomState(seed)
    size = (_STEPS, _BATCH) + example.input_shape
    xs = jax.device_put(example.input_scale * rs.normal(size=size))

    def setup(key, xs):
      params, state = model.init(key, xs[0])
      states = {
          n: l.init_state(params, state, None, xs[0])
          for n, l in learners.items()
      }
      return params, state, states

    params, state, states = test_util.fast_jit(setup)(
        jax.random.PRNGKey(seed), xs
    )
    x0 = jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype)
    out = jax.eval_shape(model.apply, params, state, None, x0)[0]
    ys = jax.device_put(rs.normal(size=(_STEPS,) + out.shape))
    return params, state, states, xs, ys

  @parameterized.named_parameters(_MODULE_NAMES)
  def test_module(self, name):
    example = _EXAMPLES[name]
    model = hk.transform_with_state(example.step)
    with warnings.catch_warnings():
      # Checked by VerdictTest.
      warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
      learners = {
          n: testing.make_module_learner(example, n, model) for n in _LEARNERS
      }
      params, state, states, xs, ys = self.problem(example, model, learners)
    fns = {
        n: l.sequence_grad(testing.mse, window=None if n == "bptt" else 1)
        for n, l in learners.items()
    }

    def run(params, states, xs, ys):
      reference = testing.bptt_grads(
          model, testing.mse, params, state, None, xs, ys
      )
      results = {
          n: fn(params, states[n], None, xs, ys) for n, fn in fns.items()
      }
      unrolled = learners["d_rtrl"].unroll(params, states["d_rtrl"], None, xs)
      return reference, results, unrolled

    program = test_util.fast_jit(run)
    (reference, reference_losses), results, unrolled = program(
        params, states, xs, ys
    )
    with self.subTest("jit"):
      self.check_jit(model, params, state, xs, unrolled)
    with self.subTest("learners"):
      self.check_learners(example, reference, reference_losses, results)
    with self.subTest("checkpoint"):
      final = {n: r.state for n, r in results.items()}
      self.check_checkpoint(program, params, final, xs, ys)

  def check_jit(self, model, params, state, xs, unrolled):
    """``unroll`` under ``jit`` equals the step applied eagerly."""
    outs, unrolled_state = unrolled
    # Inputs and outputs sliced on the host: no programs to slice them.
    outs = np.asarray(outs)
    for t, x in enumerate(np.asarray(xs)):
      out, state = model.apply(params, state, None, jax.device_put(x))
      np.testing.assert_allclose(outs[t], out, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
        _model_state(unrolled_state), state, rtol=1e-5, atol=1e-6
    )
    chex.assert_tree_all_finite(state)

  def check_learners(self, example, reference, reference_losses, results):
    for path, leaf in jax.tree_util.tree_leaves_with_path(reference):
      self.assertEqual(leaf.dtype, jnp.float64)
      self.assertTrue(
          np.any(np.asarray(leaf) != 0),
          f"BPTT gradient {jax.tree_util.keystr(path)} is all zero",
      )
    row = {}
    for name in testing.MODULE_LEARNERS:
      grads = results[name].grads
      chex.assert_trees_all_equal_structs(grads, reference)
      chex.assert_tree_all_finite(grads)
      for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        self.assertTrue(
            np.any(np.asarray(leaf) != 0),
            f"{name} gradient {jax.tree_util.keystr(path)} is all zero",
        )
      np.testing.assert_allclose(
          results[name].losses, reference_losses, rtol=1e-12
      )
      err = testing.relative_error(grads, reference)
      cos = testing.cosine_similarity(grads, reference)
      row[name] = (err, cos)
      # RTRL equals BPTT on every step.
      if name in ("bptt", "rtrl") or name in example.exact:
        self.assertLessEqual(err, test_util.EXACT_RTOL, f"{name}")
      else:
        # Measured, not asserted: only a sanity bound.
        self.assertGreater(cos, 0.0, name)
    # Truncated BPTT (no traces) is far from the reference, so the traces
    # are what closes the gap. A parameter that acts only on later steps
    # (an adaptation time constant) may get no in-window gradient at all.
    truncated = results[testing.TRUNCATED_BPTT].grads
    chex.assert_tree_all_finite(truncated)
    err = testing.relative_error(truncated, reference)
    row[testing.TRUNCATED_BPTT] = (
        err,
        testing.cosine_similarity(truncated, reference),
    )
    self.assertGreater(err, 1e-3)
    self.rows[example.name] = row

  def check_checkpoint(self, program, params, states, xs, ys):
    """Parameters and learner states through ``np.savez``, then onwards."""
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    path = os.path.join(tmp, "ckpt.npz")
    with open(path, "wb") as f:
      np.savez(
          f,
          **{"params|" + k: v for k, v in _flatten(params).items()},
          **{"states|" + k: v for k, v in _flatten(states).items()},
      )
    with np.load(path) as data:
      loaded = _unflatten({k: data[k] for k in data.files})
    chex.assert_trees_all_equal(loaded["params"], params)
    chex.assert_trees_all_equal(loaded["states"], states)
    chex.assert_trees_all_equal_shapes_and_dtypes(loaded["states"], states)
    expected = program(params, states, xs, ys)
    actual = program(loaded["params"], loaded["states"], xs, ys)
    chex.assert_trees_all_equal(actual, expected)


if __name__ == "__main__":
  absltest.main()

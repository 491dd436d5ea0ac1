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
"""Sparse connectivity and event-driven inputs.

The sparse op against the dense op with the same mask (forward, rules,
learners, float64), its traces one entry per synapse, gradients zero off the
mask, a full mask equal to the dense op, the event-driven sums equal to the
products, and the errors that name the bad argument.
"""

import warnings

from absl.testing import absltest
from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import extend
from haiku_etp import testing
from tests import test_util

_T, _B, _I, _O = 5, 2, 6, 4


def _mask(seed=0, density=0.4):
  return haiku_etp.Connectivity.random((_I, _O), density, seed).mask()


def _normal(seed, shape):
  return jnp.asarray(np.random.RandomState(seed).standard_normal(shape))


def _integrator(make_layer, readout_mask=None):
  """``v = 0.8 v + layer(x)``, read out by a (masked) ``Linear``."""

  def step(x):
    y = make_layer()(x)
    v = haiku_etp.get_hidden_state("v", y.shape, y.dtype)
    v = 0.8 * v + y
    haiku_etp.set_hidden_state("v", v)
    return haiku_etp.Linear(3, mask=readout_mask, name="readout")(jnp.tanh(v))

  return hk.transform_with_state(step)


def _constructed(make):
  """A thunk that constructs a module inside ``hk.transform``."""
  return lambda: hk.transform(make).init(jax.random.PRNGKey(0))


def _grads(learner, params, state, xs, ys, window):
  state = learner.init_state(params, state, None, xs[0])
  fn = learner.sequence_grad(testing.mse, window=window)
  return fn(params, state, None, xs, ys).grads


class ConnectivityTest(parameterized.TestCase):

  def test_from_mask_random_and_equality(self):
    mask = _mask()
    c = haiku_etp.Connectivity.from_mask(mask)
    self.assertEqual(c.nnz, int(mask.sum()))
    np.testing.assert_array_equal(c.mask(), mask)
    # Sorted by output, then input.
    self.assertTrue(np.all(np.diff(c.cols * _I + c.rows) > 0))
    self.assertEqual(c, haiku_etp.Connectivity.from_mask(mask.astype(float)))
    self.assertEqual(hash(c), hash(haiku_etp.Connectivity.from_mask(mask)))
    self.assertNotEqual(c, haiku_etp.Connectivity.from_mask(_mask(1)))
    r = haiku_etp.Connectivity.random((200, 300), 0.01, seed=3)
    self.assertBetween(r.density, 0.007, 0.013)
    self.assertEqual(r, haiku_etp.Connectivity.random((200, 300), 0.01, 3))

  @parameterized.named_parameters(
      (
          "out_of_range",
          lambda: haiku_etp.Connectivity([0, 6], [1, 1], (6, 4)),
          r"rows must lie in \[0, 6\)",
      ),
      (
          "negative",
          lambda: haiku_etp.Connectivity([0], [-1], (6, 4)),
          r"cols must lie in \[0, 4\)",
      ),
      (
          "float_indices",
          lambda: haiku_etp.Connectivity([0.0, 1.0], [1, 2], (6, 4)),
          "rows must be integers, got dtype float64",
      ),
      (
          "lengths",
          lambda: haiku_etp.Connectivity([0, 1], [1], (6, 4)),
          "2 rows and 1 cols",
      ),
      (
          "duplicate",
          lambda: haiku_etp.Connectivity([1, 1], [2, 2], (6, 4)),
          r"synapse \(1, 2\) more than once",
      ),
      (
          "bad_shape",
          lambda: haiku_etp.Connectivity([0], [0], (6,)),
          "shape must be two positive ints",
      ),
      (
          "mask_rank",
          lambda: haiku_etp.Connectivity.from_mask(np.ones(3)),
          "mask must have rank 2",
      ),
      (
          "density",
          lambda: haiku_etp.Connectivity.random((3, 3), 0.0),
          r"density must be in \(0, 1\]",
      ),
  )  # pyformat: disable
  def test_bad_connectivity(self, thunk, regex):
    with self.assertRaisesRegex(ValueError, regex):
      thunk()

  def test_bad_op_and_module_arguments(self):
    c = haiku_etp.Connectivity.from_mask(_mask())
    x = jnp.ones((_B, _I))
    cases = (
        (
            lambda: haiku_etp.sparse(x, jnp.ones(c.nnz + 1), c),
            rf"shape \({c.nnz},\), one value per synapse",
        ),
        (
            lambda: haiku_etp.sparse(jnp.ones((_B, 5)), jnp.ones(c.nnz), c),
            rf"shape \({_I},\) or \(B, {_I}\)",
        ),
        (
            lambda: haiku_etp.sparse(x, jnp.ones(c.nnz), _mask()),
            "must be a haiku_etp.Connectivity, got ndarray",
        ),
        (
            lambda: haiku_etp.sparse(x, jnp.ones(c.nnz), c, jnp.ones(3)),
            rf"Bias of sparse must have shape \({_O},\)",
        ),
        (
            lambda: haiku_etp.sparse(x, jnp.ones(c.nnz), c, max_events=0),
            rf"max_events must be None or an int in \[1, {_I}\]",
        ),
        (
            lambda: haiku_etp.dense(x, jnp.ones((_I, _O)), max_events=2.5),
            "max_events must be None or an int",
        ),
        (
            _constructed(lambda: haiku_etp.Linear(_O, mask=np.ones((_I, 3)))),
            rf"mask of Linear must have shape \(input_size, {_O}\)",
        ),
        (
            lambda: hk.transform(
                lambda x: haiku_etp.Linear(_O, mask=np.ones((5, _O)))(x)
            ).init(jax.random.PRNGKey(0), x),
            rf"must have shape \({_I}, {_O}\) for inputs of {_I} features",
        ),
        (
            _constructed(lambda: haiku_etp.SparseLinear(_mask())),
            "connectivity of SparseLinear must be a haiku_etp.Connectivity",
        ),
        (
            _constructed(lambda: haiku_etp.SparseLinear(c, max_events=-1)),
            "max_events must be a positive int",
        ),
    )  # pyformat: disable
    for thunk, regex in cases:
      with self.subTest(regex):
        with self.assertRaisesRegex(ValueError, regex):
          thunk()

  def test_a_traced_mask_is_refused(self):
    def f(m):
      return haiku_etp.Connectivity.from_mask(m)

    with self.assertRaisesRegex(ValueError, "mask must be concrete"):
      jax.jit(f)(jnp.ones((2, 2)))


class SparseOpTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  def test_equals_dense_with_the_mask_and_events(self):
    c = haiku_etp.Connectivity.from_mask(_mask())
    w, b = _normal(1, (c.nnz,)), _normal(2, (_O,))
    dense_w = jnp.zeros((_I, _O)).at[c.rows, c.cols].set(w)
    # Spikes at a rate of about 1/3, scaled, so the values matter.
    x = _normal(3, (8, _I)) * (np.random.RandomState(4).rand(8, _I) < 0.35)
    want = np.asarray(x) @ np.asarray(dense_w) + np.asarray(b)
    active = int(np.max(np.sum(np.asarray(x) != 0, -1)))
    all_max_events = (None, active, _I, 1)  # 1: falls back to the sum

    # The products, the sums and the derivatives in one program: the op is
    # the same function under jit as eagerly (its impl is its lowering).
    def run(x, w, b, dense_w):
      outs = [
          (
              haiku_etp.sparse(x, w, c, b, max_events=max_events),
              haiku_etp.dense(x, dense_w, b, max_events=max_events),
              haiku_etp.sparse(x[0], w, c, b, max_events=max_events),
          )
          for max_events in all_max_events
      ]
      f = lambda x, w: jnp.sum(jnp.sin(haiku_etp.sparse(x, w, c, max_events=6)))
      g = lambda x, w: jnp.sum(jnp.sin(x @ w))
      e = lambda x, w: jnp.sum(jnp.sin(haiku_etp.dense(x, w, max_events=6)))
      grads = [
          jax.grad(f, (0, 1))(x, w),
          jax.grad(g, (0, 1))(x, dense_w),
          jax.grad(e, (0, 1))(x, dense_w),
      ]
      return outs, grads

    outs, grads = test_util.fast_jit(run)(x, w, b, dense_w)
    for max_events, (sparse_out, dense_out, one) in zip(all_max_events, outs):
      with self.subTest(max_events=max_events):
        np.testing.assert_allclose(sparse_out, want, atol=1e-12)
        np.testing.assert_allclose(dense_out, want, atol=1e-12)
        np.testing.assert_allclose(one, want[0], atol=1e-12)
    # The event-driven sum's derivatives are the product's, also at the
    # inputs that are zero.
    (gx, gw), (hx, hw), (ex, ew) = grads
    np.testing.assert_allclose(gx, hx, atol=1e-12)
    np.testing.assert_allclose(gw, hw[c.rows, c.cols], atol=1e-12)
    np.testing.assert_allclose(ex, hx, atol=1e-12)
    np.testing.assert_allclose(ew, hw, atol=1e-12)
    # vmap over the input keeps the primitive.
    jaxpr = jax.make_jaxpr(jax.vmap(lambda x: haiku_etp.sparse(x, w, c)))(x)
    self.assertIn("etp_batched_sparse", str(jaxpr))

  @parameterized.named_parameters(
      ("kept_S1_fast", False, 1, True, 1),
      ("kept_S2_generic", False, 2, False, 1),
      ("stripped_S2_fast", True, 2, True, 1),
      # Windows of 2 over 5 steps in closed form (the generic form too).
      ("kept_S2_fast_window", False, 2, True, 2),
      ("stripped_S1_generic_window", True, 1, False, 2),
  )
  def test_drtrl_rule_oracle(self, strip, num_states, fast, window):
    c = haiku_etp.Connectivity.from_mask(_mask())
    weights = {"weight": _normal(5, (c.nnz,)), "bias": _normal(6, (_O,))}
    xs = _normal(7, (_T, 3, _I))
    if window == 1:
      # Step by step on two steps: the trace is rolled through D once, and
      # the oracle unrolls its steps, so more take no other code path (as
      # in oracles_test).
      xs = xs[:2]
    params = {"has_bias": True, "connectivity": c, "max_events": None}
    r = test_util.jit_oracle(
        testing.drtrl_rule_oracle,
        extend.etp_batched_sparse_p,
        params,
        num_hidden_state=num_states,
        strip_batch=strip,
        fast=fast,
        window=window,
    )(weights, xs)
    self.assertLess(r.relative_error, 1e-12)

  # ES-D-RTRL's oracle takes no batch, fast or window option: once per S
  # (it ran identically in every row of test_drtrl_rule_oracle with that S).
  @parameterized.parameters(1, 2)
  def test_pp_rule_oracle(self, num_states):
    c = haiku_etp.Connectivity.from_mask(_mask())
    weights = {"weight": _normal(5, (c.nnz,)), "bias": _normal(6, (_O,))}
    xs = _normal(7, (_T, 3, _I))[:2]  # Two steps, as above.
    params = {"has_bias": True, "connectivity": c, "max_events": None}
    r = test_util.jit_oracle(
        testing.pp_rule_oracle,
        extend.etp_batched_sparse_p,
        params,
        num_hidden_state=num_states,
        decay=(0.8, 0.0),
        leak=0.8,
    )(weights, xs)
    self.assertLess(r.relative_error, 1e-12)


class SparseLearnerTest(absltest.TestCase):
  """Each test is one program: the initialisation, the BPTT references and
  every learner it compares (``test_util.compile_once``: only tolerances
  and exact zeros are checked)."""

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  def test_masked_linear_is_the_dense_op_on_its_synapses(self):
    mask, readout_mask = (
        _mask(0),
        haiku_etp.Connectivity.random((_O, 3), 0.6, seed=2).mask(),
    )
    masked = _integrator(lambda: haiku_etp.Linear(_O, mask=mask), readout_mask)
    dense = _integrator(lambda: haiku_etp.Linear(_O))
    xs = _normal(8, (_T, _B, _I))
    ys = _normal(9, (_T, _B, 3))
    learners = {
        name: haiku_etp.make_learner(name, masked, **options)
        for name, options in (
            ("d_rtrl", {}),
            ("es_d_rtrl", {"decay": (0.8, 0.0)}),
        )
    }
    windows = (1, 3)

    def run(xs, ys):
      params, state = masked.init(jax.random.PRNGKey(0), xs[0])
      # The dense model with the masked weights computes the same function.
      dense_params = {
          "linear": {
              "w": params["linear"]["w"] * mask,
              "b": params["linear"]["b"],
          },
          "readout": {
              "w": params["readout"]["w"] * readout_mask,
              "b": params["readout"]["b"],
          },
      }
      reference = testing.bptt_grads(
          masked, testing.mse, params, state, None, xs, ys
      )[0]
      dense_ref = testing.bptt_grads(
          dense, testing.mse, dense_params, state, None, xs, ys
      )[0]
      got = {
          (name, window): _grads(learner, params, state, xs, ys, window)
          for name, learner in learners.items()
          for window in windows
      }
      return params, state, reference, dense_ref, got

    params, state, reference, dense_ref, got = test_util.compile_once(run)(
        xs, ys
    )
    for m, path in ((mask, "linear"), (readout_mask, "readout")):
      np.testing.assert_array_equal(reference[path]["w"][~m.astype(bool)], 0)
      np.testing.assert_allclose(
          reference[path]["w"], dense_ref[path]["w"] * m, atol=1e-12
      )
    for name in learners:
      for window in windows:
        with self.subTest(learner=name, window=window):
          grads = got[name, window]
          if name == "es_d_rtrl":
            # Exact for the layer's weights on this uniform leak; the
            # readout's input is tanh(v), not a leak, so only the layer.
            np.testing.assert_allclose(
                grads["linear"]["w"], reference["linear"]["w"], atol=1e-10
            )
            continue
          chex_close = jax.tree_util.tree_map(
              lambda a, b: float(jnp.max(jnp.abs(a - b))), grads, reference
          )
          self.assertLess(max(jax.tree_util.tree_leaves(chex_close)), 1e-10)
    # One trace entry per synapse: (B, nnz, S).
    learner = learners["d_rtrl"]
    full = jax.eval_shape(learner.init_state, params, state, None, xs[0])
    shapes = {
        k: v.shape for k, v in learner.traces(full).items() if ":weight@" in k
    }
    nnz = int(mask.sum())
    self.assertIn((_B, nnz, 1), shapes.values(), shapes)
    self.assertNotIn((_B, _I, _O, 1), shapes.values(), shapes)

  def test_a_full_mask_is_the_dense_op(self):
    full = _integrator(lambda: haiku_etp.Linear(_O, mask=np.ones((_I, _O))))
    dense = _integrator(lambda: haiku_etp.Linear(_O))
    xs = _normal(10, (_T, _B, _I))
    ys = _normal(11, (_T, _B, 3))

    def run(xs, ys):
      params, state = dense.init(jax.random.PRNGKey(0), xs[0])
      outs = [m.apply(params, state, None, xs[0])[0] for m in (full, dense)]
      got = [
          _grads(haiku_etp.d_rtrl(m), params, state, xs, ys, 1)
          for m in (full, dense)
      ]
      return outs, got

    outs, got = test_util.compile_once(run)(xs, ys)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-14)
    chex_close = jax.tree_util.tree_map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))), got[0], got[1]
    )
    self.assertLess(max(jax.tree_util.tree_leaves(chex_close)), 1e-12)

  def test_sparse_linear_takes_only_the_synapses(self):
    c = haiku_etp.Connectivity.random((_I, _O), 0.3, seed=5)
    model = _integrator(lambda: haiku_etp.SparseLinear(c, max_events=_I))
    xs = jnp.asarray(np.random.RandomState(12).rand(_T, _B, _I) < 0.3, float)
    ys = _normal(13, (_T, _B, 3))

    def run(xs, ys):
      params, state = model.init(jax.random.PRNGKey(0), xs[0])
      reference = testing.bptt_grads(
          model, testing.mse, params, state, None, xs, ys
      )[0]
      got = _grads(haiku_etp.d_rtrl(model), params, state, xs, ys, 1)
      return params, reference, got

    params, reference, got = test_util.compile_once(run)(xs, ys)
    self.assertEqual(params["sparse_linear"]["w"].shape, (c.nnz,))
    np.testing.assert_allclose(
        got["sparse_linear"]["w"], reference["sparse_linear"]["w"], atol=1e-10
    )

  def test_a_masked_recurrent_weight_under_the_influence_rules(self):
    # RTRL stays exact on a sparse recurrent matrix, and the rules that
    # form the influence from the step's own Jacobians rather than the ops'
    # rules (RTRL, SnAp, UORO) give it no gradient off the mask either (the
    # rule-based ones: test_masked_linear_is_the_dense_op_on_its_synapses).
    mask = haiku_etp.Connectivity.random((5, 5), 0.4, seed=1).mask()

    def step(x):
      h = haiku_etp.get_hidden_state("h", (x.shape[0], 5), x.dtype)
      rec = haiku_etp.Linear(5, mask=mask, with_bias=False, name="rec")
      h = jnp.tanh(haiku_etp.Linear(5, name="inp")(x) + rec(h))
      haiku_etp.set_hidden_state("h", h)
      return haiku_etp.Linear(2, name="out")(h)

    model = hk.transform_with_state(step)
    xs, ys = _normal(14, (_T, _B, 3)), _normal(15, (_T, _B, 2))
    names = ("rtrl", "snap", "uoro")
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
      learners = {name: haiku_etp.make_learner(name, model) for name in names}

    def run(xs, ys, rng):
      params, state = model.init(jax.random.PRNGKey(0), xs[0])
      reference = testing.bptt_grads(
          model, testing.mse, params, state, None, xs, ys
      )[0]
      got = {}
      for name, learner in learners.items():
        # With the gradient's rng: one compiled step (and one SnAp pattern
        # search) serves both calls.
        full = learner.init_state(params, state, rng, xs[0])
        fn = learner.sequence_grad(testing.mse)
        got[name] = fn(params, full, rng, xs, ys).grads
      return reference, got

    with warnings.catch_warnings():
      warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
      reference, got = test_util.compile_once(run)(
          xs, ys, jax.random.PRNGKey(1)
      )
    off = ~mask.astype(bool)
    for name in names:
      with self.subTest(name):
        np.testing.assert_array_equal(got[name]["rec"]["w"][off], 0.0)
        if name == "rtrl":
          self.assertLess(testing.relative_error(got[name], reference), 1e-12)


if __name__ == "__main__":
  absltest.main()

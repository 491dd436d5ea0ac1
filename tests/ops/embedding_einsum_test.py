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
"""The embedding and einsum ops: rule oracles, and D-RTRL against BPTT
inside a leaky integrator (float64, windows 1 and 3); the embedding's trace
kept per looked-up row; the errors that name the bad argument."""

from absl.testing import absltest
from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import extend
from haiku_etp import testing
from haiku_etp._src.ops import einsum as einsum_lib
from tests import test_util

_T, _B, _V, _H = 6, 3, 9, 4


def _normal(seed, shape):
  return jnp.asarray(np.random.RandomState(seed).standard_normal(shape))


def _ids(seed, shape, distinct):
  """Ids in [0, V); each sample's ids drawn from ``distinct`` rows."""
  rs = np.random.RandomState(seed)
  pools = [rs.choice(_V, distinct, replace=False) for _ in range(shape[1])]
  out = np.stack(
      [
          pools[b][rs.randint(0, distinct, shape[2:] or None)]
          for _ in range(shape[0])
          for b in range(shape[1])
      ]
  )  # pyformat: disable
  return jnp.asarray(out.reshape(shape), jnp.int32)


def _integrator(layer):
  """``v = 0.8 v + layer(x)``, read out by a ``Linear``."""

  def step(x):
    y = layer()(x)
    v = haiku_etp.get_hidden_state("v", y.shape, y.dtype)
    v = 0.8 * v + y
    haiku_etp.set_hidden_state("v", v)
    return haiku_etp.Linear(2, name="readout")(jnp.tanh(v))

  return hk.transform_with_state(step)


def _check_exact(test, model, xs, learners=("d_rtrl",), extra=None):
  """D-RTRL (and ``learners``) against BPTT at windows 1 and 3.

  One program (``test_util.compile_once``: only tolerances are checked)
  initialises the model, computes the BPTT reference and every learner's
  gradients, and ``extra(params, state, *extra_args)`` where ``extra`` is
  ``(fn, args)``. Returns ``(learners, results, params, state, extra)``,
  ``results[name, window]`` the learner's ``SequenceResult``.
  """
  key = jax.random.PRNGKey(0)
  x0 = jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype)
  params, state = jax.eval_shape(model.init, key, x0)
  out = jax.eval_shape(model.apply, params, state, None, x0)[0]
  ys = _normal(7, (_T,) + out.shape)
  made = {name: haiku_etp.make_learner(name, model) for name in learners}
  extra_fn, extra_args = extra or (lambda *_: None, ())

  def run(xs, ys, extra_args):
    params, state = model.init(key, xs[0])
    reference = testing.bptt_grads(
        model, testing.mse, params, state, None, xs, ys
    )[0]
    results = {}
    for name, learner in made.items():
      full = learner.init_state(params, state, None, xs[0])
      for window in (1, 3):
        results[name, window] = learner.sequence_grad(
            testing.mse, window=window
        )(params, full, None, xs, ys)
    return (
        reference,
        results,
        params,
        state,
        extra_fn(params, state, *extra_args),
    )

  reference, results, params, state, extra_out = test_util.compile_once(run)(
      xs, ys, extra_args
  )
  for (name, window), got in results.items():
    err = testing.relative_error(got.grads, reference)
    test.assertLess(err, 1e-12, (name, window))
  return made, results, params, state, extra_out


class EmbeddingTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  @parameterized.named_parameters(
      ("vocabulary_S2", None, 2, False, 1),
      ("rows_S1", 4, 1, False, 1),
      ("rows_S2_stripped", 4, 2, True, 1),
      # Windows of 4 over 6 steps, rolled in closed form: the per-row slots
      # are taken as the steps would take them.
      ("vocabulary_S2_window", None, 2, True, 4),
      ("rows_S2_window", 4, 2, False, 4),
  )
  def test_rule_oracle(self, max_rows, num_states, strip, window):
    table = {"weight": _normal(1, (_V, _H))}
    xs = _ids(2, (_T, 2, 3), distinct=4)
    r = test_util.jit_oracle(
        testing.drtrl_rule_oracle,
        extend.etp_batched_embedding_p,
        {"max_rows": max_rows},
        num_hidden_state=num_states,
        strip_batch=strip,
        window=window,
    )(table, xs)
    self.assertLess(r.relative_error, 1e-12)

  def test_d_rtrl_per_row_is_exact_and_counts_overflow(self):
    model = _integrator(lambda: haiku_etp.Embed(_V, _H, max_rows=3))
    xs = _ids(3, (_T, _B, 2), distinct=3)
    # Five distinct rows into three slots: counted, and no longer exact
    # (run in the same program, from the same parameters).
    over_xs = _ids(4, (_T, _B, 2), distinct=5)
    over_ys = _normal(8, (_T, _B, 2, 2))
    learner = haiku_etp.d_rtrl(model)

    def overflow(params, state, xs, ys):
      full = learner.init_state(params, state, None, xs[0])
      return learner.sequence_grad(testing.mse)(params, full, None, xs, ys)

    made, results, _, _, over = _check_exact(
        self, model, xs, extra=(overflow, (over_xs, over_ys))
    )
    got = results["d_rtrl", 3]
    traces = made["d_rtrl"].traces(got.state)
    weight = [v for k, v in traces.items() if ":weight@" in k]
    rows = [v for k, v in traces.items() if ":rows@" in k]
    overflow_counts = [v for k, v in traces.items() if ":overflow@" in k]
    # One slot per looked-up row: (B, L, R, H, S), not (B, L, V, H, S).
    self.assertEqual([w.shape for w in weight], [(_B, 2, 3, _H, 1)])
    self.assertEqual(int(jnp.sum(overflow_counts[0])), 0)
    for b in range(_B):
      for l in range(2):
        self.assertEqual(
            set(np.asarray(rows[0][b, l]).tolist()) - {-1},
            set(np.asarray(xs[:, b, l]).tolist()),
        )
    over = [v for k, v in learner.traces(over.state).items() if "overflow" in k]
    self.assertGreater(int(jnp.sum(over[0])), 0)

  def test_vocabulary_trace_and_learners(self):
    model = _integrator(lambda: haiku_etp.Embed(_V, _H))
    xs = _ids(5, (_T, _B), distinct=6)
    _, _, params, state, _ = _check_exact(self, model, xs, ("d_rtrl", "rtrl"))
    # ES-D-RTRL: exact with decay (0, lam) on this leak... of the table's
    # input side there is nothing to filter; alpha_x > 0 is refused.
    with self.assertRaisesRegex(ValueError, "integer inputs .* cannot be"):
      learner = haiku_etp.es_d_rtrl(model, decay=(0.8, 0.0))
      learner.init_state(params, state, None, xs[0])

  def test_traced_ids_out_of_range_look_up_zeros_and_train_no_row(self):
    table = _normal(1, (_V, _H))
    ids = jnp.array([_V, -1, 0, _V + 5], jnp.int32)
    # Inside the learners: no gradient for the last row (a clamped id would
    # give it one), no slot taken, no overflow counted.
    xs = np.asarray(_ids(6, (_T, _B, 2), distinct=3)) % (_V - 1)
    xs[::2, 0, 0] = _V
    xs[1::2, 1, 1] = -1
    xs = jnp.asarray(xs)
    ys = _normal(8, (_T, _B, 2, 2))
    cases = (("bptt", None), ("d_rtrl", None), ("d_rtrl", 3))
    learners = [
        haiku_etp.make_learner(
            name,
            _integrator(
                lambda max_rows=max_rows: haiku_etp.Embed(
                    _V, _H, max_rows=max_rows
                )
            ),
        )
        for name, max_rows in cases
    ]

    # The lookup, its gradient and the learners: one program with traced
    # ids.
    def run(table, ids, xs, ys):
      out = haiku_etp.embedding(ids, table)
      grad = jax.grad(lambda t, i: jnp.sum(haiku_etp.embedding(i, t)))(
          table, ids
      )
      results = []
      for learner in learners:
        params, state = learner.init(jax.random.PRNGKey(0), xs[0] % _V)
        results.append(
            learner.sequence_grad(testing.mse)(params, state, None, xs, ys)
        )
      return out, grad, results

    out, grad, results = test_util.compile_once(run)(table, ids, xs, ys)
    np.testing.assert_array_equal(out[jnp.array([0, 1, 3])], 0.0)
    np.testing.assert_array_equal(out[2], table[0])
    want = np.zeros((_V, _H))
    want[0] = 1.0
    np.testing.assert_array_equal(grad, want)
    # Eager (concrete) ids out of range are still refused.
    with self.assertRaisesRegex(ValueError, rf"must lie in \[0, {_V}\)"):
      haiku_etp.embedding(ids, table)
    for (name, max_rows), learner, got in zip(cases, learners, results):
      with self.subTest(name=name, max_rows=max_rows):
        self.assertTrue(np.any(got.grads["embed"]["embeddings"][0] != 0))
        np.testing.assert_array_equal(got.grads["embed"]["embeddings"][-1], 0)
        traces = learner.traces(got.state)
        for k, v in traces.items():
          if ":rows@" in k:
            self.assertFalse(np.any(np.asarray(v) >= _V - 1), k)
          if ":overflow@" in k:
            self.assertEqual(int(jnp.sum(v)), 0, k)

  def test_bad_ids_and_table(self):
    table = jnp.ones((_V, _H))
    cases = (
        (lambda: haiku_etp.embedding(jnp.ones(3), table), "must be integers"),
        (
            lambda: haiku_etp.embedding(jnp.array([0, _V]), table),
            rf"must lie in \[0, {_V}\)",
        ),
        (
            lambda: haiku_etp.embedding(jnp.array([-1]), table),
            rf"must lie in \[0, {_V}\)",
        ),
        (
            lambda: haiku_etp.embedding(jnp.array([1]), jnp.ones(3)),
            "must have rank 2",
        ),
        (
            lambda: haiku_etp.embedding(jnp.array(1), table),
            "need a leading batch axis",
        ),
        (
            lambda: haiku_etp.embedding(jnp.array([1]), table, max_rows=0),
            "max_rows must be None or an int >= 1",
        ),
    )  # pyformat: disable
    for thunk, regex in cases:
      with self.subTest(regex):
        with self.assertRaisesRegex(ValueError, regex):
          thunk()


class EinsumTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  @parameterized.named_parameters(
      ("heads", "hi,hio->ho", (2, 3), (2, 3, 4)),
      ("shared", "pi,io->po", (5, 3), (3, 4)),
      ("summed_input", "ij,jo->o", (2, 3), (3, 4)),
  )
  def test_rule_oracles_and_learners(self, spec, x_shape, w_shape):
    prim = extend.etp_batched_einsum_p
    params = {"spec": einsum_lib.Spec(spec)}
    weights = {"weight": _normal(1, w_shape)}
    xs = _normal(2, (_T, 2) + x_shape)
    # Step by step on two steps (the trace rolled through D once; the
    # oracles unroll their steps, and more take no other code path, as in
    # oracles_test), then windows of 4 over 6 steps in closed form.
    for strip, num_states, window in (
        (False, 2, 1),
        (True, 1, 1),
        (True, 2, 4),
    ):
      r = test_util.jit_oracle(
          testing.drtrl_rule_oracle,
          prim,
          params,
          num_hidden_state=num_states,
          strip_batch=strip,
          window=window,
      )(weights, xs if window > 1 else xs[:2])
      self.assertLess(r.relative_error, 1e-12)
    r = test_util.jit_oracle(
        testing.pp_rule_oracle, prim, params, decay=(0.8, 0.0), leak=0.8
    )(weights, xs[:2])
    self.assertLess(r.relative_error, 1e-12)

    def layer():
      return lambda x: haiku_etp.einsum(
          spec, x, hk.get_parameter("w", w_shape, x.dtype, jnp.ones) * 0.3
      )

    _check_exact(self, _integrator(layer), _normal(3, (_T, _B) + x_shape))

  def test_bad_spec_and_operands(self):
    x, w = jnp.ones((2, 3, 4)), jnp.ones((3, 4, 5))
    cases = (
        (lambda: haiku_etp.einsum("hi,hio", x, w), "explicit output"),
        (lambda: haiku_etp.einsum("h...,hio->ho", x, w), "must be letters"),
        (lambda: haiku_etp.einsum("hh,hio->ho", x, w), "repeat a letter"),
        (lambda: haiku_etp.einsum("hi,hio->hz", x, w), "appear in no operand"),
        (lambda: haiku_etp.einsum("h,hio->h", x, w), "weight letters"),
        (lambda: haiku_etp.einsum("hi,hi->h", x, w), "must have rank 2"),
        (
            lambda: haiku_etp.einsum("hi,hio->ho", jnp.ones((2, 3, 3)), w),
            "axis 'i' has size 3 in one operand and 4",
        ),
        (lambda: haiku_etp.einsum(3, x, w), "must be a string"),
    )  # pyformat: disable
    for thunk, regex in cases:
      with self.subTest(regex):
        with self.assertRaisesRegex(ValueError, regex):
          thunk()


if __name__ == "__main__":
  absltest.main()

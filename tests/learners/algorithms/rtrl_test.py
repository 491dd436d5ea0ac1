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
"""RTRL equals BPTT on every step: recurrent weights, gates, stacks, plain
parameters, masks and auxiliary outputs; its budget and its partial form.

Float64 against ``testing.bptt_grads``, windows 1 and 3. Every case also
checks that D-RTRL is far off there, so the reference is not vacuous; a
case's reference and learners run in one program, compiled once
(``test_util.fast_jit``). The registered modules are covered by
``modules_test`` (``rtrl`` is one of ``testing.MODULE_LEARNERS``).
"""

import warnings

from absl.testing import absltest
from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import testing
from tests import test_util

H = haiku_etp


def _rnn(x):
  return H.Linear(2, name="readout")(H.VanillaRNN(5)(x))


def _gru(x):
  return H.Linear(2, name="readout")(H.GRU(5)(x))


def _lstm(x):
  return H.LSTM(4)(x)


def _conv_lstm(x):
  return H.Conv2DLSTM((3, 3), 2, 2)(x)


def _eprop(x):
  alif = H.RecurrentALIF(tau=5.0, tau_adapt=20.0, beta_adapt=0.5)
  return H.LeakyReadout(2, tau=10.0)(alif(H.Linear(5)(x)))


def _two_grus(x):
  return H.GRU(3, name="upper")(H.GRU(4, name="lower")(x))


def _plain_parameter(x):
  # A gain used outside every ETP op, on the recurrent path.
  gain = hk.get_parameter("gain", (4,), x.dtype, init=jnp.ones)
  h = H.get_hidden_state("h", (x.shape[0], 4), x.dtype)
  h = jnp.tanh(gain * h + H.Linear(4)(x))
  H.set_hidden_state("h", h)
  return h


_STEPS = {
    "rnn": (_rnn, (3,), 1.0),
    "gru": (_gru, (3,), 1.0),
    "lstm": (_lstm, (3,), 1.0),
    "conv_lstm": (_conv_lstm, (3, 3, 2), 1.0),
    "eprop": (_eprop, (3,), 3.0),
    "two_grus": (_two_grus, (3,), 1.0),
    "plain_parameter": (_plain_parameter, (3,), 1.0),
}


def _problem(name, num_steps=30, dtype=jnp.float64):
  """``test_util.setup``'s problem, its init compiled (eager init dispatches
  every op of the step's initialisers)."""
  step, shape, scale = _STEPS[name]
  model = hk.transform_with_state(step)
  xs = test_util.sequence((3,) + shape, num_steps, dtype=dtype, scale=scale)
  params, state = test_util.fast_jit(model.init)(jax.random.PRNGKey(0), xs[0])
  out = jax.eval_shape(model.apply, params, state, None, xs[0])[0]
  ys = test_util.sequence(out.shape, num_steps, seed=1, dtype=dtype)
  return model, params, state, xs, ys


def _run(model, learners, params, state, xs, ys, states=None):
  """``(reference, reference losses, {key: SequenceResult})``: BPTT and
  ``learners`` (``{key: (learner, window)}``) in one program, each from
  ``states[key]`` or, where that is not given, its fresh entry state."""
  states = dict(states or {})
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", H.ApproximationWarning)
    for k, (learner, _) in learners.items():
      if k not in states:
        states[k] = learner.init_state(params, state, None, xs[0])

  def run(params, states, xs, ys):
    reference = testing.bptt_grads(
        model, testing.mse, params, state, None, xs, ys
    )
    results = {
        k: learner.sequence_grad(testing.mse, window=window)(
            params, states[k], None, xs, ys
        )
        for k, (learner, window) in learners.items()
    }
    return reference, results

  (reference, ref_losses), results = test_util.fast_jit(run)(
      params, states, xs, ys
  )
  return reference, ref_losses, results


class ExactTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  # Windows 1 and 3 (3 full windows and a shorter last one) in one program.
  @parameterized.named_parameters((name, name) for name in sorted(_STEPS))
  def test_equals_bptt(self, name):
    model, params, state, xs, ys = _problem(name, 10)
    rtrl = H.rtrl(model)
    reference, ref_losses, results = _run(
        model,
        {
            "window 1": (rtrl, 1),
            "window 3": (rtrl, 3),
            "d_rtrl": (H.d_rtrl(model), None),
        },
        params,
        state,
        xs,
        ys,
    )
    for window in (1, 3):
      res = results[f"window {window}"]
      for path, leaf in jax.tree_util.tree_leaves_with_path(res.grads):
        ref = reference
        for k in path:
          ref = ref[k.key]
        err = testing.relative_error(leaf, ref)
        self.assertLessEqual(
            err, 1e-10, f"{name} window {window} {jax.tree_util.keystr(path)}"
        )
      np.testing.assert_allclose(res.losses, ref_losses, rtol=1e-12)
    # The reference is not vacuous: D-RTRL is approximate here.
    cut = results["d_rtrl"]
    self.assertGreater(testing.relative_error(cut.grads, reference), 1e-3)

  def test_mask_and_aux(self):
    model, params, state, xs, ys = _problem("gru", 12)
    mask = jnp.asarray(np.random.RandomState(2).uniform(size=(12, 3)) > 0.4)

    def per_sample(out, y):
      return jnp.sum((out - y) ** 2, axis=-1), {"out": out}

    learner = H.rtrl(model)
    st = learner.init_state(params, state, None, xs[0])

    # BPTT with the same weighting, written out.
    def total(p):
      st = state

      def body(st, inp):
        x, y, m = inp
        out, st = model.apply(p, st, None, x)
        return st, jnp.sum(m * per_sample(out, y)[0]) / 3

      _, losses = jax.lax.scan(body, st, (xs, ys, mask.astype(xs.dtype)))
      return jnp.sum(losses) / (jnp.sum(mask) / 3)

    def run(params, st, xs, ys, mask):
      res = learner.sequence_grad(per_sample, has_aux=True, reduction="mean")(
          params, st, None, xs, ys, mask
      )
      return res, jax.grad(total)(params)

    res, expected = test_util.fast_jit(run)(params, st, xs, ys, mask)
    test_util.assert_trees_close(res.grads, expected, 1e-10)
    self.assertEqual(res.aux["out"].shape, (12, 3, 2))

  def test_value_and_grad_steps_sum_to_the_sequence(self):
    model, params, state, xs, ys = _problem("eprop", 6)
    learner = H.rtrl(model)
    st = learner.init_state(params, state, None, xs[0])
    seq = test_util.fast_jit(learner.sequence_grad(testing.mse))(
        params, st, None, xs, ys
    )
    step = test_util.fast_jit(learner.value_and_grad(testing.mse))
    total = jax.tree_util.tree_map(jnp.zeros_like, params)
    for t in range(6):
      res = step(params, st, None, xs[t], ys[t])
      st = res.state
      total = jax.tree_util.tree_map(jnp.add, total, res.grads)
    test_util.assert_trees_close(total, seq.grads, 1e-12)

  def test_warns_nothing_and_reports_every_parameter_exact(self):
    model, params, state, xs, _ = _problem("two_grus", 2)
    learner = H.rtrl(model)
    with warnings.catch_warnings():
      warnings.simplefilter("error", H.ApproximationWarning)
      st = learner.init_state(params, state, None, xs[0])
    report = learner.report(params, st, None, xs[0])
    self.assertIn("learner: rtrl (exact for every parameter)", report)
    self.assertIn("influence:lower/w_h", report)
    self.assertTrue(
        all(v.exact for v in learner.verdicts(params, st, None, xs[0]))
    )


class BudgetTest(absltest.TestCase):

  def test_over_budget_names_the_bytes(self):
    model, params, state, xs, _ = _problem("gru", 2, dtype=jnp.float32)
    # H = 5, P = 3 (3 x 5 + 5 x 5 + 5) = 135 reaching hidden state.
    with self.assertRaisesRegex(
        ValueError,
        r"rtrl keeps B x H x P = 3 x 5 x 135 influence entries for this step "
        r"\(7.9 KiB\), over max_trace_bytes=1.0 KiB\. Use a smaller batch, "
        r"rtrl\(model, params=\[...\]\).*d_rtrl",
    ):
      H.rtrl(model, max_trace_bytes=1024).init_state(params, state, None, xs[0])

  def test_bad_options(self):
    model = hk.transform_with_state(_gru)
    for kwargs, regex in (
        (dict(max_trace_bytes=-1), "max_trace_bytes must be None"),
        (dict(params="gru/w_h"), "params must be a sequence"),
        (dict(params=()), "params is empty"),
    ):
      with self.assertRaisesRegex(ValueError, regex):
        H.rtrl(model, **kwargs)
    _, params, state, xs, _ = _problem("gru", 1, dtype=jnp.float32)
    with self.assertRaisesRegex(
        ValueError, r"\['gru/w_hh'\] are not parameters"
    ):
      H.rtrl(model, params=["gru/w_hh"]).init_state(params, state, None, xs[0])


class RandomStepTest(absltest.TestCase):

  def test_a_step_that_draws_is_announced(self):
    def noisy(x):
      h = H.get_hidden_state("h", (x.shape[0], 4), x.dtype)
      noise = jax.random.normal(hk.next_rng_key(), h.shape, h.dtype)
      h = jnp.tanh(0.5 * h + H.Linear(4)(x) + 0.1 * noise)
      H.set_hidden_state("h", h)
      return h

    model = hk.transform_with_state(noisy)
    x = jnp.ones((2, 3))
    learner = H.rtrl(model)
    with testing.expect_warning(H.ApproximationWarning, "rtrl_random_step"):
      params, state = learner.init(jax.random.PRNGKey(0), x)
    verdicts = learner.verdicts(params, state, jax.random.PRNGKey(1), x)
    self.assertTrue(
        all("rtrl_random_step" in v.reasons for v in verdicts), verdicts
    )


class PartialTest(absltest.TestCase):

  def test_full_influence_for_the_recurrent_weight_only(self):
    with jax.enable_x64(True):
      model, params, state, xs, ys = _problem("eprop", 20)
      learner = H.rtrl(model, params=["recurrent_alif/w_rec"])
      with testing.expect_warning(
          H.ApproximationWarning,
          r"(?s)rtrl gives an approximate gradient for 2 of 5 parameters.*"
          r"linear/b: cut_memory_path.*linear/w: cut_memory_path.*"
          r"rtrl\(params=\['recurrent_alif/w_rec'\]\) keeps the full influence",
      ):
        st = learner.init_state(params, state, None, xs[0])
      reference, _, results = _run(
          model,
          {"rtrl": (learner, None), "d_rtrl": (H.d_rtrl(model), None)},
          params,
          state,
          xs,
          ys,
          states={"rtrl": st},
      )
      res, drtrl = results["rtrl"], results["d_rtrl"].grads
      err = lambda g, m, n: testing.relative_error(g[m][n], reference[m][n])
      self.assertLessEqual(err(res.grads, "recurrent_alif", "w_rec"), 1e-10)
      self.assertGreater(err(drtrl, "recurrent_alif", "w_rec"), 1e-2)
      for m, n in (("leaky_readout", "w"), ("leaky_readout", "b")):
        self.assertLessEqual(err(res.grads, m, n), 1e-10)
      # The input weights keep D-RTRL's gradient exactly.
      for n in ("w", "b"):
        np.testing.assert_allclose(
            res.grads["linear"][n], drtrl["linear"][n], rtol=1e-12
        )
      verdicts = {v.path: v for v in learner.verdicts(params, st, None, xs[0])}
      self.assertEqual(verdicts["recurrent_alif/w_rec"].role, "full")
      self.assertFalse(verdicts["linear/w"].exact)
      traces = learner.traces(st)
      # H = 5 neurons x (v, a, s) + 2 readout values; P = 5 x 5.
      self.assertEqual(
          traces["influence:recurrent_alif/w_rec"].shape, (3, 17, 25)
      )
      self.assertNotIn("influence:linear/w", traces)


if __name__ == "__main__":
  absltest.main()

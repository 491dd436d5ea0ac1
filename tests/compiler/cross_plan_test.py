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
"""Exact credit across hidden groups: readouts, synapse chains, stacks.

D-RTRL with cross-group traces equals the independent BPTT oracle in float64
on the networks of the field (a spiking layer into a leaky readout, with a
synapse and a trained readout time constant, a conv layer flattened or
mean-pooled into a readout, two stacked spiking layers, an adaptive layer with refractoriness
and hard reset), for every parameter, at windows 1 and 3. Truncated BPTT is
far from the oracle on each (the traces carry the credit), neurons spike,
and the memory is measured against plain D-RTRL. A budget too small for a
trace keeps the cut and says so. ES-D-RTRL's cost on the same networks is
measured and printed, not asserted.
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
_SCALE = 3.0  # input scale at which the neurons fire


def _lif_readout(x):
  return H.LeakyReadout(3, tau=5.0)(H.LIF(tau=5.0)(H.Linear(8)(x)))


def _synapse_trained_readout(x):
  i = H.ExponentialSynapse(tau=3.0)(H.Linear(8)(x))
  return H.LeakyReadout(3, tau=5.0, train_tau=True)(H.LIF(tau=5.0)(i))


def _conv_flatten_readout(x):
  s = H.LIF(tau=5.0)(H.Conv2D(3, 3, name="conv")(x))
  return H.LeakyReadout(3, tau=5.0)(s.reshape(s.shape[0], -1))


def _conv_pool_readout(x):
  # The mean over positions is a parameter-free linear map folded into the
  # readout's input map.
  s = H.LIF(tau=5.0)(H.Conv2D(3, 3, name="conv")(x))
  return H.LeakyReadout(3, tau=5.0)(jnp.mean(s, axis=(1, 2)))


def _stack(x):
  s1 = H.LIF(tau=5.0, name="lif1")(H.Linear(8, name="in1")(x))
  s2 = H.LIF(tau=5.0, name="lif2")(H.Linear(6, name="in2")(2.0 * s1))
  return H.LeakyReadout(3, tau=5.0)(s2)


def _alif_refractory_hard(x):
  alif = H.ALIF(tau=5.0, tau_adapt=20.0, refractory=1, reset="hard")
  return H.LeakyReadout(3, tau=5.0)(alif(H.Linear(8)(x)))


# name -> (step, input shape, spiking modules to probe)
_CASES = {
    "lif_readout": (_lif_readout, (2, 4)),
    "synapse_trained_readout": (_synapse_trained_readout, (2, 4)),
    "conv_flatten_readout": (_conv_flatten_readout, (2, 5, 5, 2)),
    "conv_pool_readout": (_conv_pool_readout, (2, 5, 5, 2)),
    "stack": (_stack, (2, 4)),
    "alif_refractory_hard": (_alif_refractory_hard, (2, 4)),
}
# (T, window): many one-step windows over a long sequence; windows of 3
# with a shorter last one.
_SEQUENCES = ((50, 1), (20, 3))


# Initial parameters and state per case: they do not depend on T.
_INITS = {}


def _problem(name, num_steps):
  """``(model, params, state, xs, ys)`` as ``test_util.setup`` makes them,
  with the parameters drawn in one compiled program (``compile_once``), once
  per case."""
  step, shape = _CASES[name]
  model = hk.transform_with_state(step)
  xs = test_util.sequence(shape, num_steps, scale=_SCALE)
  if name not in _INITS:
    _INITS[name] = test_util.compile_once(model.init)(
        jax.random.PRNGKey(0), xs[0]
    )
  params, state = _INITS[name]
  out = jax.eval_shape(model.apply, params, state, None, xs[0])[0]
  ys = test_util.sequence(out.shape, num_steps, seed=1)
  return model, params, state, xs, ys


def _learner_state(learner, params, state, xs):
  """The learner's state on the model's own (``init_state``: nothing drawn)."""
  return learner.init_state(params, state, None, xs[0])


def _oracle(model, params, state, xs, ys):
  return testing.bptt_grads(model, test_util.mse, params, state, None, xs, ys)


def _states(model, params, state, xs):
  """The model's state after every step, stacked over time."""

  def body(st, x):
    _, st = model.apply(params, st, None, x)
    return st, st

  return jax.lax.scan(body, state, xs)[1]


def _spike_rate(states):
  """Mean spike rate of every ``:hidden`` state named ``v`` that fires."""
  rates = []
  for module, entries in states.items():
    if "lif" in module and "v:hidden" in entries:
      # A reset leaves the membrane below threshold; count threshold
      # crossings through the drop it causes.
      v = np.asarray(entries["v:hidden"])
      rates.append(float(np.mean(np.diff(v, axis=0) < -0.5)))
  return rates


class CrossGroupExactTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  @parameterized.named_parameters((name, name) for name in _CASES)
  def test_d_rtrl_equals_bptt(self, name):
    # Both (T, window) sequences in one compiled program: for each, the
    # oracle, D-RTRL, truncated BPTT and the model's states (spike rates).
    problems = [_problem(name, t) for t, _ in _SEQUENCES]
    model, params, state = problems[0][:3]
    learner, truncated = H.d_rtrl(model), H.bptt(model)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      lstate = _learner_state(learner, params, state, problems[0][3])
      bstate = _learner_state(truncated, params, state, problems[0][3])

      def run(params, data):
        out = []
        for (_, window), (state, xs, ys) in zip(_SEQUENCES, data):
          grad_fns = [
              l.sequence_grad(test_util.mse, window=window)
              for l in (learner, truncated)
          ]
          out.append(
              (
                  _oracle(model, params, state, xs, ys),
                  grad_fns[0](params, lstate, None, xs, ys),
                  grad_fns[1](params, bstate, None, xs, ys).grads,
                  _states(model, params, state, xs),
              )
          )
        return out

      results = test_util.fast_jit(run)(
          params, [(state, xs, ys) for _, _, state, xs, ys in problems]
      )
    self.assertEmpty(
        [w for w in caught if w.category is H.ApproximationWarning]
    )
    compiled = learner.compile(params, lstate, None, problems[0][3][0])
    self.assertTrue(compiled.drtrl_exact, compiled.report())
    self.assertNotEmpty(compiled.cross)
    for (t, w), (ref, result, trunc, states) in zip(_SEQUENCES, results):
      reference, losses = ref
      for path, leaf in jax.tree_util.tree_leaves_with_path(reference):
        where = f"T={t} w={w} {jax.tree_util.keystr(path)}"
        self.assertTrue(np.any(np.asarray(leaf) != 0), where)
      per_leaf = jax.tree_util.tree_map(
          testing.relative_error, result.grads, reference
      )
      for path, err in jax.tree_util.tree_leaves_with_path(per_leaf):
        where = f"T={t} w={w} {jax.tree_util.keystr(path)}"
        self.assertLess(err, test_util.EXACT_RTOL, where)
      np.testing.assert_allclose(result.losses, losses, rtol=1e-12)
      self.assertGreater(testing.relative_error(trunc, reference), 0.1)
      for rate in _spike_rate(states):
        self.assertBetween(rate, 0.02, 0.98)


class MemoryTest(parameterized.TestCase):
  """Trace bytes and compiled memory against plain D-RTRL, in float32."""

  def _measure(self, name, max_cross_bytes, batch=8):
    step, shape = _CASES[name]
    model = hk.transform_with_state(step)
    xs = jnp.ones((4, batch) + tuple(shape[1:]))
    learner = H.d_rtrl(model, max_cross_bytes=max_cross_bytes)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", H.ApproximationWarning)
      # Shapes are all the measures need: nothing is drawn or run.
      params, state = jax.eval_shape(learner.init, jax.random.PRNGKey(0), xs[0])
      model_state = {m: e for m, e in state.items() if not m.startswith("~etp")}
      out = jax.eval_shape(model.apply, params, model_state, None, xs[0])[0]
      ys = jax.ShapeDtypeStruct((4,) + out.shape, out.dtype)
      # The compiled sizes are printed, not asserted (within 1% of a
      # default-options compile's).
      fn = test_util.fast_jit(learner.sequence_grad(test_util.mse))
      mem = fn.lower(params, state, None, xs, ys).compile().memory_analysis()
    traces = sum(
        int(np.prod(v.shape)) * v.dtype.itemsize
        for v in learner.traces(state).values()
    )
    return traces, mem.temp_size_in_bytes + mem.output_size_in_bytes

  @parameterized.named_parameters(
      # (bound on trace bytes over plain D-RTRL's, or None to only report)
      ("fixed_leak_readout", "lif_readout", 2.5),
      ("per_unit_leak_readout", "synapse_trained_readout", 3 + 1.0),
      ("conv_readout", "conv_flatten_readout", 2.5),
      ("stack", "stack", None),
  )
  def test_memory(self, name, bound):
    cross, cross_mem = self._measure(name, None)
    plain, plain_mem = self._measure(name, 0)
    ratio = cross / plain
    print(
        f"{name}: trace bytes {cross} vs plain {plain} (x{ratio:.2f}); "
        f"compiled {cross_mem} vs {plain_mem} (x{cross_mem / plain_mem:.2f})"
    )
    self.assertGreater(ratio, 1.0)
    if bound is not None:
      self.assertLessEqual(ratio, bound)


class BudgetTest(absltest.TestCase):

  def test_too_small_budget_keeps_the_cut_and_says_so(self):
    with jax.enable_x64(True):
      model, params, state, xs, ys = _problem("lif_readout", 12)
      learner = H.d_rtrl(model, max_cross_bytes=16)
      with testing.expect_warning(
          H.ApproximationWarning, r"linear/w: .*cross_trace_over_budget"
      ):
        lstate = _learner_state(learner, params, state, xs)
      # The learner and the oracle in one program.
      result, (reference, _) = test_util.fast_jit(
          lambda params, lstate, state, xs, ys: (
              learner.sequence_grad(test_util.mse)(
                  params, lstate, None, xs, ys
              ),
              _oracle(model, params, state, xs, ys),
          )
      )(params, lstate, state, xs, ys)
      compiled = learner.compile(params, lstate, None, xs[0])
      (d,) = [
          d for d in compiled.diagnostics if d.code == "cross_trace_over_budget"
      ]  # pyformat: disable
      self.assertRegex(d.message, r"need \d+ B, over max_cross_bytes")
      self.assertCountEqual(d.parameters, ("linear/b", "linear/w"))
      self.assertEmpty(compiled.cross)
      self.assertGreater(
          testing.relative_error(result.grads["linear"], reference["linear"]),
          1e-3,
      )


class ESDRTRLMeasureTest(absltest.TestCase):
  """What the cut costs ES-D-RTRL on the same networks (printed)."""

  def test_report(self):
    # Both forms give every parameter a gradient (none is cut to zero by a
    # readout or a next layer); how close it is to BPTT is printed.
    rows = []
    with jax.enable_x64(True), warnings.catch_warnings():
      warnings.simplefilter("ignore", H.ApproximationWarning)
      for name in _CASES:
        model, params, state, xs, ys = _problem(name, 20)
        forms = ("window", "fused")
        learners = [H.es_d_rtrl(model, decay=(0.8, 0.0), form=f) for f in forms]
        lstates = [_learner_state(l, params, state, xs) for l in learners]
        # The oracle and both forms in one program.
        reference, grads = test_util.fast_jit(
            lambda params, lstates, state, xs, ys: (
                _oracle(model, params, state, xs, ys)[0],
                [
                    l.sequence_grad(test_util.mse, window=1)(
                        params, s, None, xs, ys
                    ).grads
                    for l, s in zip(learners, lstates)
                ],
            )
        )(params, lstates, state, xs, ys)
        for form, es_grads in zip(forms, grads):
          for path, ref in jax.tree_util.tree_leaves_with_path(reference):
            got = _at(es_grads, path)
            cos = testing.cosine_similarity(got, ref)
            norm = float(np.linalg.norm(got) / max(np.linalg.norm(ref), 1e-300))
            where = f"{name} {form} {jax.tree_util.keystr(path)}"
            rows.append((where, cos, norm))
            self.assertTrue(np.isfinite(cos), msg=where)
            self.assertGreater(norm, 0.0, msg=where)
    print("\nES-D-RTRL decay (0.8, 0) vs BPTT, T=20")
    print("\n".join(f"{w}: cos {c:.4f} norm {r:.3f}" for w, c, r in rows))


def _at(tree, path):
  for entry in path:
    tree = tree[entry.key]
  return tree


if __name__ == "__main__":
  absltest.main()

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
"""The closed-form window roll against the per-step roll and BPTT.

Float64. Every case runs one sequence of 33 steps in windows of 2 and 32
(each ends with a shorter window; the LRU stack in windows of 2) with ``window_roll="closed"`` and
``"per_step"``: the gradients and the traces after the sequence agree to
1e-12, and where the learner equals BPTT on the step (the example says so,
and its verdicts agree) the closed form equals whole-sequence BPTT to 1e-10.
The cases: every ``testing.MODULE_EXAMPLES`` entry under D-RTRL (the 3-D
and N-D convolutions take the 1-D and 2-D ones' path and are left out), the
cross-group cases whose fields cross layers (two spiking layers, the
two-block LRU stack; a layer into a readout is checked against BPTT in
tests/compiler/cross_plan_test.py), ES-D-RTRL on four examples and RTRL on
the spiking cell and the LRU (the dense and conv cells:
tests/learners/algorithms/rtrl_test.py). An example's learners run in one
compiled program that shares its parameters, data and BPTT reference.
A relation that cannot take the closed form is named in ``report()``.
"""

import functools
import warnings
import zlib

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

_T = 33
# The smallest window and the pipeline's default, each with a shorter last
# window (the closed form has no other special size).
_WINDOWS = (2, 32)
_BATCH = 2
_ROLL_TOL = 1e-12
_BPTT_TOL = 1e-10
_ROLLS = ("closed", "per_step")


def _mse(out_t, y_t):
  return jnp.mean((out_t - y_t) ** 2)


def _lif_readout(x):
  s = haiku_etp.LIF(tau=5.0)(haiku_etp.Linear(4)(x))
  return haiku_etp.LeakyReadout(2, tau=10.0)(s)


def _two_spiking_layers(x):
  s = haiku_etp.LIF(tau=5.0, name="lif_0")(haiku_etp.Linear(4, name="l0")(x))
  s = haiku_etp.LIF(tau=4.0, name="lif_1")(haiku_etp.Linear(3, name="l1")(s))
  return haiku_etp.LeakyReadout(2, tau=10.0)(s)


# name, step, input shape, input scale: each exact under D-RTRL.
# A LIF layer into a readout (plain, with a synapse and a trained time
# constant, conv into a pooled readout) takes the closed form through the
# same filtered traces in tests/compiler/cross_plan_test.py, where windows of
# 3 equal BPTT; here the cases whose fields are carried across layers.
_CROSS_CASES = (
    ("two_spiking_layers", _two_spiking_layers, (3,), 3.0, _WINDOWS),
    # Windows of 2 only: its fields cross 16 window boundaries.
    (
        "lru_stack",
        functools.partial(test_util.lru_stack, width=3, hidden=3),
        (2,),
        1.0,
        (2,),
    ),
)


def _run(step, input_shape, input_scale, makers, windows=_WINDOWS):
  """Whole-sequence BPTT and, for each ``name: make`` of ``makers``,
  ``make(model, roll)``'s gradients in each window, all in one jitted
  program (compiled once: :func:`test_util.fast_jit`); returns
  ``(reference, {name: (results, learner, verdicts)})``."""
  seed = zlib.crc32(repr(input_shape).encode())
  model = hk.transform_with_state(step)
  rs = np.random.RandomState(seed)
  xs = jnp.asarray(input_scale * rs.normal(size=(_T, _BATCH) + input_shape))
  params, state = test_util.fast_jit(model.init)(
      jax.random.PRNGKey(seed), xs[0]
  )
  out = jax.eval_shape(model.apply, params, state, None, xs[0])[0]
  ys = jnp.asarray(rs.normal(size=(_T,) + out.shape))
  fns, states, learners = {}, {}, {}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
    for name, make in makers.items():
      for roll in _ROLLS:
        learner = make(model, roll)
        states[(name, roll)] = learner.init_state(params, state, None, xs[0])
        for k in windows:
          fns[(name, k, roll)] = learner.sequence_grad(_mse, window=k)
      verdicts = learner.verdicts(params, states[(name, "closed")], None, xs[0])
      learners[name] = (learner, verdicts)

  def run(params, states, xs, ys):
    reference, _ = testing.bptt_grads(model, _mse, params, state, None, xs, ys)
    results = {
        key: fn(params, states[(key[0], key[2])], None, xs, ys)
        for key, fn in fns.items()
    }
    return reference, results

  reference, results = test_util.fast_jit(run)(params, states, xs, ys)
  runs = {
      name: (
          {key[1:]: r for key, r in results.items() if key[0] == name},
          learner,
          verdicts,
      )
      for name, (learner, verdicts) in learners.items()
  }
  return reference, runs


class _WindowCase(parameterized.TestCase):

  def check(self, reference, results, learner, exact: bool, label=""):
    """Closed form = per-step roll (gradients and traces); = BPTT where
    ``exact``. Prints the largest errors."""
    worst = {}
    for k in sorted({k for k, _ in results}):
      where = f"{label} window {k}"
      closed, per_step = results[(k, "closed")], results[(k, "per_step")]
      err = testing.relative_error(closed.grads, per_step.grads)
      self.assertLessEqual(err, _ROLL_TOL, f"{where}: gradients")
      traces_c = learner.traces(closed.state)
      traces_p = learner.traces(per_step.state)
      self.assertEqual(sorted(traces_c), sorted(traces_p))
      for name, want in traces_p.items():
        scale = float(jnp.max(jnp.abs(want)))
        diff = float(jnp.max(jnp.abs(traces_c[name] - want)))
        self.assertLessEqual(
            diff, _ROLL_TOL * max(scale, 1e-300), f"{where}: {name}"
        )
      worst["roll"] = max(worst.get("roll", 0.0), err)
      if exact:
        bptt = testing.relative_error(closed.grads, reference)
        self.assertLessEqual(bptt, _BPTT_TOL, f"{where}: against BPTT")
        worst["bptt"] = max(worst.get("bptt", 0.0), bptt)
    print(f"{self.id()} {label}: {worst}")


# Conv3D's and ConvND's layers and cells take the conv rule's path that
# Conv1D and Conv2D take (the same primitive, more spatial axes);
# tests/modules/modules_test.py checks all of them against BPTT.
# Haiku's own VanillaRNN, GRU and Conv1DLSTM give D-RTRL the relations of
# the library's twins, bitwise (tests/compiler/plain_layers_test.py), whose
# entries take this path.
_SAME_PATH = frozenset(
    {"Conv3D", "Conv3DGRU", "Conv3DLSTM", "ConvND", "ConvNDGRU", "ConvNDLSTM"}
    | {f"RNNCoreStep_{c}" for c in ("VanillaRNN", "GRU", "Conv1DLSTM")}
)


def _d_rtrl(model, roll):
  return haiku_etp.d_rtrl(model, max_cross_bytes=None, window_roll=roll)


def _es_d_rtrl(decay):
  return lambda model, roll: haiku_etp.es_d_rtrl(
      model, decay=decay if decay else 0.5, window_roll=roll
  )


def _rtrl(model, roll):
  return haiku_etp.rtrl(model, window_roll=roll)


# ES-D-RTRL's closed form (an option; the per-step roll is its default)
# equals the per-step roll; with decay (lam, 0) on a uniform leak it equals
# BPTT. Run on these examples, in their D-RTRL program.
_ES_EXAMPLES = ("Linear", "ExponentialSynapse", "LIF", "GRU")
# The dense and conv cells' closed form equals BPTT in
# tests/learners/algorithms/rtrl_test.py (windows of 3); here RTRL runs on
# the spiking cell and the LRU, whose full parameters reach the step outside
# ETP ops, in their D-RTRL program.
_RTRL_EXAMPLES = ("RecurrentALIF", "LRU")


class ModuleExamplesTest(_WindowCase):
  """D-RTRL on every example; ES-D-RTRL and RTRL on some, in one program."""

  @parameterized.named_parameters(
      (e.name, e) for e in testing.MODULE_EXAMPLES if e.name not in _SAME_PATH
  )
  def test_closed_form(self, example):
    makers = {"d_rtrl": _d_rtrl}
    exact = {"d_rtrl": "d_rtrl" in example.exact}
    if example.name in _ES_EXAMPLES:
      makers["es_d_rtrl"] = _es_d_rtrl(example.es_decay)
      exact["es_d_rtrl"] = "es_d_rtrl" in example.exact
    if example.name in _RTRL_EXAMPLES:
      makers["rtrl"] = _rtrl
      exact["rtrl"] = True
    with jax.enable_x64(True):
      reference, runs = _run(
          example.step, example.input_shape, example.input_scale, makers
      )
      # The example's claim and D-RTRL's own verdicts agree.
      verdicts = runs["d_rtrl"][2]
      self.assertEqual(exact["d_rtrl"], all(v.exact for v in verdicts))
      for name, (results, learner, _) in runs.items():
        self.check(reference, results, learner, exact[name], name)


class DRTRLCrossGroupTest(_WindowCase):

  @parameterized.named_parameters(*_CROSS_CASES)
  def test_closed_form(self, step, input_shape, input_scale, windows):
    with jax.enable_x64(True):
      reference, runs = _run(
          step, input_shape, input_scale, {"d_rtrl": _d_rtrl}, windows
      )
      results, learner, verdicts = runs["d_rtrl"]
      self.assertTrue(all(v.exact for v in verdicts), verdicts)
      self.check(reference, results, learner, exact=True)


# A primitive with the generic rules only (no drtrl_window): its window
# takes the generic closed form, which sums xy_to_trace step by step.
def _scale_impl(x, w):
  return x * w


_generic_p = extend.register_primitive(
    "test_window_generic_scale",
    _scale_impl,
    batched=True,
    trainable_invars_fn=lambda p: {"weight": 1},
    x_invar_index=0,
)
_generic_p.register_etp_rules(
    yw_to_w=lambda hd, trace: {"weight": trace["weight"] * hd},
    xy_to_dw=lambda x, hd, w: {
        "weight": jnp.sum(x * hd, axis=tuple(range(x.ndim - 1)))
    },
    xy_to_trace=lambda x, hd, w: {"weight": x * hd},
    trace_to_dw=lambda trace, w: {
        "weight": jnp.sum(
            trace["weight"], axis=tuple(range(trace["weight"].ndim - 1))
        )
    },
    init_drtrl=lambda x, y, w, s: {
        "weight": jnp.zeros(tuple(y.shape) + (s,), y.dtype)
    },
    init_pp=lambda x, y, w, s: jnp.zeros(tuple(y.shape) + (s,), y.dtype),
)


def _generic_step(x):
  w = hk.get_parameter("w", (x.shape[-1],), x.dtype, init=jnp.ones)
  v = haiku_etp.get_hidden_state("v", x.shape, x.dtype)
  v = 0.7 * v + _generic_p.bind(x, w)
  haiku_etp.set_hidden_state("v", v)
  return v


class ReportTest(absltest.TestCase):

  def test_generic_rules_are_named_and_exact(self):
    with jax.enable_x64(True):
      reference, runs = _run(_generic_step, (3,), 1.0, {"d_rtrl": _d_rtrl})
      results, learner, _ = runs["d_rtrl"]
      x0 = jnp.ones((_BATCH, 3))
      closed = _d_rtrl(hk.transform_with_state(_generic_step), "closed")
      params, state = test_util.fast_jit(closed.init)(jax.random.PRNGKey(0), x0)
      report = closed.report(params, state, None, x0)
      self.assertIn("window roll (sequence_grad with window > 1)", report)
      self.assertRegex(
          report,
          r"~/w: instantaneous terms summed \(test_window_generic_scale has "
          r"no drtrl_window rule\)",
      )
      _WindowCase.check(self, reference, results, learner, exact=True)

  def test_closed_form_everywhere_is_said(self):
    model = hk.transform_with_state(_lif_readout)
    learner = haiku_etp.d_rtrl(model)
    x0 = jnp.ones((_BATCH, 3))
    params, state = test_util.fast_jit(learner.init)(jax.random.PRNGKey(0), x0)
    self.assertIn(
        "closed form for every trace (once per window)",
        learner.report(params, state, None, x0),
    )

  def test_per_step_option_is_said(self):
    model = hk.transform_with_state(
        testing.MODULE_EXAMPLES[0].step  # Linear into a leaky integrator
    )
    learner = haiku_etp.rtrl(model, window_roll="per_step")
    x0 = jnp.ones((_BATCH, 3))
    params, state = learner.init(jax.random.PRNGKey(0), x0)
    self.assertIn(
        "step by step for every trace (window_roll='per_step')",
        learner.report(params, state, None, x0),
    )

  def test_unknown_window_roll_is_refused(self):
    model = hk.transform_with_state(_lif_readout)
    for make in (haiku_etp.d_rtrl, haiku_etp.rtrl):
      with self.assertRaisesRegex(ValueError, "window_roll must be one of"):
        make(model, window_roll="fast")


if __name__ == "__main__":
  absltest.main()

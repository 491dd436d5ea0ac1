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
"""Exactness of the online learners against whole-sequence BPTT.

Every case runs in float64 and asserts a relative error of at most 1e-8 on
every parameter leaf (``testing.relative_error`` is the largest per-leaf
error); every leaf of the reference gradient must be non-zero somewhere, so a
case cannot pass by comparing zeros. The cases are the ones docs/design.md
lists as exact:

* D-RTRL, any window, on models whose groups have per-position transitions
  and elementwise tails (leaky integrators on dense and conv relations, a
  trained leak, two coupled states, same-step chains, feed-forward LIF with a
  current synapse, reset and a readout);
* ES-D-RTRL at ``T = 1``, with decays ``(lam, 0)`` on a uniform leak ``lam``,
  and with decays ``(0, 0)`` on a group with ``D == 0``;
* any learner with a window covering the whole sequence.

The per-step losses must equal BPTT's, the compiler must call every D-RTRL
case exact (with the expected ``S``), truncated BPTT must be far from the
reference (so the trace contraction is what closes the gap), and the BPTT
learner itself is checked against ``jax.grad`` of an unrolled loop. The hidden
states start from a fixed non-zero value.

The largest relative error of each case is printed at the end of each test
class (visible with ``pytest -s``).
"""

import itertools
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

_TOL = 1e-8
_BATCH = 2
_NUM_IN = 3
_NUM_HIDDEN = 4
_NUM_OUT = 2
_IMAGE = 5
_CONV_IN = 2
_CONV_OUT = 3
_THRESHOLD = 0.5
# (T, window) pairs: one step; several one-step windows; windows of 3 with a
# shorter last one (7 = 3 + 3 + 1).
_SEQUENCES = ((1, 1), (7, 1), (7, 3))
_LONG = 7


# Model steps. Each maps x_t (batch first) to out_t and keeps its memory in
# hidden state; trainable ops go through haiku_etp.dense/conv/elementwise.


def _param(name, shape, dtype, stddev=0.5):
  return hk.get_parameter(
      name, shape, dtype, init=hk.initializers.RandomNormal(stddev)
  )


def _initial_state(shape, dtype):
  """A fixed non-zero ``h_0``: terms in ``h_0`` count from ``T = 1`` on."""
  size = int(np.prod(shape))
  return 0.5 * jnp.cos(jnp.arange(size, dtype=dtype)).reshape(shape)


def _hidden(name, shape, dtype):
  return haiku_etp.get_hidden_state(name, shape, dtype, init=_initial_state)


def _dense_param(name, num_in, num_out, dtype, bias=True):
  w = _param(name, (num_in, num_out), dtype)
  b = _param(name.replace("w", "b"), (num_out,), dtype) if bias else None
  return w, b


def _dense_leaky(x):
  w, b = _dense_param("w", _NUM_IN, _NUM_HIDDEN, x.dtype)
  v = _hidden("v", (x.shape[0], _NUM_HIDDEN), x.dtype)
  v = 0.8 * v + haiku_etp.dense(x, w, b)
  haiku_etp.set_hidden_state("v", v)
  return v


def _conv_leaky(layout):
  if layout == "nchw":
    dn = ("NCHW", "OIHW", "NCHW")
    kernel_shape = (_CONV_OUT, _CONV_IN, 3, 3)
    out_shape = (_CONV_OUT, _IMAGE, _IMAGE)
  else:
    dn = ("NHWC", "HWIO", "NHWC")
    kernel_shape = (3, 3, _CONV_IN, _CONV_OUT)
    out_shape = (_IMAGE, _IMAGE, _CONV_OUT)

  def step(x):
    kernel = _param("w", kernel_shape, x.dtype)
    bias = _param("b", (_CONV_OUT,), x.dtype)
    v = _hidden("v", (x.shape[0],) + out_shape, x.dtype)
    y = haiku_etp.conv(x, kernel, bias, padding="SAME", dimension_numbers=dn)
    v = 0.7 * v + y
    haiku_etp.set_hidden_state("v", v)
    return v

  return step


def _trained_leak(x):
  w, _ = _dense_param("w", _NUM_IN, _NUM_HIDDEN, x.dtype, bias=False)
  tau = _param("tau", (_NUM_HIDDEN,), x.dtype, stddev=1.0)
  v = _hidden("v", (x.shape[0], _NUM_HIDDEN), x.dtype)
  v = haiku_etp.elementwise(tau, jax.nn.sigmoid) * v + haiku_etp.dense(x, w)
  haiku_etp.set_hidden_state("v", v)
  return v


def _two_state(x):
  w, b = _dense_param("w", _NUM_IN, _NUM_HIDDEN, x.dtype)
  shape = (x.shape[0], _NUM_HIDDEN)
  v_tm1 = _hidden("v", shape, x.dtype)
  a_tm1 = _hidden("a", shape, x.dtype)
  v = 0.8 * v_tm1 + haiku_etp.dense(x, w, b) - a_tm1
  a = 0.6 * a_tm1 + 0.3 * v_tm1
  haiku_etp.set_hidden_state("v", v)
  haiku_etp.set_hidden_state("a", a)
  return v


def _same_step_chain(x):
  w, b = _dense_param("w", _NUM_IN, _NUM_HIDDEN, x.dtype)
  shape = (x.shape[0], _NUM_HIDDEN)
  a = _hidden("a", shape, x.dtype)
  v = _hidden("v", shape, x.dtype)
  a = 0.7 * a + haiku_etp.dense(x, w, b)
  v = 0.8 * v + jnp.tanh(a)
  haiku_etp.set_hidden_state("a", a)
  haiku_etp.set_hidden_state("v", v)
  return v


def _lif_layer(x, spike_fn):
  """Feed-forward LIF with a current synapse and soft reset."""
  w, b = _dense_param("w", _NUM_IN, _NUM_HIDDEN, x.dtype)
  shape = (x.shape[0], _NUM_HIDDEN)
  i = _hidden("i", shape, x.dtype)
  v = _hidden("v", shape, x.dtype)
  i = 0.6 * i + haiku_etp.dense(x, w, b)
  v = 0.8 * v + i
  s = spike_fn(v - _THRESHOLD)
  v = v - s * _THRESHOLD
  haiku_etp.set_hidden_state("i", i)
  haiku_etp.set_hidden_state("v", v)
  return s


def _lif(x):
  return _lif_layer(x, test_util.spike_jvp)


def _lif_readout(spike_fn, activation=None):
  def step(x):
    s = _lif_layer(x, spike_fn)
    w_out, b_out = _dense_param("w_out", _NUM_HIDDEN, _NUM_OUT, x.dtype)
    out = haiku_etp.dense(s, w_out, b_out)
    return out if activation is None else activation(out)

  return step


def _d_zero(x):
  """A group with D == 0: the new state ignores the old one.

  The output reads the old state, so the loss still depends on it and the
  trace contraction is not trivially zero.
  """
  w, b = _dense_param("w", _NUM_IN, _NUM_HIDDEN, x.dtype)
  h_tm1 = _hidden("h", (x.shape[0], _NUM_HIDDEN), x.dtype)
  h = jnp.tanh(haiku_etp.dense(x, w, b))
  haiku_etp.set_hidden_state("h", h)
  return h + 0.5 * h_tm1


def _tanh_rnn(x):
  """Recurrent weights: D-RTRL and ES-D-RTRL are approximate here."""
  w_i, b = _dense_param("w_i", _NUM_IN, _NUM_HIDDEN, x.dtype)
  w_h, _ = _dense_param("w_h", _NUM_HIDDEN, _NUM_HIDDEN, x.dtype, bias=False)
  h = _hidden("h", (x.shape[0], _NUM_HIDDEN), x.dtype)
  h = jnp.tanh(haiku_etp.dense(x, w_i, b) + haiku_etp.dense(h, w_h))
  haiku_etp.set_hidden_state("h", h)
  return h


def _cross_entropy(logits, y):
  return -jnp.mean(jnp.sum(jax.nn.softmax(y) * jax.nn.log_softmax(logits), -1))


# name -> (step, input shape without batch, loss, expected S).
_MODELS = {
    "dense_leaky": (_dense_leaky, (_NUM_IN,), test_util.mse, 1),
    "conv_nchw_leaky": (
        _conv_leaky("nchw"),
        (_CONV_IN, _IMAGE, _IMAGE),
        test_util.mse,
        1,
    ),
    "conv_nhwc_leaky": (
        _conv_leaky("nhwc"),
        (_IMAGE, _IMAGE, _CONV_IN),
        test_util.mse,
        1,
    ),
    "trained_leak": (_trained_leak, (_NUM_IN,), test_util.mse, 1),
    "two_state": (_two_state, (_NUM_IN,), test_util.mse, 2),
    "same_step_chain": (_same_step_chain, (_NUM_IN,), test_util.mse, 2),
    "lif": (_lif, (_NUM_IN,), test_util.mse, 2),
    "lif_readout": (
        _lif_readout(test_util.spike_jvp),
        (_NUM_IN,),
        test_util.mse,
        2,
    ),
    "lif_readout_jax_nn": (
        _lif_readout(test_util.spike_jvp, jax.nn.softplus),
        (_NUM_IN,),
        _cross_entropy,
        2,
    ),
    "lif_readout_custom_vjp": (
        _lif_readout(test_util.spike_vjp),
        (_NUM_IN,),
        test_util.mse,
        2,
    ),
    "d_zero": (_d_zero, (_NUM_IN,), test_util.mse, 1),
    "tanh_rnn": (_tanh_rnn, (_NUM_IN,), test_util.mse, 1),
}

_DRTRL_EXACT = (
    "dense_leaky",
    "conv_nchw_leaky",
    "conv_nhwc_leaky",
    "trained_leak",
    "two_state",
    "same_step_chain",
    "lif",
    "lif_readout",
    "lif_readout_jax_nn",
    "lif_readout_custom_vjp",
    "d_zero",
)


_PREFIX = dict(num_steps="T", window="w", decay="decay", sequence="Tw")


def _cases(**axes):
  """Named parameter dicts for the product of ``axes`` (readable for -k)."""
  out = [{"testcase_name": ""}]
  for key, values in axes.items():
    out = [
        dict(
            case, **{key: v}, testcase_name=case["testcase_name"] + _tag(key, v)
        )
        for case in out
        for v in values
    ]
  return out


def _tag(key, value) -> str:
  text = "_".join(map(str, value)) if isinstance(value, tuple) else str(value)
  return "_" + _PREFIX.get(key, "") + text.replace(".", "p")


def _seed(*parts) -> int:
  return zlib.crc32(repr(parts).encode())


# Problems per (model, T) and initial parameters and state per model, shared
# by the test classes (the arrays are never written to).
_PROBLEMS = {}
_INITS = {}


def _problem(name, num_steps):
  """``(model, loss, params, state, xs, ys)`` in float64; call under x64.

  ``state`` is the model's initial state. Parameters and state do not depend
  on ``num_steps``: they are initialised once per model.
  """
  key = (name, num_steps)
  if key not in _PROBLEMS:
    step, x_shape, loss, _ = _MODELS[name]
    model = hk.transform_with_state(step)
    rs = np.random.RandomState(_seed(name, num_steps))
    xs = jnp.asarray(rs.normal(size=(num_steps, _BATCH) + x_shape))
    if name not in _INITS:
      _INITS[name] = model.init(jax.random.PRNGKey(_seed(name)), xs[0])
    params, state = _INITS[name]
    out = jax.eval_shape(model.apply, params, state, None, xs[0])[0]
    ys = jnp.asarray(rs.normal(size=(num_steps,) + out.shape))
    _PROBLEMS[key] = (model, loss, params, state, xs, ys)
  return _PROBLEMS[key]


# Whole-sequence BPTT per (model, T), shared by the test classes.
_REFERENCES = {}


def _run(*runs):
  """``[(grads, losses)]`` of each ``(learner, window, problem)`` in ``runs``.

  Each learner runs over its problem's sequence from its initial state (the
  model's initial state, zero traces); all runs are one compiled program.
  """
  args = [
      (params, learner.init_state(params, state, None, xs[0]), xs, ys)
      for learner, _, (_, _, params, state, xs, ys) in runs
  ]

  def fn(args):
    results = []
    for (learner, window, problem), (params, state, xs, ys) in zip(runs, args):
      grad_fn = learner.sequence_grad(problem[1], window=window)
      result = grad_fn(params, state, None, xs, ys)
      results.append((result.grads, result.losses))
    return results

  results = test_util.fast_jit(fn)(args)
  return [(grads, np.asarray(losses)) for grads, losses in results]


def _compiled(learner, problem):
  _, _, params, state, xs, _ = problem
  lstate = learner.init_state(params, state, None, xs[0])
  return learner.compile(params, lstate, None, xs[0])


def _print_table(title, errors):
  if not errors:
    return
  width = max(len(k) for k in errors)
  lines = [f"\n{title}", f"{'case':<{width}} | max rel err"]
  lines += [f"{k:<{width}} | {v:.3e}" for k, v in sorted(errors.items())]
  print("\n".join(lines))


class _ExactTestCase(parameterized.TestCase):
  """Float64 scope, the BPTT references and the table of errors."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.errors = {}

  @classmethod
  def tearDownClass(cls):
    _print_table(cls.__name__, cls.errors)
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))
    # ES-D-RTRL and the recurrent model announce approximations; the cases
    # here measure them, so the warnings are expected.
    self.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)

  def reference(self, name, num_steps):
    """Whole-sequence BPTT ``(problem, grads, losses)``, cached."""
    key = (name, num_steps)
    if key not in _REFERENCES:
      problem = _problem(name, num_steps)
      ((grads, losses),) = _run((haiku_etp.bptt(problem[0]), None, problem))
      _REFERENCES[key] = (problem, grads, losses)
    return _REFERENCES[key]

  def assert_nonvacuous(self, grads):
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
      leaf = np.asarray(leaf)
      self.assertEqual(leaf.dtype, np.float64)
      self.assertTrue(
          np.any(leaf != 0),
          msg=f"reference gradient {jax.tree_util.keystr(path)} is all zero",
      )

  def assert_exact(self, case, grads, grads_ref):
    chex.assert_trees_all_equal_structs(grads, grads_ref)
    self.assert_nonvacuous(grads_ref)
    err = testing.relative_error(grads, grads_ref)
    self.errors[case] = err
    self.assertLessEqual(err, _TOL, msg=case)
    return err

  def assert_losses(self, losses, losses_ref):
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-12, atol=1e-14)


class DRTRLExactTest(_ExactTestCase):
  """D-RTRL equals BPTT, whatever the window, on per-position models."""

  @parameterized.named_parameters(_cases(name=_DRTRL_EXACT))
  def test_equals_bptt(self, name):
    # One program per model: D-RTRL at every (T, window) of _SEQUENCES,
    # D-RTRL with the generic rules (fast=False) and truncated BPTT (the
    # in-window term alone) at T = _LONG with one-step windows.
    refs = {t: self.reference(name, t) for t in {t for t, _ in _SEQUENCES}}
    model = refs[_LONG][0][0]
    d_rtrl = haiku_etp.d_rtrl(model)
    runs = [(d_rtrl, w, refs[t][0]) for t, w in _SEQUENCES]
    runs.append((haiku_etp.d_rtrl(model, fast=False), 1, refs[_LONG][0]))
    runs.append((haiku_etp.bptt(model), 1, refs[_LONG][0]))
    *exact, (generic, _), (truncated, _) = _run(*runs)
    for (num_steps, window), (grads, losses) in zip(_SEQUENCES, exact):
      _, grads_ref, losses_ref = refs[num_steps]
      self.assert_exact(
          f"d_rtrl/{name}/T={num_steps}/w={window}", grads, grads_ref
      )
      self.assert_losses(losses, losses_ref)
    self.assert_exact(
        f"d_rtrl(fast=False)/{name}/T={_LONG}/w=1", generic, refs[_LONG][1]
    )
    # Truncated BPTT must be far from the reference, so the equalities
    # above exercise the trace contraction.
    err = testing.relative_error(truncated, refs[_LONG][1])
    self.errors[f"bptt(truncated)/{name}/T={_LONG}/w=1"] = err
    self.assertGreater(err, 1e-3)
    # The compiler finds the exact step.
    compiled = _compiled(d_rtrl, _problem(name, 1))
    self.assertTrue(compiled.drtrl_exact, msg=compiled.report())
    self.assertLen(compiled.groups, 1)
    self.assertEqual(compiled.groups[0].num_states, _MODELS[name][3])
    self.assertEqual(compiled.groups[0].dtype, np.float64)

  @parameterized.named_parameters(
      _cases(name=("lif_readout", "lif_readout_jax_nn"))
  )
  def test_readout_is_non_temporal(self, name):
    problem = _problem(name, 1)
    compiled = _compiled(haiku_etp.d_rtrl(problem[0]), problem)
    self.assertIn("~/w_out", compiled.non_temporal)
    self.assertIn("~/b_out", compiled.non_temporal)


class ESDRTRLExactTest(_ExactTestCase):
  """ES-D-RTRL in the cases where docs/design.md says it equals BPTT."""

  @parameterized.named_parameters(
      dict(testcase_name=f"_{name}_{tag}", name=name, decay=decay)
      for name, (tag, decay) in zip(
          (
              "dense_leaky",
              "conv_nhwc_leaky",
              "two_state",
              "lif_readout",
              "tanh_rnn",
          ),
          itertools.cycle(
              (
                  ("pair", dict(decay=(0.3, 0.7))),
                  ("float", dict(decay=0.9)),
                  ("rank", dict(rank=4)),
              )
          ),
      )
  )  # pyformat: disable
  def test_single_step_any_decay(self, name, decay):
    problem, grads_ref, losses_ref = self.reference(name, 1)
    learner = haiku_etp.es_d_rtrl(problem[0], **decay)
    ((grads, losses),) = _run((learner, 1, problem))
    self.assert_exact(f"es/T=1/{name}/{decay}", grads, grads_ref)
    self.assert_losses(losses, losses_ref)

  @parameterized.named_parameters(
      _cases(name=("dense_leaky", "conv_nchw_leaky", "conv_nhwc_leaky"))
  )
  def test_uniform_leak_decay_lambda_zero(self, name):
    # Every (T, window) of _SEQUENCES[1:] (one sequence) in one program.
    problem, grads_ref, losses_ref = self.reference(name, _LONG)
    leak = 0.8 if name == "dense_leaky" else 0.7
    learner = haiku_etp.es_d_rtrl(problem[0], decay=(leak, 0.0))
    results = _run(*[(learner, w, problem) for _, w in _SEQUENCES[1:]])
    for (num_steps, window), (grads, losses) in zip(_SEQUENCES[1:], results):
      self.assert_exact(
          f"es/leak/{name}/T={num_steps}/w={window}", grads, grads_ref
      )
      self.assert_losses(losses, losses_ref)

  def test_zero_decays_on_memoryless_group(self):
    # Every (T, window) of _SEQUENCES[1:], ES-D-RTRL and D-RTRL, in one
    # program.
    problem, grads_ref, _ = self.reference("d_zero", _LONG)
    es = haiku_etp.es_d_rtrl(problem[0], decay=(0.0, 0.0))
    d_rtrl = haiku_etp.d_rtrl(problem[0])
    runs = [(l, w, problem) for _, w in _SEQUENCES[1:] for l in (es, d_rtrl)]
    results = iter(_run(*runs))
    for num_steps, window in _SEQUENCES[1:]:
      (grads, _), (grads_d, _) = next(results), next(results)
      case = f"es/D=0/T={num_steps}/w={window}"
      self.assert_exact(case + " vs bptt", grads, grads_ref)
      self.assert_exact(case + " vs d_rtrl", grads, grads_d)


class FusedESDRTRLExactTest(_ExactTestCase):
  """``es_d_rtrl(form="fused")`` in the cases docs/design.md says are exact."""

  @parameterized.named_parameters(
      _cases(
          name=(
              "dense_leaky",
              "conv_nchw_leaky",
              "two_state",
              "trained_leak",
              "lif_readout",
          )
      )
  )
  def test_single_step_any_decay(self, name):
    # Every decay in one program.
    decays = ((0.3, 0.7), (0.0, 0.0), (0.9, 0.9))
    problem, grads_ref, losses_ref = self.reference(name, 1)
    results = _run(
        *[
            (haiku_etp.es_d_rtrl(problem[0], decay=d, form="fused"), 1, problem)
            for d in decays
        ]
    )
    for decay, (grads, losses) in zip(decays, results):
      self.assert_exact(f"fused/T=1/{name}/{decay}", grads, grads_ref)
      self.assert_losses(losses, losses_ref)

  @parameterized.named_parameters(
      _cases(name=("dense_leaky", "conv_nchw_leaky", "conv_nhwc_leaky"))
  )
  def test_uniform_leak_decay_lambda_zero(self, name):
    # Both lengths, and the control at each, in one program.
    lengths = (_LONG, 20)
    refs = [self.reference(name, t) for t in lengths]
    leak = 0.8 if name == "dense_leaky" else 0.7
    model = refs[0][0][0]
    exact = haiku_etp.es_d_rtrl(model, decay=(leak, 0.0), form="fused")
    other = haiku_etp.es_d_rtrl(model, decay=(leak / 2, 0.0), form="fused")
    results = iter(
        _run(*[(l, None, ref[0]) for ref in refs for l in (exact, other)])
    )
    for num_steps, (_, grads_ref, losses_ref) in zip(lengths, refs):
      (grads, losses), (other_grads, _) = next(results), next(results)
      self.assert_exact(f"fused/leak/{name}/T={num_steps}", grads, grads_ref)
      self.assert_losses(losses, losses_ref)
      # The leak is what makes it exact: another input decay is far off.
      self.assertGreater(testing.relative_error(other_grads, grads_ref), 1e-3)

  def test_loss_reading_the_old_state_is_not_exact(self):
    # docs/design.md: the fused form keeps only an alpha_f share of the
    # credit through a loss that reads the state before the step writes it
    # (d_zero's output reads h_{t-1}); the window form is exact there.
    problem, grads_ref, _ = self.reference("d_zero", _LONG)
    learner = haiku_etp.es_d_rtrl(problem[0], decay=(0.0, 0.0), form="fused")
    ((fused, _),) = _run((learner, None, problem))
    err = testing.relative_error(fused, grads_ref)
    self.errors[f"fused/D=0/T={_LONG} (not exact)"] = err
    self.assertGreater(err, 1e-3)

  def test_keeps_no_output_side_trace_at_alpha_f_zero(self):
    model, _, params, state, xs, _ = _problem("tanh_rnn", 1)
    for decay, want in (((0.5, 0.0), []), ((0.5, 0.5), ["f:"])):
      learner = haiku_etp.es_d_rtrl(model, decay=decay, form="fused")
      lstate = learner.init_state(params, state, None, xs[0])
      kinds = sorted({k[:2] for k in learner.traces(lstate) if k[:2] == "f:"})
      self.assertEqual(kinds, want, msg=str(decay))

  def test_longer_window_is_an_error(self):
    problem, _, _ = self.reference("dense_leaky", _LONG)
    learner = haiku_etp.es_d_rtrl(problem[0], decay=0.5, form="fused")
    with self.assertRaisesRegex(ValueError, r"window=3.*window=1"):
      _run((learner, 3, problem))

  def test_unknown_form_is_an_error(self):
    model = _problem("dense_leaky", 1)[0]
    with self.assertRaisesRegex(ValueError, "form must be 'window' or 'fused'"):
      haiku_etp.es_d_rtrl(model, decay=0.5, form="step")


class FullWindowTest(_ExactTestCase):
  """A window covering the whole sequence is BPTT for every learner."""

  @parameterized.named_parameters(
      _cases(learner=("d_rtrl", "es_d_rtrl"), num_steps=(_LONG,))
  )
  def test_full_window_is_bptt(self, learner, num_steps):
    problem, grads_ref, losses_ref = self.reference("tanh_rnn", num_steps)
    make = dict(
        d_rtrl=haiku_etp.d_rtrl,
        es_d_rtrl=lambda m: haiku_etp.es_d_rtrl(m, decay=(0.5, 0.5)),
    )[learner]
    # The full window and one-step windows in one program.
    (grads, losses), (grads_1, _) = _run(
        (make(problem[0]), num_steps, problem), (make(problem[0]), 1, problem)
    )
    self.assert_exact(f"{learner}/tanh_rnn/T={num_steps}/w=T", grads, grads_ref)
    self.assert_losses(losses, losses_ref)
    # The same learner with one-step windows is only an approximation here,
    # so the full-window equality is not an accident of the model.
    err_1 = testing.relative_error(grads_1, grads_ref)
    self.errors[f"{learner}/tanh_rnn/T={num_steps}/w=1 (approx.)"] = err_1
    self.assertGreater(err_1, 1e-4)

  def test_compiler_flags_recurrent_weights(self):
    problem = _problem("tanh_rnn", 1)
    compiled = _compiled(haiku_etp.d_rtrl(problem[0]), problem)
    self.assertFalse(compiled.drtrl_exact)


class ReferenceTest(_ExactTestCase):
  """The BPTT learner agrees with ``jax.grad`` of a plain unrolled loop."""

  @parameterized.named_parameters(_cases(name=tuple(_MODELS)))
  def test_bptt_is_unrolled_grad(self, name):
    num_steps = 5
    model, loss, params, state, xs, ys = _problem(name, num_steps)
    learner = haiku_etp.bptt(model)
    lstate = learner.init_state(params, state, None, xs[0])

    def both(params, lstate):
      # The BPTT learner and the unrolled loop in one program.
      def total(params):
        st, losses = state, []
        for t in range(num_steps):
          out, st = model.apply(params, st, None, xs[t])
          losses.append(loss(out, ys[t]))
        return sum(losses), jnp.stack(losses)

      result = learner.sequence_grad(loss)(params, lstate, None, xs, ys)
      return result.grads, result.losses, jax.grad(total, has_aux=True)(params)

    grads_ref, losses_ref, (grads, losses) = test_util.fast_jit(both)(
        params, lstate
    )
    self.assert_exact(f"bptt/{name}/T={num_steps}", grads_ref, grads)
    self.assert_losses(losses_ref, losses)


if __name__ == "__main__":
  absltest.main()

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
"""Behaviour, equivalences and measured approximations of the learners.

* Negative controls: steps where D-RTRL or ES-D-RTRL must *not* equal BPTT
  (recurrent weights, a stack of leaky layers, ES-D-RTRL with a decay on a
  LIF neuron), so the exactness tests elsewhere cannot pass by accident.
* Approximation report: cosine and relative error vs BPTT for a tanh RNN, a
  GRU and an LSTM; only sanity is asserted, the numbers are printed.
* Equivalences: batch sum vs per-sample runs, ``pmap`` vs one device, and a
  checkpoint round trip mid-sequence.
* Behaviour of the interface: masks, reductions, aux outputs, ``reset``,
  ``evolve``, ``apply``, trace labels, gradient structure and input errors.
* An optax smoke check.

Exactness checks run in float64 (scoped with ``jax.enable_x64``).
"""

import functools
import os
import tempfile
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import haiku_etp
from haiku_etp import testing
from tests import test_util

_RTOL = 1e-10
_HIDDEN = ":hidden"
# Documented prefix of the learners' top-level state entries (traces).
_LEARNER_PREFIX = "~etp"

_T, _B, _I, _H, _O = 8, 3, 4, 5, 2

# Every program here is compiled with the cheap options (a test compiles each
# once); results are compared against tolerances, or against the same
# program's, or are exact zeros and constants.
_jit = test_util.fast_jit


# Models. Every trainable op that feeds hidden state goes through
# haiku_etp.dense; readouts are plain matmuls (non-temporal parameters).


def _weight(name, shape, dtype):
  stddev = 1.0 / np.sqrt(shape[0])
  return hk.get_parameter(
      name, shape, dtype, init=hk.initializers.TruncatedNormal(stddev)
  )


def _bias(name, size, dtype):
  return hk.get_parameter(name, (size,), dtype, init=jnp.zeros)


class _Leaky(hk.Module):
  """``v <- lam v + x W + b``; also counts its steps in ordinary state."""

  def __init__(self, size, lam=0.9, count=False, name=None):
    super().__init__(name=name)
    self.size = size
    self.lam = lam
    self.count = count

  def __call__(self, x):
    w = _weight("w", (x.shape[-1], self.size), x.dtype)
    b = _bias("b", self.size, x.dtype)
    v = haiku_etp.get_hidden_state("v", (x.shape[0], self.size), x.dtype)
    v = self.lam * v + haiku_etp.dense(x, w, b)
    haiku_etp.set_hidden_state("v", v)
    if self.count:
      n = hk.get_state("count", (), jnp.int32, init=jnp.zeros)
      hk.set_state("count", n + 1)
    return v


class _RNN(hk.Module):
  """``h <- tanh(x W + b + h U)``."""

  def __init__(self, size, name=None):
    super().__init__(name=name)
    self.size = size

  def __call__(self, x):
    d = x.dtype
    w = _weight("w", (x.shape[-1], self.size), d)
    u = _weight("u", (self.size, self.size), d)
    h = haiku_etp.get_hidden_state("h", (x.shape[0], self.size), d)
    h = jnp.tanh(
        haiku_etp.dense(x, w, _bias("b", self.size, d)) + haiku_etp.dense(h, u)
    )
    haiku_etp.set_hidden_state("h", h)
    return h


class _GRU(hk.Module):
  """A GRU with one dense op per gate and input."""

  def __init__(self, size, name=None):
    super().__init__(name=name)
    self.size = size

  def __call__(self, x):
    d, size = x.dtype, self.size
    h = haiku_etp.get_hidden_state("h", (x.shape[0], size), d)

    def gate(k, h_in):
      w = _weight(f"w_{k}", (x.shape[-1], size), d)
      u = _weight(f"u_{k}", (size, size), d)
      x_part = haiku_etp.dense(x, w, _bias(f"b_{k}", size, d))
      return x_part, haiku_etp.dense(h_in, u)

    xz, hz = gate("z", h)
    xr, hr = gate("r", h)
    xn, hn = gate("n", h)
    z = jax.nn.sigmoid(xz + hz)
    r = jax.nn.sigmoid(xr + hr)
    n = jnp.tanh(xn + r * hn)
    h = (1.0 - z) * n + z * h
    haiku_etp.set_hidden_state("h", h)
    return h


class _LSTM(hk.Module):
  """An LSTM with hidden states ``c`` and ``h`` and one dense op per gate."""

  def __init__(self, size, name=None):
    super().__init__(name=name)
    self.size = size

  def __call__(self, x):
    d, size = x.dtype, self.size
    c = haiku_etp.get_hidden_state("c", (x.shape[0], size), d)
    h = haiku_etp.get_hidden_state("h", (x.shape[0], size), d)

    def gate(k):
      w = _weight(f"w_{k}", (x.shape[-1], size), d)
      u = _weight(f"u_{k}", (size, size), d)
      return haiku_etp.dense(x, w, _bias(f"b_{k}", size, d)) + haiku_etp.dense(
          h, u
      )

    i = jax.nn.sigmoid(gate("i"))
    f = jax.nn.sigmoid(gate("f") + 1.0)
    g = jnp.tanh(gate("g"))
    o = jax.nn.sigmoid(gate("o"))
    c = f * c + i * g
    h = o * jnp.tanh(c)
    haiku_etp.set_hidden_state("c", c)
    haiku_etp.set_hidden_state("h", h)
    return h


@jax.custom_jvp
def _spike(v):
  return (v > 0.0).astype(v.dtype)


@_spike.defjvp
def _spike_jvp(primals, tangents):
  (v,), (dv,) = primals, tangents
  return _spike(v), dv / (1.0 + 10.0 * jnp.abs(v)) ** 2


class _LIF(hk.Module):
  """LIF with a current synapse and subtractive reset (one group, ``S=2``)."""

  def __init__(self, size, alpha=0.8, beta=0.9, name=None):
    super().__init__(name=name)
    self.size = size
    self.alpha = alpha
    self.beta = beta

  def __call__(self, x):
    d, shape = x.dtype, (x.shape[0], self.size)
    w = _weight("w", (x.shape[-1], self.size), d)
    i_syn = haiku_etp.get_hidden_state("i_syn", shape, d)
    v = haiku_etp.get_hidden_state("v", shape, d)
    i_syn = self.alpha * i_syn + 2.0 * haiku_etp.dense(x, w)
    v = self.beta * v + i_syn
    s = _spike(v - 1.0)
    v = v - s
    haiku_etp.set_hidden_state("i_syn", i_syn)
    haiku_etp.set_hidden_state("v", v)
    return s


def _readout(h):
  return h @ _weight("w_out", (h.shape[-1], _O), h.dtype)


def _leaky_step(x):
  return _readout(jnp.tanh(_Leaky(_H, count=True, name="linear")(x)))


def _rnn_step(x):
  return _readout(_RNN(_H, name="rnn")(x))


def _stack_step(x):
  h1 = _Leaky(_H, name="layer1")(x)
  return _readout(_Leaky(_H, name="layer2")(h1))


def _gru_step(x):
  return _readout(_GRU(_H, name="gru")(x))


def _lstm_step(x):
  return _readout(_LSTM(_H, name="lstm")(x))


def _lif_step(x):
  return _readout(_LIF(_H, name="lif")(x))


_STEPS = {
    "leaky": _leaky_step,
    "rnn": _rnn_step,
    "stack": _stack_step,
    "gru": _gru_step,
    "lstm": _lstm_step,
    "lif": _lif_step,
}

_LEARNERS = {
    "d_rtrl": haiku_etp.d_rtrl,
    "es_d_rtrl": functools.partial(haiku_etp.es_d_rtrl, decay=0.5),
    "bptt": haiku_etp.bptt,
}
_ALL = tuple((name, name) for name in _LEARNERS)
_ONLINE = (("d_rtrl", "d_rtrl"), ("es_d_rtrl", "es_d_rtrl"))
# The sequence driver's two paths: online windows (shared by both online
# learners) and one window over the sequence (BPTT).
_DRIVERS = (("d_rtrl", "d_rtrl"), ("bptt", "bptt"))


def _sum_loss(out, y):
  """Squared error summed over batch and features."""
  return jnp.sum((out - y) ** 2)


def _per_sample_loss(out, y):
  """Squared error summed over features, one loss per sample."""
  return jnp.sum((out - y) ** 2, axis=-1)


def _mean_loss(out, y):
  """Squared error summed over features, averaged over the batch."""
  return jnp.mean(jnp.sum((out - y) ** 2, axis=-1))


def _data(num_steps=_T, batch=_B, dtype=jnp.float64, seed=0):
  rs = np.random.RandomState(seed)
  xs = rs.standard_normal((num_steps, batch, _I))
  ys = rs.standard_normal((num_steps, batch, _O))
  return jnp.asarray(xs, dtype), jnp.asarray(ys, dtype)


def _learner(learner_name, step="leaky"):
  return _LEARNERS[learner_name](hk.transform_with_state(_STEPS[step]))


def _init(learner, xs, seed=0):
  return learner.init(jax.random.PRNGKey(seed), xs[0])


def _model_state(state):
  return {m: e for m, e in state.items() if not m.startswith(_LEARNER_PREFIX)}


def _hidden_names(state):
  return sorted(
      (m, n) for m, e in state.items() for n in e if n.endswith(_HIDDEN)
  )


def _grads_and_exact(step, runs, params, xs, ys, extra=None):
  """``(grads of each (learner, state) in runs, exact[, extra(params)])``.

  The exact gradient is one BPTT window over the whole sequence; everything
  is computed in one program.
  """
  ref = haiku_etp.bptt(hk.transform_with_state(step))
  ref_params, ref_state = _init(ref, xs)
  chex.assert_trees_all_equal(ref_params, params)

  def run(params, states, ref_state, xs, ys):
    grads = [
        learner.sequence_grad(_sum_loss)(params, st, None, xs, ys).grads
        for (learner, _), st in zip(runs, states)
    ]
    exact = ref.sequence_grad(_sum_loss)(params, ref_state, None, xs, ys)
    out = (grads, exact.grads)
    return out if extra is None else out + (extra(params),)

  return _jit(run)(params, [st for _, st in runs], ref_state, xs, ys)


def _num_equations(jaxpr) -> int:
  """Equations of ``jaxpr`` and of every jaxpr nested in their params."""
  total = 0
  for eqn in jaxpr.eqns:
    total += 1
    for value in eqn.params.values():
      for v in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(v, "jaxpr", v)
        if hasattr(inner, "eqns"):
          total += _num_equations(inner)
  return total


def _assert_trees_close(actual, expected, rtol=_RTOL):
  chex.assert_trees_all_equal_structs(actual, expected)
  jax.tree_util.tree_map(
      lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=0.0),
      actual,
      expected,
  )


class NegativeControlTest(parameterized.TestCase):
  """Steps where the online learners are approximate must differ from BPTT."""

  @parameterized.named_parameters(
      ("rnn", "rnn", {}),
      # A stack is exact with cross-group traces; without them it is cut.
      ("stack_without_cross_traces", "stack", dict(max_cross_bytes=0)),
  )
  def test_d_rtrl_differs_on_cut_memory(self, step, kwargs):
    with jax.enable_x64(True):
      xs, ys = _data(num_steps=12)
      learner = haiku_etp.d_rtrl(
          hk.transform_with_state(_STEPS[step]), **kwargs
      )
      params, state = _init(learner, xs)
      (grads,), exact = _grads_and_exact(
          _STEPS[step], [(learner, state)], params, xs, ys
      )
      err = testing.relative_error(grads, exact)
      cos = testing.cosine_similarity(grads, exact)
      print(f"negative control {step} d_rtrl: rel err {err:.3e}, cos {cos:.6f}")
      self.assertGreater(err, 1e-3)
      compiled = learner.compile(params, state, None, xs[0])
      self.assertFalse(compiled.drtrl_exact)
      self.assertIn("cut_memory_path", [d.code for d in compiled.diagnostics])
      self.assertIn(
          "cut_memory_path", learner.report(params, state, None, xs[0])
      )

  def test_stack_is_exact_with_cross_traces(self):
    with jax.enable_x64(True):
      xs, ys = _data(num_steps=12)
      learner = _learner("d_rtrl", "stack")
      params, state = _init(learner, xs)
      (grads,), exact = _grads_and_exact(
          _stack_step, [(learner, state)], params, xs, ys
      )
      _assert_trees_close(grads, exact)
      self.assertTrue(learner.compile(params, state, None, xs[0]).drtrl_exact)

  def test_es_d_rtrl_with_decay_differs_on_lif(self):
    with jax.enable_x64(True):
      xs, ys = _data(num_steps=12)
      d_rtrl = _learner("d_rtrl", "lif")
      params, state = _init(d_rtrl, xs)
      es = _learner("es_d_rtrl", "lif")
      _, es_state = _init(es, xs)
      lif = hk.transform_with_state(lambda x: _LIF(_H, name="lif")(x))
      _, lif_state = lif.init(jax.random.PRNGKey(0), xs[0])

      def spikes(params):
        return jax.lax.scan(
            lambda st, x: lif.apply({"lif": params["lif"]}, st, None, x)[::-1],
            lif_state,
            xs,
        )[1]

      # Both learners, the exact gradient and the spikes in one program.
      (grads, es_grads), exact, spikes = _grads_and_exact(
          _lif_step, [(d_rtrl, state), (es, es_state)], params, xs, ys, spikes
      )
      # Positive control on the same step: D-RTRL is exact on a feed-forward
      # LIF, so the gap below is the decay's, not a broken step.
      self.assertLess(testing.relative_error(grads, exact), _RTOL)
      self.assertTrue(d_rtrl.compile(params, state, None, xs[0]).drtrl_exact)
      # The reset path is only exercised if the neurons spike.
      self.assertGreater(float(jnp.mean(spikes)), 0.05)
      err = testing.relative_error(es_grads, exact)
      cos = testing.cosine_similarity(es_grads, exact)
      print(
          f"negative control lif es_d_rtrl(0.5): rel err {err:.3e}, "
          f"cos {cos:.6f}"
      )
      self.assertGreater(err, 1e-3)


class ApproximationReportTest(absltest.TestCase):
  """Measured, not asserted: online gradients vs BPTT on gated cells."""

  def test_report(self):
    learners = (
        ("d_rtrl (window 1)", haiku_etp.d_rtrl),
        ("es_d_rtrl (decay 0.5)", lambda m: haiku_etp.es_d_rtrl(m, 0.5)),
        ("es_d_rtrl (rank 4)", lambda m: haiku_etp.es_d_rtrl(m, rank=4)),
    )
    rows = []
    with jax.enable_x64(True):
      xs, ys = _data(num_steps=16)
      for step_name in ("rnn", "gru", "lstm"):
        model = hk.transform_with_state(_STEPS[step_name])
        online = [make(model) for _, make in learners]
        inits = [_init(learner, xs) for learner in online]
        params = inits[0][0]
        ref = haiku_etp.bptt(model)
        ref_params, ref_state = _init(ref, xs)
        for other, _ in inits[1:] + [(ref_params, None)]:
          chex.assert_trees_all_equal(other, params)

        # The exact gradient and every learner's in one program.
        def run(params, states, ref_state, online=online, ref=ref):
          exact = ref.sequence_grad(_sum_loss)(
              params, ref_state, None, xs, ys
          ).grads
          grads = [
              learner.sequence_grad(_sum_loss)(params, st, None, xs, ys).grads
              for learner, st in zip(online, states)
          ]
          return exact, grads

        exact, all_grads = _jit(run)(params, [st for _, st in inits], ref_state)
        for (learner_name, _), grads in zip(learners, all_grads):
          chex.assert_tree_all_finite(grads)
          cos = testing.cosine_similarity(grads, exact)
          err = testing.relative_error(grads, exact)
          rows.append((step_name, learner_name, cos, err))
          self.assertGreater(cos, 0.0, f"{step_name} {learner_name}")
    lines = ["model | learner | cosine | rel err"]
    lines += [f"{m} | {l} | {c:.4f} | {e:.3e}" for m, l, c, e in rows]
    print("\n".join(lines))


class ApproximationWarningTest(absltest.TestCase):
  """Where the warning comes: at init, and at the first gradient call when
  the one at init went to other warning filters; never at every call."""

  def _caught(self, fn):
    """``(fn(), messages)``: the ApproximationWarnings ``fn`` issued."""
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      out = fn()
    return out, [
        str(w.message)
        for w in caught
        if issubclass(w.category, haiku_etp.ApproximationWarning)
    ]

  def test_caught_around_sequence_grad_alone(self):
    learner = _learner("d_rtrl", "rnn")  # recurrent weights: cut
    xs, ys = _data(dtype=jnp.float32)
    (params, state), (message,) = self._caught(lambda: _init(learner, xs))
    self.assertIn("rnn/u: cut_memory_path", message)
    grad = _jit(learner.sequence_grad(_sum_loss))
    _, (again,) = self._caught(lambda: grad(params, state, None, xs, ys))
    self.assertEqual(again, message)
    # Once per learner and input signature: not at later calls, nor for
    # another gradient function of the same learner (traced here: the
    # warning is issued in Python, traced or not).
    other = _jit(learner.sequence_grad(_sum_loss, window=2))
    _, more = self._caught(
        lambda: (
            grad(params, state, None, xs, ys),
            other(params, state, None, xs, ys),
        )
    )
    self.assertEmpty(more)

  def test_caught_around_value_and_grad_alone(self):
    learner = _learner("d_rtrl", "rnn")
    xs, ys = _data(dtype=jnp.float32)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
      params, state = _init(learner, xs)
    step = _jit(learner.value_and_grad(_sum_loss))
    _, (message,) = self._caught(
        lambda: step(params, state, None, xs[0], ys[0])
    )
    self.assertIn("rnn/u: cut_memory_path", message)

  def test_once_under_the_same_filters(self):
    learner = _learner("d_rtrl", "rnn")
    xs, ys = _data(dtype=jnp.float32)

    def run():
      params, state = _init(learner, xs)
      return _jit(learner.sequence_grad(_sum_loss))(params, state, None, xs, ys)

    _, messages = self._caught(run)
    self.assertLen(messages, 1)


class EquivalenceTest(chex.TestCase):
  """Batching, data parallelism and checkpoints change nothing."""

  @parameterized.named_parameters(*_ONLINE)
  def test_batch_sum_equals_per_sample_sum(self, learner_name):
    with jax.enable_x64(True):
      xs, ys = _data(batch=3)
      learner = _learner(learner_name, "lstm")
      params, state = _init(learner, xs)
      fn = _jit(learner.sequence_grad(_sum_loss))
      batch_grads = fn(params, state, None, xs, ys).grads
      total = jax.tree_util.tree_map(jnp.zeros_like, params)
      for b in range(xs.shape[1]):
        xb, yb = xs[:, b : b + 1], ys[:, b : b + 1]
        _, state_b = _init(learner, xb)
        grads_b = fn(params, state_b, None, xb, yb).grads
        total = jax.tree_util.tree_map(jnp.add, total, grads_b)
      _assert_trees_close(batch_grads, total)

  @parameterized.named_parameters(*_ALL)
  def test_checkpoint_round_trip_mid_sequence(self, learner_name):
    with jax.enable_x64(True):
      xs, ys = _data()
      half = _T // 2
      learner = _learner(learner_name)
      params, state = _init(learner, xs)
      fn = _jit(learner.sequence_grad(_sum_loss))
      losses_1, grads_1, mid, _ = fn(params, state, None, xs[:half], ys[:half])

      restored = {}
      with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state.npz")
        np.savez(
            path,
            **{
                f"{m}|{n}": np.asarray(v)
                for m, e in mid.items()
                for n, v in e.items()
            },
        )
        with np.load(path) as f:
          for key in f.files:
            m, n = key.split("|")
            restored.setdefault(m, {})[n] = f[key]
      self.assertEqual(_hidden_names(restored), _hidden_names(mid))
      self.assertNotEmpty(_hidden_names(restored))
      # The learner still reads hidden-ness from the restored names.
      for m, n in _hidden_names(learner.reset(restored)):
        self.assertTrue(np.any(restored[m][n] != 0))
        np.testing.assert_array_equal(learner.reset(restored)[m][n], 0.0)

      losses_2, grads_2, end, _ = fn(params, mid, None, xs[half:], ys[half:])
      losses_r, grads_r, end_r, _ = fn(
          params, restored, None, xs[half:], ys[half:]
      )
      chex.assert_trees_all_equal_structs(end_r, end)
      jax.tree_util.tree_map(
          np.testing.assert_array_equal,
          (grads_r, end_r, losses_r),
          (grads_2, end, losses_2),
      )
      if learner.name != "bptt":
        # Online learners carry everything the second half needs: the split
        # run equals one run over the whole sequence.
        losses, grads, _, _ = fn(params, state, None, xs, ys)
        total = jax.tree_util.tree_map(jnp.add, grads_1, grads_r)
        _assert_trees_close(total, grads)
        _assert_trees_close(jnp.concatenate([losses_1, losses_r]), losses)


class BehaviourTest(chex.TestCase):
  """The learner interface on a leaky integrator (D-RTRL exact there)."""

  def _value_and_grad_loop_equals_sequence_grad(self, learner_name):
    with jax.enable_x64(True):
      xs, ys = _data()
      learner = _learner(learner_name)
      params, state = _init(learner, xs)
      losses, grads, end, _ = _jit(learner.sequence_grad(_sum_loss, window=1))(
          params, state, None, xs, ys
      )
      step = self.variant(learner.value_and_grad(_sum_loss))
      total = jax.tree_util.tree_map(jnp.zeros_like, params)
      loop_losses = []
      for t in range(_T):
        loss, g, state, _ = step(params, state, None, xs[t], ys[t])
        total = jax.tree_util.tree_map(jnp.add, total, g)
        loop_losses.append(loss)
      _assert_trees_close(total, grads)
      _assert_trees_close(jnp.stack(loop_losses), losses)
      _assert_trees_close(state, end)

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*_ALL)
  def test_value_and_grad_loop_equals_sequence_grad(self, learner_name):
    self._value_and_grad_loop_equals_sequence_grad(learner_name)

  # Unjitted, the two driver paths: es_d_rtrl's steps are d_rtrl's online
  # path (unjitted in ..._unjitted_d_rtrl) with its own rules (checked by
  # test_value_and_grad_loop_equals_sequence_grad_es_d_rtrl__with_jit).
  @chex.variants(without_jit=True)
  @parameterized.named_parameters(*_DRIVERS)
  def test_value_and_grad_loop_equals_sequence_grad_unjitted(
      self, learner_name
  ):
    self._value_and_grad_loop_equals_sequence_grad(learner_name)

  @parameterized.named_parameters(*_DRIVERS)
  def test_zero_mask_equals_prefix(self, learner_name):
    with jax.enable_x64(True):
      xs, ys = _data()
      prefix = 5
      mask = jnp.asarray([1.0] * prefix + [0.0] * (_T - prefix))
      learner = _learner(learner_name)
      params, state = _init(learner, xs)
      fn = _jit(learner.sequence_grad(_sum_loss))
      losses, grads, _, _ = fn(params, state, None, xs, ys, mask)
      expected_losses, expected, _, _ = fn(
          params, state, None, xs[:prefix], ys[:prefix]
      )
      _assert_trees_close(grads, expected)
      _assert_trees_close(losses[:prefix], expected_losses)
      np.testing.assert_array_equal(losses[prefix:], 0.0)

  @parameterized.named_parameters(*_DRIVERS)
  def test_zero_weight_step_contributes_no_gradient(self, learner_name):
    with jax.enable_x64(True):
      xs, ys = _data()
      skipped = 3
      mask = jnp.ones((_T,)).at[skipped].set(0.0)
      learner = _learner(learner_name)
      params, state = _init(learner, xs)
      losses, grads, end, _ = _jit(learner.sequence_grad(_sum_loss, window=1))(
          params, state, None, xs, ys, mask
      )
      step = _jit(learner.value_and_grad(_sum_loss))
      total = jax.tree_util.tree_map(jnp.zeros_like, params)
      for t in range(_T):
        _, g, state, _ = step(params, state, None, xs[t], ys[t])
        if t != skipped:
          total = jax.tree_util.tree_map(jnp.add, total, g)
      _assert_trees_close(grads, total)
      _assert_trees_close(state, end)
      self.assertEqual(float(losses[skipped]), 0.0)

  @parameterized.named_parameters(*_DRIVERS)
  def test_mean_reduction(self, learner_name):
    with jax.enable_x64(True):
      xs, ys = _data()
      learner = _learner(learner_name)
      params, state = _init(learner, xs)
      # Both reductions in one program.
      total, mean = _jit(
          lambda *args: [
              learner.sequence_grad(_sum_loss, reduction=r)(*args).grads
              for r in ("sum", "mean")
          ]
      )(params, state, None, xs, ys)
      _assert_trees_close(mean, jax.tree_util.tree_map(lambda g: g / _T, total))

  @parameterized.named_parameters(*_DRIVERS)
  def test_mean_over_unmasked_steps(self, learner_name):
    # reduction="mean" divides by the unmasked steps, and the returned
    # losses are the reduced ones: they sum to the objective.
    with jax.enable_x64(True):
      xs, ys = _data()
      learner = _learner(learner_name)
      params, state = _init(learner, xs)
      mask = jnp.asarray([1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
      # Both reductions in one program.
      total, mean = _jit(
          lambda *args: [
              learner.sequence_grad(_sum_loss, reduction=r)(*args)
              for r in ("sum", "mean")
          ]
      )(params, state, None, xs, ys, mask)
      _assert_trees_close(
          mean.grads, jax.tree_util.tree_map(lambda g: g / 4.0, total.grads)
      )
      _assert_trees_close(mean.losses, total.losses / 4.0)

  @parameterized.named_parameters(*_DRIVERS)
  def test_per_sample_mask(self, learner_name):
    with jax.enable_x64(True):
      xs, ys = _data()
      learner = _learner(learner_name)
      params, state = _init(learner, xs)
      mask = jnp.ones((_T, _B)).at[:, 1].set(0.0)
      keep = jnp.asarray([0, 2])
      _, kept_state = _init(learner, xs[:, keep])
      mean_fn = learner.sequence_grad(_per_sample_loss, reduction="mean")
      sum_fn = learner.sequence_grad(_per_sample_loss)

      # The masked batch under both reductions and the kept samples alone, in
      # one program.
      def run(params, state, kept_state, xs, ys, mask):
        return (
            mean_fn(params, state, None, xs, ys, mask),
            mean_fn(params, kept_state, None, xs[:, keep], ys[:, keep]),
            sum_fn(params, state, None, xs, ys, mask),
        )

      masked, kept, summed = _jit(run)(params, state, kept_state, xs, ys, mask)
      # Samples are independent: masking sample 1 everywhere is dropping it
      # (the mean is over the unmasked entries).
      _assert_trees_close(masked.grads, kept.grads)
      _assert_trees_close(masked.losses, kept.losses)
      # The sum reduction keeps the batch mean with masked samples as 0.
      _assert_trees_close(
          summed.grads,
          jax.tree_util.tree_map(lambda g: g * _T * 2 / _B, kept.grads),
      )

  @parameterized.named_parameters(*_DRIVERS)
  def test_all_zero_mask_gives_zero_gradients(self, learner_name):
    # The learner applies the mask itself: a loss cannot ignore it.
    xs, ys = _data(dtype=jnp.float32)
    learner = _learner(learner_name)
    params, state = _init(learner, xs)
    masks = (jnp.zeros((_T,)), jnp.zeros((_T, _B)))
    # Both reductions with both mask shapes in one program.
    results = _jit(
        lambda params, state, xs, ys, masks: [
            learner.sequence_grad(_per_sample_loss, reduction=reduction)(
                params, state, None, xs, ys, mask
            )
            for reduction in ("sum", "mean")
            for mask in masks
        ]
    )(params, state, xs, ys, masks)
    self.assertLen(results, 4)
    for res in results:
      for leaf in jax.tree_util.tree_leaves(res.grads):
        np.testing.assert_array_equal(leaf, 0.0)
      np.testing.assert_array_equal(res.losses, 0.0)

  @parameterized.named_parameters(
      ("d_rtrl", "d_rtrl", 1),
      ("d_rtrl_window_3", "d_rtrl", 3),
      ("es_d_rtrl", "es_d_rtrl", 1),
      ("bptt", "bptt", None),
      ("bptt_window_3", "bptt", 3),
  )
  def test_has_aux_returns_stacked_aux(self, learner_name, window):
    with jax.enable_x64(True):
      xs, ys = _data()
      learner = _learner(learner_name)
      params, state = _init(learner, xs)

      def loss_fn(out, y):
        return _sum_loss(out, y), {"out": out, "norm": jnp.sum(out**2)}

      # The sequence with and without aux, the step-by-step outputs and one
      # step with aux, in one program.
      def run(params, state, xs, ys):
        with_aux = learner.sequence_grad(loss_fn, window=window, has_aux=True)(
            params, state, None, xs, ys
        )
        plain = learner.sequence_grad(_sum_loss, window=window)(
            params, state, None, xs, ys
        )
        outs, st = [], state
        for t in range(_T):
          out, st = learner.apply(params, st, None, xs[t])
          outs.append(out)
        step = learner.value_and_grad(loss_fn, has_aux=True)(
            params, state, None, xs[0], ys[0]
        )
        return with_aux, plain, jnp.stack(outs), step

      with_aux, plain, outs, step = _jit(run)(params, state, xs, ys)
      losses, grads, end, auxes = with_aux
      plain_losses, plain_grads, plain_end, no_aux = plain
      self.assertIsNone(no_aux)
      _assert_trees_close(grads, plain_grads)
      _assert_trees_close(end, plain_end)
      _assert_trees_close(losses, plain_losses)
      chex.assert_shape(auxes["out"], (_T, _B, _O))
      chex.assert_shape(auxes["norm"], (_T,))
      _assert_trees_close(auxes["out"], outs)

      loss, _, _, aux = step
      chex.assert_shape(aux["out"], (_B, _O))
      np.testing.assert_allclose(loss, losses[0], rtol=_RTOL)

  @parameterized.named_parameters(*_ALL)
  def test_reset(self, learner_name):
    with jax.enable_x64(True):
      xs, ys = _data()
      learner = _learner(learner_name)
      params, state = _init(learner, xs)
      state = _jit(learner.sequence_grad(_sum_loss))(
          params, state, None, xs, ys
      ).state
      count = state["linear"]["count"]
      self.assertEqual(int(count), _T)

      reset = learner.reset(state)
      chex.assert_trees_all_equal_structs(reset, state)
      for m, n in _hidden_names(reset):
        np.testing.assert_array_equal(reset[m][n], 0.0)
      for v in jax.tree_util.tree_leaves(learner.traces(reset)):
        np.testing.assert_array_equal(v, 0)
      self.assertEqual(int(reset["linear"]["count"]), _T)

      _, initial = _init(learner, xs)
      initial["linear"]["v:hidden"] = jnp.full((_B, _H), 0.25)
      reset = learner.reset(state, initial=initial)
      np.testing.assert_array_equal(reset["linear"]["v:hidden"], 0.25)
      for v in jax.tree_util.tree_leaves(learner.traces(reset)):
        np.testing.assert_array_equal(v, 0)
      self.assertEqual(int(reset["linear"]["count"]), _T)

  @parameterized.named_parameters(*_ALL)
  def test_reset_restores_the_declared_initial_state(self, learner_name):
    def step(x):
      v = haiku_etp.get_hidden_state(
          "v", (x.shape[0], _H), x.dtype, init=jnp.ones
      )
      c = haiku_etp.get_sample_state(
          "c", (x.shape[0],), jnp.int32, init=lambda s, d: jnp.full(s, 3, d)
      )
      haiku_etp.set_sample_state("c", c + 1)
      w = _weight("w", (x.shape[-1], _H), x.dtype)
      v = 0.5 * v + haiku_etp.dense(x, w)
      haiku_etp.set_hidden_state("v", v)
      return _readout(v)

    xs, ys = _data(dtype=jnp.float32)
    learner = _LEARNERS[learner_name](hk.transform_with_state(step))
    params, state = _init(learner, xs)
    state = _jit(learner.sequence_grad(_sum_loss))(
        params, state, None, xs, ys
    ).state
    self.assertFalse(np.allclose(state["~"]["v:hidden"], 1.0))
    np.testing.assert_array_equal(state["~"]["c:sample"], 3 + _T)
    reset = learner.reset(state)
    np.testing.assert_array_equal(reset["~"]["v:hidden"], 1.0)
    np.testing.assert_array_equal(reset["~"]["c:sample"], 3)

  @parameterized.named_parameters(*_ALL)
  def test_evolve(self, learner_name):
    with jax.enable_x64(True):
      xs, ys = _data()
      learner = _learner(learner_name)
      params, state = _init(learner, xs)
      state = _jit(learner.sequence_grad(_sum_loss))(
          params, state, None, xs[:3], ys[:3]
      ).state
      if learner.name != "bptt":
        self.assertTrue(
            any(np.any(v != 0) for v in learner.traces(state).values())
        )
      out, new_state = _jit(learner.evolve)(params, state, None, xs[3])
      expected_out, expected_state = hk.transform_with_state(_leaky_step).apply(
          params, _model_state(state), None, xs[3]
      )
      _assert_trees_close(out, expected_out)
      _assert_trees_close(_model_state(new_state), expected_state)
      self.assertEqual(
          sorted(learner.traces(new_state)), sorted(learner.traces(state))
      )
      for v in jax.tree_util.tree_leaves(learner.traces(new_state)):
        np.testing.assert_array_equal(v, 0)

  def _apply_then_value_and_grad(self, learner_name):
    with jax.enable_x64(True):
      xs, ys = _data()
      learner = _learner(learner_name)
      params, state = _init(learner, xs)
      out, st = self.variant(learner.apply)(params, state, None, xs[0])
      chex.assert_shape(out, (_B, _O))
      loss, grads, st, _ = self.variant(learner.value_and_grad(_sum_loss))(
          params, st, None, xs[1], ys[1]
      )
      # apply rolls the traces like a step whose loss has weight 0.
      losses, expected, expected_state, _ = _jit(
          learner.sequence_grad(_sum_loss, window=1)
      )(params, state, None, xs[:2], ys[:2], jnp.asarray([0.0, 1.0]))
      _assert_trees_close(grads, expected)
      _assert_trees_close(st, expected_state)
      np.testing.assert_allclose(loss, losses[1], rtol=_RTOL)

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*_ALL)
  def test_apply_then_value_and_grad(self, learner_name):
    self._apply_then_value_and_grad(learner_name)

  # Unjitted and under pmap, the two driver paths: es_d_rtrl's steps are
  # d_rtrl's online path (unjitted and pmapped in ..._transformed_d_rtrl)
  # with its own rules (checked by test_apply_then_value_and_grad_es_d_rtrl
  # __with_jit; parallel_test's pmap_equals_one_device pmaps es_d_rtrl).
  @chex.variants(without_jit=True, with_pmap=True)
  @parameterized.named_parameters(*_DRIVERS)
  def test_apply_then_value_and_grad_transformed(self, learner_name):
    self._apply_then_value_and_grad(learner_name)

  def test_trace_labels_are_readable(self):
    xs, _ = _data(dtype=jnp.float32)
    learner = _learner("d_rtrl")
    _, state = _init(learner, xs)
    self.assertEqual(
        sorted(learner.traces(state)),
        ["linear/w:bias@linear", "linear/w:weight@linear"],
    )
    learner = _learner("es_d_rtrl")
    _, state = _init(learner, xs)
    self.assertTrue(any("linear/w" in k for k in learner.traces(state)))
    self.assertEqual(_learner("bptt").traces(state), {})

  def test_es_d_rtrl_keeps_one_input_trace_per_input_value(self):
    # The four gates of an LSTM read one concatenated input: one x trace.
    learner = haiku_etp.es_d_rtrl(
        hk.transform_with_state(lambda x: haiku_etp.LSTM(_H)(x)), decay=0.5
    )
    xs, _ = _data(dtype=jnp.float32)
    _, state = _init(learner, xs)
    labels = sorted(learner.traces(state))
    self.assertEqual(
        [l for l in labels if l.startswith("x:")], ["x:lstm/linear/w"]
    )
    self.assertLen([l for l in labels if l.startswith("f:")], 4)

  @parameterized.named_parameters(*_ALL)
  def test_grads_have_the_structure_of_params(self, learner_name):
    xs, ys = _data(dtype=jnp.float32)
    learner = _learner(learner_name)
    params, state = _init(learner, xs)
    grads = _jit(learner.value_and_grad(_sum_loss))(
        params, state, None, xs[0], ys[0]
    ).grads
    chex.assert_trees_all_equal_structs(grads, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
    grads = _jit(learner.sequence_grad(_sum_loss))(
        params, state, None, xs, ys
    ).grads
    chex.assert_trees_all_equal_structs(grads, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)


class InterfaceTest(parameterized.TestCase):
  """Defaults, unroll, rngs and the model forms a learner accepts."""

  @parameterized.named_parameters(*_ALL)
  def test_sequence_grad_does_not_grow_with_t_or_retrace(self, learner_name):
    # The program is the same size for T = 8 and T = 64 (the steps run in a
    # scan, not unrolled), the model's Python step runs a number of times
    # that does not grow with T, and a jitted sequence_grad called again on
    # new data of the same shapes neither retraces nor recompiles.
    calls = []

    def counted(x):
      calls.append(1)
      return _STEPS["lif"](x)

    learner = _LEARNERS[learner_name](hk.transform_with_state(counted))
    data = lambda t, seed=0: _data(t, dtype=jnp.float32, seed=seed)
    loss_args = lambda t: (*_init(learner, data(t)[0]), None, *data(t))
    # A first trace, of T = 4, also makes what is made once per process (a
    # default key) or once per learner and input signature (the compiled
    # step of online learners).
    jax.make_jaxpr(learner.sequence_grad(_sum_loss))(*loss_args(4))
    first = len(calls)
    counts, equations = {}, {}
    for num_steps in (8, 64):
      args = loss_args(num_steps)
      grad_fn = learner.sequence_grad(_sum_loss)
      del calls[:]
      equations[num_steps] = _num_equations(
          jax.make_jaxpr(grad_fn)(*args).jaxpr
      )
      counts[num_steps] = len(calls)
      fn = _jit(grad_fn)
      fn(*args)
      traced = len(calls)
      res = fn(*args[:3], *data(num_steps, seed=1))
      self.assertEqual(len(calls), traced)
      self.assertEqual(fn._cache_size(), 1)  # pylint: disable=protected-access
      self.assertTrue(np.all(np.isfinite(res.losses)))
    self.assertEqual(equations[8], equations[64])
    self.assertGreater(first, 0)
    self.assertLessEqual(counts[8], first)
    self.assertLessEqual(counts[64], first)

  @parameterized.named_parameters(*_ALL)
  def test_default_window_is_the_learners_own(self, learner_name):
    # One rule: window=None means one step for online learners and the
    # whole sequence for BPTT.
    with jax.enable_x64(True):
      xs, ys = _data()
      learner = _learner(learner_name, "rnn")
      params, state = _init(learner, xs)
      default = _jit(learner.sequence_grad(_sum_loss))(
          params, state, None, xs, ys
      )
      k = _T if learner_name == "bptt" else 1
      explicit = _jit(learner.sequence_grad(_sum_loss, window=k))(
          params, state, None, xs, ys
      )
      _assert_trees_close(default.grads, explicit.grads)

  def test_unroll_is_the_forward_pass(self):
    # Every learner's unroll against one step-by-step forward pass (the
    # learners init the same parameters and model state).
    with jax.enable_x64(True):
      xs, _ = _data()
      learners = {name: _learner(name, "lstm") for name in _LEARNERS}
      inits = {name: _init(l, xs) for name, l in learners.items()}
      params, state = inits["d_rtrl"]
      model = hk.transform_with_state(_lstm_step)

      def forward(params, st):
        expected = []
        for t in range(_T):
          out, st = model.apply(params, st, None, xs[t])
          expected.append(out)
        return jnp.stack(expected), st

      expected, expected_end = _jit(forward)(params, _model_state(state))
      for name, learner in learners.items():
        with self.subTest(name):
          chex.assert_trees_all_equal(inits[name][0], params)
          chex.assert_trees_all_equal(
              _model_state(inits[name][1]), _model_state(state)
          )
          outs, end = _jit(learner.unroll)(*inits[name], None, xs)
          _assert_trees_close(outs, expected)
          _assert_trees_close(_model_state(end), expected_end)
          for v in jax.tree_util.tree_leaves(learner.traces(end)):
            np.testing.assert_array_equal(v, 0)

  def test_step_that_consumes_an_rng(self):
    # Dropout on the input: the per-step key is fold_in(rng, t) in the
    # learners and in the oracle, and the leaky step stays exact. The oracle
    # and every learner, at two rngs, run in one program.
    def step(x):
      keep = jax.random.bernoulli(hk.next_rng_key(), 0.7, x.shape)
      return _leaky_step(jnp.where(keep, x / 0.7, 0.0))

    with jax.enable_x64(True):
      xs, ys = _data()
      model = hk.transform_with_state(step)
      learners = [make(model) for make in _LEARNERS.values()]
      inits = [_init(learner, xs) for learner in learners]
      params, state = inits[0]
      for other_params, _ in inits[1:]:
        chex.assert_trees_all_equal(other_params, params)
      rngs = (jax.random.PRNGKey(3), jax.random.PRNGKey(4))

      def run(params, states, rngs):
        oracle = testing.bptt_grads(
            model, _sum_loss, params, _model_state(state), rngs[0], xs, ys
        )
        results = [
            [
                learner.sequence_grad(_sum_loss)(params, st, rng, xs, ys)
                for rng in rngs
            ]
            for learner, st in zip(learners, states)
        ]
        return oracle, results

      (expected, losses), results = _jit(run)(
          params, [st for _, st in inits], rngs
      )
    for name, (result, other) in zip(_LEARNERS, results):
      with self.subTest(name):
        _assert_trees_close(result.losses, losses)
        if name != "es_d_rtrl":
          _assert_trees_close(result.grads, expected)
        self.assertFalse(np.allclose(other.losses, result.losses))

  def test_model_without_apply_rng(self):
    with jax.enable_x64(True):
      xs, ys = _data()
      model = hk.without_apply_rng(hk.transform_with_state(_leaky_step))
      learner = haiku_etp.d_rtrl(model)
      params, state = _init(learner, xs)
      (grads,), exact = _grads_and_exact(
          _leaky_step, [(learner, state)], params, xs, ys
      )
      _assert_trees_close(grads, exact)


class ErrorsTest(parameterized.TestCase):
  """Mistakes raise errors that name the argument and the remedy."""

  def setUp(self):
    super().setUp()
    self.xs, self.ys = _data(dtype=jnp.float32)
    self.learner = _learner("d_rtrl")
    self.params, self.state = _init(self.learner, self.xs)

  def run_fn(self, fn, *args, **kwargs):
    return fn(self.params, self.state, None, *args, **kwargs)

  def test_window(self):
    with self.assertRaisesRegex(ValueError, "window must be an int >= 1"):
      self.learner.sequence_grad(_sum_loss, window=0)

  def test_reduction(self):
    with self.assertRaisesRegex(ValueError, "reduction must be 'sum'"):
      self.learner.sequence_grad(_sum_loss, reduction="max")

  @parameterized.named_parameters(
      ("too_long", (_T + 1,)),
      ("batch_first", (_B, _T)),
      ("rank_3", (_T, _B, 1)),
  )
  def test_mask_shape(self, shape):
    fn = self.learner.sequence_grad(_sum_loss)
    with self.assertRaisesRegex(ValueError, r"mask must have shape \(8,\)"):
      self.run_fn(fn, self.xs, self.ys, jnp.ones(shape))

  def test_xs_ys_length_mismatch(self):
    fn = self.learner.sequence_grad(_sum_loss)
    with self.assertRaisesRegex(ValueError, "xs has 8 steps but ys has 7"):
      self.run_fn(fn, self.xs, self.ys[:-1])

  def test_empty_sequence(self):
    fn = self.learner.sequence_grad(_sum_loss)
    with self.assertRaisesRegex(ValueError, "xs has 0 time steps"):
      self.run_fn(fn, self.xs[:0], self.ys[:0])

  def test_loss_returning_a_tuple_without_has_aux(self):
    fn = self.learner.sequence_grad(lambda o, y: (_sum_loss(o, y), o))
    with self.assertRaisesRegex(TypeError, "pass has_aux=True"):
      self.run_fn(fn, self.xs, self.ys)

  def test_has_aux_with_a_scalar_loss(self):
    fn = self.learner.value_and_grad(_sum_loss, has_aux=True)
    with self.assertRaisesRegex(TypeError, r"must return \(loss, aux\)"):
      self.run_fn(fn, self.xs[0], self.ys[0])

  def test_non_scalar_loss(self):
    fn = self.learner.value_and_grad(lambda o, y: (o - y) ** 2)
    with self.assertRaisesRegex(ValueError, "must return a scalar"):
      self.run_fn(fn, self.xs[0], self.ys[0])

  @parameterized.named_parameters(
      ("sequence_grad", "sequence_grad"), ("value_and_grad", "value_and_grad")
  )
  def test_loss_that_takes_the_mask(self, builder):
    # The learner applies the mask; a loss that wants it is refused when
    # the function is built.
    with self.assertRaisesRegex(
        TypeError, r"called as loss_fn\(out_t, y_t\): the learner applies"
    ):
      getattr(self.learner, builder)(lambda o, y, mask_t: _sum_loss(o, y))

  def test_per_sample_mask_with_a_scalar_loss(self):
    fn = self.learner.sequence_grad(_sum_loss)
    with self.assertRaisesRegex(
        ValueError,
        r"must return per-sample losses of shape \(3,\), got a scalar",
    ):
      self.run_fn(fn, self.xs, self.ys, jnp.ones((_T, _B)))

  @parameterized.named_parameters(
      ("sequence", "sequence_grad", r"ys has shape \(8, 2, 2\).*batch 3"),
      ("step", "value_and_grad", r"y_t has shape \(2, 2\).*batch 3"),
  )
  def test_targets_of_another_batch(self, builder, regex):
    fn = getattr(self.learner, builder)(_sum_loss)
    xs, ys = (self.xs, self.ys[:, :2])
    if builder == "value_and_grad":
      xs, ys = xs[0], ys[0]
    with self.assertRaisesRegex(ValueError, regex):
      self.run_fn(fn, xs, ys)

  def test_step_mask_of_another_batch(self):
    fn = self.learner.value_and_grad(_per_sample_loss)
    with self.assertRaisesRegex(ValueError, r"mask_t must be .*\(3,\)"):
      self.run_fn(fn, self.xs[0], self.ys[0], jnp.ones((2,)))

  def test_batch_major_inputs_name_the_time_major_rule(self):
    fn = self.learner.sequence_grad(_sum_loss)
    xs, ys = jnp.swapaxes(self.xs, 0, 1), jnp.swapaxes(self.ys, 0, 1)
    with self.assertRaisesRegex(
        ValueError, r"time-major \(T, B, ...\).*jnp.swapaxes\(xs, 0, 1\)"
    ):
      self.run_fn(fn, xs, ys)

  def test_inputs_of_another_dtype(self):
    with jax.enable_x64(True):
      params, state = _init(self.learner, self.xs.astype(jnp.float64))
      fn = self.learner.sequence_grad(_sum_loss)
      with self.assertRaisesRegex(
          ValueError,
          r"dtype mismatch: params entries are float64 where the model builds "
          r"float32 for an input of dtype float32.*xs.astype\(jnp.float64\)",
      ):
        fn(params, state, None, self.xs, self.ys)

  def test_negative_cross_budget(self):
    for bad in (-1, 1.5, True):
      with self.assertRaisesRegex(
          ValueError, "max_cross_bytes must be None .* or an int >= 0"
      ):
        haiku_etp.d_rtrl(
            hk.transform_with_state(_leaky_step), max_cross_bytes=bad
        )

  @parameterized.named_parameters(
      ("params", None, "state", "params must be the parameter mapping"),
      ("state", "params", None, "state must be the learner state"),
  )
  def test_apply_without_init(self, params, state, regex):
    args = dict(params=self.params, state=self.state)
    with self.assertRaisesRegex(TypeError, regex):
      self.learner.apply(
          None if params is None else args[params],
          None if state is None else args[state],
          None,
          self.xs[0],
      )

  def test_model_state_instead_of_learner_state(self):
    fn = self.learner.value_and_grad(_sum_loss)
    with self.assertRaisesRegex(
        ValueError, "learner.init or learner.init_state"
    ):
      fn(self.params, _model_state(self.state), None, self.xs[0], self.ys[0])

  def test_reset_with_another_models_state(self):
    other = _learner("d_rtrl", "rnn")
    _, other_state = _init(other, self.xs)
    with self.assertRaisesRegex(
        ValueError, "initial does not hold the hidden.*missing"
    ):
      self.learner.reset(self.state, initial=other_state)

  @parameterized.named_parameters(
      ("transform", lambda: hk.transform(_leaky_step)),
      ("function", lambda: _leaky_step),
  )
  def test_not_a_transformed_with_state(self, make):
    with self.assertRaisesRegex(TypeError, "hk.transform_with_state model"):
      haiku_etp.d_rtrl(make())

  @parameterized.named_parameters(
      ("decay_above_one", dict(decay=1.5), ValueError, r"\[0, 1\)"),
      ("negative_decay", dict(decay=-0.1), ValueError, r"\[0, 1\)"),
      ("int_decay", dict(decay=1), TypeError, "int rank goes in rank="),
      ("rank_zero", dict(rank=0), ValueError, "rank must be >= 1"),
      ("float_rank", dict(rank=2.0), TypeError, "rank must be an int"),
      ("both", dict(decay=0.5, rank=2), ValueError, "not both"),
      ("one_element", dict(decay=(0.5,)), TypeError, "pair"),
  )
  def test_es_d_rtrl_decay(self, kwargs, error, regex):
    model = hk.transform_with_state(_leaky_step)
    with self.assertRaisesRegex(error, regex):
      haiku_etp.es_d_rtrl(model, **kwargs)

  def test_rank_sets_the_decay(self):
    model = hk.transform_with_state(_leaky_step)
    with jax.enable_x64(True):
      xs, ys = _data()
      learners = (
          haiku_etp.es_d_rtrl(model, rank=3),
          haiku_etp.es_d_rtrl(model, decay=0.5),
      )
      inits = [_init(learner, xs) for learner in learners]
      # Both learners in one program.
      by_rank, by_decay = _jit(
          lambda inits, xs, ys: [
              learner.sequence_grad(_sum_loss)(p, st, None, xs, ys).grads
              for learner, (p, st) in zip(learners, inits)
          ]
      )(inits, xs, ys)
      _assert_trees_close(by_rank, by_decay)

  @parameterized.named_parameters(*_ONLINE)
  def test_state_from_another_batch_size(self, learner_name):
    learner = _learner(learner_name)
    params, state = _init(learner, self.xs)
    # Hidden state for a batch of 2; the traces still describe a batch of 3.
    _, small = _init(learner, self.xs[:, :2])
    mixed = dict(state, linear=small["linear"])
    fn = learner.value_and_grad(_sum_loss)
    with self.assertRaisesRegex(ValueError, "trace entries.*do not match"):
      fn(params, mixed, None, self.xs[0, :2], self.ys[0, :2])

  def test_params_of_another_model(self):
    other_params, _ = _init(_learner("d_rtrl", "rnn"), self.xs)
    fn = self.learner.value_and_grad(_sum_loss)
    with self.assertRaisesRegex(ValueError, "params structure does not match"):
      fn(other_params, self.state, None, self.xs[0], self.ys[0])


class CheckFiniteTest(parameterized.TestCase):
  """``check_finite=True`` raises FloatingPointError naming the leaves."""

  def setUp(self):
    super().setUp()
    self.xs, self.ys = _data(dtype=jnp.float32)

  @parameterized.named_parameters(*_ALL)
  def test_finite_run_passes_nan_input_raises_after_the_call(
      self, learner_name
  ):
    # One function, called on finite data and then on data with a NaN.
    learner = _learner(learner_name)
    params, state = _init(learner, self.xs)
    fn = learner.sequence_grad(_sum_loss, check_finite=True)
    result = fn(params, state, None, self.xs, self.ys)
    chex.assert_tree_all_finite(result.grads)
    xs = self.xs.at[2, 0, 1].set(jnp.nan)
    with self.assertRaisesRegex(
        FloatingPointError, r"xs.*losses.*grads\['linear'\]\['w'\]"
    ):
      fn(params, state, None, xs, self.ys)

  def test_one_step_names_the_leaves(self):
    learner = _learner("d_rtrl")
    params, state = _init(learner, self.xs)
    fn = learner.value_and_grad(_sum_loss, check_finite=True)
    params = jax.tree_util.tree_map(lambda v: v, params)
    params["linear"]["b"] = params["linear"]["b"].at[0].set(jnp.inf)
    with self.assertRaisesRegex(
        FloatingPointError, r"in params\['linear'\]\['b'\]\.$"
    ):
      fn(params, state, None, self.xs[0], self.ys[0])

  def test_inside_jit_the_message_is_carried(self):
    learner = _learner("d_rtrl")
    params, state = _init(learner, self.xs)
    fn = _jit(learner.sequence_grad(_sum_loss, check_finite=True))
    with self.assertRaisesRegex(Exception, "FloatingPointError.*Non-finite"):
      jax.block_until_ready(
          fn(params, state, None, self.xs.at[0].set(jnp.nan), self.ys)
      )

  def test_raise_if_not_finite(self):
    haiku_etp.raise_if_not_finite({"a": jnp.ones(2)}, "grads")
    with self.assertRaisesRegex(FloatingPointError, r"grads\['a'\]"):
      haiku_etp.raise_if_not_finite({"a": jnp.full(2, jnp.nan)}, "grads")


class OptaxTest(absltest.TestCase):

  def test_adam_with_d_rtrl_decreases_the_loss(self):
    xs, _ = _data(num_steps=16, batch=8, dtype=jnp.float32, seed=1)
    model = hk.transform_with_state(_leaky_step)
    teacher_params, teacher_state = model.init(jax.random.PRNGKey(1), xs[0])

    def teacher(state, x):
      out, state = model.apply(teacher_params, state, None, x)
      return state, out

    _, ys = jax.lax.scan(teacher, teacher_state, xs)
    learner = haiku_etp.d_rtrl(model)
    params, state = _init(learner, xs)
    opt = optax.adam(3e-2)
    opt_state = opt.init(params)
    grad_fn = learner.sequence_grad(_mean_loss, reduction="mean")

    @_jit
    def update(params, opt_state):
      losses, grads, _, _ = grad_fn(params, learner.reset(state), None, xs, ys)
      updates, opt_state = opt.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, jnp.mean(losses)

    history = []
    for _ in range(20):
      params, opt_state, loss = update(params, opt_state)
      history.append(float(loss))
    print(f"optax adam + d_rtrl: loss {history[0]:.4f} -> {history[-1]:.4f}")
    self.assertTrue(np.all(np.isfinite(history)))
    self.assertLess(history[-1], 0.5 * history[0])


if __name__ == "__main__":
  absltest.main()

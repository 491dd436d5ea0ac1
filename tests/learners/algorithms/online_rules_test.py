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
"""SnAp-n, e-prop's feedback variants and RFLO against their oracles.

Float64, against BPTT (whose gradient RTRL's equals). SnAp-n equals RTRL
once its pattern is closed (a dense GRU at
``n = 2``; an element-wise recurrence at ``n = 1``, where D-RTRL is exact
too) and stores the entries of its pattern, fewer under a weight mask.
e-prop's symmetric feedback is D-RTRL's gradient; its random feedback is
BPTT of the network whose readout passes the error back through ``B``, is
fixed by its seed, shared by the samples and kept across resets and
checkpoints; the adaptive feedback relaxes toward the readout. RFLO's
traces and gradient are a direct NumPy recurrence on 3 units.

A test's data and parameters come from one compiled program, and the
sequences it compares from another (``test_util.fast_jit``).
"""

import warnings

from absl.testing import absltest
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp._src.testing import descriptors
from haiku_etp._src.learners.algorithms import snap as snap_lib
from tests import test_util

_T, _B = 4, 2


def _loss(out, y):
  return jnp.mean((out - y) ** 2)


def _data(model, num_in, scale=1.0):
  """``(params, model state, xs, ys)``, drawn in one compiled program."""

  def draw():
    xs = scale * jax.random.normal(
        jax.random.PRNGKey(1), (_T, _B, num_in), jnp.float64
    )
    params, state = model.init(jax.random.PRNGKey(0), xs[0])
    out, _ = model.apply(params, state, None, xs[0])
    ys = jax.random.normal(jax.random.PRNGKey(2), (_T,) + out.shape, out.dtype)
    return params, state, xs, ys

  return test_util.fast_jit(draw)()


def _grads(learners, params, state, xs, ys, states=None):
  """``{key: SequenceResult}`` of ``learners`` (``{key: learner}``), each
  from ``states[key]`` or else its fresh entry state, in one program."""
  states = dict(states or {})
  for k, learner in learners.items():
    if k not in states:
      states[k] = learner.init_state(params, state, None, xs[0])

  def run(params, states, xs, ys):
    return {
        k: learner.sequence_grad(_loss)(params, states[k], None, xs, ys)
        for k, learner in learners.items()
    }

  return test_util.fast_jit(run)(params, states, xs, ys)


def _max_diff(a, b) -> float:
  return max(
      float(jnp.max(jnp.abs(x - y)))
      for x, y in zip(
          jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
      )
  )


def _masked_step(mask):
  def step(x):
    num_h = mask.shape[0]
    w_in = hk.get_parameter("w_in", (x.shape[-1], num_h), x.dtype, jnp.ones)
    w_rec = hk.get_parameter(
        "w_rec", (num_h, num_h), x.dtype, hk.initializers.RandomNormal()
    )
    v = haiku_etp.get_hidden_state("v", (x.shape[0], num_h), x.dtype)
    v_new = (
        0.8 * v
        + haiku_etp.dense(x, w_in)
        + haiku_etp.dense(jnp.tanh(v), w_rec * mask)
    )
    haiku_etp.set_hidden_state("v", v_new)
    return v_new

  return hk.transform_with_state(step)


class SnApTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))
    self.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)

  def test_closed_pattern_is_rtrl_and_snap1_stores_the_immediate_pattern(self):
    model = hk.transform_with_state(
        lambda x: haiku_etp.Linear(2)(haiku_etp.GRU(3)(x))
    )
    params, model_state, xs, ys = _data(model, 2)
    snap1 = haiku_etp.snap(model, 1)
    state = snap1.init_state(params, model_state, None, xs[0])
    results = _grads(
        {
            "rtrl": haiku_etp.rtrl(model),
            "snap2": haiku_etp.snap(model, 2),
            "snap1": snap1,
        },
        params,
        model_state,
        xs,
        ys,
        states={"snap1": state},
    )
    exact = results["rtrl"].grads
    self.assertLess(_max_diff(results["snap2"].grads, exact), 1e-10)
    self.assertGreater(_max_diff(results["snap1"].grads, exact), 1e-4)
    verdicts = {v.path: v for v in snap1.verdicts(params, state, None, xs[0])}
    self.assertEqual(verdicts["gru/w_h"].reasons, ("snap_truncated",))
    self.assertTrue(verdicts["linear/w"].exact)
    # SnAp-1 keeps d h / d theta's nonzeros: the update and candidate
    # weights reach the unit they feed, the reset gate's (through W_h r*h)
    # every unit. hk.GRU's gate order is (z, r, n) on the last axis. Stored
    # on the dense ops' operands, exactly those entries.
    num_h = 3
    per_column = 1 + num_h + 1
    rows = {"gru/w_i": 2, "gru/w_h": num_h, "gru/b": 1}
    compiled = snap1.compile(params, state, None, xs[0])
    kept, full = snap_lib.SnAp(n=1).stored(compiled)
    self.assertEqual(kept, sum(rows.values()) * num_h * per_column)
    self.assertEqual(full, num_h * sum(rows.values()) * 3 * num_h)
    stored = sum(v.size for v in snap1.traces(state).values()) // _B
    self.assertEqual(stored, kept)

  def test_elementwise_recurrence_snap1_is_d_rtrl_is_rtrl(self):
    model = hk.transform_with_state(
        lambda x: haiku_etp.Linear(2)(haiku_etp.MinGRU(3)(x))
    )
    params, state, xs, ys = _data(model, 2)
    results = _grads(
        {
            "bptt": haiku_etp.bptt(model),
            "snap1": haiku_etp.snap(model, 1),
            "d_rtrl": haiku_etp.d_rtrl(model),
        },
        params,
        state,
        xs,
        ys,
    )
    exact = results["bptt"].grads
    for name in ("snap1", "d_rtrl"):
      self.assertLess(_max_diff(results[name].grads, exact), 1e-10, name)

  def test_a_masked_recurrent_weight_stores_fewer(self):
    rng = np.random.default_rng(0)
    num_h = 5
    mask = (rng.random((num_h, num_h)) < 0.3).astype(np.float64)
    counts, kept = {}, {}
    for name, m in (("masked", mask), ("dense", np.ones_like(mask))):
      model = _masked_step(jnp.asarray(m))
      learner = haiku_etp.snap(model, 2)
      x0 = jnp.ones((_B, 2), jnp.float64)
      params, state = test_util.fast_jit(learner.init)(
          jax.random.PRNGKey(0), x0
      )
      counts[name] = {k: v.size // _B for k, v in learner.traces(state).items()}
      compiled = learner.compile(params, state, None, x0)
      kept[name] = snap_lib.SnAp(n=2).stored(compiled)[0]
    # v_o is fed by w_in[:, o] and, where the mask lets it, w_rec[j, o];
    # one more step reaches the units o' whose input row o of the mask has.
    reach = np.array([1 + np.sum(np.delete(mask[o], o)) for o in range(num_h)])
    self.assertEqual(counts["masked"]["snap:~/w_in"], 2 * int(reach.sum()))
    self.assertEqual(
        counts["masked"]["snap:~/w_rec"], int(mask.sum(axis=0) @ reach)
    )
    self.assertEqual(kept["masked"], sum(counts["masked"].values()))
    # Unmasked, J is dense and n = 2 reaches every unit.
    self.assertEqual(kept["dense"], num_h**3 + 2 * num_h**2)
    self.assertEqual(sum(counts["dense"].values()), kept["dense"])
    self.assertLess(kept["masked"], kept["dense"])

  def test_bad_options(self):
    model = _masked_step(jnp.ones((2, 2)))
    for n in (0, 1.5, True):
      with self.assertRaisesRegex(ValueError, "n must be an int >= 1"):
        haiku_etp.snap(model, n)


class FeedbackTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))
    self.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)

  def test_symmetric_and_random_feedback_are_bptt_of_the_cut_network(self):
    def net(cut=False, feedback=None):
      """A leaky tanh layer with recurrent weights and a leaky readout; the
      oracle gradient-stops the recurrent input (``cut``) and passes the
      error back across the readout through ``feedback``."""

      def step(x):
        normal = hk.initializers.RandomNormal()
        w1 = hk.get_parameter("w1", (3, 4), x.dtype, init=normal)
        w_rec = hk.get_parameter("w_rec", (4, 4), x.dtype, init=normal)
        w2 = hk.get_parameter("w2", (4, 2), x.dtype, init=normal)
        v = haiku_etp.get_hidden_state("v", (x.shape[0], 4), x.dtype)
        z_old = jnp.tanh(v)
        z_old = jax.lax.stop_gradient(z_old) if cut else z_old
        v = 0.7 * v + haiku_etp.dense(x, w1) + haiku_etp.dense(z_old, w_rec)
        haiku_etp.set_hidden_state("v", v)
        z = jnp.tanh(v)
        if feedback is None:
          y = haiku_etp.dense(z, w2)
        else:
          side = z @ feedback
          y = jax.lax.stop_gradient(z) @ w2 + side - jax.lax.stop_gradient(side)
        r = haiku_etp.get_hidden_state("r", y.shape, x.dtype)
        r = 0.6 * r + y
        haiku_etp.set_hidden_state("r", r)
        return r

      return hk.transform_with_state(step)

    model = net()
    params, model_state, xs, ys = _data(model, 3)
    learner = haiku_etp.eprop(model, feedback="random", feedback_seed=3)
    state = learner.init_state(params, model_state, None, xs[0])
    b = learner.traces(state)["shared:feedback:2"]
    self.assertEqual(b.shape, (4, 2))
    adaptive = haiku_etp.eprop(
        model, feedback="adaptive", feedback_seed=3, feedback_rate=0.5
    )
    # Every sequence in one program; the oracle's feedback is B, drawn above.
    results = _grads(
        {
            "symmetric": haiku_etp.eprop(model),
            "cut": haiku_etp.bptt(net(cut=True)),
            "d_rtrl": haiku_etp.d_rtrl(model),
            "random": learner,
            "oracle": haiku_etp.bptt(net(True, b)),
            "adaptive": adaptive,
        },
        params,
        model_state,
        xs,
        ys,
        states={"random": state},
    )
    symmetric, cut = results["symmetric"].grads, results["cut"].grads
    # The readout's leak is filtered in exactly (cross-group traces).
    self.assertLess(_max_diff(symmetric, cut), 1e-12)
    # D-RTRL's window form also backpropagates each step through w_rec.
    d_rtrl = results["d_rtrl"].grads
    self.assertGreater(_max_diff(symmetric, d_rtrl), 1e-4)
    result, oracle = results["random"], results["oracle"].grads
    self.assertLess(_max_diff(result.grads, oracle), 1e-12)
    self.assertLess(
        _max_diff(result.grads["~"]["w2"], symmetric["~"]["w2"]), 1e-12
    )
    self.assertGreater(
        _max_diff(result.grads["~"]["w1"], symmetric["~"]["w1"]), 1e-3
    )
    # Fixed by its seed, kept across the roll and resets, shared.
    again = haiku_etp.eprop(model, feedback="random", feedback_seed=3)
    _, state2 = test_util.fast_jit(again.init)(jax.random.PRNGKey(5), xs[0])
    np.testing.assert_array_equal(again.traces(state2)["shared:feedback:2"], b)
    other = haiku_etp.eprop(model, feedback="random", feedback_seed=4)
    _, state3 = test_util.fast_jit(other.init)(jax.random.PRNGKey(0), xs[0])
    self.assertFalse(np.allclose(other.traces(state3)["shared:feedback:2"], b))
    after = learner.reset(result.state)
    np.testing.assert_array_equal(learner.traces(after)["shared:feedback:2"], b)
    mask = haiku_etp.sharding.state_batch_mask(state)
    self.assertFalse(mask["~etp/eprop"]["shared:feedback:2"])
    # Adaptive: B moves toward the readout's weights.
    moved = adaptive.traces(results["adaptive"].state)["shared:feedback:2"]
    w2 = params["~"]["w2"]
    self.assertGreater(float(jnp.max(jnp.abs(b - w2))), 0.1)
    np.testing.assert_allclose(moved - w2, (b - w2) * 0.5**_T, atol=1e-12)

  def test_bad_options_and_no_readout(self):
    model = hk.transform_with_state(descriptors._eprop)  # pylint: disable=protected-access
    with self.assertRaisesRegex(ValueError, "feedback must be one of"):
      haiku_etp.eprop(model, feedback="transpose")
    with self.assertRaisesRegex(ValueError, "feedback_rate must be"):
      haiku_etp.eprop(model, feedback="adaptive", feedback_rate=0.0)
    with self.assertRaisesRegex(ValueError, "feedback_seed must be an int"):
      haiku_etp.rflo(model, feedback_seed=0.5)
    x0 = jnp.ones((_B, 3))
    learner = haiku_etp.eprop(
        model, feedback="random", readout="leaky_readout/nope"
    )
    with self.assertRaisesRegex(ValueError, "is not the weight of any ETP op"):
      learner.init(jax.random.PRNGKey(0), x0)
    # A readout that is no relation: a parameter scaling the state.
    own = hk.transform_with_state(
        lambda x: haiku_etp.VanillaRNN(3)(x)
        * hk.get_parameter("scale", (3,), init=jnp.ones)
    )
    with self.assertRaisesRegex(ValueError, "no ETP readout"):
      haiku_etp.rflo(own).init(jax.random.PRNGKey(0), x0)
    # A plain hk.Linear readout is the dense op it equals.
    plain = hk.transform_with_state(
        lambda x: hk.Linear(2)(haiku_etp.VanillaRNN(3)(x))
    )
    haiku_etp.rflo(plain).init(jax.random.PRNGKey(0), x0)

  def test_rflo_is_murrays_recurrence(self):
    alpha, num_h = 0.3, 3
    model = hk.transform_with_state(
        lambda x: haiku_etp.Linear(2, name="out")(
            haiku_etp.LeakyRNN(num_h, alpha=alpha)(x)
        )
    )
    params, model_state, xs, ys = _data(model, 2)
    learner = haiku_etp.rflo(model, feedback_seed=1)
    state = learner.init_state(params, model_state, None, xs[0])
    b = np.asarray(learner.traces(state)["shared:feedback:2"])
    result = test_util.fast_jit(learner.sequence_grad(_loss))(
        params, state, None, xs, ys
    )
    p = jax.tree_util.tree_map(np.asarray, params)
    w_in, b_in = p["leaky_rnn/linear"]["w"], p["leaky_rnn/linear"]["b"]
    w_h, w_out = p["leaky_rnn/linear_1"]["w"], p["out"]["w"]
    x, y = np.asarray(xs), np.asarray(ys)
    h = np.zeros((_B, num_h))
    trace = np.zeros((_B, num_h, num_h))  # P[b, j, i]: w_h[j, i]
    grad = np.zeros_like(w_h)
    for t in range(_T):
      u = x[t] @ w_in + b_in + h @ w_h
      dphi = 1.0 - np.tanh(u) ** 2
      trace = (1 - alpha) * trace + alpha * h[:, :, None] * dphi[:, None, :]
      h = (1 - alpha) * h + alpha * np.tanh(u)
      err = 2.0 * (h @ w_out + p["out"]["b"] - y[t]) / y[t].size
      grad += np.einsum("bi,bji->ji", err @ b.T, trace)
    labels = [k for k in learner.traces(result.state) if "linear_1/w" in k]
    self.assertLen(labels, 1)
    got = np.asarray(learner.traces(result.state)[labels[0]])
    np.testing.assert_allclose(got.reshape(trace.shape), trace, atol=1e-12)
    np.testing.assert_allclose(
        result.grads["leaky_rnn/linear_1"]["w"], grad, atol=1e-12
    )


if __name__ == "__main__":
  absltest.main()

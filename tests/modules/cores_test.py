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
"""``RNNCoreStep``: unmodified ``hk.RNNCore``s learned online.

Float64 against ``testing.bptt_grads`` (which unrolls the wrapped step as
``hk.dynamic_unroll`` would), windows 1 and 3: RTRL equals BPTT on every
core, each with a plain ``hk.Linear`` readout.
"""

from absl.testing import absltest
from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from tests import test_util

_T, _B = 6, 2

# name -> (core factory, input shape of one sample)
_CORES = {
    "VanillaRNN": (lambda: hk.VanillaRNN(4), (3,)),
    "LSTM": (lambda: hk.LSTM(4), (3,)),
    "GRU": (lambda: hk.GRU(4), (3,)),
    "DeepRNN": (
        lambda: hk.DeepRNN([hk.LSTM(3), jax.nn.relu, hk.LSTM(4)]),
        (3,),
    ),
    "DeepRNN_skips": (
        lambda: hk.deep_rnn_with_skip_connections([hk.LSTM(3), hk.GRU(2)]),
        (3,),
    ),
    "Conv1DLSTM": (lambda: hk.Conv1DLSTM((5,), 3, 3), (5, 2)),
}


def _model(make_core):
  def step(x):
    h = haiku_etp.RNNCoreStep(make_core())(x)
    return hk.Linear(2, name="readout")(jnp.reshape(h, (h.shape[0], -1)))

  return hk.transform_with_state(step)


def _reset_model():
  def step(inputs):
    h = haiku_etp.RNNCoreStep(hk.ResetCore(hk.LSTM(4)))(inputs)
    return hk.Linear(2, name="readout")(h)

  return hk.transform_with_state(step)


def _rtrl_against_bptt(model, xs, seed):
  """``(BPTT's gradients, {window: RTRL's})`` in one program."""
  rs = np.random.RandomState(seed)
  learner = haiku_etp.rtrl(model)
  x0 = jax.tree_util.tree_map(lambda a: a[0], xs)
  params, state = learner.init(jax.random.PRNGKey(seed), x0)
  model_state = {k: v for k, v in state.items() if not k.startswith("~etp")}
  out = jax.eval_shape(model.apply, params, model_state, None, x0)[0]
  ys = jnp.asarray(rs.normal(size=(_T,) + out.shape))
  reference, results = test_util.bptt_and_windows(
      model, learner, params, state, model_state, xs, ys, (1, 3)
  )
  return params, state, reference, results


class RTRLExactTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  def check(self, reference, results):
    for path, leaf in jax.tree_util.tree_leaves_with_path(reference):
      self.assertTrue(np.any(np.asarray(leaf) != 0), jax.tree_util.keystr(path))
    for k, result in results.items():
      with self.subTest(window=k):
        test_util.assert_trees_close(result.grads, reference)

  @parameterized.named_parameters((name, name) for name in _CORES)
  def test_equals_bptt(self, name):
    make_core, shape = _CORES[name]
    rs = np.random.RandomState(len(name))
    xs = jnp.asarray(rs.normal(size=(_T, _B) + shape))
    _, state, reference, results = _rtrl_against_bptt(
        _model(make_core), xs, len(name)
    )
    self.check(reference, results)
    # The core's state is hidden state of the step, in the inputs' dtype.
    hidden = state["rnn_core_step"]
    self.assertNotEmpty(hidden)
    for key, value in hidden.items():
      self.assertTrue(key.endswith(":hidden"), key)
      self.assertEqual(value.dtype, jnp.float64)
      self.assertEqual(value.shape[0], _B)

  def test_reset_core_resets(self):
    rs = np.random.RandomState(7)
    xs = (
        jnp.asarray(rs.normal(size=(_T, _B, 3))),
        jnp.asarray([[0, 0], [1, 0], [0, 0], [0, 1], [0, 0], [1, 1]], bool),
    )
    model = _reset_model()
    params, state, reference, results = _rtrl_against_bptt(model, xs, 7)
    self.check(reference, results)
    # A reset at a step is the core's initial state there: the output after
    # it does not depend on the inputs before it.
    learner = haiku_etp.rtrl(model)
    outs, _ = learner.unroll(params, state, None, xs)
    other = (xs[0].at[:1, 0].set(5.0), xs[1])
    outs2, _ = learner.unroll(params, state, None, other)
    np.testing.assert_array_equal(outs[1:, 0], outs2[1:, 0])
    self.assertFalse(np.allclose(outs[0, 0], outs2[0, 0]))
    # The learner's reset restores the initial state.
    _, moved = learner.unroll(params, state, None, xs)
    cell = moved["rnn_core_step"]["cell:hidden"]
    self.assertGreater(float(jnp.max(jnp.abs(cell))), 0.0)
    back = learner.reset(moved)
    np.testing.assert_array_equal(back["rnn_core_step"]["cell:hidden"], 0.0)


class StateTest(absltest.TestCase):

  def test_state_names(self):
    def names(make_core):
      step = lambda x: haiku_etp.RNNCoreStep(make_core())(x)
      init = hk.transform_with_state(step).init
      _, state = init(jax.random.PRNGKey(0), jnp.ones((2, 3)))
      return sorted(state["rnn_core_step"])

    self.assertEqual(
        names(lambda: hk.LSTM(2)), ["cell:hidden", "hidden:hidden"]
    )
    self.assertEqual(names(lambda: hk.VanillaRNN(2)), ["state:hidden"])
    self.assertEqual(
        names(lambda: hk.DeepRNN([hk.GRU(2), hk.LSTM(2)])),
        ["0:hidden", "1_cell:hidden", "1_hidden:hidden"],
    )


class ErrorsTest(absltest.TestCase):

  def test_not_a_core(self):
    step = lambda x: haiku_etp.RNNCoreStep(hk.Linear(3))(x)
    with self.assertRaisesRegex(TypeError, r"core must be an hk.RNNCore"):
      hk.transform_with_state(step).init(None, jnp.ones((2, 3)))

  def test_a_state_the_learners_cannot_keep(self):
    class Core(hk.RNNCore):

      def __init__(self, state, change=False):
        super().__init__()
        self.state, self.change = state, change

      def initial_state(self, batch_size):
        return self.state

      def __call__(self, x, state):
        return x, (state, state) if self.change else state

    for state, change, message in (
        (jnp.zeros((2, 3), jnp.int32), False, r"has dtype int32"),
        (jnp.zeros((3,)), False, r"must be batch first"),
        (jnp.zeros((2, 3)), True, r"returned a state of structure"),
    ):
      step = lambda x: haiku_etp.RNNCoreStep(Core(state, change))(x)
      with self.assertRaisesRegex(ValueError, message):
        hk.transform_with_state(step).init(None, jnp.ones((2, 3)))

  def test_inputs_without_a_batch_axis(self):
    step = lambda x: haiku_etp.RNNCoreStep(hk.LSTM(3))(x)
    with self.assertRaisesRegex(ValueError, r"batch first .* shape \(\)"):
      hk.transform_with_state(step).init(None, jnp.ones(()))


if __name__ == "__main__":
  absltest.main()

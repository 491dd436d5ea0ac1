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
"""Testing utilities; the BPTT learner against ``testing.bptt_grads``.

``bptt_grads`` is an oracle independent of the learners.

The oracle differentiates ``model.apply`` unrolled with ``lax.scan``; the
learner goes through the window machinery. Both must agree in float64, with
and without an rng used inside the step, for one window and for truncation
reassembled from windows.
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


def _step(x):
  w = hk.get_parameter(
      "w", (3, 5), jnp.float64, init=hk.initializers.RandomNormal()
  )
  u = hk.get_parameter(
      "u", (5, 5), jnp.float64, init=hk.initializers.RandomNormal(0.5)
  )
  h = haiku_etp.get_hidden_state("h", (x.shape[0], 5), x.dtype)
  h = jnp.tanh(haiku_etp.dense(x, w) + haiku_etp.dense(h, u))
  if hk.running_init() or hk.maybe_next_rng_key() is None:
    noisy = h
  else:
    keep = jax.random.bernoulli(hk.next_rng_key(), 0.8, h.shape)
    noisy = jnp.where(keep, h / 0.8, 0.0)
  haiku_etp.set_hidden_state("h", h)
  return noisy[:, :2]


def _data():
  rs = np.random.RandomState(1)
  return jnp.asarray(rs.normal(size=(9, 2, 3))), jnp.asarray(
      rs.normal(size=(9, 2, 2))
  )


class BpttOracleTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  @parameterized.parameters(False, True)
  def test_learner_matches_oracle(self, use_rng):
    model = hk.transform_with_state(_step)
    xs, ys = _data()
    rng = jax.random.PRNGKey(3) if use_rng else None
    learners = {
        "bptt": haiku_etp.bptt(model),
        # A window as long as the sequence is BPTT for the online learners.
        "d_rtrl": haiku_etp.d_rtrl(model),
        "es_d_rtrl": haiku_etp.es_d_rtrl(model, rank=3),
    }
    params, state = test_util.fast_jit(model.init)(jax.random.PRNGKey(0), xs[0])
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
      states = {
          n: l.init_state(params, state, None, xs[0])
          for n, l in learners.items()
      }

    def run(params, states, rng, xs, ys):
      expected = testing.bptt_grads(
          model, test_util.mse, params, state, rng, xs, ys
      )
      results = {
          n: l.sequence_grad(test_util.mse, window=None if n == "bptt" else 9)(
              params, states[n], rng, xs, ys
          )
          for n, l in learners.items()
      }
      return expected, results

    (expected, expected_losses), results = test_util.fast_jit(run)(
        params, states, rng, xs, ys
    )
    for name, result in results.items():
      self.assertLess(
          testing.relative_error(result.grads, expected), 1e-12, name
      )
      self.assertLess(
          testing.relative_error(result.losses, expected_losses), 1e-12, name
      )

  def test_truncation_differs_from_oracle(self):
    model = hk.transform_with_state(_step)
    xs, ys = _data()
    learner = haiku_etp.bptt(model)

    def run(xs, ys):
      params, state = learner.init(jax.random.PRNGKey(0), xs[0])
      expected, _ = testing.bptt_grads(
          model, test_util.mse, params, state, None, xs, ys
      )
      result = learner.sequence_grad(test_util.mse, window=2)(
          params, state, None, xs, ys
      )
      return expected, result.grads

    expected, grads = test_util.fast_jit(run)(xs, ys)
    gap = testing.relative_error(grads, expected)
    print(f"truncated BPTT (window 2, T 9) vs BPTT: rel err {gap:.3g}")
    self.assertGreater(gap, 1e-3)


class ExpectWarningTest(absltest.TestCase):

  def test_passes_on_a_matching_warning(self):
    with testing.expect_warning(UserWarning, "trace"):
      warnings.warn("a trace was cut", UserWarning)

  def test_fails_without_one(self):
    with self.assertRaisesRegex(AssertionError, "No DeprecationWarning"):
      with testing.expect_warning(DeprecationWarning):
        warnings.warn("other", UserWarning)
    with self.assertRaisesRegex(AssertionError, "matching"):
      with testing.expect_warning(UserWarning, "^trace"):
        warnings.warn("a trace", UserWarning)


if __name__ == "__main__":
  absltest.main()

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

import haiku_etp
from haiku_etp import testing


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


def _loss(out, y):
  return jnp.mean((out - y) ** 2)


class BpttOracleTest(parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_learner_matches_oracle(self, use_rng):
    with jax.enable_x64(True):
      model = hk.transform_with_state(_step)
      xs = jax.random.normal(jax.random.PRNGKey(1), (9, 2, 3), jnp.float64)
      ys = jax.random.normal(jax.random.PRNGKey(2), (9, 2, 2), jnp.float64)
      rng = jax.random.PRNGKey(3) if use_rng else None
      learner = haiku_etp.bptt(model)
      params, state = learner.init(jax.random.PRNGKey(0), xs[0])
      expected, expected_losses = testing.bptt_grads(
          model, _loss, params, state, rng, xs, ys
      )
      grads, _, losses = jax.jit(learner.sequence_grad(_loss))(
          params, state, rng, xs, ys
      )
      self.assertLess(testing.relative_error(grads, expected), 1e-12)
      self.assertLess(testing.relative_error(losses, expected_losses), 1e-12)
      # A window as long as the sequence is BPTT for the online learners too.
      for online in (haiku_etp.d_rtrl(model), haiku_etp.es_d_rtrl(model, 3)):
        _, s = online.init(jax.random.PRNGKey(0), xs[0])
        g, _, _ = jax.jit(online.sequence_grad(_loss, window=9))(
            params, s, rng, xs, ys
        )
        self.assertLess(testing.relative_error(g, expected), 1e-12)

  def test_truncation_differs_from_oracle(self):
    with jax.enable_x64(True):
      model = hk.transform_with_state(_step)
      xs = jax.random.normal(jax.random.PRNGKey(1), (9, 2, 3), jnp.float64)
      ys = jax.random.normal(jax.random.PRNGKey(2), (9, 2, 2), jnp.float64)
      learner = haiku_etp.bptt(model)
      params, state = learner.init(jax.random.PRNGKey(0), xs[0])
      expected, _ = testing.bptt_grads(
          model, _loss, params, state, None, xs, ys
      )
      grads, _, _ = learner.sequence_grad(_loss, window=2)(
          params, state, None, xs, ys
      )
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

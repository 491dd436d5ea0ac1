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
"""``check_finite=True``: NaN or inf in inputs or gradients is an error."""

from absl.testing import absltest
from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp


def _step(x):
  w = hk.get_parameter("w", (3, 4), init=hk.initializers.RandomNormal())
  v = haiku_etp.get_hidden_state("v", (x.shape[0], 4), x.dtype)
  v = 0.9 * v + haiku_etp.dense(x, w)
  haiku_etp.set_hidden_state("v", v)
  return v


def _loss(out, y):
  return jnp.mean(jnp.sqrt(out - y))  # NaN where out < y


_LEARNERS = (
    ("d_rtrl", haiku_etp.d_rtrl),
    ("es_d_rtrl", lambda m: haiku_etp.es_d_rtrl(m, 0.5)),
    ("bptt", haiku_etp.bptt),
)


class CheckFiniteTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.model = hk.transform_with_state(_step)
    self.xs = jnp.abs(jax.random.normal(jax.random.PRNGKey(1), (4, 2, 3)))
    self.ys = jnp.full((4, 2, 4), -1e3)

  @parameterized.named_parameters(*_LEARNERS)
  def test_finite_run_passes(self, make):
    learner = make(self.model)
    params, state = learner.init(jax.random.PRNGKey(0), self.xs[0])
    fn = jax.jit(learner.sequence_grad(_loss, check_finite=True))
    grads, _, _ = fn(params, state, None, self.xs, self.ys)
    self.assertTrue(np.all(np.isfinite(grads["~"]["w"])))

  @parameterized.named_parameters(*_LEARNERS)
  def test_nan_input_raises(self, make):
    learner = make(self.model)
    params, state = learner.init(jax.random.PRNGKey(0), self.xs[0])
    xs = self.xs.at[2, 1, 0].set(jnp.nan)
    fn = jax.jit(learner.sequence_grad(_loss, check_finite=True))
    with self.assertRaisesRegex(Exception, "Non-finite inputs"):
      jax.block_until_ready(fn(params, state, None, xs, self.ys))
    # Without the flag the NaN flows through silently.
    grads, _, _ = jax.jit(learner.sequence_grad(_loss))(
        params, state, None, xs, self.ys
    )
    self.assertFalse(np.all(np.isfinite(grads["~"]["w"])))

  @parameterized.named_parameters(*_LEARNERS)
  def test_nan_loss_raises_in_one_step(self, make):
    learner = make(self.model)
    params, state = learner.init(jax.random.PRNGKey(0), self.xs[0])
    fn = jax.jit(learner.value_and_grad(_loss, check_finite=True))
    with self.assertRaisesRegex(Exception, "Non-finite loss"):
      jax.block_until_ready(fn(params, state, None, self.xs[0], -self.ys[0]))

  def test_names_the_leaf(self):
    @jax.jit
    def f(tree):
      haiku_etp.raise_if_not_finite(tree, "gradients")
      return tree

    f({"a": jnp.ones(2), "b": {"w": jnp.ones(3)}})
    with self.assertRaisesRegex(Exception, r"gradients.*\['b'\]\['w'\]"):
      jax.block_until_ready(
          f({"a": jnp.ones(2), "b": {"w": jnp.array([1.0, jnp.inf, 0.0])}})
      )


if __name__ == "__main__":
  absltest.main()

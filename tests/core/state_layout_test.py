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
"""Where learners keep their entries: the keys in one place, and the
learners' states laid out by them."""

from absl.testing import absltest
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp._src.core import state_layout


def _step(x):
  return haiku_etp.Linear(2, name="readout")(haiku_etp.GRU(3)(x))


class StateLayoutTest(absltest.TestCase):

  def test_keys(self):
    self.assertEqual(state_layout.trace_key("d_rtrl"), "~etp/d_rtrl")
    self.assertEqual(state_layout.INITIAL_KEY, "~etp/initial")
    self.assertEqual(state_layout.SHARDS_KEY, "~etp/shards")
    self.assertTrue(state_layout.is_learner_entry("~etp/rtrl"))
    self.assertFalse(state_layout.is_learner_entry("gru"))
    self.assertTrue(state_layout.is_shared(state_layout.FEEDBACK_PREFIX + "1"))
    self.assertFalse(state_layout.is_shared(state_layout.INFLUENCE_PREFIX))

  def test_zeros_like_keeps_the_shared_entries(self):
    entries = {"shared:feedback:0": jnp.ones(2), "x:r": jnp.ones(3)}
    zeroed = state_layout.zeros_like(entries)
    np.testing.assert_array_equal(zeroed["shared:feedback:0"], 1.0)
    np.testing.assert_array_equal(zeroed["x:r"], 0.0)

  def test_learners_lay_out_their_state_by_the_keys(self):
    model = hk.transform_with_state(_step)
    x = jnp.ones((2, 4))
    for name, options, prefix in (
        ("rtrl", {}, state_layout.INFLUENCE_PREFIX),
        ("snap", {}, state_layout.SNAP_PREFIX),
        ("uoro", {}, state_layout.UORO_THETA_PREFIX),
        ("eprop", {"feedback": "random"}, state_layout.FEEDBACK_PREFIX),
    ):
      with self.subTest(name):
        learner = haiku_etp.make_learner(name, model, **options)
        _, state = learner.init(jax.random.PRNGKey(0), x)
        self.assertIn(state_layout.trace_key(name), state)
        self.assertIn(state_layout.INITIAL_KEY, state)
        labels = list(learner.traces(state))
        self.assertTrue(any(l.startswith(prefix) for l in labels), labels)


if __name__ == "__main__":
  absltest.main()

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
"""What the influence learners share: the parameters that reach hidden state
and the one check of their traces against ``max_trace_bytes``."""

import warnings

from absl.testing import absltest
import haiku as hk
import jax
import jax.numpy as jnp

import haiku_etp
from haiku_etp._src.learners.algorithms import influence


def _step(x):
  return haiku_etp.Linear(2, name="readout")(haiku_etp.GRU(3, name="gru")(x))


class InfluenceTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.model = hk.transform_with_state(_step)
    self.x = jnp.ones((2, 4))
    self.params, self.state = self.model.init(jax.random.PRNGKey(0), self.x)

  def test_temporal_paths_leave_out_the_readout(self):
    compiled = haiku_etp.d_rtrl(self.model).compile(
        self.params, self.state, None, self.x
    )
    paths = influence.temporal_paths(compiled)
    self.assertTrue(paths)
    self.assertTrue(all(p.startswith("gru/") for p in paths), paths)

  def test_one_budget_message_for_every_influence_learner(self):
    for make, learner, entries in (
        (haiku_etp.rtrl, "rtrl", r"B x H x P = 2 x 3 x \d+"),
        (
            haiku_etp.snap,
            r"snap\(n=1\)",
            r"B x \d+ = 2 x \d+ \(of RTRL's B x \d+\)",
        ),
    ):
      with self.subTest(learner), warnings.catch_warnings():
        warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
        with self.assertRaisesRegex(
            ValueError,
            rf"^{learner} keeps {entries} influence entries for this step "
            r"\(\d+(\.\d)? (B|KiB)\), over max_trace_bytes=16 B\. Use .*, or "
            r"raise max_trace_bytes\.$",
        ):
          make(self.model, max_trace_bytes=16).init_state(
              self.params, self.state, None, self.x
          )

  def test_trace_bytes_counts_the_prefix_only(self):
    traces = {"influence:a": jnp.ones((2, 3)), "other": jnp.ones(100)}
    self.assertEqual(influence.trace_bytes(traces, "influence:"), 24)
    influence.check_trace_budget(
        traces, "influence:", None, learner="x", entries=str, remedies=""
    )


if __name__ == "__main__":
  absltest.main()

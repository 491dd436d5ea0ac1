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
"""End-to-end smoke test of the ops demonstration binary on a tiny config."""

import json
import os

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver
import jax

from experiments import ops_demo


class OpsDemoTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()

  def test_runs_and_writes_results(self):
    path = os.path.join(self.create_tempdir().full_path, "out", "ops.json")
    # An op with an input and an input-free one: the binary's two paths.
    relations = ["conv2d_nhwc", "elementwise"]
    with flagsaver.flagsaver(
        demo_num_steps=2,
        demo_num_states=1,
        demo_relations=relations,
        demo_output=path,
    ):
      ops_demo.main(["ops_demo"])
    self.assertFalse(jax.config.jax_enable_x64)
    with open(path) as f:
      payload = json.load(f)
    self.assertEqual(payload["flags"]["num_steps"], 2)
    self.assertEqual(payload["flags"]["relations"], relations)
    self.assertEqual(sorted(payload["results"]), sorted(relations))
    for row in payload["results"].values():
      self.assertLessEqual(row["drtrl_batch_kept"], 1e-10)
      self.assertLessEqual(row["drtrl_batch_stripped"], 1e-10)
      self.assertLessEqual(row["drtrl_generic_rules"], 1e-10)
      self.assertLessEqual(row["es_drtrl_uniform_leak"], 1e-10)
      self.assertBetween(row["es_drtrl_random_D_cosine"], -1.0, 1.0)

  def test_rejects_unknown_relation(self):
    with flagsaver.flagsaver(demo_relations=["conv9d"]):
      with self.assertRaisesRegex(Exception, "Unknown relations.*conv9d"):
        ops_demo.main(["ops_demo"])

  def test_rejects_extra_arguments(self):
    with self.assertRaisesRegex(Exception, "Too many"):
      ops_demo.main(["ops_demo", "extra"])


if __name__ == "__main__":
  absltest.main()

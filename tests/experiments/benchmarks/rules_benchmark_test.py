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
"""Smoke test of the trace-roll benchmark binary on a tiny config."""

import json
import os

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver

from experiments.benchmarks import rules as rules_benchmark


class RulesBenchmarkTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()

  def test_runs_and_writes_results(self):
    path = os.path.join(self.create_tempdir().full_path, "bench.json")
    with flagsaver.flagsaver(
        bench_repeats=1,
        bench_scale=0.125,
        bench_barrier_models=["dense_lif"],
        bench_output=path,
    ):
      rules_benchmark.main(["rules_benchmark"])
    with open(path) as f:
      payload = json.load(f)
    self.assertLen(payload["rows"], 3)
    for row in payload["rows"]:
      self.assertGreater(row["trace_mib"], 0.0)
      self.assertGreater(row["update_ms_fast"], 0.0)
      self.assertGreater(row["bound_ms"], 0.0)
      for key in ("update_ms", "solve_ms"):
        self.assertGreater(row[f"{key}_tuned"], 0.0)
        self.assertGreater(row[f"{key}_plain"], 0.0)
      self.assertGreater(row["update_plain_over_tuned"], 0.0)
      # The two forms were really traced: the plain one has the einsum and
      # jnp.sum the tuned one replaces.
      self.assertLess(row["plain_ops_tuned"], row["plain_ops_plain"])
    self.assertLen(payload["barrier_rows"], 1)
    for row in payload["barrier_rows"]:
      self.assertGreater(row["step_ms_barrier"], 0.0)
      self.assertGreater(row["step_ms_no_barrier"], 0.0)
      self.assertGreater(row["barriers_barrier"], 0)
      self.assertEqual(row["barriers_no_barrier"], 0)

  def test_rejects_unknown_barrier_model(self):
    with flagsaver.flagsaver(bench_barrier_models=["lstm"]):
      with self.assertRaisesRegex(Exception, "Unknown barrier models.*lstm"):
        rules_benchmark.main(["rules_benchmark"])

  def test_rejects_extra_arguments(self):
    with self.assertRaisesRegex(Exception, "Too many"):
      rules_benchmark.main(["rules_benchmark", "extra"])


if __name__ == "__main__":
  absltest.main()
